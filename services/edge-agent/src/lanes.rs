//! Priority lanes over the disk spool: urgent frames (a trigger from the line, an
//! attribute rule, or detections on the frame before) wait in their own spool, are sent
//! before routine frames after an outage, and are the last to be dropped when the byte
//! budget is full.
//!
//! Budget: the urgent lane has a reserved share that routine frames never use; routine
//! frames may use the rest. When urgent frames outgrow their share they take free room
//! first and then evict the oldest routine frames (counted as the routine lane's
//! drop-oldest); only when no routine frame is left does the urgent lane apply the full
//! policy to itself. The same order holds when the disk fills up before the budget does.
//! Sequence numbers are shared, so event ids stay unique per device.
//!
//! Layout: `<spool-dir>/urgent/` and `<spool-dir>/routine/`, each a [`Spool`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use visionfleet_proto::v1::Frame;

use crate::spool::{self, Appended, Spool, SpoolConfig, SpoolCounters, SpoolError};
use crate::spool_fs::{RealFs, SpoolFs};

/// Which lane a frame waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Sent first, dropped last.
    Urgent,
    /// Everything else.
    Routine,
}

impl Lane {
    /// Both lanes, in sending order.
    pub const ALL: [Lane; 2] = [Lane::Urgent, Lane::Routine];

    /// The lane's name (folder, metric label, attribute value).
    pub fn name(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Routine => "routine",
        }
    }
}

/// Counters of both lanes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LaneCounters {
    /// The urgent lane's counters.
    pub urgent: SpoolCounters,
    /// The routine lane's counters.
    pub routine: SpoolCounters,
}

impl LaneCounters {
    /// Both lanes added up.
    pub fn total(&self) -> SpoolCounters {
        let (u, r) = (&self.urgent, &self.routine);
        SpoolCounters {
            appended: u.appended + r.appended,
            acknowledged: u.acknowledged + r.acknowledged,
            dropped_oldest: u.dropped_oldest + r.dropped_oldest,
            dropped_newest: u.dropped_newest + r.dropped_newest,
            expired: u.expired + r.expired,
            truncated_bytes: u.truncated_bytes + r.truncated_bytes,
        }
    }
}

/// The two lanes and their shared budget.
pub struct Lanes {
    urgent: Spool,
    routine: Spool,
    budget: u64,
    urgent_reserved: u64,
    /// Numbers below this were handed out without being stored (`Detect` calls).
    reserved_below: u64,
}

impl Lanes {
    /// Opens both lanes under `cfg.dir`, recovering each (see [`Spool::open`]).
    /// `urgent_share` (0..=1) of `cfg.max_bytes` is reserved for urgent frames.
    pub fn open(cfg: SpoolConfig, urgent_share: f64) -> Result<Self, SpoolError> {
        Self::open_with(cfg, urgent_share, Arc::new(RealFs))
    }

    /// Like [`Lanes::open`], with both lanes on the file system `fs`.
    pub fn open_with(
        cfg: SpoolConfig,
        urgent_share: f64,
        fs: Arc<dyn SpoolFs>,
    ) -> Result<Self, SpoolError> {
        let budget = cfg.max_bytes;
        let urgent_reserved = (budget as f64 * urgent_share.clamp(0.0, 1.0)) as u64;
        let lane = |lane: Lane, max_bytes: u64| SpoolConfig {
            dir: cfg.dir.join(lane.name()),
            max_bytes,
            ..cfg.clone()
        };
        Ok(Self {
            // Urgent frames may use the whole budget (by evicting routine ones).
            urgent: Spool::open_with(lane(Lane::Urgent, budget), fs.clone())?,
            routine: Spool::open_with(lane(Lane::Routine, budget - urgent_reserved), fs)?,
            budget,
            urgent_reserved,
            reserved_below: 0,
        })
    }

    /// One lane's spool.
    pub fn lane(&self, lane: Lane) -> &Spool {
        match lane {
            Lane::Urgent => &self.urgent,
            Lane::Routine => &self.routine,
        }
    }

    /// The sequence number for the next frame, whichever its lane.
    pub fn next_sequence(&self, floor: u64) -> u64 {
        self.urgent
            .next_sequence(floor)
            .max(self.routine.next_sequence(floor))
            .max(self.reserved_below)
    }

    /// Hands out a number that no stored frame will take (for a synchronous `Detect`,
    /// whose event needs its own id). Not persisted: after a restart the numbering starts
    /// at the configured floor (by default the clock), above anything handed out before.
    pub fn reserve_sequence(&mut self, floor: u64) -> u64 {
        let sequence = self.next_sequence(floor);
        self.reserved_below = sequence + 1;
        sequence
    }

    /// Stores `frame` in `lane` (synced before [`Appended::Stored`]), making room as the
    /// module documentation says.
    pub fn append(&mut self, lane: Lane, frame: &Frame) -> Result<Appended, SpoolError> {
        match lane {
            Lane::Urgent => {
                let size = spool::record_size(frame);
                let after = self.urgent.disk_bytes() + size;
                if after > self.urgent_reserved && after + self.routine.disk_bytes() > self.budget {
                    self.routine.shrink_to(self.budget.saturating_sub(after))?;
                }
                loop {
                    let room = self.budget.saturating_sub(self.routine.disk_bytes());
                    if let Some(outcome) = self.urgent.append_unless_disk_full(frame, room)? {
                        return Ok(outcome);
                    }
                    // The disk filled up before the budget: routine frames make room
                    // first here too; without any, the urgent lane's policy applies.
                    if !self.routine.drop_oldest()? {
                        return self.urgent.append_within(frame, room);
                    }
                }
            }
            Lane::Routine => {
                let room = self
                    .budget
                    .saturating_sub(self.urgent_reserved.max(self.urgent.disk_bytes()));
                self.routine.append_within(frame, room)
            }
        }
    }

    /// The pod acknowledged (or permanently rejected) frame `sequence`: forget it.
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        if self.urgent.is_waiting(sequence) {
            self.urgent.ack(sequence)
        } else {
            self.routine.ack(sequence)
        }
    }

    /// Drops frames older than `ttl` from both lanes.
    pub fn expire(&mut self, ttl: Duration) -> Result<u64, SpoolError> {
        Ok(self.urgent.expire(ttl)? + self.routine.expire(ttl)?)
    }

    /// Reads a waiting frame back, from whichever lane holds it.
    pub fn read(&self, sequence: u64) -> Result<Option<Frame>, SpoolError> {
        match self.urgent.read(sequence)? {
            Some(f) => Ok(Some(f)),
            None => self.routine.read(sequence),
        }
    }

    /// The first waiting frame of `lane` numbered `from` or later.
    pub fn next_waiting(&self, lane: Lane, from: u64) -> Option<u64> {
        self.lane(lane).waiting_from(from).next()
    }

    /// Every waiting sequence number, both lanes.
    pub fn waiting(&self) -> BTreeSet<u64> {
        self.urgent
            .waiting_from(0)
            .chain(self.routine.waiting_from(0))
            .collect()
    }

    /// Frames waiting in both lanes.
    pub fn len(&self) -> u64 {
        self.urgent.len() + self.routine.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of both lanes' segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.urgent.disk_bytes() + self.routine.disk_bytes()
    }

    /// Counters of both lanes.
    pub fn counters(&self) -> LaneCounters {
        LaneCounters {
            urgent: self.urgent.counters().clone(),
            routine: self.routine.counters().clone(),
        }
    }
}

/// Read-only view of both lanes (see [`spool::peek`]): waiting sequence numbers and bytes.
pub fn peek(dir: &Path) -> Result<(BTreeSet<u64>, u64), SpoolError> {
    let mut waiting = BTreeSet::new();
    let mut bytes = 0;
    for lane in Lane::ALL {
        let lane_dir = dir.join(lane.name());
        if lane_dir.is_dir() {
            let (w, b) = spool::peek(&lane_dir)?;
            waiting.extend(w);
            bytes += b;
        }
    }
    Ok((waiting, bytes))
}

#[cfg(test)]
mod tests {
    use visionfleet_proto::v1::frame::Image;

    use super::*;
    use crate::spool::FullPolicy;
    use crate::spool_fs::FaultFs;

    fn frame(sequence: u64) -> Frame {
        Frame {
            device_id: "cam-1".into(),
            sequence,
            captured_at: Some(prost_types::Timestamp {
                seconds: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64,
                nanos: 0,
            }),
            image: Some(Image::Jpeg(vec![7; 100])),
            ..Default::default()
        }
    }

    fn open(dir: &Path, budget: u64, policy: FullPolicy) -> Lanes {
        Lanes::open(
            SpoolConfig {
                dir: dir.to_path_buf(),
                max_bytes: budget,
                ttl: None,
                policy,
                segment_bytes: 300,
            },
            0.25,
        )
        .expect("lanes open")
    }

    /// Appends a frame to `lane` with the next shared number.
    fn push(lanes: &mut Lanes, lane: Lane) -> (u64, Appended) {
        let seq = lanes.next_sequence(1);
        (seq, lanes.append(lane, &frame(seq)).expect("append"))
    }

    #[test]
    fn numbering_is_shared_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lanes = open(dir.path(), 1 << 20, FullPolicy::DropOldest);
        assert_eq!(push(&mut lanes, Lane::Routine).0, 1);
        assert_eq!(push(&mut lanes, Lane::Urgent).0, 2);
        assert_eq!(push(&mut lanes, Lane::Routine).0, 3);
        drop(lanes);
        let mut lanes = open(dir.path(), 1 << 20, FullPolicy::DropOldest);
        assert_eq!(lanes.next_waiting(Lane::Urgent, 0), Some(2));
        assert_eq!(lanes.next_waiting(Lane::Routine, 0), Some(1));
        assert_eq!(push(&mut lanes, Lane::Urgent).0, 4);
        assert_eq!(lanes.reserve_sequence(1), 5);
        assert_eq!(push(&mut lanes, Lane::Routine).0, 6);
        lanes.ack(2).expect("ack");
        lanes.ack(1).expect("ack");
        assert_eq!(lanes.waiting(), BTreeSet::from([3, 4, 6]));
        assert_eq!(peek(dir.path()).expect("peek").0, BTreeSet::from([3, 4, 6]));
    }

    #[test]
    fn a_full_budget_drops_routine_frames_and_keeps_every_urgent_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for about 15 records of ~130 bytes; a quarter reserved for urgent frames.
        let mut lanes = open(dir.path(), 2000, FullPolicy::DropOldest);
        let mut urgent = Vec::new();
        for i in 0..40 {
            let lane = if i % 4 == 0 {
                Lane::Urgent
            } else {
                Lane::Routine
            };
            let (seq, fate) = push(&mut lanes, lane);
            if lane == Lane::Urgent {
                assert_eq!(fate, Appended::Stored);
                urgent.push(seq);
            }
            assert!(lanes.disk_bytes() <= 2000, "{} bytes", lanes.disk_bytes());
        }
        let c = lanes.counters();
        assert_eq!(
            c.urgent.dropped_oldest + c.urgent.dropped_newest,
            0,
            "{c:?}"
        );
        assert!(c.routine.dropped_oldest > 0, "{c:?}");
        for s in urgent {
            assert!(lanes.lane(Lane::Urgent).is_waiting(s), "urgent {s} dropped");
        }
    }

    #[test]
    fn on_a_full_disk_urgent_frames_evict_routine_ones_first() {
        let fs = FaultFs::new();
        let cfg = SpoolConfig {
            dir: "/spool".into(),
            max_bytes: 1 << 20,
            ttl: None,
            policy: FullPolicy::DropOldest,
            segment_bytes: 300,
        };
        let mut lanes = Lanes::open_with(cfg, 0.25, Arc::new(fs.clone())).expect("open");
        fs.set_capacity(Some(2000));
        for _ in 0..30 {
            push(&mut lanes, Lane::Routine);
        }
        let routine_before = lanes.lane(Lane::Routine).len();
        for _ in 0..10 {
            assert_eq!(push(&mut lanes, Lane::Urgent).1, Appended::Stored);
            assert!(fs.used_bytes() <= 2000);
        }
        let c = lanes.counters();
        assert_eq!(
            c.urgent.dropped_oldest + c.urgent.dropped_newest,
            0,
            "{c:?}"
        );
        assert_eq!(lanes.lane(Lane::Urgent).len(), 10);
        assert!(lanes.lane(Lane::Routine).len() < routine_before, "{c:?}");
        assert!(c.routine.dropped_oldest > 0, "{c:?}");
    }

    #[test]
    fn urgent_frames_evict_routine_ones_before_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lanes = open(dir.path(), 2000, FullPolicy::DropNewest);
        while push(&mut lanes, Lane::Routine).1 == Appended::Stored {}
        let routine_before = lanes.lane(Lane::Routine).len();
        // Urgent frames fill their reserved share without touching routine frames...
        let (_, fate) = push(&mut lanes, Lane::Urgent);
        assert_eq!(fate, Appended::Stored);
        assert_eq!(lanes.lane(Lane::Routine).len(), routine_before);
        // ...then take the routine lane's room, oldest first, until it is gone.
        let mut stored = 1;
        while push(&mut lanes, Lane::Urgent).1 == Appended::Stored {
            stored += 1;
            assert!(lanes.disk_bytes() <= 2000);
        }
        assert!(stored > 4, "urgent frames stored: {stored}");
        assert_eq!(lanes.lane(Lane::Routine).len(), 0);
        let c = lanes.counters();
        assert_eq!(c.routine.dropped_oldest, routine_before, "{c:?}");
        assert_eq!(c.urgent.dropped_newest, 1, "{c:?}");
    }
}
