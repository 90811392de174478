//! Store-and-forward with the real agent binary, a real Apache Kafka broker and the real
//! pod: frames captured while the pod is away are delivered when it comes back (the agent
//! SIGKILL loop is the chaos suite's `agent-kill` scenario). Sequence numbers
//! are given only to stored frames and continue across restarts, so "nothing lost" is
//! checked exactly: the events in Kafka cover every sequence from the first to the last.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config, consumer::consume, Kafka, TestServer};
use visionfleet_edge_agent::lanes::{peek, Lanes};
use visionfleet_edge_agent::spool::{FullPolicy, SpoolConfig};
use visionfleet_proto::event::DetectionEvent;

fn agent(endpoint: &str, device: &str, spool: &Path, count: u64, fps: f64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_visionfleet-edge-agent"));
    c.args([
        "--endpoint",
        endpoint,
        "--device-id",
        device,
        "--source",
        "synthetic",
        "--width",
        "64",
        "--height",
        "48",
        "--window",
        "4",
        "--start-sequence",
        "1",
        "--give-up-after-seconds",
        "120",
        "--json",
    ])
    .args(["--count", &count.to_string(), "--fps", &fps.to_string()])
    .arg("--spool-dir")
    .arg(spool)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// Event counts by sequence for one device.
fn events(bootstrap: &str, topic: &str, device: &str, expect: usize) -> BTreeMap<u64, u32> {
    let group = format!("check-{device}");
    let mut out = BTreeMap::new();
    for r in consume(
        bootstrap,
        topic,
        &group,
        expect,
        Duration::from_secs(60),
        Duration::from_secs(2),
    ) {
        let e: DetectionEvent = serde_json::from_slice(&r.payload).unwrap();
        if e.device_id == device {
            *out.entry(e.sequence).or_default() += 1;
        }
    }
    out
}

/// Frames waiting in both lanes (opening the spool recovers it, as the agent would).
fn waiting(dir: &Path) -> BTreeSet<u64> {
    let lanes = Lanes::open(
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            ttl: None,
            policy: FullPolicy::Block,
            segment_bytes: 64 << 20,
        },
        0.25,
    )
    .unwrap();
    lanes.waiting()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_captured_during_an_outage_are_delivered_when_the_pod_returns() {
    let kafka = Kafka::start(1);
    let topic = "sf.outage";
    let spool = tempfile::tempdir().unwrap();
    // Reserve a port for the pod, which is not there yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = agent(
        &format!("http://{addr}"),
        "cam-outage",
        spool.path(),
        8,
        10.0,
    )
    .spawn()
    .unwrap();
    // Capture (0.8 s at 10 fps) goes on into the spool while nothing answers.
    support::eventually("8 frames in the spool", Duration::from_secs(20), || {
        (peek(spool.path()).unwrap().0.len() == 8).then_some(())
    })
    .await;
    let server = TestServer::start_on(
        config(&kafka.bootstrap, topic, &["--models", "coco-yolov5s"]),
        addr,
    )
    .await;
    let summary = support::json_output(child).await;
    assert_eq!(summary["acknowledged"], 8, "{summary}");
    assert_eq!(summary["spool"]["appended"], 8, "{summary}");
    assert_eq!(summary["spool"]["acknowledged"], 8, "{summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    let seen = events(&kafka.bootstrap, topic, "cam-outage", 8);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert!(waiting(spool.path()).is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_outage_mid_capture_loses_nothing() {
    // 0.5 fps keeps well under the CPU pod's ~1 frame/s, so the backlog drains while
    // capture goes on.
    const FRAMES: u64 = 24;
    let kafka = Kafka::start(1);
    let topic = "sf.midoutage";
    let server_config = || config(&kafka.bootstrap, topic, &["--models", "coco-yolov5s"]);
    let server = TestServer::start(server_config()).await;
    let addr = server.grpc;
    let spool = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = agent(&server.url(), "cam-midoutage", spool.path(), FRAMES, 0.5)
        .args(["--http-addr", &http.to_string()])
        .spawn()
        .unwrap();
    support::eventually_async(
        "the first acknowledgements",
        Duration::from_secs(60),
        || async {
            let (_, body) = support::http_get(http, "/status").await.ok()?;
            let r: serde_json::Value = serde_json::from_str(&body).ok()?;
            (r["acknowledged"].as_u64()? >= 2).then_some(())
        },
    )
    .await;
    server.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let waiting_during_outage = peek(spool.path()).unwrap().0.len();
    assert!(
        waiting_during_outage >= 10,
        "capture went on into the spool: {waiting_during_outage} waiting"
    );
    let server = TestServer::start_on(server_config(), addr).await;
    let summary = support::json_output(child).await;
    assert_eq!(summary["spool"]["appended"], FRAMES, "{summary}");
    assert_eq!(summary["spool"]["acknowledged"], FRAMES, "{summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    let seen = events(&kafka.bootstrap, topic, "cam-midoutage", FRAMES as usize);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=FRAMES).collect::<Vec<_>>(),
        "every frame's event, once de-duplicated by event id"
    );
    assert!(waiting(spool.path()).is_empty());
    server.stop().await.unwrap();
}
