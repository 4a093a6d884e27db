//! The NATS JetStream connector when things break, against real `nats-server` processes: a worker
//! process killed with SIGKILL (its messages are redelivered), a server restarted mid-run (the
//! pipeline reconnects and nothing acknowledged is lost) and a three-server cluster losing a
//! server under an R3 stream (nothing lost). Skipped with a message outside CI when no server can
//! be started; a failure under CI=true.

mod nats_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir::prelude::*;
use weir_nats::async_nats::jetstream::{self, consumer};
use weir_nats::local::{cluster_for_tests, server_for_tests};
use weir_nats::{
    SinkSnapshot, SourceMetrics,
    sink::{JetStreamSink, OutMessage, SinkConfig},
    source::{JetStreamSource, SourceConfig, SourceStop},
};

use nats_support::*;

/// The environment variable that turns the helper test below into a worker process.
const CHILD_URL: &str = "WEIR_NATS_CHILD_URL";

/// Not a test: the worker process of `a_killed_workers_messages_are_redelivered`, which runs this
/// binary again with only this function selected. It takes 10 messages and never settles them.
#[tokio::test]
#[ignore = "a helper process, started by a_killed_workers_messages_are_redelivered"]
async fn worker_process_that_hangs() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        eprintln!("a helper process: run a_killed_workers_messages_are_redelivered instead");
        return;
    };
    let js = jetstream_on(&url).await;
    let source = JetStreamSource::bind(&js, SourceConfig::new("victim", "KILL", "workers"))
        .await
        .unwrap();
    let held = source.take(10).collect().await.unwrap();
    println!("holding {}", held.len());
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_messages_are_redelivered() {
    let Some(server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "KILL", &["kill"]).await;
    fill(&js, "kill", 30).await;
    pull_consumer(&js, "KILL", "workers", Duration::from_secs(2)).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "worker_process_that_hangs",
            "--nocapture",
        ])
        .env(CHILD_URL, server.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually_async(Duration::from_secs(30), || {
        let js = js.clone();
        async move { consumer_info(&js, "KILL", "workers").await.num_ack_pending == 10 }
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no chance to nak
    child.wait().unwrap();

    // A new worker gets all 30; the 10 the dead one held come again after the 2 s ack wait.
    let source = JetStreamSource::bind(&js, SourceConfig::new("heir", "KILL", "workers"))
        .await
        .unwrap();
    let seen = source
        .take(30)
        .map(|delivery| {
            let info = delivery.info().unwrap();
            let seen = (info.stream_sequence, info.delivered);
            delivery.ack();
            seen
        })
        .collect()
        .await
        .unwrap();
    let sequences: BTreeSet<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(sequences, (1..=30).collect(), "every message, none lost");
    assert_eq!(
        seen.iter().filter(|(_, delivered)| *delivered == 2).count(),
        10
    );
}

/// Source `IN`/`relay` -> payload to `OUT` (id: the input's stream sequence) -> acked when stored.
struct Relay {
    running: tokio::task::JoinHandle<Result<SinkSnapshot, Error>>,
    stop: SourceStop,
    metrics: Arc<SourceMetrics>,
}

async fn relay(js: &jetstream::Context) -> Relay {
    let config = SourceConfig::new("in", "IN", "relay")
        .max_batch(64)
        .expires(Duration::from_millis(500));
    let source = JetStreamSource::bind(js, config).await.unwrap();
    let sink = JetStreamSink::bind(js, SinkConfig::new("out", "OUT", "out").max_in_flight(64))
        .await
        .unwrap();
    let stop = source.stopper();
    let metrics = source.metrics();
    let payloads = source.map(|delivery| delivery.map(|message| OutMessage::new(message.payload)));
    let running = tokio::spawn(async move { sink.run(payloads).await });
    Relay {
        running,
        stop,
        metrics,
    }
}

/// The message ids stored in `stream` (retrying while a cluster settles after losing a server).
async fn stored_ids(js: &jetstream::Context, stream: &str) -> Vec<String> {
    for attempt in 1.. {
        match try_stored_ids(js, stream).await {
            Ok(ids) => return ids,
            Err(error) if attempt < 20 => {
                eprintln!("reading {stream}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("could not read {stream}: {error}"),
        }
    }
    unreachable!()
}

async fn try_stored_ids(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let stream = js.get_stream(stream).await?;
    let reader: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    let mut ids = Vec::new();
    loop {
        let mut batch = reader.fetch().max_messages(1_000).messages().await?;
        let before = ids.len();
        while let Some(message) = futures::StreamExt::next(&mut batch).await {
            let message = message.map_err(|error| error.to_string())?;
            let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
            ids.push(id.expect("every stored message has an id").to_string());
        }
        if ids.len() == before {
            return Ok(ids);
        }
    }
}

/// Waits until the relay consumed all of `IN`, stops it and checks that `OUT` holds every input
/// exactly once.
async fn finish_and_check(js: &jetstream::Context, relay: Relay, total: u64) {
    eventually_async(Duration::from_secs(90), || {
        let js = js.clone();
        async move {
            let Ok(stream) = js.get_stream("IN").await else {
                return false;
            };
            match stream.consumer_info("relay").await {
                Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
                Err(_) => false,
            }
        }
    })
    .await;
    relay.stop.stop();
    let report = relay.running.await.unwrap().unwrap();
    let source = relay.metrics.snapshot();
    eprintln!("sink {report:?}\nsource {source:?}");
    let ids = stored_ids(js, "OUT").await;
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "each input stored once");
    let expected: BTreeSet<String> = (1..=total).map(|seq| format!("IN.{seq}")).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "nothing lost"
    );
    assert_eq!(stream_messages(js, "OUT").await, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing_acknowledged() {
    let Some(mut server) = server_for_tests().unwrap() else {
        return;
    };
    let js = jetstream_on(&server.url()).await;
    work_stream(&js, "IN", &["in"]).await;
    work_stream(&js, "OUT", &["out"]).await;
    fill(&js, "in", 3_000).await;
    pull_consumer(&js, "IN", "relay", Duration::from_secs(5)).await;
    let relay = relay(&js).await;

    eventually(Duration::from_secs(30), || {
        relay.metrics.snapshot().acked >= 800
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().unwrap();
    finish_and_check(&js, relay, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_stream_loses_nothing_when_a_cluster_server_dies() {
    let Some(mut cluster) = cluster_for_tests(3).unwrap() else {
        return;
    };
    let js = jetstream_on(&cluster.url()).await;
    stream_with(&js, "IN", &["in"], 3).await;
    stream_with(&js, "OUT", &["out"], 3).await;
    fill(&js, "in", 3_000).await;
    pull_consumer(&js, "IN", "relay", Duration::from_secs(5)).await;
    let relay = relay(&js).await;

    eventually(Duration::from_secs(30), || {
        relay.metrics.snapshot().acked >= 800
    })
    .await;
    // Kill the server the client is connected to, so that the client has to move as well.
    let connected = js.client().server_info().port;
    let victim = cluster
        .servers()
        .iter_mut()
        .find(|server| server.port() == connected)
        .expect("the client is connected to one of the servers");
    victim.kill();
    finish_and_check(&js, relay, 3_000).await;
}
