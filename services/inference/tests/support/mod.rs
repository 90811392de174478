//! Test harness: a real Apache Kafka broker started by `scripts/kafka.sh` on free loopback
//! ports in a temporary folder, and the real inference server on `127.0.0.1:0`.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub mod consumer;
pub mod pki;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use visionfleet_inference::{run, Config, Error};

/// The repository root: the nearest folder above the crate with `scripts/kafka.sh` (this
/// harness is shared by crates at different depths).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("scripts/kafka.sh").exists())
        .expect("the crate is inside the repository")
        .to_path_buf()
}

/// A JPEG frame from `device` with the server's default model and no attributes.
pub fn jpeg_frame(device: &str, sequence: u64, jpeg: &[u8]) -> visionfleet_proto::v1::Frame {
    visionfleet_proto::v1::Frame {
        device_id: device.into(),
        sequence,
        captured_at: None,
        image: Some(visionfleet_proto::v1::frame::Image::Jpeg(jpeg.to_vec())),
        attributes: std::collections::HashMap::new(),
        model: String::new(),
    }
}

/// The model store `make models` fills.
pub fn models_dir() -> PathBuf {
    std::env::var_os("VF_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

/// A Kafka cluster for one test (or one test binary); stopped on drop. The start script
/// also watches this process, so a test that dies leaves no broker behind.
pub struct Kafka {
    dir: tempfile::TempDir,
    /// Bootstrap servers.
    pub bootstrap: String,
}

impl Kafka {
    /// Starts `nodes` KRaft nodes and waits until the cluster answers.
    pub fn start(nodes: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vf-kafka-")
            .tempdir()
            .unwrap();
        let out = Command::new(root().join("scripts/kafka.sh"))
            .args(["start", "--dir"])
            .arg(dir.path())
            .args(["--nodes", &nodes.to_string()])
            .args(["--watch-pid", &std::process::id().to_string(), "--cleanup"])
            .output()
            .expect("running scripts/kafka.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kafka.sh start failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.strip_prefix("bootstrap="))
            .expect("kafka.sh prints bootstrap=")
            .trim()
            .to_string();
        Self { dir, bootstrap }
    }

    fn script(&self, args: &[&str]) {
        let status = Command::new(root().join("scripts/kafka.sh"))
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "kafka.sh {args:?} failed");
    }

    /// Stops node `k` (1-based).
    pub fn stop_node(&self, k: usize) {
        self.script(&["stop-node", "--node", &k.to_string()]);
    }

    /// Kills node `k` (1-based) with SIGKILL: no clean shutdown.
    pub fn kill_node(&self, k: usize) {
        self.script(&["stop-node", "--kill", "--node", &k.to_string()]);
    }

    /// Starts node `k` again on its old ports and data.
    pub fn start_node(&self, k: usize) {
        self.script(&["start-node", "--node", &k.to_string()]);
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/kafka.sh"))
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path())
            .status();
    }
}

/// A running inference server.
pub struct TestServer {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP (metrics, probes) address.
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// The server's configuration for a test: given flags on top of test defaults.
pub fn config(bootstrap: &str, topic: &str, extra: &[&str]) -> Config {
    let dlq = format!("{topic}.dlq");
    let models = models_dir();
    let mut args = vec![
        "visionfleet-inference",
        "--kafka-bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--dead-letter-topic",
        &dlq,
        "--topic-partitions",
        "3",
        "--models-dir",
        models.to_str().unwrap(),
        "--shutdown-grace-seconds",
        "10",
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).unwrap()
}

impl TestServer {
    /// Starts the server on a free port and waits until /readyz answers 200.
    pub async fn start(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts the server with its gRPC listener on `grpc` (to come back on an old address).
    pub async fn start_on(config: Config, grpc: SocketAddr) -> Self {
        let grpc_listener = TcpListener::bind(grpc).await.unwrap();
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, grpc_listener, http_listener, async {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if task.is_finished() {
                let result = task.await.unwrap();
                panic!("server exited during start-up: {result:?}");
            }
            if let Ok((200, _)) = http_get(http, "/readyz").await {
                break;
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            grpc,
            http,
            stop: Some(stop),
            task,
        }
    }

    /// The gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Stops the server (drain, flush) and returns its result.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// Sends `frames` on one `StreamFrames` stream and collects every ack, by sequence, until
/// the pod ends the stream.
pub async fn stream_acks(
    client: &mut visionfleet_proto::v1::ingest_client::IngestClient<tonic::transport::Channel>,
    frames: Vec<visionfleet_proto::v1::Frame>,
) -> std::collections::BTreeMap<u64, visionfleet_proto::v1::FrameAck> {
    let mut acks = client
        .stream_frames(tokio_stream::iter(frames))
        .await
        .unwrap()
        .into_inner();
    let mut by_seq = std::collections::BTreeMap::new();
    while let Some(ack) = acks.message().await.unwrap() {
        by_seq.insert(ack.sequence, ack);
    }
    by_seq
}

/// A minimal HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[]).await
}

/// A minimal HTTP/1.1 POST of `body`: status code and response body.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_request(addr, "POST", path, body).await
}

async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Waits for a child process that prints JSON (an agent with `--json`), asserts that it
/// succeeded (showing its stderr otherwise) and returns what it printed.
pub async fn json_output(child: std::process::Child) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls until `f` returns Some or the deadline passes.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls an async check until it returns Some or the deadline passes.
pub async fn eventually_async<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
