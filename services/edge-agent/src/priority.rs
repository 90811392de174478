//! Which lane a captured frame goes to. A frame is urgent when
//! - an attribute rule matches it (`--urgent-attribute key=value`, a trailing `*` matches
//!   any rest), or
//! - it is captured within `--urgent-hold-seconds` of a trigger: `POST /trigger` on the
//!   agent's local HTTP port (a line controller, a PLC) or an acknowledgement reporting
//!   at least `--urgent-detections` detections for an earlier frame.
//!
//! Urgent frames carry the attribute `priority=urgent`, so consumers see it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::lanes::Lane;
use crate::spool::now_ms;

/// The attribute that marks urgent frames.
pub const PRIORITY_ATTRIBUTE: &str = "priority";

/// Rules and trigger state; shared by capture, the uplink and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Priority {
    attribute_rules: Vec<(String, String)>,
    detections_threshold: Option<u32>,
    hold: Duration,
    /// Frames captured before this instant (Unix ms) are urgent.
    urgent_until_ms: AtomicI64,
    triggers: AtomicU64,
}

impl Priority {
    /// Rules: attribute matches, the detection count that triggers urgency (none: never)
    /// and how long a trigger lasts.
    pub fn new(
        attribute_rules: Vec<(String, String)>,
        detections_threshold: Option<u32>,
        hold: Duration,
    ) -> Self {
        Self {
            attribute_rules,
            detections_threshold,
            hold,
            ..Self::default()
        }
    }

    /// The lane for a frame with these attributes, captured now.
    pub fn lane_for(&self, attributes: &HashMap<String, String>) -> Lane {
        let triggered = now_ms() < self.urgent_until_ms.load(Ordering::Relaxed);
        let matched = self.attribute_rules.iter().any(|(key, pattern)| {
            attributes
                .get(key)
                .is_some_and(|v| match pattern.strip_suffix('*') {
                    Some(prefix) => v.starts_with(prefix),
                    None => v == pattern,
                })
        });
        if triggered || matched {
            Lane::Urgent
        } else {
            Lane::Routine
        }
    }

    /// A trigger from the line: frames captured during the hold time are urgent.
    pub fn trigger(&self) {
        let until = now_ms() + self.hold.as_millis() as i64;
        self.urgent_until_ms.fetch_max(until, Ordering::Relaxed);
        self.triggers.fetch_add(1, Ordering::Relaxed);
    }

    /// An acknowledgement reported `count` detections: a trigger when at the threshold.
    pub fn saw_detections(&self, count: u32) {
        if self.detections_threshold.is_some_and(|t| count >= t) {
            self.trigger();
        }
    }

    /// Triggers so far (line and detections).
    pub fn triggers(&self) -> u64 {
        self.triggers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn attribute_rules_match_exactly_or_by_prefix() {
        let p = Priority::new(
            vec![
                ("line".into(), "press-4".into()),
                ("source".into(), "reject-*".into()),
            ],
            None,
            Duration::from_secs(1),
        );
        assert_eq!(p.lane_for(&attrs(&[("line", "press-4")])), Lane::Urgent);
        assert_eq!(p.lane_for(&attrs(&[("line", "press-40")])), Lane::Routine);
        assert_eq!(
            p.lane_for(&attrs(&[("source", "reject-0007.jpg")])),
            Lane::Urgent
        );
        assert_eq!(p.lane_for(&attrs(&[("source", "ok.jpg")])), Lane::Routine);
        assert_eq!(p.lane_for(&attrs(&[])), Lane::Routine);
    }

    #[test]
    fn triggers_and_detections_make_frames_urgent_for_the_hold_time() {
        let p = Priority::new(Vec::new(), Some(3), Duration::from_secs(60));
        let none = attrs(&[]);
        assert_eq!(p.lane_for(&none), Lane::Routine);
        p.saw_detections(2);
        assert_eq!(p.lane_for(&none), Lane::Routine);
        p.saw_detections(3);
        assert_eq!(p.lane_for(&none), Lane::Urgent);
        assert_eq!(p.triggers(), 1);

        let zero_hold = Priority::new(Vec::new(), None, Duration::ZERO);
        zero_hold.saw_detections(100);
        zero_hold.trigger();
        assert_eq!(zero_hold.lane_for(&none), Lane::Routine);
        assert_eq!(zero_hold.triggers(), 1);
    }
}
