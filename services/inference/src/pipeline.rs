//! One frame's path through the pod: validate, decode, detect (through the model's batcher),
//! publish to Kafka. Permanent failures go to the dead-letter topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use visionfleet_proto::event::{event_id, DetectionEvent, EventDetection, Latencies, Rejection};
use visionfleet_proto::v1::{Frame, RejectReason};

use crate::batcher::FrameInput;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::registry::ModelRegistry;
use visionfleet_frame_codec::{decode, Limits};

/// Longest accepted device id.
const MAX_DEVICE_ID_BYTES: usize = 256;

/// The pod's shared state.
pub struct Pipeline {
    /// The served models.
    pub models: Arc<ModelRegistry>,
    /// Model for frames that name none.
    pub default_model: String,
    /// Kafka producer.
    pub publisher: Publisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Input limits.
    pub limits: Limits,
}

/// What identifies a frame, kept after its pixels are gone.
#[derive(Debug, Clone)]
pub struct FrameMeta {
    /// Device id.
    pub device_id: String,
    /// Sequence number.
    pub sequence: u64,
    /// Requested model (may be empty).
    pub model: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// When the pod received it.
    pub received_at: DateTime<Utc>,
}

impl FrameMeta {
    /// `<device>/<sequence>`.
    pub fn event_id(&self) -> String {
        event_id(&self.device_id, self.sequence)
    }
}

/// The reason code reported for a permanent failure.
pub fn reject_reason(e: &Error) -> RejectReason {
    match e {
        Error::InvalidFrame(_) => RejectReason::InvalidFrame,
        Error::TooLarge(_) => RejectReason::TooLarge,
        Error::UnknownModel { .. } => RejectReason::UnknownModel,
        _ => RejectReason::InvalidImage,
    }
}

fn reason_label(r: RejectReason) -> &'static str {
    match r {
        RejectReason::InvalidFrame => "invalid_frame",
        RejectReason::InvalidImage => "invalid_image",
        RejectReason::TooLarge => "too_large",
        RejectReason::UnknownModel => "unknown_model",
        RejectReason::Unspecified => "unspecified",
    }
}

fn timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

impl Pipeline {
    /// Splits a frame into its identity and its image.
    pub fn meta(frame: &Frame) -> FrameMeta {
        FrameMeta {
            device_id: frame.device_id.clone(),
            sequence: frame.sequence,
            model: frame.model.clone(),
            attributes: frame.attributes.clone().into_iter().collect(),
            received_at: Utc::now(),
        }
    }

    fn served(&self) -> String {
        self.models.names().join(", ")
    }

    /// Runs a frame end to end and returns the event once Kafka has it. With
    /// `wait_for_room`, a full queue waits instead of failing.
    pub async fn process(
        &self,
        frame: Frame,
        meta: &FrameMeta,
        wait_for_room: bool,
        deadline: Option<Instant>,
    ) -> Result<DetectionEvent, Error> {
        let event = self.detect(frame, meta, wait_for_room, deadline).await?;
        self.publish(event)?.await
    }

    /// Validates, decodes and runs a frame through the detector: everything but publishing.
    pub async fn detect(
        &self,
        frame: Frame,
        meta: &FrameMeta,
        wait_for_room: bool,
        deadline: Option<Instant>,
    ) -> Result<DetectionEvent, Error> {
        if meta.device_id.is_empty() {
            return Err(Error::InvalidFrame("device_id is empty".into()));
        }
        if meta.device_id.len() > MAX_DEVICE_ID_BYTES {
            return Err(Error::InvalidFrame(format!(
                "device_id is {} bytes, the limit is {MAX_DEVICE_ID_BYTES}",
                meta.device_id.len()
            )));
        }
        let model_name = if meta.model.is_empty() {
            &self.default_model
        } else {
            &meta.model
        };
        let batcher = self
            .models
            .get(model_name)
            .ok_or_else(|| Error::UnknownModel {
                name: model_name.clone(),
                served: self.served(),
            })?;

        let limits = self.limits;
        let started = Instant::now();
        let image = tokio::task::spawn_blocking(move || decode(frame.image.as_ref(), &limits))
            .await
            .map_err(|e| Error::InvalidImage(format!("decoder crashed: {e}")))??;
        let decode_time = started.elapsed();
        self.metrics
            .stage_duration
            .with_label_values(&["decode"])
            .observe(decode_time.as_secs_f64());
        let (width, height) = image.dimensions();

        let out = batcher
            .run_input(FrameInput::Image(image), wait_for_room, deadline)
            .await?;
        let manifest = batcher.manifest();
        let event = DetectionEvent {
            event_id: meta.event_id(),
            device_id: meta.device_id.clone(),
            sequence: meta.sequence,
            captured_at: frame.captured_at.as_ref().and_then(timestamp),
            received_at: meta.received_at,
            inferred_at: Utc::now(),
            model: manifest.name.clone(),
            model_version: manifest.version.clone(),
            image_width: width,
            image_height: height,
            detections: out
                .detections
                .iter()
                .map(|d| EventDetection {
                    class_id: d.class_id,
                    label: d.label.clone(),
                    score: d.score,
                    bbox: d.bbox,
                })
                .collect(),
            latencies: Latencies {
                decode_seconds: decode_time.as_secs_f64(),
                queue_seconds: out.queue_wait.as_secs_f64(),
                preprocess_seconds: out.timings.preprocess.as_secs_f64(),
                forward_seconds: out.timings.forward.as_secs_f64(),
                postprocess_seconds: out.timings.postprocess.as_secs_f64(),
                batch_size: out.batch_size as u32,
            },
            attributes: meta.attributes.clone(),
        };
        Ok(event)
    }

    /// Hands the event to Kafka now (keeping the order of calls on the partition) and
    /// returns a future that resolves to the event once the broker has confirmed it.
    pub fn publish(
        &self,
        event: DetectionEvent,
    ) -> Result<
        impl std::future::Future<Output = Result<DetectionEvent, Error>> + Send + 'static,
        Error,
    > {
        let metrics = self.metrics.clone();
        let delivered = self.publisher.enqueue(&event).inspect_err(|_| {
            metrics.frames_failed.with_label_values(&["kafka"]).inc();
        })?;
        Ok(async move {
            let delivery = delivered.await.inspect_err(|_| {
                metrics.frames_failed.with_label_values(&["kafka"]).inc();
            })?;
            metrics.kafka_delivery.observe(delivery.as_secs_f64());
            metrics.frames_published.inc();
            if let Some(captured) = event.captured_at {
                let age = (Utc::now() - captured).to_std().unwrap_or(Duration::ZERO);
                metrics.capture_to_published.observe(age.as_secs_f64());
            }
            Ok(event)
        })
    }

    /// Records a permanent failure: counted, and its reason published to the dead-letter
    /// topic (so that nothing is silently lost). Returns the reason code.
    pub async fn reject(&self, meta: &FrameMeta, error: &Error) -> Result<RejectReason, Error> {
        let reason = reject_reason(error);
        self.metrics
            .frames_rejected
            .with_label_values(&[reason_label(reason)])
            .inc();
        tracing::info!(event_id = %meta.event_id(), reason = reason_label(reason), error = %error, "frame rejected");
        let rejection = Rejection {
            event_id: meta.event_id(),
            device_id: meta.device_id.clone(),
            sequence: meta.sequence,
            reason: reason_label(reason).to_string(),
            error: error.to_string(),
            model: meta.model.clone(),
            received_at: meta.received_at,
            attributes: meta.attributes.clone(),
        };
        self.publisher.publish_rejection(&rejection).await?;
        Ok(reason)
    }
}
