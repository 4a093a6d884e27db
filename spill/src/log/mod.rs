//! [`SpillLog`]: the segmented, append-only, crash-safe log that the sink, the overflow queue and the
//! replay source share.
//!
//! Invariants:
//! - sequence numbers are dense and increase by one per record, across segments and restarts;
//! - a reader never sees a byte the writer has not finished writing (it reads up to the segment's
//!   written length, published under the state lock after each batch write);
//! - a segment is mapped for reading only once sealed (a later segment exists): its length is
//!   final and the log never writes or truncates it again;
//! - a segment is deleted only when every record in it is acknowledged (`acked_seq` reached the next
//!   segment's first record), and never while it is the active (last) segment;
//! - the ledger is replaced atomically; acknowledgements newer than the ledger are replayed after a
//!   crash (at-least-once), never skipped;
//! - an append that returns `Ok` holds its record: a batch is written *before* the next record joins
//!   it, so a failed write refuses the new item and keeps the batch (cut off the file, to be written
//!   again or taken back); nothing after a failed write is published until it succeeds, and a
//!   segment file always ends at a whole record once the failed write is cut off;
//! - after a failed roll nothing more is appended to the old segment: the half-made new one
//!   already claims the next sequence number by its name.
//!
//! Locks: `writer` and `reader` are independent; each may take `state` briefly (never the other way
//! round). Writers wait for budget on the `space` condvar of `state`.
//!
//! Files, by role (each uses only the ones below it):
//! - `mod.rs`: the [`SpillLog`] handle, which assembles the parts and holds the locks;
//! - `recover.rs`: opening a directory and recovering the last segment after a crash;
//! - `private.rs`: the checks that keep spilled data private at rest;
//! - `syncer.rs`: the interval fsync thread;
//! - `writer.rs`: batching, writing, rolling over, the budget, failed writes;
//! - `reader.rs`: reading records back, the corruption policy;
//! - `segment.rs`: walking one segment's frames with the one frame parser
//!   ([`parse_frame`](crate::format::parse_frame)), for the reader and for recovery;
//! - `state.rs`: what they share: positions, segments, ledger, budget, acknowledgement.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{BudgetFull, FsyncPolicy, SpillConfig};
use crate::error::SpillError;
use crate::format::{FRAME_HEADER_LEN, now_ms};
use crate::fs::DirLock;
use crate::metrics::SpillMetrics;
use crate::reasons;

mod private;
mod reader;
mod recover;
mod segment;
mod state;
mod syncer;
mod writer;

use reader::{One, READ_BUFFER, Reader};
use state::{Shared, lock};
pub use state::{Spilled, Written};
use syncer::Syncer;
use writer::Writer;

/// A durable, segmented log of `T`, shared by cheap clones (`Arc`).
///
/// Writing: [`append`](Self::append) buffers a record into the current batch and returns its
/// sequence number; the batch is written (and fsynced per [`FsyncPolicy`]) when it is full or on
/// [`flush`](Self::flush). A record is *acknowledged as written* once a returned [`Written`] covers it.
/// Reading: [`read`](Self::read) returns records in order, from the acknowledged position after a
/// restart. Acknowledging: [`ack_through`](Self::ack_through) moves the acknowledged position; whole
/// acknowledged segments are deleted, which frees budget.
///
/// ```
/// use weir_spill::{SpillConfig, SpillLog};
/// let dir = tempfile::tempdir().unwrap();
/// let log = SpillLog::<String>::open(dir.path(), SpillConfig::new()).unwrap();
/// log.append(&"order 1".to_string()).unwrap();
/// log.append(&"order 2".to_string()).unwrap();
/// assert_eq!(log.flush().unwrap().durable, 2);
/// let first = log.read().unwrap().unwrap();
/// assert_eq!((first.seq, first.item.as_str()), (0, "order 1"));
/// log.ack_through(first.seq + 1).unwrap();
/// drop(log);
/// // After a restart only the unacknowledged record is replayed.
/// let log = SpillLog::<String>::open(dir.path(), SpillConfig::new()).unwrap();
/// assert_eq!(log.read().unwrap().unwrap().item, "order 2");
/// assert!(log.read().unwrap().is_none());
/// ```
pub struct SpillLog<T> {
    inner: Arc<Inner>,
    /// The interval syncer ([`FsyncPolicy::Interval`]), stopped and joined with the last clone.
    syncer: Option<Arc<Syncer>>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for SpillLog<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            syncer: self.syncer.clone(),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SpillLog<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillLog")
            .field("dir", &self.inner.shared.dir)
            .finish()
    }
}

/// One open log, shared by the handles: the shared state, the writer and the reader (each under
/// its own lock), and the directory lock, released when the last handle goes.
struct Inner {
    shared: Shared,
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
    _lock: Box<dyn DirLock>,
}

impl Inner {
    /// One tick of the interval syncer: writes the batch and fsyncs if anything is unsynced.
    /// Returns `false` once the log is closed.
    fn sync_tick(&self) -> bool {
        let mut writer = lock(&self.writer);
        if lock(&self.shared.state).closed {
            return false;
        }
        if writer.sync_due()
            && let Err(error) = writer.write_batch(&self.shared, true)
        {
            tracing::warn!(dir = %self.shared.dir.display(), %error, "interval fsync failed: the batch is kept and written again");
        }
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = lock(&self.writer).close(&self.shared) {
            tracing::warn!(dir = %self.shared.dir.display(), %error, "closing the spill log failed");
        }
    }
}

impl<T> SpillLog<T> {
    /// Opens (or creates) the log in `dir`: creates the directory, locks it, reads the ledger, scans
    /// the last segment (a torn tail is truncated, counted and logged) and writes the ledger back,
    /// which proves the directory writable. Errors name the directory or file and what failed.
    pub fn open(dir: impl AsRef<Path>, config: SpillConfig) -> Result<Self, SpillError> {
        let opened = recover::open(dir.as_ref(), config)?;
        let inner = Arc::new(Inner {
            shared: opened.shared,
            writer: Mutex::new(opened.writer),
            reader: Mutex::new(opened.reader),
            _lock: opened.lock,
        });
        let syncer = match inner.shared.config.fsync {
            FsyncPolicy::Interval(every) => {
                let log = Arc::downgrade(&inner);
                let tick = move || log.upgrade().is_some_and(|inner| inner.sync_tick());
                let syncer = Syncer::start(every, tick).map_err(|error| {
                    SpillError::io(&inner.shared.dir, reasons::START_SYNCER, error)
                })?;
                Some(Arc::new(syncer))
            }
            _ => None,
        };
        Ok(Self {
            inner,
            syncer,
            _item: PhantomData,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &SpillConfig {
        &self.inner.shared.config
    }

    /// The live counters.
    pub fn metrics(&self) -> Arc<SpillMetrics> {
        self.inner.shared.metrics.clone()
    }

    /// A reader of the age of the oldest record not yet read, `None` when every written record was
    /// read (or the log is gone). Batch precision: the time the record's batch was written, so an
    /// upper bound. Holds the log weakly.
    pub(crate) fn oldest_unread_age(
        &self,
    ) -> impl Fn() -> Option<Duration> + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || {
            let inner = inner.upgrade()?;
            let read = inner.shared.read_seq.load(Ordering::Acquire);
            written_age(&inner.shared, read)
        }
    }

    /// How long ago record `seq` was written, batch precision (the time its batch was written:
    /// an upper bound); `None` when `seq` is not written yet.
    pub(crate) fn age_of(&self, seq: u64) -> Option<Duration> {
        written_age(&self.inner.shared, seq)
    }

    /// The most bytes the log's own buffers hold: the reader's read-ahead (1 MiB, or one frame
    /// of `max_record_bytes` if that is larger), the writer's batch (a batch is written once it
    /// reaches `batch_bytes`, so at most that plus one frame) and the buffer an item is encoded
    /// into (one record). Allocated as they are first used. Mapped sealed segments
    /// ([`SpillConfig::mapped_reads`]) are page cache, not counted.
    pub fn max_buffer_bytes(&self) -> u64 {
        let config = &self.inner.shared.config;
        let max_frame = FRAME_HEADER_LEN + u64::from(config.max_record_bytes);
        let read_ahead = (READ_BUFFER as u64).max(max_frame);
        let batch = config.batch_bytes as u64 + max_frame;
        read_ahead + batch + u64::from(config.max_record_bytes)
    }

    /// Writes the current batch (fsync per policy) and reports how far the log is written.
    ///
    /// A failed write loses nothing: the error ([`SpillError::Unwritten`]) says how many records
    /// are not written, the log keeps them and the next append, flush or sync writes them again.
    pub fn flush(&self) -> Result<Written, SpillError> {
        lock(&self.inner.writer).write_batch(&self.inner.shared, false)
    }

    /// Writes the current batch and fsyncs, whatever the policy.
    pub fn sync(&self) -> Result<Written, SpillError> {
        lock(&self.inner.writer).write_batch(&self.inner.shared, true)
    }

    /// Acknowledges every record below `seq`: they will not be replayed after a restart (once the
    /// ledger is persisted; see [`SpillConfig::ledger_every`]) and their segments are deleted once
    /// wholly acknowledged. Only records already read can be acknowledged (`seq` is capped there).
    ///
    /// The acknowledgement always takes effect in memory. A ledger write that fails (a full disk)
    /// is counted in `write_failures` and logged, not returned: the ledger on disk lags, so
    /// records acknowledged since its last write would be replayed after a crash (at-least-once),
    /// and the next acknowledgement or the close writes it again. An error is returned only if
    /// the log is closed ([`SpillError::Closed`]).
    pub fn ack_through(&self, seq: u64) -> Result<(), SpillError> {
        self.inner.shared.ack_through(seq)
    }

    /// Records appended but not yet read.
    pub fn unread(&self) -> u64 {
        let next = lock(&self.inner.writer).next_seq;
        next.saturating_sub(lock(&self.inner.reader).next_seq)
    }

    /// The sequence number of the next record to read.
    pub(crate) fn next_unread(&self) -> u64 {
        lock(&self.inner.reader).next_seq
    }

    /// Records written but not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let state = lock(&self.inner.shared.state);
        state.written_seq.saturating_sub(state.acked_seq)
    }

    /// The acknowledged position: every record below it is acknowledged.
    pub fn acked(&self) -> u64 {
        lock(&self.inner.shared.state).acked_seq
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.writer).next_seq
    }

    /// Records accepted by [`append`](Self::append) whose write failed, held by the log until a
    /// later write succeeds or [`take_unwritten`](Self::take_unwritten) takes them back.
    pub fn unwritten(&self) -> u64 {
        lock(&self.inner.writer).unwritten()
    }

    /// The same log, for what does not touch items (writing a batch, giving up unwritten
    /// records): a handle a type-erased owner can keep.
    pub(crate) fn untyped(&self) -> SpillLog<()> {
        SpillLog {
            inner: self.inner.clone(),
            syncer: self.syncer.clone(),
            _item: PhantomData,
        }
    }

    /// Gives up the records whose write failed (see [`unwritten`](Self::unwritten)): they are
    /// counted in `dropped_unwritten` and logged, and the log continues as if they had never been
    /// appended. Returns how many. For a writer that reports them lost itself (the sink, which
    /// fails its stream naming the count).
    pub(crate) fn discard_unwritten(&self) -> u64 {
        let shared = &self.inner.shared;
        let dropped = lock(&self.inner.writer).forget_unwritten(shared);
        if dropped > 0 {
            SpillMetrics::add(&shared.metrics.dropped_unwritten, dropped);
            tracing::error!(dir = %shared.dir.display(), records = dropped, "spill records accepted but never written were given up");
        }
        dropped
    }

    /// Flushes, fsyncs and persists the ledger. Appends afterwards fail with [`SpillError::Closed`].
    /// Dropping the last clone does the same, logging instead of returning errors.
    pub fn close(&self) -> Result<Written, SpillError> {
        lock(&self.inner.writer).close(&self.inner.shared)
    }
}

impl<T: Serialize> SpillLog<T> {
    /// Appends `item` to the current batch and returns its sequence number; when the budget is
    /// full, [`BudgetFull`] decides (block with a timeout, or reject). The record is acknowledged as
    /// written once [`flush`](Self::flush) (or [`sync`](Self::sync)) reports it in [`Written`].
    ///
    /// `Ok` means the log holds the record: it is written with its batch, or, if that write fails,
    /// kept and written again (never forgotten). An error means the item was not appended. A full
    /// batch is written before the next record joins it, so a failed write refuses the *next*
    /// item, with [`SpillError::Unwritten`] saying how many accepted records wait to be written.
    #[inline]
    pub fn append(&self, item: &T) -> Result<u64, SpillError> {
        let wait = match self.inner.shared.config.when_full {
            BudgetFull::Reject => None,
            BudgetFull::Block { timeout } => Some(timeout),
        };
        lock(&self.inner.writer).append(&self.inner.shared, item, wait)
    }

    /// Like [`append`](Self::append) but never waits: a full budget is [`SpillError::BudgetFull`].
    #[inline]
    pub fn try_append(&self, item: &T) -> Result<u64, SpillError> {
        lock(&self.inner.writer).append(&self.inner.shared, item, None)
    }
}

impl<T: DeserializeOwned> SpillLog<T> {
    /// Takes back, oldest first, the records whose write failed ([`unwritten`](Self::unwritten)),
    /// decoded into `out`, and returns how many were taken. The log then continues as if they had
    /// never been appended: the next append gets the first one's sequence number, so the numbers
    /// stay dense. For a caller that keeps them elsewhere ([`SpillQueue`](crate::SpillQueue)
    /// keeps them in memory). A record that does not decode (a `T` whose `Deserialize` does not
    /// read what its `Serialize` wrote; reading it from disk would fail the same way) is counted in
    /// `corruptions` and logged.
    pub fn take_unwritten(&self, out: &mut impl Extend<Spilled<T>>) -> u64 {
        lock(&self.inner.writer).take_unwritten(&self.inner.shared, out)
    }

    /// The next unread record, or `None` when the reader has caught up with what is written
    /// (call [`flush`](Self::flush) first to read your own recent appends). Corrupt data in the
    /// middle of a segment fails with [`SpillError::Corrupt`] (naming file and offset), or is skipped
    /// and counted under [`OnCorruption::Skip`](crate::OnCorruption::Skip). [`read_batch`](Self::read_batch) is the fast path.
    #[inline]
    pub fn read(&self) -> Result<Option<Spilled<T>>, SpillError> {
        let mut one = One(None);
        self.read_batch(1, &mut one)?;
        Ok(one.0)
    }

    /// Reads up to `max` records, in order, into `out`, and returns how many; fewer than `max`
    /// (0 included) means the reader has caught up with what is written. One lock acquisition, one
    /// update of the read position and of the counters per batch; items are decoded straight from
    /// a 1 MiB read-ahead buffer. Errors as [`read`](Self::read); on an error the records read
    /// before it are already in `out` (and count as read: they can be acknowledged).
    ///
    /// ```
    /// use weir_spill::{SpillConfig, SpillLog};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = SpillLog::<u64>::open(dir.path(), SpillConfig::new()).unwrap();
    /// for x in 0..10 {
    ///     log.append(&x).unwrap();
    /// }
    /// log.flush().unwrap();
    /// let mut out = Vec::new();
    /// assert_eq!(log.read_batch(8, &mut out).unwrap(), 8);
    /// assert_eq!(log.read_batch(8, &mut out).unwrap(), 2); // caught up
    /// assert_eq!(out.iter().map(|r| r.item).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    /// log.ack_through(out[9].seq + 1).unwrap();
    /// ```
    #[inline]
    pub fn read_batch(
        &self,
        max: usize,
        out: &mut impl Extend<Spilled<T>>,
    ) -> Result<usize, SpillError> {
        reader::read_batch(&self.inner.shared, &self.inner.reader, max, out)
    }
}

impl<T> SpillLog<T> {
    /// Moves the reader back to `seq` (records from `seq` on were read ahead but not handed out):
    /// they are read again by the next [`read_batch`](Self::read_batch). Does nothing if the reader
    /// is not past `seq`. Records are never deleted before they are acknowledged, so they are there.
    pub(crate) fn unread_from(&self, seq: u64) {
        lock(&self.inner.reader).unread_from(seq);
    }
}

/// How long ago record `seq` was written (see [`SpillLog::age_of`]).
fn written_age(shared: &Shared, seq: u64) -> Option<Duration> {
    let state = lock(&shared.state);
    if seq >= state.written_seq {
        return None;
    }
    // The last batch that starts at or before `seq` (the samples are in sequence order; the first
    // one covers the acknowledged position, at or before any record still held).
    let written_ms = state
        .samples
        .iter()
        .take_while(|&&(first, _)| first <= seq)
        .last()
        .or(state.samples.front())
        .map(|&(_, ms)| ms)?;
    Some(Duration::from_millis(now_ms().saturating_sub(written_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_ahead_and_handed_back_are_read_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: the records handed back span a segment boundary.
        let config = SpillConfig::new().segment_bytes(128).budget_bytes(1 << 20);
        let log = SpillLog::<u64>::open(dir.path(), config).unwrap();
        for x in 0..20 {
            log.append(&x).unwrap();
        }
        log.flush().unwrap();
        let mut out = Vec::new();
        assert_eq!(log.read_batch(12, &mut out).unwrap(), 12);
        out.truncate(5);
        log.unread_from(5);
        assert_eq!(log.unread(), 15);
        while log.read_batch(4, &mut out).unwrap() > 0 {}
        let items: Vec<u64> = out.iter().map(|r| r.item).collect();
        assert_eq!(items, (0..20).collect::<Vec<_>>());
        log.unread_from(30); // not past it: nothing happens
        assert!(log.read().unwrap().is_none());
    }
}
