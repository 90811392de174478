# The edge agent, for camera boxes that run containers. Build from the repository root:
#   docker build -f docker/edge-agent.Dockerfile -t ghcr.io/visionfleet/edge-agent:0.1.0 .
# Mount the spool on persistent storage: -v /var/lib/visionfleet:/spool.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p visionfleet-edge-agent --features v4l2 \
 && install -D target/release/visionfleet-edge-agent /out/visionfleet-edge-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/visionfleet-edge-agent /usr/local/bin/visionfleet-edge-agent
USER 65532:65532
VOLUME ["/spool"]
ENV VF_SPOOL_DIR=/spool
ENTRYPOINT ["/usr/local/bin/visionfleet-edge-agent"]
