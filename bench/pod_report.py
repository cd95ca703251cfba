#!/usr/bin/env python3
"""The per-pod capacity benchmark's numbers (bench/pod.sh): one run's summary for the
script's rate search, and the report section from its work directory.

    python3 bench/pod_report.py summary <run dir> <p99 ms>   # key=value lines
    python3 bench/pod_report.py report <work dir>            # Markdown on stdout

Only the standard library; every number comes from a file in the work directory:
runs/<label>/report.json (couponrush-load's report), runs/<label>/meta (key=value lines
the script wrote: what was run, the container's cgroup counters before and after),
consumer/<label>/meta (a consumer drain), and machine (key=value).
"""

import json
import os
import sys

from kv import read_kv




def num(d, k, default=0.0):
    try:
        return float(d.get(k, default))
    except ValueError:
        return default


def load_run(run_dir):
    with open(os.path.join(run_dir, "report.json")) as f:
        rep = json.load(f)
    meta = read_kv(os.path.join(run_dir, "meta"))
    errors = sum(n for code, n in rep["by_code"].items() if int(code) >= 500)
    errors += rep["transport_errors"] + rep["timeouts"]
    cpu_ns = num(meta, "cpuacct_after") - num(meta, "cpuacct_before")
    periods = num(meta, "nr_periods_after") - num(meta, "nr_periods_before")
    throttled = num(meta, "nr_throttled_after") - num(meta, "nr_throttled_before")
    wall = num(meta, "wall_after") - num(meta, "wall_before")
    answered = rep["answered"]
    return {
        "meta": meta,
        "rep": rep,
        "errors": errors,
        "issued": rep["by_status"].get("ISSUED", 0),
        "sold_out": rep["by_status"].get("SOLD_OUT", 0),
        # The container's CPU over the generator's whole run (from its start, including the
        # wait for the opening), per answered request: an upper bound.
        "cpu_us_per_req": cpu_ns / 1000.0 / answered if answered else 0.0,
        "cpu_cores": cpu_ns / 1e9 / wall if wall > 0 else 0.0,
        "throttled_pct": 100.0 * throttled / periods if periods else 0.0,
        "throttled_s": (num(meta, "throttled_time_after") - num(meta, "throttled_time_before")) / 1e9,
    }


def held(run, p99_ms):
    """An open-model step holds: p99 from the due time under the target, no errors, every
    request answered as admitted, and the achieved rate within 3 % of the offered one."""
    rep = run["rep"]
    return (
        rep["from_due_ms"]["p99"] < p99_ms
        and run["errors"] == 0
        and run["issued"] == rep["requests"]
        and rep["achieved_per_s"] >= 0.97 * rep["rate"]
    )


def summary(run_dir, p99_ms):
    run = load_run(run_dir)
    rep = run["rep"]
    print(f"achieved={rep['achieved_per_s']:.0f}")
    print(f"p99_ms={rep['from_due_ms']['p99']:.2f}")
    print(f"errors={run['errors']}")
    print(f"issued={run['issued']}")
    print(f"sold_out={run['sold_out']}")
    print(f"held={1 if held(run, p99_ms) else 0}")


def fmt_int(x):
    return f"{x:,.0f}"


def report(work):
    machine = read_kv(os.path.join(work, "machine"))
    p99_ms = num(machine, "p99_ms", 25)
    runs_dir = os.path.join(work, "runs")
    labels = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    runs = {label: load_run(os.path.join(runs_dir, label)) for label in labels
            if os.path.exists(os.path.join(runs_dir, label, "report.json"))}
    configs = machine.get("issuer_configs", "").split()
    out = []
    w = out.append
    w("## Per-pod capacity (container limits)")
    w("")
    w(f"`bench/pod.sh` on {machine.get('date', '?')}, commit `{machine.get('git', '?')}` "
      f"(`{machine.get('command', '')}`).")
    w("")
    w(f"- **Machine**: {machine.get('nproc', '?')} vCPU ({machine.get('cpu_model', '?')}), "
      f"{machine.get('mem', '?')}, kernel {machine.get('kernel', '?')}. Everything shares these cores: "
      "the container under test, the load generator, Redis, MariaDB and Kafka (the backends and the "
      "generator are outside the container's limits, on the host).")
    w(f"- **Container**: image `{machine.get('image', '?')}` (the Dockerfile's binaries), Docker "
      f"{machine.get('docker_version', '?')}, cgroup {machine.get('cgroup', '?')}, `--network host`, "
      "run as the pod runs it: user 65532, read-only root filesystem, every capability dropped, "
      "no new privileges, the Deployment's environment (LISTEN, KAFKA_TOPIC, LOG_JSON=true, "
      "TRUST_USER_HEADER=false for the issuer, KAFKA_GROUP for the consumer) and the backends "
      "Secret's keys (REDIS_URL, DATABASE_URL, KAFKA_BROKERS, JWT_HS256_SECRET).")
    w(f"- **Limits** (the operator's sizing for {machine.get('node_profile', '?')}, "
      "`operator/src/sizing.rs`): issuer "
      f"request {machine.get('issuer_cpu_request', '?')} / limit {machine.get('issuer_cpu_limit', '?')} CPU, "
      f"{machine.get('issuer_mem_limit', '?')} memory; consumer request "
      f"{machine.get('consumer_cpu_request', '?')} / limit {machine.get('consumer_cpu_limit', '?')} CPU, "
      f"{machine.get('consumer_mem_limit', '?')} memory. A CPU limit becomes `--cpus` "
      "(CFS quota per 100 ms period), the request `--cpu-shares` (as the kubelet sets them), the "
      "memory limit `--memory` with no swap. Each run below names the CPU quota it ran under; the "
      "quota and memory limit were read back from inside the container's cgroup "
      "(`/proc/<pid>/root/sys/fs/cgroup/...`).")
    w(f"- **Load model**: `couponrush-load` (open model, latency from each request's due time, "
      f"{machine.get('connections', '?')} keep-alive connections, HS256 JWT per user, one generator "
      f"thread). *Admissions at saturation*: {machine.get('admit_requests', '?')} requests, every one a "
      f"new user, against a round with more coupons than requests, offered at {machine.get('saturate_rate', '?')}/s. "
      f"*Sold-out answers at saturation*: {machine.get('soldout_requests', '?')} requests from "
      f"{machine.get('soldout_users', '?')} users against a round of one coupon, offered at the same rate. "
      f"*Highest held rate*: admission-path steps of {machine.get('step_s', '?')} s each (a fresh round "
      f"and fresh users per step), bisecting between 0 and 1.2× the saturation figure; a step holds "
      f"if p99 from the due time < {p99_ms:g} ms, no 5xx/transport errors/timeouts, every request "
      "admitted and the achieved rate ≥ 97 % of the offered one.")
    w("")
    w("Issuer (kafka-async):")
    w("")
    w("| CPU quota | tokio workers | admissions/s at saturation | its service p99 | container CPU per admission | throttled periods | sold-out answers/s at saturation | highest held rate (p99 < "
      f"{p99_ms:g} ms) | its p99 | peak memory |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        c = read_kv(os.path.join(work, f"issuer-{cfg}.meta"))
        adm = runs.get(f"{cfg}-a-admission")
        so = runs.get(f"{cfg}-b-soldout")
        best = c.get("held_rate", "")
        best_run = runs.get(c.get("held_label", ""))
        cells = [
            f"{c.get('cpus', '?')} CPU ({c.get('role', '')}; quota {c.get('cfs_quota_us', '?')}/{c.get('cfs_period_us', '?')} µs)",
            c.get("tokio_workers", "?"),
            fmt_int(adm["rep"]["achieved_per_s"]) if adm else "–",
            f"{adm['rep']['service_ms']['p99']:.1f} ms" if adm else "–",
            f"{adm['cpu_us_per_req']:.0f} µs ({adm['cpu_cores']:.2f} cores)" if adm else "–",
            f"{adm['throttled_pct']:.0f} %" if adm else "–",
            fmt_int(so["rep"]["achieved_per_s"]) if so else "–",
            f"**{fmt_int(float(best))}/s**" if best else "none held",
            f"{best_run['rep']['from_due_ms']['p99']:.1f} ms" if best_run else "–",
            f"{int(c.get('memory_max_bytes', '0')) / 2**20:.0f} MiB of {c.get('memory_limit_mib', '?')} (OOM kills: {c.get('oom_kills', '?')})",
        ]
        w("| " + " | ".join(cells) + " |")
    w("")
    w("Every issuer run (the rate search's steps in order):")
    w("")
    w("| run | offered/s | achieved/s | p50 ms | p99 ms | max ms | service p99 ms | ISSUED | SOLD_OUT | errors | late sends | container CPU | throttled | holds |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, run in runs.items():
        rep = run["rep"]
        d = rep["from_due_ms"]
        hold = ("yes" if held(run, p99_ms) else "no") if "-c-step" in label else ""
        w(f"| {label} | {fmt_int(rep['rate'])} | {fmt_int(rep['achieved_per_s'])} | {d['p50']:.2f} | {d['p99']:.2f} | "
          f"{d['max']:.1f} | {rep['service_ms']['p99']:.2f} | {run['issued']} | {run['sold_out']} | {run['errors']} | "
          f"{rep['late_sends']} | {run['cpu_cores']:.2f} cores | {run['throttled_pct']:.0f} % ({run['throttled_s']:.1f} s) | {hold} |")
    w("")
    cdir = os.path.join(work, "consumer")
    clabels = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
    if clabels:
        w(f"Consumer: draining a topic pre-filled with admitted coupons (written by an unconstrained "
          f"issuer on the host before the issuer runs), one consumer container with a fresh group "
          f"from the earliest offset; rows counted in MariaDB (fsync on every commit).")
        w("")
        w("| CPU quota | rows | rows/s (first → last row persisted) | rows/s (container start → all rows counted, polled every 0.2 s) | container CPU per row | throttled periods | mean batch | peak memory |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label in clabels:
            m = read_kv(os.path.join(cdir, label, "meta"))
            rows = num(m, "rows")
            span = num(m, "persist_span_ms") / 1000.0
            total = num(m, "drain_wall_ms") / 1000.0
            cpu_ns = num(m, "cpuacct_after") - num(m, "cpuacct_before")
            periods = num(m, "nr_periods_after") - num(m, "nr_periods_before")
            thr = num(m, "nr_throttled_after") - num(m, "nr_throttled_before")
            batches = num(m, "batch_count")
            cells = [
                f"{m.get('cpus', '?')} CPU ({m.get('role', '')}; quota {m.get('cfs_quota_us', '?')}/{m.get('cfs_period_us', '?')} µs)",
                f"{fmt_int(rows)} of {fmt_int(num(m, 'expected'))}",
                f"**{fmt_int(rows / span)}**" if span > 0 else "–",
                fmt_int(rows / total) if total > 0 else "–",
                f"{cpu_ns / 1000.0 / rows:.0f} µs" if rows else "–",
                f"{100.0 * thr / periods:.0f} %" if periods else "–",
                f"{num(m, 'batch_sum') / batches:.0f}" if batches else "–",
                f"{num(m, 'memory_max_bytes') / 2**20:.0f} MiB of {m.get('memory_limit_mib', '?')} (OOM kills: {m.get('oom_kills', '?')})",
            ]
            w("| " + " | ".join(cells) + " |")
        w("")
    notes = machine.get("notes", "")
    if notes:
        w("Notes: " + notes)
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        summary(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
