//! `batch(max_items, max_wait)`: groups items into `Vec`s, emitted when full or when the oldest item
//! has waited `max_wait`, and never more batches than requested.
//!
//! The upstream is read through a [`Lane`] of `max_items` slots, so while the downstream has no
//! demand the operator holds at most one full batch plus one lane: it stops asking the upstream for
//! items instead of buffering without bound (a known pain point of time-or-size batching elsewhere).
//! Batches are `Vec`s: they leave the operator by value and are usually hundreds of items, so inline
//! storage (`SmallVec`) would either be huge or spill anyway; one allocation per batch is amortised
//! over its items.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::{Outlet, Progress, TaskOperator, input_observed, start};

/// See [`PublisherExt::batch`](crate::PublisherExt::batch).
#[derive(Debug)]
pub struct Batch<P> {
    upstream: P,
    max_items: usize,
    max_wait: Duration,
    metrics: Arc<BufferMetrics>,
}

impl<P> Batch<P> {
    pub(crate) fn new(upstream: P, max_items: usize, max_wait: Duration) -> Self {
        Self {
            upstream,
            max_items,
            max_wait,
            metrics: BufferMetrics::new("batch", max_items.max(1)),
        }
    }

    /// The counters of the batch's input lane (depth, items in / out, oldest-item age).
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

impl<T, P> Publisher<Vec<T>> for Batch<P>
where
    P: Publisher<T>,
    T: Send + 'static,
{
    fn subscribe<S: Subscriber<Vec<T>>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.metrics.clone());
        if self.max_items == 0 {
            let error = Error::msg("a batch needs max_items of at least 1").in_stage("batch");
            return reject(subscriber, error);
        }
        start("batch", subscriber, || BatchTask {
            lane: input_observed(self.upstream, self.metrics),
            max_items: self.max_items,
            max_wait: self.max_wait,
            batch: Vec::with_capacity(self.max_items),
            timer: Box::pin(tokio::time::sleep_until(deadline(self.max_wait))),
            timing: false,
            ended: None,
        });
    }
}

/// `max_wait` from now, or a century away for waits too long to add (`Duration::MAX` = no timeout).
fn deadline(max_wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(max_wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

struct BatchTask<T> {
    lane: Lane<T>,
    max_items: usize,
    max_wait: Duration,
    batch: Vec<T>,
    /// Fires `max_wait` after the current batch's first item.
    timer: Pin<Box<Sleep>>,
    timing: bool,
    /// The upstream's terminal signal, once it came.
    ended: Option<Result<(), Error>>,
}

impl<T: Send + 'static> BatchTask<T> {
    /// Pulls items from the lane into the open batch; returns whether anything moved.
    fn fill(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ended.is_some() || self.batch.len() == self.max_items {
            return false;
        }
        match self.lane.poll_lane(cx) {
            Poll::Ready(LaneEvent::Items) => {
                let room = self.max_items - self.batch.len();
                let taken = self.lane.pop_into(&mut self.batch, room);
                // The clock is read only for a batch that stays open: one filled in this pass
                // leaves at once. (Its first item came in this pass, so the wait starts now.)
                if !self.timing && !self.batch.is_empty() && self.batch.len() < self.max_items {
                    self.timing = true;
                    self.timer.as_mut().reset(deadline(self.max_wait));
                }
                taken > 0
            }
            Poll::Ready(LaneEvent::Ended(result)) => {
                self.ended = Some(result);
                true
            }
            Poll::Pending => false,
        }
    }

    /// Whether the open batch should go now.
    fn due(&mut self, cx: &mut Context<'_>) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        self.batch.len() == self.max_items
            || self.ended.is_some()
            || (self.timing && self.timer.as_mut().poll(cx).is_ready())
    }

    fn emit<S: Subscriber<Vec<T>>>(&mut self, out: &mut Outlet<S>) {
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(self.max_items));
        self.timing = false;
        out.reshaped(full.len() as u64, 1);
        out.emit(full);
        out.flush();
    }
}

impl<T: Send + 'static> TaskOperator<Vec<T>> for BatchTask<T> {
    fn held(&self) -> u64 {
        self.batch.len() as u64
    }

    fn advance<S: Subscriber<Vec<T>>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        let moved = self.fill(cx);
        if self.due(cx) {
            if demand > 0 {
                self.emit(out);
                return Progress::Again;
            }
            // A full batch waits for demand: the lane fills, then the upstream stops.
            if let Some(Err(error)) = self.ended.take() {
                let dropped = self.batch.len();
                tracing::warn!(stage = "batch", dropped, %error, "upstream failed while a batch waited for demand");
                return Progress::Done(Err(error));
            }
            return Progress::Wait;
        }
        if self.batch.is_empty()
            && let Some(result) = self.ended.take()
        {
            return Progress::Done(result);
        }
        if moved {
            Progress::Again
        } else {
            Progress::Wait // for items or the timer
        }
    }
}
