//! Time-driven operators: `throttle` (token bucket) and `timeout` (upstream silence).
//!
//! Both read their upstream through a [`Lane`] (bounded: the upstream is asked for items only as
//! the lane drains) and run in a task of their own with one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use weir_runtime::lane::{Lane, LaneEvent, lane_observed};
use weir_runtime::metrics::{BoundaryMetrics, Reason, StageKind};
use weir_runtime::task::{Next, TaskSubscription};
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

/// Items a throttle or timeout lane holds.
const LANE_CAPACITY: usize = 256;

/// What a [`throttle`](crate::PublisherExt::throttle) does with items over the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleMode {
    /// Hold them (backpressure): the upstream slows to the rate.
    Delay,
    /// Drop them, counted as [`Reason::Throttled`]: the upstream keeps its pace.
    Shed,
}

/// What a [`timeout`](crate::PublisherExt::timeout) does when the upstream is silent too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSilence {
    /// Fail the stream with [`ErrorKind::Timeout`], naming the stage.
    Fail,
    /// Complete the stream (cancelling the upstream): silence means "no more".
    Complete,
}

/// Starts a lane-reading task for `upstream`; `make` builds the task from the lane, the subscriber
/// and the downstream's subscription state.
fn start<T, P, S, F, Fut>(
    upstream: P,
    mut subscriber: S,
    stage: &'static str,
    metrics: Arc<BoundaryMetrics>,
    make: F,
) where
    T: Send + 'static,
    P: Publisher<T>,
    S: Subscriber<T>,
    F: FnOnce(Lane<T>, S, Arc<TaskSubscription>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        reject(subscriber, Error::new(ErrorKind::NoRuntime).in_stage(stage));
        return;
    };
    let (inlet, reader) = lane_observed(metrics);
    upstream.subscribe(inlet);
    let downstream = Arc::new(TaskSubscription::default());
    subscriber.on_subscribe(Subscription::new(downstream.clone()));
    runtime.spawn(make(reader, subscriber, downstream));
}

/// What the downstream allows now, or `None` when the task must end (after signalling). The task is
/// registered for the downstream's next `request` and for `cancel` in every case: it may go on to
/// wait for its lane or a timer while demand is outstanding, and a cancel must still wake it.
pub(crate) fn allowance<T, S: Subscriber<T>>(
    downstream: &TaskSubscription,
    subscriber: &mut S,
    cx: &mut Context<'_>,
    stage: &'static str,
) -> Option<u64> {
    let _ = downstream.watch(cx);
    match downstream.poll_next(cx) {
        Next::Emit(n) => Some(n),
        Next::Wait => Some(0),
        Next::Cancelled => None,
        Next::BadRequest => {
            subscriber.on_error(Error::new(ErrorKind::RequestZero).in_stage(stage));
            None
        }
    }
}

fn finish<S: Subscriber<T>, T>(subscriber: &mut S, result: Result<(), Error>) {
    match result {
        Ok(()) => subscriber.on_complete(),
        Err(error) => subscriber.on_error(error),
    }
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
