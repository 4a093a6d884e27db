//! merge, merge_delay_error and priority_lanes: completeness, fairness, errors, demand, latency bound.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use support::{probe, runtime};
use weir::operators::{PriorityLanes, merge, merge_delay_error};
use weir::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Every item of every source arrives exactly once, each source's items in their order, never
    /// more than requested.
    #[test]
    fn merge_delivers_everything_in_per_source_order(
        sizes in proptest::collection::vec(0u64..300, 1..6),
        requests in proptest::collection::vec(1u64..100, 1..20),
        capacity in 1usize..40,
    ) {
        let rt = runtime();
        let _guard = rt.enter();
        let sources: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(s, &n)| source::from_iter((0..n).map(move |i| (s as u64) * 1_000 + i)))
            .collect();
        let total: u64 = sizes.iter().sum();
        let (subscriber, recorder) = probe::<u64>();
        merge(sources).lane_capacity(capacity).subscribe(subscriber);
        let mut requested = 0;
        for n in requests {
            recorder.request(n);
            requested += n;
            let got = recorder.expect_items(requested.min(total) as usize);
            prop_assert!(got.len() as u64 <= requested);
        }
        recorder.request(u64::MAX);
        prop_assert!(recorder.expect_terminal().is_ok());
        let got = recorder.items();
        prop_assert_eq!(got.len() as u64, total);
        for (s, &n) in sizes.iter().enumerate() {
            let mine: Vec<u64> = got.iter().copied().filter(|x| x / 1_000 == s as u64).collect();
            prop_assert_eq!(mine, (0..n).map(|i| (s as u64) * 1_000 + i).collect::<Vec<_>>());
        }
    }
}

#[test]
fn busy_sources_get_equal_shares() {
    let rt = runtime();
    let _guard = rt.enter();
    let sources: Vec<_> = (0..4u64)
        .map(|s| source::from_iter((0..100_000u64).map(move |_| s)))
        .collect();
    let (subscriber, recorder) = probe::<u64>();
    merge(sources).subscribe(subscriber);
    recorder.request(40_000);
    let got = recorder.expect_items(40_000);
    let mut shares = [0u64; 4];
    for s in got {
        shares[s as usize] += 1;
    }
    for share in shares {
        let off = (share as f64 - 10_000.0).abs() / 10_000.0;
        assert!(off <= 0.10, "shares {shares:?} off fair by more than 10%");
    }
    recorder.cancel();
}

#[test]
fn an_error_fails_fast_and_cancels_the_others() {
    let rt = runtime();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let endless = source::from_iter(0u64..)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .boxed();
    let failing = source::error::<u64>(weir::runtime::Error::msg("source 2 broke")).boxed();
    let error = rt
        .block_on(merge(vec![endless, failing]).collect())
        .unwrap_err();
    assert_eq!(error.to_string(), "source 2 broke");
    let at_failure = pulled.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        pulled.load(Ordering::Relaxed),
        at_failure,
        "the other source kept going"
    );
}

#[test]
fn delay_error_lets_the_others_finish_first() {
    let rt = runtime();
    let _guard = rt.enter();
    let (subscriber, recorder) = probe::<u64>();
    merge_delay_error(vec![
        source::from_iter(0..50u64).boxed(),
        source::error::<u64>(weir::runtime::Error::msg("late")).boxed(),
    ])
    .subscribe(subscriber);
    recorder.request(u64::MAX);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(error.to_string(), "late");
    assert_eq!(recorder.items(), (0..50).collect::<Vec<_>>());
}

#[test]
fn each_source_is_asked_only_for_what_its_lane_holds() {
    let rt = runtime();
    let _guard = rt.enter();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let (subscriber, recorder) = probe::<u64>();
    merge(vec![
        source::from_iter(0u64..)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .boxed(),
    ])
    .lane_capacity(32)
    .subscribe(subscriber);
    recorder.request(10);
    recorder.expect_items(10);
    std::thread::sleep(Duration::from_millis(30));
    assert!(pulled.load(Ordering::Relaxed) <= 10 + 32);
    recorder.cancel();
}

#[test]
fn priority_lanes_validate_every_problem_at_once() {
    let error = PriorityLanes::<u8>::new()
        .lane("a", 0, 8, source::empty::<u8>())
        .lane("a", 1, 0, source::empty::<u8>())
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `priority_lanes`: lane `a` needs a weight of at least 1; lane name `a` is used \
         twice; lane `a` needs a capacity of at least 1"
    );
    let empty = PriorityLanes::<u8>::new().build().unwrap_err();
    assert!(empty.to_string().contains("at least one lane is needed"));
}

#[test]
fn a_saturated_batch_lane_adds_at_most_one_quantum_before_interactive_items() {
    let rt = runtime();
    let _guard = rt.enter();
    // Both lanes are full from the start; interactive (weight 8) must come out well ahead.
    let lanes = PriorityLanes::new()
        .lane("interactive", 8, 1_000, source::from_iter(0..1_000u64))
        .lane(
            "batch",
            1,
            1_000,
            source::from_iter(1_000_000..1_100_000u64),
        )
        .build()
        .unwrap();
    let (subscriber, recorder) = probe::<u64>();
    lanes.subscribe(subscriber);
    recorder.request(1_200);
    let got = recorder.expect_items(1_200);
    let interactive_done = got.iter().rposition(|x| *x < 1_000).unwrap();
    let interactive = got.iter().filter(|x| **x < 1_000).count();
    // In 1,200 items: interactive gets 8/9 of the output while busy.
    assert_eq!(interactive, 1_000, "interactive items were held back");
    assert!(interactive_done < 1_200);
    let batch_before_last = got[..interactive_done]
        .iter()
        .filter(|x| **x >= 1_000)
        .count();
    assert!(
        batch_before_last <= 1_000 / 8 + 64,
        "{batch_before_last} batch items went first"
    );
    recorder.cancel();
}
