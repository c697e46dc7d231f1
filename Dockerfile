# syntax=docker/dockerfile:1.7
#
# ballast container image.
#
#   docker build \
#     --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg GIT_SHA="$(git rev-parse HEAD)" \
#     --build-arg BUILD_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t ballast:local .
#
# Stages:
#   chef     rust toolchain + cargo-chef
#   planner  reduces the workspace to recipe.json (manifests + lockfile only)
#   builder  cooks the dependencies from recipe.json (cached layer: only a change of
#            Cargo.toml/Cargo.lock invalidates it), then compiles the sources
#   runtime  distroless cc (glibc + libgcc + CA certificates), non-root, no shell,
#            no compiler, no sources, no secrets
#
# The build stages run on Debian bookworm so the binary links against the same glibc
# (2.36) as gcr.io/distroless/cc-debian12.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.73

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
# cargo-chef is pinned so the planner's recipe format cannot change under us.
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME:-/usr/local/cargo}/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# No build step may talk to a database (sqlx macros use the offline data, if any).
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# Dependency layer: rebuilt only when recipe.json (the manifests and lockfile) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin ballast
# Source layer: a change under src/ or migrations/ only reruns from here.
COPY . .
# The build metadata is declared after the dependency layer so a new commit does not
# invalidate it. The app reads these at compile time with option_env!.
ARG VERSION=dev
ARG GIT_SHA=unknown
ARG BUILD_TIME=unknown
RUN BALLAST_GIT_SHA="${GIT_SHA}" \
    BALLAST_BUILD_TIME="${BUILD_TIME}" \
    BALLAST_RUSTC_VERSION="$(rustc --version)" \
    cargo build --release --locked --bin ballast \
    && install -D -m 0755 target/release/ballast /out/app/ballast \
    && install -d -m 0750 /out/var/lib/ballast/storage

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=dev
ARG GIT_SHA=unknown
ARG BUILD_TIME=unknown
LABEL org.opencontainers.image.title="ballast" \
      org.opencontainers.image.description="HTTP API service with durable jobs and files, operations built in" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_TIME}" \
      org.opencontainers.image.source="https://github.com/ballast-dev/ballast" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

WORKDIR /app
# Program and read-only assets belong to root: the service (UID 65532) cannot modify them.
COPY --from=builder /out/app/ballast /app/ballast
COPY migrations/ /app/migrations/
COPY config/ /app/config/
# The only writable path of the image: local object storage (mount a volume here). The
# parent is copied so the storage directory itself keeps its mode (0750) and owner.
COPY --from=builder --chown=65532:65532 /out/var/lib/ballast /var/lib/ballast

ENV CONFIG_DIR=/app/config \
    STORAGE_URL=file:///var/lib/ballast/storage

USER 65532:65532
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
# Liveness of the process itself (no curl in the image: the binary probes /health/live on
# the management port). Compose and Kubernetes use /health/ready for routing decisions.
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/app/ballast", "healthcheck"]
ENTRYPOINT ["/app/ballast"]
CMD ["serve"]
