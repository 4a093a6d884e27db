//! The one place concurrent code in weir takes its atomics, cells and wakers from: `std` (and the
//! `atomic-waker` crate) in normal builds, `loom` when the crate is compiled with `--cfg loom` for the
//! models. Only this crate is ever built with that cfg: it has no tokio dependency, because tokio compiles
//! `tokio::net` out under `cfg(loom)` and the crates that need it would not build (ARCHITECTURE.md).

#[cfg(loom)]
pub(crate) use loom::{
    sync::Arc,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;
#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

/// `UnsafeCell` with loom's closure-based API, so code reads the same in both builds.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `UnsafeCell` with loom's closure-based API, so code reads the same in both builds.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// loom's `AtomicWaker` with the `register(&Waker)` signature of the `atomic-waker` crate.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker)
    }

    pub(crate) fn wake(&self) {
        self.0.wake()
    }
}
