//! The agent keeps every frame until it is acknowledged: when its server goes away
//! mid-stream, it reconnects (here to a new server on the same address) and resends what
//! was not acknowledged, so every captured frame's event ends up in Kafka.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use support::consumer::consume;
use support::{config, Kafka, TestServer};
use visionfleet_edge_agent::AgentConfig;
use visionfleet_proto::event::DetectionEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_resends_unacknowledged_frames_after_a_reconnect() {
    let kafka = Kafka::start(1);
    let topic = "reconnect.detections";
    let first = TestServer::start(config(&kafka.bootstrap, topic, &[])).await;
    let addr = first.grpc;

    let agent = AgentConfig::try_parse_from([
        "visionfleet-edge-agent",
        "--endpoint",
        &first.url(),
        "--device-id",
        "cam-reconnect",
        "--source",
        "synthetic",
        "--count",
        "30",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "10",
        "--window",
        "4",
        "--start-sequence",
        "0",
    ])
    .unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(visionfleet_edge_agent::run(agent, stop));

    // Let part of the stream through, then take the server away and bring up a new one on
    // the same address.
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.stop().await.unwrap();
    let mut cfg = config(&kafka.bootstrap, topic, &[]);
    cfg.grpc_addr = addr;
    let second = TestServer::start_on(cfg, addr).await;

    let summary = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("agent finished")
        .unwrap()
        .unwrap();
    assert_eq!(summary.captured, 30);
    assert_eq!(summary.acknowledged, 30, "{summary:?}");
    assert!(summary.reconnects >= 1, "{summary:?}");

    let bootstrap = kafka.bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            topic,
            "reconnect-check",
            30,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    let sequences: BTreeSet<u64> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<DetectionEvent>(&r.payload)
                .unwrap()
                .sequence
        })
        .collect();
    // At least once: after de-duplication by event id, every frame is there.
    assert_eq!(sequences, (0..30).collect::<BTreeSet<u64>>());
    second.stop().await.unwrap();
}
