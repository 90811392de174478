//! Synchronous detection for callers on the edge box (a line controller that needs an
//! answer now): `POST /detect` on the agent's local port sends one image to a pod with
//! `Detect`, under this device's identity, and returns the detections as JSON. The pod
//! publishes the event too, so it gets a sequence number of its own from the agent's
//! numbering, shared with captured frames.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tonic::{Code, Status};
use visionfleet_proto::v1::DetectResponse;

use crate::source::{Captured, EncodedImage};
use crate::spooled::SharedSpool;
use crate::uplink::{now_timestamp, to_frame, UplinkConfig};

/// Where sequence numbers come from.
#[derive(Clone)]
pub enum Numbering {
    /// The spool: stored frames and `Detect` calls share its numbering.
    Spool(SharedSpool),
    /// Without a spool, a counter shared with the uplink.
    Counter(Arc<AtomicU64>),
}

impl Numbering {
    /// A number no other frame of this run takes.
    pub fn take(&self, floor: u64) -> u64 {
        match self {
            Numbering::Spool(s) => s.lock().reserve_sequence(floor),
            Numbering::Counter(c) => c.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The image type of `bytes`, by its signature.
pub fn sniff(bytes: Vec<u8>) -> Result<EncodedImage, String> {
    if bytes.is_empty() {
        return Err("empty body: POST a JPEG or PNG image".into());
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(EncodedImage::Png(bytes))
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        Ok(EncodedImage::Jpeg(bytes))
    } else {
        Err("the body is neither a JPEG nor a PNG image".into())
    }
}

/// Sends one image with `Detect`, trying the endpoints in order until one answers; the
/// pod's own answer (detections or a refusal) is returned as it is.
pub async fn detect(
    cfg: &UplinkConfig,
    sequence: u64,
    image: EncodedImage,
) -> Result<DetectResponse, Status> {
    let mut frame = to_frame(
        cfg,
        sequence,
        Captured {
            image,
            source: "detect".into(),
        },
    );
    frame.captured_at = Some(now_timestamp());
    let mut last = String::new();
    for index in 0..cfg.transport.endpoints.len() {
        match cfg.transport.connect(index).await {
            Ok(mut client) => return client.detect(frame).await.map(|r| r.into_inner()),
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(Status::unavailable(format!("no endpoint answered: {last}")))
}

/// The HTTP status for a pod's gRPC status.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::ResourceExhausted => 429,
        Code::DeadlineExceeded => 504,
        Code::Unavailable | Code::Cancelled => 503,
        _ => 502,
    }
}

/// The JSON answer for a detection.
pub fn to_json(r: &DetectResponse) -> serde_json::Value {
    let detections: Vec<serde_json::Value> = r
        .detections
        .iter()
        .map(|d| {
            let b = d
                .r#box
                .as_ref()
                .map_or([0.0; 4], |b| [b.x_min, b.y_min, b.x_max, b.y_max]);
            serde_json::json!({
                "class_id": d.class_id,
                "label": d.label,
                "score": d.score,
                "box": b,
            })
        })
        .collect();
    serde_json::json!({
        "event_id": r.event_id,
        "model": r.model,
        "model_version": r.model_version,
        "image_width": r.image_width,
        "image_height": r.image_height,
        "detections": detections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_told_by_their_signature() {
        assert!(matches!(
            sniff(vec![0xFF, 0xD8, 0xFF]),
            Ok(EncodedImage::Jpeg(_))
        ));
        assert!(matches!(
            sniff(b"\x89PNG\r\n\x1a\nrest".to_vec()),
            Ok(EncodedImage::Png(_))
        ));
        assert_eq!(
            sniff(Vec::new()).err().as_deref(),
            Some("empty body: POST a JPEG or PNG image")
        );
        assert_eq!(
            sniff(b"GIF89a".to_vec()).err().as_deref(),
            Some("the body is neither a JPEG nor a PNG image")
        );
    }

    #[test]
    fn grpc_refusals_map_to_http_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Unavailable), 503);
    }
}
