# Multi-stage build: compile with the full toolchain, run on a small non-root image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml build.rs ./
COPY .cargo ./.cargo
COPY migrations ./migrations
COPY src ./src
COPY benches ./benches
COPY fixtures ./fixtures
RUN cargo build --release --locked --bin groupwatch

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/groupwatch --create-home groupwatch
COPY --from=build /src/target/release/groupwatch /usr/local/bin/groupwatch
COPY fixtures /usr/share/groupwatch/fixtures
USER groupwatch
WORKDIR /var/lib/groupwatch
# 8080: the callbacks; 9464: /healthz, /readyz, /metrics and the read API (http.ops_listen).
EXPOSE 8080 9464
ENV GROUPWATCH_CONFIG=/etc/groupwatch/groupwatch.toml
ENTRYPOINT ["groupwatch"]
CMD ["serve"]
