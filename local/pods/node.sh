#!/usr/bin/env bash
# local/pods/node.sh — a one-node Kubernetes cluster with a REAL node on this machine: the
# control plane built by local/cluster/build.sh (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) plus a kubelet and kube-proxy on Debian's containerd and runc, bridge CNI
# and CoreDNS. Pods are real containers; probes are the kubelet's, Services are kube-proxy's
# iptables rules, names resolve through CoreDNS. Everything stays on this machine.
#
#   local/pods/node.sh up       start (idempotent; installs containerd/runc/CNI plugins when missing,
#                               imports the images of local/pods/images.sh, waits for a Ready node
#                               and answering cluster DNS)
#   local/pods/node.sh down     stop everything, remove pods' mounts, network and iptables rules
#   local/pods/node.sh status   exit 0 iff the node is Ready
#   local/pods/node.sh env      `export KUBECONFIG=...` (an admin kubeconfig) and the image names
#
# Why not kind: kind runs each node as a privileged container, and these machines never grant
# every capability (CAP_SYS_RESOURCE is outside the bounding set), so `docker run --privileged`
# fails. The ways around it (a private dockerd whose runc wrapper edits the OCI spec, containerd
# 2.x built from source, a systemd base image, a node image with every control-plane image
# inside) cost 20-30 min of cold builds on two cores and much code that users never run. The
# kubelet here runs as a host process with the same containerd CRI settings a kind node would
# need (restrict_oom_score_adj: lowering oom_score_adj needs the missing capability), so the
# pods, the chart, RBAC, probes, Services, DNS and Pod Security are exercised as on kind;
# what differs is only how the node itself is started. `e2e/scenario.sh kind` runs the same
# scenario on kind where kind works.
#
# Addresses (environment, all optional): NODE_IP=10.244.0.1 on bridge NODE_BRIDGE=cr0 (the pods'
# gateway; the API server listens there, so pods reach it), POD_CIDR=10.244.0.0/24,
# SERVICE_CIDR=10.96.0.0/16 (DNS at 10.96.0.10), NODE_APISERVER_PORT=26443,
# NODE_ETCD_PORT=22379, NODE_KUBELET_PORT=20250. State in $COUPONRUSH_STATE_DIR/node.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${COUPONRUSH_STATE_DIR:-$ROOT/.state}/node"
BIN="$("$ROOT/local/cluster/build.sh" print-bin-dir)"
NODE_NAME=couponrush-node
NODE_IP="${NODE_IP:-10.244.0.1}"
BRIDGE="${NODE_BRIDGE:-cr0}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR="${SERVICE_CIDR:-10.96.0.0/16}"
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
APISERVER_PORT="${NODE_APISERVER_PORT:-26443}"
ETCD_PORT="${NODE_ETCD_PORT:-22379}"
ETCD_PEER_PORT=$((ETCD_PORT + 1))
KUBELET_PORT="${NODE_KUBELET_PORT:-20250}"
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
# The node's image store outlives the node (imports take minutes); containers never do.
# Keyed by containerd's version (known once it is installed: containerd_root).
containerd_root() {
  echo "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush/node-containerd-$(dpkg-query -W -f '${Version}' containerd | tr -c 'A-Za-z0-9.\n' _)"
}
START_TIMEOUT="${NODE_START_TIMEOUT:-180}"
PKI="$STATE/pki"
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
k() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

wait_until() { # wait_until <seconds> <what> <command...>
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out waiting for $what"; return 1; }
    sleep 0.5
  done
}

install_packages() {
  local missing=() p
  for p in containerd runc containernetworking-plugins iptables conntrack openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} from Debian's packages ..."
  [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]] || apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# ------------------------------------------------------------------------------ PKI

# cert <name> <CN> <O or ""> [subjectAltName]: a P-256 key and a certificate signed by the CA.
cert() {
  local name="$1" cn="$2" org="$3" san="${4:-}" subj="/CN=$2"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() { # kubeconfig <file> <cert name>
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: couponrush-node
  cluster: {server: "https://$NODE_IP:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: couponrush-node
  context: {cluster: couponrush-node, user: $2}
current-context: couponrush-node
EOF
}

make_pki() {
  [[ -f "$PKI/.complete" ]] && return 0
  rm -rf "$PKI"; mkdir -p "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=couponrush-node-ca" -days 365 -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin couponrush-admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert kubelet-serving "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local c; for c in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done
  touch "$PKI/.complete"
}

# ------------------------------------------------------------------------------ processes

start() { # start <name> <command...>: a process of the node, in its own session, logged
  local name="$1"; shift
  if [[ -s "$STATE/pids/$name" ]] && kill -0 "$(cat "$STATE/pids/$name")" 2>/dev/null; then return 0; fi
  mkdir -p "$STATE/pids" "$STATE/logs"
  setsid "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name"
}

alive() { [[ -s "$STATE/pids/$1" ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

# Kernel settings the node changes (forwarding here; the kubelet sets the panic and
# overcommit ones): saved once, put back by `down`.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables kernel.panic kernel.panic_on_oops vm.overcommit_memory)
save_sysctls() {
  [[ -f "$STATE/sysctls" ]] && return 0
  local k; for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k" 2>/dev/null)"; done >"$STATE/sysctls"
}
restore_sysctls() {
  local line
  [[ -f "$STATE/sysctls" ]] || return 0
  while read -r line; do [[ "$line" == *=?* ]] && sysctl -qw "$line" 2>/dev/null || true; done <"$STATE/sysctls"
}

network() {
  save_sysctls
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  # The bridge exists before the first pod, so the API server can listen on its address.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q " $NODE_IP/" || ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  # firewall: accepts each pod's traffic in FORWARD, whose policy a Docker engine on the
  # same machine sets to DROP (bridged pod-to-pod packets pass through it too).
  cat >"$STATE/cni/net.d/10-couponrush.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "couponrush",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
EOF
}

containerd_up() {
  local pause="$1"
  mkdir -p "$STATE/containerd"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$(containerd_root)"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # Lowering a container's oom_score_adj needs CAP_SYS_RESOURCE, which this machine never
  # grants: without this every pod sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
EOF
  start containerd /usr/bin/containerd --config "$STATE/containerd/config.toml"
  wait_until 30 containerd ctr_ version || die "containerd did not start (log: $STATE/logs/containerd.log)"
  remove_containers # left by a run that ended without `down`: the new node starts clean
}

remove_containers() { # every container (and pod sandbox) of the node; images stay
  local id
  for id in $(ctr_ containers ls -q 2>/dev/null); do
    ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    ctr_ containers rm "$id" >/dev/null 2>&1 || true
  done
}

import_images() { # every image of local/pods/images.sh that the node does not hold yet
  local line name image have
  have="$(ctr_ images ls -q 2>/dev/null)"
  while IFS='=' read -r name image; do
    [[ -n "$image" ]] || continue
    grep -qxF "$image" <<<"$have" && continue
    log "importing $image"
    "$DOCKER" save "$image" | ctr_ images import --no-unpack=false - >/dev/null \
      || die "importing $image into the node's containerd failed"
  done <"$STATE/images.env"
}

control_plane_up() {
  start etcd "$BIN/etcd" --name node --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "node=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --profiling=false --v=1
  wait_until 90 "the API server" k get --raw /readyz || die "kube-apiserver not ready (log: $STATE/logs/kube-apiserver.log)"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 20257 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cluster-name couponrush-node --v=1
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 20259 --leader-elect=false --v=1
}

kubelet_up() {
  cat >"$STATE/resolv.conf" <<EOF
$(grep -E '^nameserver' /etc/resolv.conf | head -3)
EOF
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 20248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
podCIDR: $POD_CIDR
failSwapOn: false
maxPods: 110
podLogsDir: $STATE/pod-logs
# A shared test machine: no evictions or image garbage collection in the middle of a test.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
EOF
  start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$STATE/kubelet" \
    --node-labels "node.kubernetes.io/instance-type=t3.medium" --v=1
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:20249
healthzBindAddress: 127.0.0.1:20256
# Service traffic is masqueraded, so a pod reaching itself or the host reaching a pod
# through a ClusterIP gets its replies back through the same rules.
# localhostNodePorts off: kube-proxy then leaves route_localnet alone, so nothing outside
# the machine can reach services bound to 127.0.0.1.
iptables: {masqueradeAll: true, localhostNodePorts: false}
# Leave the machine's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1
}

dns_up() {
  local image; image="$(sed -n 's/^coredns=//p' "$STATE/images.env")"
  sed "s|@COREDNS_IMAGE@|$image|; s|@DNS_IP@|$DNS_IP|" "$HERE/coredns.yaml" | k apply -f - >/dev/null
}

dns_answers() { # CoreDNS is Ready behind the kube-dns Service (its `ready` plugin answers)
  [[ "$(k -n kube-system get endpointslices -l kubernetes.io/service-name=kube-dns \
        -o jsonpath='{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}')" != "" ]]
}

node_ready() {
  [[ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

up() {
  local t0=$SECONDS
  [[ $EUID -eq 0 ]] || die "the node needs root (it runs containerd, the kubelet and iptables)"
  install_packages
  "$ROOT/local/cluster/build.sh" check node >/dev/null 2>&1 || "$ROOT/local/cluster/build.sh" node
  eval "$("$HERE/engine.sh" env)"
  mkdir -p "$(dirname "$STATE")"
  "$HERE/images.sh" build >"$STATE.images.env.tmp" || die "building the images failed"
  mkdir -p "$STATE"; mv "$STATE.images.env.tmp" "$STATE/images.env"
  if alive kubelet && alive kube-apiserver && node_ready && dns_answers; then
    import_images
    log "already up: node $NODE_NAME Ready"; return 0
  fi
  make_pki
  network
  containerd_up "$(sed -n 's/^pause=//p' "$STATE/images.env")"
  import_images
  control_plane_up
  kubelet_up
  wait_until "$START_TIMEOUT" "node $NODE_NAME Ready" node_ready \
    || { tail -n 30 "$STATE/logs/kubelet.log" >&2; die "node not Ready (logs: $STATE/logs)"; }
  wait_until 60 "the default ServiceAccount" k -n default get serviceaccount default
  dns_up
  wait_until 120 "cluster DNS" dns_answers \
    || { k -n kube-system get pods -o wide >&2; die "CoreDNS not ready (kubectl -n kube-system logs deploy/coredns)"; }
  log "up in $((SECONDS - t0))s: node $NODE_NAME Ready, API https://$NODE_IP:$APISERVER_PORT, KUBECONFIG=$ADMIN_KUBECONFIG"
}

# The containers were killed, not torn down through CNI: remove the rules CNI made for them
# (masquerading per pod, named after our network; the firewall plugin's per-pod accepts).
cni_rules_down() {
  local rule chain prefix="${POD_CIDR%.*}."
  while read -r rule; do
    chain="$(grep -o -- '-j CNI-[0-9a-f]*' <<<"$rule" | cut -d' ' -f2)"
    eval "iptables -t nat ${rule/#-A/-D}" 2>/dev/null || true
    [[ -n "$chain" ]] && { iptables -t nat -F "$chain" 2>/dev/null; iptables -t nat -X "$chain" 2>/dev/null; } || true
  done < <(iptables -t nat -S POSTROUTING 2>/dev/null | grep -F 'name: \"couponrush\"')
  while read -r rule; do
    eval "iptables -t filter ${rule/#-A/-D}" 2>/dev/null || true
  done < <(iptables -t filter -S CNI-FORWARD 2>/dev/null | grep -F -- "$prefix")
}

ours() { # ours <name>: the pid of a node process this script started, if it still runs as that
  local pid
  [[ -s "$STATE/pids/$1" ]] || return 1
  pid="$(cat "$STATE/pids/$1")"
  [[ "$( { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" == *"$STATE"* ]] || return 1
  echo "$pid"
}

down() {
  local name pid deadline m f
  [[ -d "$STATE" ]] || return 0   # nothing of ours to stop
  log "stopping the node"
  # kubelet first (it would restart what we stop), then every container, then the rest.
  for name in kubelet kube-proxy; do pid="$(ours "$name")" && kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 15))
  while pid="$(ours kubelet)" && ((SECONDS < deadline)); do sleep 0.2; done
  pid="$(ours kubelet)" && kill -KILL "$pid" 2>/dev/null || true
  # our pods' network namespaces, named in their sandboxes' OCI specs (gone once deleted)
  local netns
  netns="$(grep -rhos '/var/run/netns/cni-[0-9a-f-]*' "$STATE/containerd/state" 2>/dev/null | sort -u)" || true
  if [[ -S "$CONTAINERD_SOCK" ]]; then
    for pid in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$pid" >/dev/null 2>&1 || true; done
  fi
  # the shims of our containerd (their command line names its socket's directory)
  for pid in $(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  [[ -S "$CONTAINERD_SOCK" ]] && remove_containers
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    pid="$(ours "$name")" && kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 20))
  for f in "$STATE"/pids/*; do
    [[ -f "$f" ]] || continue
    pid="$(ours "$(basename "$f")")" || continue
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # shims that outlived containerd
  for pid in $(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  # mounts under the state dir (pod volumes, container root filesystems), deepest first
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r)
  for m in $netns; do [[ -e "$m" ]] && { ip netns delete "$(basename "$m")" 2>/dev/null || true; }; done
  cni_rules_down
  if [[ -x "$BIN/kube-proxy" && -f "$STATE/pids/kube-proxy" ]] && iptables -t nat -S 2>/dev/null | grep -q KUBE-; then
    "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null || true
  # the pods' cgroups (empty once their processes are gone), deepest first
  for m in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$m" ]] && find "$m" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  restore_sysctls
  rm -rf --one-file-system "$STATE"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down|stop) down ;;
  status) node_ready ;;
  env)
    echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
    echo "export NODE_CONTAINERD_SOCK=$CONTAINERD_SOCK"
    echo "export COUPONRUSH_K8S_BIN_DIR=$BIN"
    echo "export COUPONRUSH_TOOLS_BIN_DIR=$("$ROOT/local/cluster/build.sh" print-tools-dir)"
    sed -n 's/^\([a-z]*\)=\(.*\)$/export IMAGE_\U\1\E=\2/p' "$STATE/images.env" 2>/dev/null || true
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; [[ "${1:-}" =~ ^(-h|--help|help)$ ]] ;;
esac
