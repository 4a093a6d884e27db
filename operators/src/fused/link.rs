//! The link between a fused operator's upstream and its downstream: the downstream, the upstream
//! subscription and the panic-to-error path that every fused operator shares.

use weir_runtime::ledger::{Reason, TallyWriter};
use weir_runtime::{Burst, Error, Subscriber, Subscription};

use super::step::Step;
use crate::guard;

/// The link between a fused operator's upstream subscription and its downstream.
pub(crate) struct Link<S> {
    pub(crate) downstream: S,
    name: &'static str,
    upstream: Option<Subscription>,
    /// Set after a failure of this stage: later upstream signals are ignored.
    failed: bool,
}

impl<S> Link<S> {
    pub(crate) fn new(name: &'static str, downstream: S) -> Self {
        Self {
            downstream,
            name,
            upstream: None,
            failed: false,
        }
    }

    #[inline]
    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }

    /// Runs a user closure; a panic fails the stage (cancel upstream, error downstream) and gives
    /// `None`.
    #[inline]
    pub(crate) fn guard<T, R>(&mut self, f: impl FnOnce() -> R) -> Option<R>
    where
        S: Subscriber<T>,
    {
        match guard::catch(f) {
            Ok(value) => Some(value),
            Err(panicked) => {
                self.fail(panicked);
                None
            }
        }
    }

    /// Passes a burst on through `step`: the downstream pulls from an adapter, so the whole fused
    /// chain moves the burst in one loop. A panic in `step` ends the adapter and fails the stage.
    /// Items the step drops are counted in `tally` under `dropped` (once per burst), the one it
    /// failed on as failed. Returns how many items the downstream accepted and whether `step`
    /// ended the stream ([`Step::EmitLast`] / [`Step::Stop`]).
    #[inline(always)]
    pub(crate) fn forward_iter<T, U, I, F>(
        &mut self,
        items: &mut I,
        limit: u64,
        dropped: Reason,
        may_drop: bool,
        tally: &mut TallyWriter,
        step: F,
    ) -> (u64, bool)
    where
        S: Subscriber<U>,
        I: Burst<Item = T>,
        F: FnMut(T) -> Step<U>,
    {
        if self.failed {
            // The upstream is cancelled: nothing more is pulled (what it still holds is its own
            // to count).
            return (limit, false);
        }
        let mut failure = None;
        let mut guarded = Guarded {
            items,
            step,
            may_drop,
            over: false,
            ended: false,
            dropped: 0,
            failure: &mut failure,
        };
        let accepted = self.downstream.try_on_next_iter(&mut guarded, limit);
        let (ended, dropped_items) = (guarded.ended, guarded.dropped);
        if dropped_items > 0 {
            tally.add(dropped, dropped_items);
        }
        match failure {
            Some(error) => {
                tally.add(Reason::Failed, 1);
                self.fail(error);
                (limit, false)
            }
            None => (accepted, ended),
        }
    }

    pub(crate) fn cancel_upstream(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            upstream.cancel();
        }
    }

    /// Fails the stage: cancels the upstream and sends `error` (named after the stage) downstream.
    #[cold]
    pub(crate) fn fail<T>(&mut self, error: Error)
    where
        S: Subscriber<T>,
    {
        self.failed = true;
        if let Some(upstream) = self.upstream.take() {
            upstream.cancel();
        }
        self.downstream.on_error(error.in_stage(self.name));
    }

    pub(crate) fn request_one(&self) {
        if let Some(upstream) = &self.upstream {
            upstream.request(1);
        }
    }

    pub(crate) fn on_subscribe<T>(&mut self, subscription: Subscription)
    where
        S: Subscriber<T>,
    {
        if self.upstream.is_some() {
            subscription.cancel(); // rule 2.5
            return;
        }
        self.upstream = Some(subscription.clone());
        self.downstream.on_subscribe(subscription);
    }

    pub(crate) fn on_error<T>(&mut self, error: Error)
    where
        S: Subscriber<T>,
    {
        if !self.failed {
            self.upstream = None;
            self.downstream.on_error(error);
        }
    }

    pub(crate) fn on_complete<T>(&mut self)
    where
        S: Subscriber<T>,
    {
        if !self.failed {
            self.upstream = None;
            self.downstream.on_complete();
        }
    }
}

/// An iterator adapter that applies an operator's step under the panic guard; it stops at a
/// failure (a panic or [`Step::Fail`]) and at the end the step asks for.
///
/// The failure is written outside the adapter: an `Option<Error>` field would need its drop code
/// called with the adapter's address, and an adapter whose address escapes is kept in memory
/// instead of registers, per item, for the whole fused chain.
struct Guarded<'a, I, F> {
    items: &'a mut I,
    step: F,
    /// [`StepFn::MAY_DROP`](super::step::StepFn::MAY_DROP) (a constant once inlined): which
    /// items a burst counts one by one, those handed on (the step may drop) or those dropped (it
    /// says it does not: then nothing is counted per item, and a step that drops anyway is still
    /// counted right).
    may_drop: bool,
    /// Nothing more is pulled: the step ended the stream or failed.
    over: bool,
    /// The step ended the stream (`EmitLast`, `Stop`).
    ended: bool,
    /// Items the step dropped (`Skip`, `Stop`).
    dropped: u64,
    failure: &'a mut Option<Error>,
}

impl<I, U, F> Iterator for Guarded<'_, I, F>
where
    I: Iterator,
    F: FnMut(I::Item) -> Step<U>,
{
    type Item = U;

    #[inline]
    fn next(&mut self) -> Option<U> {
        while !self.over {
            let item = self.items.next()?;
            let step = &mut self.step;
            match guard::catch(|| step(item)) {
                Ok(Step::Emit(out)) => return Some(out),
                Ok(Step::Skip) => self.dropped += 1,
                Ok(Step::EmitLast(out)) => {
                    (self.over, self.ended) = (true, true);
                    return Some(out);
                }
                Ok(Step::Stop) => {
                    self.dropped += 1;
                    (self.over, self.ended) = (true, true);
                }
                Ok(Step::Fail(error)) | Err(error) => {
                    *self.failure = Some(error);
                    self.over = true;
                }
            }
        }
        None
    }
}

impl<I, U, F> Burst for Guarded<'_, I, F>
where
    I: Burst,
    F: FnMut(I::Item) -> Step<U>,
{
    /// The step inside the closure the wrapped burst runs: the fused chain is one loop. A
    /// filtering step hands on fewer items than it pulls, so it asks again for what is missing
    /// until the wrapped burst runs out: no stop test per item (one measured 1.1-1.8x the
    /// instructions of these rounds in `chain`, `operators` and `dsl`). One count moves per item
    /// (see `may_drop`); the other is what was pulled less it, and less the item the step failed
    /// on.
    #[inline(always)]
    fn feed<G: FnMut(U) -> bool>(&mut self, max: u64, mut f: G) -> u64 {
        if self.over {
            return 0;
        }
        // Per item: `handed` if the step may drop, else `dropped`.
        let may_drop = self.may_drop;
        let (mut handed, mut dropped, mut pulled) = (0, 0, 0);
        let mut end = End::No;
        let step = &mut self.step;
        let failure = &mut *self.failure;
        while handed < max {
            let want = max - handed;
            let got = self
                .items
                .feed(want, |item| match guard::catch(|| step(item)) {
                    Ok(Step::Emit(out)) => {
                        if may_drop {
                            handed += 1;
                        }
                        if f(out) {
                            true
                        } else {
                            end = End::Downstream;
                            false
                        }
                    }
                    Ok(Step::Skip) => {
                        if !may_drop {
                            dropped += 1;
                        }
                        true
                    }
                    Ok(Step::EmitLast(out)) => {
                        if may_drop {
                            handed += 1;
                        }
                        f(out);
                        end = End::Step;
                        false
                    }
                    Ok(Step::Stop) => {
                        if !may_drop {
                            dropped += 1;
                        }
                        end = End::Step;
                        false
                    }
                    Ok(Step::Fail(error)) | Err(error) => {
                        *failure = Some(error);
                        end = End::Failed;
                        false
                    }
                });
            pulled += got;
            if !may_drop {
                // (Saturating, here and below: a wrapped burst that under-reports what it handed
                // over must not wrap.)
                handed = pulled.saturating_sub(dropped + u64::from(end == End::Failed));
            }
            if end != End::No || got < want {
                break;
            }
        }
        if may_drop {
            // Pulled and not handed on: dropped by the step, but for the one it failed on.
            dropped = pulled.saturating_sub(handed);
            if end == End::Failed {
                dropped = dropped.saturating_sub(1);
            }
        }
        match end {
            End::Step => (self.over, self.ended) = (true, true),
            End::Failed => self.over = true,
            End::No | End::Downstream => {}
        }
        self.dropped += dropped;
        handed
    }
}

/// Why [`Guarded::feed`] stopped before the wrapped burst ran out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    No,
    /// The closure it was fed to said stop.
    Downstream,
    /// The step ended the stream (`EmitLast`, `Stop`).
    Step,
    /// The step failed or panicked.
    Failed,
}
