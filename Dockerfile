# syntax=docker/dockerfile:1.7
#
# One image for every Tally service: `tally serve ingest|rating|invoicing|payments`,
# `tally migrate`, `tally keys …`. Build it with `make image` (or
# `docker build -t tally:local .`); docker-compose.yml and the Helm chart run it.
#
# Build arguments:
#   RUST_VERSION               the toolchain (the workspace needs 1.94 or newer)
#   GRPC_HEALTH_PROBE_VERSION  the gRPC health-check client used by docker-compose's
#                              health checks (Kubernetes probes use its built-in gRPC probe)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the release binary ------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# protoc is vendored (protoc-bin-vendored) and TLS is rustls with aws-lc-rs, built by
# the C compiler the rust image already has: no extra system packages are needed.
COPY . .
# The registry and target directories are cache mounts, so the binary is copied out
# in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tally-cli --bin tally \
 && install -D -m 0755 target/release/tally /out/tally \
 && /out/tally --version

# ---- probe: grpc_health_probe for container health checks ---------------------------
FROM golang:1.24-${DEBIAN_RELEASE} AS probe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.42
# A newer Go is fetched automatically if the probe's go.mod asks for one.
ENV CGO_ENABLED=0 GOTOOLCHAIN=auto GOBIN=/out
RUN go install "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"

# ---- runtime ------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tally" \
      org.opencontainers.image.description="Tally usage-based billing: ingest, rating, invoicing and payments services, migrations and the tally CLI" \
      org.opencontainers.image.source="https://github.com/tally-billing/tally" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ca-certificates: TLS to Cloud SQL / AlloyDB, Pub/Sub, Stripe and the OTLP endpoint.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 tally \
 && useradd --uid 10001 --gid tally --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tally

COPY --from=build /out/tally /usr/local/bin/tally
COPY --from=probe /out/grpc-health-probe /usr/local/bin/grpc_health_probe

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# Inside a container the services must listen on every interface (the default is
# 127.0.0.1); gRPC on 50051, the payments webhook endpoint on 8080.
ENV TALLY_GRPC__LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 8080
ENTRYPOINT ["tally"]
CMD ["--help"]
