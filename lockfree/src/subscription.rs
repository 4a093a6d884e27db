use crate::loom::{AtomicBool, Ordering};
use crate::{Demand, Serial};

/// The state one emitting subscription shares between the threads that call `request` / `cancel` and
/// the emitter: outstanding [`Demand`], the [`Serial`] that makes the emitter single-threaded, and the
/// cancel and bad-request flags.
///
/// A method returning `true` means the caller became the emitter and must call
/// [`drain`](SubscriptionCore::drain) with its emission pass. A pass reads the flags, emits at most
/// [`Demand::get`] items, consumes what it emitted and, once cancelled, releases the subscriber.
///
/// ```
/// use weir_lockfree::SubscriptionCore;
/// let core = SubscriptionCore::new();
/// let mut emitted = 0;
/// if core.request(2) {
///     core.drain(|| {
///         let n = core.demand().get();
///         emitted += n;
///         core.demand().consume(n);
///     });
/// }
/// assert_eq!(emitted, 2);
/// ```
#[derive(Debug, Default)]
pub struct SubscriptionCore {
    demand: Demand,
    serial: Serial,
    cancelled: AtomicBool,
    bad_request: AtomicBool,
}

impl SubscriptionCore {
    /// A fresh subscription: no demand, not cancelled.
    #[inline]
    pub fn new() -> Self {
        Self {
            demand: Demand::new(),
            serial: Serial::new(),
            cancelled: AtomicBool::new(false),
            bad_request: AtomicBool::new(false),
        }
    }

    /// Records `request(n)`. `n == 0` is remembered as a bad request (rule 3.9) for the emitter to turn
    /// into an error. Returns `true` if the caller must now [`drain`](SubscriptionCore::drain).
    #[inline]
    pub fn request(&self, n: u64) -> bool {
        if self.is_cancelled() {
            return false; // rule 3.6: a no-op after cancel
        }
        if n == 0 {
            self.bad_request.store(true, Ordering::Release);
        } else {
            self.demand.add(n);
        }
        self.serial.signal()
    }

    /// Records `cancel()` (idempotent, rule 3.5/3.7). Returns `true` if the caller must now
    /// [`drain`](SubscriptionCore::drain) so the emitter can release its resources.
    #[inline]
    pub fn cancel(&self) -> bool {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.serial.signal()
    }

    /// Makes the caller the emitter if nobody is, e.g. when a source gained items to emit.
    #[inline]
    pub fn signal(&self) -> bool {
        self.serial.signal()
    }

    /// For the emitter: runs `pass` until no signal is left.
    #[inline]
    pub fn drain(&self, pass: impl FnMut()) {
        self.serial.drain(pass)
    }

    /// Signals and, if the caller became the emitter, drains with `pass`.
    #[inline]
    pub fn run(&self, pass: impl FnMut()) {
        self.serial.run(pass)
    }

    /// Whether `cancel()` was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// [`is_cancelled`](SubscriptionCore::is_cancelled) for hot emission loops: a relaxed load, which
    /// does not stop the compiler from keeping the loop's state in registers. A cancel is seen soon
    /// enough (rule 3.12 asks for "eventually"); what happens after it is ordered by the serialiser.
    #[inline]
    pub fn is_cancelled_relaxed(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Whether a `request(0)` was seen and not yet reported.
    #[inline]
    pub fn has_bad_request(&self) -> bool {
        self.bad_request.load(Ordering::Acquire)
    }

    /// The outstanding demand.
    #[inline]
    pub fn demand(&self) -> &Demand {
        &self.demand
    }
}
