//! The reading side of a log: [`read_batch`] hands out records in order, decoded in place. Its hot
//! loop checks and decodes whole records straight from the current window (the mapped segment or
//! the read-ahead); everything else (opening segments, refills, moving on, bad frames, the
//! corruption policy) goes through the general path, [`Reader::next_record`], which walks the same
//! bytes with a [`Cursor`].

use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;

use super::segment::{self, Cursor, OpenCursor, ReadBuf, Source, window};
use super::state::{Shared, Spilled, lock};
use crate::config::OnCorruption;
use crate::error::SpillError;
use crate::format::{Frame, Parsed, parse_frame};
use crate::metrics::SpillMetrics;
use crate::reasons;

/// Read-ahead of the reader: segment bytes come from disk in sequential reads this large, and
/// records are decoded straight from this buffer. 1 MiB: ~4,000 records of 256 bytes per `read`
/// call, so the system call and the partial frame carried over at the buffer's end are noise. A
/// frame larger than this grows the buffer to fit (at most `max_record_bytes` plus its header).
/// Allocated at the first read, so a log that is only written holds none.
pub(super) const READ_BUFFER: usize = 1 << 20;

/// The reader's state, under the log's reader lock.
pub(super) struct Reader {
    /// The next sequence number to deliver.
    pub(super) next_seq: u64,
    current: Option<Cursor>,
    /// The current segment's bytes from `current.offset` on.
    buf: ReadBuf,
    /// A corruption the reader stopped at (fail mode): reported again on every read.
    poisoned: Option<(PathBuf, u64, String)>,
}

impl Reader {
    /// A reader whose next record is `next_seq`.
    pub(super) fn new(next_seq: u64) -> Self {
        Self {
            next_seq,
            current: None,
            buf: ReadBuf::new(READ_BUFFER),
            poisoned: None,
        }
    }

    /// Moves the reader back to `seq` (see [`SpillLog::unread_from`](super::SpillLog)).
    pub(super) fn unread_from(&mut self, seq: u64) {
        if seq < self.next_seq {
            self.next_seq = seq;
            self.current = None;
            self.buf.clear();
            // Re-reading finds (and reports) any corruption again, at its place in the order.
            self.poisoned = None;
        }
    }

    /// Finds the next whole record and consumes it. Returns its sequence number, its offset in
    /// the segment and where its payload is in `segment::bytes` (valid until the next call).
    /// The general path of [`read_batch`], for every case its hot loop leaves: opening segments,
    /// refilling the read-ahead, moving on to the next segment, and bad frames.
    #[inline(never)]
    fn next_record(
        &mut self,
        shared: &Shared,
    ) -> Result<Option<(u64, u64, Range<usize>)>, SpillError> {
        if let Some((file, offset, reason)) = &self.poisoned {
            return Err(SpillError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            });
        }
        let config = &shared.config;
        let max_record = config.max_record_bytes;
        loop {
            if self.current.is_none() {
                let target = {
                    let state = lock(&shared.state);
                    if self.next_seq >= state.written_seq {
                        return Ok(None);
                    }
                    let found = state
                        .segments
                        .range(..=self.next_seq)
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
                self.next_seq = self.next_seq.max(first);
                let map = sealed && config.mapped_reads;
                let opened = Cursor::open(
                    &*shared.fs,
                    first,
                    path,
                    limit,
                    map,
                    &mut self.buf,
                    reasons::OPEN_FOR_READING,
                );
                match opened {
                    Ok(cursor) => self.current = Some(cursor),
                    Err(OpenCursor::Gone(path, error)) => {
                        // Deleted once acknowledged: move on. Still listed: it vanished under
                        // the log, an error (looking again would never end).
                        if lock(&shared.state).segments.contains_key(&first) {
                            return Err(SpillError::io(path, reasons::OPEN_FOR_READING, error));
                        }
                        continue;
                    }
                    Err(OpenCursor::Failed(error)) => return Err(error),
                    Err(OpenCursor::BadHeader(path, bad)) => {
                        let reason = bad.reason();
                        SpillMetrics::add(&shared.metrics.corruptions, 1);
                        tracing::warn!(file = %path.display(), %reason, "corrupt spill segment header");
                        if config.on_corruption == OnCorruption::Fail {
                            self.poisoned = Some((path.clone(), 0, reason.clone()));
                            return Err(SpillError::Corrupt {
                                file: path,
                                offset: 0,
                                reason,
                            });
                        }
                        let next = lock(&shared.state)
                            .segments
                            .range(first + 1..)
                            .next()
                            .map(|(&f, _)| f);
                        match next {
                            Some(next) => self.next_seq = self.next_seq.max(next),
                            None => return Ok(None),
                        }
                        continue;
                    }
                }
            }
            let Some(cursor) = self.current.as_mut() else {
                continue;
            };
            if cursor.dead || cursor.offset >= cursor.limit {
                // Look again: the writer may have written more, or moved on.
                let state = lock(&shared.state);
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
                            self.next_seq = self.next_seq.max(next);
                        }
                        self.current = None;
                        continue;
                    }
                }
            }
            let step = cursor
                .next_frame(&mut self.buf, max_record)
                .map_err(|e| SpillError::io(&cursor.path, reasons::READ_SEGMENT, e))?;
            let reason = match step.frame {
                Frame::Record { .. } => {
                    let seq = cursor.seq - 1;
                    if seq < self.next_seq {
                        continue; // acknowledged before the restart
                    }
                    return Ok(Some((seq, step.offset, step.payload)));
                }
                Frame::End => continue,
                Frame::BadCrc { .. } => {
                    let reason = step.frame.problem(max_record).unwrap_or_default();
                    if config.on_corruption == OnCorruption::Skip {
                        // The cursor moved past it (its length is intact): skip it alone.
                        SpillMetrics::add(&shared.metrics.corruptions, 1);
                        tracing::warn!(file = %cursor.path.display(), offset = step.offset, %reason, "skipping a corrupt spill record");
                        self.next_seq = self.next_seq.max(cursor.seq);
                        continue;
                    }
                    reason
                }
                Frame::BadLength { .. } | Frame::Torn { .. } => {
                    step.frame.problem(max_record).unwrap_or_default()
                }
            };
            // The framing is lost (or the policy is to fail).
            let offset = step.offset;
            SpillMetrics::add(&shared.metrics.corruptions, 1);
            tracing::warn!(file = %cursor.path.display(), offset, %reason, "corrupt spill segment");
            if config.on_corruption == OnCorruption::Fail {
                self.poisoned = Some((cursor.path.clone(), offset, reason.clone()));
                return Err(SpillError::Corrupt {
                    file: cursor.path.clone(),
                    offset,
                    reason,
                });
            }
            cursor.dead = true;
        }
    }
}

/// Reads up to `max` records into `out` (see [`SpillLog::read_batch`](super::SpillLog::read_batch)).
/// Inlined so that [`SpillLog::read`](super::SpillLog::read) gets a loop specialised for one record.
#[inline]
pub(super) fn read_batch<T: DeserializeOwned>(
    shared: &Shared,
    reader: &Mutex<Reader>,
    max: usize,
    out: &mut impl Extend<Spilled<T>>,
) -> Result<usize, SpillError> {
    let max_record = shared.config.max_record_bytes;
    let mut guard = lock(reader);
    let reader = &mut *guard;
    let mut delivered = 0usize;
    let mut read_through = None;
    let mut outcome = Ok(());
    'batch: while delivered < max {
        // The hot loop: whole records with a good CRC, checked and decoded in place from the
        // current window (the mapped segment or the read-ahead) and handed to `out` as one
        // iterator, so that `out` takes each item where the decode left it. It stops at anything
        // else, which the general path below then handles from the same bytes.
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
            let (bytes, _) = window(buf, &cursor.source, start);
            let mut hot = Hot {
                bytes,
                remaining: cursor.limit.saturating_sub(start),
                consumed: 0,
                start,
                seq: cursor.seq,
                next_seq: *next_seq,
                left: max - delivered,
                max_record,
                shared,
                path: &cursor.path,
                read_through: None,
                error: None,
                prefetched: usize::try_from(cursor.prefetched.saturating_sub(start))
                    .unwrap_or(usize::MAX),
                _item: PhantomData,
            };
            out.extend(&mut hot);
            let Hot {
                consumed,
                seq,
                next_seq: hot_next,
                left,
                read_through: hot_through,
                error,
                prefetched,
                ..
            } = hot;
            cursor.prefetched = start.saturating_add(prefetched as u64);
            *next_seq = hot_next;
            delivered = max - left;
            read_through = hot_through.or(read_through);
            cursor.offset += consumed;
            cursor.seq = seq;
            if let Source::Read(_) = cursor.source {
                buf.consume(consumed as usize);
            }
            if let Some(error) = error {
                outcome = Err(error);
                break 'batch;
            }
            if delivered >= max {
                break 'batch;
            }
        }
        // The general path, one record at a time.
        let (seq, offset, payload) = match reader.next_record(shared) {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        reader.next_seq = seq + 1;
        let source = reader.current.as_ref().map(|cursor| &cursor.source);
        let payload = segment::bytes(&reader.buf, source)
            .get(payload)
            .unwrap_or_default();
        let path = reader.current.as_ref().map(|cursor| cursor.path.as_path());
        match deliver(
            shared,
            seq,
            offset,
            payload,
            path.unwrap_or(Path::new("")),
            out,
        ) {
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
        SpillMetrics::add(&shared.metrics.replayed_records, delivered as u64);
        shared.read_seq.fetch_max(read_through, Ordering::AcqRel);
    }
    outcome.map(|()| delivered)
}

/// Decodes record `seq` (at `offset` in the segment file `path`) into `out`. Returns whether it
/// was delivered: a record that does not decode is [`undecodable`].
#[inline(always)]
fn deliver<T: DeserializeOwned>(
    shared: &Shared,
    seq: u64,
    offset: u64,
    payload: &[u8],
    path: &Path,
    out: &mut impl Extend<Spilled<T>>,
) -> Result<bool, SpillError> {
    match crate::decode::decode::<T>(payload) {
        Ok(item) => {
            out.extend(std::iter::once(Spilled { seq, item }));
            Ok(true)
        }
        Err(source) => undecodable(shared, seq, offset, path, source).map(|()| false),
    }
}

/// Record `seq` (at `offset` in `path`) does not decode: counted and logged, then skipped
/// (`Ok`) or, under [`OnCorruption::Fail`], the error.
#[cold]
#[inline(never)]
fn undecodable(
    shared: &Shared,
    seq: u64,
    offset: u64,
    path: &Path,
    source: postcard::Error,
) -> Result<(), SpillError> {
    SpillMetrics::add(&shared.metrics.corruptions, 1);
    tracing::warn!(file = %path.display(), offset, seq, %source, "spill record does not decode");
    if shared.config.on_corruption == OnCorruption::Fail {
        return Err(SpillError::Decode {
            file: path.to_path_buf(),
            offset,
            seq,
            source,
        });
    }
    Ok(())
}

/// The hot loop of [`read_batch`] as an iterator over one window: each call parses the next
/// frame, checks its CRC ([`parse_frame`]) and decodes it, and it ends at the first frame that is
/// not a whole good record (the general path's business), after `left` records, or at a record
/// that does not decode under [`OnCorruption::Fail`] (`error`). Handed to [`Extend::extend`]
/// whole, so a `Vec` checks its capacity once per record and moves each item once.
struct Hot<'a, T> {
    /// The window: the segment's bytes from offset `start` on.
    bytes: &'a [u8],
    /// Visible bytes of the segment from `start` (the window may hold more).
    remaining: u64,
    /// Bytes of the window consumed (whole frames).
    consumed: u64,
    start: u64,
    /// The sequence number of the frame at `consumed`.
    seq: u64,
    /// The reader's next sequence number: frames below it were acknowledged before a restart.
    next_seq: u64,
    /// Records still to deliver.
    left: usize,
    max_record: u32,
    shared: &'a Shared,
    path: &'a Path,
    /// One past the last record delivered.
    read_through: Option<u64>,
    error: Option<SpillError>,
    /// The window's bytes up to here were prefetched.
    prefetched: usize,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Hot<'_, T> {
    type Item = Spilled<T>;

    #[inline(always)]
    fn next(&mut self) -> Option<Spilled<T>> {
        while self.left > 0 {
            // Mapped pages are read straight from memory, and the CPU's own prefetcher stops at
            // every 4 KiB page: ask for the lines a few records ahead.
            let ahead = (self.consumed as usize + PREFETCH_AHEAD).min(self.bytes.len());
            while self.prefetched < ahead {
                prefetch(self.bytes, self.prefetched);
                self.prefetched += 64;
            }
            let rest = self.bytes.get(self.consumed as usize..).unwrap_or_default();
            let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
                parse_frame(rest, self.remaining - self.consumed, self.max_record)
            else {
                return None;
            };
            let offset = self.start + self.consumed;
            self.consumed += frame_len;
            self.seq += 1;
            if self.seq <= self.next_seq {
                continue; // acknowledged before the restart
            }
            self.next_seq = self.seq;
            match crate::decode::decode::<T>(payload) {
                Ok(item) => {
                    self.left -= 1;
                    self.read_through = Some(self.seq);
                    return Some(Spilled {
                        seq: self.seq - 1,
                        item,
                    });
                }
                Err(source) => {
                    let seq = self.seq - 1;
                    if let Err(error) = undecodable(self.shared, seq, offset, self.path, source) {
                        self.error = Some(error);
                        return None;
                    }
                }
            }
        }
        None
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// How far ahead of the record being checked the hot loop prefetches: ~2 µs of reading, about
/// as long as a load from memory takes to arrive, rounded up.
const PREFETCH_AHEAD: usize = 2048;

/// Starts loading the cache line holding `bytes[at]` (nothing past the end, or off x86-64).
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = bytes.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is only a hint: it reads nothing into the program and cannot fault,
        // and the address is inside `bytes` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(byte).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// An [`Extend`] that keeps the one record [`SpillLog::read`](super::SpillLog::read) asks for.
pub(super) struct One<T>(pub(super) Option<T>);

impl<T> Extend<T> for One<T> {
    #[inline(always)]
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        // `read` asks for one record: the first is the only one.
        if let Some(item) = iter.into_iter().next() {
            self.0 = Some(item);
        }
    }
}
