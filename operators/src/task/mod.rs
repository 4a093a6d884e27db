//! The operators that run in a task of their own.

use std::future::Future;
use std::sync::Arc;
use std::task::Context;

use weir_runtime::lane::{Lane, lane_observed};
use weir_runtime::metrics::BoundaryMetrics;
use weir_runtime::task::{Next, TaskSubscription};
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

pub(crate) mod batch;
pub(crate) mod breaker;
pub(crate) mod buffer;
pub(crate) mod fan_out;
pub(crate) mod flat_map;
pub(crate) mod group_by;
pub(crate) mod map_async;
pub(crate) mod retry;
pub(crate) mod throttle;
pub(crate) mod timeout;
pub(crate) mod zip;

/// Items a throttle or timeout lane holds.
const LANE_CAPACITY: usize = 256;

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
