//! The fleet run's results: accounting by event id, latency percentiles, the per-second
//! timeline; written as JSON (for scripts), Markdown (for people) and an SVG plot.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::events::Seen;
use crate::fleet::FleetArgs;
use crate::stats::{Fate, Recorder};

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Serialize, Clone, Copy, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Percentiles.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the timeline.
#[derive(Serialize)]
pub struct Point {
    /// Seconds since the start.
    pub t: u64,
    /// Published acks in that second.
    pub frames_per_s: u64,
    /// Capture-to-ack latency of those acks.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Everything the run found.
#[derive(Serialize)]
pub struct Report {
    /// The run's settings.
    pub config: FleetArgs,
    /// Arrival mode in words.
    pub mode: String,
    /// The frame set.
    pub images: String,
    /// Whether the run was cut short (Ctrl-C, or the drain timed out).
    pub partial: bool,
    /// Frames put on the wire.
    pub sent: u64,
    /// Capture ticks skipped because the device's window was full.
    pub skipped_window_full: u64,
    /// Frames acknowledged as published.
    pub acked_published: u64,
    /// Frames the pod refused, by reason (not lost: answered with the reason).
    pub rejected: BTreeMap<String, u64>,
    /// Sent frames never answered (the stream broke) whose event did turn up.
    pub unacked_but_delivered: u64,
    /// Stream failures by gRPC status code.
    pub errors: BTreeMap<String, u64>,
    /// Most device streams open at once.
    pub peak_open_streams: u64,
    /// Distinct events of this run read from Kafka.
    pub events: u64,
    /// Sent frames neither refused nor seen in Kafka.
    pub lost: u64,
    /// Of those, frames the pod had acknowledged (a broken delivery promise).
    pub lost_after_ack: u64,
    /// Extra copies of events (same event id read more than once).
    pub duplicates: u64,
    /// Published acks per second during the measured window.
    pub frames_per_s: f64,
    /// Capture to ack at the device (the ack comes after Kafka has the event).
    pub capture_to_ack: Latency,
    /// Capture to the Kafka record's timestamp, from the independent consumer.
    pub capture_to_kafka: Latency,
    /// Time from the end of sending until the last ack.
    pub drain_s: f64,
    /// The pod's peak resident memory (VmHWM), when its pid was given.
    pub pod_peak_rss_mb: Option<f64>,
    /// Per-second throughput and latency.
    pub timeline: Vec<Point>,
}

impl Report {
    /// Accounts for every frame sent.
    pub fn build(
        args: &FleetArgs,
        images: &str,
        rec: &Recorder,
        seen: &Seen,
        partial: bool,
        sending_ended: Instant,
        drain: Duration,
    ) -> Self {
        rec.with(|t| {
            let mut lost = 0;
            let mut lost_after_ack = 0;
            let mut unacked_but_delivered = 0;
            let mut acked_published = 0;
            for (id, fate) in &t.frames {
                let delivered = seen.counts.contains_key(id);
                match fate {
                    Fate::Published => {
                        acked_published += 1;
                        if !delivered {
                            lost += 1;
                            lost_after_ack += 1;
                        }
                    }
                    Fate::Sent if delivered => unacked_but_delivered += 1,
                    Fate::Sent => lost += 1,
                    Fate::Rejected => {}
                }
            }
            let duplicates = seen.counts.values().map(|&n| u64::from(n) - 1).sum();
            // A run stopped early is measured up to where it stopped.
            let measured = sending_ended
                .min(rec.send_until)
                .saturating_duration_since(rec.measure_from)
                .max(Duration::from_millis(1));
            let timeline = t
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let l = Latency::of(&s.latency);
                    Point {
                        t: i as u64,
                        frames_per_s: s.acks,
                        p50_ms: l.p50_ms,
                        p99_ms: l.p99_ms,
                    }
                })
                .collect();
            Report {
                config: args.clone(),
                mode: args.mode(),
                images: images.to_string(),
                partial,
                sent: t.sent,
                skipped_window_full: t.skipped_window_full,
                acked_published,
                rejected: t.rejected.clone(),
                unacked_but_delivered,
                errors: t.errors.clone(),
                peak_open_streams: t.peak_open_streams,
                events: seen.counts.len() as u64,
                lost,
                lost_after_ack,
                duplicates,
                frames_per_s: t.steady_acks as f64 / measured.as_secs_f64(),
                capture_to_ack: Latency::of(&t.ack_latency),
                capture_to_kafka: Latency::of(&seen.kafka_latency),
                drain_s: drain.as_secs_f64(),
                pod_peak_rss_mb: args.pod_pid.and_then(peak_rss_mb),
                timeline,
            }
        })
    }

    /// The one line scripts read.
    pub fn summary_line(&self) -> String {
        format!(
            "loadtest: {} sent, {} events, {} lost, {} duplicates, p50 {:.0} ms, p99 {:.0} ms, {:.2} frames/s",
            self.sent,
            self.events,
            self.lost,
            self.duplicates,
            self.capture_to_ack.p50_ms,
            self.capture_to_ack.p99_ms,
            self.frames_per_s
        )
    }

    /// The summary for people.
    pub fn markdown(&self) -> String {
        let c = &self.config;
        let lat = |name: &str, l: &Latency| {
            format!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            )
        };
        let map = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut s = format!(
            "## Fleet load test{}\n\n\
             {} devices, {}, window {} per device, {} s measured after {} s warm-up \
             ({} s ramp-up). Frames: {}.\n\n\
             | frames | count |\n|---|---|\n\
             | sent | {} |\n| skipped at the device (window full) | {} |\n\
             | acknowledged as published | {} |\n| refused by the pod | {} |\n\
             | events read from Kafka (distinct) | {} |\n| lost | {} |\n\
             | lost after an ack | {} |\n| duplicates | {} |\n\
             | unanswered but delivered | {} |\n\n\
             Streams open at peak: {}. Stream errors: {}. Throughput: {:.2} frames/s. Drain after sending stopped: \
             {:.1} s.{}\n\n\
             | latency (ms) | samples | p50 | p90 | p99 | p99.9 | max |\n\
             |---|---|---|---|---|---|---|\n",
            if self.partial { " (partial)" } else { "" },
            c.devices,
            self.mode,
            c.window,
            c.duration,
            c.warmup,
            c.ramp_up,
            self.images,
            self.sent,
            self.skipped_window_full,
            self.acked_published,
            map(&self.rejected),
            self.events,
            self.lost,
            self.lost_after_ack,
            self.duplicates,
            self.unacked_but_delivered,
            self.peak_open_streams,
            map(&self.errors),
            self.frames_per_s,
            self.drain_s,
            self.pod_peak_rss_mb
                .map(|m| format!(" Pod peak RSS: {m:.0} MB."))
                .unwrap_or_default()
        );
        s += &lat("capture to ack (device)", &self.capture_to_ack);
        s += &lat("capture to Kafka (consumer)", &self.capture_to_kafka);
        s
    }

    /// Writes results.json, summary.md and timeline.svg into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("results.json"), json)
            .with_context(|| format!("writing {}", dir.join("results.json").display()))?;
        std::fs::write(dir.join("summary.md"), self.markdown())?;
        crate::plot::timeline(&self.timeline, &dir.join("timeline.svg"))
    }
}

/// Peak resident memory of a process (Linux), in MB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::stats::new_histogram;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    fn args() -> FleetArgs {
        Cli::parse_from([
            "t",
            "--endpoint",
            "http://127.0.0.1:1",
            "--kafka-bootstrap",
            "127.0.0.1:2",
            "--devices",
            "3",
            "--warmup",
            "0",
        ])
        .fleet
    }

    /// Every frame sent is accounted for once: published and seen, refused, lost (with or
    /// without an ack), unanswered but delivered; extra copies are duplicates.
    #[test]
    fn every_frame_is_accounted_for_by_event_id() {
        let rec = Recorder::new(Duration::ZERO, Duration::from_secs(60));
        for id in ["d/1", "d/2", "d/3", "d/4", "d/5", "d/6"] {
            rec.sent(id.to_string());
        }
        let captured = Instant::now();
        rec.published("d/1", captured);
        rec.published("d/2", captured); // acknowledged, never seen: lost after an ack
        rec.rejected("d/3", "invalid image: JPEG data is empty");
        // d/4: no ack, seen (the stream broke after publishing); d/5: no ack, not seen.
        rec.published("d/6", captured);
        let seen = Seen {
            counts: HashMap::from([("d/1".into(), 3), ("d/4".into(), 1), ("d/6".into(), 1)]),
            kafka_latency: new_histogram(),
            unreadable: 0,
        };
        let r = Report::build(
            &args(),
            "set",
            &rec,
            &seen,
            false,
            rec.send_until,
            Duration::ZERO,
        );
        assert_eq!(r.sent, 6);
        assert_eq!(r.acked_published, 3);
        assert_eq!(
            r.rejected,
            BTreeMap::from([("invalid image: JPEG data is empty".to_string(), 1)])
        );
        assert_eq!(r.events, 3);
        assert_eq!((r.lost, r.lost_after_ack), (2, 1));
        assert_eq!(r.unacked_but_delivered, 1);
        assert_eq!(r.duplicates, 2);
        assert_eq!(r.capture_to_ack.count, 3);
        assert!(r
            .summary_line()
            .starts_with("loadtest: 6 sent, 3 events, 2 lost, 2 duplicates, p50 "));
        assert!(r.markdown().contains("| lost after an ack | 1 |"));
    }
}
