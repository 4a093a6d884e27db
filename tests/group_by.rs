//! group_by: per-key groups, bounded open groups with an explicit overflow policy, demand.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::probe;
use weir::operators::GroupOverflow;
use weir::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_lands_in_its_group_in_order() {
    let groups = source::from_iter(0..1_000u32)
        .group_by(|x| x % 7, 7, 10, GroupOverflow::EmitOldest)
        .collect()
        .await
        .unwrap();
    assert!(
        groups
            .iter()
            .all(|(k, items)| items.iter().all(|x| x % 7 == *k) && items.len() <= 10)
    );
    for k in 0..7 {
        let mine: Vec<u32> = groups
            .iter()
            .filter(|(g, _)| *g == k)
            .flat_map(|(_, i)| i.clone())
            .collect();
        assert_eq!(mine, (0..1_000).filter(|x| x % 7 == k).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_over_max_groups_emits_the_chosen_group() {
    let items = ["a", "a", "a", "b", "c"];
    let oldest = source::from_iter(items)
        .group_by(|s| *s, 2, 100, GroupOverflow::EmitOldest)
        .collect()
        .await
        .unwrap();
    assert_eq!(
        oldest[0],
        ("a", vec!["a", "a", "a"]),
        "`c` needed room: the oldest group went"
    );
    let largest = source::from_iter(["b", "a", "a", "c"])
        .group_by(|s| *s, 2, 100, GroupOverflow::EmitLargest)
        .collect()
        .await
        .unwrap();
    assert_eq!(largest[0], ("a", vec!["a", "a"]), "the largest group went");
}

#[test]
fn without_demand_the_upstream_is_held_back() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let (subscriber, recorder) = probe::<(u64, Vec<u64>)>();
    source::from_iter(0u64..)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .group_by(|x| x % 3, 3, 10, GroupOverflow::EmitLargest)
        .subscribe(subscriber);
    recorder.request(1);
    recorder.expect_items(1);
    std::thread::sleep(Duration::from_millis(30));
    // One group out, ready groups waiting, at most 3 x 10 open and a lane of 10.
    assert!(
        pulled.load(Ordering::Relaxed) <= 100,
        "pulled {}",
        pulled.load(Ordering::Relaxed)
    );
    recorder.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_fails_the_stream_naming_the_stage() {
    let error = source::from_iter(0..10u32)
        .group_by(
            |x| if *x == 3 { panic!("bad key") } else { x % 2 },
            4,
            4,
            GroupOverflow::EmitOldest,
        )
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(
        error.kind(),
        weir::runtime::ErrorKind::Panicked(_)
    ));
    assert_eq!(error.to_string(), "stage `group_by`: panicked: bad key");
}

static CREATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An item that counts its drops (it owns no memory, so a double drop shows as a count).
struct Counted(u32);

impl Drop for Counted {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_drops_every_item_exactly_once() {
    let items = (0..100).map(|i| {
        CREATED.fetch_add(1, Ordering::SeqCst);
        Counted(i)
    });
    let error = source::from_iter(items)
        .group_by(
            |item| {
                if item.0 == 5 {
                    panic!("bad key")
                } else {
                    item.0 % 2
                }
            },
            4,
            4,
            GroupOverflow::EmitOldest,
        )
        .collect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(
        error.kind(),
        weir::runtime::ErrorKind::Panicked(_)
    ));
    // The lane and the source let go of their items once the cancel has reached them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while DROPPED.load(Ordering::SeqCst) < CREATED.load(Ordering::SeqCst)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        CREATED.load(Ordering::SeqCst),
        "every item dropped exactly once"
    );
}
