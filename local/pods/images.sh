#!/usr/bin/env bash
# local/pods/images.sh — every image the real-pods tier runs, built on this machine (no image
# registry is reachable here), each cached by the content it is made from.
#
#   local/pods/images.sh build   build what is missing; prints `name=image` lines on stdout
#   local/pods/images.sh list    the same lines, building nothing (fails if one is missing)
#
# Images (tags are couponrush.local/<name>:<key>, key = a hash of every input):
#   debian     Debian bookworm minbase by debootstrap from the mirror apt already uses
#   rust       debian + this machine's Rust toolchain + gcc/make   (RUST_IMAGE of the Dockerfile)
#   runtime    glibc, libgcc_s, CA certificates, user 65532        (RUNTIME_IMAGE of the Dockerfile)
#   couponrush the repository's Dockerfile with those two         (operator, issuer, consumer)
#   redis, mariadb, kafka   the backends, from Debian packages and the cached Kafka jars
#   pause, coredns          static binaries from local/cluster/build.sh node, FROM scratch
# A second run with the same inputs builds nothing (`docker image inspect` finds the tag);
# the couponrush image is rebuilt when a source file changes, and then only the workspace
# crates recompile (BuildKit cache mounts keep the registry and target dir).
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/couponrush"
eval "$("$HERE/engine.sh" env)"
export DOCKER_HOST DOCKER_BUILDKIT
SUITE=bookworm
BASE_PACKAGES=ca-certificates
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
d() { "$DOCKER" "$@"; }
have() { d image inspect "$1" >/dev/null 2>&1; }
hash_of() { sha256sum | cut -c1-12; }
files_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | hash_of; }

mirror() { # the Debian mirror apt uses (deb822 or one-line sources)
  local m
  m="$(grep -hE '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')"
  [[ -n "$m" ]] || m="$(grep -hE "^deb .* $SUITE main" /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')"
  echo "${m:-http://deb.debian.org/debian}"
}

debian_image() {
  local key tag root
  key="$(printf '%s %s %s\n' "$SUITE" "$(mirror)" "$BASE_PACKAGES" | hash_of)"
  tag="couponrush.local/debian:$SUITE-$key"
  if ! have "$tag"; then
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
    root="$(mktemp -d)"
    log "debian: debootstrap $SUITE from $(mirror) ..."
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
      || { tail -n 20 "$root.log" >&2; die "debootstrap failed"; }
    # apt inside image builds: no recommends, no caches kept in layers.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90couponrush"
    tar -C "$root" -c . | d import - "$tag" >/dev/null
    rm -rf "$root" "$root.log"
  fi
  echo "$tag"
}

# build <name> <key> <docker build args...>: build couponrush.local/<name>:<key> unless it exists.
build() {
  local name="$1" key="$2" tag; shift 2
  tag="couponrush.local/$name:$key"
  if ! have "$tag"; then
    log "$name: building $tag ..."
    local t0=$SECONDS
    d build --network host -t "$tag" "$@" >"$STATE_LOGS/$name.log" 2>&1 \
      || { tail -n 30 "$STATE_LOGS/$name.log" >&2; die "$name: docker build failed (log: $STATE_LOGS/$name.log)"; }
    log "$name: built in $((SECONDS - t0))s"
  fi
  echo "$tag"
}

toolchain_dir() { dirname "$(dirname "$(rustup which rustc 2>/dev/null || command -v rustc)")"; }

rust_image() { # the host toolchain's bin/ and lib/ as the build context (no docs)
  local base="$1" tc key
  tc="$(toolchain_dir)"
  local extra_ca=/usr/local/share/ca-certificates
  key="$( { rustc --version; cat "$HERE/images/rust/Dockerfile" "$extra_ca"/*.crt 2>/dev/null; echo "$base"; } | hash_of)"
  if have "couponrush.local/rust:$key"; then echo "couponrush.local/rust:$key"; return; fi
  local ctx; ctx="$(mktemp -d)"
  mkdir -p "$ctx/ca"
  cp "$HERE/images/rust/Dockerfile" "$ctx/"
  cp "$extra_ca"/*.crt "$ctx/ca/" 2>/dev/null || true
  tar -C "$tc" -c bin lib -C "$ctx" Dockerfile ca \
    | build rust "$key" --build-arg "BASE_IMAGE=$base" -
  rm -rf "$ctx"
}

couponrush_image() { # the repository's Dockerfile; key: every file of its build context
  local rust="$1" runtime="$2" key
  # The files .dockerignore lets through (it keeps sources and manifests only).
  key="$( { cd "$ROOT" && git ls-files -co --exclude-standard \
              | grep -vE '^(\.git|\.ci|charts|examples|target|\.state|issuer/fuzz)/|^(\.gitignore|\.dockerignore)$|\.md$|\.swp$' \
              | grep -vE '^(e2e|local|bench)/' ; git ls-files -co --exclude-standard e2e/Cargo.toml e2e/src; } \
          | sort -u | while read -r f; do [[ -f "$ROOT/$f" ]] && echo "$f"; done \
          | (cd "$ROOT" && xargs -d '\n' sha256sum) | { cat; cat "$ROOT/Dockerfile"; echo "$rust $runtime"; } | hash_of)"
  build couponrush "$key" --build-arg "RUST_IMAGE=$rust" --build-arg "RUNTIME_IMAGE=$runtime" \
    -f "$ROOT/Dockerfile" "$ROOT"
}

kafka_image() {
  local base="$1" ctx key
  [[ -f "$CACHE/kafka-$KAFKA_VERSION/.complete" ]] \
    || die "Kafka $KAFKA_VERSION jars missing in $KAFKA_LIBS (local/backends.sh up kafka fetches them)"
  key="$( { files_hash "$HERE/images/kafka"; cat "$ROOT"/local/backends/kafka-*.properties; ls "$KAFKA_LIBS"; echo "$base"; } | hash_of)"
  if have "couponrush.local/kafka:$key"; then echo "couponrush.local/kafka:$key"; return; fi
  ctx="$(mktemp -d)"
  cp -a "$HERE/images/kafka/." "$ctx/"
  cp -a "$KAFKA_LIBS" "$ctx/libs"
  cp "$ROOT/local/backends/kafka-log4j.properties" "$ctx/log4j.properties"
  cp "$ROOT/local/backends/kafka-node.properties" "$ctx/node.properties"
  build kafka "$key" --build-arg "BASE_IMAGE=$base" "$ctx"
  rm -rf "$ctx"
}

scratch_image() { # scratch_image <name> <static binary>
  local name="$1" bin="$2" ctx key
  [[ -x "$bin" ]] || die "$name: $bin not built (local/cluster/build.sh node)"
  key="$( { sha256sum <"$bin"; cat "$HERE/images/$name/Dockerfile"; } | hash_of)"
  if have "couponrush.local/$name:$key"; then echo "couponrush.local/$name:$key"; return; fi
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/$name"
  cp "$HERE/images/$name/Dockerfile" "$ctx/"
  build "$name" "$key" "$ctx"
  rm -rf "$ctx"
}

all() {
  STATE_LOGS="${COUPONRUSH_STATE_DIR:-$ROOT/.state}/images"
  mkdir -p "$STATE_LOGS"
  # Each image is assigned before it is printed: a failed build then stops the script.
  local base rust runtime couponrush redis mariadb kafka pause coredns bin_dir
  base="$(debian_image)"
  rust="$(rust_image "$base")"
  runtime="$(build runtime "$( { files_hash "$HERE/images/runtime"; echo "$base"; } | hash_of)" \
    --build-arg "BASE_IMAGE=$base" "$HERE/images/runtime")"
  couponrush="$(couponrush_image "$rust" "$runtime")"
  redis="$(build redis "$( { files_hash "$HERE/images/redis"; echo "$base"; } | hash_of)" \
    --build-arg "BASE_IMAGE=$base" "$HERE/images/redis")"
  mariadb="$(build mariadb "$( { files_hash "$HERE/images/mariadb"; echo "$base"; } | hash_of)" \
    --build-arg "BASE_IMAGE=$base" "$HERE/images/mariadb")"
  kafka="$(kafka_image "$base")"
  bin_dir="$("$ROOT/local/cluster/build.sh" print-bin-dir)"
  pause="$(scratch_image pause "$bin_dir/pause")"
  coredns="$(scratch_image coredns "$bin_dir/coredns")"
  printf '%s\n' "couponrush=$couponrush" "redis=$redis" "mariadb=$mariadb" "kafka=$kafka" \
    "pause=$pause" "coredns=$coredns"
}

case "${1:-}" in
  build) "$HERE/engine.sh" up; all ;;
  list) "$HERE/engine.sh" status || die "no docker daemon answers (local/pods/engine.sh up)"; have() { d image inspect "$1" >/dev/null 2>&1 || die "$1 not built"; }; all ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; [[ "${1:-}" =~ ^(-h|--help|help)$ ]] ;;
esac
