//! Sources, sinks and fused operators: demand rules, re-entrancy, stream interop, panics.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use support::probe;
use weir::prelude::*;
use weir::runtime::{ErrorKind, Subscription};

/// Requests one item from inside every `on_next`: a million times, which would overflow the stack if
/// `request` recursed into `on_next` instead of being trampolined (rule 3.3).
struct OneByOne {
    subscription: Option<Subscription>,
    received: Arc<AtomicU64>,
}

impl Subscriber<u64> for OneByOne {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(1);
        self.subscription = Some(subscription);
    }
    fn on_next(&mut self, _: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.subscription.as_ref().unwrap().request(1);
    }
    fn on_error(&mut self, error: weir::runtime::Error) {
        panic!("{error}");
    }
    fn on_complete(&mut self) {}
}

#[test]
fn request_inside_on_next_is_trampolined_not_recursive() {
    let received = Arc::new(AtomicU64::new(0));
    source::from_iter(0..1_000_000u64).subscribe(OneByOne {
        subscription: None,
        received: received.clone(),
    });
    assert_eq!(received.load(Ordering::Relaxed), 1_000_000);
}

#[test]
fn demand_adds_up_and_never_more_is_emitted() {
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..100u32).subscribe(subscriber);
    recorder.request(3);
    recorder.request(4);
    assert_eq!(recorder.items(), (0..7).collect::<Vec<_>>());
    recorder.expect_quiet(Duration::from_millis(20));
    // Saturates at u64::MAX = unbounded: everything else arrives.
    recorder.request(u64::MAX);
    recorder.request(u64::MAX);
    assert_eq!(
        recorder.expect_terminal().map_err(|e| e.to_string()),
        Ok(())
    );
    assert_eq!(recorder.items().len(), 100);
}

#[test]
fn request_zero_fails_a_synchronous_source() {
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..10u32).subscribe(subscriber);
    recorder.request(0);
    let error = recorder.expect_terminal().unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::RequestZero));
    assert!(error.to_string().contains("request(0)"));
}

#[test]
fn cancel_is_idempotent_and_stops_emission() {
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..10u32).subscribe(subscriber);
    recorder.request(2);
    recorder.cancel();
    recorder.cancel();
    recorder.request(5);
    assert_eq!(recorder.items(), vec![0, 1]);
    assert!(recorder.signals().len() == 2, "no terminal after cancel");
}

#[test]
fn once_empty_and_error_sources() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(source::once(7).collect()).unwrap(), vec![7]);
    assert_eq!(
        rt.block_on(source::empty::<u8>().collect()).unwrap(),
        Vec::<u8>::new()
    );
    let error = rt
        .block_on(source::error::<u8>(weir::runtime::Error::msg("no")).collect())
        .unwrap_err();
    assert_eq!(error.to_string(), "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_polled_only_while_there_is_demand() {
    let polled = Arc::new(AtomicU64::new(0));
    let counter = polled.clone();
    let endless = futures::stream::iter(0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let (subscriber, recorder) = probe::<u64>();
    source::from_stream(endless).subscribe(subscriber);
    recorder.request(10);
    recorder.expect_items(10);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(polled.load(Ordering::SeqCst), 10);
    recorder.cancel();
}

#[tokio::test]
async fn into_stream_prefetches_at_most_its_bound_and_cancels_on_drop() {
    let emitted = Arc::new(AtomicU64::new(0));
    let counter = emitted.clone();
    let mut stream = source::from_iter(0..1_000u64)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .into_stream(8);
    assert_eq!(
        emitted.load(Ordering::SeqCst),
        0,
        "nothing before the first poll"
    );
    for expected in 0..20u64 {
        assert_eq!(stream.next().await.unwrap().unwrap(), expected);
        let ahead = emitted.load(Ordering::SeqCst) - (expected + 1);
        assert!(ahead <= 8, "{ahead} items buffered, prefetch 8");
    }
    drop(stream);
    let after_drop = emitted.load(Ordering::SeqCst);
    assert!(after_drop <= 28);
}

#[tokio::test]
async fn into_stream_ends_with_the_error() {
    let mut stream = source::error::<u8>(weir::runtime::Error::msg("boom")).into_stream(4);
    assert_eq!(
        stream.next().await.unwrap().unwrap_err().to_string(),
        "boom"
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_panicking_sink_closure_fails_the_stream_and_cancels_upstream() {
    let emitted = Arc::new(AtomicU64::new(0));
    let counter = emitted.clone();
    let error = source::from_iter(0..1_000_000u64)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .for_each(|x| assert!(x < 10, "item {x} is too big"))
        .await
        .unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Panicked(_)));
    assert!(error.to_string().contains("item 10 is too big"), "{error}");
    assert!(
        emitted.load(Ordering::SeqCst) < 2_000,
        "upstream kept going"
    );
}

#[tokio::test]
async fn a_panicking_operator_names_its_stage() {
    let error = source::from_iter(0..100u32)
        .map(|x| if x == 5 { panic!("bad item") } else { x })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.stage(), Some("map"));
    assert_eq!(error.to_string(), "stage `map`: panicked: bad item");
}

#[tokio::test]
async fn filter_reuses_demand_for_dropped_items() {
    // With a bounded request, a filter that drops most items must still deliver what was asked.
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..1_000u32)
        .filter(|x| x % 100 == 0)
        .subscribe(subscriber);
    recorder.request(5);
    assert_eq!(recorder.expect_items(5), vec![0, 100, 200, 300, 400]);
    recorder.request(100);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items().len(), 10);
}

#[tokio::test]
async fn boxed_publishers_erase_the_chain_type() {
    let publishers: Vec<weir::runtime::BoxPublisher<u32>> = vec![
        source::from_iter(0..3u32).boxed(),
        source::from_iter(0..3u32).map(|x| x * 10).boxed(),
    ];
    let mut all = Vec::new();
    for publisher in publishers {
        all.extend(publisher.collect().await.unwrap());
    }
    assert_eq!(all, vec![0, 1, 2, 0, 10, 20]);
}

#[test]
fn a_panic_inside_a_burst_fails_the_stream_and_stops_the_upstream() {
    // Bounded demand makes the source hand bursts through `try_on_next_iter`.
    let emitted = Arc::new(AtomicU64::new(0));
    let counter = emitted.clone();
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..10_000u32)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .filter(|x| x % 2 == 0)
        .map(|x| if x == 500 { panic!("bad item {x}") } else { x })
        .subscribe(subscriber);
    recorder.request(5_000);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(error.stage(), Some("map"));
    assert_eq!(error.to_string(), "stage `map`: panicked: bad item 500");
    assert_eq!(recorder.items(), (0..500).step_by(2).collect::<Vec<_>>());
    assert!(
        emitted.load(Ordering::SeqCst) <= 2_000,
        "the upstream kept going"
    );
}

#[test]
fn a_panicking_iterator_fails_the_stream_instead_of_unwinding_into_the_requester() {
    for demand in [3, u64::MAX] {
        let (subscriber, recorder) = probe::<u32>();
        let items = (0..10u32).map(|x| if x == 5 { panic!("bad input {x}") } else { x });
        source::from_iter(items).subscribe(subscriber);
        // The iterator runs inside `request`: its panic must not unwind into this caller.
        for _ in 0..4 {
            recorder.request(demand);
        }
        let error = recorder.expect_terminal().unwrap_err();
        assert_eq!(error.to_string(), "panicked: bad input 5");
        assert_eq!(recorder.items(), vec![0, 1, 2, 3, 4], "demand {demand}");
    }
}

#[test]
fn bursts_through_a_filter_honour_demand_exactly() {
    let (subscriber, recorder) = probe::<u32>();
    source::from_iter(0..100_000u32)
        .filter(|x| x % 7 == 0)
        .map(|x| x / 7)
        .subscribe(subscriber);
    for round in 1..=10u64 {
        recorder.request(333);
        assert_eq!(recorder.items().len() as u64, round * 333);
    }
    assert_eq!(recorder.items(), (0..3_330).collect::<Vec<_>>());
}

/// An endless iterator source looks at the cancel flag every 1,024 items it *pulls*, however few of
/// them a filter downstream lets through: after an abort it stops, under unbounded demand (a sink
/// right behind) and bounded demand (a boundary's credit). Bursts counted in accepted items never
/// ended when a filter dropped everything.
#[test]
fn an_endless_source_behind_a_filter_that_drops_everything_stops_on_abort() {
    for bounded in [false, true] {
        let (before, after) = pulled_after_abort(bounded);
        assert!(before > 0, "the source never ran (bounded: {bounded})");
        assert_eq!(
            before, after,
            "the source kept pulling after the abort (bounded: {bounded})"
        );
    }
}

/// How many items the endless source had pulled shortly after the abort, and a while later.
fn pulled_after_abort(bounded: bool) -> (u64, u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    runtime.block_on(async move {
        let mut p = weir::dsl::Pipeline::builder("endless");
        let numbers = p.source(
            "numbers",
            source::from_iter((0u64..).inspect(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let mut none = p.stage("none", &numbers, |n| n.filter(|_| false));
        if bounded {
            none = p.boundary("hop", &none, 64);
        }
        p.sink("store", &none, |_: u64| {});
        let mut running = p.build().unwrap().start().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        running.abort();
        let _ = (&mut running).await;
    });
    std::thread::sleep(Duration::from_millis(100));
    let before = pulled.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let after = pulled.load(Ordering::Relaxed);
    // Drop without waiting: a source that never stops would hold a worker forever.
    runtime.shutdown_background();
    (before, after)
}
