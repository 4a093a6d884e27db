//! Per-item transforms: `map`, `filter`, `filter_map`, `inspect` and `scan`.

use crate::fused::Fused;
use crate::fused::step::{Step, StepFn};

/// See [`PublisherExt::map`](crate::PublisherExt::map).
pub type Map<P, F, T> = Fused<P, MapStep<F>, T>;
/// See [`PublisherExt::filter`](crate::PublisherExt::filter).
pub type Filter<P, F, T> = Fused<P, FilterStep<F>, T>;
/// See [`PublisherExt::filter_map`](crate::PublisherExt::filter_map).
pub type FilterMap<P, F, T> = Fused<P, FilterMapStep<F>, T>;
/// See [`PublisherExt::inspect`](crate::PublisherExt::inspect).
pub type Inspect<P, F, T> = Fused<P, InspectStep<F>, T>;
/// See [`PublisherExt::scan`](crate::PublisherExt::scan).
pub type Scan<P, A, F, T> = Fused<P, ScanStep<A, F>, T>;

/// `map`: transforms every item.
#[derive(Debug, Clone)]
pub struct MapStep<F>(pub(crate) F);

impl<T, U, F: FnMut(T) -> U + Send + 'static> StepFn<T> for MapStep<F> {
    type Out = U;
    const NAME: &'static str = "map";
    const MAY_DROP: bool = false;
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        Step::Emit((self.0)(item))
    }
}

/// `filter`: keeps the items a predicate accepts.
#[derive(Debug, Clone)]
pub struct FilterStep<F>(pub(crate) F);

impl<T, F: FnMut(&T) -> bool + Send + 'static> StepFn<T> for FilterStep<F> {
    type Out = T;
    const NAME: &'static str = "filter";
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        if (self.0)(&item) {
            Step::Emit(item)
        } else {
            Step::Skip
        }
    }
}

/// `filter_map`: transforms and filters in one closure.
#[derive(Debug, Clone)]
pub struct FilterMapStep<F>(pub(crate) F);

impl<T, U, F: FnMut(T) -> Option<U> + Send + 'static> StepFn<T> for FilterMapStep<F> {
    type Out = U;
    const NAME: &'static str = "filter_map";
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        match (self.0)(item) {
            Some(out) => Step::Emit(out),
            None => Step::Skip,
        }
    }
}

/// `inspect`: looks at every item and passes it on.
#[derive(Debug, Clone)]
pub struct InspectStep<F>(pub(crate) F);

impl<T, F: FnMut(&T) + Send + 'static> StepFn<T> for InspectStep<F> {
    type Out = T;
    const NAME: &'static str = "inspect";
    const MAY_DROP: bool = false;
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        (self.0)(&item);
        Step::Emit(item)
    }
}

/// `scan`: threads a state through the items and emits what the closure returns.
#[derive(Debug, Clone)]
pub struct ScanStep<A, F> {
    pub(crate) state: A,
    pub(crate) f: F,
}

impl<T, U, A: Send + 'static, F: FnMut(&mut A, T) -> U + Send + 'static> StepFn<T>
    for ScanStep<A, F>
{
    type Out = U;
    const NAME: &'static str = "scan";
    const MAY_DROP: bool = false;
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        Step::Emit((self.f)(&mut self.state, item))
    }
}
