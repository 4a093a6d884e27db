//! The filesystem seam: every file operation of the log goes through [`Filesystem`], so recovery
//! tests can inject faults (a full disk, a failing fsync, a torn write) without a real broken disk,
//! and the privacy checks (modes, owners, symlinks) run the same on a simulated tree.
//! [`StdFilesystem`] is the real one; [`MemFilesystem`] keeps everything in memory, with faults to
//! inject, for tests and the fuzz target.
//!
//! The contract every implementation keeps (what makes spilled data private at rest): directories
//! it creates are private to their owner (`0700` on Unix) and so are files (`0600`), whatever the
//! umask; a file is never opened through a symlink at its path (`O_NOFOLLOW`), and a path that is
//! not a regular file is an error, never read, written or truncated.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

mod disk;
mod mem;

pub use disk::StdFilesystem;
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

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only seen without following it).
    Symlink,
    /// Anything else: a fifo, a socket, a device.
    Other,
}

/// What the log checks about a path before it trusts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// What the entry is.
    pub kind: FileKind,
    /// Its length in bytes.
    pub len: u64,
    /// Its permission bits (`mode & 0o7777`), where the platform has them.
    pub mode: Option<u32>,
    /// Its owner's user id, where the platform has one.
    pub uid: Option<u32>,
}

/// The file operations a spill log uses. See the module doc for the privacy contract.
pub trait Filesystem: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and its missing parents, each private to its owner (`0700`), whatever the
    /// umask. Existing directories are left as they are.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// What `path` is, following symlinks (the spill directory itself may be a link).
    fn metadata(&self, path: &Path) -> io::Result<FileInfo>;
    /// What `path` is, without following a symlink at `path`.
    fn symlink_metadata(&self, path: &Path) -> io::Result<FileInfo>;
    /// The user id the process acts as (its effective uid), where the platform has one.
    fn process_uid(&self) -> Option<u32>;
    /// Makes a regular file readable and writable by its owner only (`0600`).
    fn set_private(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens a regular file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Opens a regular file for appending, creating it (`0600`) if needed.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// The first `len` bytes of a sealed segment (one the log never writes again) in memory, for the
    /// reader to check and decode in place; `Ok(None)` to have it read through
    /// [`open_read`](Self::open_read) instead. The default maps nothing, so a fault-injecting
    /// filesystem sees every read.
    fn map_sealed(&self, path: &Path, len: u64) -> io::Result<Option<SegmentBytes>> {
        let _ = (path, len);
        Ok(None)
    }
    /// Reads a whole (small) regular file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` with `bytes` atomically and durably: a new private temporary file (created
    /// exclusively, never through a link), fsync, rename over `path`, fsync of the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Cuts a regular file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Deletes a file (a link itself, never its target).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the regular file `path` (created, `0600`, if missing) without
    /// waiting: an error of kind [`io::ErrorKind::WouldBlock`] means someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The error for a path that is a symlink or not a regular file where the log needs one.
pub(crate) fn not_regular(path: &Path, kind: FileKind) -> io::Error {
    let what = match kind {
        FileKind::Symlink => "a symlink",
        FileKind::Dir => "a directory",
        FileKind::File => "a regular file",
        FileKind::Other => "not a regular file (a fifo, socket or device)",
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "`{}` is {what}: the spill log only opens regular files, never through a link",
            path.display()
        ),
    )
}
