#!/usr/bin/env bash
# charts/couponrush/test.sh — checks of the Helm chart and of examples/ against a running
# cluster. Exits non-zero if any check fails; prints every command's output.
#
#   local/cluster/cluster.sh up && eval "$(local/cluster/cluster.sh env)"
#   charts/couponrush/test.sh
#
# What it checks:
#   1. crds/couponevent.yaml of the chart is a byte copy of the repository's crds/couponevent.yaml
#   2. helm lint and helm lint --strict pass
#   3. helm template renders (defaults, and with every optional part switched on); with
#      watchNamespaces, a Role and RoleBinding per watched namespace and no ClusterRole
#   4. values.schema.json rejects bad values (wrong types, out of range, unknown keys)
#   5. the CRD applies; the rendered chart passes `kubectl apply --dry-run=server` in
#      namespace couponrush-system, with no warning (the namespace warns on anything
#      below the `restricted` Pod Security Standard)
#   6. examples/ pass `kubectl apply --dry-run=server` (namespace marketing)
#   7. CouponEvents the CRD must refuse are refused, with the expected message
#
# It changes the cluster only this much: it applies the CouponEvent CRD, creates the
# namespaces couponrush-system and marketing if missing, and labels couponrush-system
# pod-security.kubernetes.io/warn=restricted (a warning level, never a refusal).
#
# Environment: KUBECONFIG (required); HELM, KUBECTL (default: the binaries
# local/cluster/build.sh builds); CHART_NAMESPACE=couponrush-system.
set -uo pipefail
export LC_ALL=C

CHART="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CHART/../.." && pwd)"
NS="${CHART_NAMESPACE:-couponrush-system}"
EVENTS_NS=marketing   # the namespace of the examples
RELEASE=couponrush

tools_dir() { "$ROOT/local/cluster/build.sh" "$1"; }
HELM="${HELM:-${COUPONRUSH_TOOLS_BIN_DIR:-$(tools_dir print-tools-dir)}/helm}"
KUBECTL="${KUBECTL:-${COUPONRUSH_K8S_BIN_DIR:-$(tools_dir print-bin-dir)}/kubectl}"

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "test.sh: KUBECONFIG is not set (eval \"\$(local/cluster/cluster.sh env)\")" >&2
  exit 2
fi
for tool in "$HELM" "$KUBECTL"; do
  [[ -x "$tool" ]] || { echo "test.sh: $tool is missing (local/cluster/build.sh builds it)" >&2; exit 2; }
done

passed=0
failed=()
out=""

# run CMD...: runs it, keeps its stdout+stderr in $out and prints them indented.
run() {
  local rc
  out="$("$@" 2>&1)"; rc=$?
  [[ -z "$out" ]] || printf '%s\n' "$out" | sed 's/^/    | /'
  return $rc
}
ok()   { echo "  PASS: $1"; passed=$((passed + 1)); }
bad()  { echo "  FAIL: $1"; failed+=("$1"); }
head_() { echo; echo "== $*"; }

# expect_ok NAME CMD...: the command must succeed.
expect_ok() {
  local name=$1; shift
  echo "  \$ $*"
  if run "$@"; then ok "$name"; else bad "$name"; fi
}

# apply_dry_run_no_warnings: kubectl apply --dry-run=server of stdin; a Warning fails too.
apply_dry_run_no_warnings() {
  local output rc
  output="$("$KUBECTL" apply --dry-run=server -f - 2>&1)"; rc=$?
  printf '%s\n' "$output"
  [[ $rc -eq 0 ]] || return $rc
  if grep -qi 'warning' <<<"$output"; then echo "(a warning is a failure here)"; return 1; fi
}

render() { "$HELM" template "$RELEASE" "$CHART" --namespace "$NS" "$@"; }

head_ "1. the chart's CRD is a byte copy of crds/couponevent.yaml"
expect_ok "crds/couponevent.yaml copied byte for byte" \
  cmp "$ROOT/crds/couponevent.yaml" "$CHART/crds/couponevent.yaml"

head_ "2. helm lint"
expect_ok "helm lint" "$HELM" lint "$CHART"
expect_ok "helm lint --strict" "$HELM" lint --strict "$CHART"
expect_ok "helm lint --strict (all options on)" "$HELM" lint --strict "$CHART" \
  --set operator.replicas=2 --set serviceMonitor.enabled=true --set networkPolicy.enabled=true \
  --set monitoring.prometheusRule.enabled=true --set monitoring.dashboard.enabled=true --set monitoring.podMonitor.enabled=true

head_ "3. helm template renders"
# render_check NAME WANT-KINDS HELM-TEMPLATE-ARGS...: renders, and lists the kinds (sorted).
render_check() {
  local name=$1 want=$2 rc kinds; shift 2
  echo "  \$ helm template $RELEASE $CHART --namespace $NS $*"
  out="$(render "$@" 2>&1)"; rc=$?
  if [[ $rc -ne 0 ]]; then printf '%s\n' "$out" | sed 's/^/    | /'; bad "$name"; return; fi
  kinds="$(sed -n 's/^kind: //p' <<<"$out" | sort | tr '\n' ' ')"
  echo "    | rendered $(grep -c '^kind: ' <<<"$out") objects: $kinds"
  if [[ "$kinds" == "$want " ]]; then ok "$name"; else bad "$name (wanted: $want)"; fi
}
base="ClusterRole ClusterRoleBinding Deployment Role RoleBinding Service ServiceAccount"
render_check "helm template (defaults)" "$base"
render_check "helm template (ServiceMonitor and NetworkPolicy on)" \
  "ClusterRole ClusterRoleBinding Deployment NetworkPolicy Role RoleBinding Service ServiceAccount ServiceMonitor" \
  --set serviceMonitor.enabled=true --set networkPolicy.enabled=true
render_check "helm template (alerts, dashboard and PodMonitor on)" \
  "ClusterRole ClusterRoleBinding ConfigMap Deployment PodMonitor PrometheusRule Role RoleBinding Service ServiceAccount" \
  --set monitoring.prometheusRule.enabled=true --set monitoring.dashboard.enabled=true --set monitoring.podMonitor.enabled=true
# The PrometheusRule carries every alert of files/alerts.yaml, the ConfigMap the dashboard.
alerts_in_file=$(grep -c '^      - alert: ' "$CHART/files/alerts.yaml")
alerts_rendered=$(grep -c '^ *- alert: ' <<<"$out")
if [[ "$alerts_in_file" -gt 0 && "$alerts_rendered" == "$alerts_in_file" ]]; then ok "PrometheusRule has all $alerts_in_file alerts"
else bad "PrometheusRule has $alerts_rendered alerts, files/alerts.yaml $alerts_in_file"; fi
if grep -q '"uid": "couponrush-event"' <<<"$out"; then ok "dashboard ConfigMap rendered"; else bad "dashboard ConfigMap missing"; fi
render_check "helm template (2 replicas)" "$base" --set operator.replicas=2
if grep -qx '  replicas: 2' <<<"$out"; then ok "operator.replicas=2 gives a Deployment of 2"; else bad "operator.replicas=2 not rendered"; fi
# watchNamespaces: the cluster-wide grants become one Role (and binding) per watched
# namespace; the leader-election Role stays in the release namespace.
render_check "helm template (watchNamespaces={marketing,shop})" \
  "Deployment Role Role Role RoleBinding RoleBinding RoleBinding Service ServiceAccount" \
  --set 'watchNamespaces={marketing,shop}'
role_namespaces="$(awk '/^kind: Role$/ {role = 1} /^kind: / && !/^kind: Role$/ {role = 0}
  role && /^  namespace: / {print $2}' <<<"$out" | sort | tr '\n' ' ')"
echo "    | Roles in: $role_namespaces"
if [[ "$role_namespaces" == "$NS marketing shop " ]]; then
  ok "a Role in each watched namespace and the Lease's in $NS"
else
  bad "Roles in the wrong namespaces (wanted: $NS marketing shop)"
fi
if grep -A1 -x '            - name: WATCH_NAMESPACES' <<<"$out" | grep -qx '              value: "marketing,shop"'; then
  ok "the operator is told WATCH_NAMESPACES=marketing,shop"
else
  bad "WATCH_NAMESPACES not rendered as marketing,shop"
fi
render_check "helm template (defaults) has no WATCH_NAMESPACES" "$base"
if grep -q 'WATCH_NAMESPACES' <<<"$out"; then bad "WATCH_NAMESPACES set with watchNamespaces empty"; else ok "no WATCH_NAMESPACES by default (every namespace)"; fi

head_ "4. values.schema.json rejects bad values"
# schema_rejects NAME MESSAGE --set ...: helm must refuse the values with the schema's MESSAGE.
schema_rejects() {
  local name=$1 message=$2; shift 2
  echo "  \$ helm template $RELEASE $CHART $*   (must fail)"
  if run render "$@"; then
    bad "$name (was accepted)"
  elif grep -q "values don't meet the specifications of the schema" <<<"$out" && grep -qF -- "$message" <<<"$out"; then
    ok "$name"
  else
    bad "$name (failed, but without: $message)"
  fi
}
schema_rejects "operator.replicas=abc rejected" "at '/operator/replicas': got string, want integer" --set operator.replicas=abc
schema_rejects "operator.replicas=0 rejected" "at '/operator/replicas': minimum: got 0, want 1" --set operator.replicas=0
schema_rejects "operator.image.repository=42 (a number) rejected" "at '/operator/image/repository': got number, want string" --set operator.image.repository=42
schema_rejects "serviceMonitor.enabled=yes (a string) rejected" "at '/serviceMonitor/enabled': got string, want boolean" --set serviceMonitor.enabled=yes
schema_rejects "operator.image.pullPolicy=Sometimes rejected" "at '/operator/image/pullPolicy': value must be one of" --set operator.image.pullPolicy=Sometimes
schema_rejects "unknown top-level key rejected" "additional properties 'replicas' not allowed" --set replicas=2
schema_rejects "watchNamespaces=marketing (a string) rejected" "at '/watchNamespaces': got string, want array" --set watchNamespaces=marketing
schema_rejects "watchNamespaces={Marketing} (not a namespace name) rejected" "at '/watchNamespaces/0': 'Marketing' does not match pattern" --set 'watchNamespaces={Marketing}'
schema_rejects "watchNamespaces={shop,shop} rejected" "at '/watchNamespaces': items at 0 and 1 are equal" --set 'watchNamespaces={shop,shop}'

head_ "5. the CRD and the rendered chart against the API server ($NS)"
expect_ok "API server ready" "$KUBECTL" get --raw /readyz
expect_ok "kubectl apply -f charts/couponrush/crds/" "$KUBECTL" apply -f "$CHART/crds/"
expect_ok "CRD established" "$KUBECTL" wait --for=condition=Established --timeout=60s crd/couponevents.couponrush.io
for ns in "$NS" "$EVENTS_NS"; do
  echo "  \$ kubectl create namespace $ns (if missing)"
  if "$KUBECTL" get namespace "$ns" >/dev/null 2>&1 || run "$KUBECTL" create namespace "$ns"; then
    ok "namespace $ns exists"
  else
    bad "namespace $ns"
  fi
done
expect_ok "namespace $NS warns below the restricted Pod Security Standard" \
  "$KUBECTL" label --overwrite namespace "$NS" pod-security.kubernetes.io/warn=restricted
echo "  \$ helm template $RELEASE $CHART --namespace $NS | kubectl apply --dry-run=server -f -"
if run bash -c "set -o pipefail; $(declare -f apply_dry_run_no_warnings); KUBECTL='$KUBECTL';
    '$HELM' template '$RELEASE' '$CHART' --namespace '$NS' | apply_dry_run_no_warnings"; then
  ok "rendered chart (defaults) accepted by the API server, no warnings"
else
  bad "rendered chart (defaults) against the API server"
fi
echo "  \$ helm template ... --set operator.replicas=2 --set networkPolicy.enabled=true | kubectl apply --dry-run=server -f -"
if run bash -c "set -o pipefail; $(declare -f apply_dry_run_no_warnings); KUBECTL='$KUBECTL';
    '$HELM' template '$RELEASE' '$CHART' --namespace '$NS' --set operator.replicas=2 --set networkPolicy.enabled=true \
      | apply_dry_run_no_warnings"; then
  ok "rendered chart (2 replicas, NetworkPolicy) accepted by the API server, no warnings"
else
  bad "rendered chart (2 replicas, NetworkPolicy) against the API server"
fi

echo "  \$ helm template ... --set watchNamespaces={$EVENTS_NS} | kubectl apply --dry-run=server -f -"
if run bash -c "set -o pipefail; $(declare -f apply_dry_run_no_warnings); KUBECTL='$KUBECTL';
    '$HELM' template '$RELEASE' '$CHART' --namespace '$NS' --set 'watchNamespaces={$EVENTS_NS}' \
      | apply_dry_run_no_warnings"; then
  ok "rendered chart (watchNamespaces={$EVENTS_NS}) accepted by the API server, no warnings"
else
  bad "rendered chart (watchNamespaces={$EVENTS_NS}) against the API server"
fi

head_ "6. examples/ against the API server ($EVENTS_NS)"
expect_ok "kubectl apply --dry-run=server -f examples/" "$KUBECTL" apply --dry-run=server -f "$ROOT/examples/"

head_ "7. CouponEvents the CRD must refuse"
event() { # event NAME SPEC-LINES: a CouponEvent manifest on stdout
  cat <<EOF
apiVersion: couponrush.io/v1alpha1
kind: CouponEvent
metadata:
  name: $1
  namespace: $EVENTS_NS
spec:
  coupon: {name: "10,000 KRW off", amount: 10000, currency: KRW}
$2
EOF
}
# refused NAME MESSAGE SPEC-LINES: the API server must refuse the event, saying MESSAGE.
refused() {
  local name=$1 message=$2 spec=$3
  echo "  \$ kubectl apply --dry-run=server -f - <<< CouponEvent $name:   (must be refused)"
  printf '%s\n' "$spec" | sed 's/^  /    >   /'
  if run bash -c "$(declare -f event); EVENTS_NS='$EVENTS_NS';
      event '$name' \"\$1\" | '$KUBECTL' apply --dry-run=server -f -" _ "$spec"; then
    bad "$name (was accepted)"
  elif grep -qF -- "$message" <<<"$out"; then
    ok "$name refused: $message"
  else
    bad "$name (refused, but without: $message)"
  fi
}
refused stock-zero "spec.stock: Invalid value: 0: spec.stock in body should be greater than or equal to 1" \
'  stock: 0
  startTime: "2026-12-01T10:00:00+09:00"'
refused start-and-schedule "set exactly one of startTime (a one-off event) or schedule (a round every day)" \
'  stock: 1000
  startTime: "2026-12-01T10:00:00+09:00"
  schedule: {daily: "10:00", timeZone: Asia/Seoul}'
refused neither-start-nor-schedule "set exactly one of startTime (a one-off event) or schedule (a round every day)" \
'  stock: 1000'
refused end-before-start "endTime must be after startTime" \
'  stock: 1000
  startTime: "2026-12-01T10:00:00+09:00"
  endTime: "2026-12-01T09:00:00+09:00"'
refused unknown-strategy 'spec.strategy: Unsupported value: "fastest"' \
'  stock: 1000
  startTime: "2026-12-01T10:00:00+09:00"
  strategy: fastest'

echo
if [[ ${#failed[@]} -eq 0 ]]; then
  echo "chart checks: all $passed passed"
  exit 0
fi
echo "chart checks: ${#failed[@]} FAILED, $passed passed:"
printf '  - %s\n' "${failed[@]}"
exit 1
