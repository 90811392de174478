//! An independent Kafka consumer (its own consumer group) that reads what the pod published.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

/// One record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads from the earliest offset until `expect` records arrived or `timeout` passed, then
/// keeps reading for `linger` more to catch any extra (duplicate) records.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    expect: usize,
    timeout: Duration,
    linger: Duration,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || linger_until.is_some_and(|l| now > l) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
        if out.len() >= expect && linger_until.is_none() {
            linger_until = Some(Instant::now() + linger);
        }
    }
    out
}
