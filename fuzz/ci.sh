#!/usr/bin/env bash
# Runs every fuzz target for a short bounded time (seconds per target: $1, default 30) when a
# nightly toolchain is present; prints that it skipped them when not. `$2 = dev` builds the targets
# unoptimised (`cargo fuzz run --dev`; debug assertions and overflow checks are on either way):
# about 1.3 minutes to build instead of 4.5 on 2 cores, for half the executions per second.
# New inputs go to a scratch directory, so the committed corpus stays as it is. Exits non-zero on the first finding.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
build=()
if [ "${2:-release}" = dev ]; then build=(--dev); fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain, skipped the fuzz targets (their corpus still runs in tests/fuzz_replay.rs)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

# The bundled SQLite (rusqlite) trips AddressSanitizer's one-definition-rule check at start-up
# (a false positive on its static tables); every other check stays on.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  echo "== fuzz $target for ${secs}s"
  mkdir -p "$scratch/$target"
  # -rss_limit_mb: a header that makes us allocate more than this is a finding.
  cargo +nightly fuzz run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20
done
