//! What a queue does when it is full, what a push gets back, and the spill store contract.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::metrics::Reason;

/// What a push into a full in-memory queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Waits for room ([`QueueHandle::push`](super::QueueHandle::push); a deadline with [`QueueHandle::push_until`](super::QueueHandle::push_until)).
    Wait,
    /// Drops the oldest queued item (counted) to make room.
    DropOldest,
    /// Drops the pushed item (counted, and handed back).
    DropNewest,
    /// Refuses the pushed item ([`Refused::Full`], counted): the caller decides.
    Refuse,
}

/// What a push does when a spilling queue's store is full too (its disk budget is used up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStoreFull {
    /// Waits until the consumer frees budget.
    Wait,
    /// Refuses the pushed item ([`Refused::Full`], counted).
    Refuse,
}

/// An accepted push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The item was queued.
    Enqueued,
    /// The item was queued and the oldest queued item was dropped for it ([`WhenFull::DropOldest`]).
    EvictedOldest,
    /// The item went to the spill store's durable part (see [`spilling`](super::spilling)).
    Spilled,
}

/// A push the queue did not accept; every variant hands the item back ([`Refused::into_inner`])
/// and was counted under [`Refused::reason`].
pub enum Refused<T> {
    /// The queue was full and its policy refuses ([`WhenFull::Refuse`], [`WhenStoreFull::Refuse`],
    /// or a [`QueueHandle::try_push`](super::QueueHandle::try_push) that cannot wait).
    Full(T),
    /// The queue was full and the policy is [`WhenFull::DropNewest`]: this item was dropped.
    Dropped(T),
    /// The queue stayed full until the deadline of [`QueueHandle::push_until`](super::QueueHandle::push_until).
    Timeout(T, Duration),
    /// The spill store failed (a disk error).
    Failed(T, Error),
    /// The queue was closed (or its subscriber went away).
    Closed(T),
}

impl<T> Refused<T> {
    /// The item that was not accepted.
    pub fn into_inner(self) -> T {
        match self {
            Refused::Full(item)
            | Refused::Dropped(item)
            | Refused::Timeout(item, _)
            | Refused::Failed(item, _)
            | Refused::Closed(item) => item,
        }
    }

    /// The reason the push was counted under.
    pub fn reason(&self) -> Reason {
        match self {
            Refused::Full(_) => Reason::Full,
            Refused::Dropped(_) => Reason::DroppedNewest,
            Refused::Timeout(..) => Reason::Timeout,
            Refused::Failed(..) => Reason::SpillFailed,
            Refused::Closed(_) => Reason::Closed,
        }
    }
}

impl<T> fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Failed(_, error) => write!(f, "Refused(spill_failed: {error})"),
            Refused::Timeout(_, waited) => write!(f, "Refused(timeout after {waited:?})"),
            other => write!(f, "Refused({})", other.reason().as_str()),
        }
    }
}

/// Why a [`SpillStore`] refused an item.
#[derive(Debug)]
pub enum StoreRefusal {
    /// The store's budget is full; freeing happens as the consumer takes items.
    Full,
    /// The store failed (a disk error): the queue hands the item back with this error.
    Failed(Error),
}

/// A FIFO with a memory part and a durable overflow part, behind a spilling queue.
///
/// The queue holds it under its own lock and never calls it concurrently. The contract: items come
/// out in the order they went in; once the memory part is full, new items go to the durable part and
/// keep going there until it is empty (so order is kept); `take_into` hands items out (and may
/// acknowledge durable records as handed out); items still in the durable part when the queue ends
/// are kept for the store's next run. `weir_spill::SpillQueue` is the implementation weir ships.
pub trait SpillStore<T>: Send {
    /// How many items the memory part holds (the queue's capacity).
    fn memory_capacity(&self) -> usize;
    /// Queues `item`, returning whether it went to the durable part; a refusal hands it back.
    /// A panic here loses the item with the store's code: the queue counts it as
    /// [`Reason::Failed`](crate::metrics::Reason::Failed) and the panic goes on to the pusher.
    fn push(&mut self, item: T) -> Result<bool, (T, StoreRefusal)>;
    /// Moves up to `max` of the oldest items to the back of `out`, returning how many.
    fn take_into(&mut self, max: usize, out: &mut VecDeque<T>) -> Result<usize, Error>;
    /// Items queued, in memory and durable. Exact: the queue counts any difference from what it
    /// put in and took out, more as recovered (an earlier run's items found), fewer as
    /// [`Reason::Corrupt`](crate::metrics::Reason::Corrupt) (items the store could not give back).
    fn len(&self) -> u64;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Items only in the memory part: lost if the queue ends before they are taken (counted as
    /// cancelled then). Items read back into memory that stay durable until taken (replayed by
    /// the next run) are not among them.
    fn in_memory(&self) -> usize;
    /// How long ago the oldest queued item went in, if the store knows (an upper bound is fine).
    /// Asked once, when the queue is made, for the items the store already holds (left by an
    /// earlier run): without it they have no known age until they are taken. The default knows
    /// nothing.
    fn oldest_age(&self) -> Option<std::time::Duration> {
        None
    }
    /// Makes what was spilled durable now (called when the queue pauses and on close).
    fn flush(&mut self) -> Result<(), Error>;
    /// Gives the store a way to tell the queue that items became available by themselves (a store
    /// that reads ahead in the background): `wake` makes the queue emit them if there is demand.
    /// It never blocks and takes no lock of the store's; call it without holding one. The default
    /// ignores it (a store whose items only change when the queue calls it).
    fn set_wake(&mut self, wake: Arc<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }
}
