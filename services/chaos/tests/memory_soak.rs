//! Scenario 11, memory soak: steady load below capacity for a bounded time while the pod's
//! resident memory is sampled. Promise: growth over the second half stays under a stated
//! bound (50 MiB in the short run, 100 MiB in the full one, as Triton's memory-growth test
//! uses), and nothing stored is lost.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{stream_for, tally, Pod, RssSampler};
use support::Kafka;
use visionfleet_chaos::Scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_does_not_grow_the_pod() {
    let scale = Scale::from_env();
    let bound: i64 = scale.pick(50, 100) << 20;
    let kafka = Kafka::start(1);
    let topic = "chaos.soak";
    let pod = Pod::start(&kafka.bootstrap, topic, &[]).await;
    // Warm-up outside the measurement.
    let warm = stream_for(&pod.url(), "cam-soakwarm", 1, 2.0, Duration::from_secs(3)).await;
    let rss = RssSampler::start(pod.child.id());
    let accepted = stream_for(
        &pod.url(),
        "cam-soak",
        4,
        0.3,
        Duration::from_secs(scale.pick(20, 300)),
    )
    .await;
    let growth = rss.second_half_growth();
    let seen = tally(&kafka.bootstrap, topic, warm.len() + accepted.len());
    seen.settle("memory-soak", &accepted, Duration::ZERO);
    println!(
        "memory-soak: pod RSS peak {} MiB, second-half growth {} KiB (bound {} MiB)",
        rss.peak() >> 20,
        growth >> 10,
        bound >> 20
    );
    assert!(
        growth < bound,
        "RSS grew {growth} bytes in the second half (bound {bound})"
    );
}
