//! Helpers of the NATS connector's tests: streams, consumers and polling against a real server.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir::runtime::RawSubscription;
use weir::runtime::{Error, Publisher, Subscriber, Subscription};
use weir_nats::async_nats::jetstream::{self, consumer, stream};
use weir_nats::source::{JetStreamSource, SourceConfig};

/// A JetStream context on `url`.
pub async fn jetstream_on(url: &str) -> jetstream::Context {
    jetstream::new(weir_nats::connect(url).await.expect("connect"))
}

/// A file-backed stream taking `subjects`, with a two-minute duplicate window; replicated
/// `replicas` times (1 on a single server).
pub async fn stream_with(js: &jetstream::Context, name: &str, subjects: &[&str], replicas: usize) {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: replicas,
        ..Default::default()
    };
    // A fresh cluster may need a moment before it can place a replicated stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return,
            Err(error) if Instant::now() < deadline => {
                eprintln!("creating stream {name}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!("could not create stream {name}: {error}"),
        }
    }
}

/// [`stream_with`] on a single server.
pub async fn work_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    stream_with(js, name, subjects, 1).await;
}

/// Publishes `n` messages `0..n` (the number as text, the id `m-<n>`) to `subject`, pipelined.
pub async fn fill(js: &jetstream::Context, subject: &str, n: u64) {
    let mut acks = Vec::new();
    for k in 0..n {
        let publish = jetstream::message::PublishMessage::build()
            .payload(k.to_string().into())
            .message_id(format!("m-{k}"));
        acks.push(
            js.send_publish(subject.to_owned(), publish)
                .await
                .expect("publish"),
        );
        if acks.len() >= 512 {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
}

/// A durable pull consumer with explicit acks.
pub async fn pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    ack_wait: Duration,
) -> consumer::PullConsumer {
    js.get_stream(stream)
        .await
        .expect("stream")
        .get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .expect("consumer")
}

/// A source named `name` over a fresh work stream `NAME` (subject `name.in`) filled with `n`
/// messages (`0..n` as text) and its durable consumer `name` (ack wait 30 s), configured by
/// `configure`.
pub async fn source_over(
    js: &jetstream::Context,
    name: &str,
    n: u64,
    configure: impl FnOnce(SourceConfig) -> SourceConfig,
) -> JetStreamSource {
    let stream = name.to_uppercase();
    let subject = format!("{name}.in");
    work_stream(js, &stream, &[&format!("{name}.>")]).await;
    fill(js, &subject, n).await;
    pull_consumer(js, &stream, name, Duration::from_secs(30)).await;
    let config = configure(SourceConfig::new(name, &stream, name));
    JetStreamSource::bind(js, config)
        .await
        .expect("bind the source")
}

/// The consumer's info as the server reports it now.
pub async fn consumer_info(js: &jetstream::Context, stream: &str, durable: &str) -> consumer::Info {
    let stream = js.get_stream(stream).await.expect("stream");
    stream.consumer_info(durable).await.expect("consumer info")
}

/// Messages stored in the stream now.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// Waits until `done()` holds, failing the test after `limit`.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] with an async condition.
pub async fn eventually_async<F, Fut>(limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A publisher that reports, after every request and emission, how many items are requested
/// and not yet emitted.
pub struct ObservedDemand<P, F> {
    upstream: P,
    report: Arc<Mutex<F>>,
}

impl<P, F> ObservedDemand<P, F> {
    pub fn new(upstream: P, report: F) -> Self {
        Self {
            upstream,
            report: Arc::new(Mutex::new(report)),
        }
    }
}

impl<T, P, F> Publisher<T> for ObservedDemand<P, F>
where
    T: Send + 'static,
    P: Publisher<T>,
    F: FnMut(u64) + Send + 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let outstanding = Arc::new(AtomicU64::new(0));
        self.upstream.subscribe(Observer {
            inner: subscriber,
            outstanding,
            report: self.report,
        });
    }
}

struct Observer<S, F> {
    inner: S,
    outstanding: Arc<AtomicU64>,
    report: Arc<Mutex<F>>,
}

struct ObservedSubscription<F> {
    inner: Subscription,
    outstanding: Arc<AtomicU64>,
    report: Arc<Mutex<F>>,
}

impl<F: FnMut(u64) + Send + 'static> RawSubscription for ObservedSubscription<F> {
    fn request(&self, n: u64) {
        let now = self.outstanding.fetch_add(n, Ordering::AcqRel) + n;
        (self.report.lock().unwrap())(now);
        self.inner.request(n);
    }
    fn cancel(&self) {
        self.inner.cancel();
    }
}

impl<T, S, F> Subscriber<T> for Observer<S, F>
where
    S: Subscriber<T>,
    F: FnMut(u64) + Send + 'static,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.inner
            .on_subscribe(Subscription::new(Arc::new(ObservedSubscription {
                inner: subscription,
                outstanding: self.outstanding.clone(),
                report: self.report.clone(),
            })));
    }
    fn on_next(&mut self, item: T) {
        let now = self.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
        (self.report.lock().unwrap())(now);
        self.inner.on_next(item);
    }
    fn on_error(&mut self, error: Error) {
        self.inner.on_error(error);
    }
    fn on_complete(&mut self) {
        self.inner.on_complete();
    }
}
