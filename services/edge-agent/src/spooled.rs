//! Store-and-forward: capture appends every frame to the disk spool (synced) whether or not
//! the pod is reachable, and the uplink sends what the spool holds, oldest first, through
//! one `StreamFrames` stream with a bounded window. A frame leaves the spool only when its
//! acknowledgement arrives, so a crash, a reboot or an outage loses nothing that was
//! stored; after a reconnect or restart, frames whose acks were not seen are sent again
//! with the same sequence number (the pod's event id), counted as resends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use visionfleet_proto::v1::{AckStatus, Frame};

use crate::source::EncodedImage;
use crate::spool::{Appended, Spool};
use crate::uplink::{connect, now_timestamp, to_frame, Reconnect, Summary, UplinkConfig};

/// The spool shared by capture and uplink, and the signal that it has new frames.
#[derive(Clone)]
pub struct SharedSpool {
    spool: Arc<Mutex<Spool>>,
    added: Arc<Notify>,
}

impl SharedSpool {
    /// Shares an open spool.
    pub fn new(spool: Spool) -> Self {
        Self {
            spool: Arc::new(Mutex::new(spool)),
            added: Arc::new(Notify::new()),
        }
    }

    /// Locks the spool (a poisoned lock still holds a consistent spool: every operation
    /// updates memory only after its disk write succeeded).
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Capture side: numbers the image, stores it and wakes the uplink. With the block
    /// policy it waits (on this blocking thread) until acknowledgements free room, unless
    /// `stop` is set. Returns the frame's fate.
    pub fn store(
        &self,
        cfg: &UplinkConfig,
        image: EncodedImage,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Appended> {
        // Numbered and stamped at each attempt, so that only stored frames take sequence
        // numbers.
        let mut frame = to_frame(cfg, 0, image);
        loop {
            let mut spool = self.lock();
            frame.sequence = spool.next_sequence(cfg.start_sequence);
            frame.captured_at = Some(now_timestamp());
            match spool.append(&frame)? {
                Appended::Full if !*stop.borrow() => {
                    drop(spool);
                    std::thread::sleep(Duration::from_millis(50));
                }
                outcome => {
                    drop(spool);
                    self.added.notify_one();
                    return Ok(outcome);
                }
            }
        }
    }
}

/// Sends what the spool holds until capture is done (`capture_done`) and the spool is
/// empty, or until `stop`.
pub async fn run(
    cfg: &UplinkConfig,
    spool: SharedSpool,
    mut capture_done: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    // Frames sent at least once by this process: sending one again is a resend. Frames
    // found in the spool at start were (probably) sent by the previous run.
    let mut sent_before: BTreeSet<u64> = spool.lock().waiting_from(0).collect();
    let mut reconnect = Reconnect::new();
    loop {
        if finished(&spool, &capture_done) || *stop.borrow() {
            break;
        }
        let ended = stream_once(
            cfg,
            &spool,
            &mut capture_done,
            &mut stop,
            &mut sent_before,
            &mut summary,
        )
        .await;
        reconnect.ended(cfg, ended);
        if finished(&spool, &capture_done) || *stop.borrow() {
            break;
        }
        reconnect
            .pause(cfg, &mut stop, &mut summary, || {
                format!("{} frames stay in the spool", spool.lock().len())
            })
            .await?;
    }
    let s = spool.lock();
    summary.captured = s.counters().appended;
    summary.spool = Some(s.counters().clone());
    Ok(summary)
}

fn finished(spool: &SharedSpool, capture_done: &watch::Receiver<bool>) -> bool {
    *capture_done.borrow() && spool.lock().is_empty()
}

/// One connection's life. Returns whether any acknowledgement arrived.
async fn stream_once(
    cfg: &UplinkConfig,
    spool: &SharedSpool,
    capture_done: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
    sent_before: &mut BTreeSet<u64>,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let mut client = connect(cfg).await?;
    let (tx, rx) = mpsc::channel::<Frame>(cfg.window.max(1));
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Everything waiting is sent on this connection, oldest first; `cursor` is the next
    // sequence number to look at.
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut cursor = 0u64;
    let mut progress = false;
    loop {
        // Fill the window from the spool.
        while in_flight.len() < cfg.window.max(1) {
            let next = {
                let s = spool.lock();
                let seq = s.waiting_from(cursor).next();
                match seq {
                    Some(seq) => s.read(seq)?.map(|f| (seq, f)),
                    None => None,
                }
            };
            let Some((seq, frame)) = next else { break };
            cursor = seq + 1;
            if tx.send(frame).await.is_err() {
                anyhow::bail!("stream closed while sending");
            }
            in_flight.insert(seq);
            summary.sent += 1;
            if !sent_before.insert(seq) {
                summary.resent += 1;
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
                            Ok(AckStatus::Published) => summary.acknowledged += 1,
                            _ => {
                                tracing::warn!(sequence = ack.sequence, error = %ack.error, "frame rejected");
                                summary.rejected += 1;
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
