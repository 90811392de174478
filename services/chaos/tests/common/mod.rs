//! What the process-level scenarios share: the real agent binary with the suite's
//! settings, its `/status` report, and the consumer's tally of events by event id.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use visionfleet_chaos::{workspace_bin, Tally};

use crate::support::consumer::consume;

/// In-flight window of every agent in the suite: duplicates per fault are bounded by it.
pub const WINDOW: u64 = 4;

/// A free loopback address (bound, then released for the process that will listen).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An agent process: synthetic 64x48 camera, store-and-forward into `spool`, local HTTP
/// on `http`, JSON summary on exit. `endpoints` are tried in order.
pub fn agent(endpoints: &str, device: &str, spool: &Path, http: SocketAddr, fps: f64) -> Command {
    let mut c = Command::new(workspace_bin("visionfleet-edge-agent"));
    c.args(["--endpoint", endpoints, "--device-id", device])
        .args(["--source", "synthetic", "--width", "64", "--height", "48"])
        .args(["--window", &WINDOW.to_string(), "--start-sequence", "1"])
        .args(["--give-up-after-seconds", "300", "--json"])
        .args(["--fps", &fps.to_string(), "--http-addr", &http.to_string()])
        .arg("--spool-dir")
        .arg(spool)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts an agent that captures until killed or stopped.
pub fn spawn_agent(
    endpoints: &str,
    device: &str,
    spool: &Path,
    http: SocketAddr,
    fps: f64,
) -> Child {
    agent(endpoints, device, spool, http, fps)
        .args(["--count", "1000000"])
        .spawn()
        .unwrap()
}

/// A running agent's `/status` report, or None while it does not answer.
pub fn status(http: SocketAddr) -> Option<serde_json::Value> {
    let mut conn = TcpStream::connect_timeout(&http, Duration::from_secs(1)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        conn,
        "GET /status HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Frames a running agent has seen acknowledged since it started.
pub fn acknowledged(http: SocketAddr) -> Option<u64> {
    status(http)?["acknowledged"].as_u64()
}

/// SIGTERM: the agent stops capturing, drains what it can and prints its summary.
pub fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

/// Reads the whole topic (at least `expect` events, then a short linger for duplicates)
/// and tallies the events by event id.
pub fn tally(bootstrap: &str, topic: &str, expect: usize) -> Tally {
    let group = format!("chaos-check-{}", std::process::id());
    let records = consume(
        bootstrap,
        topic,
        &group,
        expect,
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    let mut t = Tally::default();
    t.add_json(records.iter().map(|r| r.payload.as_slice()));
    t
}

/// A counter or gauge from a Prometheus text scrape (0 when absent).
pub fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Events the pod has seen confirmed by Kafka (`vf_frames_published_total`).
pub async fn published(pod_http: SocketAddr) -> u64 {
    let (_, scrape) = crate::support::http_get(pod_http, "/metrics")
        .await
        .unwrap();
    metric(&scrape, "vf_frames_published_total") as u64
}

/// Waits until the pod has seen more than `floor` events confirmed (`what` names the wait
/// in the failure message).
pub async fn published_beyond(pod_http: SocketAddr, floor: u64, what: &str, timeout: Duration) {
    crate::support::eventually_async(what, timeout, || async {
        (published(pod_http).await > floor).then_some(())
    })
    .await
}

/// Stops capture on every agent at once (SIGTERM), then lets one more run per spool,
/// with nothing to capture, send what is still there. Returns the event ids the agents
/// accepted: numbering is gap-free from 1, so a device's highest stored sequence is how
/// many frames it accepted.
pub fn finish_agents(agents: Vec<(Child, &str, &Path)>, endpoints: &str) -> Vec<String> {
    for (child, _, _) in &agents {
        terminate(child);
    }
    let mut accepted = Vec::new();
    for (child, device, spool) in agents {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stored = summary["spool"]["appended"].as_u64().unwrap();
        let drain = agent(endpoints, device, spool, free_addr(), 1.0)
            .args(["--count", "0"])
            .output()
            .unwrap();
        assert!(
            drain.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&drain.stderr)
        );
        let (waiting, _) = visionfleet_edge_agent::lanes::peek(spool).unwrap();
        assert!(
            waiting.is_empty(),
            "{device}: the spool drained, {waiting:?} left"
        );
        accepted.extend((1..=stored).map(|s| visionfleet_chaos::event_id(device, s)));
    }
    accepted
}

/// Agents `<prefix>-NN` with their own spools, capturing until finished.
pub struct Fleet {
    pub devices: Vec<String>,
    pub spools: Vec<tempfile::TempDir>,
    pub children: Vec<Child>,
}

impl Fleet {
    /// Starts `n` agents at `fps` each against `endpoints`.
    pub fn start(endpoints: &str, prefix: &str, n: usize, fps: f64) -> Self {
        let spools: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let devices: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:02}")).collect();
        let children = spools
            .iter()
            .zip(&devices)
            .map(|(s, d)| spawn_agent(endpoints, d, s.path(), free_addr(), fps))
            .collect();
        Self {
            devices,
            spools,
            children,
        }
    }

    /// Stops and drains every agent (through `endpoints`); returns the accepted event ids.
    pub fn finish(self, endpoints: &str) -> Vec<String> {
        let agents = self
            .children
            .into_iter()
            .zip(&self.devices)
            .zip(&self.spools)
            .map(|((c, d), s)| (c, d.as_str(), s.path()))
            .collect();
        finish_agents(agents, endpoints)
    }
}

/// An inference pod as its own process (so that it can be SIGKILLed), on free loopback
/// ports, serving the COCO detector; killed on drop.
pub struct Pod {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Pod {
    /// Starts the pod binary and waits until `/readyz` answers 200.
    pub async fn start(bootstrap: &str, topic: &str, extra: &[&str]) -> Self {
        Self::start_logging(bootstrap, topic, extra, None).await
    }

    /// Like [`Pod::start`], with the pod's output (debug logging on) written to `log`.
    pub async fn start_logging(
        bootstrap: &str,
        topic: &str,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        let (grpc, http) = (free_addr(), free_addr());
        let models = crate::support::models_dir();
        let dlq = format!("{topic}.dlq");
        let child = Command::new(workspace_bin("visionfleet-inference"))
            .args([
                "--grpc-addr",
                &grpc.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args(["--kafka-bootstrap", bootstrap, "--topic", topic])
            .args(["--dead-letter-topic", &dlq, "--topic-partitions", "3"])
            .args(["--models", "coco-yolov5s", "--model-poll-seconds", "0"])
            .arg("--models-dir")
            .arg(models)
            .args(extra)
            .env("VF_LOG", if log.is_some() { "debug" } else { "info" })
            .stdout(output(log))
            .stderr(output(log))
            .spawn()
            .unwrap();
        crate::support::eventually_async("the pod ready", Duration::from_secs(90), || async {
            matches!(
                crate::support::http_get(http, "/readyz").await,
                Ok((200, _))
            )
            .then_some(())
        })
        .await;
        Self { child, grpc, http }
    }

    /// The gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(log: Option<&Path>) -> Stdio {
    match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .into(),
        None => Stdio::null(),
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Samples a process's resident memory every 200 ms on its own thread until dropped.
pub struct RssSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u64)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, halt) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = visionfleet_chaos::rss_bytes(pid) {
                    s.lock().unwrap().push((std::time::Instant::now(), rss));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self { samples, stop }
    }

    /// The highest sample so far.
    pub fn peak(&self) -> u64 {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    }

    /// Growth over the second half of the samples so far: the highest sample of the second
    /// half minus the highest of the first (peaks, not single samples, so that one batch's
    /// scratch memory does not count as growth).
    pub fn second_half_growth(&self) -> i64 {
        let s = self.samples.lock().unwrap();
        let (a, b) = s.split_at(s.len() / 2);
        let peak =
            |h: &[(std::time::Instant, u64)]| h.iter().map(|x| x.1).max().unwrap_or(0) as i64;
        peak(b) - peak(a)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `agents` agents against `endpoints` at `fps` each for `how_long`, then finishes
/// them (drain) and returns the event ids they accepted.
pub async fn stream_for(
    endpoints: &str,
    prefix: &str,
    agents: usize,
    fps: f64,
    how_long: Duration,
) -> Vec<String> {
    let fleet = Fleet::start(endpoints, prefix, agents, fps);
    tokio::time::sleep(how_long).await;
    fleet.finish(endpoints)
}
