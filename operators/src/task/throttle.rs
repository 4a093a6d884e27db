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
use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::metrics::{BufferMetrics, Reason};
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::{Outlet, Progress, TaskOperator, input_observed, start};

/// Items a throttle's lane holds.
const LANE_CAPACITY: usize = 256;

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
    metrics: Arc<BufferMetrics>,
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
            metrics: BufferMetrics::new("throttle", LANE_CAPACITY),
        }
    }

    /// The throttle's counters: its input lane (depth, in / out) and shed items under
    /// [`Reason::Throttled`].
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

impl<T: Send + 'static, P: Publisher<T>> Publisher<T> for Throttle<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.metrics.clone());
        if self.per_second <= 0.0 {
            let error =
                Error::msg("a rate of at least 1 per second is needed").in_stage("throttle");
            return reject(subscriber, error);
        }
        start("throttle", subscriber, || ThrottleTask {
            lane: input_observed(self.upstream, self.metrics.clone()),
            per_second: self.per_second,
            burst: self.burst,
            mode: self.mode,
            tokens: self.burst,
            refilled: Instant::now(),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            metrics: self.metrics,
        });
    }
}

struct ThrottleTask<T> {
    lane: Lane<T>,
    per_second: f64,
    burst: f64,
    mode: ThrottleMode,
    tokens: f64,
    refilled: Instant,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<BufferMetrics>,
}

impl<T: Send + 'static> TaskOperator<T> for ThrottleTask<T> {
    fn advance<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
        match self.lane.poll_lane(cx) {
            Poll::Pending => return Progress::Wait,
            Poll::Ready(LaneEvent::Ended(result)) => return Progress::Done(result),
            Poll::Ready(LaneEvent::Items) => {}
        }
        let whole = self.tokens.floor() as u64;
        if whole >= 1 {
            if demand == 0 {
                return Progress::Wait; // registered for demand
            }
            let (_, accepted) = out.emit_from(&mut self.lane, whole.min(demand));
            self.tokens -= accepted as f64;
            out.flush();
            return Progress::Again;
        }
        match self.mode {
            ThrottleMode::Shed => {
                // Over the rate: drop what is waiting, counted.
                let (dropped, _) = self.lane.pop_each(u64::MAX, |_| true);
                self.metrics
                    .record_shed_n(Reason::Throttled, dropped as u64);
                Progress::Again
            }
            ThrottleMode::Delay => {
                let wait = (1.0 - self.tokens) / self.per_second;
                self.timer
                    .as_mut()
                    .reset(now + Duration::from_secs_f64(wait));
                match self.timer.as_mut().poll(cx) {
                    Poll::Pending => Progress::Wait,
                    Poll::Ready(()) => Progress::Again,
                }
            }
        }
    }
}
