#!/usr/bin/env bash
# bench/pod.sh — per-pod capacity (issue 14): one issuer, then one consumer, in a
# container with the CPU and memory the operator gives a pod (cgroup limits through the
# container engine), the backends and the load generator outside those limits, on the host.
# Writes the section "Per-pod capacity (container limits)": on its own as
# bench/results/<date>-pod.md, or appended to APPEND_TO (what `make bench` does with
# the report bench/run.sh just wrote). The operator's sizing constants cite it.
#
#   bench/pod.sh                        about 6 minutes on a quiet 2-core machine
#   ISSUER_CPUS=1800 CONSUMER_CPUS= bench/pod.sh     only the issuer at its limit
#
# What it does:
#   1. builds couponrush-issuer (host: schema, pre-warming, filling the consumer's topic)
#      and couponrush-load (release); starts the container engine (local/pods/engine.sh) and
#      makes sure the couponrush image exists (local/pods/images.sh); brings up Redis,
#      MariaDB and Kafka (local/backends.sh; by default a set of its own, as run.sh does);
#   2. fills one topic per consumer measurement with CONSUMER_ROWS admitted coupons through
#      an unconstrained issuer on the host (this also warms Kafka's JIT up);
#   3. for each CPU quota in ISSUER_CPUS (millicores; default the operator's limit, then
#      its request): one issuer container, `docker run --network host --cpus ... --memory
#      ... --cpu-shares ...`, run as the Deployment runs it; reads the quota and memory
#      limit back from inside the container's cgroup and refuses to measure if they are not
#      what was asked; then with couponrush-load from the host:
#        (a) admissions/s at saturation: ADMIT_REQUESTS new users, stock larger than that;
#        (b) sold-out answers/s at saturation: SOLDOUT_REQUESTS against a round of one;
#        (c) the highest open-model rate it holds with p99 < P99_MS: admission-path steps
#            of STEP_S seconds, bisecting between 0 and 1.2 × (a), at most SEARCH_STEPS;
#      and the container's own CPU, CFS throttling and peak memory around each run;
#   4. for each CPU quota in CONSUMER_CPUS: one consumer container with a fresh group on
#      one of the filled topics; rows/s from MariaDB's persisted_at of the rows;
#   5. writes the report, stops the containers and whatever it started (the engine too,
#      if it was not running before).
#
# Environment (all optional):
#   NODE_PROFILE=t3.medium (the figures below are the operator's for it: keep them equal to
#     operator/src/sizing.rs, whose unit test reads these defaults)
#   ISSUER_CPU_LIMIT=1800m ISSUER_CPU_REQUEST=900m ISSUER_MEMORY_LIMIT=512Mi
#   CONSUMER_CPU_LIMIT=1000m CONSUMER_CPU_REQUEST=500m CONSUMER_MEMORY_LIMIT=256Mi
#   ISSUER_CPUS="<limit> <request>"  CONSUMER_CPUS="<limit> <request>" (millicores; empty: skip)
#   ISSUER_EXTRA_ENV="K=V ..."   more environment for the issuer container (e.g. TOKIO_WORKER_THREADS=2)
#   SATURATE_RATE=200000 CONNECTIONS=512 TIMEOUT_MS=10000 AUTH=jwt|header
#   ADMIT_REQUESTS=60000 SOLDOUT_REQUESTS=200000 SOLDOUT_USERS=10000
#   P99_MS=25 STEP_S=10 SEARCH_STEPS=6 CONSUMER_ROWS=200000 DRAIN_DEADLINE_S=300
#   ISSUER_PORT=28280 FILL_PORT=28281 CONSUMER_PORT=28290
#   COUPONRUSH_IMAGE     an image already in the engine instead of images.sh's (e.g. one built
#                        from the same issuer and consumer sources at another commit)
#   BACKENDS=own|shared  BENCH_NICE (as run.sh)  RESULTS_DIR  APPEND_TO  BENCH_WORK
set -euo pipefail
export LC_ALL=C

GIVEN=""
for v in COUPONRUSH_IMAGE ISSUER_CPUS CONSUMER_CPUS ISSUER_EXTRA_ENV SATURATE_RATE CONNECTIONS AUTH ADMIT_REQUESTS SOLDOUT_REQUESTS \
  P99_MS STEP_S SEARCH_STEPS CONSUMER_ROWS BACKENDS; do
  [[ -n ${!v+x} ]] && GIVEN+="$v=$(printf '%q' "${!v}") "
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HERE="$ROOT/bench"
CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"

NODE_PROFILE="${NODE_PROFILE:-t3.medium}"
ISSUER_CPU_LIMIT="${ISSUER_CPU_LIMIT:-1800m}"
ISSUER_CPU_REQUEST="${ISSUER_CPU_REQUEST:-900m}"
ISSUER_MEMORY_LIMIT="${ISSUER_MEMORY_LIMIT:-512Mi}"
CONSUMER_CPU_LIMIT="${CONSUMER_CPU_LIMIT:-1000m}"
CONSUMER_CPU_REQUEST="${CONSUMER_CPU_REQUEST:-500m}"
CONSUMER_MEMORY_LIMIT="${CONSUMER_MEMORY_LIMIT:-256Mi}"
millis() { echo "${1%m}"; }
mib() { echo "${1%Mi}"; }
ISSUER_CPUS="${ISSUER_CPUS-$(millis "$ISSUER_CPU_LIMIT") $(millis "$ISSUER_CPU_REQUEST")}"
CONSUMER_CPUS="${CONSUMER_CPUS-$(millis "$CONSUMER_CPU_LIMIT") $(millis "$CONSUMER_CPU_REQUEST")}"
ISSUER_EXTRA_ENV="${ISSUER_EXTRA_ENV:-}"
SATURATE_RATE="${SATURATE_RATE:-200000}"
CONNECTIONS="${CONNECTIONS:-512}"
TIMEOUT_MS="${TIMEOUT_MS:-10000}"
AUTH="${AUTH:-jwt}"
ADMIT_REQUESTS="${ADMIT_REQUESTS:-60000}"
SOLDOUT_REQUESTS="${SOLDOUT_REQUESTS:-200000}"
SOLDOUT_USERS="${SOLDOUT_USERS:-10000}"
P99_MS="${P99_MS:-25}"
STEP_S="${STEP_S:-10}"
SEARCH_STEPS="${SEARCH_STEPS:-6}"
CONSUMER_ROWS="${CONSUMER_ROWS:-200000}"
DRAIN_DEADLINE_S="${DRAIN_DEADLINE_S:-300}"
OPEN_DELAY_S="${OPEN_DELAY_S:-2}"
ISSUER_PORT="${ISSUER_PORT:-28280}"
FILL_PORT="${FILL_PORT:-28281}"
CONSUMER_PORT="${CONSUMER_PORT:-28290}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
APPEND_TO="${APPEND_TO:-}"
BACKENDS="${BACKENDS:-own}"
if ((EUID == 0)); then BENCH_NICE="${BENCH_NICE:--5}"; else BENCH_NICE="${BENCH_NICE:-0}"; fi
if [[ $BACKENDS == own ]]; then
  export COUPONRUSH_STATE_DIR="${BENCH_BACKENDS_STATE:-$CACHE/bench-backends}"
  export REDIS_PORT="${BENCH_REDIS_PORT:-26379}" MYSQL_PORT="${BENCH_MYSQL_PORT:-23306}"
  export KAFKA_PORT="${BENCH_KAFKA_PORT:-29092}" KAFKA_CONTROLLER_PORT="${BENCH_KAFKA_CONTROLLER_PORT:-29093}"
fi
NICE=(nice -n "$BENCH_NICE")
STAMP="$(date -u +%Y%m%d-%H%M%S)"
EV_STAMP="$(tr 'A-Z' 'a-z' <<<"$STAMP")"
BENCH_WORK="${BENCH_WORK:-$CACHE/bench/pod-$STAMP}"
NAMESPACE=podbench
JWT_SECRET="podbench-$RANDOM$RANDOM$RANDOM"
export RUST_LOG="${RUST_LOG:-warn}"
BIN="$CARGO_TARGET_DIR/release"
LOAD="$BIN/couponrush-load"
mkdir -p "$BENCH_WORK/runs" "$BENCH_WORK/consumer" "$RESULTS_DIR"

log() { printf '[pod-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ----------------------------------------------------------------------------- cleanup

CONTAINERS=()
PIDS=()
STARTED_BACKENDS=()
STARTED_ENGINE=""
cleanup() {
  local rc=$? c pid
  for c in "${CONTAINERS[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((${#STARTED_BACKENDS[@]})); then
    log "stopping the backends this run started: ${STARTED_BACKENDS[*]}"
    local/backends.sh down "${STARTED_BACKENDS[@]}" >/dev/null 2>&1 || true
  fi
  [[ -z $STARTED_ENGINE ]] || local/pods/engine.sh down >/dev/null 2>&1 || true
  ((rc == 0)) || log "failed (exit $rc); work files in $BENCH_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ready() { # wait_ready NAME PORT CHECK...: until /readyz answers, while CHECK succeeds
  local name=$1 port=$2 i
  shift 2
  for ((i = 0; i < 600; i++)); do
    "$@" || die "$name exited during startup"
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && return 0
    sleep 0.1
  done
  die "$name did not become ready within 60 s"
}

# ----------------------------------------------------------------------------- cgroups

# The container's cgroup directory on the host for one v1 controller (cpu, cpuacct, memory).
cg_dir() { # cg_dir PID CONTROLLER
  local rel
  rel=$(awk -F: -v s="$2" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == s) print $3 }' "/proc/$1/cgroup")
  [[ -n $rel ]] || return 1
  echo "/sys/fs/cgroup/$2$rel"
}

# cg_snapshot PID PREFIX: the container's CPU time, CFS periods and throttling as
# PREFIX_key=value lines.
cg_snapshot() {
  local pid=$1 p=$2 cpu cpuacct
  cpu=$(cg_dir "$pid" cpu) cpuacct=$(cg_dir "$pid" cpuacct)
  printf 'cpuacct_%s=%s\n' "$p" "$(cat "$cpuacct/cpuacct.usage")"
  awk -v p="$p" '{ print $1 "_" p "=" $2 }' "$cpu/cpu.stat"
  printf 'wall_%s=%s\n' "$p" "$EPOCHREALTIME"
}

# cg_limits PID: the limits as the container sees them (its own cgroup mount, read through
# /proc/PID/root: the image has no shell to run cat in), and its tokio worker threads.
cg_limits() {
  local root="/proc/$1/root/sys/fs/cgroup"
  printf 'cfs_quota_us=%s\n' "$(cat "$root/cpu/cpu.cfs_quota_us")"
  printf 'cfs_period_us=%s\n' "$(cat "$root/cpu/cpu.cfs_period_us")"
  printf 'cpu_shares=%s\n' "$(cat "$root/cpu/cpu.shares")"
  printf 'memory_limit_bytes=%s\n' "$(cat "$root/memory/memory.limit_in_bytes")"
  printf 'tokio_workers=%s\n' "$(cat /proc/"$1"/task/*/comm 2>/dev/null | grep -cE '^tokio-(runtime-w|rt-worker)' || true)"
  printf 'threads=%s\n' "$(ls /proc/"$1"/task | wc -l)"
}

cg_memory() { # cg_memory PID: peak memory and OOM kills of the container's cgroup
  local mem
  mem=$(cg_dir "$1" memory)
  printf 'memory_max_bytes=%s\n' "$(cat "$mem/memory.max_usage_in_bytes")"
  printf 'oom_kills=%s\n' "$(awk '$1 == "oom_kill" { print $2 }' "$mem/memory.oom_control" 2>/dev/null || echo '?')"
}

# check_limits META CPUS MEM_MIB: refuse to measure a container whose cgroup does not carry
# the limits asked for.
check_limits() {
  local meta=$1 cpus=$2 mem=$3 quota period limit
  quota=$(sed -n 's/^cfs_quota_us=//p' "$meta") period=$(sed -n 's/^cfs_period_us=//p' "$meta")
  limit=$(sed -n 's/^memory_limit_bytes=//p' "$meta")
  ((quota > 0 && quota * 1000 / period == cpus)) || die "CPU quota not applied: ${quota}/${period} µs for ${cpus}m (see $meta)"
  ((limit == mem * 1024 * 1024)) || die "memory limit not applied: $limit bytes for ${mem}Mi (see $meta)"
}

container_pid() { "$DOCKER" inspect -f '{{.State.Pid}}' "$1"; }
running() { [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }

# run_pod NAME CPUS MEM_MIB SHARES_MILLIS BINARY ENV...: one container as the Deployment runs
# its pod: the image's binary, user 65532, read-only root, no capabilities, the limits.
run_pod() {
  local name=$1 cpus=$2 mem=$3 shares=$4 binary=$5 envs=() e
  shift 5
  for e in "$@"; do envs+=(-e "$e"); done
  "$DOCKER" rm -f "$name" >/dev/null 2>&1 || true
  CONTAINERS+=("$name")
  "$DOCKER" run -d --name "$name" --network host \
    --cpus "$(awk -v m="$cpus" 'BEGIN { printf "%.3f", m / 1000 }')" --cpu-shares $((shares * 1024 / 1000)) \
    --memory "${mem}m" --memory-swap "${mem}m" \
    --user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges \
    --entrypoint "$binary" "${envs[@]}" "$IMAGE" "${POD_ARGS[@]}" >/dev/null
}

# ----------------------------------------------------------------------------- load

mysql_q() { mariadb -h127.0.0.1 -P"$MYSQL_PORT" -ucouponrush -pcouponrush couponrush -N -B -e "$1"; }
rfc3339_ms() { date -u -d "@$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ; }

prewarm() { # prewarm TOPIC NAME STOCK OPENS_AT_MS
  KAFKA_TOPIC="$1" "$BIN/couponrush-issuer" prewarm --namespace "$NAMESPACE" --name "$2" --stock "$3" \
    --strategy kafka-async --starts-at "$(rfc3339_ms "$4")" >>"$BENCH_WORK/prewarm.log" 2>&1 ||
    die "pre-warming $2 failed (see $BENCH_WORK/prewarm.log)"
}

# load LABEL TARGET_PORT TOPIC STOCK [CONTAINER] -- GENERATOR ARGS: a fresh round of STOCK
# coupons opening OPEN_DELAY_S from now, then one couponrush-load run; with CONTAINER, its
# cgroup counters around the run.
load() {
  local label=$1 port=$2 topic=$3 stock=$4 container=${5:-} dir="$BENCH_WORK/runs/$1" at pid=""
  shift 5
  [[ ${1:-} == -- ]] && shift
  mkdir -p "$dir"
  local name="pb-${label//_/-}-$EV_STAMP"
  at=$(($(date +%s%3N) + OPEN_DELAY_S * 1000))
  prewarm "$topic" "$name" "$stock" "$at"
  printf 'event=%s/%s\nstock=%s\nloadavg=%s\n' "$NAMESPACE" "$name" "$stock" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/meta"
  if [[ -n $container ]]; then
    pid=$(container_pid "$container")
    cg_snapshot "$pid" before >>"$dir/meta"
  fi
  JWT_SECRET="$JWT_SECRET" "${NICE[@]}" "$LOAD" --target "http://127.0.0.1:$port" --event "$NAMESPACE/$name" \
    --connections "$CONNECTIONS" --timeout-ms "$TIMEOUT_MS" --auth "$AUTH" --opens-at-ms "$at" \
    --json "$dir/report.json" "$@" >"$dir/gen.out" 2>&1 || printf 'generator_exit=%s\n' $? >>"$dir/meta"
  [[ -n $pid ]] && cg_snapshot "$pid" after >>"$dir/meta"
  [[ -s $dir/report.json ]] || die "the generator produced no report for $label (see $dir/gen.out)"
  if [[ -n $container ]] && ! running "$container"; then
    die "$container stopped during $label: $("$DOCKER" inspect -f 'OOMKilled={{.State.OOMKilled}} exit={{.State.ExitCode}}' "$container")"
  fi
  log "  $label: $(tail -n +2 "$dir/gen.out" | head -2 | tr '\n' ' ')"
}

summary() { PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/pod_report.py" summary "$BENCH_WORK/runs/$1" "$P99_MS"; }
field() { sed -n "s/^$2=//p" <<<"$1"; }

# ----------------------------------------------------------------------------- setup

log "work files: $BENCH_WORK"
log "building couponrush-issuer and couponrush-load (release)"
"${NICE[@]}" cargo build --release -q -p couponrush-issuer -p couponrush-e2e --bin couponrush-issuer --bin couponrush-load

local/pods/engine.sh status || STARTED_ENGINE=yes
local/pods/engine.sh up
eval "$(local/pods/engine.sh env)"
export DOCKER_HOST
if [[ -n ${COUPONRUSH_IMAGE:-} ]]; then
  IMAGE=$COUPONRUSH_IMAGE
  "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || die "COUPONRUSH_IMAGE=$IMAGE is not in the engine"
else
  log "the couponrush image (local/pods/images.sh build: builds what is missing)"
  IMAGE=$(local/pods/images.sh build | sed -n 's/^couponrush=//p')
  [[ -n $IMAGE ]] || die "no couponrush image"
fi

for component in redis mysql kafka; do
  local/backends.sh status "$component" >/dev/null 2>&1 || STARTED_BACKENDS+=("$component")
done
log "backends ($BACKENDS; starting: ${STARTED_BACKENDS[*]:-none})"
"${NICE[@]}" local/backends.sh up redis mysql kafka >&2
eval "$(local/backends.sh env)"
"$BIN/couponrush-issuer" migrate >"$BENCH_WORK/migrate.log" 2>&1 || die "migrating the schema failed (see $BENCH_WORK/migrate.log)"
for p in "$ISSUER_PORT" "$FILL_PORT" "$CONSUMER_PORT"; do
  port_open "$p" && die "127.0.0.1:$p is taken by another process; set ISSUER_PORT/FILL_PORT/CONSUMER_PORT"
done

BACKEND_ENV=("REDIS_URL=$REDIS_URL" "DATABASE_URL=$DATABASE_URL" "KAFKA_BROKERS=$KAFKA_BROKERS")
if [[ $AUTH == header ]]; then AUTH_ENV=(TRUST_USER_HEADER=true); else AUTH_ENV=("JWT_HS256_SECRET=$JWT_SECRET" TRUST_USER_HEADER=false); fi

{
  printf 'date=%s\n' "$(date -u +%Y-%m-%d)"
  printf 'nproc=%s\n' "$(nproc)"
  printf 'cpu_model=%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'mem=%s\n' "$(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  printf 'kernel=%s\n' "$(uname -r)"
  printf 'git=%s\n' "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  printf 'image=%s\n' "$IMAGE"
  printf 'docker_version=%s\n' "$("$DOCKER" version -f '{{.Server.Version}}')"
  printf 'cgroup=%s\n' "$("$DOCKER" info -f 'v{{.CgroupVersion}}, driver {{.CgroupDriver}}')"
  printf 'node_profile=%s\n' "$NODE_PROFILE"
  printf 'issuer_cpu_request=%s\nissuer_cpu_limit=%s\nissuer_mem_limit=%s\n' "$ISSUER_CPU_REQUEST" "$ISSUER_CPU_LIMIT" "$ISSUER_MEMORY_LIMIT"
  printf 'consumer_cpu_request=%s\nconsumer_cpu_limit=%s\nconsumer_mem_limit=%s\n' "$CONSUMER_CPU_REQUEST" "$CONSUMER_CPU_LIMIT" "$CONSUMER_MEMORY_LIMIT"
  printf 'issuer_configs=%s\n' "$ISSUER_CPUS"
  printf 'connections=%s\nsaturate_rate=%s\nadmit_requests=%s\nsoldout_requests=%s\nsoldout_users=%s\n' \
    "$CONNECTIONS" "$SATURATE_RATE" "$ADMIT_REQUESTS" "$SOLDOUT_REQUESTS" "$SOLDOUT_USERS"
  printf 'p99_ms=%s\nstep_s=%s\nauth=%s\nbackends=%s\n' "$P99_MS" "$STEP_S" "$AUTH" "$BACKENDS"
  printf 'command=%s\n' "${GIVEN}bench/pod.sh"
  [[ -z $ISSUER_EXTRA_ENV ]] || printf 'notes=the issuer container also had %s.\n' "$ISSUER_EXTRA_ENV"
} >"$BENCH_WORK/machine"

# ----------------------------------------------------------------------------- fill

# One topic per consumer measurement, filled through an issuer on the host (no limit: only
# the topic's contents matter); the first fill also warms Kafka's JIT up before the issuer
# is measured (see run.sh's warm-up).
declare -A FILL_TOPIC=() FILL_EVENT=() FILL_ROWS=()
i=0
for cpus in $CONSUMER_CPUS warmup; do
  [[ $cpus == warmup && -n $CONSUMER_CPUS ]] && continue
  i=$((i + 1))
  topic="couponrush.podbench.$EV_STAMP.$i"
  log "filling $topic with $CONSUMER_ROWS admitted coupons (unconstrained issuer on the host)"
  KAFKA_TOPIC="$topic" JWT_HS256_SECRET="$JWT_SECRET" LISTEN="127.0.0.1:$FILL_PORT" \
    "$BIN/couponrush-issuer" serve >"$BENCH_WORK/fill-$i.log" 2>&1 &
  fill_pid=$!
  PIDS+=("$fill_pid")
  wait_ready fill-issuer "$FILL_PORT" kill -0 "$fill_pid"
  auth_fill=$AUTH
  AUTH=jwt load "fill-$i" "$FILL_PORT" "$topic" "$CONSUMER_ROWS" "" -- \
    --rate "$SATURATE_RATE" --requests "$CONSUMER_ROWS" --distinct --user-prefix "fill$i-"
  AUTH=$auth_fill
  kill -TERM "$fill_pid"
  wait "$fill_pid" || true
  FILL_TOPIC[$cpus]=$topic
  FILL_EVENT[$cpus]=$(sed -n 's/^event=//p' "$BENCH_WORK/runs/fill-$i/meta")
  FILL_ROWS[$cpus]=$(field "$(summary "fill-$i")" issued)
  mv "$BENCH_WORK/runs/fill-$i" "$BENCH_WORK/fill-$i"
done

# ----------------------------------------------------------------------------- issuer

round100() { awk -v x="$1" 'BEGIN { printf "%d\n", int(x / 100 + 0.5) * 100 }'; }

ISSUER_TOPIC="couponrush.podbench.$EV_STAMP.issuer"
for cpus in $ISSUER_CPUS; do
  role=""
  [[ $cpus == "$(millis "$ISSUER_CPU_LIMIT")" ]] && role="limit"
  [[ $cpus == "$(millis "$ISSUER_CPU_REQUEST")" ]] && role="request"
  meta="$BENCH_WORK/issuer-$cpus.meta"
  name="cr-podbench-issuer-$EV_STAMP-$cpus"
  log "issuer at ${cpus}m CPU (${role:-other}), $ISSUER_MEMORY_LIMIT: starting $name"
  extra=()
  read -r -a extra <<<"$ISSUER_EXTRA_ENV"
  POD_ARGS=(serve)
  run_pod "$name" "$cpus" "$(mib "$ISSUER_MEMORY_LIMIT")" "$(millis "$ISSUER_CPU_REQUEST")" /usr/local/bin/couponrush-issuer \
    "LISTEN=127.0.0.1:$ISSUER_PORT" "KAFKA_TOPIC=$ISSUER_TOPIC" LOG_JSON=true RUST_LOG=warn "${BACKEND_ENV[@]}" \
    "${AUTH_ENV[@]}" "${extra[@]}"
  wait_ready "$name" "$ISSUER_PORT" running "$name"
  pid=$(container_pid "$name")
  { printf 'cpus=%s\nrole=%s\nmemory_limit_mib=%s\n' "$(awk -v m="$cpus" 'BEGIN { print m / 1000 }')" "$role" "$(mib "$ISSUER_MEMORY_LIMIT")"
    cg_limits "$pid"; } >"$meta"
  check_limits "$meta" "$cpus" "$(mib "$ISSUER_MEMORY_LIMIT")"
  log "  cgroup inside: $(grep -E '^(cfs_|cpu_shares|memory_limit|tokio_workers)' "$meta" | tr '\n' ' ')"

  load "$cpus-a-admission" "$ISSUER_PORT" "$ISSUER_TOPIC" $((ADMIT_REQUESTS * 2)) "$name" -- \
    --rate "$SATURATE_RATE" --requests "$ADMIT_REQUESTS" --distinct --user-prefix "a$cpus-"
  capacity=$(field "$(summary "$cpus-a-admission")" achieved)
  load "$cpus-b-soldout" "$ISSUER_PORT" "$ISSUER_TOPIC" 1 "$name" -- \
    --rate "$SATURATE_RATE" --requests "$SOLDOUT_REQUESTS" --users "$SOLDOUT_USERS" --user-prefix "b$cpus-"

  # (c) the highest rate held: bisection; the first probe at 3/4 of the saturation figure.
  lo=0 hi=$(round100 "$(awk -v c="$capacity" 'BEGIN { print c * 1.2 }')") best="" best_label=""
  for ((step = 1; step <= SEARCH_STEPS; step++)); do
    if ((step == 1)); then rate=$(round100 "$(awk -v c="$capacity" 'BEGIN { print c * 0.75 }')"); else rate=$(round100 $(((lo + hi) / 2))); fi
    ((rate > lo && rate < hi)) || break
    label="$cpus-c-step$step-$rate"
    requests=$((rate * STEP_S))
    load "$label" "$ISSUER_PORT" "$ISSUER_TOPIC" "$requests" "$name" -- \
      --rate "$rate" --requests "$requests" --distinct --user-prefix "c$cpus-$step-"
    if [[ $(field "$(summary "$label")" held) == 1 ]]; then
      lo=$rate best=$rate best_label=$label
    else
      hi=$rate
    fi
    # Close enough: within 3 % (or 200/s).
    (((hi - lo) * 100 <= 3 * hi || hi - lo <= 200)) && break
  done
  printf 'held_rate=%s\nheld_label=%s\nnot_held_rate=%s\n' "$best" "$best_label" "$hi" >>"$meta"
  cg_memory "$pid" >>"$meta"
  log "  issuer ${cpus}m: admissions/s $capacity, sold-out/s $(field "$(summary "$cpus-b-soldout")" achieved), held ${best:-none} (not held: $hi)"
  "$DOCKER" logs "$name" >"$BENCH_WORK/issuer-$cpus.log" 2>&1 || true
  "$DOCKER" rm -f "$name" >/dev/null
done

# ----------------------------------------------------------------------------- consumer

for cpus in $CONSUMER_CPUS; do
  role=""
  [[ $cpus == "$(millis "$CONSUMER_CPU_LIMIT")" ]] && role="limit"
  [[ $cpus == "$(millis "$CONSUMER_CPU_REQUEST")" ]] && role="request"
  dir="$BENCH_WORK/consumer/$cpus"
  mkdir -p "$dir"
  name="cr-podbench-consumer-$EV_STAMP-$cpus"
  event=${FILL_EVENT[$cpus]} expected=${FILL_ROWS[$cpus]}
  log "consumer at ${cpus}m CPU (${role:-other}), $CONSUMER_MEMORY_LIMIT: draining $expected rows from ${FILL_TOPIC[$cpus]}"
  POD_ARGS=()
  t0=$EPOCHREALTIME
  run_pod "$name" "$cpus" "$(mib "$CONSUMER_MEMORY_LIMIT")" "$(millis "$CONSUMER_CPU_REQUEST")" /usr/local/bin/couponrush-consumer \
    "LISTEN=127.0.0.1:$CONSUMER_PORT" "KAFKA_TOPIC=${FILL_TOPIC[$cpus]}" "KAFKA_GROUP=couponrush-podbench-$EV_STAMP-$cpus" \
    LOG_JSON=true RUST_LOG=warn "${BACKEND_ENV[@]}"
  pid=""
  for ((i = 0; i < 100; i++)); do
    pid=$(container_pid "$name" 2>/dev/null || true)
    [[ -n $pid && $pid != 0 ]] && break
    sleep 0.05
  done
  { printf 'cpus=%s\nrole=%s\nmemory_limit_mib=%s\nexpected=%s\n' "$(awk -v m="$cpus" 'BEGIN { print m / 1000 }')" "$role" \
      "$(mib "$CONSUMER_MEMORY_LIMIT")" "$expected"
    cg_limits "$pid"; cg_snapshot "$pid" before; } >"$dir/meta"
  check_limits "$dir/meta" "$cpus" "$(mib "$CONSUMER_MEMORY_LIMIT")"
  last=-1 since=$SECONDS
  while :; do
    n=$(mysql_q "SELECT COUNT(*) FROM coupons WHERE event = '$event' AND round_no = 1")
    ((n >= expected)) && break
    ((n != last)) && last=$n since=$SECONDS
    ((SECONDS - since > 15)) && { log "  no progress for 15 s at $n rows"; break; }
    running "$name" || die "$name stopped while draining"
    awk -v a="$t0" -v b="$EPOCHREALTIME" -v d="$DRAIN_DEADLINE_S" 'BEGIN { exit !(b - a > d) }' && { log "  deadline at $n rows"; break; }
    sleep 0.2
  done
  t1=$EPOCHREALTIME
  metrics=$(curl -sf "http://127.0.0.1:$CONSUMER_PORT/metrics" || true)
  { cg_snapshot "$pid" after; cg_memory "$pid"
    mysql_q "SELECT COUNT(*), ROUND(TIMESTAMPDIFF(MICROSECOND, MIN(persisted_at), MAX(persisted_at)) / 1000)
        FROM coupons WHERE event = '$event' AND round_no = 1" | awk '{ printf "rows=%s\npersist_span_ms=%s\n", $1, $2 }'
    printf 'drain_wall_ms=%s\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')"
    awk '/^couponrush_consumer_batch_size_sum/ { print "batch_sum=" $2 } /^couponrush_consumer_batch_size_count/ { print "batch_count=" $2 }' <<<"$metrics"
  } >>"$dir/meta"
  log "  consumer ${cpus}m: $(grep -E '^(rows|persist_span_ms|drain_wall_ms)=' "$dir/meta" | tr '\n' ' ')"
  "$DOCKER" logs "$name" >"$BENCH_WORK/consumer-$cpus.log" 2>&1 || true
  "$DOCKER" rm -f "$name" >/dev/null
done

# ----------------------------------------------------------------------------- report

section=$(PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/pod_report.py" report "$BENCH_WORK")
if [[ -n $APPEND_TO ]]; then
  printf '\n%s\n' "$section" >>"$APPEND_TO"
  out=$APPEND_TO
else
  date_s=$(date -u +%Y-%m-%d)-pod
  out="$RESULTS_DIR/$date_s.md"
  n=2
  while [[ -e $out ]]; do out="$RESULTS_DIR/$date_s-$n.md"; n=$((n + 1)); done
  printf '# couponrush benchmark: per-pod capacity\n\n%s\n' "$section" >"$out"
fi
printf '%s\n' "$section"
log "results: ${out#"$ROOT"/}"
