//! The per-item operators, each a small [`StepFn`].

use crate::fused::{Step, StepFn};

/// `map`: transforms every item.
#[derive(Debug, Clone)]
pub struct MapStep<F>(pub(crate) F);

impl<T, U, F: FnMut(T) -> U + Send + 'static> StepFn<T> for MapStep<F> {
    type Out = U;
    const NAME: &'static str = "map";
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
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        Step::Emit((self.f)(&mut self.state, item))
    }
}

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

/// `dedupe`: drops items whose key was seen among the last `window` distinct keys.
pub struct DedupeStep<K, F> {
    pub(crate) key: F,
    pub(crate) window: usize,
    pub(crate) seen: std::collections::HashSet<K>,
    pub(crate) order: std::collections::VecDeque<K>,
    pub(crate) duplicates: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<K, F> std::fmt::Debug for DedupeStep<K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupeStep")
            .field("window", &self.window)
            .field("remembered", &self.order.len())
            .finish()
    }
}

impl<T, K, F> StepFn<T> for DedupeStep<K, F>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    F: FnMut(&T) -> K + Send + 'static,
{
    type Out = T;
    const NAME: &'static str = "dedupe";
    #[inline]
    fn step(&mut self, item: T) -> Step<T> {
        let key = (self.key)(&item);
        if self.seen.contains(&key) {
            self.duplicates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Step::Skip;
        }
        if self.order.len() == self.window
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        Step::Emit(item)
    }
}

/// `try_map`: transforms every item with a fallible function; an `Err` fails the stream.
#[derive(Debug, Clone)]
pub struct TryMapStep<F>(pub(crate) F);

impl<T, U, E, F> StepFn<T> for TryMapStep<F>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(T) -> Result<U, E> + Send + 'static,
{
    type Out = U;
    const NAME: &'static str = "try_map";
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        match (self.0)(item) {
            Ok(out) => Step::Emit(out),
            Err(error) => Step::Fail(weir_runtime::Error::failed(error)),
        }
    }
}
