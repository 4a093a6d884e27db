//! zip: pairs in order, ends with the shorter source, fails fast, holds the faster side back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir::operators::zip;
use weir::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_in_order_and_ends_with_the_shorter_source() {
    let pairs = zip(
        source::from_iter(0..1_000u32),
        source::from_iter(0..700u64).map(|x| x * 2),
    )
    .collect()
    .await
    .unwrap();
    assert_eq!(pairs.len(), 700);
    assert!(pairs.iter().all(|&(a, b)| u64::from(a) * 2 == b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_on_either_side_fails_the_zip() {
    let error = zip(
        source::from_iter(0..10u32),
        source::error::<u32>(weir::runtime::Error::msg("right side broke")),
    )
    .collect()
    .await
    .unwrap_err();
    assert_eq!(error.to_string(), "right side broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_side_is_held_back_by_the_slow_one() {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let fast = source::from_iter(0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let slow = source::from_stream(futures::stream::iter(0..20u64).then(|x| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        x
    }));
    let pairs = zip(fast, slow).collect().await.unwrap();
    assert_eq!(pairs.len(), 20);
    assert!(
        pulled.load(Ordering::Relaxed) <= 20 + 64 + 1,
        "the fast side ran ahead unbounded"
    );
}

use futures::StreamExt;
