//! The emitting side of a queue: the drain loop's pass that takes items from the queue and hands
//! them to the subscriber within its demand, and what happens to the rest when the subscription
//! ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_lockfree::SubscriptionCore;

use super::core::{Shared, Storage, lock, reconcile};
use crate::protocol::Each;
use crate::source::{CANCEL_CHECK_EVERY, Emit, Emitted};
use crate::{Error, Subscriber};

/// How many items the drain loop takes from the queue under one lock.
pub(super) const TAKE_BATCH: usize = 256;

pub(super) struct QueueEmit<T> {
    pub(super) shared: Arc<Shared<T>>,
    pub(super) batch: VecDeque<T>,
    /// A store's failed take, reported once the items taken before it (in `batch`) are out.
    pub(super) failed: Option<Error>,
}

impl<T: Send + 'static> Emit for QueueEmit<T> {
    type Item = T;

    fn emit<S: Subscriber<T>>(
        &mut self,
        subscriber: &mut S,
        demand: u64,
        core: &SubscriptionCore,
    ) -> Emitted {
        let shared = &*self.shared;
        let mut accepted = 0;
        let emitted = loop {
            if core.is_cancelled() {
                break Emitted::Items(accepted);
            }
            if self.batch.is_empty()
                && let Some(error) = self.failed.take()
            {
                break Emitted::Done(accepted, Err(error));
            }
            let room = (demand - accepted)
                .min(TAKE_BATCH as u64)
                .min(CANCEL_CHECK_EVERY) as usize;
            let want = room.saturating_sub(self.batch.len());
            {
                let mut state = lock(&shared.state);
                if state.len() == 0 && self.batch.is_empty() && state.closed {
                    break Emitted::Done(accepted, state.failure.take().map_or(Ok(()), Err));
                }
                if room == 0 {
                    break Emitted::Items(accepted);
                }
                // Taken items are held in `self.batch` until the subscriber takes them: they are
                // counted out below, as it does.
                match &mut state.storage {
                    Storage::Spilling { .. } if self.failed.is_some() => {}
                    Storage::Spilling {
                        store,
                        ages,
                        expected,
                        ..
                    } => {
                        let before = self.batch.len();
                        let took = store.take_into(want, &mut self.batch);
                        // A failed take may have moved items before it failed: they are counted
                        // (and go out first) as a successful take's are.
                        let taken = self.batch.len() - before;
                        // A store may hand out records it found meanwhile (an earlier run's
                        // message read back): the books go below zero until `reconcile` counts
                        // them.
                        *expected = expected.saturating_sub(taken as i64);
                        reconcile(&**store, expected, &shared.metrics);
                        ages.taken(taken as u64);
                        shared.metrics.set_oldest(ages.oldest());
                        if let Err(error) = took {
                            if self.batch.is_empty() {
                                break Emitted::Done(accepted, Err(error));
                            }
                            self.failed = Some(error);
                        }
                    }
                    Storage::Memory { items, .. } => {
                        let take = want.min(items.len());
                        self.batch.extend(items.drain(..take).map(|(_, item)| item));
                        shared.after_change(items, 0);
                    }
                }
                // A take that found the store holding less than it counted (a corrupt record
                // skipped) can empty a closed queue while handing out nothing: it ends now (no
                // later poke would come to end it).
                if state.len() == 0 && self.batch.is_empty() && state.closed {
                    break Emitted::Done(accepted, state.failure.take().map_or(Ok(()), Err));
                }
            }
            if self.batch.is_empty() {
                break Emitted::Items(accepted);
            }
            if accepted >= demand {
                break Emitted::Items(accepted);
            }
            if shared.blocked.load(Ordering::Acquire) > 0 {
                shared.space.notify_waiters();
            }
            // Items the subscriber does not take stay in the batch: emitted next time, or counted
            // as cancelled if the subscription ends first.
            let before = self.batch.len();
            let batch = &mut self.batch;
            let mut from_batch = Each(std::iter::from_fn(|| batch.pop_front()));
            accepted += subscriber.try_on_next_iter(&mut from_batch, demand - accepted);
            shared.metrics.add_out((before - self.batch.len()) as u64);
        };
        // Outstanding demand as the queue leaves it (unbounded stays unbounded).
        let left = if demand == u64::MAX {
            demand
        } else {
            demand - accepted
        };
        shared.metrics.set_demand(left);
        emitted
    }
}

impl<T> Drop for QueueEmit<T> {
    /// The subscription ended (cancel, or a failure downstream): whatever is still queued will never
    /// be emitted. Close the queue so pushes fail loudly, and count what is dropped.
    fn drop(&mut self) {
        self.shared.finish(self.batch.len());
        self.batch.clear();
    }
}
