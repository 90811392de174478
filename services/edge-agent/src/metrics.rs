//! The agent's Prometheus metrics: the single record of what capture and the uplink did
//! (the exit [`crate::Summary`] is read off them), plus spool gauges refreshed from the
//! lanes at each scrape. Labels are bounded: lane, drop reason, uplink state.

use std::sync::Mutex;
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::lanes::{Lane, Lanes};
use crate::spool::SpoolCounters;

/// Why capture dropped a frame before it reached the spool or the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDrop {
    /// Motion gating: too similar to the last kept frame.
    Still,
    /// Shaping could not decode the source's image.
    Undecodable,
}

impl CaptureDrop {
    fn label(self) -> &'static str {
        match self {
            CaptureDrop::Still => "still",
            CaptureDrop::Undecodable => "undecodable",
        }
    }
}

/// Where the uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkState {
    /// Opening a connection and a stream.
    Connecting,
    /// A stream is open.
    Streaming,
    /// Waiting out the back-off after a failure.
    Backoff,
    /// Finished (source done and everything acknowledged, or stopped).
    Stopped,
}

impl UplinkState {
    const ALL: [UplinkState; 4] = [
        UplinkState::Connecting,
        UplinkState::Streaming,
        UplinkState::Backoff,
        UplinkState::Stopped,
    ];

    fn label(self) -> &'static str {
        match self {
            UplinkState::Connecting => "connecting",
            UplinkState::Streaming => "streaming",
            UplinkState::Backoff => "backoff",
            UplinkState::Stopped => "stopped",
        }
    }
}

/// Every metric the agent exports.
pub struct AgentMetrics {
    registry: Registry,
    /// Frames that entered the pipeline (stored in the spool, or handed to the uplink).
    pub captured: IntCounter,
    /// Frames dropped by capture, by [`CaptureDrop`].
    dropped: IntCounterVec,
    /// Frames written to a stream, resends included.
    pub sent: IntCounter,
    /// Of those, resends after a reconnect or restart.
    pub resent: IntCounter,
    /// Frames acknowledged as published to Kafka.
    pub acknowledged: IntCounter,
    /// Frames the pod rejected permanently (they are on its dead-letter topic).
    pub rejected: IntCounter,
    /// Reconnections after a failed or broken stream.
    pub reconnects: IntCounter,
    triggers: IntCounter,
    uplink_state: IntGaugeVec,
    /// Index of the endpoint in use, in the configured list.
    pub endpoint_index: IntGauge,
    capture_fps: Gauge,
    spool_frames: IntGaugeVec,
    spool_bytes: IntGaugeVec,
    spool_oldest: GaugeVec,
    spool_stored: IntCounterVec,
    spool_acknowledged: IntCounterVec,
    spool_dropped: IntCounterVec,
    fps_window: Mutex<(Instant, u64)>,
    state: Mutex<UplinkState>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique");
    g
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Registers every metric (in a registry of its own, so tests can run several agents).
    pub fn new() -> Self {
        let r = Registry::new();
        let oldest = GaugeVec::new(
            Opts::new(
                "vf_agent_spool_oldest_age_seconds",
                "Age of the oldest frame waiting in the spool, by lane (0 when empty).",
            ),
            &["lane"],
        )
        .expect("valid metric");
        r.register(Box::new(oldest.clone())).expect("unique");
        let fps = Gauge::new(
            "vf_agent_capture_fps",
            "Frames per second entering the pipeline, over the last few seconds.",
        )
        .expect("valid metric");
        r.register(Box::new(fps.clone())).expect("unique");
        let endpoint_index = IntGauge::new(
            "vf_agent_uplink_endpoint_index",
            "Position of the endpoint in use in the configured list (failover moves it).",
        )
        .expect("valid metric");
        r.register(Box::new(endpoint_index.clone()))
            .expect("unique");
        let m = Self {
            captured: counter(
                &r,
                "vf_agent_frames_captured_total",
                "Frames that entered the pipeline (spooled or handed to the uplink).",
            ),
            dropped: counter_vec(
                &r,
                "vf_agent_frames_dropped_total",
                "Frames dropped by capture before the spool, by reason.",
                &["reason"],
            ),
            sent: counter(
                &r,
                "vf_agent_frames_sent_total",
                "Frames written to a stream, resends included.",
            ),
            resent: counter(
                &r,
                "vf_agent_frames_resent_total",
                "Frames sent again after a reconnect or restart.",
            ),
            acknowledged: counter(
                &r,
                "vf_agent_frames_acked_total",
                "Frames acknowledged as published to Kafka.",
            ),
            rejected: counter(
                &r,
                "vf_agent_frames_rejected_total",
                "Frames the pod rejected permanently.",
            ),
            reconnects: counter(
                &r,
                "vf_agent_uplink_reconnects_total",
                "Reconnections after a failed or broken stream.",
            ),
            triggers: counter(
                &r,
                "vf_agent_priority_triggers_total",
                "Priority triggers (line trigger or detections on a frame).",
            ),
            uplink_state: gauge_vec(
                &r,
                "vf_agent_uplink_state",
                "1 for the uplink's current state, 0 for the others.",
                &["state"],
            ),
            endpoint_index,
            capture_fps: fps,
            spool_frames: gauge_vec(
                &r,
                "vf_agent_spool_frames",
                "Frames waiting in the spool, by lane.",
                &["lane"],
            ),
            spool_bytes: gauge_vec(
                &r,
                "vf_agent_spool_bytes",
                "Bytes of spool segment files, by lane.",
                &["lane"],
            ),
            spool_oldest: oldest,
            spool_stored: counter_vec(
                &r,
                "vf_agent_spool_stored_total",
                "Frames stored in the spool, by lane.",
                &["lane"],
            ),
            spool_acknowledged: counter_vec(
                &r,
                "vf_agent_spool_acknowledged_total",
                "Frames removed from the spool after their acknowledgement, by lane.",
                &["lane"],
            ),
            spool_dropped: counter_vec(
                &r,
                "vf_agent_spool_dropped_total",
                "Frames the spool dropped, by lane and reason (oldest, newest: full; expired: TTL).",
                &["lane", "reason"],
            ),
            registry: r,
            fps_window: Mutex::new((Instant::now(), 0)),
            state: Mutex::new(UplinkState::Connecting),
        };
        for reason in [CaptureDrop::Still, CaptureDrop::Undecodable] {
            m.dropped.with_label_values(&[reason.label()]);
        }
        m.set_state(UplinkState::Connecting);
        m
    }

    /// Counts a frame that entered the pipeline.
    pub fn captured(&self) {
        self.captured.inc();
        let mut w = self.fps_window.lock().unwrap_or_else(|e| e.into_inner());
        w.1 += 1;
        let elapsed = w.0.elapsed().as_secs_f64();
        if elapsed >= 2.0 {
            self.capture_fps.set(w.1 as f64 / elapsed);
            *w = (Instant::now(), 0);
        }
    }

    /// Counts a frame dropped by capture.
    pub fn dropped(&self, reason: CaptureDrop) {
        self.dropped.with_label_values(&[reason.label()]).inc();
    }

    /// Frames dropped by capture for `reason` so far.
    pub fn dropped_count(&self, reason: CaptureDrop) -> u64 {
        self.dropped.with_label_values(&[reason.label()]).get()
    }

    /// Moves the uplink to `state`.
    pub fn set_state(&self, state: UplinkState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        for s in UplinkState::ALL {
            self.uplink_state
                .with_label_values(&[s.label()])
                .set(i64::from(s == state));
        }
    }

    /// The uplink's current state.
    pub fn state(&self) -> UplinkState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the spool's gauges and counters from the lanes.
    pub fn refresh_spool(&self, lanes: &Lanes) {
        let counters = lanes.counters();
        for lane in Lane::ALL {
            let spool = lanes.lane(lane);
            let l = lane.name();
            self.spool_frames
                .with_label_values(&[l])
                .set(spool.len() as i64);
            self.spool_bytes
                .with_label_values(&[l])
                .set(spool.disk_bytes() as i64);
            self.spool_oldest
                .with_label_values(&[l])
                .set(spool.oldest_age().map_or(0.0, |a| a.as_secs_f64()));
            let c: &SpoolCounters = match lane {
                Lane::Urgent => &counters.urgent,
                Lane::Routine => &counters.routine,
            };
            catch_up(&self.spool_stored.with_label_values(&[l]), c.appended);
            catch_up(
                &self.spool_acknowledged.with_label_values(&[l]),
                c.acknowledged,
            );
            for (reason, value) in [
                ("oldest", c.dropped_oldest),
                ("newest", c.dropped_newest),
                ("expired", c.expired),
            ] {
                catch_up(&self.spool_dropped.with_label_values(&[l, reason]), value);
            }
        }
    }

    /// Copies the priority trigger count (kept by [`crate::priority::Priority`]).
    pub fn refresh_triggers(&self, triggers: u64) {
        catch_up(&self.triggers, triggers);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Advances a counter to `value` (the spool keeps its own counts; a counter never goes
/// back, so a smaller value, after a restart, leaves it where it is).
fn catch_up(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series_with_bounded_labels() {
        let m = AgentMetrics::new();
        m.captured();
        m.dropped(CaptureDrop::Still);
        m.set_state(UplinkState::Streaming);
        let text = m.render();
        for line in [
            "vf_agent_frames_captured_total 1",
            "vf_agent_frames_dropped_total{reason=\"still\"} 1",
            "vf_agent_frames_dropped_total{reason=\"undecodable\"} 0",
            "vf_agent_uplink_state{state=\"streaming\"} 1",
            "vf_agent_uplink_state{state=\"backoff\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(m.state(), UplinkState::Streaming);
    }

    #[test]
    fn spool_gauges_follow_the_lanes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lanes = Lanes::open(
            crate::spool::SpoolConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 1 << 20,
                ttl: None,
                policy: crate::spool::FullPolicy::DropOldest,
                segment_bytes: 1 << 16,
            },
            0.25,
        )
        .expect("open");
        let frame = visionfleet_proto::v1::Frame {
            device_id: "cam".into(),
            sequence: 5,
            ..Default::default()
        };
        lanes.append(Lane::Urgent, &frame).expect("append");
        let m = AgentMetrics::new();
        m.refresh_spool(&lanes);
        let text = m.render();
        assert!(
            text.contains("vf_agent_spool_frames{lane=\"urgent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vf_agent_spool_frames{lane=\"routine\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vf_agent_spool_stored_total{lane=\"urgent\"} 1"),
            "{text}"
        );
    }
}
