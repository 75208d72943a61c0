#!/usr/bin/env bash
# Property-based API fuzzing with schemathesis (pinned in scripts/schemathesis.requirements.txt,
# own venv .venv-schemathesis/) against /openapi.json of a development server: the debug
# `warden` binary on a free port with a fresh embedded database. It signs up an owner and
# fuzzes every operation with that owner's session token, checking that no response is a
# 5xx and that every response matches the documented status codes, content types, headers
# and schemas. Bounded: MAX_EXAMPLES per operation (default 20) and MAX_TIME seconds for the
# whole run (default 300). Extra arguments go to `schemathesis run`.
#
#   bash scripts/schemathesis.sh
#   MAX_EXAMPLES=50 MAX_TIME=900 bash scripts/schemathesis.sh --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-schemathesis
REQUIREMENTS=scripts/schemathesis.requirements.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
if [[ ! -x $VENV/bin/schemathesis ]]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
fi

if [[ -z ${WARDEN_BIN:-} ]]; then
  cargo build -q --bin warden
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  WARDEN_BIN=$target_dir/debug/warden
fi

work=$(mktemp -d)
port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
env -u DATABASE_URL -u NATS_URL NO_COLOR=1 WARDEN_ENV=development \
  "$WARDEN_BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [[ ${status:-1} -eq 0 ]]; then rm -rf "$work"; else echo "server log: $work/server.log" >&2; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -fs "$base/readyz" >/dev/null && break
  sleep 0.2
done

email="fuzz-$RANDOM$RANDOM@example.com"
password="schemathesis-owner-$RANDOM$RANDOM-long"
curl -fs -X POST "$base/v2/accounts" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"first_name\":\"Fuzz\",\"last_name\":\"Owner\",\"billing_currency\":\"USD\"}" >/dev/null
token=$(curl -fs -X POST "$base/v2/sessions" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\"}" |
  "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["data"]["token"])')

status=0
# Operations that end the fuzzing session itself (sign-out, password and e-mail changes,
# removing the owner's own factor) are left out so the token stays valid for the rest.
"$VENV/bin/schemathesis" run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --header "Authorization: Bearer $token" \
  --max-examples "${MAX_EXAMPLES:-20}" --max-time "${MAX_TIME:-300}" \
  --phases examples,coverage,fuzzing \
  --exclude-path-regex '^/v2/sessions/current$|^/v2/users/me/(password|email)' \
  --request-timeout 30 --workers 1 --suppress-health-check all --no-color \
  --report junit --report-dir "$work/report" "$@" || status=$?
exit "$status"
