//! The ledger account of stages that run a call per item (a future in `map_async`, an inner
//! publisher in `flat_map`): items taken from their input and in flight are held; a call that
//! panics or fails counts its item as failed; when the stage is dropped (cancelled, aborted) the
//! items still in flight are counted as `cancelled_in_flight`, never lost.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use weir_runtime::Error;
use weir_runtime::ledger::{self, Account, Entry, Reason};

/// Counters of one stage's calls.
#[derive(Debug)]
pub(crate) struct Calls {
    name: &'static str,
    /// Items taken from the input into a call.
    taken: AtomicU64,
    /// Calls whose items left: their result emitted (map), their inner stream done (flat_map).
    finished: AtomicU64,
    failed: AtomicU64,
    /// Calls dropped in flight.
    dropped: AtomicU64,
    /// Items made by calls (a flat_map's inner items, emitted).
    made: AtomicU64,
    /// Each call turns its item into others (flat_map): a finished call consumed its item.
    reshapes: bool,
}

impl Calls {
    /// A fresh account, registered with the current ledger scope; `reshapes` when each call turns
    /// its item into others.
    pub(crate) fn new(name: &'static str, reshapes: bool) -> Arc<Self> {
        let calls = Arc::new(Self {
            name,
            taken: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            made: AtomicU64::new(0),
            reshapes,
        });
        ledger::register(calls.clone());
        calls
    }

    pub(crate) fn taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn made(&self) {
        self.made.fetch_add(1, Ordering::Relaxed);
    }

    fn in_flight(&self) -> u64 {
        let left = self.finished.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed);
        self.taken.load(Ordering::Relaxed).saturating_sub(left)
    }

    /// A guard to keep in the stage's stream: dropping it counts what is still in flight.
    pub(crate) fn guard(self: &Arc<Self>) -> InFlight {
        InFlight(self.clone())
    }
}

impl Account for Calls {
    fn name(&self) -> &str {
        self.name
    }

    fn entry(&self) -> Entry {
        let mut entry = Entry {
            held: self.in_flight(),
            made: self.made.load(Ordering::Relaxed),
            ..Default::default()
        };
        entry.exits[Reason::Failed] = self.failed.load(Ordering::Relaxed);
        entry.exits[Reason::CancelledInFlight] = self.dropped.load(Ordering::Relaxed);
        // A reshaping call's finished item was consumed into the items it made; a mapping call's
        // finished item left as its result.
        if self.reshapes {
            entry.consumed = self.finished.load(Ordering::Relaxed);
        }
        entry
    }
}

/// Dropped with a stage's stream: whatever was taken and is neither finished nor failed was in
/// flight, and is counted as `cancelled_in_flight`.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Calls>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.0.in_flight();
        if left > 0 {
            self.0.dropped.fetch_add(left, Ordering::Relaxed);
            tracing::debug!(stage = self.0.name, left, "calls dropped in flight");
        }
    }
}

/// An inner stream of a `flat_map` call: counts the items it makes, and its call as finished when
/// it ends or failed when it fails.
pub(crate) struct InnerCall<S> {
    pub(crate) stream: S,
    pub(crate) calls: Arc<Calls>,
    pub(crate) over: bool,
}

impl<S, U> Stream for InnerCall<S>
where
    S: Stream<Item = Result<U, Error>> + Unpin,
{
    type Item = Result<U, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.over {
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut self.stream).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(_))) => self.calls.made(),
            Poll::Ready(Some(Err(_))) => {
                self.over = true;
                self.calls.failed();
            }
            Poll::Ready(None) => {
                self.over = true;
                self.calls.finished();
            }
            Poll::Pending => {}
        }
        next
    }
}
