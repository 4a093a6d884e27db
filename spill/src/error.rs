//! Typed errors of the spill log: each names the file, the offset or the stage it came from.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a spill log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// An I/O call failed; `stage` says what the log was doing.
    #[error("spill log: {stage} `{}`: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the log was doing ("create directory", "write batch", "fsync segment", ...).
        stage: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The directory cannot be written to (permissions, read-only filesystem).
    #[error("spill directory `{}` is not writable ({stage}): {source}", path.display())]
    NotWritable {
        /// The file or directory involved.
        path: PathBuf,
        /// What the log was doing.
        stage: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The device is full.
    #[error("disk full under `{}` ({stage}): {source}", path.display())]
    DiskFull {
        /// The file or directory involved.
        path: PathBuf,
        /// What the log was doing.
        stage: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path of the spill directory is not safe for private data: a directory that others may
    /// write to or that another user owns, or a symlink or special file where the log keeps its
    /// files. Nothing was read or written through it; `fix` says what to do.
    #[error("spill path `{}` is not safe to use: {problem}; {fix}", path.display())]
    Insecure {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// Another process (or another log in this process) holds the directory's lock.
    #[error("spill directory `{}` is already opened by another process or log (lock `{}` is held)", dir.display(), dir.join(crate::format::LOCK_FILE).display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A record, segment header or ledger failed its checks.
    #[error("corrupt spill data in `{}` at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// The byte offset of the bad record or header.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record passed its CRC but does not decode as the log's item type.
    #[error("record {seq} in `{}` at offset {offset} does not decode: {source}", file.display())]
    Decode {
        /// The file.
        file: PathBuf,
        /// The byte offset of the record.
        offset: u64,
        /// The record's sequence number.
        seq: u64,
        /// The serde error.
        #[source]
        source: postcard::Error,
    },
    /// An item could not be encoded.
    #[error("spill log: encoding an item failed: {0}")]
    Encode(#[source] postcard::Error),
    /// The item's `Serialize` implementation panicked (the message is the panic's); nothing of
    /// the item was kept.
    #[error("spill log: encoding an item panicked: {0}")]
    EncodePanicked(String),
    /// An encoded item is larger than the configured maximum record size.
    #[error("spill log: a record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The encoded size.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The disk budget is full and the policy is to reject.
    #[error("spill budget full: {used} of {budget} bytes used, the record needs {needed} more")]
    BudgetFull {
        /// The budget in bytes.
        budget: u64,
        /// Bytes used when the append was refused.
        used: u64,
        /// The size of the refused record (with its frame).
        needed: u64,
    },
    /// A [`durable`](crate::durable) ingress holds as many unacknowledged items as it may.
    #[error("durable ingress full: {backlog} items not yet acknowledged (limit {limit})")]
    BacklogFull {
        /// Items pushed and not acknowledged.
        backlog: u64,
        /// The most it holds.
        limit: u64,
    },
    /// A batch push appended only its first `appended` items before `source` stopped it: those
    /// are in the log (they will be handed out), the rest are not.
    #[error("only {appended} items of the batch were appended: {source}")]
    Partial {
        /// Items appended (and kept) before the failure.
        appended: u64,
        /// Why the rest were refused.
        #[source]
        source: Box<SpillError>,
    },
    /// The disk budget stayed full until the block deadline.
    #[error("spill budget stayed full for {waited:?} ({used} of {budget} bytes used)")]
    BudgetTimeout {
        /// How long the append waited.
        waited: Duration,
        /// The budget in bytes.
        budget: u64,
        /// Bytes used at the deadline.
        used: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid spill config: {0}")]
    Config(String),
    /// The log was closed.
    #[error("spill log is closed")]
    Closed,
    /// Records that [`append`](crate::SpillLog::append) had accepted are not written: their batch
    /// write (or its fsync) failed, and the file was cut back to the last written record. The log
    /// keeps them, with their sequence numbers: the next append, flush or sync writes them again,
    /// and [`take_unwritten`](crate::SpillLog::take_unwritten) hands them back. Closing the log
    /// is their last chance: if that write fails too, they are counted in `dropped_unwritten`.
    #[error("spill log: {records} records are not written: {source}")]
    Unwritten {
        /// How many records are not written.
        records: u64,
        /// Why the write failed.
        #[source]
        source: Box<SpillError>,
    },
}

impl SpillError {
    /// An I/O error, classified: a full device and a write refusal get their own variants.
    pub(crate) fn io(path: impl Into<PathBuf>, stage: &'static str, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => SpillError::DiskFull {
                path,
                stage,
                source,
            },
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                SpillError::NotWritable {
                    path,
                    stage,
                    source,
                }
            }
            _ => SpillError::Io {
                path,
                stage,
                source,
            },
        }
    }

    /// Whether this is a budget refusal ([`SpillError::BudgetFull`] or [`SpillError::BudgetTimeout`]).
    pub fn is_budget(&self) -> bool {
        matches!(
            self,
            SpillError::BudgetFull { .. } | SpillError::BudgetTimeout { .. }
        )
    }

    /// How many accepted records are not written, for an [`SpillError::Unwritten`].
    pub fn unwritten_records(&self) -> Option<u64> {
        match self {
            SpillError::Unwritten { records, .. } => Some(*records),
            _ => None,
        }
    }

    /// Whether the device is full ([`SpillError::DiskFull`], or records left unwritten by one).
    pub fn is_disk_full(&self) -> bool {
        match self {
            SpillError::DiskFull { .. } => true,
            SpillError::Unwritten { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }

    /// The same error again, to report one failure to several callers (`io::Error` is not
    /// `Clone`: the copy keeps its kind and message).
    pub(crate) fn duplicate(&self) -> SpillError {
        let io = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
        match self {
            SpillError::Io {
                path,
                stage,
                source,
            } => SpillError::Io {
                path: path.clone(),
                stage,
                source: io(source),
            },
            SpillError::NotWritable {
                path,
                stage,
                source,
            } => SpillError::NotWritable {
                path: path.clone(),
                stage,
                source: io(source),
            },
            SpillError::DiskFull {
                path,
                stage,
                source,
            } => SpillError::DiskFull {
                path: path.clone(),
                stage,
                source: io(source),
            },
            SpillError::Locked { dir } => SpillError::Locked { dir: dir.clone() },
            SpillError::Partial { appended, source } => SpillError::Partial {
                appended: *appended,
                source: Box::new(source.duplicate()),
            },
            SpillError::BacklogFull { backlog, limit } => SpillError::BacklogFull {
                backlog: *backlog,
                limit: *limit,
            },
            SpillError::Insecure { path, problem, fix } => SpillError::Insecure {
                path: path.clone(),
                problem: problem.clone(),
                fix: fix.clone(),
            },
            SpillError::Corrupt {
                file,
                offset,
                reason,
            } => SpillError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            SpillError::Decode {
                file,
                offset,
                seq,
                source,
            } => SpillError::Decode {
                file: file.clone(),
                offset: *offset,
                seq: *seq,
                source: source.clone(),
            },
            SpillError::Encode(source) => SpillError::Encode(source.clone()),
            SpillError::EncodePanicked(message) => SpillError::EncodePanicked(message.clone()),
            SpillError::RecordTooLarge { size, max } => SpillError::RecordTooLarge {
                size: *size,
                max: *max,
            },
            SpillError::BudgetFull {
                budget,
                used,
                needed,
            } => SpillError::BudgetFull {
                budget: *budget,
                used: *used,
                needed: *needed,
            },
            SpillError::BudgetTimeout {
                waited,
                budget,
                used,
            } => SpillError::BudgetTimeout {
                waited: *waited,
                budget: *budget,
                used: *used,
            },
            SpillError::Config(message) => SpillError::Config(message.clone()),
            SpillError::Closed => SpillError::Closed,
            SpillError::Unwritten { records, source } => SpillError::Unwritten {
                records: *records,
                source: Box::new(source.duplicate()),
            },
        }
    }

    /// Whether this reports bad data on disk ([`SpillError::Corrupt`] or [`SpillError::Decode`]).
    pub fn is_corruption(&self) -> bool {
        matches!(self, SpillError::Corrupt { .. } | SpillError::Decode { .. })
    }
}

impl From<SpillError> for weir_runtime::Error {
    fn from(error: SpillError) -> Self {
        weir_runtime::Error::failed(error)
    }
}
