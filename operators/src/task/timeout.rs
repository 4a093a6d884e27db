//! `timeout`: ends or fails the stream when the upstream is silent too long.
//!
//! The upstream is read through a [`Lane`] (bounded: the upstream is asked for items only as the
//! lane drains) by a task of its own with one timer, armed only while the downstream waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use weir_runtime::lane::{Lane, LaneEvent};
use weir_runtime::metrics::{BoundaryMetrics, StageKind};
use weir_runtime::task::TaskSubscription;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber};

use super::{LANE_CAPACITY, allowance, finish, start};

/// What a [`timeout`](crate::PublisherExt::timeout) does when the upstream is silent too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSilence {
    /// Fail the stream with [`ErrorKind::Timeout`], naming the stage.
    Fail,
    /// Complete the stream (cancelling the upstream): silence means "no more".
    Complete,
}

/// See [`PublisherExt::timeout`](crate::PublisherExt::timeout).
#[derive(Debug)]
pub struct Timeout<P> {
    upstream: P,
    silence: Duration,
    on_silence: OnSilence,
    metrics: Arc<BoundaryMetrics>,
}

impl<P> Timeout<P> {
    pub(crate) fn new(upstream: P, silence: Duration, on_silence: OnSilence) -> Self {
        Self {
            upstream,
            silence,
            on_silence,
            metrics: BoundaryMetrics::new("timeout", StageKind::Boundary, LANE_CAPACITY),
        }
    }

    /// The counters of the timeout's input lane.
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.metrics.clone()
    }
}

impl<T: Send + 'static, P: Publisher<T>> Publisher<T> for Timeout<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let (silence, on_silence) = (self.silence, self.on_silence);
        start(
            self.upstream,
            subscriber,
            "timeout",
            self.metrics,
            move |lane, subscriber, downstream| TimeoutTask {
                lane,
                subscriber,
                downstream,
                silence,
                on_silence,
                timer: Box::pin(tokio::time::sleep(silence)),
                armed: false,
            },
        );
    }
}

struct TimeoutTask<T, S> {
    lane: Lane<T>,
    subscriber: S,
    downstream: Arc<TaskSubscription>,
    silence: Duration,
    on_silence: OnSilence,
    timer: Pin<Box<Sleep>>,
    /// The timer runs only while the downstream waits for an item.
    armed: bool,
}

impl<T, S> Unpin for TimeoutTask<T, S> {}

impl<T: Send + 'static, S: Subscriber<T>> Future for TimeoutTask<T, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(demand) = allowance(&this.downstream, &mut this.subscriber, cx, "timeout")
            else {
                return Poll::Ready(());
            };
            match this.lane.poll_lane(cx) {
                Poll::Ready(LaneEvent::Ended(result)) => {
                    finish(&mut this.subscriber, result);
                    return Poll::Ready(());
                }
                Poll::Ready(LaneEvent::Items) if demand > 0 => {
                    let subscriber = &mut this.subscriber;
                    let (_, accepted) = this
                        .lane
                        .pop_each(demand, |item| subscriber.try_on_next(item));
                    this.downstream.demand().consume(accepted);
                    this.subscriber.on_flush();
                    this.armed = false; // an item came: the silence starts again
                    continue;
                }
                // Items but no demand: the downstream is the slow one, not the upstream.
                Poll::Ready(LaneEvent::Items) => {
                    this.armed = false;
                    return Poll::Pending;
                }
                Poll::Pending if demand == 0 => {
                    this.armed = false;
                    return Poll::Pending;
                }
                Poll::Pending => {}
            }
            // The downstream waits and the upstream is silent.
            if !this.armed {
                this.armed = true;
                this.timer.as_mut().reset(Instant::now() + this.silence);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.lane.cancel();
            match this.on_silence {
                OnSilence::Fail => this
                    .subscriber
                    .on_error(Error::new(ErrorKind::Timeout(this.silence)).in_stage("timeout")),
                OnSilence::Complete => this.subscriber.on_complete(),
            }
            return Poll::Ready(());
        }
    }
}
