# syntax=docker/dockerfile:1
#
# wspulse container image.
#
#   docker build -t wspulse:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#       -e WSPULSE_UPSTREAM__URL=ws://host.docker.internal:9000 wspulse:dev
#
# Linted by hadolint in .ci/deploy-check. Kubernetes examples: deploy/kubernetes/.

# ---------------------------------------------------------------------------
# Build stage
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependency layer: build every dependency against a dummy main.rs, so that a
# change under src/ reuses this layer and only recompiles wspulse itself.
# It is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked \
    && rm -rf src

# Real build. COPY keeps the mtimes the files have in the build context, which
# can be older than the dummy's build outputs: for a crate that is only a
# main.rs, cargo would then take it for fresh and ship the dummy. Removing the
# wspulse fingerprints and outputs forces the rebuild whatever the mtimes;
# --version proves that the real binary came out.
COPY src ./src
RUN rm -rf target/release/.fingerprint/wspulse-* \
           target/release/deps/wspulse-* \
           target/release/wspulse \
           target/release/wspulse.d \
    && cargo build --release --locked \
    && test -n "$(./target/release/wspulse --version)"

# ---------------------------------------------------------------------------
# Runtime stage
#
# distroless "cc": glibc, libgcc, CA certificates (for wss:// upstreams),
# a non-root user (uid/gid 65532), and nothing else: no shell, no package
# manager, no curl. That is why there is no HEALTHCHECK: Docker runs a
# HEALTHCHECK command inside the image, and there is none to run. Probe the
# admin port from outside instead, as the kubelet does in deploy/kubernetes/:
#   liveness   GET :9090/healthz   200 while the process runs
#   readiness  GET :9090/readyz    200 while accepting, 503 while draining
# (a debian-slim base plus curl would allow a HEALTHCHECK, at the price of a
# shell and a package manager in every pod; orchestrators ignore HEALTHCHECK).
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="wspulse" \
      org.opencontainers.image.description="WebSocket reverse-proxy sidecar that classifies and counts how sessions end" \
      org.opencontainers.image.source="https://github.com/wspulse/wspulse"

COPY --from=builder /build/target/release/wspulse /usr/local/bin/wspulse
COPY deploy/docker/wspulse.toml /etc/wspulse/wspulse.toml

# Listen on all interfaces inside the container (the built-in defaults are
# loopback only). Environment variables win over the config file: to move a
# port, change these, not only the file.
ENV WSPULSE_LISTEN__ADDR=0.0.0.0:8080 \
    WSPULSE_ADMIN__ADDR=0.0.0.0:9090

# 8080: WebSocket clients. 9090: admin (/metrics, /healthz, /readyz).
EXPOSE 8080 9090

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# SIGTERM starts the drain (readiness 503, Close frames, exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["wspulse"]
CMD ["run", "--config", "/etc/wspulse/wspulse.toml"]
