//! Scenario 3, broker outage: the single Apache Kafka broker is stopped (SIGTERM, then in
//! a second outage SIGKILL) while agents stream, and restarted on the same data. Promises:
//! acknowledgements pause while the broker is away (nothing is acknowledged that Kafka
//! has not confirmed) and resume when it returns; every frame an agent stored becomes an
//! event; duplicates only as counted re-sends.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{published, published_beyond, tally, Fleet};
use support::{config, Kafka, TestServer};
use visionfleet_chaos::Scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outages_lose_nothing_and_acks_resume() {
    let scale = Scale::from_env();
    let agents: usize = scale.pick(6, 20);
    let outage = Duration::from_secs(scale.pick(6, 30));
    // The CPU pod handles about 2 frames/s; the agents together offer ~1 frame/s so the
    // backlog of an outage drains while capture goes on.
    let fps = 1.0 / agents as f64;
    let kafka = Kafka::start(1);
    let topic = "chaos.broker-outage";
    let server = TestServer::start(config(
        &kafka.bootstrap,
        topic,
        &[
            "--models",
            "coco-yolov5s",
            "--kafka-delivery-timeout-ms",
            "120000",
        ],
    ))
    .await;
    let fleet = Fleet::start(&server.url(), "cam-outage", agents, fps);
    let flowing = |floor| {
        published_beyond(
            server.http,
            floor,
            "acknowledgements flowing",
            Duration::from_secs(60),
        )
    };
    flowing(0).await;

    let mut worst_recovery = Duration::ZERO;
    for kill in [false, true] {
        if kill {
            kafka.kill_node(1);
        } else {
            kafka.stop_node(1);
        }
        // Deliveries already on the wire settle; after that nothing may be confirmed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let paused_at = published(server.http).await;
        tokio::time::sleep(outage).await;
        assert_eq!(
            published(server.http).await,
            paused_at,
            "no event is confirmed while the broker is away"
        );
        kafka.start_node(1);
        let restarted = Instant::now();
        flowing(paused_at).await;
        worst_recovery = worst_recovery.max(restarted.elapsed());
        // Capture goes on between the outages.
        tokio::time::sleep(outage / 2).await;
    }

    let url = server.url();
    let accepted = fleet.finish(&url);
    let seen = tally(&kafka.bootstrap, topic, accepted.len());
    seen.settle("broker-outage", &accepted, worst_recovery);
    assert_eq!(
        seen.distinct(),
        accepted.len() as u64,
        "no event for a frame never stored"
    );
    server.stop().await.unwrap();
}
