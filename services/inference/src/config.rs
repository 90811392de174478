//! The inference pod's configuration: flags with `VF_*` environment variables, validated
//! once at start-up with errors that name the bad setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// Inference pod configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "visionfleet-inference",
    version,
    about = "VisionFleet inference pod"
)]
pub struct Config {
    /// gRPC listen address (ingest API and grpc.health.v1).
    #[arg(long, env = "VF_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "VF_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "VF_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub kafka_bootstrap: String,
    /// Topic that receives one detection event per frame.
    #[arg(long, env = "VF_TOPIC", default_value = "visionfleet.detections.v1")]
    pub topic: String,
    /// Topic that receives frames that can never succeed (reason only, no pixels).
    #[arg(
        long,
        env = "VF_DEAD_LETTER_TOPIC",
        default_value = "visionfleet.detections.v1.dlq"
    )]
    pub dead_letter_topic: String,
    /// Partitions of the topics when they have to be created.
    #[arg(long, env = "VF_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Create the topics at start-up when missing (`false` where the pod's Kafka user may
    /// not create topics and they are provisioned elsewhere).
    #[arg(long, env = "VF_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topics: bool,
    /// Replication factor of created topics (-1: the broker's default).
    #[arg(long, env = "VF_TOPIC_REPLICATION", default_value_t = -1)]
    pub topic_replication: i32,
    /// Extra librdkafka producer settings, `key=value`, comma separated.
    #[arg(long = "kafka-opt", env = "VF_KAFKA_OPTS", value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_opts: Vec<(String, String)>,
    /// How long to wait for Kafka at start-up before giving up.
    #[arg(long, env = "VF_KAFKA_STARTUP_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_startup_timeout_ms: u64,
    /// How long librdkafka keeps retrying one event before the frame fails (and the
    /// stream is closed with UNAVAILABLE so the agent resends).
    #[arg(long, env = "VF_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 300_000)]
    pub kafka_delivery_timeout_ms: u64,
    /// Model store folder.
    #[arg(long, env = "VF_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Models to serve, comma separated; the first is the default for frames that name none.
    #[arg(
        long,
        env = "VF_MODELS",
        value_delimiter = ',',
        default_value = "coco-yolov5s"
    )]
    pub models: Vec<String>,
    /// Seconds between checks of the served models' manifests for a new version (0: off).
    #[arg(long, env = "VF_MODEL_POLL_SECONDS", default_value_t = 10)]
    pub model_poll_seconds: u64,
    /// Most frames run in one forward pass.
    #[arg(long, env = "VF_MAX_BATCH_SIZE", default_value_t = 8)]
    pub max_batch_size: usize,
    /// How long the batcher waits for more frames once one is queued.
    #[arg(long, env = "VF_MAX_QUEUE_DELAY_MS", default_value_t = 5)]
    pub max_queue_delay_ms: u64,
    /// Per-model batching, `MODEL=MAX_BATCH[:DELAY_MS[:PREFERRED/PREFERRED...]]`, comma
    /// separated (e.g. `coco-yolov5s=8:10:4/8`); models not named use the flags above.
    #[arg(long, env = "VF_BATCHING", value_delimiter = ',', value_parser = parse_batching)]
    pub batching: Vec<ModelBatching>,
    /// Frames that may wait for the detector, per model.
    #[arg(long, env = "VF_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Decoded image bytes that may wait for the detector, per model.
    #[arg(long, env = "VF_QUEUE_CAPACITY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub queue_capacity_bytes: usize,
    /// Frames one stream may have in flight before the server stops reading it.
    #[arg(long, env = "VF_STREAM_WINDOW", default_value_t = 16)]
    pub stream_window: usize,
    /// Largest accepted encoded image, in bytes (also the gRPC message limit).
    #[arg(long, env = "VF_MAX_FRAME_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Largest accepted decoded image, in pixels (checked from the header, before decoding).
    #[arg(long, env = "VF_MAX_PIXELS", default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Minimum detection confidence.
    #[arg(long, env = "VF_CONF_THRESHOLD", default_value_t = 0.25)]
    pub conf_threshold: f32,
    /// Most concurrent HTTP/2 streams per client connection (each `StreamFrames` call is one).
    #[arg(long, env = "VF_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub grpc_max_concurrent_streams: u32,
    /// Seconds between HTTP/2 keepalive pings (0: off); a client that does not answer
    /// within 10 s is disconnected, so half-open connections of vanished devices do not
    /// hold streams open.
    #[arg(long, env = "VF_GRPC_KEEPALIVE_SECONDS", default_value_t = 30)]
    pub grpc_keepalive_seconds: u64,
    /// Seconds to finish in-flight frames after SIGTERM.
    #[arg(long, env = "VF_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Log format: text or json.
    #[arg(long, env = "VF_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// PEM certificate chain the gRPC port serves TLS with (needs --tls-key); the HTTP
    /// metrics and probe port stays plain HTTP.
    #[arg(long, env = "VF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "VF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, gRPC clients must present a certificate signed by one
    /// of them (mutual TLS).
    #[arg(long, env = "VF_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// File of allowed device tokens, one `DEVICE_ID TOKEN` or `* TOKEN` a line; when set,
    /// the ingest and KServe services require `authorization: Bearer <token>`.
    #[arg(long, env = "VF_DEVICE_TOKENS")]
    pub device_tokens: Option<PathBuf>,
    /// Seconds between checks of --device-tokens for a change (0: read once at start-up).
    #[arg(long, env = "VF_DEVICE_TOKENS_POLL_SECONDS", default_value_t = 5)]
    pub device_tokens_poll_seconds: u64,
}

/// One model's batching settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBatching {
    /// Model name.
    pub model: String,
    /// Most frames per forward pass.
    pub max_batch_size: usize,
    /// Wait for more frames, when given.
    pub max_queue_delay_ms: Option<u64>,
    /// Preferred batch sizes, ascending.
    pub preferred: Vec<usize>,
}

fn parse_batching(s: &str) -> Result<ModelBatching, String> {
    let usage = || format!("expected MODEL=MAX_BATCH[:DELAY_MS[:P1/P2...]], got {s:?}");
    let (model, rest) = s.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.split(':');
    let max_batch_size = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(usage)?;
    let max_queue_delay_ms = match parts.next() {
        Some(v) if !v.is_empty() => Some(v.parse().map_err(|_| usage())?),
        _ => None,
    };
    let mut preferred: Vec<usize> = match parts.next() {
        Some(v) if !v.is_empty() => v
            .split('/')
            .map(|p| p.parse().map_err(|_| usage()))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    if parts.next().is_some() || model.is_empty() {
        return Err(usage());
    }
    preferred.sort_unstable();
    preferred.dedup();
    Ok(ModelBatching {
        model: model.to_string(),
        max_batch_size,
        max_queue_delay_ms,
        preferred,
    })
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl Config {
    /// Checks every setting; the error names the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, why: String| Err(Error::Config(format!("--{key}: {why}")));
        if self.kafka_bootstrap.trim().is_empty() {
            return bad("kafka-bootstrap", "must not be empty".into());
        }
        if self.topic.is_empty() || self.dead_letter_topic.is_empty() {
            return bad("topic", "topic names must not be empty".into());
        }
        if self.topic == self.dead_letter_topic {
            return bad("dead-letter-topic", "must differ from --topic".into());
        }
        if self.models.is_empty() || self.models.iter().any(|m| m.is_empty()) {
            return bad("models", "name at least one model".into());
        }
        if self.max_batch_size == 0 {
            return bad("max-batch-size", "must be at least 1".into());
        }
        if self.queue_capacity < self.max_batch_size {
            return bad(
                "queue-capacity",
                format!(
                    "must be at least --max-batch-size ({})",
                    self.max_batch_size
                ),
            );
        }
        if self.queue_capacity_bytes < 1024 * 1024 {
            return bad(
                "queue-capacity-bytes",
                "must be at least 1048576 (1 MiB)".into(),
            );
        }
        for b in &self.batching {
            let key = "batching";
            if !self.models.contains(&b.model) {
                return bad(key, format!("{} is not in --models", b.model));
            }
            if b.max_batch_size == 0 || b.max_batch_size > self.queue_capacity {
                return bad(
                    key,
                    format!(
                        "{}: max batch {} must be within 1..=--queue-capacity ({})",
                        b.model, b.max_batch_size, self.queue_capacity
                    ),
                );
            }
            if b.preferred.iter().any(|&p| p == 0 || p > b.max_batch_size) {
                return bad(
                    key,
                    format!(
                        "{}: preferred sizes {:?} must be within 1..={}",
                        b.model, b.preferred, b.max_batch_size
                    ),
                );
            }
        }
        if self.grpc_max_concurrent_streams == 0 {
            return bad("grpc-max-concurrent-streams", "must be at least 1".into());
        }
        if self.stream_window == 0 {
            return bad("stream-window", "must be at least 1".into());
        }
        if self.topic_partitions < 1 {
            return bad("topic-partitions", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.conf_threshold) {
            return bad("conf-threshold", "must be within 0..=1".into());
        }
        if self.max_frame_bytes < 1024 {
            return bad("max-frame-bytes", "must be at least 1024".into());
        }
        if self.log_format != "text" && self.log_format != "json" {
            return bad(
                "log-format",
                format!("expected text or json, got {:?}", self.log_format),
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls-key", "required when --tls-cert is set".into()),
            (None, Some(_)) => return bad("tls-cert", "required when --tls-key is set".into()),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return bad(
                "tls-client-ca",
                "needs --tls-cert and --tls-key (client certificates are checked over TLS)".into(),
            );
        }
        for (key, _) in &self.kafka_opts {
            if matches!(key.as_str(), "enable.idempotence" | "acks") {
                return bad(
                    "kafka-opt",
                    format!("{key} is fixed (idempotent producer, acks=all)"),
                );
            }
        }
        Ok(())
    }

    /// The batching policy of `model`: its `--batching` entry over the global flags.
    pub fn batch_policy(&self, model: &str) -> crate::batcher::BatchPolicy {
        let own = self.batching.iter().find(|b| b.model == model);
        crate::batcher::BatchPolicy {
            max_batch_size: own.map_or(self.max_batch_size, |b| b.max_batch_size),
            max_queue_delay: Duration::from_millis(
                own.and_then(|b| b.max_queue_delay_ms)
                    .unwrap_or(self.max_queue_delay_ms),
            ),
            queue_capacity: self.queue_capacity,
            queue_capacity_bytes: self.queue_capacity_bytes,
            preferred_batch_sizes: own.map(|b| b.preferred.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["visionfleet-inference"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]);
        c.validate().unwrap();
        assert_eq!(c.topic, "visionfleet.detections.v1");
        assert_eq!(c.models, vec!["coco-yolov5s"]);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = parse(&["--max-batch-size", "0"]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --max-batch-size: must be at least 1"
        );
        let err = parse(&["--queue-capacity", "4"]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --queue-capacity: must be at least --max-batch-size (8)"
        );
        let err = parse(&["--kafka-opt", "acks=1"]).validate().unwrap_err();
        assert!(err.to_string().contains("--kafka-opt: acks is fixed"));
        let err = parse(&["--dead-letter-topic", "visionfleet.detections.v1"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--dead-letter-topic: must differ"));
    }

    #[test]
    fn per_model_batching_overrides_the_defaults() {
        let c = parse(&["--models", "a,b", "--batching", "a=4:20:2/4"]);
        c.validate().unwrap();
        let a = c.batch_policy("a");
        assert_eq!((a.max_batch_size, a.max_queue_delay.as_millis()), (4, 20));
        assert_eq!(a.preferred_batch_sizes, vec![2, 4]);
        let b = c.batch_policy("b");
        assert_eq!((b.max_batch_size, b.max_queue_delay.as_millis()), (8, 5));
        assert!(b.preferred_batch_sizes.is_empty());
        let err = parse(&["--models", "a", "--batching", "z=4"])
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --batching: z is not in --models"
        );
        let err = parse(&["--models", "a", "--batching", "a=4::8"])
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --batching: a: preferred sizes [8] must be within 1..=4"
        );
        let err = Config::try_parse_from(["x", "--batching", "a=four"]).unwrap_err();
        assert!(
            err.to_string().contains("expected MODEL=MAX_BATCH"),
            "{err}"
        );
    }

    #[test]
    fn half_configured_tls_is_refused() {
        let err = parse(&["--tls-cert", "server.pem"]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --tls-key: required when --tls-cert is set"
        );
        let err = parse(&["--tls-key", "server.key"]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --tls-cert: required when --tls-key is set"
        );
        let err = parse(&["--tls-client-ca", "ca.pem"])
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --tls-client-ca: needs --tls-cert and --tls-key \
             (client certificates are checked over TLS)"
        );
        parse(&[
            "--tls-cert",
            "s.pem",
            "--tls-key",
            "s.key",
            "--tls-client-ca",
            "ca.pem",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn malformed_flags_are_refused_by_the_parser() {
        let err = Config::try_parse_from(["x", "--kafka-opt", "novalue"]).unwrap_err();
        assert!(err.to_string().contains("expected key=value"), "{err}");
        let err = Config::try_parse_from(["x", "--grpc-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--grpc-addr"), "{err}");
    }
}
