//! `vfctl tail`: read the detections topic and print its events, for people (`--format
//! text`) and scripts (`--format json`, one event per line).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use visionfleet_proto::event::DetectionEvent;

/// Arguments of `vfctl tail`.
#[derive(clap::Args)]
pub struct TailArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "VF_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to read.
    #[arg(long, env = "VF_TOPIC", default_value = "visionfleet.detections.v1")]
    topic: String,
    /// Consumer group; committed offsets make a later tail continue where this one stopped.
    /// Without it, a throw-away group is used and nothing is committed.
    #[arg(long)]
    group: Option<String>,
    /// Start at the earliest offset when the group has none (default: only new events).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a new event.
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Output: `json` (the event, one per line) or `text`.
    #[arg(long, default_value = "json")]
    format: String,
}

/// Runs `vfctl tail`.
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    if args.format != "json" && args.format != "text" {
        anyhow::bail!("--format must be json or text, got {:?}", args.format);
    }
    let (group, commit) = match &args.group {
        Some(g) => (g.clone(), true),
        None => (format!("vfctl-tail-{}", std::process::id()), false),
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", commit.to_string())
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .create()
        .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&[&args.topic])
        .with_context(|| format!("subscribing to {}", args.topic))?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut count = 0u64;
    let mut last = Instant::now();
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    while args.max.is_none_or(|m| count < m) {
        if idle.is_some_and(|d| last.elapsed() > d) {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = result.context("reading from Kafka")?;
        last = Instant::now();
        count += 1;
        let payload = msg.payload().unwrap_or_default();
        if args.format == "json" {
            out.write_all(payload)?;
            out.write_all(b"\n")?;
            continue;
        }
        let content_type = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "content-type"))
            .and_then(|h| h.value)
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned();
        match serde_json::from_slice::<DetectionEvent>(payload) {
            Ok(e) => {
                let objects: Vec<String> = e
                    .detections
                    .iter()
                    .map(|d| format!("{} {:.2}", d.label, d.score))
                    .collect();
                writeln!(
                    out,
                    "{} {} {}x{} {} detections: {}",
                    e.event_id,
                    e.model,
                    e.image_width,
                    e.image_height,
                    e.detections.len(),
                    objects.join(", ")
                )?;
            }
            Err(err) => writeln!(
                out,
                "partition {} offset {}: not a detection event ({content_type}): {err}",
                msg.partition(),
                msg.offset()
            )?,
        }
        out.flush()?;
    }
    eprintln!("tail: {count} events from {}", args.topic);
    Ok(())
}
