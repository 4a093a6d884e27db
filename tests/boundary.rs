//! Async boundary behaviour: bounded memory, order, demand, cancel and error propagation, metrics.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use support::{probe, runtime};
use weir::prelude::ErrorKind;
use weir::prelude::*;
use weir::runtime::boundary;

#[test]
fn never_holds_more_than_its_capacity() {
    let rt = runtime();
    let _guard = rt.enter();
    let emitted = Arc::new(AtomicU64::new(0));
    let counter = emitted.clone();
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..10_000u64)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .boundary(BoundaryConfig::new("bounded", 100).unwrap())
        .subscribe(subscriber);
    // No demand downstream: the upstream is granted exactly the capacity and stops.
    recorder.subscription();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(emitted.load(Ordering::SeqCst), 100);
    for round in 1..=20u64 {
        recorder.request(37);
        recorder.expect_items((round * 37) as usize);
        std::thread::sleep(Duration::from_millis(5));
        let consumed = round * 37;
        let held = emitted.load(Ordering::SeqCst) - consumed;
        assert!(held <= 100, "boundary held {held} items, capacity 100");
    }
}

#[test]
fn request_zero_fails_the_stream_naming_the_stage() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..10u64)
        .boundary(BoundaryConfig::new("hop", 4).unwrap())
        .subscribe(subscriber);
    recorder.request(0);
    let error = recorder.expect_terminal().unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::RequestZero));
    assert_eq!(error.stage(), Some("hop"));
}

#[test]
fn cancel_reaches_the_upstream_and_releases_it() {
    let rt = runtime();
    let _guard = rt.enter();
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Flag(dropped.clone());
    // An endless stream that records when it is dropped.
    let endless =
        futures::stream::unfold(
            (0u64, flag),
            |(n, flag)| async move { Some((n, (n + 1, flag))) },
        );
    let (subscriber, recorder) = probe::<u64>();
    source::from_stream(endless)
        .boundary(BoundaryConfig::new("hop", 8).unwrap())
        .subscribe(subscriber);
    recorder.request(5);
    recorder.expect_items(5);
    recorder.cancel();
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the upstream stream was not dropped after cancel");
}

#[test]
fn errors_arrive_after_the_items_accepted_before_them() {
    let rt = runtime();
    let _guard = rt.enter();
    let (mut inlet, outlet) = boundary::processor::<u32>(BoundaryConfig::new("hop", 4).unwrap());
    let (subscriber, recorder) = probe::<u32>();
    outlet.subscribe(subscriber);
    // Play a well-behaved upstream by hand: two items within the granted capacity, then a failure.
    inlet.on_subscribe(weir::runtime::Subscription::noop());
    inlet.on_next(1);
    inlet.on_next(2);
    inlet.on_error(weir::runtime::Error::msg("boom"));
    recorder.expect_quiet(Duration::from_millis(50)); // no demand yet: items wait, the error waits
    recorder.request(10);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(error.to_string(), "boom");
    assert_eq!(recorder.items(), vec![1, 2]);
}

#[test]
fn an_upstream_that_ignores_demand_is_stopped_with_a_clear_error() {
    let rt = runtime();
    let _guard = rt.enter();
    let (mut inlet, outlet) = boundary::processor::<u32>(BoundaryConfig::new("hop", 2).unwrap());
    let metrics = outlet.metrics();
    let (subscriber, recorder) = probe::<u32>();
    outlet.subscribe(subscriber);
    inlet.on_subscribe(weir::runtime::Subscription::noop());
    for i in 0..10 {
        inlet.on_next(i); // far beyond the capacity of 2 (rounded up to a ring of 2)
    }
    recorder.request(100);
    let error = recorder.expect_terminal().unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::DemandExceeded), "{error}");
    assert_eq!(recorder.items(), vec![0, 1]);
    // Every item it was handed is accounted for: 2 delivered, the 8 it refused dropped.
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.items_out, 2, "{snapshot:?}");
    assert_eq!(snapshot.dropped["cancelled"], 8, "{snapshot:?}");
}

/// A burst whose `feed` ignores its `max` and hands over everything it has; a `deaf` one also
/// goes on after the closure said stop.
struct Greedy {
    items: std::ops::Range<u32>,
    deaf: bool,
}

impl Iterator for Greedy {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        self.items.next()
    }
}

impl weir::runtime::Burst for Greedy {
    fn feed<F: FnMut(u32) -> bool>(&mut self, _max: u64, mut f: F) -> u64 {
        let mut handed = 0;
        for item in self.items.by_ref() {
            handed += 1;
            if !f(item) && !self.deaf {
                break;
            }
        }
        handed
    }
}

/// Hands a boundary of 4 a greedy burst of `0..10` for a demand of 1, then lets its consumer
/// read: the stream's error, what it got, the boundary's counters and what the burst kept.
fn a_greedy_burst_for_a_demand_of_one(
    deaf: bool,
) -> (
    Error,
    Vec<u32>,
    weir::runtime::metrics::BufferCounts,
    Greedy,
) {
    let rt = runtime();
    let _guard = rt.enter();
    let (mut inlet, outlet) = boundary::processor::<u32>(BoundaryConfig::new("hop", 4).unwrap());
    let metrics = outlet.metrics();
    let (subscriber, recorder) = probe::<u32>();
    outlet.subscribe(subscriber);
    inlet.on_subscribe(weir::runtime::Subscription::noop());
    let mut items = Greedy { items: 0..10, deaf };
    assert_eq!(inlet.try_on_next_iter(&mut items, 1), 1);
    recorder.request(100);
    let error = recorder.expect_terminal().unwrap_err();
    (error, recorder.items(), metrics.snapshot(), items)
}

#[test]
fn a_burst_that_hands_over_more_than_its_demand_is_stopped_with_a_clear_error() {
    // The burst hands over a second item, which the ring had room for.
    let (error, items, snapshot, mut rest) = a_greedy_burst_for_a_demand_of_one(false);
    assert!(matches!(error.kind(), ErrorKind::DemandExceeded), "{error}");
    assert_eq!(error.stage(), Some("hop"));
    assert_eq!(items, vec![0]);
    // The one beyond the demand is counted; the rest is still the publisher's.
    assert_eq!(snapshot.items_out, 1, "{snapshot:?}");
    assert_eq!(snapshot.dropped["cancelled"], 1, "{snapshot:?}");
    assert_eq!(rest.next(), Some(2));
}

#[test]
fn a_burst_that_goes_on_after_being_told_to_stop_has_every_item_counted() {
    let (error, items, snapshot, _) = a_greedy_burst_for_a_demand_of_one(true);
    assert!(matches!(error.kind(), ErrorKind::DemandExceeded), "{error}");
    // 1 delivered, the 9 it handed over beyond the demand dropped and counted.
    assert_eq!(items, vec![0]);
    assert_eq!(snapshot.items_out, 1, "{snapshot:?}");
    assert_eq!(snapshot.dropped["cancelled"], 9, "{snapshot:?}");
}

/// A publisher that ignores demand: hands over all of `0..n` at once.
struct Flood(u32);

impl Publisher<u32> for Flood {
    fn subscribe<S: Subscriber<u32>>(self, mut subscriber: S) {
        subscriber.on_subscribe(weir::runtime::Subscription::noop());
        subscriber.try_on_next_iter(
            &mut weir::runtime::protocol::Each(0..self.0),
            u64::from(self.0),
        );
    }
}

#[test]
fn an_erased_edge_that_floods_a_boundary_is_stopped_and_every_item_is_counted() {
    let rt = runtime();
    let _guard = rt.enter();
    // Behind a type-erased edge the inlet takes whole chunks (1,024 `u32`s, 4 KiB) into its ring
    // of 4.
    let (hop, accounts) = weir::runtime::ledger::scope(|| {
        Flood(3_000)
            .boxed()
            .boundary(BoundaryConfig::new("hop", 4).unwrap())
    });
    let metrics = hop.metrics();
    let (subscriber, recorder) = probe::<u32>();
    hop.subscribe(subscriber);
    recorder.request(100);
    let error = recorder.expect_terminal().unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::DemandExceeded), "{error}");
    assert_eq!(recorder.items(), vec![0, 1, 2, 3]);
    // The ring's 4 delivered, the one it refused and the ring's worth taken after the failure
    // dropped at the boundary; the rest of the first chunk counted by the edge; the 1,976 items
    // never put in a chunk are still the publisher's.
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.items_out, 4, "{snapshot:?}");
    assert_eq!(snapshot.dropped["cancelled"], 5, "{snapshot:?}");
    let edge = accounts
        .iter()
        .find(|a| a.name() == "edge")
        .expect("the edge's account");
    assert_eq!(
        edge.entry().exits[weir::runtime::ledger::Reason::Cancelled],
        1024 - 9
    );
}

#[test]
fn a_second_subscriber_to_an_outlet_gets_a_clear_error() {
    let rt = runtime();
    rt.block_on(async {
        let (inlet, outlet) = boundary::processor::<u8>(BoundaryConfig::new("hop", 4).unwrap());
        source::from_iter([1u8, 2]).subscribe(inlet);
        let first = outlet.clone();
        assert_eq!(first.collect().await.unwrap(), vec![1, 2]);
        let error = outlet.collect().await.unwrap_err();
        assert!(matches!(error.kind(), ErrorKind::AlreadySubscribed));
        assert_eq!(error.stage(), Some("hop"));
    });
}

#[test]
fn subscribing_outside_a_runtime_is_an_error_not_a_panic() {
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..3u64)
        .boundary(BoundaryConfig::new("hop", 4).unwrap())
        .subscribe(subscriber);
    let error = recorder.expect_terminal().unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::NoRuntime));
}

#[test]
fn metrics_show_depth_waits_and_age_under_pressure() {
    let rt = runtime();
    let _guard = rt.enter();
    let hop = source::from_iter(0..1_000u64).boundary(BoundaryConfig::new("hop", 64).unwrap());
    let metrics = hop.metrics();
    let (subscriber, recorder) = probe::<u64>();
    hop.subscribe(subscriber);
    recorder.subscription();
    // The ring fills on the runtime's worker; the items' wait is timed from once they are in (on
    // a busy machine the worker may get to them late).
    let filled = std::time::Instant::now();
    while metrics.snapshot().depth < 64 {
        assert!(
            filled.elapsed() < Duration::from_secs(10),
            "the ring never filled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.name, "hop");
    assert_eq!(snapshot.capacity, 64);
    assert_eq!(snapshot.depth, 64);
    assert_eq!(snapshot.items_out, 0);
    assert!(snapshot.oldest_item_age_ms.unwrap() >= 40.0, "{snapshot:?}");
    recorder.request(1_000);
    recorder.expect_terminal().unwrap();
    assert_eq!(recorder.items(), (0..1_000).collect::<Vec<_>>());
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.items_in, snapshot.items_out, snapshot.depth),
        (1_000, 1_000, 0)
    );
    assert!(snapshot.producer_waits >= 1, "{snapshot:?}");
    assert!(snapshot.producer_wait_ms >= 40.0, "{snapshot:?}");
    assert_eq!(snapshot.oldest_item_age_ms, None);
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: weir::runtime::metrics::BufferCounts = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever the demand pattern, every item arrives once, in order, and never more than requested.
    #[test]
    fn random_demand_delivers_everything_in_order(
        capacity in 1usize..64,
        requests in proptest::collection::vec(1u64..50, 1..40),
    ) {
        let rt = runtime();
        let _guard = rt.enter();
        let total: u64 = requests.iter().sum();
        let (subscriber, recorder) = probe::<u64>();
        source::from_iter(0..total)
            .boundary(BoundaryConfig::new("hop", capacity).unwrap())
            .subscribe(subscriber);
        let mut requested = 0;
        for n in requests {
            recorder.request(n);
            requested += n;
            let items = recorder.expect_items(requested as usize);
            prop_assert!(items.len() as u64 <= requested);
        }
        prop_assert_eq!(recorder.expect_terminal().is_ok(), true);
        prop_assert_eq!(recorder.items(), (0..total).collect::<Vec<_>>());
    }
}

#[test]
fn an_empty_upstream_handed_over_in_a_burst_completes() {
    // A burst of zero items reaches the inlet's bookkeeping before any item was written.
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..0u64)
        .boundary(BoundaryConfig::new("hop", 4).unwrap())
        .subscribe(subscriber);
    recorder.request(3);
    assert!(recorder.expect_terminal().is_ok());
    assert!(recorder.items().is_empty());
}
