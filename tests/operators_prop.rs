//! Every task-based operator under random demand and random cancellation: configured as an identity
//! (or with a known output), what arrives is always a prefix of the expected output, never more than
//! requested, and exactly the expected output with one terminal signal when nothing cancels.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::{Signal, probe, runtime};
use weir::operators::{
    Breaker, BreakerConfig, GroupOverflow, Lagging, OnSilence, PriorityLanes, RetryPolicy,
    ThrottleMode, balance, broadcast, merge, partition, retry, zip,
};
use weir::prelude::*;

/// Builds the operator under test over `0..len`.
type Build = fn(u64) -> weir::runtime::BoxPublisher<u64>;

fn operators() -> Vec<(&'static str, Build)> {
    vec![
        ("map_async", |n| {
            source::from_iter(0..n)
                .map_async(3, |x| async move { x })
                .boxed()
        }),
        ("map_async_unordered_1", |n| {
            source::from_iter(0..n)
                .map_async_unordered(1, |x| async move { x })
                .boxed()
        }),
        ("flat_map_1", |n| {
            source::from_iter(0..n)
                .flat_map(1, |x| source::from_iter([x]))
                .boxed()
        }),
        ("buffer_block", |n| {
            source::from_iter(0..n)
                .buffer("p", 5, weir::runtime::queue::WhenFull::Wait)
                .boxed()
        }),
        ("throttle", |n| {
            source::from_iter(0..n)
                .throttle(1_000_000, 1_000_000, ThrottleMode::Delay)
                .boxed()
        }),
        ("timeout", |n| {
            source::from_iter(0..n)
                .timeout(Duration::from_secs(10), OnSilence::Fail)
                .boxed()
        }),
        ("retry", |n| {
            retry(move || source::from_iter(0..n), RetryPolicy::new(2)).boxed()
        }),
        ("circuit_breaker", |n| {
            source::from_iter(0..n)
                .circuit_breaker(2, Breaker::new(BreakerConfig::default()), |x| async move {
                    Ok::<u64, ()>(x)
                })
                .map(|r| r.unwrap_or(u64::MAX))
                .boxed()
        }),
        ("zip", |n| {
            zip(source::from_iter(0..n), source::from_iter(0u64..))
                .map(|(a, _)| a)
                .boxed()
        }),
        ("group_by_1", |n| {
            source::from_iter(0..n)
                .group_by(|x| *x, 3, 1, GroupOverflow::EmitOldest)
                .map(|(k, _)| k)
                .boxed()
        }),
        ("chunks_1", |n| {
            source::from_iter(0..n).chunks(1).map(|c| c[0]).boxed()
        }),
        ("merge_1", |n| {
            merge(vec![source::from_iter(0..n)])
                .lane_capacity(4)
                .boxed()
        }),
        ("priority_lanes_1", |n| {
            PriorityLanes::new()
                .lane("only", 1, 4, source::from_iter(0..n))
                .build()
                .unwrap()
                .boxed()
        }),
        ("broadcast_1", |n| {
            broadcast(source::from_iter(0..n), 1, 4, Lagging::Wait)
                .unwrap()
                .remove(0)
                .boxed()
        }),
        ("balance_1", |n| {
            balance(source::from_iter(0..n), 1, 4)
                .unwrap()
                .remove(0)
                .boxed()
        }),
        ("partition_1", |n| {
            partition(source::from_iter(0..n), 1, 4, |x| *x)
                .unwrap()
                .remove(0)
                .boxed()
        }),
        ("dedupe", |n| {
            source::from_iter(0..n).dedupe(|x| *x, 8).boxed()
        }),
    ]
}

fn check(
    build: Build,
    len: u64,
    requests: &[u64],
    cancel_after: Option<usize>,
) -> Result<(), TestCaseError> {
    let (subscriber, recorder) = probe::<u64>();
    build(len).subscribe(subscriber);
    let expected: Vec<u64> = (0..len).collect();
    let mut requested = 0u64;
    for (i, &n) in requests.iter().enumerate() {
        if cancel_after == Some(i) {
            recorder.cancel();
            let got = recorder.items();
            prop_assert!(expected.starts_with(&got), "not a prefix: {got:?}");
            return Ok(());
        }
        recorder.request(n);
        requested += n;
        let want = requested.min(len) as usize;
        let got = recorder.expect_items(want);
        prop_assert!(got.len() as u64 <= requested, "more than requested");
        prop_assert!(expected.starts_with(&got));
    }
    recorder.request(u64::MAX);
    prop_assert!(recorder.expect_terminal().is_ok());
    prop_assert_eq!(recorder.items(), expected);
    let terminals = recorder
        .signals()
        .iter()
        .filter(|s| !matches!(s, Signal::Next(_)))
        .count();
    prop_assert_eq!(terminals, 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn task_based_operators_under_random_demand_and_cancel(
        len in 0u64..120,
        requests in proptest::collection::vec(1u64..25, 1..12),
        cancel in proptest::option::weighted(0.25, 0usize..12),
    ) {
        let rt = runtime();
        let _guard = rt.enter();
        for (name, build) in operators() {
            check(build, len, &requests, cancel).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        }
    }
}
