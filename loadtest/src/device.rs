//! One virtual edge device: a long-lived `StreamFrames` stream with a bounded in-flight
//! window. On each capture tick it sends the next frame if the window has room and
//! otherwise counts the tick as skipped (the pod is pushing back). Acks are matched to the
//! frames' capture instants. When the stream breaks it reconnects after a pause; frames
//! that were in flight stay "sent" unless their events turn up in Kafka.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{frame::Image, AckStatus, Frame};

use crate::images::ImageSet;
use crate::stats::Recorder;

/// A capture tick. In closed-loop mode it carries a permit of the global in-flight budget,
/// released when the frame's ack arrives.
pub struct Tick {
    /// The closed loop's permit, if any.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// A device's fixed settings.
pub struct DeviceSpec {
    /// Index in the fleet (picks its images).
    pub index: usize,
    /// Its device id.
    pub id: String,
    /// Frames it may have in flight.
    pub window: usize,
    /// Model to ask for (empty: the pod's default).
    pub model: String,
}

struct InFlight {
    captured: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Runs the device until its tick channel closes and every frame in flight is answered
/// (or its stream ends).
pub async fn run(
    spec: DeviceSpec,
    channel: Channel,
    mut ticks: mpsc::Receiver<Tick>,
    images: Arc<ImageSet>,
    rec: Arc<Recorder>,
) {
    let mut sequence = 0u64;
    let mut ticks_open = true;
    while ticks_open {
        let mut client = IngestClient::new(channel.clone()).max_encoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<Frame>(spec.window.max(1));
        let mut acks = match client.stream_frames(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                rec.stream_error(status.code());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        rec.stream(true);
        let mut tx = Some(tx);
        let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
        loop {
            tokio::select! {
                tick = ticks.recv(), if tx.is_some() => match tick {
                    Some(tick) => {
                        if in_flight.len() >= spec.window {
                            rec.with(|t| t.skipped_window_full += 1);
                            continue;
                        }
                        sequence += 1;
                        let frame = make_frame(&spec, sequence, &images);
                        in_flight.insert(sequence, InFlight {
                            captured: Instant::now(),
                            _permit: tick.permit,
                        });
                        rec.sent(format!("{}/{sequence}", spec.id));
                        let sender = tx.as_ref().expect("guarded by the select condition");
                        if sender.send(frame).await.is_err() {
                            break; // the stream is gone; the ack branch reports why
                        }
                    }
                    None => {
                        // Sending is over: half-close and wait for the remaining acks.
                        ticks_open = false;
                        tx = None;
                        if in_flight.is_empty() {
                            break;
                        }
                    }
                },
                ack = acks.message() => match ack {
                    Ok(Some(ack)) => {
                        let Some(f) = in_flight.remove(&ack.sequence) else { continue };
                        if ack.status == AckStatus::Published as i32 {
                            rec.published(&ack.event_id, f.captured);
                        } else {
                            rec.rejected(&ack.event_id, &ack.error);
                        }
                        if tx.is_none() && in_flight.is_empty() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        rec.stream_error(status.code());
                        break;
                    }
                },
            }
        }
        rec.stream(false);
        if ticks_open {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn make_frame(spec: &DeviceSpec, sequence: u64, images: &ImageSet) -> Frame {
    let (_, _, jpeg) = images.pick(spec.index, sequence);
    Frame {
        device_id: spec.id.clone(),
        sequence,
        captured_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        image: Some(Image::Jpeg(jpeg.clone())),
        attributes: HashMap::from([("source".to_string(), "loadtest".to_string())]),
        model: spec.model.clone(),
    }
}
