//! retry(factory, policy): resubscription, backoff bounds, giving up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weir::operators::{RetryPolicy, retry};
use weir::prelude::*;

fn flaky(
    failures: u32,
    attempts: Arc<AtomicU32>,
) -> impl FnMut() -> weir::runtime::BoxPublisher<u32> + Send {
    move || {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        if n < failures {
            // Emits a little, then fails: what was delivered is not repeated by the operator.
            let items = source::from_iter([n * 100]);
            let broken =
                source::error::<u32>(weir::runtime::Error::msg(format!("attempt {n} failed")));
            weir::operators::merge_delay_error(vec![items.boxed(), broken.boxed()]).boxed()
        } else {
            source::from_iter([7, 8, 9]).boxed()
        }
    }
}

#[tokio::test(start_paused = true)]
async fn resubscribes_after_failures_with_backoff() {
    let attempts = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let started = tokio::time::Instant::now();
    let items = retry(flaky(3, attempts.clone()), policy)
        .collect()
        .await
        .unwrap();
    assert_eq!(items, vec![0, 100, 200, 7, 8, 9]);
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    // Full jitter: three backoffs, each at most 100, 200, 400 ms.
    assert!(started.elapsed() <= Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let attempts = Arc::new(AtomicU32::new(0));
    let error = retry(flaky(10, attempts.clone()), RetryPolicy::new(3))
        .collect()
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "attempt 2 failed");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[test]
fn backoff_is_full_jitter_under_an_exponential_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(300),
    };
    for retry in 0..10 {
        let cap = Duration::from_millis((10u64 << retry).min(300));
        for random in [0, 1, u64::MAX / 3, u64::MAX] {
            assert!(policy.backoff(retry, random) <= cap);
        }
    }
    assert_eq!(policy.backoff(3, 0), Duration::ZERO);
}

#[tokio::test]
async fn zero_attempts_is_a_clear_error() {
    let error = retry(source::empty::<u8>, RetryPolicy::new(0))
        .collect()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `retry`: max_attempts must be at least 1"
    );
}
