use std::task::Context;

use crate::loom::{AtomicBool, AtomicWaker, Ordering};

/// A one-task wake-up that fires on transitions only.
///
/// The waiting side calls [`prepare`](WakeSlot::prepare) and then re-checks its condition; the
/// notifying side changes the state the condition reads and then calls [`notify`](WakeSlot::notify).
/// Both sides touch the `waiting` word with a read-modify-write, so either the waiter's re-check sees
/// the change or the notifier sees the waiter: no lost wake-up, and no wake when nobody waits.
///
/// ```
/// use std::task::{Context, Waker};
/// use weir_lockfree::WakeSlot;
/// let slot = WakeSlot::new();
/// let mut cx = Context::from_waker(Waker::noop());
/// slot.prepare(&mut cx);
/// assert!(slot.notify()); // somebody was waiting
/// assert!(!slot.notify()); // nobody is waiting any more
/// ```
#[derive(Debug)]
pub struct WakeSlot {
    waiting: AtomicBool,
    waker: AtomicWaker,
}

impl Default for WakeSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl WakeSlot {
    /// Nobody waiting.
    #[inline]
    pub fn new() -> Self {
        Self {
            waiting: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Registers the task and marks it waiting. Re-check the condition afterwards; if it already holds,
    /// call [`clear`](WakeSlot::clear) and go on instead of returning `Pending`. Returns whether this
    /// started a wait (the task was not marked waiting already).
    #[inline]
    pub fn prepare(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        !self.waiting.swap(true, Ordering::AcqRel)
    }

    /// Whether a task is marked waiting: a hint for the notifying side (one plain load), which must
    /// still [`notify`](WakeSlot::notify) after every change the waiter needs to see.
    #[inline]
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Withdraws a [`prepare`](WakeSlot::prepare) whose condition turned out to hold.
    #[inline]
    pub fn clear(&self) {
        self.waiting.swap(false, Ordering::AcqRel);
    }

    /// Wakes the task if it was waiting; returns whether it was.
    #[inline]
    pub fn notify(&self) -> bool {
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.waker.wake();
            true
        } else {
            false
        }
    }
}
