//! The task behind one subscription of a [`JetStreamSource`](super::JetStreamSource): pulls as
//! demand allows, emits what arrives, settles what it cannot emit.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::{Client, Message, StatusCode, Subject};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use weir_runtime::kit::{Next, TaskSubscription};
use weir_runtime::{Error, ErrorKind, Subscriber};

use crate::NatsError;
use crate::delivery::{Ack, Acker, Delivery};
use crate::metrics::SourceMetrics;

use super::config::{SourceConfig, SourceStop};

/// Messages handled per poll before the task yields to the scheduler.
const POLL_BUDGET: usize = 4096;
/// Messages handled in a burst between two looks at whether more can be pulled.
const REFILL_EVERY: usize = 32;
/// The longest wait between retries of a pull that found no responders.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A pull waiting at the server.
#[derive(Debug)]
struct Pull {
    /// Messages it may still deliver.
    remaining: u64,
    /// When it is given up for lost if the server said nothing.
    deadline: Instant,
}

type Sending = Pin<Box<dyn Future<Output = Result<(), NatsError>> + Send>>;

pub(super) struct SourceTask<S> {
    /// `None` once cancelled: the task only releases what still arrives.
    subscriber: Option<S>,
    shared: Arc<TaskSubscription>,
    inbox: async_nats::Subscriber,
    reply_to: Subject,
    client: Client,
    consumer: Arc<PullConsumer>,
    config: Arc<SourceConfig>,
    pulls: VecDeque<Pull>,
    /// Messages asked for and not arrived: the sum of the pulls' `remaining`.
    outstanding: u64,
    /// A pull request on its way to the connection.
    sending: Option<Sending>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    acker: Arc<Acker>,
    metrics: Arc<SourceMetrics>,
    stop: SourceStop,
    /// The client's connection count when the pulls were sent.
    connects: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    unavailable_since: Option<Instant>,
    /// Ack subjects of messages that arrived after the cancel, nak'ed when the pulls end.
    held: Vec<Subject>,
    /// Dropped with the task: ends the lag poller.
    _lag_done: oneshot::Sender<()>,
}

impl<S> SourceTask<S> {
    /// The task of a subscription: it owns the inbox and pulls as `subscriber` asks.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        subscriber: S,
        shared: Arc<TaskSubscription>,
        (inbox, reply_to): (async_nats::Subscriber, Subject),
        client: Client,
        consumer: Arc<PullConsumer>,
        config: Arc<SourceConfig>,
        acker: Arc<Acker>,
        metrics: Arc<SourceMetrics>,
        stop: SourceStop,
        lag_done: oneshot::Sender<()>,
    ) -> Self {
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        Self {
            subscriber: Some(subscriber),
            shared,
            inbox,
            reply_to,
            client,
            consumer,
            config,
            pulls: VecDeque::new(),
            outstanding: 0,
            sending: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            acker,
            metrics,
            stop,
            connects,
            backoff: Duration::ZERO,
            retry_at: None,
            unavailable_since: None,
            held: Vec::new(),
            _lag_done: lag_done,
        }
    }
}

// No field is structurally pinned (the timer and the send are boxed), so moving the task is fine.
impl<S> Unpin for SourceTask<S> {}

/// Dropped with messages still held for release (the runtime shut down before the pulls ended):
/// counted as `released` when they arrived, their naks are never sent, so they count in
/// `ack_send_failed` as well (the broker redelivers them after the ack wait).
impl<S> Drop for SourceTask<S> {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            self.metrics
                .ack_send_failed
                .fetch_add(self.held.len() as u64, Ordering::Relaxed);
        }
    }
}

/// What one message on the inbox means.
enum Incoming {
    /// A message and its ack subject.
    Data(Message, Subject),
    /// The oldest pull ended without delivering the rest.
    PullEnded,
    /// The newest pull was refused without being queued (try again later).
    PullRefused,
    /// No JetStream answered the newest pull.
    Unavailable,
    Fatal(NatsError),
    Ignore,
}

impl<S: Subscriber<Delivery<Message>>> Future for SourceTask<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.subscriber.is_none() {
            return this.poll_release(cx);
        }
        this.stop.0.waker.register(cx.waker());
        let mut handled = 0;
        loop {
            let mut demand = match this.shared.poll_next(cx) {
                Next::Emit(n) => n,
                Next::Wait => 0,
                Next::Cancelled => return this.cancelled(cx),
                Next::BadRequest => return this.fail(Error::new(ErrorKind::RequestZero)),
            };
            this.check_pulls();
            // Take everything that arrived: every message was asked for, so it has demand.
            let mut accepted = 0;
            loop {
                if handled >= POLL_BUDGET {
                    this.finish_burst(accepted);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let message = match this.inbox.poll_next_unpin(cx) {
                    Poll::Ready(Some(message)) => message,
                    Poll::Ready(None) => {
                        this.finish_burst(accepted);
                        return this.fail(Error::msg("the NATS connection was closed"));
                    }
                    Poll::Pending => break,
                };
                handled += 1;
                if handled % REFILL_EVERY == 0 {
                    // A long burst (slow processing downstream): ask for what was requested
                    // meanwhile now, so that it waits at the inbox when the burst ends.
                    if let Err(done) = this.refill(cx, accepted) {
                        this.finish_burst(accepted);
                        return done;
                    }
                }
                match this.classify(message) {
                    Incoming::Data(message, reply) => {
                        if accepted >= demand
                            && let Next::Emit(now) = this.shared.poll_next(cx)
                        {
                            // Requested during the burst (and pulled for by the refill above):
                            // the demand seen at its start is not all there is.
                            demand = now;
                        }
                        if accepted < demand {
                            let delivery =
                                Delivery::new(message, Ack::new(reply, this.acker.clone()));
                            let subscriber = this.subscriber.as_mut().expect("running");
                            // Emitted whether or not it takes demand: one a fused filter declines
                            // was handed over too (and is settled there).
                            this.metrics.emitted.fetch_add(1, Ordering::Relaxed);
                            accepted += u64::from(subscriber.try_on_next(delivery));
                        } else {
                            this.metrics.excess.fetch_add(1, Ordering::Relaxed);
                            this.acker.release(reply);
                        }
                    }
                    Incoming::PullEnded => {
                        if let Some(pull) = this.pulls.pop_front() {
                            this.outstanding -= pull.remaining;
                            this.metrics.pulls_expired.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Incoming::PullRefused => {
                        this.drop_newest_pull();
                        this.back_off();
                    }
                    Incoming::Unavailable => {
                        this.drop_newest_pull();
                        this.back_off();
                        let since = *this.unavailable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= this.config.unavailable_timeout {
                            this.finish_burst(accepted);
                            let error = NatsError::ConsumerUnusable {
                                stream: this.config.stream.clone(),
                                consumer: this.config.consumer.clone(),
                                reason: format!(
                                    "no JetStream responders for {:?}",
                                    this.config.unavailable_timeout
                                ),
                            };
                            return this.fail_with(error);
                        }
                    }
                    Incoming::Fatal(error) => {
                        this.finish_burst(accepted);
                        return this.fail_with(error);
                    }
                    Incoming::Ignore => {}
                }
            }
            this.finish_burst(accepted);
            if this.stop.is_stopped() && this.pulls.is_empty() && this.sending.is_none() {
                if let Some(mut subscriber) = this.subscriber.take() {
                    subscriber.on_complete();
                }
                return Poll::Ready(());
            }
            match this.poll_sending(cx) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(done) => return done,
            }
            if this.start_pull(0) {
                continue;
            }
            if this.poll_timer(cx) {
                continue;
            }
            return match this.shared.watch(cx) {
                Next::Cancelled | Next::BadRequest => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Pending,
            };
        }
    }
}

impl<S: Subscriber<Delivery<Message>>> SourceTask<S> {
    fn classify(&mut self, mut message: Message) -> Incoming {
        let unusable = |reason: String| {
            Incoming::Fatal(NatsError::ConsumerUnusable {
                stream: self.config.stream.clone(),
                consumer: self.config.consumer.clone(),
                reason,
            })
        };
        match message.status {
            None | Some(StatusCode::OK) => {
                let Some(reply) = message.reply.take() else {
                    return unusable(format!(
                        "a message on `{}` came without an ack subject",
                        message.subject
                    ));
                };
                self.metrics.fetched.fetch_add(1, Ordering::Relaxed);
                self.outstanding = self.outstanding.saturating_sub(1);
                if let Some(front) = self.pulls.front_mut() {
                    front.remaining -= 1;
                    if front.remaining == 0 {
                        self.pulls.pop_front();
                    }
                }
                self.unavailable_since = None;
                self.backoff = Duration::ZERO;
                Incoming::Data(message, reply)
            }
            Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => Incoming::PullEnded,
            Some(StatusCode::IDLE_HEARTBEAT) => Incoming::Ignore,
            Some(StatusCode::NO_RESPONDERS) => Incoming::Unavailable,
            Some(StatusCode::REQUEST_TERMINATED) => {
                let description = message.description.take().unwrap_or_default();
                let has_pending = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Pending-Messages"))
                    .is_some();
                if description.starts_with("Exceeded MaxWaiting") {
                    Incoming::PullRefused
                } else if has_pending && !description.contains("Consumer Deleted") {
                    Incoming::PullEnded
                } else {
                    unusable(description)
                }
            }
            Some(status) => unusable(format!(
                "unexpected status {status} ({})",
                message.description.unwrap_or_default()
            )),
        }
    }

    /// Accounts for the demand `accepted` items of a burst took and tells the subscriber the
    /// source paused.
    fn finish_burst(&mut self, accepted: u64) {
        self.metrics
            .outstanding
            .store(self.outstanding, Ordering::Relaxed);
        if accepted == 0 {
            return;
        }
        self.shared.demand().consume(accepted);
        if let Some(subscriber) = self.subscriber.as_mut() {
            subscriber.on_flush();
        }
    }

    fn fail_with(&mut self, error: NatsError) -> Poll<()> {
        let error = error.in_stage(&self.config.name);
        self.fail(error)
    }

    fn fail(&mut self, error: Error) -> Poll<()> {
        let error = error.in_stage(self.config.name.clone());
        tracing::warn!(%error, "JetStream source failed");
        if let Some(mut subscriber) = self.subscriber.take() {
            subscriber.on_error(error);
        }
        Poll::Ready(())
    }

    /// The subscriber cancelled: drop it and stay until the pulls end, releasing what arrives.
    fn cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.subscriber = None;
        self.sending = None;
        self.poll_release(cx)
    }

    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            self.check_pulls();
            loop {
                match self.inbox.poll_next_unpin(cx) {
                    Poll::Ready(Some(message)) => match self.classify(message) {
                        Incoming::Data(_, reply) => {
                            // Nak'ed once the pulls ended: nak'ed now, it would come straight
                            // back into this source's own open pull (and use up a delivery).
                            self.metrics.released.fetch_add(1, Ordering::Relaxed);
                            self.held.push(reply);
                        }
                        Incoming::PullEnded => {
                            if let Some(pull) = self.pulls.pop_front() {
                                self.outstanding -= pull.remaining;
                            }
                        }
                        Incoming::PullRefused | Incoming::Unavailable => self.drop_newest_pull(),
                        Incoming::Fatal(_) => self.pulls.clear(),
                        Incoming::Ignore => {}
                    },
                    Poll::Ready(None) => return self.released(),
                    Poll::Pending => break,
                }
            }
            if self.pulls.is_empty() {
                return self.released();
            }
            if !self.poll_timer(cx) {
                return Poll::Pending;
            }
        }
    }

    /// The pulls ended: gives back what arrived after the cancel, for other consumers.
    fn released(&mut self) -> Poll<()> {
        for reply in self.held.drain(..) {
            self.acker.release(reply);
        }
        Poll::Ready(())
    }

    /// Gives up pulls the server may have forgotten: all of them after a reconnect, and any
    /// unanswered past its deadline.
    fn check_pulls(&mut self) {
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let now = Instant::now();
        let lost = if connects != self.connects {
            self.connects = connects;
            self.pulls.len()
        } else {
            self.pulls
                .iter()
                .take_while(|pull| pull.deadline <= now)
                .count()
        };
        for pull in self.pulls.drain(..lost) {
            self.outstanding -= pull.remaining;
            self.metrics.pulls_lost.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics
            .outstanding
            .store(self.outstanding, Ordering::Relaxed);
    }

    fn drop_newest_pull(&mut self) {
        if let Some(pull) = self.pulls.pop_back() {
            self.outstanding -= pull.remaining;
        }
    }

    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    /// Polls the pull request on its way out; `Ok(true)` when it was sent.
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Result<bool, Poll<()>> {
        let Some(sending) = self.sending.as_mut() else {
            return Ok(false);
        };
        match sending.as_mut().poll(cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(())) => {
                self.sending = None;
                Ok(true)
            }
            Poll::Ready(Err(error)) => {
                self.sending = None;
                Err(self.fail_with(error))
            }
        }
    }

    /// Mid-burst: starts (and hands to the connection) a pull for demand not yet asked of the
    /// server, `accepted` items of the demand being emitted already.
    fn refill(&mut self, cx: &mut Context<'_>, accepted: u64) -> Result<(), Poll<()>> {
        while self.sending.is_some() || self.start_pull(accepted) {
            if !self.poll_sending(cx)? {
                break;
            }
        }
        Ok(())
    }

    /// Starts a pull for demand not yet asked of the server (`accepted` items of the counted
    /// demand were emitted in the current burst); `true` if one was started.
    fn start_pull(&mut self, accepted: u64) -> bool {
        match self.retry_at {
            Some(at) if Instant::now() < at => return false,
            Some(_) => self.retry_at = None,
            None => {}
        }
        if self.sending.is_some()
            || self.stop.is_stopped()
            || self.pulls.len() >= self.config.max_pulls
        {
            return false;
        }
        let uncovered = self
            .shared
            .demand()
            .get()
            .saturating_sub(accepted)
            .saturating_sub(self.outstanding);
        if uncovered == 0 {
            return false;
        }
        let size = uncovered.min(self.config.max_batch as u64);
        let expires = self.config.expires;
        let grace = (expires / 2).max(Duration::from_secs(1));
        self.pulls.push_back(Pull {
            remaining: size,
            deadline: Instant::now() + expires + grace,
        });
        self.outstanding += size;
        self.metrics.pulls.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .outstanding
            .store(self.outstanding, Ordering::Relaxed);
        let consumer = self.consumer.clone();
        let inbox = self.reply_to.clone();
        let request = BatchConfig {
            batch: size as usize,
            expires: Some(expires),
            ..BatchConfig::default()
        };
        self.sending = Some(Box::pin(async move {
            consumer
                .request_batch(request, inbox)
                .await
                .map_err(|error| NatsError::broker("send a pull request", error))
        }));
        true
    }

    /// Arms the timer for the next deadline (a pull's, or the end of a back-off); `true` if it
    /// already passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let next = self
            .pulls
            .front()
            .map(|pull| pull.deadline)
            .into_iter()
            .chain(self.retry_at)
            .min();
        let Some(at) = next else {
            return false;
        };
        if self.timer_at != Some(at) {
            self.timer.as_mut().reset(at);
            self.timer_at = Some(at);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            return true;
        }
        false
    }
}
