//! What the writer, the reader and the acknowledger share: the log's settings and counters, and
//! the segments, positions, ledger and budget under one small lock ([`Shared::state`]). The
//! acknowledgement path lives here: it only ever takes that lock.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::SpillConfig;
use crate::error::SpillError;
use crate::format::{LEDGER_FILE, Ledger};
use crate::fs::Filesystem;
use crate::metrics::SpillMetrics;
use crate::reasons;

/// How far the writer has got, returned by [`SpillLog::flush`](super::SpillLog::flush) and
/// [`SpillLog::sync`](super::SpillLog::sync).
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
    /// The record's sequence number (acknowledge with
    /// [`SpillLog::ack_through`](super::SpillLog::ack_through)`(seq + 1)`).
    pub seq: u64,
    /// The item.
    pub item: T,
}

/// One segment file.
pub(super) struct SegmentInfo {
    pub(super) path: PathBuf,
    /// Bytes written (and visible to readers).
    pub(super) bytes: u64,
}

/// The positions and segments, under [`Shared::state`].
pub(super) struct State {
    /// Segments by first sequence number; the last one is the writer's.
    pub(super) segments: BTreeMap<u64, SegmentInfo>,
    pub(super) written_seq: u64,
    pub(super) durable_seq: u64,
    pub(super) acked_seq: u64,
    pub(super) disk_bytes: u64,
    pub(super) ledger: Ledger,
    pub(super) ledger_at: Instant,
    /// (first sequence number of a batch or segment, its written time in ms).
    pub(super) samples: VecDeque<(u64, u64)>,
    pub(super) closed: bool,
}

/// The part of a log that every role reads: settings, filesystem, counters and the state.
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) config: SpillConfig,
    pub(super) fs: Arc<dyn Filesystem>,
    pub(super) state: Mutex<State>,
    /// How far readers have read: every record below it was handed out (and may be
    /// acknowledged). Outside [`Shared::state`] so that a read publishes it without that lock.
    pub(super) read_seq: AtomicU64,
    /// Writers waiting for budget wait here; acknowledgements that free a segment notify it.
    pub(super) space: Condvar,
    pub(super) metrics: Arc<SpillMetrics>,
}

/// Takes a lock of the log. A panic while holding one cannot leave the log inconsistent on disk,
/// so a poisoned lock is used as it is.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Acknowledges every record below `seq` (capped at what was read): deletes wholly
    /// acknowledged segments, persists the ledger when due, wakes writers waiting for budget. A
    /// failed ledger write is counted and logged, not returned: the acknowledgement holds.
    pub(super) fn ack_through(&self, seq: u64) -> Result<(), SpillError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(SpillError::Closed);
        }
        let seq = seq.min(self.read_seq.load(Ordering::Acquire));
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
    pub(super) fn delete_acked_segments(&self, state: &mut State) -> bool {
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

    /// Writes the ledger (atomically) with the state's positions and `next_seq`.
    pub(super) fn persist_ledger(
        &self,
        state: &mut State,
        next_seq: u64,
    ) -> Result<(), SpillError> {
        let ledger = Ledger {
            acked_seq: state.acked_seq,
            read_seq: self.read_seq.load(Ordering::Acquire),
            next_seq,
        };
        let path = self.dir.join(LEDGER_FILE);
        self.fs
            .write_atomic(&path, &ledger.encode())
            .map_err(|e| SpillError::io(path, reasons::WRITE_LEDGER, e))?;
        state.ledger = ledger;
        state.ledger_at = Instant::now();
        Ok(())
    }

    /// Publishes the gauges (oldest record's age, disk bytes, segments) from the state.
    pub(super) fn publish_gauges(&self, state: &mut State) {
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
}
