//! flat_map: bounded concurrency over inner publishers, everything delivered, errors and panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use weir::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inner_item_arrives_and_inner_order_is_kept() {
    let all = source::from_iter(0..50u64)
        .flat_map(4, |n| source::from_iter((0..n).map(move |i| (n, i))))
        .collect()
        .await
        .unwrap();
    assert_eq!(all.len() as u64, (0..50).sum::<u64>());
    for n in 0..50 {
        let mine: Vec<u64> = all
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(mine, (0..n).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_inner_publishers_are_subscribed_ahead() {
    let made = Arc::new(AtomicU64::new(0));
    let counter = made.clone();
    let (subscriber, recorder) = probe_u64();
    source::from_iter(0u64..)
        .flat_map(3, move |n| {
            counter.fetch_add(1, Ordering::SeqCst);
            source::from_iter([n])
        })
        .subscribe(subscriber);
    recorder.request(5).await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    // 5 delivered; at most 3 running inners plus an outer prefetch of 3.
    assert!(
        made.load(Ordering::SeqCst) <= 5 + 3 + 3,
        "{} inners made",
        made.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn an_inner_error_or_a_panic_fails_the_stream() {
    let error = source::from_iter(0..10u32)
        .flat_map(2, |n| {
            if n == 3 {
                source::error::<u32>(weir::runtime::Error::msg("inner 3 broke")).boxed()
            } else {
                source::from_iter([n]).boxed()
            }
        })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "inner 3 broke");

    let error = source::from_iter(0..10u32)
        .flat_map(2, |n| {
            assert!(n != 4, "no 4s");
            source::from_iter([n])
        })
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.stage(), Some("flat_map"));
}

/// A minimal async-friendly recorder: counts items, requests through the subscription.
fn probe_u64() -> (Counter, CounterHandle) {
    let shared = Arc::new((
        AtomicU64::new(0),
        std::sync::Mutex::new(None::<weir::runtime::Subscription>),
    ));
    (Counter(shared.clone()), CounterHandle(shared))
}

struct Counter(
    Arc<(
        AtomicU64,
        std::sync::Mutex<Option<weir::runtime::Subscription>>,
    )>,
);
struct CounterHandle(
    Arc<(
        AtomicU64,
        std::sync::Mutex<Option<weir::runtime::Subscription>>,
    )>,
);

impl Subscriber<u64> for Counter {
    fn on_subscribe(&mut self, subscription: weir::runtime::Subscription) {
        *self.0.1.lock().unwrap() = Some(subscription);
    }
    fn on_next(&mut self, _: u64) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
    }
    fn on_error(&mut self, error: weir::runtime::Error) {
        panic!("{error}");
    }
    fn on_complete(&mut self) {}
}

impl CounterHandle {
    async fn request(&self, n: u64) {
        let subscription = self.0.1.lock().unwrap().clone().unwrap();
        subscription.request(n);
        while self.0.0.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }
}
