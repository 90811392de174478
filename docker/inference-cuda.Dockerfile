# The inference pod with the `cuda` feature (NVIDIA GPUs). Build from the repository root:
#   docker build -f docker/inference-cuda.Dockerfile -t ghcr.io/visionfleet/inference-cuda:0.1.0 .
# The runtime image carries the CUDA libraries; the node needs the NVIDIA driver and
# container runtime (runtimeClassName: nvidia in the chart's GPU values). Run `make
# models` first: the weights are copied into /models (see inference.Dockerfile).
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
# Compute capabilities to build kernels for (8.0 A100, 8.9 L4/L40, 9.0 H100/H200).
ENV CUDA_COMPUTE_CAP=80
RUN cargo build --release -p visionfleet-inference --features cuda \
 && install -D target/release/visionfleet-inference /out/visionfleet-inference

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3t64 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin visionfleet
COPY --from=build /out/ /usr/local/bin/
COPY models/ /models/
WORKDIR /
USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/visionfleet-inference"]
CMD ["--grpc-addr=0.0.0.0:50051", "--http-addr=0.0.0.0:9090", "--models-dir=/models"]
