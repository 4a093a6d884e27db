//! buffer(capacity, overflow): every policy inside a stream, with counted outcomes.

mod support;

use std::time::Duration;

use support::{probe, runtime};
use weir::prelude::*;
use weir::runtime::metrics::Reason;

/// Waits until the buffer was offered `n` items (its upstream ran through).
fn until_offered(metrics: &weir::runtime::metrics::BufferMetrics, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.offered() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream did not run"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn drop_oldest_keeps_the_freshest_and_counts_the_rest() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u32>();
    let buffered = source::from_iter(0..100u32).buffer(
        "telemetry",
        8,
        weir::runtime::queue::WhenFull::DropOldest,
    );
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    // Nothing requested yet: the whole upstream runs through the buffer, keeping the newest 8.
    until_offered(&metrics, 100);
    recorder.request(u64::MAX);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items(), (92..100).collect::<Vec<_>>());
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.dropped["dropped_oldest"], 92);
    assert_eq!(
        snapshot.items_out + metrics.shed(Reason::DroppedOldest),
        100
    );
}

#[test]
fn drop_newest_keeps_the_first_and_counts_the_rest() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u32>();
    let buffered = source::from_iter(0..100u32).buffer(
        "telemetry",
        8,
        weir::runtime::queue::WhenFull::DropNewest,
    );
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    until_offered(&metrics, 100);
    recorder.request(u64::MAX);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items(), (0..8).collect::<Vec<_>>());
    assert_eq!(metrics.shed(Reason::DroppedNewest), 92);
}

#[test]
fn reject_fails_the_stream_after_the_buffered_items() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u32>();
    let buffered =
        source::from_iter(0..100u32).buffer("orders", 8, weir::runtime::queue::WhenFull::Refuse);
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    until_offered(&metrics, 9);
    recorder.request(u64::MAX);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `orders`: buffer overflowed: more than 8 items waiting"
    );
    assert_eq!(recorder.items(), (0..8).collect::<Vec<_>>());
}

#[test]
fn block_is_backpressure_and_loses_nothing() {
    let rt = runtime();
    let items = rt
        .block_on(
            source::from_iter(0..10_000u32)
                .buffer("orders", 16, weir::runtime::queue::WhenFull::Wait)
                .collect(),
        )
        .unwrap();
    assert_eq!(items, (0..10_000).collect::<Vec<_>>());
}

#[test]
fn zero_capacity_fails_the_subscription_with_the_stage_name() {
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..3u32)
        .buffer("orders", 0, weir::runtime::queue::WhenFull::DropNewest)
        .subscribe(subscriber);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `orders`: a queue needs a capacity of at least 1"
    );
}

/// A shedding buffer over an endless synchronous source: `subscribe` returns (the upstream is asked
/// for items a chunk at a time by a task of the buffer's), and the freshest items come out on
/// demand. Before, `subscribe` asked for everything and never returned.
#[test]
fn a_shedding_buffer_over_an_endless_source_returns_from_subscribe() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u64>();
    let (returned, subscribed) = std::sync::mpsc::channel();
    let handle = rt.handle().clone();
    std::thread::spawn(move || {
        let _guard = handle.enter();
        source::from_iter(0u64..)
            .buffer("telemetry", 8, weir::runtime::queue::WhenFull::DropOldest)
            .subscribe(subscriber);
        let _ = returned.send(());
    });
    subscribed
        .recv_timeout(Duration::from_secs(5))
        .expect("subscribe did not return");
    recorder.request(5);
    recorder.expect_items(5);
    recorder.cancel();
}
