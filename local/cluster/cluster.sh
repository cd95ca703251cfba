#!/usr/bin/env bash
# local/cluster/cluster.sh — a local Kubernetes cluster with fake (kwok) nodes, from the
# binaries local/cluster/build.sh builds (no container engine, nothing downloaded).
#
#   local/cluster/cluster.sh up          start (idempotent; builds the binaries if missing; waits
#                                        for /readyz and for the 3 kwok nodes to be Ready)
#   local/cluster/cluster.sh down        stop everything and delete the cluster's state
#   local/cluster/cluster.sh status      one line per component; non-zero exit if not ready
#   local/cluster/cluster.sh env         `export KUBECONFIG=...` (and the bin dirs)
#   local/cluster/cluster.sh kubeconfig  the path of the kubeconfig
#   local/cluster/cluster.sh kubectl ... kubectl (the one built) against this cluster
#   local/cluster/cluster.sh smoke       a Deployment of 2 replicas becomes available; scaled to
#                                        0 its pods go away (namespace cluster-smoke-N, removed after)
#
# How: `kwokctl create cluster --runtime=binary` with every binary given as a local path
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok controller, kubectl),
# all bound to 127.0.0.1, with RBAC and the default admission plugins on (kwokctl's default
# for a secure port). kwok then plays the kubelet: nodes kwok-node-0..2 (2 CPU, 4Gi, 110 pods,
# labels type=kwok, node.kubernetes.io/instance-type=t3.medium) are Ready, and pods bound to
# them go Pending -> Running/Ready without containers.
#
# Environment (all optional):
#   COUPONRUSH_STATE_DIR=<repo>/.state   cluster state in $COUPONRUSH_STATE_DIR/cluster/
#   KUBE_APISERVER_PORT=16443 KUBE_ETCD_PORT=12379 KUBE_ETCD_PEER_PORT=12380
#   KUBE_KWOK_PORT=12480 (kwok controller metrics/health)
#   CLUSTER_NAME=couponrush  CLUSTER_NODES=3  CLUSTER_START_TIMEOUT=180 (seconds)
#   STOP_TIMEOUT=30 (seconds before SIGKILL on down)  KWOKCTL_LOG_LEVEL=WARN (or INFO, DEBUG)
set -euo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${COUPONRUSH_STATE_DIR:-$ROOT/.state}/cluster"
KUBECONFIG_PATH="$STATE/kubeconfig"
KWOK_HOME="$STATE/kwok"                       # kwokctl's workdir (KWOK_WORKDIR)
NAME="${CLUSTER_NAME:-couponrush}"
CLUSTER_DIR="$KWOK_HOME/clusters/$NAME"

APISERVER_PORT="${KUBE_APISERVER_PORT:-16443}"
ETCD_PORT="${KUBE_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${KUBE_ETCD_PEER_PORT:-12380}"
KWOK_PORT="${KUBE_KWOK_PORT:-12480}"
NODES="${CLUSTER_NODES:-3}"
START_TIMEOUT="${CLUSTER_START_TIMEOUT:-180}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"

BIN="$("$HERE/build.sh" print-bin-dir)"
TOOLS="$("$HERE/build.sh" print-tools-dir)"
KUBECTL="$BIN/kubectl"
KWOKCTL="$BIN/kwokctl"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# kwokctl with everything it reads from the environment pinned to our state dir.
kwokctl() { KWOK_WORKDIR="$KWOK_HOME" KWOK_KUBECTL_BINARY="$KUBECTL" "$KWOKCTL" -v "${KWOKCTL_LOG_LEVEL:-WARN}" "$@"; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

ready() { # the apiserver answers /readyz through our kubeconfig
  [[ -f "$KUBECONFIG_PATH" && -x "$KUBECTL" ]] && k get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

port_busy() { # 0 if something listens on 127.0.0.1:$1 (or any address)
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# PIDs of the processes of this cluster: those kwokctl recorded, plus any process whose
# command line names our cluster dir (every component gets its flags/config files from it).
cluster_pids() {
  local f p c
  {
    for f in "$CLUSTER_DIR"/pids/*.pid; do
      [[ -f "$f" ]] || continue
      p="$(tr -dc 0-9 <"$f")"
      if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then echo "$p"; fi
    done
    for f in /proc/[0-9]*/cmdline; do
      p="${f#/proc/}"; p="${p%/cmdline}"
      [[ "$p" == "$$" || "$p" == "$BASHPID" ]] && continue
      c="$(tr '\0' ' ' 2>/dev/null <"$f")" || continue
      if [[ "$c" == *"$CLUSTER_DIR/"* ]]; then echo "$p"; fi
    done
  } | sort -un
  return 0
}

wait_until() { # wait_until <deadline seconds> <description> <command...>
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then log "timed out waiting for $what"; return 1; fi
    sleep 1
  done
}

write_config() {
  mkdir -p "$STATE"
  # kwokctl options; binaries are local paths, so nothing is downloaded.
  cat >"$STATE/kwokctl.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverPort: $APISERVER_PORT
  etcdPort: $ETCD_PORT
  etcdPeerPort: $ETCD_PEER_PORT
  kwokControllerPort: $KWOK_PORT
  kubeVersion: $(basename "$(dirname "$BIN")" | sed 's/^k8s-//')
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  kwokControllerBinary: $BIN/kwok
  etcdBinary: $BIN/etcd
  kubectlBinary: $KUBECTL
  cacheDir: $KWOK_HOME/cache
  # kwok holds a Lease per node; a restarted kwok takes a node over only once the old
  # holder's lease expired: keep that short (renewed every 10s), but let the node
  # controller wait long before it calls a node NotReady (a busy 2-core machine).
  heartbeatFactor: 1
  nodeLeaseDurationSeconds: 40
  nodeStatusUpdateFrequencyMilliseconds: 20000
  kubeControllerManagerNodeMonitorPeriodMilliseconds: 10000
  kubeControllerManagerNodeMonitorGracePeriodMilliseconds: 200000
# One controller-manager and one scheduler, so no leader election: with it, a renewal
# that a loaded machine delays past its deadline makes the component exit for good
# (nothing restarts it here), and Deployments stop getting ReplicaSets mid-test.
componentsPatches:
  - name: kube-controller-manager
    extraArgs:
      - key: leader-elect
        value: "false"
  - name: kube-scheduler
    extraArgs:
      - key: leader-elect
        value: "false"
EOF
}

nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    node.kubernetes.io/instance-type: t3.medium
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec: {}
status:
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
EOF
  done
}

nodes_ready() { # NODES nodes are Ready and the running kwok holds their leases
  local n l
  n="$(k get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$' || true)"
  l="$(k get leases -n kube-node-lease -o name 2>/dev/null | grep -c '/kwok-node-' || true)"
  ((n >= NODES && l >= NODES))
}

up() {
  local t0=$SECONDS
  "$HERE/build.sh" check k8s >/dev/null 2>&1 || {
    log "binaries missing in $BIN: building them (cold: tens of minutes) ..."
    "$HERE/build.sh" k8s
  }
  if components_alive && ready && nodes_ready; then
    log "already up: $(k get --raw /version | tr -d '\n ' | grep -o '"gitVersion":"[^"]*"')"
    return 0
  fi
  if [[ -d "$CLUSTER_DIR" ]] && ! { components_alive && ready; }; then
    log "cluster $NAME exists but is not (fully) running: restarting it"
    kwokctl stop cluster --name "$NAME" >&2 || true
    kill_processes
    kwokctl start cluster --name "$NAME" --timeout "${START_TIMEOUT}s" >&2 || true
    if wait_until 60 readyz ready; then
      # the leases still name the kwok that died: drop them, the new one takes the nodes.
      local leases
      leases="$(k get leases -n kube-node-lease -o name 2>/dev/null | grep '/kwok-node-' || true)"
      # shellcheck disable=SC2086 # one lease/NAME word each
      [[ -z "$leases" ]] || k delete -n kube-node-lease $leases --ignore-not-found >/dev/null 2>&1 || true
    else
      log "could not restart it: recreating"
      down
    fi
  fi
  if [[ ! -d "$CLUSTER_DIR" ]]; then
    local p
    for p in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KWOK_PORT"; do
      port_busy "$p" && die "port $p on 127.0.0.1 is in use by another process (see KUBE_*_PORT in $0)"
    done
    write_config
    log "creating cluster $NAME (kwokctl, binary runtime) on https://127.0.0.1:$APISERVER_PORT ..."
    kwokctl create cluster --name "$NAME" --config "$STATE/kwokctl.yaml" \
      --kubeconfig "$KUBECONFIG_PATH" --timeout "${START_TIMEOUT}s" >&2 \
      || { log "kwokctl create failed; logs in $CLUSTER_DIR/logs"; tail -n 20 "$CLUSTER_DIR"/logs/*.log >&2 2>/dev/null || true; exit 1; }
    # kwokctl merges its context into that file and makes it current: that's all it holds.
    k config use-context "kwok-$NAME" >/dev/null
  fi
  wait_until "$START_TIMEOUT" readyz ready || die "apiserver not ready after ${START_TIMEOUT}s (logs: $CLUSTER_DIR/logs)"
  log "apiserver ready after $((SECONDS - t0))s; creating $NODES kwok nodes"
  nodes_yaml | k apply -f - >/dev/null
  wait_until "$START_TIMEOUT" nodes nodes_ready || die "kwok nodes not Ready after ${START_TIMEOUT}s (logs: $CLUSTER_DIR/logs)"
  # pods of a namespace can only be created once its default ServiceAccount exists.
  wait_until "$START_TIMEOUT" "default serviceaccount" k get serviceaccount default -n default >/dev/null 2>&1 \
    || die "no default ServiceAccount after ${START_TIMEOUT}s (kube-controller-manager?)"
  log "up in $((SECONDS - t0))s: $NODES nodes Ready; KUBECONFIG=$KUBECONFIG_PATH"
}

components_alive() { # every component kwokctl started is still running
  local f p n=0
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    p="$(tr -dc 0-9 <"$f")"
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null || return 1
    n=$((n + 1))
  done
  ((n > 0))
}

kill_processes() { # <extra pids...>: SIGTERM the cluster's processes, wait, then SIGKILL
  local pids p deadline
  pids="$* $(cluster_pids | tr '\n' ' ')"
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  deadline=$((SECONDS + STOP_TIMEOUT))
  for p in $pids; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      log "pid $p still alive after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
}

down() {
  local pids
  pids="$(cluster_pids | tr '\n' ' ')"
  if [[ -d "$CLUSTER_DIR" && -x "$KWOKCTL" ]]; then
    log "deleting cluster $NAME"
    kwokctl delete cluster --name "$NAME" --kubeconfig "$KUBECONFIG_PATH" >&2 || log "kwokctl delete failed; killing its processes"
  fi
  # whatever is left (kwokctl signalled what it recorded; this waits and catches strays).
  # shellcheck disable=SC2086 # a list of PIDs
  kill_processes $pids
  rm -rf "$STATE"
  [[ -z "$(cluster_pids)" ]] || die "processes of the cluster still running: $(cluster_pids | tr '\n' ' ')"
  log "down"
}

status() {
  local rc=0 f p name
  if [[ ! -d "$CLUSTER_DIR" ]]; then echo "cluster $NAME: absent"; return 1; fi
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    name="$(basename "$f" .pid)"; p="$(tr -dc 0-9 <"$f")"
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then printf '%-24s running (pid %s)\n' "$name" "$p"
    else printf '%-24s STOPPED\n' "$name"; rc=1; fi
  done
  if ready; then printf '%-24s ready (https://127.0.0.1:%s)\n' apiserver "$APISERVER_PORT"
  else printf '%-24s NOT READY\n' apiserver; return 1; fi
  if nodes_ready; then printf '%-24s %s Ready\n' nodes "$NODES"; else printf '%-24s NOT READY\n' nodes; rc=1; fi
  return $rc
}

smoke() {
  local ns="cluster-smoke-$RANDOM" t0=$SECONDS
  ready || die "cluster is not up"
  k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
  wait_until 60 "serviceaccount" k get serviceaccount default -n "$ns" >/dev/null 2>&1 || die "no default ServiceAccount in $ns"
  k apply -n "$ns" -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
      - name: app
        image: example.invalid/smoke:1
        resources: {requests: {cpu: 100m, memory: 64Mi}}
        readinessProbe: {httpGet: {path: /healthz, port: 8080}}
EOF
  k rollout status -n "$ns" deployment/smoke --timeout=120s >&2 || { k get pods -n "$ns" -o wide >&2; die "smoke deployment not available"; }
  local avail; avail="$(k get deployment smoke -n "$ns" -o jsonpath='{.status.availableReplicas}')"
  [[ "$avail" == 2 ]] || die "availableReplicas=$avail, want 2"
  k get pods -n "$ns" -o wide >&2
  k scale -n "$ns" deployment/smoke --replicas=0 >/dev/null
  wait_until 120 "pods gone" bash -c "[[ -z \"\$('$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' get pods -n $ns -o name)\" ]]" \
    || die "pods still there after scaling to 0"
  k delete namespace "$ns" --wait=false >/dev/null
  log "smoke ok in $((SECONDS - t0))s: 2/2 available, scaled to 0, pods gone"
}

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    up) up ;;
    down|stop) down ;;
    status) status ;;
    env)
      echo "export KUBECONFIG=$KUBECONFIG_PATH"
      echo "export COUPONRUSH_K8S_BIN_DIR=$BIN"
      echo "export COUPONRUSH_TOOLS_BIN_DIR=$TOOLS"
      ;;
    kubeconfig) echo "$KUBECONFIG_PATH" ;;
    kubectl) k "$@" ;;
    smoke) smoke ;;
    -h|--help|help|"") sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (see --help)" ;;
  esac
}

main "$@"
