//! The filesystem seam: every file operation of the log goes through [`Filesystem`], so recovery
//! tests can inject faults (a full disk, a failing fsync, a torn write) without a real broken disk.
//! [`StdFilesystem`] is the real one; [`MemFilesystem`] keeps everything in memory, with faults to
//! inject, for tests and the fuzz target.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

mod mem;

pub use mem::MemFilesystem;

/// A file opened for reading.
pub trait ReadFile: Read + Seek + Send {}
impl<F: Read + Seek + Send> ReadFile for F {}

/// A file opened for appending.
pub trait AppendFile: Write + Send {
    /// Makes written data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

impl AppendFile for File {
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// The bytes of a sealed segment held in memory: a read-only memory map for [`StdFilesystem`].
pub type SegmentBytes = Box<dyn AsRef<[u8]> + Send>;

/// A held directory lock, released on drop.
pub trait DirLock: Send + Sync + fmt::Debug {}
impl DirLock for File {}

/// The file operations a spill log uses.
pub trait Filesystem: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens a file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Opens a file for appending, creating it if needed.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// The first `len` bytes of a sealed segment (one the log never writes again) in memory, for the
    /// reader to check and decode in place; `Ok(None)` to have it read through
    /// [`open_read`](Self::open_read) instead. The default maps nothing, so a fault-injecting
    /// filesystem sees every read.
    fn map_sealed(&self, path: &Path, len: u64) -> io::Result<Option<SegmentBytes>> {
        let _ = (path, len);
        Ok(None)
    }
    /// Reads a whole (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` with `bytes` atomically and durably (temporary file, fsync, rename, fsync of
    /// the directory).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// The length of a file.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Cuts a file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) without waiting: an error of kind
    /// [`io::ErrorKind::WouldBlock`] means someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real filesystem (`std::fs`; the lock is `flock` through [`File::try_lock`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFilesystem;

impl Filesystem for StdFilesystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(path)?))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))
    }

    /// Maps the segment read-only (`mmap`, with sequential read-ahead advice), or `Ok(None)` when
    /// the file is shorter than `len` (the read path then reports it) or `len` is 0.
    fn map_sealed(&self, path: &Path, len: u64) -> io::Result<Option<SegmentBytes>> {
        let file = File::open(path)?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len == 0 || file.metadata()?.len() < len as u64 {
            return Ok(None);
        }
        // SAFETY: a map is sound while nobody changes or truncates the mapped bytes (a change
        // breaks the `&[u8]` it hands out; an access past a truncated end raises SIGBUS). Here:
        // - the log only maps a *sealed* segment, one that is not the last: it only ever appends
        //   to the last segment, so the bytes never change;
        // - it truncates only the last segment (back to its published length after a failed
        //   write) and, at open, the last segment of the previous run, before any reader exists;
        //   deleting an acknowledged segment only unlinks its name, the map keeps the file alive;
        // - `len` is checked against the file's length just above, so the map ends inside it;
        // - another weir process cannot open the directory: the log holds an exclusive `flock`.
        // What remains is a process that ignores that lock and shrinks a sealed segment while it is
        // read: documented at `SpillConfig::mapped_reads`, which is off unless a user turns it on.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
        // Only advice: the kernel reads ahead further for a cold file.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Some(Box::new(map)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }
}
