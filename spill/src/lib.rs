//! weir's durable spill-to-disk log: when memory is full and the work must not be lost, overflow
//! goes to disk and drains back, in order, when pressure eases.
//!
//! One log, four faces:
//! - [`spill_to_disk`]: a weir `Subscriber` that writes a stream into the log;
//! - [`SpillQueue`]: a bounded in-memory FIFO whose overflow goes to the log and comes back in FIFO
//!   order, the spill store of a spilling ingress or buffer;
//! - [`replay`] / [`replay_with_acker`]: a weir `Publisher` that reads the log back on demand, e.g.
//!   after a restart;
//! - [`durable`]: an ingress whose pushes return once the item is fsynced (group commit), read by a
//!   tailing publisher and acknowledged by the consumer once it has finished with each item.
//!
//! The log ([`SpillLog`]) is a directory of append-only segment files of bounded size; each record is
//! length-prefixed, carries a CRC-32C and the postcard (serde) encoding of the item ([`format`](mod@format)
//! documents the bytes and why postcard). A small ledger records the acknowledged and read positions.
//! Writers batch records and fsync per [`FsyncPolicy`]; segments are deleted once every record in them
//! is acknowledged; a disk budget bounds the total, and [`BudgetFull`] decides what happens at the
//! ceiling. Delivery is at-least-once: after a crash every record acknowledged as written
//! ([`Written`]) and not acknowledged downstream is replayed; consumers dedupe by key if needed.
//!
//! A full or failing disk loses nothing that was accepted: `Ok` from [`SpillLog::append`] means
//! the log holds the record. A batch write (or its fsync) that fails is cut back to the last
//! whole record and kept, not forgotten: the error ([`SpillError::Unwritten`]) says how many
//! records wait, the next append, flush or sync writes them again (with their sequence numbers,
//! so the numbering stays dense), and [`SpillLog::take_unwritten`] hands them back to a caller
//! that keeps them elsewhere. [`SpillQueue`] does that: it holds them in memory, in their FIFO
//! place, refuses new items (handing them back) while the disk keeps failing, writes them again
//! when space frees, and hands every accepted item out in order. [`spill_to_disk`] fails its
//! stream naming how many items it could not write. Only a close whose last write fails gives
//! records up, and counts them (`dropped_unwritten`). Failed writes are counted in
//! `write_failures`.
//!
//! Recovery: opening creates a missing directory, takes an exclusive lock (a second opener gets
//! [`SpillError::Locked`]), writes the ledger back (so an unwritable directory or a full disk fails
//! at open), and scans the last segment: a torn tail is truncated, counted (`truncations`) and logged;
//! a bad record followed by good ones, or any bad record in a sealed segment, is corruption:
//! [`SpillError::Corrupt`] naming file and offset, or skipped and counted under
//! [`OnCorruption::Skip`]. No file content makes it panic (the fuzz target in `fuzz/` opens and
//! reads logs made of arbitrary bytes). Every file operation goes through the [`fs::Filesystem`]
//! seam; [`fs::MemFilesystem`] runs a log in memory, with faults to inject.
//!
//! Data at rest stays private (spilled records are user data). On Unix, whatever the umask:
//! - the log creates its directory (and any missing parent) `0700`, and every file in it
//!   (segments, the ledger and its temporary file, the lock) `0600`, owned by the process's user;
//!   a file others could read, left by an older version, is made `0600` at open (and logged);
//! - an existing directory that its group or others may write to, or that another user owns, is
//!   refused at open with [`SpillError::Insecure`], which names the path and the fix (`chmod 700`
//!   / `chown`), unless [`SpillConfig::allow_shared_directory`] says the sharing is deliberate;
//! - no file is opened through a symlink (`O_NOFOLLOW`) or blocked on as a fifo (`O_NONBLOCK`): a
//!   symlink, directory or special file where the log keeps a file is refused at open
//!   ([`SpillError::Insecure`]) and never read, written or truncated; the lock file and the
//!   ledger's temporary file (created exclusively, `O_EXCL`, after removing whatever was at its
//!   name) cannot be used to create, truncate or overwrite a file elsewhere;
//! - a record longer than [`SpillConfig::max_record_bytes`], or whose contents claim more than its
//!   bytes hold (a length prefix of 2^40 elements in a 20-byte record), is corruption under
//!   [`OnCorruption`], never an allocation: collections are preallocated for at most as many
//!   elements as the record has bytes.
//!
//! These checks go through the [`fs::Filesystem`] seam, so [`fs::MemFilesystem`] runs them with
//! simulated owners, modes and links. What they do not cover: a process running as the same user
//! (or root) can still read the files, and nothing is encrypted.
//!
//! Reading: segments are read with `read(2)` into a 1 MiB read-ahead and records are checked and
//! decoded in place. [`SpillConfig::mapped_reads`] maps sealed segments (all but the one being
//! written) instead: the log never writes or shrinks those, so a map cannot fault unless another
//! process shrinks the files (see the option for that risk); off by default.
//!
//! Threads: the writer, the reader and the acknowledger may run on different threads; they share
//! one small state under a `Mutex` (plus a `Condvar` for budget waits). There is no lock-free
//! hand-off, so there is no loom model: the std mutex is the whole protocol.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use weir_runtime::{Publisher, sink, source};
//! use weir_spill::{SpillConfig, SpillLog, replay, spill_to_disk};
//!
//! let dir = tempfile::tempdir().unwrap();
//! // Face 1: a sink.
//! let (sink, outcome) = spill_to_disk::<String>(dir.path(), SpillConfig::new()).unwrap();
//! source::from_iter(["a", "b", "c"].map(String::from)).subscribe(sink);
//! assert_eq!(outcome.await.unwrap().records, 3); // the sink closes the log when dropped
//!
//! // Face 3: replay after a "restart".
//! let log = SpillLog::<String>::open(dir.path(), SpillConfig::new()).unwrap();
//! assert_eq!(sink::collect(replay(log)).await.unwrap(), ["a", "b", "c"]);
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod config;
mod crc;
mod decode;
mod durable;
mod error;
pub mod format;
pub mod fs;
mod log;
mod metrics;
mod queue;
mod reasons;
mod sink;
mod source;

pub use config::{BudgetFull, FsyncPolicy, OnCorruption, SpillConfig};
pub use durable::{Durable, DurableParts, Tail, durable};
pub use error::SpillError;
pub use log::{SpillLog, Spilled, Written};
pub use metrics::{SpillMetrics, SpillSnapshot};
pub use queue::{ExtraMemory, Placement, RETRY_AFTER, SpillPushError, SpillQueue};
pub use sink::{SinkOutcome, SinkReport, SpillSink, spill_to_disk};
pub use source::{Acker, REPLAY_READ_AHEAD, Replay, replay, replay_with_acker};
