//! Kafka away: frames wait (unacknowledged) while the broker is down and are acknowledged,
//! with their events in Kafka exactly once, after it comes back on the same port.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::consumer::consume;
use support::{config, models_dir, Kafka, TestServer};
use tokio_stream::wrappers::ReceiverStream;
use visionfleet_proto::event::DetectionEvent;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{AckStatus, Frame};

fn frame(sequence: u64, jpeg: &[u8]) -> Frame {
    support::jpeg_frame("cam-outage", sequence, jpeg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_while_the_broker_is_away_are_acknowledged_after_it_returns() {
    let kafka = Kafka::start(1);
    let topic = "outage.detections";
    let server = TestServer::start(config(&kafka.bootstrap, topic, &[])).await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut client = IngestClient::connect(server.url()).await.unwrap();

    kafka.stop_node(1);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for sequence in 1..=3 {
        tx.send(frame(sequence, &jpeg)).await.unwrap();
    }
    // Detection takes well under this on the build machines; what holds the acks back is
    // Kafka's absence.
    let early = tokio::time::timeout(Duration::from_secs(8), acks.message()).await;
    assert!(
        early.is_err(),
        "acknowledged while the broker was down: {early:?}"
    );

    kafka.start_node(1);
    let mut acked = BTreeSet::new();
    while acked.len() < 3 {
        let ack = tokio::time::timeout(Duration::from_secs(90), acks.message())
            .await
            .expect("acks after the broker returned")
            .unwrap()
            .expect("stream open");
        assert_eq!(ack.status, AckStatus::Published as i32, "{ack:?}");
        acked.insert(ack.sequence);
    }
    drop(tx);
    assert_eq!(acked, BTreeSet::from([1, 2, 3]));

    let bootstrap = kafka.bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            topic,
            "outage-check",
            3,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    let ids: BTreeSet<String> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<DetectionEvent>(&r.payload)
                .unwrap()
                .event_id
        })
        .collect();
    assert_eq!(records.len(), 3, "exactly one event per frame");
    assert_eq!(
        ids,
        BTreeSet::from([
            "cam-outage/1".to_string(),
            "cam-outage/2".into(),
            "cam-outage/3".into()
        ])
    );
    server.stop().await.unwrap();
}
