#!/usr/bin/env bash
# local/cluster/build.sh — build (once) the binaries of a local Kubernetes control plane and
# the test tools, from Go modules only (no container engine, no release downloads here).
#
#   local/cluster/build.sh [all]          build everything missing (idempotent; prints timings)
#   local/cluster/build.sh k8s            kube-apiserver, kube-controller-manager, kube-scheduler,
#                                         kubectl, etcd, kwok, kwokctl
#   local/cluster/build.sh tools          helm, k6
#   local/cluster/build.sh promtool       Prometheus' promtool (monitoring/test.sh)
#   local/cluster/build.sh print-promtool the path of promtool
#   local/cluster/build.sh prometheus     the Prometheus server (e2e/scenario.sh local scrapes the
#                                         round with it; monitoring/live.py queries it)
#   local/cluster/build.sh print-prometheus  the path of the Prometheus server
#   local/cluster/build.sh monitoring     both promtool and prometheus (what `make test` builds)
#   local/cluster/build.sh node           kubelet, kube-proxy, coredns, pause (the real-pods node,
#                                         local/pods/node.sh)
#   local/cluster/build.sh print-bin-dir  the bin dir of the cluster binaries
#   local/cluster/build.sh print-tools-dir
#   local/cluster/build.sh versions       one `name version` line per binary
#   local/cluster/build.sh check [k8s|tools|node]  exit 0 iff those binaries are all built
#   local/cluster/build.sh bump           regenerate k8s/go.mod for $K8S_VERSION (then commit it)
#
# Where things go (outside the repo, keyed by version):
#   ${XDG_CACHE_HOME:-~/.cache}/couponrush/k8s-v<K8S>/bin/{kube-apiserver,kube-controller-manager,
#        kube-scheduler,kubectl,etcd,kwok,kwokctl,kubelet,kube-proxy,coredns,pause}
#   ${XDG_CACHE_HOME:-~/.cache}/couponrush/tools-helm-v<H>-k6-v<K>/bin/{helm,k6}
#   ${XDG_CACHE_HOME:-~/.cache}/couponrush/prometheus-v<P>/bin/{promtool,prometheus}
# Go's own module/build caches (GOMODCACHE, GOCACHE) are the default ones, also outside the repo.
#
# Versions: Kubernetes (and pause, one C file of its module) comes from local/cluster/k8s/go.mod (k8s.io/kubernetes + a replace of
# every staging module by its published v0.X tag), etcd from local/cluster/etcd/go.mod (kept
# apart: k8s 1.34 pulls the etcd 3.6 libraries), CoreDNS from local/cluster/coredns (a main with
# only the plugins cluster DNS needs). kwok, helm and k6 are `go install pkg@v`
# (their go.mod has no replace). Both wrapper go.sum files are committed, so the default
# -mod=readonly build is reproducible; GOFLAGS=-mod=mod works too.
#
# Environment (all optional): KWOK_VERSION HELM_VERSION K6_VERSION (see below), BUILD_NICE=10
# (niceness of the compiler), GOFLAGS/GOPROXY/GOCACHE/... as usual for `go`.
set -euo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

modver() { # modver <go.mod> <module path>: the required version (not a replace target)
  awk -v m="$2" '
    /^replace/ { inrep = ($0 ~ /\($/) ; next }
    inrep && /^\)/ { inrep = 0; next }
    inrep { next }
    { for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v[0-9]/) { print $(i+1); exit } }' "$1"
}

K8S_VERSION="${K8S_VERSION:-$(modver "$HERE/k8s/go.mod" k8s.io/kubernetes)}"   # v1.34.10
ETCD_VERSION="$(modver "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)"          # v3.5.35
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
K6_VERSION="${K6_VERSION:-v1.8.1}"
# Prometheus 3.x publishes its Go module as v0.3xx (v0.316.0 = Prometheus 3.16).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
BUILD_NICE="${BUILD_NICE:-10}"

CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
TOOLS_DIR="$CACHE_ROOT/tools-helm-$HELM_VERSION-k6-$K6_VERSION/bin"
PROMETHEUS_DIR="$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION/bin"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)
TOOL_BINS=(helm k6)
NODE_BINS=(kubelet kube-proxy coredns pause)
COREDNS_VERSION="$(modver "$HERE/coredns/go.mod" github.com/coredns/coredns)"             # v1.12.1

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

version_of() { # the version a binary of the given name is built at
  case "$1" in
    kube-*|kubectl|kubelet|pause) echo "$K8S_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok|kwokctl) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    k6) echo "$K6_VERSION" ;;
    promtool|prometheus) echo "$PROMETHEUS_VERSION" ;;
  esac
}
dir_of() { case "$1" in helm|k6) echo "$TOOLS_DIR" ;; promtool|prometheus) echo "$PROMETHEUS_DIR" ;; *) echo "$BIN_DIR" ;; esac; }

# A binary counts as built when it exists and its stamp file names the wanted version (the
# cache dir is keyed by the k8s / tool versions; the stamp also covers etcd and kwok).
is_built() {
  local d; d="$(dir_of "$1")"
  [[ -x "$d/$1" && -f "$d/.$1.version" && "$(cat "$d/.$1.version")" == "$(version_of "$1")" ]]
}

# finish <name> <t0> <file>: move a fresh binary into place, stamp it, record the time.
finish() {
  local name="$1" t0="$2" out="$3" d; d="$(dir_of "$name")"
  [[ -x "$out" ]] || die "$name: $out not produced"
  mv -f "$out" "$d/.$name.tmp.$$" && mv -f "$d/.$name.tmp.$$" "$d/$name"
  version_of "$name" >"$d/.$name.version"
  local dt=$((SECONDS - t0))
  printf '%s\t%s\t%ds\t%s\n' "$name" "$(version_of "$name")" "$dt" "$(date -u +%FT%TZ)" >>"$d/.build-times"
  printf '%-24s %-9s %5ds\n' "$name" "$(version_of "$name")" "$dt" >>"$TIMES"
  log "$name $(version_of "$name"): built in ${dt}s"
}

skip_if_built() {
  if is_built "$1"; then
    log "$1 $(version_of "$1"): already built ($(dir_of "$1")/$1)"
    printf '%-24s %-9s cached\n' "$1" "$(version_of "$1")" >>"$TIMES"
    return 0
  fi
  mkdir -p "$(dir_of "$1")"
  log "$1 $(version_of "$1"): building ..."
  return 1
}

# modbuild <name> <wrapper module dir> <package> <ldflags>: go build inside a wrapper module.
modbuild() {
  local name="$1" dir="$2" pkg="$3" ld="$4" t0=$SECONDS
  skip_if_built "$name" && return 0
  local tmp; tmp="$(dir_of "$name")/.$name.build.$$"
  nice -n "$BUILD_NICE" env CGO_ENABLED=0 go -C "$dir" build -trimpath -ldflags "$ld" -o "$tmp" "$pkg" \
    || { rm -f "$tmp"; die "$name: go build $pkg failed"; }
  finish "$name" "$t0" "$tmp"
}

# goinstall <name> <pkg@version> <ldflags> [tags]: go install into a temp GOBIN (it has no -o).
goinstall() {
  local name="$1" pkg="$2" ld="$3" tags="${4:-}" t0=$SECONDS
  skip_if_built "$name" && return 0
  local gb; gb="$(mktemp -d)"
  nice -n "$BUILD_NICE" env CGO_ENABLED=0 GOBIN="$gb" go install -trimpath -tags "$tags" -ldflags "$ld" "$pkg" \
    || { rm -rf "$gb"; die "$name: go install $pkg failed"; }
  local out="${pkg%@*}"; out="$gb/${out##*/}"
  finish "$name" "$t0" "$out"
  rm -rf "$gb"
}

k8s_ldflags() {
  local v="${K8S_VERSION#v}" major minor
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  local f=(-s -w) p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=("-X $p.gitVersion=$K8S_VERSION" "-X $p.gitMajor=$major" "-X $p.gitMinor=$minor"
        "-X $p.gitTreeState=clean" "-X $p.buildDate=1970-01-01T00:00:00Z")
  done
  echo "${f[*]}"
}

build_k8s() {
  [[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read versions from $HERE/{k8s,etcd}/go.mod"
  local ld b; ld="$(k8s_ldflags)"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    modbuild "$b" "$HERE/k8s" "k8s.io/kubernetes/cmd/$b" "$ld"
  done
  modbuild etcd "$HERE/etcd" go.etcd.io/etcd/server/v3 "-s -w"
  # kwok: consts.KubeVersion is the Kubernetes version kwokctl assumes by default.
  local kld="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
  for b in kwok kwokctl; do
    goinstall "$b" "sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION" "$kld"
  done
}

build_node() {
  local ld; ld="$(k8s_ldflags)"
  modbuild kubelet "$HERE/k8s" k8s.io/kubernetes/cmd/kubelet "$ld"
  modbuild kube-proxy "$HERE/k8s" k8s.io/kubernetes/cmd/kube-proxy "$ld"
  modbuild coredns "$HERE/coredns" . "-s -w"
  # pause: the pod sandbox's process, one C file of the Kubernetes module, linked static.
  local t0=$SECONDS
  if ! skip_if_built pause; then
    local kdir src; kdir="$(go -C "$HERE/k8s" list -m -f '{{.Dir}}' k8s.io/kubernetes)"
    src="$kdir/build/pause/linux/pause.c"
    [[ -f "$src" ]] || die "pause: $src missing"
    gcc -Os -static -DVERSION="$K8S_VERSION" -o "$BIN_DIR/.pause.build.$$" "$src" || die "pause: gcc failed"
    finish pause "$t0" "$BIN_DIR/.pause.build.$$"
  fi
}

build_tools() {
  # helm: stamp its version and the Kubernetes version of its client libraries (that is
  # what `helm template` reports as .Capabilities.KubeVersion; the default would be 1.20).
  local hmod hminor
  hmod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  hminor="$(modver "$hmod" k8s.io/client-go | cut -d. -f2)"
  local hld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [[ -n "$hminor" ]]; then
    hld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$hminor"
    hld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$hminor"
  fi
  goinstall helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$hld"
  goinstall k6 "go.k6.io/k6@$K6_VERSION" "-s -w"
}

# The Prometheus server, as small as it builds: `remove_all_sd` leaves out every service-
# discovery plugin but file and HTTP (static targets are all the scenario needs; the
# Kubernetes, cloud and Consul clients are most of the code), and without `builtinassets`
# the web UI's assets are not embedded (the HTTP API is all that is queried).
build_prometheus() {
  local v="${PROMETHEUS_VERSION#v0.}" p=github.com/prometheus/common/version
  # v0.3MM.P is Prometheus 3.MM.P
  local semver="3.$(( ${v%%.*} - 300 )).${v#*.}"
  goinstall prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
    "-s -w -X $p.Version=$semver -X $p.Revision=$PROMETHEUS_VERSION -X $p.Branch=release -X $p.BuildUser=couponrush -X $p.BuildDate=19700101-00:00:00" \
    remove_all_sd
}

report() {
  local b d
  for b in "${K8S_BINS[@]}" "${TOOL_BINS[@]}" "${NODE_BINS[@]}"; do
    d="$(dir_of "$b")"
    if is_built "$b"; then printf '%-24s %-9s %s\n' "$b" "$(version_of "$b")" "$d/$b"
    else printf '%-24s %-9s MISSING\n' "$b" "$(version_of "$b")"; fi
  done
}

bump() { # regenerate k8s/go.mod for $K8S_VERSION (a v1.X.Y tag on the module proxy)
  [[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION must look like v1.34.10"
  local sv="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}" kmod m mods=()
  kmod="$(cd / && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$kmod" ]] || die "cannot fetch k8s.io/kubernetes@$K8S_VERSION"
  # every staging module k/k replaces with ./staging/...; the sample-* ones are not needed.
  while read -r m; do mods+=("$m"); done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kmod" | grep -v '^k8s.io/sample-')
  {
    sed -n '1,/^module /p' "$HERE/k8s/go.mod"
    printf '\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\ntool (\n' "$K8S_VERSION"
    printf '\tk8s.io/kubernetes/cmd/%s\n' kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
    printf ')\n\nreplace (\n'
    for m in "${mods[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$sv"; done
    printf ')\n'
  } >"$HERE/k8s/go.mod.new"
  mv "$HERE/k8s/go.mod.new" "$HERE/k8s/go.mod"
  rm -f "$HERE/k8s/go.sum"
  (cd "$HERE/k8s" && go mod tidy)
  log "k8s/go.mod now at $K8S_VERSION (${#mods[@]} staging replaces); commit k8s/go.mod and k8s/go.sum"
}

main() {
  TIMES="$(mktemp)"; trap 'rm -f "$TIMES"' EXIT
  local cmd="${1:-all}" b bins
  case "$cmd" in
    node)
      command -v go >/dev/null || die "go is not on PATH"
      T0=$SECONDS
      build_node
      log "node binaries done in $((SECONDS - T0))s"
      cat "$TIMES" >&2
      ;;
    all|k8s|tools)
      command -v go >/dev/null || die "go is not on PATH"
      T0=$SECONDS
      log "go $(go env GOVERSION); k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION, k6 $K6_VERSION"
      [[ "$cmd" == tools ]] || build_k8s
      [[ "$cmd" == k8s ]] || build_tools
      log "done in $((SECONDS - T0))s; per binary (the first one also compiles most shared packages):"
      cat "$TIMES" >&2
      printf '%-24s %-9s %5ds\n' total "" "$((SECONDS - T0))" >&2
      report
      ;;
    promtool)
      command -v go >/dev/null || die "go is not on PATH"
      goinstall promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" "-s -w"
      ;;
    prometheus)
      command -v go >/dev/null || die "go is not on PATH"
      build_prometheus
      ;;
    monitoring)
      command -v go >/dev/null || die "go is not on PATH"
      goinstall promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" "-s -w"
      build_prometheus
      ;;
    print-promtool) echo "$PROMETHEUS_DIR/promtool" ;;
    print-prometheus) echo "$PROMETHEUS_DIR/prometheus" ;;
    print-bin-dir) echo "$BIN_DIR" ;;
    print-tools-dir) echo "$TOOLS_DIR" ;;
    versions) report ;;
    check)
      case "${2:-all}" in k8s) bins=("${K8S_BINS[@]}") ;; tools) bins=("${TOOL_BINS[@]}") ;; node) bins=("${NODE_BINS[@]}") ;; *) bins=("${K8S_BINS[@]}" "${TOOL_BINS[@]}") ;; esac
      for b in "${bins[@]}"; do is_built "$b" || { echo "missing: $b" >&2; exit 1; }; done ;;
    bump) bump ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (see --help)" ;;
  esac
}

main "$@"
