//! [`MemFilesystem`]: the whole [`Filesystem`] in memory, with faults to inject: a device that fills
//! up (a write past the capacity lands what fits, then fails with "no space left", as a real device
//! does), failing writes, fsyncs and file creations, and a process crash. The log's tests, the
//! corruption tests and the fuzz target drive the production code (`SpillLog::open`, recovery,
//! reads) through it, with no real disk and no root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AppendFile, DirLock, Filesystem, ReadFile};

/// An in-memory filesystem for tests and fuzzing. Clones share one tree, so a test keeps a clone to
/// inject faults into the one a log was opened on.
///
/// ```
/// use std::sync::Arc;
/// use weir_spill::fs::MemFilesystem;
/// use weir_spill::{SpillConfig, SpillError, SpillLog};
///
/// let fs = MemFilesystem::new();
/// let config = SpillConfig::new().filesystem(Arc::new(fs.clone()));
/// let log = SpillLog::<u64>::open("/spill", config).unwrap();
/// log.append(&1).unwrap();
/// fs.fail_syncs(1); // the next fsync fails: the batch is kept, not lost
/// let error = log.flush().unwrap_err();
/// assert_eq!(error.unwritten_records(), Some(1));
/// assert_eq!(log.flush().unwrap().durable, 1); // written by the retry
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemFilesystem {
    tree: Arc<Mutex<Tree>>,
}

#[derive(Debug, Default)]
struct Tree {
    /// File contents by node; a node outlives its name while a handle holds it (as an unlinked
    /// file does).
    nodes: HashMap<u64, Vec<u8>>,
    names: BTreeMap<PathBuf, u64>,
    next_node: u64,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    fail_writes: u32,
    fail_syncs: u32,
    fail_creates: u32,
}

impl Tree {
    /// Bytes of every named file.
    fn used(&self) -> u64 {
        self.names
            .values()
            .map(|node| self.nodes.get(node).map_or(0, |data| data.len() as u64))
            .sum()
    }

    /// How many of `wanted` more bytes fit.
    fn room(&self, wanted: usize) -> usize {
        match self.capacity {
            None => wanted,
            Some(capacity) => {
                let free = capacity.saturating_sub(self.used());
                wanted.min(usize::try_from(free).unwrap_or(usize::MAX))
            }
        }
    }

    fn node(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        if let Some(&node) = self.names.get(path) {
            return Ok(node);
        }
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.dirs.contains(parent) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no directory {}", parent.display()),
                ));
            }
            _ => {}
        }
        if self.fail_creates > 0 {
            self.fail_creates -= 1;
            return Err(injected("create"));
        }
        let node = self.next_node;
        self.next_node += 1;
        self.nodes.insert(node, Vec::new());
        self.names.insert(path.to_path_buf(), node);
        Ok(node)
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what} failed"))
}

fn no_space() -> io::Error {
    io::Error::from(io::ErrorKind::StorageFull)
}

impl MemFilesystem {
    /// An empty filesystem with no capacity limit and no faults.
    pub fn new() -> Self {
        Self::default()
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Limits the bytes all files may hold (`None`: unlimited). A write that does not fit lands
    /// what fits and then fails with [`io::ErrorKind::StorageFull`].
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.tree().capacity = bytes;
    }

    /// Bytes all files hold now.
    pub fn used(&self) -> u64 {
        self.tree().used()
    }

    /// The next `n` writes to an open file fail (an I/O error, nothing written).
    pub fn fail_writes(&self, n: u32) {
        self.tree().fail_writes = n;
    }

    /// The next `n` fsyncs (of a file or a directory) fail.
    pub fn fail_syncs(&self, n: u32) {
        self.tree().fail_syncs = n;
    }

    /// The next `n` creations of a file fail.
    pub fn fail_creates(&self, n: u32) {
        self.tree().fail_creates = n;
    }

    /// Puts a file with `bytes` at `path`, creating its directory (for tests that craft files).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut tree = self.tree();
        if let Some(parent) = path.parent() {
            insert_dirs(&mut tree.dirs, parent);
        }
        let node = tree.create(path).expect("the directory was just made");
        tree.nodes.insert(node, bytes.to_vec());
    }

    /// The bytes of the file at `path`, if there is one.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let tree = self.tree();
        let node = tree.names.get(path)?;
        tree.nodes.get(node).cloned()
    }

    /// The files directly in `dir`, sorted.
    pub fn files(&self, dir: &Path) -> Vec<PathBuf> {
        self.tree()
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect()
    }

    /// An independent copy of every directory and file (no locks, no faults): what a crash would
    /// leave now, to open and inspect without disturbing the log running on this one.
    pub fn snapshot(&self) -> MemFilesystem {
        let tree = self.tree();
        let copy = Tree {
            nodes: tree
                .names
                .values()
                .map(|node| (*node, tree.nodes.get(node).cloned().unwrap_or_default()))
                .collect(),
            names: tree.names.clone(),
            next_node: tree.next_node,
            dirs: tree.dirs.clone(),
            ..Tree::default()
        };
        MemFilesystem {
            tree: Arc::new(Mutex::new(copy)),
        }
    }

    /// What a killed process leaves behind: every written byte stays (the page cache survives a
    /// process), and the locks it held are released, so a new log can open the directory while
    /// the old one is leaked (`std::mem::forget`) instead of closed.
    pub fn crash(&self) {
        self.tree().locks.clear();
    }
}

fn insert_dirs(dirs: &mut BTreeSet<PathBuf>, path: &Path) {
    for ancestor in path.ancestors() {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        dirs.insert(ancestor.to_path_buf());
    }
}

/// An open file of a [`MemFilesystem`]: appends at the end, reads from a position.
struct Handle {
    fs: MemFilesystem,
    node: u64,
    pos: u64,
}

impl Write for Handle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut tree = self.fs.tree();
        if tree.fail_writes > 0 {
            tree.fail_writes -= 1;
            return Err(injected("write"));
        }
        let n = tree.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(no_space());
        }
        tree.nodes
            .entry(self.node)
            .or_default()
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AppendFile for Handle {
    fn sync_data(&mut self) -> io::Result<()> {
        let mut tree = self.fs.tree();
        if tree.fail_syncs > 0 {
            tree.fail_syncs -= 1;
            return Err(injected("fsync"));
        }
        Ok(())
    }
}

impl Read for Handle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tree = self.fs.tree();
        let data = tree.nodes.get(&self.node).map_or(&[][..], Vec::as_slice);
        let at = usize::try_from(self.pos)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Handle {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.fs.tree().nodes.get(&self.node).map_or(0, Vec::len) as u64;
        let pos = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        self.pos = pos.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// A held lock of a [`MemFilesystem`], released on drop.
#[derive(Debug)]
struct MemLock {
    fs: MemFilesystem,
    path: PathBuf,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.fs.tree().locks.remove(&self.path);
    }
}

impl Filesystem for MemFilesystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        insert_dirs(&mut self.tree().dirs, path);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        if !self.tree().dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(self.files(dir))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let node = self.tree().node(path)?;
        Ok(Box::new(Handle {
            fs: self.clone(),
            node,
            pos: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let node = self.tree().create(path)?;
        Ok(Box::new(Handle {
            fs: self.clone(),
            node,
            pos: 0,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let tree = self.tree();
        let node = tree.node(path)?;
        Ok(tree.nodes.get(&node).cloned().unwrap_or_default())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut tree = self.tree();
        // The temporary file needs room next to the old one until the rename.
        if tree.room(bytes.len()) < bytes.len() {
            return Err(no_space());
        }
        if tree.fail_syncs > 0 {
            tree.fail_syncs -= 1;
            return Err(injected("fsync"));
        }
        let node = tree.create(path)?;
        tree.nodes.insert(node, bytes.to_vec());
        Ok(())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let tree = self.tree();
        let node = tree.node(path)?;
        Ok(tree.nodes.get(&node).map_or(0, Vec::len) as u64)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut tree = self.tree();
        let node = tree.node(path)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let data = tree.nodes.entry(node).or_default();
        let grow = len.saturating_sub(data.len());
        if grow > 0 && tree.room(grow) < grow {
            return Err(no_space());
        }
        tree.nodes.entry(node).or_default().resize(len, 0);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        // Only the name goes: a handle still reads the node, as an unlinked file is still read.
        let mut tree = self.tree();
        tree.node(path)?;
        tree.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut tree = self.tree();
        if !tree.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        if tree.fail_syncs > 0 {
            tree.fail_syncs -= 1;
            return Err(injected("fsync"));
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut tree = self.tree();
        tree.create(path)?;
        if !tree.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}
