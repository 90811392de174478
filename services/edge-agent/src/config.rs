//! Agent configuration: flags, `VF_*` environment variables and an optional TOML file
//! (`--config`), in that order of precedence; checked at start-up with messages that name
//! the bad setting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::priority::Priority;
use crate::shaping::ShapingConfig;
use crate::source::{FolderSource, FrameSource, MjpegSource, SyntheticSource};
use crate::spool::{FullPolicy, SpoolConfig};
use crate::transport::{Secret, TlsSettings, Transport};
use crate::uplink::UplinkConfig;

/// Which source to capture from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Every image of the folder `--path`, `--repeat` times.
    Folder,
    /// The images in the folder `--path`, then each new one as it appears, until stopped.
    Watch,
    /// The frames of the MJPEG file `--path`, `--repeat` times.
    Mjpeg,
    /// `--count` generated frames of `--width` x `--height`.
    Synthetic,
    /// A V4L2 camera, `--path` (e.g. /dev/video0), Motion-JPEG at about `--width` x
    /// `--height`; needs the `v4l2` build feature.
    V4l2,
}

/// Edge agent configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "visionfleet-edge-agent",
    version,
    about = "VisionFleet edge agent",
    after_help = "Subcommand: `visionfleet-edge-agent status --spool-dir DIR [--http-addr ADDR]` prints what an agent's spool holds (and the running agent's state)."
)]
pub struct AgentConfig {
    /// TOML file of settings named like the flags (`spool-dir = "/var/lib/vf"`); flags and
    /// environment variables win over it.
    #[arg(long, env = "VF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Inference endpoint URLs, comma separated: tried in order, a failed one hands over
    /// to the next (failover).
    #[arg(
        long,
        env = "VF_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: Vec<String>,
    /// This device's id (the Kafka key of its events).
    #[arg(long, env = "VF_DEVICE_ID")]
    pub device_id: String,
    /// Frame source.
    #[arg(long, env = "VF_SOURCE", value_enum, default_value = "folder")]
    pub source: SourceKind,
    /// Folder, MJPEG file or camera device of the source.
    #[arg(long, env = "VF_SOURCE_PATH")]
    pub path: Option<PathBuf>,
    /// How many times the folder and MJPEG sources go through their frames.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Frames from the synthetic source.
    #[arg(long, default_value_t = 10)]
    pub count: u64,
    /// Synthetic frame width (and the camera's requested width).
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Synthetic frame height (and the camera's requested height).
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Capture rate limit in frames per second (0: as fast as the source gives them).
    #[arg(long, env = "VF_FPS", default_value_t = 0.0)]
    pub fps: f64,
    /// Shrink frames wider than this (keeping the aspect ratio) before sending.
    #[arg(long, env = "VF_MAX_WIDTH")]
    pub max_width: Option<u32>,
    /// Shrink frames taller than this (keeping the aspect ratio) before sending.
    #[arg(long, env = "VF_MAX_HEIGHT")]
    pub max_height: Option<u32>,
    /// Re-encode every frame as JPEG at this quality (1-100).
    #[arg(long, env = "VF_JPEG_QUALITY")]
    pub jpeg_quality: Option<u8>,
    /// Motion gating: skip (and count) frames whose mean difference from the last sent one
    /// is below this percentage of full scale (e.g. 1.5).
    #[arg(long, env = "VF_MOTION_THRESHOLD")]
    pub motion_threshold: Option<f32>,
    /// Frames sent and not yet acknowledged, at most.
    #[arg(long, env = "VF_WINDOW", default_value_t = 8)]
    pub window: usize,
    /// Model to request (default: the server's).
    #[arg(long, env = "VF_MODEL", default_value = "")]
    pub model: String,
    /// Attributes added to every frame, `key=value`, comma separated.
    #[arg(long = "attribute", value_delimiter = ',', value_parser = parse_kv)]
    pub attributes: Vec<(String, String)>,
    /// First sequence number (default: microseconds since the epoch, so numbers keep
    /// increasing across restarts).
    #[arg(long)]
    pub start_sequence: Option<u64>,
    /// Give up after this many seconds without a working connection.
    #[arg(long, env = "VF_GIVE_UP_AFTER_SECONDS", default_value_t = 60)]
    pub give_up_after_seconds: u64,
    /// Print the summary as JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "VF_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// Store-and-forward: keep every captured frame in this folder (synced to disk) until
    /// the pod acknowledges it, across outages, crashes and restarts.
    #[arg(long, env = "VF_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may use on disk (both lanes).
    #[arg(long, env = "VF_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Frames older than this (capture time) are dropped from the spool, counted; 0 keeps
    /// them until there is no room.
    #[arg(long, env = "VF_SPOOL_TTL_SECONDS", default_value_t = 86_400)]
    pub spool_ttl_seconds: u64,
    /// What to do when the spool is full.
    #[arg(
        long,
        env = "VF_SPOOL_FULL_POLICY",
        value_enum,
        default_value = "drop-oldest"
    )]
    pub spool_full_policy: FullPolicy,
    /// Share of the spool budget reserved for urgent frames (0-1).
    #[arg(long, env = "VF_URGENT_SHARE", default_value_t = 0.25)]
    pub urgent_share: f64,
    /// Frames with this attribute are urgent, `key=value` (a trailing `*` matches any
    /// rest), comma separated.
    #[arg(long = "urgent-attribute", value_delimiter = ',', value_parser = parse_kv)]
    pub urgent_attributes: Vec<(String, String)>,
    /// An acknowledgement with at least this many detections makes the following frames
    /// urgent for `--urgent-hold-seconds`.
    #[arg(long, env = "VF_URGENT_DETECTIONS")]
    pub urgent_detections: Option<u32>,
    /// How long a trigger (POST /trigger, or detections) keeps frames urgent.
    #[arg(long, env = "VF_URGENT_HOLD_SECONDS", default_value_t = 10.0)]
    pub urgent_hold_seconds: f64,
    /// Local HTTP port: GET /metrics, GET /status, POST /trigger. Off when not set.
    #[arg(long, env = "VF_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// CA bundle (PEM) that the pod's certificate must chain to (https endpoints; default:
    /// the system's roots).
    #[arg(long, env = "VF_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; with --tls-key.
    #[arg(long, env = "VF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS; with --tls-cert.
    #[arg(long, env = "VF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the pod's certificate instead of the endpoint's host.
    #[arg(long, env = "VF_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// File holding this device's bearer token (first line).
    #[arg(long, env = "VF_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// This device's bearer token (environment only, so it stays out of process lists).
    #[arg(skip = std::env::var("VF_DEVICE_TOKEN").ok().map(Secret::new))]
    pub token: Option<Secret>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl AgentConfig {
    /// Parses `args` (program name first) with the `--config` file and the environment,
    /// then validates. Errors name the setting (clap's own errors are returned as such, so
    /// `--help` and `--version` work).
    pub fn load<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cfg = crate::config_file::parse_with_file(args)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks settings that clap cannot: ranges, combinations, files.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.device_id.trim().is_empty() {
            anyhow::bail!("--device-id must not be empty");
        }
        if !(self.fps >= 0.0 && self.fps.is_finite()) {
            anyhow::bail!("--fps must be 0 or more, got {}", self.fps);
        }
        if self.window == 0 {
            anyhow::bail!("--window must be at least 1");
        }
        if let Some(q) = self.jpeg_quality {
            if !(1..=100).contains(&q) {
                anyhow::bail!("--jpeg-quality must be 1-100, got {q}");
            }
        }
        if let Some(t) = self.motion_threshold {
            if !(0.0..=100.0).contains(&t) {
                anyhow::bail!("--motion-threshold must be 0-100 (percent), got {t}");
            }
        }
        if [self.max_width, self.max_height].contains(&Some(0)) {
            anyhow::bail!("--max-width and --max-height must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.urgent_share) {
            anyhow::bail!(
                "--urgent-share must be between 0 and 1, got {}",
                self.urgent_share
            );
        }
        if !(self.urgent_hold_seconds >= 0.0 && self.urgent_hold_seconds.is_finite()) {
            anyhow::bail!("--urgent-hold-seconds must be 0 or more");
        }
        let priority_set = !self.urgent_attributes.is_empty() || self.urgent_detections.is_some();
        if priority_set && self.spool_dir.is_none() {
            anyhow::bail!(
                "--urgent-attribute and --urgent-detections need --spool-dir (priority lanes live in the spool)"
            );
        }
        if self.spool_dir.is_some() && self.spool_max_bytes < 64 << 10 {
            anyhow::bail!("--spool-max-bytes must be at least 64 KiB (65536)");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("--tls-cert and --tls-key go together: give both or neither");
        }
        let needs_path = !matches!(self.source, SourceKind::Synthetic);
        if needs_path && self.path.is_none() {
            anyhow::bail!("--path is required with --source {:?}", self.source);
        }
        self.transport()?.validate()
    }

    /// The configured source.
    pub fn open_source(&self) -> anyhow::Result<Box<dyn FrameSource>> {
        let path = || {
            self.path.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--path is required with --source {:?}", self.source)
            })
        };
        Ok(match self.source {
            SourceKind::Folder => Box::new(FolderSource::open(path()?, self.repeat)?),
            SourceKind::Watch => Box::new(FolderSource::watch(path()?)?),
            SourceKind::Mjpeg => Box::new(MjpegSource::open(path()?, self.repeat)?),
            SourceKind::Synthetic => {
                Box::new(SyntheticSource::new(self.count, self.width, self.height))
            }
            #[cfg(feature = "v4l2")]
            SourceKind::V4l2 => Box::new(crate::source::V4l2Source::open(
                path()?,
                self.width,
                self.height,
            )?),
            #[cfg(not(feature = "v4l2"))]
            SourceKind::V4l2 => anyhow::bail!(
                "--source v4l2: this agent was built without the v4l2 feature (cargo build --features v4l2)"
            ),
        })
    }

    /// The spool settings, when store-and-forward is on.
    pub fn spool(&self) -> Option<SpoolConfig> {
        let dir = self.spool_dir.clone()?;
        Some(SpoolConfig {
            dir,
            max_bytes: self.spool_max_bytes,
            ttl: (self.spool_ttl_seconds > 0).then(|| Duration::from_secs(self.spool_ttl_seconds)),
            policy: self.spool_full_policy,
            // A sixteenth of the budget: a full spool drops a segment at a time, and
            // acknowledged frames free disk soon, while the file count stays low.
            segment_bytes: (self.spool_max_bytes / 16).clamp(4 << 10, 64 << 20),
        })
    }

    /// Resize, re-encode and motion gating settings.
    pub fn shaping(&self) -> ShapingConfig {
        ShapingConfig {
            max_width: self.max_width,
            max_height: self.max_height,
            jpeg_quality: self.jpeg_quality,
            motion_threshold_percent: self.motion_threshold,
        }
    }

    /// The priority rules.
    pub fn priority(&self) -> Arc<Priority> {
        Arc::new(Priority::new(
            self.urgent_attributes.clone(),
            self.urgent_detections,
            Duration::from_secs_f64(self.urgent_hold_seconds.max(0.0)),
        ))
    }

    /// Endpoints, TLS and token. Reads the token file.
    pub fn transport(&self) -> anyhow::Result<Transport> {
        let tls_given = self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_domain.is_some()
            || self.endpoint.iter().any(|e| e.starts_with("https://"));
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    anyhow::bail!("--token-file {}: the file is empty", path.display());
                }
                Some(Secret::new(token))
            }
            (None, None) => None,
        };
        Ok(Transport {
            endpoints: self.endpoint.clone(),
            tls: tls_given.then(|| TlsSettings {
                ca: self.tls_ca.clone(),
                client_identity: self.tls_cert.clone().zip(self.tls_key.clone()),
                domain: self.tls_domain.clone(),
            }),
            token,
            max_message_bytes: 64 * 1024 * 1024,
        })
    }

    /// The uplink settings.
    pub fn uplink(&self) -> anyhow::Result<UplinkConfig> {
        let start = self.start_sequence.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or_default()
        });
        Ok(UplinkConfig {
            transport: self.transport()?,
            device_id: self.device_id.clone(),
            window: self.window.max(1),
            start_sequence: start,
            model: self.model.clone(),
            attributes: self.attributes.iter().cloned().collect::<HashMap<_, _>>(),
            give_up_after: Duration::from_secs(self.give_up_after_seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> anyhow::Result<AgentConfig> {
        let mut all = vec!["visionfleet-edge-agent"];
        all.extend_from_slice(args);
        AgentConfig::load(all)
    }

    fn error(args: &[&str]) -> String {
        load(args).expect_err("invalid").to_string()
    }

    #[test]
    fn bad_settings_are_named() {
        let base = ["--device-id", "cam-1", "--source", "synthetic"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            error(&a)
        };
        assert_eq!(
            error(&["--device-id", " "]),
            "--device-id must not be empty"
        );
        assert_eq!(with(&["--window", "0"]), "--window must be at least 1");
        assert_eq!(
            with(&["--jpeg-quality", "0"]),
            "--jpeg-quality must be 1-100, got 0"
        );
        assert_eq!(
            with(&["--urgent-share", "1.5"]),
            "--urgent-share must be between 0 and 1, got 1.5"
        );
        assert_eq!(
            with(&["--urgent-detections", "3"]),
            "--urgent-attribute and --urgent-detections need --spool-dir (priority lanes live in the spool)"
        );
        assert_eq!(
            with(&["--tls-cert", "c.pem"]),
            "--tls-cert and --tls-key go together: give both or neither"
        );
        assert_eq!(
            error(&["--device-id", "cam-1", "--source", "mjpeg"]),
            "--path is required with --source Mjpeg"
        );
        assert_eq!(
            with(&["--endpoint", "pod:50051"]),
            "--endpoint \"pod:50051\": the scheme must be http:// or https://"
        );
        assert!(with(&["--token-file", "/nonexistent/token"])
            .starts_with("--token-file /nonexistent/token: "));
    }

    #[test]
    fn several_endpoints_and_tls_settings_make_the_transport() {
        let cfg = load(&[
            "--device-id",
            "cam-1",
            "--source",
            "synthetic",
            "--endpoint",
            "https://pod-a:50051,https://pod-b:50051",
            "--tls-domain",
            "inference.visionfleet",
        ])
        .expect("valid");
        let t = cfg.transport().expect("transport");
        assert_eq!(t.endpoints.len(), 2);
        let tls = t.tls.expect("tls on for https");
        assert_eq!(tls.domain.as_deref(), Some("inference.visionfleet"));
        assert_eq!(tls.ca, None);
    }
}
