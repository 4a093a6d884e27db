//! [`JetStreamSource`]: a durable pull consumer whose fetches follow downstream demand.
//!
//! The source runs one task that owns an inbox subscription. Demand becomes pull requests: with
//! `d` items requested and `o` already asked of the server, it sends pulls of
//! `min(d - o, max_batch)` items, at most `max_pulls` of them waiting at once. So the messages
//! asked of the broker never exceed what downstream asked for, and every message that arrives has
//! demand waiting for it: the source holds no buffer. Pulls wait at the server up to `expires`
//! for messages; one that ends unfilled (status 408 with the count it did not deliver) is settled
//! and, if demand remains, replaced.
//!
//! Each message becomes a [`Delivery`] carrying its [`Ack`]: at-least-once, the broker
//! delivers it again unless someone settles it (see [`crate::delivery`]).
//!
//! Failures and recovery:
//! - A reconnect (the client counts connections) or a pull unanswered well past its expiry means
//!   the server may have forgotten the pull: it is given up (counted as `pulls_lost`) and
//!   demand is pulled again. Should a forgotten pull still deliver, a message with no demand
//!   waiting is nak'ed at once (`excess`), never emitted past demand.
//! - "No responders" to a pull (JetStream restarting, a cluster electing a leader) backs off and
//!   retries; after `unavailable_timeout` of nothing else the stream fails with the error.
//! - A deleted consumer, a push consumer, or a pull refused by the consumer's limits fails the
//!   stream with [`NatsError::ConsumerUnusable`].
//! - On cancel the task stays until its pulls end, then nak's what arrived meanwhile
//!   (`released`), so nothing waits for the ack wait to be delivered again, and nothing comes
//!   straight back into the source's own open pulls.
//!
//! [`SourceStop::stop`] ends the stream gracefully: no new pulls, the waiting ones run out
//! (within `expires`), what they bring is emitted, then `on_complete`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, Message, StatusCode, Subject};
use futures::StreamExt;
use futures::task::AtomicWaker;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use weir_runtime::task::{Next, TaskSubscription};
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

use crate::NatsError;
use crate::delivery::{Ack, Acker, Decision, Delivery};
use crate::metrics::SourceMetrics;

/// Messages handled per poll before the task yields to the scheduler.
const POLL_BUDGET: usize = 4096;
/// Messages handled in a burst between two looks at whether more can be pulled.
const REFILL_EVERY: usize = 32;
/// Settlements sent per wake-up of the acker task.
const ACK_BATCH: usize = 256;
/// The longest wait between retries of a pull that found no responders.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Settings of a [`JetStreamSource`].
#[derive(Debug, Clone)]
pub struct SourceConfig {
    name: String,
    stream: String,
    consumer: String,
    max_batch: usize,
    max_pulls: usize,
    expires: Duration,
    lag_interval: Duration,
    unavailable_timeout: Duration,
}

impl SourceConfig {
    /// A source named `name` (its stage name) reading the durable pull consumer `consumer` of
    /// `stream`. Defaults: pulls of at most 256 messages, 2 waiting at once, expiring after 2 s;
    /// lag polled every second; JetStream may be unavailable for 60 s before the stream fails.
    pub fn new(name: &str, stream: &str, consumer: &str) -> Self {
        Self {
            name: name.to_owned(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            max_batch: 256,
            max_pulls: 2,
            expires: Duration::from_secs(2),
            lag_interval: Duration::from_secs(1),
            unavailable_timeout: Duration::from_secs(60),
        }
    }

    /// The most messages one pull asks for (at least 1).
    pub fn max_batch(mut self, messages: usize) -> Self {
        self.max_batch = messages;
        self
    }

    /// How many pulls may wait at the server at once (at least 1; 2 keeps the next batch coming
    /// while the last one is processed).
    pub fn max_pulls(mut self, pulls: usize) -> Self {
        self.max_pulls = pulls;
        self
    }

    /// How long a pull waits at the server for messages (at least 1 ms). Also bounds how long
    /// [`SourceStop::stop`] takes.
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }

    /// How often the consumer's lag is read from the server.
    pub fn lag_interval(mut self, interval: Duration) -> Self {
        self.lag_interval = interval;
        self
    }

    /// How long pulls may find no JetStream responders before the stream fails.
    pub fn unavailable_timeout(mut self, timeout: Duration) -> Self {
        self.unavailable_timeout = timeout;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), NatsError> {
        let bad = |what: &str| {
            Err(NatsError::ConsumerUnusable {
                stream: self.stream.clone(),
                consumer: self.consumer.clone(),
                reason: format!("source `{}`: {what}", self.name),
            })
        };
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1");
        }
        if self.max_pulls == 0 {
            return bad("max_pulls must be at least 1");
        }
        if self.expires < Duration::from_millis(1) {
            return bad("expires must be at least 1 ms");
        }
        Ok(())
    }
}

/// Ends a [`JetStreamSource`]'s stream gracefully; see [`SourceStop::stop`].
#[derive(Debug, Clone, Default)]
pub struct SourceStop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    waker: AtomicWaker,
}

impl SourceStop {
    /// Stops pulling: pulls waiting at the server run out (within the source's `expires`), what
    /// they deliver is emitted, then the stream completes.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }
}

/// A publisher of the messages of a durable JetStream pull consumer, each as a
/// [`Delivery<Message>`](Delivery) (the message's `reply` moves into the delivery's [`Ack`]).
/// Serves one subscriber. See the [module documentation](self).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir_nats::{JetStreamSource, SourceConfig};
/// use weir_operators::PublisherExt;
/// let jetstream = async_nats::jetstream::new(weir_nats::connect("nats://127.0.0.1:4222").await?);
/// let source = JetStreamSource::bind(&jetstream, SourceConfig::new("orders", "ORDERS", "billing")).await?;
/// let stop = source.stopper();
/// let handled = source
///     .map(|delivery| delivery.map(|message| message.payload.len()))
///     .fold(0usize, |total, delivery| {
///         *total += *delivery.value();
///         delivery.ack(); // done with it: the broker will not deliver it again
///     });
/// stop.stop();
/// println!("{} bytes", handled.await?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JetStreamSource {
    config: Arc<SourceConfig>,
    consumer: Arc<PullConsumer>,
    client: Client,
    inbox: Subject,
    subscription: async_nats::Subscriber,
    metrics: Arc<SourceMetrics>,
    stop: SourceStop,
}

impl JetStreamSource {
    /// Binds to the existing durable pull consumer named in `config`. A missing stream or
    /// consumer is a clear error ([`NatsError::StreamNotFound`], [`NatsError::ConsumerNotFound`]).
    pub async fn bind(
        jetstream: &jetstream::Context,
        config: SourceConfig,
    ) -> Result<Self, NatsError> {
        config.check()?;
        let stream = jetstream
            .get_stream(&config.stream)
            .await
            .map_err(|error| match error.kind() {
                GetStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    NatsError::StreamNotFound {
                        stream: config.stream.clone(),
                    }
                }
                _ => NatsError::broker(format!("look up stream `{}`", config.stream), error),
            })?;
        let not_found = || NatsError::ConsumerNotFound {
            stream: config.stream.clone(),
            consumer: config.consumer.clone(),
        };
        let info = stream
            .consumer_info(&config.consumer)
            .await
            .map_err(|error| match error.kind() {
                ConsumerInfoErrorKind::NotFound => not_found(),
                ConsumerInfoErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND =>
                {
                    not_found()
                }
                _ => NatsError::broker(
                    format!(
                        "look up consumer `{}` of `{}`",
                        config.consumer, config.stream
                    ),
                    error,
                ),
            })?;
        if info.config.deliver_subject.is_some() {
            return Err(NatsError::ConsumerUnusable {
                stream: config.stream.clone(),
                consumer: config.consumer.clone(),
                reason: "it is a push consumer; the source needs a pull consumer".to_owned(),
            });
        }
        let consumer: PullConsumer =
            stream
                .get_consumer(&config.consumer)
                .await
                .map_err(|error| NatsError::ConsumerUnusable {
                    stream: config.stream.clone(),
                    consumer: config.consumer.clone(),
                    reason: error.to_string(),
                })?;
        let client = jetstream.client();
        let inbox = Subject::from(client.new_inbox());
        let subscription = client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| NatsError::broker("subscribe to the source's inbox", error))?;
        Ok(Self {
            metrics: Arc::new(SourceMetrics::new(&config.name)),
            config: Arc::new(config),
            consumer: Arc::new(consumer),
            client,
            inbox,
            subscription,
            stop: SourceStop::default(),
        })
    }

    /// The source's live counters (deliveries, settlements, pulls, consumer lag).
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// A handle that ends the stream gracefully.
    pub fn stopper(&self) -> SourceStop {
        self.stop.clone()
    }
}

impl Publisher<Delivery<Message>> for JetStreamSource {
    fn subscribe<S: Subscriber<Delivery<Message>>>(self, mut subscriber: S) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let error = Error::new(ErrorKind::NoRuntime).in_stage(self.config.name.clone());
            reject(subscriber, error);
            return;
        };
        let (queue, settlements) = mpsc::unbounded_channel();
        runtime.spawn(send_settlements(self.client.clone(), settlements));
        let acker = Acker::new(queue, self.metrics.clone());
        let (lag_done, lag_stop) = oneshot::channel();
        runtime.spawn(poll_lag(
            self.consumer.clone(),
            self.metrics.clone(),
            self.config.lag_interval,
            lag_stop,
        ));
        let shared = Arc::new(TaskSubscription::default());
        subscriber.on_subscribe(Subscription::new(shared.clone()));
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        runtime.spawn(SourceTask {
            subscriber: Some(subscriber),
            shared,
            inbox: self.subscription,
            reply_to: self.inbox,
            client: self.client,
            consumer: self.consumer,
            config: self.config,
            pulls: VecDeque::new(),
            outstanding: 0,
            sending: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            acker,
            metrics: self.metrics,
            stop: self.stop,
            connects,
            backoff: Duration::ZERO,
            retry_at: None,
            unavailable_since: None,
            held: Vec::new(),
            _lag_done: lag_done,
        });
    }
}

/// Sends settlements in order, a batch per wake-up. Ends when every [`Ack`] and the source are gone.
async fn send_settlements(client: Client, mut queue: mpsc::UnboundedReceiver<(Subject, Decision)>) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while queue.recv_many(&mut batch, ACK_BATCH).await > 0 {
        for (reply, decision) in batch.drain(..) {
            if let Err(error) = client.publish(reply, decision.payload()).await {
                // The client is closed: the broker redelivers after the ack wait.
                tracing::debug!(%error, "could not send an acknowledgement");
            }
        }
    }
}

/// Reads the consumer's lag every `interval` until the source task ends.
async fn poll_lag(
    consumer: Arc<PullConsumer>,
    metrics: Arc<SourceMetrics>,
    interval: Duration,
    mut done: oneshot::Receiver<()>,
) {
    let mut last = (Instant::now(), metrics.settled());
    loop {
        tokio::select! {
            _ = &mut done => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match consumer.get_info().await {
            Ok(info) => {
                let now = (Instant::now(), metrics.settled());
                let secs = now.0.duration_since(last.0).as_secs_f64();
                let rate = if secs > 0.0 {
                    now.1.saturating_sub(last.1) as f64 / secs
                } else {
                    0.0
                };
                last = now;
                metrics
                    .num_pending
                    .store(info.num_pending, Ordering::Relaxed);
                metrics
                    .num_ack_pending
                    .store(info.num_ack_pending as u64, Ordering::Relaxed);
                metrics
                    .num_waiting
                    .store(info.num_waiting as u64, Ordering::Relaxed);
                metrics
                    .num_redelivered
                    .store(info.num_redelivered as u64, Ordering::Relaxed);
                metrics.settle_rate.store(rate.to_bits(), Ordering::Relaxed);
                metrics.lag_known.store(true, Ordering::Relaxed);
            }
            Err(error) => {
                metrics.lag_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "could not read the consumer's lag");
            }
        }
    }
}

/// A pull waiting at the server.
#[derive(Debug)]
struct Pull {
    /// Messages it may still deliver.
    remaining: u64,
    /// When it is given up for lost if the server said nothing.
    deadline: Instant,
}

type Sending = Pin<Box<dyn Future<Output = Result<(), NatsError>> + Send>>;

struct SourceTask<S> {
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

// No field is structurally pinned (the timer and the send are boxed), so moving the task is fine.
impl<S> Unpin for SourceTask<S> {}

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
            let demand = match this.shared.poll_next(cx) {
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
                        if accepted < demand {
                            let delivery =
                                Delivery::new(message, Ack::new(reply, this.acker.clone()));
                            let subscriber = this.subscriber.as_mut().expect("running");
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

    /// Accounts for a burst of `accepted` emitted items and tells the subscriber the source paused.
    fn finish_burst(&mut self, accepted: u64) {
        self.metrics
            .outstanding
            .store(self.outstanding, Ordering::Relaxed);
        if accepted == 0 {
            return;
        }
        self.shared.demand().consume(accepted);
        self.metrics.emitted.fetch_add(accepted, Ordering::Relaxed);
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
