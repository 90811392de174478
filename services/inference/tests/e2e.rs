//! End to end on real parts: the edge agent streams frames over gRPC to the inference server,
//! which runs the candle detector and publishes to an Apache Kafka broker started for the
//! test; independent consumers (a separate Rust consumer group and Python's confluent-kafka)
//! read the events back.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Device;
use support::consumer::{consume, Record};
use support::{config, http_get, models_dir, root, Kafka, TestServer};
use tonic::Code;
use visionfleet_detector::detector::RgbView;
use visionfleet_detector::{Detection, DetectorOptions, ModelStore};
use visionfleet_edge_agent::AgentConfig;
use visionfleet_proto::event::{DetectionEvent, Rejection};
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{frame::Image, AckStatus, Frame, PixelFormat, RawImage, RejectReason};

/// One broker for the tests of this binary that do not stop it; each test uses its own
/// topics.
fn shared_kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| Kafka::start(1))
}

fn samples() -> Vec<(String, image::RgbImage)> {
    ["bus.jpg", "zidane.jpg"]
        .iter()
        .map(|n| {
            let p = models_dir().join("samples").join(n);
            let img = image::open(&p)
                .unwrap_or_else(|e| panic!("{}: {e} (run `make models`)", p.display()))
                .to_rgb8();
            (n.to_string(), img)
        })
        .collect()
}

fn agent_config(url: &str, device: &str, start: u64, repeat: usize) -> AgentConfig {
    let samples = models_dir().join("samples");
    AgentConfig::load([
        "visionfleet-edge-agent",
        "--endpoint",
        url,
        "--device-id",
        device,
        "--source",
        "folder",
        "--path",
        &samples.display().to_string(),
        "--repeat",
        &repeat.to_string(),
        "--window",
        "4",
        "--attribute",
        "line=L1",
        "--start-sequence",
        &start.to_string(),
    ])
    .expect("valid agent settings")
}

fn assert_same_detections(got: &[visionfleet_proto::event::EventDetection], want: &[Detection]) {
    assert_eq!(
        got.len(),
        want.len(),
        "detection count: {got:?} vs {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.class_id, &g.label), (w.class_id, &w.label));
        // Batch composition can differ (1 frame vs several): allow float noise only.
        assert!((g.score - w.score).abs() < 1e-3, "{g:?} vs {w:?}");
        assert!(
            g.bbox.iter().zip(&w.bbox).all(|(a, b)| (a - b).abs() < 0.1),
            "{g:?} vs {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_from_the_agent_becomes_exactly_one_event() {
    let kafka = shared_kafka();
    let topic = "e2e.agent.detections";
    let server = TestServer::start(config(&kafka.bootstrap, topic, &[])).await;

    // What the detector itself says about each sample.
    let detector = ModelStore::open(models_dir())
        .unwrap()
        .load("coco-yolov5s", &Device::Cpu, DetectorOptions::default())
        .unwrap();
    let samples = samples();
    let expected: Vec<Vec<Detection>> = samples
        .iter()
        .map(|(_, img)| detector.detect(&[RgbView::from(img)]).unwrap().remove(0))
        .collect();

    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let summary = visionfleet_edge_agent::run(agent_config(&server.url(), "cam-e2e", 100, 3), stop)
        .await
        .unwrap();
    assert_eq!(
        (summary.captured, summary.acknowledged, summary.rejected),
        (6, 6, 0)
    );

    let bootstrap = kafka.bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            topic,
            "e2e-rust-check",
            6,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 6, "exactly one event per frame");
    let mut seen = BTreeMap::new();
    for Record {
        key,
        headers,
        payload,
    } in &records
    {
        let event: DetectionEvent = serde_json::from_slice(payload).unwrap();
        assert_eq!(key, "cam-e2e");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(headers["ce_id"], event.event_id);
        assert_eq!(headers["ce_type"], "io.visionfleet.detection.v1");
        assert!(headers["ce_source"].starts_with("/visionfleet/inference/"));
        assert!(chrono::DateTime::parse_from_rfc3339(&headers["ce_time"]).is_ok());
        assert_eq!(headers["traceparent"].len(), 55);
        assert_eq!(event.event_id, format!("cam-e2e/{}", event.sequence));
        assert_eq!(event.attributes["line"], "L1");
        assert_eq!(event.model, "coco-yolov5s");
        // The folder source sends bus.jpg then zidane.jpg, three times.
        let (name, img) = &samples[((event.sequence - 100) % 2) as usize];
        assert_eq!(
            (event.image_width, event.image_height),
            img.dimensions(),
            "{name}"
        );
        assert_same_detections(
            &event.detections,
            &expected[((event.sequence - 100) % 2) as usize],
        );
        assert!(
            seen.insert(event.sequence, ()).is_none(),
            "duplicate {}",
            event.event_id
        );
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (100..106).collect::<Vec<_>>()
    );

    // Python's confluent-kafka, a client no one here wrote, sees the same events.
    let python = root().join(".state/venv/bin/python");
    assert!(
        python.exists(),
        "Python venv missing: run scripts/pyenv.sh (make test does)"
    );
    let out = std::process::Command::new(python)
        .arg(root().join("tools/pyclients/consume_events.py"))
        .args([
            "--bootstrap",
            &kafka.bootstrap,
            "--topic",
            topic,
            "--group",
            "e2e-python-check",
        ])
        .args(["--expect", "6", "--timeout", "30"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py["count"], 6);
    let mut py_ids: Vec<String> = py["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["key"], "cam-e2e");
            assert_eq!(e["headers"]["ce_id"], e["value"]["event_id"]);
            e["value"]["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    py_ids.sort();
    let want: Vec<String> = (100..106).map(|s| format!("cam-e2e/{s}")).collect();
    assert_eq!(py_ids, want);

    // The first counters are on /metrics.
    let (code, metrics) = http_get(server.http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("vf_frames_published_total 6"), "{metrics}");
    assert!(metrics.contains("vf_stage_duration_seconds_bucket{stage=\"forward\""));
    // Prometheus' own linter accepts the exposition.
    let mut promtool = std::process::Command::new(root().join("scripts/promtool.sh"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success() && linted.stdout.is_empty() && linted.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
    assert_dashboards_query_exported_metrics(&metrics);
    server.stop().await.unwrap();
}

/// Every metric that the chart's Grafana dashboard and alert rules query is one that the
/// pod (this live scrape) or the edge agent really exports.
fn assert_dashboards_query_exported_metrics(pod_scrape: &str) {
    use visionfleet_edge_agent::lanes::Lanes;
    use visionfleet_edge_agent::metrics::AgentMetrics;
    use visionfleet_edge_agent::spool::{FullPolicy, SpoolConfig};

    let spool = tempfile::tempdir().unwrap();
    let lanes = Lanes::open(
        SpoolConfig {
            dir: spool.path().to_path_buf(),
            max_bytes: 1 << 20,
            ttl: None,
            policy: FullPolicy::DropOldest,
            segment_bytes: 1 << 16,
        },
        0.25,
    )
    .unwrap();
    let agent = AgentMetrics::new();
    agent.refresh_spool(&lanes);
    let agent_scrape = agent.render();
    let exported = |name: &str| {
        let type_line = format!("# TYPE {name} ");
        pod_scrape
            .lines()
            .chain(agent_scrape.lines())
            .any(|l| l.starts_with(&type_line))
    };
    for file in [
        "helm/visionfleet/files/dashboard.json",
        "helm/visionfleet/files/prometheus-rules.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let names: BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("vf_"))
            .collect();
        assert!(names.len() > 5, "{file} names only {names:?}");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| exported(base))
                .unwrap_or(name);
            assert!(
                exported(family),
                "{file} queries {name}, which no service exports"
            );
        }
    }
}

fn frame(device: &str, sequence: u64, image: Option<Image>) -> Frame {
    Frame {
        device_id: device.into(),
        sequence,
        captured_at: None,
        image,
        attributes: HashMap::new(),
        model: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_the_server_keeps_serving() {
    let kafka = shared_kafka();
    let topic = "e2e.badinput.detections";
    let server = TestServer::start(config(&kafka.bootstrap, topic, &[])).await;
    let mut client = IngestClient::connect(server.url()).await.unwrap();

    let cases: Vec<(Frame, &str)> = vec![
        (
            frame(
                "cam-bad",
                1,
                Some(Image::Jpeg(b"\xff\xd8\xff\xe0 this is not a jpeg".to_vec())),
            ),
            "invalid image: JPEG",
        ),
        (
            frame(
                "cam-bad",
                2,
                Some(Image::Raw(RawImage {
                    format: PixelFormat::Rgb8 as i32,
                    width: 10,
                    height: 10,
                    data: vec![0; 299],
                })),
            ),
            "invalid image: raw PIXEL_FORMAT_RGB8 buffer has 299 bytes, 10x10x3 needs 300",
        ),
        (
            frame("cam-bad", 3, None),
            "invalid frame: frame has no image",
        ),
        (
            frame("", 4, Some(Image::Jpeg(vec![1]))),
            "invalid frame: device_id is empty",
        ),
        (
            Frame {
                model: "no-such-model".into(),
                ..frame("cam-bad", 5, Some(Image::Jpeg(vec![1])))
            },
            "unknown model \"no-such-model\" (served: coco-yolov5s)",
        ),
    ];
    for (f, want) in cases {
        let status = client.detect(f).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(want),
            "{:?} does not start with {want:?}",
            status.message()
        );
    }

    // Still serving: a good frame gets detections.
    let bus = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let ok = client
        .detect(frame("cam-bad", 6, Some(Image::Jpeg(bus))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.event_id, "cam-bad/6");
    assert!(ok.detections.iter().any(|d| d.label == "bus"));

    // On a stream a bad frame is a REJECTED ack; the stream goes on.
    let frames = vec![
        frame("cam-bad", 7, Some(Image::Png(b"garbage".to_vec()))),
        frame(
            "cam-bad",
            8,
            Some(Image::Jpeg(
                std::fs::read(models_dir().join("samples/zidane.jpg")).unwrap(),
            )),
        ),
    ];
    let by_seq = support::stream_acks(&mut client, frames).await;
    assert_eq!(by_seq[&7].status, AckStatus::Rejected as i32);
    assert_eq!(by_seq[&7].reject_reason, RejectReason::InvalidImage as i32);
    assert!(
        by_seq[&7].error.starts_with("invalid image: PNG"),
        "{}",
        by_seq[&7].error
    );
    assert_eq!(by_seq[&8].status, AckStatus::Published as i32);

    // Every rejection is on the dead-letter topic with its reason (and no pixels).
    let bootstrap = kafka.bootstrap.clone();
    let dlq = tokio::task::spawn_blocking(move || {
        consume(
            &bootstrap,
            &format!("{topic}.dlq"),
            "dlq-check",
            6,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
    })
    .await
    .unwrap();
    let reasons: BTreeMap<u64, String> = dlq
        .iter()
        .map(|r| {
            let rej: Rejection = serde_json::from_slice(&r.payload).unwrap();
            (rej.sequence, rej.reason)
        })
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert_eq!(reasons[&1], "invalid_image");
    assert_eq!(reasons[&3], "invalid_frame");
    assert_eq!(reasons[&5], "unknown_model");
    assert_eq!(reasons[&7], "invalid_image");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_startup_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bootstrap = format!("127.0.0.1:{port}");
    let cfg = config(
        &bootstrap,
        "never.created",
        &["--kafka-startup-timeout-ms", "2000"],
    );
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = visionfleet_inference::run(cfg, grpc, http, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot reach Kafka at {bootstrap}: no answer within 2000 ms"
        )),
        "{err}"
    );
}
