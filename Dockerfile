# The image the Helm chart runs (helm/strata: image.repository, tag = the chart's appVersion).
#   docker build -t ghcr.io/example/strata:0.1.0 .
# Build stage: the workspace's release build of the gateway (protos are compiled by protox: no protoc needed).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strata-gateway --bin strata \
 && install -D -m 0755 target/release/strata /out/strata

# Runtime: Debian slim with CA certificates (TLS to backends and Redis) and nothing else, as an unprivileged user
# whose UID the chart's securityContext names; the root filesystem can be mounted read-only.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 strata \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin strata
COPY --from=build /out/strata /usr/local/bin/strata
USER 65532:65532
EXPOSE 50051 9901
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["serve", "--config", "/etc/strata/strata.yaml"]
