#!/usr/bin/env bash
# bench/run.sh — the benchmark of BENCH.md: every strategy under the seed spike
# (docs/strategies.md#the-seed-scenario), on the admission path and on the sold-out
# path, beside the ceiling of the same machine (a trivial axum server,
# bench/ceiling/) under the same load generator (couponrush-load, e2e/src/load/open_model.rs:
# open model, latency from each request's due time) and the same connection count, in
# one run. Writes bench/results/<date>.md and prints it.
#
#   bench/run.sh                 everything (about 8 minutes on a quiet 2-core machine)
#   STRATEGIES="kafka-async db-lock" PROFILE=0 bench/run.sh
#
# What it does:
#   1. builds couponrush-issuer, couponrush-consumer and couponrush-load (release) and the
#      ceiling server; brings up Redis, MariaDB and Kafka with local/backends.sh: by default
#      a set of its own (BACKENDS=own: other ports, state in ~/.cache/couponrush/bench-backends),
#      so neither the tests others run on the shared servers nor the benchmark disturb each
#      other; only what this run started is stopped at the end;
#   2. the ceiling; a warm-up (see WARMUP_REQUESTS); then each strategy (a fresh issuer
#      each; one consumer for the run), under
#        spike:     SPIKE_REQUESTS requests (100,000) from SPIKE_USERS users (10,000) at
#                   RATE (10,000/s, the seed scenario's goal) against a fresh round of
#                   SPIKE_STOCK coupons (1,000) that opens OPEN_DELAY_S after
#                   pre-warming; the first request is due at the opening; then rows in
#                   MySQL and the time from sell-out to the last row persisted;
#        admission: ADMIT_REQUESTS requests (20,000), every one a new user, offered at
#                   SATURATE_RATE (far above what any target can answer, so the achieved
#                   rate is the target's capacity) against a round of ADMIT_STOCK coupons
#                   (1,000,000): every request admits;
#        sold-out:  SOLDOUT_REQUESTS requests (200,000) from SPIKE_USERS users at
#                   SATURATE_RATE against a round of one coupon: the first request takes
#                   it, every other one is the sold-out path; its capacity;
#      the ceiling runs the spike and one saturating run (its capacity, the denominator of
#      both capacity ratios);
#   3. PROFILE=1: perf (cpu-clock, DWARF call graphs) of the issuer on the admission path
#      and on the sold-out path at RATE, as flame graphs (inferno) next to the results;
#   4. stops everything it started.
#
# Everything but the results goes to $BENCH_WORK (default ~/.cache/couponrush/bench/<stamp>):
# generator reports, logs, CPU snapshots, perf data.
#
# Environment (all optional):
#   RATE=10000  SATURATE_RATE=200000  CONNECTIONS=512  TIMEOUT_MS=10000
#   STRATEGIES="db-lock redis-lock redis-counter redis-counter-set kafka-async queue" (none: only the ceiling)
#   SPIKE_REQUESTS=100000 SPIKE_USERS=10000 SPIKE_STOCK=1000
#   ADMIT_REQUESTS=20000 ADMIT_STOCK=1000000  SOLDOUT_REQUESTS=200000
#   WARMUP_REQUESTS=300000 (kafka-async admissions before the measured runs: Kafka's JIT; 0: none)
#   OPEN_DELAY_S=5  PERSIST_DEADLINE_S=60
#   AUTH=jwt|header (header: the issuer runs with TRUST_USER_HEADER=true)
#   PROFILE=1  PROFILE_SECONDS=10  PROFILE_HZ=499
#   ISSUER_PORT=28180 CONSUMER_PORT=28190 CEILING_PORT=28170  KAFKA_TOPIC=couponrush.bench
#   BACKENDS=own|shared  (shared: the default local/backends.sh servers on their usual ports)
#   BENCH_NICE=-5        niceness of every benchmark process (generator, servers, backends it
#                        starts); a negative value keeps other work on a shared machine from
#                        skewing the numbers (needs root; 0 to turn off)
#   QUIET_MAX_PCT=50 QUIET_WAIT_S=30  before each run, wait up to QUIET_WAIT_S for CPU used by
#                        processes outside the benchmark to drop under QUIET_MAX_PCT % of a core
#   RESULTS_DIR=bench/results  RESULTS_NAME (the report is <date>[-<name>].md)
#   ISSUER_WORKERS       the issuer's tokio worker threads (default: tokio's, one per core;
#                        the operator gives a pod one per whole CPU of its limit)
#   ISSUER_BIN           the issuer binary to measure (default: the one this run builds),
#                        to compare a variant under the same run's conditions
#   BENCH_WORK=...  CARGO_TARGET_DIR  CEILING_TARGET_DIR
set -euo pipefail
export LC_ALL=C

# The settings given on the command line, for the report's "command" line.
GIVEN=""
for v in RATE SATURATE_RATE CONNECTIONS TIMEOUT_MS STRATEGIES SPIKE_REQUESTS SPIKE_USERS SPIKE_STOCK ADMIT_REQUESTS \
  ADMIT_STOCK SOLDOUT_REQUESTS WARMUP_REQUESTS AUTH PROFILE PROFILE_SECONDS BACKENDS BENCH_NICE RESULTS_NAME \
  ISSUER_WORKERS ISSUER_BIN; do
  [[ -n ${!v:-} ]] && GIVEN+="$v=$(printf '%q' "${!v}") "
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HERE="$ROOT/bench"
CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
CEILING_TARGET_DIR="${CEILING_TARGET_DIR:-$CACHE/cargo-target-ceiling}"
INFERNO_ROOT="${INFERNO_ROOT:-$CACHE/inferno}"

RATE="${RATE:-10000}"
SATURATE_RATE="${SATURATE_RATE:-200000}"
CONNECTIONS="${CONNECTIONS:-512}"
TIMEOUT_MS="${TIMEOUT_MS:-10000}"
STRATEGIES="${STRATEGIES:-db-lock redis-lock redis-counter redis-counter-set kafka-async queue}"
SPIKE_REQUESTS="${SPIKE_REQUESTS:-100000}"
SPIKE_USERS="${SPIKE_USERS:-10000}"
SPIKE_STOCK="${SPIKE_STOCK:-1000}"
ADMIT_REQUESTS="${ADMIT_REQUESTS:-20000}"
ADMIT_STOCK="${ADMIT_STOCK:-1000000}"
SOLDOUT_REQUESTS="${SOLDOUT_REQUESTS:-200000}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-300000}"
OPEN_DELAY_S="${OPEN_DELAY_S:-5}"
PERSIST_DEADLINE_S="${PERSIST_DEADLINE_S:-60}"
AUTH="${AUTH:-jwt}"
PROFILE="${PROFILE:-1}"
PROFILE_SECONDS="${PROFILE_SECONDS:-10}"
PROFILE_HZ="${PROFILE_HZ:-499}"
ISSUER_PORT="${ISSUER_PORT:-28180}"
CONSUMER_PORT="${CONSUMER_PORT:-28190}"
CEILING_PORT="${CEILING_PORT:-28170}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
BACKENDS="${BACKENDS:-own}"
if ((EUID == 0)); then BENCH_NICE="${BENCH_NICE:--5}"; else BENCH_NICE="${BENCH_NICE:-0}"; fi
QUIET_MAX_PCT="${QUIET_MAX_PCT:-50}"
QUIET_WAIT_S="${QUIET_WAIT_S:-30}"
if [[ $BACKENDS == own ]]; then
  export COUPONRUSH_STATE_DIR="${BENCH_BACKENDS_STATE:-$CACHE/bench-backends}"
  export REDIS_PORT="${BENCH_REDIS_PORT:-26379}" MYSQL_PORT="${BENCH_MYSQL_PORT:-23306}"
  export KAFKA_PORT="${BENCH_KAFKA_PORT:-29092}" KAFKA_CONTROLLER_PORT="${BENCH_KAFKA_CONTROLLER_PORT:-29093}"
fi
NICE=(nice -n "$BENCH_NICE")
STAMP="$(date -u +%Y%m%d-%H%M%S)"
BENCH_WORK="${BENCH_WORK:-$CACHE/bench/$STAMP}"
JWT_SECRET="bench-$RANDOM$RANDOM$RANDOM"
NAMESPACE=bench
# A fixed topic and consumer group: a later run resumes after the last one's offsets.
export KAFKA_TOPIC="${KAFKA_TOPIC:-couponrush.bench}"
export KAFKA_GROUP="${KAFKA_GROUP:-couponrush-bench}"
export RUST_LOG="${RUST_LOG:-warn}"
# Event names must be DNS-like: lowercase, digits, '-'.
EV_STAMP="$(tr 'A-Z' 'a-z' <<<"$STAMP")"

BIN="$CARGO_TARGET_DIR/release"
ISSUER_BIN="${ISSUER_BIN:-$BIN/couponrush-issuer}"
CEILING_BIN="$CEILING_TARGET_DIR/release/couponrush-bench-ceiling"
LOAD="$BIN/couponrush-load"
mkdir -p "$BENCH_WORK/runs" "$RESULTS_DIR"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ----------------------------------------------------------------------------- processes

PIDS=()               # everything this script started, stopped on exit
STARTED_BACKENDS=()   # components that were down before; only these are stopped
declare -A WATCH=()   # name -> pid whose CPU time is recorded around every run

stop_pid() { # stop_pid PID: SIGTERM, up to 15 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if ((${#STARTED_BACKENDS[@]})); then
    log "stopping the backends this run started: ${STARTED_BACKENDS[*]}"
    local/backends.sh down "${STARTED_BACKENDS[@]}" >/dev/null 2>&1 || true
  fi
  ((rc == 0)) || log "failed (exit $rc); work files in $BENCH_WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME LOG CMD...: runs CMD in the background, remembers its pid in $BG_PID.
start_bg() {
  local name=$1 logf=$2
  shift 2
  "${NICE[@]}" "$@" >"$logf" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
  WATCH[$name]=$BG_PID
}

forget() { # forget NAME: stop it and stop watching it
  local pid=${WATCH[$1]:-}
  [[ -n $pid ]] || return 0
  stop_pid "$pid"
  unset "WATCH[$1]"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# serve NAME PORT LOG CMD...: start a server of ours on PORT (refusing a port someone else
# holds: a readiness check would then be answered by the wrong server) and wait until it
# answers /readyz (or /healthz) and is still ours.
serve() {
  local name=$1 port=$2 logf=$3 i
  shift 3
  port_open "$port" && die "$name: 127.0.0.1:$port is taken by another process (ss -ltnp 'sport = :$port'); set the port variable"
  start_bg "$name" "$logf" "$@"
  for ((i = 0; i < 600; i++)); do
    kill -0 "$BG_PID" 2>/dev/null || die "$name exited during startup (see $logf)"
    if curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" || curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; then
      return 0
    fi
    sleep 0.1
  done
  die "$name did not become ready within 60 s (see $logf)"
}

# ----------------------------------------------------------------------------- measuring

# CPU ticks (user + system, all threads) a process has used; 0 if it is gone.
proc_ticks() {
  local st
  { st=$(<"/proc/$1/stat"); } 2>/dev/null || { echo 0; return; }
  st=${st##*) }
  # fields after "pid (comm) ": state=1 ... utime=12 stime=13
  awk '{ print $12 + $13 }' <<<"$st"
}

# snapshot FILE: CPU ticks of every watched process and of the whole machine, and the time.
snapshot() {
  local f=$1 name
  : >"$f"
  for name in "${!WATCH[@]}"; do printf '%s %s\n' "$name" "$(proc_ticks "${WATCH[$name]}")" >>"$f"; done
  # busy: user, nice, system, irq, softirq; steal (time the hypervisor gave to others) apart.
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6 + $9
    print "machine_busy", busy; print "machine_steal", $9; print "machine_total", total }' /proc/stat >>"$f"
  printf 'time %s\n' "$EPOCHREALTIME" >>"$f"
}

mysql_q() { mariadb -h127.0.0.1 -P"${MYSQL_PORT:-13306}" -ucouponrush -pcouponrush couponrush -N -B -e "$1"; }

# The round's rows: count, distinct users, max seq, ms from first to last admission,
# ms from the last admission (the sell-out, when stock is reached) to the last row
# persisted, ms from the first admission to the last row persisted.
db_stats() {
  mysql_q "SELECT COUNT(*), COUNT(DISTINCT user_id), IFNULL(MAX(seq),0),
      IFNULL(ROUND(TIMESTAMPDIFF(MICROSECOND, MIN(issued_at), MAX(issued_at)) / 1000), 0),
      IFNULL(ROUND(TIMESTAMPDIFF(MICROSECOND, MAX(issued_at), MAX(persisted_at)) / 1000), 0),
      IFNULL(ROUND(TIMESTAMPDIFF(MICROSECOND, MIN(issued_at), MAX(persisted_at)) / 1000), 0)
    FROM coupons WHERE event = '$1' AND round_no = 1"
}

# wait_persisted EVENT EXPECTED: until EXPECTED rows exist, or the count has not moved for
# 5 s, or PERSIST_DEADLINE_S; prints how long the wait took (ms).
wait_persisted() {
  local event=$1 expected=$2 t0=$EPOCHREALTIME last=-1 since=$EPOCHREALTIME n
  while :; do
    n=$(mysql_q "SELECT COUNT(*) FROM coupons WHERE event = '$event' AND round_no = 1")
    ((n >= expected)) && break
    if ((n != last)); then last=$n since=$EPOCHREALTIME; fi
    awk -v a="$since" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 5) }' && break
    awk -v a="$t0" -v b="$EPOCHREALTIME" -v d="$PERSIST_DEADLINE_S" 'BEGIN { exit !(b - a > d) }' && break
    sleep 0.1
  done
  awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d\n", (b - a) * 1000 }'
}

# others_pct F0 F1: CPU (% of one core) used between two snapshots by processes that are
# not watched (nor the generator, which runs only between the "before" and "after" snapshots).
others_pct() {
  awk 'FNR == NR { a[$1] = $2; next } { b[$1] = $2 }
    END {
      ours = 0
      for (k in b) if (k !~ /^machine_/ && k != "time") ours += b[k] - a[k]
      dt = b["time"] - a["time"]
      pct = 0
      if (dt > 0) pct = (b["machine_busy"] - a["machine_busy"] - ours) / dt
      printf "%.0f\n", pct
    }' "$1" "$2"
}

# quiet_gate DIR: samples 2 s of idle (the per-process idle CPU is subtracted from the run's
# later), and waits while other work on the machine uses more than QUIET_MAX_PCT % of a core.
quiet_gate() {
  local dir=$1 t0=$SECONDS pct
  while :; do
    snapshot "$dir/cpu.idle0"
    sleep 2
    snapshot "$dir/cpu.idle1"
    pct=$(others_pct "$dir/cpu.idle0" "$dir/cpu.idle1")
    ((pct <= QUIET_MAX_PCT || SECONDS - t0 >= QUIET_WAIT_S)) && break
    log "  waiting for a quieter machine: other processes use ${pct}% of a core"
  done
  printf 'quiet_wait_s=%s\nothers_pct_before=%s\n' "$((SECONDS - t0))" "$pct" >>"$dir/meta"
}

# run_load LABEL META... -- ARGS...: one couponrush-load run with CPU snapshots around
# it. META are key=value lines for the report; ARGS go to the generator (after --target,
# --connections, --timeout-ms, --auth, --json). With PREWARM="NAME STOCK STRATEGY" set,
# the round is pre-warmed (after the quiet gate) to open OPEN_DELAY_S later, and the first
# request is due at the opening. With PERF_OUT=FILE, the issuer is profiled while the
# generator runs (perf record, cpu-clock, DWARF call graphs).
run_load() {
  local label=$1 dir="$BENCH_WORK/runs/$1" rc=0
  shift
  mkdir -p "$dir"
  : >"$dir/meta"
  while (($#)) && [[ $1 != -- ]]; do printf '%s\n' "$1" >>"$dir/meta"; shift; done
  shift
  local args=("$@" --connections "$CONNECTIONS" --timeout-ms "$TIMEOUT_MS" --auth "$AUTH" --json "$dir/report.json")
  quiet_gate "$dir"
  if [[ -n ${PREWARM:-} ]]; then
    local pw at
    read -r -a pw <<<"$PREWARM"
    at=$(opens_at)
    prewarm "${pw[0]}" "${pw[1]}" "${pw[2]}" "$at"
    args+=(--opens-at-ms "$at")
  fi
  printf 'loadavg=%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/meta"
  local perf_pid=""
  if [[ -n ${PERF_OUT:-} ]]; then
    perf record -q -e cpu-clock -F "$PROFILE_HZ" --call-graph dwarf,16384 -p "${WATCH[issuer]}" \
      -o "$PERF_OUT" >"$PERF_OUT.log" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  # The generator's CPU is measured from its start (after the snapshot), including the
  # wait for the opening and the token minting; the report subtracts neither, so its
  # µs/request is an upper bound.
  snapshot "$dir/cpu.before"
  JWT_SECRET="$JWT_SECRET" "${NICE[@]}" /usr/bin/time -f '%U %S %e %M' -o "$dir/gen.time" \
    "$LOAD" --target "$TARGET_URL" "${args[@]}" >"$dir/gen.out" 2>&1 || rc=$?
  snapshot "$dir/cpu.after"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  printf 'generator_exit=%s\n' "$rc" >>"$dir/meta"
  [[ -s $dir/report.json ]] || die "the generator produced no report for $label (see $dir/gen.out)"
}

answers() { # answers LABEL WORD: how many answers carried this status word
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["by_status"].get(sys.argv[2], 0))' \
    "$BENCH_WORK/runs/$1/report.json" "$2"
}

# apt_install PACKAGE...: installs what is missing (as root), quietly; returns non-zero on failure.
apt_install() {
  ((EUID == 0)) || return 1
  log "installing $* (apt-get)"
  { apt-get -q -o DPkg::Lock::Timeout=300 update &&
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "$@"; } \
    >>"$BENCH_WORK/apt.log" 2>&1
}

opens_at() { # epoch ms OPEN_DELAY_S from now
  echo $(($(date +%s%3N) + OPEN_DELAY_S * 1000))
}
rfc3339_ms() { date -u -d "@$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ; }

prewarm() { # prewarm NAME STOCK STRATEGY OPENS_AT_MS
  "$BIN/couponrush-issuer" prewarm --namespace "$NAMESPACE" --name "$1" --stock "$2" \
    --strategy "$3" --starts-at "$(rfc3339_ms "$4")" >>"$BENCH_WORK/prewarm.log" 2>&1 ||
    die "pre-warming $1 failed (see $BENCH_WORK/prewarm.log)"
}

# ----------------------------------------------------------------------------- setup

log "work files: $BENCH_WORK"
# GNU time measures the generator's CPU; perf takes the profile (optional: without it the
# report says so).
if [[ ! -x /usr/bin/time ]]; then
  apt_install time || die "GNU time (/usr/bin/time) is missing and could not be installed (see $BENCH_WORK/apt.log)"
fi
if [[ $PROFILE == 1 ]] && ! command -v perf >/dev/null; then
  apt_install linux-perf || log "perf could not be installed; no profile (see $BENCH_WORK/apt.log)"
fi

log "building the issuer, the consumer and the load generator (release)"
t0=$EPOCHREALTIME
cargo build --release -q -p couponrush-issuer -p couponrush-consumer -p couponrush-e2e \
  --bin couponrush-issuer --bin couponrush-consumer --bin couponrush-load
log "building the ceiling server (its own workspace)"
CARGO_TARGET_DIR="$CEILING_TARGET_DIR" cargo build --release -q --manifest-path "$HERE/ceiling/Cargo.toml"
BUILD_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

for component in redis mysql kafka; do
  local/backends.sh status "$component" >/dev/null 2>&1 || STARTED_BACKENDS+=("$component")
done
log "backends ($BACKENDS; starting: ${STARTED_BACKENDS[*]:-none})"
"${NICE[@]}" local/backends.sh up redis mysql kafka >&2
eval "$(local/backends.sh env)"
"$BIN/couponrush-issuer" migrate >"$BENCH_WORK/migrate.log" 2>&1 || die "migrating the schema failed (see $BENCH_WORK/migrate.log)"
for component in redis mysql kafka; do
  pid=$(local/backends.sh status "$component" | sed -n 's/.*(pid \([0-9]*\)).*/\1/p')
  [[ -n $pid ]] && WATCH[$component]=$pid
done

{
  printf 'stamp=%s\n' "$STAMP"
  printf 'date=%s\n' "$(date -u +%Y-%m-%d)"
  printf 'nproc=%s\n' "$(nproc)"
  printf 'cpu_model=%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'mem=%s\n' "$(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  printf 'kernel=%s\n' "$(uname -r)"
  printf 'rustc=%s\n' "$(rustc --version)"
  printf 'git=%s\n' "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  printf 'auth=%s\n' "$AUTH"
  printf 'backends=%s\n' "$BACKENDS"
  printf 'nice=%s\n' "$BENCH_NICE"
  printf 'quiet=%s%% of a core, waiting up to %ss\n' "$QUIET_MAX_PCT" "$QUIET_WAIT_S"
  printf 'spike=%s requests, %s users, stock %s\n' "$SPIKE_REQUESTS" "$SPIKE_USERS" "$SPIKE_STOCK"
  printf 'admission=%s requests (distinct users), stock %s\n' "$ADMIT_REQUESTS" "$ADMIT_STOCK"
  printf 'sold_out=%s requests, %s users, stock 1\n' "$SOLDOUT_REQUESTS" "$SPIKE_USERS"
  printf 'rate=%s\n' "$RATE"
  printf 'saturate_rate=%s\n' "$SATURATE_RATE"
  printf 'connections=%s\n' "$CONNECTIONS"
  printf 'timeout_ms=%s\n' "$TIMEOUT_MS"
  printf 'build_s=%s\n' "$BUILD_S"
  printf 'command=%s\n' "${GIVEN}bench/run.sh"
} >"$BENCH_WORK/machine"

# ----------------------------------------------------------------------------- the ceiling

log "starting the ceiling server on 127.0.0.1:$CEILING_PORT"
serve ceiling "$CEILING_PORT" "$BENCH_WORK/ceiling.log" env LISTEN="127.0.0.1:$CEILING_PORT" "$CEILING_BIN"
TARGET_URL="http://127.0.0.1:$CEILING_PORT"

log "ceiling: spike at $RATE/s, capacity at $SATURATE_RATE/s offered"
run_load spike-ceiling scenario=spike target=ceiling "rate=$RATE" "requests=$SPIKE_REQUESTS" -- \
  --event "$NAMESPACE/ceiling" --rate "$RATE" --requests "$SPIKE_REQUESTS" --users "$SPIKE_USERS"
run_load capacity-ceiling scenario=capacity target=ceiling "rate=$SATURATE_RATE" "requests=$SOLDOUT_REQUESTS" -- \
  --event "$NAMESPACE/ceiling" --rate "$SATURATE_RATE" --requests "$SOLDOUT_REQUESTS" --users "$SPIKE_USERS"
forget ceiling

# ----------------------------------------------------------------------------- strategies

issuer_auth_env() {
  if [[ $AUTH == header ]]; then echo TRUST_USER_HEADER=true; else echo "JWT_HS256_SECRET=$JWT_SECRET"; fi
}
start_issuer() { # start_issuer LOG
  serve issuer "$ISSUER_PORT" "$1" env "$(issuer_auth_env)" LISTEN="127.0.0.1:$ISSUER_PORT" \
    ${ISSUER_WORKERS:+TOKIO_WORKER_THREADS=$ISSUER_WORKERS} "$ISSUER_BIN" serve
}

log "starting the consumer (topic $KAFKA_TOPIC, group $KAFKA_GROUP)"
serve consumer "$CONSUMER_PORT" "$BENCH_WORK/consumer.log" env LISTEN="127.0.0.1:$CONSUMER_PORT" "$BIN/couponrush-consumer"

# Kafka is a JVM: until its JIT has compiled the produce and fetch paths it costs several
# times more CPU per message (measured here: 38 µs per admission cold, 19 after 100,000
# messages, 13 after 300,000), and every run would measure a different point of the
# warm-up. So one unreported kafka-async admission run goes first, through the issuer,
# Kafka and the consumer (a production broker is warm).
if [[ " $STRATEGIES " == *" kafka-async "* && $WARMUP_REQUESTS -gt 0 ]]; then
  log "warm-up: $WARMUP_REQUESTS kafka-async admissions (not reported)"
  start_issuer "$BENCH_WORK/issuer-warmup.log"
  TARGET_URL="http://127.0.0.1:$ISSUER_PORT"
  name="warmup-$EV_STAMP"
  PREWARM="$name $ADMIT_STOCK kafka-async" run_load warmup scenario=warmup target=kafka-async -- \
    --event "$NAMESPACE/$name" --rate "$SATURATE_RATE" --requests "$WARMUP_REQUESTS" --distinct
  wait_persisted "$NAMESPACE/$name" "$(answers warmup ISSUED)" >/dev/null
  forget issuer
fi

for strategy in $STRATEGIES; do
  [[ $strategy == none ]] && continue
  log "$strategy: starting an issuer"
  start_issuer "$BENCH_WORK/issuer-$strategy.log"

  TARGET_URL="http://127.0.0.1:$ISSUER_PORT"
  name="spike-$strategy-$EV_STAMP"
  log "$strategy: spike ($SPIKE_REQUESTS requests, $SPIKE_USERS users, stock $SPIKE_STOCK) at $RATE/s"
  PREWARM="$name $SPIKE_STOCK $strategy" run_load "spike-$strategy" scenario=spike "target=$strategy" "rate=$RATE" \
    "requests=$SPIKE_REQUESTS" "event=$NAMESPACE/$name" "stock=$SPIKE_STOCK" -- \
    --event "$NAMESPACE/$name" --rate "$RATE" --requests "$SPIKE_REQUESTS" --users "$SPIKE_USERS"
  printf 'persist_wait_ms=%s\n' "$(wait_persisted "$NAMESPACE/$name" "$SPIKE_STOCK")" >>"$BENCH_WORK/runs/spike-$strategy/meta"
  snapshot "$BENCH_WORK/runs/spike-$strategy/cpu.persisted"
  db_stats "$NAMESPACE/$name" >"$BENCH_WORK/runs/spike-$strategy/db"
  log "$strategy: spike done: $(answers "spike-$strategy" ISSUED) ISSUED; MySQL: $(cut -f1 "$BENCH_WORK/runs/spike-$strategy/db") rows"

  name="admit-$strategy-$EV_STAMP"
  log "$strategy: admission ($ADMIT_REQUESTS distinct users, stock $ADMIT_STOCK) offered at $SATURATE_RATE/s"
  PREWARM="$name $ADMIT_STOCK $strategy" run_load "admission-$strategy" scenario=admission "target=$strategy" \
    "rate=$SATURATE_RATE" "requests=$ADMIT_REQUESTS" "event=$NAMESPACE/$name" "stock=$ADMIT_STOCK" -- \
    --event "$NAMESPACE/$name" --rate "$SATURATE_RATE" --requests "$ADMIT_REQUESTS" --distinct
  admitted=$(($(answers "admission-$strategy" ISSUED) + $(answers "admission-$strategy" QUEUED)))
  printf 'persist_wait_ms=%s\n' "$(wait_persisted "$NAMESPACE/$name" "$admitted")" >>"$BENCH_WORK/runs/admission-$strategy/meta"
  # The CPU of a run counts until its last row is in MySQL: the consumer's (kafka-async)
  # and the scheduler's (queue) work after the answers is part of an admission.
  snapshot "$BENCH_WORK/runs/admission-$strategy/cpu.persisted"
  db_stats "$NAMESPACE/$name" >"$BENCH_WORK/runs/admission-$strategy/db"
  log "$strategy: admission done: $admitted answered 201/202; MySQL: $(cut -f1 "$BENCH_WORK/runs/admission-$strategy/db") rows"

  name="soldout-$strategy-$EV_STAMP"
  log "$strategy: sold-out path ($SOLDOUT_REQUESTS requests, stock 1) offered at $SATURATE_RATE/s"
  PREWARM="$name 1 $strategy" run_load "capacity-$strategy" scenario=capacity "target=$strategy" \
    "rate=$SATURATE_RATE" "requests=$SOLDOUT_REQUESTS" "event=$NAMESPACE/$name" stock=1 -- \
    --event "$NAMESPACE/$name" --rate "$SATURATE_RATE" --requests "$SOLDOUT_REQUESTS" --users "$SPIKE_USERS"

  grep -cE ' (WARN|ERROR) ' "$BENCH_WORK/issuer-$strategy.log" >"$BENCH_WORK/runs/spike-$strategy/issuer_warnings" || true
  forget issuer
done

# ----------------------------------------------------------------------------- timeline

# The seed round as a picture (answers per second by kind, issued and persisted over
# time, the opening, the first SOLD_OUT, the last row): `couponrush-load spike` drives one
# more kafka-async round through a fresh issuer and the running consumer. Not a
# measurement: the spike is a closed loop with its own tokens (the e2e secret).
if [[ " $STRATEGIES " == *" kafka-async "* ]]; then
  log "timeline: one more kafka-async seed round, drawn"
  serve issuer "$ISSUER_PORT" "$BENCH_WORK/issuer-timeline.log" env JWT_HS256_SECRET=e2e-test-secret \
    LISTEN="127.0.0.1:$ISSUER_PORT" "$BIN/couponrush-issuer" serve
  name="timeline-$EV_STAMP"
  opens_at=$(($(date +%s%3N) + 3000))
  prewarm "$name" "$SPIKE_STOCK" kafka-async "$opens_at"
  "$BIN/couponrush-load" spike --issuer "http://127.0.0.1:$ISSUER_PORT" --database-url "$DATABASE_URL" \
    --event "$NAMESPACE/$name" --stock "$SPIKE_STOCK" --users "$SPIKE_USERS" --requests "$SPIKE_REQUESTS" \
    --opens-at-ms "$opens_at" --timeline "$BENCH_WORK/timeline.svg" >"$BENCH_WORK/timeline.txt" 2>&1 ||
    log "timeline: the spike failed (see $BENCH_WORK/timeline.txt); the report has no timeline"
  forget issuer
fi

# ----------------------------------------------------------------------------- profiles

PROFILE_NOTE=""
if [[ $PROFILE == 1 ]]; then
  if ! perf stat -e cpu-clock -o /dev/null true 2>/dev/null; then
    PROFILE_NOTE="perf does not work here ($(perf stat -e cpu-clock true 2>&1 | tail -1)); no profile"
  elif [[ ! -x $INFERNO_ROOT/bin/inferno-flamegraph ]] &&
    ! cargo install -q --root "$INFERNO_ROOT" inferno >"$BENCH_WORK/inferno-install.log" 2>&1; then
    PROFILE_NOTE="inferno (flame graphs) could not be installed: see $BENCH_WORK/inferno-install.log"
  fi
  if [[ -z $PROFILE_NOTE ]]; then
    prof_requests=$((RATE * PROFILE_SECONDS))
    for path in admission sold-out; do
      log "profile: the issuer on the $path path ($prof_requests requests at $RATE/s, perf at ${PROFILE_HZ} Hz)"
      start_issuer "$BENCH_WORK/issuer-profile-$path.log"
      name="profile-$path-$EV_STAMP"
      if [[ $path == admission ]]; then
        stock=$ADMIT_STOCK
        extra=(--distinct)
      else
        # One coupon: the first request sells out, every later one is the sold-out path.
        stock=1
        extra=(--users "$SPIKE_USERS")
      fi
      PERF_OUT="$BENCH_WORK/perf-$path.data" PREWARM="$name $stock kafka-async" run_load "profile-$path" scenario=profile \
        "target=kafka-async" "path=$path" "rate=$RATE" "requests=$prof_requests" -- \
        --event "$NAMESPACE/$name" --rate "$RATE" --requests "$prof_requests" "${extra[@]}"
      forget issuer
      log "profile: folding the $path stacks"
      perf script -i "$BENCH_WORK/perf-$path.data" --no-inline 2>/dev/null |
        "$INFERNO_ROOT/bin/inferno-collapse-perf" --kernel >"$BENCH_WORK/perf-$path.folded" 2>/dev/null || true
    done
  fi
else
  PROFILE_NOTE="PROFILE=0: no profile taken"
fi
printf 'profile_note=%s\n' "$PROFILE_NOTE" >>"$BENCH_WORK/machine"

forget consumer

# ----------------------------------------------------------------------------- report

date_s=$(date -u +%Y-%m-%d)${RESULTS_NAME:+-$RESULTS_NAME}
out="$RESULTS_DIR/$date_s.md"
n=2
while [[ -e $out ]]; do out="$RESULTS_DIR/$date_s-$n.md"; n=$((n + 1)); done
base=$(basename "$out" .md)
for path in admission sold-out; do
  if [[ -s $BENCH_WORK/perf-$path.folded ]]; then
    "$INFERNO_ROOT/bin/inferno-flamegraph" --title "couponrush-issuer, $path path ($RATE req/s)" \
      <"$BENCH_WORK/perf-$path.folded" >"$RESULTS_DIR/$base-flame-$path.svg" 2>/dev/null || true
  fi
done
if [[ -s $BENCH_WORK/timeline.svg ]]; then cp "$BENCH_WORK/timeline.svg" "$RESULTS_DIR/$base-timeline.svg"; fi
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/report.py" "$BENCH_WORK" "$base" >"$out"
cat "$out"
log "results: ${out#"$ROOT"/}"
