//! The ledger's promise, one defect at a time: every item that entered is delivered, counted under a
//! named reason, or still held where the counters see it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use support::runtime;
use weir::prelude::*;
use weir::runtime::ledger::{Account, Reason, Tally};
use weir::runtime::sink::Fold;

/// A sink whose closure panics stops being called, and the items that reach it afterwards are
/// counted as cancelled, the one it failed on as failed: handled + failed + cancelled = emitted.
#[test]
fn ledger_a_panicking_sink_is_not_called_again_and_counts_the_rest() {
    let rt = runtime();
    rt.block_on(async {
        let emitted = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let tally = Tally::new("sink");
        let (fold, outcome) = {
            let calls = calls.clone();
            Fold::new((), move |_: &mut (), item: u64| {
                calls.fetch_add(1, Ordering::SeqCst);
                assert!(item != 5, "cannot handle item 5");
            })
        };
        let counter = emitted.clone();
        source::from_iter(0..10_000u64)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .subscribe(fold.counted(&tally));
        let error = outcome.await.unwrap_err();
        assert!(matches!(error.kind(), ErrorKind::Panicked(_)), "{error}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            6,
            "the closure ran after it panicked"
        );
        let entry = tally.entry();
        let handled = 5;
        assert_eq!(entry.exits[Reason::Failed], 1);
        assert_eq!(
            handled + entry.exits[Reason::Failed] + entry.exits[Reason::Cancelled],
            emitted.load(Ordering::SeqCst)
        );
    });
}

/// A sink closure may return a `Result`: the first `Err` fails the stream with it as the source.
#[test]
fn ledger_a_failing_sink_closure_fails_the_stream_and_counts_the_item() {
    let rt = runtime();
    rt.block_on(async {
        let tally = Tally::new("sink");
        let (fold, outcome) = Fold::new(0u64, |stored: &mut u64, item: u64| {
            if item == 3 {
                return Err(std::io::Error::other("disk full"));
            }
            *stored += 1;
            Ok(())
        });
        source::from_iter(0..10u64).subscribe(fold.counted(&tally));
        let error = outcome.await.unwrap_err();
        assert_eq!(error.to_string(), "disk full");
        let source = std::error::Error::source(&error).expect("the io error is the source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(tally.entry().exits[Reason::Failed], 1);
    });
}

/// A stage counts what it emits, not what the next stage accepted: a source of 100 items feeding
/// a filter that keeps half reports 100.
#[test]
fn ledger_a_stage_before_a_filter_counts_everything_it_emitted() {
    let rt = runtime();
    rt.block_on(async {
        let mut p = Pipeline::builder("counts");
        let numbers = p.source("numbers", source::from_iter(0..100u64));
        let even = p.stage("even", &numbers, |n| n.filter(|n| n % 2 == 0));
        let kept = Arc::new(AtomicU64::new(0));
        let count = kept.clone();
        p.sink("store", &even, move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let mut running = p.build().unwrap().start().unwrap();
        (&mut running).await.unwrap();
        let snapshot = running.metrics();
        assert_eq!(snapshot.stage("numbers").unwrap().items, 100);
        assert_eq!(snapshot.stage("even").unwrap().items, 50);
        assert_eq!(snapshot.stage("store").unwrap().items, 50);
        assert_eq!(kept.load(Ordering::SeqCst), 50);
    });
}

/// A fallible sink fails the pipeline naming the stage, with the sink's error as the source.
#[test]
fn ledger_a_fallible_sink_fails_the_pipeline_naming_the_stage() {
    let rt = runtime();
    rt.block_on(async {
        let mut p = Pipeline::builder("store");
        let rows = p.source("rows", source::from_iter(0..10u64));
        p.sink("db", &rows, |row| {
            if row == 4 {
                Err(std::io::Error::other("constraint violated"))
            } else {
                Ok(())
            }
        });
        let error = p.build().unwrap().start().unwrap().await.unwrap_err();
        assert_eq!(error.stage(), Some("db"));
        let source = std::error::Error::source(&error).expect("the stage's error is the source");
        assert_eq!(source.to_string(), "constraint violated");
    });
}

/// Every stage's books and the graph's balance after a run: an ingress that rejects, a source, a
/// merge, a filtering stage, a boundary and a sink.
#[test]
fn ledger_balances_per_stage_and_for_the_graph_after_a_run() {
    let rt = runtime();
    rt.block_on(async {
        let mut p = Pipeline::builder("books");
        let (orders_in, orders) = p.ingress::<u64>(
            "orders",
            8,
            Overflow::Reject {
                retry_after: std::time::Duration::from_millis(10),
            },
        );
        let replays = p.source("replays", source::from_iter(1_000..1_500u64));
        let all = p.merge("all", [&orders, &replays]);
        let even = p.stage("even", &all, |n| n.filter(|n| n % 2 == 0));
        let hop = p.boundary("hop", &even, 16);
        let stored = Arc::new(AtomicU64::new(0));
        let count = stored.clone();
        p.sink("store", &hop, move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let mut running = p.build().unwrap().start().unwrap();
        let mut refused = 0;
        for order in 0..200u64 {
            if orders_in.push(order).await.is_err() {
                refused += 1;
            }
        }
        drop(orders_in);
        (&mut running).await.unwrap();
        let snapshot = running.metrics();
        for stage in &snapshot.stages {
            assert!(stage.ledger.balances(), "{}: {}", stage.name, stage.ledger);
        }
        let orders = snapshot.stage("orders").unwrap().ledger;
        assert_eq!(orders.offered, 200);
        assert_eq!(orders.rejected, refused);
        let even = snapshot.stage("even").unwrap().ledger;
        assert_eq!(even.offered, 700 - refused);
        assert_eq!(
            even.by_reason[Reason::Filtered],
            even.offered - even.delivered
        );
        let books = snapshot.ledger();
        assert!(books.balances(), "{books}");
        assert_eq!(books.offered, 700);
        assert_eq!(books.delivered, stored.load(Ordering::SeqCst));
        assert_eq!(books.held, 0);
    });
}
