//! The inference service's error type and its one mapping to gRPC status codes.

use tonic::Status;

/// Everything that can fail while serving a frame or starting the pod.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The frame itself is malformed (no device id, no image, ...).
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The image cannot be decoded or has unusable dimensions.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image exceeds a configured limit.
    #[error("frame too large: {0}")]
    TooLarge(String),
    /// The frame names a model this pod does not serve.
    #[error("unknown model {name:?} (served: {served})")]
    UnknownModel {
        /// Requested name.
        name: String,
        /// Comma-separated served models.
        served: String,
    },
    /// The batch queue is full; the caller should retry later.
    #[error("queue full: retry after {retry_after_ms} ms")]
    QueueFull {
        /// Suggested back-off.
        retry_after_ms: u64,
    },
    /// The client's deadline passed before the frame ran; it was not run.
    #[error("deadline exceeded: the frame was not run")]
    DeadlineExceeded,
    /// The pod is shutting down.
    #[error("shutting down")]
    Draining,
    /// Kafka did not take the event.
    #[error("kafka delivery failed: {0}")]
    Publish(String),
    /// Kafka could not be reached or set up at start-up.
    #[error("cannot reach Kafka at {bootstrap}: {reason}")]
    KafkaUnavailable {
        /// The configured bootstrap servers.
        bootstrap: String,
        /// What went wrong.
        reason: String,
    },
    /// A protected call came without an `authorization: Bearer <token>` header.
    #[error("missing bearer token")]
    MissingToken,
    /// The bearer token is not in the device token file.
    #[error("unknown device token")]
    UnknownToken,
    /// A device-bound token carried a frame of another device.
    #[error("token is bound to device {bound:?}, not {device:?}")]
    WrongDevice {
        /// The device the token belongs to.
        bound: String,
        /// The device id the frame claims.
        device: String,
    },
    /// The detector failed.
    #[error("detector: {0}")]
    Detector(#[from] visionfleet_detector::Error),
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener or file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the frame can never succeed (it is rejected rather than retried).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::InvalidFrame(_)
                | Error::InvalidImage(_)
                | Error::TooLarge(_)
                | Error::UnknownModel { .. }
        )
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::InvalidFrame(_)
            | Error::InvalidImage(_)
            | Error::TooLarge(_)
            | Error::UnknownModel { .. } => Status::invalid_argument(message),
            Error::QueueFull { retry_after_ms } => {
                let mut status = Status::resource_exhausted(message);
                // Documented retry advice for clients that read trailers.
                if let Ok(v) = retry_after_ms.to_string().parse() {
                    status.metadata_mut().insert("retry-after-ms", v);
                }
                status
            }
            Error::DeadlineExceeded => Status::deadline_exceeded(message),
            Error::MissingToken | Error::UnknownToken => Status::unauthenticated(message),
            Error::WrongDevice { .. } => Status::permission_denied(message),
            Error::Draining | Error::Publish(_) | Error::KafkaUnavailable { .. } => {
                Status::unavailable(message)
            }
            Error::Detector(visionfleet_detector::Error::InvalidInput(_)) => {
                Status::invalid_argument(message)
            }
            Error::Detector(_) | Error::Config(_) | Error::Io(_) => Status::internal(message),
        }
    }
}

impl From<visionfleet_frame_codec::DecodeError> for Error {
    fn from(e: visionfleet_frame_codec::DecodeError) -> Self {
        use visionfleet_frame_codec::DecodeError as D;
        match e {
            D::InvalidFrame(m) => Error::InvalidFrame(m),
            D::InvalidImage(m) => Error::InvalidImage(m),
            D::TooLarge(m) => Error::TooLarge(m),
        }
    }
}
