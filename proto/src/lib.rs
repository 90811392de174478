//! The `visionfleet.v1` contracts: the ingest gRPC service, frames, acknowledgements and the
//! detection event, generated from `proto/visionfleet/v1/ingest.proto`.

pub mod event;

/// Generated types and service stubs of package `visionfleet.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, missing_docs)]
    tonic::include_proto!("visionfleet.v1");
}

/// Encoded `FileDescriptorSet` of the contracts, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("visionfleet_descriptor");
