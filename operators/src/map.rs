use weir_runtime::{Publisher, Subscriber};

use crate::stage::{Stage, forward_signals};

/// Applies a function to every item; see [`PublisherExt::map`](crate::PublisherExt::map).
///
/// `T` is the input item type: a closure's argument type does not pin it down, so it is named here.
pub struct Map<P, F, T> {
    upstream: P,
    f: F,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<P, F, T> Map<P, F, T> {
    pub(crate) fn new(upstream: P, f: F) -> Self {
        Self {
            upstream,
            f,
            _input: std::marker::PhantomData,
        }
    }
}

impl<P: Clone, F: Clone, T> Clone for Map<P, F, T> {
    fn clone(&self) -> Self {
        Self::new(self.upstream.clone(), self.f.clone())
    }
}

impl<P: std::fmt::Debug, F, T> std::fmt::Debug for Map<P, F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl<T, U, P, F> Publisher<U> for Map<P, F, T>
where
    P: Publisher<T>,
    F: FnMut(T) -> U + Send + 'static,
    T: 'static,
    U: 'static,
{
    fn subscribe<S: Subscriber<U>>(self, subscriber: S) {
        self.upstream.subscribe(MapSubscriber {
            stage: Stage::new("map", subscriber),
            f: self.f,
            _types: std::marker::PhantomData,
        });
    }
}

struct MapSubscriber<S, F, T> {
    stage: Stage<S>,
    f: F,
    _types: std::marker::PhantomData<fn(T)>,
}

impl<T, U, S, F> Subscriber<T> for MapSubscriber<S, F, T>
where
    S: Subscriber<U>,
    F: FnMut(T) -> U + Send + 'static,
    T: 'static,
    U: 'static,
{
    #[inline]
    fn on_next(&mut self, item: T) {
        if self.stage.is_failed() {
            return;
        }
        let f = &mut self.f;
        if let Some(mapped) = self.stage.guard::<U, _>(|| f(item)) {
            self.stage.downstream.on_next(mapped);
        }
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        if self.stage.is_failed() {
            return true;
        }
        let f = &mut self.f;
        match self.stage.guard::<U, _>(|| f(item)) {
            Some(mapped) => self.stage.downstream.try_on_next(mapped),
            None => true,
        }
    }

    #[inline]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Iterator<Item = T>,
    {
        let f = &mut self.f;
        self.stage.forward_iter(items, limit, |item| Some(f(item)))
    }

    forward_signals!(U);
}
