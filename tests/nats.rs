//! The NATS JetStream connector against a real `nats-server` (started per test on loopback with a
//! temporary store; skipped with a message outside CI when none can be started, a failure under
//! CI=true): demand-driven pulls, acknowledgement after processing, redelivery, the sink's
//! in-flight bound and dedupe, and clear errors.

mod nats_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::prelude::*;
use weir_nats::async_nats;
use weir_nats::local::server_for_tests;
use weir_nats::{
    NatsError,
    delivery::Delivery,
    sink::{JetStreamSink, OutMessage, SinkConfig},
    source::{JetStreamSource, SourceConfig},
};

use nats_support::*;

/// A subscriber that keeps what it receives (undecided) and lets the test request by hand.
#[derive(Default, Clone)]
struct Holder {
    subscription: Arc<Mutex<Option<Subscription>>>,
    items: Arc<Mutex<Vec<Delivery<async_nats::Message>>>>,
    ended: Arc<Mutex<Option<Result<(), Error>>>>,
}

impl Subscriber<Delivery<async_nats::Message>> for Holder {
    fn on_subscribe(&mut self, subscription: Subscription) {
        *self.subscription.lock().unwrap() = Some(subscription);
    }
    fn on_next(&mut self, item: Delivery<async_nats::Message>) {
        self.items.lock().unwrap().push(item);
    }
    fn on_error(&mut self, error: Error) {
        *self.ended.lock().unwrap() = Some(Err(error));
    }
    fn on_complete(&mut self) {
        *self.ended.lock().unwrap() = Some(Ok(()));
    }
}

impl Holder {
    fn request(&self, n: u64) {
        self.subscription
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .request(n);
    }
    fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
    async fn wait_for(&self, n: usize) {
        eventually(Duration::from_secs(10), || self.len() >= n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_follow_demand_and_never_exceed_it() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "DEMAND", &["demand.>"]).await;
    fill(&js, "demand.in", 100).await;
    let consumer = pull_consumer(&js, "DEMAND", "holder", Duration::from_secs(30)).await;
    // Pulls of at most 4: a request of 10 becomes pulls of 4, 4 and 2.
    let config = SourceConfig::new("demand", "DEMAND", "holder")
        .max_batch(4)
        .lag_interval(Duration::from_millis(100));
    let source = JetStreamSource::bind(&js, config).await.unwrap();
    let metrics = source.metrics();
    let holder = Holder::default();
    source.subscribe(holder.clone());

    // Nothing requested: nothing delivered, nothing pulled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = consumer.get_info().await.unwrap();
    assert_eq!(
        (info.num_ack_pending, info.num_pending, info.num_waiting),
        (0, 100, 0)
    );
    assert_eq!(metrics.snapshot().pulls, 0);

    holder.request(10);
    holder.wait_for(10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = consumer.get_info().await.unwrap();
    assert_eq!(holder.len(), 10, "exactly the requested items were emitted");
    assert_eq!(
        info.num_ack_pending, 10,
        "the broker delivered exactly what was requested"
    );
    assert_eq!(info.num_pending, 90);
    assert_eq!(
        info.num_waiting, 0,
        "no pull waits at the server beyond the demand"
    );
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.fetched, snapshot.pulls, snapshot.outstanding),
        (10, 3, 0)
    );

    // The consumer's lag is a metric and says whether the pipeline keeps up: nothing settles.
    eventually(Duration::from_secs(5), || {
        metrics
            .snapshot()
            .lag
            .is_some_and(|lag| lag.num_ack_pending == 10)
    })
    .await;
    let lag = metrics.snapshot().lag.unwrap();
    assert_eq!((lag.num_pending, lag.backlog()), (90, 100));
    let not_ready = metrics
        .snapshot()
        .readiness(Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(
        not_ready,
        "source `demand`: a backlog of 100 messages is not draining"
    );

    holder.request(5);
    holder.wait_for(15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = consumer.get_info().await.unwrap();
    assert_eq!(
        (holder.len(), info.num_ack_pending, info.num_pending),
        (15, 15, 85)
    );

    // Settled: the broker forgets them.
    for delivery in holder.items.lock().unwrap().drain(..) {
        delivery.ack();
    }
    eventually(Duration::from_secs(5), || metrics.snapshot().acked == 15).await;
    let js2 = js.clone();
    eventually_async(Duration::from_secs(5), || {
        let js = js2.clone();
        async move { consumer_info(&js, "DEMAND", "holder").await.num_ack_pending == 0 }
    })
    .await;
    holder
        .subscription
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .cancel();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_acked_after_the_sink_stored_them() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "IN", &["in.>"]).await;
    work_stream(&js, "OUT", &["out.>"]).await;
    fill(&js, "in.x", 500).await;
    pull_consumer(&js, "IN", "mapper", Duration::from_secs(30)).await;
    let source = JetStreamSource::bind(&js, SourceConfig::new("in", "IN", "mapper").max_batch(64))
        .await
        .unwrap();
    let source_metrics = source.metrics();
    let stop = source.stopper();
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("out", "OUT", "out.y").max_in_flight(32),
    )
    .await
    .unwrap();
    // Odd items are filtered out on purpose (acknowledged as filtered), even ones are stored.
    let mapped = source.filter_map(|delivery| {
        let n: u64 = std::str::from_utf8(&delivery.value().payload)
            .unwrap()
            .parse()
            .unwrap();
        if n % 2 == 1 {
            delivery.filtered();
            None
        } else {
            Some(delivery.map(|message| OutMessage::new(message.payload)))
        }
    });
    let running = tokio::spawn({
        let sink = sink.clone();
        async move { sink.run(mapped).await }
    });
    eventually(Duration::from_secs(20), || {
        let s = source_metrics.snapshot();
        s.acked + s.filtered == 500
    })
    .await;
    stop.stop();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.published, 250);
    assert_eq!(report.duplicates, 0);
    let s = source_metrics.snapshot();
    assert_eq!(
        (s.fetched, s.acked, s.filtered, s.abandoned, s.naked),
        (500, 250, 250, 0, 0)
    );
    assert_eq!(s.unsettled(), 0);
    eventually_async(Duration::from_secs(5), || {
        let js = js.clone();
        async move {
            let info = consumer_info(&js, "IN", "mapper").await;
            info.num_ack_pending == 0 && info.num_pending == 0
        }
    })
    .await;
    assert_eq!(stream_messages(&js, "OUT").await, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_and_cancelled_deliveries_are_redelivered() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "REDO", &["redo.>"]).await;
    fill(&js, "redo.x", 20).await;
    pull_consumer(&js, "REDO", "redo", Duration::from_secs(30)).await;

    // A first consumer takes 8 and drops them undecided, then cancels.
    let source = JetStreamSource::bind(&js, SourceConfig::new("first", "REDO", "redo"))
        .await
        .unwrap();
    let first = source.metrics();
    let holder = Holder::default();
    source.subscribe(holder.clone());
    holder.request(8);
    holder.wait_for(8).await;
    holder.items.lock().unwrap().clear();
    holder
        .subscription
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .cancel();
    assert_eq!(first.snapshot().abandoned, 8);

    // A second one gets everything, the 8 again (delivered twice), within much less than the
    // 30 s ack wait: the drop nak'ed them.
    let source = JetStreamSource::bind(&js, SourceConfig::new("second", "REDO", "redo"))
        .await
        .unwrap();
    let stop = source.stopper();
    let seen = tokio::spawn(source.fold(Vec::new(), |seen, delivery| {
        let info = delivery.info().unwrap();
        seen.push((info.stream_sequence, info.delivered));
        delivery.ack();
    }));
    let started = std::time::Instant::now();
    let metrics_js = js.clone();
    eventually_async(Duration::from_secs(10), || {
        let js = metrics_js.clone();
        async move {
            let info = consumer_info(&js, "REDO", "redo").await;
            info.num_pending == 0 && info.num_ack_pending == 0
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    stop.stop();
    let mut seen = seen.await.unwrap().unwrap();
    seen.sort_unstable();
    let sequences: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        sequences,
        (1..=20).collect::<Vec<_>>(),
        "each message once, none lost"
    );
    assert_eq!(
        seen.iter().filter(|(_, delivered)| *delivered == 2).count(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_at_most_max_in_flight_unconfirmed() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "BOUND", &["bound"]).await;
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("bound", "BOUND", "bound").max_in_flight(8),
    )
    .await
    .unwrap();
    let probe = DemandProbe::default();
    let items = probe.wrap(source::from_iter(
        (0..2_000u32).map(|n| OutMessage::new(n.to_string())),
    ));
    let report = sink.run(items).await.unwrap();
    assert_eq!(report.published, 2_000);
    assert!(report.max_in_flight_seen <= 8, "{report:?}");
    assert!(
        report.max_in_flight_seen >= 2,
        "publishes were pipelined: {report:?}"
    );
    assert!(
        probe.max_outstanding() <= 8,
        "the sink's demand is its in-flight bound"
    );
    assert_eq!(stream_messages(&js, "BOUND").await, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publishes_are_stored_once() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "DEDUPE", &["dedupe"]).await;
    let sink = JetStreamSink::bind(&js, SinkConfig::new("dedupe", "DEDUPE", "dedupe"))
        .await
        .unwrap();
    let with_ids = |range: std::ops::Range<u32>| {
        source::from_iter(range.map(|n| OutMessage::new(n.to_string()).id(format!("order-{n}"))))
    };
    sink.run(with_ids(0..100)).await.unwrap();
    let report = sink.run(with_ids(50..150)).await.unwrap(); // 50 of these were stored already
    assert_eq!((report.published, report.duplicates), (200, 50));
    assert_eq!(stream_messages(&js, "DEDUPE").await, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_streams_unbound_subjects_and_unreachable_servers_are_clear_errors() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "REAL", &["real.*"]).await;

    let error = JetStreamSource::bind(&js, SourceConfig::new("s", "NOPE", "c"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NatsError::StreamNotFound { stream } if stream == "NOPE"),
        "{error}"
    );
    assert_eq!(error.to_string(), "JetStream stream `NOPE` does not exist");
    let error = JetStreamSource::bind(&js, SourceConfig::new("s", "REAL", "nobody"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "consumer `nobody` does not exist on JetStream stream `REAL`"
    );

    let error = JetStreamSink::bind(&js, SinkConfig::new("k", "NOPE", "real.a"))
        .await
        .unwrap_err();
    assert!(matches!(error, NatsError::StreamNotFound { .. }), "{error}");
    let error = JetStreamSink::bind(&js, SinkConfig::new("k", "REAL", "other.a"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "subject `other.a` is not bound to stream `REAL` (its subjects: [\"real.*\"])"
    );
    // A per-message subject the stream does not take fails the stream at once, naming the stage.
    let sink = JetStreamSink::bind(&js, SinkConfig::new("k", "REAL", "real.a"))
        .await
        .unwrap();
    let stray = source::from_iter([OutMessage::new("x").subject("real.a.b")]);
    let error = sink.run(stray).await.unwrap_err();
    assert_eq!(error.stage(), Some("k"));
    assert!(
        error
            .to_string()
            .contains("subject `real.a.b` is not bound"),
        "{error}"
    );

    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let error = weir_nats::connect(&url).await.unwrap_err();
    assert!(
        matches!(&error, NatsError::Unreachable { url: u, .. } if *u == url),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!("cannot reach a NATS server at `{url}`")
    );
    assert!(std::error::Error::source(&error).is_some());
    drop(server);
}

/// A publisher wrapper that records the most items ever requested and not yet emitted.
#[derive(Default, Clone)]
struct DemandProbe(Arc<Mutex<(u64, u64)>>);

impl DemandProbe {
    fn wrap<T: Send + 'static>(&self, upstream: impl Publisher<T>) -> impl Publisher<T> {
        let probe = self.clone();
        nats_support::ObservedDemand::new(upstream, move |outstanding| {
            let mut state = probe.0.lock().unwrap();
            state.0 = outstanding;
            state.1 = state.1.max(outstanding);
        })
    }
    fn max_outstanding(&self) -> u64 {
        self.0.lock().unwrap().1
    }
}

/// Takes everything from a spill store, waiting for its reader between empty takes.
async fn take_all<S: weir::runtime::queue::SpillStore<u64> + std::fmt::Debug>(
    store: &mut S,
    expected: usize,
) -> Vec<u64> {
    let mut out = std::collections::VecDeque::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "took {} of {expected}: {store:?}",
            out.len()
        );
        if store
            .take_into(7.min(expected - out.len()), &mut out)
            .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spill_store_round_trips_through_the_broker_in_order() {
    use weir::runtime::queue::{SpillStore, StoreRefusal};
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let config = SpillStoreConfig::new("orders", 10)
        .records_per_message(16)
        .max_records(2_000);
    let mut store = JetStreamSpillStore::<u64>::open(&js, config.clone())
        .await
        .unwrap();
    let sync = store.sync();
    for n in 0..1_000u64 {
        let spilled = store.push(n).unwrap();
        assert_eq!(
            spilled,
            n >= 10,
            "the first 10 stay in memory, the rest spill"
        );
    }
    assert_eq!(store.len(), 1_000);
    sync.flushed().await.unwrap();
    assert_eq!(
        store.in_memory(),
        10,
        "after the flush only the memory part is volatile"
    );
    let (written, _) = sync.writes();
    assert!(
        written >= 990 / 16,
        "records went to the broker in messages: {written}"
    );
    assert!(stream_messages(&js, "WEIR_SPILL_orders").await > 0);

    // Taking while pushing keeps FIFO order across memory, broker and staged records.
    let mut taken = take_all(&mut store, 500).await;
    for n in 1_000..1_200u64 {
        assert!(
            store.push(n).unwrap(),
            "still spilling: the broker part is not empty"
        );
    }
    taken.extend(take_all(&mut store, 700).await);
    assert_eq!(taken, (0..1_200).collect::<Vec<_>>());
    assert_eq!(store.len(), 0);
    // Taken messages are acknowledged, so the work-queue stream empties.
    eventually_async(Duration::from_secs(5), || {
        let js = js.clone();
        async move { stream_messages(&js, "WEIR_SPILL_orders").await == 0 }
    })
    .await;

    // The budget: beyond max_records a push is refused as full, with the item handed back.
    let small = SpillStoreConfig::new("small", 1).max_records(5);
    let mut full = JetStreamSpillStore::<u64>::open(&js, small).await.unwrap();
    for n in 0..6 {
        full.push(n).unwrap();
    }
    match full.push(6) {
        Err((6, StoreRefusal::Full)) => {}
        other => panic!("expected a full refusal, got {other:?}"),
    }

    // Spilled items outlive the store (the memory part does not, and says so): a new store
    // hands them out first.
    for n in 100..120u64 {
        store.push(n).unwrap();
    }
    store.sync().flushed().await.unwrap();
    assert_eq!((store.len(), store.in_memory()), (20, 10));
    drop(store);
    let mut reopened = JetStreamSpillStore::<u64>::open(&js, config).await.unwrap();
    assert!(reopened.len() > 0, "what an earlier run left is counted");
    reopened.push(500).unwrap(); // queued behind what was left
    let left = take_all(&mut reopened, 11).await;
    assert_eq!(left, (110..120).chain([500]).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsl_pipeline_reads_and_writes_jetstream_and_names_a_failing_sink() {
    use weir::dsl::{Pipeline, PipelineError};

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "DIN", &["din"]).await;
    work_stream(&js, "DOUT", &["dout"]).await;
    fill(&js, "din", 300).await;
    pull_consumer(&js, "DIN", "relay", Duration::from_secs(30)).await;
    let sink = JetStreamSink::bind(&js, SinkConfig::new("out", "DOUT", "dout"))
        .await
        .unwrap();

    // source -> filter (odd numbers acknowledged as filtered) -> fallible async sink.
    let source = JetStreamSource::bind(&js, SourceConfig::new("in", "DIN", "relay"))
        .await
        .unwrap();
    let (stop, metrics) = (source.stopper(), source.metrics());
    let mut p = Pipeline::builder("relay");
    let input = p.source("in", source);
    let even = p.stage("even", &input, |deliveries| {
        deliveries.filter_map(|delivery| {
            let n: u64 = std::str::from_utf8(&delivery.value().payload)
                .unwrap()
                .parse()
                .unwrap();
            if n % 2 == 1 {
                delivery.filtered();
                return None;
            }
            Some(delivery.map(|message| OutMessage::new(message.payload)))
        })
    });
    let publish = sink.clone();
    p.sink_async("out", &even, 16, move |message| {
        let sink = publish.clone();
        async move { sink.send(message).await.map(drop) }
    });
    let running = p.build().unwrap().start().unwrap();
    eventually(Duration::from_secs(20), || {
        let s = metrics.snapshot();
        s.acked + s.filtered == 300
    })
    .await;
    stop.stop();
    running.await.unwrap();
    let s = metrics.snapshot();
    assert_eq!((s.acked, s.filtered, s.unsettled()), (150, 150, 0));
    assert_eq!(stream_messages(&js, "DOUT").await, 150);

    // A publish the stream cannot take fails the pipeline naming the sink stage; the input it
    // came from is not acknowledged (nak'ed, for redelivery).
    js.publish("din", "7".into()).await.unwrap().await.unwrap(); // no id: not a duplicate
    let source = JetStreamSource::bind(&js, SourceConfig::new("in", "DIN", "relay"))
        .await
        .unwrap();
    let metrics = source.metrics();
    let mut p = Pipeline::builder("misrouted");
    let input = p.source("in", source);
    let wrong = p.stage("route", &input, |deliveries| {
        deliveries.map(|delivery| delivery.map(|m| OutMessage::new(m.payload).subject("elsewhere")))
    });
    p.sink_async("out", &wrong, 16, move |message| {
        let sink = sink.clone();
        async move { sink.send(message).await.map(drop) }
    });
    let error = p.build().unwrap().start().unwrap().await.unwrap_err();
    assert!(
        matches!(&error, PipelineError::Failed { stage, .. } if stage == "out"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("subject `elsewhere` is not bound"),
        "{error}"
    );
    eventually(Duration::from_secs(5), || metrics.snapshot().abandoned >= 1).await;
    // Each copy the broker redelivers into the source's open pull before the source hears the
    // failure is handed on and dropped undecided with the pipeline (abandoned, nak'ed again);
    // one that comes after is released once the pull ends. How many bounces happen depends on how
    // fast the failure travels against the broker's round trip; what must hold is that every copy
    // is given back, none acknowledged, and the next consumer gets it well within the 30 s ack
    // wait.
    tokio::time::sleep(Duration::from_secs(3)).await; // the 2 s pull expiry
    let s = metrics.snapshot();
    assert_eq!(s.acked, 0);
    assert!(s.released <= 1 && s.unsettled() == 0, "{s:?}");
    assert_eq!(
        s.abandoned + s.released + s.excess,
        s.fetched,
        "every copy fetched was given back: {s:?}"
    );
    let source = JetStreamSource::bind(&js, SourceConfig::new("in", "DIN", "relay"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), source.take(1).collect())
        .await
        .expect("redelivered within the ack wait")
        .unwrap();
    assert_eq!(&next[0].value().payload[..], b"7");
    assert!(next[0].info().unwrap().delivered >= 2);
}

/// The consumer's lag is an input of the pipeline's readiness: a backlog at the broker that the
/// pipeline cannot drain within its recovery budget makes it not ready, naming the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_makes_a_dsl_pipeline_not_ready() {
    use weir::dsl::Pipeline;

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "LAGS", &["lag"]).await;
    fill(&js, "lag", 400).await;
    pull_consumer(&js, "LAGS", "slowpoke", Duration::from_secs(30)).await;
    let source = JetStreamSource::bind(
        &js,
        SourceConfig::new("lagging", "LAGS", "slowpoke").lag_interval(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let stop = source.stopper();
    let mut p = Pipeline::builder("slow");
    p.readiness_input(source.lag_check());
    p.recovery_budget(Duration::from_millis(500));
    let input = p.source("lagging", source);
    // About 100 messages a second: 400 take 4 s, eight times the budget.
    p.sink_async("store", &input, 1, |delivery| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        delivery.ack();
    });
    let mut running = p.build().unwrap().start().unwrap();
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons = running.ready().reasons;
        if reasons
            .iter()
            .any(|r| r.contains("source `lagging`: a backlog of"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("source `lagging`: a backlog of")),
        "{reasons:?}"
    );
    stop.stop();
    let _ = running.drain(Duration::from_secs(10)).await;
}

/// An item whose conversion to a message panics on the third one (a user's `Outgoing`).
struct Brittle(u32);

impl weir_nats::sink::Outgoing for Brittle {
    fn into_outgoing(self) -> (OutMessage, weir_nats::delivery::Ack) {
        if self.0 == 2 {
            panic!("cannot encode item {}", self.0);
        }
        (
            OutMessage::new(self.0.to_string()),
            weir_nats::delivery::Ack::detached(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_outgoing_fails_the_sink_naming_it_and_stops_the_upstream() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "BRITTLE", &["brittle"]).await;
    let sink = JetStreamSink::bind(&js, SinkConfig::new("brittle", "BRITTLE", "brittle"))
        .await
        .unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let items = source::from_iter((0..1_000_000u32).map(Brittle)).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let error = tokio::time::timeout(Duration::from_secs(20), sink.run(items))
        .await
        .expect("the sink's outcome")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `brittle`: panicked: cannot encode item 2"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = pulled.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pulled.load(Ordering::Relaxed),
        stopped_at,
        "the upstream was cancelled"
    );
    assert!(stopped_at < 1_000_000);
}

/// A publisher that signals its number of items whatever the demand, then drops its subscriber
/// without a terminal signal (as one whose thread panicked would).
struct Vanishing(u32);

impl Publisher<OutMessage> for Vanishing {
    fn subscribe<S: Subscriber<OutMessage>>(self, mut subscriber: S) {
        struct Ignored;
        impl weir::runtime::RawSubscription for Ignored {
            fn request(&self, _: u64) {}
            fn cancel(&self) {}
        }
        subscriber.on_subscribe(Subscription::new(Arc::new(Ignored)));
        for n in 0..self.0 {
            subscriber.on_next(OutMessage::new(format!("{n}")));
        }
    }
}

/// The sink's upstream going without a terminal signal fails the sink, naming it; it used to end
/// `Ok` as if the stream had completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_upstream_goes_without_a_terminal_signal_fails() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "VANISH", &["vanish"]).await;
    let sink = JetStreamSink::bind(&js, SinkConfig::new("vanish", "VANISH", "vanish"))
        .await
        .unwrap();
    let error = sink.run(Vanishing(3)).await.unwrap_err();
    assert!(
        error.to_string().contains("without a terminal signal"),
        "{error}"
    );
    assert_eq!(error.stage(), Some("vanish"), "{error}");
    let report = sink.metrics().snapshot();
    assert_eq!((report.published, report.in_flight), (3, 0), "{report:?}");
}

/// Publishes still awaiting the broker when the sink fails on another item are dropped: they
/// leave the in-flight gauge and are counted as cancelled. The gauge used to stay up for good,
/// and the dropped publishes were in no count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_dropped_when_the_sink_fails_are_counted_and_leave_the_gauge() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "STALL", &["stall"]).await;
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("stall", "STALL", "stall").max_in_flight(8),
    )
    .await
    .unwrap();
    // The server stops answering (SIGSTOP): seven publishes wait for their confirmation, then
    // an item over the server's payload limit fails the sink at once.
    let pid = server.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let items = (0..8u32).map(|n| {
        let size = if n == 7 { 2 << 20 } else { 8 };
        OutMessage::new(vec![b'x'; size])
    });
    let outcome =
        tokio::time::timeout(Duration::from_secs(3), sink.run(source::from_iter(items))).await;
    signal("-CONT");
    let error = outcome
        .expect("the oversized item fails at once")
        .unwrap_err();
    assert_eq!(error.stage(), Some("stall"), "{error}");
    let report = sink.metrics().snapshot();
    assert_eq!(report.in_flight, 0, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(
        report.published + report.cancelled,
        7,
        "every other item is published or counted: {report:?}"
    );
    assert!(report.cancelled > 0, "the server was stopped: {report:?}");
}

/// Items handed to a JetStream sink's subscriber wait in its queue until the sink's task takes
/// them. A runtime that shuts down before it does drops the task with the queue: the items are
/// counted as cancelled (their deliveries, if any, are nak'ed by the drop). They used to go
/// uncounted: the task counted what was left in its queue only when it ended by itself.
#[test]
fn items_queued_for_a_sink_whose_runtime_shuts_down_are_counted() {
    let Some((server, runtime)) = server_and_current_thread() else {
        return;
    };
    let sink = runtime.block_on(async {
        let js = jetstream_on(&server.url()).await;
        work_stream(&js, "SHUTDOWN", &["shutdown"]).await;
        JetStreamSink::bind(
            &js,
            SinkConfig::new("shutdown", "SHUTDOWN", "shutdown").max_in_flight(8),
        )
        .await
        .unwrap()
    });
    let (mut subscriber, _outcome) = sink.subscriber::<OutMessage>();
    {
        let _entered = runtime.enter();
        // Spawns the sink's task, which a current-thread runtime runs only inside `block_on`.
        subscriber.on_subscribe(Subscription::noop());
        for n in 0..5u8 {
            subscriber.on_next(OutMessage::new(vec![n]));
        }
    }
    drop(runtime);
    let report = sink.metrics().snapshot();
    assert_eq!(report.in_flight, 0, "{report:?}");
    assert_eq!(
        report.published + report.cancelled + report.failed,
        5,
        "every item handed over is counted: {report:?}"
    );
}

/// An ingress over a JetStream spill store `name` (memory part of 1) that an earlier run, `pause`
/// ago, left `items` (0, 1, ...) in, `per_message` records to a message (the first item stayed
/// in that run's memory); the ingress's handle is dropped. On a current-thread runtime the writer
/// runs only once this task waits, so the spilled records go out in full messages.
async fn reopened_spill_ingress(
    js: &async_nats::jetstream::Context,
    name: &str,
    items: u64,
    per_message: usize,
    pause: Duration,
) -> (
    Arc<weir::runtime::metrics::BufferMetrics>,
    impl Publisher<u64>,
) {
    use weir::runtime::ingress::{self, SpillFull};
    use weir::runtime::queue::SpillStore;
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    let config = SpillStoreConfig::new(name, 1).records_per_message(per_message);
    let mut store = JetStreamSpillStore::<u64>::open(js, config.clone())
        .await
        .unwrap();
    for n in 0..items {
        store.push(n).unwrap();
    }
    store.sync().flushed().await.unwrap();
    drop(store);
    tokio::time::sleep(pause).await;
    let store = JetStreamSpillStore::<u64>::open(js, config).await.unwrap();
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let (handle, publisher) = ingress::spilling(name, store, full).unwrap();
    (handle.metrics(), publisher)
}

/// A queue reopened on a JetStream spill store that an earlier run left records in counts every
/// one of them as recovered: the store counts an earlier run's message as one until it reads it
/// back as its records, and the queue takes the difference into its books. (The queue used to
/// count none of them in, then handed all of them out: items out exceeded items in.)
#[tokio::test]
async fn a_queue_on_a_reopened_jetstream_store_counts_every_recovered_record() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    // The ten spilled records go out as one message.
    let (metrics, publisher) = reopened_spill_ingress(&js, "kept", 11, 16, Duration::ZERO).await;
    assert_eq!(
        publisher.collect().await.unwrap(),
        (1..11).collect::<Vec<_>>()
    );
    let counts = metrics.snapshot();
    assert_eq!(
        (
            counts.recovered,
            counts.items_in,
            counts.items_out,
            counts.depth
        ),
        (10, 10, 10, 0),
        "{counts:?}"
    );
}

/// Records an earlier run left in a JetStream spill store have an age while they wait (the
/// oldest message's time in the stream): a queue reopened on it reported none until they were
/// taken, so an alert on the oldest item's age missed a backlog left by a crash.
#[tokio::test(flavor = "current_thread")]
async fn records_left_in_a_jetstream_store_have_an_age() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let pause = Duration::from_millis(300);
    let (metrics, publisher) = reopened_spill_ingress(&js, "aged", 9, 4, pause).await;
    let age = metrics.snapshot().oldest_item_age_ms;
    assert!(age.is_some_and(|ms| ms >= 300.0), "{age:?}");
    assert_eq!(
        publisher.collect().await.unwrap(),
        (1..9).collect::<Vec<_>>()
    );
    assert_eq!(metrics.snapshot().oldest_item_age_ms, None);
}

/// An upstream that signals more than the sink's demand fails it (`DemandExceeded`); the item
/// beyond the demand is counted as cancelled (it used to be dropped uncounted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_beyond_the_sinks_demand_is_counted() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "FLOOD", &["flood"]).await;
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("flood", "FLOOD", "flood").max_in_flight(2),
    )
    .await
    .unwrap();
    let error = sink.run(Vanishing(3)).await.unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::DemandExceeded), "{error}");
    let report = sink.metrics().snapshot();
    assert_eq!(report.in_flight, 0, "{report:?}");
    assert_eq!(report.published + report.cancelled, 3, "{report:?}");
}

/// When the queue over a JetStream spill store ends, items still staged for the broker are held
/// (the writer still publishes them; the next run recovers them), not cancelled: they used to be
/// counted as cancelled in this run and recovered in the next.
#[tokio::test]
async fn staged_items_are_held_not_cancelled_when_the_queue_ends() {
    use weir::runtime::ingress::{self, SpillFull};
    use weir::runtime::metrics::Reason;
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let config = SpillStoreConfig::new("ended", 1);
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let store = JetStreamSpillStore::<u64>::open(&js, config.clone())
        .await
        .unwrap();
    let sync = store.sync();
    let (handle, publisher) = ingress::spilling("ended", store, full).unwrap();
    // One in memory, four staged (one runtime thread: the writer has not run yet).
    for n in 0..5u64 {
        handle.try_push(n).unwrap();
    }
    let metrics = handle.metrics();
    drop((handle, publisher));
    assert_eq!(
        metrics.shed(Reason::Cancelled),
        1,
        "{:?}",
        metrics.snapshot()
    );
    tokio::time::timeout(Duration::from_secs(10), sync.flushed())
        .await
        .expect("flushed once the writer stored them")
        .unwrap();
    let store = JetStreamSpillStore::<u64>::open(&js, config).await.unwrap();
    let (handle, publisher) = ingress::spilling("ended", store, full).unwrap();
    let metrics = handle.metrics();
    drop(handle);
    assert_eq!(publisher.collect().await.unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(metrics.recovered(), 4);
}

/// A message in the spill stream that does not unframe (not written by a store) is terminated and
/// the store goes on: it used to stay counted as an item still to come back, so the queue never
/// completed.
#[tokio::test]
async fn a_corrupt_message_left_in_the_spill_stream_is_counted_and_skipped() {
    use weir::runtime::ingress::{self, SpillFull};
    use weir::runtime::metrics::Reason;
    use weir::runtime::queue::SpillStore;
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let config = SpillStoreConfig::new("garbled", 1);
    let mut store = JetStreamSpillStore::<u64>::open(&js, config.clone())
        .await
        .unwrap();
    for n in 0..6u64 {
        store.push(n).unwrap();
    }
    store.sync().flushed().await.unwrap();
    drop(store);
    js.publish("weir.spill.garbled", bytes::Bytes::from_static(b"bad"))
        .await
        .unwrap()
        .await
        .unwrap();
    let store = JetStreamSpillStore::<u64>::open(&js, config).await.unwrap();
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let (handle, publisher) = ingress::spilling("garbled", store, full).unwrap();
    let metrics = handle.metrics();
    drop(handle);
    let replayed = tokio::time::timeout(Duration::from_secs(10), publisher.collect())
        .await
        .expect("the stream completes")
        .unwrap();
    assert_eq!(replayed, vec![1, 2, 3, 4, 5]);
    // The queue reconciles net counts: the bad message, counted as one item left, is found
    // missing as the good ones are found to hold more records; in, out and exits balance.
    let counts = metrics.snapshot();
    let corrupt = metrics.shed(Reason::Corrupt);
    assert_eq!(counts.depth, 0, "{counts:?}");
    assert_eq!(counts.items_in, counts.items_out + corrupt, "{counts:?}");
}

/// A spill store whose writer gave up (the broker gone for longer than `give_up_after`) still
/// hands out every item it held, in order: the records of the message it was writing when it gave
/// up went back in front of the staged ones, and until they are taken they count as volatile
/// ([`SpillStore::in_memory`]: lost if the queue ends). Before, they were dropped with the writer,
/// the store's length stayed above zero while `take_into` returned nothing, for ever, and a queue
/// ending then counted only the memory part as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_store_whose_writer_gave_up_still_hands_out_what_it_held() {
    use std::collections::VecDeque;
    use weir::runtime::queue::SpillStore;
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    let Some(mut server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let config = SpillStoreConfig::new("gave_up", 1)
        .records_per_message(4)
        .give_up_after(Duration::from_millis(200));
    let mut store = JetStreamSpillStore::<u64>::open(&js, config).await.unwrap();
    server.kill();
    for n in 0..10u64 {
        store.push(n).unwrap();
    }
    let flushed = tokio::time::timeout(Duration::from_secs(60), store.sync().flushed()).await;
    assert!(
        flushed.expect("the writer never gave up").is_err(),
        "the broker is gone"
    );
    // No writer will publish the staged records now: all ten are lost if the queue ends here.
    assert_eq!(store.in_memory(), 10);
    let mut out = VecDeque::new();
    let taken = store.take_into(100, &mut out).unwrap();
    assert_eq!(
        (taken, store.len()),
        (10, 0),
        "taken {out:?}, {} left",
        store.len()
    );
    assert_eq!(out, (0..10).collect::<Vec<_>>());
}

/// An item whose type does not read back what it wrote (postcard and a skipped field): taking it
/// from the staged part fails, and the record stays counted in the store instead of vanishing
/// (it was popped before it was decoded: gone, and counted nowhere).
#[tokio::test]
async fn a_staged_record_that_does_not_decode_stays_counted() {
    use std::collections::VecDeque;
    use weir::runtime::queue::SpillStore;
    use weir_nats::spill::{JetStreamSpillStore, SpillStoreConfig};

    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Sparse {
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<u8>,
    }

    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    let config = SpillStoreConfig::new("sparse", 1);
    let mut store = JetStreamSpillStore::<Sparse>::open(&js, config)
        .await
        .unwrap();
    // A current-thread runtime: the writer task does not run before this test awaits, so the
    // second item is still staged when it is taken.
    store.push(Sparse { note: Some(1) }).unwrap();
    assert!(store.push(Sparse { note: None }).unwrap(), "spilled");
    let mut out = VecDeque::new();
    let failed = store.take_into(2, &mut out);
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        out.len() as u64 + store.len(),
        2,
        "taken {out:?}, {} left",
        store.len()
    );
}

/// The test's server (`None` without one: the test is skipped), a JetStream context on it, and
/// a source `name` over `n` messages (see `source_over`).
async fn server_and_source(
    name: &str,
    n: u64,
    configure: impl FnOnce(SourceConfig) -> SourceConfig,
) -> Option<(
    weir_nats::local::LocalServer,
    async_nats::jetstream::Context,
    JetStreamSource,
)> {
    let server = server_for_tests().unwrap()?;
    let js = jetstream_on(&server.url()).await;
    let source = source_over(&js, name, n, configure).await;
    Some((server, js, source))
}

/// The test's server (`None` without one: the test is skipped) and a current-thread runtime,
/// which runs its tasks only inside `block_on`.
fn server_and_current_thread() -> Option<(weir_nats::local::LocalServer, tokio::runtime::Runtime)> {
    let server = server_for_tests().unwrap()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some((server, runtime))
}

/// A subscriber that requests `initial` on subscribe and one more with each item (after a short
/// pause: slow processing), acknowledging each.
struct OneMorePerItem {
    initial: u64,
    subscription: Option<Subscription>,
    received: Arc<AtomicU64>,
}

impl Subscriber<Delivery<async_nats::Message>> for OneMorePerItem {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(self.initial);
        self.subscription = Some(subscription);
    }
    fn on_next(&mut self, item: Delivery<async_nats::Message>) {
        std::thread::sleep(Duration::from_millis(2));
        item.ack();
        self.received.fetch_add(1, Ordering::SeqCst);
        self.subscription.as_ref().unwrap().request(1);
    }
    fn on_error(&mut self, _: Error) {}
    fn on_complete(&mut self) {}
}

/// Demand that arrives during a long burst is pulled for within the burst (every 32 messages), and
/// the messages those pulls bring have that demand: they are emitted, not nak'ed as `excess`
/// (which the burst did when it compared with the demand it saw at its start, sending them back
/// with a higher delivery count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pulled_for_demand_that_came_during_a_burst_are_not_excess() {
    let Some((server, _js, source)) =
        server_and_source("steady", 200, |config| config.max_batch(64)).await
    else {
        return;
    };
    let metrics = source.metrics();
    let received = Arc::new(AtomicU64::new(0));
    source.subscribe(OneMorePerItem {
        initial: 64,
        subscription: None,
        received: received.clone(),
    });
    eventually(Duration::from_secs(30), || {
        received.load(Ordering::SeqCst) >= 200
    })
    .await;
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.excess, snapshot.naked, snapshot.fetched),
        (0, 0, 200),
        "{snapshot:?}"
    );
    drop(server);
}

/// Deliveries a fused filter declines were handed downstream too: they count as emitted, so
/// that what is still in the pipeline (`unsettled`, emitted and not settled) and the source's
/// identity (`fetched` = settled + released + excess + unsettled) hold while some are held. The
/// source counted only the deliveries that took demand, so the filtered ones were settled
/// without being emitted and `unsettled` came out 0 with five held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_a_filter_declined_count_as_emitted() {
    let Some((server, _js, source)) = server_and_source("sieve", 10, |config| config).await else {
        return;
    };
    let metrics = source.metrics();
    let holder = Holder::default();
    source
        .filter_map(|delivery| {
            let n: u64 = std::str::from_utf8(&delivery.value().payload)
                .unwrap()
                .parse()
                .unwrap();
            if n % 2 == 1 {
                delivery.filtered();
                None
            } else {
                Some(delivery)
            }
        })
        .subscribe(holder.clone());
    holder.request(10);
    holder.wait_for(5).await;
    eventually(Duration::from_secs(10), || metrics.snapshot().filtered == 5).await;
    let s = metrics.snapshot();
    assert_eq!((s.fetched, s.emitted, s.unsettled()), (10, 10, 5), "{s:?}");
    let settled = s.acked + s.filtered + s.naked + s.termed + s.abandoned;
    assert_eq!(
        s.fetched,
        settled + s.released + s.excess + s.unsettled(),
        "{s:?}"
    );
    for delivery in holder.items.lock().unwrap().drain(..) {
        delivery.ack();
    }
    drop(server);
}

/// A settlement the client cannot send (its connection drained) is counted in `ack_send_failed`
/// (the broker redelivers the message after the ack wait); it was only logged, so the message
/// counted as acknowledged came back and was fetched and acknowledged again, with nothing to say
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_the_client_cannot_send_is_counted() {
    let Some((server, js, source)) = server_and_source("unsent", 1, |config| config).await else {
        return;
    };
    let metrics = source.metrics();
    let holder = Holder::default();
    source.subscribe(holder.clone());
    holder.request(1);
    holder.wait_for(1).await;
    // Drained: the source's inbox ends (the source fails), then the client takes no more
    // commands.
    let client = js.client();
    client.drain().await.unwrap();
    eventually(Duration::from_secs(10), || {
        holder.ended.lock().unwrap().is_some()
    })
    .await;
    eventually_async(Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.publish("probe", "x".into()).await.is_err() }
    })
    .await;
    let delivery = holder.items.lock().unwrap().pop().unwrap();
    delivery.ack();
    eventually(Duration::from_secs(10), || {
        metrics.snapshot().ack_send_failed == 1
    })
    .await;
    assert_eq!(metrics.snapshot().acked, 1);
    drop(server);
}

/// Messages that arrive after the subscriber cancelled, counted `released` and held until the
/// pulls end, whose nak was never sent because the runtime shut down first: counted in
/// `ack_send_failed` (they were counted as nak'ed, and dropped unsent).
#[test]
fn messages_released_when_the_runtime_shuts_down_are_counted_as_not_sent() {
    let Some((server, runtime)) = server_and_current_thread() else {
        return;
    };
    let holder = Holder::default();
    let metrics = runtime.block_on(async {
        let js = jetstream_on(&server.url()).await;
        let source = source_over(&js, "late", 0, |config| {
            config.expires(Duration::from_secs(60))
        })
        .await;
        let metrics = source.metrics();
        source.subscribe(holder.clone());
        holder.request(10);
        eventually(Duration::from_secs(10), || {
            metrics.snapshot().outstanding == 10
        })
        .await;
        holder.subscription.lock().unwrap().take().unwrap().cancel();
        // Into the pull still open: they arrive after the cancel.
        fill(&js, "late.in", 3).await;
        eventually(Duration::from_secs(10), || metrics.snapshot().released == 3).await;
        metrics
    });
    // The pull stays open for a minute: the runtime drops the source's task with the three.
    drop(runtime);
    let s = metrics.snapshot();
    assert_eq!((s.released, s.ack_send_failed), (3, 3), "{s:?}");
}

/// A settlement still queued for the source's acker task when its runtime shuts down (the task
/// dropped before it sent it) is counted in `ack_send_failed`; it went uncounted.
#[test]
fn a_settlement_queued_when_the_runtime_shuts_down_is_counted() {
    let Some((server, runtime)) = server_and_current_thread() else {
        return;
    };
    let holder = Holder::default();
    let metrics = runtime.block_on(async {
        let js = jetstream_on(&server.url()).await;
        let source = source_over(&js, "queued", 1, |config| config).await;
        let metrics = source.metrics();
        source.subscribe(holder.clone());
        holder.request(1);
        holder.wait_for(1).await;
        metrics
    });
    // Outside `block_on`, a current-thread runtime runs no task: the settlement waits in the
    // acker task's queue, and the runtime drops the task with it.
    let delivery = holder.items.lock().unwrap().pop().unwrap();
    delivery.ack();
    drop(runtime);
    let s = metrics.snapshot();
    assert_eq!((s.acked, s.ack_send_failed), (1, 1), "{s:?}");
}
