//! weir beyond one machine: a producer process and N worker processes meet through NATS
//! JetStream. The workers share one durable work-queue consumer, so the broker splits the work
//! between them; each worker is a weir pipeline (JetStream source -> process -> JetStream sink)
//! whose pulls follow its own demand. Mid-run one worker is killed with SIGKILL and a new one is
//! started: the broker redelivers what the dead worker held, and the output stream's duplicate
//! window stores every result once.
//!
//! ```sh
//! cargo run --release --example scale_out -- --workers 2 --messages 200000
//! ```
//!
//! Options: `--url nats://...` (default: start a `nats-server` on loopback with a temporary
//! store), `--workers N` (2), `--messages M` (200,000), `--kill-at F` (kill a worker once a
//! fraction F of the messages is done; 0 never; default 0.3), `--work-us U` (CPU time each item
//! takes, in microseconds; 0), `--prefill` (the producer finishes before the workers start, so
//! that their throughput is measured alone). At the end it prints each worker's throughput and the final counts
//! (produced, stored exactly once, lost), and exits non-zero unless every message was processed
//! exactly once after dedupe.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir_nats::async_nats::jetstream::{self, consumer, stream};
use weir_nats::{
    sink::{JetStreamSink, OutMessage, SinkConfig},
    source::{JetStreamSource, SourceConfig},
};

const PAYLOAD: usize = 256;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("producer") => runtime.block_on(producer(
            option(&args, "--url")?,
            number(&args, "--messages", 0)?,
        )),
        Some("worker") => runtime.block_on(worker(
            option(&args, "--url")?,
            number(&args, "--work-us", 0)?,
        )),
        _ => orchestrate(&args, &runtime),
    }
}

fn option(args: &[String], name: &str) -> Result<String, BoxError> {
    args.iter()
        .position(|a| a == name)
        .and_then(|k| args.get(k + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name}").into())
}

fn number<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, BoxError> {
    match option(args, name) {
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}: not a number: {text}").into()),
        Err(_) => Ok(default),
    }
}

/// The producer process: publishes `messages` jobs of 256 bytes, each with an id.
async fn producer(url: String, messages: u64) -> Result<(), BoxError> {
    let js = jetstream::new(weir_nats::connect(&url).await?);
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("produce", "WORK", "work").max_in_flight(512),
    )
    .await?;
    let jobs = source::from_iter((0..messages).map(|n| {
        let mut payload = vec![b'.'; PAYLOAD];
        payload[..8].copy_from_slice(&n.to_le_bytes());
        OutMessage::new(payload).id(format!("job-{n}"))
    }));
    let report = sink.run(jobs).await?;
    println!("produced {}", report.published - report.duplicates);
    Ok(())
}

/// A worker process: a weir pipeline from the shared consumer to the `DONE` stream, until its
/// standard input closes. Prints its progress every 200 ms.
async fn worker(url: String, work_us: u64) -> Result<(), BoxError> {
    let js = jetstream::new(weir_nats::connect(&url).await?);
    let source = JetStreamSource::bind(
        &js,
        SourceConfig::new("work", "WORK", "workers").max_batch(256),
    )
    .await?;
    let sink = JetStreamSink::bind(
        &js,
        SinkConfig::new("done", "DONE", "done").max_in_flight(256),
    )
    .await?;
    let stop = source.stopper();
    let metrics = sink.metrics();
    // Close of standard input: the orchestrator asks the worker to finish.
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop.stop();
    });
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s = metrics.snapshot();
            println!("progress {} {}", s.published, s.duplicates);
        }
    });
    // The worker's pipeline: pulls follow the demand of the boundary, whose consumer processes
    // items in a task of its own; the sink publishes at most 256 at once and acknowledges each
    // input once its result is stored.
    let mut p = Pipeline::builder("worker");
    // The work queue's backlog at the broker counts toward the worker's readiness.
    p.readiness_input(source.lag_check());
    let work = p.source("work", source);
    let hop = p.boundary("hop", &work, 512);
    let results = p.stage("process", &hop, move |items| {
        items.map(move |delivery| delivery.map(|message| process(&message.payload, work_us)))
    });
    let publish = sink.clone();
    p.sink_async("done", &results, sink.config().in_flight(), move |result| {
        let sink = publish.clone();
        async move { sink.send(result).await.map(drop) }
    });
    p.build()?.start()?.await?;
    let report = sink.metrics().snapshot();
    progress.abort();
    println!("done {} {}", report.published, report.duplicates);
    Ok(())
}

/// The work on one item: `work_us` of CPU, then a digest of the payload.
fn process(payload: &[u8], work_us: u64) -> OutMessage {
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_micros(work_us) {
        std::hint::spin_loop();
    }
    let digest = payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    OutMessage::new(format!("{digest:016x}"))
}

/// A worker process as the orchestrator sees it.
struct Worker {
    id: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    started: Instant,
    /// When its count last grew (its throughput is measured up to there).
    last_progress: Instant,
    processed: u64,
    duplicates: u64,
    killed: bool,
    /// CPU seconds it used, read just before it was stopped or killed.
    cpu_secs: Option<f64>,
}

/// CPU seconds (user + system) a live process used so far, from `/proc` (Linux; 100 ticks a
/// second, the kernel's `USER_HZ`).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn spawn_worker(
    id: usize,
    url: &str,
    work_us: u64,
    reports: &mpsc::Sender<(usize, String)>,
) -> Result<Worker, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", "--url", url, "--work-us", &work_us.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reports = reports.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if reports.send((id, line)).is_err() {
                return;
            }
        }
    });
    Ok(Worker {
        id,
        stdin: child.stdin.take(),
        child,
        started: Instant::now(),
        last_progress: Instant::now(),
        processed: 0,
        duplicates: 0,
        killed: false,
        cpu_secs: None,
    })
}

fn orchestrate(args: &[String], runtime: &tokio::runtime::Runtime) -> Result<(), BoxError> {
    let workers: usize = number(args, "--workers", 2)?;
    let messages: u64 = number(args, "--messages", 200_000)?;
    let kill_at: f64 = number(args, "--kill-at", 0.3)?;
    let work_us: u64 = number(args, "--work-us", 0)?;
    let (server, url) = match option(args, "--url") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = weir_nats::local::start_server()?;
            let url = server.url();
            println!("started nats-server at {url} (temporary store)");
            (Some(server), url)
        }
    };
    let js = runtime
        .block_on(async { Ok::<_, BoxError>(jetstream::new(weir_nats::connect(&url).await?)) })?;
    runtime.block_on(fresh_streams(&js))?;

    let (reports, incoming) = mpsc::channel();
    let prefill = args.iter().any(|a| a == "--prefill");
    let mut started = Instant::now();
    let mut producer = Command::new(std::env::current_exe()?)
        .args([
            "producer",
            "--url",
            &url,
            "--messages",
            &messages.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    if prefill {
        // Measure the workers alone: the producer finishes first.
        producer.wait()?;
        println!(
            "prefilled {messages} messages in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        started = Instant::now();
    }
    let mut pool: Vec<Worker> = Vec::new();
    for id in 0..workers {
        pool.push(spawn_worker(id, &url, work_us, &reports)?);
    }
    println!("1 producer and {workers} workers started; {messages} messages of {PAYLOAD} bytes");
    let mut killed = kill_at <= 0.0;
    let mut stored = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while stored < messages {
        if Instant::now() > deadline {
            return Err(format!("only {stored} of {messages} stored after 10 minutes").into());
        }
        std::thread::sleep(Duration::from_millis(50));
        while let Ok((id, line)) = incoming.try_recv() {
            record(&mut pool, id, &line);
        }
        stored = runtime.block_on(stream_messages(&js, "DONE"))?;
        if !killed && stored as f64 >= kill_at * messages as f64 {
            let next = pool.len();
            let victim = &mut pool[0];
            victim.cpu_secs = cpu_secs(victim.child.id());
            victim.child.kill()?; // SIGKILL: it cannot settle anything
            victim.child.wait()?;
            victim.killed = true;
            println!(
                "killed worker {} (pid {}) with SIGKILL after {stored} results; starting worker {}",
                victim.id,
                victim.child.id(),
                next
            );
            pool.push(spawn_worker(next, &url, work_us, &reports)?);
            killed = true;
        }
    }
    let elapsed = started.elapsed();
    // Everything is stored: ask the live workers to finish, and collect their last reports.
    let broker_cpu = server.as_ref().and_then(|s| s.pid()).and_then(cpu_secs);
    for worker in pool.iter_mut().filter(|w| !w.killed) {
        worker.cpu_secs = cpu_secs(worker.child.id());
        worker.stdin.take();
    }
    for worker in pool.iter_mut().filter(|w| !w.killed) {
        worker.child.wait()?;
    }
    while let Ok((id, line)) = incoming.recv_timeout(Duration::from_millis(200)) {
        record(&mut pool, id, &line);
    }
    let mut produced_line = String::new();
    producer
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut produced_line)?;
    producer.wait()?;

    let ids = runtime.block_on(stored_ids(&js))?;
    let unique: BTreeSet<&String> = ids.iter().collect();
    let expected: BTreeSet<String> = (1..=messages).map(|seq| format!("WORK.{seq}")).collect();
    let lost = expected.iter().filter(|id| !unique.contains(id)).count();
    let attempts: u64 = pool.iter().map(|w| w.processed).sum();
    let deduped: u64 = pool.iter().map(|w| w.duplicates).sum();

    println!("\nworker  pid      fate     processed  duplicates  throughput   cpu");
    for w in &pool {
        let secs = w
            .last_progress
            .duration_since(w.started)
            .as_secs_f64()
            .max(1e-3);
        println!(
            "{:>6}  {:>7}  {:<7}  {:>9}  {:>10}  {:>8.0}/s  {}",
            w.id,
            w.child.id(),
            if w.killed { "killed" } else { "drained" },
            w.processed,
            w.duplicates,
            w.processed as f64 / secs,
            w.cpu_secs.map_or("n/a".to_owned(), |c| format!("{c:.1}s"))
        );
    }
    println!(
        "\n{} in {:.2}s: {:.0} messages/s through the pipeline",
        produced_line.trim(),
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    if let Some(cpu) = broker_cpu {
        println!("the local nats-server used {cpu:.1}s of CPU");
    }
    println!(
        "produced {messages}, stored exactly once {}, lost {lost} (results published {attempts}, of which {deduped} duplicates the broker dropped{})",
        unique.len(),
        if pool.iter().any(|w| w.killed) {
            "; a killed worker's last report may lag its death"
        } else {
            ""
        }
    );
    if ids.len() != unique.len() || unique.len() as u64 != messages || lost != 0 {
        return Err("the output does not hold every message exactly once".into());
    }
    Ok(())
}

/// Takes a worker's `progress`/`done` line.
fn record(pool: &mut [Worker], id: usize, line: &str) {
    let mut words = line.split_whitespace();
    if let (Some("progress" | "done"), Some(processed), Some(duplicates)) =
        (words.next(), words.next(), words.next())
        && let (Ok(processed), Ok(duplicates)) = (processed.parse(), duplicates.parse())
    {
        if processed > pool[id].processed {
            pool[id].last_progress = Instant::now();
        }
        pool[id].processed = processed;
        pool[id].duplicates = duplicates;
    }
}

async fn fresh_streams(js: &jetstream::Context) -> Result<(), BoxError> {
    for (name, subject, retention) in [
        ("WORK", "work", stream::RetentionPolicy::WorkQueue),
        ("DONE", "done", stream::RetentionPolicy::Limits),
    ] {
        let _ = js.delete_stream(name).await;
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await?;
    }
    js.get_stream("WORK")
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some("workers".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> Result<u64, BoxError> {
    Ok(js.get_stream(name).await?.info().await?.state.messages)
}

/// The message ids in `DONE`.
async fn stored_ids(js: &jetstream::Context) -> Result<Vec<String>, BoxError> {
    use futures::StreamExt;
    let reader: consumer::PullConsumer = js
        .get_stream("DONE")
        .await?
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut ids = Vec::new();
    loop {
        let mut batch = reader.fetch().max_messages(10_000).messages().await?;
        let before = ids.len();
        while let Some(message) = batch.next().await {
            let message = message?;
            let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
            ids.push(id.map(|id| id.to_string()).unwrap_or_default());
        }
        if ids.len() == before {
            return Ok(ids);
        }
    }
}
