//! The network architectures and the model enum the detector runs.

mod common;
// The one module with unsafe code: the GEMM call and the row-band output writes, each with
// its safety argument.
#[allow(unsafe_code)]
pub mod cpu_conv;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Scale;

    fn parameters(build: impl FnOnce(&Weights)) -> usize {
        let w = Weights::recording("test");
        build(&w);
        w.recorded()
            .iter()
            .map(|s| s.dims.iter().product::<usize>())
            .sum()
    }

    /// Parameter counts of every scale with 80 classes equal the reference
    /// implementations' fused model summaries, which pins down every channel and depth
    /// multiple (YOLOv8's summary also counts the 16 fixed DFL weights we do not load).
    #[test]
    fn every_scale_has_the_reference_parameter_count() {
        let anchors = crate::manifest::yolov5_default_anchors();
        for (scale, v5, v8) in [
            (Scale::N, 1_867_405, 3_151_904),
            (Scale::S, 7_225_885, 11_156_544),
            (Scale::M, 21_172_173, 25_886_080),
            (Scale::L, 46_533_693, 43_668_288),
            (Scale::X, 86_705_005, 68_200_608),
        ] {
            let got = parameters(|w| {
                yolov5::YoloV5::load(w, scale, 80, anchors.clone()).unwrap();
            });
            assert_eq!(got, v5, "yolov5{scale:?}");
            let got = parameters(|w| {
                yolov8::YoloV8::load(w, scale, 80).unwrap();
            });
            assert_eq!(got + 16, v8, "yolov8{scale:?}");
        }
    }
}
