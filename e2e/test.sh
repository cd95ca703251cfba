#!/usr/bin/env bash
# The README's test command (`make test`): on a machine that has never seen the
# project it installs what is missing, starts the real backends on loopback, runs
# formatting and lint checks and every test tier, and stops what it started even when
# a test fails. It prints each step's duration and the tiers that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Heavy build output lives outside the checkout, so a fresh clone (as in CI) reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/couponrush/cargo-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clone in a new directory (every CI run) gets new hashes for the workspace crates, so
# their incremental caches are never reused: they only filled the disk (9.6 GB after a
# few dozen runs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

timings=()
step() {
  local name=$1; shift
  local started=$SECONDS
  echo
  echo "==> $name"
  "$@"
  local took=$((SECONDS - started))
  timings+=("$(printf '%-44s %5ss' "$name" "$took")")
  echo "<== $name: ${took}s"
}

# Stop at exit only what this run started: a developer's running backends stay up.
started_backends=()
for component in redis mysql kafka redis-cluster; do
  local/backends.sh status "$component" >/dev/null 2>&1 || started_backends+=("$component")
done
started_cluster=""
local/cluster/cluster.sh status >/dev/null 2>&1 || started_cluster=yes
started_node=""
local/pods/node.sh status >/dev/null 2>&1 || started_node=yes
started_engine=""
local/pods/engine.sh status >/dev/null 2>&1 || started_engine=yes
# Managed backends: a second Redis, MariaDB and Kafka with TLS and logins on (a CA made
# for the run), on ports and a state dir of their own, up only for their tests.
tls_backends=(env BACKENDS_TLS=1 COUPONRUSH_STATE_DIR="${COUPONRUSH_STATE_DIR:-$repo/.state}/tls-backends"
  REDIS_PORT="${TLS_REDIS_PORT:-16380}" MYSQL_PORT="${TLS_MYSQL_PORT:-13307}" KAFKA_PORT="${TLS_KAFKA_PORT:-19094}"
  KAFKA_CONTROLLER_PORT="${TLS_KAFKA_CONTROLLER_PORT:-19095}" KAFKA_SSL_PORT="${TLS_KAFKA_SSL_PORT:-19096}"
  local/backends.sh)
started_tls_backends=""
managed_backends_tests() {
  started_tls_backends=yes
  "${tls_backends[@]}" up redis mysql kafka
  # A subshell: the TLS variables replace the plaintext ones for this test only.
  (
    eval "$("${tls_backends[@]}" env)"
    cargo test -p couponrush-e2e --test managed_backends -- --test-threads=1
  )
  "${tls_backends[@]}" down redis mysql kafka
  started_tls_backends=""
}
cleanup() {
  local code=$?
  if [ -n "$started_tls_backends" ]; then
    echo "==> stopping the TLS backends"
    "${tls_backends[@]}" down redis mysql kafka || true
  fi
  if [ ${#started_backends[@]} -gt 0 ]; then
    echo "==> stopping what this run started: ${started_backends[*]}"
    local/backends.sh down "${started_backends[@]}" || true
  fi
  if [ -n "$started_cluster" ]; then
    echo "==> stopping the local cluster"
    local/cluster/cluster.sh down || true
  fi
  if [ -n "$started_node" ]; then
    echo "==> stopping the real-pods node"
    local/pods/node.sh down || true
  fi
  if [ -n "$started_engine" ]; then
    echo "==> stopping the container engine"
    local/pods/engine.sh down || true
  fi
  echo
  echo "== step timings"
  printf '%s\n' "${timings[@]}"
  exit $code
}
trap cleanup EXIT

step "toolchain: rustfmt, clippy" rustup component add rustfmt clippy
step "backends: Redis, MariaDB, Kafka, Redis Cluster" local/backends.sh up redis mysql kafka redis-cluster
# The tests find the backends where this script started them (ports set in the
# environment, e.g. REDIS_CLUSTER_PORTS, reach the tests too).
eval "$(local/backends.sh env)"
# Kubernetes from Go modules, cached by version outside the repo (cold: ~15 min).
step "control plane: build (cached)" local/cluster/build.sh
# promtool and the Prometheus server (the local scenario scrapes its round with it), one Go
# module; the server alone cold: ~4.5 min on two busy cores, ~1.5 min after promtool.
step "monitoring: promtool, Prometheus server (cached)" local/cluster/build.sh monitoring
step "control plane: start (kwok nodes)" local/cluster/cluster.sh up
eval "$(local/cluster/cluster.sh env)"
step "format: cargo fmt --check" cargo fmt --all --check
# Every script parses (a merge that leaves a conflict marker in one fails here, not
# half-way through a run).
step "lint: every shell script parses (bash -n)" bash -c 'git ls-files -z "*.sh" .ci/run | xargs -0 -n1 bash -n'
step "lint: cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
step "build: workspace and tests" cargo build --workspace --all-targets
step "tier 1: unit tests (no I/O)" cargo test --workspace --lib --bins
step "tier 1: the benchmark's load generator against a local server" cargo test -p couponrush-e2e --test load_generator
# Nightly and cargo-fuzz are installed and the fuzz build cached by issuer/fuzz/run.sh
# (cold: about 10 minutes of building every dependency with the sanitizer).
step "tier 1: fuzz the request path (cargo fuzz, 60 s)" issuer/fuzz/run.sh 60
# One test at a time: the spike tests measure nothing, but they share two cores and
# the fault tests stop and start the Kafka broker.
backend_tests=(--test backends --test admission --test api_contract --test consumer --test spike --test faults --test redis_cluster
  --test disconnects --test redis_loss --test user_ids --test export --test slow_clients --test audit)
step "tier 2: real Redis, Kafka, MariaDB" cargo test -p couponrush-e2e "${backend_tests[@]}" -- --test-threads=1
step "tier 2: managed backends (TLS and logins on)" \
  managed_backends_tests
step "tier 2: k6 smoke scenario against a local issuer" e2e/smoke.sh
step "tier 3: operator on a real control plane" cargo test -p couponrush-e2e --test operator -- --test-threads=1
step "tier 3: operator as the chart's ServiceAccount (RBAC)" cargo test -p couponrush-e2e --test rbac -- --test-threads=1
step "tier 3: ten events at once (the scale test's smoke size)" cargo test -p couponrush-e2e --test scale -- --nocapture
step "tier 3: Helm chart (lint, server dry-run)" charts/couponrush/test.sh
step "tier 3: end-to-end scenario (helm, seed event, spike, live Prometheus checks, uninstall)" e2e/scenario.sh local
step "tier 3: alerts and dashboard (promtool; names against the scenario's /metrics)" monitoring/test.sh

# Tier 4 runs on its own node; the kwok cluster and the loopback backends this run started
# are done by now and give their memory and CPU back.
if [ -n "$started_cluster" ]; then local/cluster/cluster.sh down >/dev/null 2>&1 || true; started_cluster=""; fi
if [ ${#started_backends[@]} -gt 0 ]; then local/backends.sh down "${started_backends[@]}" >/dev/null 2>&1 || true; started_backends=(); fi
# Cold: node binaries ~6 min, images ~12 min (the release build inside the image); warm: seconds.
step "tier 4: container engine, images, real node (cached)" local/pods/node.sh up
step "tier 4: end-to-end scenario on real pods" e2e/scenario.sh pods
step "tier 4: pod faults (leader, issuer, consumer deleted)" e2e/scenario.sh pods-faults

echo
echo "== tiers run: unit; backends (real Redis, Redis Cluster, Kafka, MariaDB); cluster (kube-apiserver, etcd, kwok); real pods (kubelet, containerd, images built here)"
