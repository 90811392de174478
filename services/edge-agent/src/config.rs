//! Agent configuration: flags with `VF_*` environment variables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::{FolderSource, FrameSource, SyntheticSource};
use crate::spool::{FullPolicy, SpoolConfig};
use crate::uplink::UplinkConfig;

/// Which source to capture from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Every image of `--path`, `--repeat` times.
    Folder,
    /// `--count` generated frames of `--width` x `--height`.
    Synthetic,
}

/// Edge agent configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "visionfleet-edge-agent",
    version,
    about = "VisionFleet edge agent"
)]
pub struct AgentConfig {
    /// Inference endpoint URL.
    #[arg(long, env = "VF_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// This device's id (the Kafka key of its events).
    #[arg(long, env = "VF_DEVICE_ID")]
    pub device_id: String,
    /// Frame source.
    #[arg(long, env = "VF_SOURCE", value_enum, default_value = "folder")]
    pub source: SourceKind,
    /// Image folder for the folder source.
    #[arg(long, env = "VF_SOURCE_PATH")]
    pub path: Option<PathBuf>,
    /// How many times the folder source goes through its images.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Frames from the synthetic source.
    #[arg(long, default_value_t = 10)]
    pub count: u64,
    /// Synthetic frame width.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Synthetic frame height.
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Capture rate limit in frames per second (0: as fast as the uplink takes them).
    #[arg(long, env = "VF_FPS", default_value_t = 0.0)]
    pub fps: f64,
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
    /// Store-and-forward: keep every captured frame in this folder (synced to disk) until
    /// the pod acknowledges it, across outages, crashes and restarts.
    #[arg(long, env = "VF_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may use on disk.
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
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl AgentConfig {
    /// The configured source.
    pub fn open_source(&self) -> anyhow::Result<Box<dyn FrameSource>> {
        Ok(match self.source {
            SourceKind::Folder => {
                let path = self
                    .path
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("--path is required with --source folder"))?;
                Box::new(FolderSource::open(path, self.repeat)?)
            }
            SourceKind::Synthetic => {
                Box::new(SyntheticSource::new(self.count, self.width, self.height))
            }
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
            // Small enough that acknowledged frames free disk soon, large enough to keep
            // the file count low.
            segment_bytes: (self.spool_max_bytes / 16).clamp(1 << 20, 64 << 20),
        })
    }

    /// The uplink settings.
    pub fn uplink(&self) -> UplinkConfig {
        let start = self.start_sequence.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or_default()
        });
        UplinkConfig {
            endpoint: self.endpoint.clone(),
            device_id: self.device_id.clone(),
            window: self.window.max(1),
            start_sequence: start,
            model: self.model.clone(),
            attributes: self.attributes.iter().cloned().collect::<HashMap<_, _>>(),
            give_up_after: Duration::from_secs(self.give_up_after_seconds),
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}
