//! `dedupe`: drops redelivered items by key within a bounded window.

use crate::fused::Fused;
use crate::fused::step::{Step, StepFn};

/// See [`PublisherExt::dedupe`](crate::PublisherExt::dedupe).
pub type Dedupe<P, K, F, T> = Fused<P, DedupeStep<K, F>, T>;

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
    const DROPPED: weir_runtime::ledger::Reason = weir_runtime::ledger::Reason::Duplicate;
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

impl<P, K, F, T> Fused<P, DedupeStep<K, F>, T> {
    /// How many duplicates were dropped so far (shared, live): see
    /// [`PublisherExt::dedupe`](crate::PublisherExt::dedupe).
    pub fn duplicates(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.step().duplicates.clone()
    }
}
