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
//! Every refusal hands the item back ([`Refused`]) and is counted by [`Reason`](crate::metrics::Reason) in the queue's
//! [`BufferMetrics`], as is every item evicted or left behind when the subscription ends.
//!
//! Emission runs in the pushing task (or the requesting one), serialised by the same drain loop as
//! every synchronous source; put a boundary after the queue when the downstream work is heavy.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use crate::metrics::BufferMetrics;
use crate::source::{Emitter, Poke};
use crate::{Error, ErrorKind, Publisher, Subscriber, reject};

mod ages;
mod core;
mod emit;
mod policy;

use self::ages::Ages;
use self::core::{Shared, Storage, lock, reconcile};
use self::emit::{QueueEmit, TAKE_BATCH};
pub use self::policy::{Pushed, Refused, SpillStore, StoreRefusal, WhenFull, WhenStoreFull};

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
    let metrics = BufferMetrics::new(name.clone(), capacity);
    Ok(build(name, capacity, storage, metrics))
}

/// Makes a queue that spills instead of shedding: items that do not fit in the store's memory
/// part go to its durable part and come back in FIFO order when the consumer catches up (once
/// spilling starts, new items follow the spilled ones until the durable part is empty). When the
/// store's budget is full too, `when_full` decides. Items taken from the store are acknowledged to
/// it as they are handed downstream. Items the store already holds (left by an earlier run) are
/// in the queue from the start, counted as [recovered](BufferMetrics::recovered), with the age
/// the store knows for them ([`SpillStore::oldest_age`]).
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
    // Items the store holds from the start (an earlier run's) are in the books from now on. When
    // the store knows how long ago the oldest went in, the queue's clock starts then, so that it
    // has a time on it (0) and the oldest-item age covers it.
    let held = store.len();
    let since = store
        .oldest_age()
        .filter(|_| held > 0)
        .and_then(|age| BufferMetrics::new_since(name.clone(), capacity, age));
    let known = since.is_some().then_some(0);
    let metrics = since.unwrap_or_else(|| BufferMetrics::new(name.clone(), capacity));
    // The books start empty: the first reconciliation counts what the store holds as recovered.
    let mut expected = 0;
    reconcile(&store, &mut expected, &metrics);
    let ages = Ages::after(held, known);
    metrics.set_oldest(ages.oldest());
    let storage = Storage::Spilling {
        ages,
        store: Box::new(store),
        when_full,
        expected,
    };
    Ok(build(name, capacity, storage, metrics))
}

fn build<T: Send + 'static>(
    name: Arc<str>,
    capacity: usize,
    storage: Storage<T>,
    metrics: Arc<BufferMetrics>,
) -> (QueueHandle<T>, QueuePublisher<T>) {
    let shared = Arc::new(Shared::new(name, capacity, storage, metrics));
    (
        QueueHandle {
            producers: Arc::new(Producers(shared.clone())),
        },
        QueuePublisher {
            shared: shared.clone(),
            _last: Arc::new(LastPublisher(shared)),
        },
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

    /// Resolves once the queue no longer accepts pushes: closed, failed, its subscriber gone, or
    /// its publisher dropped without ever being subscribed. For a producer that waits for
    /// something else meanwhile (its own upstream) and must stop when nobody reads any more.
    pub async fn closed(&self) {
        self.shared().closed().await
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
    pub fn metrics(&self) -> Arc<BufferMetrics> {
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

    /// Resolves once the queue no longer accepts pushes, as [`QueueHandle::closed`].
    pub async fn closed(&self) {
        self.shared.closed().await
    }
}

/// The publishing side of a queue. `Clone`, but it serves one subscriber: a second one gets
/// [`ErrorKind::AlreadySubscribed`]. When the last clone goes without the queue ever having been
/// subscribed (a pipeline aborted or dropped before its stages ran), nobody will read the queue:
/// it closes, and what it held is counted as cancelled.
pub struct QueuePublisher<T> {
    shared: Arc<Shared<T>>,
    /// Shared by the clones: ends the queue when the last one goes unsubscribed.
    _last: Arc<LastPublisher<T>>,
}

impl<T> Clone for QueuePublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _last: self._last.clone(),
        }
    }
}

/// See [`QueuePublisher`].
struct LastPublisher<T>(Arc<Shared<T>>);

impl<T> Drop for LastPublisher<T> {
    fn drop(&mut self) {
        if !self.0.subscribed.load(Ordering::Acquire) {
            self.0.finish(0);
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
    pub fn metrics(&self) -> Arc<BufferMetrics> {
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
            failed: None,
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
