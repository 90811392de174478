//! The detector: a loaded network plus its manifest, running batches of images through
//! letterbox, forward pass and NMS.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{Family, Manifest};
use crate::models::Network;
use crate::postprocess::{candidates_v5, candidates_v8, nms, NmsOptions};
use crate::preprocess::{letterbox_into, Letterbox};
use crate::weights::Weights;

/// One detected object, with its box in source-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Class index into the model's class names.
    pub class_id: u32,
    /// Class name.
    pub label: String,
    /// Confidence in 0..=1.
    pub score: f32,
    /// `[x_min, y_min, x_max, y_max]` in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Thresholds for turning scores into detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorOptions {
    /// Minimum confidence (default 0.25).
    pub conf_threshold: f32,
    /// NMS IoU threshold; `None` takes the family's reference default (v8 0.7, v5 0.45).
    pub iou_threshold: Option<f32>,
    /// Maximum detections per image (default 300).
    pub max_detections: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            conf_threshold: 0.25,
            iou_threshold: None,
            max_detections: 300,
        }
    }
}

/// An image to run: interleaved RGB8 pixels.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    /// `width * height * 3` bytes, row-major.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl<'a> From<&'a image::RgbImage> for RgbView<'a> {
    fn from(img: &'a image::RgbImage) -> Self {
        Self {
            data: img.as_raw(),
            width: img.width(),
            height: img.height(),
        }
    }
}

/// One network input: an image to letterbox, or a tensor already letterboxed and
/// normalised (planar RGB in 0..=1, `3 x size x size`), whose boxes stay in input pixels.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// An RGB8 image of any size.
    Rgb(RgbView<'a>),
    /// A ready `[3, size, size]` tensor in row-major order.
    Planar(&'a [f32]),
}

/// Time spent in each stage of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Letterbox and normalisation.
    pub preprocess: Duration,
    /// Network forward pass.
    pub forward: Duration,
    /// Decoding and NMS.
    pub postprocess: Duration,
}

/// A model ready to run.
pub struct Detector {
    manifest: Manifest,
    network: Network,
    device: Device,
    nms: NmsOptions,
}

impl Detector {
    /// Loads the model a manifest describes, checking the weights' checksum.
    pub fn load(manifest_path: &Path, device: &Device, options: DetectorOptions) -> Result<Self> {
        let manifest = Manifest::load(manifest_path)?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let weights_path = dir.join(&manifest.weights);
        let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        let actual = crate::store::sha256_hex(&bytes);
        if actual != manifest.weights_sha256 {
            return Err(Error::Manifest {
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "weights checksum mismatch for {}: manifest says {}, file is {}",
                    weights_path.display(),
                    manifest.weights_sha256,
                    actual
                ),
            });
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::import(&weights_path, format!("not a safetensors file: {e}")))?;
        let weights = Weights::from_tensors(tensors, device, &manifest.family.to_string());
        Self::new(manifest, &weights, device, options)
    }

    /// Builds a detector from a manifest and weights already in memory.
    pub fn new(
        manifest: Manifest,
        weights: &Weights,
        device: &Device,
        options: DetectorOptions,
    ) -> Result<Self> {
        manifest.validate().map_err(|reason| Error::Manifest {
            path: manifest.name.clone().into(),
            reason,
        })?;
        let network = Network::build(&manifest, weights)?;
        let nms = NmsOptions {
            conf_threshold: options.conf_threshold,
            iou_threshold: options
                .iou_threshold
                .unwrap_or_else(|| manifest.family.default_iou()),
            max_detections: options.max_detections,
            ..NmsOptions::default()
        };
        Ok(Self {
            manifest,
            network,
            device: device.clone(),
            nms,
        })
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Detects objects in each image; one forward pass for the whole batch.
    pub fn detect(&self, images: &[RgbView<'_>]) -> Result<Vec<Vec<Detection>>> {
        Ok(self.detect_timed(images)?.0)
    }

    /// Like [`Detector::detect`], also reporting how long each stage took.
    pub fn detect_timed(
        &self,
        images: &[RgbView<'_>],
    ) -> Result<(Vec<Vec<Detection>>, StageTimings)> {
        let inputs: Vec<ImageInput<'_>> = images.iter().copied().map(ImageInput::Rgb).collect();
        self.detect_inputs_timed(&inputs)
    }

    /// Like [`Detector::detect_timed`] for a mix of images and ready tensors.
    pub fn detect_inputs_timed(
        &self,
        inputs: &[ImageInput<'_>],
    ) -> Result<(Vec<Vec<Detection>>, StageTimings)> {
        if inputs.is_empty() {
            return Ok((Vec::new(), StageTimings::default()));
        }
        let t0 = Instant::now();
        let (input, boxes) = self.preprocess_inputs(inputs)?;
        let t1 = Instant::now();
        let output = self.forward(&input)?;
        let t2 = Instant::now();
        let detections = self.postprocess(&output, &boxes)?;
        let timings = StageTimings {
            preprocess: t1 - t0,
            forward: t2 - t1,
            postprocess: t2.elapsed(),
        };
        Ok((detections, timings))
    }

    /// Letterboxes a batch into one `[batch, 3, size, size]` tensor.
    pub fn preprocess(&self, images: &[RgbView<'_>]) -> Result<(Tensor, Vec<Letterbox>)> {
        let inputs: Vec<ImageInput<'_>> = images.iter().copied().map(ImageInput::Rgb).collect();
        self.preprocess_inputs(&inputs)
    }

    /// Builds one `[batch, 3, size, size]` tensor from images and ready tensors.
    pub fn preprocess_inputs(&self, inputs: &[ImageInput<'_>]) -> Result<(Tensor, Vec<Letterbox>)> {
        let size = self.manifest.input_size;
        let plane = 3 * size * size;
        let mut buf = vec![0f32; plane * inputs.len()];
        let mut boxes = Vec::with_capacity(inputs.len());
        for (input, out) in inputs.iter().zip(buf.chunks_exact_mut(plane)) {
            let img = match input {
                ImageInput::Rgb(img) => img,
                ImageInput::Planar(values) => {
                    if values.len() != plane {
                        return Err(Error::InvalidInput(format!(
                            "tensor has {} values, 3x{size}x{size} needs {plane}",
                            values.len()
                        )));
                    }
                    out.copy_from_slice(values);
                    boxes.push(Letterbox::new(size as u32, size as u32, size as u32));
                    continue;
                }
            };
            let expected = img.width as usize * img.height as usize * 3;
            if img.width == 0 || img.height == 0 {
                return Err(Error::InvalidInput(format!(
                    "image has zero size ({}x{})",
                    img.width, img.height
                )));
            }
            if img.data.len() != expected {
                return Err(Error::InvalidInput(format!(
                    "rgb buffer has {} bytes, {}x{}x3 needs {expected}",
                    img.data.len(),
                    img.width,
                    img.height
                )));
            }
            boxes.push(letterbox_into(
                img.data,
                img.width,
                img.height,
                size as u32,
                out,
            ));
        }
        let input = Tensor::from_vec(buf, (inputs.len(), 3, size, size), &self.device)?;
        Ok((input, boxes))
    }

    /// The raw network output for a `[batch, 3, size, size]` input (see [`Network`]).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.network.forward(input)
    }

    /// Decodes raw output into detections in source pixels, one list per image.
    pub fn postprocess(&self, output: &Tensor, boxes: &[Letterbox]) -> Result<Vec<Vec<Detection>>> {
        let classes = self.manifest.class_names.len();
        let output = output.to_device(&Device::Cpu)?;
        boxes
            .iter()
            .enumerate()
            .map(|(i, geo)| {
                let flat: Vec<f32> = output.get(i)?.flatten_all()?.to_vec1()?;
                let cands = match self.manifest.family {
                    Family::Yolov8 => candidates_v8(&flat, classes, self.nms.conf_threshold),
                    Family::Yolov5 => candidates_v5(&flat, classes, self.nms.conf_threshold),
                };
                Ok(nms(cands, &self.nms)
                    .into_iter()
                    .map(|c| Detection {
                        class_id: c.class_id as u32,
                        label: self.manifest.class_names[c.class_id].clone(),
                        score: c.score,
                        bbox: geo.to_source(c.bbox),
                    })
                    .collect())
            })
            .collect()
    }
}
