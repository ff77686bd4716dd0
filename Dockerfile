# agentos-gateway container image.
# Build:  docker build -t agentos-gateway .
# Run:    docker run -p 7777:7777 -v $PWD/gateway.toml:/etc/agentos-gateway/gateway.toml:ro agentos-gateway
# The build runs the same `cargo build --release --locked` that CI compiles with.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependency layer: compile every dependency against stub sources, so source
# edits do not rebuild the dependency graph. The benchmark crate is a member
# of the workspace, so cargo needs it to load the manifest; only the gateway
# and the client crate it depends on (the default members) are built. The
# client crate is copied whole: it is a dependency, and changes less often.
COPY Cargo.toml Cargo.lock ./
COPY bench ./bench
COPY crates ./crates
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/agentos-gateway

# distroless/cc: glibc and libgcc only, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="agentos-gateway" \
      org.opencontainers.image.description="One AgentOS-compatible front door for workflows on many agno AgentOS hosts" \
      org.opencontainers.image.source="https://github.com/agentos-gateway/agentos-gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/agentos-gateway /usr/local/bin/agentos-gateway
USER 65532:65532
# 7777: the public AgentOS API. 9901: the admin listener (/metrics,
# /gateway/upstreams); publish it only where operators can reach it.
EXPOSE 7777 9901
# The binary writes nothing to disk: run with a read-only root filesystem.
# Mount the config at /etc/agentos-gateway/gateway.toml (a ConfigMap in Kubernetes).
ENTRYPOINT ["/usr/local/bin/agentos-gateway"]
CMD ["--config", "/etc/agentos-gateway/gateway.toml", "--log-format", "json"]
