//! `buffer(capacity, when_full)`: an in-stream bounded buffer with a [queue](weir_runtime::queue)'s
//! policies.
//!
//! - [`WhenFull::Wait`]: the upstream is simply granted no more than the buffer can hold, so this
//!   is an async boundary of `capacity` (pure backpressure).
//! - [`WhenFull::DropOldest`] / [`WhenFull::DropNewest`]: the upstream is asked for everything and
//!   items that do not fit are dropped by the policy, each counted by reason in the buffer's
//!   metrics: for sources that cannot slow down and telemetry where freshness beats completeness.
//! - [`WhenFull::Refuse`]: an overflow fails the stream (after the buffered items) with an error
//!   naming the buffer; the upstream is cancelled. For streams where loss is not acceptable and
//!   overflow is a bug to surface.
//!
//! - Spilling ([`PublisherExt::buffer_spilling`](crate::PublisherExt::buffer_spilling)): what does
//!   not fit in memory goes to a spill store (the durable log) and comes back in FIFO order; the
//!   upstream is not slowed while the disk budget lasts. When it is full, the upstream is paused
//!   (nothing more is requested) until the downstream has taken enough to make room: backpressure,
//!   never a failure. The upstream runs in a task of its own (like a boundary's), so a subscriber
//!   needs a tokio runtime; a disk error fails the stream, naming the buffer.
//!
//! Under the dropping and rejecting policies a pump task keeps the upstream asked for items a
//! chunk at a time (so `subscribe` returns at once, also over an endless synchronous source); the
//! items are pushed where the upstream emits them. Put a boundary after the buffer when the
//! downstream is slow and should run elsewhere. Every policy needs a tokio runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::Notify;
use weir_runtime::boundary::{Boundary, BoundaryConfig, boundary};
use weir_runtime::ledger::Tally;
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::queue::{
    self, QueueCloser, QueueHandle, QueuePublisher, Refused, SpillStore, WhenFull, WhenStoreFull,
};
use weir_runtime::sink::IntoStream;
use weir_runtime::sink::into_stream_named;
use weir_runtime::{Error, Publisher, Subscriber, Subscription, reject};

use super::{runtime, spawn_guarded};

/// See [`PublisherExt::buffer`](crate::PublisherExt::buffer).
pub struct Buffer<P, T> {
    inner: Result<Inner<P, T>, Error>,
}

enum Inner<P, T> {
    Blocking(Boundary<P>),
    Spilling {
        upstream: P,
        handle: QueueHandle<T>,
        output: QueuePublisher<T>,
        name: Arc<str>,
    },
    Shedding {
        upstream: P,
        handle: QueueHandle<T>,
        output: QueuePublisher<T>,
        name: Arc<str>,
        capacity: usize,
    },
}

impl<P, T> std::fmt::Debug for Buffer<P, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("metrics", &self.metrics().map(|m| m.snapshot()))
            .finish()
    }
}

impl<P, T> Buffer<P, T> {
    /// The buffer's live counters (depth, drops by reason...), once it is built; `None` if its
    /// configuration was refused (the subscription then fails with the reason).
    pub fn metrics(&self) -> Option<Arc<BufferMetrics>> {
        match &self.inner {
            Ok(Inner::Blocking(hop)) => Some(hop.metrics()),
            Ok(Inner::Shedding { output, .. } | Inner::Spilling { output, .. }) => {
                Some(output.metrics())
            }
            Err(_) => None,
        }
    }
}

impl<P, T: Send + 'static> Buffer<P, T> {
    pub(crate) fn new(upstream: P, name: &str, capacity: usize, when_full: WhenFull) -> Self {
        let inner = match when_full {
            WhenFull::Wait => BoundaryConfig::new(name, capacity)
                .map(|config| Inner::Blocking(boundary(upstream, config))),
            _ => queue::bounded::<T>(name, capacity, when_full).map(|(handle, output)| {
                Inner::Shedding {
                    upstream,
                    handle,
                    output,
                    name: name.into(),
                    capacity,
                }
            }),
        };
        Self { inner }
    }

    pub(crate) fn spilling(upstream: P, name: &str, store: impl SpillStore<T> + 'static) -> Self {
        // The feeding task waits for room while the budget is full (see `feed`).
        let inner = queue::spilling(name, store, WhenStoreFull::Wait).map(|(handle, output)| {
            Inner::Spilling {
                upstream,
                handle,
                output,
                name: name.into(),
            }
        });
        Self { inner }
    }
}

/// Items the feeding task of a spilling buffer whose memory part holds `memory_capacity` items
/// reads ahead from its upstream (held in memory besides the memory part: a pipeline's inventory
/// counts them): as many as the memory part, at most 256.
pub fn spill_read_ahead(memory_capacity: usize) -> usize {
    memory_capacity.clamp(1, 256)
}

/// Moves the upstream's items (read ahead through `items`) into a spilling ingress, waiting while
/// its disk budget is full: the task stops reading, so the upstream stops being asked for more.
/// The item it waits with is held in `feeding`'s account; one the ingress refuses is counted there
/// (closed, spill failure) as its caller's.
async fn feed<T: Send + 'static>(
    mut items: IntoStream<T>,
    handle: QueueHandle<T>,
    feeding: Arc<Tally>,
) {
    // The downstream went away while the upstream is quiet: returning drops `items`, which
    // cancels the upstream.
    let closer = handle.closer();
    let mut gone = std::pin::pin!(closer.closed());
    loop {
        let next = tokio::select! {
            biased;
            next = items.next() => next,
            () = &mut gone => return,
        };
        let Some(next) = next else { break };
        let item = match next {
            Ok(item) => item,
            Err(error) => {
                handle.fail(error);
                return;
            }
        };
        // Accepted at once while there is room (memory or disk); otherwise waits for room, as
        // long as it takes (backpressure: nothing is counted as rejected).
        // Held while the push waits; a task dropped meanwhile (its runtime shut down) lets go
        // of it: the queue counts the item that went with the push (abandoned).
        let holding = Holding::take(&feeding);
        let pushed = handle.push(item).await;
        drop(holding);
        match pushed {
            Ok(_) => {}
            Err(Refused::Failed(_, error)) => {
                handle.fail(error);
                return;
            }
            // Closed: the downstream went away; dropping `items` cancels the upstream.
            Err(_) => return,
        }
    }
    handle.close();
}

/// One item held in an account while it is pushed; let go of when dropped.
struct Holding<'a>(&'a Tally);

impl<'a> Holding<'a> {
    fn take(account: &'a Tally) -> Self {
        account.hold(1);
        Self(account)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.release_up_to(1);
    }
}

impl<T, P> Publisher<T> for Buffer<P, T>
where
    P: Publisher<T>,
    T: Send + 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        match self.inner {
            Err(error) => reject(subscriber, error),
            Ok(Inner::Blocking(hop)) => hop.subscribe(subscriber),
            Ok(Inner::Spilling {
                upstream,
                handle,
                output,
                name,
            }) => match runtime(&name) {
                Ok(runtime) => {
                    let read_ahead =
                        spill_read_ahead(output.metrics().snapshot().capacity as usize);
                    output.subscribe(subscriber);
                    // The read-ahead lane is made here, so that it is counted where the buffer
                    // is subscribed; the task only reads it.
                    let items = into_stream_named(upstream, read_ahead, &name);
                    let feeding = Tally::new(format!("{name}.feed"));
                    // A panic while feeding (in a hand-written upstream the task drives) fails
                    // the buffer's stream: it must not end as if it had completed.
                    let failing = handle.clone();
                    let task = feed(items, handle, feeding);
                    spawn_guarded(&runtime, name, task, move |error| failing.fail(error));
                }
                Err(error) => reject(subscriber, error),
            },
            Ok(Inner::Shedding {
                upstream,
                handle,
                output,
                name,
                capacity,
            }) => match runtime(&name) {
                Ok(runtime) => {
                    output.subscribe(subscriber);
                    let pump = Arc::new(Pump::default());
                    // A panic while pumping (in a hand-written upstream the pump's `request`
                    // drives) fails the buffer's stream, as for the spilling buffer above.
                    let failing = handle.clone();
                    upstream.subscribe(Feeder {
                        handle,
                        upstream: None,
                        name: name.clone(),
                        capacity,
                        pump: pump.clone(),
                    });
                    let done = pump.clone();
                    let closer = failing.closer();
                    spawn_guarded(&runtime, name, pump.run(closer), move |error| {
                        failing.fail(error);
                        done.finish();
                    });
                }
                Err(error) => reject(subscriber, error),
            },
        }
    }
}

/// Items the pump asks a shedding buffer's upstream for at a time.
const PUMP_CHUNK: u64 = 1024;

/// Keeps a shedding buffer's upstream asked for items, a chunk at a time, from a task of its own:
/// the upstream is never slowed (what does not fit is shed), yet `subscribe` returns at once and a
/// synchronous upstream emits a chunk per request, not forever inside one call.
#[derive(Default)]
struct Pump {
    upstream: std::sync::Mutex<Option<Subscription>>,
    /// Items the feeder received so far.
    received: AtomicU64,
    /// The feeder stopped (the upstream ended, failed or was cancelled).
    done: AtomicBool,
    more: Notify,
}

impl Pump {
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.more.notify_one();
    }

    fn received(&self) {
        let received = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if received.is_multiple_of(PUMP_CHUNK / 2) {
            self.more.notify_one();
        }
    }

    /// Requests a chunk whenever half of what was asked for has arrived, yielding in between;
    /// cancels the upstream once the buffer's queue closed (its downstream gone), also while the
    /// upstream is quiet (the feeder would only find out at its next item).
    async fn run<T>(self: Arc<Self>, queue: QueueCloser<T>) {
        let mut requested = 0u64;
        let mut gone = std::pin::pin!(queue.closed());
        loop {
            let wake = self.more.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            let upstream = self
                .upstream
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match upstream {
                Some(upstream)
                    if requested.saturating_sub(self.received.load(Ordering::Acquire))
                        <= PUMP_CHUNK / 2 =>
                {
                    requested += PUMP_CHUNK;
                    upstream.request(PUMP_CHUNK);
                    tokio::task::yield_now().await;
                }
                _ => {
                    tokio::select! {
                        biased;
                        () = wake => {}
                        () = &mut gone => {
                            let upstream = self.upstream.lock().unwrap_or_else(|p| p.into_inner()).take();
                            if let Some(upstream) = upstream {
                                upstream.cancel();
                            }
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Feeds a shedding buffer: pushes without waiting what the pump asked the upstream for.
struct Feeder<T> {
    handle: QueueHandle<T>,
    upstream: Option<Subscription>,
    name: Arc<str>,
    capacity: usize,
    pump: Arc<Pump>,
}

impl<T> Feeder<T> {
    fn stop(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            upstream.cancel();
        }
        *self.pump.upstream.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.pump.finish();
    }
}

impl<T> Drop for Feeder<T> {
    fn drop(&mut self) {
        self.pump.finish();
    }
}

impl<T: Send + 'static> Subscriber<T> for Feeder<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.upstream.is_some() || self.handle.is_closed() {
            subscription.cancel();
            return;
        }
        self.upstream = Some(subscription.clone());
        *self.pump.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some(subscription);
        self.pump.more.notify_one();
    }

    fn on_next(&mut self, item: T) {
        self.pump.received();
        // Every refusal is counted by the ingress (dropped, rejected, closed).
        match self.handle.try_push(item) {
            Ok(_) | Err(Refused::Dropped(_)) => {}
            Err(Refused::Full(_)) => {
                self.stop();
                let error = Error::msg(format!(
                    "buffer overflowed: more than {} items waiting",
                    self.capacity
                ))
                .in_stage(self.name.clone());
                self.handle.fail(error);
            }
            Err(Refused::Failed(_, error)) => {
                self.stop();
                self.handle.fail(error);
            }
            // The downstream went away: stop the upstream.
            Err(_closed) => self.stop(),
        }
    }

    fn on_error(&mut self, error: Error) {
        self.upstream = None;
        self.pump.finish();
        self.handle.fail(error);
    }

    fn on_complete(&mut self) {
        self.upstream = None;
        self.pump.finish();
        self.handle.close();
    }
}
