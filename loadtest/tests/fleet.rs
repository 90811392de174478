//! `visionfleet-loadtest fleet` against a real Apache Kafka broker and the real pod: a small
//! fleet is fully accounted for (every frame sent has exactly one event, none lost), and
//! the report files are written; bad settings get a clear error.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../services/inference/tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::{config, models_dir, Kafka, TestServer};

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_visionfleet-loadtest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_is_fully_accounted_for() {
    let kafka = Kafka::start(1);
    let topic = "loadtest.it";
    let server = TestServer::start(config(
        &kafka.bootstrap,
        topic,
        &["--models", "coco-yolov5s"],
    ))
    .await;
    let out = tempfile::tempdir().unwrap();
    let samples = models_dir().join("samples");
    let url = server.url();
    let args: Vec<String> = [
        "fleet",
        "--endpoint",
        &url,
        "--kafka-bootstrap",
        &kafka.bootstrap,
        "--topic",
        topic,
        "--devices",
        "3",
        "--fps",
        "1",
        "--duration",
        "4",
        "--warmup",
        "1",
        "--ramp-up",
        "1",
        "--images",
        samples.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = tokio::task::spawn_blocking(move || loadtest().args(args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("loadtest: "), "{last}");

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap();
    assert!(n("sent") >= 3, "{r}");
    assert_eq!(n("events"), n("sent"), "{r}");
    assert_eq!(n("acked_published"), n("sent"), "{r}");
    assert_eq!((n("lost"), n("duplicates")), (0, 0), "{r}");
    assert_eq!(n("peak_open_streams"), 3, "{r}");
    assert_eq!(r["partial"], false);
    assert!(
        last.starts_with(&format!(
            "loadtest: {} sent, {} events, 0 lost, 0 duplicates, p50 ",
            n("sent"),
            n("events")
        )),
        "{last}"
    );
    assert!(std::fs::read_to_string(out.path().join("timeline.svg"))
        .unwrap()
        .contains("<svg"));
    assert!(std::fs::read_to_string(out.path().join("summary.md"))
        .unwrap()
        .contains("| lost | 0 |"));
    server.stop().await.unwrap();
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let run = |extra: &[&str]| {
        let out = loadtest()
            .args([
                "fleet",
                "--endpoint",
                "http://127.0.0.1:9",
                "--kafka-bootstrap",
                "127.0.0.1:9",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--devices", "0"]).contains("--devices must be at least 1"));
    assert!(run(&["--fps", "0"]).contains("--fps and --rate must be positive"));
    assert!(run(&["--rate", "1", "--in-flight", "2"]).contains("cannot be used with"));
    assert!(run(&["--images", "/nonexistent-photos"]).contains("reading /nonexistent-photos"));
}
