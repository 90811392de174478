//! Scenario 12, security: secrets handed to the pod never show in what it prints, Kafka
//! SASL and TLS settings reach librdkafka (built with OpenSSL), and tokens are checked. TLS, mTLS, every token case and
//! bad security settings are the transport-security tests (`services/inference/tests`);
//! operator RBAC least privilege is checked against the rendered chart by the operator's
//! API-server tests. This scenario adds what those do not see: the pod's own output, with
//! debug logging on, while it is given a SASL password and presented right and wrong tokens.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use common::Pod;
use support::{jpeg_frame, models_dir, Kafka};
use tonic::Request;
use visionfleet_chaos::{workspace_bin, Figures};
use visionfleet_proto::v1::ingest_client::IngestClient;

const SASL_PASSWORD: &str = "sasl-pw-5f1c0e9a77";
const GOOD_TOKEN: &str = "tok-good-8c2d4b61e0";
const WRONG_TOKEN: &str = "tok-wrong-0b7a93fd12";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_output_and_sasl_settings_reach_librdkafka() {
    let kafka = Kafka::start(1);
    let mut checks = 0;

    // SASL against a plain-text broker: the handshake cannot succeed, so the pod stops at
    // start-up; its error shows librdkafka used the SASL settings, and never the password.
    let out = Command::new(workspace_bin("visionfleet-inference"))
        .args(["--kafka-bootstrap", &kafka.bootstrap, "--kafka-startup-timeout-ms", "3000"])
        .args(["--models-dir", models_dir().to_str().unwrap(), "--models", "coco-yolov5s"])
        .arg(format!(
            "--kafka-opt=security.protocol=SASL_PLAINTEXT,sasl.mechanism=PLAIN,sasl.username=vf,sasl.password={SASL_PASSWORD}"
        ))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("VF_LOG", "debug")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a SASL handshake with a plain-text broker cannot succeed"
    );
    assert!(
        printed.contains(&format!("cannot reach Kafka at {}", kafka.bootstrap)),
        "{printed}"
    );
    assert!(
        !printed.contains(SASL_PASSWORD),
        "the SASL password was printed:\n{printed}"
    );
    checks += 2;

    // Pass-through proven by librdkafka's own refusal of a mechanism it does not have.
    let out = Command::new(workspace_bin("visionfleet-inference"))
        .args(["--kafka-bootstrap", &kafka.bootstrap])
        .args([
            "--models-dir",
            models_dir().to_str().unwrap(),
            "--models",
            "coco-yolov5s",
        ])
        .arg("--kafka-opt=security.protocol=SASL_SSL,sasl.mechanism=BOGUS")
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stderr);
    assert!(
        printed.contains(&format!(
            "cannot reach Kafka at {}: producer: Client creation error: Unsupported SASL mechanism: BOGUS",
            kafka.bootstrap
        )),
        "{printed}"
    );
    checks += 1;

    // Tokens: right and wrong ones presented, debug logging on.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("cam-sec {GOOD_TOKEN}\n")).unwrap();
    let log = dir.path().join("pod.log");
    let pod = Pod::start_logging(
        &kafka.bootstrap,
        "chaos.security",
        &["--device-tokens", tokens.to_str().unwrap()],
        Some(&log),
    )
    .await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut client = IngestClient::connect(pod.url()).await.unwrap();
    let call = |token: &str, sequence: u64| {
        let mut r = Request::new(jpeg_frame("cam-sec", sequence, &jpeg));
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    client.detect(call(GOOD_TOKEN, 1)).await.unwrap();
    let refused = client.detect(call(WRONG_TOKEN, 2)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "unknown device token");
    let anonymous = client
        .detect(Request::new(jpeg_frame("cam-sec", 3, &jpeg)))
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );
    checks += 3;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(pod);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("DEBUG") || logged.contains("debug"),
        "debug logging was on:\n{logged}"
    );
    for secret in [GOOD_TOKEN, WRONG_TOKEN] {
        assert!(!logged.contains(secret), "a token was logged:\n{logged}");
    }
    checks += 2;
    Figures {
        scenario: "security".into(),
        captured: checks,
        events: checks,
        lost: 0,
        duplicates: 0,
        recovery: Duration::ZERO,
    }
    .report();
}
