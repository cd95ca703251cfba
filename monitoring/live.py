#!/usr/bin/env python3
"""monitoring/live.py — the alerts and the dashboard the chart ships, evaluated by a real
Prometheus server that scraped a real round (e2e/scenario.sh local starts the server, runs
this while the operator, issuer and consumer still serve, then stops everything).

Asserts, through Prometheus' HTTP API:
  targets    every scrape target is up (`up == 1`, health "up") and the operator, the
             issuer and the consumer are among them
  variables  the dashboard's $namespace and $event variables offer the scenario's namespace
             and event (the operator's gauges keep their own `namespace` label)
  dashboard  every dashboard query, with $namespace/$event filled in, evaluates without
             error (now, and over the whole run) and returns at least one series with at
             least one value that is not NaN during the run
  rules      every alert of the rule file is loaded, its health is "ok" with no lastError,
             its group has been evaluated at least --min-evaluations times and no
             evaluation of it has failed (Prometheus' own counters)
  alerts     every alert expression evaluates without error (now, and over the run); each
             operand of its comparisons and `and`/`or`/`unless` (the expression with its
             thresholds taken off) returns a series with a value during the run; and every
             metric selector in it returns series. A healthy round fires no alert, so the
             whole expression legitimately returns nothing; what must not happen is that a
             side of it is empty because a name, a label or a label value is wrong, since
             then the alert could never fire. The operands are what the threshold is
             compared with (an error ratio, a p99, a lag, a phase gauge), so each must exist.
  born at 0  every counter and histogram series those queries read was at 0 when it
             appeared (or was there at its target's first scrape): rate() cannot see the
             increments a series was born with, and a round fits in one scrape interval

Usage: monitoring/live.py --prometheus URL --namespace NS --event NAME
         [--dashboard FILE] [--alerts FILE] [--jobs a,b,c] [--min-evaluations N]
Exit status 0 when every check passed; each failure names the query and the reason.
"""
import argparse
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        """The `data` of an API answer; raises RuntimeError with Prometheus' own error."""
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                raise RuntimeError(f"HTTP {e.code} from {path}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"{path}: {e}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        for warning in body.get("warnings", []) or []:
            print(f"    warning ({path}): {warning}")
        return body["data"]

    def text(self, path):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return response.read().decode()


failures = []
passes = 0


def check(name, ok, why=""):
    global passes
    if ok:
        passes += 1
        print(f"  PASS: {name}")
    else:
        failures.append(f"{name}: {why}")
        print(f"  FAIL: {name}\n        {why}")


def has_value(series):
    return any(not math.isnan(float(v)) for _, v in series.get("values", []))


class Window:
    """The run: from the server's start until now, one point per `step` seconds."""

    def __init__(self, prom):
        started = prom.get("/api/v1/status/runtimeinfo")["startTime"]
        # RFC 3339 with nanoseconds; seconds are enough.
        self.start = datetime.fromisoformat(re.sub(r"\.\d+", "", started).replace("Z", "+00:00")).timestamp()
        self.end = time.time()
        self.seconds = max(1, int(self.end - self.start))
        self.step = max(1, math.ceil(self.seconds / 5000))


def evaluate(prom, window, expr):
    """(error or None, range result): the query evaluated now and over the run."""
    try:
        prom.get("/api/v1/query", query=expr, time=f"{window.end:.3f}")
        result = prom.get("/api/v1/query_range", query=expr, start=f"{window.start:.3f}",
                          end=f"{window.end:.3f}", step=window.step)["result"]
        return None, result
    except RuntimeError as e:
        return str(e), []


def returns_series(prom, window, expr):
    """Why `expr` does not return a series with a value during the run, or None."""
    error, result = evaluate(prom, window, expr)
    if error:
        return f"error: {error}"
    if not result:
        return "no series during the run"
    if not any(has_value(s) for s in result):
        return f"{len(result)} series, every value NaN"
    return None


# --- PromQL, just enough to take an alert's thresholds off ---------------------------

COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
SET_OP = re.compile(r"(and|or|unless)(?![A-Za-z0-9_:])")
MODIFIERS = re.compile(r"^\s*(bool\b\s*)?((on|ignoring)\s*\([^)]*\)\s*)?((group_left|group_right)\b\s*(\([^)]*\))?\s*)?")
NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def operands(expr):
    """The sides of the top-level comparisons and set operators of `expr`, without the
    number literals (the thresholds). Comparisons and set operators bind less tightly
    than arithmetic, so each side is a whole arithmetic expression."""
    parts, depth, start, i, quote = [], 0, 0, 0, None
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = COMPARISON.match(expr, i)
            if not m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")):
                m = SET_OP.match(expr, i)
            if m:
                parts.append(expr[start:i])
                i = start = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    cleaned = [MODIFIERS.sub("", p, count=1).strip() for p in parts]
    return [p for p in cleaned if p and not NUMBER.match(p)]


def selectors(prom, expr):
    """Every selector of `expr` (from Prometheus' own parser): (metric name, PromQL)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") in ("vectorSelector", "matrixSelector"):
                matchers = ", ".join(
                    f"{m['name']}{m['type']}{json.dumps(m['value'])}" for m in node.get("matchers", []))
                found.append((node.get("name", ""), "{" + matchers + "}"))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(prom.get("/api/v1/parse_query", query=expr))
    return sorted(set(found))


# --- the checks ------------------------------------------------------------------------

def check_targets(prom, jobs):
    print("targets")
    active = prom.get("/api/v1/targets", state="active")["activeTargets"]
    for target in active:
        job, url = target["labels"].get("job"), target["scrapeUrl"]
        check(f"target {job} {url} health up", target["health"] == "up",
              f"health {target['health']}: {target.get('lastError') or 'no error reported'}")
    up = {s["metric"].get("job"): float(s["value"][1]) for s in prom.get("/api/v1/query", query="up")["result"]}
    for job in jobs:
        check(f"up{{job=\"{job}\"}} == 1", up.get(job) == 1.0,
              f"up is {up.get(job, 'absent')} (jobs scraped: {sorted(up)})")


def substitute(expr, variables, window):
    # Grafana's range variables, as Grafana computes them for this run: $__interval is the
    # step; $__rate_interval is max($__interval + scrape interval, 4 × scrape interval).
    scrape = variables["__scrape_interval"]
    values = {
        **{k: v for k, v in variables.items() if not k.startswith("__")},
        "__interval": f"{window.step}s",
        "__interval_ms": str(window.step * 1000),
        "__rate_interval": f"{max(window.step + scrape, 4 * scrape)}s",
        "__range": f"{window.seconds}s",
        "__range_s": str(window.seconds),
        "__range_ms": str(window.seconds * 1000),
    }
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def check_dashboard(prom, window, path, variables):
    print(f"dashboard ({os.path.relpath(path, ROOT)})")
    dashboard = json.load(open(path))
    exprs = []
    # The template variables: label_values(metric{...}, label) is Grafana's; its API twin.
    for var in dashboard.get("templating", {}).get("list", []):
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", var.get("query", "") or "")
        if not m:
            continue
        selector = substitute(m.group(1), variables, window)
        try:
            offered = prom.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": selector},
                               start=f"{window.start:.3f}", end=f"{window.end:.3f}")
            why = f"offers {offered}, not {variables[var['name']]!r}"
        except RuntimeError as e:
            offered, why = [], f"error: {e}"
        check(f"variable ${var['name']} = label_values({selector}, {m.group(2)}) offers {variables[var['name']]!r}",
              variables[var["name"]] in offered, why)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], variables, window)
            name = f"panel {panel['id']} {panel.get('title', '')!r} {target['refId']}: {expr}"
            leftover = re.findall(r"\$\{?\w+", expr)
            if leftover:
                check(name, False, f"unknown dashboard variable(s) {leftover}")
                continue
            why = returns_series(prom, window, expr)
            check(name, why is None, why or "")
            if why is None or not why.startswith("error"):
                exprs.append(expr)
    return exprs


def check_rules(prom, window, alerts_file, min_evaluations):
    print(f"alert rules ({os.path.relpath(alerts_file, ROOT)})")
    wanted = re.findall(r"^\s*-\s*alert:\s*(\S+)", open(alerts_file).read(), re.M)
    groups = prom.get("/api/v1/rules", type="alert")["groups"]
    loaded = {r["name"]: (g, r) for g in groups for r in g["rules"]}
    check(f"all {len(wanted)} alerts of the file are loaded", set(wanted) <= set(loaded),
          f"missing: {sorted(set(wanted) - set(loaded))}")
    # Prometheus' own counters, per group: evaluations run and evaluations failed.
    metrics = prom.text("/metrics")

    def counter(name, group):
        pattern = rf'^{name}\{{[^}}]*rule_group="[^"]*;{re.escape(group["name"])}"[^}}]*\}} (\S+)$'
        values = [float(v) for v in re.findall(pattern, metrics, re.M)]
        return sum(values) if values else None

    for group in groups:
        runs = counter("prometheus_rule_group_iterations_total", group)
        failed = counter("prometheus_rule_evaluation_failures_total", group)
        check(f"group {group['name']}: evaluated >= {min_evaluations} times, no evaluation failed",
              runs is not None and runs >= min_evaluations and failed == 0,
              f"evaluations {runs}, failed {failed}")
    exprs = []
    for alert in wanted:
        if alert not in loaded:
            continue
        group, rule = loaded[alert]
        check(f"alert {alert}: health ok, no lastError, evaluated",
              rule.get("health") == "ok" and not rule.get("lastError")
              and not rule.get("lastEvaluation", "").startswith("0001-"),
              f"health {rule.get('health')!r}, lastError {rule.get('lastError')!r}, "
              f"lastEvaluation {rule.get('lastEvaluation')}")
        expr = rule["query"]
        error, _ = evaluate(prom, window, expr)
        check(f"alert {alert}: expression evaluates", error is None, f"error: {error} in: {expr}")
        if error:
            continue
        exprs.append(expr)
        for operand in operands(expr):
            why = returns_series(prom, window, operand)
            check(f"alert {alert}: operand {operand}", why is None, why or "")
        for _, selector in selectors(prom, expr):
            why = returns_series(prom, window, f"count({selector})")
            check(f"alert {alert}: selector {selector}", why is None, why or "")
    return exprs


def check_born_at_zero(prom, window, exprs):
    """Every counter and histogram series the queries read must have started at 0, unless
    it was already there at its target's first scrape. rate() and increase() count from a
    series' first sample: a series born mid-run at N (a labelled counter created on its
    first event, then incremented N times before the next scrape) hides those N, and a
    round that is over within one scrape interval would show no traffic at all."""
    print("counters born at zero")
    instant = f"{window.end:.3f}"
    first_up = {}
    for series in prom.get("/api/v1/query", query=f"up[{window.seconds}s]", time=instant)["result"]:
        ups = [float(t) for t, v in series["values"] if v == "1"]
        if ups:
            first_up[series["metric"].get("instance")] = ups[0]
    wanted = {}
    for expr in exprs:
        for name, selector in selectors(prom, expr):
            if re.search(r"_(total|bucket|count|sum)$", name):
                wanted[selector] = name
    for selector in sorted(wanted):
        try:
            result = prom.get("/api/v1/query", query=f"{selector}[{window.seconds}s]", time=instant)["result"]
        except RuntimeError as e:
            check(f"{selector}: series start at 0", False, f"error: {e}")
            continue
        late = []
        for series in result:
            t0, v0 = series["values"][0]
            seen = first_up.get(series["metric"].get("instance"))
            if float(v0) != 0 and (seen is None or float(t0) > seen):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items())
                                  if k not in ("__name__", "instance", "job", "namespace", "event"))
                late.append(f"{{{labels}}} born at {v0}")
        check(f"{selector}: {len(result)} series, each at 0 when it appeared (or there from the first scrape)",
              not late, f"{len(late)} series appeared mid-run already counting, so rate() misses that much: "
              + "; ".join(late[:6]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--dashboard", default=os.path.join(ROOT, "charts/couponrush/files/dashboard.json"))
    parser.add_argument("--alerts", default=os.path.join(ROOT, "charts/couponrush/files/alerts.yaml"))
    parser.add_argument("--jobs", default="couponrush-operator,couponrush-issuer,couponrush-consumer")
    parser.add_argument("--scrape-interval", type=int, default=1, help="seconds")
    parser.add_argument("--min-evaluations", type=int, default=5)
    args = parser.parse_args()

    prom = Prometheus(args.prometheus)
    window = Window(prom)
    print(f"monitoring/live.py: {args.prometheus}, the run's last {window.seconds}s (step {window.step}s), "
          f"$namespace={args.namespace} $event={args.event}")
    variables = {"namespace": args.namespace, "event": args.event, "__scrape_interval": args.scrape_interval}
    check_targets(prom, args.jobs.split(","))
    exprs = check_dashboard(prom, window, args.dashboard, variables)
    exprs += check_rules(prom, window, args.alerts, args.min_evaluations)
    check_born_at_zero(prom, window, exprs)
    print()
    if failures:
        print(f"monitoring (live Prometheus): {len(failures)} check(s) failed, {passes} passed:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print(f"monitoring (live Prometheus): all {passes} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
