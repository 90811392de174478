//! The Kafka publisher: an idempotent `acks=all` producer that puts one detection event per
//! frame on the detections topic (key = device id, so each device's events stay in order)
//! and rejected frames on the dead-letter topic. `publish` returns only once the broker has
//! confirmed the write, which is what lets the pod acknowledge a frame.
//!
//! A fatal producer error (librdkafka's idempotence state is broken, e.g. the broker
//! reported an out-of-order sequence) makes the producer refuse everything from then on.
//! The pod then reports not-ready, fails the frames in flight (they were not confirmed, so
//! their agents resend them), builds a new producer from the same settings and becomes
//! ready again once the new one has reached the cluster.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use visionfleet_proto::event::{
    DetectionEvent, Rejection, EVENT_TYPE, JSON_CONTENT_TYPE, REJECTION_TYPE,
};

use crate::config::Config;
use crate::error::Error;

/// The current producer, and what it takes to replace it after a fatal error.
struct ProducerSlot {
    producer: RwLock<(u64, FutureProducer)>,
    settings: ClientConfig,
    startup_timeout: Duration,
    /// False from a fatal error until the replacement reached the cluster.
    healthy: Arc<AtomicBool>,
    replaced: prometheus::IntCounter,
}

impl ProducerSlot {
    /// The producer in use and its generation.
    fn current(&self) -> (u64, FutureProducer) {
        let guard = self.producer.read().unwrap_or_else(|e| e.into_inner());
        (guard.0, guard.1.clone())
    }

    /// After a failed send or delivery: if the producer of `generation` is in a fatal
    /// state, marks the pod unhealthy and replaces it (once per generation, on a blocking
    /// thread since the metadata probe waits).
    fn check_fatal(self: &Arc<Self>, generation: u64, producer: &FutureProducer) {
        let Some((code, reason)) = producer.client().fatal_error() else {
            return;
        };
        if self.producer.read().unwrap_or_else(|e| e.into_inner()).0 != generation
            || !self.healthy.swap(false, Ordering::SeqCst)
        {
            return; // already being replaced
        }
        tracing::error!(%code, %reason, "fatal Kafka producer error: replacing the producer");
        let slot = self.clone();
        tokio::task::spawn_blocking(move || slot.replace(generation));
    }

    /// Installs a new producer built from the same settings, then waits until it reaches
    /// the cluster before reporting healthy again.
    fn replace(&self, generation: u64) {
        let fresh = loop {
            match self.settings.create::<FutureProducer>() {
                Ok(p) => break p,
                Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        *self.producer.write().unwrap_or_else(|e| e.into_inner()) = (generation + 1, fresh.clone());
        while let Err(e) = fresh
            .client()
            .fetch_metadata(None, Timeout::After(self.startup_timeout))
        {
            tracing::warn!(error = %e, "new Kafka producer: no answer from the cluster yet");
        }
        self.replaced.inc();
        self.healthy.store(true, Ordering::SeqCst);
        tracing::info!("Kafka producer replaced; ready again");
    }
}

/// The producer and where it writes.
pub struct Publisher {
    slot: Arc<ProducerSlot>,
    topic: String,
    dead_letter_topic: String,
    source: String,
}

impl Publisher {
    /// Connects, checks that the cluster answers, and creates the topics when missing.
    /// `replaced` counts producers replaced after fatal errors.
    pub async fn connect(config: &Config, replaced: prometheus::IntCounter) -> Result<Self, Error> {
        let unavailable = |reason: String| Error::KafkaUnavailable {
            bootstrap: config.kafka_bootstrap.clone(),
            reason,
        };
        let mut client = ClientConfig::new();
        // Set explicitly: librdkafka leaves idempotence off by default, and these two are
        // what makes an acknowledged frame safe (`Config::validate` refuses overrides).
        client
            .set("bootstrap.servers", &config.kafka_bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "100000")
            .set(
                "message.timeout.ms",
                config.kafka_delivery_timeout_ms.to_string(),
            )
            .set("client.id", "visionfleet-inference");
        for (k, v) in &config.kafka_opts {
            client.set(k, v);
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|e| unavailable(format!("producer: {e}")))?;
        let admin: AdminClient<DefaultClientContext> = client
            .create()
            .map_err(|e| unavailable(format!("admin client: {e}")))?;

        // A metadata round trip proves the cluster answers; librdkafka would otherwise
        // keep retrying silently and the pod would look healthy while publishing nothing.
        let timeout = Duration::from_millis(config.kafka_startup_timeout_ms);
        let probe = producer.clone();
        let brokers = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Timeout::After(timeout))
                .map(|m| m.brokers().len())
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(format!("no answer within {} ms ({e})", timeout.as_millis())))?;
        tracing::info!(bootstrap = %config.kafka_bootstrap, brokers, "connected to Kafka");

        let replication = TopicReplication::Fixed(config.topic_replication);
        let topics = [
            NewTopic::new(&config.topic, config.topic_partitions, replication),
            NewTopic::new(
                &config.dead_letter_topic,
                config.topic_partitions,
                TopicReplication::Fixed(config.topic_replication),
            ),
        ];
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let results = if config.create_topics {
            admin
                .create_topics(&topics, &opts)
                .await
                .map_err(|e| unavailable(format!("creating topics: {e}")))?
        } else {
            Vec::new()
        };
        for result in results {
            match result {
                Ok(topic) => tracing::info!(topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(unavailable(format!("creating topic {topic}: {code}")))
                }
            }
        }
        tracing::info!(
            acks = client.get("acks").unwrap_or_default(),
            enable_idempotence = client.get("enable.idempotence").unwrap_or_default(),
            message_timeout_ms = client.get("message.timeout.ms").unwrap_or_default(),
            "producer delivery guarantees"
        );
        Ok(Self {
            slot: Arc::new(ProducerSlot {
                producer: RwLock::new((0, producer)),
                settings: client,
                startup_timeout: timeout,
                healthy: Arc::new(AtomicBool::new(true)),
                replaced,
            }),
            topic: config.topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            source: format!("/visionfleet/inference/{}", host_name()),
        })
    }

    /// Hands a frame's event to the producer now and returns a future that resolves when
    /// the broker has confirmed it (with how long that took). Enqueueing is synchronous, so
    /// events enqueued in sequence order stay in that order on their partition.
    pub fn enqueue(
        &self,
        event: &DetectionEvent,
    ) -> Result<impl std::future::Future<Output = Result<Duration, Error>> + Send + 'static, Error>
    {
        let payload = serde_json::to_vec(event).map_err(|e| Error::Publish(e.to_string()))?;
        let time = event.inferred_at.to_rfc3339();
        self.enqueue_record(
            &self.topic,
            &event.device_id,
            &event.event_id,
            EVENT_TYPE,
            &time,
            &payload,
        )
    }

    /// Publishes a frame's event and waits for the broker's confirmation.
    pub async fn publish(&self, event: &DetectionEvent) -> Result<Duration, Error> {
        self.enqueue(event)?.await
    }

    /// Publishes a rejected frame's reason to the dead-letter topic.
    pub async fn publish_rejection(&self, rejection: &Rejection) -> Result<Duration, Error> {
        let payload = serde_json::to_vec(rejection).map_err(|e| Error::Publish(e.to_string()))?;
        let time = rejection.received_at.to_rfc3339();
        self.enqueue_record(
            &self.dead_letter_topic,
            &rejection.device_id,
            &rejection.event_id,
            REJECTION_TYPE,
            &time,
            &payload,
        )?
        .await
    }

    fn enqueue_record(
        &self,
        topic: &str,
        key: &str,
        id: &str,
        ce_type: &str,
        time: &str,
        payload: &[u8],
    ) -> Result<impl std::future::Future<Output = Result<Duration, Error>> + Send + 'static, Error>
    {
        let traceparent = new_traceparent();
        let headers = OwnedHeaders::new()
            .insert(header("content-type", JSON_CONTENT_TYPE))
            .insert(header("ce_specversion", "1.0"))
            .insert(header("ce_id", id))
            .insert(header("ce_source", &self.source))
            .insert(header("ce_type", ce_type))
            .insert(header("ce_time", time))
            .insert(header("traceparent", &traceparent));
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        let started = Instant::now();
        let (generation, producer) = self.slot.current();
        // The in-flight windows bound what is queued far below librdkafka's own queue, so a
        // full local queue here means something is badly wrong: fail the frame (retryable).
        let delivery = match producer.send_result(record) {
            Ok(d) => d,
            Err((e, _)) => {
                self.slot.check_fatal(generation, &producer);
                return Err(Error::Publish(format!("enqueue: {e}")));
            }
        };
        let slot = self.slot.clone();
        Ok(async move {
            // Only a delivery report without error means the broker persisted the event
            // with acks=all; anything else fails the frame, so it is never acknowledged.
            let report = delivery
                .await
                .map_err(|_| Error::Publish("producer dropped the delivery report".into()))?;
            if let Err((e, _)) = report {
                slot.check_fatal(generation, &producer);
                return Err(Error::Publish(e.to_string()));
            }
            Ok(started.elapsed())
        })
    }

    /// False while a producer that hit a fatal error is being replaced.
    pub fn healthy(&self) -> Arc<AtomicBool> {
        self.slot.healthy.clone()
    }

    /// Waits (blocking) until every queued event is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.slot
            .current()
            .1
            .flush(Timeout::After(timeout))
            .map_err(|e| Error::Publish(format!("flush: {e}")))
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// A fresh W3C trace context (`00-<trace id>-<span id>-01`) so a frame's event can be
/// followed through downstream consumers.
fn new_traceparent() -> String {
    let random = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    };
    format!("00-{:016x}{:016x}-{:016x}-01", random(), random(), random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_has_the_w3c_shape_and_differs_each_time() {
        let a = new_traceparent();
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_ne!(a, new_traceparent());
    }
}
