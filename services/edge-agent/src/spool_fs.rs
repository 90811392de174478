//! The file system under the disk spool ([`crate::spool`]). Every read, write, sync,
//! listing, removal, rename and lock the spool does goes through [`SpoolFs`], so that
//! tests can put the spool on [`FaultFs`], an in-memory file system that loses power and
//! fails on demand, and check what survives. [`RealFs`] is `std::fs`, what the agent
//! runs on.
//!
//! The operations are the few the spool needs, named after what they guarantee: nothing
//! is durable until [`SpoolFile::sync_data`] / [`SpoolFs::sync_file`] (file contents) or
//! [`SpoolFs::sync_dir`] (creations, removals and renames in a folder) returned `Ok`.

pub mod fault;

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub use fault::FaultFs;

/// The file operations of the spool. Paths are the spool's own (its folder joined with a
/// file name); errors are plain `std::io` errors, which the spool wraps with the path.
pub trait SpoolFs: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock `path` (creating the lock file if needed); `None` when
    /// another holder has it. The lock lasts as long as the returned value.
    fn try_lock(&self, path: &Path) -> io::Result<Option<SpoolLock>>;
    /// Opens `path` for appending, creating it (empty) when `create` is set.
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn SpoolFile>>;
    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// `len` bytes from `offset` (an error if the file is shorter).
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Creates or replaces `path` with `data`, without syncing.
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes the contents of `path` durable.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Cuts `path` to `len` bytes, without syncing.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes `path` (durable only after [`SpoolFs::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable only after [`SpoolFs::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names of the entries of `dir` (those that are valid UTF-8).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the entries of `dir` (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending.
pub trait SpoolFile: Send {
    /// Appends all of `data` at the end of the file (on error, a prefix may be written).
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// A held spool lock: dropping it releases the lock.
pub struct SpoolLock {
    _held: Box<dyn Send>,
}

impl SpoolLock {
    /// A lock that lasts as long as `held` (a locked file, a guard).
    pub fn new(held: impl Send + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for SpoolLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpoolLock")
    }
}

/// The real file system (`std::fs`): what the agent uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl SpoolFile for RealFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl SpoolFs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<SpoolLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SpoolLock::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn SpoolFile>> {
        let file = OpenOptions::new().create(create).append(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
