//! The spill log's counters, read as a plain serde [`SpillSnapshot`].
//!
//! | name | meaning |
//! |---|---|
//! | `spilled_records` / `spilled_bytes` | records and frame bytes written to segments |
//! | `replayed_records` | records read back (delivered by a reader) |
//! | `acked_records` | records acknowledged downstream |
//! | `disk_bytes` / `budget_bytes` | bytes of all segments now, and the ceiling |
//! | `segments` | segment files now |
//! | `oldest_age_ms` | age of the oldest unacknowledged record (batch precision), `None` when empty |
//! | `budget_rejections` | appends refused (or timed out) because the budget was full |
//! | `truncations` / `truncated_bytes` | torn tails cut off at open |
//! | `corruptions` | corrupt records or segments found (skipped or failed on) |
//! | `write_failures` | failed writes: batch writes, fsyncs, segment creations, ledger writes |
//! | `unwritten_records` | records accepted by `append` whose write failed, held by the log for a retry |
//! | `dropped_unwritten` | items given to the log to write (appended, or received by the sink) and never written: given up by a failing sink, or by a close whose last write failed (each also named in an error or a warning) |

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::format::now_ms;

/// Live counters of one spill log.
#[derive(Debug, Default)]
pub struct SpillMetrics {
    pub(crate) spilled_records: AtomicU64,
    pub(crate) spilled_bytes: AtomicU64,
    pub(crate) replayed_records: AtomicU64,
    pub(crate) acked_records: AtomicU64,
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) budget_bytes: AtomicU64,
    pub(crate) segments: AtomicU64,
    /// Written time (ms since the epoch) of the oldest unacknowledged record, plus one; 0 if none.
    pub(crate) oldest_ms: AtomicU64,
    pub(crate) budget_rejections: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) truncated_bytes: AtomicU64,
    pub(crate) corruptions: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) unwritten_records: AtomicU64,
    pub(crate) dropped_unwritten: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
}

/// A copy of every counter of a [`SpillMetrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpillSnapshot {
    /// Records written to segments.
    pub spilled_records: u64,
    /// Frame bytes written to segments.
    pub spilled_bytes: u64,
    /// Records read back by readers.
    pub replayed_records: u64,
    /// Records acknowledged downstream.
    pub acked_records: u64,
    /// Bytes of all segment files now.
    pub disk_bytes: u64,
    /// The disk budget.
    pub budget_bytes: u64,
    /// Segment files now.
    pub segments: u64,
    /// Age of the oldest unacknowledged record in milliseconds (batch precision).
    pub oldest_age_ms: Option<u64>,
    /// Appends refused or timed out because the budget was full.
    pub budget_rejections: u64,
    /// Torn tails truncated at open.
    pub truncations: u64,
    /// Bytes cut off by those truncations.
    pub truncated_bytes: u64,
    /// Corrupt records or segments found.
    pub corruptions: u64,
    /// Failed writes (batch writes, fsyncs, segment creations, ledger writes).
    pub write_failures: u64,
    /// Records accepted by an append whose write failed, held by the log for a retry.
    pub unwritten_records: u64,
    /// Items given to the log to write (appended, or received by the sink) and never written:
    /// given up after a failed write.
    pub dropped_unwritten: u64,
    /// Segment fsyncs that completed (a batch's, or a group commit's for many pushes).
    pub fsyncs: u64,
}

impl SpillMetrics {
    /// A copy of every counter.
    pub fn snapshot(&self) -> SpillSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let oldest = get(&self.oldest_ms);
        SpillSnapshot {
            spilled_records: get(&self.spilled_records),
            spilled_bytes: get(&self.spilled_bytes),
            replayed_records: get(&self.replayed_records),
            acked_records: get(&self.acked_records),
            disk_bytes: get(&self.disk_bytes),
            budget_bytes: get(&self.budget_bytes),
            segments: get(&self.segments),
            oldest_age_ms: (oldest > 0).then(|| now_ms().saturating_sub(oldest - 1)),
            budget_rejections: get(&self.budget_rejections),
            truncations: get(&self.truncations),
            truncated_bytes: get(&self.truncated_bytes),
            corruptions: get(&self.corruptions),
            write_failures: get(&self.write_failures),
            unwritten_records: get(&self.unwritten_records),
            dropped_unwritten: get(&self.dropped_unwritten),
            fsyncs: get(&self.fsyncs),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }
}
