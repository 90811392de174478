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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use visionfleet_proto::v1::Frame;

/// Header bytes before each record body.
const HEADER: u64 = 8;
/// Body bytes before the frame.
const BODY_PREFIX: usize = 16;
/// No record is larger (a frame is limited far below this); a larger length is corruption.
const MAX_RECORD: u32 = 256 << 20;

/// What to do when a new frame does not fit in the byte budget.
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
    /// Not stored: the spool is full and the policy is drop-newest.
    DroppedNewest,
    /// Not stored: the spool is full and the policy is block; try again after acks.
    Full,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing the spool failed. After a failed write or sync nothing is
    /// acknowledged or deleted on its account.
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
    bytes: u64,
    /// Waiting records in it.
    waiting: usize,
}

/// The spool. Not thread-safe by itself: the agent keeps it behind a mutex.
pub struct Spool {
    cfg: SpoolConfig,
    segments: BTreeMap<u64, Segment>,
    waiting: BTreeMap<u64, Loc>,
    active: Option<File>,
    acks: File,
    acks_path: PathBuf,
    acks_written: u64,
    last_sequence: Option<u64>,
    counters: SpoolCounters,
    /// Held (locked) while the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the spool, recovering from a crash: torn or corrupt tails are
    /// cut off, acknowledged frames are forgotten, the rest wait to be sent again.
    pub fn open(cfg: SpoolConfig) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        // One process per spool: a second one would cut "torn" tails that are being
        // written and lose acks to a rewritten log.
        let lock_path = cfg.dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(cfg.dir.clone()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let acks_path = cfg.dir.join("acks.log");
        let acked = read_acks(&acks_path)?;
        let mut spool = Spool {
            segments: BTreeMap::new(),
            waiting: BTreeMap::new(),
            active: None,
            acks: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&acks_path)
                .map_err(io(&acks_path))?,
            acks_written: acked.len() as u64,
            acks_path,
            last_sequence: None,
            counters: SpoolCounters::default(),
            _lock: lock,
            cfg,
        };
        // Acks of frames in each segment: what the rewritten ack log keeps (those of
        // segments deleted below are dropped with them).
        let mut handled: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in segment_ids(&spool.cfg.dir)? {
            let h = spool.recover_segment(id, &acked)?;
            handled.insert(id, h);
        }
        // Forget fully handled segments, keeping the newest for its sequence numbers.
        spool.delete_finished_segments()?;
        if let Some((&id, seg)) = spool.segments.iter().next_back() {
            let f = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(io(&seg.path))?;
            spool.active = Some(f);
            spool.last_sequence = Some(spool.last_sequence.unwrap_or(id).max(id));
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
    /// already handled (acknowledged or dropped).
    fn recover_segment(&mut self, id: u64, acked: &BTreeSet<u64>) -> Result<Vec<u64>, SpoolError> {
        let path = segment_path(&self.cfg.dir, id);
        let scanned = scan_segment(&path)?;
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
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(scanned.clean).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            self.counters.truncated_bytes += scanned.total - scanned.clean;
        }
        self.segments.insert(
            id,
            Segment {
                path,
                bytes: scanned.clean,
                waiting,
            },
        );
        Ok(handled)
    }

    /// The sequence number to give the next frame: one past the last ever spooled, and at
    /// least `floor`.
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
        let budget = budget.min(self.cfg.max_bytes);
        let mut body = Vec::with_capacity(BODY_PREFIX + frame.encoded_len());
        body.extend_from_slice(&frame.sequence.to_le_bytes());
        let captured_ms = frame.captured_at.as_ref().map_or_else(now_ms, |t| {
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
        });
        body.extend_from_slice(&captured_ms.to_le_bytes());
        frame.encode(&mut body).expect("a Vec grows as needed");
        let size = HEADER + body.len() as u64;
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
            match self.cfg.policy {
                FullPolicy::DropNewest => {
                    self.counters.dropped_newest += 1;
                    return Ok(Appended::DroppedNewest);
                }
                FullPolicy::Block => return Ok(Appended::Full),
                FullPolicy::DropOldest => {
                    if !self.drop_oldest_segment()? {
                        // Only the newest segment is left and it holds everything: start
                        // a new one so the old one can go.
                        self.roll(frame.sequence)?;
                        if !self.drop_oldest_segment()? {
                            // Nothing of this lane is left to drop: the room went to
                            // the other lane.
                            self.counters.dropped_newest += 1;
                            return Ok(Appended::DroppedNewest);
                        }
                    }
                }
            }
        }
        let needs_roll = self
            .segments
            .values()
            .next_back()
            .is_none_or(|s| s.bytes + size > self.cfg.segment_bytes && s.bytes > 0);
        if needs_roll {
            self.roll(frame.sequence)?;
        }
        let (&id, seg) = self
            .segments
            .iter_mut()
            .next_back()
            .expect("a segment exists after roll");
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        let f = self.active.as_mut().expect("the newest segment is open");
        // Written and synced before the frame counts as stored; on failure nothing is
        // recorded, and the partial bytes are cut off on the next open.
        f.write_all(&record)
            .and_then(|()| f.sync_data())
            .map_err(io(&seg.path))?;
        self.waiting.insert(
            frame.sequence,
            Loc {
                segment: id,
                offset: seg.bytes,
                len: size as u32,
                captured_ms,
            },
        );
        seg.bytes += size;
        seg.waiting += 1;
        self.last_sequence = Some(frame.sequence);
        self.counters.appended += 1;
        Ok(Appended::Stored)
    }

    /// Starts a new segment named after the first sequence it will hold.
    fn roll(&mut self, first_sequence: u64) -> Result<(), SpoolError> {
        let path = segment_path(&self.cfg.dir, first_sequence);
        if self.segments.contains_key(&first_sequence) {
            return Ok(());
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // The new file's directory entry must survive a power cut before records in it
        // count as stored.
        sync_dir(&self.cfg.dir)?;
        self.active = Some(f);
        self.segments.insert(
            first_sequence,
            Segment {
                path,
                bytes: 0,
                waiting: 0,
            },
        );
        self.delete_finished_segments()
    }

    /// Drops every waiting frame of the oldest segment (not the newest). Returns whether
    /// one was dropped.
    fn drop_oldest_segment(&mut self) -> Result<bool, SpoolError> {
        if self.segments.len() < 2 {
            return Ok(false);
        }
        let oldest = *self.segments.keys().next().expect("two segments");
        let victims: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, l)| l.segment == oldest)
            .map(|(&s, _)| s)
            .collect();
        self.counters.dropped_oldest += victims.len() as u64;
        for s in victims {
            self.forget(s)?;
        }
        self.delete_finished_segments()?;
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
            self.forget(s)?;
        }
        self.delete_finished_segments()?;
        Ok(old.len() as u64)
    }

    /// The pod acknowledged (or permanently rejected) frame `sequence`: forget it.
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        if self.waiting.contains_key(&sequence) {
            self.forget(sequence)?;
            self.counters.acknowledged += 1;
            self.delete_finished_segments()?;
        }
        Ok(())
    }

    fn forget(&mut self, sequence: u64) -> Result<(), SpoolError> {
        let Some(loc) = self.waiting.remove(&sequence) else {
            return Ok(());
        };
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.waiting -= 1;
        }
        self.acks
            .write_all(&sequence.to_le_bytes())
            .map_err(io(&self.acks_path))?;
        self.acks_written += 1;
        Ok(())
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
            let seg = self.segments.remove(id).expect("listed above");
            std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
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
        let mut buf = Vec::with_capacity(live.len() * 8);
        for s in live {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(&tmp, &buf)
            .and_then(|()| File::open(&tmp)?.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.acks_path).map_err(io(&self.acks_path))?;
        sync_dir(&self.cfg.dir)?;
        self.acks = OpenOptions::new()
            .append(true)
            .open(&self.acks_path)
            .map_err(io(&self.acks_path))?;
        self.acks_written = live.len() as u64;
        Ok(())
    }

    /// Sequences in live segments that are no longer waiting.
    fn live_handled_sequences(&self) -> Result<Vec<u64>, SpoolError> {
        let mut out = Vec::new();
        for seg in self.segments.values() {
            for r in scan_segment(&seg.path)?.records {
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
        let mut f = File::open(&seg.path).map_err(io(&seg.path))?;
        let mut record = vec![0u8; loc.len as usize];
        f.seek(SeekFrom::Start(loc.offset))
            .and_then(|_| f.read_exact(&mut record))
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
    let acked = read_acks(&dir.join("acks.log"))?;
    let mut waiting = BTreeSet::new();
    let mut bytes = 0;
    for id in segment_ids(dir)? {
        let scanned = scan_segment(&segment_path(dir, id))?;
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

fn segment_path(dir: &Path, first_sequence: u64) -> PathBuf {
    dir.join(format!("{first_sequence:020}.seg"))
}

/// Segment ids (first sequence numbers) in `dir`, oldest first.
fn segment_ids(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
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

fn scan_segment(path: &Path) -> Result<ScannedSegment, SpoolError> {
    let mut data = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut data)) {
        Ok(_) => {}
        // Deleted by its agent since the folder was listed (peek): nothing waits there.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
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

fn read_acks(path: &Path) -> Result<BTreeSet<u64>, SpoolError> {
    match std::fs::read(path) {
        // A torn last entry (fewer than 8 bytes) is ignored: that frame is resent.
        Ok(data) => Ok(data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(io(path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
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
