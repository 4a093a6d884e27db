//! The writing side of a log: [`Writer`] encodes records into a batch, writes the batch to the
//! active segment (fsync per [`FsyncPolicy`]), rolls over to a new segment, waits for or refuses
//! budget, and keeps a batch whose write failed instead of forgetting it.
//!
//! A batch is written *before* the next record joins it, never after, so `Ok` from an append only
//! ever comes for a record the log holds: a failed write refuses the new item. The failed batch is
//! cut off the file (which then ends at the last published record) and kept, to be written again
//! by the next append, flush or sync, or taken back ([`Writer::take_unwritten`]).

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{SegmentInfo, Shared, Spilled, State, Written, lock};
use crate::config::{FsyncPolicy, SpillConfig};
use crate::error::SpillError;
use crate::format::{
    FRAME_HEADER_LEN, Frame, Parsed, SEGMENT_HEADER_LEN, SegmentHeader, coarse_now_ms, now_ms,
    parse_frame, seal_record, segment_name,
};
use crate::fs::{AppendFile, Filesystem};
use crate::metrics::SpillMetrics;
use crate::reasons;

/// The writer's state, under the log's writer lock.
pub(super) struct Writer {
    file: Box<dyn AppendFile>,
    active_first: u64,
    active_path: PathBuf,
    /// Bytes in the active segment file.
    active_len: u64,
    pub(super) next_seq: u64,
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
    /// Bytes the budget had left past the segments' bytes when the writer last looked (under the
    /// state lock). Only the writer adds to the segments' bytes, and it looks again each time it
    /// does; readers only free bytes: so an append that fits in `room` fits in the budget, and
    /// takes no lock to know it. Zero until the first look, and again once the log is closed.
    room: u64,
}

impl Writer {
    /// A writer appending to `file`, the segment starting at `first` (`len` bytes long), whose
    /// next record gets `next_seq`.
    pub(super) fn new(
        file: Box<dyn AppendFile>,
        first: u64,
        path: PathBuf,
        len: u64,
        next_seq: u64,
        config: &SpillConfig,
    ) -> Self {
        Self {
            file,
            active_first: first,
            active_path: path,
            active_len: len,
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
            room: 0,
        }
    }

    /// Records accepted whose write failed, held for a retry.
    pub(super) fn unwritten(&self) -> u64 {
        if self.failed_write {
            self.batch_records
        } else {
            0
        }
    }

    /// Whether the interval syncer has something to do: a batch to write or data to fsync.
    pub(super) fn sync_due(&self) -> bool {
        self.unsynced || self.batch_records > 0
    }

    /// Encodes `item` and appends it (see [`SpillLog::append`](super::SpillLog::append)). The
    /// item is encoded straight into the batch, behind a frame header filled in once it is known
    /// to stay; when the batch must be written first (once a batch), into a buffer aside.
    #[inline]
    pub(super) fn append<T: Serialize>(
        &mut self,
        shared: &Shared,
        item: &T,
        wait: Option<Duration>,
    ) -> Result<u64, SpillError> {
        let config = &shared.config;
        // What must be written before this record joins the batch: a full batch, or one whose
        // write failed (written again now). If that fails, this record is refused and the batch
        // kept: `Ok` below is only ever returned for a record the log holds.
        let write_first = self.failed_write
            || self.batch_records >= config.batch_records as u64
            || self.batch.len() >= config.batch_bytes;
        let out = if write_first {
            self.scratch.clear();
            &mut self.scratch
        } else {
            &mut self.batch
        };
        let start = out.len();
        out.resize(start + FRAME_HEADER_LEN as usize, 0);
        // The item's `Serialize` is user code: a panic half way must not leave its bytes in the
        // batch (the next write would put them on disk ahead of good records) nor unwind into
        // the caller, whose item is handed back with the error instead.
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            postcard::serialize_with_flavor(item, Tail(&mut *out))
        }));
        let refused = match encoded {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(SpillError::Encode(error)),
            Err(payload) => Some(SpillError::EncodePanicked(
                weir_runtime::Error::panic_message(payload.as_ref()),
            )),
        };
        if let Some(error) = refused {
            out.truncate(start);
            return Err(error);
        }
        let size = out.len() - start - FRAME_HEADER_LEN as usize;
        if size > config.max_record_bytes as usize {
            out.truncate(start);
            return Err(SpillError::RecordTooLarge {
                size,
                max: config.max_record_bytes,
            });
        }
        let frame = FRAME_HEADER_LEN + size as u64;
        // The segment's bytes before this record (the same once the batch is written).
        let before = self.active_len + if write_first { self.batch.len() } else { start } as u64;
        let roll = self.roll_pending
            || (before > SEGMENT_HEADER_LEN && before + frame > config.segment_bytes);
        let needed = frame + if roll { SEGMENT_HEADER_LEN } else { 0 };
        let fits = !write_first && !roll && {
            // What the batch holds and this record, against the room last seen; only when that
            // is short does the writer look at the state (closed, and the budget now).
            let wanted = start as u64 + needed;
            wanted <= self.room || {
                let state = lock(&shared.state);
                let closed = state.closed;
                self.room = room(config.budget_bytes, &state);
                drop(state);
                if closed {
                    self.batch.truncate(start);
                    return Err(SpillError::Closed);
                }
                wanted <= self.room
            }
        };
        let start = if fits {
            start
        } else {
            if !write_first {
                // The record steps aside while the segment is rolled or budget awaited.
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.batch[start..]);
                self.batch.truncate(start);
            }
            if write_first {
                self.write_batch(shared, false)?;
            }
            self.reserve(shared, needed, wait)?;
            if roll {
                self.roll(shared)?;
            }
            let start = self.batch.len();
            self.batch.extend_from_slice(&self.scratch);
            start
        };
        let ms = coarse_now_ms();
        if self.batch_records == 0 {
            self.batch_first_ms = ms;
        }
        seal_record(&mut self.batch[start..], ms);
        self.batch_records += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Waits (or refuses) until `needed` more bytes fit in the budget.
    fn reserve(
        &mut self,
        shared: &Shared,
        needed: u64,
        wait: Option<Duration>,
    ) -> Result<(), SpillError> {
        let budget = shared.config.budget_bytes;
        {
            let state = lock(&shared.state);
            if state.closed {
                return Err(SpillError::Closed);
            }
            if state.disk_bytes + self.batch.len() as u64 + needed <= budget {
                return Ok(());
            }
        }
        // Make what is batched readable, so that readers can consume and acknowledge it; and, under
        // `Interval`, durable: the syncer cannot take the writer while this waits.
        let sync = wait.is_some() && matches!(shared.config.fsync, FsyncPolicy::Interval(_));
        self.write_batch(shared, sync)?;
        let started = Instant::now();
        let mut state = lock(&shared.state);
        loop {
            if state.disk_bytes + needed <= budget {
                return Ok(());
            }
            let left = wait.and_then(|timeout| timeout.checked_sub(started.elapsed()));
            match left {
                Some(left) if !left.is_zero() && !state.closed => {
                    state = shared
                        .space
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ => {
                    SpillMetrics::add(&shared.metrics.budget_rejections, 1);
                    let used = state.disk_bytes;
                    drop(state);
                    tracing::warn!(dir = %shared.dir.display(), used, budget, "spill budget full");
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
    fn roll(&mut self, shared: &Shared) -> Result<(), SpillError> {
        let fsync = shared.config.fsync;
        self.write_batch(shared, fsync != FsyncPolicy::Never)?;
        let created = create_segment(&*shared.fs, &shared.dir, self.next_seq, fsync);
        self.roll_pending = created.is_err();
        let (path, file) =
            created.inspect_err(|_| SpillMetrics::add(&shared.metrics.write_failures, 1))?;
        self.file = file;
        self.active_first = self.next_seq;
        self.active_path = path.clone();
        self.active_len = SEGMENT_HEADER_LEN;
        self.unsynced = false;
        let mut state = lock(&shared.state);
        state.segments.insert(
            self.next_seq,
            SegmentInfo {
                path,
                bytes: SEGMENT_HEADER_LEN,
            },
        );
        state.disk_bytes += SEGMENT_HEADER_LEN;
        self.room = room(shared.config.budget_bytes, &state);
        state.samples.push_back((self.next_seq, now_ms()));
        // The sealed segment may already be wholly acknowledged (the reader kept up): free it now,
        // not at the next acknowledgement, or acknowledged data holds budget that appends need.
        if shared.delete_acked_segments(&mut state) {
            if let Err(error) = shared.persist_ledger(&mut state, self.next_seq) {
                // Only the ledger's copy of the acknowledged position lags; the next
                // acknowledgement or the close writes it again.
                tracing::warn!(dir = %shared.dir.display(), %error, "could not persist the spill ledger after freeing a segment");
            }
            shared.space.notify_all();
        }
        shared.publish_gauges(&mut state);
        Ok(())
    }

    /// Writes the batch, fsyncs per policy (or if `force_sync`), and publishes the new positions.
    /// A failure publishes nothing and loses nothing: see [`write_failed`](Self::write_failed).
    pub(super) fn write_batch(
        &mut self,
        shared: &Shared,
        force_sync: bool,
    ) -> Result<Written, SpillError> {
        let written_bytes = self.batch.len() as u64;
        let records = self.batch_records;
        if self.cut_pending {
            // Appending after the rest of a failed write would break the framing: cut it first.
            if let Err(error) = shared.fs.truncate(&self.active_path, self.active_len) {
                return Err(self.write_failed(shared, reasons::CUT_FAILED_WRITE, error));
            }
            self.cut_pending = false;
        }
        if written_bytes > 0
            && let Err(error) = self.file.write_all(&self.batch)
        {
            return Err(self.write_failed(shared, reasons::WRITE_BATCH, error));
        }
        let sync = (written_bytes > 0 || self.unsynced)
            && (force_sync
                || match shared.config.fsync {
                    FsyncPolicy::EveryBatch => true,
                    FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
                    FsyncPolicy::Never => false,
                });
        if sync && let Err(error) = self.file.sync_data() {
            return Err(self.write_failed(shared, reasons::FSYNC_SEGMENT, error));
        }
        self.active_len += written_bytes;
        if sync {
            SpillMetrics::add(&shared.metrics.fsyncs, 1);
            self.last_sync = Instant::now();
            self.unsynced = false;
        } else if written_bytes > 0 {
            self.unsynced = true;
        }
        let first_seq = self.next_seq - records;
        let first_ms = self.batch_first_ms;
        self.batch.clear();
        self.batch_records = 0;
        if self.failed_write {
            self.failed_write = false;
            SpillMetrics::set(&shared.metrics.unwritten_records, 0);
        }
        let mut state = lock(&shared.state);
        if let Some(info) = state.segments.get_mut(&self.active_first) {
            info.bytes = self.active_len;
        }
        state.disk_bytes += written_bytes;
        self.room = room(shared.config.budget_bytes, &state);
        state.written_seq = self.next_seq;
        if sync {
            state.durable_seq = self.next_seq;
        }
        if records > 0 {
            state.samples.push_back((first_seq, first_ms));
            SpillMetrics::add(&shared.metrics.spilled_records, records);
            SpillMetrics::add(&shared.metrics.spilled_bytes, written_bytes);
        }
        shared.publish_gauges(&mut state);
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
    fn write_failed(
        &mut self,
        shared: &Shared,
        stage: &'static str,
        error: io::Error,
    ) -> SpillError {
        SpillMetrics::add(&shared.metrics.write_failures, 1);
        let error = SpillError::io(&self.active_path, stage, error);
        if self.batch_records == 0 {
            tracing::warn!(%error, "spill write failed");
            return error;
        }
        self.failed_write = true;
        SpillMetrics::set(&shared.metrics.unwritten_records, self.batch_records);
        match shared.fs.truncate(&self.active_path, self.active_len) {
            Ok(()) => self.cut_pending = false,
            Err(cut) => {
                self.cut_pending = true;
                tracing::warn!(file = %self.active_path.display(), %cut, "could not cut a failed write off the spill segment: it is cut again before the next write");
            }
        }
        tracing::warn!(records = self.batch_records, %error, "spill batch write failed: the records are kept and written again");
        SpillError::Unwritten {
            records: self.batch_records,
            source: Box::new(error),
        }
    }

    /// Decodes the records whose write failed into `out` and forgets them (see
    /// [`SpillLog::take_unwritten`](super::SpillLog::take_unwritten)). Returns how many were taken.
    pub(super) fn take_unwritten<T: DeserializeOwned>(
        &mut self,
        shared: &Shared,
        out: &mut impl Extend<Spilled<T>>,
    ) -> u64 {
        if !self.failed_write {
            return 0;
        }
        let max_record = shared.config.max_record_bytes;
        let mut rest = &self.batch[..];
        let mut seq = self.next_seq - self.batch_records;
        while let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
            parse_frame(rest, rest.len() as u64, max_record)
        {
            match crate::decode::decode::<T>(payload) {
                Ok(item) => out.extend(std::iter::once(Spilled { seq, item })),
                Err(source) => {
                    SpillMetrics::add(&shared.metrics.corruptions, 1);
                    tracing::warn!(dir = %shared.dir.display(), seq, %source, "an unwritten spill record does not decode");
                }
            }
            rest = &rest[frame_len as usize..];
            seq += 1;
        }
        self.forget_unwritten(shared)
    }

    /// Forgets the batch whose write failed, as if its records had never been appended (their
    /// sequence numbers are given out again). Returns how many records it held.
    pub(super) fn forget_unwritten(&mut self, shared: &Shared) -> u64 {
        if !self.failed_write {
            return 0;
        }
        let records = self.batch_records;
        self.next_seq -= records;
        self.batch.clear();
        self.batch_records = 0;
        self.failed_write = false;
        SpillMetrics::set(&shared.metrics.unwritten_records, 0);
        records
    }

    /// Writes and fsyncs what is left, marks the log closed and persists the ledger. Records that
    /// cannot be written now are lost, counted in `dropped_unwritten` and logged.
    pub(super) fn close(&mut self, shared: &Shared) -> Result<Written, SpillError> {
        if lock(&shared.state).closed {
            let state = lock(&shared.state);
            return Ok(Written {
                written: state.written_seq,
                durable: state.durable_seq,
            });
        }
        let written = self.write_batch(shared, true);
        // The last chance to write what was appended: what fails now is lost, and counted.
        let dropped = self.forget_unwritten(shared);
        if dropped > 0 {
            SpillMetrics::add(&shared.metrics.dropped_unwritten, dropped);
            tracing::error!(dir = %shared.dir.display(), records = dropped, "closing the spill log: records accepted but never written are lost");
        }
        let mut state = lock(&shared.state);
        state.closed = true;
        self.room = room(shared.config.budget_bytes, &state);
        let ledger = shared.persist_ledger(&mut state, self.next_seq);
        shared.space.notify_all();
        let written = written?;
        ledger?;
        Ok(written)
    }
}

/// The budget's bytes left past the segments' bytes; none once the log is closed, so that every
/// append looks at the state and is refused.
fn room(budget: u64, state: &State) -> u64 {
    if state.closed {
        0
    } else {
        budget.saturating_sub(state.disk_bytes)
    }
}

/// A postcard output that appends to a `Vec` it borrows (the batch), so that a failed encoding
/// leaves the batch where it was, to be cut back.
struct Tail<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Tail<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Creates the segment file starting at `first_seq` with its header (durably, unless the policy
/// is [`FsyncPolicy::Never`]).
pub(super) fn create_segment(
    fs: &dyn Filesystem,
    dir: &Path,
    first_seq: u64,
    fsync: FsyncPolicy,
) -> Result<(PathBuf, Box<dyn AppendFile>), SpillError> {
    let path = dir.join(segment_name(first_seq));
    // A leftover empty or torn file of the same name holds no record: start it over.
    if fs.symlink_metadata(&path).is_ok() {
        fs.truncate(&path, 0)
            .map_err(|e| SpillError::io(&path, reasons::RESET_SEGMENT, e))?;
    }
    let mut file = fs
        .open_append(&path)
        .map_err(|e| SpillError::io(&path, reasons::CREATE_SEGMENT, e))?;
    let header = SegmentHeader {
        first_seq,
        created_ms: now_ms(),
    };
    file.write_all(&header.encode())
        .map_err(|e| SpillError::io(&path, reasons::WRITE_SEGMENT_HEADER, e))?;
    if fsync != FsyncPolicy::Never {
        // The file's existence must be durable before any record in it is acknowledged.
        file.sync_data()
            .map_err(|e| SpillError::io(&path, reasons::FSYNC_SEGMENT, e))?;
        fs.sync_dir(dir)
            .map_err(|e| SpillError::io(dir, reasons::FSYNC_DIRECTORY, e))?;
    }
    Ok((path, file))
}
