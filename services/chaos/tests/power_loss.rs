//! Scenario 2: power loss and disk errors under the edge agent's spool. The spool runs on
//! `FaultFs` (an in-memory disk with synced and current contents), the power goes out at
//! random points in the middle of appends, acknowledgements and reopens, syncs fail with
//! EIO and the disk fills up; every frame the spool reported stored and that was not
//! acknowledged must come back byte-identical.
//!
//! Fault points come from a seed printed at the start (`VF_CHAOS_SEED=<n>` repeats a run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use visionfleet_chaos::{Figures, Rng, Scale};
use visionfleet_edge_agent::spool::{Appended, FullPolicy, Spool, SpoolConfig};
use visionfleet_edge_agent::spool_fs::{FaultFs, SpoolFs};
use visionfleet_proto::v1::frame::Image;
use visionfleet_proto::v1::Frame;

/// Crash cycles per round of the crash-point test (one fresh disk per round).
const CRASHES_PER_ROUND: u64 = 5;

fn spool_dir() -> PathBuf {
    PathBuf::from("/spool")
}

fn config(policy: FullPolicy, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: spool_dir(),
        max_bytes: 1 << 30,
        ttl: None,
        policy,
        segment_bytes,
    }
}

fn open(fs: &FaultFs, cfg: &SpoolConfig) -> Spool {
    Spool::open_with(cfg.clone(), Arc::new(fs.clone())).expect("spool opens")
}

/// The run's seed: `VF_CHAOS_SEED`, or the clock.
fn base_seed() -> u64 {
    let seed = std::env::var("VF_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("power-loss seed {seed} (VF_CHAOS_SEED={seed} repeats this run)");
    seed
}

/// A frame of `image_bytes` pseudo-random bytes.
fn frame(rng: &mut Rng, sequence: u64, image_bytes: usize) -> Frame {
    let mut image = Vec::with_capacity(image_bytes + 8);
    while image.len() < image_bytes {
        image.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    image.truncate(image_bytes);
    Frame {
        device_id: "cam-power".into(),
        sequence,
        image: Some(Image::Jpeg(image)),
        attributes: [("line".to_string(), format!("l{}", sequence % 3))].into(),
        ..Default::default()
    }
}

/// What the test knows about a frame it gave the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stored (reported, or seen after a crash) and not acknowledged: must survive.
    Waiting,
    /// Acknowledged (or its ack attempted), or dropped by a policy: may reappear.
    Acked,
    /// Its append failed: it may turn up after a crash (durable from then on) or not.
    Unsure,
    /// Stored, unacknowledged, and missing after a crash.
    Lost,
}

struct Tracked {
    frame: Frame,
    fate: Fate,
    /// `append` returned `Stored`.
    reported: bool,
    /// Sent and acknowledged once already: missing later is no loss.
    delivered: bool,
}

/// The test's record of every frame and the figures so far.
struct Model {
    seed: u64,
    frames: BTreeMap<u64, Tracked>,
    highest_stored: Option<u64>,
    /// Appends tried.
    attempts: u64,
    duplicates: u64,
    lost: u64,
    /// Where the power cuts fell: the operation whose change was the last before the cut
    /// (it failed, or it was its last change), or between operations.
    cuts: BTreeMap<&'static str, u64>,
}

impl Model {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            frames: BTreeMap::new(),
            highest_stored: None,
            attempts: 0,
            duplicates: 0,
            lost: 0,
            cuts: BTreeMap::new(),
        }
    }

    fn track(&mut self, frame: Frame, fate: Fate) {
        let s = frame.sequence;
        if let Some(old) = self.frames.get(&s) {
            assert_eq!(
                old.fate,
                Fate::Unsure,
                "seed {}: sequence {s} reused after it was stored",
                self.seed
            );
        }
        let reported = fate == Fate::Waiting;
        if reported {
            self.highest_stored = self.highest_stored.max(Some(s));
        }
        let tracked = Tracked {
            frame,
            fate,
            reported,
            delivered: false,
        };
        self.frames.insert(s, tracked);
    }

    /// The outcome of an append of `frame`.
    fn appended(&mut self, frame: Frame, outcome: &Result<Appended, impl std::fmt::Display>) {
        self.attempts += 1;
        match outcome {
            Ok(Appended::Stored) => self.track(frame, Fate::Waiting),
            // Refused by the full policy: not stored, nothing to track.
            Ok(Appended::DroppedNewest | Appended::Full) => {}
            Err(_) => self.track(frame, Fate::Unsure),
        }
    }

    fn acked(&mut self, sequence: u64) {
        if let Some(t) = self.frames.get_mut(&sequence) {
            t.fate = Fate::Acked;
            t.delivered = true;
        }
    }

    /// Frames that must be waiting.
    fn must_wait(&self) -> impl Iterator<Item = u64> + '_ {
        self.frames
            .iter()
            .filter(|(_, t)| t.fate == Fate::Waiting)
            .map(|(&s, _)| s)
    }

    /// Checks a freshly opened spool against what was stored and acknowledged.
    fn check_recovered(&mut self, spool: &Spool) {
        let seed = self.seed;
        let waiting: BTreeSet<u64> = spool.waiting_from(0).collect();
        for &s in &waiting {
            let Some(t) = self.frames.get_mut(&s) else {
                panic!("seed {seed}: frame {s} is waiting but was never appended");
            };
            let back = spool.read(s).unwrap().expect("a waiting frame reads back");
            assert_eq!(back, t.frame, "seed {seed}: frame {s} reads back different");
            match t.fate {
                Fate::Acked => {
                    self.duplicates += 1;
                    t.fate = Fate::Waiting;
                }
                Fate::Unsure => t.fate = Fate::Waiting,
                Fate::Waiting => {}
                Fate::Lost => panic!("seed {seed}: frame {s} was lost and came back"),
            }
        }
        for (s, t) in &mut self.frames {
            if t.fate != Fate::Waiting || waiting.contains(s) {
                continue;
            }
            if t.delivered {
                t.fate = Fate::Acked;
            } else {
                eprintln!("seed {seed}: frame {s} stored, not acknowledged, missing");
                t.fate = Fate::Lost;
                self.lost += 1;
            }
        }
        if let Some(h) = self.highest_stored {
            let next = spool.next_sequence(1);
            assert!(
                next > h,
                "seed {seed}: next sequence {next} after {h} was stored"
            );
        }
    }

    /// Counts a power cut that fell inside `op` (if the power is now out).
    fn cut_in(&mut self, fs: &FaultFs, op: &'static str) {
        if fs.is_dark() {
            *self.cuts.entry(op).or_default() += 1;
        }
    }

    /// Frames reported stored.
    fn captured(&self) -> u64 {
        self.frames.values().filter(|t| t.reported).count() as u64
    }

    /// Frames reported stored and accounted for: still waiting or acknowledged.
    fn accounted(&self) -> u64 {
        self.frames
            .values()
            .filter(|t| t.reported && matches!(t.fate, Fate::Waiting | Fate::Acked))
            .count() as u64
    }
}

/// One spool operation of the crash-point workload: mostly appends and acks (the
/// uplink, oldest first most of the time), some reads, an occasional clean reopen.
fn step(rng: &mut Rng, fs: &FaultFs, cfg: &SpoolConfig, spool: &mut Option<Spool>, m: &mut Model) {
    let Some(s) = spool.as_mut() else {
        return;
    };
    let waiting: Vec<u64> = s.waiting_from(0).collect();
    match rng.range(0, 100) {
        0..55 => {
            let size = rng.range(10, 400) as usize;
            let f = frame(rng, s.next_sequence(1), size);
            let outcome = s.append(&f);
            if let Err(e) = &outcome {
                assert!(
                    fs.is_dark(),
                    "seed {}: append failed, power on: {e}",
                    m.seed
                );
            }
            m.appended(f, &outcome);
            m.cut_in(fs, "append");
        }
        55..90 if !waiting.is_empty() => {
            let pick = if rng.range(0, 10) < 7 {
                rng.range(0, waiting.len().min(3) as u64)
            } else {
                rng.range(0, waiting.len() as u64)
            };
            let seq = waiting[pick as usize];
            m.acked(seq);
            if let Err(e) = s.ack(seq) {
                assert!(fs.is_dark(), "seed {}: ack failed, power on: {e}", m.seed);
            }
            m.cut_in(fs, "ack");
        }
        90..95 if !waiting.is_empty() => {
            let seq = waiting[rng.range(0, waiting.len() as u64) as usize];
            match s.read(seq) {
                Ok(back) => assert_eq!(back.as_ref(), Some(&m.frames[&seq].frame)),
                Err(e) => assert!(fs.is_dark(), "seed {}: read failed: {e}", m.seed),
            }
        }
        95.. => {
            drop(spool.take());
            match Spool::open_with(cfg.clone(), Arc::new(fs.clone())) {
                Ok(s) => {
                    // The power may have gone out on the reopen's last change.
                    if !fs.is_dark() {
                        m.check_recovered(&s);
                    }
                    *spool = Some(s);
                }
                Err(e) => assert!(fs.is_dark(), "seed {}: reopen failed: {e}", m.seed),
            }
            m.cut_in(fs, "reopen");
        }
        _ => {}
    }
}

/// One disk, `CRASHES_PER_ROUND` power cuts at random points; returns the model and the
/// longest recovery.
fn crash_round(seed: u64) -> (Model, Duration) {
    let mut rng = Rng::new(seed);
    let fs = FaultFs::new();
    let cfg = config(FullPolicy::Block, 1000);
    let mut m = Model::new(seed);
    let mut spool = Some(open(&fs, &cfg));
    let mut longest = Duration::ZERO;
    for _ in 0..CRASHES_PER_ROUND {
        fs.cut_power_after(rng.range(0, 150));
        let cuts_before = m.cuts.values().sum::<u64>();
        for _ in 0..300 {
            if fs.is_dark() || spool.is_none() {
                break;
            }
            step(&mut rng, &fs, &cfg, &mut spool, &mut m);
        }
        if m.cuts.values().sum::<u64>() == cuts_before {
            *m.cuts.entry("between operations").or_default() += 1;
        }
        drop(spool.take());
        fs.crash(Some(rng.next_u64()));
        let started = Instant::now();
        let s = Spool::open_with(cfg.clone(), Arc::new(fs.clone()))
            .unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
        longest = longest.max(started.elapsed());
        m.check_recovered(&s);
        spool = Some(s);
    }
    (m, longest)
}

#[test]
fn power_loss_at_many_crash_points_loses_no_durable_frame() {
    let rounds = Scale::from_env().pick(300, 5000) / CRASHES_PER_ROUND;
    let base = base_seed();
    let mut cuts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut figures = Figures {
        scenario: "power-loss".into(),
        captured: 0,
        events: 0,
        lost: 0,
        duplicates: 0,
        recovery: Duration::ZERO,
    };
    for round in 0..rounds {
        let (m, recovery) = crash_round(base.wrapping_add(round.wrapping_mul(0x9E37_79B9)));
        figures.captured += m.captured();
        figures.events += m.accounted();
        figures.lost += m.lost;
        figures.duplicates += m.duplicates;
        figures.recovery = figures.recovery.max(recovery);
        for (op, n) in m.cuts {
            *cuts.entry(op).or_default() += n;
        }
    }
    figures.report();
    println!(
        "power cuts: {cuts:?}; longest recovery {} µs",
        figures.recovery.as_micros()
    );
    assert_eq!(cuts.values().sum::<u64>(), rounds * CRASHES_PER_ROUND);
    assert!(figures.captured > rounds * 20, "too little work: {figures}");
    assert_eq!(figures.lost, 0, "{figures}");
    assert_eq!(figures.events, figures.captured, "{figures}");
}

/// The path of segment `first`.
fn segment(first: u64) -> PathBuf {
    spool_dir().join(format!("{first:020}.seg"))
}

fn segments(fs: &FaultFs) -> Vec<String> {
    let mut v: Vec<String> = fs
        .list(&spool_dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

/// Appends the next frame and records the outcome; returns it.
fn push(
    s: &mut Spool,
    rng: &mut Rng,
    m: &mut Model,
    image_bytes: usize,
) -> Result<Appended, String> {
    let f = frame(rng, s.next_sequence(1), image_bytes);
    let outcome = s.append(&f).map_err(|e| e.to_string());
    m.appended(f, &outcome);
    outcome
}

const EIO: &str = "Input/output error (os error 5)";

#[test]
fn a_failed_fsync_never_acknowledges_or_deletes() {
    let seed = base_seed();
    let mut rng = Rng::new(seed);
    let fs = FaultFs::new();
    let cfg = config(FullPolicy::Block, 1000);
    let mut m = Model::new(seed);
    let mut s = open(&fs, &cfg);
    for _ in 0..5 {
        assert_eq!(push(&mut s, &mut rng, &mut m, 100), Ok(Appended::Stored));
    }

    // The record's sync fails: not stored, nothing deleted, the bytes cut off again.
    let (files, bytes) = (segments(&fs), fs.read(&segment(1)).unwrap().len());
    fs.fail_next_syncs(1);
    let e = push(&mut s, &mut rng, &mut m, 100).unwrap_err();
    assert_eq!(e, format!("spool i/o at {}: {EIO}", segment(1).display()));
    assert_eq!((s.counters().appended, s.len()), (5, 5));
    assert!(!s.is_waiting(6));
    assert_eq!(segments(&fs), files);
    assert_eq!(fs.read(&segment(1)).unwrap().len(), bytes);
    for seq in 1..=5 {
        assert_eq!(s.read(seq).unwrap().as_ref(), Some(&m.frames[&seq].frame));
    }

    // The next append starts a new segment (number 6 is not reused); syncing the
    // folder for it fails: not stored either, and nothing is deleted.
    fs.fail_next_syncs(1);
    let e = push(&mut s, &mut rng, &mut m, 100).unwrap_err();
    assert_eq!(e, format!("spool i/o at {}: {EIO}", spool_dir().display()));
    assert_eq!(s.counters().appended, 5);
    assert_eq!(push(&mut s, &mut rng, &mut m, 100), Ok(Appended::Stored));
    assert!(s.is_waiting(7) && !s.is_waiting(6));

    // Acks need no sync; appends fail while every sync does, and resume after.
    fs.fail_all_syncs();
    for seq in 1..=3 {
        m.acked(seq);
        s.ack(seq).unwrap();
    }
    assert!(push(&mut s, &mut rng, &mut m, 100).is_err());
    fs.heal_syncs();
    for _ in 0..10 {
        assert_eq!(push(&mut s, &mut rng, &mut m, 100), Ok(Appended::Stored));
    }

    // Compacting acks.log (after 4096 acks) syncs a new log: when that sync fails the ack
    // reports it, the old log stays, and no waiting frame goes. The acks lag behind the
    // appends, as over a slow uplink, so that segments are deleted by acks.
    let mut failed = None;
    let mut in_flight = VecDeque::new();
    for _ in 0..5000 {
        let outcome = push(&mut s, &mut rng, &mut m, 20);
        assert_eq!(outcome, Ok(Appended::Stored));
        in_flight.push_back(s.next_sequence(1) - 1);
        if in_flight.len() < 40 {
            continue;
        }
        let seq = in_flight.pop_front().unwrap();
        fs.fail_next_syncs(1);
        m.acked(seq);
        let acked = s.ack(seq);
        fs.heal_syncs();
        if let Err(e) = acked {
            failed = Some(e.to_string());
            break;
        }
    }
    let tmp = spool_dir().join("acks.log.tmp");
    assert_eq!(
        failed,
        Some(format!("spool i/o at {}: {EIO}", tmp.display()))
    );
    let must_wait: Vec<u64> = m.must_wait().collect();
    assert!(must_wait.len() >= 12, "{must_wait:?}");
    for &seq in &must_wait {
        assert!(s.is_waiting(seq), "frame {seq} went with a failed sync");
    }

    // Healthy again: appends and acks go on, and a power cut loses nothing stored.
    for _ in 0..20 {
        assert_eq!(push(&mut s, &mut rng, &mut m, 100), Ok(Appended::Stored));
        let oldest = s.waiting_from(0).next().unwrap();
        m.acked(oldest);
        s.ack(oldest).unwrap();
    }
    drop(s);
    fs.crash(Some(rng.next_u64()));
    let s = open(&fs, &cfg);
    m.check_recovered(&s);
    assert_eq!(m.lost, 0);
    assert!(m.must_wait().count() >= 12);
}

/// Fills a disk of `capacity` bytes under `policy`, checks the policy's outcome and
/// counters, then raises the capacity and appends again. Returns (attempts, stored,
/// lost, time from raising the capacity to the first stored frame).
fn fill_the_disk(policy: FullPolicy, capacity: u64, seed: u64) -> (u64, u64, u64, Duration) {
    let mut rng = Rng::new(seed);
    let fs = FaultFs::new();
    fs.set_capacity(Some(capacity));
    let cfg = config(policy, 1000);
    let mut m = Model::new(seed);
    let mut s = open(&fs, &cfg);
    let mut outcomes = Vec::new();
    for _ in 0..40 {
        let outcome = push(&mut s, &mut rng, &mut m, 200).expect("a full disk is no error");
        outcomes.push(outcome);
        assert!(fs.used_bytes() <= capacity);
    }
    let count = |o: Appended| outcomes.iter().filter(|&&x| x == o).count() as u64;
    let c = s.counters().clone();
    // Frames stored and then dropped by the policy may go; all others must wait.
    let dropped: Vec<u64> = m.must_wait().filter(|&q| !s.is_waiting(q)).collect();
    for &q in &dropped {
        m.acked(q);
    }
    match policy {
        FullPolicy::DropNewest => {
            assert!(count(Appended::DroppedNewest) > 0, "{outcomes:?}");
            assert_eq!(c.dropped_newest, count(Appended::DroppedNewest));
            assert!(dropped.is_empty() && c.dropped_oldest == 0);
        }
        FullPolicy::DropOldest => {
            assert_eq!(count(Appended::Stored), 40, "{outcomes:?}");
            assert!(c.dropped_oldest > 0, "{c:?}");
            assert_eq!(c.dropped_oldest, dropped.len() as u64);
        }
        FullPolicy::Block => {
            assert!(count(Appended::Full) > 0, "{outcomes:?}");
            assert!(dropped.is_empty() && c.dropped_oldest + c.dropped_newest == 0);
            // Acknowledgements delete the oldest segment: room on the full disk again.
            let oldest: Vec<u64> = s.waiting_from(0).take(4).collect();
            for q in oldest {
                m.acked(q);
                s.ack(q).unwrap();
            }
            let mut stored = 0;
            while push(&mut s, &mut rng, &mut m, 200) == Ok(Appended::Stored) {
                stored += 1;
                assert!(stored <= 5, "more room than the acks freed");
            }
            assert!(stored >= 3, "acks freed room for {stored} frames");
            assert!(fs.used_bytes() <= capacity);
        }
    }
    fs.set_capacity(None);
    let raised = Instant::now();
    let resumed = loop {
        if push(&mut s, &mut rng, &mut m, 200) == Ok(Appended::Stored) {
            break raised.elapsed();
        }
        assert!(
            raised.elapsed() < Duration::from_secs(5),
            "{policy:?}: no resume"
        );
    };
    for _ in 0..5 {
        assert_eq!(push(&mut s, &mut rng, &mut m, 200), Ok(Appended::Stored));
    }
    // Every stored frame not dropped by the policy reads back, after a reopen too.
    drop(s);
    let s = open(&fs, &cfg);
    m.check_recovered(&s);
    (m.attempts, m.captured(), m.lost, resumed)
}

#[test]
fn disk_full_applies_the_policy_and_resumes() {
    let seed = base_seed();
    let mut figures = Figures {
        scenario: "disk-full".into(),
        captured: 0,
        events: 0,
        lost: 0,
        duplicates: 0,
        recovery: Duration::ZERO,
    };
    for (i, policy) in [
        FullPolicy::DropNewest,
        FullPolicy::DropOldest,
        FullPolicy::Block,
    ]
    .into_iter()
    .enumerate()
    {
        let (attempts, stored, lost, resumed) = fill_the_disk(policy, 4000, seed + i as u64);
        figures.captured += attempts;
        figures.events += stored;
        figures.lost += lost;
        figures.recovery = figures.recovery.max(resumed);
    }
    figures.report();
    println!(
        "disk-full: longest resume {} µs",
        figures.recovery.as_micros()
    );
    assert_eq!(figures.lost, 0, "{figures}");
}
