#!/usr/bin/env bash
# issuer/fuzz/run.sh [SECONDS] — fuzz the issuer's request path (fuzz_targets/request.rs)
# for SECONDS (default 60) with cargo fuzz and libFuzzer; fails on a panic or a 5xx and
# prints the input that caused it (saved under issuer/fuzz/artifacts/).
#
# Installs what it needs: a nightly toolchain (rustup; cargo fuzz needs it for the
# sanitizer flags) and cargo-fuzz $CARGO_FUZZ_VERSION into a cache dir keyed by its
# version. Build output and the corpus libFuzzer grows stay outside the repository, so a
# later run starts from the inputs earlier runs found.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECONDS_TO_RUN="${1:-60}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/couponrush"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
say() { echo "[fuzz $(date +%H:%M:%S)] $*"; }

if ! rustup run "$TOOLCHAIN" rustc -V >/dev/null 2>&1; then
  say "installing the $TOOLCHAIN toolchain"
  rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
say "toolchain: $(rustup run "$TOOLCHAIN" rustc -V)"

tools="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [[ ! -x $tools/bin/cargo-fuzz ]]; then
  say "building cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
  cargo install --quiet --locked --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH="$tools/bin:$PATH"

corpus="$CACHE/fuzz-corpus/request"
mkdir -p "$corpus"
export CARGO_TARGET_DIR="$CACHE/fuzz-target"
cd "$HERE/.."
say "building the target (the first time takes minutes: every dependency with the sanitizer)"
cargo +"$TOOLCHAIN" fuzz build --release --fuzz-dir fuzz request
say "running for ${SECONDS_TO_RUN}s from a corpus of $(find "$corpus" -type f | wc -l) inputs"
log="$CACHE/fuzz-request.log"
if ! cargo +"$TOOLCHAIN" fuzz run --release --fuzz-dir fuzz request "$corpus" -- \
  -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
  tail -n 60 "$log"
  say "FAILED: a crash or a 5xx; the input is under issuer/fuzz/artifacts/request/ (full log: $log)"
  exit 1
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
say "no crash in ${SECONDS_TO_RUN}s; the corpus has $(find "$corpus" -type f | wc -l) inputs"
