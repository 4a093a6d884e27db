//! Ingress: where the outside world pushes into a stream.
//!
//! A pure publisher never overflows: it emits only what was requested. Overflow exists where something
//! that cannot be slowed down (an HTTP handler, a socket, a callback API) meets demand. An ingress is
//! that meeting point: a bounded [queue] with an [`IngressHandle`] that callers push
//! into and a [`QueuePublisher`] that emits on demand. When the queue is full, its [`Overflow`]
//! policy decides, explicitly and observably: every rejected or dropped item is counted by
//! [`Reason`] and logged. A refused push hands the item back to the caller
//! with the reason (and, for a rejection, when to retry), so nothing is lost silently.
//!
//! The ingress is the queue's face for callers outside a stream: it adds the deadline of
//! [`Overflow::Block`] and the retry hint of [`Overflow::Reject`]. Inside a stream (a buffer, a
//! fan-out's outputs) use the [queue] itself.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;
use crate::metrics::{BufferMetrics, Reason};
use crate::queue::{
    self, Pushed, QueueCloser, QueueHandle, QueuePublisher, Refused, SpillStore, WhenFull,
    WhenStoreFull,
};

/// What an ingress does with a push when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The caller waits for space, up to `timeout`; then the push fails with the item handed back.
    Block {
        /// The longest a push may wait.
        timeout: Duration,
    },
    /// The push fails at once with the item and a hint of when to retry (what a 429 / 503 needs).
    Reject {
        /// The hint given to callers.
        retry_after: Duration,
    },
    /// The oldest queued item is dropped (counted) to make room: freshness beats completeness.
    DropOldest,
    /// The pushed item is dropped (counted, and handed back to the caller).
    DropNewest,
}

/// Settings of one ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    name: Arc<str>,
    capacity: usize,
    overflow: Overflow,
}

impl IngressConfig {
    /// An ingress named `name` that queues at most `capacity` items. A capacity of zero is an error.
    pub fn new(
        name: impl Into<Arc<str>>,
        capacity: usize,
        overflow: Overflow,
    ) -> Result<Self, Error> {
        let name = name.into();
        if capacity == 0 {
            return Err(Error::msg("an ingress needs a capacity of at least 1").in_stage(name));
        }
        Ok(Self {
            name,
            capacity,
            overflow,
        })
    }
}

/// A push that was not accepted. Every variant hands the item back ([`PushError::into_inner`]).
#[derive(thiserror::Error)]
pub enum PushError<T> {
    /// The queue was full and the policy is [`Overflow::Reject`].
    #[error("ingress `{stage}` is full: retry after {retry_after:?}")]
    Rejected {
        /// The item, handed back.
        item: T,
        /// When a retry may succeed.
        retry_after: Duration,
        /// The ingress.
        stage: Arc<str>,
    },
    /// The queue stayed full until the [`Overflow::Block`] deadline.
    #[error("ingress `{stage}` stayed full for {waited:?}")]
    Timeout {
        /// The item, handed back.
        item: T,
        /// How long the push waited.
        waited: Duration,
        /// The ingress.
        stage: Arc<str>,
    },
    /// [`IngressHandle::try_push`] found the queue full under [`Overflow::Block`] and cannot wait.
    #[error("ingress `{stage}` is full and try_push cannot wait")]
    Full {
        /// The item, handed back.
        item: T,
        /// The ingress.
        stage: Arc<str>,
    },
    /// The queue was full and the policy is [`Overflow::DropNewest`]: this item was dropped.
    #[error("ingress `{stage}` is full: the newest item was dropped")]
    Dropped {
        /// The item, handed back.
        item: T,
        /// The ingress.
        stage: Arc<str>,
    },
    /// The spill store failed (a disk error); see [`spilling`].
    #[error("ingress `{stage}` could not spill: {error}")]
    Failed {
        /// The item, handed back.
        item: T,
        /// What the store reported.
        error: Error,
        /// The ingress.
        stage: Arc<str>,
    },
    /// The ingress was closed (or its subscriber cancelled).
    #[error("ingress `{stage}` is closed")]
    Closed {
        /// The item, handed back.
        item: T,
        /// The ingress.
        stage: Arc<str>,
    },
}

impl<T> PushError<T> {
    /// The item that was not accepted.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Rejected { item, .. }
            | PushError::Timeout { item, .. }
            | PushError::Full { item, .. }
            | PushError::Dropped { item, .. }
            | PushError::Failed { item, .. }
            | PushError::Closed { item, .. } => item,
        }
    }

    /// The retry hint of a [`PushError::Rejected`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::Rejected { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The reason the push was counted under.
    pub fn reason(&self) -> Reason {
        match self {
            PushError::Rejected { .. } | PushError::Full { .. } => Reason::Full,
            PushError::Timeout { .. } => Reason::Timeout,
            PushError::Dropped { .. } => Reason::DroppedNewest,
            PushError::Failed { .. } => Reason::SpillFailed,
            PushError::Closed { .. } => Reason::Closed,
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushError({self})")
    }
}

/// What a spilling ingress does when its store refuses an item because its disk budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillFull {
    /// The caller waits up to `timeout` for the consumer to free budget, then gets the item back.
    Block {
        /// The longest a push may wait.
        timeout: Duration,
    },
    /// The push fails at once with the item and a retry hint.
    Reject {
        /// The hint given to callers.
        retry_after: Duration,
    },
}

impl Overflow {
    fn when_full(self) -> WhenFull {
        match self {
            Overflow::Block { .. } => WhenFull::Wait,
            Overflow::Reject { .. } => WhenFull::Refuse,
            Overflow::DropOldest => WhenFull::DropOldest,
            Overflow::DropNewest => WhenFull::DropNewest,
        }
    }
}

/// What an ingress tells a caller whose push its queue refused: the deadline it waits, the hint
/// it gives.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Waits up to `timeout` for room (`Duration::MAX`: as long as it takes).
    Wait(Duration),
    /// Refuses at once, with a hint of when to retry.
    Reject(Duration),
    /// Drops (the queue's drop policies).
    Drop,
}

/// Creates an ingress: the handle to push into (clone it for every producer) and the publisher that
/// emits the queued items on demand. When every handle is dropped (or [`IngressHandle::close`] is
/// called) the publisher completes after the queued items.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use weir_runtime::ingress::{self, IngressConfig, Overflow};
/// use weir_runtime::sink;
///
/// let config = IngressConfig::new("checkout", 2, Overflow::Reject { retry_after: Duration::from_millis(50) }).unwrap();
/// let (handle, publisher) = ingress::bounded::<u32>(config);
/// handle.push(1).await.unwrap();
/// handle.push(2).await.unwrap();
/// let refused = handle.push(3).await.unwrap_err(); // nobody consumes yet: the queue is full
/// assert_eq!(refused.retry_after(), Some(Duration::from_millis(50)));
/// assert_eq!(refused.into_inner(), 3); // the item comes back
/// drop(handle);
/// assert_eq!(sink::collect(publisher).await.unwrap(), vec![1, 2]);
/// # }
/// ```
pub fn bounded<T: Send + 'static>(config: IngressConfig) -> (IngressHandle<T>, QueuePublisher<T>) {
    let answer = match config.overflow {
        Overflow::Block { timeout } => Answer::Wait(timeout),
        Overflow::Reject { retry_after } => Answer::Reject(retry_after),
        Overflow::DropOldest | Overflow::DropNewest => Answer::Drop,
    };
    let (queue, publisher) =
        queue::bounded(config.name, config.capacity, config.overflow.when_full())
            .expect("IngressConfig::new checked the capacity");
    (IngressHandle { queue, answer }, publisher)
}

/// Creates an ingress that spills instead of shedding (see [`queue::spilling`]): items beyond the
/// store's memory part go to its durable part and come back in FIFO order when the consumer
/// catches up. When the store's disk budget is full too, `when_full` decides: wait (with a
/// deadline) or reject. `weir_spill::SpillQueue` is the store weir ships.
pub fn spilling<T: Send + 'static>(
    name: impl Into<Arc<str>>,
    store: impl SpillStore<T> + 'static,
    when_full: SpillFull,
) -> Result<(IngressHandle<T>, QueuePublisher<T>), Error> {
    let (answer, policy) = match when_full {
        SpillFull::Block { timeout } => (Answer::Wait(timeout), WhenStoreFull::Wait),
        SpillFull::Reject { retry_after } => (Answer::Reject(retry_after), WhenStoreFull::Refuse),
    };
    let (queue, publisher) = queue::spilling(name, store, policy)?;
    Ok((IngressHandle { queue, answer }, publisher))
}

/// The pushing side of an ingress. Clone it for each producer; the ingress closes when all are gone.
pub struct IngressHandle<T> {
    queue: QueueHandle<T>,
    answer: Answer,
}

impl<T> Clone for IngressHandle<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            answer: self.answer,
        }
    }
}

impl<T> fmt::Debug for IngressHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressHandle")
            .field("name", self.queue.name())
            .finish()
    }
}

impl<T> IngressHandle<T> {
    /// Pushes `item`, applying the overflow policy if the queue is full. Only a blocking policy
    /// ([`Overflow::Block`], [`SpillFull::Block`]) ever waits, and never past its timeout.
    /// Dropping the future while it waits gives the item up, counted as
    /// [`Reason::Abandoned`].
    pub async fn push(&self, item: T) -> Result<Pushed, PushError<T>> {
        // A timeout too long to add to the clock (`Duration::MAX`) means no timeout.
        let deadline = match self.answer {
            Answer::Wait(timeout) => Instant::now().checked_add(timeout),
            Answer::Reject(_) | Answer::Drop => None,
        };
        let pushed = self.queue.push_until(item, deadline).await;
        pushed.map_err(|refused| self.explain(refused))
    }

    /// Pushes without ever waiting: under a blocking policy a full queue gives
    /// [`PushError::Full`]. Callable from any thread, inside or outside a runtime.
    pub fn try_push(&self, item: T) -> Result<Pushed, PushError<T>> {
        let pushed = self.queue.try_push(item);
        pushed.map_err(|refused| self.explain(refused))
    }

    /// What the caller is told of a refusal.
    fn explain(&self, refused: Refused<T>) -> PushError<T> {
        let stage = self.queue.name().clone();
        match refused {
            Refused::Full(item) => match self.answer {
                Answer::Reject(retry_after) => PushError::Rejected {
                    item,
                    retry_after,
                    stage,
                },
                Answer::Wait(_) | Answer::Drop => PushError::Full { item, stage },
            },
            Refused::Dropped(item) => PushError::Dropped { item, stage },
            Refused::Timeout(item, waited) => PushError::Timeout {
                item,
                waited,
                stage,
            },
            Refused::Failed(item, error) => PushError::Failed { item, error, stage },
            Refused::Closed(item) => PushError::Closed { item, stage },
        }
    }

    /// Stops accepting pushes; the publisher completes once the queued items are emitted.
    pub fn close(&self) {
        self.queue.close();
    }

    /// A handle that can close the ingress but does not keep it open: the ingress still closes
    /// when the last [`IngressHandle`] goes. For whoever supervises an ingress that producers own
    /// (a pipeline that closes its ingresses when it drains).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_runtime::ingress::{self, IngressConfig, Overflow};
    /// use weir_runtime::sink;
    /// let (handle, publisher) = ingress::bounded::<u32>(IngressConfig::new("in", 8, Overflow::DropNewest).unwrap());
    /// let closer = handle.closer();
    /// handle.push(1).await.unwrap();
    /// drop(handle); // the last producer went: the ingress closes although `closer` lives
    /// assert!(closer.is_closed());
    /// assert_eq!(sink::collect(publisher).await.unwrap(), vec![1]);
    /// # }
    /// ```
    pub fn closer(&self) -> QueueCloser<T> {
        self.queue.closer()
    }

    /// Stops accepting pushes; the publisher fails with `error` once the queued items are emitted
    /// (for a producer that hit a fatal problem).
    pub fn fail(&self, error: Error) {
        self.queue.fail(error);
    }

    /// Whether the ingress no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Items queued now (for a spilling ingress: in memory and on disk).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The ingress's live counters.
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.queue.metrics()
    }
}
