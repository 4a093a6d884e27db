//! Sources: publishers made from iterators, streams, single values and failures.
//!
//! Synchronous sources ([`from_iter`], [`once`], [`empty`], [`error`]) emit in the thread that calls
//! `request`, inside a trampolined drain loop. [`from_stream`] polls its stream in a tokio task of its own,
//! only while there is demand.

mod emitter;
mod stream;

pub(crate) use emitter::{CANCEL_CHECK_EVERY, Emit, Emitted, Emitter, Poke};
pub use stream::{FromStream, FromTryStream, from_stream, from_try_stream};

use std::panic::{AssertUnwindSafe, catch_unwind};

use weir_lockfree::{Demand, SubscriptionCore};

use crate::protocol::Burst;
use crate::{Error, Publisher, Subscriber};

/// A publisher of the items of an iterator. `Clone` (and so reusable) when the iterator is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{sink, source};
/// let items = sink::collect(source::from_iter(1..=3)).await.unwrap();
/// assert_eq!(items, vec![1, 2, 3]);
/// # }
/// ```
pub fn from_iter<I>(items: I) -> FromIter<I::IntoIter>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
{
    FromIter(items.into_iter())
}

/// See [`from_iter`].
#[derive(Debug, Clone)]
pub struct FromIter<I>(I);

impl<I> Publisher<I::Item> for FromIter<I>
where
    I: Iterator + Send + 'static,
{
    fn subscribe<S: Subscriber<I::Item>>(self, subscriber: S) {
        Emitter::start(IterEmit(self.0), subscriber);
    }
}

struct IterEmit<I>(I);

impl<I: Iterator + Send + 'static> Emit for IterEmit<I> {
    type Item = I::Item;

    #[inline]
    fn emit<S: Subscriber<I::Item>>(
        &mut self,
        subscriber: &mut S,
        demand: u64,
        core: &SubscriptionCore,
    ) -> Emitted {
        let mut panicked = None;
        let emitted = Self::emit_from(&mut self.0, &mut panicked, subscriber, demand, core);
        match (emitted, panicked) {
            (Emitted::Items(accepted) | Emitted::Done(accepted, _), Some(error)) => {
                Emitted::Done(accepted, Err(error))
            }
            (emitted, None) => emitted,
        }
    }
}

impl<I: Iterator + Send + 'static> IterEmit<I> {
    #[inline(always)]
    fn emit_from<S: Subscriber<I::Item>>(
        items: &mut I,
        panicked: &mut Option<Error>,
        subscriber: &mut S,
        demand: u64,
        core: &SubscriptionCore,
    ) -> Emitted {
        if demand == Demand::UNBOUNDED {
            // Nothing to count: bursts of `CANCEL_CHECK_EVERY` items pulled, each one
            // `try_on_next_iter` call (a fused chain moves it in one loop and counts per burst),
            // with a look at the cancel flag between them. Bounded by what is pulled, not by what
            // is accepted, so a filter that drops everything still lets the flag be seen.
            loop {
                let mut burst = Pull {
                    items: &mut *items,
                    left: CANCEL_CHECK_EVERY,
                    panicked: &mut *panicked,
                };
                subscriber.try_on_next_iter(&mut burst, CANCEL_CHECK_EVERY);
                if burst.left > 0 {
                    return Emitted::Done(0, Ok(()));
                }
                if core.is_cancelled_relaxed() {
                    return Emitted::Items(0);
                }
            }
        }
        let mut accepted = 0;
        while accepted < demand {
            // A slice of the demand between two looks at the cancel flag, and at most
            // `CANCEL_CHECK_EVERY` items pulled for it (a filter may accept few of them).
            let slice = (demand - accepted).min(CANCEL_CHECK_EVERY);
            let mut burst = Pull {
                items: &mut *items,
                left: CANCEL_CHECK_EVERY,
                panicked: &mut *panicked,
            };
            let taken = subscriber.try_on_next_iter(&mut burst, slice);
            accepted += taken;
            if taken < slice && burst.left > 0 {
                return Emitted::Done(accepted, Ok(()));
            }
            if core.is_cancelled_relaxed() {
                return Emitted::Items(accepted);
            }
        }
        Emitted::Items(accepted)
    }
}

/// At most `left` items of `items`; `left` counts down only for items pulled, so what is left
/// after a burst says whether the iterator ran out (or the subscriber stopped pulling). A panic
/// of the user's iterator ends it as if the iterator ran out, with the error in `panicked`: the
/// stream fails instead of unwinding into whoever called `request`. (For an iterator that cannot
/// panic, such as a range, the guard compiles to nothing.) Its [`feed`](Burst::feed) is the
/// loop of the whole fused chain.
struct Pull<'a, I> {
    items: &'a mut I,
    left: u64,
    /// Outside the burst: a field with drop code would keep the burst in memory (see `Guarded`
    /// in weir-operators).
    panicked: &'a mut Option<Error>,
}

impl<I: Iterator> Iterator for Pull<'_, I> {
    type Item = I::Item;

    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        if self.left == 0 {
            return None;
        }
        let items = &mut *self.items;
        let item = match catch_unwind(AssertUnwindSafe(|| items.next())) {
            Ok(item) => item?,
            Err(payload) => {
                *self.panicked = Some(Error::panicked(payload.as_ref()));
                return None;
            }
        };
        self.left -= 1;
        Some(item)
    }
}

impl<I: Iterator> Burst for Pull<'_, I> {
    #[inline(always)]
    fn feed<F: FnMut(I::Item) -> bool>(&mut self, max: u64, mut f: F) -> u64 {
        let most = max.min(self.left);
        let items = &mut *self.items;
        let mut handed = 0;
        while handed < most {
            let item = match catch_unwind(AssertUnwindSafe(|| items.next())) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(payload) => {
                    *self.panicked = Some(Error::panicked(payload.as_ref()));
                    break;
                }
            };
            handed += 1;
            if !f(item) {
                break;
            }
        }
        self.left -= handed;
        handed
    }
}

/// A publisher of nothing: `on_subscribe` then `on_complete`.
pub fn empty<T: Send + 'static>() -> Once<T> {
    Once(None)
}

/// A publisher of one item.
pub fn once<T: Send + 'static>(item: T) -> Once<T> {
    Once(Some(item))
}

/// See [`once`] and [`empty`].
#[derive(Debug, Clone)]
pub struct Once<T>(Option<T>);

impl<T: Send + 'static> Publisher<T> for Once<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        Emitter::start(self, subscriber);
    }
}

impl<T: Send + 'static> Emit for Once<T> {
    type Item = T;

    fn emit<S: Subscriber<T>>(
        &mut self,
        subscriber: &mut S,
        demand: u64,
        _: &SubscriptionCore,
    ) -> Emitted {
        match self.0.take() {
            None => Emitted::Done(0, Ok(())),
            Some(item) if demand > 0 => {
                let accepted = u64::from(subscriber.try_on_next(item));
                Emitted::Done(accepted, Ok(()))
            }
            Some(item) => {
                self.0 = Some(item);
                Emitted::Items(0)
            }
        }
    }
}

/// A publisher that fails at once: `on_subscribe` then `on_error`.
pub fn error<T: Send + 'static>(error: Error) -> Fail<T> {
    Fail(error, std::marker::PhantomData)
}

/// See [`error`].
pub struct Fail<T>(Error, std::marker::PhantomData<fn() -> T>);

impl<T> Clone for Fail<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), std::marker::PhantomData)
    }
}

impl<T> std::fmt::Debug for Fail<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Fail").field(&self.0).finish()
    }
}

impl<T: Send + 'static> Publisher<T> for Fail<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        Emitter::start(self, subscriber);
    }
}

impl<T: Send + 'static> Emit for Fail<T> {
    type Item = T;

    fn emit<S: Subscriber<T>>(&mut self, _: &mut S, _: u64, _: &SubscriptionCore) -> Emitted {
        Emitted::Done(0, Err(self.0.clone()))
    }
}
