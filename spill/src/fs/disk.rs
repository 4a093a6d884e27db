//! [`StdFilesystem`]: the real filesystem, through `std::fs`, keeping the privacy contract of
//! [`Filesystem`]: directories it creates are `0700` and files `0600` whatever the umask (set
//! again with `chmod` after creating), files are opened with `O_NOFOLLOW` (a symlink at the path
//! fails the open) and `O_NONBLOCK` (a fifo cannot block the open), then checked with `fstat` to be
//! regular files before anything is read, written or truncated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{
    AppendFile, DirLock, FileInfo, FileKind, Filesystem, ReadFile, SegmentBytes, not_regular,
};

/// The real filesystem (`std::fs`; the lock is `flock` through [`File::try_lock`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFilesystem;

/// Permission bits of private files and directories.
const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

fn info(meta: &fs::Metadata) -> FileInfo {
    let kind = meta.file_type();
    #[cfg(unix)]
    let (mode, uid) = {
        use std::os::unix::fs::MetadataExt;
        (Some(meta.mode() & 0o7777), Some(meta.uid()))
    };
    #[cfg(not(unix))]
    let (mode, uid) = (None, None);
    FileInfo {
        kind: if kind.is_symlink() {
            FileKind::Symlink
        } else if kind.is_dir() {
            FileKind::Dir
        } else if kind.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        },
        len: meta.len(),
        mode,
        uid,
    }
}

/// Open options that never follow a symlink at the path and never block on a fifo; new files
/// are created private.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .mode(PRIVATE_FILE);
    }
    options
}

/// Opens `path` with `options` and checks that it is a regular file. A symlink at the path is
/// refused by the open itself (`ELOOP`) and reported as one.
fn open_regular(path: &Path, options: &OpenOptions) -> io::Result<File> {
    let file = options.open(path).map_err(|error| {
        #[cfg(unix)]
        if error.raw_os_error() == Some(libc::ELOOP) {
            return not_regular(path, FileKind::Symlink);
        }
        error
    })?;
    let found = info(&file.metadata()?);
    if found.kind != FileKind::File {
        return Err(not_regular(path, found.kind));
    }
    Ok(file)
}

/// Sets `file`'s permission bits to exactly `0600` unless they are already.
fn make_private(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if info(&file.metadata()?).mode != Some(PRIVATE_FILE) {
            file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

impl Filesystem for StdFilesystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // The missing directories, deepest first.
        let mut missing: Vec<&Path> = Vec::new();
        let mut at = Some(path);
        while let Some(dir) = at {
            if dir.as_os_str().is_empty() || fs::metadata(dir).is_ok() {
                break;
            }
            missing.push(dir);
            at = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(PRIVATE_DIR);
            }
            match builder.create(dir) {
                Ok(()) => {
                    // Exactly 0700: the umask only ever removes bits from the mode above.
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))?;
                    }
                }
                // Made meanwhile by someone else: checked like any existing directory.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn metadata(&self, path: &Path) -> io::Result<FileInfo> {
        Ok(info(&fs::metadata(path)?))
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<FileInfo> {
        Ok(info(&fs::symlink_metadata(path)?))
    }

    fn process_uid(&self) -> Option<u32> {
        #[cfg(unix)]
        {
            // SAFETY: `geteuid` has no preconditions and cannot fail.
            Some(unsafe { libc::geteuid() })
        }
        #[cfg(not(unix))]
        None
    }

    fn set_private(&self, path: &Path) -> io::Result<()> {
        let file = open_regular(path, options().read(true))?;
        make_private(&file)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(open_regular(path, options().read(true))?))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = open_regular(path, options().create(true).append(true))?;
        make_private(&file)?;
        Ok(Box::new(file))
    }

    /// Maps the segment read-only (`mmap`, with sequential read-ahead advice), or `Ok(None)` when
    /// the file is shorter than `len` (the read path then reports it) or `len` is 0.
    fn map_sealed(&self, path: &Path, len: u64) -> io::Result<Option<SegmentBytes>> {
        let file = open_regular(path, options().read(true))?;
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
        // - the file is a regular file opened without following a link (`open_regular`);
        // - another weir process cannot open the directory: the log holds an exclusive `flock`.
        // What remains is a process that ignores that lock and shrinks a sealed segment while it is
        // read: documented at `SpillConfig::mapped_reads`, which is off unless a user turns it on.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
        // Only advice: the kernel reads ahead further for a cold file.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Some(Box::new(map)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut open_regular(path, options().read(true))?, &mut bytes)?;
        Ok(bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        // A leftover from a crash, or anything planted at the name (a link only loses its name):
        // the temporary file is always a new one.
        match fs::remove_file(&tmp) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        {
            let mut file = open_regular(&tmp, options().write(true).create_new(true))?;
            make_private(&file)?;
            file.write_all(bytes)?;
            file.sync_data()?;
        }
        // `rename` replaces the entry at `path`, never a file a link there points to.
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = open_regular(path, options().write(true))?;
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
        // Never truncates, and never creates or opens anything through a link at the path.
        let file = open_regular(path, options().create(true).truncate(false).write(true))?;
        make_private(&file)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }
}
