//! Transport security and device identity against the real server: TLS and mutual TLS on
//! the gRPC port, device tokens on the ingest and KServe services (health and reflection
//! stay open), reload of a changed token file, and start-up errors for bad files.
//! Certificates are generated for each run with rcgen.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::pki::{Ca, Pair, Pki};
use support::{config, eventually_async, http_get, models_dir, Kafka, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use visionfleet_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use visionfleet_proto::kserve::ServerLiveRequest;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{AckStatus, Frame};

/// What a TLS port answers bytes that are not TLS: one record of type alert (21), version
/// 3.3, length 2, holding a fatal (2) decode_error (50) alert.
const PLAIN_TEXT_ALERT: &[u8] = &[21, 3, 3, 0, 2, 2, 50];

fn shared_kafka() -> &'static Kafka {
    static KAFKA: OnceLock<Kafka> = OnceLock::new();
    KAFKA.get_or_init(|| Kafka::start(1))
}

fn bus_frame(device: &str, sequence: u64) -> Frame {
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    support::jpeg_frame(device, sequence, &jpeg)
}

/// A TLS channel to `server` that trusts `ca` and presents `identity`, if any.
async fn tls_channel(
    server: &TestServer,
    ca: &str,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", server.grpc.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// The ingest service's health, or the whole error chain of a failed call or connection.
async fn ingest_health(channel: Result<Channel, tonic::transport::Error>) -> Result<i32, String> {
    let channel = channel.map_err(|e| chain(&e))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "visionfleet.v1.Ingest".into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| chain(&s))
}

/// A raw TLS handshake with `server` that trusts `ca` and presents `identity`, then one
/// read: the server's first HTTP/2 frame header if it accepted the client, or the alert it
/// refused the client with. In TLS 1.3 the server checks a client's certificate after the
/// client has finished its handshake, so a gRPC client may already be writing its request
/// and see a broken pipe instead of the alert; this probe only reads.
async fn tls_probe(server: &TestServer, ca: &str, identity: Option<&Pair>) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut frame_header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut frame_header))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// What the gRPC port sends back to a plain-text HTTP/2 connection preface, until it closes.
async fn plain_text_answer(server: &TestServer) -> Vec<u8> {
    let mut tcp = TcpStream::connect(server.grpc).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

/// An error and its sources, so that a test can find the TLS alert behind a failed call.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The value of one sample in a Prometheus scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plain_text() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let cfg = config(
        &shared_kafka().bootstrap,
        "security.tls",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let server = TestServer::start(cfg).await;

    let channel = tls_channel(&server, &pki.ca, None).await.unwrap();
    assert_eq!(
        ingest_health(Ok(channel.clone())).await,
        Ok(ServingStatus::Serving as i32)
    );
    let detected = IngestClient::new(channel)
        .detect(bus_frame("cam-tls", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detected.event_id, "cam-tls/1");
    assert!(!detected.detections.is_empty());

    // A plain-text client gets a TLS alert record, not HTTP/2, and the connection closes.
    let answer = plain_text_answer(&server).await;
    assert_eq!(answer, PLAIN_TEXT_ALERT, "{answer:?}");
    // So a plain-text gRPC call fails; how its client words that depends on whether it
    // reads the alert or hits the closed socket first.
    let plain = Channel::from_shared(server.url()).unwrap().connect().await;
    assert!(ingest_health(plain).await.is_err());

    // A client that does not trust the server's CA refuses the server.
    let other_ca = Ca::new("not the server's CA").pem();
    let err = ingest_health(tls_channel(&server, &other_ca, None).await)
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    // The metrics port stays plain HTTP.
    let (code, _) = http_get(server.http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_client_certificates_from_the_client_ca() {
    let pki = Pki::new();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let cfg = config(
        &shared_kafka().bootstrap,
        "security.mtls",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let server = TestServer::start(cfg).await;

    assert_eq!(
        tls_probe(&server, &pki.ca, None).await,
        Err("received fatal alert: CertificateRequired".into())
    );
    assert_eq!(
        tls_probe(&server, &pki.ca, Some(&pki.stranger)).await,
        Err("received fatal alert: UnknownCA".into())
    );
    assert_eq!(tls_probe(&server, &pki.ca, Some(&pki.client)).await, Ok(()));
    // Through gRPC: refused without a certificate or with the other CA's (the exact error
    // depends on a race, see tls_probe), served with the right one.
    for identity in [None, Some(&pki.stranger)] {
        let health = ingest_health(tls_channel(&server, &pki.ca, identity).await).await;
        assert!(health.is_err(), "{health:?}");
    }
    assert_eq!(
        ingest_health(tls_channel(&server, &pki.ca, Some(&pki.client)).await).await,
        Ok(ServingStatus::Serving as i32)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_tokens_guard_ingest_and_kserve_but_not_health_or_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# test fleet\ncam-1 token-cam-1\n* token-fleet   # any device\n",
    )
    .unwrap();
    let cfg = config(
        &shared_kafka().bootstrap,
        "security.tokens",
        &["--device-tokens", tokens.to_str().unwrap()],
    );
    let server = TestServer::start(cfg).await;
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ingest = IngestClient::new(channel.clone());
    let mut kserve = GrpcInferenceServiceClient::new(channel.clone());

    // Probes need no token.
    assert_eq!(
        ingest_health(Ok(channel.clone())).await,
        Ok(ServingStatus::Serving as i32)
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "visionfleet.v1.Ingest"));

    // Missing and unknown tokens.
    let status = ingest.detect(bus_frame("cam-1", 1)).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    let status = ingest
        .detect(bearer(bus_frame("cam-1", 1), "token-nobody"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "unknown device token")
    );
    let status = kserve.server_live(ServerLiveRequest {}).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    let status = ingest
        .stream_frames(tokio_stream::iter([bus_frame("cam-1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    let live = kserve
        .server_live(bearer(ServerLiveRequest {}, "token-fleet"))
        .await
        .unwrap();
    assert!(live.into_inner().live);

    // A device-bound token carries its own device's frames only.
    let status = ingest
        .detect(bearer(bus_frame("cam-2", 1), "token-cam-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            "token is bound to device \"cam-1\", not \"cam-2\""
        )
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = ingest
        .stream_frames(bearer(ReceiverStream::new(rx), "token-cam-1"))
        .await
        .unwrap()
        .into_inner();
    tx.send(bus_frame("cam-1", 7)).await.unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(
        (ack.status, ack.event_id.as_str()),
        (AckStatus::Published as i32, "cam-1/7")
    );
    tx.send(bus_frame("cam-2", 8)).await.unwrap();
    let end = acks.message().await.unwrap_err();
    assert_eq!(
        (end.code(), end.message()),
        (
            Code::PermissionDenied,
            "token is bound to device \"cam-1\", not \"cam-2\""
        )
    );

    // A fleet-wide token carries any device's frames.
    let detected = ingest
        .detect(bearer(bus_frame("cam-9", 1), "token-fleet"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detected.event_id, "cam-9/1");

    let (_, scrape) = http_get(server.http, "/metrics").await.unwrap();
    assert_eq!(
        sample(&scrape, "vf_auth_failures_total{reason=\"missing\"}"),
        3.0
    );
    assert_eq!(
        sample(&scrape, "vf_auth_failures_total{reason=\"unknown\"}"),
        1.0
    );
    assert_eq!(
        sample(&scrape, "vf_auth_failures_total{reason=\"wrong_device\"}"),
        2.0
    );
    assert!(!scrape.contains("token-cam-1") && !scrape.contains("token-fleet"));
    server.stop().await.unwrap();
}

/// Whether `token` passes the KServe service now: Ok, or the refusal's message.
async fn kserve_accepts(channel: &Channel, token: &str) -> Result<(), String> {
    GrpcInferenceServiceClient::new(channel.clone())
        .server_live(bearer(ServerLiveRequest {}, token))
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_token_file_is_reloaded_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "cam-1 token-old\n").unwrap();
    let cfg = config(
        &shared_kafka().bootstrap,
        "security.reload",
        &[
            "--device-tokens",
            tokens.to_str().unwrap(),
            "--device-tokens-poll-seconds",
            "1",
        ],
    );
    let server = TestServer::start(cfg).await;
    let http = server.http;
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(kserve_accepts(&channel, "token-old").await, Ok(()));
    assert_eq!(
        kserve_accepts(&channel, "token-new").await,
        Err("unknown device token".into())
    );
    let reloads = |result: &'static str| async move {
        let (_, scrape) = http_get(http, "/metrics").await.ok()?;
        Some(sample(
            &scrape,
            &format!("vf_device_tokens_reloads_total{{result=\"{result}\"}}"),
        ))
    };

    // A malformed file is refused and the old tokens stay in force.
    std::fs::write(&tokens, "cam-1 token-new and-more\n").unwrap();
    eventually_async("the failed reload", Duration::from_secs(10), || async {
        (reloads("failure").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(kserve_accepts(&channel, "token-old").await, Ok(()));

    // Rewritten in place: the new token is in, the old one out.
    std::fs::write(&tokens, "cam-1 token-new\n").unwrap();
    eventually_async("token-new accepted", Duration::from_secs(10), || async {
        kserve_accepts(&channel, "token-new").await.ok()
    })
    .await;
    assert_eq!(
        kserve_accepts(&channel, "token-old").await,
        Err("unknown device token".into())
    );

    // Replaced by a rename, as Kubernetes updates a mounted Secret.
    let next = dir.path().join("tokens.next");
    std::fs::write(&next, "cam-1 token-new\n* token-fleet\n").unwrap();
    std::fs::rename(&next, &tokens).unwrap();
    eventually_async("token-fleet accepted", Duration::from_secs(10), || async {
        kserve_accepts(&channel, "token-fleet").await.ok()
    })
    .await;
    assert_eq!(kserve_accepts(&channel, "token-new").await, Ok(()));
    assert_eq!(reloads("success").await, Some(2.0));
    assert_eq!(reloads("failure").await, Some(1.0));
    server.stop().await.unwrap();
}

/// Runs the server with `extra` flags and returns its start-up error.
async fn start_up_error(extra: &[&str]) -> String {
    // No broker: the files are checked before Kafka is contacted.
    let cfg = config("127.0.0.1:1", "security.startup", extra);
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        visionfleet_inference::run(cfg, grpc, http, std::future::pending()),
    )
    .await
    .expect("start-up should fail at once");
    result.unwrap_err().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn bad_security_settings_stop_the_server_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write(dir.path(), "tokens", "cam-1 token-1\n\ncam-2\n");
    assert_eq!(
        start_up_error(&["--device-tokens", tokens.to_str().unwrap()]).await,
        format!(
            "invalid configuration: --device-tokens: {}: line 3: expected `DEVICE_ID TOKEN` or \
             `* TOKEN`, found 1 fields",
            tokens.display()
        )
    );
    assert_eq!(
        start_up_error(&["--tls-cert", "server.pem"]).await,
        "invalid configuration: --tls-key: required when --tls-cert is set"
    );
    let pki = Pki::new();
    let junk = write(
        dir.path(),
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    );
    let key = pki.path("server.key");
    assert_eq!(
        start_up_error(&["--tls-cert", junk.to_str().unwrap(), "--tls-key", &key]).await,
        format!(
            "invalid configuration: --tls-cert: {}: invalid PEM: no \"-----END CERTIFICATE-----\" \
             line",
            junk.display()
        )
    );
    let missing = dir.path().join("missing-ca.pem");
    let cert = pki.path("server.pem");
    assert_eq!(
        start_up_error(&[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            missing.to_str().unwrap()
        ])
        .await,
        format!(
            "invalid configuration: --tls-client-ca: {}: cannot read: No such file or directory \
             (os error 2)",
            missing.display()
        )
    );
}
