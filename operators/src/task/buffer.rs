//! `buffer(capacity, overflow)`: an in-stream bounded buffer with the ingress's overflow policies.
//!
//! - [`Overflow::Block`]: inside a stream nobody needs to block: the upstream is simply granted no
//!   more than the buffer can hold, so this is an async boundary of `capacity` (pure backpressure;
//!   the timeout does not apply).
//! - [`Overflow::DropOldest`] / [`Overflow::DropNewest`]: the upstream is asked for everything and
//!   items that do not fit are dropped by the policy, each counted by reason in the buffer's
//!   metrics: for sources that cannot slow down and telemetry where freshness beats completeness.
//! - [`Overflow::Reject`]: an overflow fails the stream (after the buffered items) with an error
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
//! The dropping and rejecting policies run in the upstream's task (the buffer is an ingress fed by
//! a subscriber); put a boundary after it when the downstream is slow and should run elsewhere.

use std::sync::Arc;

use std::time::Duration;
use weir_runtime::boundary::{Boundary, BoundaryConfig, boundary};

use futures::StreamExt;
use weir_runtime::ingress::{
    IngressConfig, IngressHandle, IngressPublisher, Overflow, PushError, SpillFull, SpillStore,
    ingress, ingress_spilling,
};
use weir_runtime::metrics::BoundaryMetrics;
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
        handle: IngressHandle<T>,
        output: IngressPublisher<T>,
        name: Arc<str>,
    },
    Shedding {
        upstream: P,
        handle: IngressHandle<T>,
        output: IngressPublisher<T>,
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
    pub fn metrics(&self) -> Option<Arc<BoundaryMetrics>> {
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
    pub(crate) fn new(upstream: P, name: &str, capacity: usize, overflow: Overflow) -> Self {
        let inner = match overflow {
            Overflow::Block { .. } => BoundaryConfig::new(name, capacity)
                .map(|config| Inner::Blocking(boundary(upstream, config))),
            _ => IngressConfig::new(name, capacity, overflow).map(|config| {
                let (handle, output) = ingress::<T>(config);
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
        let full = SpillFull::Block {
            timeout: Duration::MAX,
        };
        let inner = ingress_spilling(name, store, full).map(|(handle, output)| Inner::Spilling {
            upstream,
            handle,
            output,
            name: name.into(),
        });
        Self { inner }
    }
}

/// Items the feeding task reads ahead from the upstream of a spilling buffer.
const FEED_PREFETCH: usize = 256;

/// Moves the upstream's items into a spilling ingress, waiting while its disk budget is full: the
/// task stops reading, so the upstream stops being asked for more.
async fn feed<T, P>(upstream: P, handle: IngressHandle<T>, name: Arc<str>)
where
    T: Send + 'static,
    P: Publisher<T>,
{
    let mut items = into_stream_named(upstream, FEED_PREFETCH, &name);
    while let Some(next) = items.next().await {
        let item = match next {
            Ok(item) => item,
            Err(error) => {
                handle.fail(error);
                return;
            }
        };
        // Accepted at once while there is room (memory or disk); otherwise waits for room, as
        // long as it takes (backpressure: nothing is counted as rejected).
        match handle.push_waiting(item).await {
            Ok(_) => {}
            Err(PushError::Failed { error, .. }) => {
                handle.fail(error);
                return;
            }
            // Closed: the downstream went away; dropping `items` cancels the upstream.
            Err(_) => return,
        }
    }
    handle.close();
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
                    output.subscribe(subscriber);
                    // A panic while feeding (in a hand-written upstream the task drives) fails
                    // the buffer's stream: it must not end as if it had completed.
                    let failing = handle.clone();
                    let feeding = feed(upstream, handle, name.clone());
                    spawn_guarded(&runtime, name, feeding, move |error| failing.fail(error));
                }
                Err(error) => reject(subscriber, error),
            },
            Ok(Inner::Shedding {
                upstream,
                handle,
                output,
                name,
                capacity,
            }) => {
                output.subscribe(subscriber);
                upstream.subscribe(Feeder {
                    handle,
                    upstream: None,
                    name,
                    capacity,
                });
            }
        }
    }
}

/// Feeds the buffer: asks the upstream for everything and pushes without waiting.
struct Feeder<T> {
    handle: IngressHandle<T>,
    upstream: Option<Subscription>,
    name: Arc<str>,
    capacity: usize,
}

impl<T: Send + 'static> Subscriber<T> for Feeder<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.upstream.is_some() || self.handle.is_closed() {
            subscription.cancel();
            return;
        }
        subscription.request(u64::MAX);
        self.upstream = Some(subscription);
    }

    fn on_next(&mut self, item: T) {
        match self.handle.try_push(item) {
            Ok(_) | Err(PushError::Dropped { .. }) => {} // drops are counted by the ingress
            Err(PushError::Rejected { .. }) => {
                if let Some(upstream) = self.upstream.take() {
                    upstream.cancel();
                }
                let error = Error::msg(format!(
                    "buffer overflowed: more than {} items waiting",
                    self.capacity
                ))
                .in_stage(self.name.clone());
                self.handle.fail(error);
            }
            Err(PushError::Failed { error, .. }) => {
                if let Some(upstream) = self.upstream.take() {
                    upstream.cancel();
                }
                self.handle.fail(error);
            }
            Err(_closed) => {
                // The downstream went away: stop the upstream.
                if let Some(upstream) = self.upstream.take() {
                    upstream.cancel();
                }
            }
        }
    }

    fn on_error(&mut self, error: Error) {
        self.upstream = None;
        self.handle.fail(error);
    }

    fn on_complete(&mut self) {
        self.upstream = None;
        self.handle.close();
    }
}
