//! `vfctl detect`: run a model on image files.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{default_device, DetectorOptions, ModelStore};

use crate::StoreArgs;

/// Arguments of `vfctl detect`.
#[derive(clap::Args)]
pub struct DetectArgs {
    /// Model name, e.g. coco-yolov5s or fall-yolov8s.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Minimum confidence.
    #[arg(long, default_value_t = 0.25)]
    conf: f32,
    /// NMS IoU threshold (default: the model family's reference value).
    #[arg(long)]
    iou: Option<f32>,
    /// Maximum detections per image.
    #[arg(long, default_value_t = 300)]
    max_det: usize,
    /// Images run together in one forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    class_id: u32,
    label: &'a str,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// Runs `vfctl detect`.
pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let store = ModelStore::open(&args.store.models_dir)
        .context("model store missing (run `make models`)")?;
    let options = DetectorOptions {
        conf_threshold: args.conf,
        iou_threshold: args.iou,
        max_detections: args.max_det,
    };
    let detector = store.load(&args.model, &default_device(), options)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for chunk in args.images.chunks(args.batch.max(1)) {
        let images = chunk
            .iter()
            .map(|p| {
                image::open(p)
                    .with_context(|| format!("cannot read image {}", p.display()))
                    .map(|i| i.to_rgb8())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let views: Vec<RgbView<'_>> = images.iter().map(RgbView::from).collect();
        for (path, detections) in chunk.iter().zip(detector.detect(&views)?) {
            let image = path.to_string_lossy();
            for d in detections {
                let line = Line {
                    image: &image,
                    class_id: d.class_id,
                    label: &d.label,
                    score: round4(d.score),
                    bbox: d.bbox.map(round4),
                };
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            }
        }
    }
    Ok(())
}

/// Four decimals are plenty for scores and pixel boxes and keep lines readable.
fn round4(v: f32) -> f32 {
    (v * 10_000.0).round() / 10_000.0
}
