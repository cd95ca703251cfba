#!/usr/bin/env bash
# bench/scale.sh — the operator with many events at once (issue 14): 100 and then 500
# CouponEvents applied at once on the local control plane, each run printing its report
# (e2e/tests/scale.rs: time to Scheduled, idle reconciles per event per minute, API
# requests per event, the operator's CPU and peak memory, time to delete them all).
# Starts the backends and the control plane it needs and stops what it started.
#
#   bench/scale.sh            SCALE_RUNS="100 500" by default
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started_backends="" started_cluster=""
cleanup() {
  [ -z "$started_cluster" ] || local/cluster/cluster.sh down >/dev/null 2>&1 || true
  [ -z "$started_backends" ] || local/backends.sh down redis mysql kafka >/dev/null 2>&1 || true
}
trap cleanup EXIT
local/backends.sh status redis mysql kafka >/dev/null 2>&1 || { local/backends.sh up redis mysql kafka; started_backends=yes; }
eval "$(local/backends.sh env)"
local/cluster/cluster.sh status >/dev/null 2>&1 || { local/cluster/build.sh k8s; local/cluster/cluster.sh up; started_cluster=yes; }
eval "$(local/cluster/cluster.sh env)"
cargo build -q -p couponrush-operator --bin couponrush-operator
for events in ${SCALE_RUNS:-100 500}; do
  SCALE_EVENTS=$events cargo test -q -p couponrush-e2e --test scale -- --nocapture 2>&1 | grep -E '^(scale|  )'
done
