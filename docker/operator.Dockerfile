# The operator. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/visionfleet/operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p visionfleet-operator \
 && install -D target/release/visionfleet-operator /out/visionfleet-operator

# Static enough for distroless: glibc and CA roots only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/visionfleet-operator /usr/local/bin/visionfleet-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/visionfleet-operator"]
