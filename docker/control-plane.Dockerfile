# syntax=docker/dockerfile:1
# mcpgw-control-plane: REST API (admin, /health, /ready, /metrics, OAuth) on 8000, gRPC routing stream on
# 50051. Subcommands: serve (default), migrate, validate, export, import FILE.
# Build from the repository root:  docker build -f docker/control-plane.Dockerfile -t mcpgw-control-plane .

# The workspace's rust-version (Cargo.toml): the toolchain the project is built and tested with.
ARG RUST_VERSION=1.95

# No system packages beyond the rust image: nothing here needs cmake (that is Pingora's, in the proxy),
# and the proto crate ships its own protoc (protoc-bin-vendored).
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The caches speed up rebuilds; the binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mcpgw-control-plane \
    && install -D -m 0755 target/release/mcpgw-control-plane /out/usr/local/bin/mcpgw-control-plane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/usr/local/bin/mcpgw-control-plane /usr/local/bin/mcpgw-control-plane
# Containers are reached from outside themselves: listen on every interface.
ENV MCPGW_HTTP_ADDR=0.0.0.0:8000 \
    MCPGW_GRPC_ADDR=0.0.0.0:50051
EXPOSE 8000 50051
USER 65532:65532
# Exit 0 when the REST listener answers /ready (database reachable and migrated).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/mcpgw-control-plane", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mcpgw-control-plane"]
CMD ["serve"]
