//! `vfctl profile`: where a CPU forward pass spends its time, convolution by convolution
//! (unfolding, GEMM, bias + activation) and in everything else (concatenations, pooling,
//! upsampling, the head's decoding). `make bench-detector` sets these layers beside ONNX
//! Runtime's per-node profile of the same network.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::Serialize;
use visionfleet_detector::models::cpu_conv::{self, LayerTime};
use visionfleet_detector::preprocess::test_pattern;
use visionfleet_detector::{DetectorOptions, ModelStore};

use crate::StoreArgs;

/// Arguments of `vfctl profile`.
#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Model name.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Profiled forward passes; each layer reports its median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also write the profile as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Profile {
    model: String,
    batch: usize,
    threads: usize,
    forward_ms: f64,
    convolutions_ms: f64,
    other_ms: f64,
    layers: Vec<LayerTime>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `vfctl profile`.
pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let store = ModelStore::open(&args.store.models_dir)?;
    // The profile covers the CPU convolution path, so it always runs on the CPU.
    let detector = store.load(&args.model, &Device::Cpu, DetectorOptions::default())?;
    let size = detector.manifest().input_size;
    let batch = args.batch.max(1);
    let input = Tensor::from_vec(
        test_pattern(batch, size),
        (batch, 3, size, size),
        &Device::Cpu,
    )?;
    detector.forward(&input)?; // warm-up: first-touch allocations, thread pool start

    let runs = args.runs.max(1);
    let mut totals = Vec::with_capacity(runs);
    let mut samples: Vec<Vec<LayerTime>> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (elapsed, layers) = cpu_conv::profile(|| {
            let t = Instant::now();
            detector.forward(&input).map(|_| t.elapsed())
        });
        totals.push(elapsed?.as_secs_f64() * 1e3);
        samples.push(layers);
    }
    let count = samples[0].len();
    anyhow::ensure!(
        samples.iter().all(|s| s.len() == count),
        "profiled runs saw different numbers of convolutions"
    );
    let layers: Vec<LayerTime> = (0..count)
        .map(|i| {
            let pick =
                |f: fn(&LayerTime) -> f64| median(samples.iter().map(|s| f(&s[i])).collect());
            LayerTime {
                ms: pick(|l| l.ms),
                im2col_ms: pick(|l| l.im2col_ms),
                gemm_ms: pick(|l| l.gemm_ms),
                epilogue_ms: pick(|l| l.epilogue_ms),
                ..samples[0][i].clone()
            }
        })
        .collect();
    let forward_ms = median(totals);
    let convolutions_ms: f64 = layers.iter().map(|l| l.ms).sum();
    let gflop: f64 = layers.iter().map(|l| l.gflop).sum();

    println!(
        "{:<24} {:>6} {:>11} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7}",
        "layer", "kernel", "output", "GFLOP", "ms", "GFLOP/s", "im2col", "gemm", "bias+act"
    );
    for l in &layers {
        println!(
            "{:<24} {:>3}/s{} {:>4}x{:>3}x{:<3} {:>7.3} {:>8.2} {:>8.1} {:>7.2} {:>7.2} {:>7.2}",
            l.name,
            format!("{}x{}", l.kernel, l.kernel),
            l.stride,
            l.c_out,
            l.out_h,
            l.out_w,
            l.gflop,
            l.ms,
            l.gflop / l.ms * 1e3,
            l.im2col_ms,
            l.gemm_ms,
            l.epilogue_ms
        );
    }
    let profile = Profile {
        model: args.model.clone(),
        batch,
        threads: candle_core::utils::get_num_threads(),
        forward_ms,
        convolutions_ms,
        other_ms: forward_ms - convolutions_ms,
        layers,
    };
    println!(
        "profile: model {} batch {} threads {}: forward {:.1} ms, {} convolutions {:.1} ms ({:.1} GFLOP, {:.0} GFLOP/s), other {:.1} ms (median of {runs})",
        profile.model,
        batch,
        profile.threads,
        forward_ms,
        count,
        convolutions_ms,
        gflop,
        gflop / convolutions_ms * 1e3,
        profile.other_ms
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&profile)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
