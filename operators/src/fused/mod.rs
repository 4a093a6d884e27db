//! The fused level: per-item operators that run inside their upstream's call chain.
//!
//! Each operator is a [`StepFn`]: what to do with one item, answered with a [`Step`]. [`Fused`]
//! runs a step as a publisher generic over its upstream, with one subscriber shared by every step,
//! so all of them get the same rules from one place:
//!
//! - demand passes through: the downstream's `request(n)` goes to the upstream unchanged (capped at
//!   [`StepFn::request_cap`] in total, for `take`); an item the step drops ([`Step::Skip`]) gives its
//!   unit of demand back, so no new request is needed;
//! - bursts stay fused: `try_on_next_iter` passes an adapter downstream, so a burst moves through
//!   the whole chain in one loop with no queue and no allocation per item;
//! - the step runs under the crate's panic guard: a panic, like [`Step::Fail`], cancels the upstream
//!   and fails the stream with an error naming [`StepFn::NAME`]; later upstream signals are ignored;
//! - [`Step::EmitLast`] and [`Step::Stop`] complete the stream and cancel the upstream;
//! - every item the step does not pass on is counted in the operator's ledger account (a
//!   [`Tally`] named [`StepFn::NAME`]): dropped under [`StepFn::DROPPED`], the one a failure
//!   happened on as failed, those the upstream still sends after the end as cancelled.
//!
//! See the [crate documentation](crate#how-to-write-an-operator) for an example.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir_runtime::ledger::{Reason, Tally, TallyWriter};
use weir_runtime::{Burst, Error, Publisher, RawSubscription, Subscriber, Subscription};

mod link;
mod step;
pub(crate) mod steps;

use link::Link;
pub use step::{Step, StepFn};

/// A publisher that runs a [`StepFn`] on every item of its upstream, fused into its call chain.
pub struct Fused<P, S, T> {
    upstream: P,
    step: S,
    tally: Arc<Tally>,
    _input: PhantomData<fn(T)>,
}

impl<P, S: StepFn<T>, T> Fused<P, S, T> {
    /// Runs `step` on every item of `upstream`. Its ledger account is registered with the current
    /// [`ledger::scope`](weir_runtime::ledger::scope) (a pipeline stage being built), and
    /// [claimed](weir_runtime::ledger::claim) when subscribed.
    pub fn new(upstream: P, step: S) -> Self {
        Self {
            upstream,
            step,
            tally: Tally::new(S::NAME),
            _input: PhantomData,
        }
    }
}

impl<P, S, T> Fused<P, S, T> {
    /// The operator's ledger account: items it dropped, failed on or received after it ended.
    pub fn tally(&self) -> Arc<Tally> {
        self.tally.clone()
    }

    pub(crate) fn step(&self) -> &S {
        &self.step
    }
}

impl<P: Clone, S: Clone, T> Clone for Fused<P, S, T> {
    fn clone(&self) -> Self {
        Self {
            upstream: self.upstream.clone(),
            step: self.step.clone(),
            tally: self.tally.clone(),
            _input: PhantomData,
        }
    }
}

impl<P: std::fmt::Debug, S: StepFn<T>, T> std::fmt::Debug for Fused<P, S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(S::NAME)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<T, P, S> Publisher<S::Out> for Fused<P, S, T>
where
    P: Publisher<T>,
    S: StepFn<T>,
    T: 'static,
    S::Out: 'static,
{
    fn subscribe<D: Subscriber<S::Out>>(self, subscriber: D) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.tally.clone());
        let cap = self.step.request_cap();
        self.upstream.subscribe(FusedSubscriber {
            link: Link::new(S::NAME, subscriber),
            step: self.step,
            cap,
            done: false,
            tally: self.tally.writer(),
            _input: PhantomData,
        });
    }
}

struct FusedSubscriber<D, S, T> {
    link: Link<D>,
    step: S,
    cap: Option<u64>,
    /// Completed by the step (`EmitLast` / `Stop`): ignore the rest.
    done: bool,
    tally: TallyWriter,
    _input: PhantomData<fn(T)>,
}

impl<T, D, S> FusedSubscriber<D, S, T>
where
    S: StepFn<T>,
    D: Subscriber<S::Out>,
{
    /// Runs the step under the panic guard; `None` when the stage is over (failed or done: the
    /// item is counted as cancelled) or the step panicked (counted as failed).
    #[inline]
    fn run(&mut self, item: T) -> Option<Step<S::Out>> {
        if self.done || self.link.is_failed() {
            self.tally.add(Reason::Cancelled, 1);
            return None;
        }
        let step = &mut self.step;
        let outcome = self.link.guard::<S::Out, _>(|| step.step(item));
        if outcome.is_none() {
            self.tally.add(Reason::Failed, 1);
        }
        outcome
    }

    #[cold]
    fn finish(&mut self) {
        self.done = true;
        self.link.cancel_upstream();
        self.link.downstream.on_complete();
    }
}

impl<T, D, S> Subscriber<T> for FusedSubscriber<D, S, T>
where
    S: StepFn<T>,
    D: Subscriber<S::Out>,
    T: 'static,
    S::Out: 'static,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        let subscription = match self.cap {
            Some(cap) => Subscription::new(Arc::new(Capped {
                upstream: subscription,
                left: AtomicU64::new(cap),
            })),
            None => subscription,
        };
        self.link.on_subscribe::<S::Out>(subscription);
        if self.cap == Some(0) {
            self.finish(); // take(0): nothing to wait for
        }
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        match self.run(item) {
            Some(Step::Emit(out)) => self.link.downstream.on_next(out),
            Some(Step::Skip) => {
                self.tally.add(S::DROPPED, 1);
                self.link.request_one();
            }
            Some(Step::EmitLast(out)) => {
                self.link.downstream.on_next(out);
                self.finish();
            }
            Some(Step::Stop) => {
                self.tally.add(S::DROPPED, 1);
                self.finish();
            }
            Some(Step::Fail(error)) => {
                self.tally.add(Reason::Failed, 1);
                self.link.fail::<S::Out>(error);
            }
            None => {}
        }
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        match self.run(item) {
            Some(Step::Emit(out)) => self.link.downstream.try_on_next(out),
            Some(Step::Skip) => {
                self.tally.add(S::DROPPED, 1);
                false
            }
            Some(Step::EmitLast(out)) => {
                self.link.downstream.try_on_next(out);
                self.finish();
                true
            }
            Some(Step::Stop) => {
                self.tally.add(S::DROPPED, 1);
                self.finish();
                true
            }
            Some(Step::Fail(error)) => {
                self.tally.add(Reason::Failed, 1);
                self.link.fail::<S::Out>(error);
                true
            }
            None => true,
        }
    }

    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        if self.done {
            return limit;
        }
        let step = &mut self.step;
        let (accepted, stopped) = self.link.forward_iter(
            items,
            limit,
            S::DROPPED,
            S::MAY_DROP,
            &mut self.tally,
            |item| step.step(item),
        );
        if stopped {
            self.finish();
            return limit;
        }
        accepted
    }

    fn on_error(&mut self, error: Error) {
        if !self.done {
            self.link.on_error::<S::Out>(error)
        }
    }

    fn on_complete(&mut self) {
        if !self.done {
            self.link.on_complete::<S::Out>()
        }
    }

    #[inline]
    fn on_flush(&mut self) {
        if !self.done {
            self.link.downstream.on_flush()
        }
    }
}

/// A subscription that never asks the upstream for more than `left` items in total (`take`).
struct Capped {
    upstream: Subscription,
    left: AtomicU64,
}

impl RawSubscription for Capped {
    fn request(&self, n: u64) {
        if n == 0 {
            self.upstream.request(0); // let the upstream report the protocol error
            return;
        }
        let granted = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left - left.min(n))
            })
            .map_or(0, |left| left.min(n));
        if granted > 0 {
            self.upstream.request(granted);
        }
    }

    fn cancel(&self) {
        self.upstream.cancel();
    }
}
