//! The uplink: one `StreamFrames` stream with a bounded window of unacknowledged frames.
//! Every frame stays in `pending` until its acknowledgement arrives; after a disconnect the
//! agent reconnects with exponential back-off and resends what is pending, in sequence order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use visionfleet_proto::v1::{frame::Image, AckStatus, Frame, FrameAck};

use crate::metrics::{AgentMetrics, CaptureDrop, UplinkState};
use crate::source::{Captured, EncodedImage};
use crate::transport::{Client, Transport};

/// Uplink settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Where the pods are and how to reach them.
    pub transport: Transport,
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
}

/// What happened, for the exit summary (read off [`AgentMetrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Frames that entered the pipeline (stored in the spool, or handed to the uplink).
    pub captured: u64,
    /// Frames skipped by motion gating.
    pub skipped_still: u64,
    /// Frames shaping could not decode (dropped, counted).
    pub skipped_undecodable: u64,
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
    /// The disk spool's counters (both lanes), when store-and-forward is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<crate::spool::SpoolCounters>,
    /// Each lane's counters, when store-and-forward is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lanes: Option<crate::lanes::LaneCounters>,
}

impl Summary {
    /// The counts so far.
    pub fn from_metrics(m: &AgentMetrics) -> Self {
        Self {
            captured: m.captured.get(),
            skipped_still: m.dropped_count(CaptureDrop::Still),
            skipped_undecodable: m.dropped_count(CaptureDrop::Undecodable),
            sent: m.sent.get(),
            resent: m.resent.get(),
            acknowledged: m.acknowledged.get(),
            rejected: m.rejected.get(),
            reconnects: m.reconnects.get(),
            spool: None,
            lanes: None,
        }
    }
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

/// The frame for a captured image: the configured attributes plus `source` (the file or
/// generator the image came from).
pub(crate) fn to_frame(cfg: &UplinkConfig, sequence: u64, captured: Captured) -> Frame {
    let Captured { image, source } = captured;
    let mut attributes = cfg.attributes.clone();
    attributes.insert(SOURCE_ATTRIBUTE.into(), source);
    Frame {
        device_id: cfg.device_id.clone(),
        sequence,
        captured_at: Some(now_timestamp()),
        image: Some(match image {
            EncodedImage::Jpeg(b) => Image::Jpeg(b),
            EncodedImage::Png(b) => Image::Png(b),
        }),
        attributes,
        model: cfg.model.clone(),
    }
}

/// The attribute naming where a frame came from.
pub const SOURCE_ATTRIBUTE: &str = "source";

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

/// A refusal that reconnecting cannot cure: the pod does not accept this device's
/// credentials (`UNAUTHENTICATED`, `PERMISSION_DENIED`). The agent stops with it, keeping
/// its spool, rather than retry with the same token for ever.
pub(crate) fn refusal(result: &anyhow::Result<bool>) -> Option<anyhow::Error> {
    let status = result
        .as_ref()
        .err()?
        .chain()
        .find_map(|c| c.downcast_ref::<tonic::Status>())?;
    let code = match status.code() {
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        _ => return None,
    };
    Some(anyhow::anyhow!(
        "the pod refused this device: {code}: {}",
        status.message()
    ))
}

/// Reconnection bookkeeping shared by both uplinks: which endpoint is in use (a
/// connection that failed or made no progress hands over to the next one), the back-off
/// (restarted after a connection that got acknowledgements), and giving up after
/// `give_up_after` without one.
pub(crate) struct Reconnect {
    failures: u32,
    last_good: Instant,
    endpoint: usize,
}

impl Reconnect {
    pub(crate) fn new() -> Self {
        Self {
            failures: 0,
            last_good: Instant::now(),
            endpoint: 0,
        }
    }

    /// Connects to the endpoint in use.
    pub(crate) async fn connect(
        &self,
        cfg: &UplinkConfig,
        metrics: &AgentMetrics,
    ) -> anyhow::Result<Client> {
        metrics.set_state(UplinkState::Connecting);
        metrics.endpoint_index.set(self.endpoint as i64);
        let client = cfg.transport.connect(self.endpoint).await?;
        metrics.set_state(UplinkState::Streaming);
        Ok(client)
    }

    fn endpoint_url<'a>(&self, cfg: &'a UplinkConfig) -> &'a str {
        let list = &cfg.transport.endpoints;
        &list[self.endpoint % list.len()]
    }

    /// Records how a connection ended: `Ok(progress)` or the error that broke it.
    pub(crate) fn ended(&mut self, cfg: &UplinkConfig, result: anyhow::Result<bool>) {
        match result {
            Ok(true) => {
                self.failures = 0;
                self.last_good = Instant::now();
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), endpoint = %self.endpoint_url(cfg), "uplink failed")
            }
        }
        if cfg.transport.endpoints.len() > 1 {
            self.endpoint = (self.endpoint + 1) % cfg.transport.endpoints.len();
            tracing::info!(endpoint = %self.endpoint_url(cfg), "uplink: failing over");
        }
    }

    /// Waits out the back-off (or until `stop` changes) before the next attempt, counting
    /// the reconnect; fails when there has been no working connection for too long,
    /// saying what is `left` undelivered.
    pub(crate) async fn pause(
        &mut self,
        cfg: &UplinkConfig,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        metrics: &AgentMetrics,
        left: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.last_good.elapsed() > cfg.give_up_after {
            metrics.set_state(UplinkState::Stopped);
            anyhow::bail!(
                "no working connection to {} for {:?}; {}",
                cfg.transport.endpoints.join(", "),
                cfg.give_up_after,
                left()
            );
        }
        metrics.set_state(UplinkState::Backoff);
        metrics.reconnects.inc();
        // With several endpoints, the first pass over the list is quick: back off only
        // once every endpoint has failed.
        let round = self.failures / cfg.transport.endpoints.len().max(1) as u32;
        let wait = backoff(round);
        self.failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        Ok(())
    }
}

/// Streams frames from `images` until it is closed and every frame is acknowledged, or
/// until `stop` fires (then pending frames are waited for no longer). Counts go to
/// `metrics`.
pub async fn run(
    cfg: &UplinkConfig,
    mut images: mpsc::Receiver<Captured>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<AgentMetrics>,
    numbering: Arc<AtomicU64>,
) -> anyhow::Result<Summary> {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut source_done = false;
    let mut reconnect = Reconnect::new();
    let m = metrics.as_ref();

    loop {
        if source_done && pending.is_empty() {
            break;
        }
        if *stop.borrow() {
            tracing::warn!(
                pending = pending.len(),
                "stopping with unacknowledged frames"
            );
            break;
        }
        let ended = async {
            let client = reconnect.connect(cfg, m).await?;
            stream_once(
                cfg,
                client,
                &mut images,
                &mut stop,
                &mut pending,
                &numbering,
                &mut source_done,
                m,
            )
            .await
        }
        .await;
        if let Some(refused) = refusal(&ended) {
            m.set_state(UplinkState::Stopped);
            return Err(anyhow::anyhow!(
                "{refused}; {} frames unacknowledged",
                pending.len()
            ));
        }
        reconnect.ended(cfg, ended);
        if source_done && pending.is_empty() {
            break;
        }
        reconnect
            .pause(cfg, &mut stop, m, || {
                format!("{} frames unacknowledged", pending.len())
            })
            .await?;
    }
    m.set_state(UplinkState::Stopped);
    Ok(Summary::from_metrics(m))
}

/// One connection's life. Returns whether any acknowledgement arrived.
#[allow(clippy::too_many_arguments)]
async fn stream_once(
    cfg: &UplinkConfig,
    mut client: Client,
    images: &mut mpsc::Receiver<Captured>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    pending: &mut BTreeMap<u64, Pending>,
    numbering: &AtomicU64,
    source_done: &mut bool,
    m: &AgentMetrics,
) -> anyhow::Result<bool> {
    let (tx, rx) = mpsc::channel::<Frame>(cfg.window.max(1));
    // Resend what the last connection left unacknowledged, oldest first. The window bounds
    // `pending`, so these fit in the channel without waiting.
    for p in pending.values() {
        tx.send(p.frame.clone()).await?;
        m.sent.inc();
        m.resent.inc();
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
                    let frame = to_frame(cfg, numbering.fetch_add(1, Ordering::Relaxed), image);
                    m.captured();
                    pending.insert(frame.sequence, Pending { frame: frame.clone() });
                    if tx.send(frame).await.is_err() {
                        anyhow::bail!("stream closed while sending");
                    }
                    m.sent.inc();
                }
                None => *source_done = true,
            },
            ack = acks.message() => match ack? {
                Some(ack) => {
                    progress = true;
                    record_ack(&ack, pending, m);
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

fn record_ack(ack: &FrameAck, pending: &mut BTreeMap<u64, Pending>, m: &AgentMetrics) {
    if ack.device_id.is_empty() || pending.remove(&ack.sequence).is_none() {
        // A duplicate acknowledgement (the frame was resent and both copies were
        // answered); the first one counted.
        return;
    }
    match AckStatus::try_from(ack.status) {
        Ok(AckStatus::Published) => m.acknowledged.inc(),
        Ok(AckStatus::Rejected) => {
            tracing::warn!(sequence = ack.sequence, error = %ack.error, "frame rejected");
            m.rejected.inc();
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
            transport: Transport {
                endpoints: vec!["http://x".into()],
                tls: None,
                token: None,
                max_message_bytes: 1 << 20,
            },
            device_id: "cam".into(),
            window: 4,
            start_sequence: 0,
            model: String::new(),
            attributes: HashMap::new(),
            give_up_after: Duration::from_secs(1),
        };
        let mut pending = BTreeMap::new();
        for s in 0..2 {
            pending.insert(
                s,
                Pending {
                    frame: to_frame(
                        &cfg,
                        s,
                        Captured {
                            image: EncodedImage::Jpeg(vec![1]),
                            source: "test".into(),
                        },
                    ),
                },
            );
        }
        let m = AgentMetrics::new();
        let ack = |sequence, status: AckStatus| FrameAck {
            device_id: "cam".into(),
            sequence,
            status: status as i32,
            ..Default::default()
        };
        record_ack(&ack(0, AckStatus::Published), &mut pending, &m);
        record_ack(&ack(0, AckStatus::Published), &mut pending, &m);
        record_ack(&ack(1, AckStatus::Rejected), &mut pending, &m);
        assert!(pending.is_empty());
        assert_eq!((m.acknowledged.get(), m.rejected.get()), (1, 1));
    }
}
