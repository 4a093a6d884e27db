//! A lane: one upstream read through a bounded credit ring by a task that also grants its credit.
//!
//! This is the consumer half of a boundary without its own tasks, for stages that read one or
//! several upstreams from a single task or poll function: [`into_stream`](crate::sink::into_stream)
//! reads one lane, a merge reads many. The lane asks its upstream for `capacity` items at first and
//! then for 75% of the capacity each time that much has been taken, so at most `capacity` items are
//! ever held.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};

use weir_lockfree::ring::{Consumer, Credit, Readable};

use crate::boundary::{Channel, Grant, Inlet, channel};
use crate::metrics::BufferMetrics;
use crate::recheck::Recheck;
use crate::{Error, Subscriber, Subscription};

/// What [`Lane::poll_lane`] found.
#[derive(Debug)]
pub enum LaneEvent {
    /// Items can be taken with [`Lane::pop_each`].
    Items,
    /// The upstream ended and every item was taken: its terminal signal.
    Ended(Result<(), Error>),
}

/// Creates a lane named `name` holding at most `capacity` items (at least 1): subscribe the
/// returned [`Inlet`] to the upstream and read the [`Lane`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::future::poll_fn;
/// use weir_runtime::{Publisher, kit::{lane, LaneEvent}, source};
/// let (inlet, mut lane) = lane::<u32>("numbers", 2);
/// source::from_iter(1..=5).subscribe(inlet);
/// let mut got = Vec::new();
/// loop {
///     match poll_fn(|cx| lane.poll_lane(cx)).await {
///         LaneEvent::Items => { lane.pop_each(u64::MAX, |x| { got.push(x); true }); }
///         LaneEvent::Ended(result) => { result.unwrap(); break; }
///     }
/// }
/// assert_eq!(got, vec![1, 2, 3, 4, 5]);
/// # }
/// ```
pub fn lane<T: Send + 'static>(name: &str, capacity: usize) -> (Inlet<T>, Lane<T>) {
    let capacity = capacity.max(1);
    lane_observed(BufferMetrics::new(name, capacity))
}

/// A lane reporting into `metrics` (made beforehand, e.g. by an operator that hands them out before
/// it is subscribed); its capacity is the metrics' capacity (at least 1).
pub fn lane_observed<T: Send + 'static>(metrics: Arc<BufferMetrics>) -> (Inlet<T>, Lane<T>) {
    let capacity = (metrics.snapshot().capacity as usize).max(1);
    let (inlet, consumer, credit, channel) = channel(metrics.name().into(), capacity, metrics);
    (
        inlet,
        Lane {
            consumer,
            credit,
            channel,
            upstream: None,
            grant: Grant::new(capacity),
            ended: false,
            upstream_panicked: false,
            stage: None,
            recheck: Recheck::default(),
        },
    )
}

/// The reading side of a [`lane`]. Dropping it cancels the upstream.
pub struct Lane<T> {
    consumer: Consumer<T>,
    credit: Credit<T>,
    channel: Arc<Channel>,
    upstream: Option<Subscription>,
    grant: Grant,
    ended: bool,
    /// The upstream panicked in `request`: the lane ends with the panic once its ring is empty.
    upstream_panicked: bool,
    /// The stage the upstream's panic is named after ([`failing_as`](Lane::failing_as)); the
    /// lane's name if `None`.
    stage: Option<Arc<str>>,
    recheck: Recheck,
}

impl<T> std::fmt::Debug for Lane<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("name", &self.channel.metrics.name())
            .field("ended", &self.ended)
            .finish()
    }
}

impl<T: Send + 'static> Lane<T> {
    /// Ready with [`LaneEvent::Items`] when items can be taken, or with [`LaneEvent::Ended`] once
    /// (after the last item); otherwise the task is registered to be woken by new items, the
    /// upstream's subscription or its end. Grants credit to the upstream as slots free up.
    pub fn poll_lane(&mut self, cx: &mut Context<'_>) -> Poll<LaneEvent> {
        if self.ended {
            return Poll::Ready(LaneEvent::Ended(Ok(())));
        }
        loop {
            if self.consumer.available() > 0 {
                return Poll::Ready(LaneEvent::Items);
            }
            if self.upstream_panicked {
                return Poll::Ready(self.end());
            }
            if self.upstream.is_none() {
                match self.channel.poll_upstream(cx) {
                    Poll::Ready(upstream) => self.upstream = Some(upstream),
                    // The publisher may also end before subscribing properly: look at the ring.
                    Poll::Pending if !self.consumer.is_producer_closed() => return Poll::Pending,
                    Poll::Pending => return Poll::Ready(self.end()),
                }
            }
            if self.grant_due() {
                continue; // a synchronous upstream has filled the ring already
            }
            match self.consumer.poll_readable(cx) {
                Poll::Ready(Readable::Items) => continue,
                Poll::Ready(Readable::Closed) => return Poll::Ready(self.end()),
                Poll::Pending => {
                    if self.consumer.take_fresh_wait() {
                        self.recheck.after_wait_started(cx);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Names a panic of the upstream in `request` after `stage` instead of the lane's name (for a
    /// lane that is one of an operator's inputs, named `zip.right` for example). Such a panic
    /// ends the lane's stream with [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) once the
    /// items its ring holds are taken, and cancels the upstream.
    pub fn failing_as(mut self, stage: impl Into<Arc<str>>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    /// Takes items and hands each to `f` until `f` accepted `max` of them or none is left; returns
    /// `(taken, accepted)`. Then grants credit if enough slots are free.
    pub fn pop_each(&mut self, max: u64, f: impl FnMut(T) -> bool) -> (usize, u64) {
        let taken = self.consumer.pop_each(max, f);
        self.grant_due();
        taken
    }

    /// Moves up to `max` of the lane's items to the end of `out` (oldest first, a block copy per
    /// run of the ring) and returns how many. Then grants credit if enough slots are free.
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let taken = self.consumer.pop_into(out, max);
        self.grant_due();
        taken
    }

    /// Hands `subscriber` a burst of the lane's items (one `try_on_next_iter` call) until it
    /// accepted `max` of them or none is left; returns `(taken, accepted)`. Then grants credit if
    /// enough slots are free.
    pub fn emit_to<S: Subscriber<T>>(&mut self, subscriber: &mut S, max: u64) -> (usize, u64) {
        let mut burst = self.consumer.drain();
        let accepted = subscriber.try_on_next_iter(&mut burst, max);
        let taken = burst.popped();
        drop(burst);
        self.grant_due();
        (taken, accepted)
    }

    /// Cancels the upstream; the lane ends. Items it still holds, and any its upstream still
    /// writes, are counted as cancelled.
    pub fn cancel(&mut self) {
        self.cancel_upstream();
        self.channel.metrics.cancel_rest();
        self.ended = true;
    }

    /// Cancels the upstream's subscription, also when the lane has not picked it up yet.
    fn cancel_upstream(&mut self) {
        if let Some(upstream) = self
            .upstream
            .take()
            .or_else(|| self.channel.take_upstream())
        {
            upstream.cancel();
        }
    }

    /// The lane's buffer counters.
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.channel.metrics.clone()
    }

    fn grant_due(&mut self) -> bool {
        let Some(upstream) = &self.upstream else {
            return false;
        };
        self.consumer.release();
        let (grant, head, channel) = (&mut self.grant, self.credit.head(), &self.channel);
        match catch_unwind(AssertUnwindSafe(|| grant.grant(head, channel, upstream))) {
            Ok(granted) => granted,
            Err(payload) => {
                self.fail_upstream(payload);
                false
            }
        }
    }

    /// A synchronous upstream runs inside `request`, and it panicked there. The panic fails the
    /// lane's stream, after the items its ring holds, instead of unwinding into the task that
    /// reads the lane: that would drop the items its caller had just taken, before it counted
    /// them (a grant follows every take).
    #[cold]
    fn fail_upstream(&mut self, payload: Box<dyn Any + Send>) {
        let stage = self
            .stage
            .clone()
            .unwrap_or_else(|| self.channel.name.clone());
        let error = Error::panicked(payload.as_ref()).in_stage(stage);
        self.channel.fail_from_credit(error);
        if let Some(upstream) = self.upstream.take() {
            // Cancelling it may panic too, which changes nothing.
            let _ = catch_unwind(AssertUnwindSafe(|| upstream.cancel()));
        }
        self.upstream_panicked = true;
    }

    fn end(&mut self) -> LaneEvent {
        self.ended = true;
        self.upstream = None;
        LaneEvent::Ended(self.channel.take_terminal())
    }
}

impl<T> Drop for Lane<T> {
    fn drop(&mut self) {
        // Whatever is left in the ring is dropped with it: cancelled.
        self.channel.metrics.cancel_rest();
        if let Some(upstream) = self
            .upstream
            .take()
            .or_else(|| self.channel.take_upstream())
        {
            upstream.cancel();
        }
    }
}
