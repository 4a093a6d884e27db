//! `chain`: 10 million `u64` through source -> map -> filter -> map -> summing sink, fused.
//! Peers in the same run: a plain iterator chain and the same chain over `futures::StreamExt`.
//! Target (issue 2): weir within 1.5x of `iterator` and no slower than `futures_stream`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;

fn chain(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);

    group.bench_function("weir", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(
                source::from_iter(0..n)
                    .map(|x| x.wrapping_mul(3))
                    .filter(|x| x % 2 == 0)
                    .map(|x| x >> 1)
                    .fold(0u64, |sum, x| *sum = sum.wrapping_add(x)),
            )
        })
    });

    group.bench_function("iterator", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            (0..n)
                .map(|x| x.wrapping_mul(3))
                .filter(|x| x % 2 == 0)
                .map(|x| x >> 1)
                .fold(0u64, |sum, x| sum.wrapping_add(x))
        })
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
criterion_main!(benches);
