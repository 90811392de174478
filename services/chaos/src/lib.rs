//! The fault-injection suite's shared parts: how long a scenario runs, the one summary line
//! each scenario prints, the tally of events by event id, and process helpers (the real
//! agent and pod binaries, their resident memory).
//!
//! Every scenario is an integration test under `tests/`. By default (the README's test
//! command) each runs a short version, seconds long; `make chaos` sets `VF_CHAOS=full` for
//! the full durations and collects the summary lines from `VF_CHAOS_REPORT`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How long scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Seconds per scenario: what the test command runs.
    Short,
    /// The durations the reliability promises are stated for (`make chaos`).
    Full,
}

impl Scale {
    /// `VF_CHAOS=full` selects the full run; anything else, or nothing, the short one.
    pub fn from_env() -> Self {
        match std::env::var("VF_CHAOS").as_deref() {
            Ok("full") => Scale::Full,
            _ => Scale::Short,
        }
    }

    /// `short` or `full` by scale.
    pub fn pick<T>(self, short: T, full: T) -> T {
        match self {
            Scale::Short => short,
            Scale::Full => full,
        }
    }
}

/// One scenario's figures: what `make chaos` prints and the README's RELIABILITY table
/// quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Scenario name (`agent-kill`, `power-loss`, ...).
    pub scenario: String,
    /// Frames the agent accepted (stored durably), or inputs offered for input scenarios.
    pub captured: u64,
    /// Distinct events a consumer saw, counted by event id (or inputs handled).
    pub events: u64,
    /// Accepted frames without an event.
    pub lost: u64,
    /// Events beyond the first for the same event id (counted re-sends).
    pub duplicates: u64,
    /// Longest time from the end of a fault to work flowing again.
    pub recovery: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos {}: captured {}, events {}, lost {}, duplicates {}, recovery {:.2} s",
            self.scenario,
            self.captured,
            self.events,
            self.lost,
            self.duplicates,
            self.recovery.as_secs_f64()
        )
    }
}

impl Figures {
    /// Prints the summary line and, when `VF_CHAOS_REPORT` names a file, appends it there
    /// (the test harness captures stdout; the file is how `make chaos` collects lines).
    pub fn report(&self) {
        println!("{self}");
        if let Some(path) = std::env::var_os("VF_CHAOS_REPORT") {
            let line = format!("{self}\n");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!("cannot append to VF_CHAOS_REPORT {path:?}: {e}");
            }
        }
    }
}

/// Events seen by a consumer, counted by event id (`<device>/<sequence>`).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    seen: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one event id.
    pub fn add(&mut self, event_id: &str) {
        *self.seen.entry(event_id.to_string()).or_default() += 1;
    }

    /// Counts the event id of every JSON detection event in `payloads` (the pod's wire
    /// format: a JSON object with `event_id`). A payload without one is a test failure.
    pub fn add_json<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) {
        for p in payloads {
            let v: serde_json::Value = match serde_json::from_slice(p) {
                Ok(v) => v,
                Err(e) => panic!(
                    "an event that is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(p)
                ),
            };
            match v["event_id"].as_str() {
                Some(id) => self.add(id),
                None => panic!("an event without event_id: {v}"),
            }
        }
    }

    /// Distinct event ids.
    pub fn distinct(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Events beyond the first per id.
    pub fn duplicates(&self) -> u64 {
        self.seen.values().map(|n| n - 1).sum()
    }

    /// Whether an event id was seen.
    pub fn contains(&self, event_id: &str) -> bool {
        self.seen.contains_key(event_id)
    }

    /// The accepted event ids that never arrived.
    pub fn missing<'a>(&self, accepted: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        accepted
            .into_iter()
            .filter(|id| !self.seen.contains_key(*id))
            .cloned()
            .collect()
    }

    /// A scenario's figures when its agents accepted `accepted` (event ids): reported, and a
    /// test failure naming the missing ids if any accepted frame has no event.
    pub fn settle(&self, scenario: &str, accepted: &[String], recovery: Duration) -> Figures {
        let missing = self.missing(accepted);
        let figures = Figures {
            scenario: scenario.to_string(),
            captured: accepted.len() as u64,
            events: (accepted.len() - missing.len()) as u64,
            lost: missing.len() as u64,
            duplicates: self.duplicates(),
            recovery,
        };
        figures.report();
        assert!(
            missing.is_empty(),
            "{scenario}: accepted frames without an event: {missing:?}"
        );
        figures
    }

    /// Sequences seen for one device.
    pub fn sequences(&self, device: &str) -> BTreeSet<u64> {
        let prefix = format!("{device}/");
        self.seen
            .keys()
            .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
            .collect()
    }
}

/// The event id of a device's frame, as the pod forms it.
pub fn event_id(device: &str, sequence: u64) -> String {
    format!("{device}/{sequence}")
}

/// Resident memory of a process in bytes (`VmRSS` in `/proc/<pid>/status`), if it runs.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A workspace binary (`visionfleet-edge-agent`, `visionfleet-inference`) built beside
/// the running test, so scenarios can kill real processes.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => panic!("cannot locate the test binary: {e}"),
    };
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name));
    match bin {
        Some(b) if b.exists() => b,
        _ => panic!("{name} is not built beside {exe:?}: run `cargo build --workspace` first"),
    }
}

/// A small xorshift generator: fault points that differ from run to run of a loop but are
/// reproducible from the seed printed on failure.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_has_the_stated_form() {
        let f = Figures {
            scenario: "agent-kill".into(),
            captured: 120,
            events: 120,
            lost: 0,
            duplicates: 7,
            recovery: Duration::from_millis(1234),
        };
        assert_eq!(
            f.to_string(),
            "chaos agent-kill: captured 120, events 120, lost 0, duplicates 7, recovery 1.23 s"
        );
    }

    #[test]
    fn the_tally_counts_duplicates_and_missing_by_event_id() {
        let mut t = Tally::default();
        t.add_json([
            br#"{"event_id":"cam/1"}"#.as_slice(),
            br#"{"event_id":"cam/2"}"#.as_slice(),
            br#"{"event_id":"cam/2"}"#.as_slice(),
        ]);
        assert_eq!(t.distinct(), 2);
        assert_eq!(t.duplicates(), 1);
        let accepted: Vec<String> = (1..=3).map(|s| event_id("cam", s)).collect();
        assert_eq!(t.missing(&accepted), BTreeSet::from(["cam/3".to_string()]));
        assert_eq!(t.sequences("cam"), BTreeSet::from([1, 2]));
    }

    #[test]
    fn rss_of_this_process_is_known() {
        assert!(rss_bytes(std::process::id()).unwrap_or(0) > 0);
    }
}
