//! Serving behaviour under pressure: overload is shed with RESOURCE_EXHAUSTED and retry
//! advice, a frame whose deadline passed is not run, and shutdown drains in-flight frames.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::{config, eventually_async, http_get, models_dir, Kafka, TestServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{AckStatus, Frame};

fn shared_kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| Kafka::start(1))
}

fn bus_frame(device: &str, sequence: u64) -> Frame {
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    support::jpeg_frame(device, sequence, &jpeg)
}

/// The value of an unlabelled (or fully labelled) sample in a Prometheus scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_resource_exhausted_and_retry_advice() {
    let kafka = shared_kafka();
    let cfg = config(
        &kafka.bootstrap,
        "serving.overload",
        &["--max-batch-size", "1", "--queue-capacity", "1"],
    );
    let server = TestServer::start(cfg).await;
    let client = IngestClient::connect(server.url()).await.unwrap();
    let calls = (0..12).map(|i| {
        let mut c = client.clone();
        async move { c.detect(bus_frame("cam-overload", i)).await }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(ok >= 1, "nothing was served");
    assert!(!shed.is_empty(), "nothing was shed");
    assert_eq!(ok + shed.len(), 12);
    for status in shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.message(), "queue full: retry after 100 ms");
        assert_eq!(status.metadata().get("retry-after-ms").unwrap(), "100");
    }
    let (_, scrape) = http_get(server.http, "/metrics").await.unwrap();
    assert_eq!(
        sample(&scrape, "vf_frames_failed_total{reason=\"queue_full\"}") as usize,
        12 - ok
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamic_batcher_forms_preferred_batch_sizes() {
    let kafka = shared_kafka();
    // Up to 4 per batch, wait up to 400 ms for more, prefer batches of 2 or 4.
    let cfg = config(
        &kafka.bootstrap,
        "serving.preferred",
        &["--batching", "coco-yolov5s=4:400:2/4"],
    );
    let server = TestServer::start(cfg).await;
    let client = IngestClient::connect(server.url()).await.unwrap();
    let calls = (0..3).map(|i| {
        let mut c = client.clone();
        async move { c.detect(bus_frame("cam-preferred", i)).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let (_, scrape) = http_get(server.http, "/metrics").await.unwrap();
    // Three frames arrive together: a preferred batch of 2 runs, then the one left over.
    assert_eq!(sample(&scrape, "vf_batch_size_count"), 2.0, "{scrape}");
    assert_eq!(sample(&scrape, "vf_batch_size_sum"), 3.0);
    assert_eq!(sample(&scrape, "vf_batch_size_bucket{le=\"2\"}"), 2.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_by_bytes_too() {
    let kafka = shared_kafka();
    // Room for 64 frames but only 1 MiB: one decoded bus.jpg (2.6 MB) fills it.
    let cfg = config(
        &kafka.bootstrap,
        "serving.bytes",
        &[
            "--max-batch-size",
            "1",
            "--queue-capacity",
            "64",
            "--queue-capacity-bytes",
            "1048576",
        ],
    );
    let server = TestServer::start(cfg).await;
    let client = IngestClient::connect(server.url()).await.unwrap();
    let calls = (0..6).map(|i| {
        let mut c = client.clone();
        async move { c.detect(bus_frame("cam-bytes", i)).await }
    });
    let results = futures::future::join_all(calls).await;
    let shed = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + shed, 6, "{results:?}");
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_whose_deadline_passed_is_not_run() {
    let kafka = shared_kafka();
    let cfg = config(
        &kafka.bootstrap,
        "serving.deadline",
        &["--max-batch-size", "1", "--queue-capacity", "8"],
    );
    let server = TestServer::start(cfg).await;
    let client = IngestClient::connect(server.url()).await.unwrap();
    // Three frames keep the single-frame batcher busy for well over a second...
    let busy: Vec<_> = (0..3)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.detect(bus_frame("cam-busy", i)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so this one's 300 ms deadline passes while it waits in the queue.
    let mut late = tonic::Request::new(bus_frame("cam-late", 1));
    late.set_timeout(Duration::from_millis(300));
    let status = client.clone().detect(late).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    for b in busy {
        b.await.unwrap().unwrap();
    }
    let (_, scrape) = http_get(server.http, "/metrics").await.unwrap();
    // The worker skipped it: three forward passes, one deadline failure.
    assert_eq!(sample(&scrape, "vf_batch_size_count"), 3.0, "{scrape}");
    assert_eq!(
        sample(&scrape, "vf_frames_failed_total{reason=\"deadline\"}"),
        1.0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_frames_then_refuses_new_work() {
    let kafka = shared_kafka();
    let server = TestServer::start(config(&kafka.bootstrap, "serving.drain", &[])).await;
    let http = server.http;
    let mut client = IngestClient::connect(server.url()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(bus_frame("cam-drain", 1)).await.unwrap();
    tx.send(bus_frame("cam-drain", 2)).await.unwrap();
    eventually_async("two frames in flight", Duration::from_secs(10), || async {
        let (_, scrape) = http_get(http, "/metrics").await.ok()?;
        (sample(&scrape, "vf_frames_in_flight") == 2.0).then_some(())
    })
    .await;

    let stopping = tokio::spawn(server.stop());
    // Both in-flight frames are still acknowledged as published...
    for _ in 0..2 {
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.status, AckStatus::Published as i32, "{ack:?}");
    }
    // ...then the stream ends with UNAVAILABLE so the agent resends elsewhere.
    let end = acks.message().await.unwrap_err();
    assert_eq!(
        (end.code(), end.message()),
        (Code::Unavailable, "shutting down")
    );
    stopping.await.unwrap().unwrap();
    assert!(
        http_get(http, "/readyz").await.is_err(),
        "HTTP still up after stop"
    );
}
