//! The operator's own Prometheus metrics, registered once and shared by `Arc`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Result label of a reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything applied and the status written.
    Ok,
    /// The spec failed validation; only the status was written.
    Invalid,
    /// An API call failed; the pool is retried with back-off.
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Registry,
    /// Reconciliations, by result.
    pub reconciliations: IntCounterVec,
    /// Time one reconciliation took, by result.
    pub reconcile_duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "visionfleet_operator_reconciliations_total",
                "InferencePool reconciliations, by result (ok, invalid, error)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let buckets = prometheus::exponential_buckets(0.005, 2.0, 12).unwrap_or_default();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "visionfleet_operator_reconcile_duration_seconds",
                "Time one InferencePool reconciliation took, by result",
            )
            .buckets(buckets),
            &["result"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "visionfleet_operator_leader",
            "1 while this replica holds the leader Lease",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_duration.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        // Every result appears from the first scrape, so rate() works from the start.
        for o in [Outcome::Ok, Outcome::Invalid, Outcome::Error] {
            reconciliations.with_label_values(&[o.label()]);
        }
        Self {
            registry,
            reconciliations,
            reconcile_duration,
            leader,
        }
    }

    /// Counts one reconciliation that took `seconds`.
    pub fn observe(&self, outcome: Outcome, seconds: f64) {
        self.reconciliations
            .with_label_values(&[outcome.label()])
            .inc();
        self.reconcile_duration
            .with_label_values(&[outcome.label()])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if prometheus::TextEncoder::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliations_are_counted_by_result() {
        let m = Metrics::new();
        m.observe(Outcome::Ok, 0.01);
        m.observe(Outcome::Error, 0.2);
        m.observe(Outcome::Ok, 0.02);
        let text = m.render();
        assert!(text.contains("visionfleet_operator_reconciliations_total{result=\"ok\"} 2"));
        assert!(text.contains("visionfleet_operator_reconciliations_total{result=\"error\"} 1"));
        assert!(text.contains("visionfleet_operator_reconciliations_total{result=\"invalid\"} 0"));
        assert!(
            text.contains("visionfleet_operator_reconcile_duration_seconds_count{result=\"ok\"} 2")
        );
        assert!(text.contains("visionfleet_operator_leader 0"));
    }
}
