# syntax=docker/dockerfile:1
# mcpgw-proxy, the data plane: MCP clients on 8080, admin (/healthz, /readyz, /metrics) on 9180.
# Build from the repository root:  docker build -f docker/proxy.Dockerfile -t mcpgw-proxy .

# The workspace's rust-version (Cargo.toml): the toolchain the project is built and tested with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# cmake: Pingora's compression builds zlib-ng (libz-ng-sys). protoc is not needed: the proto crate ships
# its own (protoc-bin-vendored).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches speed up rebuilds; the binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mcpgw-proxy \
    && install -D -m 0755 target/release/mcpgw-proxy /out/usr/local/bin/mcpgw-proxy \
    && install -d -m 0700 /out/var/lib/mcpgw

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/usr/local/bin/mcpgw-proxy /usr/local/bin/mcpgw-proxy
# Owned by the runtime user so a volume mounted here (table cache, audit spill) starts writable.
COPY --from=builder --chown=65532:65532 /out/var/lib/mcpgw /var/lib/mcpgw
# Containers are reached from outside themselves: listen on every interface.
ENV MCPGW_LISTEN=0.0.0.0:8080 \
    MCPGW_ADMIN_ADDR=0.0.0.0:9180
EXPOSE 8080 9180
USER 65532:65532
# Exit 0 when the admin listener answers /readyz (a routing table is being served).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/mcpgw-proxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mcpgw-proxy"]
CMD ["serve"]
