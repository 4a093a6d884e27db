//! `chain`: 10 million `u64` through source -> map -> filter -> map -> summing sink, fused.
//! Peers in the same run: a plain iterator chain, the same iterator chain stopping every 1,024
//! items to look at a cancel flag (`iterator_blocks`: what any cancellable source compiles to),
//! the plain chain counting the items its filter drops (`iterator_counted`: what weir's ledger
//! counts per burst), the plain chain over a range whose start the compiler does not know
//! (`iterator_opaque_start`: knowing that the first item is 0, LLVM drops the odd items of the
//! plain chain without testing them, see BENCHMARKS.md), and the same chain over
//! `futures::StreamExt`.
//! Target (issue 2): weir within 1.5x of `iterator` and no slower than `futures_stream`.

mod probe;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use futures::StreamExt;
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;

fn weir(runtime: &tokio::runtime::Runtime, n: u64) -> Result<u64, Error> {
    runtime.block_on(
        source::from_iter(0..n)
            .map(|x| x.wrapping_mul(3))
            .filter(|x| x % 2 == 0)
            .map(|x| x >> 1)
            .fold(0u64, |sum, x| *sum = sum.wrapping_add(x)),
    )
}

fn iterator(n: u64) -> u64 {
    (0..n)
        .map(|x| x.wrapping_mul(3))
        .filter(|x| x % 2 == 0)
        .map(|x| x >> 1)
        .fold(0u64, |sum, x| sum.wrapping_add(x))
}

/// The plain iterator chain counting the items its filter drops, as weir's filter must for the
/// ledger (weir counts the ones it keeps and subtracts, the same work).
/// The plain chain from `start`, which the caller hides from the compiler (`black_box`), as a
/// stream's source position is hidden from the loop of each of its bursts.
fn iterator_opaque_start(start: u64, n: u64) -> u64 {
    (start..n)
        .map(|x| x.wrapping_mul(3))
        .filter(|x| x % 2 == 0)
        .map(|x| x >> 1)
        .fold(0u64, |sum, x| sum.wrapping_add(x))
}

fn iterator_counted(n: u64) -> u64 {
    let mut dropped = 0u64;
    let sum = (0..n)
        .map(|x| x.wrapping_mul(3))
        .filter(|x| {
            let keep = x % 2 == 0;
            dropped += u64::from(!keep);
            keep
        })
        .map(|x| x >> 1)
        .fold(0u64, |sum, x| sum.wrapping_add(x));
    black_box(dropped);
    sum
}

/// The plain iterator chain, stopping every 1,024 items pulled to look at a cancel flag, as any
/// source must that can be cancelled mid-stream: the same closures over `by_ref().take(1024)`.
fn iterator_blocks(n: u64, cancelled: &std::sync::atomic::AtomicBool) -> u64 {
    let mut items = 0..n;
    let mut sum = 0u64;
    loop {
        let mut pulled = 0u64;
        sum = items
            .by_ref()
            .take(1024)
            .inspect(|_| pulled += 1)
            .map(|x| x.wrapping_mul(3))
            .filter(|x| x % 2 == 0)
            .map(|x| x >> 1)
            .fold(sum, |sum, x| sum.wrapping_add(x));
        if pulled < 1024 || cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return sum;
        }
    }
}

fn chain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);

    group.bench_function("weir", |b| b.iter(|| weir(&runtime, black_box(ITEMS))));
    group.bench_function("iterator", |b| b.iter(|| iterator(black_box(ITEMS))));
    group.bench_function("iterator_opaque_start", |b| {
        b.iter(|| iterator_opaque_start(black_box(0), black_box(ITEMS)))
    });
    group.bench_function("iterator_counted", |b| {
        b.iter(|| iterator_counted(black_box(ITEMS)))
    });
    let cancelled = std::sync::atomic::AtomicBool::new(false);
    group.bench_function("iterator_blocks", |b| {
        b.iter(|| iterator_blocks(black_box(ITEMS), black_box(&cancelled)))
    });

    group.bench_function("futures_stream", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(
                futures::stream::iter(0..n)
                    .map(|x| x.wrapping_mul(3))
                    .filter(|x| futures::future::ready(x % 2 == 0))
                    .map(|x| x >> 1)
                    .fold(0u64, |sum, x| futures::future::ready(sum.wrapping_add(x))),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, chain);

/// `WEIR_CHAIN_PROBE=weir|iterator|iterator_opaque_start|iterator_counted|iterator_blocks` runs one chain of `WEIR_CHAIN_PROBE_ITEMS` (1 M) items and
/// exits, for instruction counts: `valgrind --tool=callgrind target/release/deps/chain-<hash>`;
/// the difference between two item counts, divided by their difference, is the cost per item.
fn main() {
    probe::main_or_probe(
        "WEIR_CHAIN_PROBE",
        benches,
        "weir, iterator, iterator_opaque_start, iterator_counted, iterator_blocks",
        |variant, n, runtime| {
            Some(match variant {
                "weir" => weir(runtime, n).expect("stream"),
                "iterator" => iterator(n),
                "iterator_counted" => iterator_counted(n),
                "iterator_opaque_start" => iterator_opaque_start(black_box(0), n),
                "iterator_blocks" => iterator_blocks(n, &std::sync::atomic::AtomicBool::new(false)),
                _ => return None,
            })
        },
    );
}
