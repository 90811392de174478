//! The JSON form of the detection event published to Kafka, shared by the publisher and by
//! every Rust consumer. Field names and meaning match the `DetectionEvent` message.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `content-type` header value of JSON events.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// CloudEvents `ce_type` of detection events.
pub const EVENT_TYPE: &str = "io.visionfleet.detection.v1";
/// CloudEvents `ce_type` of dead-letter records.
pub const REJECTION_TYPE: &str = "io.visionfleet.rejection.v1";

/// The deterministic id of a frame's event: consumers drop duplicates by it.
pub fn event_id(device_id: &str, sequence: u64) -> String {
    format!("{device_id}/{sequence}")
}

/// One frame's detections, as published to the detections topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionEvent {
    /// `<device_id>/<sequence>`; also the CloudEvents `ce_id` header.
    pub event_id: String,
    /// The device that captured the frame (also the message key).
    pub device_id: String,
    /// The frame's per-device sequence number.
    pub sequence: u64,
    /// Capture time by the device's clock, when the device sent one.
    pub captured_at: Option<DateTime<Utc>>,
    /// When the inference pod received the frame.
    pub received_at: DateTime<Utc>,
    /// When the detector finished with the frame.
    pub inferred_at: DateTime<Utc>,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Source image width in pixels.
    pub image_width: u32,
    /// Source image height in pixels.
    pub image_height: u32,
    /// Detected objects, best first.
    pub detections: Vec<EventDetection>,
    /// Seconds per pipeline stage.
    pub latencies: Latencies,
    /// The frame's attributes (line, station, lot, ...).
    pub attributes: BTreeMap<String, String>,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDetection {
    /// Class index.
    pub class_id: u32,
    /// Class name.
    pub label: String,
    /// Confidence in 0..=1.
    pub score: f32,
    /// `[x_min, y_min, x_max, y_max]` in source-image pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Image decoding.
    pub decode_seconds: f64,
    /// Waiting in the batch queue.
    pub queue_seconds: f64,
    /// Letterbox and normalisation (whole batch).
    pub preprocess_seconds: f64,
    /// Network forward pass (whole batch).
    pub forward_seconds: f64,
    /// Decoding and NMS (whole batch).
    pub postprocess_seconds: f64,
    /// Size of the batch the frame ran in.
    pub batch_size: u32,
}

/// A frame that can never succeed, as published to the dead-letter topic (no pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// `<device_id>/<sequence>`.
    pub event_id: String,
    /// The device that sent the frame.
    pub device_id: String,
    /// The frame's sequence number.
    pub sequence: u64,
    /// Machine-readable reason: `invalid_frame`, `invalid_image`, `too_large`, `unknown_model`.
    pub reason: String,
    /// Human-readable explanation.
    pub error: String,
    /// Requested model, if any.
    pub model: String,
    /// When the pod received the frame.
    pub received_at: DateTime<Utc>,
    /// The frame's attributes.
    pub attributes: BTreeMap<String, String>,
}
