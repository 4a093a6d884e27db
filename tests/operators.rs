//! Fused operators against their iterator models, under random demand and random cancellation.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use support::{Signal, probe};
use weir::prelude::*;

/// Drives `publisher` with the `requests`, cancelling after `cancel_after` requests if given, and
/// checks what arrived against `expected` (the iterator model's output).
fn check<P: Publisher<u64>>(
    publisher: P,
    expected: Vec<u64>,
    requests: &[u64],
    cancel_after: Option<usize>,
) -> Result<(), TestCaseError> {
    let (subscriber, recorder) = probe::<u64>();
    publisher.subscribe(subscriber);
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
        let got = recorder.items();
        // Never more than requested; exactly what was asked for while the model has items.
        prop_assert_eq!(got.len() as u64, requested.min(expected.len() as u64));
        prop_assert!(expected.starts_with(&got));
    }
    recorder.request(u64::MAX);
    prop_assert_eq!(recorder.items(), expected);
    let terminals = recorder
        .signals()
        .iter()
        .filter(|s| !matches!(s, Signal::Next(_)))
        .count();
    prop_assert_eq!(terminals, 1, "exactly one terminal signal");
    Ok(())
}

fn demand() -> impl Strategy<Value = (Vec<u64>, Option<usize>)> {
    (
        proptest::collection::vec(1u64..20, 1..20),
        proptest::option::weighted(0.2, 0usize..20),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn map_filter_filter_map_scan((requests, cancel) in demand(), len in 0u64..200) {
        let expected: Vec<u64> = (0..len)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .filter_map(|x| (x % 5 != 0).then_some(x + 1))
            .scan(0u64, |total, x| { *total += x; Some(*total) })
            .collect();
        let publisher = source::from_iter(0..len)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .filter_map(|x| (x % 5 != 0).then_some(x + 1))
            .scan(0u64, |total, x| { *total += x; *total });
        check(publisher, expected, &requests, cancel)?;
    }

    #[test]
    fn take_skip_take_while((requests, cancel) in demand(), len in 0u64..200, n in 0u64..150, k in 0u64..30) {
        let expected: Vec<u64> = (0..len).skip(k as usize).take_while(|x| x % 97 != 96).take(n as usize).collect();
        let publisher = source::from_iter(0..len).skip(k).take_while(|x| x % 97 != 96).take(n);
        check(publisher, expected, &requests, cancel)?;
    }
}

#[test]
fn take_never_asks_the_upstream_for_more_than_it_needs() {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    // An endless source: with unbounded demand downstream, take(5) must still stop it after 5.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let items = rt
        .block_on(
            source::from_iter(0u64..)
                .inspect(move |_| {
                    counter.fetch_add(1, Ordering::Relaxed);
                })
                .take(5)
                .collect(),
        )
        .unwrap();
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    assert_eq!(pulled.load(Ordering::Relaxed), 5);
}

#[test]
fn take_zero_completes_at_once() {
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0u64..).take(0).subscribe(subscriber);
    assert!(recorder.expect_terminal().is_ok());
    assert!(recorder.items().is_empty());
}

#[test]
fn a_panicking_scan_names_its_stage() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let error = rt
        .block_on(
            source::from_iter(0u64..)
                .scan(0u64, |_, x| if x == 3 { panic!("boom") } else { x })
                .collect(),
        )
        .unwrap_err();
    assert_eq!(error.to_string(), "stage `scan`: panicked: boom");
}

#[test]
fn dedupe_drops_repeats_within_its_window_and_counts_them() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Redelivered keys: 1 and 2 come back while remembered, 1 again after it left the window of 3.
    let deduped = source::from_iter([1u64, 2, 1, 3, 2, 4, 5, 1]).dedupe(|x| *x, 3);
    let duplicates = deduped.duplicates();
    let out = rt.block_on(deduped.collect()).unwrap();
    assert_eq!(out, vec![1, 2, 3, 4, 5, 1]);
    assert_eq!(duplicates.load(Ordering::Relaxed), 2);
}

#[test]
fn try_map_fails_the_stream_on_the_first_error_in_either_path() {
    // Unbounded demand (per-item path) and bounded demand (burst path) both stop at the error.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let error = rt
        .block_on(
            source::from_iter(["1", "2", "x", "4"])
                .try_map(|s| s.parse::<u64>())
                .collect(),
        )
        .unwrap_err();
    assert_eq!(error.stage(), Some("try_map"));
    assert!(
        std::error::Error::source(&error).is_some(),
        "the parse error is kept"
    );

    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..100u64)
        .try_map(|x| if x == 50 { Err(std::fmt::Error) } else { Ok(x) })
        .subscribe(subscriber);
    recorder.request(80);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `try_map`: an error occurred when formatting an argument"
    );
    assert_eq!(recorder.items(), (0..50).collect::<Vec<_>>());
}
