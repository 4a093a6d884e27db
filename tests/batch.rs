//! batch(max_items, max_wait): size, time, demand, bounded holding.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use support::{probe, runtime};
use weir::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn batches_are_the_input_in_order_and_at_most_max_items(
        items in 0u64..500,
        max_items in 1usize..50,
        requests in proptest::collection::vec(1u64..10, 1..20),
    ) {
        let rt = runtime();
        let _guard = rt.enter();
        let (subscriber, recorder) = probe::<Vec<u64>>();
        source::from_iter(0..items)
            .batch(max_items, Duration::from_secs(60))
            .subscribe(subscriber);
        let mut requested = 0;
        for n in requests {
            recorder.request(n);
            requested += n;
            let full_batches = items / max_items as u64;
            let got = recorder.expect_items(requested.min(full_batches) as usize);
            prop_assert!(got.len() as u64 <= requested);
        }
        recorder.request(u64::MAX);
        prop_assert!(recorder.expect_terminal().is_ok());
        let batches = recorder.items();
        prop_assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= max_items));
        prop_assert_eq!(batches.concat(), (0..items).collect::<Vec<_>>());
    }
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_goes_when_its_oldest_item_has_waited_max_wait() {
    let (handle, publisher) = ingress::bounded::<u32>(
        IngressConfig::new(
            "in",
            16,
            Overflow::Reject {
                retry_after: Duration::from_millis(1),
            },
        )
        .unwrap(),
    );
    let (subscriber, recorder) = probe::<Vec<u32>>();
    publisher
        .batch(100, Duration::from_millis(50))
        .subscribe(subscriber);
    recorder.request(10);
    handle.push(1).await.unwrap();
    handle.push(2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(recorder.items().is_empty(), "went before max_wait");
    tokio::time::sleep(Duration::from_millis(40)).await;
    tokio::task::yield_now().await;
    assert_eq!(recorder.items(), vec![vec![1, 2]]);
    drop(handle);
}

#[test]
fn without_demand_it_holds_a_bounded_amount_and_stops_the_upstream() {
    let rt = runtime();
    let _guard = rt.enter();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let (subscriber, recorder) = probe::<Vec<u64>>();
    source::from_iter(0u64..)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .batch(10, Duration::from_millis(5))
        .subscribe(subscriber);
    recorder.request(2);
    recorder.expect_items(2);
    std::thread::sleep(Duration::from_millis(50));
    // Two batches delivered (20), one full batch held (10), one lane of 10.
    assert!(
        pulled.load(Ordering::Relaxed) <= 40,
        "pulled {}",
        pulled.load(Ordering::Relaxed)
    );
    recorder.cancel();
}

#[tokio::test]
async fn zero_max_items_is_a_clear_error() {
    let error = source::from_iter(0..3u8)
        .batch(0, Duration::from_millis(1))
        .collect()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `batch`: a batch needs max_items of at least 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_that_hold_items_report_them() {
    let batched = source::from_iter(0..1_000u64).batch(64, Duration::from_secs(1));
    let metrics = batched.metrics();
    assert_eq!(batched.collect().await.unwrap().concat().len(), 1_000);
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.name.as_str(), snapshot.capacity), ("batch", 64));
    assert_eq!(
        (snapshot.items_in, snapshot.items_out, snapshot.depth),
        (1_000, 1_000, 0)
    );

    let mapped = source::from_iter(0..500u64).map_async(4, |x| async move { x });
    let metrics = mapped.metrics();
    assert_eq!(mapped.collect().await.unwrap().len(), 500);
    assert_eq!(metrics.snapshot().items_out, 500);
}

#[test]
fn an_operators_input_lane_counts_the_time_its_upstream_waited_for_room() {
    // The same measure as a boundary's (`producer_waits`, `producer_wait_ms`): from the moment the
    // upstream used its grant up until the lane granted more.
    let rt = runtime();
    let _guard = rt.enter();
    let batched = source::from_iter(0..100u64).batch(10, Duration::from_secs(5));
    let metrics = batched.metrics();
    let (subscriber, recorder) = probe::<Vec<u64>>();
    batched.subscribe(subscriber);
    recorder.request(1);
    recorder.expect_items(1);
    // The lane is full and the batch holds a full batch: the upstream waits for room.
    std::thread::sleep(Duration::from_millis(50));
    recorder.request(100);
    recorder.expect_terminal().unwrap();
    assert_eq!(recorder.items().concat(), (0..100).collect::<Vec<_>>());
    let snapshot = metrics.snapshot();
    assert!(snapshot.producer_waits >= 1, "{snapshot:?}");
    assert!(snapshot.producer_wait_ms >= 40.0, "{snapshot:?}");
}
