//! Settings of a spill log: segment size, batching, fsync policy, disk budget, what to do with
//! corrupt records, and the filesystem seam.

use std::sync::Arc;
use std::time::Duration;

use crate::error::SpillError;
use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::fs::{Filesystem, StdFilesystem};

/// When a writer makes written batches durable (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch write: a record acknowledged as written survives a crash of the process
    /// and of the machine. Costs one device flush per batch (~200 µs here), so batch generously.
    EveryBatch,
    /// At most `d` after a write: at the first batch write that starts at least `d` after the last
    /// fsync, and every `d` by a small thread per log that writes the batch still in memory and
    /// fsyncs if anything is unsynced (so a pause in writes leaves nothing waiting). Also at every
    /// segment roll (the sealed segment), on [`SpillLog::sync`](crate::SpillLog::sync) and on
    /// close.
    ///
    /// ```text
    /// lost on a machine crash (power, kernel) = records with  Written.durable <= seq < Written.written
    ///     = at most the last `d` (plus one fsync's time) of writes
    /// lost on a process crash                 = records appended but still in the batch: at most
    ///                                           the last `d` of appends
    /// ```
    ///
    /// `d` caps the fsync rate: at most two device flushes per `d` (one in a write, one from the
    /// thread; ~200 µs each here).
    Interval(Duration),
    /// Never (except on close): the OS decides. Survives process crashes, not machine crashes.
    Never,
}

/// What an append does when the disk budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetFull {
    /// Fail at once with [`SpillError::BudgetFull`].
    Reject,
    /// Wait (blocking the calling thread) for acknowledgements to free whole segments, up to
    /// `timeout`, then fail with [`SpillError::BudgetTimeout`]. Only useful when another thread
    /// acknowledges (a replay source or consumer on another task); [`crate::SpillQueue`] never waits.
    Block {
        /// The longest an append waits.
        timeout: Duration,
    },
}

/// What a reader does with a record that fails its CRC (or garbage where a record should be) in
/// the middle of a segment. A torn tail (the unsynced end of the last segment after a crash) is
/// always truncated and counted, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    /// Fail the read with [`SpillError::Corrupt`] naming file and offset. The default: bad data is
    /// never silent.
    Fail,
    /// Skip it, count it in `corruptions` and warn. A record whose length is intact but whose CRC
    /// fails is skipped alone; a bad length loses the framing, so the rest of that segment is skipped.
    Skip,
}

/// Settings of one [`SpillLog`](crate::SpillLog).
///
/// ```
/// use std::time::Duration;
/// use weir_spill::{FsyncPolicy, SpillConfig, BudgetFull};
/// let config = SpillConfig::new()
///     .fsync(FsyncPolicy::EveryBatch)
///     .budget_bytes(1 << 30)
///     .budget_full(BudgetFull::Block { timeout: Duration::from_secs(1) });
/// assert_eq!(config.segment_size(), 64 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct SpillConfig {
    pub(crate) segment_bytes: u64,
    pub(crate) max_record_bytes: u32,
    pub(crate) batch_records: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) budget_bytes: u64,
    pub(crate) when_full: BudgetFull,
    pub(crate) on_corruption: OnCorruption,
    pub(crate) ledger_every: u64,
    pub(crate) ledger_interval: Duration,
    pub(crate) fs: Arc<dyn Filesystem>,
    pub(crate) mapped_reads: bool,
    pub(crate) shared_directory: bool,
}

/// 64 MiB segments: large enough that rollover (one file create + directory fsync) is rare, small
/// enough that a fully acknowledged segment frees budget promptly.
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// 1,000 records or 1 MiB per batch write, whichever comes first: one fsync amortised over a batch.
pub(crate) const DEFAULT_BATCH_RECORDS: usize = 1_000;
/// See [`DEFAULT_BATCH_RECORDS`].
pub(crate) const DEFAULT_BATCH_BYTES: usize = 1 << 20;
/// 8 GiB of disk by default.
pub(crate) const DEFAULT_BUDGET_BYTES: u64 = 8 << 30;
/// 8 MiB per encoded item: a length above this is garbage, never an allocation.
pub(crate) const DEFAULT_MAX_RECORD_BYTES: u32 = 8 << 20;

impl Default for SpillConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SpillConfig {
    /// The defaults: 64 MiB segments, batches of 1,000 records / 1 MiB, fsync every batch, an 8 GiB
    /// budget that rejects when full, corrupt records fail the read.
    pub fn new() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            fsync: FsyncPolicy::EveryBatch,
            budget_bytes: DEFAULT_BUDGET_BYTES,
            when_full: BudgetFull::Reject,
            on_corruption: OnCorruption::Fail,
            ledger_every: 4_096,
            ledger_interval: Duration::from_millis(500),
            fs: Arc::new(StdFilesystem),
            mapped_reads: false,
            shared_directory: false,
        }
    }

    /// The size at which a segment is sealed and a new one started (a record never spans two).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// The configured segment size.
    pub fn segment_size(&self) -> u64 {
        self.segment_bytes
    }

    /// The largest encoded item accepted (and believed when reading).
    pub fn max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// A batch is written when it holds this many records (or [`batch_bytes`](Self::batch_bytes)).
    pub fn batch_records(mut self, records: usize) -> Self {
        self.batch_records = records;
        self
    }

    /// A batch is written when it holds this many bytes (or [`batch_records`](Self::batch_records)).
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// The fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// The most bytes the log's segments may take on disk. At least two segments.
    pub fn budget_bytes(mut self, bytes: u64) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// What an append does when the budget is full.
    pub fn budget_full(mut self, policy: BudgetFull) -> Self {
        self.when_full = policy;
        self
    }

    /// What a read does with corrupt data in the middle of a segment.
    pub fn on_corruption(mut self, policy: OnCorruption) -> Self {
        self.on_corruption = policy;
        self
    }

    /// The ledger (acknowledged position) is persisted after this many acknowledged records, after
    /// [`ledger_interval`](Self::ledger_interval), whenever a segment is deleted, and on close.
    /// Records acknowledged since the last persist are replayed after a crash (at-least-once).
    pub fn ledger_every(mut self, records: u64) -> Self {
        self.ledger_every = records;
        self
    }

    /// See [`ledger_every`](Self::ledger_every).
    pub fn ledger_interval(mut self, interval: Duration) -> Self {
        self.ledger_interval = interval;
        self
    }

    /// The filesystem seam (tests inject faults through it).
    pub fn filesystem(mut self, fs: Arc<dyn Filesystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Whether the reader maps sealed segments (every segment but the one being written) into
    /// memory and checks and decodes records in place, instead of `read(2)` into a buffer. Off by
    /// default: it saves the kernel's copy of every byte, which measured 6-7% of a read-back
    /// (BENCHMARKS.md), not enough to make a crash on an outside truncation (below) the default.
    /// The active segment is always read with `read(2)`, and so is every segment when the
    /// [`filesystem`](Self::filesystem) does not map.
    ///
    /// Leave it off if anything but this log may shrink segment files while the log is open (a
    /// cleanup script, a network filesystem whose server truncates): a process that reads a mapped
    /// page past the end of a shrunk file is killed by `SIGBUS`. The log itself never shrinks a
    /// sealed segment, and its directory lock keeps other weir processes out.
    pub fn mapped_reads(mut self, on: bool) -> Self {
        self.mapped_reads = on;
        self
    }

    /// Accepts a spill directory that is writable by its group or by others, or owned by another
    /// user: a shared setup (a service group's directory, say), chosen deliberately. Off by
    /// default: such a directory is refused at open with [`SpillError::Insecure`], as PostgreSQL
    /// refuses a data directory others can reach, since whoever can write to it can replace or
    /// remove the log's files. Everything else stays as strict: files are created `0600`, links
    /// and special files are refused, nothing is opened through a link.
    pub fn allow_shared_directory(mut self, allow: bool) -> Self {
        self.shared_directory = allow;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SpillError> {
        let min_segment = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN + 1;
        if self.segment_bytes < min_segment {
            return Err(SpillError::Config(format!(
                "segment_bytes must be at least {min_segment}, got {}",
                self.segment_bytes
            )));
        }
        if self.max_record_bytes == 0 {
            return Err(SpillError::Config(
                "max_record_bytes must be positive".into(),
            ));
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err(SpillError::Config(
                "the fsync interval must be positive (use EveryBatch to sync every batch)".into(),
            ));
        }
        if self.batch_records == 0 || self.batch_bytes == 0 {
            return Err(SpillError::Config(
                "batch_records and batch_bytes must be positive".into(),
            ));
        }
        if self.budget_bytes < 2 * self.segment_bytes {
            return Err(SpillError::Config(format!(
                "budget_bytes ({}) must hold at least two segments ({} each): space is freed a whole segment at a time",
                self.budget_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}
