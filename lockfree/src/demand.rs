use crate::loom::{AtomicU64, Ordering};

/// Outstanding demand of one subscription (Reactive Streams rules 3.8 and 3.17).
///
/// Requests add up; the sum saturates at `u64::MAX`, which means "unbounded" and is never consumed.
/// Any thread may [`add`](Demand::add); only the emitter (the single holder of the [`Serial`](crate::Serial)
/// or the producer of a boundary) calls [`consume`](Demand::consume).
///
/// ```
/// use weir_lockfree::Demand;
/// let demand = Demand::new();
/// demand.add(3);
/// assert_eq!(demand.consume(2), 1);
/// demand.add(u64::MAX - 1);
/// assert_eq!(demand.get(), u64::MAX); // saturated: unbounded
/// assert_eq!(demand.consume(1_000), u64::MAX);
/// ```
#[derive(Debug, Default)]
pub struct Demand {
    value: AtomicU64,
}

impl Demand {
    /// The saturated value: the subscriber asked for everything.
    pub const UNBOUNDED: u64 = u64::MAX;

    /// No demand yet.
    #[inline]
    pub fn new() -> Self {
        Self {
            value: AtomicU64::new(0),
        }
    }

    /// Adds `n` (saturating) and returns the demand *before* the addition, so the caller can tell a
    /// transition from zero.
    #[inline]
    pub fn add(&self, n: u64) -> u64 {
        let mut current = self.value.load(Ordering::Relaxed);
        loop {
            if current == Self::UNBOUNDED {
                return current;
            }
            let next = current.saturating_add(n);
            match self.value.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(previous) => return previous,
                Err(actual) => current = actual,
            }
        }
    }

    /// The current outstanding demand.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Takes `n` units that were just used up by emitted items and returns what remains. Unbounded
    /// demand stays unbounded. `n` must not exceed the demand the caller observed.
    #[inline]
    pub fn consume(&self, n: u64) -> u64 {
        if n == 0 {
            return self.get();
        }
        let mut current = self.value.load(Ordering::Relaxed);
        loop {
            if current == Self::UNBOUNDED {
                return current;
            }
            debug_assert!(n <= current, "consumed more demand than was granted");
            let next = current.saturating_sub(n);
            match self.value.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }
}
