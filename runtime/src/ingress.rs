//! Ingress: where the outside world pushes into a stream.
//!
//! A pure publisher never overflows: it emits only what was requested. Overflow exists where something
//! that cannot be slowed down (an HTTP handler, a socket, a callback API) meets demand. An ingress is
//! that meeting point: a bounded queue with an [`IngressHandle`] that callers push into and an
//! [`IngressPublisher`] that emits on demand. When the queue is full, its [`Overflow`] policy decides,
//! explicitly and observably: every rejected or dropped item is counted by [`Reason`] and logged.
//! A rejected push hands the item back to the caller, so nothing is lost silently.
//!
//! Emission runs in the pushing task (or the requesting one), serialised by the same drain loop as
//! every synchronous source; put a boundary after the ingress when the downstream work is heavy.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_sync::SubscriptionCore;

use crate::metrics::{BoundaryMetrics, Reason, StageKind};
use crate::source::{CANCEL_CHECK_EVERY, Emit, Emitted, Emitter, Poke};
use crate::{Error, ErrorKind, Publisher, Subscriber, reject};

/// How many items the drain loop takes from the queue under one lock.
const TAKE_BATCH: usize = 256;

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
    /// The spill store failed (a disk error); see [`ingress_spilling`].
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

/// An accepted push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The item was queued.
    Enqueued,
    /// The item was queued and the oldest queued item was dropped for it ([`Overflow::DropOldest`]).
    EvictedOldest,
    /// The item went to the spill store's durable part (see [`ingress_spilling`]).
    Spilled,
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

/// Why a [`SpillStore`] refused an item.
#[derive(Debug)]
pub enum StoreRefusal {
    /// The store's budget is full; freeing happens as the consumer takes items.
    Full,
    /// The store failed (a disk error): the ingress hands the item back with this error.
    Failed(Error),
}

/// A FIFO queue with a memory part and a durable overflow part, behind a spilling ingress.
///
/// The ingress holds it under its own lock and never calls it concurrently. The contract: items come
/// out in the order they went in; once the memory part is full, new items go to the durable part and
/// keep going there until it is empty (so order is kept); `take_into` hands items out (and may
/// acknowledge durable records as handed out); items still in the durable part when the ingress ends
/// are kept for the store's next run. `weir_spill::SpillQueue` is the implementation weir ships.
pub trait SpillStore<T>: Send {
    /// How many items the memory part holds (the ingress's capacity).
    fn memory_capacity(&self) -> usize;
    /// Queues `item`, returning whether it went to the durable part; a refusal hands it back.
    fn push(&mut self, item: T) -> Result<bool, (T, StoreRefusal)>;
    /// Moves up to `max` of the oldest items to the back of `out`, returning how many.
    fn take_into(&mut self, max: usize, out: &mut VecDeque<T>) -> Result<usize, Error>;
    /// Items queued, in memory and durable.
    fn len(&self) -> u64;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Items in the memory part (lost if the ingress ends before they are taken).
    fn in_memory(&self) -> usize;
    /// Makes what was spilled durable now (called when the ingress pauses and on close).
    fn flush(&mut self) -> Result<(), Error>;
}

struct Queue<T> {
    /// Items with their enqueue time (nanoseconds since the metrics epoch).
    items: VecDeque<(u64, T)>,
    /// A spilling ingress keeps everything in its store instead of `items`.
    store: Option<Box<dyn SpillStore<T>>>,
    closed: bool,
    /// Set by [`IngressHandle::fail`]: the stream ends with it after the queued items.
    failure: Option<Error>,
}

impl<T> Queue<T> {
    fn len(&self) -> u64 {
        self.items.len() as u64 + self.store.as_ref().map_or(0, |store| store.len())
    }
}

/// The overflow behaviour of one ingress.
#[derive(Debug, Clone, Copy)]
enum Policy {
    Plain(Overflow),
    Spill(SpillFull),
}

impl Policy {
    fn block_timeout(self) -> Option<Duration> {
        match self {
            Policy::Plain(Overflow::Block { timeout })
            | Policy::Spill(SpillFull::Block { timeout }) => Some(timeout),
            _ => None,
        }
    }
}

struct Shared<T> {
    name: Arc<str>,
    capacity: usize,
    policy: Policy,
    queue: Mutex<Queue<T>>,
    space: Notify,
    blocked: AtomicUsize,
    subscribed: AtomicBool,
    emitter: OnceLock<Arc<dyn Poke>>,
    metrics: Arc<BoundaryMetrics>,
}

enum Offer<T> {
    Accepted(Pushed),
    Refused(PushError<T>),
    MustWait(T),
}

impl<T> Shared<T> {
    fn offer(&self, item: T, may_wait: bool) -> Offer<T> {
        let stage = || self.name.clone();
        let mut queue = self.queue.lock().unwrap();
        if queue.closed {
            drop(queue);
            self.metrics.record_shed(Reason::Closed);
            return Offer::Refused(PushError::Closed {
                item,
                stage: stage(),
            });
        }
        if queue.store.is_some() {
            return self.offer_to_store(queue, item, may_wait);
        }
        let now = self.metrics.now_nanos();
        if queue.items.len() < self.capacity {
            queue.items.push_back((now, item));
            self.after_change(&queue, 1);
            return Offer::Accepted(Pushed::Enqueued);
        }
        let Policy::Plain(overflow) = self.policy else {
            unreachable!("a spilling ingress has a store")
        };
        let refused = match overflow {
            Overflow::Block { .. } if may_wait => return Offer::MustWait(item),
            Overflow::Block { .. } => PushError::Full {
                item,
                stage: stage(),
            },
            Overflow::Reject { retry_after } => PushError::Rejected {
                item,
                retry_after,
                stage: stage(),
            },
            Overflow::DropNewest => PushError::Dropped {
                item,
                stage: stage(),
            },
            Overflow::DropOldest => {
                let evicted = queue.items.pop_front();
                queue.items.push_back((now, item));
                self.after_change(&queue, 1);
                drop(queue);
                drop(evicted);
                self.metrics.record_evicted_n(Reason::DroppedOldest, 1);
                return Offer::Accepted(Pushed::EvictedOldest);
            }
        };
        drop(queue);
        self.metrics.record_shed(refused.reason());
        Offer::Refused(refused)
    }

    fn offer_to_store(
        &self,
        mut queue: std::sync::MutexGuard<'_, Queue<T>>,
        item: T,
        may_wait: bool,
    ) -> Offer<T> {
        let stage = || self.name.clone();
        let store = queue.store.as_mut().expect("checked by the caller");
        let refused = match store.push(item) {
            Ok(spilled) => {
                self.metrics.add_in(1);
                return Offer::Accepted(if spilled {
                    Pushed::Spilled
                } else {
                    Pushed::Enqueued
                });
            }
            Err((item, StoreRefusal::Full)) => match self.policy {
                Policy::Spill(SpillFull::Block { .. }) if may_wait => return Offer::MustWait(item),
                Policy::Spill(SpillFull::Reject { retry_after }) => PushError::Rejected {
                    item,
                    retry_after,
                    stage: stage(),
                },
                _ => PushError::Full {
                    item,
                    stage: stage(),
                },
            },
            Err((item, StoreRefusal::Failed(error))) => PushError::Failed {
                item,
                error: error.in_stage(stage()),
                stage: stage(),
            },
        };
        drop(queue);
        self.metrics.record_shed(refused.reason());
        Offer::Refused(refused)
    }

    /// Updates the gauges after `added` items went in or some were taken (lock held).
    fn after_change(&self, queue: &Queue<T>, added: u64) {
        self.metrics.add_in(added);
        self.metrics
            .set_oldest(queue.items.front().map(|(enqueued, _)| *enqueued));
    }

    fn poke(&self) {
        if let Some(emitter) = self.emitter.get() {
            emitter.poke();
        }
    }

    fn close(&self) {
        {
            let mut queue = self.queue.lock().unwrap();
            queue.closed = true;
            if let Some(store) = queue.store.as_mut()
                && let Err(error) = store.flush()
            {
                tracing::warn!(stage = %self.name, %error, "could not flush the spill store on close");
            }
        }
        self.space.notify_waiters();
        self.poke();
    }
}

/// Creates an ingress: the handle to push into (clone it for every producer) and the publisher that
/// emits the queued items on demand. When every handle is dropped (or [`IngressHandle::close`] is
/// called) the publisher completes after the queued items.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use weir_runtime::ingress::{ingress, IngressConfig, Overflow, PushError};
/// use weir_runtime::sink;
///
/// let config = IngressConfig::new("checkout", 2, Overflow::Reject { retry_after: Duration::from_millis(50) }).unwrap();
/// let (handle, publisher) = ingress::<u32>(config);
/// handle.push(1).await.unwrap();
/// handle.push(2).await.unwrap();
/// let refused = handle.push(3).await.unwrap_err(); // nobody consumes yet: the queue is full
/// assert_eq!(refused.retry_after(), Some(Duration::from_millis(50)));
/// assert_eq!(refused.into_inner(), 3); // the item comes back
/// drop(handle);
/// assert_eq!(sink::collect(publisher).await.unwrap(), vec![1, 2]);
/// # }
/// ```
pub fn ingress<T: Send + 'static>(
    config: IngressConfig,
) -> (IngressHandle<T>, IngressPublisher<T>) {
    build(
        config.name,
        config.capacity,
        Policy::Plain(config.overflow),
        None,
    )
}

/// Creates an ingress that spills instead of shedding: items that do not fit in the store's memory
/// part go to its durable part and come back in FIFO order when the consumer catches up (once
/// spilling starts, new items follow the spilled ones until the durable part is empty). When the
/// store's disk budget is full, `when_full` decides: wait (with a deadline) or reject. Items taken
/// from the store are acknowledged to it as they are handed downstream.
///
/// Spilling is a constructor rather than an [`Overflow`] variant because the store is an open
/// resource (a directory, a lock, a budget), not a plain policy value: opening it can fail, and that
/// failure belongs where it is opened. `weir_spill::SpillQueue` is the store weir ships.
pub fn ingress_spilling<T: Send + 'static>(
    name: impl Into<Arc<str>>,
    store: impl SpillStore<T> + 'static,
    when_full: SpillFull,
) -> Result<(IngressHandle<T>, IngressPublisher<T>), Error> {
    let name = name.into();
    let capacity = store.memory_capacity();
    if capacity == 0 {
        return Err(
            Error::msg("a spill store needs a memory capacity of at least 1").in_stage(name),
        );
    }
    Ok(build(
        name,
        capacity,
        Policy::Spill(when_full),
        Some(Box::new(store)),
    ))
}

fn build<T: Send + 'static>(
    name: Arc<str>,
    capacity: usize,
    policy: Policy,
    store: Option<Box<dyn SpillStore<T>>>,
) -> (IngressHandle<T>, IngressPublisher<T>) {
    let metrics = BoundaryMetrics::new(name.clone(), StageKind::Ingress, capacity);
    let reserve = if store.is_some() {
        0
    } else {
        capacity.min(4096)
    };
    let shared = Arc::new(Shared {
        name,
        capacity,
        policy,
        queue: Mutex::new(Queue {
            items: VecDeque::with_capacity(reserve),
            store,
            closed: false,
            failure: None,
        }),
        space: Notify::new(),
        blocked: AtomicUsize::new(0),
        subscribed: AtomicBool::new(false),
        emitter: OnceLock::new(),
        metrics,
    });
    (
        IngressHandle {
            producers: Arc::new(Producers(shared.clone())),
        },
        IngressPublisher { shared },
    )
}

/// Closes the ingress when the last handle goes.
struct Producers<T>(Arc<Shared<T>>);

impl<T> Drop for Producers<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The pushing side of an ingress. Clone it for each producer; the ingress closes when all are gone.
pub struct IngressHandle<T> {
    producers: Arc<Producers<T>>,
}

impl<T> Clone for IngressHandle<T> {
    fn clone(&self) -> Self {
        Self {
            producers: self.producers.clone(),
        }
    }
}

impl<T> fmt::Debug for IngressHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressHandle")
            .field("name", &self.shared().name)
            .finish()
    }
}

impl<T> IngressHandle<T> {
    fn shared(&self) -> &Shared<T> {
        &self.producers.0
    }

    /// Pushes `item`, applying the overflow policy if the queue is full. Only [`Overflow::Block`] ever
    /// waits, and never past its timeout.
    pub async fn push(&self, item: T) -> Result<Pushed, PushError<T>> {
        // A timeout too long to add to the clock (`Duration::MAX`) means no timeout.
        let deadline = self
            .shared()
            .policy
            .block_timeout()
            .and_then(|t| Instant::now().checked_add(t));
        self.push_until(item, deadline).await
    }

    /// Pushes `item`, waiting for room as long as it takes under a blocking policy
    /// ([`Overflow::Block`], [`SpillFull::Block`]): no timeout, so nothing is counted as rejected.
    /// For feeders inside a stream (an in-stream buffer, a fan-out hub), whose upstream simply
    /// waits with them: that is backpressure, not overload. Other policies behave as in
    /// [`push`](Self::push).
    pub async fn push_waiting(&self, item: T) -> Result<Pushed, PushError<T>> {
        self.push_until(item, None).await
    }

    async fn push_until(&self, item: T, deadline: Option<Instant>) -> Result<Pushed, PushError<T>> {
        let shared = self.shared();
        shared.metrics.add_offered(1);
        let item = match shared.offer(item, true) {
            Offer::Accepted(pushed) => {
                shared.poke();
                return Ok(pushed);
            }
            Offer::Refused(error) => return Err(error),
            Offer::MustWait(item) => item,
        };
        let started = Instant::now();
        shared.blocked.fetch_add(1, Ordering::AcqRel);
        let mut item = item;
        let outcome = loop {
            let space = shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match shared.offer(item, true) {
                Offer::MustWait(back) => item = back,
                Offer::Accepted(pushed) => break Ok(pushed),
                Offer::Refused(error) => break Err(error),
            }
            let Some(deadline) = deadline else {
                space.await;
                continue;
            };
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                match shared.offer(item, true) {
                    Offer::MustWait(item) => {
                        shared.metrics.record_shed(Reason::Timeout);
                        break Err(PushError::Timeout {
                            item,
                            waited: started.elapsed(),
                            stage: shared.name.clone(),
                        });
                    }
                    Offer::Accepted(pushed) => break Ok(pushed),
                    Offer::Refused(error) => break Err(error),
                }
            }
        };
        shared.blocked.fetch_sub(1, Ordering::AcqRel);
        shared.metrics.record_wait(started.elapsed());
        if outcome.is_ok() {
            shared.poke();
        }
        outcome
    }

    /// Pushes without ever waiting: under [`Overflow::Block`] a full queue gives
    /// [`PushError::Full`]. Callable from any thread, inside or outside a runtime.
    pub fn try_push(&self, item: T) -> Result<Pushed, PushError<T>> {
        let shared = self.shared();
        shared.metrics.add_offered(1);
        match shared.offer(item, false) {
            Offer::Accepted(pushed) => {
                shared.poke();
                Ok(pushed)
            }
            Offer::Refused(error) => Err(error),
            Offer::MustWait(_) => unreachable!("try_push never waits"),
        }
    }

    /// Stops accepting pushes; the publisher completes once the queued items are emitted.
    pub fn close(&self) {
        self.shared().close();
    }

    /// A handle that can close the ingress but does not keep it open: the ingress still closes
    /// when the last [`IngressHandle`] goes. For whoever supervises an ingress that producers own
    /// (a pipeline that closes its ingresses when it drains).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_runtime::ingress::{IngressConfig, Overflow, ingress};
    /// use weir_runtime::sink;
    /// let (handle, publisher) = ingress::<u32>(IngressConfig::new("in", 8, Overflow::DropNewest).unwrap());
    /// let closer = handle.closer();
    /// handle.push(1).await.unwrap();
    /// drop(handle); // the last producer went: the ingress closes although `closer` lives
    /// assert!(closer.is_closed());
    /// assert_eq!(sink::collect(publisher).await.unwrap(), vec![1]);
    /// # }
    /// ```
    pub fn closer(&self) -> IngressCloser<T> {
        IngressCloser {
            shared: self.producers.0.clone(),
        }
    }

    /// Stops accepting pushes; the publisher fails with `error` once the queued items are emitted
    /// (for a producer that hit a fatal problem, or an in-stream buffer that overflowed).
    pub fn fail(&self, error: Error) {
        let shared = self.shared();
        shared.queue.lock().unwrap().failure.get_or_insert(error);
        shared.close();
    }

    /// Whether the ingress no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.shared().queue.lock().unwrap().closed
    }

    /// Items queued now (for a spilling ingress: in memory and on disk).
    pub fn len(&self) -> usize {
        self.shared().queue.lock().unwrap().len() as usize
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ingress's live counters.
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.shared().metrics.clone()
    }
}

/// Closes an ingress without keeping it open; see [`IngressHandle::closer`].
pub struct IngressCloser<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for IngressCloser<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for IngressCloser<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressCloser")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<T> IngressCloser<T> {
    /// Stops accepting pushes, as [`IngressHandle::close`] does.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the ingress no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.shared.queue.lock().unwrap().closed
    }
}

/// The publishing side of an ingress. `Clone`, but it serves one subscriber: a second one gets
/// [`ErrorKind::AlreadySubscribed`].
pub struct IngressPublisher<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for IngressPublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for IngressPublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressPublisher")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<T> IngressPublisher<T> {
    /// The ingress's live counters.
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.shared.metrics.clone()
    }
}

impl<T: Send + 'static> Publisher<T> for IngressPublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        if self.shared.subscribed.swap(true, Ordering::AcqRel) {
            let error = Error::new(ErrorKind::AlreadySubscribed).in_stage(self.shared.name.clone());
            reject(subscriber, error);
            return;
        }
        let emit = IngressEmit {
            shared: self.shared.clone(),
            batch: VecDeque::with_capacity(TAKE_BATCH),
        };
        let emitter = Emitter::start(emit, subscriber);
        let _ = self.shared.emitter.set(emitter.clone());
        // Items pushed before the emitter was registered are waiting: emit them if there is demand.
        emitter.poke();
    }
}

struct IngressEmit<T> {
    shared: Arc<Shared<T>>,
    batch: VecDeque<T>,
}

impl<T: Send + 'static> Emit for IngressEmit<T> {
    type Item = T;

    fn emit<S: Subscriber<T>>(
        &mut self,
        subscriber: &mut S,
        demand: u64,
        core: &SubscriptionCore,
    ) -> Emitted {
        let shared = &*self.shared;
        let mut accepted = 0;
        let emitted = loop {
            if core.is_cancelled() {
                break Emitted::Items(accepted);
            }
            let room = (demand - accepted)
                .min(TAKE_BATCH as u64)
                .min(CANCEL_CHECK_EVERY) as usize;
            let want = room.saturating_sub(self.batch.len());
            {
                let mut queue = shared.queue.lock().unwrap();
                if queue.len() == 0 && self.batch.is_empty() && queue.closed {
                    break Emitted::Done(accepted, queue.failure.take().map_or(Ok(()), Err));
                }
                if room == 0 {
                    break Emitted::Items(accepted);
                }
                // Taken items are held in `self.batch` until the subscriber takes them: they are
                // counted out below, as it does.
                match queue.store.as_mut() {
                    Some(store) => {
                        if let Err(error) = store.take_into(want, &mut self.batch) {
                            break Emitted::Done(accepted, Err(error));
                        }
                    }
                    None => {
                        let take = want.min(queue.items.len());
                        self.batch
                            .extend(queue.items.drain(..take).map(|(_, item)| item));
                    }
                }
                shared.after_change(&queue, 0);
            }
            if self.batch.is_empty() {
                break Emitted::Items(accepted);
            }
            if accepted >= demand {
                break Emitted::Items(accepted);
            }
            if shared.blocked.load(Ordering::Acquire) > 0 {
                shared.space.notify_waiters();
            }
            // Items the subscriber does not take stay in the batch: emitted next time, or counted
            // as dropped if the subscription ends first.
            let before = self.batch.len();
            let batch = &mut self.batch;
            let mut from_batch = std::iter::from_fn(|| batch.pop_front());
            accepted += subscriber.try_on_next_iter(&mut from_batch, demand - accepted);
            shared.metrics.add_out((before - self.batch.len()) as u64);
        };
        // Outstanding demand as the ingress leaves it (unbounded stays unbounded).
        let left = if demand == u64::MAX {
            demand
        } else {
            demand - accepted
        };
        shared.metrics.set_demand(left);
        emitted
    }
}

impl<T> Drop for IngressEmit<T> {
    /// The subscription ended (cancel, or a failure downstream): whatever is still queued will never be
    /// emitted. Close the ingress so pushes fail loudly, and count what is dropped.
    fn drop(&mut self) {
        let left = {
            let mut queue = self.shared.queue.lock().unwrap();
            queue.closed = true;
            // Items in memory are lost with the subscription; a spill store keeps its durable part
            // for its next run, so only its memory part counts as dropped.
            let in_store = match queue.store.as_mut() {
                Some(store) => {
                    if let Err(error) = store.flush() {
                        tracing::warn!(stage = %self.shared.name, %error, "could not flush the spill store");
                    }
                    store.in_memory()
                }
                None => 0,
            };
            let left = queue.items.len() + self.batch.len() + in_store;
            queue.items.clear();
            self.shared.metrics.set_oldest(None);
            left
        };
        self.batch.clear();
        self.shared
            .metrics
            .record_evicted_n(Reason::Cancelled, left as u64);
        self.shared.space.notify_waiters();
    }
}
