//! The subscription state of publishers that emit from a tokio task of their own (stream sources,
//! boundary outlets): `request` and `cancel` record what they want and wake the task on transitions;
//! the task does all the emitting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;

use weir_sync::{Demand, WakeSlot};

use crate::RawSubscription;

#[derive(Debug, Default)]
pub(crate) struct TaskSubscription {
    demand: Demand,
    cancelled: AtomicBool,
    bad_request: AtomicBool,
    wake: WakeSlot,
}

/// What the emitting task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Emit up to this many items.
    Emit(u64),
    /// Nothing to do until woken.
    Wait,
    /// The subscriber called `request(0)`: fail the stream.
    BadRequest,
    /// The subscriber cancelled: release everything.
    Cancelled,
}

impl TaskSubscription {
    pub(crate) fn demand(&self) -> &Demand {
        &self.demand
    }

    fn next(&self) -> Next {
        if self.cancelled.load(Ordering::Acquire) {
            Next::Cancelled
        } else if self.bad_request.load(Ordering::Acquire) {
            Next::BadRequest
        } else {
            match self.demand.get() {
                0 => Next::Wait,
                n => Next::Emit(n),
            }
        }
    }

    /// What to do now; when the answer is [`Next::Wait`], the task is registered to be woken by the
    /// next `request` or `cancel`.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Next {
        match self.next() {
            Next::Wait => {}
            next => return next,
        }
        self.wake.prepare(cx);
        match self.next() {
            Next::Wait => Next::Wait,
            next => {
                self.wake.clear();
                next
            }
        }
    }

    /// Registers the task to be woken by `request` / `cancel` while it waits for something else, and
    /// reports whether it was cancelled (or failed by `request(0)`) meanwhile.
    pub(crate) fn watch(&self, cx: &mut Context<'_>) -> Next {
        self.wake.prepare(cx);
        match self.next() {
            next @ (Next::Cancelled | Next::BadRequest) => {
                self.wake.clear();
                next
            }
            other => other,
        }
    }
}

impl RawSubscription for TaskSubscription {
    fn request(&self, n: u64) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        if n == 0 {
            self.bad_request.store(true, Ordering::Release);
            self.wake.notify();
        } else if self.demand.add(n) == 0 {
            self.wake.notify();
        }
    }

    fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.wake.notify();
        }
    }
}
