//! What the fleet run records while it runs: frames sent and their fate, capture-to-ack
//! latencies (HDR histograms, overall and per second for the timeline) and errors by
//! status code. Shared by every virtual device behind one lock: at the rates one pod
//! sustains, the lock is never the bottleneck.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 us to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What became of a frame a device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent, no answer yet (or the stream broke before one came).
    Sent,
    /// Acknowledged: its event is in Kafka.
    Published,
    /// Refused by the pod with a reason (never retried).
    Rejected,
}

/// One second of the timeline.
pub struct Second {
    /// Published acks received in this second.
    pub acks: u64,
    /// Their capture-to-ack latencies.
    pub latency: Histogram<u64>,
}

/// Everything recorded, behind [`Recorder`]'s lock.
pub struct Tally {
    /// Frames put on the wire.
    pub sent: u64,
    /// Capture ticks skipped because the device's in-flight window was full (the device
    /// is pushed back; a real camera drops such frames).
    pub skipped_window_full: u64,
    /// Fate by event id.
    pub frames: HashMap<String, Fate>,
    /// Rejections by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Stream failures by gRPC status code.
    pub errors: BTreeMap<String, u64>,
    /// Capture-to-ack latency of frames captured after the warm-up.
    pub ack_latency: Histogram<u64>,
    /// Published acks received between the end of the warm-up and the end of sending.
    pub steady_acks: u64,
    /// Per-second timeline from the start of the run.
    pub timeline: Vec<Second>,
    /// Streams open now.
    pub open_streams: u64,
    /// Most streams open at once.
    pub peak_open_streams: u64,
}

/// The shared recorder.
pub struct Recorder {
    /// Start of the run.
    pub start: Instant,
    /// End of the warm-up: frames captured before it are not in the latency figures.
    pub measure_from: Instant,
    /// When sending stops.
    pub send_until: Instant,
    tally: Mutex<Tally>,
}

impl Recorder {
    /// A recorder for a run starting now.
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            measure_from: start + warmup,
            send_until: start + warmup + duration,
            tally: Mutex::new(Tally {
                sent: 0,
                skipped_window_full: 0,
                frames: HashMap::new(),
                rejected: BTreeMap::new(),
                errors: BTreeMap::new(),
                ack_latency: new_histogram(),
                steady_acks: 0,
                timeline: Vec::new(),
                open_streams: 0,
                peak_open_streams: 0,
            }),
        }
    }

    /// Runs `f` with the tally locked.
    pub fn with<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    }

    /// A frame went on the wire.
    pub fn sent(&self, event_id: String) {
        self.with(|t| {
            t.sent += 1;
            t.frames.insert(event_id, Fate::Sent);
        });
    }

    /// A published ack arrived for a frame captured at `captured`.
    pub fn published(&self, event_id: &str, captured: Instant) {
        let now = Instant::now();
        let micros = now.duration_since(captured).as_micros().max(1) as u64;
        let second = now.duration_since(self.start).as_secs() as usize;
        self.with(|t| {
            if let Some(f) = t.frames.get_mut(event_id) {
                *f = Fate::Published;
            }
            if captured >= self.measure_from {
                t.ack_latency.saturating_record(micros);
            }
            if now >= self.measure_from && now <= self.send_until {
                t.steady_acks += 1;
            }
            while t.timeline.len() <= second {
                t.timeline.push(Second {
                    acks: 0,
                    latency: new_histogram(),
                });
            }
            t.timeline[second].acks += 1;
            t.timeline[second].latency.saturating_record(micros);
        });
    }

    /// The pod refused a frame.
    pub fn rejected(&self, event_id: &str, reason: &str) {
        self.with(|t| {
            if let Some(f) = t.frames.get_mut(event_id) {
                *f = Fate::Rejected;
            }
            *t.rejected.entry(reason.to_string()).or_default() += 1;
        });
    }

    /// A device's stream opened (`true`) or ended.
    pub fn stream(&self, open: bool) {
        self.with(|t| {
            if open {
                t.open_streams += 1;
                t.peak_open_streams = t.peak_open_streams.max(t.open_streams);
            } else {
                t.open_streams -= 1;
            }
        });
    }

    /// A stream failed with a gRPC status.
    pub fn stream_error(&self, code: tonic::Code) {
        self.with(|t| *t.errors.entry(format!("{code:?}")).or_default() += 1);
    }
}
