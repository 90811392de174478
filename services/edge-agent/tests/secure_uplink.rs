//! The real agent binary against the real pod with TLS, mutual TLS and device tokens on,
//! and a real Apache Kafka broker: the right certificate and token deliver every frame; a
//! wrong token or another device's token stops the agent with the pod's refusal (frames
//! stay in the spool); no client certificate never connects. The token never appears in
//! the agent's output.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::pki::Pki;
use support::{config, Kafka, TestServer};

const TOKEN: &str = "s3cret-token-for-cam-sec";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs the agent for `device` with `count` synthetic frames, spooled, and the given
/// security flags.
fn agent(url: &str, device: &str, spool: &Path, security: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_visionfleet-edge-agent"))
        .args(["--endpoint", url, "--device-id", device])
        .args(["--source", "synthetic", "--count", "2", "--width", "64"])
        .args(["--height", "48", "--start-sequence", "1", "--json"])
        .args(["--give-up-after-seconds", "3"])
        .arg("--spool-dir")
        .arg(spool)
        .args(security)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(TOKEN),
        "the token leaked into the output: {all}"
    );
    out
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_certificate_and_token_get_frames_through() {
    let kafka = Kafka::start(1);
    let pki = Pki::new();
    let files = tempfile::tempdir().unwrap();
    let tokens = write(
        files.path(),
        "tokens",
        &format!("cam-sec {TOKEN}\n* fleet-token\n"),
    );
    let server = TestServer::start(config(
        &kafka.bootstrap,
        "secure.uplink",
        &[
            "--models",
            "coco-yolov5s",
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
            "--tls-client-ca",
            &pki.path("ca.pem"),
            "--device-tokens",
            &tokens,
        ],
    ))
    .await;
    let url = format!("https://127.0.0.1:{}", server.grpc.port());
    let client_cert = write(files.path(), "client.pem", &pki.client.cert);
    let client_key = write(files.path(), "client.key", &pki.client.key);
    let token_file = write(files.path(), "token", &format!("{TOKEN}\n"));
    let wrong_token = write(files.path(), "wrong", "not-a-token\n");
    let ca = pki.path("ca.pem");
    let mtls = [
        "--tls-ca",
        ca.as_str(),
        "--tls-cert",
        client_cert.as_str(),
        "--tls-key",
        client_key.as_str(),
    ];
    let with = |token: &str| -> Vec<String> {
        let mut v: Vec<String> = mtls.iter().map(|s| s.to_string()).collect();
        v.extend(["--token-file".to_string(), token.to_string()]);
        v
    };

    // The right certificate and token: every frame acknowledged.
    let spool = tempfile::tempdir().unwrap();
    let ok = with(&token_file);
    let out = agent(&url, "cam-sec", spool.path(), &args(&ok));
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["acknowledged"], 2, "{summary}");

    // An unknown token: the pod's refusal stops the agent; its frames stay spooled.
    let spool = tempfile::tempdir().unwrap();
    let out = agent(&url, "cam-sec", spool.path(), &args(&with(&wrong_token)));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "the pod refused this device: UNAUTHENTICATED: unknown device token; 2 frames stay in the spool"
        ),
        "{}",
        stderr(&out)
    );

    // Another device's token.
    let spool = tempfile::tempdir().unwrap();
    let out = agent(&url, "cam-other", spool.path(), &args(&ok));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "the pod refused this device: PERMISSION_DENIED: token is bound to device \"cam-sec\", not \"cam-other\""
        ),
        "{}",
        stderr(&out)
    );

    // No client certificate: the pod refuses the handshake at every attempt (the exact
    // TLS alert is checked by the pod's own transport-security test), and the agent gives
    // up after its limit with what it keeps.
    let spool = tempfile::tempdir().unwrap();
    let out = agent(
        &url,
        "cam-sec",
        spool.path(),
        &["--tls-ca", &ca, "--token-file", &token_file],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "no working connection to {url} for 3s; 2 frames stay in the spool"
        )),
        "{err}"
    );
    assert!(
        err.contains("CertificateRequired") || err.contains("certificate"),
        "{err}"
    );

    // A plain-text agent against the TLS port never gets through either.
    let spool = tempfile::tempdir().unwrap();
    let plain = format!("http://127.0.0.1:{}", server.grpc.port());
    let out = agent(
        &plain,
        "cam-sec",
        spool.path(),
        &["--token-file", &token_file],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no working connection"),
        "{}",
        stderr(&out)
    );

    // A caller on the edge box asks for detections now, through the agent's local port;
    // the agent calls Detect with its certificate and token.
    let watched = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut running = Command::new(env!("CARGO_BIN_EXE_visionfleet-edge-agent"))
        .args([
            "--endpoint",
            &url,
            "--device-id",
            "cam-sec",
            "--source",
            "watch",
        ])
        .arg("--path")
        .arg(watched.path())
        .arg("--spool-dir")
        .arg(spool.path())
        .args(["--http-addr", &http.to_string()])
        .args(args(&ok))
        .spawn()
        .unwrap();
    support::eventually_async("the agent's port", Duration::from_secs(20), || async {
        support::http_get(http, "/healthz")
            .await
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .await;
    let bus = std::fs::read(support::models_dir().join("samples/bus.jpg")).unwrap();
    let (code, body) = support::http_post(http, "/detect", &bus).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let labels: Vec<&str> = answer["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["label"].as_str())
        .collect();
    assert!(
        labels.contains(&"bus") && labels.contains(&"person"),
        "{answer}"
    );
    assert!(
        answer["event_id"].as_str().unwrap().starts_with("cam-sec/"),
        "{answer}"
    );
    let (code, body) = support::http_post(http, "/detect", b"GIF89a")
        .await
        .unwrap();
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            r#"{"error":"the body is neither a JPEG nor a PNG image"}"#
        )
    );
    // A JPEG signature on a truncated image: the pod's own INVALID_ARGUMENT comes back.
    let (code, body) = support::http_post(http, "/detect", &bus[..2000])
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("InvalidArgument: invalid image"), "{body}");
    running.kill().unwrap();
    running.wait().unwrap();
    server.stop().await.unwrap();
}
