#!/usr/bin/env bash
# Runs every Warden test: Rust unit, conformance and black-box API tests against the real
# PostgreSQL and NATS, in parallel, each test on its own database.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

# Test databases from earlier runs (each test creates its own, named warden_*_<uuid>).
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
  "SELECT datname FROM pg_database WHERE datname ~ '^warden_(test|api|vault|relay)_[0-9a-f]{32}$'" 2>/dev/null |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done

cargo nextest run --workspace --no-fail-fast "$@"
bash scripts/client-checks.sh
# The quick fault scenarios (kill -9, NATS restart, two instances; ~2 minutes) against the
# debug binary, on a private PostgreSQL and nats-server. FAULT_TESTS=0 skips them.
if [[ ${FAULT_TESTS:-1} != 0 ]]; then
  bash scripts/fault-tests.sh --quick
fi
