//! Prefix operators: `take`, `take_while` and `skip`.

use crate::fused::Fused;
use crate::fused::step::{Step, StepFn};

/// See [`PublisherExt::take`](crate::PublisherExt::take).
pub type Take<P, T> = Fused<P, TakeStep, T>;
/// See [`PublisherExt::take_while`](crate::PublisherExt::take_while).
pub type TakeWhile<P, F, T> = Fused<P, TakeWhileStep<F>, T>;
/// See [`PublisherExt::skip`](crate::PublisherExt::skip).
pub type Skip<P, T> = Fused<P, SkipStep, T>;

/// `take`: the first `n` items, then completes (and never asks the upstream for more than `n`).
#[derive(Debug, Clone)]
pub struct TakeStep {
    pub(crate) left: u64,
}

impl<T> StepFn<T> for TakeStep {
    type Out = T;
    const NAME: &'static str = "take";
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        match self.left {
            0 => Step::Stop,
            1 => {
                self.left = 0;
                Step::EmitLast(item)
            }
            _ => {
                self.left -= 1;
                Step::Emit(item)
            }
        }
    }
    fn request_cap(&self) -> Option<u64> {
        Some(self.left)
    }
}

/// `take_while`: items while the predicate holds, then completes.
#[derive(Debug, Clone)]
pub struct TakeWhileStep<F>(pub(crate) F);

impl<T, F: FnMut(&T) -> bool + Send + 'static> StepFn<T> for TakeWhileStep<F> {
    type Out = T;
    const NAME: &'static str = "take_while";
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        if (self.0)(&item) {
            Step::Emit(item)
        } else {
            Step::Stop
        }
    }
}

/// `skip`: drops the first `n` items.
#[derive(Debug, Clone)]
pub struct SkipStep {
    pub(crate) left: u64,
}

impl<T> StepFn<T> for SkipStep {
    type Out = T;
    const NAME: &'static str = "skip";
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        if self.left > 0 {
            self.left -= 1;
            Step::Skip
        } else {
            Step::Emit(item)
        }
    }
}
