//! Scenario 1, agent hard-kill loop: the real agent is SIGKILLed at random points while it
//! captures, spools and sends (50 times in the full run), and now and then its newest
//! segment is given a torn tail, as a power cut in the middle of a write would leave it.
//! Promises: no stored frame is lost, the spool always reopens with the torn tail cut off
//! by its checksum, duplicates stay within the in-flight window per kill, and sending
//! resumes within 5 s of each restart.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{acknowledged, free_addr, spawn_agent, tally, WINDOW};
use support::{config, Kafka, TestServer};
use visionfleet_chaos::{event_id, Rng, Scale};
use visionfleet_edge_agent::lanes::peek;

/// Appends half a record to the newest routine segment: a length and checksum that
/// promise more bytes than follow (`torn`), or a complete record whose checksum is wrong.
/// Returns the bytes added.
fn tear_tail(spool: &Path, rng: &mut Rng) -> u64 {
    let lane = spool.join("routine");
    let newest = std::fs::read_dir(&lane)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .expect("a segment exists after the first capture");
    let body: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
    let claimed: u32 = if rng.next_u64().is_multiple_of(2) {
        4096
    } else {
        64
    };
    let mut bytes = claimed.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    bytes.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_loop_loses_nothing_stored() {
    let scale = Scale::from_env();
    let kills: u64 = scale.pick(12, 50);
    let kafka = Kafka::start(1);
    let topic = "chaos.agent-kill";
    let device = "cam-kill";
    let server = TestServer::start(config(
        &kafka.bootstrap,
        topic,
        &["--models", "coco-yolov5s"],
    ))
    .await;
    let spool = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let mut stored = BTreeSet::new();
    let mut worst_recovery = Duration::ZERO;
    let mut torn = 0;
    for kill in 0..kills {
        let http = free_addr();
        let mut child = spawn_agent(&server.url(), device, spool.path(), http, 4.0);
        // Recovery: from the restart to the first acknowledgement of this process.
        let started = Instant::now();
        support::eventually(
            "the restarted agent's first ack",
            Duration::from_secs(5),
            || (acknowledged(http)? > 0).then_some(()),
        )
        .await;
        worst_recovery = worst_recovery.max(started.elapsed());
        // Then somewhere in the next 1.2 s: mid-capture, mid-send, mid-ack.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 1200))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What the agent had stored and not yet seen acknowledged must still be there
        // (read without opening, so the next agent is the one that recovers the spool).
        stored.extend(peek(spool.path()).unwrap().0);
        if kill % 4 == 3 {
            torn += tear_tail(spool.path(), &mut rng);
        }
    }
    // A last run with nothing new to capture sends what is left and exits; it is also
    // the one that meets the last torn tail.
    if !kills.is_multiple_of(4) {
        torn += tear_tail(spool.path(), &mut rng);
    }
    let last = common::agent(&server.url(), device, spool.path(), free_addr(), 4.0)
        .args(["--count", "0"])
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&last.stdout).unwrap();
    assert!(
        summary["spool"]["truncated_bytes"].as_u64().unwrap() > 0,
        "the torn tail was cut off on open: {summary}"
    );
    assert!(
        peek(spool.path()).unwrap().0.is_empty(),
        "the spool drained"
    );

    // Numbering is gap-free across restarts (only stored frames take numbers), so every
    // number up to the highest was a stored frame. The spool drained, so every event is in
    // Kafka by now; the tally reads past `expect` until the topic is quiet.
    let seen = tally(&kafka.bootstrap, topic, *stored.last().unwrap() as usize);
    let captured = *seen
        .sequences(device)
        .last()
        .unwrap()
        .max(stored.last().unwrap());
    let accepted: Vec<String> = (1..=captured).map(|s| event_id(device, s)).collect();
    let figures = seen.settle("agent-kill", &accepted, worst_recovery);
    assert!(
        stored.iter().all(|s| seen.contains(&event_id(device, *s))),
        "every frame seen waiting in the spool became an event"
    );
    assert_eq!(
        seen.distinct(),
        captured,
        "no event for a frame never stored"
    );
    assert!(
        figures.duplicates <= WINDOW * kills,
        "{} duplicates after {kills} kills with a window of {WINDOW}",
        figures.duplicates
    );
    assert!(torn > 0);
    server.stop().await.unwrap();
}
