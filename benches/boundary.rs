//! `boundary`: 10 million `u64` across one async boundary on a multi-thread runtime.
//! Peers in the same run, the channels users pick instead, each bounded to the same 4,096 items,
//! one item per send and in `Vec<u64>` chunks of 256: `tokio::sync::mpsc`, `flume` and `kanal`
//! (async, between two tokio tasks), `crossbeam-channel` (blocking, between two threads), and an
//! SPSC ring (`rtrb`, two threads moving slices of 256, spinning when empty or full) as the
//! practical limit of a hand-off between two cores.
//! Targets: weir at least 3x `tokio_mpsc` (issue 2) and at least 2x `tokio_mpsc_chunked` (issue 13).
//! Instruction counts: the probe mode at the end of the file.

mod probe;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use weir::prelude::*;

const ITEMS: u64 = 10_000_000;
const CAPACITY: usize = 4096;
const CHUNK: usize = 256;

/// weir: `0..n` across a boundary of `CAPACITY` into a summing fold, the fold in a task of its own.
async fn weir(n: u64) -> u64 {
    let hop = BoundaryConfig::new("hop", CAPACITY).expect("config");
    tokio::spawn(
        source::from_iter(0..n)
            .boundary(hop)
            .fold(0u64, |sum, x| *sum = sum.wrapping_add(x)),
    )
    .await
    .expect("task")
    .expect("stream")
}

/// `tokio::sync::mpsc` carrying `Vec`s of `CHUNK`, bounded to the same items, between two tasks.
async fn tokio_mpsc_chunked(n: u64) -> u64 {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u64>>(CAPACITY / CHUNK);
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
}

fn boundary(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("boundary");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);

    group.bench_function("weir", |b| {
        b.iter(|| runtime.block_on(weir(black_box(ITEMS))))
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
        b.iter(|| runtime.block_on(tokio_mpsc_chunked(black_box(ITEMS))))
    });
    async_peers(&mut group, &runtime);
    thread_peers(&mut group);
    group.finish();
}

/// The producer's side of a chunked hand-off: `0..n` in `Vec`s of `CHUNK`, handed to `send`
/// until it refuses.
fn chunks(n: u64, mut send: impl FnMut(Vec<u64>) -> bool) {
    let mut chunk = Vec::with_capacity(CHUNK);
    for x in 0..n {
        chunk.push(x);
        if chunk.len() == CHUNK && !send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))) {
            return;
        }
    }
    if !chunk.is_empty() {
        send(chunk);
    }
}

/// [`chunks`] for an async `send`.
async fn chunks_async<F, Fut>(n: u64, mut send: F)
where
    F: FnMut(Vec<u64>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut chunk = Vec::with_capacity(CHUNK);
    for x in 0..n {
        chunk.push(x);
        if chunk.len() == CHUNK
            && !send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).await
        {
            return;
        }
    }
    if !chunk.is_empty() {
        send(chunk).await;
    }
}

fn add(sum: u64, x: u64) -> u64 {
    sum.wrapping_add(x)
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// flume and kanal, async, between two tokio tasks.
fn async_peers(group: &mut Group<'_>, runtime: &tokio::runtime::Runtime) {
    group.bench_function("flume", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, receiver) = flume::bounded::<u64>(CAPACITY);
                tokio::spawn(async move {
                    for x in 0..n {
                        if sender.send_async(x).await.is_err() {
                            break;
                        }
                    }
                });
                let consumer = tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Ok(x) = receiver.recv_async().await {
                        sum = add(sum, x);
                    }
                    sum
                });
                consumer.await.expect("task")
            })
        })
    });
    group.bench_function("flume_chunked", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, receiver) = flume::bounded::<Vec<u64>>(CAPACITY / CHUNK);
                tokio::spawn(async move {
                    chunks_async(n, |chunk| {
                        let sender = sender.clone();
                        async move { sender.send_async(chunk).await.is_ok() }
                    })
                    .await
                });
                let consumer = tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Ok(chunk) = receiver.recv_async().await {
                        sum = chunk.into_iter().fold(sum, add);
                    }
                    sum
                });
                consumer.await.expect("task")
            })
        })
    });
    group.bench_function("kanal", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, receiver) = kanal::bounded_async::<u64>(CAPACITY);
                tokio::spawn(async move {
                    for x in 0..n {
                        if sender.send(x).await.is_err() {
                            break;
                        }
                    }
                });
                let consumer = tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Ok(x) = receiver.recv().await {
                        sum = add(sum, x);
                    }
                    sum
                });
                consumer.await.expect("task")
            })
        })
    });
    group.bench_function("kanal_chunked", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            runtime.block_on(async move {
                let (sender, receiver) = kanal::bounded_async::<Vec<u64>>(CAPACITY / CHUNK);
                tokio::spawn(async move {
                    chunks_async(n, |chunk| {
                        let sender = sender.clone();
                        async move { sender.send(chunk).await.is_ok() }
                    })
                    .await
                });
                let consumer = tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Ok(chunk) = receiver.recv().await {
                        sum = chunk.into_iter().fold(sum, add);
                    }
                    sum
                });
                consumer.await.expect("task")
            })
        })
    });
}

/// crossbeam-channel (blocking) and an rtrb SPSC ring, between two threads.
fn thread_peers(group: &mut Group<'_>) {
    group.bench_function("crossbeam", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            let (sender, receiver) = crossbeam_channel::bounded::<u64>(CAPACITY);
            let producer = std::thread::spawn(move || {
                for x in 0..n {
                    if sender.send(x).is_err() {
                        break;
                    }
                }
            });
            let sum = receiver.iter().fold(0u64, add);
            producer.join().expect("producer");
            sum
        })
    });
    group.bench_function("crossbeam_chunked", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            let (sender, receiver) = crossbeam_channel::bounded::<Vec<u64>>(CAPACITY / CHUNK);
            let producer =
                std::thread::spawn(move || chunks(n, |chunk| sender.send(chunk).is_ok()));
            let sum = receiver.iter().flatten().fold(0u64, add);
            producer.join().expect("producer");
            sum
        })
    });
    group.bench_function("rtrb_chunked", |b| {
        b.iter(|| {
            let n = black_box(ITEMS);
            let (mut producer, mut consumer) = rtrb::RingBuffer::<u64>::new(CAPACITY);
            let writer = std::thread::spawn(move || {
                let mut next = 0u64;
                while next < n {
                    let want = ((n - next) as usize).min(CHUNK);
                    match producer.write_chunk_uninit(want) {
                        Ok(chunk) => next += chunk.fill_from_iter(next..next + want as u64) as u64,
                        Err(_) => std::thread::yield_now(),
                    }
                }
            });
            let (mut sum, mut got) = (0u64, 0u64);
            while got < n {
                let ready = consumer.slots().min(CHUNK);
                if ready == 0 {
                    std::thread::yield_now();
                    continue;
                }
                let chunk = consumer.read_chunk(ready).expect("slots are ready");
                let (first, second) = chunk.as_slices();
                sum = first.iter().chain(second).copied().fold(sum, add);
                chunk.commit_all();
                got += ready as u64;
            }
            writer.join().expect("writer");
            sum
        })
    });
}

criterion_group!(benches, boundary);

/// `WEIR_BOUNDARY_PROBE=weir|tokio_mpsc_chunked` runs one pass of `WEIR_BOUNDARY_PROBE_ITEMS` (1 M)
/// items on a current-thread runtime (both sides on one thread: no parking between cores) and
/// exits, for instruction counts: `valgrind --tool=callgrind target/release/deps/boundary-<hash>`;
/// the difference between two item counts, divided by their difference, is the cost per item.
fn main() {
    probe::main_or_probe(
        "WEIR_BOUNDARY_PROBE",
        benches,
        "weir, tokio_mpsc_chunked",
        |variant, n, runtime| {
            Some(match variant {
                "weir" => runtime.block_on(weir(n)),
                "tokio_mpsc_chunked" => runtime.block_on(tokio_mpsc_chunked(n)),
                _ => return None,
            })
        },
    );
}
