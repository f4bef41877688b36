# Stator's three images, one target each (see docs/images.md):
#
#   docker build --target sidecar   -t ghcr.io/stator/stator-sidecar:0.1.0 .
#   docker build --target operator  -t ghcr.io/stator/stator-operator:0.1.0 .
#   docker build --target wordcount -t ghcr.io/stator/stator-wordcount:0.1.0 .
#
# The version in the tags is the workspace's (Cargo.toml), which the chart's appVersion and the examples
# follow. The runtime is Debian 12 slim: glibc and libstdc++ (RocksDB is C++) and CA certificates for S3
# over TLS, nothing else; no compiler, no cargo. Every image runs as the numeric non-root user 65532 and
# needs no writable path outside its volumes, so it runs with a read-only root filesystem.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
# Where the binaries come from: the `build` stage below compiles them; scripts/images passes an image
# holding the workspace's own release build instead, so that CI compiles nothing twice.
ARG BINARIES=build

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Without the workspace profile's line tables: the images carry no debug information.
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false
RUN cargo build --release --locked -p stator-sidecar -p stator-operator -p stator-wordcount \
 && mkdir -p /out \
 && cp target/release/stator-sidecar target/release/stator-inspect target/release/stator-operator \
       target/release/stator-wordcount /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /var/lib/stator /var/run/stator /etc/stator \
 && chown 65532:65532 /var/lib/stator /var/run/stator
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.vendor="Stator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/stator/stator" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
USER 65532:65532

FROM runtime AS sidecar
LABEL org.opencontainers.image.title="stator-sidecar" \
      org.opencontainers.image.description="Stator's state store: keyed state in RocksDB over a Unix socket, checkpoints and savepoints to S3"
COPY --from=binaries /out/stator-sidecar /out/stator-inspect /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stator-sidecar"]

FROM runtime AS operator
LABEL org.opencontainers.image.title="stator-operator" \
      org.opencontainers.image.description="Stator's Kubernetes operator for StreamJobs"
COPY --from=binaries /out/stator-operator /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stator-operator"]
CMD ["run"]

FROM runtime AS wordcount
LABEL org.opencontainers.image.title="stator-wordcount" \
      org.opencontainers.image.description="Stator's example app: an exactly-once keyed word count"
COPY --from=binaries /out/stator-wordcount /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/stator-wordcount"]
CMD ["run"]
