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
use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber};

use super::{Outlet, Progress, TaskOperator, input_observed, start};

/// Items a timeout's lane holds.
const LANE_CAPACITY: usize = 256;

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
    metrics: Arc<BufferMetrics>,
}

impl<P> Timeout<P> {
    pub(crate) fn new(upstream: P, silence: Duration, on_silence: OnSilence) -> Self {
        Self {
            upstream,
            silence,
            on_silence,
            metrics: BufferMetrics::new("timeout", LANE_CAPACITY),
        }
    }

    /// The counters of the timeout's input lane.
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

impl<T: Send + 'static, P: Publisher<T>> Publisher<T> for Timeout<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.metrics.clone());
        start("timeout", subscriber, || TimeoutTask {
            lane: input_observed(self.upstream, self.metrics),
            silence: self.silence,
            on_silence: self.on_silence,
            timer: Box::pin(tokio::time::sleep(self.silence)),
            armed: false,
        });
    }
}

struct TimeoutTask<T> {
    lane: Lane<T>,
    silence: Duration,
    on_silence: OnSilence,
    timer: Pin<Box<Sleep>>,
    /// The timer runs only while the downstream waits for an item.
    armed: bool,
}

impl<T: Send + 'static> TaskOperator<T> for TimeoutTask<T> {
    fn advance<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        match self.lane.poll_lane(cx) {
            Poll::Ready(LaneEvent::Ended(result)) => return Progress::Done(result),
            Poll::Ready(LaneEvent::Items) if demand > 0 => {
                out.emit_from(&mut self.lane, demand);
                out.flush();
                self.armed = false; // an item came: the silence starts again
                return Progress::Again;
            }
            // Items but no demand: the downstream is the slow one, not the upstream.
            Poll::Ready(LaneEvent::Items) => {
                self.armed = false;
                return Progress::Wait;
            }
            Poll::Pending if demand == 0 => {
                self.armed = false;
                return Progress::Wait;
            }
            Poll::Pending => {}
        }
        // The downstream waits and the upstream is silent.
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.silence);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Progress::Wait;
        }
        // Ending drops the lane, which cancels the upstream.
        Progress::Done(match self.on_silence {
            OnSilence::Fail => {
                Err(Error::new(ErrorKind::Timeout(self.silence)).in_stage("timeout"))
            }
            OnSilence::Complete => Ok(()),
        })
    }
}
