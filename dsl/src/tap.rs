//! Taps: where a running pipeline counts its items.
//!
//! Every input of every stage is tapped on the consuming side of its edge: the tap counts the items
//! the stage receives on that input (one writer per input: a plain store per item, no
//! read-modify-write), runs the stage's code inside the stage's `tracing` span, and records the
//! first error passing by against the stage that sent it. What a stage emitted is what its
//! consumers received, so each edge is counted once.
//!
//! Errors flow downstream, so the first stage output to carry one is where it came from: that is
//! the stage a failed pipeline names.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_runtime::ledger::{Reason, Tally, TallyWriter};
use weir_runtime::{BoxPublisher, Burst, Error, Publisher, Subscriber, Subscription};

/// The first error seen on any stage's output, with that stage.
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<Option<(usize, Error)>>);

impl Failures {
    fn record(&self, stage: usize, error: &Error) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some((stage, error.clone()));
        }
    }

    pub(crate) fn first(&self) -> Option<(usize, Error)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The items received on one input of a stage.
#[derive(Debug, Default)]
pub(crate) struct InputCount(AtomicU64);

impl InputCount {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The input of a stage: the upstream's items, type-erased at the graph edge and tapped. What
/// the stage's building closure receives (`|orders| orders.map(parse)`): a publisher like any
/// other, whose subscriber is counted (the items the stage received), run inside the stage's
/// `tracing` span, and watched for errors from upstream.
pub struct Input<T> {
    pub(crate) inner: BoxPublisher<T>,
    pub(crate) count: Arc<InputCount>,
    pub(crate) span: tracing::Span,
    /// The stage the input comes from (errors passing by are recorded against it).
    pub(crate) from: usize,
    pub(crate) failures: Arc<Failures>,
}

impl<T> std::fmt::Debug for Input<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("received", &self.count.get())
            .finish()
    }
}

impl<T: Send + 'static> Publisher<T> for Input<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let _entered = self.span.enter();
        // The tap counts what comes in: an operator joining this input with other upstreams
        // keeps its accounts in the stage's books (see `ledger::join`).
        weir_runtime::ledger::input_counted();
        self.inner.subscribe(InputTap {
            inner: subscriber,
            received: 0,
            count: self.count,
            span: self.span.clone(),
            from: self.from,
            failures: self.failures,
        });
    }
}

/// `items`, counting those pulled. The count is a field, not a variable a closure refers to:
/// a variable whose address is taken stays in memory, one add to memory per item.
struct Pulled<'a, I> {
    items: &'a mut I,
    pulled: u64,
}

impl<I: Iterator> Iterator for Pulled<'_, I> {
    type Item = I::Item;

    #[inline(always)]
    fn next(&mut self) -> Option<I::Item> {
        let item = self.items.next()?;
        self.pulled += 1;
        Some(item)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

/// Counts what a stage receives on one input and runs the stage inside its span.
pub(crate) struct InputTap<S> {
    inner: S,
    received: u64,
    count: Arc<InputCount>,
    span: tracing::Span,
    from: usize,
    failures: Arc<Failures>,
}

impl<S> InputTap<S> {
    #[inline]
    fn add(&mut self, n: u64) {
        self.received += n;
        // One writer per input: a plain store, no read-modify-write per item.
        self.count.0.store(self.received, Ordering::Relaxed);
    }
}

impl<T, S: Subscriber<T>> Subscriber<T> for InputTap<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let _entered = self.span.enter();
        self.inner.on_subscribe(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        self.add(1);
        let _entered = self.span.enter();
        self.inner.on_next(item);
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        self.add(1);
        let _entered = self.span.enter();
        self.inner.try_on_next(item)
    }

    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        // Count what the stage pulled (received), not what it accepted.
        let mut counted = Pulled { items, pulled: 0 };
        let accepted = {
            let _entered = self.span.enter();
            self.inner.try_on_next_iter(&mut counted, limit)
        };
        self.add(counted.pulled);
        accepted
    }

    #[inline]
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize) {
        let offered = chunk.len();
        let (accepted, left) = {
            let _entered = self.span.enter();
            self.inner.try_on_next_chunk(chunk, limit)
        };
        // Received: what the stage took out of the chunk (what it left was never pulled).
        self.add((offered - left) as u64);
        (accepted, left)
    }

    fn on_error(&mut self, error: Error) {
        self.failures.record(self.from, &error);
        let _entered = self.span.enter();
        self.inner.on_error(error);
    }

    fn on_complete(&mut self) {
        let _entered = self.span.enter();
        self.inner.on_complete();
    }

    fn on_flush(&mut self) {
        let _entered = self.span.enter();
        self.inner.on_flush();
    }
}

/// A sink's subscription, for `abort`; once `stopped`, a late subscription is cancelled at once.
#[derive(Debug, Default)]
pub(crate) struct SinkSlot {
    subscription: Option<Subscription>,
    stopped: bool,
    /// Read per item by the sink: set, the sink's code is not called again.
    halted: Arc<AtomicBool>,
    in_call: Arc<InCall>,
}

/// Whether a sink's subscriber is inside a signal that may run the sink's code, so that an abort
/// resolves only once that code has returned (and counted what it did).
///
/// The subscriber raises `busy` and then looks at `halted`; `stop` sets `halted` and then looks at
/// `busy` (both sequentially consistent): either the subscriber sees the halt and calls no code, or
/// the abort sees it busy and waits for [`InCall::left`].
#[derive(Debug, Default)]
pub(crate) struct InCall {
    busy: AtomicBool,
    left: tokio::sync::Notify,
}

impl InCall {
    /// Resolves once the sink is not inside a call (call after `halted` was set).
    pub(crate) async fn idle(&self) {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if !self.busy.load(Ordering::SeqCst) {
                return;
            }
            left.await;
        }
    }
}

/// Marks the sink busy for the duration of one signal.
struct Busy<'a> {
    in_call: &'a InCall,
    halted: &'a AtomicBool,
}

impl<'a> Busy<'a> {
    #[inline]
    fn enter(in_call: &'a InCall, halted: &'a AtomicBool) -> Self {
        in_call.busy.store(true, Ordering::SeqCst);
        Self { in_call, halted }
    }
}

impl Drop for Busy<'_> {
    #[inline]
    fn drop(&mut self) {
        self.in_call.busy.store(false, Ordering::SeqCst);
        if self.halted.load(Ordering::SeqCst) {
            self.in_call.left.notify_waiters();
        }
    }
}

impl SinkSlot {
    /// Marks the sink stopped and takes its subscription (to cancel it). From now on the sink's
    /// code is not called: items a burst upstream still hands over are counted as cancelled.
    pub(crate) fn stop(slot: &Mutex<SinkSlot>) -> Option<Subscription> {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.stopped = true;
        slot.halted.store(true, Ordering::SeqCst);
        slot.subscription.take()
    }

    /// What an abort waits on: the sink's code returning.
    pub(crate) fn in_call(slot: &Mutex<SinkSlot>) -> Arc<InCall> {
        slot.lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_call
            .clone()
    }
}

/// The subscriber at the end of a sink: keeps its subscription where `abort` can cancel it, and
/// once aborted stops passing items to the sink's code (cancelling a subscription only asks the
/// upstream to stop eventually, rule 3.12: a queue handing out a batch finishes it).
pub(crate) struct SinkSubscriber<S> {
    inner: S,
    slot: Arc<Mutex<SinkSlot>>,
    halted: Arc<AtomicBool>,
    in_call: Arc<InCall>,
    cancelled: TallyWriter,
}

impl<S> SinkSubscriber<S> {
    /// `tally`: the sink's account, where items arriving after an abort are counted.
    pub(crate) fn new(inner: S, tally: &Arc<Tally>) -> Self {
        let slot = SinkSlot::default();
        let (halted, in_call) = (slot.halted.clone(), slot.in_call.clone());
        Self {
            inner,
            slot: Arc::new(Mutex::new(slot)),
            halted,
            in_call,
            cancelled: tally.writer(),
        }
    }

    pub(crate) fn slot(&self) -> Arc<Mutex<SinkSlot>> {
        self.slot.clone()
    }

    #[inline]
    fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }
}

/// `items` until the sink is halted: checked before each item is taken.
struct UntilHalted<'a, I> {
    items: &'a mut I,
    halted: &'a AtomicBool,
}

impl<I: Burst> Burst for Pulled<'_, I> {
    #[inline(always)]
    fn feed<F: FnMut(I::Item) -> bool>(&mut self, max: u64, f: F) -> u64 {
        let handed = self.items.feed(max, f);
        self.pulled += handed;
        handed
    }
}

impl<I: Burst> Burst for UntilHalted<'_, I> {
    /// Looks at the flag before the first item and after each: nothing more is taken once the
    /// sink is halted.
    #[inline(always)]
    fn feed<F: FnMut(I::Item) -> bool>(&mut self, max: u64, mut f: F) -> u64 {
        let halted = self.halted;
        if halted.load(Ordering::Acquire) {
            return 0;
        }
        self.items
            .feed(max, |item| f(item) && !halted.load(Ordering::Acquire))
    }
}

impl<I: Iterator> Iterator for UntilHalted<'_, I> {
    type Item = I::Item;

    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        if self.halted.load(Ordering::Acquire) {
            None
        } else {
            self.items.next()
        }
    }
}

impl<T, S: Subscriber<T>> Subscriber<T> for SinkSubscriber<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        // Decided under the lock `stop` takes: a sink subscribing after an abort is cancelled.
        let stopped = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if !slot.stopped {
                slot.subscription = Some(subscription.clone());
            }
            slot.stopped
        };
        if stopped {
            subscription.cancel();
        }
        self.inner.on_subscribe(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        let _busy = Busy::enter(&self.in_call, &self.halted);
        if self.halted() {
            self.cancelled.add(Reason::Cancelled, 1);
            return;
        }
        self.inner.on_next(item);
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        let _busy = Busy::enter(&self.in_call, &self.halted);
        if self.halted() {
            self.cancelled.add(Reason::Cancelled, 1);
            return true;
        }
        self.inner.try_on_next(item)
    }

    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        let _busy = Busy::enter(&self.in_call, &self.halted);
        let mut guarded = UntilHalted {
            items,
            halted: &self.halted,
        };
        let taken = self.inner.try_on_next_iter(&mut guarded, limit);
        if taken == limit || !self.halted() {
            return taken;
        }
        // Halted within the burst: the rest of it is taken and counted, never handled.
        let rest = weir_runtime::kit::discard(items, limit - taken);
        self.cancelled.add(Reason::Cancelled, rest);
        taken + rest
    }

    fn on_error(&mut self, error: Error) {
        self.inner.on_error(error);
    }

    fn on_complete(&mut self) {
        self.inner.on_complete();
    }

    fn on_flush(&mut self) {
        self.inner.on_flush();
    }
}
