//! The queue itself: its storage (memory with a [`WhenFull`], or a spill store with a
//! [`WhenStoreFull`]), the lock around it, and what a push, a close and a failure do.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ages::Ages;
use super::policy::{Pushed, Refused, SpillStore, StoreRefusal, WhenFull, WhenStoreFull};
use crate::Error;
use crate::metrics::{BufferMetrics, Reason};
use crate::source::Poke;

/// Where a queue keeps its items, and its policy when full: one or the other, never both.
pub(super) enum Storage<T> {
    /// Items with their enqueue time (nanoseconds since the metrics epoch).
    Memory {
        items: VecDeque<(u64, T)>,
        when_full: WhenFull,
    },
    Spilling {
        store: Box<dyn SpillStore<T>>,
        when_full: WhenStoreFull,
        /// When the items went in, sampled (the store keeps no times).
        ages: Ages,
        /// What the store holds as far as the queue's books go (see [`reconcile`]); below zero
        /// when the store handed out records it found meanwhile.
        expected: i64,
    },
}

pub(super) struct State<T> {
    pub(super) storage: Storage<T>,
    pub(super) closed: bool,
    /// Set by [`QueueHandle::fail`]: the stream ends with it after the queued items.
    pub(super) failure: Option<Error>,
    /// What the queue held at its end was counted (see [`State::end`]).
    pub(super) ended: bool,
}

impl<T> State<T> {
    pub(super) fn len(&self) -> u64 {
        match &self.storage {
            Storage::Memory { items, .. } => items.len() as u64,
            Storage::Spilling { store, .. } => store.len(),
        }
    }

    /// The queue's end (see [`Shared::finish`]).
    /// Closes it (pushes are refused from now on) and returns how many of the items it holds
    /// are lost with it, the first time only: items in memory are; a spill store keeps its
    /// durable part (flushed now) for its next run, so only what it would lose counts.
    pub(super) fn end(&mut self, stage: &str) -> usize {
        self.closed = true;
        if std::mem::replace(&mut self.ended, true) {
            return 0;
        }
        match &mut self.storage {
            Storage::Memory { items, .. } => {
                let left = items.len();
                items.clear();
                left
            }
            Storage::Spilling { store, .. } => {
                if let Err(error) = store.flush() {
                    tracing::warn!(stage, %error, "could not flush the spill store");
                }
                store.in_memory()
            }
        }
    }
}

pub(super) struct Shared<T> {
    pub(super) name: Arc<str>,
    pub(super) capacity: usize,
    pub(super) state: Mutex<State<T>>,
    pub(super) space: Notify,
    /// Pushes waiting for room.
    pub(super) blocked: AtomicUsize,
    pub(super) subscribed: AtomicBool,
    pub(super) emitter: OnceLock<Arc<dyn Poke>>,
    pub(super) metrics: Arc<BufferMetrics>,
}

/// A push waiting for room, counted in [`Shared::blocked`] while it waits. Dropped before it
/// finished (its caller gave up: a timeout or a `select!` around the push, a cancelled request
/// handler), the item goes with the push's future: counted as [`Reason::Abandoned`].
struct WaitingPush<'a, T> {
    shared: &'a Shared<T>,
    started: Instant,
    finished: bool,
}

impl<'a, T> WaitingPush<'a, T> {
    fn start(shared: &'a Shared<T>) -> Self {
        shared.blocked.fetch_add(1, Ordering::AcqRel);
        Self {
            shared,
            started: Instant::now(),
            finished: false,
        }
    }
}

impl<T> Drop for WaitingPush<'_, T> {
    fn drop(&mut self) {
        self.shared.blocked.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.record_wait(self.started.elapsed());
        if !self.finished {
            self.shared.metrics.record_shed(Reason::Abandoned);
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
    /// A queue named `name` holding at most `capacity` items in `storage`, counted in `metrics`.
    pub(super) fn new(
        name: Arc<str>,
        capacity: usize,
        storage: Storage<T>,
        metrics: Arc<BufferMetrics>,
    ) -> Self {
        Self {
            name,
            capacity,
            state: Mutex::new(State {
                storage,
                closed: false,
                failure: None,
                ended: false,
            }),
            space: Notify::new(),
            blocked: AtomicUsize::new(0),
            subscribed: AtomicBool::new(false),
            emitter: OnceLock::new(),
            metrics,
        }
    }

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
            Storage::Spilling {
                store,
                when_full,
                ages,
                expected,
            } => match push_guarded(&mut **store, item, &self.metrics) {
                Ok(spilled) => {
                    self.metrics.add_in(1);
                    *expected = expected.saturating_add(1);
                    reconcile(&**store, expected, &self.metrics);
                    ages.pushed(now);
                    self.metrics.set_oldest(ages.oldest());
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
    pub(super) fn after_change(&self, items: &VecDeque<(u64, T)>, added: u64) {
        self.metrics.add_in(added);
        self.metrics
            .set_oldest(items.front().map(|(enqueued, _)| *enqueued));
    }

    pub(super) fn poke(&self) {
        if let Some(emitter) = self.emitter.get() {
            emitter.poke();
        }
    }

    pub(super) fn close(&self) {
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

    pub(super) fn fail(&self, error: Error) {
        lock(&self.state).failure.get_or_insert(error);
        self.close();
    }

    pub(super) fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// Resolves once the queue no longer accepts pushes (every change to `closed` notifies
    /// `space`'s waiters).
    pub(super) async fn closed(&self) {
        loop {
            let notified = self.space.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a close after it wakes this wait.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// The queue's end: its subscription ended, or its publisher went without ever being
    /// subscribed. Nobody will take its items: it closes (waiting pushes are woken and refused),
    /// and what it held in memory, with `taken` items taken out and not handed on, is counted as
    /// cancelled.
    pub(super) fn finish(&self, taken: usize) {
        let left = lock(&self.state).end(&self.name) + taken;
        self.metrics.set_oldest(None);
        self.metrics
            .record_evicted_n(Reason::Cancelled, left as u64);
        self.space.notify_waiters();
    }

    pub(super) async fn push_until(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<Pushed, Refused<T>> {
        self.metrics.add_offered(1);
        let item = match self.offer(item, true) {
            Offer::Accepted(pushed) => {
                self.poke();
                return Ok(pushed);
            }
            Offer::Refused(refused) => return Err(refused),
            Offer::MustWait(item) => item,
        };
        let mut waiting = WaitingPush::start(self);
        let started = waiting.started;
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
        waiting.finished = true;
        drop(waiting);
        if outcome.is_ok() {
            self.poke();
        }
        outcome
    }

    pub(super) fn try_push(&self, item: T) -> Result<Pushed, Refused<T>> {
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

/// `store.push(item)`. A panic in the store's code took the item with it: counted as
/// [`Reason::Failed`] (it was offered, and would leave the books uncounted), then the panic goes on
/// to the caller (the queue's lock recovers from it).
fn push_guarded<T>(
    store: &mut dyn SpillStore<T>,
    item: T,
    metrics: &BufferMetrics,
) -> Result<bool, (T, StoreRefusal)> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.push(item))) {
        Ok(pushed) => pushed,
        Err(panic) => {
            metrics.record_exit_n(Reason::Failed, 1);
            tracing::error!(stage = %metrics.name(), "the spill store panicked taking an item; counted as failed");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Brings the queue's books in line with what `store` says it holds, `expected` being what the
/// books say (what was recovered and pushed, minus what was taken). More: items the store found
/// that an earlier run left (a broker message counted as one until it is read back as its
/// records), counted as recovered. Fewer: items the store could not give back (a corrupt record
/// it skipped), counted as [`Reason::Corrupt`].
pub(super) fn reconcile<T>(store: &dyn SpillStore<T>, expected: &mut i64, metrics: &BufferMetrics) {
    let holds = i64::try_from(store.len()).unwrap_or(i64::MAX);
    let found = holds.saturating_sub(*expected);
    if found > 0 {
        metrics.add_recovered(found.unsigned_abs());
    } else if found < 0 {
        metrics.record_evicted_n(Reason::Corrupt, found.unsigned_abs());
    }
    *expected = holds;
}
