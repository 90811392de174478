//! Loading a model from the store: checksums, corrupt and truncated weight files and wrong
//! architectures give errors that name the problem.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use visionfleet_detector::import::write_model;
use visionfleet_detector::weights::Weights;
use visionfleet_detector::{DetectorOptions, Family, Manifest, ModelStore, Scale};

fn manifest(name: &str, family: Family) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1".into(),
        family,
        scale: Scale::N,
        class_names: vec!["part".into(), "defect".into()],
        input_size: 64,
        strides: vec![8, 16, 32],
        anchors: None,
        weights: String::new(),
        weights_sha256: String::new(),
        license: "test".into(),
        source: "zeros".into(),
    }
}

/// A yolov8n with all-zero weights, written through the importer's common path.
fn write_zero_model(dir: &Path, name: &str) -> Manifest {
    let rec = Weights::recording("yolov8");
    visionfleet_detector::models::yolov8::YoloV8::load(&rec, Scale::N, 2).unwrap();
    let tensors: HashMap<String, Tensor> = rec
        .recorded()
        .into_iter()
        .map(|s| {
            (
                s.name,
                Tensor::zeros(s.dims, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    write_model(dir, manifest(name, Family::Yolov8), tensors).unwrap()
}

fn load_err(dir: &Path, name: &str) -> String {
    match ModelStore::open(dir)
        .unwrap()
        .load(name, &Device::Cpu, DetectorOptions::default())
    {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_written_model_loads_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_zero_model(dir.path(), "zeros");
    assert_eq!(m.weights, "zeros.safetensors");
    assert_eq!(m.weights_sha256.len(), 64);
    let store = ModelStore::open(dir.path()).unwrap();
    assert_eq!(store.list().unwrap(), vec![m]);
    let det = store
        .load("zeros", &Device::Cpu, DetectorOptions::default())
        .unwrap();
    let img = image::RgbImage::new(100, 50);
    // Zero weights give 0.5 for every class, above the 0.25 threshold: NMS must still
    // return at most max_detections boxes, all inside the image.
    let out = det.detect(&[(&img).into()]).unwrap().remove(0);
    assert!(!out.is_empty() && out.len() <= 300);
    assert!(out.iter().all(|d| d.bbox[2] <= 100.0 && d.bbox[3] <= 50.0));
}

#[test]
fn corrupt_truncated_and_mismatched_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_zero_model(dir.path(), "zeros");
    let weights = dir.path().join("zeros.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    std::fs::write(&weights, &bytes).unwrap();
    let err = load_err(dir.path(), "zeros");
    assert!(err.contains("weights checksum mismatch"), "{err}");

    // Truncated file whose manifest checksum was updated: still refused, by the parser.
    let path = dir.path().join("zeros.json");
    bytes.truncate(n / 2);
    std::fs::write(&weights, &bytes).unwrap();
    let mut m = Manifest::load(&path).unwrap();
    m.weights_sha256 = visionfleet_detector::store::sha256_hex(&bytes);
    m.save(&path).unwrap();
    let err = load_err(dir.path(), "zeros");
    assert!(err.contains("not a safetensors file"), "{err}");

    // Weights of one architecture under a manifest of another.
    write_zero_model(dir.path(), "zeros");
    let mut m = Manifest::load(&path).unwrap();
    m.family = Family::Yolov5;
    m.anchors = Some(visionfleet_detector::manifest::yolov5_default_anchors());
    m.save(&path).unwrap();
    let err = load_err(dir.path(), "zeros");
    assert_eq!(
        err,
        "weights do not match the yolov5 architecture: tensor model.0.conv.weight has shape \
         [16, 3, 3, 3], expected [16, 3, 6, 6]"
    );

    let err = load_err(dir.path(), "nope");
    assert_eq!(err, "unknown model \"nope\" (available: zeros)");
}
