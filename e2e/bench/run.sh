#!/usr/bin/env bash
# e2e/bench/run.sh — the benchmark of DESIGN.md "Performance work": every strategy under
# the seed-000 spike and under a sustained-admission load, beside the ceiling of the same
# machine (a trivial axum server, e2e/bench/ceiling/) under the same load generator (k6,
# e2e/load/spike.js), in one run. Writes e2e/bench/results/<date>.md and prints it.
#
#   e2e/bench/run.sh                 everything (about 10 minutes on a quiet 2-core machine)
#   RATE=2000 e2e/bench/run.sh       skip the calibration, use this arrival rate
#   STRATEGIES="kafka-async db-lock" PROFILE=0 e2e/bench/run.sh
#
# What it does:
#   1. builds couponrush-issuer and couponrush-consumer (release) and the ceiling server;
#      brings up Redis, MariaDB and Kafka with e2e/backends.sh: by default a set of its own
#      (BACKENDS=own: other ports, state in ~/.cache/couponrush/bench-backends), so neither
#      the tests others run on the shared servers nor the benchmark disturb each other;
#      only what this run started is stopped at the end;
#   2. calibration: the ceiling under constant arrival rates CAL_RATES, CAL_SECONDS each;
#      RATE = the highest rate with no dropped iteration and a p99 under CAL_P99_MS (the
#      generator, not the server, is what runs out first on a small machine: see BENCH.md);
#   3. the ceiling, then each strategy, under
#        spike:     SPIKE_REQUESTS requests (100,000) from SPIKE_USERS users (10,000) at
#                   RATE against a fresh round of SPIKE_STOCK coupons (1,000) that opens
#                   OPEN_DELAY_S after pre-warming; the first request is sent at opening;
#        admission: ADMIT_REQUESTS requests (20,000), every one a new user, at RATE, against
#                   a round with ADMIT_STOCK coupons (1,000,000): every request admits;
#      one fresh issuer per strategy, one consumer for the whole run (kafka-async needs it);
#      after each run: rows in MySQL, time from sell-out to the last row persisted;
#   4. PROFILE=1: perf (cpu-clock, DWARF call graphs) of the issuer on the admission path
#      and on the sold-out path, as flame graphs (inferno) next to the results;
#   5. stops everything it started.
#
# Everything but the results goes to $BENCH_WORK (default ~/.cache/couponrush/bench/<stamp>):
# k6 summaries, logs, CPU snapshots, perf data.
#
# Environment (all optional):
#   RATE  CAL_RATES="1000 1500 2000 2500 3000 3500 4000"  CAL_SECONDS=8  CAL_P99_MS=10
#   STRATEGIES="db-lock redis-lock redis-counter redis-counter-set kafka-async queue" (none: only the ceiling)
#   SPIKE_REQUESTS=100000 SPIKE_USERS=10000 SPIKE_STOCK=1000
#   ADMIT_REQUESTS=20000 ADMIT_STOCK=1000000  OPEN_DELAY_S=5  PERSIST_DEADLINE_S=60
#   VUS=200 MAX_VUS=2000 (k6 VUs pre-allocated / at most)  TIMEOUT=10s (per request)
#   AUTH=jwt|header (header: the issuer runs with TRUST_USER_HEADER=true)
#   PROFILE=1  PROFILE_SECONDS=10  PROFILE_HZ=499
#   ISSUER_PORT=28180 CONSUMER_PORT=28190 CEILING_PORT=28170  KAFKA_TOPIC=couponrush.bench
#   BACKENDS=own|shared  (shared: the default e2e/backends.sh servers on their usual ports)
#   BENCH_NICE=-5        niceness of every benchmark process (generator, servers, backends it
#                        starts); a negative value keeps other work on a shared machine from
#                        skewing the numbers (needs root; 0 to turn off)
#   QUIET_MAX_PCT=50 QUIET_WAIT_S=30  before each run, wait up to QUIET_WAIT_S for CPU used by
#                        processes outside the benchmark to drop under QUIET_MAX_PCT % of a core
#   RESULTS_DIR=e2e/bench/results  RESULTS_NAME (the report is <date>[-<name>].md)
#   BENCH_WORK=...  CARGO_TARGET_DIR  CEILING_TARGET_DIR
set -euo pipefail
export LC_ALL=C

# The settings given on the command line, for the report's "command" line.
GIVEN=""
for v in RATE CAL_RATES CAL_SECONDS CAL_P99_MS STRATEGIES SPIKE_REQUESTS SPIKE_USERS SPIKE_STOCK ADMIT_REQUESTS \
  ADMIT_STOCK VUS MAX_VUS TIMEOUT AUTH PROFILE PROFILE_SECONDS BACKENDS BENCH_NICE RESULTS_NAME; do
  [[ -n ${!v:-} ]] && GIVEN+="$v=$(printf '%q' "${!v}") "
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE="$ROOT/e2e/bench"
CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
CEILING_TARGET_DIR="${CEILING_TARGET_DIR:-$CACHE/cargo-target-ceiling}"
INFERNO_ROOT="${INFERNO_ROOT:-$CACHE/inferno}"

RATE="${RATE:-}"
CAL_RATES="${CAL_RATES:-1000 1500 2000 2500 3000 3500 4000}"
CAL_SECONDS="${CAL_SECONDS:-8}"
CAL_P99_MS="${CAL_P99_MS:-10}"
STRATEGIES="${STRATEGIES:-db-lock redis-lock redis-counter redis-counter-set kafka-async queue}"
SPIKE_REQUESTS="${SPIKE_REQUESTS:-100000}"
SPIKE_USERS="${SPIKE_USERS:-10000}"
SPIKE_STOCK="${SPIKE_STOCK:-1000}"
ADMIT_REQUESTS="${ADMIT_REQUESTS:-20000}"
ADMIT_STOCK="${ADMIT_STOCK:-1000000}"
OPEN_DELAY_S="${OPEN_DELAY_S:-5}"
PERSIST_DEADLINE_S="${PERSIST_DEADLINE_S:-60}"
VUS="${VUS:-200}"
MAX_VUS="${MAX_VUS:-2000}"
TIMEOUT="${TIMEOUT:-10s}"
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
export K6_NO_USAGE_REPORT=true
# Event names must be DNS-like: lowercase, digits, '-'.
EV_STAMP="$(tr 'A-Z' 'a-z' <<<"$STAMP")"

BIN="$CARGO_TARGET_DIR/release"
CEILING_BIN="$CEILING_TARGET_DIR/release/couponrush-bench-ceiling"
K6=""
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
    e2e/backends.sh down "${STARTED_BACKENDS[@]}" >/dev/null 2>&1 || true
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
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print "machine_busy", busy; print "machine_total", total }' /proc/stat >>"$f"
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
# not watched (nor k6, which runs only between the "before" and "after" snapshots).
others_pct() {
  awk 'FNR == NR { a[$1] = $2; next } { b[$1] = $2 }
    END {
      ours = 0
      for (k in b) if (k != "machine_busy" && k != "machine_total" && k != "time") ours += b[k] - a[k]
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

# run_k6 LABEL META... -- K6_ENV...: one k6 run of e2e/load/spike.js with CPU snapshots
# around it. META are key=value lines for the report; K6_ENV are NAME=value for k6.
# With PREWARM="NAME STOCK STRATEGY" set, the round is pre-warmed (after the quiet gate) to
# open OPEN_DELAY_S later, and k6 sends its first request at the opening. With PERF_OUT=FILE,
# the issuer is profiled while k6 runs (perf record, cpu-clock, DWARF call graphs).
run_k6() {
  local label=$1 dir="$BENCH_WORK/runs/$1" rc=0 kv
  shift
  mkdir -p "$dir"
  : >"$dir/meta"
  while (($#)) && [[ $1 != -- ]]; do printf '%s\n' "$1" >>"$dir/meta"; shift; done
  shift
  local args=()
  for kv in "$@"; do args+=(-e "$kv"); done
  # Every run also measures latency from each request's due time on the schedule (costs
  # k6 CPU, the same for every target; the ceiling's row shows the generator's own lag).
  args+=(-e "JWT_SECRET=$JWT_SECRET" -e "AUTH=$AUTH" -e "VUS=$VUS" -e "MAX_VUS=$MAX_VUS" -e "TIMEOUT=$TIMEOUT"
    -e INTENDED_LATENCY=1)
  quiet_gate "$dir"
  if [[ -n ${PREWARM:-} ]]; then
    local pw at
    read -r -a pw <<<"$PREWARM"
    at=$(opens_at)
    prewarm "${pw[0]}" "${pw[1]}" "${pw[2]}" "$at"
    args+=(-e "OPENS_AT_MS=$at")
  fi
  printf 'loadavg=%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/meta"
  local perf_pid=""
  if [[ -n ${PERF_OUT:-} ]]; then
    perf record -q -e cpu-clock -F "$PROFILE_HZ" --call-graph dwarf,16384 -p "${WATCH[issuer]}" \
      -o "$PERF_OUT" >"$PERF_OUT.log" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  snapshot "$dir/cpu.before"
  "${NICE[@]}" /usr/bin/time -f '%U %S %e %M' -o "$dir/k6.time" \
    "$K6" run -q --no-color --address "" --summary-export "$dir/summary.json" \
    --console-output "$dir/console.log" "${args[@]}" e2e/load/spike.js >"$dir/k6.out" 2>&1 || rc=$?
  snapshot "$dir/cpu.after"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  printf 'k6_exit=%s\n' "$rc" >>"$dir/meta"
  [[ -s $dir/summary.json ]] || die "k6 produced no summary for $label (see $dir/k6.out)"
}

summary_num() { # summary_num LABEL JQ-PATH
  jq -r "$2 // 0" "$BENCH_WORK/runs/$1/summary.json"
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
K6="$(e2e/cluster/build.sh print-tools-dir)/k6"
if [[ ! -x $K6 ]]; then
  log "building k6 (once)"
  e2e/cluster/build.sh tools >&2
fi

log "building the issuer and the consumer (release)"
t0=$EPOCHREALTIME
cargo build --release -q -p couponrush-issuer -p couponrush-consumer --bin couponrush-issuer --bin couponrush-consumer
log "building the ceiling server (its own workspace)"
CARGO_TARGET_DIR="$CEILING_TARGET_DIR" cargo build --release -q --manifest-path "$HERE/ceiling/Cargo.toml"
BUILD_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

for component in redis mysql kafka; do
  e2e/backends.sh status "$component" >/dev/null 2>&1 || STARTED_BACKENDS+=("$component")
done
log "backends ($BACKENDS; starting: ${STARTED_BACKENDS[*]:-none})"
"${NICE[@]}" e2e/backends.sh up redis mysql kafka >&2
eval "$(e2e/backends.sh env)"
"$BIN/couponrush-issuer" migrate >"$BENCH_WORK/migrate.log" 2>&1 || die "migrating the schema failed (see $BENCH_WORK/migrate.log)"
for component in redis mysql kafka; do
  pid=$(e2e/backends.sh status "$component" | sed -n 's/.*(pid \([0-9]*\)).*/\1/p')
  [[ -n $pid ]] && WATCH[$component]=$pid
done

{
  printf 'stamp=%s\n' "$STAMP"
  printf 'date=%s\n' "$(date -u +%Y-%m-%d)"
  printf 'nproc=%s\n' "$(nproc)"
  printf 'cpu_model=%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  printf 'mem=%s\n' "$(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
  printf 'kernel=%s\n' "$(uname -r)"
  printf 'k6=%s\n' "$("$K6" version 2>/dev/null | head -1)"
  printf 'rustc=%s\n' "$(rustc --version)"
  printf 'git=%s\n' "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  printf 'auth=%s\n' "$AUTH"
  printf 'backends=%s\n' "$BACKENDS"
  printf 'nice=%s\n' "$BENCH_NICE"
  printf 'quiet=%s%% of a core, waiting up to %ss\n' "$QUIET_MAX_PCT" "$QUIET_WAIT_S"
  printf 'spike=%s requests, %s users, stock %s\n' "$SPIKE_REQUESTS" "$SPIKE_USERS" "$SPIKE_STOCK"
  printf 'admission=%s requests (distinct users), stock %s\n' "$ADMIT_REQUESTS" "$ADMIT_STOCK"
  printf 'vus=%s/%s\n' "$VUS" "$MAX_VUS"
  printf 'timeout=%s\n' "$TIMEOUT"
  printf 'build_s=%s\n' "$BUILD_S"
  printf 'command=%s\n' "${GIVEN}e2e/bench/run.sh"
} >"$BENCH_WORK/machine"

# ----------------------------------------------------------------------------- the ceiling

log "starting the ceiling server on 127.0.0.1:$CEILING_PORT"
serve ceiling "$CEILING_PORT" "$BENCH_WORK/ceiling.log" env LISTEN="127.0.0.1:$CEILING_PORT" "$CEILING_BIN"
CEILING_URL="http://127.0.0.1:$CEILING_PORT"

if [[ -z $RATE ]]; then
  log "calibration: the ceiling at ${CAL_RATES// /, } requests/s, ${CAL_SECONDS}s each"
  for r in $CAL_RATES; do
    run_k6 "cal-$r" scenario=calibration target=ceiling "rate=$r" "requests=$((r * CAL_SECONDS))" -- \
      "BASE_URL=$CEILING_URL" "EVENT=$NAMESPACE/ceiling" "RATE=$r" "REQUESTS=$((r * CAL_SECONDS))" \
      "USERS=$SPIKE_USERS"
    dropped=$(summary_num "cal-$r" '.metrics.dropped_iterations.count')
    p99=$(summary_num "cal-$r" '.metrics.http_req_duration["p(99)"]')
    log "  $r/s: dropped $dropped, p99 ${p99} ms"
    if ((dropped == 0)) && awk -v p="$p99" -v l="$CAL_P99_MS" 'BEGIN { exit !(p < l) }'; then
      RATE=$r
    else
      break
    fi
  done
  [[ -n $RATE ]] || die "even ${CAL_RATES%% *}/s overloads the generator; set RATE"
  log "rate for every run: $RATE requests/s"
  printf 'rate_source=calibrated\n' >>"$BENCH_WORK/machine"
else
  printf 'rate_source=given\n' >>"$BENCH_WORK/machine"
fi
printf 'rate=%s\n' "$RATE" >>"$BENCH_WORK/machine"

log "ceiling: spike and admission loads at $RATE/s"
run_k6 spike-ceiling scenario=spike target=ceiling "rate=$RATE" "requests=$SPIKE_REQUESTS" -- \
  "BASE_URL=$CEILING_URL" "EVENT=$NAMESPACE/ceiling" "RATE=$RATE" "REQUESTS=$SPIKE_REQUESTS" "USERS=$SPIKE_USERS"
run_k6 admission-ceiling scenario=admission target=ceiling "rate=$RATE" "requests=$ADMIT_REQUESTS" -- \
  "BASE_URL=$CEILING_URL" "EVENT=$NAMESPACE/ceiling" "RATE=$RATE" "REQUESTS=$ADMIT_REQUESTS" DISTINCT=1
# What the JWTs cost the generator: the same load with the trusted header instead.
gen_requests=$((RATE * CAL_SECONDS))
run_k6 generator-header scenario=generator target=ceiling auth=header "rate=$RATE" "requests=$gen_requests" -- \
  "BASE_URL=$CEILING_URL" "EVENT=$NAMESPACE/ceiling" "RATE=$RATE" "REQUESTS=$gen_requests" "USERS=$SPIKE_USERS" AUTH=header
run_k6 generator-jwt scenario=generator target=ceiling auth=jwt "rate=$RATE" "requests=$gen_requests" -- \
  "BASE_URL=$CEILING_URL" "EVENT=$NAMESPACE/ceiling" "RATE=$RATE" "REQUESTS=$gen_requests" "USERS=$SPIKE_USERS" AUTH=jwt
forget ceiling

# ----------------------------------------------------------------------------- strategies

ISSUER_URL="http://127.0.0.1:$ISSUER_PORT"
issuer_auth_env() {
  if [[ $AUTH == header ]]; then echo TRUST_USER_HEADER=true; else echo "JWT_HS256_SECRET=$JWT_SECRET"; fi
}
start_issuer() { # start_issuer LOG
  serve issuer "$ISSUER_PORT" "$1" env "$(issuer_auth_env)" LISTEN="127.0.0.1:$ISSUER_PORT" "$BIN/couponrush-issuer" serve
}

log "starting the consumer (topic $KAFKA_TOPIC, group $KAFKA_GROUP)"
serve consumer "$CONSUMER_PORT" "$BENCH_WORK/consumer.log" env LISTEN="127.0.0.1:$CONSUMER_PORT" "$BIN/couponrush-consumer"

for strategy in $STRATEGIES; do
  [[ $strategy == none ]] && continue
  log "$strategy: starting an issuer"
  start_issuer "$BENCH_WORK/issuer-$strategy.log"

  name="spike-$strategy-$EV_STAMP"
  log "$strategy: spike ($SPIKE_REQUESTS requests, $SPIKE_USERS users, stock $SPIKE_STOCK) at $RATE/s"
  PREWARM="$name $SPIKE_STOCK $strategy" run_k6 "spike-$strategy" scenario=spike "target=$strategy" "rate=$RATE" \
    "requests=$SPIKE_REQUESTS" "event=$NAMESPACE/$name" "stock=$SPIKE_STOCK" -- \
    "BASE_URL=$ISSUER_URL" "EVENT=$NAMESPACE/$name" "RATE=$RATE" "REQUESTS=$SPIKE_REQUESTS" "USERS=$SPIKE_USERS"
  admitted=$(($(summary_num "spike-$strategy" '.metrics.answer_issued.count')))
  expected=$SPIKE_STOCK
  printf 'persist_wait_ms=%s\n' "$(wait_persisted "$NAMESPACE/$name" "$expected")" >>"$BENCH_WORK/runs/spike-$strategy/meta"
  db_stats "$NAMESPACE/$name" >"$BENCH_WORK/runs/spike-$strategy/db"
  log "$strategy: spike done: $admitted answered 201; MySQL: $(cut -f1 "$BENCH_WORK/runs/spike-$strategy/db") rows"

  name="admit-$strategy-$EV_STAMP"
  log "$strategy: admission ($ADMIT_REQUESTS distinct users, stock $ADMIT_STOCK) at $RATE/s"
  PREWARM="$name $ADMIT_STOCK $strategy" run_k6 "admission-$strategy" scenario=admission "target=$strategy" \
    "rate=$RATE" "requests=$ADMIT_REQUESTS" "event=$NAMESPACE/$name" "stock=$ADMIT_STOCK" -- \
    "BASE_URL=$ISSUER_URL" "EVENT=$NAMESPACE/$name" "RATE=$RATE" "REQUESTS=$ADMIT_REQUESTS" DISTINCT=1
  admitted=$(($(summary_num "admission-$strategy" '.metrics.answer_issued.count') + $(summary_num "admission-$strategy" '.metrics.answer_queued.count')))
  printf 'persist_wait_ms=%s\n' "$(wait_persisted "$NAMESPACE/$name" "$admitted")" >>"$BENCH_WORK/runs/admission-$strategy/meta"
  db_stats "$NAMESPACE/$name" >"$BENCH_WORK/runs/admission-$strategy/db"
  log "$strategy: admission done: $admitted answered 201/202; MySQL: $(cut -f1 "$BENCH_WORK/runs/admission-$strategy/db") rows"

  grep -cE ' (WARN|ERROR) ' "$BENCH_WORK/issuer-$strategy.log" >"$BENCH_WORK/runs/spike-$strategy/issuer_warnings" || true
  forget issuer
done

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
        extra=(DISTINCT=1)
      else
        # One coupon: the first request sells out, every later one is the sold-out path.
        stock=1
        extra=("USERS=$SPIKE_USERS")
      fi
      PERF_OUT="$BENCH_WORK/perf-$path.data" PREWARM="$name $stock kafka-async" run_k6 "profile-$path" scenario=profile "target=kafka-async" "path=$path" \
        "rate=$RATE" "requests=$prof_requests" -- \
        "BASE_URL=$ISSUER_URL" "EVENT=$NAMESPACE/$name" "RATE=$RATE" "REQUESTS=$prof_requests" "${extra[@]}"
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
PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/report.py" "$BENCH_WORK" "$base" >"$out"
cat "$out"
log "results: ${out#"$ROOT"/}"
