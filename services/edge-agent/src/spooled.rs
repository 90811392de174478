//! Store-and-forward: capture appends every frame to the disk spool (synced) whether or not
//! the pod is reachable, and the uplink sends what the spool holds, oldest first, through
//! one `StreamFrames` stream with a bounded window. A frame leaves the spool only when its
//! acknowledgement arrives, so a crash, a reboot or an outage loses nothing that was
//! stored; after a reconnect or restart, frames whose acks were not seen are sent again
//! with the same sequence number (the pod's event id), counted as resends. Urgent frames
//! (see [`crate::priority`]) wait in their own lane and go out before routine ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use visionfleet_proto::v1::{AckStatus, Frame};

use crate::lanes::{Lane, Lanes};
use crate::metrics::{AgentMetrics, UplinkState};
use crate::priority::{Priority, PRIORITY_ATTRIBUTE};
use crate::source::Captured;
use crate::spool::Appended;
use crate::transport::Client;
use crate::uplink::{now_timestamp, refusal, to_frame, Reconnect, Summary, UplinkConfig};

/// The spool lanes shared by capture and uplink, the signal that they have new frames,
/// and the priority rules (fed by acknowledgements).
#[derive(Clone)]
pub struct SharedSpool {
    lanes: Arc<Mutex<Lanes>>,
    added: Arc<Notify>,
    priority: Arc<Priority>,
}

impl SharedSpool {
    /// Shares open lanes.
    pub fn new(lanes: Lanes, priority: Arc<Priority>) -> Self {
        Self {
            lanes: Arc::new(Mutex::new(lanes)),
            added: Arc::new(Notify::new()),
            priority,
        }
    }

    /// Locks the lanes (a poisoned lock still holds a consistent spool: every operation
    /// updates memory only after its disk write succeeded).
    pub fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The priority rules (for the trigger endpoint).
    pub fn priority(&self) -> &Arc<Priority> {
        &self.priority
    }

    /// Capture side: picks the lane, numbers the image, stores it and wakes the uplink.
    /// With the block policy it waits (on this blocking thread) until acknowledgements
    /// free room, unless `stop` is set. Returns the lane and the frame's fate.
    pub fn store(
        &self,
        cfg: &UplinkConfig,
        captured: Captured,
        stop: &watch::Receiver<bool>,
        metrics: &AgentMetrics,
    ) -> anyhow::Result<(Lane, Appended)> {
        let mut frame = to_frame(cfg, 0, captured);
        let lane = self.priority.lane_for(&frame.attributes);
        if lane == Lane::Urgent {
            frame
                .attributes
                .insert(PRIORITY_ATTRIBUTE.into(), lane.name().into());
        }
        // Numbered and stamped at each attempt, so that only stored frames take sequence
        // numbers.
        loop {
            let mut spool = self.lock();
            frame.sequence = spool.next_sequence(cfg.start_sequence);
            frame.captured_at = Some(now_timestamp());
            let appended = spool.append(lane, &frame)?;
            if appended == Appended::Stored {
                metrics.captured();
            }
            match appended {
                Appended::Full if !*stop.borrow() => {
                    drop(spool);
                    std::thread::sleep(Duration::from_millis(50));
                }
                outcome => {
                    drop(spool);
                    self.added.notify_one();
                    return Ok((lane, outcome));
                }
            }
        }
    }
}

/// Sends what the spool holds until capture is done (`capture_done`) and the spool is
/// empty, or until `stop`. Counts go to `metrics`.
pub async fn run(
    cfg: &UplinkConfig,
    spool: SharedSpool,
    mut capture_done: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<AgentMetrics>,
) -> anyhow::Result<Summary> {
    let m = metrics.as_ref();
    // Frames sent at least once by this process: sending one again is a resend. Frames
    // found in the spool at start were (probably) sent by the previous run.
    let mut sent_before: BTreeSet<u64> = spool.lock().waiting();
    let mut reconnect = Reconnect::new();
    loop {
        if finished(&spool, &capture_done) || *stop.borrow() {
            break;
        }
        let ended = async {
            let client = reconnect.connect(cfg, m).await?;
            stream_once(
                cfg,
                client,
                &spool,
                &mut capture_done,
                &mut stop,
                &mut sent_before,
                m,
            )
            .await
        }
        .await;
        if let Some(refused) = refusal(&ended) {
            m.set_state(UplinkState::Stopped);
            let left = spool.lock().len();
            return Err(anyhow::anyhow!(
                "{refused}; {left} frames stay in the spool"
            ));
        }
        reconnect.ended(cfg, ended);
        if finished(&spool, &capture_done) || *stop.borrow() {
            break;
        }
        reconnect
            .pause(cfg, &mut stop, m, || {
                format!("{} frames stay in the spool", spool.lock().len())
            })
            .await?;
    }
    m.set_state(UplinkState::Stopped);
    Ok(summary(&spool, m))
}

/// The counts so far, the spool's included.
pub fn summary(spool: &SharedSpool, m: &AgentMetrics) -> Summary {
    let lanes = spool.lock();
    m.refresh_spool(&lanes);
    let counters = lanes.counters();
    let mut summary = Summary::from_metrics(m);
    summary.spool = Some(counters.total());
    summary.lanes = Some(counters);
    summary
}

fn finished(spool: &SharedSpool, capture_done: &watch::Receiver<bool>) -> bool {
    *capture_done.borrow() && spool.lock().is_empty()
}

/// One connection's life. Returns whether any acknowledgement arrived.
async fn stream_once(
    cfg: &UplinkConfig,
    mut client: Client,
    spool: &SharedSpool,
    capture_done: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
    sent_before: &mut BTreeSet<u64>,
    m: &AgentMetrics,
) -> anyhow::Result<bool> {
    let (tx, rx) = mpsc::channel::<Frame>(cfg.window.max(1));
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Everything waiting is sent on this connection, urgent frames first, each lane
    // oldest first; a lane's cursor is the next sequence number to look at in it.
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut cursors: HashMap<Lane, u64> = HashMap::new();
    let mut progress = false;
    loop {
        // Fill the window from the spool.
        while in_flight.len() < cfg.window.max(1) {
            let next = {
                let s = spool.lock();
                let found = Lane::ALL.into_iter().find_map(|lane| {
                    let from = cursors.get(&lane).copied().unwrap_or(0);
                    s.next_waiting(lane, from).map(|seq| (lane, seq))
                });
                match found {
                    Some((lane, seq)) => s.read(seq)?.map(|f| (lane, seq, f)),
                    None => None,
                }
            };
            let Some((lane, seq, frame)) = next else {
                break;
            };
            cursors.insert(lane, seq + 1);
            if tx.send(frame).await.is_err() {
                anyhow::bail!("stream closed while sending");
            }
            in_flight.insert(seq);
            m.sent.inc();
            if !sent_before.insert(seq) {
                m.resent.inc();
            }
        }
        if in_flight.is_empty() && finished(spool, capture_done) {
            return Ok(progress);
        }
        tokio::select! {
            _ = spool.added.notified() => {}
            _ = capture_done.changed(), if !*capture_done.borrow() => {}
            ack = acks.message() => match ack? {
                Some(ack) => {
                    progress = true;
                    if in_flight.remove(&ack.sequence) {
                        match AckStatus::try_from(ack.status) {
                            Ok(AckStatus::Published) => {
                                m.acknowledged.inc();
                                spool.priority.saw_detections(ack.detection_count);
                            }
                            _ => {
                                tracing::warn!(sequence = ack.sequence, error = %ack.error, "frame rejected");
                                m.rejected.inc();
                            }
                        }
                        // Rejected frames leave the spool too: they can never succeed,
                        // and the pod put them on its dead-letter topic.
                        spool.lock().ack(ack.sequence)?;
                    }
                }
                None => anyhow::bail!("server ended the stream"),
            },
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(progress);
                }
            }
        }
    }
}
