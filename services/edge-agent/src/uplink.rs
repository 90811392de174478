//! The uplink: one `StreamFrames` stream with a bounded window of unacknowledged frames.
//! Every frame stays in `pending` until its acknowledgement arrives; after a disconnect the
//! agent reconnects with exponential back-off and resends what is pending, in sequence order.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{frame::Image, AckStatus, Frame, FrameAck};

use crate::source::EncodedImage;

/// Uplink settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Server URL, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// This device's id.
    pub device_id: String,
    /// Most frames sent and not yet acknowledged.
    pub window: usize,
    /// Sequence number of the first frame.
    pub start_sequence: u64,
    /// Model to request (empty: the server's default).
    pub model: String,
    /// Attributes copied into every frame.
    pub attributes: HashMap<String, String>,
    /// Give up after this long without a working connection.
    pub give_up_after: Duration,
    /// Largest gRPC message.
    pub max_message_bytes: usize,
}

/// What happened, for the exit summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Frames taken from the source.
    pub captured: u64,
    /// Frames written to a stream, resends included.
    pub sent: u64,
    /// Of those, resends after a reconnect.
    pub resent: u64,
    /// Frames acknowledged as published to Kafka.
    pub acknowledged: u64,
    /// Frames the server rejected permanently.
    pub rejected: u64,
    /// Reconnections after a failed or broken stream.
    pub reconnects: u64,
    /// The disk spool's counters, when store-and-forward is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<crate::spool::SpoolCounters>,
}

/// A frame waiting for its acknowledgement.
struct Pending {
    frame: Frame,
}

/// The current time as a protobuf timestamp.
pub(crate) fn now_timestamp() -> prost_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

pub(crate) fn to_frame(cfg: &UplinkConfig, sequence: u64, image: EncodedImage) -> Frame {
    Frame {
        device_id: cfg.device_id.clone(),
        sequence,
        captured_at: Some(now_timestamp()),
        image: Some(match image {
            EncodedImage::Jpeg(b) => Image::Jpeg(b),
            EncodedImage::Png(b) => Image::Png(b),
        }),
        attributes: cfg.attributes.clone(),
        model: cfg.model.clone(),
    }
}

/// Back-off before reconnect attempt `n`: 100 ms doubling to 5 s, with up to 50% jitter so
/// a fleet that lost its server does not reconnect in lock step.
pub fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << n.min(6));
    let base = base.min(Duration::from_secs(5));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    base + base.mul_f64(f64::from(nanos % 500) / 1000.0)
}

/// Reconnection bookkeeping shared by both uplinks: the back-off restarts after a
/// connection that got acknowledgements, and the uplink gives up after `give_up_after`
/// without one.
pub(crate) struct Reconnect {
    failures: u32,
    last_good: Instant,
}

impl Reconnect {
    pub(crate) fn new() -> Self {
        Self {
            failures: 0,
            last_good: Instant::now(),
        }
    }

    /// Records how a connection ended: `Ok(progress)` or the error that broke it.
    pub(crate) fn ended(&mut self, cfg: &UplinkConfig, result: anyhow::Result<bool>) {
        match result {
            Ok(true) => {
                self.failures = 0;
                self.last_good = Instant::now();
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, endpoint = %cfg.endpoint, "uplink failed"),
        }
    }

    /// Waits out the back-off (or until `stop` changes) before the next attempt, counting
    /// the reconnect; fails when there has been no working connection for too long,
    /// saying what is `left` undelivered.
    pub(crate) async fn pause(
        &mut self,
        cfg: &UplinkConfig,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        summary: &mut Summary,
        left: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.last_good.elapsed() > cfg.give_up_after {
            anyhow::bail!(
                "no working connection to {} for {:?}; {}",
                cfg.endpoint,
                cfg.give_up_after,
                left()
            );
        }
        summary.reconnects += 1;
        let wait = backoff(self.failures);
        self.failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        Ok(())
    }
}

/// Connects to the pod: a short connect timeout (the caller retries with back-off) and
/// HTTP/2 keepalive so a dead link is noticed while idle.
pub(crate) async fn connect(cfg: &UplinkConfig) -> anyhow::Result<IngestClient<Channel>> {
    let channel = Endpoint::from_shared(cfg.endpoint.clone())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await?;
    Ok(IngestClient::new(channel)
        .max_encoding_message_size(cfg.max_message_bytes)
        .max_decoding_message_size(cfg.max_message_bytes))
}

/// Streams frames from `images` until it is closed and every frame is acknowledged, or
/// until `stop` fires (then pending frames are waited for no longer).
pub async fn run(
    cfg: &UplinkConfig,
    mut images: mpsc::Receiver<EncodedImage>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut next_sequence = cfg.start_sequence;
    let mut source_done = false;
    let mut reconnect = Reconnect::new();

    loop {
        if source_done && pending.is_empty() {
            return Ok(summary);
        }
        if *stop.borrow() {
            tracing::warn!(
                pending = pending.len(),
                "stopping with unacknowledged frames"
            );
            return Ok(summary);
        }
        let ended = stream_once(
            cfg,
            &mut images,
            &mut stop,
            &mut pending,
            &mut next_sequence,
            &mut source_done,
            &mut summary,
        )
        .await;
        reconnect.ended(cfg, ended);
        if source_done && pending.is_empty() {
            return Ok(summary);
        }
        reconnect
            .pause(cfg, &mut stop, &mut summary, || {
                format!("{} frames unacknowledged", pending.len())
            })
            .await?;
    }
}

/// One connection's life. Returns whether any acknowledgement arrived.
#[allow(clippy::too_many_arguments)]
async fn stream_once(
    cfg: &UplinkConfig,
    images: &mut mpsc::Receiver<EncodedImage>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    pending: &mut BTreeMap<u64, Pending>,
    next_sequence: &mut u64,
    source_done: &mut bool,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let mut client = connect(cfg).await?;
    let (tx, rx) = mpsc::channel::<Frame>(cfg.window.max(1));
    // Resend what the last connection left unacknowledged, oldest first. The window bounds
    // `pending`, so these fit in the channel without waiting.
    for p in pending.values() {
        tx.send(p.frame.clone()).await?;
        summary.sent += 1;
        summary.resent += 1;
    }
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut progress = false;
    loop {
        tokio::select! {
            image = images.recv(), if !*source_done && pending.len() < cfg.window => match image {
                Some(image) => {
                    let frame = to_frame(cfg, *next_sequence, image);
                    *next_sequence += 1;
                    summary.captured += 1;
                    pending.insert(frame.sequence, Pending { frame: frame.clone() });
                    if tx.send(frame).await.is_err() {
                        anyhow::bail!("stream closed while sending");
                    }
                    summary.sent += 1;
                }
                None => *source_done = true,
            },
            ack = acks.message() => match ack? {
                Some(ack) => {
                    progress = true;
                    record_ack(&ack, pending, summary);
                }
                None => anyhow::bail!("server ended the stream"),
            },
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(progress);
                }
            }
        }
        if *source_done && pending.is_empty() {
            return Ok(progress);
        }
    }
}

fn record_ack(ack: &FrameAck, pending: &mut BTreeMap<u64, Pending>, summary: &mut Summary) {
    if ack.device_id.is_empty() || pending.remove(&ack.sequence).is_none() {
        // A duplicate acknowledgement (the frame was resent and both copies were
        // answered); the first one counted.
        return;
    }
    match AckStatus::try_from(ack.status) {
        Ok(AckStatus::Published) => summary.acknowledged += 1,
        Ok(AckStatus::Rejected) => {
            tracing::warn!(sequence = ack.sequence, error = %ack.error, "frame rejected");
            summary.rejected += 1;
        }
        _ => tracing::warn!(
            sequence = ack.sequence,
            status = ack.status,
            "unknown ack status"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(
            backoff(0) >= Duration::from_millis(100) && backoff(0) < Duration::from_millis(151)
        );
        assert!(backoff(3) >= Duration::from_millis(800));
        assert!(backoff(30) <= Duration::from_millis(7500));
        assert!(backoff(30) >= Duration::from_secs(5));
    }

    #[test]
    fn acks_settle_pending_frames_once() {
        let cfg = UplinkConfig {
            endpoint: "http://x".into(),
            device_id: "cam".into(),
            window: 4,
            start_sequence: 0,
            model: String::new(),
            attributes: HashMap::new(),
            give_up_after: Duration::from_secs(1),
            max_message_bytes: 1 << 20,
        };
        let mut pending = BTreeMap::new();
        for s in 0..2 {
            pending.insert(
                s,
                Pending {
                    frame: to_frame(&cfg, s, EncodedImage::Jpeg(vec![1])),
                },
            );
        }
        let mut summary = Summary::default();
        let ack = |sequence, status: AckStatus| FrameAck {
            device_id: "cam".into(),
            sequence,
            status: status as i32,
            ..Default::default()
        };
        record_ack(&ack(0, AckStatus::Published), &mut pending, &mut summary);
        record_ack(&ack(0, AckStatus::Published), &mut pending, &mut summary);
        record_ack(&ack(1, AckStatus::Rejected), &mut pending, &mut summary);
        assert!(pending.is_empty());
        assert_eq!((summary.acknowledged, summary.rejected), (1, 1));
    }
}
