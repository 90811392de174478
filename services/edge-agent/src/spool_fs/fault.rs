//! [`FaultFs`], the test file system: the spool in memory, with power loss and disk
//! errors on demand, modelled the way RocksDB's `FaultInjectionTestFS` models them.
//!
//! - Every file has its synced contents and its current contents; a sync makes the
//!   current contents the synced ones. Every folder has a synced and a current set of
//!   entries (name to file); a folder sync makes the current set the synced one.
//! - [`FaultFs::crash`] is a power cut: every folder goes back to its synced entries
//!   (files created since the last folder sync vanish, files removed come back, renames
//!   are undone) and every file to its synced contents, optionally keeping a random-length
//!   prefix of the unsynced tail (a torn write), drawn from a seed. Locks are released and
//!   handles opened before the cut stop working (the process died with the power).
//! - [`FaultFs::cut_power_after`] makes the power go out in the middle of whatever the
//!   spool is doing: after that many more changes (writes, syncs, creations, removals,
//!   renames, truncations), every operation fails, as if the process had died there; the
//!   test then calls `crash`.
//! - [`FaultFs::fail_next_syncs`] / [`FaultFs::fail_all_syncs`]: syncs (of files and of
//!   folders) fail with EIO and make nothing durable.
//! - [`FaultFs::set_capacity`]: writes beyond that many bytes (the current contents of
//!   all files) write what fits and fail with ENOSPC; `None` lifts the limit.
//!
//! Folders themselves are durable once created (the spool creates its folder once); the
//! lock is in memory only (no LOCK file appears).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{SpoolFile, SpoolFs, SpoolLock};

/// EIO.
const EIO: i32 = 5;
/// ENOSPC.
const ENOSPC: i32 = 28;

/// An in-memory file system that models power loss and disk errors (see the module
/// documentation). Clones share the same disk, so a test keeps one to inject faults while
/// the spool uses another.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<u64, Contents>,
    dirs: BTreeMap<PathBuf, Entries>,
    next_file: u64,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash: handles and locks from before it are dead.
    boot: u64,
    capacity: Option<u64>,
    sync_faults: SyncFaults,
    /// Changes left before the power goes out (`None`: it stays on).
    power_left: Option<u64>,
    changes: u64,
}

#[derive(Default)]
struct Contents {
    current: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default)]
struct Entries {
    current: BTreeMap<String, u64>,
    synced: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum SyncFaults {
    #[default]
    None,
    Next(u64),
    All,
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("FaultFs")
            .field("files", &s.files.len())
            .field("used", &s.used())
            .field("capacity", &s.capacity)
            .field("sync_faults", &s.sync_faults)
            .field("power_left", &s.power_left)
            .finish()
    }
}

impl FaultFs {
    /// An empty disk, powered, without faults.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }

    /// Power loss: folders and files go back to what was synced, keeping, when
    /// `torn_seed` is given, a random prefix of each file's unsynced tail. Releases every
    /// lock, kills every open handle and turns the power back on. Injected sync faults and
    /// the capacity stay.
    pub fn crash(&self, torn_seed: Option<u64>) {
        let mut s = self.state();
        let mut tear = torn_seed.map(Tear::new);
        for entries in s.dirs.values_mut() {
            entries.current = entries.synced.clone();
        }
        let linked: BTreeSet<u64> = s
            .dirs
            .values()
            .flat_map(|e| e.synced.values().copied())
            .collect();
        s.files.retain(|id, _| linked.contains(id));
        for contents in s.files.values_mut() {
            contents.lose_power(tear.as_mut());
        }
        s.locks.clear();
        s.boot += 1;
        s.power_left = None;
    }

    /// The power goes out after `changes` more changes: that many succeed, then every
    /// operation fails until [`FaultFs::crash`].
    pub fn cut_power_after(&self, changes: u64) {
        self.state().power_left = Some(changes);
    }

    /// Whether the power is out (operations fail until [`FaultFs::crash`]).
    pub fn is_dark(&self) -> bool {
        self.state().power_left == Some(0)
    }

    /// Changes (writes, syncs, creations, removals, renames, truncations) so far.
    pub fn changes(&self) -> u64 {
        self.state().changes
    }

    /// The next `n` syncs (of files or folders) fail with EIO.
    pub fn fail_next_syncs(&self, n: u64) {
        self.state().sync_faults = if n == 0 {
            SyncFaults::None
        } else {
            SyncFaults::Next(n)
        };
    }

    /// Every sync fails with EIO until [`FaultFs::heal_syncs`].
    pub fn fail_all_syncs(&self) {
        self.state().sync_faults = SyncFaults::All;
    }

    /// Syncs succeed again.
    pub fn heal_syncs(&self) {
        self.state().sync_faults = SyncFaults::None;
    }

    /// Writes beyond `bytes` in all (current contents of all files) fail with ENOSPC;
    /// `None` lifts the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Bytes in use: the current contents of all files.
    pub fn used_bytes(&self) -> u64 {
        self.state().used()
    }
}

impl Contents {
    /// What a power cut leaves of the file.
    fn lose_power(&mut self, tear: Option<&mut Tear>) {
        let synced = self.synced.len();
        let extends = self.current.len() > synced && self.current.starts_with(&self.synced);
        let kept = match tear {
            Some(t) if extends => t.kept(self.current.len() - synced),
            _ => 0,
        };
        self.current.truncate(synced + kept);
        if kept == 0 {
            self.current.clone_from(&self.synced);
        }
        self.synced.clone_from(&self.current);
    }
}

/// Draws how much of an unsynced tail survives: nothing, all of it or a random part,
/// each a third of the time, so that both edges are as common as the middle.
struct Tear(u64);

impl Tear {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn kept(&mut self, tail: usize) -> usize {
        let tail = tail as u64;
        let kept = match self.next() % 3 {
            0 => 0,
            1 => tail,
            _ => self.next() % (tail + 1),
        };
        kept as usize
    }
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// A path's folder and name.
fn split(path: &Path) -> io::Result<(&Path, String)> {
    let name = path.file_name().and_then(|n| n.to_str());
    match (path.parent(), name) {
        (Some(dir), Some(name)) => Ok((dir, name.to_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )),
    }
}

impl State {
    /// Fails once the power is out.
    fn powered(&self) -> io::Result<()> {
        match self.power_left {
            Some(0) => Err(power_lost()),
            _ => Ok(()),
        }
    }

    /// Counts one change, or fails when the power is out.
    fn change(&mut self) -> io::Result<()> {
        self.powered()?;
        if let Some(left) = self.power_left.as_mut() {
            *left -= 1;
        }
        self.changes += 1;
        Ok(())
    }

    /// Consumes one injected sync fault, if any.
    fn sync_fault(&mut self) -> io::Result<()> {
        match self.sync_faults {
            SyncFaults::None => return Ok(()),
            SyncFaults::Next(1) => self.sync_faults = SyncFaults::None,
            SyncFaults::Next(n) => self.sync_faults = SyncFaults::Next(n - 1),
            SyncFaults::All => {}
        }
        Err(io::Error::from_raw_os_error(EIO))
    }

    fn used(&self) -> u64 {
        let linked: BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|e| e.current.values().copied())
            .collect();
        linked
            .iter()
            .filter_map(|id| self.files.get(id))
            .map(|c| c.current.len() as u64)
            .sum()
    }

    fn entries(&self, dir: &Path) -> io::Result<&Entries> {
        self.dirs.get(dir).ok_or_else(|| not_found(dir))
    }

    fn entries_mut(&mut self, dir: &Path) -> io::Result<&mut Entries> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    /// The file at `path` (current entries).
    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.entries(dir)?
            .current
            .get(&name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn contents(&self, path: &Path) -> io::Result<&Contents> {
        let id = self.lookup(path)?;
        self.files.get(&id).ok_or_else(|| not_found(path))
    }

    fn contents_mut(&mut self, path: &Path) -> io::Result<&mut Contents> {
        let id = self.lookup(path)?;
        self.files.get_mut(&id).ok_or_else(|| not_found(path))
    }

    /// A new empty file at `path` (counted as a change).
    fn create(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.entries(dir)?;
        self.change()?;
        let id = self.next_file;
        self.next_file += 1;
        self.files.insert(id, Contents::default());
        self.entries_mut(dir)?.current.insert(name, id);
        Ok(id)
    }

    /// Appends to file `id` what fits in the capacity; ENOSPC when not all of it did.
    fn append(&mut self, id: u64, data: &[u8]) -> io::Result<()> {
        self.change()?;
        let room = self
            .capacity
            .map_or(u64::MAX, |c| c.saturating_sub(self.used()));
        let fits = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let contents = self
            .files
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        contents.current.extend_from_slice(&data[..fits]);
        if fits < data.len() {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}

/// A handle of a [`FaultFs`] file, valid until the next crash.
struct FaultFile {
    state: Arc<Mutex<State>>,
    id: u64,
    boot: u64,
}

impl FaultFile {
    fn alive(&self, s: &State) -> io::Result<()> {
        s.powered()?;
        if s.boot != self.boot {
            return Err(io::Error::other("handle from before a power loss"));
        }
        Ok(())
    }
}

impl SpoolFile for FaultFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        self.alive(&s)?;
        s.append(self.id, data)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = lock_state(&self.state);
        self.alive(&s)?;
        s.change()?;
        s.sync_fault()?;
        if let Some(c) = s.files.get_mut(&self.id) {
            c.synced.clone_from(&c.current);
        }
        Ok(())
    }
}

/// A [`FaultFs`] lock, released on drop unless a crash released it already.
struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    boot: u64,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = lock_state(&self.state);
        if s.boot == self.boot {
            s.locks.remove(&self.path);
        }
    }
}

impl SpoolFs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.powered()?;
        for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
            s.dirs.entry(d.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<SpoolLock>> {
        let mut s = self.state();
        s.powered()?;
        if !s.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(SpoolLock::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            boot: s.boot,
        })))
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn SpoolFile>> {
        let mut s = self.state();
        s.powered()?;
        let id = match s.lookup(path) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => s.create(path)?,
            Err(e) => return Err(e),
        };
        Ok(Box::new(FaultFile {
            state: self.state.clone(),
            id,
            boot: s.boot,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        s.powered()?;
        Ok(s.contents(path)?.current.clone())
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = self.state();
        s.powered()?;
        let data = &s.contents(path)?.current;
        usize::try_from(offset)
            .ok()
            .and_then(|start| data.get(start..start.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        s.powered()?;
        let id = match s.lookup(path) {
            Ok(id) => {
                s.change()?;
                s.contents_mut(path)?.current.clear();
                id
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => s.create(path)?,
            Err(e) => return Err(e),
        };
        s.append(id, data)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.lookup(path)?;
        s.change()?;
        s.sync_fault()?;
        let c = s.contents_mut(path)?;
        c.synced.clone_from(&c.current);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state();
        s.lookup(path)?;
        s.change()?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        s.contents_mut(path)?.current.resize(len, 0);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.lookup(path)?;
        s.change()?;
        let (dir, name) = split(path)?;
        s.entries_mut(dir)?.current.remove(&name);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        let id = s.lookup(from)?;
        let (to_dir, to_name) = split(to)?;
        s.entries(to_dir)?;
        s.change()?;
        let (from_dir, from_name) = split(from)?;
        s.entries_mut(from_dir)?.current.remove(&from_name);
        s.entries_mut(to_dir)?.current.insert(to_name, id);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        s.powered()?;
        Ok(s.entries(dir)?.current.keys().cloned().collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.entries(dir)?;
        s.change()?;
        s.sync_fault()?;
        let e = s.entries_mut(dir)?;
        e.synced.clone_from(&e.current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new();
        let dir = PathBuf::from("/spool");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    /// A file with `synced` durable (its entry too) and `unsynced` after it.
    fn file(fs: &FaultFs, path: &Path, synced: &[u8], unsynced: &[u8]) {
        let mut f = fs.open_append(path, true).unwrap();
        f.write_all(synced).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(path.parent().unwrap()).unwrap();
        f.write_all(unsynced).unwrap();
    }

    #[test]
    fn synced_data_survives_a_crash_and_unsynced_data_does_not() {
        let (fs, dir) = disk();
        let path = dir.join("a");
        file(&fs, &path, b"durable", b" lost");
        assert_eq!(fs.read(&path).unwrap(), b"durable lost");
        fs.crash(None);
        assert_eq!(fs.read(&path).unwrap(), b"durable");
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_of_the_unsynced_tail() {
        let mut lengths = BTreeSet::new();
        for seed in 1..40 {
            let (fs, dir) = disk();
            let path = dir.join("a");
            file(&fs, &path, b"durable", b"0123456789");
            fs.crash(Some(seed));
            let after = fs.read(&path).unwrap();
            assert!(b"durable0123456789".starts_with(&after), "{after:?}");
            assert!(after.len() >= 7);
            lengths.insert(after.len());
        }
        assert!(lengths.contains(&7) && lengths.contains(&17) && lengths.len() > 3);
    }

    #[test]
    fn entries_are_durable_only_after_a_folder_sync() {
        let (fs, dir) = disk();
        let kept = dir.join("kept");
        file(&fs, &kept, b"k", b"");
        file(&fs, &dir.join("b"), b"b", b"");
        // Synced data, but the folder was not synced after the creation: it vanishes.
        let mut f = fs.open_append(&dir.join("new"), true).unwrap();
        f.write_all(b"n").unwrap();
        f.sync_data().unwrap();
        // Removed and renamed without a folder sync: undone.
        fs.remove(&kept).unwrap();
        fs.rename(&dir.join("b"), &dir.join("c")).unwrap();
        assert_eq!(fs.list(&dir).unwrap(), vec!["c", "new"]);
        fs.crash(None);
        assert_eq!(fs.list(&dir).unwrap(), vec!["b", "kept"]);
        assert_eq!(fs.read(&kept).unwrap(), b"k");
    }

    #[test]
    fn failed_syncs_report_eio_and_make_nothing_durable() {
        let (fs, dir) = disk();
        let path = dir.join("a");
        file(&fs, &path, b"d", b"x");
        fs.fail_next_syncs(2);
        let mut f = fs.open_append(&path, false).unwrap();
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        assert_eq!(fs.sync_dir(&dir).unwrap_err().raw_os_error(), Some(5));
        fs.crash(None);
        assert_eq!(fs.read(&path).unwrap(), b"d");
        fs.fail_all_syncs();
        assert!(fs.sync_file(&path).is_err() && fs.sync_file(&path).is_err());
        fs.heal_syncs();
        fs.sync_file(&path).unwrap();
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_refuses_the_rest() {
        let (fs, dir) = disk();
        fs.set_capacity(Some(10));
        let path = dir.join("a");
        let mut f = fs.open_append(&path, true).unwrap();
        f.write_all(b"123456").unwrap();
        let e = f.write_all(b"789abc").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.read(&path).unwrap(), b"123456789a");
        fs.truncate(&path, 6).unwrap();
        assert_eq!(fs.used_bytes(), 6);
        fs.set_capacity(None);
        f.write_all(b"789abc").unwrap();
        assert_eq!(fs.used_bytes(), 12);
    }

    #[test]
    fn locks_are_exclusive_and_released_by_drop_or_crash() {
        let (fs, dir) = disk();
        let lock = dir.join("LOCK");
        let held = fs.try_lock(&lock).unwrap();
        assert!(held.is_some());
        assert!(fs.try_lock(&lock).unwrap().is_none());
        drop(held);
        let held = fs.try_lock(&lock).unwrap();
        assert!(held.is_some());
        fs.crash(None);
        let again = fs.try_lock(&lock).unwrap();
        assert!(again.is_some());
        // The dead holder's release does not free the new holder's lock.
        drop(held);
        assert!(fs.try_lock(&lock).unwrap().is_none());
    }

    #[test]
    fn after_the_power_cut_everything_fails_until_the_crash() {
        let (fs, dir) = disk();
        let path = dir.join("a");
        let mut f = fs.open_append(&path, true).unwrap();
        fs.cut_power_after(1);
        f.write_all(b"x").unwrap();
        assert!(fs.is_dark());
        assert!(f.sync_data().is_err() && fs.read(&path).is_err() && fs.list(&dir).is_err());
        fs.crash(None);
        assert!(!fs.is_dark());
        // Created, never folder-synced: gone; the old handle is dead.
        assert!(fs.list(&dir).unwrap().is_empty());
        assert!(f.write_all(b"y").is_err());
    }
}
