#!/usr/bin/env bash
# The end-to-end scenario, written once, run against a cluster provider:
#   e2e/scenario.sh local   the control plane of local/cluster with kwok nodes. Pods do not run
#                           there, so the operator, issuer and consumer run as local processes
#                           — the issuer and consumer with exactly the configuration the operator
#                           wrote into their Deployments. Fast; checks the operator's logic.
#   e2e/scenario.sh pods    real pods on a real node of this machine (local/pods/node.sh: kubelet,
#                           containerd, kube-proxy, CoreDNS) with the images local/pods/images.sh
#                           builds here: the operator runs as a pod under the chart's
#                           ServiceAccount, Redis, MariaDB and Kafka run as pods, the issuer and
#                           consumer pods go Ready by their kubelet probes, the spike goes through
#                           the issuer Service, and the namespaces enforce Pod Security
#                           `restricted`. Part of `make test`.
#   e2e/scenario.sh pods-faults   the same node, two operator replicas: the leader pod is deleted
#                           during Warming, an issuer pod and the consumer pod are force-deleted
#                           mid-spike; still exactly stock rows and every 201 persisted.
#   e2e/scenario.sh kind    the `pods` scenario on a kind cluster (a machine with Docker and kind,
#                           where nodes may run privileged): builds the image with `docker build`,
#                           loads the images into kind. Skipped with a message elsewhere.
# Steps: helm install → apply the seed CouponEvent (1,000 coupons) starting shortly →
# Warming (Deployments, pre-warmed keys) → Live → the seed spike (10,000 users, 100,000
# requests) → SoldOut → Draining → Completed (issued = persisted = 1,000, workloads removed)
# → `kubectl get couponevents` → helm uninstall leaves nothing of couponrush but the CRD
# (and the event, the record). Locally, a Prometheus server scrapes the round and
# monitoring/live.py checks the chart's dashboard and alerts against it.
set -euo pipefail
cd "$(dirname "$0")/.."
provider=${1:-local}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couponrush/cargo-target}"
state="${COUPONRUSH_STATE_DIR:-$PWD/.state}/scenario"
mkdir -p "$state"
say() { echo "[scenario $(date +%H:%M:%S)] $*"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

ns=marketing
release_ns=couponrush-system
stock=1000
issuer_replicas=4   # 20,000 req/s on t3.medium (the seed event's capacity) ÷ 6,120 per issuer (operator/src/sizing.rs)
capacity_patch=""
operator_replicas=1
faults=""
in_cluster=""
case "$provider" in
  local)
    local/backends.sh up redis mysql kafka >/dev/null
    eval "$(local/backends.sh env)"
    local/cluster/cluster.sh up >/dev/null
    eval "$(local/cluster/cluster.sh env)"
    cargo build -q -p couponrush-operator -p couponrush-issuer -p couponrush-consumer -p couponrush-e2e \
      --bin couponrush-operator --bin couponrush-issuer --bin couponrush-consumer --bin couponrush-load
    bin="$CARGO_TARGET_DIR/debug"
    kubectl="$COUPONRUSH_K8S_BIN_DIR/kubectl"
    helm="$COUPONRUSH_TOOLS_BIN_DIR/helm"
    helm_image=()
    backends_redis=$REDIS_URL backends_db=$DATABASE_URL backends_kafka=$KAFKA_BROKERS
    ;;
  pods|pods-faults)
    [ "$provider" = pods-faults ] && faults=yes && operator_replicas=2
    in_cluster=yes
    local/pods/node.sh up
    eval "$(local/pods/node.sh env)"
    kubectl="$COUPONRUSH_K8S_BIN_DIR/kubectl"
    helm="$COUPONRUSH_TOOLS_BIN_DIR/helm"
    cargo build -q -p couponrush-e2e --bin couponrush-load
    spike=("$CARGO_TARGET_DIR/debug/couponrush-load" spike)
    images=(redis="$IMAGE_REDIS" mariadb="$IMAGE_MARIADB" kafka="$IMAGE_KAFKA")
    couponrush_image=$IMAGE_COUPONRUSH
    # The node has two CPUs: one issuer (900m) and one consumer (500m) beside the operator,
    # the backends and CoreDNS. The event says so in its capacity.
    issuer_replicas=1
    capacity_patch='{"spec":{"capacity":{"expectedPeakRps":7000,"maxReplicas":1}}}'
    ;;
  kind)
    if ! command -v kind >/dev/null || ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1 \
      || ! kind get clusters >/dev/null 2>&1; then
      say "SKIPPED: the kind scenario needs Docker and kind (nodes run as privileged containers)."
      say "On a machine with both: e2e/scenario.sh kind. Here the same scenario runs as: e2e/scenario.sh pods"
      exit 0
    fi
    in_cluster=yes
    kind get clusters | grep -qx couponrush || kind create cluster --name couponrush
    local/pods/images.sh build >"$state/images.env"
    couponrush_image=$(sed -n 's/^couponrush=//p' "$state/images.env")
    images=()
    for name in redis mariadb kafka; do images+=("$name=$(sed -n "s/^$name=//p" "$state/images.env")"); done
    for image in "$couponrush_image" "${images[@]#*=}"; do kind load docker-image "$image" --name couponrush; done
    kubectl=kubectl helm=helm
    cargo build -q -p couponrush-e2e --bin couponrush-load
    spike=("$CARGO_TARGET_DIR/debug/couponrush-load" spike)
    ;;
  *) echo "usage: e2e/scenario.sh [local|pods|pods-faults|kind]" >&2; exit 2 ;;
esac

event="opening-day-$(date +%s)"
fail() {
  say "FAILED: $*"
  if [ -n "$in_cluster" ]; then
    $kubectl get pods -A -o wide 2>&1 | sed 's/^/  /' || true
    $kubectl -n "$release_ns" logs -l app.kubernetes.io/component=operator --tail=40 --prefix 2>&1 | sed 's/^/  /' || true
    $kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>&1 | tail -n 20 | sed 's/^/  /' || true
  fi
  exit 1
}

if [ -n "$in_cluster" ]; then
  # Redis, MariaDB, Kafka as pods (a fresh set per run: their data is the run's).
  $kubectl delete namespace couponrush-backends --ignore-not-found --wait=true --timeout=120s >/dev/null
  manifest=$(cat local/pods/backends.yaml)
  for entry in "${images[@]}"; do
    name=${entry%%=*} upper=$(echo "${entry%%=*}" | tr a-z A-Z)
    manifest=${manifest//@${upper}_IMAGE@/${entry#*=}}
  done
  $kubectl apply -f - <<<"$manifest" >/dev/null
  say "backends: Redis, MariaDB, Kafka pods starting"
  for name in redis mariadb kafka; do
    $kubectl -n couponrush-backends rollout status "statefulset/$name" --timeout=240s >/dev/null \
      || fail "backend $name not ready"
  done
  backends_redis=redis://redis.couponrush-backends.svc.cluster.local:6379
  backends_db=mysql://couponrush:couponrush@mariadb.couponrush-backends.svc.cluster.local:3306/couponrush
  backends_kafka=kafka.couponrush-backends.svc.cluster.local:9092
  # The host reaches MariaDB (to count rows) and the issuer through their Service IPs:
  # kube-proxy's rules apply to the node's own traffic too.
  db_from_host="mysql://couponrush:couponrush@$($kubectl -n couponrush-backends get service mariadb -o jsonpath='{.spec.clusterIP}'):3306/couponrush"
  # Pod Security: the operator's and the event's namespaces admit only `restricted` pods.
  for namespace in "$release_ns" "$ns"; do
    $kubectl create namespace "$namespace" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
    $kubectl label namespace "$namespace" --overwrite pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest >/dev/null
  done
  repo=${couponrush_image%:*} tag=${couponrush_image##*:}
  helm_image=(--set "operator.image.repository=$repo" --set "operator.image.tag=$tag"
    --set "issuer.image.repository=$repo" --set "issuer.image.tag=$tag"
    --set "consumer.image.repository=$repo" --set "consumer.image.tag=$tag"
    --set "operator.replicas=$operator_replicas" --set operator.logJson=false)
fi

say "helm install (provider: $provider)"
$helm upgrade --install couponrush charts/couponrush --namespace "$release_ns" --create-namespace \
  "${helm_image[@]}" --wait --timeout 180s >/dev/null || fail "helm install"
$kubectl create namespace "$ns" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl -n "$ns" create secret generic couponrush-backends --dry-run=client -o yaml \
  --from-literal=REDIS_URL="$backends_redis" --from-literal=DATABASE_URL="$backends_db" \
  --from-literal=KAFKA_BROKERS="$backends_kafka" --from-literal=JWT_HS256_SECRET=e2e-test-secret | $kubectl apply -f - >/dev/null

if [ "$provider" = local ]; then
  # The chart's operator pod is a kwok fake; the real operator runs here, elected
  # through the same Lease as any replica.
  LISTEN=127.0.0.1:18170 LEADER_ELECTION_NAMESPACE=$release_ns POD_NAME=scenario-operator \
    ISSUER_IMAGE=couponrush:e2e CONSUMER_IMAGE=couponrush:e2e RUST_LOG=warn \
    "$bin/couponrush-operator" >"$state/operator.log" 2>&1 &
  pids+=($!)
  # A real Prometheus scrapes the operator, issuer and consumer every second from before
  # the round until after it, with the chart's alerts as its rule file; once the round is
  # Completed, monitoring/live.py evaluates every dashboard query and alert against it.
  # The targets carry the labels the chart's monitors give them: the PodMonitor's
  # `namespace` and `event` on the issuer and consumer, and the ServiceMonitor's
  # `namespace` on the operator, whose own `namespace` labels win (honorLabels). Its port
  # is a free one (PROMETHEUS_PORT to choose), its data and log under $state.
  prometheus_bin=$(local/cluster/build.sh print-prometheus)
  [ -x "$prometheus_bin" ] || local/cluster/build.sh prometheus || fail "no Prometheus server (local/cluster/build.sh prometheus)"
  prometheus_port=${PROMETHEUS_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  prometheus_url=http://127.0.0.1:$prometheus_port
  rm -rf "$state/prometheus" && mkdir -p "$state/prometheus"
  cat >"$state/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/charts/couponrush/files/alerts.yaml
scrape_configs:
  - job_name: couponrush-operator
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:18170"]
        labels: {namespace: "$release_ns"}
  - job_name: couponrush-issuer
    static_configs:
      - targets: ["127.0.0.1:18180"]
        labels: {namespace: "$ns", event: "$event"}
  - job_name: couponrush-consumer
    static_configs:
      - targets: ["127.0.0.1:18190"]
        labels: {namespace: "$ns", event: "$event"}
EOF
  "$prometheus_bin" --config.file="$state/prometheus/prometheus.yml" --storage.tsdb.path="$state/prometheus/data" \
    --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$state/prometheus.log" 2>&1 &
  prometheus_pid=$!
  pids+=($prometheus_pid)
  deadline=$((SECONDS + 30))
  until curl -fsS "$prometheus_url/-/ready" >/dev/null 2>&1; do
    kill -0 "$prometheus_pid" 2>/dev/null && [ $SECONDS -lt $deadline ] || fail "Prometheus not ready (log: $state/prometheus.log)"
    sleep 0.2
  done
  say "Prometheus $($prometheus_bin --version 2>&1 | head -n1 | cut -d' ' -f3) scraping operator, issuer and consumer at $prometheus_url"
else
  # The operator is a pod of the chart, under the chart's ServiceAccount (no admin credentials).
  sa=$($kubectl -n "$release_ns" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[*].spec.serviceAccountName}')
  want_sa=$($kubectl -n "$release_ns" get serviceaccounts -l app.kubernetes.io/part-of=couponrush -o jsonpath='{.items[0].metadata.name}')
  [ -n "$want_sa" ] && [ "$(echo "$sa" | tr ' ' '\n' | sort -u)" = "$want_sa" ] \
    || fail "operator pods run as ServiceAccount '$sa', expected the chart's '$want_sa'"
  say "operator: $operator_replicas pod(s) Ready under ServiceAccount $want_sa"
fi

# In-cluster, the workloads need time to start as pods: a longer lead (and, with faults, room
# for a new leader to take over during Warming).
lead_ms=25000 warmup=15s teardown=5s
# In-cluster the issuer pods go with the teardown, so the round must outlast the spike's
# sold-out tail (about 10 s); locally the issuer is a process of this script.
[ -n "$in_cluster" ] && lead_ms=45000 warmup=35s teardown=40s
[ -n "$faults" ] && lead_ms=75000 warmup=65s
start_ms=$(( $(date +%s%3N) + lead_ms ))
start=$(date -u -d "@$((start_ms / 1000)).$((start_ms % 1000))" +%Y-%m-%dT%H:%M:%S.%3NZ)
say "applying the seed event $ns/$event: $stock coupons at $start (warm-up $warmup, teardown $teardown)"
sed -e "s/^  name: opening-day$/  name: $event/" -e "s/^  startTime: .*/  startTime: \"$start\"/" \
  -e "s/^  warmup: .*/  warmup: $warmup/" -e "s/^  teardownAfter: .*/  teardownAfter: $teardown/" examples/opening-day.yaml \
  | $kubectl apply -f - >/dev/null
[ -z "$capacity_patch" ] || $kubectl -n "$ns" patch couponevent "$event" --type merge -p "$capacity_patch" >/dev/null

phase() { $kubectl -n "$ns" get couponevent "$event" -o jsonpath='{.status.phase}' 2>/dev/null; }
wait_phase() {
  local want=$1 within=$2 deadline=$((SECONDS + $2))
  until [ "$(phase)" = "$want" ]; do
    [ $SECONDS -lt $deadline ] || fail "not $want within ${within}s (phase: $(phase))$([ -n "$in_cluster" ] || echo "; operator log: $state/operator.log")"
    sleep 0.5
  done
  say "phase $want"
}

wait_phase Warming 60
for component in issuer consumer; do
  $kubectl -n "$ns" get deployment "$event-$component" >/dev/null || fail "no $component Deployment"
done
replicas=$($kubectl -n "$ns" get deployment "$event-issuer" -o jsonpath='{.spec.replicas}')
[ "$replicas" = "$issuer_replicas" ] || fail "issuer replicas $replicas, expected $issuer_replicas for the event's capacity"

if [ -n "$faults" ]; then
  # The leader pod goes away during Warming; the standby must take the Lease and finish.
  leader=$($kubectl -n "$release_ns" get lease couponrush-operator -o jsonpath='{.spec.holderIdentity}')
  [ -n "$leader" ] || fail "no operator holds the Lease"
  $kubectl -n "$release_ns" delete pod "$leader" --grace-period=0 --force >/dev/null 2>&1 || fail "deleting leader $leader"
  say "fault: deleted the leader operator pod $leader during Warming"
fi

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
  spike=("$bin/couponrush-load" spike)
  db_from_host=$backends_db
else
  # Ready by the kubelet's own probes.
  for component in issuer consumer; do
    $kubectl -n "$ns" rollout status deployment "$event-$component" --timeout=120s >/dev/null \
      || fail "$component pods not Ready"
  done
  $kubectl -n "$ns" get pods -o wide
  issuer_url="http://$($kubectl -n "$ns" get service "$event-issuer" -o jsonpath='{.spec.clusterIP}'):$($kubectl -n "$ns" get service "$event-issuer" -o jsonpath='{.spec.ports[0].port}')"
fi

wait_phase Live $(( lead_ms / 1000 + 30 ))
spike_args=(--issuer "$issuer_url" --event "$ns/$event" --stock "$stock" --users 10000 --requests 100000
  --concurrency 128 --opens-at-ms "$start_ms" --database-url "$db_from_host")
if [ -n "$faults" ]; then
  # Mid-spike, crashes rather than polite exits: the issuer's container is killed with
  # SIGKILL 50 ms after the opening (admissions in flight) and its pod force-deleted, then
  # the consumer's (rows in flight) at 300 ms. Container ids are looked up before the
  # opening so the kills land within milliseconds.
  pod_of() { $kubectl -n "$ns" get pods -l "app.kubernetes.io/component=$1,couponrush.io/event=$event" -o jsonpath='{.items[0].metadata.name}'; }
  container_of() { $kubectl -n "$ns" get pod "$1" -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|^containerd://||'; }
  issuer_pod=$(pod_of issuer) consumer_pod=$(pod_of consumer)
  issuer_container=$(container_of "$issuer_pod") consumer_container=$(container_of "$consumer_pod")
  [ -n "$issuer_container" ] && [ -n "$consumer_container" ] || fail "no issuer or consumer container to kill"
  crash() { # crash <pod> <container>: SIGKILL through the node's containerd, then force-delete
    ctr --address "$NODE_CONTAINERD_SOCK" --namespace k8s.io tasks kill --signal SIGKILL "$2" >/dev/null \
      && $kubectl -n "$ns" delete pod "$1" --grace-period=0 --force --wait=false >/dev/null 2>&1
  }
  (
    sleep_until() { local now; now=$(date +%s%3N); [ "$1" -le "$now" ] || sleep "$(awk -v ms=$(( $1 - now )) 'BEGIN { print ms / 1000 }')"; }
    sleep_until $((start_ms + 50))
    crash "$issuer_pod" "$issuer_container" || exit 1
    say "fault: issuer $issuer_pod killed (SIGKILL) and force-deleted mid-spike"
    sleep_until $((start_ms + 300))
    crash "$consumer_pod" "$consumer_container" || exit 2
    say "fault: consumer $consumer_pod killed (SIGKILL) and force-deleted mid-spike"
  ) &
  faults_pid=$!
  # The crowd keeps pressing while the issuer is gone (connections refused): this spike
  # need not sell out, but each of its 201s must become its row.
  "${spike[@]}" "${spike_args[@]}" --tolerate-transport-errors true --expect-sold-out false | tee "$state/spike-1.txt" \
    || fail "a 201 of the interrupted spike did not become its row"
  wait "$faults_pid" || fail "the faults could not be injected (exit $?)"
  broken=$(sed -n 's/.*broken connections: \([0-9]*\)).*/\1/p' "$state/spike-1.txt")
  [ "${broken:-0}" -gt 0 ] || fail "no request failed: the issuer was not killed while the spike ran"
  say "the interrupted spike: $(grep -o 'issued *[0-9]* (201 answers)' "$state/spike-1.txt") in all (before the crash and after the replacement came up), $broken requests refused"
  for component in issuer consumer; do
    $kubectl -n "$ns" rollout status deployment "$event-$component" --timeout=120s >/dev/null || fail "no new $component pod Ready"
  done
  new_leader=$($kubectl -n "$release_ns" get lease couponrush-operator -o jsonpath='{.spec.holderIdentity}')
  [ -n "$new_leader" ] && [ "$new_leader" != "$leader" ] || fail "the Lease still names $leader"
  say "replacements Ready; the standby operator $new_leader leads; the users press again"
fi
# The round as a picture (answers per second, issued and persisted, its instants).
"${spike[@]}" "${spike_args[@]}" --timeline "$state/timeline-$provider.svg" || fail "the spike's guarantees did not hold"

wait_phase Completed 180
# The standard conditions, as a person or a pipeline would wait on them.
$kubectl -n "$ns" wait "couponevent/$event" --for=condition=Progressing=false --timeout=10s >/dev/null \
  || fail "Progressing is not False after Completed"
$kubectl -n "$ns" wait "couponevent/$event" --for=condition=Degraded=false --timeout=10s >/dev/null \
  || fail "Degraded is not False after Completed"
status() { $kubectl -n "$ns" get couponevent "$event" -o jsonpath="{.status.$1}"; }
[ "$(status issued)" = "$stock" ] && [ "$(status persisted)" = "$stock" ] \
  || fail "status issued=$(status issued) persisted=$(status persisted), expected $stock and $stock"
for component in issuer consumer; do
  if $kubectl -n "$ns" get deployment "$event-$component" >/dev/null 2>&1; then fail "$component Deployment left after Completed"; fi
done
echo
$kubectl -n "$ns" get couponevents
echo
if [ "$provider" = local ]; then
  # What the three binaries expose after a whole round, for monitoring/test.sh: every
  # series the alerts and the dashboard name must be among them.
  mkdir -p "$state/metrics"
  for target in operator=18170 issuer=18180 consumer=18190; do
    curl -fsS "http://127.0.0.1:${target#*=}/metrics" >"$state/metrics/${target%=*}.txt" \
      || fail "no /metrics from the ${target%=*}"
  done
  say "metrics of operator, issuer and consumer saved in $state/metrics"
  # Every dashboard query and alert, evaluated by the Prometheus that scraped the round,
  # while the three targets still serve (their series go when the event is deleted).
  python3 monitoring/live.py --prometheus "$prometheus_url" --namespace "$ns" --event "$event" \
    | tee "$state/prometheus-check.txt" || fail "the dashboard or the alerts on a live Prometheus (see above; log: $state/prometheus.log)"
  kill "$prometheus_pid" && wait "$prometheus_pid" || true
fi

# The event is the record; deleting it (the finalizer runs while the operator does)
# and uninstalling must leave nothing of couponrush but the CRD.
$kubectl -n "$ns" delete couponevent "$event" --wait=true --timeout=60s >/dev/null
say "helm uninstall"
$helm uninstall couponrush --namespace "$release_ns" --wait >/dev/null
leftovers() {
  for namespace in "$release_ns" "$ns"; do
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
say "PASSED ($provider): $stock issued, $stock persisted, workloads removed, only the CRD left"
