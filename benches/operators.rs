//! `operators`: 10 million `u64` through map -> filter -> batch(256) -> summing sink.
//! Peers in the same run: a hand-written iterator with chunking, and `futures::StreamExt::chunks`.
//! Instruction counts: the probe mode at the end of the file.
//! Target (issue 3): weir within 1.5x of `iterator`.

mod probe;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use futures::StreamExt;
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;
const BATCH: usize = 256;

/// weir: a fused map -> filter, the batch in a task of its own behind a lane, a fold sink.
async fn weir(n: u64) -> u64 {
    source::from_iter(0..n)
        .map(|x| x.wrapping_mul(3))
        .filter(|x| x % 2 == 0)
        .batch(BATCH, Duration::from_secs(1))
        .fold(0u64, |sum, batch: Vec<u64>| {
            *sum = batch.iter().fold(*sum, |s, x| s.wrapping_add(*x))
        })
        .await
        .expect("stream")
}

/// The same by hand: an iterator chain pushing into chunks of `BATCH`.
fn iterator(n: u64) -> u64 {
    let mut sum = 0u64;
    let mut chunk = Vec::with_capacity(BATCH);
    for x in (0..n).map(|x| x.wrapping_mul(3)).filter(|x| x % 2 == 0) {
        chunk.push(x);
        if chunk.len() == BATCH {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(BATCH));
            sum = black_box(&full).iter().fold(sum, |s, x| s.wrapping_add(*x));
        }
    }
    chunk.iter().fold(sum, |s, x| s.wrapping_add(*x))
}

fn operators(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("operators");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);

    group.bench_function("weir", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move { tokio::spawn(weir(n)).await.expect("task") })
        })
    });

    group.bench_function("iterator", |b| b.iter(|| iterator(black_box(ITEMS))));

    group.bench_function("futures_stream", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(
                futures::stream::iter(0..n)
                    .map(|x| x.wrapping_mul(3))
                    .filter(|x| futures::future::ready(x % 2 == 0))
                    .chunks(BATCH)
                    .fold(0u64, |sum, batch| {
                        futures::future::ready(batch.iter().fold(sum, |s, x| s.wrapping_add(*x)))
                    }),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, operators);

/// `WEIR_OPERATORS_PROBE=weir|iterator` runs one pass of `WEIR_OPERATORS_PROBE_ITEMS` (1 M) items
/// on a current-thread runtime and exits, for instruction counts:
/// `valgrind --tool=callgrind target/release/deps/operators-<hash>`; the difference between two
/// item counts, divided by their difference, is the cost per item.
fn main() {
    probe::main_or_probe(
        "WEIR_OPERATORS_PROBE",
        benches,
        "weir, iterator",
        |variant, n, runtime| {
            Some(match variant {
                "weir" => runtime.block_on(weir(n)),
                "iterator" => iterator(n),
                _ => return None,
            })
        },
    );
}
