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
//! Each message becomes a [`Delivery`] carrying its [`Ack`](crate::delivery::Ack): at-least-once, the broker
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, Message, Subject};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_runtime::kit::TaskSubscription;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

use crate::NatsError;
use crate::delivery::{Acker, Decision, Delivery};
use crate::metrics::SourceMetrics;

mod config;
mod task;

pub use config::{SourceConfig, SourceStop};
use task::SourceTask;

/// Settlements sent per wake-up of the acker task.
const ACK_BATCH: usize = 256;

/// A publisher of the messages of a durable JetStream pull consumer, each as a
/// [`Delivery<Message>`](Delivery) (the message's `reply` moves into the delivery's [`Ack`](crate::delivery::Ack)).
/// Serves one subscriber. See the [module documentation](self).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir_nats::{source::{JetStreamSource, SourceConfig}};
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

    /// The consumer's lag as an input of a pipeline's readiness
    /// (`PipelineBuilder::readiness_input`): not ready while the broker's backlog (pending plus
    /// unacknowledged messages) would take longer than the recovery budget at the recent settle
    /// rate, or before the server first reported the lag. See [`SourceSnapshot::readiness`].
    ///
    /// [`SourceSnapshot::readiness`]: crate::SourceSnapshot::readiness
    pub fn lag_check(&self) -> impl Fn(Duration) -> Result<(), String> + Send + Sync + 'static {
        let metrics = self.metrics.clone();
        move |budget| metrics.snapshot().readiness(budget)
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
        runtime.spawn(send_settlements(
            self.client.clone(),
            settlements,
            self.metrics.clone(),
        ));
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
        runtime.spawn(SourceTask::new(
            subscriber,
            shared,
            (self.subscription, self.inbox),
            self.client,
            self.consumer,
            self.config,
            acker,
            self.metrics,
            self.stop,
            lag_done,
        ));
    }
}

/// Sends settlements in order, a batch per wake-up. Ends when every [`Ack`] and the source are gone.
/// A settlement that cannot be sent (the client is closed), or is still queued when the task is
/// dropped (its runtime shut down), is counted in `ack_send_failed`: the broker redelivers the
/// message after the ack wait.
async fn send_settlements(
    client: Client,
    queue: mpsc::UnboundedReceiver<(Subject, Decision)>,
    metrics: Arc<SourceMetrics>,
) {
    let mut unsent = Unsent {
        queue,
        batch: Vec::with_capacity(ACK_BATCH),
        sent: 0,
        metrics,
    };
    while unsent.queue.recv_many(&mut unsent.batch, ACK_BATCH).await > 0 {
        while let Some((reply, decision)) = unsent.batch.get(unsent.sent) {
            let published = client.publish(reply.clone(), decision.payload()).await;
            unsent.sent += 1;
            if let Err(error) = published {
                unsent
                    .metrics
                    .ack_send_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "could not send an acknowledgement");
            }
        }
        unsent.batch.clear();
        unsent.sent = 0;
    }
}

/// The settlements not sent yet (the batch's from `sent` on, and the queue's); those left when it
/// is dropped are counted as not sent.
struct Unsent {
    queue: mpsc::UnboundedReceiver<(Subject, Decision)>,
    batch: Vec<(Subject, Decision)>,
    sent: usize,
    metrics: Arc<SourceMetrics>,
}

impl Drop for Unsent {
    fn drop(&mut self) {
        self.queue.close();
        let left = self.batch.len() - self.sent + self.queue.len();
        self.metrics
            .ack_send_failed
            .fetch_add(left as u64, Ordering::Relaxed);
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
