//! Queues: a bounded FIFO that producers push into and a publisher that emits from it on demand.
//!
//! A queue is where pushes meet demand inside weir: an in-stream buffer, the outputs of a
//! fan-out, and (wrapped with timeouts and retry hints for callers outside a stream) every
//! [ingress](crate::ingress). What a push finds when the queue is full is the queue's policy,
//! fixed when it is made:
//!
//! - in memory ([`bounded`]), a [`WhenFull`]: wait for room, drop the oldest queued item, drop
//!   the pushed one, or refuse it (the caller gets it back and decides: reject, fail, disconnect);
//! - with a spill store ([`spilling`]), items beyond the memory part go to the store's durable part
//!   and come back in order; when the store is full too, a [`WhenStoreFull`]: wait, or refuse.
//!
//! Every refusal hands the item back ([`Refused`]) and is counted by [`Reason`] in the queue's
//! [`BoundaryMetrics`], as is every item evicted or left behind when the subscription ends.
//!
//! Emission runs in the pushing task (or the requesting one), serialised by the same drain loop as
//! every synchronous source; put a boundary after the queue when the downstream work is heavy.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_sync::SubscriptionCore;

use crate::metrics::{BoundaryMetrics, Reason, StageKind};
use crate::source::{CANCEL_CHECK_EVERY, Emit, Emitted, Emitter, Poke};
use crate::{Error, ErrorKind, Publisher, Subscriber, reject};

/// How many items the drain loop takes from the queue under one lock.
const TAKE_BATCH: usize = 256;

/// What a push into a full in-memory queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Waits for room ([`QueueHandle::push`]; a deadline with [`QueueHandle::push_until`]).
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
    /// The item went to the spill store's durable part (see [`spilling`]).
    Spilled,
}

/// A push the queue did not accept; every variant hands the item back ([`Refused::into_inner`])
/// and was counted under [`Refused::reason`].
pub enum Refused<T> {
    /// The queue was full and its policy refuses ([`WhenFull::Refuse`], [`WhenStoreFull::Refuse`],
    /// or a [`QueueHandle::try_push`] that cannot wait).
    Full(T),
    /// The queue was full and the policy is [`WhenFull::DropNewest`]: this item was dropped.
    Dropped(T),
    /// The queue stayed full until the deadline of [`QueueHandle::push_until`].
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
    fn push(&mut self, item: T) -> Result<bool, (T, StoreRefusal)>;
    /// Moves up to `max` of the oldest items to the back of `out`, returning how many.
    fn take_into(&mut self, max: usize, out: &mut VecDeque<T>) -> Result<usize, Error>;
    /// Items queued, in memory and durable.
    fn len(&self) -> u64;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Items in the memory part (lost if the queue ends before they are taken).
    fn in_memory(&self) -> usize;
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

/// Where a queue keeps its items, and its policy when full: one or the other, never both.
enum Storage<T> {
    /// Items with their enqueue time (nanoseconds since the metrics epoch).
    Memory {
        items: VecDeque<(u64, T)>,
        when_full: WhenFull,
    },
    Spilling {
        store: Box<dyn SpillStore<T>>,
        when_full: WhenStoreFull,
    },
}

struct State<T> {
    storage: Storage<T>,
    closed: bool,
    /// Set by [`QueueHandle::fail`]: the stream ends with it after the queued items.
    failure: Option<Error>,
}

impl<T> State<T> {
    fn len(&self) -> u64 {
        match &self.storage {
            Storage::Memory { items, .. } => items.len() as u64,
            Storage::Spilling { store, .. } => store.len(),
        }
    }
}

pub(crate) struct Shared<T> {
    name: Arc<str>,
    capacity: usize,
    state: Mutex<State<T>>,
    space: Notify,
    /// Pushes waiting for room.
    blocked: AtomicUsize,
    subscribed: AtomicBool,
    emitter: OnceLock<Arc<dyn Poke>>,
    metrics: Arc<BoundaryMetrics>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Offer<T> {
    Accepted(Pushed),
    Refused(Refused<T>),
    MustWait(T),
}

impl<T> Shared<T> {
    fn offer(&self, item: T, may_wait: bool) -> Offer<T> {
        let mut state = lock(&self.state);
        if state.closed {
            drop(state);
            return self.refuse(Refused::Closed(item));
        }
        let now = self.metrics.now_nanos();
        let state = &mut *state;
        match &mut state.storage {
            Storage::Memory { items, when_full } => {
                if items.len() < self.capacity {
                    items.push_back((now, item));
                    self.after_change(items, 1);
                    return Offer::Accepted(Pushed::Enqueued);
                }
                match when_full {
                    WhenFull::Wait if may_wait => Offer::MustWait(item),
                    WhenFull::Wait | WhenFull::Refuse => self.refuse(Refused::Full(item)),
                    WhenFull::DropNewest => self.refuse(Refused::Dropped(item)),
                    WhenFull::DropOldest => {
                        let evicted = items.pop_front();
                        items.push_back((now, item));
                        self.after_change(items, 1);
                        drop(evicted);
                        self.metrics.record_evicted_n(Reason::DroppedOldest, 1);
                        Offer::Accepted(Pushed::EvictedOldest)
                    }
                }
            }
            Storage::Spilling { store, when_full } => match store.push(item) {
                Ok(spilled) => {
                    self.metrics.add_in(1);
                    Offer::Accepted(if spilled {
                        Pushed::Spilled
                    } else {
                        Pushed::Enqueued
                    })
                }
                Err((item, StoreRefusal::Full)) => match when_full {
                    WhenStoreFull::Wait if may_wait => Offer::MustWait(item),
                    _ => self.refuse(Refused::Full(item)),
                },
                Err((item, StoreRefusal::Failed(error))) => {
                    self.refuse(Refused::Failed(item, error.in_stage(self.name.clone())))
                }
            },
        }
    }

    /// Counts a refusal and hands it back.
    fn refuse(&self, refused: Refused<T>) -> Offer<T> {
        Offer::Refused(self.count(refused))
    }

    /// Counts a refusal under its reason.
    fn count(&self, refused: Refused<T>) -> Refused<T> {
        self.metrics.record_shed(refused.reason());
        refused
    }

    /// Updates the gauges after `added` items went in or some were taken (lock held).
    fn after_change(&self, items: &VecDeque<(u64, T)>, added: u64) {
        self.metrics.add_in(added);
        self.metrics
            .set_oldest(items.front().map(|(enqueued, _)| *enqueued));
    }

    fn poke(&self) {
        if let Some(emitter) = self.emitter.get() {
            emitter.poke();
        }
    }

    fn close(&self) {
        {
            let mut state = lock(&self.state);
            state.closed = true;
            if let Storage::Spilling { store, .. } = &mut state.storage
                && let Err(error) = store.flush()
            {
                tracing::warn!(stage = %self.name, %error, "could not flush the spill store on close");
            }
        }
        self.space.notify_waiters();
        self.poke();
    }

    fn fail(&self, error: Error) {
        lock(&self.state).failure.get_or_insert(error);
        self.close();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    async fn push_until(&self, item: T, deadline: Option<Instant>) -> Result<Pushed, Refused<T>> {
        self.metrics.add_offered(1);
        let item = match self.offer(item, true) {
            Offer::Accepted(pushed) => {
                self.poke();
                return Ok(pushed);
            }
            Offer::Refused(refused) => return Err(refused),
            Offer::MustWait(item) => item,
        };
        let started = Instant::now();
        self.blocked.fetch_add(1, Ordering::AcqRel);
        let mut item = item;
        let outcome = loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.offer(item, true) {
                Offer::MustWait(back) => item = back,
                Offer::Accepted(pushed) => break Ok(pushed),
                Offer::Refused(refused) => break Err(refused),
            }
            let Some(deadline) = deadline else {
                space.await;
                continue;
            };
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                match self.offer(item, true) {
                    Offer::MustWait(item) => {
                        break Err(self.count(Refused::Timeout(item, started.elapsed())));
                    }
                    Offer::Accepted(pushed) => break Ok(pushed),
                    Offer::Refused(refused) => break Err(refused),
                }
            }
        };
        self.blocked.fetch_sub(1, Ordering::AcqRel);
        self.metrics.record_wait(started.elapsed());
        if outcome.is_ok() {
            self.poke();
        }
        outcome
    }

    fn try_push(&self, item: T) -> Result<Pushed, Refused<T>> {
        self.metrics.add_offered(1);
        match self.offer(item, false) {
            Offer::Accepted(pushed) => {
                self.poke();
                Ok(pushed)
            }
            Offer::Refused(refused) => Err(refused),
            // Not waiting: a full queue whose policy waits refuses instead.
            Offer::MustWait(item) => Err(self.count(Refused::Full(item))),
        }
    }
}

/// Makes a queue of at most `capacity` items (at least 1) kept in memory, with `when_full` for a
/// push into a full queue: the handle to push into (clone it for every producer) and the
/// publisher that emits the queued items on demand. When every handle is dropped (or
/// [`QueueHandle::close`] is called) the publisher completes after the queued items.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::queue::{self, Refused, WhenFull};
/// use weir_runtime::sink;
/// let (handle, publisher) = queue::bounded::<u32>("lagging", 2, WhenFull::Refuse).unwrap();
/// handle.push(1).await.unwrap();
/// handle.push(2).await.unwrap();
/// assert!(matches!(handle.push(3).await, Err(Refused::Full(3)))); // the item comes back
/// drop(handle);
/// assert_eq!(sink::collect(publisher).await.unwrap(), vec![1, 2]);
/// # }
/// ```
pub fn bounded<T: Send + 'static>(
    name: impl Into<Arc<str>>,
    capacity: usize,
    when_full: WhenFull,
) -> Result<(QueueHandle<T>, QueuePublisher<T>), Error> {
    let name = name.into();
    if capacity == 0 {
        return Err(Error::msg("a queue needs a capacity of at least 1").in_stage(name));
    }
    let storage = Storage::Memory {
        items: VecDeque::with_capacity(capacity.min(4096)),
        when_full,
    };
    Ok(build(name, capacity, StageKind::Ingress, storage))
}

/// Makes a queue that spills instead of shedding: items that do not fit in the store's memory
/// part go to its durable part and come back in FIFO order when the consumer catches up (once
/// spilling starts, new items follow the spilled ones until the durable part is empty). When the
/// store's budget is full too, `when_full` decides. Items taken from the store are acknowledged to
/// it as they are handed downstream.
///
/// The store is an opened resource (a directory, a lock, a budget), not a policy value: opening it
/// can fail, and that failure belongs where it is opened. `weir_spill::SpillQueue` is the store
/// weir ships.
pub fn spilling<T: Send + 'static>(
    name: impl Into<Arc<str>>,
    store: impl SpillStore<T> + 'static,
    when_full: WhenStoreFull,
) -> Result<(QueueHandle<T>, QueuePublisher<T>), Error> {
    let name = name.into();
    let capacity = store.memory_capacity();
    if capacity == 0 {
        return Err(
            Error::msg("a spill store needs a memory capacity of at least 1").in_stage(name),
        );
    }
    let storage = Storage::Spilling {
        store: Box::new(store),
        when_full,
    };
    Ok(build(name, capacity, StageKind::Ingress, storage))
}

fn build<T: Send + 'static>(
    name: Arc<str>,
    capacity: usize,
    kind: StageKind,
    storage: Storage<T>,
) -> (QueueHandle<T>, QueuePublisher<T>) {
    let metrics = BoundaryMetrics::new(name.clone(), kind, capacity);
    let shared = Arc::new(Shared {
        name,
        capacity,
        state: Mutex::new(State {
            storage,
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
        QueueHandle {
            producers: Arc::new(Producers(shared.clone())),
        },
        QueuePublisher { shared },
    )
}

/// Closes the queue when the last handle goes.
struct Producers<T>(Arc<Shared<T>>);

impl<T> Drop for Producers<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The pushing side of a queue. Clone it for each producer; the queue closes when all are gone.
pub struct QueueHandle<T> {
    producers: Arc<Producers<T>>,
}

impl<T> Clone for QueueHandle<T> {
    fn clone(&self) -> Self {
        Self {
            producers: self.producers.clone(),
        }
    }
}

impl<T> fmt::Debug for QueueHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueHandle")
            .field("name", &self.shared().name)
            .finish()
    }
}

impl<T> QueueHandle<T> {
    fn shared(&self) -> &Shared<T> {
        &self.producers.0
    }

    /// The queue's name (its stage).
    pub fn name(&self) -> &Arc<str> {
        &self.shared().name
    }

    /// Pushes `item`, applying the policy if the queue is full; under a waiting policy it waits
    /// for room as long as it takes (backpressure: nothing is counted as refused).
    pub async fn push(&self, item: T) -> Result<Pushed, Refused<T>> {
        self.shared().push_until(item, None).await
    }

    /// [`push`](Self::push), waiting for room under a waiting policy until `deadline` at most
    /// (`None`: no deadline); past it the item comes back as [`Refused::Timeout`].
    pub async fn push_until(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<Pushed, Refused<T>> {
        self.shared().push_until(item, deadline).await
    }

    /// Pushes without ever waiting: under a waiting policy a full queue gives [`Refused::Full`].
    /// Callable from any thread, inside or outside a runtime.
    pub fn try_push(&self, item: T) -> Result<Pushed, Refused<T>> {
        self.shared().try_push(item)
    }

    /// Stops accepting pushes; the publisher completes once the queued items are emitted.
    pub fn close(&self) {
        self.shared().close();
    }

    /// Stops accepting pushes; the publisher fails with `error` once the queued items are emitted.
    pub fn fail(&self, error: Error) {
        self.shared().fail(error);
    }

    /// A handle that can close the queue but does not keep it open: the queue still closes when
    /// the last [`QueueHandle`] goes. For whoever supervises a queue that producers own (a
    /// pipeline that closes its ingresses when it drains).
    pub fn closer(&self) -> QueueCloser<T> {
        QueueCloser {
            shared: self.producers.0.clone(),
        }
    }

    /// Whether the queue no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Items queued now (for a spilling queue: in memory and durable).
    pub fn len(&self) -> usize {
        lock(&self.shared().state).len() as usize
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's live counters.
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.shared().metrics.clone()
    }
}

/// Closes a queue without keeping it open; see [`QueueHandle::closer`].
pub struct QueueCloser<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for QueueCloser<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for QueueCloser<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueCloser")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<T> QueueCloser<T> {
    /// Stops accepting pushes, as [`QueueHandle::close`] does.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the queue no longer accepts pushes.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

/// The publishing side of a queue. `Clone`, but it serves one subscriber: a second one gets
/// [`ErrorKind::AlreadySubscribed`].
pub struct QueuePublisher<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for QueuePublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for QueuePublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePublisher")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<T> QueuePublisher<T> {
    /// The queue's live counters.
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.shared.metrics.clone()
    }
}

impl<T: Send + 'static> Publisher<T> for QueuePublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        if self.shared.subscribed.swap(true, Ordering::AcqRel) {
            let error = Error::new(ErrorKind::AlreadySubscribed).in_stage(self.shared.name.clone());
            reject(subscriber, error);
            return;
        }
        let emit = QueueEmit {
            shared: self.shared.clone(),
            batch: VecDeque::with_capacity(TAKE_BATCH),
        };
        let emitter = Emitter::start(emit, subscriber);
        let _ = self.shared.emitter.set(emitter.clone());
        // A store that gains items by itself wakes the emitter (without keeping the queue alive).
        let woken: Weak<Shared<T>> = Arc::downgrade(&self.shared);
        if let Storage::Spilling { store, .. } = &mut lock(&self.shared.state).storage {
            store.set_wake(Arc::new(move || {
                if let Some(shared) = woken.upgrade() {
                    shared.poke();
                }
            }));
        }
        // Items pushed before the emitter was registered are waiting: emit them if there is demand.
        emitter.poke();
    }
}

struct QueueEmit<T> {
    shared: Arc<Shared<T>>,
    batch: VecDeque<T>,
}

impl<T: Send + 'static> Emit for QueueEmit<T> {
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
                let mut state = lock(&shared.state);
                if state.len() == 0 && self.batch.is_empty() && state.closed {
                    break Emitted::Done(accepted, state.failure.take().map_or(Ok(()), Err));
                }
                if room == 0 {
                    break Emitted::Items(accepted);
                }
                // Taken items are held in `self.batch` until the subscriber takes them: they are
                // counted out below, as it does.
                match &mut state.storage {
                    Storage::Spilling { store, .. } => {
                        if let Err(error) = store.take_into(want, &mut self.batch) {
                            break Emitted::Done(accepted, Err(error));
                        }
                    }
                    Storage::Memory { items, .. } => {
                        let take = want.min(items.len());
                        self.batch.extend(items.drain(..take).map(|(_, item)| item));
                        shared.after_change(items, 0);
                    }
                }
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
            // as cancelled if the subscription ends first.
            let before = self.batch.len();
            let batch = &mut self.batch;
            let mut from_batch = std::iter::from_fn(|| batch.pop_front());
            accepted += subscriber.try_on_next_iter(&mut from_batch, demand - accepted);
            shared.metrics.add_out((before - self.batch.len()) as u64);
        };
        // Outstanding demand as the queue leaves it (unbounded stays unbounded).
        let left = if demand == u64::MAX {
            demand
        } else {
            demand - accepted
        };
        shared.metrics.set_demand(left);
        emitted
    }
}

impl<T> Drop for QueueEmit<T> {
    /// The subscription ended (cancel, or a failure downstream): whatever is still queued will never
    /// be emitted. Close the queue so pushes fail loudly, and count what is dropped.
    fn drop(&mut self) {
        let left = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            // Items in memory are lost with the subscription; a spill store keeps its durable part
            // for its next run, so only its memory part counts as dropped.
            let left = match &mut state.storage {
                Storage::Memory { items, .. } => {
                    let left = items.len();
                    items.clear();
                    left
                }
                Storage::Spilling { store, .. } => {
                    if let Err(error) = store.flush() {
                        tracing::warn!(stage = %self.shared.name, %error, "could not flush the spill store");
                    }
                    store.in_memory()
                }
            };
            self.shared.metrics.set_oldest(None);
            left + self.batch.len()
        };
        self.batch.clear();
        self.shared
            .metrics
            .record_evicted_n(Reason::Cancelled, left as u64);
        self.shared.space.notify_waiters();
    }
}
