//! circuit_breaker: opens on a failure rate, rejects fast (handing items back), probes, closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir::operators::{Breaker, BreakerConfig, BreakerState, Rejected};
use weir::prelude::*;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_rate: 0.5,
        window: 4,
        min_calls: 4,
        open_for: Duration::from_secs(1),
        probes: 2,
    }
}

#[tokio::test(start_paused = true)]
async fn opens_rejects_fast_probes_and_closes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let breaker = Breaker::new(config());
    let service = {
        let healthy = healthy.clone();
        move |x: u32| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move {
                if healthy {
                    Ok(x)
                } else {
                    Err(format!("call {x} failed"))
                }
            }
        }
    };
    // Phase 1: the service is down. 4 failures open the breaker; the next 6 are rejected fast.
    let out = source::from_iter(0..10u32)
        .circuit_breaker(1, breaker.clone(), service.clone())
        .collect()
        .await
        .unwrap();
    assert!(
        out[..4]
            .iter()
            .all(|r| matches!(r, Err(Rejected::Failed(_))))
    );
    for (i, r) in out[4..].iter().enumerate() {
        match r {
            Err(Rejected::Open { item, retry_after }) => {
                assert_eq!(*item, 4 + i as u32, "the item is handed back");
                assert!(*retry_after <= Duration::from_secs(1));
            }
            other => panic!("expected a fast rejection, got {other:?}"),
        }
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!(
        (
            snapshot.calls,
            snapshot.failures,
            snapshot.rejected_open,
            snapshot.opened
        ),
        (4, 4, 6, 1)
    );

    // Phase 2: after open_for, two probes succeed and the breaker closes.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_001)).await;
    let out = source::from_iter(100..105u32)
        .circuit_breaker(1, breaker.clone(), service)
        .collect()
        .await
        .unwrap();
    assert_eq!(
        out.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104]
    );
    assert_eq!(breaker.snapshot().state, BreakerState::Closed);
}

/// Four failed calls open the breaker; then its open time passes: the next call probes.
async fn open_until_probing(breaker: &Breaker) {
    let failing = |x: u32| async move { Err::<u32, _>(x) };
    let _ = source::from_iter(0..4u32)
        .circuit_breaker(1, breaker.clone(), failing)
        .collect()
        .await
        .unwrap();
    assert_eq!(breaker.snapshot().state, BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(1_001)).await;
}

/// Through the operator (whose calls run inside `map_async`, which catches a call's panic and
/// drops the call's future afterwards): a probe whose call panics counts as failed and opens the
/// breaker again, and a panicking call of a closed breaker counts as a failure. Both were missed:
/// the call's guard only looked at `thread::panicking()` when dropped, which is false by then.
#[tokio::test(start_paused = true)]
async fn a_call_that_panics_inside_the_operator_counts_as_failed() {
    /// One item through the operator, whose call panics: the stream fails with the panic.
    async fn one_panicking_call(breaker: &Breaker) {
        let panicking = |_: u32| async move {
            if true {
                panic!("the service's client broke");
            }
            Ok::<u32, u32>(0)
        };
        let error = source::once(1u32)
            .circuit_breaker(1, breaker.clone(), panicking)
            .collect()
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("the service's client broke"),
            "{error}"
        );
    }

    let closed = Breaker::new(config());
    one_panicking_call(&closed).await;
    assert_eq!(closed.snapshot().failures, 1, "{:?}", closed.snapshot());

    let probing = Breaker::new(config());
    open_until_probing(&probing).await;
    one_panicking_call(&probing).await;
    let snapshot = probing.snapshot();
    assert_eq!(
        (snapshot.state, snapshot.opened),
        (BreakerState::Open, 2),
        "a probe that panicked opens it again: {snapshot:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_again() {
    let breaker = Breaker::new(config());
    let failing = |x: u32| async move { Err::<u32, _>(x) };
    open_until_probing(&breaker).await;
    let out = source::from_iter(0..3u32)
        .circuit_breaker(1, breaker.clone(), failing)
        .collect()
        .await
        .unwrap();
    assert!(
        matches!(out[0], Err(Rejected::Failed(0))),
        "the probe was called"
    );
    assert!(
        matches!(out[1], Err(Rejected::Open { .. })),
        "then it opened again"
    );
    assert_eq!(breaker.snapshot().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_call_is_dropped_frees_its_place_for_another() {
    // A service's request handler may be cancelled (a client goes away, a timeout) with a probe
    // in flight: its outcome is unknown, so the next call probes in its place. Before, the breaker
    // stayed half-open with no probe left and rejected every call from then on.
    let breaker = Breaker::new(config());
    open_until_probing(&breaker).await;
    let mut never_finishes = |x: u32| async move {
        std::future::pending::<()>().await;
        Ok::<u32, u32>(x)
    };
    // Both probes (config: 2) are admitted, then dropped before they finish.
    drop(breaker.call(&mut never_finishes, 1));
    drop(breaker.call(&mut never_finishes, 2));
    assert_eq!(breaker.snapshot().state, BreakerState::HalfOpen);
    let mut healthy = |x: u32| async move { Ok::<u32, u32>(x) };
    assert_eq!(breaker.call(&mut healthy, 3).await.unwrap(), 3);
    assert_eq!(breaker.call(&mut healthy, 4).await.unwrap(), 4);
    assert_eq!(breaker.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_call_panics_counts_as_failed() {
    let breaker = Breaker::new(config());
    open_until_probing(&breaker).await;
    let mut panicking = |_: u32| async move {
        if true {
            panic!("the service's client broke");
        }
        Ok::<u32, u32>(0)
    };
    let probe = breaker.call(&mut panicking, 1);
    let outcome = tokio::spawn(probe).await;
    assert!(outcome.unwrap_err().is_panic());
    let snapshot = breaker.snapshot();
    assert_eq!(
        snapshot.state,
        BreakerState::Open,
        "a failed probe opens it again"
    );
    assert_eq!(snapshot.opened, 2);
}
