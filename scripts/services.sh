#!/usr/bin/env bash
# Makes sure the local PostgreSQL and NATS (JetStream) that the tests use are running.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! port_open 4222; then
  echo "starting NATS with JetStream"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
fi
for _ in $(seq 1 60); do
  if port_open 5432 && port_open 4222 && pg_isready -h 127.0.0.1 -p 5432 -q; then
    exit 0
  fi
  sleep 0.5
done
echo "PostgreSQL or NATS did not come up" >&2
exit 1
