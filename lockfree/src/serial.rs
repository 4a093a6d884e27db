use crate::loom::{AtomicUsize, Ordering};

/// Serialises work that many threads may ask for: the "work in progress" counter of Reactor's drain
/// loops.
///
/// Whoever moves the counter from zero owns the work and runs passes until no signal is left; a signal
/// that arrives while a pass runs only bumps the counter and returns, so the owner runs one more pass.
/// This is how `request(n)` called from inside `on_next` is trampolined instead of recursing (rule 3.3),
/// and how signals to one subscriber are never concurrent (rule 1.3).
///
/// ```
/// use weir_lockfree::Serial;
/// let serial = Serial::new();
/// let mut passes = 0;
/// serial.run(|| passes += 1);
/// assert_eq!(passes, 1);
/// ```
#[derive(Debug, Default)]
pub struct Serial {
    wip: AtomicUsize,
}

impl Serial {
    /// Nobody owns the work.
    #[inline]
    pub fn new() -> Self {
        Self {
            wip: AtomicUsize::new(0),
        }
    }

    /// Signals that work is wanted. Returns `true` if the caller now owns the work and must run passes
    /// with [`finish_pass`](Serial::finish_pass) until it returns 0.
    #[inline]
    pub fn signal(&self) -> bool {
        self.wip.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// Called by the owner after a pass that covered `covered` signals (1 for the first pass, then what
    /// the previous call returned). Returns how many signals arrived meanwhile: 0 means ownership is
    /// released.
    #[inline]
    pub fn finish_pass(&self, covered: usize) -> usize {
        self.wip.fetch_sub(covered, Ordering::AcqRel) - covered
    }

    /// Signals, and if that made the caller the owner, runs `pass` until no signal is left.
    #[inline]
    pub fn run(&self, pass: impl FnMut()) {
        if self.signal() {
            self.drain(pass);
        }
    }

    /// For the owner (after [`signal`](Serial::signal) returned `true`): runs `pass` until no signal is
    /// left, then releases ownership.
    #[inline]
    pub fn drain(&self, mut pass: impl FnMut()) {
        let mut covered = 1;
        loop {
            pass();
            covered = self.finish_pass(covered);
            if covered == 0 {
                return;
            }
        }
    }
}
