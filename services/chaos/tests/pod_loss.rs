//! Scenario 5, pod loss: two inference pods, agents that know both; the pod they stream
//! to is SIGKILLed mid-stream, between Kafka's delivery reports and the gRPC acks it
//! would have sent. Promises: agents fail over to the other pod and resend what was not
//! acknowledged; nothing stored is lost; duplicates stay within the in-flight window per
//! agent, and a consumer that de-duplicates by event id sees each frame once.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{published_beyond, tally, Fleet, Pod, WINDOW};
use support::Kafka;
use visionfleet_chaos::Scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_stream_loses_nothing() {
    let scale = Scale::from_env();
    let agents = scale.pick(3, 10);
    let fps = 1.5 / agents as f64;
    let kafka = Kafka::start(1);
    let topic = "chaos.pod-loss";
    let mut first = Pod::start(&kafka.bootstrap, topic, &[]).await;
    let second = Pod::start(&kafka.bootstrap, topic, &[]).await;
    let endpoints = format!("{},{}", first.url(), second.url());

    let fleet = Fleet::start(&endpoints, "cam-podloss", agents, fps);
    // Streaming to the first pod, with frames in flight.
    published_beyond(
        first.http,
        agents as u64 - 1,
        "acks from the first pod",
        Duration::from_secs(60),
    )
    .await;
    first.kill();
    let killed = Instant::now();
    published_beyond(
        second.http,
        0,
        "acks from the second pod",
        Duration::from_secs(60),
    )
    .await;
    let recovery = killed.elapsed();
    // Capture goes on against the second pod for a while.
    tokio::time::sleep(Duration::from_secs(scale.pick(5, 30))).await;

    let url = second.url();
    let accepted = fleet.finish(&url);
    let seen = tally(&kafka.bootstrap, topic, accepted.len());
    let figures = seen.settle("pod-loss", &accepted, recovery);
    assert_eq!(
        seen.distinct(),
        accepted.len() as u64,
        "de-duplicated, each frame once"
    );
    assert!(
        figures.duplicates <= WINDOW * agents as u64,
        "{} duplicates, more than the window of {WINDOW} per agent",
        figures.duplicates
    );
}
