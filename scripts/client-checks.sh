#!/usr/bin/env bash
# Checks Warden against real, independent clients (pyotp, zxing-cpp, ...; see
# tests/clients/requirements.txt): builds the debug binary, keeps a venv in .venv-clients/,
# and runs the pytest suite in tests/clients, each check against a freshly started server.
# Extra arguments go to pytest (e.g. `bash scripts/client-checks.sh -k qr -x`).
# Quiet on success apart from pytest's own summary; exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-clients
REQUIREMENTS=tests/clients/requirements.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1

fail() { printf 'client-checks: %s\n' "$*" >&2; exit 1; }

# Runs a command silently; on failure prints what it printed and stops.
quietly() {
  local what=$1 log
  shift
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    printf 'client-checks: %s failed: %s\n' "$what" "$*" >&2
    tail -n 80 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

# --- Python venv -----------------------------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; }

if [[ ! -x $VENV/bin/python ]] || ! python_ok "$VENV/bin/python"; then
  python=
  # $PYTHON, if set, names the interpreter to build the venv with.
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    if [[ -n $candidate ]] && command -v "$candidate" >/dev/null && python_ok "$candidate"; then
      python=$candidate
      break
    fi
  done
  [[ -n $python ]] || fail "no Python >= 3.9 found (tried \$PYTHON, python3.11, python3)"
  rm -rf "$VENV"
  quietly "creating the venv $VENV" "$python" -m venv "$VENV"
fi

# Install when the requirements changed since the last successful install.
stamp=$VENV/.requirements.sha256
wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  quietly "installing $REQUIREMENTS into $VENV" \
    "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
  echo "$wanted" >"$stamp"
fi

# --- the server binary ---------------------------------------------------------------
command -v cargo >/dev/null || fail "cargo not found; install Rust (https://rustup.rs)"
quietly "building the warden binary" cargo build --bin warden
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
  fail "cannot find cargo's target directory (cargo metadata failed)"
export WARDEN_BIN=$target_dir/debug/warden
[[ -x $WARDEN_BIN ]] || fail "built, but $WARDEN_BIN is missing"

# --- the checks ----------------------------------------------------------------------
status=0
"$VENV/bin/python" -m pytest -q tests/clients "$@" || status=$?
exit "$status"
