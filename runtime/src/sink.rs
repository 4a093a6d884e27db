//! Sinks: subscribers that end a stream, and the way back to `futures::Stream`.
//!
//! [`fold`], [`for_each`] and [`collect`] run their closure inside `on_next`, so they request unbounded
//! demand (nothing is buffered: the work happens as items arrive) and resolve when the stream ends.
//! The closure may return `()` or a `Result` ([`SinkResult`]): an error, like a panic, cancels the
//! upstream and resolves to that error ([`ErrorKind::Panicked`](crate::ErrorKind::Panicked) for a
//! panic), and the closure is never called again. With a [`Tally`] ([`Fold::counted`]), the item
//! that failed is counted as [`Reason::Failed`] and items that still arrive after it as
//! [`Reason::Cancelled`]. [`into_stream`] buffers at most `prefetch` items and requests more only
//! as the stream is polled.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::oneshot;

use crate::lane::{Lane, LaneEvent, lane};
use crate::ledger::{Reason, Tally, TallyWriter};
use crate::metrics::BufferMetrics;
use crate::protocol::Burst;
use crate::{Error, Publisher, Subscriber, Subscription};

/// What a sink's closure returns: `()` (it cannot fail) or `Result<(), E>` (an `Err` fails the
/// stream with `E` as the error's source).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{sink, source};
/// let failed = sink::for_each(source::from_iter(1..=3u32), |x| {
///     if x == 2 { Err(format!("cannot store {x}")) } else { Ok(()) }
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(failed.to_string(), "cannot store 2");
/// # }
/// ```
pub trait SinkResult: Send + 'static {
    /// `Ok` if the item was handled.
    fn into_result(self) -> Result<(), Error>;
}

impl SinkResult for () {
    #[inline]
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E> SinkResult for Result<(), E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    #[inline]
    fn into_result(self) -> Result<(), Error> {
        self.map_err(|error| Error::from_boxed(error.into()))
    }
}

/// Folds every item into `init` with `f`, resolving to the final value when the stream completes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{sink, source};
/// let sum = sink::fold(source::from_iter(1..=10u64), 0, |sum, x| *sum += x).await.unwrap();
/// assert_eq!(sum, 55);
/// # }
/// ```
pub async fn fold<T, P, A, F, R>(publisher: P, init: A, f: F) -> Result<A, Error>
where
    P: Publisher<T>,
    A: Send + 'static,
    F: FnMut(&mut A, T) -> R + Send + 'static,
    R: SinkResult,
{
    let (subscriber, outcome) = Fold::new(init, f);
    publisher.subscribe(subscriber);
    outcome.await
}

/// Runs `f` on every item, resolving when the stream ends.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{sink, source};
/// sink::for_each(source::from_iter(["a", "b"]), |item| println!("{item}")).await.unwrap();
/// # }
/// ```
pub async fn for_each<T, P, F, R>(publisher: P, mut f: F) -> Result<(), Error>
where
    P: Publisher<T>,
    F: FnMut(T) -> R + Send + 'static,
    R: SinkResult,
{
    fold(publisher, (), move |(), item| f(item)).await
}

/// Collects every item into a `Vec`.
pub async fn collect<T, P>(publisher: P) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    fold(publisher, Vec::new(), |items, item| items.push(item)).await
}

/// The subscriber behind [`fold`], [`for_each`] and [`collect`], for when you subscribe by hand: it
/// requests unbounded demand, folds every item with `f`, and resolves its [`FoldOutcome`] when the
/// stream ends.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{Publisher, sink::Fold, source};
/// let (subscriber, outcome) = Fold::new(0u64, |sum: &mut u64, x: u64| *sum += x);
/// source::from_iter(1..=3u64).subscribe(subscriber);
/// assert_eq!(outcome.await.unwrap(), 6);
/// # }
/// ```
pub struct Fold<A, F> {
    /// The accumulator and the closure; `None` once the fold finished or failed: the closure is
    /// never called again (and is dropped then).
    state: Option<(A, F)>,
    subscription: Option<Subscription>,
    done: Option<oneshot::Sender<Result<A, Error>>>,
    tally: Option<TallyWriter>,
}

impl<A, F> std::fmt::Debug for Fold<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fold")
            .field("subscribed", &self.subscription.is_some())
            .field("done", &self.done.is_none())
            .finish()
    }
}

/// Resolves to the folded value when the stream completes, or to its error.
#[derive(Debug)]
pub struct FoldOutcome<A>(oneshot::Receiver<Result<A, Error>>);

impl<A> std::future::Future for FoldOutcome<A> {
    type Output = Result<A, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|received| {
            received.unwrap_or_else(|_| {
                Err(Error::msg(
                    "the publisher dropped its subscriber without a terminal signal",
                ))
            })
        })
    }
}

impl<A, F> Fold<A, F> {
    /// A subscriber that folds into `init` with `f`, and the outcome to await.
    pub fn new(init: A, f: F) -> (Self, FoldOutcome<A>) {
        let (done, outcome) = oneshot::channel();
        (
            Self {
                state: Some((init, f)),
                subscription: None,
                done: Some(done),
                tally: None,
            },
            FoldOutcome(outcome),
        )
    }

    /// Counts into `tally` the items handled ([`Entry::delivered`](crate::ledger::Entry)), the item
    /// whose handling failed ([`Reason::Failed`]) and the items that arrive after that, which the
    /// closure never sees ([`Reason::Cancelled`]).
    pub fn counted(mut self, tally: &Arc<Tally>) -> Self {
        self.tally = Some(tally.writer());
        self
    }

    fn count(&mut self, reason: Reason) {
        if let Some(tally) = &mut self.tally {
            tally.add(reason, 1);
        }
    }

    /// The closure failed on an item: stop calling it, cancel the upstream, resolve with `error`.
    #[cold]
    fn fail(&mut self, error: Error) {
        self.count(Reason::Failed);
        self.state = None;
        if let Some(subscription) = &self.subscription {
            subscription.cancel();
        }
        self.finish(Err(error));
    }

    fn finish(&mut self, result: Result<(), Error>) {
        self.subscription = None;
        if let Some(done) = self.done.take() {
            let result = result.and_then(|()| {
                self.state
                    .take()
                    .map(|(acc, _)| acc)
                    .ok_or_else(|| Error::msg("fold finished twice"))
            });
            let _ = done.send(result);
        }
    }
}

impl<T, A, F, R> Subscriber<T> for Fold<A, F>
where
    A: Send + 'static,
    F: FnMut(&mut A, T) -> R + Send + 'static,
    R: SinkResult,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscription.is_some() || self.done.is_none() {
            subscription.cancel(); // rule 2.5
            return;
        }
        subscription.request(u64::MAX);
        self.subscription = Some(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        let Some((acc, f)) = self.state.as_mut() else {
            // Arrived after the fold failed (the upstream stops eventually): never handled.
            self.count(Reason::Cancelled);
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| f(acc, item).into_result())) {
            Ok(Ok(())) => {
                if let Some(tally) = &mut self.tally {
                    tally.add_delivered(1);
                }
            }
            Ok(Err(error)) => self.fail(error),
            Err(payload) => self.fail(Error::panicked(payload.as_ref())),
        }
    }

    /// A burst in one loop: the handled count is kept in a register and published once.
    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        let mut pulled = 0;
        let mut handled = 0;
        let mut failure = None;
        // The accumulator and the closure (with what it captured) in locals for the burst: the
        // compiler keeps them in registers instead of storing them back to `self` per item.
        if let Some((mut acc, mut f)) = self.state.take() {
            // One loop, run by the burst. Every item handed over was handled but the one that
            // failed (the last): nothing is counted per item.
            pulled = items.feed(limit, |item| {
                match catch_unwind(AssertUnwindSafe(|| f(&mut acc, item).into_result())) {
                    Ok(Ok(())) => true,
                    Ok(Err(error)) => {
                        failure = Some(error);
                        false
                    }
                    Err(payload) => {
                        failure = Some(Error::panicked(payload.as_ref()));
                        false
                    }
                }
            });
            // (Saturating: a burst that under-reports what it handed over must not wrap.)
            handled = pulled.saturating_sub(u64::from(failure.is_some()));
            // Back even after a failure (`fail` drops them): dropping them here would hand
            // their address to drop code, and locals whose address escapes stay in memory.
            self.state = Some((acc, f));
        }
        if let Some(tally) = &mut self.tally
            && handled > 0
        {
            tally.add_delivered(handled);
        }
        if let Some(error) = failure {
            self.fail(error);
        }
        if pulled < limit && self.state.is_none() {
            // After a failure (now or earlier) the rest of the burst arrives unhandled: taken
            // and counted, never passed to the closure.
            let rest = crate::kit::discard(items, limit - pulled);
            if let Some(tally) = &mut self.tally {
                tally.add(Reason::Cancelled, rest);
            }
            pulled += rest;
        }
        pulled
    }

    fn on_error(&mut self, error: Error) {
        self.finish(Err(error));
    }

    fn on_complete(&mut self) {
        self.finish(Ok(()));
    }
}

/// Turns a publisher into a [`futures_core::Stream`] of `Result<T, Error>`: at most `prefetch` items are
/// buffered, more are requested only as the stream is polled (75% refill), an error arrives as one
/// `Err` item before the end, and dropping the stream cancels the subscription.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// use weir_runtime::{sink, source};
/// let mut stream = sink::into_stream(source::from_iter(1..=3), 2);
/// let mut items = Vec::new();
/// while let Some(item) = stream.next().await {
///     items.push(item.unwrap());
/// }
/// assert_eq!(items, vec![1, 2, 3]);
/// # }
/// ```
pub fn into_stream<T, P>(publisher: P, prefetch: usize) -> IntoStream<T>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    into_stream_named(publisher, prefetch, "into_stream")
}

/// [`into_stream`] with a stage name for its buffer's metrics (operators built on streams use it).
pub fn into_stream_named<T, P>(publisher: P, prefetch: usize, name: &str) -> IntoStream<T>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    let (inlet, lane) = lane(name, prefetch);
    publisher.subscribe(inlet);
    IntoStream { lane, done: false }
}

/// [`into_stream`] reporting into `metrics` (made beforehand; its capacity is the prefetch).
pub fn into_stream_observed<T, P>(publisher: P, metrics: Arc<BufferMetrics>) -> IntoStream<T>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    let (inlet, lane) = crate::lane::lane_observed(metrics);
    publisher.subscribe(inlet);
    IntoStream { lane, done: false }
}

/// See [`into_stream`].
pub struct IntoStream<T> {
    lane: Lane<T>,
    done: bool,
}

impl<T: Send + 'static> IntoStream<T> {
    /// Names a panic of the publisher in `request` after `stage` instead of the stream's buffer
    /// (see [`Lane::failing_as`]).
    pub fn failing_as(mut self, stage: impl Into<Arc<str>>) -> Self {
        self.lane = self.lane.failing_as(stage);
        self
    }
}

impl<T> std::fmt::Debug for IntoStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoStream")
            .field("done", &self.done)
            .finish()
    }
}

impl<T: Send + 'static> IntoStream<T> {
    /// The stream's buffer counters.
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.lane.metrics()
    }
}

impl<T: Send + 'static> Stream for IntoStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.lane.poll_lane(cx) {
            Poll::Ready(LaneEvent::Items) => {
                let mut next = None;
                this.lane.pop_each(1, |item| {
                    next = Some(item);
                    true
                });
                Poll::Ready(next.map(Ok))
            }
            Poll::Ready(LaneEvent::Ended(result)) => {
                this.done = true;
                Poll::Ready(result.err().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
