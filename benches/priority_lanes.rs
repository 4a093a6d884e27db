//! `priority_lanes`: interactive items at 1,000/s while a batch lane is saturated; reports the
//! interactive p50 / p99 latency (push -> consumed) without and with the batch load, in the same run.
//! Target (issue 3): p99 under load within 2x of p99 without.
//!
//! A latency distribution is not a throughput, so this is a plain `harness = false` program:
//! `cargo bench --bench priority_lanes`.

use std::time::{Duration, Instant};

use weir::operators::PriorityLanes;
use weir::prelude::*;

const INTERACTIVE: usize = 2_000;
const RATE_PER_SEC: u64 = 1_000;
/// What the consumer spends per item (a realistic small handler).
const WORK: Duration = Duration::from_micros(20);

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Runs one measurement; returns interactive latencies in microseconds, sorted.
fn run(with_batch_load: bool) -> Vec<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (interactive, interactive_in) = ingress::bounded::<(bool, Instant)>(
            IngressConfig::new(
                "interactive",
                1_024,
                Overflow::Block {
                    timeout: Duration::from_secs(5),
                },
            )
            .unwrap(),
        );
        let (batch, batch_in) = ingress::bounded::<(bool, Instant)>(
            IngressConfig::new("batch", 100_000, Overflow::DropNewest).unwrap(),
        );
        let lanes = PriorityLanes::new()
            .lane("interactive", 8, 64, interactive_in)
            .lane("batch", 1, 1_024, batch_in)
            .build()
            .unwrap();
        let consumer = tokio::spawn(lanes.fold(
            Vec::with_capacity(INTERACTIVE),
            |latencies, (is_interactive, at): (bool, Instant)| {
                spin(WORK);
                if is_interactive {
                    latencies.push(at.elapsed().as_secs_f64() * 1e6);
                }
            },
        ));
        let loader = if with_batch_load {
            let batch = batch.clone();
            Some(tokio::spawn(async move {
                // Keep the batch lane saturated: far more than the consumer can take.
                loop {
                    for _ in 0..1_000 {
                        if batch.try_push((false, Instant::now())).is_err() && batch.is_closed() {
                            return;
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }))
        } else {
            None
        };
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
        for _ in 0..INTERACTIVE {
            tick.tick().await;
            interactive
                .push((true, Instant::now()))
                .await
                .expect("interactive push");
        }
        drop(interactive);
        batch.close();
        if let Some(loader) = loader {
            let _ = loader.await;
        }
        drop(batch);
        let mut latencies = consumer.await.expect("task").expect("stream");
        latencies.sort_by(f64::total_cmp);
        latencies
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let idle = run(false);
    let loaded = run(true);
    let (p50_idle, p99_idle) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (p50_load, p99_load) = (percentile(&loaded, 0.5), percentile(&loaded, 0.99));
    println!(
        "priority_lanes: interactive at {RATE_PER_SEC}/s, consumer {WORK:?} per item, {INTERACTIVE} samples"
    );
    println!("  without batch load: p50 {p50_idle:.0} us, p99 {p99_idle:.0} us");
    println!("  with batch load:    p50 {p50_load:.0} us, p99 {p99_load:.0} us");
    println!(
        "  p99 ratio (load / idle): {:.2} (target <= 2.0)",
        p99_load / p99_idle
    );
}
