//! Golden tests against the reference runtimes. The fixtures in `tests/fixtures/golden` were
//! made by `tools/golden/make_golden.py`: ONNX Runtime on the fall model's ONNX file and
//! TensorFlow.js on the COCO model's graph model, with the same letterbox. The real weights
//! come from `make models` (they cannot be committed).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{Detection, Detector, DetectorOptions, ModelStore};

#[derive(Deserialize)]
struct GoldenDetections {
    model: String,
    image: String,
    detections: Vec<Detection>,
}

#[derive(Deserialize)]
struct GoldenRaw {
    model: String,
    output_shape: Vec<usize>,
    sample_stride: usize,
    values: Vec<f32>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_dir() -> PathBuf {
    std::env::var_os("VF_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

fn load(model: &str) -> Detector {
    let store = ModelStore::open(models_dir())
        .expect("models/ is missing: run `make models` before the tests");
    store
        .load(model, &Device::Cpu, DetectorOptions::default())
        .unwrap_or_else(|e| panic!("cannot load {model} (run `make models`): {e}"))
}

/// Pairs every reference detection with one of ours of the same class (best IoU), then
/// checks the score within 0.02 and every corner within 2 px.
fn assert_same_objects(golden: &GoldenDetections, ours: &[Detection]) {
    let what = format!("{} on {}", golden.model, golden.image);
    assert_eq!(
        ours.len(),
        golden.detections.len(),
        "{what}: object count differs\nours: {ours:#?}\nreference: {:#?}",
        golden.detections
    );
    let mut free: Vec<&Detection> = ours.iter().collect();
    for want in &golden.detections {
        let (i, got) = free
            .iter()
            .enumerate()
            .filter(|(_, d)| d.class_id == want.class_id)
            .max_by(|a, b| {
                let ia = visionfleet_detector::postprocess::iou(&a.1.bbox, &want.bbox);
                let ib = visionfleet_detector::postprocess::iou(&b.1.bbox, &want.bbox);
                ia.total_cmp(&ib)
            })
            .unwrap_or_else(|| panic!("{what}: no {} found for {want:?}", want.label));
        assert_eq!(got.label, want.label, "{what}");
        assert!(
            (got.score - want.score).abs() <= 0.02,
            "{what}: score {} vs reference {}",
            got.score,
            want.score
        );
        for k in 0..4 {
            assert!(
                (got.bbox[k] - want.bbox[k]).abs() <= 2.0,
                "{what}: box {:?} vs reference {:?}",
                got.bbox,
                want.bbox
            );
        }
        free.remove(i);
    }
}

fn check_detections(model: &str) {
    let detector = load(model);
    for stem in ["bus", "zidane"] {
        let golden: GoldenDetections = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("{model}.{stem}.json"))).unwrap(),
        )
        .unwrap();
        let path = models_dir().join("samples").join(&golden.image);
        let img = image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make models`)", path.display()))
            .to_rgb8();
        let ours = detector.detect(&[RgbView::from(&img)]).unwrap().remove(0);
        assert_same_objects(&golden, &ours);
    }
}

#[test]
fn fall_yolov8s_matches_onnxruntime_on_photos() {
    check_detections("fall-yolov8s");
}

#[test]
fn coco_yolov5s_matches_tfjs_on_photos() {
    check_detections("coco-yolov5s");
}

#[test]
fn batched_inference_equals_one_by_one() {
    let detector = load("fall-yolov8s");
    let imgs: Vec<_> = ["bus.jpg", "zidane.jpg"]
        .iter()
        .map(|n| {
            image::open(models_dir().join("samples").join(n))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    let views: Vec<RgbView<'_>> = imgs.iter().map(RgbView::from).collect();
    let batched = detector.detect(&views).unwrap();
    for (view, together) in views.iter().zip(&batched) {
        let alone = detector.detect(&[*view]).unwrap().remove(0);
        assert_eq!(alone.len(), together.len());
        for (a, b) in alone.iter().zip(together) {
            assert_eq!(a.class_id, b.class_id);
            assert!((a.score - b.score).abs() < 1e-4);
            assert!(a
                .bbox
                .iter()
                .zip(&b.bbox)
                .all(|(x, y)| (x - y).abs() < 1e-2));
        }
    }
}

/// The synthetic input both sides computed: value(c, y, x) = ((7x + 13y + 29c) mod 256) / 255.
fn synthetic_input(size: usize) -> Tensor {
    let v = visionfleet_detector::preprocess::test_pattern(1, size);
    Tensor::from_vec(v, (1, 3, size, size), &Device::Cpu).unwrap()
}

/// Compares sampled raw outputs within 1e-3. Box coordinates are compared in units of the
/// input size (as TF.js reports them), scores as they are.
fn check_raw(model: &str, is_coordinate: impl Fn(usize) -> bool) {
    let golden: GoldenRaw = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{model}.raw.json"))).unwrap(),
    )
    .unwrap();
    let detector = load(model);
    let out = detector.forward(&synthetic_input(640)).unwrap();
    assert_eq!(
        out.dims(),
        golden.output_shape.as_slice(),
        "{}",
        golden.model
    );
    let flat: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = (0.0f32, 0usize);
    for (k, &want) in golden.values.iter().enumerate() {
        let i = k * golden.sample_stride;
        let (got, want) = if is_coordinate(i) {
            (
                flat[i] / 640.0,
                if model.starts_with("coco") {
                    want
                } else {
                    want / 640.0
                },
            )
        } else {
            (flat[i], want)
        };
        let diff = (got - want).abs();
        if diff > worst.0 {
            worst = (diff, i);
        }
    }
    assert!(
        worst.0 <= 1e-3,
        "{model}: raw output differs by {} at flat index {}",
        worst.0,
        worst.1
    );
}

#[test]
fn fall_yolov8s_raw_output_matches_onnxruntime() {
    // [1, 6, 8400]: rows 0..4 are box coordinates.
    check_raw("fall-yolov8s", |i| i / 8400 < 4);
}

#[test]
fn coco_yolov5s_raw_output_matches_tfjs() {
    // [1, 25200, 85]: columns 0..4 are box coordinates.
    check_raw("coco-yolov5s", |i| i % 85 < 4);
}
