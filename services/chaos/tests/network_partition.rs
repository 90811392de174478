//! Scenario 7, network partition and degraded links: the agent runs in its own network
//! namespace, joined to the pod's by a veth pair that this test creates. The link is cut
//! (interface down: 100% loss) on an off/on schedule, then degraded: 600 ms ±50 ms with
//! 2% loss, then 100 ms ±10 ms. This kernel has no `netem` qdisc, so the degradation is
//! applied by a relay on the pod's side of the veth (see [`Relay`]): every chunk in each
//! direction is held for the delay with its jitter, in order, and a lost packet is modelled
//! as what TCP makes of it, a retransmission stall of 250 ms. Promises: nothing stored is
//! lost, the backlog of each cut drains at least twice as fast as frames arrive, and the
//! agent's memory stays flat. Where namespaces cannot be created the test fails and says
//! why: it never passes without having cut anything.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{published, published_beyond, tally, RssSampler, WINDOW};
use support::{config, Kafka, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use visionfleet_chaos::{Rng, Scale};
use visionfleet_edge_agent::lanes::peek;

/// A network namespace and the veth pair into it; removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Self, String> {
        let id = std::process::id() % 250;
        let name = format!("vfchaos{}", std::process::id());
        let (host_if, ns_if) = (format!("vfh{id}"), format!("vfn{id}"));
        let (host_ip, ns_ip) = (format!("10.231.{id}.1"), format!("10.231.{id}.2"));
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        in_ns(&["link", "set", &ns_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `command` inside the namespace.
    fn wrap(&self, command: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(command.get_program())
            .args(command.get_args())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// How the relay degrades the link.
#[derive(Debug, Clone, Copy, Default)]
struct Impairment {
    delay: Duration,
    jitter: Duration,
    /// Chance per chunk of a lost packet (a retransmission stall).
    loss: f64,
}

/// A TCP relay that delays each chunk by the impairment's delay ± jitter, keeping order,
/// and stalls for a retransmission timeout when a chunk's packet is "lost".
struct Relay {
    impairment: Arc<Mutex<Impairment>>,
    addr: SocketAddr,
}

const RETRANSMISSION_STALL: Duration = Duration::from_millis(250);

impl Relay {
    async fn start(listen: &str, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let impairment = Arc::new(Mutex::new(Impairment::default()));
        let imp = impairment.clone();
        tokio::spawn(async move {
            let mut seed = 1u64;
            while let Ok((down, _)) = listener.accept().await {
                seed += 1;
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pipe(dr, uw, imp.clone(), Rng::new(seed * 7919)));
                tokio::spawn(pipe(ur, dw, imp.clone(), Rng::new(seed * 104_729)));
            }
        });
        Self { impairment, addr }
    }

    fn set(&self, i: Impairment) {
        *self.impairment.lock().unwrap() = i;
    }
}

/// One direction: read, hold until the chunk's release time, write.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    impairment: Arc<Mutex<Impairment>>,
    mut rng: Rng,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((release, chunk)) = rx.recv().await {
            tokio::time::sleep_until(release.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let i = *impairment.lock().unwrap();
        let jitter_ms = i.jitter.as_millis() as u64;
        let mut delay = i.delay + Duration::from_millis(rng.range(0, 2 * jitter_ms + 1));
        delay = delay.saturating_sub(i.jitter);
        if (rng.next_u64() % 10_000) as f64 / 10_000.0 < i.loss {
            delay += RETRANSMISSION_STALL;
        }
        // In order: never released before the chunk ahead of it.
        last = last.max(Instant::now() + delay);
        if tx.send((last, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_degraded_links_lose_nothing() {
    let ns = Netns::create().unwrap_or_else(|e| {
        panic!("network-partition: cannot create a network namespace with a veth pair ({e}); this scenario needs root or CAP_NET_ADMIN and does not pass without it")
    });
    let scale = Scale::from_env();
    // IoT Edge's schedule, in seconds instead of minutes for the full run.
    let cuts: Vec<u64> = scale.pick(vec![4, 12], vec![5, 10, 30]);
    let degraded_for = Duration::from_secs(scale.pick(6, 30));
    // Below the CPU pod's ~2.5 frames/s, so that a backlog can drain at twice the rate.
    let fps = 0.75;
    let kafka = Kafka::start(1);
    let topic = "chaos.network-partition";
    let server = TestServer::start_on(
        config(&kafka.bootstrap, topic, &["--models", "coco-yolov5s"]),
        format!("{}:0", ns.host_ip).parse().unwrap(),
    )
    .await;
    let relay = Relay::start(&format!("{}:0", ns.host_ip), server.grpc).await;
    let device = "cam-partition";
    let spool = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", relay.addr);
    let agent_http: SocketAddr = "127.0.0.1:18080".parse().unwrap(); // inside the namespace
    let mut inner = common::agent(&endpoint, device, spool.path(), agent_http, fps);
    inner.args(["--count", "1000000"]);
    let child: Child = ns.wrap(&inner).spawn().unwrap();
    let http = server.http;
    published_beyond(http, 0, "first acks over the veth", Duration::from_secs(60)).await;
    // The agent runs as a child of `ip netns exec`, which execs it: same pid.
    let rss = RssSampler::start(child.id());

    let mut worst_recovery = Duration::ZERO;
    let mut drain_rates = Vec::new();
    for off in &cuts {
        ns.link(false);
        tokio::time::sleep(Duration::from_secs(*off)).await;
        let before = published(http).await;
        ns.link(true);
        let restored = Instant::now();
        published_beyond(http, before, "acks after the cut", Duration::from_secs(90)).await;
        worst_recovery = worst_recovery.max(restored.elapsed());
        // Drain rate from the first ack on: what is sent per second while capture goes on.
        let backlog = peek(spool.path()).unwrap().0.len() as f64;
        let draining = Instant::now();
        support::eventually("the backlog drained", Duration::from_secs(120), || {
            (peek(spool.path()).unwrap().0.len() as u64 <= WINDOW).then_some(())
        })
        .await;
        let took = draining.elapsed().as_secs_f64();
        if backlog > WINDOW as f64 && took > 0.0 {
            drain_rates.push((backlog - WINDOW as f64 + took * fps) / took);
        }
        // The "on" half of the schedule.
        tokio::time::sleep(Duration::from_secs(*off)).await;
    }
    for (delay, jitter, loss) in [(600, 50, 0.02), (100, 10, 0.0)] {
        relay.set(Impairment {
            delay: Duration::from_millis(delay),
            jitter: Duration::from_millis(jitter),
            loss,
        });
        tokio::time::sleep(degraded_for).await;
    }
    relay.set(Impairment::default());

    let growth = rss.second_half_growth();
    // Stop capture, then send whatever the agent still held from the host side.
    let accepted = common::finish_agents(vec![(child, device, spool.path())], &server.url());
    let seen = tally(&kafka.bootstrap, topic, accepted.len());
    seen.settle("network-partition", &accepted, worst_recovery);
    println!(
        "network-partition: backlog drain rates {:?} frames/s against {fps} captured/s, agent RSS growth {} KiB",
        drain_rates.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>(),
        growth >> 10
    );
    assert!(!drain_rates.is_empty(), "a cut left a backlog to drain");
    for r in &drain_rates {
        assert!(
            *r >= 2.0 * fps,
            "backlog drained at {r:.2} frames/s, under twice the {fps} captured/s"
        );
    }
    assert!(growth < 16 << 20, "agent RSS grew {growth} bytes");
    server.stop().await.unwrap();
}
