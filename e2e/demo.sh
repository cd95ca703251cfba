#!/usr/bin/env bash
# The README's demo command (`make demo`): brings up the backends, pre-warms a
# 1,000-coupon round that opens a few seconds later, starts an issuer and a consumer,
# fires the seed spike (10,000 users, 100,000 requests) at it and prints a short
# report. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couponrush/cargo-target}"
state="${COUPONRUSH_STATE_DIR:-$PWD/.state}/demo"
mkdir -p "$state"

started_backends=()
for component in redis mysql kafka; do
  local/backends.sh status "$component" >/dev/null 2>&1 || started_backends+=("$component")
done
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ ${#started_backends[@]} -eq 0 ] || local/backends.sh down "${started_backends[@]}" >/dev/null || true
}
trap cleanup EXIT

echo "==> backends"
local/backends.sh up redis mysql kafka
eval "$(local/backends.sh env)"
echo "==> building (release; the first time takes a few minutes)"
cargo build --release -q -p couponrush-issuer -p couponrush-consumer -p couponrush-e2e --bin couponrush-issuer --bin couponrush-consumer --bin couponrush-load
bin="$CARGO_TARGET_DIR/release"

event="demo-$(date +%s)"
export KAFKA_TOPIC="couponrush.demo" RUST_LOG="${RUST_LOG:-warn}"
opens_at_ms=$(( $(date +%s%3N) + 8000 ))
starts_at=$(date -u -d "@$((opens_at_ms / 1000)).$((opens_at_ms % 1000))" +%Y-%m-%dT%H:%M:%S.%3NZ)
echo "==> pre-warming default/$event: 1,000 coupons at $starts_at (kafka-async)"
"$bin/couponrush-issuer" prewarm --namespace default --name "$event" --stock 1000 --starts-at "$starts_at" --strategy kafka-async

echo "==> starting issuer and consumer"
JWT_HS256_SECRET=e2e-test-secret LISTEN=127.0.0.1:18080 "$bin/couponrush-issuer" serve >"$state/issuer.log" 2>&1 &
pids+=($!)
LISTEN=127.0.0.1:18090 "$bin/couponrush-consumer" >"$state/consumer.log" 2>&1 &
pids+=($!)
for url in http://127.0.0.1:18080/readyz http://127.0.0.1:18090/readyz; do
  for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
  curl -sf "$url" >/dev/null || { echo "not ready: $url; logs in $state" >&2; exit 1; }
done

"$bin/couponrush-load" spike --issuer http://127.0.0.1:18080 --event "default/$event" --stock 1000 \
  --users 10000 --requests 100000 --concurrency 256 --opens-at-ms "$opens_at_ms" --database-url "$DATABASE_URL"
