//! The fleet experiment: N virtual edge devices stream real JPEGs through `StreamFrames`
//! to one pod while an independent consumer reads the detections topic; then every frame
//! sent is accounted for by event id (lost, duplicated, refused) and the latencies are
//! reported.
//!
//! Arrival modes: `--fps` per device (cameras), `--rate` total open-loop constant arrivals
//! spread round-robin, or `--in-flight K` (closed loop, K frames outstanding fleet-wide).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::{Channel, Endpoint};

use crate::device::{self, DeviceSpec, Tick};
use crate::events::EventWatcher;
use crate::images::ImageSet;
use crate::report::Report;
use crate::stats::Recorder;

/// Arguments of `visionfleet-loadtest fleet`.
#[derive(clap::Args, Clone, serde::Serialize)]
pub struct FleetArgs {
    /// The pod's gRPC URL.
    #[arg(long)]
    pub endpoint: String,
    /// Kafka bootstrap servers of the pod's broker (for the independent consumer).
    #[arg(long)]
    pub kafka_bootstrap: String,
    /// The detections topic.
    #[arg(long, default_value = "visionfleet.detections")]
    pub topic: String,
    /// Virtual devices, each with its own connection and stream.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Frames per second per device (the default mode).
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,
    /// Open loop instead: this many frames per second in total, round-robin over devices.
    #[arg(long, conflicts_with = "in_flight")]
    pub rate: Option<f64>,
    /// Closed loop instead: this many frames in flight fleet-wide.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Frames one device may have unacknowledged.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds of load before measuring (excluded from latencies and throughput).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Seconds over which devices connect and start.
    #[arg(long, default_value_t = 5)]
    pub ramp_up: u64,
    /// Seconds to wait for outstanding acks after sending stops.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
    /// Seconds to wait for the consumer to see every published event.
    #[arg(long, default_value_t = 60)]
    pub consume_timeout: u64,
    /// Photos the frame set is made from.
    #[arg(long, default_value = "models/samples")]
    pub images: PathBuf,
    /// Model to ask for (empty: the pod's default).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Where results.json, summary.md and timeline.svg go.
    #[arg(long, default_value = ".state/loadtest")]
    pub out: PathBuf,
    /// The pod's process id, to report its peak memory.
    #[arg(long)]
    pub pod_pid: Option<u32>,
}

impl FleetArgs {
    /// One line naming the arrival mode.
    pub fn mode(&self) -> String {
        match (self.rate, self.in_flight) {
            (Some(r), _) => format!("open loop, {r} frames/s in total"),
            (_, Some(k)) => format!("closed loop, {k} frames in flight"),
            _ => format!("{} fps per device", self.fps),
        }
    }
}

/// Runs the experiment, writes the results and prints the summary line.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 s");
    anyhow::ensure!(
        args.fps > 0.0 && args.rate.is_none_or(|r| r > 0.0),
        "--fps and --rate must be positive"
    );
    let images = Arc::new(ImageSet::build(&args.images)?);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let run_id = format!(
        "lt{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 100_000_000
    );
    let prefix = format!("{run_id}-");

    let rec = Arc::new(Recorder::new(
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.duration),
    ));
    let measure_from_micros = (SystemTime::now() + Duration::from_secs(args.warmup))
        .duration_since(UNIX_EPOCH)?
        .as_micros() as i64;
    let watcher = EventWatcher::start(
        &args.kafka_bootstrap,
        &args.topic,
        &prefix,
        measure_from_micros,
    )?;

    // Devices: each its own connection (as real devices have), connected over the ramp-up.
    let endpoint = Endpoint::from_shared(args.endpoint.clone())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20));
    let mut tick_senders = Vec::with_capacity(args.devices);
    let mut tasks = Vec::with_capacity(args.devices);
    for index in 0..args.devices {
        let (tx, rx) = mpsc::channel::<Tick>(4);
        tick_senders.push(tx);
        let spec = DeviceSpec {
            index,
            id: format!("{prefix}{index:05}"),
            window: args.window,
            model: args.model.clone(),
        };
        let delay = ramp_delay(index, args.devices, args.ramp_up);
        let (endpoint, images, rec) = (endpoint.clone(), images.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let channel: Channel = endpoint.connect_lazy();
            device::run(spec, channel, rx, images, rec).await;
        }));
    }

    let progress = progress_bar(args.warmup + args.duration);
    let stop_sending = rec.send_until;
    let scheduler = tokio::spawn(schedule(args.clone(), tick_senders, stop_sending));
    let interrupted = tokio::select! {
        _ = tokio::signal::ctrl_c() => true,
        _ = watch_progress(&progress, &rec, stop_sending) => false,
    };
    scheduler.abort(); // drops the tick senders: devices half-close and drain
    let sending_ended = Instant::now();

    // Drain: wait for the acks of frames in flight.
    progress.set_message("draining: waiting for the acks of frames in flight");
    let drain_limit = if interrupted { 10 } else { args.drain_timeout };
    let drained = tokio::time::timeout(Duration::from_secs(drain_limit), async {
        tokio::select! {
            _ = futures::future::join_all(tasks.iter_mut()) => true,
            _ = tokio::signal::ctrl_c() => false,
        }
    })
    .await
    .unwrap_or(false);
    for t in &tasks {
        t.abort();
    }
    let drain_time = sending_ended.elapsed();

    // Wait until the consumer has seen every acknowledged event (and a little longer, to
    // catch duplicates that arrive late).
    progress.set_message("waiting for the consumer to read every published event");
    let published: Vec<String> = rec.with(|t| {
        t.frames
            .iter()
            .filter(|(_, f)| **f == crate::stats::Fate::Published)
            .map(|(id, _)| id.clone())
            .collect()
    });
    let consume_limit = if interrupted { 5 } else { args.consume_timeout };
    let deadline = Instant::now() + Duration::from_secs(consume_limit);
    while Instant::now() < deadline
        && !watcher.with(|s| published.iter().all(|id| s.counts.contains_key(id)))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watcher.stop();
    progress.finish_and_clear();

    let report = Report::build(
        &args,
        &images.describe(),
        &rec,
        &seen,
        interrupted || !drained,
        sending_ended,
        drain_time,
    );
    report.write(&args.out)?;
    println!("{}", report.markdown());
    println!("results: {}", args.out.display());
    println!("{}", report.summary_line());
    if interrupted {
        eprintln!("loadtest: interrupted, partial results written");
        std::process::exit(130);
    }
    Ok(())
}

/// When device `index` of `n` starts, spread evenly over the ramp-up.
fn ramp_delay(index: usize, n: usize, ramp_up: u64) -> Duration {
    Duration::from_secs_f64(ramp_up as f64 * index as f64 / n as f64)
}

/// Sends capture ticks until `until`, as the arrival mode says.
async fn schedule(args: FleetArgs, devices: Vec<mpsc::Sender<Tick>>, until: Instant) {
    let n = devices.len();
    match (args.rate, args.in_flight) {
        (Some(rate), _) => {
            let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0;
            while Instant::now() < until {
                every.tick().await;
                offer(&devices[i % n]);
                i += 1;
            }
        }
        (_, Some(k)) => {
            let budget = Arc::new(Semaphore::new(k.max(1)));
            let mut i = 0;
            while Instant::now() < until {
                let Ok(permit) = budget.clone().acquire_owned().await else {
                    return;
                };
                // A device whose window is full drops the permit at once; move on.
                devices[i % n]
                    .send(Tick {
                        permit: Some(permit),
                    })
                    .await
                    .ok();
                i += 1;
            }
        }
        _ => {
            // Cameras: each device ticks at its own fps, from its ramp-up start, with its
            // phase spread so that the fleet does not send in lockstep.
            let period = Duration::from_secs_f64(1.0 / args.fps);
            let tickers = devices.into_iter().enumerate().map(|(i, tx)| {
                let start = Instant::now()
                    + ramp_delay(i, n, args.ramp_up)
                    + period.mul_f64((i as f64 * 0.618_034) % 1.0);
                async move {
                    let mut every = tokio::time::interval_at(start.into(), period);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    while Instant::now() < until {
                        every.tick().await;
                        offer(&tx);
                    }
                }
            });
            futures::future::join_all(tickers).await;
        }
    }
}

/// Hands a tick to a device without waiting: a device that has not taken its previous
/// ticks is as pushed back as one with a full window.
fn offer(tx: &mpsc::Sender<Tick>) {
    let _ = tx.try_send(Tick { permit: None });
}

fn progress_bar(seconds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Updates the bar every second with live throughput until sending stops.
async fn watch_progress(bar: &ProgressBar, rec: &Recorder, until: Instant) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        every.tick().await;
        let elapsed = rec.start.elapsed();
        let last = elapsed.as_secs().saturating_sub(1) as usize;
        let msg = rec.with(|t| {
            let acks_last = t.timeline.get(last).map_or(0, |s| s.acks);
            format!(
                "sent {}  acked {}  {} frames/s  streams {}  skipped {}",
                t.sent,
                t.frames.len() as u64 - pending(t),
                acks_last,
                t.open_streams,
                t.skipped_window_full
            )
        });
        bar.set_position(elapsed.as_secs());
        bar.set_message(msg);
    }
}

fn pending(t: &crate::stats::Tally) -> u64 {
    t.frames
        .values()
        .filter(|f| **f == crate::stats::Fate::Sent)
        .count() as u64
}
