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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Read};
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{FsyncPolicy, OnCorruption, SpillConfig, WhenFull};
use crate::error::SpillError;
use crate::format::{
    FRAME_HEADER_LEN, Frame, LEDGER_FILE, LOCK_FILE, Ledger, Parsed, SEGMENT_HEADER_LEN,
    SegmentHeader, encode_record, now_ms, parse_frame, parse_segment_name, read_frame,
    segment_name,
};
use crate::fs::{AppendFile, DirLock, Filesystem, ReadFile, SegmentBytes};
use crate::metrics::SpillMetrics;

/// Read-ahead of the reader: segment bytes come from disk in sequential reads this large, and
/// records are decoded straight from this buffer. 1 MiB: ~4,000 records of 256 bytes per `read`
/// call, so the system call and the partial frame carried over at the buffer's end are noise. A
/// frame larger than this grows the buffer to fit (at most `max_record_bytes` plus its header).
/// Allocated at the first read, so a log that is only written holds none.
const READ_BUFFER: usize = 1 << 20;

/// Read-ahead of the recovery scan at open.
const RECOVERY_BUFFER: usize = 256 << 10;

/// How far the writer has got, returned by [`SpillLog::flush`] and [`SpillLog::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Every record below this sequence number is written to its segment file (readable, and safe
    /// from a crash of this process).
    pub written: u64,
    /// Every record below this sequence number is also fsynced (safe from a machine crash).
    pub durable: u64,
}

/// One record read back: its sequence number and the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spilled<T> {
    /// The record's sequence number (acknowledge with [`SpillLog::ack_through`]`(seq + 1)`).
    pub seq: u64,
    /// The item.
    pub item: T,
}

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
            .field("dir", &self.inner.dir)
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    config: SpillConfig,
    fs: Arc<dyn Filesystem>,
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
    state: Mutex<State>,
    space: Condvar,
    metrics: Arc<SpillMetrics>,
    _lock: Box<dyn DirLock>,
}

/// The thread that bounds the loss window of [`FsyncPolicy::Interval`] when writes stop: every
/// `every`, if anything is unsynced (a written batch, or one still in memory), it writes the batch
/// and fsyncs, so nothing waits longer than `every`. It holds the log weakly; dropping the last
/// [`SpillLog`] clone stops and joins it, so the log is closed (and its directory unlocked) when
/// that drop returns. A failed write keeps its batch, as any failed write does: the next append,
/// flush or sync (or the next interval) writes it again, and reports the failure if it persists.
struct Syncer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Syncer {
    fn start(inner: &Arc<Inner>, every: Duration) -> Result<Self, SpillError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let log = Arc::downgrade(inner);
        let thread = std::thread::Builder::new()
            .name("weir-spill-sync".into())
            .spawn(move || run_syncer(&log, every, &stopped))
            .map_err(|error| {
                SpillError::io(&inner.dir, "start the interval fsync thread", error)
            })?;
        Ok(Self {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(lock(&self.stop).take());
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run_syncer(log: &Weak<Inner>, every: Duration, stopped: &mpsc::Receiver<()>) {
    // `recv_timeout` returns `Disconnected` once the syncer is dropped.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let Some(inner) = log.upgrade() else { return };
        let mut writer = lock(&inner.writer);
        if lock(&inner.state).closed {
            return;
        }
        let due = writer.unsynced || writer.batch_records > 0;
        if due && let Err(error) = inner.write_batch(&mut writer, true) {
            tracing::warn!(dir = %inner.dir.display(), %error, "interval fsync failed: the batch is kept and written again");
        }
    }
}

struct SegmentInfo {
    path: PathBuf,
    /// Bytes written (and visible to readers).
    bytes: u64,
}

struct State {
    /// Segments by first sequence number; the last one is the writer's.
    segments: BTreeMap<u64, SegmentInfo>,
    written_seq: u64,
    durable_seq: u64,
    acked_seq: u64,
    read_seq: u64,
    disk_bytes: u64,
    ledger: Ledger,
    ledger_at: Instant,
    /// (first sequence number of a batch or segment, its written time in ms).
    samples: VecDeque<(u64, u64)>,
    closed: bool,
}

struct Writer {
    file: Box<dyn AppendFile>,
    active_first: u64,
    active_path: PathBuf,
    /// Bytes in the active segment file.
    active_len: u64,
    next_seq: u64,
    batch: Vec<u8>,
    batch_records: u64,
    batch_first_ms: u64,
    scratch: Vec<u8>,
    last_sync: Instant,
    unsynced: bool,
    /// The last write (or fsync) of `batch` failed: it is written again before anything joins it.
    failed_write: bool,
    /// Cutting a failed write off the active segment failed, so the file may end past
    /// `active_len`: it is cut again before anything else is written to it.
    cut_pending: bool,
    /// Starting a new segment failed: the next append starts it before anything else.
    roll_pending: bool,
}

struct Cursor {
    first_seq: u64,
    path: PathBuf,
    source: Source,
    /// The segment offset of the first unconsumed byte (for [`Source::Read`], the start of the
    /// reader's [`ReadBuf`]).
    offset: u64,
    /// Visible bytes of the segment when last looked at.
    limit: u64,
    /// The sequence number of the record at `offset`.
    seq: u64,
    /// The framing was lost (skip mode): read nothing more from this segment.
    dead: bool,
}

struct Reader {
    /// The next sequence number to deliver.
    next_seq: u64,
    current: Option<Cursor>,
    /// The current segment's bytes from `current.offset` on.
    buf: ReadBuf,
    /// A corruption the reader stopped at (fail mode): reported again on every read.
    poisoned: Option<(PathBuf, u64, String)>,
}

/// Where a cursor's bytes come from.
enum Source {
    /// `read(2)` into the reader's [`ReadBuf`]: the active segment, which is still being written,
    /// and every segment when mapped reads are off or the filesystem does not map.
    Read(Box<dyn ReadFile>),
    /// The whole sealed segment (`[0, limit)`) in memory, mapped by
    /// [`Filesystem::map_sealed`]: records are checked and decoded in place, without the kernel's
    /// copy into the read-ahead buffer.
    Mapped(SegmentBytes),
}

/// The unconsumed bytes of a cursor at segment offset `offset` (for [`Source::Read`], possibly
/// some past its limit: [`parse_frame`] is given the limit) and the index of the first one in
/// [`Reader::bytes`].
#[inline]
fn window<'a>(buf: &'a ReadBuf, source: &'a Source, offset: u64) -> (&'a [u8], usize) {
    match source {
        Source::Read(_) => (buf.available(), buf.start),
        Source::Mapped(bytes) => {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            ((**bytes).as_ref().get(at..).unwrap_or_default(), at)
        }
    }
}

impl Reader {
    /// The bytes that [`Inner::next_frame`]'s payload ranges index.
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self.current.as_ref().map(|cursor| &cursor.source) {
            Some(Source::Mapped(bytes)) => (**bytes).as_ref(),
            _ => &self.buf.bytes,
        }
    }
}

/// The reader's read-ahead: `bytes[start..end]` are segment bytes not yet consumed.
struct ReadBuf {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn available(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes at least `need` bytes available from `file`, whose next byte is at segment offset
    /// `offset + available`, reading as many as fit in one large sequential read but never past
    /// `limit` (bytes past it may be a batch still being written). `need` must not reach past the
    /// limit; a file shorter than its published length is an I/O error.
    fn fill(
        &mut self,
        file: &mut dyn ReadFile,
        offset: u64,
        limit: u64,
        need: usize,
    ) -> io::Result<()> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.bytes.len() - self.start < need {
            // Carry the partial frame over to the front (and grow for an outsized frame).
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.bytes.len() < need {
                // Exactly: `SpillLog::max_buffer_bytes` counts this buffer at its size.
                let size = need.max(READ_BUFFER);
                self.bytes.reserve_exact(size - self.bytes.len());
                self.bytes.resize(size, 0);
            }
        }
        let file_pos = offset + (self.end - self.start) as u64;
        let mut readable = limit.saturating_sub(file_pos);
        while self.end - self.start < need {
            let room =
                (self.bytes.len() - self.end).min(usize::try_from(readable).unwrap_or(usize::MAX));
            if room == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a frame reaches past the segment's written length",
                ));
            }
            let n = match file.read(&mut self.bytes[self.end..self.end + room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the segment file is shorter than its written length",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            readable -= n as u64;
        }
        Ok(())
    }
}

/// An [`Extend`] that keeps the one record [`SpillLog::read`] asks for.
struct One<T>(Option<T>);

impl<T> Extend<T> for One<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        if let Some(item) = iter.into_iter().last() {
            self.0 = Some(item);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the log inconsistent on disk; keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> SpillLog<T> {
    /// Opens (or creates) the log in `dir`: creates the directory, locks it, reads the ledger, scans
    /// the last segment (a torn tail is truncated, counted and logged) and writes the ledger back,
    /// which proves the directory writable. Errors name the directory or file and what failed.
    pub fn open(dir: impl AsRef<Path>, config: SpillConfig) -> Result<Self, SpillError> {
        let inner = Arc::new(Inner::open(dir.as_ref(), config)?);
        let syncer = match inner.config.fsync {
            FsyncPolicy::Interval(every) => Some(Arc::new(Syncer::start(&inner, every)?)),
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
        &self.inner.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &SpillConfig {
        &self.inner.config
    }

    /// The live counters.
    pub fn metrics(&self) -> Arc<SpillMetrics> {
        self.inner.metrics.clone()
    }

    /// The most bytes the log's own buffers hold: the reader's read-ahead (1 MiB, or one frame
    /// of `max_record_bytes` if that is larger), the writer's batch (a batch is written once it
    /// reaches `batch_bytes`, so at most that plus one frame) and the buffer an item is encoded
    /// into (one record). Allocated as they are first used. Mapped sealed segments
    /// ([`SpillConfig::mapped_reads`]) are page cache, not counted.
    pub fn max_buffer_bytes(&self) -> u64 {
        let config = &self.inner.config;
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
        self.inner.write_batch(&mut lock(&self.inner.writer), false)
    }

    /// Writes the current batch and fsyncs, whatever the policy.
    pub fn sync(&self) -> Result<Written, SpillError> {
        self.inner.write_batch(&mut lock(&self.inner.writer), true)
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
        self.inner.ack_through(seq)
    }

    /// Records appended but not yet read.
    pub fn unread(&self) -> u64 {
        let next = lock(&self.inner.writer).next_seq;
        next.saturating_sub(lock(&self.inner.reader).next_seq)
    }

    /// Records written but not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let state = lock(&self.inner.state);
        state.written_seq.saturating_sub(state.acked_seq)
    }

    /// The acknowledged position: every record below it is acknowledged.
    pub fn acked(&self) -> u64 {
        lock(&self.inner.state).acked_seq
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.writer).next_seq
    }

    /// Records accepted by [`append`](Self::append) whose write failed, held by the log until a
    /// later write succeeds or [`take_unwritten`](Self::take_unwritten) takes them back.
    pub fn unwritten(&self) -> u64 {
        let writer = lock(&self.inner.writer);
        if writer.failed_write {
            writer.batch_records
        } else {
            0
        }
    }

    /// Gives up the records whose write failed (see [`unwritten`](Self::unwritten)): they are
    /// counted in `dropped_unwritten` and logged, and the log continues as if they had never been
    /// appended. Returns how many. For a writer that reports them lost itself (the sink, which
    /// fails its stream naming the count).
    pub(crate) fn discard_unwritten(&self) -> u64 {
        let mut writer = lock(&self.inner.writer);
        let dropped = self.inner.forget_unwritten(&mut writer);
        if dropped > 0 {
            SpillMetrics::add(&self.inner.metrics.dropped_unwritten, dropped);
            tracing::error!(dir = %self.inner.dir.display(), records = dropped, "spill records accepted but never written were given up");
        }
        dropped
    }

    /// Flushes, fsyncs and persists the ledger. Appends afterwards fail with [`SpillError::Closed`].
    /// Dropping the last clone does the same, logging instead of returning errors.
    pub fn close(&self) -> Result<Written, SpillError> {
        self.inner.close()
    }
}

impl<T: Serialize> SpillLog<T> {
    /// Appends `item` to the current batch and returns its sequence number; when the budget is
    /// full, [`WhenFull`] decides (block with a timeout, or reject). The record is acknowledged as
    /// written once [`flush`](Self::flush) (or [`sync`](Self::sync)) reports it in [`Written`].
    ///
    /// `Ok` means the log holds the record: it is written with its batch, or, if that write fails,
    /// kept and written again (never forgotten). An error means the item was not appended. A full
    /// batch is written before the next record joins it, so a failed write refuses the *next*
    /// item, with [`SpillError::Unwritten`] saying how many accepted records wait to be written.
    pub fn append(&self, item: &T) -> Result<u64, SpillError> {
        let wait = match self.inner.config.when_full {
            WhenFull::Reject => None,
            WhenFull::Block { timeout } => Some(timeout),
        };
        self.inner.append(item, wait)
    }

    /// Like [`append`](Self::append) but never waits: a full budget is [`SpillError::BudgetFull`].
    pub fn try_append(&self, item: &T) -> Result<u64, SpillError> {
        self.inner.append(item, None)
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
        let inner = &*self.inner;
        let mut writer = lock(&inner.writer);
        if !writer.failed_write {
            return 0;
        }
        let first = writer.next_seq - writer.batch_records;
        let max_record = inner.config.max_record_bytes;
        let mut rest = &writer.batch[..];
        let mut seq = first;
        while let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
            parse_frame(rest, rest.len() as u64, max_record)
        {
            match postcard::from_bytes::<T>(payload) {
                Ok(item) => out.extend(std::iter::once(Spilled { seq, item })),
                Err(source) => {
                    SpillMetrics::add(&inner.metrics.corruptions, 1);
                    tracing::warn!(dir = %inner.dir.display(), seq, %source, "an unwritten spill record does not decode");
                }
            }
            rest = &rest[frame_len as usize..];
            seq += 1;
        }
        inner.forget_unwritten(&mut writer)
    }

    /// The next unread record, or `None` when the reader has caught up with what is written
    /// (call [`flush`](Self::flush) first to read your own recent appends). Corrupt data in the
    /// middle of a segment fails with [`SpillError::Corrupt`] (naming file and offset), or is skipped
    /// and counted under [`OnCorruption::Skip`]. [`read_batch`](Self::read_batch) is the fast path.
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
    pub fn read_batch(
        &self,
        max: usize,
        out: &mut impl Extend<Spilled<T>>,
    ) -> Result<usize, SpillError> {
        let inner = &*self.inner;
        let max_record = inner.config.max_record_bytes;
        let mut guard = lock(&inner.reader);
        let reader = &mut *guard;
        let mut delivered = 0usize;
        let mut read_through = None;
        let mut outcome = Ok(());
        'batch: while delivered < max {
            // The hot loop: whole records with a good CRC, checked and decoded in place from the
            // current window (the mapped segment or the read-ahead). It stops at anything else,
            // which the general path below then handles from the same bytes.
            let Reader {
                next_seq,
                current,
                buf,
                poisoned,
            } = &mut *reader;
            if poisoned.is_none()
                && let Some(cursor) = current.as_mut()
                && !cursor.dead
            {
                let start = cursor.offset;
                let remaining = cursor.limit.saturating_sub(start);
                let (bytes, _) = window(buf, &cursor.source, start);
                let mut consumed = 0u64;
                let mut seq = cursor.seq;
                while delivered < max {
                    let rest = bytes.get(consumed as usize..).unwrap_or_default();
                    let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
                        parse_frame(rest, remaining - consumed, max_record)
                    else {
                        break;
                    };
                    let offset = start + consumed;
                    consumed += frame_len;
                    seq += 1;
                    if seq <= *next_seq {
                        continue; // acknowledged before the restart
                    }
                    *next_seq = seq;
                    match inner.deliver(seq - 1, offset, payload, &cursor.path, out) {
                        Ok(true) => {
                            delivered += 1;
                            read_through = Some(seq);
                        }
                        Ok(false) => {}
                        Err(error) => {
                            outcome = Err(error);
                            break;
                        }
                    }
                }
                cursor.offset += consumed;
                cursor.seq = seq;
                if let Source::Read(_) = cursor.source {
                    buf.consume(consumed as usize);
                }
                if outcome.is_err() || delivered >= max {
                    break 'batch;
                }
            }
            // The general path, one record at a time.
            let (seq, offset, payload) = match inner.next_frame(reader) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            };
            reader.next_seq = seq + 1;
            let payload = reader.bytes().get(payload).unwrap_or_default();
            let path = reader.current.as_ref().map(|cursor| cursor.path.as_path());
            match inner.deliver(seq, offset, payload, path.unwrap_or(Path::new("")), out) {
                Ok(true) => {
                    delivered += 1;
                    read_through = Some(seq + 1);
                }
                Ok(false) => {}
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        drop(guard);
        if let Some(read_through) = read_through {
            SpillMetrics::add(&inner.metrics.replayed_records, delivered as u64);
            let mut state = lock(&inner.state);
            state.read_seq = state.read_seq.max(read_through);
        }
        outcome.map(|()| delivered)
    }
}

impl<T> SpillLog<T> {
    /// Moves the reader back to `seq` (records from `seq` on were read ahead but not handed out):
    /// they are read again by the next [`read_batch`](Self::read_batch). Does nothing if the reader
    /// is not past `seq`. Records are never deleted before they are acknowledged, so they are there.
    pub(crate) fn unread_from(&self, seq: u64) {
        let mut reader = lock(&self.inner.reader);
        if seq < reader.next_seq {
            reader.next_seq = seq;
            reader.current = None;
            reader.buf.clear();
            // Re-reading finds (and reports) any corruption again, at its place in the order.
            reader.poisoned = None;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(dir = %self.dir.display(), %error, "closing the spill log failed");
        }
    }
}

impl Inner {
    /// Decodes record `seq` (at `offset` in the segment file `path`) into `out`. Returns whether it
    /// was delivered: a record that does not decode is counted and logged, then skipped (`false`)
    /// or, under [`OnCorruption::Fail`], the error.
    #[inline(always)]
    fn deliver<T: DeserializeOwned>(
        &self,
        seq: u64,
        offset: u64,
        payload: &[u8],
        path: &Path,
        out: &mut impl Extend<Spilled<T>>,
    ) -> Result<bool, SpillError> {
        match postcard::from_bytes::<T>(payload) {
            Ok(item) => {
                out.extend(std::iter::once(Spilled { seq, item }));
                Ok(true)
            }
            Err(source) => {
                SpillMetrics::add(&self.metrics.corruptions, 1);
                tracing::warn!(file = %path.display(), offset, seq, %source, "spill record does not decode");
                if self.config.on_corruption == OnCorruption::Fail {
                    return Err(SpillError::Decode {
                        file: path.to_path_buf(),
                        offset,
                        seq,
                        source,
                    });
                }
                Ok(false)
            }
        }
    }

    fn open(dir: &Path, config: SpillConfig) -> Result<Self, SpillError> {
        config.validate()?;
        let fs = config.fs.clone();
        let metrics = Arc::new(SpillMetrics::default());
        SpillMetrics::set(&metrics.budget_bytes, config.budget_bytes);
        fs.create_dir_all(dir)
            .map_err(|e| SpillError::io(dir, "create directory", e))?;
        let lock_path = dir.join(LOCK_FILE);
        let dir_lock = match fs.try_lock(&lock_path) {
            Ok(held) => held,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SpillError::Locked { dir: dir.into() });
            }
            Err(e) => return Err(SpillError::io(lock_path, "lock directory", e)),
        };

        // The ledger.
        let ledger_path = dir.join(LEDGER_FILE);
        let ledger = match fs.read(&ledger_path) {
            Ok(bytes) => match Ledger::decode(&bytes) {
                Ok(ledger) => ledger,
                Err(reason) => {
                    SpillMetrics::add(&metrics.corruptions, 1);
                    if config.on_corruption == OnCorruption::Fail {
                        return Err(SpillError::Corrupt {
                            file: ledger_path,
                            offset: 0,
                            reason,
                        });
                    }
                    tracing::warn!(file = %ledger_path.display(), %reason, "corrupt spill ledger: replaying every segment");
                    Ledger::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ledger::default(),
            Err(e) => return Err(SpillError::io(ledger_path, "read ledger", e)),
        };

        // The segments.
        let mut segments = BTreeMap::new();
        for path in fs
            .list(dir)
            .map_err(|e| SpillError::io(dir, "list directory", e))?
        {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(first_seq) = parse_segment_name(name) {
                let bytes = fs
                    .len(&path)
                    .map_err(|e| SpillError::io(&path, "stat segment", e))?;
                segments.insert(first_seq, SegmentInfo { path, bytes });
            }
        }

        // Recover the last segment: its valid records give the next sequence number.
        let mut samples = VecDeque::new();
        let mut next_seq = ledger.next_seq.max(ledger.acked_seq);
        if let Some((&first_seq, info)) = segments.iter_mut().next_back() {
            let recovered = recover_last(&*fs, &config, &metrics, first_seq, info)?;
            next_seq = first_seq + recovered.records;
            if let Some(ms) = recovered.first_written_ms {
                samples.push_back((first_seq, ms));
            }
        }
        for (&first_seq, info) in segments.iter().rev().skip(1) {
            if let Ok(header) = read_header(&*fs, &info.path) {
                samples.push_front((first_seq, header.created_ms));
            }
        }
        let acked_seq = ledger.acked_seq.min(next_seq);

        let mut state = State {
            segments,
            written_seq: next_seq,
            durable_seq: next_seq,
            acked_seq,
            read_seq: acked_seq,
            disk_bytes: 0,
            ledger,
            ledger_at: Instant::now(),
            samples,
            closed: false,
        };

        // The writer: append to the last segment, or start one.
        let (active_first, active_path, active_len, file) = match state.segments.iter().next_back()
        {
            Some((&first, info)) if info.bytes >= SEGMENT_HEADER_LEN => {
                let file = fs
                    .open_append(&info.path)
                    .map_err(|e| SpillError::io(&info.path, "open segment for append", e))?;
                (first, info.path.clone(), info.bytes, file)
            }
            _ => {
                let (path, file) = create_segment(&*fs, dir, next_seq, config.fsync)?;
                state.segments.insert(
                    next_seq,
                    SegmentInfo {
                        path: path.clone(),
                        bytes: SEGMENT_HEADER_LEN,
                    },
                );
                (next_seq, path, SEGMENT_HEADER_LEN, file)
            }
        };
        state.disk_bytes = state.segments.values().map(|s| s.bytes).sum();

        let inner = Inner {
            dir: dir.into(),
            fs,
            writer: Mutex::new(Writer {
                file,
                active_first,
                active_path,
                active_len,
                next_seq,
                batch: Vec::with_capacity(config.batch_bytes.min(4 << 20) + 4096),
                batch_records: 0,
                batch_first_ms: 0,
                scratch: Vec::new(),
                last_sync: Instant::now(),
                unsynced: false,
                failed_write: false,
                cut_pending: false,
                roll_pending: false,
            }),
            reader: Mutex::new(Reader {
                next_seq: acked_seq,
                current: None,
                buf: ReadBuf {
                    bytes: Vec::new(),
                    start: 0,
                    end: 0,
                },
                poisoned: None,
            }),
            config,
            state: Mutex::new(state),
            space: Condvar::new(),
            metrics,
            _lock: dir_lock,
        };
        {
            // Delete what the ledger says is acknowledged, then persist the ledger: this also proves
            // that the directory is writable and the disk not full, at open time.
            let mut state = lock(&inner.state);
            inner.delete_acked_segments(&mut state);
            inner.persist_ledger(&mut state, next_seq)?;
            inner.publish_gauges(&mut state);
        }
        Ok(inner)
    }

    fn append<T: Serialize>(&self, item: &T, wait: Option<Duration>) -> Result<u64, SpillError> {
        let mut writer = lock(&self.writer);
        let w = &mut *writer;
        w.scratch.clear();
        let payload = postcard::to_extend(item, std::mem::take(&mut w.scratch))
            .map_err(SpillError::Encode)?;
        let result = self.append_encoded(w, &payload, wait);
        w.scratch = payload;
        result
    }

    fn append_encoded(
        &self,
        w: &mut Writer,
        payload: &[u8],
        wait: Option<Duration>,
    ) -> Result<u64, SpillError> {
        if payload.len() > self.config.max_record_bytes as usize {
            return Err(SpillError::RecordTooLarge {
                size: payload.len(),
                max: self.config.max_record_bytes,
            });
        }
        // What must be written before this record joins the batch: a full batch, or one whose
        // write failed (written again now). If that fails, this record is refused and the batch
        // kept: `Ok` below is only ever returned for a record the log holds.
        if w.failed_write
            || w.batch_records >= self.config.batch_records as u64
            || w.batch.len() >= self.config.batch_bytes
        {
            self.write_batch(w, false)?;
        }
        let frame = FRAME_HEADER_LEN + payload.len() as u64;
        let roll = w.roll_pending
            || (w.active_len + w.batch.len() as u64 > SEGMENT_HEADER_LEN
                && w.active_len + w.batch.len() as u64 + frame > self.config.segment_bytes);
        let needed = frame + if roll { SEGMENT_HEADER_LEN } else { 0 };
        self.reserve(w, needed, wait)?;
        if roll {
            self.roll(w)?;
        }
        let ms = now_ms();
        if w.batch_records == 0 {
            w.batch_first_ms = ms;
        }
        encode_record(&mut w.batch, payload, ms);
        w.batch_records += 1;
        let seq = w.next_seq;
        w.next_seq += 1;
        Ok(seq)
    }

    /// Waits (or refuses) until `needed` more bytes fit in the budget.
    fn reserve(
        &self,
        w: &mut Writer,
        needed: u64,
        wait: Option<Duration>,
    ) -> Result<(), SpillError> {
        let budget = self.config.budget_bytes;
        {
            let state = lock(&self.state);
            if state.closed {
                return Err(SpillError::Closed);
            }
            if state.disk_bytes + w.batch.len() as u64 + needed <= budget {
                return Ok(());
            }
        }
        // Make what is batched readable, so that readers can consume and acknowledge it; and, under
        // `Interval`, durable: the syncer cannot take the writer while this waits.
        let sync = wait.is_some() && matches!(self.config.fsync, FsyncPolicy::Interval(_));
        self.write_batch(w, sync)?;
        let started = Instant::now();
        let mut state = lock(&self.state);
        loop {
            if state.disk_bytes + needed <= budget {
                return Ok(());
            }
            let left = wait.and_then(|timeout| timeout.checked_sub(started.elapsed()));
            match left {
                Some(left) if !left.is_zero() && !state.closed => {
                    state = self
                        .space
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ => {
                    SpillMetrics::add(&self.metrics.budget_rejections, 1);
                    let used = state.disk_bytes;
                    drop(state);
                    tracing::warn!(dir = %self.dir.display(), used, budget, "spill budget full");
                    return Err(match wait {
                        None => SpillError::BudgetFull {
                            budget,
                            used,
                            needed,
                        },
                        Some(_) => SpillError::BudgetTimeout {
                            waited: started.elapsed(),
                            budget,
                            used,
                        },
                    });
                }
            }
        }
    }

    /// Seals the active segment and starts a new one at the next sequence number. A failure leaves
    /// the active segment as it was, and the next append rolls first: nothing more goes into the
    /// old segment, since a half-made new one (started over by that roll) already claims the next
    /// sequence number by its name, and recovery trusts the last segment's name.
    fn roll(&self, w: &mut Writer) -> Result<(), SpillError> {
        let sync_sealed = self.config.fsync != FsyncPolicy::Never;
        self.write_batch(w, sync_sealed)?;
        let created = create_segment(&*self.fs, &self.dir, w.next_seq, self.config.fsync);
        w.roll_pending = created.is_err();
        let (path, file) =
            created.inspect_err(|_| SpillMetrics::add(&self.metrics.write_failures, 1))?;
        w.file = file;
        w.active_first = w.next_seq;
        w.active_path = path.clone();
        w.active_len = SEGMENT_HEADER_LEN;
        w.unsynced = false;
        let mut state = lock(&self.state);
        state.segments.insert(
            w.next_seq,
            SegmentInfo {
                path,
                bytes: SEGMENT_HEADER_LEN,
            },
        );
        state.disk_bytes += SEGMENT_HEADER_LEN;
        state.samples.push_back((w.next_seq, now_ms()));
        // The sealed segment may already be wholly acknowledged (the reader kept up): free it now,
        // not at the next acknowledgement, or acknowledged data holds budget that appends need.
        if self.delete_acked_segments(&mut state) {
            if let Err(error) = self.persist_ledger(&mut state, w.next_seq) {
                // Only the ledger's copy of the acknowledged position lags; the next
                // acknowledgement or the close writes it again.
                tracing::warn!(dir = %self.dir.display(), %error, "could not persist the spill ledger after freeing a segment");
            }
            self.space.notify_all();
        }
        self.publish_gauges(&mut state);
        Ok(())
    }

    /// Writes the batch, fsyncs per policy (or if `force_sync`), and publishes the new positions.
    /// A failure publishes nothing and loses nothing: see [`write_failed`](Self::write_failed).
    fn write_batch(&self, w: &mut Writer, force_sync: bool) -> Result<Written, SpillError> {
        let written_bytes = w.batch.len() as u64;
        let records = w.batch_records;
        if w.cut_pending {
            // Appending after the rest of a failed write would break the framing: cut it first.
            if let Err(error) = self.fs.truncate(&w.active_path, w.active_len) {
                return Err(self.write_failed(w, "cut a failed write", error));
            }
            w.cut_pending = false;
        }
        if written_bytes > 0
            && let Err(error) = w.file.write_all(&w.batch)
        {
            return Err(self.write_failed(w, "write batch", error));
        }
        let sync = (written_bytes > 0 || w.unsynced)
            && (force_sync
                || match self.config.fsync {
                    FsyncPolicy::EveryBatch => true,
                    FsyncPolicy::Interval(every) => w.last_sync.elapsed() >= every,
                    FsyncPolicy::Never => false,
                });
        if sync && let Err(error) = w.file.sync_data() {
            return Err(self.write_failed(w, "fsync segment", error));
        }
        w.active_len += written_bytes;
        if sync {
            w.last_sync = Instant::now();
            w.unsynced = false;
        } else if written_bytes > 0 {
            w.unsynced = true;
        }
        let first_seq = w.next_seq - records;
        let first_ms = w.batch_first_ms;
        w.batch.clear();
        w.batch_records = 0;
        if w.failed_write {
            w.failed_write = false;
            SpillMetrics::set(&self.metrics.unwritten_records, 0);
        }
        let mut state = lock(&self.state);
        if let Some(info) = state.segments.get_mut(&w.active_first) {
            info.bytes = w.active_len;
        }
        state.disk_bytes += written_bytes;
        state.written_seq = w.next_seq;
        if sync {
            state.durable_seq = w.next_seq;
        }
        if records > 0 {
            state.samples.push_back((first_seq, first_ms));
            SpillMetrics::add(&self.metrics.spilled_records, records);
            SpillMetrics::add(&self.metrics.spilled_bytes, written_bytes);
        }
        self.publish_gauges(&mut state);
        Ok(Written {
            written: state.written_seq,
            durable: state.durable_seq,
        })
    }

    /// A write (or fsync) of the batch failed: counts it, cuts off whatever part of the batch
    /// reached the file (so that it ends at the last published record: nothing half-written is
    /// read, or appended after) and keeps the batch, to be written again before anything joins it.
    /// Under [`FsyncPolicy::Interval`] and [`FsyncPolicy::Never`], batches written earlier and not
    /// yet fsynced stay published: their fsync is retried with the next one (`durable` does not
    /// move until then).
    fn write_failed(&self, w: &mut Writer, stage: &'static str, error: io::Error) -> SpillError {
        SpillMetrics::add(&self.metrics.write_failures, 1);
        let error = SpillError::io(&w.active_path, stage, error);
        if w.batch_records == 0 {
            tracing::warn!(%error, "spill write failed");
            return error;
        }
        w.failed_write = true;
        SpillMetrics::set(&self.metrics.unwritten_records, w.batch_records);
        match self.fs.truncate(&w.active_path, w.active_len) {
            Ok(()) => w.cut_pending = false,
            Err(cut) => {
                w.cut_pending = true;
                tracing::warn!(file = %w.active_path.display(), %cut, "could not cut a failed write off the spill segment: it is cut again before the next write");
            }
        }
        tracing::warn!(records = w.batch_records, %error, "spill batch write failed: the records are kept and written again");
        SpillError::Unwritten {
            records: w.batch_records,
            source: Box::new(error),
        }
    }

    /// Forgets the batch whose write failed, as if its records had never been appended (their
    /// sequence numbers are given out again). Returns how many records it held.
    fn forget_unwritten(&self, w: &mut Writer) -> u64 {
        if !w.failed_write {
            return 0;
        }
        let records = w.batch_records;
        w.next_seq -= records;
        w.batch.clear();
        w.batch_records = 0;
        w.failed_write = false;
        SpillMetrics::set(&self.metrics.unwritten_records, 0);
        records
    }

    fn ack_through(&self, seq: u64) -> Result<(), SpillError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(SpillError::Closed);
        }
        let seq = seq.min(state.read_seq);
        if seq <= state.acked_seq {
            return Ok(());
        }
        SpillMetrics::add(&self.metrics.acked_records, seq - state.acked_seq);
        state.acked_seq = seq;
        let deleted = self.delete_acked_segments(&mut state);
        let due = deleted
            || state.acked_seq - state.ledger.acked_seq >= self.config.ledger_every
            || state.ledger_at.elapsed() >= self.config.ledger_interval;
        if due {
            let next = state.written_seq;
            if let Err(error) = self.persist_ledger(&mut state, next) {
                // The acknowledgement holds in memory; only the ledger's copy lags (records
                // acknowledged since its last write are replayed after a crash: at-least-once).
                // The next acknowledgement or the close writes it again.
                SpillMetrics::add(&self.metrics.write_failures, 1);
                tracing::warn!(dir = %self.dir.display(), %error, "could not persist the spill ledger");
            }
        }
        self.publish_gauges(&mut state);
        if deleted {
            self.space.notify_all();
        }
        Ok(())
    }

    /// Deletes sealed segments whose every record is acknowledged. Returns whether any went.
    fn delete_acked_segments(&self, state: &mut State) -> bool {
        let mut deleted = false;
        loop {
            let mut firsts = state.segments.keys();
            let (Some(_), Some(&second)) = (firsts.next(), firsts.next()) else {
                break;
            };
            if second > state.acked_seq {
                break;
            }
            let Some((_, info)) = state.segments.pop_first() else {
                break;
            };
            if let Err(error) = self.fs.remove(&info.path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = %info.path.display(), %error, "could not delete an acknowledged spill segment");
            }
            state.disk_bytes -= info.bytes.min(state.disk_bytes);
            deleted = true;
        }
        deleted
    }

    fn persist_ledger(&self, state: &mut State, next_seq: u64) -> Result<(), SpillError> {
        let ledger = Ledger {
            acked_seq: state.acked_seq,
            read_seq: state.read_seq,
            next_seq,
        };
        let path = self.dir.join(LEDGER_FILE);
        self.fs
            .write_atomic(&path, &ledger.encode())
            .map_err(|e| SpillError::io(path, "write ledger", e))?;
        state.ledger = ledger;
        state.ledger_at = Instant::now();
        Ok(())
    }

    fn publish_gauges(&self, state: &mut State) {
        while state.samples.len() >= 2 && state.samples[1].0 <= state.acked_seq {
            state.samples.pop_front();
        }
        let oldest = if state.acked_seq >= state.written_seq {
            0
        } else {
            state.samples.front().map_or(0, |&(_, ms)| ms + 1)
        };
        let m = &self.metrics;
        SpillMetrics::set(&m.oldest_ms, oldest);
        SpillMetrics::set(&m.disk_bytes, state.disk_bytes);
        SpillMetrics::set(&m.segments, state.segments.len() as u64);
    }

    fn close(&self) -> Result<Written, SpillError> {
        let mut writer = lock(&self.writer);
        if lock(&self.state).closed {
            let state = lock(&self.state);
            return Ok(Written {
                written: state.written_seq,
                durable: state.durable_seq,
            });
        }
        let written = self.write_batch(&mut writer, true);
        // The last chance to write what was appended: what fails now is lost, and counted.
        let dropped = self.forget_unwritten(&mut writer);
        if dropped > 0 {
            SpillMetrics::add(&self.metrics.dropped_unwritten, dropped);
            tracing::error!(dir = %self.dir.display(), records = dropped, "closing the spill log: records accepted but never written are lost");
        }
        let mut state = lock(&self.state);
        state.closed = true;
        let next = writer.next_seq;
        let ledger = self.persist_ledger(&mut state, next);
        self.space.notify_all();
        let written = written?;
        ledger?;
        Ok(written)
    }

    /// Finds the next whole record for `reader` and consumes it. Returns its sequence number, its
    /// offset in the segment and where its payload is in `reader.bytes()` (valid until the next
    /// call).
    /// The general path of [`SpillLog::read_batch`], for every case its hot loop leaves: opening
    /// segments, refilling the read-ahead, moving on to the next segment, and bad frames.
    #[inline(never)]
    fn next_frame(
        &self,
        reader: &mut Reader,
    ) -> Result<Option<(u64, u64, Range<usize>)>, SpillError> {
        if let Some((file, offset, reason)) = &reader.poisoned {
            return Err(SpillError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            });
        }
        let max_record = self.config.max_record_bytes;
        loop {
            if reader.current.is_none() {
                let target = {
                    let state = lock(&self.state);
                    if reader.next_seq >= state.written_seq {
                        return Ok(None);
                    }
                    let found = state
                        .segments
                        .range(..=reader.next_seq)
                        .next_back()
                        .or_else(|| state.segments.iter().next());
                    let last = state.segments.keys().next_back().copied();
                    match found {
                        None => return Ok(None),
                        Some((&first, info)) => {
                            (first, info.path.clone(), info.bytes, Some(first) != last)
                        }
                    }
                };
                let (first, path, limit, sealed) = target;
                reader.next_seq = reader.next_seq.max(first);
                match self.open_cursor(first, path, limit, sealed, &mut reader.buf) {
                    Ok(cursor) => reader.current = Some(cursor),
                    Err(OpenCursor::Gone) => continue,
                    Err(OpenCursor::Failed(error)) => return Err(error),
                    Err(OpenCursor::BadHeader(path, reason)) => {
                        SpillMetrics::add(&self.metrics.corruptions, 1);
                        tracing::warn!(file = %path.display(), %reason, "corrupt spill segment header");
                        if self.config.on_corruption == OnCorruption::Fail {
                            reader.poisoned = Some((path.clone(), 0, reason.clone()));
                            return Err(SpillError::Corrupt {
                                file: path,
                                offset: 0,
                                reason,
                            });
                        }
                        match self.next_segment_after(first) {
                            Some(next) => reader.next_seq = reader.next_seq.max(next),
                            None => return Ok(None),
                        }
                        continue;
                    }
                }
            }
            let Some(cursor) = reader.current.as_mut() else {
                continue;
            };
            if cursor.dead || cursor.offset >= cursor.limit {
                // Look again: the writer may have written more, or moved on.
                let state = lock(&self.state);
                let is_last = state.segments.keys().next_back() == Some(&cursor.first_seq);
                match state.segments.get(&cursor.first_seq) {
                    Some(info) if !cursor.dead && info.bytes > cursor.offset => {
                        cursor.limit = info.bytes;
                    }
                    Some(_) if is_last => return Ok(None),
                    _ => {
                        let next = state
                            .segments
                            .range(cursor.first_seq + 1..)
                            .next()
                            .map(|(&first, _)| first);
                        drop(state);
                        if let Some(next) = next {
                            reader.next_seq = reader.next_seq.max(next);
                        }
                        reader.current = None;
                        continue;
                    }
                }
            }
            let offset = cursor.offset;
            let remaining = cursor.limit - offset;
            let (bytes, at) = window(&reader.buf, &cursor.source, offset);
            let frame = match parse_frame(bytes, remaining, max_record) {
                Parsed::Frame(frame, _) => frame,
                Parsed::Incomplete { needed } => {
                    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
                    let filled = match &mut cursor.source {
                        Source::Read(file) => {
                            reader
                                .buf
                                .fill(&mut **file, cursor.offset, cursor.limit, needed)
                        }
                        // A mapped window holds every byte up to the limit: never incomplete.
                        Source::Mapped(_) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "a frame reaches past the mapped segment",
                        )),
                    };
                    filled.map_err(|e| SpillError::io(&cursor.path, "read segment", e))?;
                    continue;
                }
            };
            let mapped = matches!(cursor.source, Source::Mapped(_));
            let reason = match frame {
                Frame::Record { frame_len, .. } => {
                    let payload = at + FRAME_HEADER_LEN as usize..at + frame_len as usize;
                    if !mapped {
                        reader.buf.consume(frame_len as usize);
                    }
                    cursor.offset += frame_len;
                    let seq = cursor.seq;
                    cursor.seq += 1;
                    if seq < reader.next_seq {
                        continue; // acknowledged before the restart
                    }
                    return Ok(Some((seq, offset, payload)));
                }
                Frame::End => continue,
                Frame::BadCrc {
                    stored,
                    computed,
                    frame_len,
                } => {
                    let reason = format!(
                        "record crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                    );
                    if self.config.on_corruption == OnCorruption::Skip {
                        SpillMetrics::add(&self.metrics.corruptions, 1);
                        tracing::warn!(file = %cursor.path.display(), offset, %reason, "skipping a corrupt spill record");
                        if !mapped {
                            reader.buf.consume(frame_len as usize);
                        }
                        cursor.offset += frame_len;
                        cursor.seq += 1;
                        reader.next_seq = reader.next_seq.max(cursor.seq);
                        continue;
                    }
                    reason
                }
                Frame::BadLength { len } => {
                    format!("record length {len} exceeds the maximum {max_record}")
                }
                Frame::Torn { remaining } => {
                    format!("record cut short: {remaining} bytes before the end of written data")
                }
            };
            // The framing is lost (or the policy is to fail).
            SpillMetrics::add(&self.metrics.corruptions, 1);
            tracing::warn!(file = %cursor.path.display(), offset, %reason, "corrupt spill segment");
            if self.config.on_corruption == OnCorruption::Fail {
                reader.poisoned = Some((cursor.path.clone(), offset, reason.clone()));
                return Err(SpillError::Corrupt {
                    file: cursor.path.clone(),
                    offset,
                    reason,
                });
            }
            cursor.dead = true;
        }
    }

    fn next_segment_after(&self, first: u64) -> Option<u64> {
        lock(&self.state)
            .segments
            .range(first + 1..)
            .next()
            .map(|(&f, _)| f)
    }

    /// Opens the segment starting at `first` and checks its header. A `sealed` segment (not the
    /// last: never written again) is mapped when the configuration and the filesystem allow;
    /// otherwise `buf` becomes its read-ahead.
    fn open_cursor(
        &self,
        first: u64,
        path: PathBuf,
        limit: u64,
        sealed: bool,
        buf: &mut ReadBuf,
    ) -> Result<Cursor, OpenCursor> {
        let mapped = if sealed && self.config.mapped_reads && limit >= SEGMENT_HEADER_LEN {
            match self.fs.map_sealed(&path, limit) {
                Ok(mapped) => mapped,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenCursor::Gone),
                Err(error) => {
                    // Reading it is still possible (and reports the real trouble, if any).
                    tracing::debug!(file = %path.display(), %error, "mapping a sealed spill segment failed: reading it instead");
                    None
                }
            }
        } else {
            None
        };
        let source = match mapped {
            Some(bytes) => Source::Mapped(bytes),
            None => match self.fs.open_read(&path) {
                Ok(file) => Source::Read(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenCursor::Gone),
                Err(e) => {
                    return Err(OpenCursor::Failed(SpillError::io(
                        path,
                        "open segment for reading",
                        e,
                    )));
                }
            },
        };
        if limit < SEGMENT_HEADER_LEN {
            return Err(OpenCursor::BadHeader(
                path,
                format!("segment is {limit} bytes, shorter than its header"),
            ));
        }
        buf.clear();
        let mut cursor = Cursor {
            first_seq: first,
            path,
            source,
            offset: 0,
            limit,
            seq: first,
            dead: false,
        };
        let header = match &mut cursor.source {
            Source::Read(file) => {
                if let Err(e) = buf.fill(&mut **file, 0, limit, SEGMENT_HEADER_LEN as usize) {
                    return Err(OpenCursor::Failed(SpillError::io(
                        cursor.path,
                        "read segment header",
                        e,
                    )));
                }
                let header = SegmentHeader::decode(buf.available());
                buf.consume(SEGMENT_HEADER_LEN as usize);
                header
            }
            Source::Mapped(bytes) => SegmentHeader::decode((**bytes).as_ref()),
        };
        let decoded = header;
        cursor.offset = SEGMENT_HEADER_LEN;
        match decoded {
            Ok(decoded) if decoded.first_seq == first => Ok(cursor),
            Ok(decoded) => Err(OpenCursor::BadHeader(
                cursor.path,
                format!(
                    "header says the first record is {}, the file name says {first}",
                    decoded.first_seq
                ),
            )),
            Err(reason) => Err(OpenCursor::BadHeader(cursor.path, reason)),
        }
    }
}

enum OpenCursor {
    Gone,
    Failed(SpillError),
    BadHeader(PathBuf, String),
}

fn read_header(fs: &dyn Filesystem, path: &Path) -> io::Result<SegmentHeader> {
    let mut file = fs.open_read(path)?;
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact(&mut header)?;
    SegmentHeader::decode(&header).map_err(io::Error::other)
}

fn create_segment(
    fs: &dyn Filesystem,
    dir: &Path,
    first_seq: u64,
    fsync: FsyncPolicy,
) -> Result<(PathBuf, Box<dyn AppendFile>), SpillError> {
    let path = dir.join(segment_name(first_seq));
    // A leftover empty or torn file of the same name holds no record: start it over.
    if fs.len(&path).is_ok() {
        fs.truncate(&path, 0)
            .map_err(|e| SpillError::io(&path, "reset segment", e))?;
    }
    let mut file = fs
        .open_append(&path)
        .map_err(|e| SpillError::io(&path, "create segment", e))?;
    let header = SegmentHeader {
        first_seq,
        created_ms: now_ms(),
    };
    file.write_all(&header.encode())
        .map_err(|e| SpillError::io(&path, "write segment header", e))?;
    if fsync != FsyncPolicy::Never {
        // The file's existence must be durable before any record in it is acknowledged.
        file.sync_data()
            .map_err(|e| SpillError::io(&path, "fsync segment", e))?;
        fs.sync_dir(dir)
            .map_err(|e| SpillError::io(dir, "fsync directory", e))?;
    }
    Ok((path, file))
}

struct Recovered {
    records: u64,
    first_written_ms: Option<u64>,
}

/// Scans the last segment. A torn tail (a partial or garbled last record, with no good record after
/// it) is truncated, counted and logged; a bad record followed by good ones is corruption in the
/// middle, handled by [`OnCorruption`].
fn recover_last(
    fs: &dyn Filesystem,
    config: &SpillConfig,
    metrics: &SpillMetrics,
    first_seq: u64,
    info: &mut SegmentInfo,
) -> Result<Recovered, SpillError> {
    let path = info.path.clone();
    let len = info.bytes;
    let truncate = |to: u64, reason: &str| -> Result<(), SpillError> {
        tracing::warn!(file = %path.display(), offset = to, dropped_bytes = len - to, reason, "truncating the torn tail of a spill segment");
        SpillMetrics::add(&metrics.truncations, 1);
        SpillMetrics::add(&metrics.truncated_bytes, len - to);
        fs.truncate(&path, to)
            .map_err(|e| SpillError::io(&path, "truncate torn tail", e))
    };
    let mut recovered = Recovered {
        records: 0,
        first_written_ms: None,
    };
    if len < SEGMENT_HEADER_LEN {
        // Crashed while creating the segment: it holds nothing. It is started over at open.
        truncate(0, "segment header cut short")?;
        info.bytes = 0;
        return Ok(recovered);
    }
    let file = fs
        .open_read(&path)
        .map_err(|e| SpillError::io(&path, "open segment for recovery", e))?;
    let mut file = BufReader::with_capacity(RECOVERY_BUFFER, file);
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact(&mut header)
        .map_err(|e| SpillError::io(&path, "read segment header", e))?;
    match SegmentHeader::decode(&header) {
        Ok(h) if h.first_seq == first_seq => {}
        Ok(h) => {
            return Err(SpillError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "header says the first record is {}, the file name says {first_seq}",
                    h.first_seq
                ),
            });
        }
        Err(reason) => {
            SpillMetrics::add(&metrics.corruptions, 1);
            if config.on_corruption == OnCorruption::Fail || len > SEGMENT_HEADER_LEN {
                return Err(SpillError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    reason,
                });
            }
            truncate(0, "segment header garbled and no record follows")?;
            info.bytes = 0;
            return Ok(recovered);
        }
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut valid_len = offset;
    let mut valid_records = 0;
    // The first bad record seen since the last good one: (offset, reason).
    let mut bad: Option<(u64, String)> = None;
    let mut payload = Vec::new();
    loop {
        let frame = read_frame(
            &mut file,
            len - offset,
            config.max_record_bytes,
            &mut payload,
        )
        .map_err(|e| SpillError::io(&path, "scan segment", e))?;
        match frame {
            Frame::Record {
                written_ms,
                frame_len,
            } => {
                if let Some((bad_offset, reason)) = bad.take() {
                    // A good record after a bad one: not a torn tail.
                    SpillMetrics::add(&metrics.corruptions, 1);
                    if config.on_corruption == OnCorruption::Fail {
                        return Err(SpillError::Corrupt {
                            file: path.clone(),
                            offset: bad_offset,
                            reason,
                        });
                    }
                    tracing::warn!(file = %path.display(), offset = bad_offset, %reason, "corrupt spill record in the middle of the last segment: it will be skipped");
                }
                recovered.first_written_ms.get_or_insert(written_ms);
                offset += frame_len;
                recovered.records += 1;
                valid_len = offset;
                valid_records = recovered.records;
            }
            Frame::End => break,
            Frame::BadCrc {
                stored,
                computed,
                frame_len,
            } => {
                bad.get_or_insert((
                    offset,
                    format!(
                        "record crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                    ),
                ));
                offset += frame_len;
                recovered.records += 1;
            }
            Frame::BadLength { .. } | Frame::Torn { .. } => break,
        }
    }
    recovered.records = valid_records;
    if valid_len < len {
        truncate(
            valid_len,
            "partial or garbled records after the last good one",
        )?;
        info.bytes = valid_len;
    }
    Ok(recovered)
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
