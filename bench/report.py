#!/usr/bin/env python3
"""Turns one benchmark run's work directory (written by bench/run.sh) into the
Markdown report: machine and load model, one table pair per scenario, the project's
targets with a verdict each, and what the issuer's profile shows.

    python3 bench/report.py <work dir> <report base name>   # Markdown on stdout

Only the standard library; every number comes from a file in the work directory.
"""

import json
import os
import re
import sys
from collections import Counter

from kv import read_kv

WORK = sys.argv[1]
BASE = sys.argv[2] if len(sys.argv) > 2 else "results"
RUNS = os.path.join(WORK, "runs")
STRATEGY_ORDER = ["db-lock", "redis-lock", "redis-counter", "redis-counter-set", "kafka-async", "queue"]
BACKENDS = ["redis", "mysql", "kafka", "consumer"]




def read_snapshot(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, v = line.split()
            out[k] = float(v)
    return out


def load_run(label):
    d = os.path.join(RUNS, label)
    run = {"label": label, **read_kv(os.path.join(d, "meta"))}
    with open(os.path.join(d, "report.json")) as f:
        g = json.load(f)
    codes = {int(k): v for k, v in g["by_code"].items()}
    words = g["by_status"]
    due, service = g["from_due_ms"], g["service_ms"]
    run.update(
        requests=g["requests"],
        achieved=g["achieved_per_s"],
        window_s=g["window_s"],
        p50=due["p50"], p95=due["p95"], p99=due["p99"], max=due["max"],
        service_p50=service["p50"], service_p99=service["p99"],
        late=g["late_sends"],
        a201=codes.get(201, 0), a200=codes.get(200, 0), a202=codes.get(202, 0),
        a409=codes.get(409, 0), a410=codes.get(410, 0),
        a5xx=sum(v for k, v in codes.items() if k >= 500),
        other4xx=sum(v for k, v in codes.items() if 400 <= k < 500 and k not in (409, 410)),
        transport=g["transport_errors"] + g["timeouts"],
        issued=words.get("ISSUED", 0), queued=words.get("QUEUED", 0),
    )
    run["errors"] = run["a5xx"] + run["transport"]
    run["admitted"] = run["issued"] + run["queued"]
    run["admitted_per_s"] = run["admitted"] / run["window_s"] if run["window_s"] else 0.0
    # CPU around the run.
    # CPU until the last row was persisted when the run waited for that, else until the
    # generator's last answer.
    before = read_snapshot(os.path.join(d, "cpu.before"))
    persisted = os.path.join(d, "cpu.persisted")
    after = read_snapshot(persisted if os.path.exists(persisted) else os.path.join(d, "cpu.after"))
    wall = after["time"] - before["time"]
    cpu = {k: (after[k] - before.get(k, after[k])) / 100.0 for k in after if k not in ("time",)}
    raw_ours = sum(v for k, v in cpu.items() if not k.startswith("machine_"))
    # Net of idle: what each process used in the 2 s idle sample just before the run
    # (JVM housekeeping, timers) is subtracted at the same rate, so µs/req is the work
    # the requests caused.
    idle0, idle1 = os.path.join(d, "cpu.idle0"), os.path.join(d, "cpu.idle1")
    if os.path.exists(idle0) and os.path.exists(idle1):
        i0, i1 = read_snapshot(idle0), read_snapshot(idle1)
        idt = i1["time"] - i0["time"]
        if idt > 0:
            for k in cpu:
                if not k.startswith("machine_") and k in i0 and k in i1:
                    idle_rate = (i1[k] - i0[k]) / 100.0 / idt
                    cpu[k] = max(0.0, cpu[k] - idle_rate * wall)
    # /usr/bin/time's last line: user, system, elapsed seconds, max RSS KiB.
    gu, gs, _ge, grss = open(os.path.join(d, "gen.time")).read().strip().splitlines()[-1].split()[:4]
    gen_cpu = float(gu) + float(gs)
    run["cpu_s"] = {k: v for k, v in cpu.items() if not k.startswith("machine_")}
    run["gen_cpu_s"] = gen_cpu
    run["gen_pct"] = 100.0 * gen_cpu / run["window_s"] if run["window_s"] else 0.0
    run["gen_us_per_req"] = 1e6 * gen_cpu / run["requests"] if run["requests"] else 0.0
    run["gen_rss_mb"] = int(grss) / 1024.0
    run["snap_wall"] = wall
    run["background_pct"] = max(0.0, 100.0 * (cpu.get("machine_busy", 0) - raw_ours - gen_cpu) / wall) if wall else 0.0
    run["steal_pct"] = 100.0 * cpu.get("machine_steal", 0) / wall if wall else 0.0
    dbf = os.path.join(d, "db")
    if os.path.exists(dbf):
        f = open(dbf).read().split()
        if len(f) >= 6:
            run.update(
                rows=int(f[0]),
                distinct=int(f[1]),
                max_seq=int(f[2]),
                first_to_last_ms=int(float(f[3])),
                soldout_to_persisted_ms=int(float(f[4])),
                first_to_persisted_ms=int(float(f[5])),
            )
    # queue's 202 is a place in the queue, not a coupon: its admissions are the rows its
    # scheduler wrote, over the time from the first request to the last row.
    if run.get("target") == "queue" and run.get("scenario") == "admission" and "rows" in run:
        span_s = run["window_s"] + float(run.get("persist_wait_ms", 0) or 0) / 1000.0
        run["admitted_per_s"] = run["rows"] / span_s if span_s else 0.0
    return run


def us_per_req(run, name):
    n = run["requests"]
    return 1e6 * run["cpu_s"].get(name, 0.0) / n if n else 0.0


def server_us(run):
    """Server-side CPU per request: the ceiling process, or issuer + backends."""
    if run.get("target") == "ceiling":
        return us_per_req(run, "ceiling")
    return us_per_req(run, "issuer") + sum(us_per_req(run, b) for b in BACKENDS)


def fmt_ms(v):
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 10:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_n(v):
    return f"{v:,}"


runs = {}
if os.path.isdir(RUNS):
    for label in sorted(os.listdir(RUNS)):
        if os.path.exists(os.path.join(RUNS, label, "report.json")):
            runs[label] = load_run(label)
machine = read_kv(os.path.join(WORK, "machine"))
NPROC = int(machine.get("nproc", "2"))
RATE = machine.get("rate", "?")
SATURATE = machine.get("saturate_rate", "?")


def by_scenario(scenario):
    rows = [r for r in runs.values() if r.get("scenario") == scenario]
    order = {"ceiling": -1, **{s: i for i, s in enumerate(STRATEGY_ORDER)}}
    return sorted(rows, key=lambda r: order.get(r.get("target"), 99))


def target_run(rows, target):
    return next((r for r in rows if r.get("target") == target), None)


out = []
w = out.append

w(f"# couponrush benchmark, {machine.get('date', '?')}")
w("")
w(f"Command: `{machine.get('command', 'bench/run.sh')}` (commit {machine.get('git', '?')}).")
w("")
w("## Machine and load model")
w("")
w(f"- Machine: {NPROC} vCPU ({machine.get('cpu_model', '?')}), {machine.get('mem', '?')}, Linux {machine.get('kernel', '?')}.")
w("  Load generator, issuer, consumer, Redis, MariaDB and Kafka all share these cores; so does")
w("  whatever else runs on the machine (the *background* column: CPU used by processes that are")
w("  not part of the benchmark, in % of one core, during each run).")
w(f"- Generator: `couponrush-load` (e2e/src/load/open_model.rs), open model as wrk2: request *k* is due at")
w(f"  start + *k*/rate whatever happened before it; {machine.get('connections', '?')} keep-alive HTTP/1.1 connections")
w("  (the same for every target) take the requests in due order, a free one sends a request when")
w("  it is due (at once if late). Latency is measured **from the due time** (or from sending, if")
w("  the timer fired early), so a server that falls behind cannot hide the queue it causes;")
w("  *service* latency (from sending) is given next to it. *late* = requests sent more than 1 ms")
w(f"  after they were due (every connection busy). Timeout {machine.get('timeout_ms', '?')} ms (then: *no answer*).")
w(f"- Users: real HS256 JWTs (`auth={machine.get('auth', '?')}`), minted before the clock starts; the issuer")
w("  verifies every one it needs to (a sold-out round is answered before the token is checked).")
w("  The generator's own CPU is in every table (*gen µs/req*, *gen % core*; including minting the")
w("  tokens and opening the connections).")
w(f"- Spike (the seed scenario, docs/strategies.md): {machine.get('spike', '?')}, offered at **{RATE}/s**;")
w("  the round opens a few seconds after pre-warming and the first request is due at the opening; each")
w("  user presses about ten times, in random order.")
w(f"- Admission: {machine.get('admission', '?')}, so every request admits a coupon; offered at")
w(f"  **{SATURATE}/s**, far above what any target answers, so *achieved* is the target's capacity.")
w(f"- Sold-out path: {machine.get('sold_out', '?')}, offered at {SATURATE}/s: the first request takes the")
w("  coupon, every later one is answered from memory (queue: 202 until its scheduler has decided,")
w("  then 410); *achieved* is that path's capacity.")
w(f"- Ceiling: a trivial axum 0.8 handler answering 410 (`bench/ceiling/`), under the spike and")
w(f"  under the same saturating load; *÷ ceiling* = achieved ÷ the ceiling's achieved rate in the same scenario")
w("  (for admission and sold-out: ÷ the ceiling's capacity).")
w("- *achieved* = answered requests ÷ (last answer − first due time). *µs/req* = CPU time (user + system,")
w("  all threads) of that process from the first request until the round's last row is in MySQL (or the")
w("  last answer, for the ceiling and the sold-out path), net of its idle rate, ÷ requests. *steal*: CPU")
w("  time the hypervisor gave to other guests, in % of one core (not counted as anyone's use).")
w("")

ERR_HEAD = "| 5xx | no answer | other 4xx | late |"


def answer_table(rows, ceiling_rate):
    w("| target | achieved/s | ÷ ceiling | p50 ms | p95 ms | p99 ms | max ms | service p99 ms " + ERR_HEAD + " 201 | 200 | 202 | 409 | 410 |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["achieved"] / ceiling_rate if ceiling_rate else 0
        w(f"| {r['target']} | {r['achieved']:,.0f} | {ratio:.2f} | {fmt_ms(r['p50'])} | {fmt_ms(r['p95'])} | {fmt_ms(r['p99'])} "
          f"| {fmt_ms(r['max'])} | {fmt_ms(r['service_p99'])} | {fmt_n(r['a5xx'])} | {fmt_n(r['transport'])} | {fmt_n(r['other4xx'])} "
          f"| {fmt_n(r['late'])} | {fmt_n(r['a201'])} | {fmt_n(r['a200'])} | {fmt_n(r['a202'])} | {fmt_n(r['a409'])} | {fmt_n(r['a410'])} |")
    w("")


CPU_HEAD = "server (issuer or ceiling) µs/req | redis | mysql | kafka | consumer | server side µs/req | gen µs/req | gen % core | background % core | steal % core"


def cpu_cells(r):
    own = us_per_req(r, "ceiling") if r["target"] == "ceiling" else us_per_req(r, "issuer")
    return (f"{own:.0f} | " + " | ".join(f"{us_per_req(r, b):.0f}" for b in BACKENDS)
            + f" | {server_us(r):.0f} | {r['gen_us_per_req']:.0f} | {r['gen_pct']:.0f} | {r['background_pct']:.0f} | {r['steal_pct']:.0f}")


def exactness(r):
    stock = int(r.get("stock", 0) or 0)
    if r.get("rows") == min(stock, r.get("admitted", 0) or stock) and r.get("distinct") == r.get("rows"):
        return "yes"
    if r.get("rows", 0) > stock or r.get("distinct") != r.get("rows"):
        return "**OVERSOLD**"
    return "under stock"


# ---------------------------------------------------------------- spike
spike = by_scenario("spike")
spike_ceiling = target_run(spike, "ceiling")
capacity = by_scenario("capacity")
capacity_ceiling = target_run(capacity, "ceiling")
ceiling_capacity = capacity_ceiling["achieved"] if capacity_ceiling else 0

if spike:
    w(f"## Spike: the 10:00 opening, {RATE} requests/s offered")
    w("")
    w("Valid answers: 201 ISSUED, 200 ALREADY_ISSUED, 202 QUEUED, 409 NOT_STARTED, 410 SOLD_OUT; errors: 5xx and")
    w("*no answer* (transport error or timeout); *other 4xx* would be a bug in the test. Latency from the due time.")
    w("")
    answer_table(spike, spike_ceiling["achieved"] if spike_ceiling else 0)
    w("| target | rows in MySQL | distinct users | exact | first → last admission ms | sold-out → all persisted ms | " + CPU_HEAD + " |")
    w("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in spike:
        if r["target"] == "ceiling":
            w(f"| ceiling | – | – | – | – | – | {cpu_cells(r)} |")
        else:
            w(f"| {r['target']} | {fmt_n(r.get('rows', 0))} | {fmt_n(r.get('distinct', 0))} | {exactness(r)} "
              f"| {fmt_n(r.get('first_to_last_ms', 0))} | {fmt_n(r.get('soldout_to_persisted_ms', 0))} | {cpu_cells(r)} |")
    w("")
    w("*first → last admission*: from the first to the last coupon's admission time (`issued_at`: Redis `TIME` for")
    w("kafka-async, `NOW(3)` of the insert for the synchronous strategies and the queue scheduler). *sold-out → all")
    w("persisted*: from the last admission to the last row's `persisted_at`; about 0 by construction for the strategies")
    w("that write the row in the admitting transaction.")
    w("")

def capacity_cells(r, rate):
    """The cells every capacity table starts with: the rate, its ratio to the ceiling's
    capacity, service latency and the errors."""
    ratio = rate / ceiling_capacity if ceiling_capacity else 0
    return (f"| {r['target']} | {rate:,.0f} | {ratio:.2f} | {fmt_ms(r['service_p50'])} | {fmt_ms(r['service_p99'])} "
            f"| {fmt_n(r['a5xx'])} | {fmt_n(r['transport'])} | {fmt_n(r['other4xx'])} | {fmt_n(r['late'])} ")


# ---------------------------------------------------------------- admission
adm = by_scenario("admission")
if adm:
    w(f"## Admission path: every request a new user, stock larger than demand, {SATURATE}/s offered")
    w("")
    if capacity_ceiling:
        w(f"The ceiling's capacity under the same load: **{ceiling_capacity:,.0f} requests/s**.")
        w("")
    w("| target | admitted/s | ÷ ceiling capacity | service p50 ms | service p99 ms " + ERR_HEAD + " rows in MySQL | exact | " + CPU_HEAD + " |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in adm:
        w(capacity_cells(r, r["admitted_per_s"]) + f"| {fmt_n(r.get('rows', 0))} | {exactness(r)} | {cpu_cells(r)} |")
    w("")
    w("Offered far above capacity, every request waits in the generator, so latency from the due time only says how")
    w("long the run took; *service* latency is the server's. *late* counts nearly every request for the same reason.")
    w("*admitted/s*: 201 answers ÷ the window (a kafka-async 201 is in Kafka, a synchronous one in MySQL); for")
    w("queue, whose 202 is only a place in the queue, the rows its scheduler wrote ÷ (window + the wait for the")
    w("last row). kafka-async's rows are written by the consumer, which keeps running after the answers (Kafka")
    w("holds the backlog); the run waits for them, and their CPU counts.")
    w("")

# ---------------------------------------------------------------- sold-out
if capacity:
    w(f"## Sold-out path: a round of one coupon, {SATURATE}/s offered")
    w("")
    w("| target | achieved/s | ÷ ceiling capacity | service p50 ms | service p99 ms " + ERR_HEAD + " 201 | 200 | 202 | 410 | " + CPU_HEAD + " |")
    w("|---|" + "---:|" * 22)
    for r in capacity:
        w(capacity_cells(r, r["achieved"])
          + f"| {fmt_n(r['a201'])} | {fmt_n(r['a200'])} | {fmt_n(r['a202'])} | {fmt_n(r['a410'])} | {cpu_cells(r)} |")
    w("")

# ---------------------------------------------------------------- targets
w("## The targets")
w("")
verdicts = []
ka = target_run(spike, "kafka-async")
if ka:
    ok = (ka["errors"] == 0 and ka["p99"] < 25 and ka.get("rows", 0) == int(ka.get("stock", 0) or 0)
          and ka.get("soldout_to_persisted_ms", 10**9) <= 1000)
    verdicts.append((
        "kafka-async spike: 0 errors, p99 < 25 ms, all 1,000 persisted within 1 s of sell-out",
        f"at {RATE}/s: {ka['errors']} errors, p99 {fmt_ms(ka['p99'])} ms from the due time (ceiling: "
        f"{fmt_ms(spike_ceiling['p99']) if spike_ceiling else '–'} ms), {ka.get('rows', 0)} rows, sold-out → all persisted "
        f"{ka.get('soldout_to_persisted_ms', '?')} ms",
        "met" if ok else "not met"))
kas = target_run(capacity, "kafka-async")
if kas and ceiling_capacity:
    ratio = kas["achieved"] / ceiling_capacity
    verdicts.append((
        "sold-out path ≥ 80 % of the ceiling",
        f"{kas['achieved']:,.0f}/s vs the ceiling's {ceiling_capacity:,.0f}/s = {ratio:.0%}",
        "met" if ratio >= 0.8 else "not met"))
kaa = target_run(adm, "kafka-async")
if kaa and ceiling_capacity:
    ratio = kaa["admitted_per_s"] / ceiling_capacity
    verdicts.append((
        "admission path ≥ 30 % of the ceiling",
        f"{kaa['admitted_per_s']:,.0f} admissions/s vs the ceiling's {ceiling_capacity:,.0f} requests/s = {ratio:.0%}"
        f" ({kaa['errors']} errors)",
        "met" if ratio >= 0.3 else "not met"))
dba = target_run(adm, "db-lock")
if kaa and dba and dba["admitted_per_s"]:
    ratio = kaa["admitted_per_s"] / dba["admitted_per_s"]
    verdicts.append((
        "kafka-async ≥ 20× db-lock in admissions per second",
        f"{kaa['admitted_per_s']:,.0f}/s vs {dba['admitted_per_s']:,.0f}/s = {ratio:.1f}×",
        "met" if ratio >= 20 else "not met"))
if verdicts:
    w("| target | measured | verdict |")
    w("|---|---|---|")
    for t, m, v in verdicts:
        w(f"| {t} | {m} | **{v}** |")
    w("")

# ---------------------------------------------------------------- profiles
KERNEL = re.compile(r"_\[k\]$")
LAYERS = [
    ("issuer", re.compile(r"couponrush")),
    ("axum", re.compile(r"\baxum(_core)?::|\btower(_http)?::|matchit")),
    ("hyper", re.compile(r"\bhyper(_util)?::|httparse|\bhttp::")),
    ("tokio", re.compile(r"\btokio::|\bmio::")),
]


def innermost(frames):
    """The layer of the frame nearest the leaf that belongs to one (the code that asked for
    the work: hyper's parser calling memchr counts for hyper)."""
    for f in reversed(frames):
        for name, rx in LAYERS:
            if rx.search(f):
                return name
    return None


# Each sample goes to the first bucket whose rule matches its stack, so the buckets add up to
# 100 %. Work done on behalf of a component (its JSON, its allocations, its socket syscalls)
# counts for that component; kernel time left over is the HTTP connections' own I/O and the
# scheduler.
BUCKETS = [
    ("JWT verification (jsonwebtoken: base64, JSON, HMAC-SHA256)", lambda comm, fr: any("jsonwebtoken" in f for f in fr)),
    ("Redis calls (redis crate, incl. its socket I/O)", lambda comm, fr: any("redis::" in f for f in fr)),
    ("Kafka (rdkafka/librdkafka, incl. its threads and I/O)",
     lambda comm, fr: comm.startswith("rdk:") or comm.startswith("producer_poll")
     or any("rdkafka::" in f or f.startswith("rd_kafka") for f in fr)),
    ("metrics (prometheus-client)", lambda comm, fr: any("prometheus_client" in f for f in fr)),
    ("kernel: HTTP socket I/O, epoll, futex, scheduling", lambda comm, fr: bool(fr) and bool(KERNEL.search(fr[-1]))),
    ("hyper (HTTP/1 parsing, writing)", lambda comm, fr: innermost(fr) == "hyper"),
    ("axum, tower (routing, extractors, responses)", lambda comm, fr: innermost(fr) == "axum"),
    ("issuer's own code (couponrush_*)", lambda comm, fr: innermost(fr) == "issuer"),
    ("tokio runtime", lambda comm, fr: innermost(fr) == "tokio"),
    ("other (libc, std)", lambda comm, fr: True),
]


def profile_section(path):
    folded = os.path.join(WORK, f"perf-{path}.folded")
    if not os.path.exists(folded) or os.path.getsize(folded) == 0:
        return False
    total = 0
    threads = Counter()
    leaves = Counter()
    buckets = Counter()
    for line in open(folded):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        n = int(n)
        frames = stack.split(";")
        total += n
        comm = re.sub(r"[-_ ]?\d+$", "", frames[0])
        threads[comm] += n
        leaves[re.sub(r"::h[0-9a-f]{16}$", "", frames[-1])] += n
        for name, rule in BUCKETS:
            if rule(frames[0], frames[1:]):
                buckets[name] += n
                break
    if not total:
        return False
    prof = runs.get(f"profile-{path}")
    w(f"### The {path} path")
    w("")
    if prof:
        w(f"{fmt_n(prof['requests'])} requests at {RATE}/s; p99 {fmt_ms(prof['p99'])} ms (from due) under perf; "
          f"{total / 1e6:,.0f} ms of issuer CPU sampled ({total / 1e3 / max(prof['requests'], 1):.0f} µs per request, "
          f"including the idle seconds before the opening); flame graph: [`{BASE}-flame-{path}.svg`]({BASE}-flame-{path}.svg).")
        w("")
    w("| thread | % of the issuer's sampled CPU |")
    w("|---|---:|")
    for comm, n in threads.most_common(6):
        w(f"| `{comm}` | {100.0 * n / total:.1f} |")
    w("")
    w("| where the issuer's CPU goes (each sample counted once) | % |")
    w("|---|---:|")
    for name, _ in BUCKETS:
        w(f"| {name} | {100.0 * buckets[name] / total:.1f} |")
    w("")
    w("| hottest functions (self) | % |")
    w("|---|---:|")
    for leaf, n in leaves.most_common(12):
        w(f"| `{leaf[:110]}` | {100.0 * n / total:.1f} |")
    w("")
    return True


if os.path.exists(os.path.join(WORK, "timeline.svg")):
    w("## The seed round as a picture")
    w("")
    w("One more kafka-async seed round, driven by `couponrush-load spike` (closed loop, not a measurement): "
      "answers per second by kind, issued and persisted over time, the opening, the first SOLD_OUT "
      "and the last row in MySQL.")
    w("")
    w(f"![the seed round]({BASE}-timeline.svg)")
    w("")

w("## Profile of the issuer")
w("")
note = machine.get("profile_note", "")
if note:
    w(note)
    w("")
shown = False
for path in ("admission", "sold-out"):
    shown = profile_section(path) or shown
if not shown and not note:
    w("No profile data.")
    w("")

print("\n".join(out))
