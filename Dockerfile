# One image with the three couponrush binaries:
#   /usr/local/bin/couponrush-operator  (the ENTRYPOINT)
#   /usr/local/bin/couponrush-issuer
#   /usr/local/bin/couponrush-consumer
# The issuer and consumer Deployments set `command` to their binary.
#
#   DOCKER_BUILDKIT=1 docker build -t ghcr.io/couponrush/couponrush:0.1.0 .
#
# The two base images are build arguments so that a machine without an image registry can
# name images it built itself (local/pods/images.sh does: a Rust toolchain on a debootstrap
# base, and a distroless-like runtime with glibc, libgcc_s, CA certificates and a nonroot
# user). The defaults are the public images.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# librdkafka is built from source by rdkafka-sys (make + gcc) and needs zlib, and
# OpenSSL's headers for TLS to managed Kafka (the runtime image has libssl3).
# LIBZ_SYS_STATIC=1 links zlib statically, so the binaries need no libz.so.1 in the runtime
# image (the check below fails the build if they do). The release profile keeps line tables
# for the benchmark's flame graphs; the image does not need them (strip: 270 MB -> tens).
RUN command -v cc && test -e /usr/include/zlib.h && test -e /usr/include/openssl/ssl.h \
 || (apt-get update && apt-get install -y --no-install-recommends zlib1g-dev libssl-dev pkg-config \
     && rm -rf /var/lib/apt/lists/*)
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p couponrush-operator -p couponrush-issuer -p couponrush-consumer \
 && mkdir -p /out \
 && cp target/release/couponrush-operator target/release/couponrush-issuer \
       target/release/couponrush-consumer /out/ \
 && strip --strip-debug /out/* \
 && ! ldd /out/* | grep -E 'libz\.so|not found'

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/couponrush-operator /out/couponrush-issuer /out/couponrush-consumer /usr/local/bin/
USER 65532:65532
EXPOSE 9443
ENTRYPOINT ["/usr/local/bin/couponrush-operator"]
