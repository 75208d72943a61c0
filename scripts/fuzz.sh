#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/, outside the workspace) for a bounded time each
# (FUZZ_SECS, default 60). Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# nightly-only sanitizer flags. Installs cargo-fuzz from crates.io if missing.
# Exits non-zero on the first crash; the crashing input is left in fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh                   # phone_numbers, codes, request_bodies
#   FUZZ_SECS=600 bash scripts/fuzz.sh codes
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
secs=${FUZZ_SECS:-60}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(phone_numbers codes request_bodies)

for target in "${targets[@]}"; do
  features=()
  # The two parser targets need only the domain crate; skip linking the server for them.
  [[ $target == request_bodies ]] || features=(--no-default-features)
  echo "fuzz: $target for ${secs}s"
  log=$(mktemp)
  if ! cargo fuzz run "${features[@]}" "$target" -- -max_total_time="$secs" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED (artifacts in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" | sed "s/^/fuzz: $target: /"
  rm -f "$log"
done
echo "fuzz: all targets clean"
