//! The tonic implementation of `visionfleet.v1.Ingest`: proto in, pipeline, proto out.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use visionfleet_proto::event::DetectionEvent;
use visionfleet_proto::v1::ingest_server::Ingest;
use visionfleet_proto::v1::{
    AckStatus, BoundingBox, DetectResponse, Detection, Frame, FrameAck, RejectReason,
    StageLatencies,
};

use crate::auth::{self, Caller};
use crate::error::Error;
use crate::pipeline::{FrameMeta, Pipeline};

/// The ingest service.
pub struct IngestService {
    pipeline: Arc<Pipeline>,
    window: usize,
    draining: watch::Receiver<bool>,
}

impl IngestService {
    /// Serves `pipeline`; each stream may have `window` frames in flight.
    pub fn new(pipeline: Arc<Pipeline>, window: usize, draining: watch::Receiver<bool>) -> Self {
        Self {
            pipeline,
            window,
            draining,
        }
    }
}

/// Counts a frame as in flight for as long as it lives.
struct InFlight(Arc<Pipeline>);

impl InFlight {
    fn new(p: &Arc<Pipeline>) -> Self {
        p.metrics.frames_received.inc();
        p.metrics.frames_in_flight.inc();
        Self(p.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.frames_in_flight.dec();
    }
}

/// Counts an open `StreamFrames` stream for as long as its task lives, however it ends.
struct OpenStream(Arc<Pipeline>);

impl OpenStream {
    fn new(p: &Arc<Pipeline>) -> Self {
        p.metrics.streams_open.inc();
        Self(p.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.metrics.streams_open.dec();
    }
}

/// A streamed frame after detection: its in-flight guard, identity and outcome.
type Detected = (InFlight, FrameMeta, Result<DetectionEvent, Error>);

/// A frame's way to its acknowledgement once it is handed to Kafka.
type Delivering = Pin<Box<dyn std::future::Future<Output = Result<FrameAck, Status>> + Send>>;

/// Detects one streamed frame (frames of a stream detect concurrently, in batches).
async fn detect_frame(pipeline: Arc<Pipeline>, frame: Frame) -> Detected {
    let guard = InFlight::new(&pipeline);
    let meta = Pipeline::meta(&frame);
    let result = pipeline.detect(frame, &meta, true, None).await;
    (guard, meta, result)
}

/// Turns a detected frame, taken in arrival order, into its delivery. Events are handed to
/// the producer here, in the order the device sent them, so each device's events keep their
/// order on the partition. Permanent failures become a REJECTED ack once the dead-letter
/// topic has the reason; anything retryable is an error that ends the stream, so the agent
/// reconnects and resends what was not acknowledged.
fn deliver(
    pipeline: &Arc<Pipeline>,
    (guard, meta, result): Detected,
) -> Result<Delivering, Status> {
    match result {
        Ok(event) => {
            let delivered = pipeline.publish(event)?;
            Ok(Box::pin(async move {
                let _guard = guard;
                let event = delivered.await?;
                Ok(published_ack(&event))
            }))
        }
        Err(e) if e.is_permanent() => {
            let pipeline = pipeline.clone();
            Ok(Box::pin(async move {
                let _guard = guard;
                let reason = pipeline.reject(&meta, &e).await?;
                Ok(rejected_ack(&meta, reason, &e))
            }))
        }
        Err(e) => {
            tracing::warn!(event_id = %meta.event_id(), error = %e, "frame failed, closing stream");
            Err(e.into())
        }
    }
}

fn published_ack(event: &DetectionEvent) -> FrameAck {
    FrameAck {
        device_id: event.device_id.clone(),
        sequence: event.sequence,
        status: AckStatus::Published as i32,
        event_id: event.event_id.clone(),
        detection_count: event.detections.len() as u32,
        ..Default::default()
    }
}

fn rejected_ack(meta: &FrameMeta, reason: RejectReason, e: &Error) -> FrameAck {
    FrameAck {
        device_id: meta.device_id.clone(),
        sequence: meta.sequence,
        status: AckStatus::Rejected as i32,
        event_id: meta.event_id(),
        reject_reason: reason as i32,
        error: e.to_string(),
        detection_count: 0,
    }
}

fn to_response(event: DetectionEvent) -> DetectResponse {
    DetectResponse {
        event_id: event.event_id,
        model: event.model,
        model_version: event.model_version,
        image_width: event.image_width,
        image_height: event.image_height,
        detections: event
            .detections
            .into_iter()
            .map(|d| Detection {
                class_id: d.class_id,
                label: d.label,
                score: d.score,
                r#box: Some(BoundingBox {
                    x_min: d.bbox[0],
                    y_min: d.bbox[1],
                    x_max: d.bbox[2],
                    y_max: d.bbox[3],
                }),
            })
            .collect(),
        latencies: Some(StageLatencies {
            decode_seconds: event.latencies.decode_seconds,
            queue_seconds: event.latencies.queue_seconds,
            preprocess_seconds: event.latencies.preprocess_seconds,
            forward_seconds: event.latencies.forward_seconds,
            postprocess_seconds: event.latencies.postprocess_seconds,
        }),
    }
}

/// The deadline a client sent in `grpc-timeout` (`<value><unit>`, unit one of H M S m u n).
pub fn request_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    Some(std::time::Instant::now() + parse_grpc_timeout(text)?)
}

fn parse_grpc_timeout(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (value, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

type AckStream = Pin<Box<dyn Stream<Item = Result<FrameAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamFramesStream = AckStream;

    async fn stream_frames(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<AckStream>, Status> {
        if *self.draining.borrow() {
            return Err(Error::Draining.into());
        }
        let caller = request.extensions().get::<Caller>().cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.window);
        let pipeline = self.pipeline.clone();
        let window = self.window;
        let mut draining = self.draining.clone();
        let open = OpenStream::new(&pipeline);
        tokio::spawn(async move {
            let _open = open;
            let mut detecting = FuturesOrdered::new();
            let mut delivering: FuturesUnordered<Delivering> = FuturesUnordered::new();
            let mut reading = true;
            loop {
                let in_flight = detecting.len() + delivering.len();
                tokio::select! {
                    // Only read while the window has room: HTTP/2 flow control then
                    // pushes back on the sender.
                    next = inbound.message(), if reading && in_flight < window => match next {
                        Ok(Some(frame)) => {
                            // A frame of another device ends the stream: the agent is
                            // misconfigured or the token leaked, and resending won't help.
                            if let Err(e) = auth::check_frame(caller.as_ref(), &frame.device_id, &pipeline.metrics) {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                            detecting.push_back(detect_frame(pipeline.clone(), frame));
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            // Reset or broken: no ack can reach the client any more, so
                            // the frames still being detected are dropped with the task
                            // (the agent resends what it did not see acknowledged).
                            tracing::debug!(%status, "stream closed by peer");
                            let _ = tx.try_send(Err(status));
                            return;
                        }
                    },
                    _ = tx.closed() => return, // the client stopped reading acks
                    Some(detected) = detecting.next(), if !detecting.is_empty() => {
                        match deliver(&pipeline, detected) {
                            Ok(d) => delivering.push(d),
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    Some(result) = delivering.next(), if !delivering.is_empty() => {
                        let failed = result.is_err();
                        if tx.send(result).await.is_err() || failed {
                            return; // peer gone, or the stream ends with that error
                        }
                    }
                    _ = draining.changed(), if reading => {
                        if *draining.borrow() {
                            reading = false;
                        }
                    }
                    else => break,
                }
                if !reading && detecting.is_empty() && delivering.is_empty() {
                    break;
                }
            }
            if *draining.borrow() {
                let _ = tx.send(Err(Error::Draining.into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn detect(&self, request: Request<Frame>) -> Result<Response<DetectResponse>, Status> {
        if *self.draining.borrow() {
            return Err(Error::Draining.into());
        }
        let deadline = request_deadline(request.metadata());
        let caller = request.extensions().get::<Caller>().cloned();
        let frame = request.into_inner();
        auth::check_frame(caller.as_ref(), &frame.device_id, &self.pipeline.metrics)?;
        let _in_flight = InFlight::new(&self.pipeline);
        let meta = Pipeline::meta(&frame);
        match self.pipeline.process(frame, &meta, false, deadline).await {
            Ok(event) => Ok(Response::new(to_response(event))),
            Err(e) => {
                if e.is_permanent() {
                    self.pipeline.reject(&meta, &e).await?;
                } else if let Error::QueueFull { .. } = e {
                    self.pipeline
                        .metrics
                        .frames_failed
                        .with_label_values(&["queue_full"])
                        .inc();
                } else if let Error::DeadlineExceeded = e {
                    self.pipeline
                        .metrics
                        .frames_failed
                        .with_label_values(&["deadline"])
                        .inc();
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
