//! The unit of the fused level: [`Step`] (what happens to one item) and [`StepFn`] (an operator's
//! per-item logic). Steps know nothing of subscribers or demand; [`Fused`](super::Fused) runs them.

use weir_runtime::Error;
use weir_runtime::ledger::Reason;

/// What a fused operator does with one item.
#[derive(Debug)]
pub enum Step<U> {
    /// Pass this on downstream.
    Emit(U),
    /// Drop the item (its unit of demand is reused), counted under [`StepFn::DROPPED`].
    Skip,
    /// Pass this on, then complete (and cancel the upstream).
    EmitLast(U),
    /// Complete now (and cancel the upstream), dropping the item (counted under
    /// [`StepFn::DROPPED`]).
    Stop,
    /// Fail the stream with this error (named after the stage), cancelling the upstream.
    Fail(Error),
}

/// One fused operator's per-item logic. Implement it to add an operator that runs inside the
/// upstream's call chain; [`Fused`](super::Fused) does the rest.
pub trait StepFn<T>: Send + 'static {
    /// The items it emits.
    type Out;
    /// The stage name used in errors and metrics.
    const NAME: &'static str;
    /// The ledger's reason for the items the step drops ([`Step::Skip`], [`Step::Stop`]).
    const DROPPED: Reason = Reason::Filtered;
    /// Whether `step` may drop items ([`Step::Skip`], [`Step::Stop`]). A hint for the fused loop,
    /// never a condition of correct counts: a burst counts per item either the items the step
    /// hands on (when it may drop) or the ones it drops (when it says it does not, such as `map`,
    /// whose loop then counts nothing per item). Set it to `false` for a step that emits every
    /// item or fails.
    const MAY_DROP: bool = true;
    /// Handles one item.
    fn step(&mut self, item: T) -> Step<Self::Out>;
    /// The most items this operator will ever want from upstream, if bounded (`take`).
    fn request_cap(&self) -> Option<u64> {
        None
    }
}
