//! Scenario 8, overload: about three times what the CPU pod can run is offered, by unary
//! `Detect` callers (open loop, a call every 130 ms) on top of streaming agents. Promises:
//! the pod sheds unary calls it cannot queue with RESOURCE_EXHAUSTED and retry advice
//! instead of queueing without bound; streams are slowed by HTTP/2 flow control (their
//! frames wait in the agents' spools, never dropped); the pod's memory stays under a stated
//! bound; nothing acknowledged or stored is lost.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{metric, tally, Fleet, Pod, RssSampler};
use support::{jpeg_frame, models_dir, Kafka};
use visionfleet_chaos::{event_id, Scale};
use visionfleet_proto::v1::ingest_client::IngestClient;

/// The stated bound: an overloaded pod stays within the memory the Helm chart requests for
/// it (`inference.resources.requests.memory`, 2 GiB), whatever the offered load.
const OVERLOAD_RSS_BOUND: u64 = 2 << 30;
/// One unary call per interval: ~7.5 calls/s, three times the pod's ~2.5 frames/s.
const CALL_INTERVAL: Duration = Duration::from_millis(130);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_capacity_is_shed_and_nothing_accepted_is_lost() {
    let scale = Scale::from_env();
    let how_long = Duration::from_secs(scale.pick(10, 60));
    let kafka = Kafka::start(1);
    let topic = "chaos.overload";
    let pod = Pod::start(&kafka.bootstrap, topic, &["--queue-capacity", "8"]).await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    // For the record: resident memory while the pod runs one full batch (8 frames at once,
    // which the queue of 8 takes without shedding); the queue, not the offered load, sizes
    // the pod's memory.
    let rss = RssSampler::start(pod.child.id());
    let client = IngestClient::connect(pod.url()).await.unwrap();
    let full_batch = (1..=8).map(|s| {
        let (mut c, frame) = (client.clone(), jpeg_frame("cam-warm", s, &jpeg));
        async move { c.detect(frame).await.unwrap() }
    });
    futures::future::join_all(full_batch).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batch_rss = rss.peak();

    let fleet = Fleet::start(&pod.url(), "cam-overload", 2, 0.5);
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut sequence = 0;
    while started.elapsed() < how_long {
        sequence += 1;
        let (mut c, frame) = (client.clone(), jpeg_frame("cam-unary", sequence, &jpeg));
        calls.push(tokio::spawn(
            async move { (sequence, c.detect(frame).await) },
        ));
        tokio::time::sleep(CALL_INTERVAL).await;
    }
    let mut served = Vec::new();
    let mut shed = 0u64;
    for call in calls {
        match call.await.unwrap() {
            (s, Ok(_)) => served.push(event_id("cam-unary", s)),
            (_, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().starts_with("queue full: retry after"),
                    "{status:?}"
                );
                assert!(
                    status.metadata().get("retry-after-ms").is_some(),
                    "{status:?}"
                );
                shed += 1;
            }
        }
    }
    let streamed = fleet.finish(&pod.url());
    let peak = rss.peak();
    let (_, scrape) = support::http_get(pod.http, "/metrics").await.unwrap();
    assert_eq!(
        metric(&scrape, "vf_frames_failed_total{reason=\"queue_full\"}") as u64,
        shed
    );

    let accepted: Vec<String> = served.iter().chain(&streamed).cloned().collect();
    let seen = tally(&kafka.bootstrap, topic, accepted.len() + 8);
    seen.settle("overload", &accepted, Duration::ZERO);
    println!(
        "overload: {sequence} unary calls offered, {} served, {shed} shed with RESOURCE_EXHAUSTED; {} streamed frames; pod RSS peak {} MiB for one full batch, {} MiB under overload",
        served.len(),
        streamed.len(),
        batch_rss >> 20,
        peak >> 20
    );
    assert!(shed > 0, "three times capacity was shed, not queued");
    assert!(!served.is_empty(), "the pod kept serving while shedding");
    assert!(
        peak < OVERLOAD_RSS_BOUND,
        "pod RSS {peak} bytes exceeded the bound of {OVERLOAD_RSS_BOUND}"
    );
}
