//! The network architectures and the model enum the detector runs.

mod common;
pub mod yolov5;
pub mod yolov8;

use candle_core::Tensor;

use crate::error::Result;
use crate::manifest::{Family, Manifest};
use crate::weights::Weights;

/// A built network of either family.
pub enum Network {
    /// YOLOv5: output `[batch, anchors, 5 + classes]`, boxes in input pixels.
    V5(Box<yolov5::YoloV5>),
    /// YOLOv8: output `[batch, 4 + classes, anchors]`, boxes in input pixels.
    V8(Box<yolov8::YoloV8>),
}

impl Network {
    /// Builds the network the manifest names from `weights`.
    pub fn build(manifest: &Manifest, weights: &Weights) -> Result<Self> {
        let classes = manifest.class_names.len();
        Ok(match manifest.family {
            Family::Yolov5 => Network::V5(Box::new(yolov5::YoloV5::load(
                weights,
                manifest.scale,
                classes,
                manifest.anchors.clone().unwrap_or_default(),
            )?)),
            Family::Yolov8 => Network::V8(Box::new(yolov8::YoloV8::load(
                weights,
                manifest.scale,
                classes,
            )?)),
        })
    }

    /// Runs the network on a `[batch, 3, size, size]` tensor of RGB values in 0..=1.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        match self {
            Network::V5(m) => m.forward(input),
            Network::V8(m) => m.forward(input),
        }
    }
}
