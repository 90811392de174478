//! The Open Inference Protocol (KServe v2) gRPC service, so that Triton and KServe clients
//! can call the pod unmodified. Inference runs through the same batchers as the ingest API;
//! results come back in the response only (no device identity, so nothing is published).
//!
//! Input `images`: `UINT8 [N, H, W, 3]` RGB (letterboxed by the server) or `FP32 [N, 3, S, S]`
//! already letterboxed and normalised to 0..=1 (S = the model's input size). Outputs:
//! `detection_count INT32 [N]`, `boxes FP32 [N, M, 4]` (x_min, y_min, x_max, y_max in source
//! pixels), `scores FP32 [N, M]`, `classes INT32 [N, M]`, with M the largest count in the
//! batch and zero padding past each image's count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use image::RgbImage;
use tonic::{Request, Response, Status};
use visionfleet_proto::kserve::grpc_inference_service_server::GrpcInferenceService;
use visionfleet_proto::kserve::model_infer_response::InferOutputTensor;
use visionfleet_proto::kserve::model_metadata_response::TensorMetadata;
use visionfleet_proto::kserve::*;

use crate::batcher::{BatchOutput, Batcher, FrameInput};
use crate::pipeline::Pipeline;

/// Name of the one input tensor.
pub const INPUT: &str = "images";
/// Output tensor names, in the order they are returned when none are requested.
pub const OUTPUTS: [&str; 4] = ["detection_count", "boxes", "scores", "classes"];

/// The KServe v2 service.
pub struct KserveService {
    pipeline: Arc<Pipeline>,
    ready: Arc<AtomicBool>,
}

impl KserveService {
    /// Serves the pipeline's models; `ready` turns false while the pod drains.
    pub fn new(pipeline: Arc<Pipeline>, ready: Arc<AtomicBool>) -> Self {
        Self { pipeline, ready }
    }

    fn model(&self, name: &str, version: &str) -> Result<Arc<Batcher>, Status> {
        let batcher = self
            .pipeline
            .models
            .get(name)
            .ok_or_else(|| Status::not_found(format!("unknown model {name:?}")))?;
        if !version.is_empty() && version != batcher.manifest().version {
            return Err(Status::not_found(format!(
                "model {name:?} has no version {version:?} (serving {:?})",
                batcher.manifest().version
            )));
        }
        Ok(batcher)
    }
}

fn tensor(name: &str, datatype: &str, shape: &[i64]) -> TensorMetadata {
    TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

/// Splits the request's input into per-image detector inputs.
fn parse_input(
    req: &ModelInferRequest,
    size: usize,
    max_pixels: u64,
) -> Result<Vec<FrameInput>, Status> {
    let [input] = req.inputs.as_slice() else {
        return Err(Status::invalid_argument(format!(
            "expected exactly one input named {INPUT:?}, got {}",
            req.inputs.len()
        )));
    };
    if input.name != INPUT {
        return Err(Status::invalid_argument(format!(
            "unknown input {:?} (expected {INPUT:?})",
            input.name
        )));
    }
    let dims: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| Status::invalid_argument(format!("negative dimension {d}")))
        })
        .collect::<Result<_, _>>()?;
    let raw: Vec<u8> = match req.raw_input_contents.first() {
        Some(raw) => raw.clone(),
        None => match &input.contents {
            Some(c) if input.datatype == "UINT8" => {
                c.uint_contents.iter().map(|&v| v.min(255) as u8).collect()
            }
            Some(c) if input.datatype == "FP32" => c
                .fp32_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            _ => Vec::new(),
        },
    };
    let bad_shape = |want: &str| {
        Status::invalid_argument(format!(
            "input {INPUT:?} {} has shape {:?}, expected {want}",
            input.datatype, input.shape
        ))
    };
    let check_len = |need: usize| {
        if raw.len() == need {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "input {INPUT:?} holds {} bytes, shape {:?} {} needs {need}",
                raw.len(),
                input.shape,
                input.datatype
            )))
        }
    };
    match input.datatype.as_str() {
        "UINT8" => {
            let (n, h, w) = match *dims.as_slice() {
                [n, h, w, 3] => (n, h, w),
                [h, w, 3] => (1, h, w),
                _ => return Err(bad_shape("[N, H, W, 3]")),
            };
            if n == 0 || h == 0 || w == 0 {
                return Err(bad_shape("non-zero [N, H, W, 3]"));
            }
            if (h as u64) * (w as u64) > max_pixels {
                return Err(Status::invalid_argument(format!(
                    "{w}x{h} images exceed the limit of {max_pixels} pixels"
                )));
            }
            check_len(n * h * w * 3)?;
            Ok(raw
                .chunks_exact(h * w * 3)
                .map(|px| {
                    RgbImage::from_raw(w as u32, h as u32, px.to_vec())
                        .map(FrameInput::Image)
                        .ok_or_else(|| Status::invalid_argument("image size overflow"))
                })
                .collect::<Result<_, _>>()?)
        }
        "FP32" => {
            let n = match *dims.as_slice() {
                [n, 3, h, w] if h == size && w == size => n,
                [3, h, w] if h == size && w == size => 1,
                _ => return Err(bad_shape(&format!("[N, 3, {size}, {size}]"))),
            };
            if n == 0 {
                return Err(bad_shape("N >= 1"));
            }
            check_len(n * 3 * size * size * 4)?;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(values
                .chunks_exact(3 * size * size)
                .map(|c| FrameInput::Planar(c.to_vec()))
                .collect())
        }
        other => Err(Status::invalid_argument(format!(
            "unsupported datatype {other} for input {INPUT:?} (expected UINT8 [N, H, W, 3] or \
             FP32 [N, 3, {size}, {size}])"
        ))),
    }
}

/// Builds the output tensors from per-image results.
fn outputs(results: &[BatchOutput], requested: &[String]) -> Result<ModelInferResponse, Status> {
    let n = results.len();
    let m = results
        .iter()
        .map(|r| r.detections.len())
        .max()
        .unwrap_or(0);
    let names: Vec<&str> = if requested.is_empty() {
        OUTPUTS.to_vec()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let mut response = ModelInferResponse::default();
    for name in names {
        let (datatype, shape, bytes): (&str, Vec<i64>, Vec<u8>) = match name {
            "detection_count" => (
                "INT32",
                vec![n as i64],
                results
                    .iter()
                    .flat_map(|r| (r.detections.len() as i32).to_le_bytes())
                    .collect(),
            ),
            "boxes" => (
                "FP32",
                vec![n as i64, m as i64, 4],
                padded(results, m, |d| d.bbox.to_vec(), 4),
            ),
            "scores" => (
                "FP32",
                vec![n as i64, m as i64],
                padded(results, m, |d| vec![d.score], 1),
            ),
            "classes" => (
                "INT32",
                vec![n as i64, m as i64],
                results
                    .iter()
                    .flat_map(|r| {
                        (0..m).map(move |i| r.detections.get(i).map_or(0, |d| d.class_id as i32))
                    })
                    .flat_map(i32::to_le_bytes)
                    .collect(),
            ),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown output {other:?} (available: {})",
                    OUTPUTS.join(", ")
                )))
            }
        };
        response.outputs.push(InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        });
        response.raw_output_contents.push(bytes);
    }
    Ok(response)
}

/// `m` rows of `width` floats per image, zero past each image's detections.
fn padded(
    results: &[BatchOutput],
    m: usize,
    row: impl Fn(&visionfleet_detector::Detection) -> Vec<f32>,
    width: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(results.len() * m * width * 4);
    for r in results {
        for i in 0..m {
            let values = r.detections.get(i).map_or_else(|| vec![0.0; width], &row);
            out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    out
}

#[tonic::async_trait]
impl GrpcInferenceService for KserveService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.ready.load(Ordering::Relaxed),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.model(&r.name, &r.version).is_ok() && self.ready.load(Ordering::Relaxed);
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "visionfleet".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let batcher = self.model(&r.name, &r.version)?;
        let m = batcher.manifest();
        Ok(Response::new(ModelMetadataResponse {
            name: m.name.clone(),
            versions: vec![m.version.clone()],
            platform: "visionfleet_candle".into(),
            inputs: vec![tensor(INPUT, "UINT8", &[-1, -1, -1, 3])],
            outputs: vec![
                tensor("detection_count", "INT32", &[-1]),
                tensor("boxes", "FP32", &[-1, -1, 4]),
                tensor("scores", "FP32", &[-1, -1]),
                tensor("classes", "INT32", &[-1, -1]),
            ],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(Status::unavailable("shutting down"));
        }
        let deadline = crate::service::request_deadline(request.metadata());
        let req = request.into_inner();
        let batcher = self.model(&req.model_name, &req.model_version)?;
        let size = batcher.manifest().input_size;
        let inputs = parse_input(&req, size, self.pipeline.limits.max_pixels)?;
        self.pipeline
            .metrics
            .frames_received
            .inc_by(inputs.len() as u64);
        // All images are queued at once so that they share forward passes; a full queue
        // sheds the request with RESOURCE_EXHAUSTED.
        let results = futures::future::join_all(
            inputs
                .into_iter()
                .map(|input| batcher.run_input(input, false, deadline)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let requested: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
        let mut response = outputs(&results, &requested)?;
        response.model_name = batcher.manifest().name.clone();
        response.model_version = batcher.manifest().version.clone();
        response.id = req.id;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use visionfleet_proto::kserve::model_infer_request::InferInputTensor;

    fn request(datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: INPUT.into(),
                datatype: datatype.into(),
                shape,
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        }
    }

    #[test]
    fn uint8_nhwc_splits_into_images() {
        let inputs =
            parse_input(&request("UINT8", vec![2, 2, 3, 3], vec![7; 36]), 640, 100).unwrap();
        assert_eq!(inputs.len(), 2);
        let FrameInput::Image(img) = &inputs[1] else {
            panic!("image")
        };
        assert_eq!(img.dimensions(), (3, 2));
    }

    #[test]
    fn fp32_nchw_must_match_the_model_input() {
        let ok = parse_input(
            &request("FP32", vec![1, 3, 32, 32], vec![0; 3 * 32 * 32 * 4]),
            32,
            100,
        );
        assert!(
            matches!(ok.unwrap().as_slice(), [FrameInput::Planar(v)] if v.len() == 3 * 32 * 32)
        );
        let err = parse_input(
            &request("FP32", vec![1, 3, 16, 16], vec![0; 3 * 16 * 16 * 4]),
            32,
            100,
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "input \"images\" FP32 has shape [1, 3, 16, 16], expected [N, 3, 32, 32]"
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let e = parse_input(&request("FP64", vec![1], vec![0; 8]), 640, 100).unwrap_err();
        assert!(e
            .message()
            .starts_with("unsupported datatype FP64 for input \"images\""));
        let e =
            parse_input(&request("UINT8", vec![1, 2, 2, 3], vec![0; 11]), 640, 100).unwrap_err();
        assert_eq!(
            e.message(),
            "input \"images\" holds 11 bytes, shape [1, 2, 2, 3] UINT8 needs 12"
        );
        let e = parse_input(
            &request("UINT8", vec![1, 20, 20, 3], vec![0; 1200]),
            640,
            100,
        )
        .unwrap_err();
        assert_eq!(e.message(), "20x20 images exceed the limit of 100 pixels");
        let mut r = request("UINT8", vec![1, 1, 1, 3], vec![0; 3]);
        r.inputs[0].name = "pixels".into();
        assert_eq!(
            parse_input(&r, 640, 100).unwrap_err().message(),
            "unknown input \"pixels\" (expected \"images\")"
        );
    }
}
