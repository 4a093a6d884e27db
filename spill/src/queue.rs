//! [`SpillQueue`]: a bounded in-memory FIFO that overflows into a [`SpillLog`] and hands items back
//! in order: the engine behind `Overflow::Spill` for an ingress or a buffer.
//!
//! Order is kept by one rule: once an item went to disk, every newer item also goes to disk until
//! the disk part is empty. Taking serves memory first; when memory is empty it refills memory from
//! disk (up to `capacity` records per refill, one read-ahead), so the disk part always holds the
//! newest items and memory the oldest.
//!
//! A full or failing disk loses nothing that was accepted. When a write fails, the log keeps the
//! records it could not write and the queue takes them back into memory, behind the disk part
//! (after what is on disk, before anything newer): the *held-back* part. While it is not empty the
//! queue accepts new items only into memory (while memory and the held-back part together have
//! room) and refuses the rest, handing them back with the write's error; it writes the held-back
//! items to disk again when the log frees space (an acknowledged segment is deleted) or
//! [`RETRY_AFTER`] has passed, at the next push or [`flush`](SpillQueue::flush). Taking hands out
//! memory, then disk, then the held-back items: every accepted item comes out, in order, whether
//! the disk recovers or not.
//!
//! Acknowledgement: a record read back from disk is acknowledged when [`SpillQueue::take_into`] (or
//! [`SpillQueue::pop`]) hands it out, i.e. when the ingress gives it to its subscriber. Records still
//! on disk after a crash are found again by [`SpillQueue::open`] and come out first (at-least-once).
//! Items in memory (the held-back ones included) are, as with every in-memory queue, lost in a
//! crash: spill earlier (a smaller `capacity`) if that window matters.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SpillConfig, SpillError, SpillLog, SpillMetrics, Spilled, Written};

/// After a failed write, how long a [`SpillQueue`] waits before it writes its held-back items
/// again, unless the log frees space first (then it tries at once).
pub const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Where an accepted push went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into memory.
    Memory,
    /// To the spill log, as the record with this sequence number (written with its batch).
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

/// The memory a [`SpillQueue`] may hold besides its `capacity` items in memory
/// ([`SpillQueue::max_extra_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraMemory {
    /// Bytes of the log's buffers: the reader's read-ahead, the writer's batch and its encoding
    /// scratch ([`SpillLog::max_buffer_bytes`]). Mapped segments are page cache, not counted.
    pub buffer_bytes: u64,
    /// Items beyond `capacity`: the records of one batch, taken back after a failed write.
    pub items: u64,
}

/// A FIFO of at most `capacity` items in memory plus an unbounded-but-budgeted tail on disk.
///
/// Not internally synchronised (`&mut self`): the owner (an ingress) keeps it under the lock it
/// already holds. It never blocks: a full budget or a failing disk is a [`SpillPushError`] and the
/// owner's policy decides (wait for space with a deadline, or reject).
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
    /// The oldest items, with their sequence number when they were read back from disk.
    memory: VecDeque<(Option<u64>, T)>,
    capacity: usize,
    log: SpillLog<T>,
    /// Records appended to the log (written or still batched) and not read back.
    on_disk: u64,
    /// The newest items, behind the disk part, held in memory because a write failed; `None`
    /// when there are none.
    held_back: Option<HeldBack<T>>,
}

/// Items a [`SpillQueue`] holds back, why, and when it writes them again.
struct HeldBack<T> {
    /// Oldest first; never empty.
    items: VecDeque<T>,
    /// The failure (a write error, or a full budget met while writing them again).
    cause: SpillError,
    retry_at: Instant,
    /// The log's disk bytes at the failure: fewer means space was freed, so try again at once.
    disk_bytes: u64,
}

impl<T> fmt::Debug for SpillQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillQueue")
            .field("capacity", &self.capacity)
            .field("in_memory", &self.memory.len())
            .field("on_disk", &self.on_disk)
            .field("held_back", &self.held_back())
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
            held_back: None,
        })
    }

    /// Items queued (memory, disk and held back).
    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.on_disk + self.held_back() as u64
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items in memory, the held-back ones included.
    pub fn in_memory(&self) -> usize {
        self.memory.len() + self.held_back()
    }

    /// Items on disk, not yet read back.
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Items held in memory behind the disk part because a write failed (see the module doc).
    pub fn held_back(&self) -> usize {
        self.held_back.as_ref().map_or(0, |held| held.items.len())
    }

    /// Whether new pushes go to disk (the disk part is not empty).
    pub fn is_spilling(&self) -> bool {
        self.on_disk > 0
    }

    /// The memory capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most memory the queue holds besides its `capacity` items in memory, for an inventory
    /// of what a pipeline can hold: the log's buffers in bytes, and the items of one batch taken
    /// back after a failed write (while they are held back, refills leave them room, so memory
    /// never holds more than `capacity` plus those).
    ///
    /// ```
    /// use weir_spill::{SpillConfig, SpillQueue};
    /// let dir = tempfile::tempdir().unwrap();
    /// let queue = SpillQueue::<u64>::open(dir.path(), 100, SpillConfig::new()).unwrap();
    /// let extra = queue.max_extra_memory();
    /// assert!(extra.buffer_bytes >= 1 << 20); // at least the 1 MiB read-ahead
    /// assert_eq!(extra.items, 1_000); // one batch of the default 1,000 records
    /// ```
    pub fn max_extra_memory(&self) -> ExtraMemory {
        let config = self.log.config();
        ExtraMemory {
            buffer_bytes: self.log.max_buffer_bytes(),
            items: config.batch_records as u64,
        }
    }

    /// The log's counters.
    pub fn metrics(&self) -> Arc<SpillMetrics> {
        self.log.metrics()
    }

    /// The log underneath.
    pub fn log(&self) -> &SpillLog<T> {
        &self.log
    }
}

impl<T: Serialize + DeserializeOwned> SpillQueue<T> {
    /// Queues `item`: into memory if the disk part is empty and memory has room, else to disk.
    /// Never blocks; a full budget or a failing disk hands the item back (see the module doc for
    /// what happens to items already accepted when a write fails).
    pub fn push(&mut self, item: T) -> Result<Placement, SpillPushError<T>> {
        self.retry_if_due();
        if let Some(held) = &mut self.held_back {
            // The disk still fails: newer items go behind the held-back ones, while memory has room.
            if self.memory.len() + held.items.len() < self.capacity {
                held.items.push_back(item);
                return Ok(Placement::Memory);
            }
            let error = if held.cause.is_budget() {
                held.cause.duplicate()
            } else {
                SpillError::Unwritten {
                    records: held.items.len() as u64,
                    source: Box::new(held.cause.duplicate()),
                }
            };
            return Err(SpillPushError { item, error });
        }
        if self.on_disk == 0 && self.memory.len() < self.capacity {
            self.memory.push_back((None, item));
            return Ok(Placement::Memory);
        }
        match self.log.try_append(&item) {
            Ok(seq) => {
                self.on_disk += 1;
                Ok(Placement::Spilled(seq))
            }
            Err(error) => {
                self.take_back(&error);
                Err(SpillPushError { item, error })
            }
        }
    }

    /// Writes spilled items still batched in memory (fsync per policy) and tries the held-back
    /// items again. Call it when producers pause, so that what was spilled is on disk without
    /// waiting for a full batch. On an error nothing is lost: records that could not be written
    /// are held back (see the module doc).
    pub fn flush(&mut self) -> Result<Written, SpillError> {
        self.write_held_back()?;
        self.log.flush().inspect_err(|error| self.take_back(error))
    }

    /// Takes the oldest item.
    pub fn pop(&mut self) -> Result<Option<T>, SpillError> {
        let mut one = Vec::with_capacity(1);
        self.take_into(1, &mut one)?;
        Ok(one.pop())
    }

    /// Moves up to `max` of the oldest items into `out`, in order, and returns how many. Records
    /// from disk are acknowledged as they are handed out. A read error comes once the records
    /// read before it are out: the items already moved stay in `out` (and are acknowledged) and
    /// the error is returned. A failing write is not an
    /// error here: the records it could not write are handed out from memory in their turn.
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
            if self.on_disk > 0 {
                if let Err(error) = self.refill() {
                    if self.memory.is_empty() {
                        failure = Some(error);
                        break;
                    }
                    // The records read before the failure go out first; the next read meets it
                    // again.
                    continue;
                }
                if !self.memory.is_empty() {
                    continue;
                }
                if self.on_disk > 0 {
                    break;
                }
            }
            // Memory and disk are empty: the held-back items are next.
            let Some(held) = &mut self.held_back else {
                break;
            };
            let n = held.items.len().min(max - taken);
            out.extend(held.items.drain(..n));
            taken += n;
            if held.items.is_empty() {
                self.held_back = None;
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

    /// Reads up to `capacity` records from disk into (empty) memory, in batches, leaving room for
    /// the held-back items.
    fn refill(&mut self) -> Result<(), SpillError> {
        if let Err(error) = self.log.flush() {
            // Records that could not be written are held back; what is written is read as usual.
            self.take_back(&error);
        }
        let room = self.capacity.saturating_sub(self.held_back()).max(1);
        while self.memory.len() < room && self.on_disk > 0 {
            let before = self.memory.len();
            let want = room - before;
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

    /// After `error` from the log: takes back the records it could not write (they go before the
    /// held-back items: they are older) and remembers the failure.
    fn take_back(&mut self, error: &SpillError) {
        let mut back = Vec::new();
        let taken = self.log.take_unwritten(&mut back);
        self.on_disk = self.on_disk.saturating_sub(taken);
        let items = match self.held_back.take() {
            Some(held) => held.items,
            None if back.is_empty() => return,
            None => VecDeque::with_capacity(back.len()),
        };
        let mut items = items;
        for record in back.into_iter().rev() {
            items.push_front(record.item);
        }
        let cause = match error {
            SpillError::Unwritten { source, .. } => source.duplicate(),
            other => other.duplicate(),
        };
        self.held_back = Some(HeldBack {
            items,
            cause,
            retry_at: Instant::now() + RETRY_AFTER,
            disk_bytes: self.log.metrics().disk_bytes.load(Ordering::Relaxed),
        });
    }

    /// Writes the held-back items again if the log freed space since the failure or
    /// [`RETRY_AFTER`] passed.
    fn retry_if_due(&mut self) {
        let Some(held) = &self.held_back else { return };
        let freed = self.log.metrics().disk_bytes.load(Ordering::Relaxed) < held.disk_bytes;
        if freed || Instant::now() >= held.retry_at {
            let _ = self.write_held_back();
        }
    }

    /// Appends the held-back items, oldest first, and flushes. What fails is held back again.
    fn write_held_back(&mut self) -> Result<(), SpillError> {
        let Some(held) = &mut self.held_back else {
            return Ok(());
        };
        let mut outcome = Ok(());
        while let Some(item) = held.items.front() {
            match self.log.try_append(item) {
                Ok(_) => {
                    held.items.pop_front();
                    self.on_disk += 1;
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            outcome = self.log.flush().map(|_| ());
        }
        if held.items.is_empty() {
            self.held_back = None;
        }
        if let Err(error) = &outcome {
            self.take_back(error);
        } else {
            tracing::info!(dir = %self.log.dir().display(), "the spill log writes again: the held-back items are on disk");
        }
        outcome
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

/// The spill queue as the store behind a spilling queue or ingress
/// ([`weir_runtime::ingress::spilling`]): memory first, then the log, FIFO.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use weir_runtime::ingress::{self, SpillFull};
/// use weir_runtime::queue::Pushed;
/// use weir_spill::{SpillConfig, SpillQueue};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SpillQueue::<u32>::open(dir.path(), 2, SpillConfig::new()).unwrap();
/// let full = SpillFull::Reject { retry_after: Duration::from_millis(100) };
/// let (handle, publisher) = ingress::spilling("orders", store, full).unwrap();
/// assert_eq!(handle.push(1).await.unwrap(), Pushed::Enqueued);
/// assert_eq!(handle.push(2).await.unwrap(), Pushed::Enqueued);
/// assert_eq!(handle.push(3).await.unwrap(), Pushed::Spilled); // memory full: to disk, in order
/// drop(handle);
/// assert_eq!(weir_runtime::sink::collect(publisher).await.unwrap(), vec![1, 2, 3]);
/// # }
/// ```
impl<T> weir_runtime::queue::SpillStore<T> for SpillQueue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn memory_capacity(&self) -> usize {
        self.capacity
    }

    fn push(&mut self, item: T) -> Result<bool, (T, weir_runtime::queue::StoreRefusal)> {
        use weir_runtime::queue::StoreRefusal;
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

    /// Items read back from the log stay in it until taken (the next run replays them): only
    /// the ones pushed into memory and the held-back ones would be lost.
    fn in_memory(&self) -> usize {
        let pushed = self.memory.iter().filter(|(seq, _)| seq.is_none()).count();
        pushed + self.held_back()
    }

    /// Known for records read back or still on disk (from when their batch was written); not for
    /// an item pushed into memory, which the log has no time for.
    fn oldest_age(&self) -> Option<std::time::Duration> {
        match self.memory.front() {
            Some((Some(seq), _)) => self.log.age_of(*seq),
            Some((None, _)) => None,
            None if self.on_disk > 0 => self.log.age_of(self.log.next_unread()),
            None => None,
        }
    }

    fn flush(&mut self) -> Result<(), weir_runtime::Error> {
        SpillQueue::flush(self).map(|_| ()).map_err(Into::into)
    }
}
