#!/usr/bin/env bash
# The k6 smoke scenario against a local issuer, as CI runs it: pre-warms a small round,
# starts an issuer and a consumer, runs e2e/load/smoke.js (its thresholds decide the
# exit code), and stops what it started. Expects the backends up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couponrush/cargo-target}"
eval "$(local/backends.sh env)"
k6="${COUPONRUSH_TOOLS_BIN_DIR:-$(local/cluster/build.sh print-tools-dir)}/k6"
[ -x "$k6" ] || local/cluster/build.sh tools >/dev/null
cargo build -q -p couponrush-issuer -p couponrush-consumer
bin="$CARGO_TARGET_DIR/debug"
state="${COUPONRUSH_STATE_DIR:-$PWD/.state}/smoke"
mkdir -p "$state"

event="smoke-$(date +%s)"
export KAFKA_TOPIC=couponrush.smoke RUST_LOG=warn
"$bin/couponrush-issuer" prewarm --namespace default --name "$event" --stock 100 --strategy kafka-async
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
JWT_HS256_SECRET=smoke-secret LISTEN=127.0.0.1:18280 "$bin/couponrush-issuer" serve >"$state/issuer.log" 2>&1 &
pids+=($!)
LISTEN=127.0.0.1:18290 "$bin/couponrush-consumer" >"$state/consumer.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18280/readyz >/dev/null && break; sleep 0.1; done
"$k6" run -q --no-color -e BASE_URL=http://127.0.0.1:18280 -e EVENT="default/$event" -e JWT_SECRET=smoke-secret \
  -e RATE=5 -e DURATION=10s -e USERS=20 e2e/load/smoke.js
