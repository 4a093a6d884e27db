//! `zip`: pairs the n-th items of two sources.
//!
//! Each source is read through its own bounded [`Lane`], so a fast source is held back by the slow
//! one (at most a lane's capacity ahead) instead of buffering without bound. The zip completes when
//! either source ends (a lone item left on the other side has no partner and is dropped, as in
//! `Iterator::zip`), and fails fast on either source's error; the other source is cancelled.
//!
//! In the ledger, each side is subscribed in a [`join`]: a side that carries a pipeline stage's
//! input (its items were counted as they came in) is the stream's, with its accounts; a side
//! that makes its own items (a source built in the stage's code) has each item counted as made
//! when the zip takes it, and its accounts (a filter inside it, its lane) kept out of the stage's
//! books: what it made and dropped, or still holds when the zip ends, never entered them. Outside
//! a pipeline, `left` is the stream's and `right` makes its own. Each pair is counted as made out
//! of its two members.
//!
//! [`join`]: weir_runtime::ledger::join

use std::task::{Context, Poll};

use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::ledger::{Origin, join};
use weir_runtime::{Error, Publisher, Subscriber};

use super::{Outlet, Progress, TaskOperator, input, start};

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
    fn subscribe<S: Subscriber<(A, B)>>(self, subscriber: S) {
        start("zip", subscriber, || {
            let (left, left_from) = join(|| input(self.left, "zip.left", LANE_CAPACITY));
            let (right, right_from) = join(|| input(self.right, "zip.right", LANE_CAPACITY));
            ZipTask {
                left: Side {
                    lane: left.failing_as("zip"),
                    held: None,
                    own: left_from == Some(Origin::Own),
                },
                right: Side {
                    lane: right.failing_as("zip"),
                    held: None,
                    own: right_from != Some(Origin::Counted),
                },
            }
        });
    }
}

struct Side<T> {
    lane: Lane<T>,
    held: Option<T>,
    /// Its items enter the stream when taken (counted as made): see the module docs.
    own: bool,
}

/// What one side has to offer.
enum Offer {
    Ready,
    Waiting,
    Ended(Result<(), Error>),
}

impl<T: Send + 'static> Side<T> {
    /// Looks for this side's next item; returns what it has to offer and whether it took a new
    /// item from its lane.
    fn poll(&mut self, cx: &mut Context<'_>) -> (Offer, bool) {
        let had = self.held.is_some();
        let offer = self.offer(cx);
        (offer, !had && self.held.is_some())
    }

    fn offer(&mut self, cx: &mut Context<'_>) -> Offer {
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

struct ZipTask<A, B> {
    left: Side<A>,
    right: Side<B>,
}

impl<A: Send + 'static, B: Send + 'static> TaskOperator<(A, B)> for ZipTask<A, B> {
    fn held(&self) -> u64 {
        u64::from(self.left.held.is_some()) + u64::from(self.right.held.is_some())
    }

    fn advance<S: Subscriber<(A, B)>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        let (left, took_left) = self.left.poll(cx);
        let (right, took_right) = self.right.poll(cx);
        // An item of a side that makes its own enters the stream.
        let entered =
            u64::from(took_left && self.left.own) + u64::from(took_right && self.right.own);
        if entered > 0 {
            out.reshaped(0, entered);
        }
        match (left, right) {
            // Ending drops both lanes, which cancels the other source.
            (Offer::Ended(Err(error)), _) | (_, Offer::Ended(Err(error))) => {
                Progress::Done(Err(error))
            }
            // A side that ended with nothing held leaves nothing to pair.
            (Offer::Ended(Ok(())), _) | (_, Offer::Ended(Ok(()))) => Progress::Done(Ok(())),
            (Offer::Ready, Offer::Ready) if demand > 0 => {
                let pair = (
                    self.left.held.take().expect("ready"),
                    self.right.held.take().expect("ready"),
                );
                out.reshaped(2, 1);
                out.emit(pair);
                out.flush();
                Progress::Again
            }
            _ => Progress::Wait,
        }
    }
}
