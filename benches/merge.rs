//! `merge`: 8 sources of 1 million `u64` each merged into one summing sink.
//! Peer in the same run: `futures::stream::select_all`.
//! Target (issue 3): at least equal throughput, and no source's share off its fair share by more
//! than 10% while all are busy (checked once per run and printed).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use weir::operators::merge;
use weir::prelude::*;

const SOURCES: u64 = 8;
const PER_SOURCE: u64 = 1_000_000;

fn sources() -> Vec<source::FromIter<std::ops::Range<u64>>> {
    (0..SOURCES)
        .map(|s| source::from_iter(s * PER_SOURCE..(s + 1) * PER_SOURCE))
        .collect()
}

/// Shares of each source among the first half of the output (all sources busy).
fn fairness(runtime: &tokio::runtime::Runtime) -> Vec<f64> {
    let firsts = runtime.block_on(async {
        tokio::spawn(
            merge(sources())
                .take(SOURCES * PER_SOURCE / 2)
                .fold(vec![0u64; SOURCES as usize], |counts, x| {
                    counts[(x / PER_SOURCE) as usize] += 1
                }),
        )
        .await
        .expect("task")
        .expect("stream")
    });
    let fair = (SOURCES * PER_SOURCE / 2 / SOURCES) as f64;
    firsts.iter().map(|&c| c as f64 / fair).collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shares = fairness(&runtime);
    let worst = shares.iter().map(|s| (s - 1.0).abs()).fold(0.0, f64::max);
    println!(
        "merge fairness: share / fair share per source = {shares:.3?}, worst off by {:.1}%",
        worst * 100.0
    );

    let mut group = c.benchmark_group("merge");
    group.throughput(Throughput::Elements(SOURCES * PER_SOURCE));
    group.sample_size(10);
    group.bench_function("weir", |b| {
        b.iter(|| {
            runtime.block_on(async {
                tokio::spawn(
                    merge(black_box(sources())).fold(0u64, |sum, x| *sum = sum.wrapping_add(x)),
                )
                .await
                .expect("task")
                .expect("stream")
            })
        })
    });
    group.bench_function("futures_select_all", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let streams = (0..SOURCES)
                    .map(|s| futures::stream::iter(s * PER_SOURCE..(s + 1) * PER_SOURCE));
                tokio::spawn(
                    futures::stream::select_all(black_box(streams))
                        .fold(0u64, |sum, x| futures::future::ready(sum.wrapping_add(x))),
                )
                .await
                .expect("task")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
