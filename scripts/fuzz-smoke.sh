#!/usr/bin/env bash
# Fuzz smoke for CI: runs each cargo-fuzz target in fuzz/ (payload, token, envelope) for a
# bounded time from its committed seed corpus, and fails on the first crash or failed assertion.
#
#   scripts/fuzz-smoke.sh                 # 20 s per target
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh payload
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address). The machines have one stable
# toolchain, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. cargo-fuzz is installed from
# crates.io when missing. New inputs a run finds go to a temporary directory, never into the
# committed corpus; a crash is copied to fuzz/artifacts/<target>/ (ignored by git) and printed.
#
# If libFuzzer cannot be built here at all, the script says so and falls back to the property
# tests that check the same oracles (tests/tests/it/parsers.rs) with many more cases; set
# FUZZ_FALLBACK=1 to run only that fallback.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(payload token envelope)
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

fallback() {
  echo "==> fuzz fallback: property tests of the same oracles (PROPTEST_CASES=${PROPTEST_CASES:-20000})"
  PROPTEST_CASES="${PROPTEST_CASES:-20000}" cargo test -p wafleet-tests --test it --locked parsers:: -- --test-threads 2
}

if [ "${FUZZ_FALLBACK:-0}" = 1 ]; then
  fallback
  exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

echo "==> building the fuzz targets (release, AddressSanitizer)"
if ! cargo fuzz build -O >/tmp/wafleet-fuzz-build.log 2>&1; then
  tail -n 30 /tmp/wafleet-fuzz-build.log >&2
  echo "fuzz-smoke: libFuzzer targets cannot be built on this machine; running the fallback" >&2
  fallback
  exit 0
fi

status=0
for target in "${targets[@]}"; do
  work="$(mktemp -d)"
  echo "==> fuzz ${target} for ${seconds}s (seeds: fuzz/corpus/${target})"
  # The first corpus directory receives new inputs; the committed seeds are only read.
  if ! cargo fuzz run -O "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1; then
    echo "fuzz-smoke: ${target} failed; the crashing input is under fuzz/artifacts/${target}/" >&2
    status=1
  fi
  rm -rf "$work"
done
exit "$status"
