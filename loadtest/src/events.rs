//! The independent consumer: reads the detections topic like any downstream service (its
//! own consumer group, from the earliest offset) and counts, by event id, the events of
//! this run's devices, with their capture-to-Kafka latency (the Kafka record's timestamp,
//! stamped when the pod produced it, minus the event's capture time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use visionfleet_proto::event::DetectionEvent;

use crate::stats::new_histogram;

/// What the consumer saw.
pub struct Seen {
    /// Times each event id of this run was read.
    pub counts: HashMap<String, u32>,
    /// Capture-to-Kafka latency, microseconds.
    pub kafka_latency: Histogram<u64>,
    /// Records that were not valid detection events.
    pub unreadable: u64,
}

/// A consumer running on its own thread until stopped.
pub struct EventWatcher {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventWatcher {
    /// Subscribes to `topic` and counts events whose device id starts with `prefix`;
    /// latencies only of frames captured at or after `measure_from_micros` (Unix time).
    pub fn start(
        bootstrap: &str,
        topic: &str,
        prefix: &str,
        measure_from_micros: i64,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{prefix}-watcher"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[topic])?;
        let seen = Arc::new(Mutex::new(Seen {
            counts: HashMap::new(),
            kafka_latency: new_histogram(),
            unreadable: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, prefix) = (seen.clone(), stop.clone(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let mut s = seen2.lock().unwrap_or_else(|e| e.into_inner());
                let Some(event) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<DetectionEvent>(p).ok())
                else {
                    s.unreadable += 1;
                    continue;
                };
                if !event.device_id.starts_with(&prefix) {
                    continue;
                }
                if let (Some(captured), Some(ms)) = (event.captured_at, m.timestamp().to_millis()) {
                    if captured.timestamp_micros() >= measure_from_micros {
                        let micros = (ms * 1000 - captured.timestamp_micros()).max(1);
                        s.kafka_latency.saturating_record(micros as u64);
                    }
                }
                *s.counts.entry(event.event_id).or_default() += 1;
            }
        });
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Runs `f` on what was seen so far.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops the consumer thread.
    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(
            &mut *s,
            Seen {
                counts: HashMap::new(),
                kafka_latency: new_histogram(),
                unreadable: 0,
            },
        )
    }
}
