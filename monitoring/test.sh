#!/usr/bin/env bash
# monitoring/test.sh — the alerts and the dashboard the chart ships, checked with
# Prometheus' own promtool (built from its Go module by local/cluster/build.sh, cached):
#
#   1. promtool check rules: charts/couponrush/files/alerts.yaml is a valid rule file
#   2. promtool test rules monitoring/alerts.test.yaml: each alert fires, with its labels
#      and annotations, where it should, and stays silent where it should not
#   3. every query of charts/couponrush/files/dashboard.json parses (as recording rules)
#   4. against what the binaries expose after a real round (the /metrics the local
#      scenario saves: operator, issuer, consumer): every metric the alerts and the
#      dashboard name exists, `promtool check metrics` finds no naming problem, and no
#      label carries a user id
#
#   monitoring/test.sh [METRICS_DIR]     (default: .state/scenario/metrics)
#
# The same alerts and dashboard evaluated live, by a Prometheus server that scraped the
# round: monitoring/live.py, which e2e/scenario.sh local runs before the event is deleted.
set -uo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
METRICS_DIR="${1:-${COUPONRUSH_STATE_DIR:-$ROOT/.state}/scenario/metrics}"
ALERTS="$ROOT/charts/couponrush/files/alerts.yaml"
DASHBOARD="$ROOT/charts/couponrush/files/dashboard.json"
PROMTOOL="${PROMTOOL:-$("$ROOT/local/cluster/build.sh" print-promtool)}"
[[ -x "$PROMTOOL" ]] || "$ROOT/local/cluster/build.sh" promtool >&2 || { echo "monitoring/test.sh: no promtool" >&2; exit 2; }

failed=0
check() { local name=$1; shift; if "$@"; then echo "  PASS: $name"; else echo "  FAIL: $name"; failed=$((failed + 1)); fi; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

check "promtool check rules (alerts)" "$PROMTOOL" check rules "$ALERTS"
check "promtool test rules (every alert fires and stays silent where it should)" \
  "$PROMTOOL" test rules "$ROOT/monitoring/alerts.test.yaml"

# The dashboard's queries as recording rules, with its variables filled in.
python3 - "$DASHBOARD" >"$work/dashboard-rules.yaml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$namespace", "shop").replace("$event", "sale")
        print(f"      - record: couponrush:dashboard:panel{panel['id']}_{target['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PY
check "every dashboard query parses ($(grep -c 'record:' "$work/dashboard-rules.yaml") queries)" \
  "$PROMTOOL" check rules "$work/dashboard-rules.yaml"

if ! ls "$METRICS_DIR"/*.txt >/dev/null 2>&1; then
  echo "  FAIL: no saved /metrics in $METRICS_DIR (run e2e/scenario.sh local first)"
  exit 1
fi
cat "$METRICS_DIR"/*.txt >"$work/all.txt"
# A name is exposed if it has samples, or (a labelled family nothing has touched yet, such
# as the operator's failures by kind) its family is declared: OpenMetrics, which the
# binaries speak, declares counters and histograms by their base name.
missing=()
for name in $(grep -ohE 'couponrush_[a-z_]+' "$ALERTS" "$DASHBOARD" | grep -v '^couponrush_dashboard' | sort -u); do
  base="$(sed -E 's/_(total|bucket|sum|count)$//' <<<"$name")"
  grep -qE "^$name(\{| )" "$work/all.txt" || grep -qE "^# TYPE $base " "$work/all.txt" || missing+=("$name")
done
check "every metric the alerts and the dashboard name is exposed (${#missing[@]} missing: ${missing[*]:-none})" \
  test ${#missing[@]} -eq 0
# promtool lints the classic text format; in OpenMetrics a counter's HELP names its base
# (`x`, samples `x_total`), which promtool reports as "x_total no help text". Those
# lines are that format difference; anything else it reports is a naming problem.
lint() {
  local file=$1 problems
  problems="$("$PROMTOOL" check metrics <"$file" 2>&1 | while read -r name rest; do
    if [[ "$rest" == "no help text" && "$name" == *_total ]] && grep -q "^# HELP ${name%_total} " "$file"; then continue; fi
    echo "$name $rest"
  done)"
  [[ -z "$problems" ]] || { printf '    | %s\n' "$problems"; return 1; }
}
for file in "$METRICS_DIR"/*.txt; do
  check "promtool check metrics: $(basename "$file" .txt)" lint "$file"
done
users="$(grep -E '^couponrush_[a-z_]+\{' "$work/all.txt" | grep -iE 'user|sub=' || true)"
check "no label carries a user id" test -z "$users"
[[ -z "$users" ]] || printf '    | %s\n' $users

echo
[[ $failed -eq 0 ]] && echo "monitoring: all checks passed" || echo "monitoring: $failed check(s) failed"
exit $(( failed > 0 ))
