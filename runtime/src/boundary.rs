//! Async boundaries: where one fused segment ends and the next begins, in another tokio task.
//!
//! A boundary is a bounded, credit-based queue (the [`weir_lockfree::ring`]) with two tasks:
//! - the **credit task** requests `capacity` items from the upstream at the start and then, whenever
//!   75% of the capacity has been freed by the consumer, requests that much again (Reactor's
//!   `limitRate` rule). A synchronous upstream segment runs inside this task's `request` call, so the
//!   upstream and downstream segments run in different tasks;
//! - the **outlet task** pops items and calls the downstream's `on_next` while the downstream has demand;
//!   operators after the boundary run in this task.
//!
//! Memory is bounded by construction: the upstream is never granted more than `capacity` minus what the
//! ring holds. Wake-ups happen on transitions only (ring empty -> non-empty, no credit -> credit, no
//! demand -> demand) and each wake drains a burst. The producer side publishes in chunks: when the
//! grant is used up, on [`Subscriber::on_flush`] (weir's publishers call it when they pause), every
//! few hundred items of a long burst, and at once whenever the consumer is waiting. Liveness never
//! depends on `on_flush`: a plain Reactive Streams publisher that emits one item and pauses has it
//! delivered (the consumer takes everything written before it waits, the inlet publishes when it
//! sees the consumer waiting, and a second look a millisecond after a wait starts closes the race
//! between the two; see `weir_lockfree::ring`).

use std::any::Any;
use std::future::Future;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use weir_lockfree::WakeSlot;
use weir_lockfree::ring::{self, Consumer, Credit, Producer, Readable};

use crate::metrics::BufferMetrics;
use crate::protocol::{Burst, ErasedSubscriber};
use crate::recheck::Recheck;
use crate::task::{Next, TaskSubscription};
use crate::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

/// How many items the outlet task emits before it yields to the tokio scheduler.
const POLL_BUDGET: u64 = 16 * 1024;

/// Settings of one boundary.
///
/// ```
/// use weir_runtime::boundary::BoundaryConfig;
/// let config = BoundaryConfig::new("parse", 4096).unwrap();
/// assert_eq!(config.capacity(), 4096);
/// assert!(BoundaryConfig::new("parse", 0).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct BoundaryConfig {
    name: Arc<str>,
    capacity: usize,
    runtime: Option<tokio::runtime::Handle>,
}

impl BoundaryConfig {
    /// A boundary named `name` holding at most `capacity` items. A capacity of zero is an error.
    pub fn new(name: impl Into<Arc<str>>, capacity: usize) -> Result<Self, Error> {
        let name = name.into();
        if capacity == 0 {
            return Err(Error::msg("a boundary needs a capacity of at least 1").in_stage(name));
        }
        Ok(Self {
            name,
            capacity,
            runtime: None,
        })
    }

    /// Runs the boundary's tasks on `runtime` instead of the runtime current at subscribe time.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The most items the boundary holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The boundary's name (used in metrics and errors).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn new_metrics(&self) -> Arc<BufferMetrics> {
        BufferMetrics::new(self.name.clone(), self.capacity)
    }
}

/// What the inlet, the credit side and the outlet share.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) name: Arc<str>,
    terminal: Mutex<Option<Result<(), Error>>>,
    upstream: Mutex<Option<Subscription>>,
    /// A copy of the upstream's subscription for the consumer's side to cancel directly: the
    /// credit task cannot while a synchronous upstream runs inside its `request`.
    upstream_to_cancel: Mutex<Option<Subscription>>,
    subscribed: WakeSlot,
    /// Total items requested from the upstream so far (written by the credit side only).
    granted: AtomicUsize,
    /// When the inlet found the grant used up (nanoseconds on the metrics clock, plus one; 0 when
    /// not waiting): the start of a producer wait, which the credit side ends with its next grant.
    exhausted_at: AtomicU64,
    /// Set when the credit task panicked (a synchronous upstream runs inside its `request`): the
    /// stream fails with it instead of waiting for, or completing after, a broken upstream.
    credit_failure: Mutex<Option<Error>>,
    credit_failed: AtomicBool,
    /// The outlet task, woken when the credit side fails.
    outlet_wake: WakeSlot,
    pub(crate) metrics: Arc<BufferMetrics>,
}

impl Channel {
    /// Ready with the upstream's subscription once the inlet has received it.
    pub(crate) fn poll_upstream(&self, cx: &mut Context<'_>) -> Poll<Subscription> {
        if let Some(subscription) = self.upstream.lock().unwrap().take() {
            return Poll::Ready(subscription);
        }
        self.subscribed.prepare(cx);
        match self.upstream.lock().unwrap().take() {
            Some(subscription) => {
                self.subscribed.clear();
                Poll::Ready(subscription)
            }
            None => Poll::Pending,
        }
    }

    #[inline(never)]
    fn set_terminal(&self, result: Result<(), Error>) {
        *self.terminal.lock().unwrap() = Some(result);
    }

    /// Cancels the upstream from the consumer's side (idempotent, any thread).
    fn cancel_upstream(&self) {
        let upstream = self.upstream_to_cancel.lock().unwrap().take();
        if let Some(upstream) = upstream {
            upstream.cancel();
        }
    }

    /// The upstream's subscription if the inlet received it and nobody took it yet.
    pub(crate) fn take_upstream(&self) -> Option<Subscription> {
        self.upstream.lock().unwrap().take()
    }

    /// The inlet's terminal signal, once the ring is closed and empty; the credit side's failure
    /// first, if it failed.
    pub(crate) fn take_terminal(&self) -> Result<(), Error> {
        if let Some(error) = self.take_credit_failure() {
            return Err(error);
        }
        self.terminal.lock().unwrap().take().unwrap_or(Ok(()))
    }

    /// The credit task panicked with `error` (named after the stage): the outlet is woken to fail
    /// the stream with it.
    pub(crate) fn fail_from_credit(&self, error: Error) {
        *self
            .credit_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.credit_failed.store(true, Ordering::Release);
        self.outlet_wake.notify();
    }

    fn take_credit_failure(&self) -> Option<Error> {
        if !self.credit_failed.load(Ordering::Acquire) {
            return None;
        }
        self.credit_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The credit side's failure, if it failed; otherwise the outlet is registered to be woken if
    /// it does (call before waiting).
    fn poll_credit_failure(&self, cx: &mut Context<'_>) -> Option<Error> {
        if !self.credit_failed.load(Ordering::Acquire) {
            self.outlet_wake.prepare(cx);
            if !self.credit_failed.load(Ordering::Acquire) {
                return None;
            }
            self.outlet_wake.clear();
        }
        self.take_credit_failure()
    }
}

/// Grants credit to the upstream: `capacity` at first, then 75% of the capacity each time that much is
/// free again.
#[derive(Debug)]
pub(crate) struct Grant {
    capacity: usize,
    threshold: usize,
    granted: usize,
}

impl Grant {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            threshold: (capacity - capacity / 4).max(1),
            granted: 0,
        }
    }

    /// How much more may be requested given the consumer's released `head`, if it is worth a request.
    fn due(&self, head: usize) -> Option<usize> {
        let available = head + self.capacity - self.granted;
        (available >= self.threshold || (self.granted == 0 && available > 0)).then_some(available)
    }

    /// Requests what is due from `upstream`, first recording how long the upstream waited for it
    /// (if it had used its grant up); returns whether it requested anything.
    pub(crate) fn grant(
        &mut self,
        head: usize,
        channel: &Channel,
        upstream: &Subscription,
    ) -> bool {
        match self.due(head) {
            Some(n) => {
                // The inlet noted when the upstream used its grant up: from then until this new
                // grant it was held back by the consumer. (Taken before granting: a synchronous
                // upstream uses the new grant up inside `request`.)
                let exhausted = channel.exhausted_at.swap(0, Ordering::AcqRel);
                if exhausted != 0 {
                    let waited = channel.metrics.now_nanos().saturating_sub(exhausted - 1);
                    channel
                        .metrics
                        .record_wait(std::time::Duration::from_nanos(waited));
                }
                self.granted += n;
                // Published before the request so the inlet can tell when the grant is used up.
                channel.granted.store(self.granted, Ordering::Release);
                upstream.request(n as u64);
                true
            }
            None => false,
        }
    }

    /// The head position at which the next grant becomes due.
    fn due_at(&self) -> usize {
        (self.granted + self.threshold).saturating_sub(self.capacity)
    }
}

/// Creates the ring and the shared state of a boundary (or of a stream reader).
pub(crate) fn channel<T: Send + 'static>(
    name: Arc<str>,
    capacity: usize,
    metrics: Arc<BufferMetrics>,
) -> (Inlet<T>, Consumer<T>, Credit<T>, Arc<Channel>) {
    let (producer, consumer, credit) = ring::ring(capacity);
    metrics.attach_ring(credit.occupancy());
    let channel = Arc::new(Channel {
        name,
        terminal: Mutex::new(None),
        upstream: Mutex::new(None),
        upstream_to_cancel: Mutex::new(None),
        subscribed: WakeSlot::new(),
        granted: AtomicUsize::new(0),
        exhausted_at: AtomicU64::new(0),
        credit_failure: Mutex::new(None),
        credit_failed: AtomicBool::new(false),
        outlet_wake: WakeSlot::new(),
        metrics,
    });
    let sample_stride = (capacity / 8).max(ring::PUBLISH_EVERY);
    let inlet = Inlet {
        producer,
        channel: channel.clone(),
        checkpoint: 0,
        next_sample: 0,
        sample_stride,
        next_announce_check: 0,
        burst_seen_at: None,
        subscribed: false,
        done: false,
    };
    (inlet, consumer, credit, channel)
}

/// The subscribing end of a boundary: writes items into the ring.
pub struct Inlet<T> {
    producer: Producer<T>,
    channel: Arc<Channel>,
    /// The next push count at which the slow path runs (sampling, end-of-grant publication).
    checkpoint: usize,
    next_sample: usize,
    sample_stride: usize,
    /// The push count at which to check whether a long burst should wake the consumer early.
    next_announce_check: usize,
    /// When a check first found the consumer waiting during a burst still running, since it was
    /// last told about new items (`None` right after telling it: announcing reads no clock, only
    /// long bursts with a waiting consumer do).
    burst_seen_at: Option<Instant>,
    subscribed: bool,
    done: bool,
}

/// How long a burst may run (timed from the first check, every [`ring::PUBLISH_EVERY`] items, that
/// finds the consumer waiting) before a waiting consumer is woken without waiting for its end. Short
/// bursts are handed over whole (same core, no cache-line fight); long ones still pipeline.
const ANNOUNCE_AFTER: std::time::Duration = std::time::Duration::from_micros(50);

impl<T> std::fmt::Debug for Inlet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inlet")
            .field("name", &self.channel.name)
            .field("pushed", &self.producer.pushed())
            .finish()
    }
}

impl<T> Inlet<T> {
    // Inlined (not `#[cold]`): an out-of-line call taking `&mut self` would make the compiler keep the
    // inlet's counters in memory instead of registers for the whole emission loop.
    #[inline(always)]
    fn checkpoint_reached(&mut self) {
        let pushed = self.producer.pushed();
        let granted = self.channel.granted.load(Ordering::Acquire);
        let exhausted = pushed >= granted;
        if exhausted {
            // The end of a grant reads the clock anyway (the wait it starts is timed), so it
            // takes an age sample too: one clock read per grant on a ring of `sample_stride`
            // slots or fewer.
            let now = self.channel.metrics.now_nanos();
            self.sample(pushed, now);
            self.grant_used_up(now);
            return self.set_checkpoint(pushed, granted);
        }
        if pushed >= self.next_sample {
            self.sample(pushed, self.channel.metrics.now_nanos());
        }
        if pushed >= self.next_announce_check {
            self.next_announce_check = pushed + ring::PUBLISH_EVERY;
            // Only a waiting consumer needs waking (a running one sees each exposed slice). The
            // first check that finds it waiting starts the clock; a later one wakes it once the
            // burst has run for `ANNOUNCE_AFTER` since then.
            if self.producer.is_consumer_waiting() {
                match self.burst_seen_at {
                    None => self.burst_seen_at = Some(Instant::now()),
                    Some(seen) if seen.elapsed() >= ANNOUNCE_AFTER => self.announce(),
                    Some(_) => {}
                }
            }
        }
        self.set_checkpoint(pushed, granted);
    }

    /// Records that the item before `pushed` was written at `now`, for the age of held items.
    #[inline(always)]
    fn sample(&mut self, pushed: usize, now: u64) {
        if pushed > 0 {
            self.channel.metrics.sample_position_at(pushed - 1, now);
            self.next_sample = pushed + self.sample_stride;
        }
    }

    #[inline(always)]
    fn set_checkpoint(&mut self, pushed: usize, granted: usize) {
        self.checkpoint = self
            .next_sample
            .min(self.next_announce_check)
            .min(granted.max(pushed + 1));
    }

    /// The grant is used up at `now`: the upstream must wait for credit (timed from here until
    /// the next grant), so everything is handed over now.
    #[inline(always)]
    fn grant_used_up(&mut self, now: u64) {
        let _ = self.channel.exhausted_at.compare_exchange(
            0,
            now + 1,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.announce();
    }

    /// [`Subscriber::try_on_next_iter`] for items that already sit in a chunk: moved into the
    /// ring from the chunk's front by a counted copy per run of the ring. Returns how many were
    /// accepted (at most `limit`); the rest stays in `chunk`.
    fn push_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> u64
    where
        T: Send + 'static,
    {
        let limit = limit.min(chunk.len() as u64);
        let mut accepted = 0u64;
        while accepted < limit && !self.done {
            // The whole chunk in one copy, checkpoints or not (they are looked at once it is
            // in): a copy split at each checkpoint would move the chunk's rest to its front
            // each time.
            let want = (limit - accepted) as usize;
            let (written, _) = self
                .producer
                .push_with(want, |writer| writer.write_from_front(chunk, want));
            accepted += written as u64;
            if self.producer.pushed() >= self.checkpoint {
                self.checkpoint_reached();
            }
            if written < want {
                // The ring is full although the upstream was granted room: it ignored demand.
                Subscriber::on_next(self, chunk.remove(0)); // fails with DemandExceeded, counted
                accepted += 1;
            }
        }
        if self.done {
            // Failed: as in `try_on_next_iter`, what the upstream offers (at most a ring's
            // worth) is taken and counted as dropped.
            let most = ((limit - accepted) as usize).min(self.producer.capacity());
            chunk.drain(..most);
            self.channel
                .metrics
                .record_shed_n(crate::metrics::Reason::Cancelled, most as u64);
            return accepted + most as u64;
        }
        if self.producer.is_consumer_waiting() {
            self.announce();
        }
        accepted
    }

    /// The upstream handed over `item` beyond the room it was granted: dropped, counted like
    /// the ones it still sends after this failure, and the stream fails. Inlined for the same
    /// reason as `checkpoint_reached` (`#[cold]` measured 0.5 instructions per item more in the
    /// `operators` bench).
    #[inline(always)]
    fn demand_exceeded(&mut self, item: T) {
        drop(item);
        self.channel
            .metrics
            .record_shed(crate::metrics::Reason::Cancelled);
        let error = Error::new(ErrorKind::DemandExceeded).in_stage(self.channel.name.clone());
        self.finish(Err(error));
    }

    /// Publishes every pushed item and wakes the consumer if it waits.
    #[inline]
    fn announce(&mut self) {
        self.producer.publish();
        self.burst_seen_at = None;
        self.next_announce_check = self.producer.pushed() + ring::PUBLISH_EVERY;
    }

    #[inline]
    fn finish(&mut self, result: Result<(), Error>) {
        if self.done {
            return;
        }
        self.done = true;
        self.channel.set_terminal(result);
        self.producer.close();
    }
}

impl<T> Drop for Inlet<T> {
    fn drop(&mut self) {
        if self.subscribed && !self.done {
            // The upstream let go of the inlet without a terminal signal (it broke, or panicked
            // and unwound): the stream must not end as if it had completed. (When the consumer
            // cancelled, nobody reads this any more.)
            let error = Error::msg("the upstream went away without completing")
                .in_stage(self.channel.name.clone());
            self.channel.set_terminal(Err(error));
        }
    }
}

impl<T: Send + 'static> Subscriber<T> for Inlet<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscribed || self.producer.is_consumer_closed() {
            subscription.cancel(); // rule 2.5, or nobody will read
            return;
        }
        self.subscribed = true;
        *self.channel.upstream_to_cancel.lock().unwrap() = Some(subscription.clone());
        *self.channel.upstream.lock().unwrap() = Some(subscription);
        self.channel.subscribed.notify();
    }

    #[inline(always)]
    fn try_on_next(&mut self, item: T) -> bool {
        self.on_next(item);
        true
    }

    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        let mut accepted = 0u64;
        while accepted < limit && !self.done {
            let pushed = self.producer.pushed();
            let until_checkpoint = self.checkpoint.saturating_sub(pushed).max(1);
            let want = ((limit - accepted) as usize).min(until_checkpoint);
            // The burst runs the loop and hands each item to the ring's writer. An item the
            // writer has no slot for (a burst handing over more than asked) comes back here.
            let mut refused = None;
            // Inlined, whatever the burst's size: the writer's slots and the burst's position
            // stay in registers for the loop instead of being written back per item.
            let (written, (handed, room)) = self.producer.push_with(
                want,
                #[inline(always)]
                |writer| {
                    let room = writer.room() as u64;
                    let handed = items.feed(room, |item| match writer.write(item) {
                        Ok(()) => true,
                        Err(item) => {
                            refused = Some(item);
                            false
                        }
                    });
                    (handed, room)
                },
            );
            accepted += written as u64;
            if self.producer.pushed() >= self.checkpoint {
                self.checkpoint_reached();
            }
            if let Some(item) = refused {
                // More than one refused only if the burst went on after `false` (it should not):
                // each one but the last was dropped by the closure, counted here.
                let beyond = handed.saturating_sub(written as u64 + 1);
                if accepted == limit || beyond > 0 {
                    // The burst handed over more than the demand it was asked to fill.
                    self.channel
                        .metrics
                        .record_shed_n(crate::metrics::Reason::Cancelled, beyond);
                    self.demand_exceeded(item);
                    return accepted;
                }
                // Within the demand (the writer was short of it only for a checkpoint): pushed
                // on its own, or refused there if the ring is full.
                self.on_next(item);
                accepted += 1;
                continue;
            }
            if handed < room {
                break; // the burst ran out
            }
            if written < want {
                // The ring is full although the upstream was granted room: it ignored demand.
                match items.next() {
                    Some(item) => self.on_next(item), // fails the stream with DemandExceeded
                    None => break,
                }
                accepted += 1;
            }
        }
        if self.done {
            // Failed: the upstream is being cancelled. Take what it offers in this burst (at most
            // a ring's worth, what it was granted) and count it as dropped, so nothing it handed
            // over goes uncounted; what it keeps is its own to count.
            let most = (limit - accepted).min(self.producer.capacity() as u64);
            let dropped = crate::kit::discard(items, most);
            self.channel
                .metrics
                .record_shed_n(crate::metrics::Reason::Cancelled, dropped);
            return accepted + dropped;
        }
        // The upstream may pause after this burst without saying so (`on_flush`): a waiting
        // consumer gets it now.
        if self.producer.is_consumer_waiting() {
            self.announce();
        }
        accepted
    }

    /// A chunk of a type-erased edge, moved into the ring by a counted copy per run of the ring.
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize) {
        let accepted = self.push_chunk(chunk, limit);
        let left = chunk.len();
        chunk.clear(); // what a failed inlet did not take: the caller counts them
        (accepted, left)
    }

    #[inline(always)]
    fn on_next(&mut self, item: T) {
        if self.done {
            // After a failure here the upstream is cancelled but may still send a few: dropped.
            self.channel
                .metrics
                .record_shed(crate::metrics::Reason::Cancelled);
            return;
        }
        if let Err(refused) = self.producer.push(item) {
            return self.demand_exceeded(refused);
        }
        if self.producer.pushed() >= self.checkpoint {
            // Whatever it found, the item is handed over below if the consumer waits: a
            // checkpoint's own look at a waiting consumer is for bursts, which announce at their end.
            self.checkpoint_reached();
        }
        if self.producer.is_consumer_waiting() {
            // The upstream may pause after this item without saying so: hand it over now.
            self.announce();
        }
    }

    fn on_error(&mut self, error: Error) {
        self.finish(Err(error));
    }

    fn on_complete(&mut self) {
        self.finish(Ok(()));
    }

    fn on_flush(&mut self) {
        self.announce();
    }
}

/// The publishing end of a boundary. `Clone`, but it serves one subscriber: a second one gets
/// [`ErrorKind::AlreadySubscribed`].
pub struct Outlet<T> {
    parts: Arc<Mutex<Option<OutletParts<T>>>>,
    metrics: Arc<BufferMetrics>,
}

struct OutletParts<T> {
    consumer: Consumer<T>,
    credit: Credit<T>,
    channel: Arc<Channel>,
    capacity: usize,
    runtime: Option<tokio::runtime::Handle>,
}

impl<T> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Self {
            parts: self.parts.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Outlet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("name", &self.metrics.name())
            .finish()
    }
}

impl<T> Outlet<T> {
    /// The boundary's live counters.
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

/// A boundary as a [`Processor`](crate::Processor): subscribe the [`Inlet`] to an upstream and a
/// downstream to the [`Outlet`], in either order. The tasks start when the outlet is subscribed.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_runtime::{Publisher, boundary::{self, BoundaryConfig}, sink, source};
/// let (inlet, outlet) = boundary::processor::<u64>(BoundaryConfig::new("hop", 64).unwrap());
/// source::from_iter(0..1000u64).subscribe(inlet);
/// assert_eq!(sink::fold(outlet, 0, |sum, x| *sum += x).await.unwrap(), 499_500);
/// # }
/// ```
pub fn processor<T: Send + 'static>(config: BoundaryConfig) -> (Inlet<T>, Outlet<T>) {
    let metrics = config.new_metrics();
    processor_with(config, metrics)
}

fn processor_with<T: Send + 'static>(
    config: BoundaryConfig,
    metrics: Arc<BufferMetrics>,
) -> (Inlet<T>, Outlet<T>) {
    let (inlet, consumer, credit, channel) =
        channel(config.name.clone(), config.capacity, metrics.clone());
    let parts = OutletParts {
        consumer,
        credit,
        channel,
        capacity: config.capacity,
        runtime: config.runtime,
    };
    (
        inlet,
        Outlet {
            parts: Arc::new(Mutex::new(Some(parts))),
            metrics,
        },
    )
}

impl<T: Send + 'static> Publisher<T> for Outlet<T> {
    fn subscribe<S: Subscriber<T>>(self, mut subscriber: S) {
        let Some(parts) = self.parts.lock().unwrap().take() else {
            let error = Error::new(ErrorKind::AlreadySubscribed).in_stage(self.metrics.name());
            reject(subscriber, error);
            return;
        };
        let runtime = match parts.runtime.clone() {
            Some(runtime) => runtime,
            None => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime,
                Err(_) => {
                    let error = Error::new(ErrorKind::NoRuntime).in_stage(self.metrics.name());
                    reject(subscriber, error);
                    return; // dropping the consumer tells the inlet nobody reads
                }
            },
        };
        let downstream = Arc::new(TaskSubscription::default());
        subscriber.on_subscribe(Subscription::new(downstream.clone()));
        // A panic in the credit task is one of a synchronous upstream running inside its
        // `request`: the stream fails with it, named after the boundary.
        let channel = parts.channel.clone();
        let credit = grant_credit(parts.credit, parts.channel.clone(), parts.capacity);
        crate::ledger::spawn(&runtime, async move {
            let mut credit = std::pin::pin!(credit);
            let outcome =
                poll_fn(
                    |cx| match catch_unwind(AssertUnwindSafe(|| credit.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => Poll::Pending,
                        Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                        Err(payload) => Poll::Ready(Err(payload)),
                    },
                )
                .await;
            if let Err(payload) = outcome {
                let error = Error::panicked(payload.as_ref()).in_stage(channel.name.clone());
                channel.fail_from_credit(error);
            }
        });
        crate::ledger::spawn(
            &runtime,
            OutletTask {
                consumer: parts.consumer,
                subscriber,
                downstream,
                channel: parts.channel,
                recheck: Recheck::default(),
            },
        );
    }
}

/// The credit task: waits for the upstream's subscription, then grants demand as slots free up.
async fn grant_credit<T: Send + 'static>(
    credit: Credit<T>,
    channel: Arc<Channel>,
    capacity: usize,
) {
    let upstream = poll_fn(|cx| match channel.poll_upstream(cx) {
        Poll::Ready(subscription) => Poll::Ready(Some(subscription)),
        // A far-away position: ready only if an end closed first.
        Poll::Pending => credit.poll_head(cx, usize::MAX / 2).map(|_| None),
    })
    .await;
    let Some(upstream) = upstream else { return };
    let mut grant = Grant::new(capacity);
    loop {
        if credit.is_closed() {
            // The consumer left (cancel) or the upstream ended: either way nothing more is wanted.
            upstream.cancel();
            return;
        }
        if grant.grant(credit.head(), &channel, &upstream) {
            continue;
        }
        poll_fn(|cx| credit.poll_head(cx, grant.due_at())).await;
    }
}

/// The outlet task: emits popped items to the downstream while it has demand.
struct OutletTask<T, S> {
    consumer: Consumer<T>,
    subscriber: S,
    downstream: Arc<TaskSubscription>,
    channel: Arc<Channel>,
    recheck: Recheck,
}

// No field is structurally pinned.
impl<T, S> Unpin for OutletTask<T, S> {}

impl<T, S: Subscriber<T>> OutletTask<T, S> {
    /// Before waiting: if the credit task panicked, fails the stream (what the ring holds is
    /// counted as cancelled) and returns `true`; otherwise the task is woken if it does.
    fn credit_failed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(error) = self.channel.poll_credit_failure(cx) else {
            return false;
        };
        self.channel.metrics.cancel_rest();
        // The upstream panicked in `request`: cancelling it may panic too, which changes nothing.
        let _ = catch_unwind(AssertUnwindSafe(|| self.channel.cancel_upstream()));
        self.subscriber.on_error(error);
        true
    }

    /// Handles cancel and `request(0)`; returns `true` if the task is over.
    fn stopped(&mut self, next: Next) -> bool {
        match next {
            Next::Cancelled => {
                // Cancelled here, not only by the credit task: a synchronous upstream emitting
                // inside the credit task's `request` (a filter dropping everything uses no
                // demand) would never let that task get to it.
                self.channel.cancel_upstream();
                self.channel.metrics.cancel_rest();
                true
            }
            Next::BadRequest => {
                let error = Error::new(ErrorKind::RequestZero).in_stage(self.channel.name.clone());
                self.subscriber.on_error(error);
                true
            }
            Next::Emit(_) | Next::Wait => false,
        }
    }
}

impl<T: 'static, S: Subscriber<T>> Future for OutletTask<T, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this.consumer.poll_readable(cx) {
                Poll::Pending => {
                    let next = this.downstream.watch(cx);
                    if this.stopped(next) || this.credit_failed(cx) {
                        return Poll::Ready(());
                    }
                    if this.consumer.take_fresh_wait() {
                        this.recheck.after_wait_started(cx);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Readable::Closed) => {
                    let next = this.downstream.watch(cx);
                    if !this.stopped(next) {
                        match this.channel.take_terminal() {
                            Ok(()) => this.subscriber.on_complete(),
                            Err(error) => this.subscriber.on_error(error),
                        }
                    }
                    return Poll::Ready(());
                }
                Poll::Ready(Readable::Items) => {}
            }
            let demand = match this.downstream.poll_next(cx) {
                Next::Emit(n) => n,
                Next::Wait if this.credit_failed(cx) => return Poll::Ready(()),
                Next::Wait => return Poll::Pending,
                next => {
                    this.stopped(next);
                    return Poll::Ready(());
                }
            };
            let limit = demand.min(POLL_BUDGET);
            let consumer = &mut this.consumer;
            let subscriber: &mut dyn Any = &mut this.subscriber;
            let (accepted, popped) = match subscriber.downcast_mut::<ErasedSubscriber<T>>() {
                // A pipeline edge: a chunk at a time, each a block copy out of the ring and one
                // virtual call (the general path below moves the items one by one into the
                // edge's chunk). The type test is decided at compile time.
                Some(erased) => {
                    erased.try_on_next_chunks(limit, |chunk, want| consumer.pop_into(chunk, want))
                }
                None => {
                    // One burst, its items pulled straight from the ring's slots.
                    let mut burst = consumer.drain();
                    let accepted = this.subscriber.try_on_next_iter(&mut burst, limit);
                    (accepted, burst.popped())
                }
            };
            let left = this.downstream.demand().consume(accepted);
            this.channel.metrics.set_demand(left);
            this.subscriber.on_flush();
            this.consumer.release();
            if popped as u64 >= POLL_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

/// A publisher that puts a boundary after `upstream`; see [`boundary`].
#[derive(Debug)]
pub struct Boundary<P> {
    upstream: P,
    config: BoundaryConfig,
    metrics: Arc<BufferMetrics>,
}

impl<P> Boundary<P> {
    /// The boundary's live counters (they start counting once it is subscribed).
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

/// Ends the fused segment `upstream` at an async boundary: the upstream runs in one task, whatever
/// subscribes to the result runs in another, with at most `config.capacity()` items between them.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_runtime::{boundary::{boundary, BoundaryConfig}, sink, source};
/// let hop = boundary(source::from_iter(1..=4u64), BoundaryConfig::new("hop", 2).unwrap());
/// assert_eq!(sink::collect(hop).await.unwrap(), vec![1, 2, 3, 4]);
/// # }
/// ```
pub fn boundary<P>(upstream: P, config: BoundaryConfig) -> Boundary<P> {
    let metrics = config.new_metrics();
    Boundary {
        upstream,
        config,
        metrics,
    }
}

impl<T: Send + 'static, P: Publisher<T>> Publisher<T> for Boundary<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined.
        crate::ledger::claim(self.metrics.clone());
        let (inlet, outlet) = processor_with(self.config, self.metrics);
        outlet.subscribe(subscriber);
        self.upstream.subscribe(inlet);
    }
}
