//! The task engine's panic guard: a panic in code that a task-based operator runs — a closure or a
//! hand-written upstream its task drives — fails the stream with `ErrorKind::Panicked` naming the
//! stage, instead of killing the task without a terminal signal.

mod support;

use std::time::Duration;

use support::{panics_on_request, runtime};
use weir::operators::{GroupOverflow, OnSilence, RetryPolicy, ThrottleMode, merge, retry, zip};
use weir::prelude::*;
use weir::runtime::ErrorKind;

/// Runs `publisher` to its end; a description of what went wrong unless it failed with the
/// upstream's panic, named after `stage`.
fn panicked_in<T: Send + 'static>(publisher: impl Publisher<T>, stage: &str) -> Option<String> {
    let outcome = runtime().block_on(publisher.collect()).map(|_| ());
    let expected = format!("stage `{stage}`: panicked: upstream exploded");
    match outcome {
        Err(error)
            if matches!(error.kind(), ErrorKind::Panicked(_)) && error.to_string() == expected =>
        {
            None
        }
        other => Some(format!("{stage}: {other:?}")),
    }
}

#[test]
fn a_panicking_upstream_fails_each_task_operator_naming_it() {
    let wrong: Vec<String> = [
        panicked_in::<Vec<u64>>(
            panics_on_request().batch(4, Duration::from_millis(5)),
            "batch",
        ),
        panicked_in::<(u64, Vec<u64>)>(
            panics_on_request().group_by(|x: &u64| *x, 2, 2, GroupOverflow::EmitOldest),
            "group_by",
        ),
        panicked_in::<(u64, u64)>(zip(source::from_iter(0..3u64), panics_on_request()), "zip"),
        panicked_in::<u64>(merge(vec![panics_on_request()]), "merge"),
        panicked_in::<u64>(
            panics_on_request().throttle(10, 10, ThrottleMode::Delay),
            "throttle",
        ),
        panicked_in::<u64>(
            panics_on_request().timeout(Duration::from_secs(5), OnSilence::Fail),
            "timeout",
        ),
        panicked_in::<u64>(retry(panics_on_request, RetryPolicy::new(2)), "retry"),
        panicked_in::<u64>(
            panics_on_request().map_async(2, |x: u64| async move { x }),
            "map_async",
        ),
        panicked_in::<u64>(
            panics_on_request().flat_map(2, |x: u64| source::once(x)),
            "flat_map",
        ),
        panicked_in::<u64>(
            source::from_iter(0..3u64).flat_map(2, |_| panics_on_request::<u64>()),
            "flat_map",
        ),
        panicked_in::<u64>(
            source::from_iter(0..3u64).flat_map(2, |_| PanicsOnSubscribe),
            "flat_map",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        wrong.is_empty(),
        "not failed with the named panic: {wrong:#?}"
    );
}

#[test]
fn a_panicking_retry_factory_fails_the_stream_naming_the_stage() {
    let rt = runtime();
    // On a later attempt, inside the retry's task.
    let mut attempts = 0;
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let flaky = retry(
        move || {
            attempts += 1;
            if attempts > 1 {
                panic!("factory broke");
            }
            source::error::<u32>(weir::runtime::Error::msg("connection reset"))
        },
        policy,
    );
    let error = rt.block_on(flaky.collect()).unwrap_err();
    assert_eq!(error.to_string(), "stage `retry`: panicked: factory broke");

    // On the first attempt, while subscribing.
    let broken = retry(
        || -> source::Fail<u32> { panic!("factory broke") },
        RetryPolicy::new(2),
    );
    let error = rt.block_on(broken.collect()).unwrap_err();
    assert_eq!(error.to_string(), "stage `retry`: panicked: factory broke");
}

/// Like `panics_on_request`, but keeps its subscriber (in the subscription) instead of dropping
/// it: nothing but the panic can end the stream.
struct KeepsSubscriberAndPanics;

impl weir::runtime::Publisher<u64> for KeepsSubscriberAndPanics {
    fn subscribe<S: weir::runtime::Subscriber<u64>>(self, mut subscriber: S) {
        struct Exploding<S>(std::sync::Mutex<Option<S>>);
        impl<S: Send + 'static> weir::runtime::RawSubscription for Exploding<S> {
            fn request(&self, _: u64) {
                panic!("upstream exploded");
            }
            fn cancel(&self) {
                self.0.lock().unwrap().take();
            }
        }
        let kept = std::sync::Arc::new(Exploding(std::sync::Mutex::new(None)));
        subscriber.on_subscribe(weir::runtime::Subscription::new(kept.clone()));
        *kept.0.lock().unwrap() = Some(subscriber);
    }
}

#[test]
fn a_panic_in_the_upstream_a_shedding_buffer_pumps_fails_its_stream() {
    let outcome = runtime().block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            KeepsSubscriberAndPanics
                .buffer("shedding", 16, WhenFull::DropNewest)
                .collect(),
        )
        .await
    });
    let error = outcome
        .expect("the stream must end, not wait for an upstream that panicked")
        .unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Panicked(_)), "{error}");
    assert_eq!(
        error.to_string(),
        "stage `shedding`: panicked: upstream exploded"
    );
}

#[test]
fn a_panic_in_the_upstream_a_boundary_drives_fails_its_stream() {
    // The boundary's credit task runs a synchronous upstream inside its `request`.
    let runtime = runtime();
    // An upstream that drops its subscriber: before, the stream then ended as if complete.
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            panics_on_request::<u64>()
                .boundary(BoundaryConfig::new("hop", 16).unwrap())
                .collect(),
        )
        .await
    });
    // It failed either way: by the panic, or because the upstream let go of the boundary
    // without a terminal signal (whichever the boundary saw first).
    let error = outcome.expect("the stream ends").unwrap_err();
    assert_eq!(error.stage(), Some("hop"), "{error}");
    // One that keeps it: before, the stream waited forever.
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            KeepsSubscriberAndPanics
                .boundary(BoundaryConfig::new("hop", 16).unwrap())
                .collect(),
        )
        .await
    });
    let error = outcome
        .expect("the stream must end, not wait for an upstream that panicked")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `hop`: panicked: upstream exploded"
    );
}

/// A publisher whose `subscribe` panics (a hand-written inner publisher of `flat_map`).
struct PanicsOnSubscribe;

impl weir::runtime::Publisher<u64> for PanicsOnSubscribe {
    fn subscribe<S: weir::runtime::Subscriber<u64>>(self, _: S) {
        panic!("upstream exploded");
    }
}

/// Emits `burst` items inside the first `request` (synchronously, as a plain Reactive Streams
/// publisher may) and panics in the second.
struct BurstThenPanic {
    burst: u64,
}

impl weir::runtime::Publisher<u64> for BurstThenPanic {
    fn subscribe<S: weir::runtime::Subscriber<u64>>(self, mut subscriber: S) {
        struct State<S> {
            subscriber: Option<S>,
            requests: u64,
        }
        struct Sub<S>(std::sync::Mutex<State<S>>, u64);
        impl<S: weir::runtime::Subscriber<u64>> weir::runtime::RawSubscription for Sub<S> {
            fn request(&self, n: u64) {
                let mut state = self.0.lock().unwrap();
                state.requests += 1;
                assert!(state.requests == 1, "upstream exploded");
                let subscriber = state.subscriber.as_mut().unwrap();
                for x in 0..n.min(self.1) {
                    subscriber.on_next(x);
                }
            }
            fn cancel(&self) {
                if let Ok(mut state) = self.0.lock() {
                    state.subscriber.take();
                }
            }
        }
        let sub = std::sync::Arc::new(Sub(
            std::sync::Mutex::new(State {
                subscriber: None,
                requests: 0,
            }),
            self.burst,
        ));
        subscriber.on_subscribe(weir::runtime::Subscription::new(sub.clone()));
        sub.0.lock().unwrap().subscriber = Some(subscriber);
    }
}

/// A shedding throttle drains its lane, then the lane asks the upstream for more and the upstream
/// panics in that `request`: the items drained are counted as throttled all the same. They were
/// taken out of the lane and lost uncounted (the count came after the drain, which the panic
/// skipped).
#[test]
fn items_a_shedding_throttle_drained_before_its_upstream_panicked_are_counted() {
    let rt = runtime();
    let _entered = rt.enter();
    let mut p = Pipeline::builder("shed");
    let rows = p.source("rows", BurstThenPanic { burst: 200 });
    let slow = p.stage("slow", &rows, |rows| {
        rows.throttle(1, 1, ThrottleMode::Shed)
    });
    p.sink("store", &slow, |_: u64| {});
    let mut running = p.build().unwrap().start().unwrap();
    let error = rt.block_on(&mut running).unwrap_err();
    assert!(
        error.to_string().contains("panicked: upstream exploded"),
        "{error}"
    );
    let snapshot = running.snapshot();
    let slow = snapshot.stage("slow").unwrap().ledger;
    assert_eq!(
        slow.by_reason[weir::runtime::ledger::Reason::Throttled],
        199,
        "{slow}"
    );
    let books = snapshot.ledger();
    assert!(books.balances(), "{books}");
}
