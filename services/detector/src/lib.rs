//! VisionFleet's object detectors: YOLOv5 and YOLOv8 written with candle, the letterbox
//! pre-processing and box decoding/NMS around them, and importers that turn the weight
//! formats users have (TF.js graph models, ONNX) into safetensors plus a manifest.
//!
//! The crate does no network or file-system I/O beyond reading the model files it is
//! pointed at, so every part can be unit-tested without a runtime.

pub mod detector;
pub mod error;
pub mod import;
pub mod manifest;
pub mod models;
pub mod postprocess;
pub mod preprocess;
pub mod store;
pub mod weights;

pub use detector::{Detection, Detector, DetectorOptions};
pub use error::{Error, Result};
pub use manifest::{Family, Manifest, Scale};
pub use store::ModelStore;

/// Picks the compute device: the first CUDA GPU when the `cuda` feature is built and a
/// GPU is present, the CPU otherwise.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = candle_core::Device::new_cuda(0) {
        return device;
    }
    candle_core::Device::Cpu
}
