//! Scenario 6, producer faults through librdkafka's mock cluster (`rdkafka::mocking`): the
//! broker down, `NOT_ENOUGH_REPLICAS`, round trips longer than `message.timeout.ms`, and
//! a fatal idempotence error. The client here behaves as an agent does: a frame that is
//! not acknowledged is sent again, with the same event id. Promises: the pod never
//! acknowledges a frame whose delivery report is not a success (persisted), reports
//! not-ready and replaces its producer after a fatal error, and loses nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{metric, tally};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::{config, jpeg_frame, models_dir, TestServer};
use tonic::transport::Channel;
use visionfleet_chaos::event_id;
use visionfleet_proto::v1::ingest_client::IngestClient;

const DEVICE: &str = "cam-mock";
const TOPIC: &str = "chaos.producer-faults";

/// Sends one frame with Detect (which answers only after Kafka confirmed the event).
async fn send(
    client: &mut IngestClient<Channel>,
    sequence: u64,
    jpeg: &[u8],
) -> Result<(), tonic::Status> {
    client
        .detect(jpeg_frame(DEVICE, sequence, jpeg))
        .await
        .map(|_| ())
}

/// Resends until acknowledged; returns how long that took after the fault was cleared.
async fn resend_until_acked(
    client: &mut IngestClient<Channel>,
    sequence: u64,
    jpeg: &[u8],
) -> Duration {
    let cleared = Instant::now();
    loop {
        match send(client, sequence, jpeg).await {
            Ok(()) => return cleared.elapsed(),
            Err(status) => {
                assert!(
                    cleared.elapsed() < Duration::from_secs(60),
                    "never acknowledged: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_faults_never_acknowledge_an_unpersisted_frame() {
    let mock = MockCluster::new(1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    // The mock broker has no CreateTopics: the topics are provisioned, as a managed
    // cluster would have them, and the pod is told not to create them.
    mock.create_topic(TOPIC, 3, 1).unwrap();
    mock.create_topic(&format!("{TOPIC}.dlq"), 3, 1).unwrap();
    let server = TestServer::start(config(
        &bootstrap,
        TOPIC,
        &[
            "--models",
            "coco-yolov5s",
            "--create-topics",
            "false",
            "--kafka-delivery-timeout-ms",
            "2000",
        ],
    ))
    .await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut client = IngestClient::connect(server.url()).await.unwrap();
    let mut acked = BTreeSet::new();
    let mut worst_recovery = Duration::ZERO;
    let mut sequence = 0;
    let mut next = || {
        sequence += 1;
        sequence
    };

    // Healthy: acknowledged.
    let s = next();
    send(&mut client, s, &jpeg).await.unwrap();
    acked.insert(s);

    // Broker down longer than the delivery timeout: not acknowledged, then resent.
    mock.broker_down(-1).unwrap();
    let s = next();
    let status = send(&mut client, s, &jpeg).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("kafka delivery failed:"),
        "{status:?}"
    );
    mock.broker_up(-1).unwrap();
    worst_recovery = worst_recovery.max(resend_until_acked(&mut client, s, &jpeg).await);
    acked.insert(s);

    // NOT_ENOUGH_REPLICAS is retried by the producer; the ack waits for the success.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    let s = next();
    send(&mut client, s, &jpeg).await.unwrap();
    acked.insert(s);

    // Round trips longer than message.timeout.ms: the frame fails, is never acknowledged.
    mock.broker_round_trip_time(-1, Duration::from_secs(3))
        .unwrap();
    let s = next();
    let status = send(&mut client, s, &jpeg).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    mock.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    worst_recovery = worst_recovery.max(resend_until_acked(&mut client, s, &jpeg).await);
    acked.insert(s);

    // A fatal idempotence error: the producer is replaced and the pod recovers.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let s = next();
    let status = send(&mut client, s, &jpeg).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    worst_recovery = worst_recovery.max(resend_until_acked(&mut client, s, &jpeg).await);
    acked.insert(s);
    let (_, scrape) = support::http_get(server.http, "/metrics").await.unwrap();
    assert_eq!(
        metric(&scrape, "vf_kafka_producer_replaced_total"),
        1.0,
        "the producer was replaced"
    );
    assert_eq!(
        support::http_get(server.http, "/readyz").await.unwrap().0,
        200,
        "ready again"
    );

    let accepted: Vec<String> = acked.iter().map(|s| event_id(DEVICE, *s)).collect();
    let seen = tally(&bootstrap, TOPIC, accepted.len());
    seen.settle("producer-faults", &accepted, worst_recovery);
    assert_eq!(
        seen.distinct(),
        sequence,
        "every frame sent was finally published"
    );
    server.stop().await.unwrap();
}
