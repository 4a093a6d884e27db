//! `throttle`: token-bucket rate limiting.
//!
//! The upstream is read through a [`Lane`] (bounded: the upstream is asked for items only as the
//! lane drains) by a task of its own with one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use weir_runtime::lane::{Lane, LaneEvent};
use weir_runtime::metrics::{BoundaryMetrics, Reason, StageKind};
use weir_runtime::task::TaskSubscription;
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::{LANE_CAPACITY, allowance, finish, start};

/// What a [`throttle`](crate::PublisherExt::throttle) does with items over the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleMode {
    /// Hold them (backpressure): the upstream slows to the rate.
    Delay,
    /// Drop them, counted as [`Reason::Throttled`]: the upstream keeps its pace.
    Shed,
}

/// See [`PublisherExt::throttle`](crate::PublisherExt::throttle).
pub struct Throttle<P> {
    upstream: P,
    per_second: f64,
    burst: f64,
    mode: ThrottleMode,
    metrics: Arc<BoundaryMetrics>,
}

impl<P> std::fmt::Debug for Throttle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("mode", &self.mode)
            .finish()
    }
}

impl<P> Throttle<P> {
    pub(crate) fn new(upstream: P, per_second: u32, burst: u32, mode: ThrottleMode) -> Self {
        Self {
            upstream,
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            mode,
            metrics: BoundaryMetrics::new("throttle", StageKind::Boundary, LANE_CAPACITY),
        }
    }

    /// The throttle's counters: its input lane (depth, in / out) and shed items under
    /// [`Reason::Throttled`].
    pub fn metrics(&self) -> Arc<BoundaryMetrics> {
        self.metrics.clone()
    }
}

impl<T: Send + 'static, P: Publisher<T>> Publisher<T> for Throttle<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        if self.per_second <= 0.0 {
            let error =
                Error::msg("a rate of at least 1 per second is needed").in_stage("throttle");
            return reject(subscriber, error);
        }
        let (per_second, burst, mode, metrics) =
            (self.per_second, self.burst, self.mode, self.metrics);
        start(
            self.upstream,
            subscriber,
            "throttle",
            metrics.clone(),
            move |lane, subscriber, downstream| ThrottleTask {
                lane,
                subscriber,
                downstream,
                per_second,
                burst,
                mode,
                tokens: burst,
                refilled: Instant::now(),
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                metrics,
            },
        );
    }
}

struct ThrottleTask<T, S> {
    lane: Lane<T>,
    subscriber: S,
    downstream: Arc<TaskSubscription>,
    per_second: f64,
    burst: f64,
    mode: ThrottleMode,
    tokens: f64,
    refilled: Instant,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<BoundaryMetrics>,
}

impl<T, S> Unpin for ThrottleTask<T, S> {}

impl<T: Send + 'static, S: Subscriber<T>> Future for ThrottleTask<T, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(this.refilled).as_secs_f64();
            this.tokens = (this.tokens + elapsed * this.per_second).min(this.burst);
            this.refilled = now;
            let Some(demand) = allowance(&this.downstream, &mut this.subscriber, cx, "throttle")
            else {
                return Poll::Ready(());
            };
            match this.lane.poll_lane(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(LaneEvent::Ended(result)) => {
                    finish(&mut this.subscriber, result);
                    return Poll::Ready(());
                }
                Poll::Ready(LaneEvent::Items) => {}
            }
            let whole = this.tokens.floor() as u64;
            if whole >= 1 {
                if demand == 0 {
                    return Poll::Pending; // registered for demand
                }
                let subscriber = &mut this.subscriber;
                let (_, accepted) = this
                    .lane
                    .pop_each(whole.min(demand), |item| subscriber.try_on_next(item));
                this.tokens -= accepted as f64;
                this.downstream.demand().consume(accepted);
                this.subscriber.on_flush();
                continue;
            }
            match this.mode {
                ThrottleMode::Shed => {
                    // Over the rate: drop what is waiting, counted.
                    let (dropped, _) = this.lane.pop_each(u64::MAX, |_| true);
                    this.metrics
                        .record_shed_n(Reason::Throttled, dropped as u64);
                    continue;
                }
                ThrottleMode::Delay => {
                    let wait = (1.0 - this.tokens) / this.per_second;
                    this.timer
                        .as_mut()
                        .reset(now + Duration::from_secs_f64(wait));
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}
