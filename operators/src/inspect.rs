use weir_runtime::{Publisher, Subscriber};

use crate::stage::{Stage, forward_signals};

/// Calls a function with a reference to every item and passes the item on; see
/// [`PublisherExt::inspect`](crate::PublisherExt::inspect).
#[derive(Clone)]
pub struct Inspect<P, F> {
    upstream: P,
    f: F,
}

impl<P: std::fmt::Debug, F> std::fmt::Debug for Inspect<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspect")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<P, F> Inspect<P, F> {
    pub(crate) fn new(upstream: P, f: F) -> Self {
        Self { upstream, f }
    }
}

impl<T, P, F> Publisher<T> for Inspect<P, F>
where
    P: Publisher<T>,
    F: FnMut(&T) + Send + 'static,
    T: 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        self.upstream.subscribe(InspectSubscriber {
            stage: Stage::new("inspect", subscriber),
            f: self.f,
        });
    }
}

struct InspectSubscriber<S, F> {
    stage: Stage<S>,
    f: F,
}

impl<T, S, F> Subscriber<T> for InspectSubscriber<S, F>
where
    S: Subscriber<T>,
    F: FnMut(&T) + Send + 'static,
    T: 'static,
{
    #[inline]
    fn on_next(&mut self, item: T) {
        let f = &mut self.f;
        if !self.stage.is_failed() && self.stage.guard::<T, _>(|| f(&item)).is_some() {
            self.stage.downstream.on_next(item);
        }
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        let f = &mut self.f;
        if self.stage.is_failed() || self.stage.guard::<T, _>(|| f(&item)).is_none() {
            return true;
        }
        self.stage.downstream.try_on_next(item)
    }

    #[inline]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Iterator<Item = T>,
    {
        let f = &mut self.f;
        self.stage.forward_iter(items, limit, |item| {
            f(&item);
            Some(item)
        })
    }

    forward_signals!(T);
}
