#!/usr/bin/env bash
# local/pods/engine.sh — the container engine the real-pods tier builds its images with.
#
#   local/pods/engine.sh up       install Debian's docker.io when missing; start a dockerd when
#                                 none answers (idempotent; waits until it answers)
#   local/pods/engine.sh down     stop the dockerd this script started (never someone else's)
#   local/pods/engine.sh status   exit 0 iff a daemon answers
#   local/pods/engine.sh env      `export DOCKER=...` (the client that talks to it)
#
# The daemon this script starts keeps its images in ${XDG_CACHE_HOME:-~/.cache}/couponrush/docker
# (so a second run builds nothing), runs from $COUPONRUSH_STATE_DIR/engine, takes networks
# from its own address pool (DOCKER_ADDRESS_POOL, 172.31.64.0/18) so it never clashes with a
# machine's docker0, and has no bridge and no iptables rules of its own: image builds use
# the host's network. Only unprivileged containers are used: these machines never grant
# every capability.
#
# The client is Debian's docker (20.10), which builds with BuildKit on its own; a newer
# docker CLI without the buildx plugin cannot (DOCKER overrides the choice).
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${COUPONRUSH_STATE_DIR:-$ROOT/.state}/engine"
CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
DATA_ROOT="$CACHE/docker"
SOCKET="${DOCKER_SOCKET:-/var/run/docker.sock}"
ADDRESS_POOL="${DOCKER_ADDRESS_POOL:-172.31.64.0/18}"
START_TIMEOUT="${DOCKER_START_TIMEOUT:-60}"
DOCKER="${DOCKER:-/usr/bin/docker}"

log() { printf '[engine %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

answers() { [[ -x "$DOCKER" ]] && "$DOCKER" -H "unix://$SOCKET" version >/dev/null 2>&1; }

our_pid() { # the dockerd this script started, if it still runs
  local pid
  [[ -s "$STATE/started.pid" ]] || return 1
  pid="$(tr -dc 0-9 <"$STATE/started.pid")"
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  echo "$pid"
}

install() {
  [[ -x /usr/sbin/dockerd && -x "$DOCKER" ]] && return 0
  log "installing docker.io from Debian's packages ..."
  [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]] || apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >&2 \
    || die "apt-get install docker.io failed"
}

up() {
  local t0=$SECONDS
  install
  if answers; then log "a docker daemon answers on $SOCKET"; return 0; fi
  mkdir -p "$STATE" "$DATA_ROOT"
  log "starting dockerd (data root $DATA_ROOT, address pool $ADDRESS_POOL) ..."
  # Builds run with --network host, so the daemon needs no bridge of its own and leaves the
  # machine's iptables and forwarding alone. (dockerd writes its own pid file and refuses to
  # start while it names a live process: ours is a separate file.)
  rm -f "$STATE/dockerd.pid"
  setsid /usr/sbin/dockerd --host "unix://$SOCKET" --data-root "$DATA_ROOT" \
    --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    --bridge none --iptables=false --ip-forward=false --ip-masq=false \
    --default-address-pool "base=$ADDRESS_POOL,size=24" \
    </dev/null >>"$STATE/dockerd.log" 2>&1 &
  echo $! >"$STATE/started.pid"
  local deadline=$((SECONDS + START_TIMEOUT))
  until answers; do
    our_pid >/dev/null || { tail -n 20 "$STATE/dockerd.log" >&2; die "dockerd exited (log: $STATE/dockerd.log)"; }
    ((SECONDS < deadline)) || die "dockerd did not answer within ${START_TIMEOUT}s (log: $STATE/dockerd.log)"
    sleep 0.5
  done
  touch "$STATE/started-by-us"
  log "dockerd up in $((SECONDS - t0))s"
}

down() {
  local pid
  if ! pid="$(our_pid)"; then
    answers && log "the docker daemon on $SOCKET is not ours: left running"
    rm -f "$STATE/started-by-us"
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/started.pid" "$STATE/started-by-us"
  log "dockerd stopped"
}

case "${1:-}" in
  up) up ;;
  down|stop) down ;;
  status) answers ;;
  env) echo "export DOCKER=$DOCKER DOCKER_HOST=unix://$SOCKET DOCKER_BUILDKIT=1" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; [[ "${1:-}" =~ ^(-h|--help|help)$ ]] ;;
esac
