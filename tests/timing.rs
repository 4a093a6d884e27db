//! throttle and timeout, on tokio's paused clock.

mod support;

use std::time::Duration;

use weir::operators::{OnSilence, ThrottleMode};
use weir::prelude::*;
use weir::runtime::ErrorKind;
use weir::runtime::metrics::Reason;

#[tokio::test(start_paused = true)]
async fn a_delaying_throttle_holds_the_rate_after_its_burst() {
    let started = tokio::time::Instant::now();
    let items = source::from_iter(0..110u32)
        .throttle(100, 10, ThrottleMode::Delay)
        .collect()
        .await
        .unwrap();
    assert_eq!(items, (0..110).collect::<Vec<_>>());
    let took = started.elapsed();
    // 10 at once, then 100 more at 100/s: about one second.
    assert!(took >= Duration::from_millis(990), "{took:?}");
    assert!(took <= Duration::from_millis(1_100), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_shedding_throttle_drops_and_counts_what_is_over_the_rate() {
    let throttled = source::from_iter(0..1_000u32).throttle(10, 5, ThrottleMode::Shed);
    let metrics = throttled.metrics();
    let items = throttled.collect().await.unwrap();
    let dropped = metrics.shed(Reason::Throttled);
    assert!(items.len() >= 5, "the burst goes through");
    assert_eq!(
        items.len() as u64 + dropped,
        1_000,
        "every item delivered or counted"
    );
    assert!(items.windows(2).all(|w| w[0] < w[1]), "order kept");
}

#[tokio::test(start_paused = true)]
async fn timeout_fails_or_completes_on_upstream_silence() {
    let silent = futures::stream::iter(vec![1u32, 2]).chain(futures::stream::pending());
    let error = source::from_stream(silent)
        .timeout(Duration::from_millis(100), OnSilence::Fail)
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Timeout(_)));
    assert_eq!(error.stage(), Some("timeout"));

    let silent = futures::stream::iter(vec![1u32, 2]).chain(futures::stream::pending());
    let items = source::from_stream(silent)
        .timeout(Duration::from_millis(100), OnSilence::Complete)
        .collect()
        .await
        .unwrap();
    assert_eq!(items, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_downstream_is_not_upstream_silence() {
    let (subscriber, recorder) = support::probe::<u32>();
    source::from_iter(0..5u32)
        .timeout(Duration::from_millis(10), OnSilence::Fail)
        .subscribe(subscriber);
    recorder.request(1);
    tokio::time::sleep(Duration::from_millis(100)).await; // no demand for 100 ms: not a timeout
    recorder.request(10);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items(), vec![0, 1, 2, 3, 4]);
}

use futures::StreamExt;
