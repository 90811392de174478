//! Priority lanes with the real agent binary, a real Apache Kafka broker and the real pod:
//! an outage with a byte budget too small for everything captured. Every urgent frame
//! survives (routine ones are dropped instead, counted), and after the pod returns the
//! urgent frames reach Kafka before any routine one. The agent's local HTTP port and the
//! `status` command report the lanes while it waits.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config, consumer::consume, Kafka, TestServer};
use visionfleet_proto::event::DetectionEvent;

const FRAMES: u64 = 60;
/// Frames 1 and 10-19 match the urgent rule `source=synthetic-1*`.
const URGENT: u64 = 11;

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn agent_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_visionfleet-edge-agent"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_frames_survive_a_full_budget_and_go_first() {
    let kafka = Kafka::start(1);
    let topic = "lanes.outage";
    let spool = tempfile::tempdir().unwrap();
    let pod = free_port();
    let http = free_port();
    // 11 of the 60 frames (about 2.8 kB each) are urgent; the 64 KiB budget holds about
    // 23 frames.
    let child = agent_bin()
        .args([
            "--endpoint",
            &format!("http://{pod}"),
            "--device-id",
            "cam-lanes",
            "--source",
            "synthetic",
            "--width",
            "160",
            "--height",
            "120",
            "--count",
            &FRAMES.to_string(),
            "--start-sequence",
            "1",
            "--window",
            "4",
            "--spool-max-bytes",
            "65536",
            "--spool-full-policy",
            "drop-oldest",
            "--urgent-attribute",
            "source=synthetic-1*",
            "--http-addr",
            &http.to_string(),
            "--give-up-after-seconds",
            "120",
            "--json",
        ])
        .arg("--spool-dir")
        .arg(spool.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until capture is done (every frame stored, older routine ones evicted).
    let report = support::eventually_async("capture done", Duration::from_secs(60), || async {
        let (code, body) = support::http_get(http, "/status").await.ok()?;
        let r: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && r["captured"] == FRAMES).then_some(r)
    })
    .await;
    assert_eq!(report["device_id"], "cam-lanes");
    assert_ne!(report["uplink"], "streaming", "{report}");
    let urgent_waiting = report["lanes"][0]["frames"].as_u64().unwrap();
    assert_eq!(report["lanes"][0]["lane"], "urgent");
    assert_eq!(urgent_waiting, URGENT, "{report}");

    let (_, metrics) = support::http_get(http, "/metrics").await.unwrap();
    assert!(
        metrics.contains(&format!(
            "vf_agent_spool_frames{{lane=\"urgent\"}} {URGENT}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("vf_agent_spool_dropped_total{lane=\"urgent\",reason=\"oldest\"} 0"),
        "{metrics}"
    );

    // The status command reads the same spool, read-only, while the agent holds it.
    let status = agent_bin()
        .arg("status")
        .arg("--spool-dir")
        .arg(spool.path())
        .args(["--http-addr", &http.to_string()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("spool urgent: {URGENT} frames waiting")),
        "{text}"
    );
    assert!(text.contains("agent cam-lanes: uplink"), "{text}");

    // The pod comes up on the address the agent keeps trying.
    let server = TestServer::start_on(
        config(&kafka.bootstrap, topic, &["--models", "coco-yolov5s"]),
        pod,
    )
    .await;
    let summary = support::json_output(child).await;
    let lanes = &summary["lanes"];
    assert_eq!(lanes["urgent"]["appended"], URGENT, "{summary}");
    assert_eq!(lanes["urgent"]["acknowledged"], URGENT, "{summary}");
    assert_eq!(lanes["urgent"]["dropped_oldest"], 0, "{summary}");
    assert_eq!(lanes["urgent"]["dropped_newest"], 0, "{summary}");
    let routine_dropped = lanes["routine"]["dropped_oldest"].as_u64().unwrap();
    assert!(
        routine_dropped > 0,
        "the budget was meant to overflow: {summary}"
    );
    let delivered = summary["acknowledged"].as_u64().unwrap();
    assert_eq!(delivered + routine_dropped, FRAMES, "{summary}");

    // Kafka holds every urgent frame, and all of them before any routine one (one
    // partition per device key, so this is the order the pod published in).
    let events: Vec<DetectionEvent> = consume(
        &kafka.bootstrap,
        topic,
        "lanes-check",
        delivered as usize,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .iter()
    .map(|r| serde_json::from_slice(&r.payload).unwrap())
    .collect();
    assert_eq!(events.len() as u64, delivered);
    let urgent: Vec<bool> = events
        .iter()
        .map(|e| e.attributes.get("priority").map(String::as_str) == Some("urgent"))
        .collect();
    assert_eq!(urgent.iter().filter(|u| **u).count() as u64, URGENT);
    let first_routine = urgent.iter().position(|u| !u).unwrap();
    assert!(
        urgent[first_routine..].iter().all(|u| !u),
        "an urgent frame came after a routine one: {urgent:?}"
    );
    server.stop().await.unwrap();
}
