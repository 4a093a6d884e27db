//! [`JetStreamSink`]: publishes with JetStream acknowledgements and message ids, at most
//! `max_in_flight` unconfirmed at once.
//!
//! Every publish carries a message id (`Nats-Msg-Id`), so when a publish is retried (its
//! confirmation timed out, the connection broke) the stream's duplicate window stores it once.
//! The id is the item's own when it has one; a [`Delivery`] from a [`JetStreamSource`](crate::source::JetStreamSource)
//! gets `<stream>.<sequence>` of the message it came from, so a redelivered input (a worker
//! crashed before acknowledging it) is deduplicated too; otherwise the sink numbers its publishes.
//!
//! Items are [`Outgoing`]: an [`OutMessage`], or a `Delivery<OutMessage>` whose [`Ack`] is
//! settled once the broker confirmed the publish (end-to-end at-least-once: the input is
//! acknowledged only when its output is stored). Transient errors (timeouts, a broken
//! connection, JetStream briefly unavailable during a restart or a leader election) are retried
//! with exponential backoff up to `give_up_after`; then, or at once for errors a retry cannot fix
//! (payload too large, a subject no stream takes), the stream fails with the error naming the
//! stage, and what was in flight is nak'ed for redelivery.
//!
//! [`JetStreamSink::bind`] checks that the stream exists and takes the sink's subject, so a
//! misconfiguration is a clear error at start ([`NatsError::StreamNotFound`],
//! [`NatsError::SubjectNotBound`]) rather than a timeout later.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription};

use crate::NatsError;
use crate::delivery::{Ack, Delivery};
use crate::metrics::{Publishing, SinkMetrics, SinkSnapshot};

/// Settings of a [`JetStreamSink`].
#[derive(Debug, Clone)]
pub struct SinkConfig {
    name: String,
    stream: String,
    subject: String,
    max_in_flight: usize,
    first_backoff: Duration,
    max_backoff: Duration,
    give_up_after: Duration,
}

impl SinkConfig {
    /// A sink named `name` (its stage name) publishing to `subject`, which `stream` must take.
    /// Defaults: 256 publishes in flight; retries after 50 ms, doubling up to 2 s, for 60 s.
    pub fn new(name: &str, stream: &str, subject: &str) -> Self {
        Self {
            name: name.to_owned(),
            stream: stream.to_owned(),
            subject: subject.to_owned(),
            max_in_flight: 256,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }

    /// The most publishes awaiting confirmation at once: the sink's demand (at least 1).
    pub fn max_in_flight(mut self, publishes: usize) -> Self {
        self.max_in_flight = publishes.max(1);
        self
    }

    /// The first and the longest wait between retries of a publish.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How long a publish is retried before the stream fails.
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = limit;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most publishes in flight.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct OutMessage {
    /// Where to publish (the sink's subject when `None`).
    pub subject: Option<Subject>,
    /// The body.
    pub payload: Bytes,
    /// The idempotency key for the stream's duplicate window (generated when `None`).
    pub id: Option<String>,
    /// Headers to send.
    pub headers: Option<HeaderMap>,
}

impl OutMessage {
    /// A message with `payload`, to the sink's subject.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Publishes to `subject` instead of the sink's.
    pub fn subject(mut self, subject: impl Into<Subject>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the message id the broker dedupes on.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// What a [`JetStreamSink`] takes: a message, and the handle to settle once it is stored.
pub trait Outgoing: Send + 'static {
    /// The message and its settlement handle ([`Ack::detached`] when there is none).
    fn into_outgoing(self) -> (OutMessage, Ack);
}

impl Outgoing for OutMessage {
    fn into_outgoing(self) -> (OutMessage, Ack) {
        (self, Ack::detached())
    }
}

impl Outgoing for Delivery<OutMessage> {
    /// A message without an id gets `<stream>.<sequence>` of the delivery it came from.
    fn into_outgoing(self) -> (OutMessage, Ack) {
        let (mut message, ack) = self.into_parts();
        if message.id.is_none() {
            message.id = ack
                .info()
                .map(|info| format!("{}.{}", info.stream, info.stream_sequence));
        }
        (message, ack)
    }
}

/// Publishes to a JetStream stream; see the [module documentation](self). Cheap to clone.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir_nats::{sink::{JetStreamSink, OutMessage, SinkConfig}};
/// let jetstream = async_nats::jetstream::new(weir_nats::connect("nats://127.0.0.1:4222").await?);
/// let sink = JetStreamSink::bind(&jetstream, SinkConfig::new("store", "EVENTS", "events.in")).await?;
/// let events = weir_runtime::source::from_iter((0..100).map(|n| OutMessage::new(format!("{n}"))));
/// let report = sink.run(events).await?;
/// assert_eq!(report.published, 100);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JetStreamSink(Arc<SinkState>);

#[derive(Debug)]
struct SinkState {
    jetstream: jetstream::Context,
    config: SinkConfig,
    bound: Vec<String>,
    subject: Subject,
    metrics: Arc<SinkMetrics>,
    /// The prefix and counter of generated message ids.
    id_prefix: String,
    next_id: AtomicU64,
}

impl JetStreamSink {
    /// Checks that the stream exists and takes the sink's subject, and returns the sink.
    pub async fn bind(
        jetstream: &jetstream::Context,
        config: SinkConfig,
    ) -> Result<Self, NatsError> {
        let mut stream = jetstream
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
        let info = stream.info().await.map_err(|error| {
            NatsError::broker(format!("read stream `{}`", config.stream), error)
        })?;
        let bound = info.config.subjects.clone();
        if !bound
            .iter()
            .any(|pattern| subject_matches(pattern, &config.subject))
        {
            return Err(NatsError::SubjectNotBound {
                subject: config.subject.clone(),
                stream: config.stream.clone(),
                bound,
            });
        }
        let client = jetstream.client();
        Ok(Self(Arc::new(SinkState {
            jetstream: jetstream.clone(),
            subject: Subject::from(config.subject.as_str()),
            metrics: Arc::new(SinkMetrics::new(&config.name)),
            id_prefix: client.new_inbox().replace("_INBOX.", "weir-"),
            next_id: AtomicU64::new(0),
            bound,
            config,
        })))
    }

    /// The sink's live counters.
    pub fn metrics(&self) -> Arc<SinkMetrics> {
        self.0.metrics.clone()
    }

    /// The sink's settings.
    pub fn config(&self) -> &SinkConfig {
        &self.0.config
    }

    /// Publishes one item, retrying transient errors, and settles its [`Ack`] once the broker
    /// confirmed it. For a pipeline's async sink stage (`sink_async(name, input, max_in_flight,
    /// |item| sink.send(item))`), whose concurrency is then the in-flight bound.
    pub async fn send<T: Outgoing>(&self, item: T) -> Result<PublishAck, Error> {
        self.send_counted(item, self.0.metrics.start_publish())
            .await
    }

    /// [`send`](Self::send) with its place in flight taken already: `publishing` dropped before
    /// the broker answered (this future dropped) counts the item as cancelled.
    async fn send_counted<T: Outgoing>(
        &self,
        item: T,
        publishing: Publishing,
    ) -> Result<PublishAck, Error> {
        // `into_outgoing` is the user's code: a panic counts the item as failed, then goes on.
        let (message, ack) =
            match std::panic::catch_unwind(AssertUnwindSafe(|| item.into_outgoing())) {
                Ok(outgoing) => outgoing,
                Err(payload) => {
                    publishing.answered();
                    self.0.metrics.failed.fetch_add(1, Ordering::Relaxed);
                    std::panic::resume_unwind(payload);
                }
            };
        let published = self.publish(message).await;
        publishing.answered();
        match published {
            Ok(confirmed) => {
                self.0.metrics.published.fetch_add(1, Ordering::Relaxed);
                if confirmed.duplicate {
                    self.0.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                ack.ack();
                Ok(confirmed)
            }
            Err(error) => {
                self.0.metrics.failed.fetch_add(1, Ordering::Relaxed);
                // `ack` drops undecided: counted as abandoned and redelivered.
                Err(error.in_stage(&self.0.config.name))
            }
        }
    }

    async fn publish(&self, message: OutMessage) -> Result<PublishAck, NatsError> {
        let subject = message.subject.unwrap_or_else(|| self.0.subject.clone());
        if subject != self.0.subject && !self.0.bound.iter().any(|p| subject_matches(p, &subject)) {
            return Err(NatsError::SubjectNotBound {
                subject: subject.to_string(),
                stream: self.0.config.stream.clone(),
                bound: self.0.bound.clone(),
            });
        }
        let id = message.id.unwrap_or_else(|| {
            let n = self.0.next_id.fetch_add(1, Ordering::Relaxed);
            format!("{}-{n}", self.0.id_prefix)
        });
        let started = Instant::now();
        let mut backoff = self.0.config.first_backoff;
        loop {
            let mut publish = PublishMessage::build().payload(message.payload.clone());
            if let Some(headers) = &message.headers {
                publish = publish.headers(headers.clone());
            }
            let attempt = async {
                self.0
                    .jetstream
                    .send_publish(subject.clone(), publish.message_id(&id))
                    .await?
                    .await
            };
            let error = match attempt.await {
                Ok(confirmed) => return Ok(confirmed),
                Err(error) => error,
            };
            let permanent = matches!(
                error.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            );
            if permanent || started.elapsed() >= self.0.config.give_up_after {
                return Err(match error.kind() {
                    PublishErrorKind::StreamNotFound => NatsError::NoStreamForSubject {
                        subject: subject.to_string(),
                    },
                    _ => NatsError::broker(format!("publish to `{subject}`"), error),
                });
            }
            tracing::debug!(%error, %subject, "publish failed, retrying");
            self.0.metrics.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.0.config.max_backoff);
        }
    }

    /// A subscriber that publishes what it receives (demand: `max_in_flight`, renewed as
    /// publishes are confirmed), and the outcome to await: the counters when the upstream
    /// completed and everything was confirmed, or the first error.
    pub fn subscriber<T: Outgoing>(&self) -> (SinkSubscriber<T>, SinkOutcome) {
        let (events, receiver) = mpsc::unbounded_channel();
        let (done, outcome) = oneshot::channel();
        let queue = Queue {
            events: receiver,
            metrics: self.0.metrics.clone(),
        };
        let subscriber = SinkSubscriber {
            events,
            metrics: self.0.metrics.clone(),
            task: Some((self.clone(), queue, done)),
        };
        (subscriber, SinkOutcome(outcome))
    }

    /// Subscribes to `upstream` and publishes everything it emits; see [`subscriber`](Self::subscriber).
    pub async fn run<T: Outgoing, P: Publisher<T>>(
        &self,
        upstream: P,
    ) -> Result<SinkSnapshot, Error> {
        let (subscriber, outcome) = self.subscriber();
        upstream.subscribe(subscriber);
        outcome.await
    }
}

/// Whether a NATS subject pattern (`*` one token, `>` the rest) covers `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in pattern.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(token)) if want == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

enum Event<T> {
    Subscribed(Subscription),
    Item(T),
    Failed(Error),
    Completed,
}

type SinkTask<T> = (
    JetStreamSink,
    Queue<T>,
    oneshot::Sender<Result<SinkSnapshot, Error>>,
);

/// The sink task's end of the subscriber's events. The items still in it when it goes are counted
/// as cancelled (their deliveries, if any, are nak'ed as they drop): when the task ends, and when
/// the task is dropped without ending (its runtime shut down), even before it first ran.
struct Queue<T> {
    events: mpsc::UnboundedReceiver<Event<T>>,
    metrics: Arc<SinkMetrics>,
}

impl<T> Queue<T> {
    async fn recv(&mut self) -> Option<Event<T>> {
        self.events.recv().await
    }

    /// Closes the queue (the subscriber counts what it sends from now on) and counts the items
    /// left in it.
    fn close(&mut self) {
        self.events.close();
        while let Ok(event) = self.events.try_recv() {
            if let Event::Item(item) = event {
                drop(item);
                self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The subscriber of [`JetStreamSink::subscriber`]: hands items to the sink's publishing task.
pub struct SinkSubscriber<T> {
    events: mpsc::UnboundedSender<Event<T>>,
    /// Counts the items that arrive after the sink's task ended.
    metrics: Arc<SinkMetrics>,
    /// Started on subscribe (it needs the runtime).
    task: Option<SinkTask<T>>,
}

impl<T> std::fmt::Debug for SinkSubscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSubscriber")
            .field("started", &self.task.is_none())
            .finish()
    }
}

impl<T: Outgoing> Subscriber<T> for SinkSubscriber<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let Some((sink, receiver, done)) = self.task.take() else {
            subscription.cancel(); // rule 2.5: one subscription only
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let _ = self.events.send(Event::Subscribed(subscription));
                runtime.spawn(publish_all(sink, receiver, done));
            }
            Err(_) => {
                subscription.cancel();
                let error = Error::new(ErrorKind::NoRuntime).in_stage(sink.0.config.name.clone());
                let _ = done.send(Err(error));
            }
        }
    }

    fn on_next(&mut self, item: T) {
        // Fails only when the task ended (it failed and cancelled): the item drops, counted as
        // cancelled, and a delivery in it is nak'ed.
        if self.events.send(Event::Item(item)).is_err() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_error(&mut self, error: Error) {
        let _ = self.events.send(Event::Failed(error));
    }

    fn on_complete(&mut self) {
        let _ = self.events.send(Event::Completed);
    }
}

/// Resolves when a [`SinkSubscriber`]'s stream ended and every publish was confirmed.
#[derive(Debug)]
pub struct SinkOutcome(oneshot::Receiver<Result<SinkSnapshot, Error>>);

impl std::future::Future for SinkOutcome {
    type Output = Result<SinkSnapshot, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|received| {
            received.unwrap_or_else(|_| Err(Error::msg("the sink's task ended without an outcome")))
        })
    }
}

/// The sink's task: publishes items as they come, renews demand as publishes are confirmed.
async fn publish_all<T: Outgoing>(
    sink: JetStreamSink,
    mut events: Queue<T>,
    done: oneshot::Sender<Result<SinkSnapshot, Error>>,
) {
    let limit = sink.0.config.max_in_flight;
    let mut in_flight = FuturesUnordered::new();
    let mut subscription: Option<Subscription> = None;
    let mut upstream: Option<Result<(), Error>> = None;
    let outcome = loop {
        if upstream.is_some() && in_flight.is_empty() {
            break upstream.take().expect("checked");
        }
        tokio::select! {
            event = events.recv(), if upstream.is_none() => match event {
                Some(Event::Subscribed(s)) => {
                    s.request(limit as u64);
                    subscription = Some(s);
                }
                Some(Event::Item(item)) => {
                    if in_flight.len() >= limit {
                        // More than requested: the item is dropped, counted (its delivery, if
                        // any, is nak'ed), and the stream fails.
                        drop(item);
                        sink.0.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                        let error = Error::new(ErrorKind::DemandExceeded);
                        break Err(error.in_stage(sink.0.config.name.clone()));
                    }
                    // `into_outgoing` is the user's code: a panic fails the sink, named, like a
                    // failed publish (the upstream is cancelled below).
                    let sink = sink.clone();
                    // In flight from here: dropped unstarted, it still counts as cancelled.
                    let publishing = sink.0.metrics.start_publish();
                    in_flight.push(async move {
                        let sent = AssertUnwindSafe(sink.send_counted(item, publishing))
                            .catch_unwind()
                            .await;
                        sent.unwrap_or_else(|payload| {
                            let error = Error::panicked(payload.as_ref());
                            Err(error.in_stage(sink.0.config.name.as_str()))
                        })
                    });
                }
                Some(Event::Failed(error)) => upstream = Some(Err(error)),
                Some(Event::Completed) => upstream = Some(Ok(())),
                // The subscriber went without a terminal signal: the upstream broke (a
                // publisher that panicked, or dropped it); ending `Ok` would hide that.
                None => {
                    let error = Error::msg(
                        "the publisher dropped the sink's subscriber without a terminal signal",
                    );
                    upstream = Some(Err(error.in_stage(sink.0.config.name.clone())));
                }
            },
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                // Take every confirmation that is ready, then renew demand once for all of them.
                let mut confirmed = 0u64;
                let mut failure = None;
                let mut next = Some(result);
                while let Some(result) = next {
                    match result {
                        Ok(_) => confirmed += 1,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
                if let Some(error) = failure {
                    break Err(error);
                }
                if upstream.is_none() && let Some(subscription) = &subscription {
                    subscription.request(confirmed);
                }
            }
        }
    };
    if outcome.is_err()
        && let Some(subscription) = &subscription
    {
        subscription.cancel();
    }
    // What is still in flight or queued drops here, counted as cancelled: its deliveries are
    // nak'ed for redelivery. Items sent after this are counted by the subscriber.
    drop(in_flight);
    events.close();
    let _ = done.send(outcome.map(|()| sink.0.metrics.snapshot()));
}
