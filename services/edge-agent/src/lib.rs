//! The VisionFleet edge agent: takes frames from a source (image folder, watched folder,
//! MJPEG file, V4L2 camera, synthetic generator), shapes them (resize, re-encode, motion
//! gating), numbers them per device and streams them to an inference pod, keeping each
//! frame (on disk, with store-and-forward) until the pod acknowledges that its detection
//! event is in Kafka.

pub mod config;
mod config_file;
pub mod detect;
pub mod http;
pub mod lanes;
pub mod metrics;
pub mod priority;
pub mod shaping;
pub mod source;
pub mod spool;
pub mod spool_fs;
pub mod spooled;
pub mod status;
pub mod transport;
pub mod uplink;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub use config::AgentConfig;
pub use uplink::Summary;

use metrics::{AgentMetrics, CaptureDrop};
use shaping::{Shaped, Shaper};
use source::{Captured, FrameSource, Next};

/// Runs the agent until the source is finished and every frame is acknowledged, or until
/// `stop` becomes true.
pub async fn run(config: AgentConfig, stop: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let source = config.open_source()?;
    run_with_source(config, source, stop).await
}

/// Like [`run`] with an explicit source.
pub async fn run_with_source(
    config: AgentConfig,
    source: Box<dyn FrameSource>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let metrics = Arc::new(AgentMetrics::new());
    let uplink = config.uplink()?;
    let capture = Capture {
        source,
        fps: config.fps,
        shaper: Shaper::new(config.shaping()),
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
    let spool = match config.spool() {
        Some(spool_cfg) => {
            let lanes = lanes::Lanes::open(spool_cfg, config.urgent_share)?;
            if !lanes.is_empty() {
                tracing::info!(frames = lanes.len(), "spool: resuming with stored frames");
            }
            Some(spooled::SharedSpool::new(lanes, config.priority()))
        }
        None => None,
    };
    // Without a spool the uplink numbers frames from this counter, shared with `Detect`.
    let counter = Arc::new(AtomicU64::new(uplink.start_sequence));
    if let Some(addr) = config.http_addr {
        let state = http::AgentState {
            metrics: metrics.clone(),
            spool: spool.clone(),
            device_id: config.device_id.clone(),
            uplink: Arc::new(uplink.clone()),
            numbering: match &spool {
                Some(s) => detect::Numbering::Spool(s.clone()),
                None => detect::Numbering::Counter(counter.clone()),
            },
        };
        let bound = http::serve(addr, state).await?;
        tracing::info!(%bound, "agent HTTP: /metrics /status /trigger");
    }
    match spool {
        Some(shared) => run_spooled(&uplink, shared, capture, stop, metrics).await,
        None => run_direct(&uplink, capture, stop, metrics, counter).await,
    }
}

/// Without a spool: capture hands frames to the uplink through a small channel; the
/// uplink keeps them in memory until acknowledged.
async fn run_direct(
    uplink: &uplink::UplinkConfig,
    mut capture: Capture,
    stop: watch::Receiver<bool>,
    metrics: Arc<AgentMetrics>,
    numbering: Arc<AtomicU64>,
) -> anyhow::Result<Summary> {
    let (tx, rx) = mpsc::channel(2);
    let capture = tokio::task::spawn_blocking(move || {
        // Stops early when the uplink finished (stop requested).
        capture.run(|image| Ok(tx.blocking_send(image).is_ok()))
    });
    let summary = uplink::run(uplink, rx, stop, metrics, numbering).await?;
    capture.await??;
    Ok(summary)
}

/// Store-and-forward: capture appends to the disk spool on its own thread, whatever the
/// uplink's state; the uplink sends from the spool.
async fn run_spooled(
    uplink: &uplink::UplinkConfig,
    shared: spooled::SharedSpool,
    mut capture: Capture,
    stop: watch::Receiver<bool>,
    metrics: Arc<AgentMetrics>,
) -> anyhow::Result<Summary> {
    let (done_tx, done) = watch::channel(false);
    let (capture_spool, capture_cfg, capture_stop) = (shared.clone(), uplink.clone(), stop.clone());
    let capture_metrics = metrics.clone();
    let capture = tokio::task::spawn_blocking(move || {
        let result = capture.run(|image| {
            capture_spool.store(&capture_cfg, image, &capture_stop, &capture_metrics)?;
            Ok(!*capture_stop.borrow())
        });
        let _ = done_tx.send(true);
        result
    });
    spooled::run(uplink, shared.clone(), done, stop, metrics.clone()).await?;
    capture.await??;
    // Counted only now: on a stop, capture may store the frame in hand after the uplink
    // returned, and that frame must be in the summary (it is waiting in the spool).
    Ok(spooled::summary(&shared, &metrics))
}

/// The capture side: source, pacing, shaping.
struct Capture {
    source: Box<dyn FrameSource>,
    fps: f64,
    shaper: Shaper,
    metrics: Arc<AgentMetrics>,
    stop: watch::Receiver<bool>,
}

impl Capture {
    /// Takes images from the source at most `fps` per second (0: as fast as it gives
    /// them), shapes them and hands each kept one to `handle`, until the source ends,
    /// `stop` is set or `handle` returns `false`. Runs on a blocking thread: sources read
    /// files and encode JPEGs.
    fn run(
        &mut self,
        mut handle: impl FnMut(Captured) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let interval = (self.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / self.fps));
        let mut next = Instant::now();
        while !*self.stop.borrow() {
            let captured = match self.source.next()? {
                Next::Frame(c) => c,
                Next::Idle => continue,
                Next::Finished => break,
            };
            if let Some(every) = interval {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                // A source that fell behind (a slow disk) does not burst to catch up.
                next = next.max(now.checked_sub(every).unwrap_or(now)) + every;
            }
            let kept = match self.shaper.shape(captured) {
                Ok(Shaped::Keep(c)) => c,
                Ok(Shaped::Still) => {
                    self.metrics.dropped(CaptureDrop::Still);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "frame dropped");
                    self.metrics.dropped(CaptureDrop::Undecodable);
                    continue;
                }
            };
            if !handle(kept)? {
                break;
            }
        }
        Ok(())
    }
}
