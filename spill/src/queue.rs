//! [`SpillQueue`]: a bounded in-memory FIFO that overflows into a [`SpillLog`] and hands items back
//! in order: the engine behind `Overflow::Spill` for an ingress or a buffer.
//!
//! Order is kept by one rule: once an item went to disk, every newer item also goes to disk until
//! the disk part is empty. Taking serves memory first; when memory is empty it refills memory from
//! disk (up to `capacity` records per refill, one read-ahead), so the disk part always holds the
//! newest items and memory the oldest.
//!
//! Acknowledgement: a record read back from disk is acknowledged when [`SpillQueue::take_into`] (or
//! [`SpillQueue::pop`]) hands it out, i.e. when the ingress gives it to its subscriber. Records still
//! on disk after a crash are found again by [`SpillQueue::open`] and come out first (at-least-once).
//! Items in memory are, as with every in-memory queue, lost in a crash: spill earlier (a smaller
//! `capacity`) if that window matters.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SpillConfig, SpillError, SpillLog, SpillMetrics, Spilled, Written};

/// Where an accepted push went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into memory.
    Memory,
    /// To the spill log, as the record with this sequence number (written with the next batch).
    Spilled(u64),
}

/// A push the queue could not take (budget full, disk error): the item comes back.
pub struct SpillPushError<T> {
    /// The item, handed back.
    pub item: T,
    /// Why the log refused it ([`SpillError::is_budget`] tells a full budget from a failure).
    pub error: SpillError,
}

impl<T> SpillPushError<T> {
    /// The item that was not accepted.
    pub fn into_inner(self) -> T {
        self.item
    }
}

impl<T> fmt::Debug for SpillPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillPushError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SpillPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spill queue refused the item: {}", self.error)
    }
}

impl<T> std::error::Error for SpillPushError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A FIFO of at most `capacity` items in memory plus an unbounded-but-budgeted tail on disk.
///
/// Not internally synchronised (`&mut self`): the owner (an ingress) keeps it under the lock it
/// already holds. It never blocks: a full budget is a [`SpillPushError`] and the owner's policy
/// decides (wait for space with a deadline, or reject).
///
/// ```
/// use weir_spill::{Placement, SpillConfig, SpillQueue};
/// let dir = tempfile::tempdir().unwrap();
/// let mut queue = SpillQueue::<u32>::open(dir.path(), 2, SpillConfig::new()).unwrap();
/// assert_eq!(queue.push(1).unwrap(), Placement::Memory);
/// assert_eq!(queue.push(2).unwrap(), Placement::Memory);
/// assert!(matches!(queue.push(3).unwrap(), Placement::Spilled(_))); // memory full: to disk
/// assert_eq!(queue.pop().unwrap(), Some(1));
/// assert!(matches!(queue.push(4).unwrap(), Placement::Spilled(_))); // disk not empty: order kept
/// let mut rest = Vec::new();
/// queue.take_into(10, &mut rest).unwrap();
/// assert_eq!(rest, vec![2, 3, 4]);
/// ```
pub struct SpillQueue<T> {
    memory: VecDeque<(Option<u64>, T)>,
    capacity: usize,
    log: SpillLog<T>,
    on_disk: u64,
}

impl<T> fmt::Debug for SpillQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillQueue")
            .field("capacity", &self.capacity)
            .field("in_memory", &self.memory.len())
            .field("on_disk", &self.on_disk)
            .field("log", &self.log)
            .finish()
    }
}

impl<T> SpillQueue<T> {
    /// Opens the log in `dir` and makes a queue holding at most `capacity` items in memory. Records
    /// left on disk by an earlier run come out first.
    pub fn open(
        dir: impl AsRef<Path>,
        capacity: usize,
        config: SpillConfig,
    ) -> Result<Self, SpillError> {
        Self::with_log(SpillLog::open(dir, config)?, capacity)
    }

    /// A queue over an open log (its unread records come out first).
    pub fn with_log(log: SpillLog<T>, capacity: usize) -> Result<Self, SpillError> {
        if capacity == 0 {
            return Err(SpillError::Config(
                "a spill queue needs a memory capacity of at least 1".into(),
            ));
        }
        Ok(Self {
            memory: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            on_disk: log.unread(),
            log,
        })
    }

    /// Items queued (memory and disk).
    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.on_disk
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items in memory.
    pub fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// Items on disk, not yet read back.
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Whether new pushes go to disk (the disk part is not empty).
    pub fn is_spilling(&self) -> bool {
        self.on_disk > 0
    }

    /// The memory capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The log's counters.
    pub fn metrics(&self) -> Arc<SpillMetrics> {
        self.log.metrics()
    }

    /// The log underneath.
    pub fn log(&self) -> &SpillLog<T> {
        &self.log
    }

    /// Writes spilled items still batched in memory (fsync per policy). Call it when producers
    /// pause, so that what was spilled is on disk without waiting for a full batch.
    pub fn flush(&self) -> Result<Written, SpillError> {
        self.log.flush()
    }
}

impl<T: Serialize> SpillQueue<T> {
    /// Queues `item`: into memory if the disk part is empty and memory has room, else to disk.
    /// Never blocks; a full budget or a disk error hands the item back.
    pub fn push(&mut self, item: T) -> Result<Placement, SpillPushError<T>> {
        if self.on_disk == 0 && self.memory.len() < self.capacity {
            self.memory.push_back((None, item));
            return Ok(Placement::Memory);
        }
        match self.log.try_append(&item) {
            Ok(seq) => {
                self.on_disk += 1;
                Ok(Placement::Spilled(seq))
            }
            Err(error) => Err(SpillPushError { item, error }),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SpillQueue<T> {
    /// Takes the oldest item.
    pub fn pop(&mut self) -> Result<Option<T>, SpillError> {
        let mut one = Vec::with_capacity(1);
        self.take_into(1, &mut one)?;
        Ok(one.pop())
    }

    /// Moves up to `max` of the oldest items into `out`, in order, and returns how many. Records
    /// from disk are acknowledged as they are handed out. On a read error the items already moved
    /// stay in `out` (and are acknowledged) and the error is returned.
    pub fn take_into(&mut self, max: usize, out: &mut impl Extend<T>) -> Result<usize, SpillError> {
        let mut taken = 0;
        let mut last_seq = None;
        let mut failure = None;
        while taken < max {
            if let Some((seq, item)) = self.memory.pop_front() {
                out.extend(std::iter::once(item));
                taken += 1;
                if seq.is_some() {
                    last_seq = seq;
                }
                continue;
            }
            if self.on_disk == 0 {
                break;
            }
            if let Err(error) = self.refill() {
                failure = Some(error);
                break;
            }
            if self.memory.is_empty() {
                break;
            }
        }
        if let Some(seq) = last_seq {
            self.log.ack_through(seq + 1)?;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(taken),
        }
    }

    /// Reads up to `capacity` records from disk into (empty) memory, in batches.
    fn refill(&mut self) -> Result<(), SpillError> {
        self.log.flush()?;
        while self.memory.len() < self.capacity && self.on_disk > 0 {
            let before = self.memory.len();
            let want = self.capacity - before;
            let read = self.log.read_batch(want, &mut IntoMemory(&mut self.memory));
            self.on_disk = self
                .on_disk
                .saturating_sub((self.memory.len() - before) as u64);
            if read? < want {
                // Caught up with fewer records than counted: corrupt ones were skipped (and counted
                // by the log).
                self.on_disk = 0;
            }
        }
        Ok(())
    }
}

/// Records read back go to the memory part, tagged with their sequence number for the ack.
struct IntoMemory<'a, T>(&'a mut VecDeque<(Option<u64>, T)>);

impl<T> Extend<Spilled<T>> for IntoMemory<'_, T> {
    fn extend<I: IntoIterator<Item = Spilled<T>>>(&mut self, records: I) {
        self.0.extend(
            records
                .into_iter()
                .map(|record| (Some(record.seq), record.item)),
        );
    }
}

/// The spill queue as the store behind a spilling ingress
/// ([`weir_runtime::ingress::ingress_spilling`]): memory first, then the log, FIFO.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use weir_runtime::ingress::{ingress_spilling, Pushed, SpillFull};
/// use weir_spill::{SpillConfig, SpillQueue};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SpillQueue::<u32>::open(dir.path(), 2, SpillConfig::new()).unwrap();
/// let full = SpillFull::Reject { retry_after: Duration::from_millis(100) };
/// let (handle, publisher) = ingress_spilling("orders", store, full).unwrap();
/// assert_eq!(handle.push(1).await.unwrap(), Pushed::Enqueued);
/// assert_eq!(handle.push(2).await.unwrap(), Pushed::Enqueued);
/// assert_eq!(handle.push(3).await.unwrap(), Pushed::Spilled); // memory full: to disk, in order
/// drop(handle);
/// assert_eq!(weir_runtime::sink::collect(publisher).await.unwrap(), vec![1, 2, 3]);
/// # }
/// ```
impl<T> weir_runtime::ingress::SpillStore<T> for SpillQueue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn memory_capacity(&self) -> usize {
        self.capacity
    }

    fn push(&mut self, item: T) -> Result<bool, (T, weir_runtime::ingress::StoreRefusal)> {
        use weir_runtime::ingress::StoreRefusal;
        match SpillQueue::push(self, item) {
            Ok(placement) => Ok(matches!(placement, Placement::Spilled(_))),
            Err(SpillPushError { item, error }) if error.is_budget() => {
                Err((item, StoreRefusal::Full))
            }
            Err(SpillPushError { item, error }) => Err((item, StoreRefusal::Failed(error.into()))),
        }
    }

    fn take_into(
        &mut self,
        max: usize,
        out: &mut VecDeque<T>,
    ) -> Result<usize, weir_runtime::Error> {
        SpillQueue::take_into(self, max, out).map_err(Into::into)
    }

    fn len(&self) -> u64 {
        SpillQueue::len(self)
    }

    fn in_memory(&self) -> usize {
        SpillQueue::in_memory(self)
    }

    fn flush(&mut self) -> Result<(), weir_runtime::Error> {
        SpillQueue::flush(self).map(|_| ()).map_err(Into::into)
    }
}
