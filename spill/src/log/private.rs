//! What makes a spill directory safe for the user data in it, checked at open before anything in
//! it is read or written (the careful tools' rules: ssh refuses a key file others can read,
//! PostgreSQL a data directory others can reach):
//! - the directory belongs to the user the process acts as and nobody else may write to it
//!   (else [`SpillError::Insecure`], unless [`SpillConfig::allow_shared_directory`]);
//! - every file the log keeps there (segments, ledger, its temporary file, the lock) is a regular
//!   file, never a symlink or a special file (else [`SpillError::Insecure`]: it is never read,
//!   written or truncated), owned by that user, and private (`0600`: a looser file left by an
//!   older version is made private, and logged).
//!
//! The directory and files the log creates are private from the start (the [`Filesystem`]
//! contract), and no file is ever opened through a link, so a link planted between this check and
//! an open fails the open instead of being followed.

use std::io;
use std::path::Path;

use crate::config::SpillConfig;
use crate::error::SpillError;
use crate::fs::{FileInfo, FileKind, Filesystem};
use crate::reasons;

const SHARED_OPT_OUT: &str =
    "or, for a deliberately shared directory, set `SpillConfig::allow_shared_directory(true)`";

/// Checks that `dir` (followed if it is a link) is a directory owned by this process's user that
/// only that user may write to.
pub(super) fn check_directory(
    fs: &dyn Filesystem,
    dir: &Path,
    config: &SpillConfig,
) -> Result<(), SpillError> {
    let info = fs
        .metadata(dir)
        .map_err(|e| SpillError::io(dir, reasons::CHECK_DIRECTORY, e))?;
    let insecure = |problem: String, fix: String| SpillError::Insecure {
        path: dir.into(),
        problem,
        fix,
    };
    if info.kind != FileKind::Dir {
        return Err(insecure(
            "it is not a directory".into(),
            "give the spill log a directory of its own".into(),
        ));
    }
    if config.shared_directory {
        return Ok(());
    }
    if let (Some(owner), Some(me)) = (info.uid, fs.process_uid())
        && owner != me
    {
        return Err(insecure(
            format!("the directory belongs to user {owner}, not to this process's user {me}"),
            format!(
                "use a directory of this user's (`chown {me} {}`), {SHARED_OPT_OUT}",
                dir.display()
            ),
        ));
    }
    if let Some(mode) = info.mode
        && mode & 0o022 != 0
    {
        return Err(insecure(
            format!("its group or others may write to it (mode {mode:04o})"),
            format!(
                "make it private (`chmod 700 {}`), {SHARED_OPT_OUT}",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Checks a file the log keeps in its directory, if it exists: a regular file (not a link, not a
/// special file), owned by this process's user, made private if it is not. Returns what it is.
pub(super) fn check_file(
    fs: &dyn Filesystem,
    path: &Path,
    config: &SpillConfig,
) -> Result<Option<FileInfo>, SpillError> {
    let info = match fs.symlink_metadata(path) {
        Ok(info) => info,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpillError::io(path, reasons::CHECK_FILE, e)),
    };
    let insecure = |problem: String, fix: &str| SpillError::Insecure {
        path: path.into(),
        problem,
        fix: fix.into(),
    };
    let what = match info.kind {
        FileKind::File => None,
        FileKind::Symlink => Some("it is a symlink"),
        FileKind::Dir => Some("it is a directory"),
        FileKind::Other => Some("it is not a regular file (a fifo, socket or device)"),
    };
    if let Some(what) = what {
        return Err(insecure(
            format!("{what}, where the spill log keeps a file of its own"),
            "remove it: the spill log keeps only regular files here and never follows a link",
        ));
    }
    let mine = match (info.uid, fs.process_uid()) {
        (Some(owner), Some(me)) => owner == me,
        _ => true,
    };
    if !mine && !config.shared_directory {
        return Err(insecure(
            format!(
                "it belongs to user {}, not to this process's user",
                info.uid.unwrap_or_default()
            ),
            "remove it, or give it to this user",
        ));
    }
    if mine && info.mode.is_some_and(|mode| mode & 0o077 != 0) {
        fs.set_private(path)
            .map_err(|e| SpillError::io(path, reasons::MAKE_PRIVATE, e))?;
        tracing::warn!(file = %path.display(), mode = format!("{:04o}", info.mode.unwrap_or_default()), "a spill file others could read was made private (0600)");
    }
    Ok(Some(info))
}
