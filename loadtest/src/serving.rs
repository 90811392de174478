//! The serving experiment. Phases, each against the same pod:
//! 1. raw: the detector in this process, batches of `--batch`, no gRPC or Kafka;
//! 2. saturation: a closed loop of `--concurrency` unary `Detect` calls (each answered only
//!    after Kafka has the event) for `--seconds`;
//! 3. 70% load: an open loop at 0.7x the saturation rate;
//! 4. overload: an open loop at 3x the saturation rate; shed calls are counted.
//!
//! Latencies are per call, send to response. Peak server memory is the pod's `VmHWM`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Device;
use tonic::transport::Channel;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{DetectorOptions, ModelStore};
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{frame::Image, Frame};

/// Arguments of `visionfleet-loadtest serving`.
#[derive(clap::Args)]
pub struct ServingArgs {
    /// The pod's gRPC URL.
    #[arg(long)]
    endpoint: String,
    /// The pod's process id (for its peak memory).
    #[arg(long)]
    pid: u32,
    /// Model store (for the raw detector phase).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Model to run.
    #[arg(long, default_value = "coco-yolov5s")]
    model: String,
    /// JPEG to send.
    #[arg(long, default_value = "models/samples/bus.jpg")]
    image: PathBuf,
    /// Batch size of the raw detector phase (the pod's --max-batch-size).
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Calls in flight in the saturation phase.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Length of each load phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn frame(jpeg: &[u8], seq: u64) -> Frame {
    Frame {
        device_id: "loadtest".into(),
        sequence: seq,
        captured_at: None,
        image: Some(Image::Jpeg(jpeg.to_vec())),
        attributes: HashMap::new(),
        model: String::new(),
    }
}

/// Outcome of a load phase.
struct Phase {
    ok: Vec<Duration>,
    shed: usize,
    other_errors: usize,
    elapsed: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn p99(&mut self) -> f64 {
        self.ok.sort();
        percentile(&self.ok, 0.99)
    }
}

async fn closed_loop(
    client: &IngestClient<Channel>,
    jpeg: &[u8],
    k: usize,
    secs: u64,
    seq0: u64,
) -> Phase {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let workers = (0..k).map(|w| {
        let mut c = client.clone();
        let jpeg = jpeg.to_vec();
        async move {
            let mut out = (Vec::new(), 0usize, 0usize);
            let mut seq = seq0 + (w as u64) * 1_000_000;
            while Instant::now() < end {
                let t = Instant::now();
                seq += 1;
                match c.detect(frame(&jpeg, seq)).await {
                    Ok(_) => out.0.push(t.elapsed()),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => out.1 += 1,
                    Err(_) => out.2 += 1,
                }
            }
            out
        }
    });
    let results = futures::future::join_all(workers).await;
    let mut phase = Phase {
        ok: Vec::new(),
        shed: 0,
        other_errors: 0,
        elapsed: start.elapsed(),
    };
    for (ok, shed, other) in results {
        phase.ok.extend(ok);
        phase.shed += shed;
        phase.other_errors += other;
    }
    phase
}

async fn open_loop(
    client: &IngestClient<Channel>,
    jpeg: &[u8],
    rate: f64,
    secs: u64,
    seq0: u64,
) -> Phase {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut next = start;
    let mut seq = seq0;
    while next < start + Duration::from_secs(secs) {
        tokio::time::sleep_until(next.into()).await;
        let mut c = client.clone();
        let f = frame(jpeg, seq);
        seq += 1;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            c.detect(f).await.map(|_| t.elapsed())
        }));
        next += interval;
    }
    let mut phase = Phase {
        ok: Vec::new(),
        shed: 0,
        other_errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => phase.ok.push(d),
            Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted => phase.shed += 1,
            _ => phase.other_errors += 1,
        }
    }
    phase.elapsed = start.elapsed();
    phase
}

/// Runs the experiment and prints the report and the summary line.
pub async fn run(a: ServingArgs) -> anyhow::Result<()> {
    let jpeg = std::fs::read(&a.image).with_context(|| format!("reading {}", a.image.display()))?;

    // 1. The detector alone, in this process, at the pod's batch size.
    let raw_fps = {
        let store = ModelStore::open(&a.models_dir)?;
        let jpeg = jpeg.clone();
        let (model, batch) = (a.model.clone(), a.batch.max(1));
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let det = store.load(&model, &Device::Cpu, DetectorOptions::default())?;
            let run = || -> anyhow::Result<()> {
                let imgs = (0..batch)
                    .map(|_| image::load_from_memory(&jpeg).map(|i| i.to_rgb8()))
                    .collect::<Result<Vec<_>, _>>()?;
                let views: Vec<RgbView<'_>> = imgs.iter().map(RgbView::from).collect();
                det.detect(&views)?;
                Ok(())
            };
            run()?; // warm-up
            let start = Instant::now();
            let mut frames = 0;
            while start.elapsed() < Duration::from_secs(10) || frames < 3 * batch {
                run()?;
                frames += batch;
            }
            Ok(frames as f64 / start.elapsed().as_secs_f64())
        })
        .await??
    };
    println!("raw detector: {raw_fps:.2} frames/s (batch {})", a.batch);

    let client = IngestClient::connect(a.endpoint.clone())
        .await?
        .max_encoding_message_size(64 << 20);
    let mut sat = closed_loop(&client, &jpeg, a.concurrency, a.seconds, 1).await;
    let sat_fps = sat.rate();
    println!(
        "saturation: {sat_fps:.2} frames/s, p99 {:.0} ms ({} ok, {} shed, {} errors)",
        sat.p99(),
        sat.ok.len(),
        sat.shed,
        sat.other_errors
    );
    let mut at70 = open_loop(&client, &jpeg, 0.7 * sat_fps, a.seconds, 10_000_000).await;
    println!(
        "70% load ({:.2}/s offered): p50 {:.0} ms, p99 {:.0} ms ({} ok, {} shed, {} errors)",
        0.7 * sat_fps,
        {
            at70.ok.sort();
            percentile(&at70.ok, 0.5)
        },
        at70.p99(),
        at70.ok.len(),
        at70.shed,
        at70.other_errors
    );
    let mut over = open_loop(&client, &jpeg, 3.0 * sat_fps, a.seconds, 20_000_000).await;
    let offered = over.ok.len() + over.shed + over.other_errors;
    let shed_pct = 100.0 * over.shed as f64 / offered.max(1) as f64;
    println!(
        "300% load ({:.2}/s offered): admitted p99 {:.0} ms, {} ok, {} shed, {} errors",
        3.0 * sat_fps,
        over.p99(),
        over.ok.len(),
        over.shed,
        over.other_errors
    );
    println!(
        "serving: pod {:.2} frames/s vs detector {:.2} frames/s raw ({:.0}%), overload p99 {:.0} ms vs {:.0} ms at 70% load, shed {:.0}%, max rss {:.0} MB",
        sat_fps,
        raw_fps,
        100.0 * sat_fps / raw_fps,
        over.p99(),
        at70.p99(),
        shed_pct,
        crate::report::peak_rss_mb(a.pid).unwrap_or(0.0)
    );
    Ok(())
}
