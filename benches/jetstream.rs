//! `jetstream`: 1 million 256-byte messages through source -> map -> sink on one local
//! `nats-server`, weir's connector against a hand-written async-nats fetch / publish / ack loop
//! with the same batch sizes, in the same run.
//!
//! Each iteration starts from a purged pair of streams (`SRC` filled with the messages outside
//! the timing, `DST` empty) and a fresh durable consumer, and is timed until every message was
//! republished to `DST` (with its source's stream sequence as message id) and acknowledged.
//! `WEIR_BENCH_MESSAGES` overrides the count (for a quick run). Without `nats-server` the bench
//! prints why and measures nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use weir::prelude::*;
use weir_nats::async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use weir_nats::{
    sink::{JetStreamSink, OutMessage, SinkConfig},
    source::{JetStreamSource, SourceConfig},
};

/// Messages per pull, in both variants.
const BATCH: usize = 256;
/// Publishes awaiting confirmation at once, in both variants.
const IN_FLIGHT: usize = 256;
const PAYLOAD: usize = 256;

fn messages() -> u64 {
    std::env::var("WEIR_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

async fn prepare(js: &jetstream::Context, n: u64) {
    for (name, subject) in [("SRC", "bench.src"), ("DST", "bench.dst")] {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![subject.to_owned()],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
        stream.purge().await.unwrap();
    }
    let source = js.get_stream("SRC").await.unwrap();
    let _ = source.delete_consumer("bench").await;
    source
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut acks = FuturesOrdered::new();
    for _ in 0..n {
        let ack = js.publish("bench.src", payload.clone()).await.unwrap();
        acks.push_back(ack.into_future());
        if acks.len() >= 1_024 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
}

async fn weir_pipeline(js: &jetstream::Context, n: u64) {
    let config = SourceConfig::new("src", "SRC", "bench").max_batch(BATCH);
    let source = JetStreamSource::bind(js, config).await.unwrap();
    let sink_config = SinkConfig::new("dst", "DST", "bench.dst").max_in_flight(IN_FLIGHT);
    let sink = JetStreamSink::bind(js, sink_config).await.unwrap();
    let mapped = source
        .take(n)
        .map(|delivery| delivery.map(|message| OutMessage::new(message.payload)));
    let report = sink.run(mapped).await.unwrap();
    assert_eq!(report.published, n);
}

async fn hand_written(js: &jetstream::Context, n: u64) {
    let consumer: consumer::PullConsumer = js
        .get_stream("SRC")
        .await
        .unwrap()
        .get_consumer("bench")
        .await
        .unwrap();
    let mut done = 0;
    while done < n {
        let want = BATCH.min((n - done) as usize);
        let mut batch = consumer
            .batch()
            .max_messages(want)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut received = Vec::with_capacity(want);
        while let Some(message) = batch.next().await {
            received.push(message.unwrap());
        }
        // Republish the batch (at most IN_FLIGHT unconfirmed), then acknowledge each input.
        for chunk in received.chunks(IN_FLIGHT) {
            let mut confirmations = Vec::with_capacity(chunk.len());
            for message in chunk {
                let id = format!("SRC.{}", message.info().unwrap().stream_sequence);
                let publish = PublishMessage::build()
                    .payload(message.payload.clone())
                    .message_id(id);
                confirmations.push(js.send_publish("bench.dst", publish).await.unwrap());
            }
            for confirmation in confirmations {
                confirmation.await.unwrap();
            }
        }
        for message in &received {
            message.ack().await.unwrap();
        }
        done += received.len() as u64;
    }
}

fn jetstream_bench(c: &mut Criterion) {
    let server = match weir_nats::local::start_server() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("jetstream bench skipped: {error}");
            return;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let js = runtime
        .block_on(async { jetstream::new(weir_nats::connect(&server.url()).await.unwrap()) });
    let n = messages();
    let mut group = c.benchmark_group("jetstream");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(n));
    group.bench_function("weir", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(prepare(&js, n));
                let started = Instant::now();
                runtime.block_on(weir_pipeline(&js, n));
                total += started.elapsed();
            }
            black_box(total)
        })
    });
    group.bench_function("hand_written", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(prepare(&js, n));
                let started = Instant::now();
                runtime.block_on(hand_written(&js, n));
                total += started.elapsed();
            }
            black_box(total)
        })
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, jetstream_bench);
criterion_main!(benches);
