//! [`MemFilesystem`]: the whole [`Filesystem`] in memory, with faults to inject: a device that fills
//! up (a write past the capacity lands what fits, then fails with "no space left", as a real device
//! does), failing writes, fsyncs and file creations, and a process crash; and with owners, modes,
//! symlinks and special files, so the privacy checks run without root. The log's tests, the
//! corruption tests and the fuzz target drive the production code (`SpillLog::open`, recovery,
//! reads) through it, with no real disk.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AppendFile, DirLock, FileInfo, FileKind, Filesystem, ReadFile, not_regular};

/// The user id a new [`MemFilesystem`] acts as.
const DEFAULT_UID: u32 = 1000;

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

/// What a name in the tree is.
#[derive(Debug, Clone)]
enum Entry {
    /// A regular file: its node.
    File(u64),
    /// A symbolic link to a path.
    Symlink(PathBuf),
    /// A fifo, socket or device: never opened.
    Special,
}

#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<u8>,
    mode: u32,
    uid: u32,
}

#[derive(Debug, Default)]
struct Tree {
    /// File contents by node; a node outlives its name while a handle holds it (as an unlinked
    /// file does).
    nodes: HashMap<u64, Node>,
    names: BTreeMap<PathBuf, Entry>,
    next_node: u64,
    /// Directories: (mode, owner).
    dirs: BTreeMap<PathBuf, (u32, u32)>,
    locks: std::collections::BTreeSet<PathBuf>,
    /// The user the process acts as (`None`: the default).
    uid: Option<u32>,
    capacity: Option<u64>,
    fail_writes: u32,
    fail_syncs: u32,
    fail_creates: u32,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what} failed"))
}

fn no_space() -> io::Error {
    io::Error::from(io::ErrorKind::StorageFull)
}

impl Tree {
    fn uid(&self) -> u32 {
        self.uid.unwrap_or(DEFAULT_UID)
    }

    /// Bytes of every named file.
    fn used(&self) -> u64 {
        self.names
            .values()
            .filter_map(|entry| match entry {
                Entry::File(node) => self.nodes.get(node),
                _ => None,
            })
            .map(|node| node.data.len() as u64)
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

    /// The node of the regular file at `path`; anything else there is an error (links are not
    /// followed).
    fn file(&self, path: &Path) -> io::Result<u64> {
        match self.names.get(path) {
            Some(Entry::File(node)) => Ok(*node),
            Some(Entry::Symlink(_)) => Err(not_regular(path, FileKind::Symlink)),
            Some(Entry::Special) => Err(not_regular(path, FileKind::Other)),
            None if self.dirs.contains_key(path) => Err(not_regular(path, FileKind::Dir)),
            None => Err(not_found(path)),
        }
    }

    /// The regular file at `path`, created private if missing.
    fn create(&mut self, path: &Path) -> io::Result<u64> {
        if self.names.contains_key(path) || self.dirs.contains_key(path) {
            return self.file(path);
        }
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !self.dirs.contains_key(parent) => {
                return Err(not_found(parent));
            }
            _ => {}
        }
        if self.fail_creates > 0 {
            self.fail_creates -= 1;
            return Err(injected("create"));
        }
        let node = self.next_node;
        self.next_node += 1;
        let uid = self.uid();
        self.nodes.insert(
            node,
            Node {
                data: Vec::new(),
                mode: 0o600,
                uid,
            },
        );
        self.names.insert(path.to_path_buf(), Entry::File(node));
        Ok(node)
    }

    /// Sets a file's mode to `0600`, as its owner (or root) may.
    fn make_private(&mut self, node: u64) -> io::Result<()> {
        let uid = self.uid();
        let node = self.nodes.entry(node).or_default();
        if node.uid != uid && uid != 0 {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        node.mode = 0o600;
        Ok(())
    }

    fn insert_dirs(&mut self, path: &Path) {
        let owner = (0o700, self.uid());
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            self.dirs.entry(ancestor.to_path_buf()).or_insert(owner);
        }
    }

    /// What `path` is, without following a link.
    fn info(&self, path: &Path) -> io::Result<FileInfo> {
        if let Some(&(mode, uid)) = self.dirs.get(path) {
            return Ok(FileInfo {
                kind: FileKind::Dir,
                len: 0,
                mode: Some(mode),
                uid: Some(uid),
            });
        }
        let (kind, node) = match self.names.get(path).ok_or_else(|| not_found(path))? {
            Entry::File(node) => (FileKind::File, self.nodes.get(node).cloned()),
            Entry::Symlink(_) => (FileKind::Symlink, None),
            Entry::Special => (FileKind::Other, None),
        };
        let node = node.unwrap_or(Node {
            data: Vec::new(),
            mode: 0o777,
            uid: self.uid(),
        });
        Ok(FileInfo {
            kind,
            len: node.data.len() as u64,
            mode: Some(node.mode),
            uid: Some(node.uid),
        })
    }
}

impl MemFilesystem {
    /// An empty filesystem with no capacity limit and no faults, acting as user 1000.
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

    /// Acts as user `uid` from now on (what [`Filesystem::process_uid`] reports, and the owner of
    /// what is created).
    pub fn set_process_uid(&self, uid: u32) {
        self.tree().uid = Some(uid);
    }

    /// Sets the permission bits of the file or directory at `path` (no effect if there is none).
    pub fn set_mode(&self, path: &Path, mode: u32) {
        let mut tree = self.tree();
        if let Some(dir) = tree.dirs.get_mut(path) {
            dir.0 = mode;
        } else if let Ok(node) = tree.file(path) {
            tree.nodes.entry(node).or_default().mode = mode;
        }
    }

    /// Gives the file or directory at `path` to user `uid` (no effect if there is none).
    pub fn set_owner(&self, path: &Path, uid: u32) {
        let mut tree = self.tree();
        if let Some(dir) = tree.dirs.get_mut(path) {
            dir.1 = uid;
        } else if let Ok(node) = tree.file(path) {
            tree.nodes.entry(node).or_default().uid = uid;
        }
    }

    /// Puts a symbolic link at `path` pointing to `target` (replacing what was there).
    pub fn symlink(&self, path: &Path, target: &Path) {
        let mut tree = self.tree();
        if let Some(parent) = path.parent() {
            tree.insert_dirs(parent);
        }
        tree.names
            .insert(path.to_path_buf(), Entry::Symlink(target.to_path_buf()));
    }

    /// Puts a special file (a fifo, say) at `path` (replacing what was there).
    pub fn special(&self, path: &Path) {
        let mut tree = self.tree();
        if let Some(parent) = path.parent() {
            tree.insert_dirs(parent);
        }
        tree.names.insert(path.to_path_buf(), Entry::Special);
    }

    /// Puts a file with `bytes` at `path`, creating its directory (for tests that craft files).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut tree = self.tree();
        if let Some(parent) = path.parent() {
            tree.insert_dirs(parent);
        }
        let node = tree.create(path).expect("the directory was just made");
        tree.nodes.entry(node).or_default().data = bytes.to_vec();
    }

    /// The bytes of the regular file at `path`, if there is one.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let tree = self.tree();
        let node = tree.file(path).ok()?;
        tree.nodes.get(&node).map(|node| node.data.clone())
    }

    /// The entries directly in `dir` (files, links, special files), sorted.
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
                .filter_map(|entry| match entry {
                    Entry::File(node) => Some((*node, tree.nodes.get(node).cloned()?)),
                    _ => None,
                })
                .collect(),
            names: tree.names.clone(),
            next_node: tree.next_node,
            dirs: tree.dirs.clone(),
            uid: tree.uid,
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
            .data
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
        let data = tree
            .nodes
            .get(&self.node)
            .map_or(&[][..], |node| node.data.as_slice());
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
        let len = self
            .fs
            .tree()
            .nodes
            .get(&self.node)
            .map_or(0, |node| node.data.len()) as u64;
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
        let mut tree = self.tree();
        if tree.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        tree.insert_dirs(path);
        Ok(())
    }

    fn metadata(&self, path: &Path) -> io::Result<FileInfo> {
        let tree = self.tree();
        let mut path = path.to_path_buf();
        // Follow links, a few levels deep (as the kernel does, with a smaller limit).
        for _ in 0..8 {
            match tree.names.get(&path) {
                Some(Entry::Symlink(target)) => path = target.clone(),
                _ => return tree.info(&path),
            }
        }
        Err(io::Error::other("too many levels of symbolic links"))
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<FileInfo> {
        self.tree().info(path)
    }

    fn process_uid(&self) -> Option<u32> {
        Some(self.tree().uid())
    }

    fn set_private(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.tree();
        let node = tree.file(path)?;
        tree.make_private(node)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let tree = self.tree();
        if !tree.dirs.contains_key(dir) {
            return Err(not_found(dir));
        }
        let subdirs = tree.dirs.keys().filter(|path| path.parent() == Some(dir));
        let mut entries: Vec<PathBuf> = subdirs.cloned().collect();
        drop(tree);
        entries.extend(self.files(dir));
        Ok(entries)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let node = self.tree().file(path)?;
        Ok(Box::new(Handle {
            fs: self.clone(),
            node,
            pos: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut tree = self.tree();
        let node = tree.create(path)?;
        tree.make_private(node)?;
        Ok(Box::new(Handle {
            fs: self.clone(),
            node,
            pos: 0,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let tree = self.tree();
        let node = tree.file(path)?;
        Ok(tree
            .nodes
            .get(&node)
            .map(|node| node.data.clone())
            .unwrap_or_default())
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
        // A new private file, renamed over whatever entry `path` was (a link is replaced, its
        // target untouched).
        let tmp = path.with_extension("tmp");
        tree.names.remove(&tmp);
        let node = tree.create(&tmp)?;
        tree.nodes.entry(node).or_default().data = bytes.to_vec();
        tree.names.remove(&tmp);
        tree.names.insert(path.to_path_buf(), Entry::File(node));
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut tree = self.tree();
        let node = tree.file(path)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let grow = len.saturating_sub(tree.nodes.get(&node).map_or(0, |n| n.data.len()));
        if grow > 0 && tree.room(grow) < grow {
            return Err(no_space());
        }
        tree.nodes.entry(node).or_default().data.resize(len, 0);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        // Only the name goes: a handle still reads the node, as an unlinked file is still read.
        let mut tree = self.tree();
        tree.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut tree = self.tree();
        if !tree.dirs.contains_key(dir) {
            return Err(not_found(dir));
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
