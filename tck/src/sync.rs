//! Small blocking helpers shared by the test doubles.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Locks `mutex`, ignoring poisoning: a panic in the code under test must not hide what the test
/// doubles recorded.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `changed` until `check` returns `Some` or `timeout` passes (then `None`).
pub(crate) fn wait_until<S, R>(
    mutex: &Mutex<S>,
    changed: &Condvar,
    timeout: Duration,
    mut check: impl FnMut(&mut S) -> Option<R>,
) -> Option<R> {
    let deadline = Instant::now() + timeout;
    let mut state = lock(mutex);
    loop {
        if let Some(result) = check(&mut state) {
            return Some(result);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        state = changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}
