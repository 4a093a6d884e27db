//! The synchronous drain loop shared by every source that can produce items on the spot (iterators,
//! `once`, `empty`, `error`, ingress queues): whoever calls `request` runs the emission, serialised by a
//! [`SubscriptionCore`] so that re-entrant requests are trampolined and signals never overlap.

use std::cell::UnsafeCell;
use std::sync::Arc;

use weir_sync::SubscriptionCore;

use crate::{Error, ErrorKind, RawSubscription, Subscriber, Subscription};

/// How many items an emitter produces between two looks at the cancel flag.
pub(crate) const CANCEL_CHECK_EVERY: u64 = 1024;

/// What one call of [`Emit::emit`] achieved.
#[derive(Debug)]
pub(crate) enum Emitted {
    /// `n` items were accepted downstream; the source may have more later.
    Items(u64),
    /// The source ended after accepting `n` more items: send the terminal signal.
    Done(u64, Result<(), Error>),
}

/// A source of items driven by the drain loop.
pub(crate) trait Emit: Send + 'static {
    /// The items this source produces.
    type Item;

    /// Emits at most `demand` accepted items (`try_on_next` returning `true`) to `subscriber`, checking
    /// `core.is_cancelled()` at least every [`CANCEL_CHECK_EVERY`] items.
    fn emit<S: Subscriber<Self::Item>>(
        &mut self,
        subscriber: &mut S,
        demand: u64,
        core: &SubscriptionCore,
    ) -> Emitted;
}

pub(crate) struct Emitter<E, S> {
    core: SubscriptionCore,
    /// `None` once the subscription ended: the subscriber has been dropped (rule 3.13).
    state: UnsafeCell<Option<(E, S)>>,
}

// SAFETY: `state` is only accessed by the owner of `core`'s serialiser, one thread at a time.
unsafe impl<E: Send, S: Send> Sync for Emitter<E, S> {}

impl<E, S> Emitter<E, S> {
    /// Subscribes `subscriber` to `source`: `on_subscribe` then whatever it requested, trampolined.
    pub(crate) fn start(source: E, subscriber: S) -> Arc<Self>
    where
        E: Emit,
        S: Subscriber<E::Item>,
    {
        let emitter = Arc::new(Emitter {
            core: SubscriptionCore::new(),
            state: UnsafeCell::new(Some((source, subscriber))),
        });
        // Nobody else holds the Arc yet, so this makes us the owner; requests made inside
        // on_subscribe only add demand and are served by the drain below.
        let owner = emitter.core.signal();
        debug_assert!(owner);
        let subscription = Subscription::new(emitter.clone());
        // SAFETY: we own the serialiser.
        if let Some((_, subscriber)) = unsafe { &mut *emitter.state.get() } {
            subscriber.on_subscribe(subscription);
        }
        emitter.core.drain(|| emitter.pass());
        emitter
    }

    /// One pass of the drain loop; only called by the serialiser's owner.
    fn pass(&self)
    where
        E: Emit,
        S: Subscriber<E::Item>,
    {
        // SAFETY: only the owner of the serialiser runs passes.
        let state = unsafe { &mut *self.state.get() };
        // Work on local copies: the compiler keeps the source's and the subscriber's state in
        // registers instead of storing every item's effect to the shared cell. Nothing else touches
        // the cell during a pass (re-entrant `request` / `cancel` only signal the serialiser).
        let Some((mut source, mut subscriber)) = state.take() else {
            return;
        };
        if self.core.is_cancelled() {
            return; // dropped: the subscriber is released (rule 3.13)
        }
        if self.core.has_bad_request() {
            subscriber.on_error(Error::new(ErrorKind::RequestZero));
            return;
        }
        let demand = self.core.demand().get();
        match source.emit(&mut subscriber, demand, &self.core) {
            Emitted::Items(n) => {
                self.core.demand().consume(n);
                if n > 0 {
                    subscriber.on_flush();
                }
                *state = Some((source, subscriber));
            }
            Emitted::Done(n, result) => {
                self.core.demand().consume(n);
                if !self.core.is_cancelled() {
                    match result {
                        Ok(()) => subscriber.on_complete(),
                        Err(error) => subscriber.on_error(error),
                    }
                }
            }
        }
    }
}

impl<E: Emit, S: Subscriber<E::Item>> RawSubscription for Emitter<E, S> {
    fn request(&self, n: u64) {
        if self.core.request(n) {
            self.core.drain(|| self.pass());
        }
    }

    fn cancel(&self) {
        if self.core.cancel() {
            self.core.drain(|| self.pass());
        }
    }
}

/// Lets a source that gains items by itself (an ingress queue) run the drain loop.
pub(crate) trait Poke: Send + Sync + 'static {
    /// Runs the drain loop now, or makes the running owner do one more pass.
    fn poke(&self);
}

impl<E: Emit, S: Subscriber<E::Item>> Poke for Emitter<E, S> {
    fn poke(&self) {
        if self.core.signal() {
            self.core.drain(|| self.pass());
        }
    }
}
