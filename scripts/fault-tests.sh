#!/usr/bin/env bash
# Fault tests: the real `warden` binary under load while the server is killed, PostgreSQL and
# NATS restart, the webhook receiver fails, and two instances share one database and NATS.
# Starts a PRIVATE PostgreSQL (port 55432) and nats-server (port 54222) in a temporary
# directory; never touches the shared services. See scripts/faults/fault_tests.py.
#
#   bash scripts/fault-tests.sh             # every scenario (~3 minutes)
#   bash scripts/fault-tests.sh --quick     # kill9, nats, two (what scripts/test.sh runs)
#   bash scripts/fault-tests.sh postgres    # one scenario
#   WARDEN_BIN=target/release/warden bash scripts/fault-tests.sh
#
# Prints acknowledged writes, found in store, lost and PASS/FAIL per scenario; exits 1 on FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-faults
REQUIREMENTS=scripts/faults/requirements.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1

if [[ ! -x $VENV/bin/python ]]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp=$VENV/.requirements.sha256
wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
  echo "$wanted" >"$stamp"
fi

for tool in nats-server psql; do
  command -v "$tool" >/dev/null || { echo "fault-tests: $tool not found" >&2; exit 1; }
done

if [[ -z ${WARDEN_BIN:-} ]]; then
  cargo build -q --bin warden
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export WARDEN_BIN=$target_dir/debug/warden
fi

exec "$VENV/bin/python" scripts/faults/fault_tests.py "$@"
