use weir_runtime::{Publisher, Subscriber};

use crate::stage::{Stage, forward_signals};

/// Keeps the items a predicate accepts; see [`PublisherExt::filter`](crate::PublisherExt::filter).
///
/// A dropped item gives its unit of demand back: through `try_on_next` returning `false` (no request
/// at all) with weir's publishers, through `request(1)` with others.
#[derive(Clone)]
pub struct Filter<P, F> {
    upstream: P,
    predicate: F,
}

impl<P: std::fmt::Debug, F> std::fmt::Debug for Filter<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<P, F> Filter<P, F> {
    pub(crate) fn new(upstream: P, predicate: F) -> Self {
        Self {
            upstream,
            predicate,
        }
    }
}

impl<T, P, F> Publisher<T> for Filter<P, F>
where
    P: Publisher<T>,
    F: FnMut(&T) -> bool + Send + 'static,
    T: 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        self.upstream.subscribe(FilterSubscriber {
            stage: Stage::new("filter", subscriber),
            predicate: self.predicate,
        });
    }
}

struct FilterSubscriber<S, F> {
    stage: Stage<S>,
    predicate: F,
}

impl<T, S, F> Subscriber<T> for FilterSubscriber<S, F>
where
    S: Subscriber<T>,
    F: FnMut(&T) -> bool + Send + 'static,
    T: 'static,
{
    #[inline]
    fn on_next(&mut self, item: T) {
        if self.stage.is_failed() {
            return;
        }
        let predicate = &mut self.predicate;
        match self.stage.guard::<T, _>(|| predicate(&item)) {
            Some(true) => self.stage.downstream.on_next(item),
            Some(false) => self.stage.request_one(),
            None => {}
        }
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        if self.stage.is_failed() {
            return true;
        }
        let predicate = &mut self.predicate;
        match self.stage.guard::<T, _>(|| predicate(&item)) {
            Some(true) => self.stage.downstream.try_on_next(item),
            Some(false) => false,
            None => true,
        }
    }

    #[inline]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Iterator<Item = T>,
    {
        let predicate = &mut self.predicate;
        self.stage
            .forward_iter(items, limit, |item| predicate(&item).then_some(item))
    }

    forward_signals!(T);
}
