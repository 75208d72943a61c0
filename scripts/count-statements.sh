#!/usr/bin/env bash
# Counts the SQL statements Postgres runs for one SendVerification, one code check and one
# GET /v2/users/me (each followed by 0.5 s, so idle pollers are included), by turning on
# `log_statement = all` for a moment. Needs a local superuser Postgres (as in CI) and a
# built binary: WARDEN_BIN=target/release/warden bash scripts/count-statements.sh
set -euo pipefail
BIN=${WARDEN_BIN:-target/release/warden}
DB=warden_statements_$$
PORT=${PORT:-18080}
DIR=$(mktemp -d)
PSQL=(psql -h 127.0.0.1 -U postgres -qAt)
cleanup() {
  "${PSQL[@]}" -d postgres -c "ALTER SYSTEM RESET log_statement" -c "ALTER SYSTEM RESET log_line_prefix" -c "SELECT pg_reload_conf()" >/dev/null || true
  [[ -n ${SERVER:-} ]] && kill "$SERVER" 2>/dev/null || true
  sleep 0.5
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB WARDEN_DATA_DIR=$DIR \
  "$BIN" serve --listen 127.0.0.1:$PORT >"$DIR/server.log" 2>&1 &
SERVER=$!
B=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf $B/healthz >/dev/null && break; sleep 0.1; done
json() { python3 -c "import sys,json; print(json.load(sys.stdin)$1)"; }
PW='violet lanterns drift over quiet harbours'
curl -sf -XPOST $B/v2/accounts -H 'content-type: application/json' \
  -d "{\"email\":\"count@example.com\",\"password\":\"$PW\",\"first_name\":\"A\",\"last_name\":\"B\",\"company_name\":\"C\",\"billing_currency\":\"USD\"}" >/dev/null
T=$(curl -sf -XPOST $B/v2/sessions -H 'content-type: application/json' \
  -d "{\"email\":\"count@example.com\",\"password\":\"$PW\"}" | json '["data"]["token"]')
P=$(curl -sf -XPOST $B/v2/verify_profiles -H "authorization: Bearer $T" -H 'content-type: application/json' \
  -d '{"name":"count","sms":{"app_name":"Count","whitelisted_destinations":["US"]}}' | json '["data"]["id"]')
send() {
  curl -sf -XPOST $B/v2/verifications/sms -H "authorization: Bearer $T" -H 'content-type: application/json' \
    -d "{\"phone_number\":\"$1\",\"verify_profile_id\":\"$P\",\"custom_code\":\"123456\"}" >/dev/null
}
send +13035550100 # warm-up
curl -sf $B/v2/users/me -H "authorization: Bearer $T" >/dev/null
# The server log: the logging collector's file, else Debian's (stderr to /var/log).
LOG=$("${PSQL[@]}" -d postgres -c "SELECT pg_current_logfile()")
if [[ -n $LOG ]]; then
  LOG=$("${PSQL[@]}" -d postgres -c "SHOW data_directory")/$LOG
else
  LOG=$(ls -t /var/log/postgresql/*.log | head -1)
fi
START=$(wc -l <"$LOG")
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET log_statement = 'all'" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %d '" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
mark() { "${PSQL[@]}" -d $DB -c "SELECT 'MARK $1'" >/dev/null; }
mark send; send +13035550101; sleep 0.5
mark check
curl -sf -XPOST $B/v2/verifications/by_phone_number/+13035550101/actions/verify -H "authorization: Bearer $T" \
  -H 'content-type: application/json' -d "{\"code\":\"123456\",\"verify_profile_id\":\"$P\"}" >/dev/null
sleep 0.5
mark me; curl -sf $B/v2/users/me -H "authorization: Bearer $T" >/dev/null; sleep 0.5
mark idle; sleep 0.5
mark end
tail -n +"$START" "$LOG" | grep " $DB " | grep -v DETAIL | awk '
  /MARK send/{s="send"} /MARK check/{s="check"} /MARK me/{s="users/me"} /MARK idle/{s="idle (0.5 s, no request)"} /MARK end/{s=""}
  s != "" && !/MARK/ {n[s]++}
  END {for (k in n) printf "%-28s %d statements\n", k, n[k]}' | sort
