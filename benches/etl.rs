//! `etl`: the ETL example's transformation (parse + validate, dead letters, enrich through an async
//! lookup with 64 in flight, dedupe in a window of 4,096 ids, batches of 1,024, one SQLite
//! transaction per batch + rotating JSONL files) done two ways on the same generated input, in the
//! same run: through the example's weir pipeline (`weir`), and by hand with tokio and serde_json
//! (`hand_written`: a reader thread, a channel, `buffered(64)` lookups, a window and batches in a
//! loop, each batch written to both outputs while the next one fills). Both share the example's
//! row checking, lookup service and writers, so what differs is the plumbing; every iteration
//! checks that both counted the same.
//!
//! `cargo bench --bench etl -- --warm-up-time 1 --measurement-time 4` (500,000 rows, 2% bad, 5%
//! duplicates; `WEIR_ETL_ROWS=N` for another size). Peak memory of one variant alone, in a
//! process of its own: `WEIR_ETL_PROBE=hand_written WEIR_ETL_ROWS=10000000
//! target/release/deps/etl-<hash>` (or `weir`) prints its rows/s and `VmHWM`.

#![allow(dead_code, unreachable_pub)]

#[path = "../examples/etl/generate.rs"]
mod generate;
#[path = "../examples/etl/lookup.rs"]
mod lookup;
#[path = "../examples/etl/output.rs"]
mod output;
#[path = "../examples/etl/pipeline.rs"]
mod pipeline;
#[path = "../examples/etl/reader.rs"]
mod reader;
#[path = "../examples/etl/row.rs"]
mod row;

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use futures::StreamExt;

use generate::{CUSTOMERS, Generated, Spec};
use lookup::Directory;
use output::{Database, DeadLetters, Rotating, SharedRotating};
use pipeline::{Etl, Settings};
use reader::{Lines, ReadProgress};
use row::{Checked, Enriched, check};

const DEFAULT_ROWS: u64 = 500_000;

fn rows() -> u64 {
    std::env::var("WEIR_ETL_ROWS")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_ROWS)
}

/// What a run counted: the same for both variants on the same input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    read: u64,
    bad: u64,
    window_duplicates: u64,
    db_rows: u64,
    db_duplicates: u64,
    jsonl_lines: u64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh output directory under `scratch` for each run.
fn settings(input: &Path, scratch: &Path, run: u64) -> Settings {
    let out = scratch.join(format!("run-{run}"));
    let _ = std::fs::remove_dir_all(&out);
    Settings::new(input.to_owned(), out)
}

async fn weir(settings: &Settings) -> Counted {
    let etl = Etl::start(settings, Directory::start(CUSTOMERS)).expect("the ETL starts");
    let outcome = etl.finish().await;
    assert_eq!(outcome.result, Ok(()));
    let t = &outcome.totals;
    assert!(t.problems().is_empty(), "{:?}", t.problems());
    Counted {
        read: t.read,
        bad: t.bad(),
        window_duplicates: t.window_duplicates,
        db_rows: t.db_rows,
        db_duplicates: t.db_duplicates,
        jsonl_lines: t.jsonl_lines,
    }
}

/// The last `capacity` distinct ids.
struct Window {
    capacity: usize,
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Window {
    /// Remembers `id`; `false` if it was already remembered.
    fn insert(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

type Written = tokio::task::JoinHandle<Result<(u64, u64), output::OutputError>>;

/// Writes `batch` to both outputs in a task of its own; resolves to (rows, duplicates).
fn write(database: &Database, files: &SharedRotating, batch: Vec<Enriched>) -> Written {
    let (database, files) = (database.clone(), files.clone());
    tokio::spawn(async move {
        let batch = Arc::new(batch);
        let (inserted, ()) = tokio::try_join!(database.insert(batch.clone()), files.write(batch))?;
        Ok((inserted.rows, inserted.duplicates))
    })
}

async fn hand_written(settings: &Settings) -> Counted {
    std::fs::create_dir_all(&settings.out_dir).expect("output directory");
    let database = Database::create(&settings.database_path()).expect("database");
    let files = SharedRotating::new(
        Rotating::new(&settings.jsonl_dir(), settings.rows_per_file).expect("JSONL output"),
    );
    let mut dead = DeadLetters::create(&settings.dead_letter_path()).expect("dead letters");
    let directory = Directory::start(CUSTOMERS);

    // Read, parse and validate on a blocking thread; bad rows to their file, orders to a channel.
    let (orders, mut incoming) = tokio::sync::mpsc::channel(1_024);
    let input = settings.input.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let (lines, _) = Lines::open(&input, Arc::new(ReadProgress::default())).expect("input");
        let (mut read, mut bad) = (0, 0);
        for line in lines {
            read += 1;
            match check(line.expect("a readable input")) {
                Checked::Valid(order) => {
                    if orders.blocking_send(order).is_err() {
                        break;
                    }
                }
                Checked::Invalid(letter) => {
                    dead.write(&letter).expect("dead letter written");
                    bad += 1;
                }
            }
        }
        dead.finish().expect("dead letters closed");
        (read, bad)
    });

    // Enrich with 64 lookups in flight (in order), dedupe, batch, write.
    let orders = futures::stream::poll_fn(move |cx| incoming.poll_recv(cx));
    let mut enriched = orders
        .map(|order: row::Order| {
            let directory = directory.clone();
            async move {
                let customer = directory.lookup(order.customer).await?;
                Ok::<_, lookup::LookupError>(Enriched::new(order, customer))
            }
        })
        .buffered(settings.concurrency);
    let mut window = Window {
        capacity: settings.window,
        seen: HashSet::new(),
        order: VecDeque::new(),
    };
    let mut counted = Counted {
        read: 0,
        bad: 0,
        window_duplicates: 0,
        db_rows: 0,
        db_duplicates: 0,
        jsonl_lines: 0,
    };
    let mut batch = Vec::with_capacity(settings.batch);
    let mut in_flight: Option<Written> = None;
    let settle = |written: (u64, u64), counted: &mut Counted| {
        counted.db_rows += written.0;
        counted.db_duplicates += written.1;
        counted.jsonl_lines += written.0 + written.1;
    };
    loop {
        let row = enriched.next().await;
        if let Some(row) = &row {
            let row = *row.as_ref().expect("the directory answers");
            if !window.insert(row.order.id) {
                counted.window_duplicates += 1;
                continue;
            }
            batch.push(row);
        }
        let last = row.is_none();
        if batch.len() == settings.batch || (last && !batch.is_empty()) {
            // One batch being written while the next one fills.
            if let Some(previous) = in_flight.take() {
                settle(
                    previous.await.expect("writer").expect("written"),
                    &mut counted,
                );
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(settings.batch));
            in_flight = Some(write(&database, &files, full));
        }
        if last {
            break;
        }
    }
    if let Some(previous) = in_flight.take() {
        settle(
            previous.await.expect("writer").expect("written"),
            &mut counted,
        );
    }
    files.lock().finish().expect("JSONL closed");
    let (read, bad) = reader.await.expect("reader");
    counted.read = read;
    counted.bad = bad;
    counted
}

fn generate_input(dir: &Path, rows: u64) -> (std::path::PathBuf, Generated) {
    let spec = Spec {
        rows,
        bad_share: 0.02,
        dup_share: 0.05,
        seed: 1,
    };
    let input = dir.join("input.jsonl");
    let generated = generate::write(&spec, &input).expect("input generated");
    (input, generated)
}

fn expected(generated: &Generated) -> Counted {
    Counted {
        read: generated.rows,
        bad: generated.bad,
        window_duplicates: generated.near,
        db_rows: generated.fresh,
        db_duplicates: generated.far,
        jsonl_lines: generated.fresh + generated.far,
    }
}

/// Runs `variant` once.
async fn one(variant: &str, settings: &Settings) -> Counted {
    match variant {
        "weir" => weir(settings).await,
        "hand_written" => hand_written(settings).await,
        other => panic!("`{other}` is not weir or hand_written"),
    }
}

fn etl(c: &mut Criterion) {
    let rows = rows();
    let scratch = tempfile::Builder::new()
        .prefix("weir-bench-etl-")
        .tempdir()
        .expect("scratch directory");
    let (input, generated) = generate_input(scratch.path(), rows);
    let expected = expected(&generated);
    let runtime = runtime();
    let mut group = c.benchmark_group("etl");
    group.throughput(Throughput::Elements(rows));
    group.sample_size(10);
    let mut run = 0;
    for variant in ["weir", "hand_written"] {
        group.bench_function(variant, |b| {
            b.iter(|| {
                run += 1;
                let settings = settings(&input, scratch.path(), run);
                assert_eq!(runtime.block_on(one(variant, &settings)), expected);
                let _ = std::fs::remove_dir_all(&settings.out_dir);
            })
        });
    }
    group.finish();
}

/// One run of one variant in this process: its rows/s and the process's peak RSS.
fn probe(variant: &str) {
    let rows = rows();
    let scratch = tempfile::Builder::new()
        .prefix("weir-probe-etl-")
        .tempdir()
        .expect("scratch directory");
    let (input, generated) = generate_input(scratch.path(), rows);
    let settings = settings(&input, scratch.path(), 0);
    let runtime = runtime();
    let started = Instant::now();
    let counted = runtime.block_on(one(variant, &settings));
    let elapsed = started.elapsed().max(Duration::from_nanos(1));
    assert_eq!(counted, expected(&generated));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: unknown");
    println!(
        "{variant}: {rows} rows in {:.2} s, {:.0} rows/s, {peak}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
}

criterion_group!(benches, etl);

fn main() {
    match std::env::var("WEIR_ETL_PROBE") {
        Ok(variant) => probe(&variant),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
