//! The VisionFleet edge agent: takes frames from a source (image folder, synthetic
//! generator), numbers them per device and streams them to an inference pod, keeping each
//! frame until the pod acknowledges that its detection event is in Kafka.

pub mod config;
pub mod source;
pub mod spool;
pub mod spooled;
pub mod uplink;

use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use config::AgentConfig;
pub use uplink::Summary;

use source::FrameSource;

/// Runs the agent until the source is finished and every frame is acknowledged, or until
/// `stop` becomes true.
pub async fn run(config: AgentConfig, stop: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let source = config.open_source()?;
    run_with_source(config, source, stop).await
}

/// Like [`run`] with an explicit source.
pub async fn run_with_source(
    config: AgentConfig,
    mut source: Box<dyn FrameSource>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    if let Some(spool_cfg) = config.spool() {
        return run_spooled(config, spool_cfg, source, stop).await;
    }
    let uplink = config.uplink();
    // Capture runs on a blocking thread (file reads, JPEG encoding) and hands frames over
    // through a small channel; fps pacing happens there.
    let (tx, rx) = mpsc::channel(2);
    let fps = config.fps;
    let capture = tokio::task::spawn_blocking(move || {
        // Stops early when the uplink finished (stop requested).
        capture_loop(source.as_mut(), fps, |image| {
            Ok(tx.blocking_send(image).is_ok())
        })
    });
    let summary = uplink::run(&uplink, rx, stop).await?;
    capture.await??;
    Ok(summary)
}

/// Store-and-forward: capture appends to the disk spool on its own thread, whatever the
/// uplink's state; the uplink sends from the spool.
async fn run_spooled(
    config: AgentConfig,
    spool_cfg: spool::SpoolConfig,
    mut source: Box<dyn FrameSource>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let uplink = config.uplink();
    let opened = spool::Spool::open(spool_cfg)?;
    if !opened.is_empty() {
        tracing::info!(frames = opened.len(), "spool: resuming with stored frames");
    }
    let shared = spooled::SharedSpool::new(opened);
    let (done_tx, done) = watch::channel(false);
    let fps = config.fps;
    let (capture_spool, capture_cfg, capture_stop) = (shared.clone(), uplink.clone(), stop.clone());
    let capture = tokio::task::spawn_blocking(move || {
        let result = capture_loop(source.as_mut(), fps, |image| {
            capture_spool.store(&capture_cfg, image, &capture_stop)?;
            Ok(!*capture_stop.borrow())
        });
        let _ = done_tx.send(true);
        result
    });
    let summary = spooled::run(&uplink, shared, done, stop).await?;
    capture.await??;
    Ok(summary)
}

/// Takes images from `source` at most `fps` per second (0: as fast as it gives them) and
/// hands each to `handle`, until the source ends or `handle` returns `false`. Runs on a
/// blocking thread: sources read files and encode JPEGs.
fn capture_loop(
    source: &mut dyn FrameSource,
    fps: f64,
    mut handle: impl FnMut(source::EncodedImage) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let interval = (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps));
    let mut next = std::time::Instant::now();
    while let Some(item) = source.next_image() {
        let (image, _path) = item?;
        if let Some(every) = interval {
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += every;
        }
        if !handle(image)? {
            break;
        }
    }
    Ok(())
}
