//! The Open Inference Protocol (KServe v2) service, called through a generated client and
//! through NVIDIA Triton's own Python client (`tritonclient[grpc]` from PyPI, unmodified).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use candle_core::Device;
use support::{config, models_dir, root, Kafka, TestServer};
use tonic::Code;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{Detection, DetectorOptions, ModelStore};
use visionfleet_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use visionfleet_proto::kserve::model_infer_request::InferInputTensor;
use visionfleet_proto::kserve::*;

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn infer_request(datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "coco-yolov5s".into(),
        id: "req-1".into(),
        inputs: vec![InferInputTensor {
            name: "images".into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

/// Output rows of image `i`: (class, score, box).
fn rows(resp: &ModelInferResponse, i: usize) -> Vec<(i32, f32, [f32; 4])> {
    let by_name = |n: &str| resp.outputs.iter().position(|o| o.name == n).unwrap();
    let count = i32s(&resp.raw_output_contents[by_name("detection_count")])[i] as usize;
    let m = resp.outputs[by_name("scores")].shape[1] as usize;
    let boxes = f32s(&resp.raw_output_contents[by_name("boxes")]);
    let scores = f32s(&resp.raw_output_contents[by_name("scores")]);
    let classes = i32s(&resp.raw_output_contents[by_name("classes")]);
    (0..count)
        .map(|k| {
            let j = i * m + k;
            let b = &boxes[j * 4..j * 4 + 4];
            (classes[j], scores[j], [b[0], b[1], b[2], b[3]])
        })
        .collect()
}

fn assert_rows_match(
    got: &[(i32, f32, [f32; 4])],
    want: &[Detection],
    map: impl Fn([f32; 4]) -> [f32; 4],
) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((class, score, bbox), w) in got.iter().zip(want) {
        assert_eq!(*class as u32, w.class_id);
        assert!((score - w.score).abs() < 1e-3, "{score} vs {}", w.score);
        let expect = map(w.bbox);
        assert!(
            bbox.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 0.1),
            "{bbox:?} vs {expect:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_serves_detections_to_generated_and_triton_clients() {
    let kafka = Kafka::start(1);
    let server = TestServer::start(config(&kafka.bootstrap, "kserve.detections", &[])).await;
    let mut client = GrpcInferenceServiceClient::connect(server.url())
        .await
        .unwrap();

    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str| ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        client
            .model_ready(ready("coco-yolov5s"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("nope"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: "coco-yolov5s".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.inputs[0].name, "images");
    assert_eq!(meta.outputs.len(), 4);

    // The detector's own answer for bus.jpg.
    let detector = ModelStore::open(models_dir())
        .unwrap()
        .load("coco-yolov5s", &Device::Cpu, DetectorOptions::default())
        .unwrap();
    let bus_path = models_dir().join("samples/bus.jpg");
    let bus = image::open(&bus_path).unwrap().to_rgb8();
    let want = detector.detect(&[RgbView::from(&bus)]).unwrap().remove(0);

    // UINT8 NHWC: two copies of the image in one request.
    let (w, h) = bus.dimensions();
    let mut raw = bus.as_raw().clone();
    raw.extend_from_slice(bus.as_raw());
    let resp = client
        .model_infer(infer_request("UINT8", vec![2, h as i64, w as i64, 3], raw))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (resp.id.as_str(), resp.model_name.as_str()),
        ("req-1", "coco-yolov5s")
    );
    for i in 0..2 {
        assert_rows_match(&rows(&resp, i), &want, |b| b);
    }

    // FP32 NCHW, already letterboxed: boxes come back in network-input pixels.
    let (tensor, geo) = detector.preprocess(&[RgbView::from(&bus)]).unwrap();
    let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
    let resp = client
        .model_infer(infer_request(
            "FP32",
            vec![1, 3, 640, 640],
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ))
        .await
        .unwrap()
        .into_inner();
    let g = geo[0];
    assert_rows_match(&rows(&resp, 0), &want, |b| {
        let x = |v: f32| v * g.gain + g.unpad_x;
        let y = |v: f32| v * g.gain + g.unpad_y;
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    });

    // Errors name the problem.
    let e = client
        .model_infer(infer_request("FP64", vec![1], vec![0; 8]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut unknown = infer_request("UINT8", vec![1, 1, 1, 3], vec![0; 3]);
    unknown.model_name = "nope".into();
    let e = client.model_infer(unknown).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "unknown model \"nope\"")
    );

    // Triton's own client, unmodified from PyPI.
    let python = root().join(".state/venv/bin/python");
    let script = root().join("tools/pyclients/kserve_client.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--url", &server.grpc.to_string(), "--model", "coco-yolov5s"])
        .arg("--image")
        .arg(&bus_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&py["live"], &py["ready"], &py["model_ready"]),
        (&true.into(), &true.into(), &true.into())
    );
    let dets = py["results"][0]["detections"].as_array().unwrap();
    assert_eq!(dets.len(), want.len(), "{py}");
    // Pillow decodes the JPEG with libjpeg, we with the image crate: pixels differ by a
    // level here and there, so compare with the golden tests' tolerances.
    for (d, w) in dets.iter().zip(&want) {
        assert_eq!(d["class_id"].as_u64().unwrap() as u32, w.class_id, "{py}");
        assert!(
            (d["score"].as_f64().unwrap() as f32 - w.score).abs() <= 0.02,
            "{py}"
        );
        let b: Vec<f32> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert!(
            b.iter().zip(&w.bbox).all(|(a, e)| (a - e).abs() <= 2.0),
            "{b:?} vs {:?}",
            w.bbox
        );
    }
    assert!(
        py["bad_request_error"]["status"]
            .as_str()
            .unwrap()
            .contains("INVALID_ARGUMENT"),
        "{py}"
    );
    server.stop().await.unwrap();
}
