//! `dsl`: what a pipeline's graph edges cost. 10 million `u64` through map -> filter -> boundary ->
//! summing sink, built two ways in the same run: as one operator chain (static dispatch end to
//! end), and as a DSL pipeline whose stages meet at type-erased edges (`dsl_pipeline`: source,
//! stage, boundary, sink = three edges). Both sinks run the same code: add, then one relaxed store
//! of the sum (the pipeline's sink hands its result out that way).
//!
//! `cargo bench --bench dsl` runs both under criterion. For instruction counts (stable on a noisy
//! machine), one run of one variant on a current-thread runtime:
//! `WEIR_DSL_PROBE=dsl WEIR_DSL_PROBE_ITEMS=1000000 valgrind --tool=callgrind target/release/deps/dsl-<hash>`
//! (`chain` for the operator chain); the difference between two item counts, divided by their
//! difference, is the cost per item.

mod probe;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group};
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;
const CAPACITY: usize = 4096;

fn dsl(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("dsl");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);

    group.bench_function("operator_chain", |b| {
        b.iter(|| runtime.block_on(async { tokio::spawn(chain(black_box(ITEMS))).await }))
    });
    group.bench_function("dsl_pipeline", |b| {
        b.iter(|| runtime.block_on(async { tokio::spawn(pipeline(black_box(ITEMS))).await }))
    });
    group.finish();
}

async fn chain(n: u64) -> u64 {
    let hop = BoundaryConfig::new("hop", CAPACITY).expect("config");
    // The same sink code as the pipeline's (which can only hand its sum out through shared
    // memory): one relaxed store per item, so that the ratio is what the graph costs. The
    // atomic is shared and read at the end, as the pipeline's: a store into an atomic nobody
    // else can see is dead code, which the compiler removed (the fold then became a vector loop
    // with no store at all, and the two sinks no longer ran the same code).
    let sum = Arc::new(AtomicU64::new(0));
    let total = sum.clone();
    let folded = source::from_iter(0..n)
        .map(|x| x.wrapping_mul(3))
        .filter(|x| x % 7 != 0)
        .boundary(hop)
        .fold(0u64, move |sum, x| {
            *sum = sum.wrapping_add(x);
            total.store(*sum, Ordering::Relaxed);
        })
        .await
        .expect("stream");
    assert_eq!(folded, sum.load(Ordering::Relaxed));
    folded
}

async fn pipeline(n: u64) -> u64 {
    let mut p = Pipeline::builder("bench");
    let numbers = p.source("numbers", source::from_iter(0..n));
    let kept = p.stage("work", &numbers, |xs| {
        xs.map(|x| x.wrapping_mul(3)).filter(|x| x % 7 != 0)
    });
    let hop = p.boundary("hop", &kept, CAPACITY);
    let sum = Arc::new(AtomicU64::new(0));
    let total = sum.clone();
    let mut local = 0u64;
    p.sink("sum", &hop, move |x: u64| {
        local = local.wrapping_add(x);
        total.store(local, Ordering::Relaxed);
    });
    let running = p.build().expect("graph").start().expect("runtime");
    running.await.expect("pipeline");
    sum.load(Ordering::Relaxed)
}

criterion_group!(benches, dsl);

fn main() {
    probe::main_or_probe(
        "WEIR_DSL_PROBE",
        benches,
        "chain, dsl",
        |variant, n, runtime| {
            Some(match variant {
                "chain" => runtime.block_on(chain(n)),
                "dsl" => runtime.block_on(pipeline(n)),
                _ => return None,
            })
        },
    );
}
