//! map_async / map_async_unordered: bounded concurrency, order, demand, panics.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::probe;
use weir::prelude::*;
use weir::runtime::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_futures_run_and_order_is_kept() {
    let in_flight = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (now, max) = (in_flight.clone(), peak.clone());
    let out = source::from_iter(0..200u64)
        .map_async(4, move |x| {
            let (now, max) = (now.clone(), max.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                // Later items finish sooner: order must still be kept.
                tokio::time::sleep(Duration::from_micros(200 * (10 - x % 10))).await;
                now.fetch_sub(1, Ordering::SeqCst);
                x * 2
            }
        })
        .collect()
        .await
        .unwrap();
    assert_eq!(out, (0..200).map(|x| x * 2).collect::<Vec<_>>());
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} futures ran at once, concurrency 4");
    assert!(peak >= 2, "no concurrency at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_delivers_everything_as_it_completes() {
    let mut out = source::from_iter(0..100u64)
        .map_async_unordered(8, |x| async move {
            tokio::time::sleep(Duration::from_micros(100 * (x % 7))).await;
            x
        })
        .collect()
        .await
        .unwrap();
    out.sort_unstable();
    assert_eq!(out, (0..100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_slots_are_the_demand() {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0u64..)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .map_async(4, |x| async move { x })
        .subscribe(subscriber);
    recorder.request(10);
    recorder.expect_items(10);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pulled = pulled.load(Ordering::SeqCst);
    // Delivered 10; at most 4 in flight plus a prefetch of 4 beyond that.
    assert!(pulled <= 10 + 8, "pulled {pulled} items for 10 requested");
    recorder.cancel();
}

#[tokio::test]
async fn a_panicking_future_fails_the_stream_naming_the_stage() {
    let error = source::from_iter(0..10u64)
        .map_async(2, |x| async move {
            assert!(x != 3, "item 3 is poison");
            x
        })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.stage(), Some("map_async"));
    assert!(matches!(error.kind(), ErrorKind::Panicked(_)));
    assert!(error.to_string().contains("item 3 is poison"), "{error}");
}

#[tokio::test]
async fn zero_concurrency_is_a_clear_error() {
    let error = source::from_iter(0..10u64)
        .map_async_unordered(0, |x| async move { x })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `map_async_unordered`: a concurrency of at least 1 is needed"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through() {
    let error = source::error::<u64>(weir::runtime::Error::msg("db down"))
        .map_async(2, |x| async move { x })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "db down");
}
