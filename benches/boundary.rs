//! `boundary`: 10 million `u64` across one async boundary on a multi-thread runtime.
//! Peers in the same run: bounded `tokio::sync::mpsc` with one item per send, and the same channel
//! carrying `Vec<u64>` chunks of 256.
//! Target (issue 2): weir at least 3x `tokio_mpsc` and at least equal to `tokio_mpsc_chunked`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;
const CAPACITY: usize = 4096;
const CHUNK: usize = 256;

fn boundary(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("boundary");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);

    group.bench_function("weir", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let hop = BoundaryConfig::new("hop", CAPACITY).expect("config");
                tokio::spawn(
                    source::from_iter(0..n)
                        .boundary(hop)
                        .fold(0u64, |sum, x| *sum = sum.wrapping_add(x)),
                )
                .await
                .expect("task")
                .expect("stream")
            })
        })
    });

    group.bench_function("tokio_mpsc", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, mut receiver) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
                tokio::spawn(async move {
                    for x in 0..n {
                        if sender.send(x).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Some(x) = receiver.recv().await {
                        sum = sum.wrapping_add(x);
                    }
                    sum
                })
                .await
                .expect("task")
            })
        })
    });

    group.bench_function("tokio_mpsc_chunked", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, mut receiver) =
                    tokio::sync::mpsc::channel::<Vec<u64>>(CAPACITY / CHUNK);
                tokio::spawn(async move {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    for x in 0..n {
                        chunk.push(x);
                        if chunk.len() == CHUNK {
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                            if sender.send(full).await.is_err() {
                                return;
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = sender.send(chunk).await;
                    }
                });
                tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Some(chunk) = receiver.recv().await {
                        for x in chunk {
                            sum = sum.wrapping_add(x);
                        }
                    }
                    sum
                })
                .await
                .expect("task")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
