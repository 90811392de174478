//! The `visionfleet.v1` contracts (the ingest gRPC service, frames, acknowledgements and the
//! detection event, from `proto/visionfleet/v1/ingest.proto`) and the KServe v2 inference
//! API (`proto/inference/grpc_predict_v2.proto`).

pub mod event;

/// Generated types and service stubs of package `visionfleet.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, missing_docs)]
    tonic::include_proto!("visionfleet.v1");
}

/// The Open Inference Protocol (KServe v2) gRPC API, package `inference`.
pub mod kserve {
    #![allow(
        clippy::doc_lazy_continuation,
        clippy::large_enum_variant,
        missing_docs
    )]
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of the contracts, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("visionfleet_descriptor");
