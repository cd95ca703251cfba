#!/usr/bin/env bash
# The end-to-end scenario, written once, run against a cluster provider:
#   e2e/scenario.sh local   the control plane of e2e/cluster with kwok nodes (default;
#                           part of `make test`). Pods do not run there, so the operator,
#                           issuer and consumer run as local processes — the issuer and
#                           consumer with exactly the configuration the operator wrote
#                           into their Deployments.
#   e2e/scenario.sh kind    a kind cluster with real pods: builds and loads the image,
#                           runs Redis, MariaDB and Kafka in the cluster. Needs Docker and
#                           kind; skipped with a message elsewhere.
# Steps: helm install → apply the seed CouponEvent (1,000 coupons) starting shortly →
# Warming (Deployments, pre-warmed keys) → Live → the seed spike → SoldOut → Draining →
# Completed (issued = persisted = 1,000, workloads removed) → `kubectl get couponevents`
# → helm uninstall leaves nothing of couponrush but the CRD (and the event, the record).
set -euo pipefail
cd "$(dirname "$0")/.."
provider=${1:-local}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couponrush/cargo-target}"
state="${COUPONRUSH_STATE_DIR:-$PWD/.state}/scenario"
mkdir -p "$state"
say() { echo "[scenario $(date +%H:%M:%S)] $*"; }
fail() { say "FAILED: $*"; exit 1; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

case "$provider" in
  local)
    e2e/backends.sh up redis mysql kafka >/dev/null
    eval "$(e2e/backends.sh env)"
    e2e/cluster/cluster.sh up >/dev/null
    eval "$(e2e/cluster/cluster.sh env)"
    cargo build -q -p couponrush-operator -p couponrush-issuer -p couponrush-consumer -p couponrush-e2e \
      --bin couponrush-operator --bin couponrush-issuer --bin couponrush-consumer --bin couponrush-spike
    bin="$CARGO_TARGET_DIR/debug"
    kubectl="$COUPONRUSH_K8S_BIN_DIR/kubectl"
    helm="$COUPONRUSH_TOOLS_BIN_DIR/helm"
    helm_image=()
    backends_redis=$REDIS_URL backends_db=$DATABASE_URL backends_kafka=$KAFKA_BROKERS
    ;;
  kind)
    if ! command -v kind >/dev/null || ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
      say "SKIPPED: the kind scenario needs Docker and kind, and this machine has no container engine."
      say "On a machine with both: e2e/scenario.sh kind"
      exit 0
    fi
    kind get clusters | grep -qx couponrush || kind create cluster --name couponrush
    docker build -t couponrush:e2e .
    kind load docker-image couponrush:e2e --name couponrush
    kubectl=kubectl helm=helm
    $kubectl apply -f e2e/kind/backends.yaml
    $kubectl -n couponrush-backends rollout status statefulset --timeout=300s
    helm_image=(--set operator.image.repository=couponrush --set operator.image.tag=e2e
      --set issuer.image.repository=couponrush --set issuer.image.tag=e2e
      --set consumer.image.repository=couponrush --set consumer.image.tag=e2e)
    backends_redis=redis://redis.couponrush-backends:6379
    backends_db=mysql://couponrush:couponrush@mariadb.couponrush-backends:3306/couponrush
    backends_kafka=kafka.couponrush-backends:9092
    bin=""
    ;;
  *) echo "usage: e2e/scenario.sh [local|kind]" >&2; exit 2 ;;
esac

ns=marketing
event="opening-day-$(date +%s)"
say "helm install (provider: $provider)"
$helm upgrade --install couponrush charts/couponrush --namespace couponrush-system --create-namespace \
  "${helm_image[@]}" --wait --timeout 120s >/dev/null
$kubectl create namespace "$ns" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl -n "$ns" create secret generic couponrush-backends --dry-run=client -o yaml \
  --from-literal=REDIS_URL="$backends_redis" --from-literal=DATABASE_URL="$backends_db" \
  --from-literal=KAFKA_BROKERS="$backends_kafka" --from-literal=JWT_HS256_SECRET=e2e-test-secret | $kubectl apply -f - >/dev/null

if [ "$provider" = local ]; then
  # The chart's operator pod is a kwok fake; the real operator runs here, elected
  # through the same Lease as any replica.
  LISTEN=127.0.0.1:0 LEADER_ELECTION_NAMESPACE=couponrush-system POD_NAME=scenario-operator \
    ISSUER_IMAGE=couponrush:e2e CONSUMER_IMAGE=couponrush:e2e RUST_LOG=warn \
    "$bin/couponrush-operator" >"$state/operator.log" 2>&1 &
  pids+=($!)
fi

start_ms=$(( $(date +%s%3N) + 25000 ))
start=$(date -u -d "@$((start_ms / 1000)).$((start_ms % 1000))" +%Y-%m-%dT%H:%M:%S.%3NZ)
say "applying the seed event $ns/$event: 1,000 coupons at $start (warm-up 15s, teardown 5s)"
sed -e "s/^  name: opening-day$/  name: $event/" -e "s/^  startTime: .*/  startTime: \"$start\"/" \
  -e "s/^  warmup: .*/  warmup: 15s/" -e "s/^  teardownAfter: .*/  teardownAfter: 5s/" examples/opening-day.yaml \
  | $kubectl apply -f - >/dev/null

phase() { $kubectl -n "$ns" get couponevent "$event" -o jsonpath='{.status.phase}' 2>/dev/null; }
wait_phase() {
  local want=$1 within=$2 deadline=$((SECONDS + $2))
  until [ "$(phase)" = "$want" ]; do
    [ $SECONDS -lt $deadline ] || fail "not $want within ${within}s (phase: $(phase)); operator log: $state/operator.log"
    sleep 0.5
  done
  say "phase $want"
}

wait_phase Warming 60
for component in issuer consumer; do
  $kubectl -n "$ns" get deployment "$event-$component" >/dev/null || fail "no $component Deployment"
done
replicas=$($kubectl -n "$ns" get deployment "$event-issuer" -o jsonpath='{.spec.replicas}')
[ "$replicas" = 3 ] || fail "issuer replicas $replicas, expected 3 for 20,000 req/s on t3.medium"

if [ "$provider" = local ]; then
  key="cr:{$ns/$event:1}:meta"
  [ "$(redis-cli -u "$REDIS_URL" HGET "$key" stock)" = 1000 ] || fail "round keys not pre-warmed"
  # Issuer and consumer with the configuration the operator wrote into the Deployments.
  env_of() { $kubectl -n "$ns" get deployment "$event-$1" -o jsonpath="{.spec.template.spec.containers[0].env[?(@.name==\"$2\")].value}"; }
  secret_of() { $kubectl -n "$ns" get secret couponrush-backends -o jsonpath="{.data.$1}" | base64 -d; }
  common=(REDIS_URL="$(secret_of REDIS_URL)" DATABASE_URL="$(secret_of DATABASE_URL)" KAFKA_BROKERS="$(secret_of KAFKA_BROKERS)" RUST_LOG=warn)
  env "${common[@]}" KAFKA_TOPIC="$(env_of issuer KAFKA_TOPIC)" JWT_HS256_SECRET="$(secret_of JWT_HS256_SECRET)" \
    LISTEN=127.0.0.1:18180 "$bin/couponrush-issuer" serve >"$state/issuer.log" 2>&1 &
  pids+=($!)
  env "${common[@]}" KAFKA_TOPIC="$(env_of consumer KAFKA_TOPIC)" KAFKA_GROUP="$(env_of consumer KAFKA_GROUP)" \
    LISTEN=127.0.0.1:18190 "$bin/couponrush-consumer" >"$state/consumer.log" 2>&1 &
  pids+=($!)
  issuer_url=http://127.0.0.1:18180
  spike=("$bin/couponrush-spike")
else
  $kubectl -n "$ns" rollout status deployment "$event-issuer" --timeout=180s
  $kubectl -n "$ns" port-forward "service/$event-issuer" 18180:80 >"$state/port-forward.log" 2>&1 &
  pids+=($!)
  $kubectl -n couponrush-backends port-forward service/mariadb 13306:3306 >"$state/port-forward-db.log" 2>&1 &
  pids+=($!)
  issuer_url=http://127.0.0.1:18180
  backends_db=mysql://couponrush:couponrush@127.0.0.1:13306/couponrush
  spike=(cargo run -q --release -p couponrush-e2e --bin couponrush-spike --)
fi

wait_phase Live 60
"${spike[@]}" --issuer "$issuer_url" --event "$ns/$event" --stock 1000 --users 10000 --requests 100000 \
  --concurrency 128 --opens-at-ms "$start_ms" --database-url "$backends_db"

wait_phase Completed 120
status() { $kubectl -n "$ns" get couponevent "$event" -o jsonpath="{.status.$1}"; }
[ "$(status issued)" = 1000 ] && [ "$(status persisted)" = 1000 ] \
  || fail "status issued=$(status issued) persisted=$(status persisted), expected 1000 and 1000"
for component in issuer consumer; do
  if $kubectl -n "$ns" get deployment "$event-$component" >/dev/null 2>&1; then fail "$component Deployment left after Completed"; fi
done
echo
$kubectl -n "$ns" get couponevents
echo

# The event is the record; deleting it (the finalizer runs while the operator does)
# and uninstalling must leave nothing of couponrush but the CRD.
$kubectl -n "$ns" delete couponevent "$event" --wait=true --timeout=60s >/dev/null
say "helm uninstall"
$helm uninstall couponrush --namespace couponrush-system --wait >/dev/null
leftovers() {
  for namespace in couponrush-system "$ns"; do
    $kubectl -n "$namespace" get deployments,services,poddisruptionbudgets,serviceaccounts,roles,rolebindings \
      -l app.kubernetes.io/part-of=couponrush -o name 2>/dev/null
  done
  $kubectl get clusterroles,clusterrolebindings -l app.kubernetes.io/part-of=couponrush -o name 2>/dev/null
}
deadline=$((SECONDS + 30))
until [ -z "$(leftovers)" ]; do
  [ $SECONDS -lt $deadline ] || fail "left after helm uninstall: $(leftovers | tr '\n' ' ')"
  sleep 1
done
$kubectl get crd couponevents.couponrush.io >/dev/null || fail "the CRD must stay after helm uninstall"
say "PASSED: 1,000 issued, 1,000 persisted, workloads removed, only the CRD left"
