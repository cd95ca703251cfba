#!/usr/bin/env bash
# local/backends.sh — real Redis, MariaDB (MySQL) and Kafka servers on loopback, for
# development, tests and CI. There is no container engine on our machines, so the servers
# are installed from Debian / Maven Central and run as plain processes of this script.
#
#   local/backends.sh up      [component...]   start (idempotent; waits until each answers)
#   local/backends.sh status  [component...]   one line each; non-zero exit if any is down
#   local/backends.sh down    [component...]   stop (SIGTERM, deadline, then SIGKILL)
#   local/backends.sh stop    [component...]   same as down
#   local/backends.sh restart [component...]   down, then up
#   local/backends.sh kill    component...     SIGKILL (a crash, for fault tests); `up` restarts it
#   local/backends.sh pause|resume component... SIGSTOP / SIGCONT (a stalled server, for timeouts)
#   local/backends.sh env                      `export X=...` lines for the Rust code/tests
#
# Components: redis, mysql, kafka (the default set) and redis-cluster (three masters; only
# started when named; `down`/`stop` without arguments stop it too).
#
# Environment (all optional):
#   REDIS_PORT=16379 MYSQL_PORT=13306 KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093
#   REDIS_CLUSTER_PORTS="17001 17002 17003"  KAFKA_PARTITIONS=4  KAFKA_HEAP=512m
#   COUPONRUSH_STATE_DIR=<repo>/.state (data, logs, pid files)
#   KAFKA_VERSION=3.9.1 (jars cached in ${XDG_CACHE_HOME:-~/.cache}/couponrush/kafka-<v>/libs)
#   REDIS_START_TIMEOUT=20 MYSQL_START_TIMEOUT=90 KAFKA_START_TIMEOUT=120 STOP_TIMEOUT=30
#
# TLS mode: BACKENDS_TLS=1 (any other value, or unset: the plain mode above, unchanged).
# Meant to run BESIDE the plain backends, so give it its own COUPONRUSH_STATE_DIR and ports;
# `up`/`restart` refuse a state dir that the other mode has used. In TLS mode:
#   - `up` makes, once per state dir, with the openssl CLI, into $STATE/tls/: a CA (ca.pem,
#     ca.key), one server certificate for IP:127.0.0.1 and DNS:localhost (server.pem,
#     server.key, PKCS#8; kafka-keystore.pem = key + cert), and a random hex password per
#     backend for the user couponrush (redis.password, mysql.password, kafka.password).
#     Delete $STATE/tls to get new ones (Kafka's storage is then formatted afresh).
#   - redis: TLS only on REDIS_PORT (no plaintext port), no client certificates; the
#     `default` user is off, user couponrush (password redis.password) may do everything.
#     redis-cluster has no TLS mode and is refused.
#   - mysql: ssl_cert/ssl_key/ssl_ca and require_secure_transport=ON on MYSQL_PORT; user
#     couponrush (password mysql.password) is REQUIRE SSL (root still uses the socket).
#   - kafka: SASL_SSL (SCRAM-SHA-512, user couponrush, password kafka.password) on
#     KAFKA_PORT, SSL (server-authenticated, no client certificates, no SASL) on
#     KAFKA_SSL_PORT (default KAFKA_PORT+2), CONTROLLER plaintext on KAFKA_CONTROLLER_PORT;
#     brokers talk to each other over SSL. No PLAINTEXT listener.
#   - readiness checks and `status` log in over TLS with these credentials, verifying ca.pem.
#   - `env` prints single-quoted export lines (eval them: the *_CA_PEM values span lines):
#       REDIS_URL=rediss://couponrush:<pw>@127.0.0.1:$REDIS_PORT  REDIS_CA_PEM=<ca.pem text>
#       DATABASE_URL=mysql://couponrush:<pw>@127.0.0.1:$MYSQL_PORT/couponrush?ssl-mode=VERIFY_IDENTITY
#       DATABASE_CA_PEM=<ca.pem text>  KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
#       KAFKA_SECURITY_PROTOCOL=SASL_SSL  KAFKA_SASL_MECHANISM=SCRAM-SHA-512
#       KAFKA_SASL_USERNAME=couponrush  KAFKA_SASL_PASSWORD=<pw>  KAFKA_CA_PEM=<ca.pem text>
#       KAFKA_SSL_BROKERS=127.0.0.1:$KAFKA_SSL_PORT  BACKENDS_CA_FILE=$STATE/tls/ca.pem
#     e.g. eval "$(BACKENDS_TLS=1 COUPONRUSH_STATE_DIR=... REDIS_PORT=... local/backends.sh env)"
#   - $STATE/tls/kcat.conf holds kcat settings for the SASL_SSL listener (kcat -F FILE).
set -euo pipefail

# Decimal point in $EPOCHREALTIME and awk must not depend on the caller's locale.
export LC_ALL=C
# mariadbd / mariadb-install-db live in /usr/sbin, which a CI environment's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/local/backends"
STATE="${COUPONRUSH_STATE_DIR:-$ROOT/.state}"

REDIS_PORT="${REDIS_PORT:-16379}"
MYSQL_PORT="${MYSQL_PORT:-13306}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-4}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
read -r -a REDIS_CLUSTER_PORTS <<<"${REDIS_CLUSTER_PORTS:-17001 17002 17003}"

# 3.9.1: last 3.x line, runs on JDK 17, KRaft single node; kafka_2.13 holds both
# kafka.Kafka and kafka.tools.StorageTool (checked after download). The logging binding
# in local/backends/kafka-pom.xml (reload4j) is the 3.x one: 4.x would need log4j2 there.
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
KAFKA_HOME="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

MYSQL_DB=couponrush
MYSQL_USER=couponrush
MYSQL_PASSWORD=couponrush

REDIS_START_TIMEOUT="${REDIS_START_TIMEOUT:-20}"
MYSQL_START_TIMEOUT="${MYSQL_START_TIMEOUT:-90}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"

DEFAULT_COMPONENTS=(redis mysql kafka)
ALL_COMPONENTS=(redis mysql kafka redis-cluster)

# TLS mode (see the header). Passwords are read from $TLS_DIR by tls_load.
TLS=0
[[ ${BACKENDS_TLS:-} == 1 ]] && TLS=1
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-$((KAFKA_PORT + 2))}"
TLS_DIR="$STATE/tls"
TLS_USER=couponrush
REDIS_PASSWORD=""
KAFKA_PASSWORD=""
if ((TLS)); then
  MYSQL_PASSWORD=""
  # `down`/`stop` without arguments: there is no TLS redis-cluster to stop.
  ALL_COMPONENTS=(redis mysql kafka)
fi

# ----------------------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
die() { printf 'backends: %s\n' "$*" >&2; exit 1; }

# Seconds since a timestamp taken with t0=$EPOCHREALTIME, e.g. "9.3s".
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if pid $1 exists and is not a zombie. PID 1 here does not always reap orphans, so a
# `kill -9`ed server can linger as a zombie that `kill -0` still reports as alive.
alive() {
  local st
  st=$(<"/proc/$1/stat") 2>/dev/null || return 1
  st=${st##*) } # the state letter follows "pid (comm) "
  st=${st%% *}
  [[ -n $st && $st != Z && $st != X ]]
}

# ours PID DIR: true if PID is a live server of ours: one of the server programs we run,
# with DIR (a state dir) on its command line. Every server gets its config path from the
# state dir on its command line (redis via proc-title-template); this guards against pid
# reuse and never matches, say, a `tail -f` of one of our logs.
ours() {
  local comm
  { comm=$(<"/proc/$1/comm"); } 2>/dev/null || return 1
  case $comm in redis-server | mariadbd | java) ;; *) return 1 ;; esac
  alive "$1" || return 1
  [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" == *"$2/"* ]]
}

# live_pid PIDFILE: print the pid recorded in PIDFILE if that process is still a live
# server of ours. A stale file (e.g. after `kill -9`) is removed so `up` starts afresh.
live_pid() {
  local f=$1 pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  if [[ -n $pid ]] && ours "$pid" "$STATE"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$f"
  return 1
}

# Pids of servers of ours under DIR (a component's state dir), with or without a pid file:
# catches one whose pid file was lost.
pids_under() {
  local dir=$1 p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    if ours "$p" "$dir"; then printf '%s\n' "$p"; fi
  done
}

# stop_pids NAME PID...: SIGTERM, wait up to STOP_TIMEOUT for a clean shutdown (Kafka and
# MariaDB flush and close their logs, which makes the next start faster), then SIGKILL.
stop_pids() {
  local name=$1 t0=$EPOCHREALTIME p left
  shift
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while :; do
    left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    ((${#left[@]})) || break
    if ((SECONDS >= deadline)); then
      say "$name: no exit after ${STOP_TIMEOUT}s, sending SIGKILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  say "$name: stopped in $(since "$t0")"
}

# stop_dir NAME DIR: stop every process of ours belonging to the component in DIR.
stop_dir() {
  local name=$1 dir=$2 pids=() f p
  for f in "$dir"/*.pid "$dir"/*/*.pid; do
    [[ -e $f ]] || continue
    p=$(live_pid "$f") && pids+=("$p")
  done
  while read -r p; do
    [[ -n $p && " ${pids[*]} " != *" $p "* ]] && pids+=("$p")
  done < <(pids_under "$dir")
  if ((${#pids[@]})); then
    stop_pids "$name" "${pids[@]}"
  else
    say "$name: not running"
  fi
  rm -f "$dir"/*.pid "$dir"/*/*.pid
}

# wait_for SECONDS PID CHECK...: poll CHECK until it succeeds; fail early if PID died.
wait_for() {
  local timeout=$1 pid=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@"; do
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    ((SECONDS < deadline)) || return 1
    sleep 0.25
  done
}

# why_not PID SECONDS CHECK: the end of a failure message for a server that never answered.
why_not() {
  if [[ -n $1 ]] && ! alive "$1"; then echo "exited during startup"; else echo "did not answer $3 within ${2}s"; fi
}

# fail NAME LOG MESSAGE: show what the server said, then exit non-zero.
fail() {
  printf 'backends: %s: %s\n' "$1" "$3" >&2
  if [[ -f $2 ]]; then
    printf -- '---- last 40 lines of %s ----\n' "$2" >&2
    tail -n 40 "$2" >&2
    printf -- '----\n' >&2
  fi
  exit 1
}

# not_ours PIDFILE: a note for "already running" when the server answering on our port was
# not started from this state dir (another checkout, or a hand-started one).
not_ours() {
  live_pid "$1" >/dev/null || echo " (not started from $STATE: no live pid file, left alone)"
}

# Refuse to start on a port someone else already holds: the server would fail to bind
# anyway, and the error is clearer here.
require_free_port() {
  if port_open "$2"; then
    die "$1: port 127.0.0.1:$2 is taken by another process (see: ss -ltnp 'sport = :$2'); set the port env var to another value"
  fi
}

# ------------------------------------------------------------------------ installation

# Debian packages each component needs (clients included: readiness checks use them).
packages_for() {
  case $1 in
    redis | redis-cluster) echo redis-server redis-tools ;;
    mysql) echo mariadb-server mariadb-client ;;
    kafka)
      echo kcat unzip
      command -v "$JAVA" >/dev/null || echo openjdk-17-jre-headless
      command -v mvn >/dev/null || echo maven
      ;;
    # Not a server: what the Rust build needs beyond a C compiler. librdkafka (rdkafka's
    # `ssl` feature, for managed Kafka) links the system's OpenSSL; every script that
    # builds the binaries runs `up` first, which installs these too.
    build) echo pkg-config libssl-dev ;;
  esac
  # TLS mode makes its CA and certificate with the openssl CLI.
  if ((TLS)); then echo openssl; fi
}

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
POLICY_TOUCHED=0
restore_policy_rc() {
  ((POLICY_TOUCHED)) || return 0
  if [[ -n $POLICY_BACKUP ]]; then
    cat "$POLICY_BACKUP" >"$POLICY_RC" && rm -f "$POLICY_BACKUP"
  else
    rm -f "$POLICY_RC"
  fi
  POLICY_TOUCHED=0
}
trap restore_policy_rc EXIT

# install_packages COMPONENT...: apt-get install whatever is missing, in one go.
install_packages() {
  local c p missing=() t0=$EPOCHREALTIME
  for c in "$@"; do
    for p in $(packages_for "$c"); do
      [[ " ${missing[*]} " == *" $p "* ]] && continue
      [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
    done
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "need root to apt-get install ${missing[*]}"
  say "install: apt-get install ${missing[*]}"
  # Debian's postinst would start redis-server on 6379 and mariadb on 3306 and leave them
  # running next to ours. policy-rc.d exiting 101 ("action forbidden") stops invoke-rc.d
  # from starting any service; whatever policy file was there before is put back after.
  if [[ -e $POLICY_RC ]]; then
    POLICY_BACKUP=$(mktemp)
    cat "$POLICY_RC" >"$POLICY_BACKUP"
  fi
  POLICY_TOUCHED=1
  printf '#!/bin/sh\n# temporary, from couponrush local/backends.sh\nexit 101\n' >"$POLICY_RC"
  chmod 755 "$POLICY_RC"
  local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >"$STATE/apt.log" 2>&1 ||
    fail install "$STATE/apt.log" "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 ||
    fail install "$STATE/apt.log" "apt-get install failed"
  restore_policy_rc
  say "install: packages installed in $(since "$t0")"
}

# ------------------------------------------------------------------- TLS material

# tls_make: the CA, the server certificate and the passwords, made once per state dir
# (a dir without the .complete marker is from an interrupted run: made again from scratch).
# Called under the lock.
tls_make() {
  [[ -f $TLS_DIR/.complete ]] && return 0
  command -v openssl >/dev/null || die "tls: openssl not found (\`local/backends.sh up\` installs it)"
  local t0=$EPOCHREALTIME tmp="$STATE/tls.tmp.$$" f
  rm -rf "$tmp" "$TLS_DIR"
  mkdir -p "$tmp"
  chmod 700 "$tmp"
  cat >"$tmp/openssl.cnf" <<'EOF'
# generated by local/backends.sh
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  {
    # RSA: every client and server here takes it (rustls, OpenSSL, Java's PEM keystore).
    openssl req -x509 -new -newkey rsa:2048 -noenc -sha256 -days 3650 \
      -config "$tmp/openssl.cnf" -extensions v3_ca \
      -subj "/O=couponrush e2e/CN=couponrush e2e CA $(openssl rand -hex 4)" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
      # OpenSSL 3 writes unencrypted keys as PKCS#8 ("BEGIN PRIVATE KEY"): what Kafka wants.
      openssl req -new -newkey rsa:2048 -noenc -sha256 -config "$tmp/openssl.cnf" \
        -subj "/O=couponrush e2e/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr" &&
      openssl x509 -req -sha256 -days 3650 -in "$tmp/server.csr" \
        -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -set_serial "0x$(openssl rand -hex 12)" \
        -extfile "$tmp/openssl.cnf" -extensions v3_server -out "$tmp/server.pem" &&
      openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem"
  } >"$STATE/tls-make.log" 2>&1 || fail tls "$STATE/tls-make.log" "making the CA / server certificate with openssl failed"
  grep -q 'BEGIN PRIVATE KEY' "$tmp/server.key" || die "tls: $tmp/server.key is not a PKCS#8 key"
  # Kafka's PEM keystore file: the private key and the certificate chain in one file.
  cat "$tmp/server.key" "$tmp/server.pem" >"$tmp/kafka-keystore.pem"
  # Hex: no escaping needed in URLs, redis ACL rules, SQL or Kafka's --add-scram syntax.
  for f in redis mysql kafka; do openssl rand -hex 24 >"$tmp/$f.password"; done
  # kcat settings for the SASL_SSL listener (readiness checks; by hand: kcat -F FILE).
  cat >"$tmp/kcat.conf" <<EOF
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$TLS_USER
sasl.password=$(<"$tmp/kafka.password")
ssl.ca.location=$TLS_DIR/ca.pem
EOF
  rm -f "$tmp/server.csr"
  chmod 600 "$tmp"/*
  chmod 644 "$tmp/ca.pem" "$tmp/server.pem"
  touch "$tmp/.complete"
  mv "$tmp" "$TLS_DIR"
  rm -f "$STATE/tls-make.log"
  say "tls: CA and server certificate made in $(since "$t0") in $TLS_DIR"
}

# tls_load: the passwords into shell variables; false if the material is not made yet.
tls_load() {
  [[ -f $TLS_DIR/.complete ]] || return 1
  REDIS_PASSWORD=$(<"$TLS_DIR/redis.password")
  MYSQL_PASSWORD=$(<"$TLS_DIR/mysql.password")
  KAFKA_PASSWORD=$(<"$TLS_DIR/kafka.password")
}

# tls_note TEXT: " (TEXT)" in TLS mode, nothing in plain mode (for status lines).
tls_note() {
  if ((TLS)); then printf ' (%s)' "$1"; fi
  return 0
}

# One state dir, one mode: a MariaDB datadir or Kafka storage made in one mode would not
# work in the other (users, passwords, SCRAM credentials, listeners).
check_state_mode() {
  local c
  if ((TLS)); then
    [[ -d $TLS_DIR ]] && return 0
    for c in redis mysql kafka redis-cluster; do
      [[ -d $STATE/$c ]] && die "BACKENDS_TLS=1, but $STATE was used by the plain backends (it has $c/): give TLS mode its own COUPONRUSH_STATE_DIR (and ports)"
    done
  elif [[ -d $TLS_DIR ]]; then
    die "$STATE is a TLS-mode state dir (it has tls/): set BACKENDS_TLS=1, or use another COUPONRUSH_STATE_DIR"
  fi
  return 0
}

# ------------------------------------------------------------------------------ redis

redis_ping() {
  if ((TLS)); then
    # TLS mode: verify the server against our CA, log in as our ACL user (the password via
    # REDISCLI_AUTH, not on the command line).
    [[ "$(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli --tls --cacert "$TLS_DIR/ca.pem" \
      --user "$TLS_USER" -h 127.0.0.1 -p "$1" PING 2>/dev/null)" == PONG ]]
  else
    [[ "$(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null)" == PONG ]]
  fi
}

# write_redis_conf DIR PORT [extra config lines...]
write_redis_conf() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  {
    echo "# generated by local/backends.sh; rewritten on every start"
    echo "port $port"
    echo "bind 127.0.0.1"
    echo "protected-mode no"
    echo "daemonize yes"
    echo "pidfile $dir/redis.pid"
    echo "logfile $dir/redis.log"
    echo "dir $dir"
    # The persistence couponrush requires (README, "Redis durability"): every write is
    # in the append-only file, fsynced before Redis answers, so a crash or restart loses
    # no admission that was acknowledged. No RDB snapshots: the AOF is the record.
    echo 'save ""'
    echo "appendonly yes"
    echo "appendfsync always"
    echo "appenddirname appendonly"
    # Puts the config path (under our state dir) into the process title, so `down` can
    # find a server of ours even without its pid file.
    echo 'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"'
    printf '%s\n' "$@"
  } >"$dir/redis.conf"
}

# start_redis_node DIR PORT: redis-server daemonizes itself and writes its pid file.
start_redis_node() {
  local dir=$1 port=$2 pid
  require_free_port redis "$port"
  redis-server "$dir/redis.conf" 9>&- </dev/null >>"$dir/redis.log" 2>&1 ||
    fail redis "$dir/redis.log" "redis-server on port $port did not start"
  # The pid file appears right after the fork.
  wait_for 5 "" test -s "$dir/redis.pid" || fail redis "$dir/redis.log" "no pid file from redis on $port"
  pid=$(tr -dc '0-9' <"$dir/redis.pid")
  wait_for "$REDIS_START_TIMEOUT" "$pid" redis_ping "$port" ||
    fail redis "$dir/redis.log" "redis on port $port $(why_not "$pid" "$REDIS_START_TIMEOUT" PING)"
}

redis_up() {
  local dir="$STATE/redis" pid t0=$EPOCHREALTIME
  if redis_ping "$REDIS_PORT"; then
    say "redis: already running on 127.0.0.1:$REDIS_PORT$(not_ours "$dir/redis.pid")"
    return 0
  fi
  # Alive but not answering (wedged): replace it.
  if pid=$(live_pid "$dir/redis.pid"); then stop_pids redis "$pid"; fi
  if ((TLS)); then
    # No plaintext port; clients are not asked for certificates but must AUTH as our ACL
    # user: the default user (no password) is off.
    write_redis_conf "$dir" 0 \
      "tls-port $REDIS_PORT" \
      "tls-cert-file $TLS_DIR/server.pem" \
      "tls-key-file $TLS_DIR/server.key" \
      "tls-ca-cert-file $TLS_DIR/ca.pem" \
      "tls-auth-clients no" \
      "user default off" \
      "user $TLS_USER on >$REDIS_PASSWORD ~* &* +@all"
    chmod 600 "$dir/redis.conf"
  else
    write_redis_conf "$dir" "$REDIS_PORT"
  fi
  start_redis_node "$dir" "$REDIS_PORT"
  say "redis: up in $(since "$t0") on 127.0.0.1:$REDIS_PORT$(tls_note "TLS, ACL user $TLS_USER")"
}

redis_down() { stop_dir redis "$STATE/redis"; }

redis_status() {
  local pid
  pid=$(live_pid "$STATE/redis/redis.pid") || pid=""
  if command -v redis-cli >/dev/null && redis_ping "$REDIS_PORT"; then
    say "redis: running${pid:+ (pid $pid)}, answering PING on 127.0.0.1:$REDIS_PORT$(tls_note "TLS, user $TLS_USER")"
  else
    say "redis: down${pid:+ (pid $pid alive but not answering)}"
    return 1
  fi
}

# ---------------------------------------------------------------------- redis-cluster

cluster_ok() {
  local port
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" CLUSTER INFO 2>/dev/null)" == *cluster_state:ok* ]] || return 1
  done
}

redis_cluster_up() {
  local base="$STATE/redis-cluster" port nodes=() t0=$EPOCHREALTIME
  ((${#REDIS_CLUSTER_PORTS[@]} >= 3)) || die "redis-cluster: needs at least 3 ports in REDIS_CLUSTER_PORTS"
  if cluster_ok; then
    say "redis-cluster: already running on ports ${REDIS_CLUSTER_PORTS[*]}"
    return 0
  fi
  # Partly up or broken: a fresh cluster is simpler and faster than repairing one (the
  # data is throwaway), so stop what is left and start from empty node dirs.
  stop_dir redis-cluster "$base" >/dev/null
  rm -rf "$base"
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do
    write_redis_conf "$base/$port" "$port" \
      "cluster-enabled yes" \
      "cluster-config-file $base/$port/nodes.conf" \
      "cluster-node-timeout 5000"
    start_redis_node "$base/$port" "$port"
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$base/create.log" 2>&1 ||
    fail redis-cluster "$base/create.log" "redis-cli --cluster create failed"
  # Slots are assigned at once, but each node reports cluster_state:ok only after the
  # gossip has reached it.
  wait_for "$REDIS_START_TIMEOUT" "" cluster_ok ||
    fail redis-cluster "$base/create.log" "cluster_state did not become ok within ${REDIS_START_TIMEOUT}s"
  say "redis-cluster: up in $(since "$t0") on ports ${REDIS_CLUSTER_PORTS[*]}"
}

redis_cluster_down() { stop_dir redis-cluster "$STATE/redis-cluster"; }

redis_cluster_status() {
  if command -v redis-cli >/dev/null && cluster_ok; then
    say "redis-cluster: running, cluster_state:ok on ports ${REDIS_CLUSTER_PORTS[*]}"
  else
    say "redis-cluster: down"
    return 1
  fi
}

# ------------------------------------------------------------------------------ mysql

mysql_root() {
  mariadb --no-defaults --user=root --socket="$STATE/mysql/mysqld.sock" --connect-timeout=2 "$@"
}

# The check that matters to the Rust code: the app user, over TCP, on the real port.
mysql_ping() {
  if ((TLS)); then
    # TLS mode: over TLS, verifying the certificate and its name (127.0.0.1) against our CA.
    [[ "$(MYSQL_PWD=$MYSQL_PASSWORD mariadb --no-defaults --protocol=TCP --host=127.0.0.1 \
      --port="$MYSQL_PORT" --user="$MYSQL_USER" --connect-timeout=2 \
      --ssl --ssl-verify-server-cert --ssl-ca="$TLS_DIR/ca.pem" \
      --batch --skip-column-names -e 'SELECT 1' 2>/dev/null)" == 1 ]]
    return
  fi
  [[ "$(mariadb --no-defaults --protocol=TCP --host=127.0.0.1 --port="$MYSQL_PORT" \
    --user="$MYSQL_USER" --password="$MYSQL_PASSWORD" --connect-timeout=2 \
    --batch --skip-column-names -e 'SELECT 1' 2>/dev/null)" == 1 ]]
}

mysql_root_ping() { mysql_root --batch --skip-column-names -e 'SELECT 1' >/dev/null 2>&1; }

write_mysql_conf() {
  local dir="$STATE/mysql"
  mkdir -p "$dir"
  cat >"$dir/my.cnf" <<EOF
# generated by local/backends.sh; rewritten on every start
[mariadbd]
# Running as root is fine for a throwaway loopback server and avoids chown games.
user=root
datadir=$dir/data
socket=$dir/mysqld.sock
pid-file=$dir/mysqld.pid
log-error=$dir/mysqld.log
port=$MYSQL_PORT
bind-address=127.0.0.1
skip-name-resolve
# The SQL must also run on MySQL 8: use MySQL 8's default sql_mode, which is stricter than
# MariaDB's (ONLY_FULL_GROUP_BY, NO_ZERO_DATE, ...), so non-portable SQL fails here too.
sql_mode=ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
max_connections=500
# Small test box (2 cores, shared with Kafka and the tests): modest buffers.
innodb_buffer_pool_size=256M
innodb_log_file_size=128M
# Kept at 1 (fsync per commit, like production) so timings and crash behaviour seen in
# tests are honest; 2 would be faster but would hide the real cost of each commit.
innodb_flush_log_at_trx_commit=1
performance_schema=OFF
EOF
  if ((TLS)); then
    cat >>"$dir/my.cnf" <<EOF
# TLS mode: TCP clients must use TLS (the root socket counts as secure and still works).
ssl_cert=$TLS_DIR/server.pem
ssl_key=$TLS_DIR/server.key
ssl_ca=$TLS_DIR/ca.pem
require_secure_transport=ON
EOF
  fi
}

mysql_bootstrap_sql() {
  # TLS mode: the same database and grants; the user may only connect over TLS, and its
  # password (generated per state dir) is set again on every start.
  local require="" alter=""
  if ((TLS)); then
    require=" REQUIRE SSL"
    alter="ALTER USER '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD'$require;
ALTER USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD'$require;"
  fi
  cat <<EOF
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\`;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD'$require;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD'$require;
$alter
-- ON *.*: tests create and drop their own fresh databases.
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'%';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost';
-- Anonymous accounts would shadow ours for some hosts.
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
EOF
}

mysql_up() {
  local dir="$STATE/mysql" pid t0=$EPOCHREALTIME t1
  if mysql_ping; then
    say "mysql: already running on 127.0.0.1:$MYSQL_PORT$(not_ours "$dir/mysqld.pid")"
    return 0
  fi
  if pid=$(live_pid "$dir/mysqld.pid"); then stop_pids mysql "$pid"; fi
  require_free_port mysql "$MYSQL_PORT"
  write_mysql_conf
  # A datadir without our marker is from an interrupted init: start it over.
  if [[ ! -f $dir/data/.couponrush-initialised ]]; then
    t1=$EPOCHREALTIME
    rm -rf "$dir/data"
    mariadb-install-db --defaults-file="$dir/my.cnf" --user=root --skip-test-db \
      --auth-root-authentication-method=socket >"$dir/install-db.log" 2>&1 ||
      fail mysql "$dir/install-db.log" "mariadb-install-db failed"
    touch "$dir/data/.couponrush-initialised"
    say "mysql: datadir initialised in $(since "$t1")"
  fi
  # setsid: own session, so a Ctrl-C or a process-group kill aimed at the caller does not
  # take the server down with it. fd 9 (our lock) must not be inherited.
  setsid mariadbd --defaults-file="$dir/my.cnf" 9>&- </dev/null >>"$dir/mysqld.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/mysqld.pid"
  wait_for "$MYSQL_START_TIMEOUT" "$pid" mysql_root_ping ||
    fail mysql "$dir/mysqld.log" "mariadbd $(why_not "$pid" "$MYSQL_START_TIMEOUT" "SELECT 1 (root, on its socket)")"
  mysql_bootstrap_sql | mysql_root >"$dir/bootstrap.log" 2>&1 ||
    fail mysql "$dir/bootstrap.log" "creating database/user failed"
  wait_for 10 "$pid" mysql_ping ||
    fail mysql "$dir/mysqld.log" "user $MYSQL_USER cannot run SELECT 1 over 127.0.0.1:$MYSQL_PORT"
  say "mysql: up in $(since "$t0") on 127.0.0.1:$MYSQL_PORT$(tls_note "TLS required, user $MYSQL_USER REQUIRE SSL")"
}

mysql_down() { stop_dir mysql "$STATE/mysql"; }

mysql_status() {
  local pid
  pid=$(live_pid "$STATE/mysql/mysqld.pid") || pid=""
  if command -v mariadb >/dev/null && mysql_ping; then
    say "mysql: running${pid:+ (pid $pid)}, $MYSQL_USER answers SELECT 1 on 127.0.0.1:$MYSQL_PORT$(tls_note "over TLS")"
  else
    say "mysql: down${pid:+ (pid $pid alive but not answering)}"
    return 1
  fi
}

# ------------------------------------------------------------------------------ kafka

# Download the broker jars once per version into a cache outside the repo (shared by all
# checkouts; ~100 MB) with Maven's dependency plugin and the pom in local/backends/.
kafka_fetch_libs() {
  [[ -f $KAFKA_HOME/.complete ]] && return 0
  command -v mvn >/dev/null || die "kafka: mvn not found"
  local t0=$EPOCHREALTIME tmp="$KAFKA_HOME/libs.tmp.$$" core listing
  mkdir -p "$KAFKA_HOME"
  rm -rf "$tmp"
  say "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  mvn -B -q -f "$HERE/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" >"$KAFKA_HOME/mvn.log" 2>&1 ||
    fail kafka "$KAFKA_HOME/mvn.log" "mvn dependency:copy-dependencies failed"
  # Both entry points must really be in kafka_2.13 (StorageTool moved in some versions).
  core="$tmp/kafka_2.13-$KAFKA_VERSION.jar"
  [[ -f $core ]] || die "kafka: $core missing after mvn"
  # (listing captured first: `unzip | grep -q` would trip pipefail on SIGPIPE)
  listing=$(unzip -l "$core")
  grep -q ' kafka/Kafka.class$' <<<"$listing" || die "kafka: kafka.Kafka not in $core"
  grep -q ' kafka/tools/StorageTool.class$' <<<"$listing" || die "kafka: kafka.tools.StorageTool not in $core"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  touch "$KAFKA_HOME/.complete"
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars fetched in $(since "$t0")"
}

# The listener part of server.properties in TLS mode.
kafka_tls_listeners() {
  cat <<EOF
# TLS mode: SASL_SSL (SCRAM-SHA-512) for clients, SSL (server-authenticated, no client
# certificates) for clients and between brokers, CONTROLLER plaintext on loopback.
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# PEM key (PKCS#8, unencrypted) + certificate in one file; the CA as the trust store.
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/kafka-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.client.auth=none
ssl.endpoint.identification.algorithm=https
EOF
}

write_kafka_conf() {
  local dir="$STATE/kafka" listeners
  mkdir -p "$dir"
  if ((TLS)); then
    listeners=$(kafka_tls_listeners)
  else
    listeners="listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  fi
  {
    echo "# generated by local/backends.sh from local/backends/kafka-node.properties; rewritten on every start"
    cat "$HERE/kafka-node.properties"
    echo "controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT"
    echo "$listeners"
    echo "log.dirs=$dir/data"
    echo "num.partitions=$KAFKA_PARTITIONS"
  } >"$dir/server.properties"
}

# A real metadata request that must list our broker, not just an open port.
kafka_ready() {
  port_open "$KAFKA_PORT" || return 1
  if ((TLS)); then
    # TLS mode: over SASL_SSL as our SCRAM user, verifying the broker against our CA.
    [[ "$(kcat -F "$TLS_DIR/kcat.conf" -b "127.0.0.1:$KAFKA_PORT" -L -m 3 2>/dev/null)" == *"broker 1 at 127.0.0.1:$KAFKA_PORT"* ]]
    return
  fi
  # (output captured, not piped into grep -q: with many topics kcat would get SIGPIPE and
  # pipefail would call a healthy broker down)
  [[ "$(kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 3 2>/dev/null)" == *"broker 1 at 127.0.0.1:$KAFKA_PORT"* ]]
}

kafka_up() {
  local dir="$STATE/kafka" pid t0=$EPOCHREALTIME t1 id
  if kafka_ready; then
    say "kafka: already running on 127.0.0.1:$KAFKA_PORT$(not_ours "$dir/kafka.pid")"
    return 0
  fi
  if pid=$(live_pid "$dir/kafka.pid"); then stop_pids kafka "$pid"; fi
  require_free_port kafka "$KAFKA_PORT"
  require_free_port kafka-controller "$KAFKA_CONTROLLER_PORT"
  if ((TLS)); then require_free_port kafka-ssl "$KAFKA_SSL_PORT"; fi
  kafka_fetch_libs
  write_kafka_conf
  cp "$HERE/kafka-log4j.properties" "$dir/log4j.properties"
  local format_args=()
  if ((TLS)); then
    # The SCRAM credential goes into the metadata log when the storage is formatted; if
    # the password has changed since (tls/ made anew), the storage is formatted afresh.
    local scram
    scram=$(printf '%s' "$TLS_USER:$KAFKA_PASSWORD" | sha256sum | cut -d' ' -f1)
    if [[ -f $dir/data/meta.properties && "$(cat "$dir/scram.sha256" 2>/dev/null)" != "$scram" ]]; then
      say "kafka: SCRAM password differs from the one the storage was formatted with: formatting afresh"
      rm -rf "$dir/data" "$dir/scram.sha256"
    fi
    format_args=(--add-scram "SCRAM-SHA-512=[name=$TLS_USER,password=$KAFKA_PASSWORD]")
  fi
  # Format the storage once; the cluster id is kept next to the data.
  if [[ ! -f $dir/data/meta.properties ]]; then
    t1=$EPOCHREALTIME
    [[ -s $dir/cluster.id ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/cluster.id"
    id=$(<"$dir/cluster.id")
    "$JAVA" -Xmx256m -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$KAFKA_LIBS/*" \
      kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" --ignore-formatted \
      "${format_args[@]}" >"$dir/format.log" 2>&1 || fail kafka "$dir/format.log" "StorageTool format failed"
    if ((TLS)); then printf '%s\n' "$scram" >"$dir/scram.sha256"; fi
    say "kafka: storage formatted in $(since "$t1")"
  fi
  # setsid: own session (see mysql_up); $! is the java process itself.
  setsid "$JAVA" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    9>&- </dev/null >>"$dir/kafka.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/kafka.pid"
  wait_for "$KAFKA_START_TIMEOUT" "$pid" kafka_ready ||
    fail kafka "$dir/kafka.log" "broker $(why_not "$pid" "$KAFKA_START_TIMEOUT" "a metadata request")"
  say "kafka: up in $(since "$t0") on 127.0.0.1:$KAFKA_PORT$(tls_note "SASL_SSL SCRAM-SHA-512; SSL on 127.0.0.1:$KAFKA_SSL_PORT")"
}

kafka_down() { stop_dir kafka "$STATE/kafka"; }

kafka_status() {
  local pid
  pid=$(live_pid "$STATE/kafka/kafka.pid") || pid=""
  if command -v kcat >/dev/null && kafka_ready; then
    say "kafka: running${pid:+ (pid $pid)}, answering metadata on 127.0.0.1:$KAFKA_PORT$(tls_note "SASL_SSL, user $TLS_USER")"
  else
    say "kafka: down${pid:+ (pid $pid alive but not answering)}"
    return 1
  fi
}

# ------------------------------------------------------------------------------- main

# export_q NAME VALUE: an `export` line that sh and bash can eval, the value in single
# quotes (so a multi-line PEM stays one value).
export_q() {
  local q="'\\''"
  printf "export %s='%s'\n" "$1" "${2//\'/$q}"
}

print_tls_env() {
  local ca
  ca=$(<"$TLS_DIR/ca.pem")
  export_q REDIS_URL "rediss://$TLS_USER:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT"
  export_q REDIS_CA_PEM "$ca"
  export_q DATABASE_URL "mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/$MYSQL_DB?ssl-mode=VERIFY_IDENTITY"
  export_q DATABASE_CA_PEM "$ca"
  export_q KAFKA_BROKERS "127.0.0.1:$KAFKA_PORT"
  export_q KAFKA_SECURITY_PROTOCOL SASL_SSL
  export_q KAFKA_SASL_MECHANISM SCRAM-SHA-512
  export_q KAFKA_SASL_USERNAME "$TLS_USER"
  export_q KAFKA_SASL_PASSWORD "$KAFKA_PASSWORD"
  export_q KAFKA_CA_PEM "$ca"
  export_q KAFKA_SSL_BROKERS "127.0.0.1:$KAFKA_SSL_PORT"
  export_q BACKENDS_CA_FILE "$TLS_DIR/ca.pem"
}

print_env() {
  local urls=() port
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do urls+=("redis://127.0.0.1:$port"); done
  say "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  say "export REDIS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")"
  say "export DATABASE_URL=mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/$MYSQL_DB"
  say "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
}

# component name -> function prefix
fn() { echo "${1//-/_}_$2"; }

# Serialise up/down between concurrent callers (e.g. parallel test binaries), so two of
# them never start the same server twice.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "could not lock $STATE/.lock"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 2
}

main() {
  local cmd=${1:-} c rc=0 comps=()
  [[ -n $cmd ]] || usage
  shift
  for c in "$@"; do
    if ((TLS)) && [[ $c == redis-cluster ]]; then
      die "redis-cluster has no TLS mode: with BACKENDS_TLS=1 only the single-node redis component runs (unset BACKENDS_TLS for the plain cluster)"
    fi
    [[ " ${ALL_COMPONENTS[*]} " == *" $c "* ]] || die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
    comps+=("$c")
  done
  # TLS mode: status/down/kill use the passwords if the material is there (without it
  # nothing of ours can be running).
  if ((TLS)); then tls_load || true; fi
  case $cmd in
    up)
      ((${#comps[@]})) || comps=("${DEFAULT_COMPONENTS[@]}")
      take_lock
      check_state_mode
      install_packages "${comps[@]}" build
      if ((TLS)); then tls_make && tls_load; fi
      for c in "${comps[@]}"; do "$(fn "$c" up)"; done
      ;;
    down | stop)
      # Without arguments: everything, including a redis-cluster that was started.
      ((${#comps[@]})) || comps=("${ALL_COMPONENTS[@]}")
      take_lock
      for c in "${comps[@]}"; do "$(fn "$c" down)"; done
      ;;
    restart)
      ((${#comps[@]})) || comps=("${DEFAULT_COMPONENTS[@]}")
      take_lock
      for c in "${comps[@]}"; do "$(fn "$c" down)"; done
      check_state_mode
      install_packages "${comps[@]}" build
      if ((TLS)); then tls_make && tls_load; fi
      for c in "${comps[@]}"; do "$(fn "$c" up)"; done
      ;;
    status)
      if ((${#comps[@]})); then
        for c in "${comps[@]}"; do "$(fn "$c" status)" || rc=1; done
      else
        for c in "${DEFAULT_COMPONENTS[@]}"; do "$(fn "$c" status)" || rc=1; done
        # Not requested by default: mention it only when it runs.
        if [[ -d $STATE/redis-cluster ]] && command -v redis-cli >/dev/null && cluster_ok; then
          redis_cluster_status
        fi
      fi
      return "$rc"
      ;;
    kill | pause | resume)
      ((${#comps[@]})) || die "$cmd: name the components"
      local sig=KILL f p
      [[ $cmd == pause ]] && sig=STOP
      [[ $cmd == resume ]] && sig=CONT
      for c in "${comps[@]}"; do
        for f in "$STATE/$c"/*.pid "$STATE/$c"/*/*.pid; do
          [[ -e $f ]] || continue
          if p=$(live_pid "$f"); then
            kill "-$sig" "$p"
            say "$c: sent SIG$sig to $p"
          fi
        done
      done
      ;;
    env)
      if ((TLS)); then
        # Made here if `up` has not run yet, so `env` works first, like in plain mode.
        if ! tls_load; then
          take_lock
          check_state_mode
          tls_make >&2
          tls_load
        fi
        print_tls_env
      else
        print_env
      fi
      ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (up|status|down|env|stop|restart|kill|pause|resume)" ;;
  esac
}

main "$@"
