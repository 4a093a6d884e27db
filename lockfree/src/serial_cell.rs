use crate::SubscriptionCore;
use crate::loom::UnsafeCell;

/// State that only the owner of a [`SubscriptionCore`]'s serialiser may touch: the emitter of a
/// synchronous source keeps its source and its subscriber here, so that `request`, `cancel` and
/// pokes from any thread run the emission one pass at a time, never two at once (rule 1.3), and a
/// `request` made inside `on_next` is trampolined into the running pass (rule 3.3).
///
/// Every method that may make the caller the owner takes the pass to run; the pass gets the core
/// and exclusive access to the state, once per signal the owner has to cover.
///
/// ```
/// use weir_lockfree::{SerialCell, SubscriptionCore};
/// // A source of numbers: the state is how many it emitted.
/// fn pass(core: &SubscriptionCore, emitted: &mut u64) {
///     let n = core.demand().get();
///     *emitted += n;
///     core.demand().consume(n);
/// }
/// let cell = SerialCell::new(0u64);
/// cell.request(3, pass);
/// cell.request(2, pass);
/// let mut seen = 0;
/// cell.signal(|_, emitted| seen = *emitted);
/// assert_eq!(seen, 5);
/// ```
#[derive(Debug)]
pub struct SerialCell<T> {
    core: SubscriptionCore,
    state: UnsafeCell<T>,
}

// SAFETY: `state` is only reached through `drain`, which `SubscriptionCore`'s serialiser lets one
// thread at a time run (the owner: whoever moved the signal count from zero, until it drops back
// to zero); ownership passes between threads with acquire/release on that count, which orders one
// owner's accesses before the next owner's. So sharing a `SerialCell` is like handing `T` from
// thread to thread: `T: Send` is what it takes.
unsafe impl<T: Send> Sync for SerialCell<T> {}

impl<T> SerialCell<T> {
    /// A cell holding `state`, with a fresh subscription core (no demand, not cancelled).
    pub fn new(state: T) -> Self {
        Self {
            core: SubscriptionCore::new(),
            state: UnsafeCell::new(state),
        }
    }

    /// The demand, cancel and bad-request state.
    #[inline]
    pub fn core(&self) -> &SubscriptionCore {
        &self.core
    }

    /// Records `request(n)` (see [`SubscriptionCore::request`]) and, if that made the caller the
    /// owner, runs `pass` until no signal is left.
    #[inline]
    pub fn request(&self, n: u64, pass: impl FnMut(&SubscriptionCore, &mut T)) {
        if self.core.request(n) {
            self.drain(pass);
        }
    }

    /// Records `cancel()` and, if that made the caller the owner, runs `pass` until no signal is
    /// left (a pass then releases what the state holds).
    #[inline]
    pub fn cancel(&self, pass: impl FnMut(&SubscriptionCore, &mut T)) {
        if self.core.cancel() {
            self.drain(pass);
        }
    }

    /// Asks for one more pass (the source gained items) and, if that made the caller the owner,
    /// runs `pass` until no signal is left.
    #[inline]
    pub fn signal(&self, pass: impl FnMut(&SubscriptionCore, &mut T)) {
        if self.core.signal() {
            self.drain(pass);
        }
    }

    /// For a cell nobody else can reach yet: becomes the owner, runs `first` (e.g. `on_subscribe`,
    /// whose requests are only recorded meanwhile) and a pass, then passes until no signal is left.
    pub fn start(
        &self,
        first: impl FnOnce(&SubscriptionCore, &mut T),
        mut pass: impl FnMut(&SubscriptionCore, &mut T),
    ) {
        let owner = self.core.signal();
        assert!(owner, "SerialCell::start on a cell that others use already");
        let mut first = Some(first);
        self.drain(|core, state| {
            if let Some(first) = first.take() {
                first(core, state);
            }
            pass(core, state);
        });
    }

    /// For the owner: runs `pass` once per signal until none is left, then releases ownership.
    #[inline]
    fn drain(&self, mut pass: impl FnMut(&SubscriptionCore, &mut T)) {
        self.core.drain(|| {
            self.state.with_mut(|state| {
                // SAFETY: only the serialiser's owner runs `drain`'s passes, one at a time (see
                // the `Sync` impl); no other reference to the state exists during a pass.
                pass(&self.core, unsafe { &mut *state })
            })
        });
    }
}
