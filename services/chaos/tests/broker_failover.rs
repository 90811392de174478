//! Scenario 4, broker failover: a three-node Apache Kafka cluster (KRaft), the events
//! topic with replication factor 3 and `min.insync.replicas=2`, the pod's producer with
//! `acks=all` and idempotence (fixed: `--kafka-opt` cannot weaken them, checked at
//! start-up). The partition leader is SIGKILLed again and again while agents stream.
//! Promises: nothing stored is lost, acknowledgements resume after each election, and
//! the ack pause per kill is measured.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use common::{published, published_beyond, tally, Fleet};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use support::{config, Kafka, TestServer};
use visionfleet_chaos::Scale;

/// The cluster's view of `topic`.
fn metadata(bootstrap: &str, topic: &str) -> Option<rdkafka::metadata::Metadata> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
}

/// Leader and in-sync replicas of partition 0 of `topic`.
fn partition_zero(bootstrap: &str, topic: &str) -> Option<(i32, usize)> {
    let md = metadata(bootstrap, topic)?;
    let p = md.topics().first()?.partitions().first()?;
    (p.leader() > 0 && p.error().is_none()).then(|| (p.leader(), p.isr().len()))
}

/// The topic's replication factor and `min.insync.replicas`, as the cluster reports them.
async fn durability(bootstrap: &str, topic: &str) -> (usize, String) {
    let md = metadata(bootstrap, topic).unwrap();
    let replicas = md.topics()[0].partitions()[0].replicas().len();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = configs.into_iter().next().unwrap().unwrap();
    let min_isr = resource
        .get("min.insync.replicas")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    (replicas, min_isr)
}

#[test]
fn the_producer_guarantees_cannot_be_weakened() {
    for (opt, key) in [
        ("enable.idempotence=false", "enable.idempotence"),
        ("acks=1", "acks"),
    ] {
        let cfg = visionfleet_inference::Config::try_parse_from([
            "visionfleet-inference",
            "--kafka-opt",
            opt,
        ])
        .unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            format!("invalid configuration: --kafka-opt: {key} is fixed (idempotent producer, acks=all)")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_partition_leader_again_and_again_loses_nothing() {
    let scale = Scale::from_env();
    let kills = scale.pick(2, 5);
    let agents = scale.pick(3, 8);
    let fps = 1.0 / agents as f64;
    let kafka = Kafka::start(3);
    let topic = "chaos.broker-failover";
    let server = TestServer::start(config(
        &kafka.bootstrap,
        topic,
        &["--models", "coco-yolov5s", "--topic-replication", "3"],
    ))
    .await;
    let (replicas, min_isr) = durability(&kafka.bootstrap, topic).await;
    assert_eq!(
        (replicas, min_isr.as_str()),
        (3, "2"),
        "replication 3, min.insync.replicas 2"
    );

    let fleet = Fleet::start(&server.url(), "cam-failover", agents, fps);
    let http = server.http;
    let acks_beyond = |floor, what| published_beyond(http, floor, what, Duration::from_secs(120));
    acks_beyond(0, "the first acknowledgements").await;

    let mut pauses = Vec::new();
    for _ in 0..kills {
        let (leader, _) =
            support::eventually("a partition leader", Duration::from_secs(60), || {
                partition_zero(&kafka.bootstrap, topic)
            })
            .await;
        let before = published(http).await;
        let killed = Instant::now();
        kafka.kill_node(leader as usize);
        acks_beyond(before, "acknowledgements after the election").await;
        pauses.push(killed.elapsed());
        // Back to three in-sync replicas before the next kill, so each kill leaves two.
        kafka.start_node(leader as usize);
        support::eventually("three in-sync replicas", Duration::from_secs(120), || {
            partition_zero(&kafka.bootstrap, topic)
                .filter(|&(_, isr)| isr == 3)
                .map(|_| ())
        })
        .await;
    }

    let url = server.url();
    let accepted = fleet.finish(&url);
    let seen = tally(&kafka.bootstrap, topic, accepted.len());
    seen.settle(
        "broker-failover",
        &accepted,
        pauses.iter().copied().max().unwrap_or_default(),
    );
    println!(
        "broker-failover: ack pause per leader kill (s): {:?}",
        pauses
            .iter()
            .map(|p| (p.as_secs_f64() * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        seen.distinct(),
        accepted.len() as u64,
        "no event for a frame never stored"
    );
    server.stop().await.unwrap();
}
