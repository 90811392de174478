//! Prometheus metrics of the inference pod, registered once and shared by `Arc`. Names
//! follow Prometheus conventions (base units, `_total`, `_seconds`); labels come from small
//! fixed sets, never a device id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use visionfleet_detector::detector::StageTimings;

/// Latency buckets from 1 ms to about 30 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 16).unwrap_or_default()
}

/// All metrics of one pod.
pub struct Metrics {
    registry: Registry,
    /// Frames received on any RPC.
    pub frames_received: IntCounter,
    /// Frames whose event Kafka confirmed.
    pub frames_published: IntCounter,
    /// Frames rejected, by reason.
    pub frames_rejected: IntCounterVec,
    /// Frames that failed for a retryable reason (Kafka, queue full, draining), by reason.
    pub frames_failed: IntCounterVec,
    /// Frames between receipt and acknowledgement.
    pub frames_in_flight: IntGauge,
    /// Kafka producers replaced after a fatal error.
    pub kafka_producer_replaced: IntCounter,
    /// `StreamFrames` streams open (a client that vanished must not leave one behind).
    pub streams_open: IntGauge,
    /// Frames waiting for the detector.
    pub queue_depth: IntGauge,
    /// Time frames waited for the detector.
    pub queue_wait: Histogram,
    /// Frames per forward pass.
    pub batch_size: Histogram,
    /// Per-stage latency (decode, preprocess, forward, postprocess).
    pub stage_duration: HistogramVec,
    /// Time from send to Kafka's confirmation.
    pub kafka_delivery: Histogram,
    /// Capture (device clock) to Kafka confirmation.
    pub capture_to_published: Histogram,
    /// Served models (value 1), labelled by name, version and family.
    pub model_info: IntGaugeVec,
    /// Model reloads, by result (success, failure).
    pub model_reloads: IntCounterVec,
    /// Calls and frames refused by device authentication, by reason (missing, unknown,
    /// wrong_device).
    pub auth_failures: IntCounterVec,
    /// Reloads of the device token file after a change, by result (success, failure).
    pub device_token_reloads: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "vf_stage_duration_seconds",
                "Time per pipeline stage (per batch for preprocess, forward and postprocess)",
            )
            .buckets(latency_buckets()),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stage_duration.clone()))
            .expect("registered once");
        let model_info = IntGaugeVec::new(
            Opts::new("vf_model_info", "Models served by this pod (always 1)"),
            &["model", "version", "family"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(model_info.clone()))
            .expect("registered once");
        let auth_failures = counter_vec(
            "vf_auth_failures_total",
            "Calls and frames refused by device authentication, by reason",
            &["reason"],
        );
        // Present from the start, so that an alert on a rate has a series to compare with.
        for reason in ["missing", "unknown", "wrong_device"] {
            auth_failures.with_label_values(&[reason]);
        }
        let m = Self {
            frames_received: counter("vf_frames_received_total", "Frames received"),
            frames_published: counter(
                "vf_frames_published_total",
                "Frames whose detection event Kafka confirmed",
            ),
            frames_rejected: counter_vec(
                "vf_frames_rejected_total",
                "Frames rejected as never able to succeed",
                &["reason"],
            ),
            frames_failed: counter_vec(
                "vf_frames_failed_total",
                "Frames that failed for a retryable reason",
                &["reason"],
            ),
            frames_in_flight: gauge(
                "vf_frames_in_flight",
                "Frames received and not yet acknowledged",
            ),
            kafka_producer_replaced: counter(
                "vf_kafka_producer_replaced_total",
                "Kafka producers replaced after a fatal error",
            ),
            streams_open: gauge("vf_streams_open", "StreamFrames streams open"),
            queue_depth: gauge("vf_queue_depth", "Frames waiting for the detector"),
            queue_wait: histogram(
                "vf_queue_wait_seconds",
                "Time frames waited for the detector",
                latency_buckets(),
            ),
            batch_size: histogram(
                "vf_batch_size",
                "Frames per forward pass",
                vec![1., 2., 4., 8., 16., 32., 64.],
            ),
            stage_duration,
            kafka_delivery: histogram(
                "vf_kafka_delivery_seconds",
                "Time from handing an event to the producer to the broker's acknowledgement",
                latency_buckets(),
            ),
            capture_to_published: histogram(
                "vf_capture_to_published_seconds",
                "Capture time (device clock) to the event being in Kafka",
                latency_buckets(),
            ),
            model_info,
            model_reloads: counter_vec(
                "vf_model_reloads_total",
                "Model reloads after a manifest change, by result",
                &["result"],
            ),
            auth_failures,
            device_token_reloads: counter_vec(
                "vf_device_tokens_reloads_total",
                "Reloads of the device token file after a change, by result",
                &["result"],
            ),
            registry,
        };
        // Every reason and result present at zero from the start, so that alerts and
        // dashboards dividing rates always have a series to read.
        for reason in [
            "invalid_frame",
            "invalid_image",
            "too_large",
            "unknown_model",
        ] {
            m.frames_rejected.with_label_values(&[reason]);
        }
        for reason in ["kafka", "queue_full", "deadline"] {
            m.frames_failed.with_label_values(&[reason]);
        }
        for result in ["success", "failure"] {
            m.model_reloads.with_label_values(&[result]);
            m.device_token_reloads.with_label_values(&[result]);
        }
        m
    }

    /// Records one batch's stage timings.
    pub fn observe_stages(&self, t: &StageTimings) {
        for (stage, d) in [
            ("preprocess", t.preprocess),
            ("forward", t.forward),
            ("postprocess", t.postprocess),
        ] {
            self.stage_duration
                .with_label_values(&[stage])
                .observe(d.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
