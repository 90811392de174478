//! `vfctl bench`: quick latency numbers for a model on this machine (decode, letterbox,
//! forward, NMS), for people; the criterion benchmarks are the reference measurements.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{default_device, DetectorOptions, ModelStore};

use crate::StoreArgs;

/// Arguments of `vfctl bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model name.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// JPEG or PNG to run (default: models/samples/bus.jpg).
    #[arg(long)]
    image: Option<PathBuf>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `vfctl bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let store = ModelStore::open(&args.store.models_dir)?;
    let detector = store.load(&args.model, &default_device(), DetectorOptions::default())?;
    let path = args
        .image
        .unwrap_or_else(|| args.store.models_dir.join("samples/bus.jpg"));
    let encoded = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let batch = args.batch.max(1);
    let (mut total, mut forward) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.iters.max(1) {
        let t0 = Instant::now();
        let images = (0..batch)
            .map(|_| image::load_from_memory(&encoded).map(|i| i.to_rgb8()))
            .collect::<Result<Vec<_>, _>>()?;
        let views: Vec<RgbView<'_>> = images.iter().map(RgbView::from).collect();
        let (_, timings) = detector.detect_timed(&views)?;
        if i >= args.warmup {
            total.push(t0.elapsed());
            forward.push(timings.forward);
        }
    }
    let per_image = |d: Duration| d.as_secs_f64() * 1000.0 / batch as f64;
    println!(
        "bench: model {} batch {} threads {}: forward {:.1} ms/batch, end to end {:.1} ms/image (median of {})",
        args.model,
        batch,
        candle_core::utils::get_num_threads(),
        median(forward).as_secs_f64() * 1000.0,
        per_image(median(total)),
        args.iters.max(1)
    );
    Ok(())
}
