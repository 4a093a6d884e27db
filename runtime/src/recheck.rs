//! A second look for ring consumers that start waiting while their producer may still be making an
//! item visible.
//!
//! The credit ring (`weir_lockfree::ring`) hands items over without a fence per item, so one race is
//! left open by design: a consumer starts waiting at the very moment its producer stores its last
//! write and looks at the consumer's waiting word. Each may miss the other; if the producer then
//! pauses for good (a plain Reactive Streams publisher never says it paused), the item would sit in
//! the ring. The consumer learns when it *started* a wait
//! ([`Consumer::take_fresh_wait`](weir_lockfree::ring::Consumer::take_fresh_wait)) and asks for a
//! [`Recheck`]: one process-wide thread wakes it once, [`RECHECK_AFTER`] later, when the producer's
//! store is long visible, and the consumer's next poll finds the item.
//!
//! Costs: nothing per item; per started wait, a waker registration; at most one wake-up per
//! consumer per [`RECHECK_AFTER`] while busy, and one after it goes idle. The thread sleeps on a
//! condition variable while nobody asked. It is a thread rather than a tokio timer so that a
//! boundary works on any runtime, with or without the time driver, and in paused-clock tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Waker};
use std::time::Duration;

/// How long after a started wait the consumer looks again.
pub(crate) const RECHECK_AFTER: Duration = Duration::from_millis(1);

/// One consumer's registration.
#[derive(Debug, Default)]
struct Slot {
    /// In the thread's list (registered once until woken).
    armed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A consumer's handle on the recheck thread: call [`Recheck::after_wait_started`] when a poll
/// returned `Pending` and the wait was a fresh one.
#[derive(Debug, Default)]
pub(crate) struct Recheck {
    slot: Arc<Slot>,
}

impl Recheck {
    /// A handle with nothing scheduled.
    /// Wakes the task of `cx` once, [`RECHECK_AFTER`] from now (or from an earlier request that is
    /// still due).
    pub(crate) fn after_wait_started(&self, cx: &mut Context<'_>) {
        {
            let mut waker = lock(&self.slot.waker);
            match waker.as_ref() {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        if !self.slot.armed.swap(true, Ordering::AcqRel) {
            thread().schedule(self.slot.clone());
        }
    }
}

/// The process-wide recheck thread and its list.
struct Thread {
    due: Mutex<Vec<Arc<Slot>>>,
    wanted: Condvar,
}

fn thread() -> &'static Thread {
    static THREAD: OnceLock<&'static Thread> = OnceLock::new();
    THREAD.get_or_init(|| {
        let thread: &'static Thread = Box::leak(Box::new(Thread {
            due: Mutex::new(Vec::new()),
            wanted: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("weir-recheck".into())
            .spawn(move || thread.run())
            .expect("the weir-recheck thread could not be started");
        thread
    })
}

impl Thread {
    fn schedule(&self, slot: Arc<Slot>) {
        let mut due = lock(&self.due);
        due.push(slot);
        if due.len() == 1 {
            self.wanted.notify_one();
        }
    }

    /// Takes what is due, waits [`RECHECK_AFTER`], wakes it: every consumer is woken at least that
    /// long after it asked (one asking meanwhile waits for the next round).
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut due = lock(&self.due);
                while due.is_empty() {
                    due = self
                        .wanted
                        .wait(due)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                std::mem::swap(&mut batch, &mut *due);
            }
            std::thread::sleep(RECHECK_AFTER);
            for slot in batch.drain(..) {
                // Disarmed first: a wait that starts after this wake schedules a new look.
                slot.armed.store(false, Ordering::Release);
                if let Some(waker) = lock(&slot.waker).take() {
                    waker.wake();
                }
            }
        }
    }
}
