//! `zip`: pairs the n-th items of two sources.
//!
//! Each source is read through its own bounded [`Lane`], so a fast source is held back by the slow
//! one (at most a lane's capacity ahead) instead of buffering without bound. The zip completes when
//! either source ends (a lone item left on the other side has no partner and is dropped, as in
//! `Iterator::zip`), and fails fast on either source's error; the other source is cancelled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use weir_runtime::lane::{Lane, LaneEvent, lane};
use weir_runtime::task::TaskSubscription;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

use super::allowance;

const LANE_CAPACITY: usize = 64;

/// See [`zip`].
#[derive(Debug)]
pub struct Zip<L, R> {
    left: L,
    right: R,
}

/// Pairs the items of `left` and `right` in order: `(l0, r0), (l1, r1), ...`.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_operators::{PublisherExt, zip};
/// use weir_runtime::source;
/// let pairs = zip(source::from_iter(1..=3u32), source::from_iter(["a", "b", "c", "d"]))
///     .collect()
///     .await
///     .unwrap();
/// assert_eq!(pairs, vec![(1, "a"), (2, "b"), (3, "c")]);
/// # }
/// ```
pub fn zip<L, R>(left: L, right: R) -> Zip<L, R> {
    Zip { left, right }
}

impl<A, B, L, R> Publisher<(A, B)> for Zip<L, R>
where
    A: Send + 'static,
    B: Send + 'static,
    L: Publisher<A>,
    R: Publisher<B>,
{
    fn subscribe<S: Subscriber<(A, B)>>(self, mut subscriber: S) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            reject(subscriber, Error::new(ErrorKind::NoRuntime).in_stage("zip"));
            return;
        };
        let (left_in, left) = lane("zip.left", LANE_CAPACITY);
        let (right_in, right) = lane("zip.right", LANE_CAPACITY);
        self.left.subscribe(left_in);
        self.right.subscribe(right_in);
        let downstream = Arc::new(TaskSubscription::default());
        subscriber.on_subscribe(Subscription::new(downstream.clone()));
        runtime.spawn(ZipTask {
            left: Side {
                lane: left,
                held: None,
            },
            right: Side {
                lane: right,
                held: None,
            },
            subscriber,
            downstream,
        });
    }
}

struct Side<T> {
    lane: Lane<T>,
    held: Option<T>,
}

/// What one side has to offer.
enum Offer {
    Ready,
    Waiting,
    Ended(Result<(), Error>),
}

impl<T: Send + 'static> Side<T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Offer {
        if self.held.is_some() {
            return Offer::Ready;
        }
        match self.lane.poll_lane(cx) {
            Poll::Ready(LaneEvent::Items) => {
                let held = &mut self.held;
                self.lane.pop_each(1, |item| {
                    *held = Some(item);
                    true
                });
                Offer::Ready
            }
            Poll::Ready(LaneEvent::Ended(result)) => Offer::Ended(result),
            Poll::Pending => Offer::Waiting,
        }
    }
}

struct ZipTask<A, B, S> {
    left: Side<A>,
    right: Side<B>,
    subscriber: S,
    downstream: Arc<TaskSubscription>,
}

impl<A, B, S> Unpin for ZipTask<A, B, S> {}

impl<A: Send + 'static, B: Send + 'static, S: Subscriber<(A, B)>> ZipTask<A, B, S> {
    fn end(&mut self, result: Result<(), Error>) -> Poll<()> {
        self.left.lane.cancel();
        self.right.lane.cancel();
        match result {
            Ok(()) => self.subscriber.on_complete(),
            Err(error) => self.subscriber.on_error(error),
        }
        Poll::Ready(())
    }
}

impl<A: Send + 'static, B: Send + 'static, S: Subscriber<(A, B)>> Future for ZipTask<A, B, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(demand) = allowance(&this.downstream, &mut this.subscriber, cx, "zip") else {
                this.left.lane.cancel();
                this.right.lane.cancel();
                return Poll::Ready(());
            };
            let left = this.left.poll(cx);
            let right = this.right.poll(cx);
            match (left, right) {
                (Offer::Ended(Err(error)), _) | (_, Offer::Ended(Err(error))) => {
                    return this.end(Err(error));
                }
                // A side that ended with nothing held leaves nothing to pair.
                (Offer::Ended(Ok(())), _) | (_, Offer::Ended(Ok(()))) => return this.end(Ok(())),
                (Offer::Ready, Offer::Ready) if demand > 0 => {
                    let pair = (
                        this.left.held.take().expect("ready"),
                        this.right.held.take().expect("ready"),
                    );
                    this.downstream.demand().consume(1);
                    this.subscriber.on_next(pair);
                    this.subscriber.on_flush();
                }
                _ => return Poll::Pending,
            }
        }
    }
}
