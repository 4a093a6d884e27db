//! The subscription state of publishers that emit from a task (or poll function) of their own
//! (stream sources, boundary outlets, merges): `request` and `cancel` record what they want and wake
//! the task on transitions; the task does all the emitting.
//!
//! ```
//! use std::task::{Context, Waker};
//! use weir_lockfree::{Next, TaskSubscription};
//! let state = TaskSubscription::default();
//! let mut cx = Context::from_waker(Waker::noop());
//! assert_eq!(state.poll_next(&mut cx), Next::Wait);
//! state.request(3);
//! assert_eq!(state.poll_next(&mut cx), Next::Emit(3));
//! ```

use std::task::Context;

use crate::loom::{AtomicBool, Ordering};
use crate::{Demand, WakeSlot};

/// The subscription state of a publisher that emits from a task of its own: `request` and
/// `cancel` record what they want and wake the task on transitions; the task does all the
/// emitting (see [`Next`]).
#[derive(Debug, Default)]
pub struct TaskSubscription {
    demand: Demand,
    cancelled: AtomicBool,
    bad_request: AtomicBool,
    wake: WakeSlot,
}

/// What the emitting task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
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
    /// The outstanding demand (the task consumes what it emitted).
    pub fn demand(&self) -> &Demand {
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
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Next {
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
    pub fn watch(&self, cx: &mut Context<'_>) -> Next {
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

impl TaskSubscription {
    /// Records `request(n)` and wakes the task if it waited for demand. `n == 0` is remembered
    /// as a bad request (rule 3.9); nothing is recorded after a cancel (rule 3.6).
    pub fn request(&self, n: u64) {
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

    /// Records `cancel()` (idempotent) and wakes the task.
    pub fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.wake.notify();
        }
    }
}
