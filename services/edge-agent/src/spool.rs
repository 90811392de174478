//! The disk spool (store-and-forward): every captured frame is appended here and synced
//! before it is sent, and forgotten only when the pod acknowledged it (or a stated policy
//! dropped it, counted by reason). It survives `kill -9` and power loss: records carry a
//! length and a CRC-32, and a torn or corrupt tail found on open is cut off, never parsed.
//!
//! Layout of the spool folder:
//! - `<first-sequence>.seg`: segments of records `len u32 | crc32 u32 | body`, where body
//!   is `sequence u64 | captured_unix_ms i64 | protobuf Frame` (little-endian). Appends go
//!   to the newest segment; a new one starts when it reaches the segment size. A segment
//!   is deleted once none of its records is waiting, except the newest, which also keeps
//!   the last sequence number used (so numbering continues after a restart).
//! - `LOCK`: locked while an agent has the spool open.
//! - `acks.log`: sequence numbers acknowledged or dropped, 8 bytes each, written without a
//!   sync: if the tail is lost, those frames are sent again with the same event id (a
//!   counted duplicate, never a loss).
//!
//! All file I/O goes through a [`SpoolFs`]: [`Spool::open`] uses the real file system,
//! [`Spool::open_with`] any other (tests use [`crate::spool_fs::FaultFs`], which loses
//! power and fails syncs and writes on demand).
//!
//! Disk errors:
//! - A failed write or sync of a record: the frame is not stored (`append` returns the
//!   error, naming the segment), nothing is acknowledged or deleted on its account, and
//!   the bytes that may have been written are never trusted. The segment is cut back to
//!   its last synced length (best effort) and sealed: the next append starts a new
//!   segment, because after a failed `fsync` the kernel may have dropped those pages while
//!   still showing them, and records appended after them could be cut off with them by a
//!   later recovery. The frame's sequence number is not reused (the record may still turn
//!   up after a restart, checked by its CRC like any other: a frame sent though `append`
//!   failed, never one sent twice under one number).
//! - For the same reason, appends never continue in a segment of an earlier run: the
//!   first append after [`Spool::open`] starts a new segment.
//! - Disk full (ENOSPC or a quota on a record write): the partial record is cut off and
//!   the full policy applies as for the byte budget, with the same counters: drop-newest
//!   refuses the frame, block returns [`Appended::Full`], drop-oldest removes the oldest
//!   segments until the record fits. Appends resume by themselves once there is room. If
//!   the partial record cannot be cut off, it is a write failure as above. The lanes
//!   ([`crate::lanes`]) share one disk: urgent frames evict routine ones first.
//! - A failed write to `acks.log` loses that entry (a resend after a restart, as for an
//!   unsynced tail) and never stops acknowledgements, so that a full disk can still be
//!   emptied by the uplink; a possibly partial entry is cut off before the next one is
//!   written, so that later entries stay aligned.
//! - Dropping a whole segment (drop-oldest) writes no ack entries: removing the file is
//!   what forgets its frames (if a power cut undoes the removal, they are sent again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use visionfleet_proto::v1::Frame;

use crate::spool_fs::{RealFs, SpoolFile, SpoolFs, SpoolLock};

/// Header bytes before each record body.
const HEADER: u64 = 8;
/// Body bytes before the frame.
const BODY_PREFIX: usize = 16;
/// No record is larger (a frame is limited far below this); a larger length is corruption.
const MAX_RECORD: u32 = 256 << 20;
/// Bytes of an acks.log entry.
const ACK_ENTRY: u64 = 8;

/// What to do when a new frame does not fit in the byte budget (or on the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum FullPolicy {
    /// Drop the oldest waiting frames (a whole segment at a time) to make room.
    DropOldest,
    /// Refuse the new frame.
    DropNewest,
    /// Make capture wait until acknowledgements free room.
    Block,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool folder (created if missing).
    pub dir: PathBuf,
    /// Most bytes on disk.
    pub max_bytes: u64,
    /// Frames older than this (by capture time) are dropped as expired.
    pub ttl: Option<Duration>,
    /// What to do when full.
    pub policy: FullPolicy,
    /// Size at which a new segment starts.
    pub segment_bytes: u64,
}

/// Counters, for the summary and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolCounters {
    /// Frames appended.
    pub appended: u64,
    /// Frames acknowledged and forgotten.
    pub acknowledged: u64,
    /// Frames dropped to make room (drop-oldest).
    pub dropped_oldest: u64,
    /// Frames refused for lack of room (drop-newest).
    pub dropped_newest: u64,
    /// Frames dropped because they outlived the TTL.
    pub expired: u64,
    /// Bytes cut off torn or corrupt segment tails when the spool was opened.
    pub truncated_bytes: u64,
}

/// What [`Spool::append`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored and synced: it will be sent until acknowledged.
    Stored,
    /// Not stored: the spool (or the disk) is full and the policy is drop-newest.
    DroppedNewest,
    /// Not stored: the spool (or the disk) is full and the policy is block; try again
    /// after acks.
    Full,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing the spool failed. After a failed write or sync nothing is
    /// acknowledged or deleted on its account (see the module documentation).
    #[error("spool i/o at {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process has the spool open.
    #[error("spool {0} is in use by another process")]
    Locked(PathBuf),
    /// A frame alone exceeds the byte budget.
    #[error("frame of {size} bytes exceeds the spool's budget of {max} bytes")]
    FrameTooLarge {
        /// Record size.
        size: u64,
        /// The budget.
        max: u64,
    },
    /// A stored record no longer decodes (its CRC matched, so this is a bug or tampering).
    #[error("spool record {sequence} does not decode: {reason}")]
    BadRecord {
        /// Its sequence number.
        sequence: u64,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a write failed for lack of room (which the full policy handles).
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Where a waiting record lives.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    captured_ms: i64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Bytes of whole, synced records: where the next record goes.
    bytes: u64,
    /// Waiting records in it.
    waiting: usize,
    /// Takes no more appends (from an earlier run, or a write or sync failed in it).
    sealed: bool,
}

/// What an append does when the disk is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDiskFull {
    /// Apply the full policy, as for the byte budget.
    ApplyPolicy,
    /// Return, so that the caller decides.
    Return,
}

/// What [`Spool::write_record`] did.
enum Written {
    Stored,
    /// The disk is full; nothing of the record is left in the segment.
    DiskFull,
}

/// The spool. Not thread-safe by itself: the agent keeps it behind a mutex.
pub struct Spool {
    cfg: SpoolConfig,
    fs: Arc<dyn SpoolFs>,
    segments: BTreeMap<u64, Segment>,
    waiting: BTreeMap<u64, Loc>,
    /// The newest segment, open for appends (none until the first append of this run).
    active: Option<Box<dyn SpoolFile>>,
    acks: Box<dyn SpoolFile>,
    acks_path: PathBuf,
    acks_written: u64,
    /// acks.log may end in a partial entry (a failed write not yet cut off).
    acks_torn: bool,
    last_sequence: Option<u64>,
    counters: SpoolCounters,
    /// Held (locked) while the spool is open.
    _lock: SpoolLock,
}

impl Spool {
    /// Opens (or creates) the spool on the real file system, recovering from a crash:
    /// torn or corrupt tails are cut off, acknowledged frames are forgotten, the rest wait
    /// to be sent again.
    pub fn open(cfg: SpoolConfig) -> Result<Self, SpoolError> {
        Self::open_with(cfg, Arc::new(RealFs))
    }

    /// Like [`Spool::open`], on the file system `fs`.
    pub fn open_with(cfg: SpoolConfig, fs: Arc<dyn SpoolFs>) -> Result<Self, SpoolError> {
        fs.create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        // One process per spool: a second one would cut "torn" tails that are being
        // written and lose acks to a rewritten log.
        let lock_path = cfg.dir.join("LOCK");
        let lock = fs
            .try_lock(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| SpoolError::Locked(cfg.dir.clone()))?;
        let acks_path = cfg.dir.join("acks.log");
        let acked = read_acks(fs.as_ref(), &acks_path)?;
        let acks = fs.open_append(&acks_path, true).map_err(io(&acks_path))?;
        let mut spool = Spool {
            segments: BTreeMap::new(),
            waiting: BTreeMap::new(),
            active: None,
            acks,
            acks_written: acked.len() as u64,
            acks_torn: false,
            acks_path,
            last_sequence: None,
            counters: SpoolCounters::default(),
            _lock: lock,
            fs,
            cfg,
        };
        // Acks of frames in each segment: what the rewritten ack log keeps (those of
        // segments deleted below are dropped with them).
        let mut handled: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in segment_ids(spool.fs.as_ref(), &spool.cfg.dir)? {
            let h = spool.recover_segment(id, &acked)?;
            handled.insert(id, h);
        }
        // Forget fully handled segments, keeping the newest for its sequence numbers.
        spool.delete_finished_segments()?;
        if let Some(&id) = spool.segments.keys().next_back() {
            spool.last_sequence = Some(spool.last_sequence.map_or(id, |s| s.max(id)));
        }
        // The ack log is rewritten whole at every open, so a torn last entry cannot
        // misalign later ones; the segments were just scanned, so no second read.
        let live: Vec<u64> = handled
            .into_iter()
            .filter(|(id, _)| spool.segments.contains_key(id))
            .flat_map(|(_, h)| h)
            .collect();
        spool.write_acks(&live)?;
        Ok(spool)
    }

    /// Loads one segment, cutting off a torn tail; returns the sequences in it that are
    /// already handled (acknowledged or dropped). It is sealed: appends of this run go to
    /// new segments (see the module documentation).
    fn recover_segment(&mut self, id: u64, acked: &BTreeSet<u64>) -> Result<Vec<u64>, SpoolError> {
        let path = segment_path(&self.cfg.dir, id);
        let scanned = scan_segment(self.fs.as_ref(), &path)?;
        let mut waiting = 0;
        let mut handled = Vec::new();
        for r in &scanned.records {
            self.last_sequence = Some(self.last_sequence.map_or(r.sequence, |s| s.max(r.sequence)));
            if acked.contains(&r.sequence) {
                handled.push(r.sequence);
            } else {
                self.waiting.insert(
                    r.sequence,
                    Loc {
                        segment: id,
                        offset: r.offset,
                        len: r.len,
                        captured_ms: r.captured_ms,
                    },
                );
                waiting += 1;
            }
        }
        if scanned.clean < scanned.total {
            // A torn write (crash mid-append) or corruption: everything from here on is
            // unreadable by construction; cut it off so appends continue on clean ground.
            tracing::warn!(
                segment = %path.display(),
                offset = scanned.clean,
                bytes = scanned.total - scanned.clean,
                "spool: cutting off a torn or corrupt tail"
            );
            self.fs
                .truncate(&path, scanned.clean)
                .and_then(|()| self.fs.sync_file(&path))
                .map_err(io(&path))?;
            self.counters.truncated_bytes += scanned.total - scanned.clean;
        }
        self.segments.insert(
            id,
            Segment {
                path,
                bytes: scanned.clean,
                waiting,
                sealed: true,
            },
        );
        Ok(handled)
    }

    /// The sequence number to give the next frame: one past the last ever spooled (or
    /// attempted: see the module documentation), and at least `floor`.
    pub fn next_sequence(&self, floor: u64) -> u64 {
        self.last_sequence.map_or(floor, |s| (s + 1).max(floor))
    }

    /// Appends a frame and syncs it to disk before returning [`Appended::Stored`].
    pub fn append(&mut self, frame: &Frame) -> Result<Appended, SpoolError> {
        self.append_within(frame, self.cfg.max_bytes)
    }

    /// Like [`Spool::append`], with the full policy applied at `budget` bytes (at most the
    /// configured budget): the priority lanes lend and borrow room between them.
    pub fn append_within(&mut self, frame: &Frame, budget: u64) -> Result<Appended, SpoolError> {
        let outcome = self.append_inner(frame, budget, OnDiskFull::ApplyPolicy)?;
        Ok(outcome.unwrap_or(Appended::Full))
    }

    /// Like [`Spool::append_within`], except that when the disk (rather than the budget)
    /// is full it returns `None`, storing nothing and applying no policy, so that the
    /// caller can make room elsewhere first: the urgent lane evicts routine frames.
    pub fn append_unless_disk_full(
        &mut self,
        frame: &Frame,
        budget: u64,
    ) -> Result<Option<Appended>, SpoolError> {
        self.append_inner(frame, budget, OnDiskFull::Return)
    }

    fn append_inner(
        &mut self,
        frame: &Frame,
        budget: u64,
        on_disk_full: OnDiskFull,
    ) -> Result<Option<Appended>, SpoolError> {
        let budget = budget.min(self.cfg.max_bytes);
        let (record, captured_ms) = encode_record(frame);
        let size = record.len() as u64;
        if size > self.cfg.max_bytes {
            return Err(SpoolError::FrameTooLarge {
                size,
                max: self.cfg.max_bytes,
            });
        }
        if let Some(ttl) = self.cfg.ttl {
            self.expire(ttl)?;
        }
        while self.disk_bytes() + size > budget {
            if let Some(refused) = self.apply_full_policy(frame.sequence)? {
                return Ok(Some(refused));
            }
        }
        loop {
            match self.write_record(frame.sequence, &record, captured_ms)? {
                Written::Stored => return Ok(Some(Appended::Stored)),
                Written::DiskFull if on_disk_full == OnDiskFull::Return => return Ok(None),
                Written::DiskFull => {
                    if let Some(refused) = self.apply_full_policy(frame.sequence)? {
                        return Ok(Some(refused));
                    }
                }
            }
        }
    }

    /// Drops the oldest waiting frames (one segment's worth, counted as dropped-oldest)
    /// to free disk space for another lane. Returns whether any were dropped.
    pub fn drop_oldest(&mut self) -> Result<bool, SpoolError> {
        let before = self.len();
        if before > 0 {
            self.shrink_to(self.disk_bytes().saturating_sub(1))?;
        }
        Ok(self.len() < before)
    }

    /// The full policy, once: `Some` outcome when the frame is refused, `None` when room
    /// was made (a segment dropped) and the frame should be tried again.
    fn apply_full_policy(&mut self, sequence: u64) -> Result<Option<Appended>, SpoolError> {
        match self.cfg.policy {
            FullPolicy::DropNewest => {
                self.counters.dropped_newest += 1;
                Ok(Some(Appended::DroppedNewest))
            }
            FullPolicy::Block => Ok(Some(Appended::Full)),
            FullPolicy::DropOldest => {
                if self.drop_oldest_segment()? {
                    return Ok(None);
                }
                // Only the newest segment is left and it holds everything: start a new
                // one so the old one can go.
                self.roll(sequence)?;
                if self.drop_oldest_segment()? {
                    return Ok(None);
                }
                // Nothing of this lane is left to drop: the room went to the other lane
                // (or to something else on the disk).
                self.counters.dropped_newest += 1;
                Ok(Some(Appended::DroppedNewest))
            }
        }
    }

    /// Writes one record at the end of the newest segment (starting one if needed) and
    /// syncs it, then records it as waiting. See the module documentation for failures.
    fn write_record(
        &mut self,
        sequence: u64,
        record: &[u8],
        captured_ms: i64,
    ) -> Result<Written, SpoolError> {
        let size = record.len() as u64;
        let needs_roll = self.active.is_none()
            || self.segments.values().next_back().is_none_or(|s| {
                s.sealed || (s.bytes + size > self.cfg.segment_bytes && s.bytes > 0)
            });
        if needs_roll {
            self.roll(sequence)?;
        }
        let (&id, seg) = self
            .segments
            .iter()
            .next_back()
            .expect("a segment exists after roll");
        let (offset, path) = (seg.bytes, seg.path.clone());
        let f = self.active.as_mut().expect("the newest segment is open");
        if let Err(e) = f.write_all(record) {
            if is_disk_full(&e) && self.cut_back(id) {
                return Ok(Written::DiskFull);
            }
            return Err(self.abandon(id, sequence, io(&path)(e)));
        }
        if let Err(e) = f.sync_data() {
            return Err(self.abandon(id, sequence, io(&path)(e)));
        }
        self.waiting.insert(
            sequence,
            Loc {
                segment: id,
                offset,
                len: size as u32,
                captured_ms,
            },
        );
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.bytes += size;
            seg.waiting += 1;
        }
        self.note_sequence(sequence);
        self.counters.appended += 1;
        Ok(Written::Stored)
    }

    /// Cuts segment `id` back to its whole, synced records (dropping a failed record's
    /// bytes). Returns whether that worked.
    fn cut_back(&mut self, id: u64) -> bool {
        let Some(seg) = self.segments.get(&id) else {
            return false;
        };
        match self.fs.truncate(&seg.path, seg.bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(segment = %seg.path.display(), error = %e, "spool: cannot cut off a failed record");
                false
            }
        }
    }

    /// After a failed write or sync in segment `id`: cuts the record's bytes off (best
    /// effort), seals the segment and retires `sequence`. Returns `error`.
    fn abandon(&mut self, id: u64, sequence: u64, error: SpoolError) -> SpoolError {
        tracing::warn!(error = %error, sequence, "spool: frame not stored; the segment takes no more appends");
        self.cut_back(id);
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.sealed = true;
        }
        self.active = None;
        self.note_sequence(sequence);
        error
    }

    /// `sequence` is taken: the next frame gets a higher one.
    fn note_sequence(&mut self, sequence: u64) {
        self.last_sequence = Some(self.last_sequence.map_or(sequence, |s| s.max(sequence)));
    }

    /// Starts a new segment for appends, named after the first sequence it will hold
    /// (above the newest segment's name, so names stay in order).
    fn roll(&mut self, first_sequence: u64) -> Result<(), SpoolError> {
        let id = match self.segments.iter().next_back() {
            // Already started for this frame.
            Some((&newest, s))
                if newest == first_sequence && !s.sealed && self.active.is_some() =>
            {
                return Ok(())
            }
            Some((&newest, _)) => first_sequence.max(newest + 1),
            None => first_sequence,
        };
        let path = segment_path(&self.cfg.dir, id);
        let f = self.fs.open_append(&path, true).map_err(io(&path))?;
        // The new file's directory entry must survive a power cut before records in it
        // count as stored.
        sync_dir(self.fs.as_ref(), &self.cfg.dir)?;
        self.active = Some(f);
        self.segments.insert(
            id,
            Segment {
                path,
                bytes: 0,
                waiting: 0,
                sealed: false,
            },
        );
        self.delete_finished_segments()
    }

    /// Drops every waiting frame of the oldest segment (not the newest) by removing the
    /// file. Returns whether one was dropped.
    fn drop_oldest_segment(&mut self) -> Result<bool, SpoolError> {
        if self.segments.len() < 2 {
            return Ok(false);
        }
        let Some((&oldest, seg)) = self.segments.iter().next() else {
            return Ok(false);
        };
        remove_segment(self.fs.as_ref(), &seg.path)?;
        self.segments.remove(&oldest);
        let victims: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, l)| l.segment == oldest)
            .map(|(&s, _)| s)
            .collect();
        self.counters.dropped_oldest += victims.len() as u64;
        for s in victims {
            self.waiting.remove(&s);
        }
        Ok(true)
    }

    /// Drops the oldest waiting frames, a segment at a time, until the segments take at
    /// most `max_disk` bytes (or nothing is left to drop). Counted as dropped-oldest.
    pub fn shrink_to(&mut self, max_disk: u64) -> Result<(), SpoolError> {
        while self.disk_bytes() > max_disk {
            if self.drop_oldest_segment()? {
                continue;
            }
            // Only the newest segment is left: start a new one so that it can go.
            match self.last_sequence {
                Some(last) if !self.is_empty() => self.roll(last + 1)?,
                _ => break,
            }
            if !self.drop_oldest_segment()? {
                break;
            }
        }
        Ok(())
    }

    /// Drops frames captured longer than `ttl` ago.
    pub fn expire(&mut self, ttl: Duration) -> Result<u64, SpoolError> {
        let cutoff = now_ms() - ttl.as_millis() as i64;
        let old: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, l)| l.captured_ms < cutoff)
            .map(|(&s, _)| s)
            .collect();
        self.counters.expired += old.len() as u64;
        for &s in &old {
            self.forget(s);
        }
        self.delete_finished_segments()?;
        Ok(old.len() as u64)
    }

    /// The pod acknowledged (or permanently rejected) frame `sequence`: forget it. An
    /// error comes from the housekeeping after it (deleting a finished segment, compacting
    /// acks.log): the frame is forgotten all the same, and the housekeeping is retried.
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        if self.waiting.contains_key(&sequence) {
            self.forget(sequence);
            self.counters.acknowledged += 1;
            self.delete_finished_segments()?;
        }
        Ok(())
    }

    fn forget(&mut self, sequence: u64) {
        let Some(loc) = self.waiting.remove(&sequence) else {
            return;
        };
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.waiting -= 1;
        }
        self.log_ack(sequence);
    }

    /// Appends `sequence` to acks.log (unsynced). A failed write only loses the entry (see
    /// the module documentation); a partial entry is cut off before the next one goes in,
    /// and while that fails no entry is written.
    fn log_ack(&mut self, sequence: u64) {
        if self.acks_torn {
            if self
                .fs
                .truncate(&self.acks_path, self.acks_written * ACK_ENTRY)
                .is_err()
            {
                return;
            }
            self.acks_torn = false;
        }
        match self.acks.write_all(&sequence.to_le_bytes()) {
            Ok(()) => self.acks_written += 1,
            Err(e) => {
                tracing::warn!(sequence, error = %e, "spool: ack not logged; the frame is resent after a restart");
                self.acks_torn = true;
            }
        }
    }

    fn delete_finished_segments(&mut self) -> Result<(), SpoolError> {
        let newest = self.segments.keys().next_back().copied();
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&id, s)| s.waiting == 0 && Some(id) != newest)
            .map(|(&id, _)| id)
            .collect();
        for id in &done {
            if let Some(seg) = self.segments.get(id) {
                remove_segment(self.fs.as_ref(), &seg.path)?;
            }
            self.segments.remove(id);
        }
        if !done.is_empty() && self.acks_written > 4096 && self.acks_written > 4 * self.len() {
            self.compact_acks()?;
        }
        Ok(())
    }

    /// Rewrites acks.log with only the entries that still matter (acks of frames in live
    /// segments), atomically.
    fn compact_acks(&mut self) -> Result<(), SpoolError> {
        let live = self.live_handled_sequences()?;
        self.write_acks(&live)
    }

    /// Replaces acks.log with `live`, atomically.
    fn write_acks(&mut self, live: &[u64]) -> Result<(), SpoolError> {
        let tmp = self.cfg.dir.join("acks.log.tmp");
        let mut buf = Vec::with_capacity(live.len() * ACK_ENTRY as usize);
        for s in live {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        self.fs
            .write_file(&tmp, &buf)
            .and_then(|()| self.fs.sync_file(&tmp))
            .map_err(io(&tmp))?;
        self.fs
            .rename(&tmp, &self.acks_path)
            .map_err(io(&self.acks_path))?;
        // The new log is in place: later entries go to it even if the folder sync below
        // fails (then a power cut brings back the old log, whose acks are all still true).
        self.acks_written = live.len() as u64;
        self.acks_torn = false;
        self.acks = self
            .fs
            .open_append(&self.acks_path, false)
            .map_err(io(&self.acks_path))?;
        sync_dir(self.fs.as_ref(), &self.cfg.dir)
    }

    /// Sequences in live segments that are no longer waiting.
    fn live_handled_sequences(&self) -> Result<Vec<u64>, SpoolError> {
        let mut out = Vec::new();
        for seg in self.segments.values() {
            for r in scan_segment(self.fs.as_ref(), &seg.path)?.records {
                if !self.waiting.contains_key(&r.sequence) {
                    out.push(r.sequence);
                }
            }
        }
        Ok(out)
    }

    /// Waiting frames' sequence numbers, oldest first, from `from` on.
    pub fn waiting_from(&self, from: u64) -> impl Iterator<Item = u64> + '_ {
        self.waiting.range(from..).map(|(&s, _)| s)
    }

    /// Whether frame `sequence` is still waiting.
    pub fn is_waiting(&self, sequence: u64) -> bool {
        self.waiting.contains_key(&sequence)
    }

    /// Reads a waiting frame back.
    pub fn read(&self, sequence: u64) -> Result<Option<Frame>, SpoolError> {
        let Some(loc) = self.waiting.get(&sequence) else {
            return Ok(None);
        };
        let seg = &self.segments[&loc.segment];
        let record = self
            .fs
            .read_range(&seg.path, loc.offset, loc.len as usize)
            .map_err(io(&seg.path))?;
        let (body, _) = parse_record(&record, 0).ok_or_else(|| SpoolError::BadRecord {
            sequence,
            reason: "checksum mismatch on read".into(),
        })?;
        Frame::decode(&body[BODY_PREFIX..])
            .map(Some)
            .map_err(|e| SpoolError::BadRecord {
                sequence,
                reason: e.to_string(),
            })
    }

    /// Frames waiting.
    pub fn len(&self) -> u64 {
        self.waiting.len() as u64
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Age of the oldest waiting frame.
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.waiting.values().map(|l| l.captured_ms).min()?;
        Some(Duration::from_millis((now_ms() - oldest).max(0) as u64))
    }

    /// Counters since the spool was opened.
    pub fn counters(&self) -> &SpoolCounters {
        &self.counters
    }
}

/// Read-only view of a spool folder, safe while an agent has it open: the frames
/// waiting (stored, not acknowledged) and their bytes. For `status` and for tests.
pub fn peek(dir: &Path) -> Result<(BTreeSet<u64>, u64), SpoolError> {
    peek_with(&RealFs, dir)
}

/// Like [`peek`], on the file system `fs`.
pub fn peek_with(fs: &dyn SpoolFs, dir: &Path) -> Result<(BTreeSet<u64>, u64), SpoolError> {
    let acked = read_acks(fs, &dir.join("acks.log"))?;
    let mut waiting = BTreeSet::new();
    let mut bytes = 0;
    for id in segment_ids(fs, dir)? {
        let scanned = scan_segment(fs, &segment_path(dir, id))?;
        for r in scanned.records {
            if !acked.contains(&r.sequence) {
                waiting.insert(r.sequence);
                bytes += u64::from(r.len);
            }
        }
    }
    Ok((waiting, bytes))
}

/// Bytes that `frame` takes in a segment.
pub fn record_size(frame: &Frame) -> u64 {
    HEADER + (BODY_PREFIX + frame.encoded_len()) as u64
}

/// A frame's record (header and body) and its capture time in Unix milliseconds.
fn encode_record(frame: &Frame) -> (Vec<u8>, i64) {
    let captured_ms = frame.captured_at.as_ref().map_or_else(now_ms, |t| {
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    });
    let mut body = Vec::with_capacity(BODY_PREFIX + frame.encoded_len());
    body.extend_from_slice(&frame.sequence.to_le_bytes());
    body.extend_from_slice(&captured_ms.to_le_bytes());
    frame.encode(&mut body).expect("a Vec grows as needed");
    let mut record = Vec::with_capacity(HEADER as usize + body.len());
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    record.extend_from_slice(&body);
    (record, captured_ms)
}

fn segment_path(dir: &Path, first_sequence: u64) -> PathBuf {
    dir.join(format!("{first_sequence:020}.seg"))
}

/// Removes a segment file; one already gone counts as removed.
fn remove_segment(fs: &dyn SpoolFs, path: &Path) -> Result<(), SpoolError> {
    match fs.remove(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Segment ids (first sequence numbers) in `dir`, oldest first.
fn segment_ids(fs: &dyn SpoolFs, dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids: Vec<u64> = fs
        .list(dir)
        .map_err(io(dir))?
        .into_iter()
        .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A readable record of a segment.
struct Scanned {
    sequence: u64,
    captured_ms: i64,
    offset: u64,
    len: u32,
}

/// A segment's readable records, the length of that clean prefix and the file's length.
struct ScannedSegment {
    records: Vec<Scanned>,
    clean: u64,
    total: u64,
}

fn scan_segment(fs: &dyn SpoolFs, path: &Path) -> Result<ScannedSegment, SpoolError> {
    let data = match fs.read(path) {
        Ok(data) => data,
        // Deleted by its agent since the folder was listed (peek): nothing waits there.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path)(e)),
    };
    let mut records = Vec::new();
    let mut offset = 0usize;
    while let Some((body, next)) = parse_record(&data, offset) {
        records.push(Scanned {
            sequence: u64::from_le_bytes(body[0..8].try_into().expect("8 bytes")),
            captured_ms: i64::from_le_bytes(body[8..16].try_into().expect("8 bytes")),
            offset: offset as u64,
            len: (next - offset) as u32,
        });
        offset = next;
    }
    Ok(ScannedSegment {
        records,
        clean: offset as u64,
        total: data.len() as u64,
    })
}

/// The record at `offset`: its body and the next record's offset, or `None` when the
/// bytes there are not a whole record with a matching checksum.
fn parse_record(data: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let header = data.get(offset..offset + HEADER as usize)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_RECORD || (len as usize) < BODY_PREFIX {
        return None;
    }
    let start = offset + HEADER as usize;
    let body = data.get(start..start + len as usize)?;
    (crc32fast::hash(body) == crc).then_some((body, start + len as usize))
}

fn read_acks(fs: &dyn SpoolFs, path: &Path) -> Result<BTreeSet<u64>, SpoolError> {
    match fs.read(path) {
        // A torn last entry (fewer than 8 bytes) is ignored: that frame is resent.
        Ok(data) => Ok(data
            .chunks_exact(ACK_ENTRY as usize)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io(path)(e)),
    }
}

fn sync_dir(fs: &dyn SpoolFs, dir: &Path) -> Result<(), SpoolError> {
    fs.sync_dir(dir).map_err(io(dir))
}

/// Milliseconds since the Unix epoch (capture times in records).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use visionfleet_proto::v1::frame::Image;

    use super::*;
    use crate::spool_fs::FaultFs;

    fn cfg(dir: &Path, max_bytes: u64, policy: FullPolicy) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            ttl: None,
            policy,
            segment_bytes: 1000,
        }
    }

    fn frame(sequence: u64, size: usize) -> Frame {
        Frame {
            device_id: "cam-1".into(),
            sequence,
            // Now, with fixed nanoseconds: every record of a size has the same length.
            captured_at: Some(prost_types::Timestamp {
                seconds: now_ms() / 1000,
                nanos: 123_456_789,
            }),
            image: Some(Image::Jpeg(vec![sequence as u8; size])),
            ..Default::default()
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn frames_survive_reopen_until_acknowledged_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        assert_eq!(s.next_sequence(5), 5);
        for seq in 5..15 {
            assert_eq!(s.append(&frame(seq, 150)).unwrap(), Appended::Stored);
        }
        s.ack(5).unwrap();
        s.ack(6).unwrap();
        drop(s);
        let s = Spool::open(c).unwrap();
        assert_eq!(
            s.waiting_from(0).collect::<Vec<_>>(),
            (7..15).collect::<Vec<_>>()
        );
        let back = s.read(9).unwrap().unwrap();
        assert_eq!((back.sequence, back.image), (9, frame(9, 150).image));
        assert_eq!(s.read(5).unwrap(), None);
        assert_eq!(s.next_sequence(0), 15);
    }

    #[test]
    fn acknowledged_segments_are_deleted_but_the_newest_keeps_the_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        for seq in 0..20 {
            s.append(&frame(seq, 150)).unwrap();
        }
        assert!(segment_files(dir.path()).len() >= 4);
        for seq in 0..20 {
            s.ack(seq).unwrap();
        }
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert!(s.is_empty());
        drop(s);
        let s = Spool::open(c).unwrap();
        assert_eq!(s.next_sequence(0), 20);
    }

    #[test]
    fn a_torn_tail_is_cut_off_on_open_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        for seq in 0..3 {
            s.append(&frame(seq, 100)).unwrap();
        }
        drop(s);
        // A crash mid-append: half of a fourth record reached the disk.
        let seg = segment_files(dir.path()).pop().unwrap();
        let mut whole = std::fs::read(&seg).unwrap();
        let clean = whole.len();
        let torn = whole[..clean / 6].to_vec();
        whole.extend_from_slice(&torn);
        std::fs::write(&seg, &whole).unwrap();

        let mut s = Spool::open(c.clone()).unwrap();
        assert_eq!(s.counters().truncated_bytes, torn.len() as u64);
        assert_eq!(s.len(), 3);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), clean as u64);
        s.append(&frame(3, 100)).unwrap();
        drop(s);
        let s = Spool::open(c).unwrap();
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(s.counters().truncated_bytes, 0);
    }

    #[test]
    fn a_corrupt_record_is_never_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        for seq in 0..3 {
            s.append(&frame(seq, 100)).unwrap();
        }
        drop(s);
        let seg = segment_files(dir.path()).pop().unwrap();
        let mut data = std::fs::read(&seg).unwrap();
        let last = data.len() - 10;
        data[last] ^= 0xFF; // a flipped bit in the third record's payload
        std::fs::write(&seg, &data).unwrap();
        let s = Spool::open(c).unwrap();
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![0, 1]);
        assert!(s.counters().truncated_bytes > 100);
    }

    #[test]
    fn a_lost_ack_tail_means_a_resend_never_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        for seq in 0..3 {
            s.append(&frame(seq, 100)).unwrap();
        }
        s.ack(0).unwrap();
        s.ack(1).unwrap();
        drop(s);
        // The second ack entry was torn by a crash.
        let acks = dir.path().join("acks.log");
        let data = std::fs::read(&acks).unwrap();
        std::fs::write(&acks, &data[..12]).unwrap();
        let mut s = Spool::open(c.clone()).unwrap();
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![1, 2]);
        // The log was rewritten whole, so later acks stay aligned.
        s.ack(2).unwrap();
        drop(s);
        let s = Spool::open(c).unwrap();
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_full_spool_applies_its_policy_and_counts() {
        // Sequence 0 encodes 2 bytes shorter (protobuf omits zero); size by the others.
        let record = 8 + 16 + frame(1, 200).encoded_len() as u64;
        for policy in [
            FullPolicy::DropNewest,
            FullPolicy::Block,
            FullPolicy::DropOldest,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = cfg(dir.path(), 6 * record, policy);
            c.segment_bytes = 2 * record;
            let mut s = Spool::open(c).unwrap();
            let outcomes: Vec<Appended> =
                (0..8).map(|q| s.append(&frame(q, 200)).unwrap()).collect();
            assert!(s.disk_bytes() <= 6 * record, "{policy:?}");
            let waiting: Vec<u64> = s.waiting_from(0).collect();
            match policy {
                FullPolicy::DropNewest => {
                    assert_eq!(waiting, (0..6).collect::<Vec<_>>());
                    assert_eq!(s.counters().dropped_newest, 2);
                    assert_eq!(outcomes[7], Appended::DroppedNewest);
                }
                FullPolicy::Block => {
                    assert_eq!(waiting, (0..6).collect::<Vec<_>>());
                    assert_eq!(outcomes[6], Appended::Full);
                    s.ack(0).unwrap();
                    s.ack(1).unwrap();
                    assert_eq!(s.append(&frame(6, 200)).unwrap(), Appended::Stored);
                }
                FullPolicy::DropOldest => {
                    assert_eq!(waiting, (2..8).collect::<Vec<_>>());
                    assert_eq!(s.counters().dropped_oldest, 2);
                    assert!(outcomes.iter().all(|o| *o == Appended::Stored));
                }
            }
        }
    }

    #[test]
    fn expired_frames_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        c.ttl = Some(Duration::from_secs(60));
        let mut s = Spool::open(c).unwrap();
        let mut old = frame(0, 10);
        old.captured_at = Some(prost_types::Timestamp::from(
            SystemTime::now() - Duration::from_secs(120),
        ));
        s.append(&old).unwrap();
        s.append(&frame(1, 10)).unwrap();
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.counters().expired, 1);
        assert!(s.oldest_age().unwrap() < Duration::from_secs(60));
    }

    #[test]
    fn one_process_at_a_time_and_peek_reads_without_touching() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, FullPolicy::Block);
        let mut s = Spool::open(c.clone()).unwrap();
        s.append(&frame(1, 10)).unwrap();
        s.append(&frame(2, 10)).unwrap();
        s.ack(1).unwrap();
        let e = Spool::open(c.clone()).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "spool {} is in use by another process",
                dir.path().display()
            )
        );
        let (waiting, bytes) = peek(dir.path()).unwrap();
        assert_eq!(waiting.into_iter().collect::<Vec<_>>(), vec![2]);
        assert!(bytes > 10);
        drop(s);
        assert_eq!(Spool::open(c).unwrap().len(), 1);
    }

    /// A spool on an in-memory disk.
    fn open_fault(fs: &FaultFs, policy: FullPolicy) -> Spool {
        let c = cfg(Path::new("/spool"), 1 << 20, policy);
        Spool::open_with(c, Arc::new(fs.clone())).unwrap()
    }

    #[test]
    fn appends_never_continue_in_a_segment_of_an_earlier_run() {
        let fs = FaultFs::new();
        let mut s = open_fault(&fs, FullPolicy::Block);
        s.append(&frame(1, 10)).unwrap();
        drop(s);
        let mut s = open_fault(&fs, FullPolicy::Block);
        s.append(&frame(2, 10)).unwrap();
        let segs: Vec<String> = fs
            .list(Path::new("/spool"))
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .collect();
        assert_eq!(segs, vec![segment_name(1), segment_name(2)]);
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![1, 2]);
    }

    fn segment_name(first: u64) -> String {
        format!("{first:020}.seg")
    }

    #[test]
    fn an_ack_that_does_not_fit_is_lost_without_misaligning_later_ones() {
        let fs = FaultFs::new();
        let mut s = open_fault(&fs, FullPolicy::Block);
        for seq in 1..=4 {
            s.append(&frame(seq, 10)).unwrap();
        }
        // Room for 3 bytes of the 8-byte entry: a partial entry, cut off before the next.
        fs.set_capacity(Some(fs.used_bytes() + 3));
        s.ack(1).unwrap();
        assert!(!s.is_waiting(1));
        fs.set_capacity(None);
        s.ack(2).unwrap();
        s.ack(3).unwrap();
        assert_eq!(fs.read(Path::new("/spool/acks.log")).unwrap().len(), 16);
        drop(s);
        let s = open_fault(&fs, FullPolicy::Block);
        // The lost ack means a resend of frame 1; frames 2 and 3 stay acknowledged.
        assert_eq!(s.waiting_from(0).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn a_frame_larger_than_the_budget_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(cfg(dir.path(), 100, FullPolicy::DropOldest)).unwrap();
        let e = s.append(&frame(0, 500)).unwrap_err().to_string();
        assert!(
            e.starts_with("frame of ")
                && e.ends_with(" bytes exceeds the spool's budget of 100 bytes"),
            "{e}"
        );
    }
}
