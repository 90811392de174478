//! Detector speed: the forward pass alone and the whole path (JPEG decode, letterbox,
//! forward, NMS) at batch 1, 4 and 8 for both shipped models, 1080p pre-processing on one
//! core, and NMS on thousands of candidates. Needs `make models`. Thread count: candle uses
//! `RAYON_NUM_THREADS` (default: all cores); `make bench-detector` pins it.
//!
//! Run: `cargo bench -p visionfleet-detector --bench detector [-- FILTER]`.

use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::postprocess::{nms, Candidate, NmsOptions};
use visionfleet_detector::preprocess::letterbox_into;
use visionfleet_detector::{DetectorOptions, ModelStore};

fn models_dir() -> PathBuf {
    std::env::var_os("VF_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

/// The same deterministic input the golden tests use.
fn synthetic(batch: usize, size: usize) -> Tensor {
    let v = visionfleet_detector::preprocess::test_pattern(batch, size);
    Tensor::from_vec(v, (batch, 3, size, size), &Device::Cpu).expect("input tensor")
}

fn models(c: &mut Criterion) {
    let store = ModelStore::open(models_dir()).expect("models/ (run `make models`)");
    let bus = std::fs::read(models_dir().join("samples/bus.jpg")).expect("samples/bus.jpg");
    for name in ["fall-yolov8s", "coco-yolov5s"] {
        let det = store
            .load(name, &Device::Cpu, DetectorOptions::default())
            .expect("model loads");
        let mut forward = c.benchmark_group(format!("forward/{name}"));
        forward.sample_size(10).warm_up_time(Duration::from_secs(1));
        for batch in [1usize, 4, 8] {
            let input = synthetic(batch, det.manifest().input_size);
            forward.bench_with_input(BenchmarkId::from_parameter(batch), &input, |b, x| {
                b.iter(|| black_box(det.forward(x).expect("forward")))
            });
        }
        forward.finish();

        let mut e2e = c.benchmark_group(format!("end_to_end/{name}"));
        e2e.sample_size(10).warm_up_time(Duration::from_secs(1));
        for batch in [1usize, 4, 8] {
            e2e.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &n| {
                b.iter(|| {
                    let images: Vec<_> = (0..n)
                        .map(|_| image::load_from_memory(&bus).expect("jpeg").to_rgb8())
                        .collect();
                    let views: Vec<RgbView<'_>> = images.iter().map(RgbView::from).collect();
                    black_box(det.detect(&views).expect("detect"))
                })
            });
        }
        e2e.finish();
    }
}

/// A 1920x1080 JPEG made from bus.jpg, so that the content is a real photo.
fn jpeg_1080p() -> Vec<u8> {
    let bus = image::open(models_dir().join("samples/bus.jpg")).expect("samples/bus.jpg");
    let frame = bus.resize_exact(1920, 1080, image::imageops::FilterType::Triangle);
    let mut out = Cursor::new(Vec::new());
    frame
        .to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode");
    out.into_inner()
}

fn preprocessing(c: &mut Criterion) {
    let jpeg = jpeg_1080p();
    let mut out = vec![0f32; 3 * 640 * 640];
    let mut g = c.benchmark_group("preprocess_1080p");
    g.bench_function("decode", |b| {
        b.iter(|| black_box(image::load_from_memory(&jpeg).expect("jpeg").to_rgb8()))
    });
    let rgb = image::load_from_memory(&jpeg).expect("jpeg").to_rgb8();
    g.bench_function("letterbox", |b| {
        b.iter(|| black_box(letterbox_into(rgb.as_raw(), 1920, 1080, 640, &mut out)))
    });
    g.bench_function("decode_and_letterbox", |b| {
        b.iter(|| {
            let rgb = image::load_from_memory(&jpeg).expect("jpeg").to_rgb8();
            black_box(letterbox_into(rgb.as_raw(), 1920, 1080, 640, &mut out))
        })
    });
    g.finish();
}

fn nms_candidates(c: &mut Criterion) {
    // 5000 boxes in 80 classes scattered over a 640 input, overlapping in clusters.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f32 / 10_000.0
    };
    let cands: Vec<Candidate> = (0..5000)
        .map(|i| {
            let (cx, cy) = (next() * 600.0, next() * 600.0);
            let (w, h) = (20.0 + next() * 100.0, 20.0 + next() * 100.0);
            Candidate {
                class_id: i % 80,
                score: 0.25 + next() * 0.75,
                bbox: [cx, cy, cx + w, cy + h],
            }
        })
        .collect();
    c.bench_function("nms/5000_candidates", |b| {
        b.iter(|| black_box(nms(cands.clone(), &NmsOptions::default())))
    });
}

criterion_group!(benches, preprocessing, nms_candidates, models);
criterion_main!(benches);
