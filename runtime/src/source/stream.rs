use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::ledger::{Reason, Tally, TallyWriter};
use crate::task::{Next, TaskSubscription};
use crate::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

/// How many items a stream task pulls before it yields to the tokio scheduler.
const POLL_BUDGET: u64 = 4096;

/// A publisher of the items of a [`futures_core::Stream`]. The stream is polled in a tokio task of its
/// own, and only while there is demand: a slow subscriber pauses the stream (backpressure), it never
/// buffers. A panic inside the stream fails the subscription with
/// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked).
///
/// Subscribing outside a tokio runtime fails the subscription with
/// [`ErrorKind::NoRuntime`](crate::ErrorKind::NoRuntime).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{sink, source};
/// let stream = futures::stream::iter(vec!["a", "b"]);
/// assert_eq!(sink::collect(source::from_stream(stream)).await.unwrap(), vec!["a", "b"]);
/// # }
/// ```
pub fn from_stream<St>(stream: St) -> FromStream<St>
where
    St: Stream + Send + 'static,
    St::Item: Send + 'static,
{
    FromStream(stream)
}

/// See [`from_stream`].
#[derive(Debug, Clone)]
pub struct FromStream<St>(St);

impl<St> Publisher<St::Item> for FromStream<St>
where
    St: Stream + Send + 'static,
    St::Item: Send + 'static,
{
    fn subscribe<S: Subscriber<St::Item>>(self, subscriber: S) {
        spawn_stream_task(self.0, subscriber, Ok, false);
    }
}

/// A publisher of the `Ok` items of a stream of `Result<T, Error>`: the first `Err` fails the
/// subscription (and drops the stream). Otherwise like [`from_stream`], except that while there is
/// no demand it looks one item ahead, so that a failure or the end is signalled without waiting for
/// a request (at most one item is held; [`on_demand_only`](FromTryStream::on_demand_only) turns
/// this off).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{Error, sink, source};
/// let stream = futures::stream::iter(vec![Ok(1), Err(Error::msg("bad row")), Ok(3)]);
/// let error = sink::collect(source::from_try_stream(stream)).await.unwrap_err();
/// assert_eq!(error.to_string(), "bad row");
/// # }
/// ```
pub fn from_try_stream<St, T>(stream: St) -> FromTryStream<St>
where
    St: Stream<Item = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    FromTryStream {
        stream,
        look_ahead: true,
    }
}

/// See [`from_try_stream`].
#[derive(Debug, Clone)]
pub struct FromTryStream<St> {
    stream: St,
    look_ahead: bool,
}

impl<St> FromTryStream<St> {
    /// Polls the stream only while there is demand, as [`from_stream`] does: the end or a failure
    /// is signalled once there is a request. For a stream whose items are not lost when nobody
    /// takes them (a log's records, replayed by the next run): an item looked at ahead of demand
    /// and still held when the subscriber leaves is counted as cancelled, and has left the
    /// stream's source.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_runtime::{Error, sink, source};
    /// let rows = futures::stream::iter(vec![Ok::<_, Error>(1), Ok(2)]);
    /// let rows = source::from_try_stream(rows).on_demand_only();
    /// assert_eq!(sink::collect(rows).await.unwrap(), vec![1, 2]);
    /// # }
    /// ```
    pub fn on_demand_only(self) -> Self {
        Self {
            look_ahead: false,
            ..self
        }
    }
}

impl<St, T> Publisher<T> for FromTryStream<St>
where
    St: Stream<Item = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        spawn_stream_task(self.stream, subscriber, |item| item, self.look_ahead);
    }
}

fn spawn_stream_task<St, T, S, M>(stream: St, mut subscriber: S, unpack: M, look_ahead: bool)
where
    T: Send + 'static,
    St: Stream + Send + 'static,
    S: Subscriber<T>,
    M: FnMut(St::Item) -> Result<T, Error> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        reject(subscriber, Error::new(ErrorKind::NoRuntime));
        return;
    };
    let shared = Arc::new(TaskSubscription::default());
    subscriber.on_subscribe(Subscription::new(shared.clone()));
    crate::ledger::spawn(
        &runtime,
        StreamTask {
            stream: Box::pin(stream),
            subscriber,
            shared,
            unpack,
            look_ahead,
            held: None,
            tally: Tally::new("from_stream").writer(),
        },
    );
}

struct StreamTask<St, S, M, T> {
    stream: Pin<Box<St>>,
    subscriber: S,
    shared: Arc<TaskSubscription>,
    /// Turns a stream item into an item or the stream's failure.
    unpack: M,
    /// Whether to look one item ahead while there is no demand, so that the end or a failure of
    /// the stream is signalled without waiting for a request (terminal signals need no demand).
    look_ahead: bool,
    /// The item looked ahead at, emitted first when demand comes.
    held: Option<T>,
    /// Counts the item looked ahead at: held, or cancelled if the subscription ends first.
    tally: TallyWriter,
}

impl<St, S, M, T> Drop for StreamTask<St, S, M, T> {
    fn drop(&mut self) {
        if self.held.take().is_some() {
            self.tally.set_held(0);
            self.tally.add(Reason::Cancelled, 1);
        }
    }
}

// No field is structurally pinned (the stream is boxed), so moving the task is fine.
impl<St, S, M, T> Unpin for StreamTask<St, S, M, T> {}

impl<St, S, M, T> Future for StreamTask<St, S, M, T>
where
    St: Stream,
    S: Subscriber<T>,
    M: FnMut(St::Item) -> Result<T, Error>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let demand = match this.shared.poll_next(cx) {
                Next::Emit(n) => n,
                Next::Wait if this.look_ahead && this.held.is_none() => {
                    let polled =
                        catch_unwind(AssertUnwindSafe(|| this.stream.as_mut().poll_next(cx)));
                    match polled {
                        Ok(Poll::Ready(Some(item))) => match (this.unpack)(item) {
                            Ok(item) => {
                                this.held = Some(item);
                                this.tally.set_held(1);
                            }
                            Err(error) => {
                                this.subscriber.on_error(error);
                                return Poll::Ready(());
                            }
                        },
                        Ok(Poll::Ready(None)) => {
                            this.subscriber.on_complete();
                            return Poll::Ready(());
                        }
                        Ok(Poll::Pending) => {}
                        Err(payload) => {
                            this.subscriber.on_error(Error::panicked(payload.as_ref()));
                            return Poll::Ready(());
                        }
                    }
                    // Registered for both demand and the stream: wait for either.
                    return Poll::Pending;
                }
                Next::Wait => return Poll::Pending,
                Next::Cancelled => return Poll::Ready(()),
                Next::BadRequest => {
                    this.subscriber.on_error(Error::new(ErrorKind::RequestZero));
                    return Poll::Ready(());
                }
            };
            let mut accepted = 0;
            let mut pulled = 0;
            if let Some(item) = this.held.take() {
                this.tally.set_held(0);
                accepted += u64::from(this.subscriber.try_on_next(item));
            }
            while accepted < demand {
                if pulled == POLL_BUDGET {
                    this.finish_burst(accepted);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let polled = catch_unwind(AssertUnwindSafe(|| this.stream.as_mut().poll_next(cx)));
                match polled {
                    Ok(Poll::Ready(Some(item))) => {
                        pulled += 1;
                        match (this.unpack)(item) {
                            Ok(item) => accepted += u64::from(this.subscriber.try_on_next(item)),
                            Err(error) => {
                                this.shared.demand().consume(accepted);
                                this.subscriber.on_error(error);
                                return Poll::Ready(());
                            }
                        }
                    }
                    Ok(Poll::Ready(None)) => {
                        this.shared.demand().consume(accepted);
                        this.subscriber.on_complete();
                        return Poll::Ready(());
                    }
                    Ok(Poll::Pending) => {
                        this.finish_burst(accepted);
                        return match this.shared.watch(cx) {
                            Next::Cancelled | Next::BadRequest => continue_later(cx),
                            _ => Poll::Pending,
                        };
                    }
                    Err(payload) => {
                        this.subscriber.on_error(Error::panicked(payload.as_ref()));
                        return Poll::Ready(());
                    }
                }
            }
            this.finish_burst(accepted);
        }
    }
}

/// Asks to be polled again at once (the next poll handles the cancel or bad request).
fn continue_later(cx: &mut Context<'_>) -> Poll<()> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl<St, S, M, T> StreamTask<St, S, M, T>
where
    St: Stream,
    S: Subscriber<T>,
{
    fn finish_burst(&mut self, accepted: u64) {
        self.shared.demand().consume(accepted);
        if accepted > 0 {
            self.subscriber.on_flush();
        }
    }
}
