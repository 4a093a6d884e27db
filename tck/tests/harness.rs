//! Tests of the TCK itself: correct implementations pass, and deliberately broken ones fail the rule
//! they break (a TCK that passes everything proves nothing).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use weir_runtime::boundary::{self, BoundaryConfig, Inlet, Outlet};
use weir_runtime::sink::Fold;
use weir_runtime::{
    Error, ErrorKind, Publisher, RawSubscription, Subscriber, Subscription, source,
};
use weir_tck::{
    Env, IdentityProcessorVerification, ManualPublisher, ManualSubscriber, Outcome,
    PublisherVerification, SubscriberBlackboxVerification, SubscriberWhiteboxVerification,
    WhiteboxProbe, run_rule,
};

// ------------------------------------------------------------------------------ a faulty publisher

/// What a [`Faulty`] publisher gets wrong.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Emits everything on the first request, whatever the demand (rule 1.1).
    ignore_demand: bool,
    /// Treats `request(0)` as nothing (rule 3.9).
    ignore_request_zero: bool,
    /// Keeps emitting after cancel (rule 3.6).
    ignore_cancel: bool,
    /// Keeps the subscriber after cancel (rule 3.13).
    leak_subscriber: bool,
    /// Signals `on_complete` twice (rule 1.7).
    complete_twice: bool,
    /// Never calls `on_subscribe` (rule 1.9).
    no_on_subscribe: bool,
}

/// A synchronous publisher of `0..n`, correct unless told otherwise.
#[derive(Debug, Clone)]
struct Faulty {
    n: u64,
    faults: Faults,
}

struct State<S> {
    subscriber: Option<S>,
    next: u64,
    demand: u64,
    bad_request: bool,
    cancelled: bool,
    emitting: bool,
    done: bool,
}

struct FaultySubscription<S> {
    n: u64,
    faults: Faults,
    state: Mutex<State<S>>,
    /// Where a leaked subscriber goes.
    leaked: Mutex<Vec<S>>,
}

enum Action {
    Next(u64),
    Complete,
    Error,
    Stop,
}

impl<S: Subscriber<u64>> FaultySubscription<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The trampolined emission loop: the subscriber is taken out while it is called, so a
    /// `request` from inside `on_next` only adds demand.
    fn drain(&self) {
        loop {
            let (mut subscriber, action) = {
                let mut state = self.lock();
                let stopped = state.done || (state.cancelled && !self.faults.ignore_cancel);
                let action = if stopped {
                    Action::Stop
                } else if state.bad_request && !self.faults.ignore_request_zero {
                    Action::Error
                } else if state.next == self.n {
                    Action::Complete
                } else if state.demand > 0 || self.faults.ignore_demand {
                    state.demand = state.demand.saturating_sub(1);
                    state.next += 1;
                    Action::Next(state.next - 1)
                } else {
                    Action::Stop
                };
                let subscriber = match action {
                    Action::Stop => {
                        state.emitting = false;
                        if state.cancelled && !self.faults.leak_subscriber {
                            state.subscriber = None; // rule 3.13
                        }
                        return;
                    }
                    _ => state.subscriber.take(),
                };
                match subscriber {
                    Some(subscriber) => (subscriber, action),
                    None => {
                        state.emitting = false;
                        return;
                    }
                }
            };
            let terminal = !matches!(action, Action::Next(_));
            match action {
                Action::Next(item) => subscriber.on_next(item),
                Action::Complete => {
                    subscriber.on_complete();
                    if self.faults.complete_twice {
                        subscriber.on_complete();
                    }
                }
                Action::Error => subscriber.on_error(Error::new(ErrorKind::RequestZero)),
                Action::Stop => unreachable!(),
            }
            let mut state = self.lock();
            if terminal {
                state.done = true;
                state.emitting = false;
                return; // the subscriber is dropped
            }
            state.subscriber = Some(subscriber);
        }
    }
}

impl<S: Subscriber<u64>> RawSubscription for FaultySubscription<S> {
    fn request(&self, n: u64) {
        {
            let mut state = self.lock();
            if n == 0 {
                state.bad_request = true;
            } else {
                state.demand = state.demand.saturating_add(n);
            }
            if state.emitting {
                return;
            }
            state.emitting = true;
        }
        self.drain();
    }

    fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        if self.faults.ignore_cancel || state.emitting {
            return;
        }
        if let Some(subscriber) = state.subscriber.take()
            && self.faults.leak_subscriber
        {
            self.leaked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(subscriber);
        }
    }
}

impl Publisher<u64> for Faulty {
    fn subscribe<S: Subscriber<u64>>(self, mut subscriber: S) {
        let shared = Arc::new(FaultySubscription {
            n: self.n,
            faults: self.faults,
            state: Mutex::new(State {
                subscriber: None,
                next: 0,
                demand: 0,
                bad_request: false,
                cancelled: false,
                emitting: true,
                done: false,
            }),
            leaked: Mutex::new(Vec::new()),
        });
        if !self.faults.no_on_subscribe {
            subscriber.on_subscribe(Subscription::new(shared.clone()));
        }
        shared.lock().subscriber = Some(subscriber);
        shared.drain();
    }
}

fn faulty(faults: Faults) -> PublisherVerification<u64> {
    PublisherVerification::new_cloneable(Env::from_env(), move |n| Faulty { n, faults })
}

fn expect_failed(outcome: Outcome, what: &str) {
    assert!(
        outcome.is_failed(),
        "{what}: expected a failure, got {outcome}"
    );
}

fn expect_passed(outcome: Outcome, what: &str) {
    assert!(
        outcome.is_passed(),
        "{what}: expected a pass, got {outcome}"
    );
}

#[test]
fn a_correct_publisher_passes_every_publisher_rule_that_applies() {
    type Rule = fn(&PublisherVerification<u64>) -> Outcome;
    let rules: Vec<(&str, Rule)> = vec![
        ("create_publisher3", |v| {
            v.required_create_publisher3_must_produce_a_stream_of_exactly3_elements()
        }),
        ("101", |v| {
            v.required_spec101_subscription_request_must_result_in_the_correct_number_of_produced_elements()
        }),
        ("102", |v| {
            v.required_spec102_may_signal_less_than_requested_and_terminate_subscription()
        }),
        ("105", |v| {
            v.required_spec105_must_signal_on_complete_when_finite_stream_terminates()
        }),
        ("107", |v| {
            v.required_spec107_must_not_emit_further_signals_once_on_complete_has_been_signalled()
        }),
        ("109", |v| {
            v.required_spec109_must_issue_on_subscribe_for_non_null_subscriber()
        }),
        ("111", |v| {
            v.optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_one_by_one()
        }),
        ("302", |v| {
            v.required_spec302_must_allow_synchronous_request_calls_from_on_next_and_on_subscribe()
        }),
        ("303", |v| {
            v.required_spec303_must_not_allow_unbounded_recursion()
        }),
        ("306", |v| {
            v.required_spec306_after_subscription_is_cancelled_request_must_be_nops()
        }),
        ("309", |v| {
            v.required_spec309_request_zero_must_signal_error()
        }),
        ("312", |v| {
            v.required_spec312_cancel_must_make_the_publisher_to_eventually_stop_signaling()
        }),
        ("313", |v| {
            v.required_spec313_cancel_must_make_the_publisher_eventually_drop_all_references_to_the_subscriber()
        }),
        ("317", |v| {
            v.required_spec317_must_support_a_cumulative_pending_element_count_up_to_long_max_value(
            )
        }),
    ];
    for (name, rule) in rules {
        expect_passed(run_rule(|_| rule(&faulty(Faults::default()))), name);
    }
}

#[test]
fn ignoring_demand_breaks_rule_1_1() {
    let faults = Faults {
        ignore_demand: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| {
            faulty(faults)
                .required_spec101_subscription_request_must_result_in_the_correct_number_of_produced_elements()
        }),
        "rule 1.1",
    );
}

#[test]
fn ignoring_request_zero_breaks_rule_3_9() {
    let faults = Faults {
        ignore_request_zero: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| faulty(faults).required_spec309_request_zero_must_signal_error()),
        "rule 3.9",
    );
}

#[test]
fn a_wrong_error_kind_breaks_rule_3_9() {
    let outcome = run_rule(|env| {
        PublisherVerification::new(env, |_| source::error::<u64>(Error::msg("not RequestZero")))
            .required_spec309_request_zero_must_signal_error()
    });
    expect_failed(outcome, "rule 3.9 error kind");
}

#[test]
fn ignoring_cancel_breaks_rule_3_6() {
    let faults = Faults {
        ignore_cancel: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| {
            faulty(faults).required_spec306_after_subscription_is_cancelled_request_must_be_nops()
        }),
        "rule 3.6",
    );
}

#[test]
fn keeping_the_subscriber_breaks_rule_3_13() {
    let faults = Faults {
        leak_subscriber: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| {
            faulty(faults)
                .required_spec313_cancel_must_make_the_publisher_eventually_drop_all_references_to_the_subscriber()
        }),
        "rule 3.13",
    );
}

#[test]
fn completing_twice_breaks_rule_1_7() {
    let faults = Faults {
        complete_twice: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| {
            faulty(faults)
                .required_spec102_may_signal_less_than_requested_and_terminate_subscription()
        }),
        "rule 1.7",
    );
}

#[test]
fn skipping_on_subscribe_breaks_rule_1_9() {
    let faults = Faults {
        no_on_subscribe: true,
        ..Faults::default()
    };
    expect_failed(
        run_rule(|_| {
            faulty(faults).required_spec109_must_issue_on_subscribe_for_non_null_subscriber()
        }),
        "rule 1.9",
    );
}

#[test]
fn rules_needing_more_elements_than_the_publisher_has_are_skipped_with_the_reason() {
    let outcome = run_rule(|env| {
        PublisherVerification::new(env, |_| source::empty::<u64>())
            .max_elements(0)
            .required_spec102_may_signal_less_than_requested_and_terminate_subscription()
    });
    assert_eq!(
        outcome,
        Outcome::Skipped(
            "the rule needs 3 elements, the publisher has at most 0 (max_elements)".to_owned()
        )
    );
}

#[test]
fn non_clone_publishers_skip_the_multi_subscriber_rules() {
    let outcome = run_rule(|env| {
        PublisherVerification::new(env, |n| source::from_iter(0..n))
            .optional_spec111_may_support_multi_subscribe()
    });
    assert!(outcome.is_skipped(), "{outcome}");
}

#[test]
fn the_verification_macro_picks_clone_publishers() {
    // FromIter is Clone: the macro's factory makes cloneable test publishers, so 1.11 runs and passes.
    let outcome = run_rule(|env| {
        weir_tck::__tck_build!([publisher |n: u64| source::from_iter(0..n)], env)
            .optional_spec111_may_support_multi_subscribe()
    });
    expect_passed(outcome, "multi-subscribe through the macro");
}

// ----------------------------------------------------------------------------- faulty subscribers

/// What a [`BadSubscriber`] gets wrong.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Ignores a second `on_subscribe` instead of cancelling it (rule 2.5).
    KeepsSecondSubscription,
    /// Requests from inside `on_complete` / `on_error` (rule 2.3).
    RequestsWhenTerminated,
    /// Never requests (rule 2.1).
    NeverRequests,
}

#[derive(Debug)]
struct BadSubscriber {
    fault: Fault,
    subscription: Option<Subscription>,
}

impl BadSubscriber {
    fn new(fault: Fault) -> Self {
        Self {
            fault,
            subscription: None,
        }
    }

    fn terminated(&mut self) {
        if let (Fault::RequestsWhenTerminated, Some(subscription)) =
            (self.fault, &self.subscription)
        {
            subscription.request(1);
        }
    }
}

impl Subscriber<u64> for BadSubscriber {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscription.is_some() {
            if !matches!(self.fault, Fault::KeepsSecondSubscription) {
                subscription.cancel();
            }
            return;
        }
        if !matches!(self.fault, Fault::NeverRequests) {
            subscription.request(8);
        }
        self.subscription = Some(subscription);
    }

    fn on_next(&mut self, _: u64) {}

    fn on_error(&mut self, _: Error) {
        self.terminated();
    }

    fn on_complete(&mut self) {
        self.terminated();
    }
}

fn blackbox(fault: Fault) -> SubscriberBlackboxVerification<u64> {
    SubscriberBlackboxVerification::new(Env::from_env(), move || BadSubscriber::new(fault))
}

#[test]
fn a_correct_subscriber_passes_the_blackbox_rules() {
    let verification = || {
        SubscriberBlackboxVerification::new(Env::from_env(), || {
            Fold::new(0u64, |sum: &mut u64, x: u64| *sum += x).0
        })
    };
    expect_passed(
        run_rule(|_| {
            verification().required_spec201_blackbox_must_signal_demand_via_subscription_request()
        }),
        "2.1",
    );
    expect_passed(
        run_rule(|_| {
            verification()
                .required_spec205_blackbox_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal()
        }),
        "2.5",
    );
}

#[test]
fn not_cancelling_a_second_subscription_breaks_rule_2_5() {
    expect_failed(
        run_rule(|_| {
            blackbox(Fault::KeepsSecondSubscription)
                .required_spec205_blackbox_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal()
        }),
        "blackbox rule 2.5",
    );
    let whitebox =
        SubscriberWhiteboxVerification::new(Env::from_env(), |probe: WhiteboxProbe<u64>| {
            probe.wrap(BadSubscriber::new(Fault::KeepsSecondSubscription))
        });
    expect_failed(
        run_rule(|_| {
            whitebox
                .required_spec205_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal()
        }),
        "whitebox rule 2.5",
    );
}

#[test]
fn requesting_from_on_complete_or_on_error_breaks_rule_2_3() {
    expect_failed(
        run_rule(|_| {
            blackbox(Fault::RequestsWhenTerminated)
                .required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_complete()
        }),
        "rule 2.3, on_complete",
    );
    expect_failed(
        run_rule(|_| {
            blackbox(Fault::RequestsWhenTerminated)
                .required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_error()
        }),
        "rule 2.3, on_error",
    );
}

#[test]
fn never_requesting_breaks_rule_2_1() {
    expect_failed(
        run_rule(|_| {
            blackbox(Fault::NeverRequests)
                .required_spec201_blackbox_must_signal_demand_via_subscription_request()
        }),
        "rule 2.1",
    );
}

// ------------------------------------------------------------------------------ a faulty processor

/// The subscriber end of a boundary that turns `on_error` into `on_complete`.
#[derive(Debug)]
struct SwallowErrors(Inlet<u64>);

impl Subscriber<u64> for SwallowErrors {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.0.on_subscribe(subscription);
    }
    fn on_next(&mut self, item: u64) {
        self.0.on_next(item);
    }
    fn on_error(&mut self, _: Error) {
        self.0.on_complete();
    }
    fn on_complete(&mut self) {
        self.0.on_complete();
    }
    fn on_flush(&mut self) {
        self.0.on_flush();
    }
}

fn swallowing(buffer: usize) -> (SwallowErrors, Outlet<u64>) {
    let (inlet, outlet) =
        boundary::processor::<u64>(BoundaryConfig::new("swallow", buffer).expect("capacity"));
    (SwallowErrors(inlet), outlet)
}

#[test]
fn a_processor_that_swallows_errors_breaks_the_processor_rules() {
    let verification = || IdentityProcessorVerification::new(Env::from_env(), swallowing);
    expect_failed(
        run_rule(|_| {
            verification()
                .must_immediately_pass_on_on_error_events_received_from_its_upstream_to_its_downstream()
        }),
        "pass on on_error",
    );
    expect_failed(
        run_rule(|_| {
            verification()
                .required_spec104_must_call_on_error_on_all_its_subscribers_if_it_encounters_a_non_recoverable_error()
        }),
        "rule 1.4 for processors",
    );
    // Its publishing side fails the failed-publisher rule too: it completes instead.
    expect_failed(
        run_rule(|_| verification().optional_spec104_must_signal_on_error_when_fails()),
        "rule 1.4",
    );
}

// --------------------------------------------------------------------------------- the test doubles

#[test]
fn the_manual_subscriber_flags_signals_after_completion_and_unrequested_items() {
    let env = Env::default();
    let subscriber = ManualSubscriber::<u64>::new(&env);
    let mut recorder = subscriber.subscriber();
    recorder.on_subscribe(Subscription::noop());
    recorder.on_next(1); // nothing was requested
    recorder.on_complete();
    recorder.on_complete();
    let errors = env.async_errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("rule 1.1"), "{errors:?}");
    assert!(errors[1].contains("rule 1.7"), "{errors:?}");
}

#[test]
fn an_expected_error_is_not_an_async_error() {
    let env = Env::default();
    let subscriber = ManualSubscriber::<u64>::new(&env);
    let mut recorder = subscriber.subscriber();
    recorder.on_subscribe(Subscription::noop());
    recorder.on_error(Error::msg("boom"));
    assert!(env.verify_no_async_errors_no_delay().is_err());
    subscriber.expect_error().expect("the error was recorded");
    env.verify_no_async_errors_no_delay()
        .expect("the error was consumed");
}

#[test]
fn the_manual_publisher_records_requests_and_cancel() {
    let env = Env::default();
    let publisher = ManualPublisher::<u64>::new(&env);
    let subscriber = ManualSubscriber::new(&env);
    publisher.clone().subscribe(subscriber.subscriber());
    subscriber.expect_subscribed().expect("subscribed");
    subscriber.request(3);
    assert_eq!(publisher.expect_request().expect("a request"), 3);
    publisher
        .expect_no_request(Duration::from_millis(10))
        .expect("no more requests");
    assert!(publisher.send_next(7));
    assert_eq!(subscriber.next_element().expect("an item"), 7);
    assert_eq!(publisher.pending_demand(), 2);
    // A plain Reactive Streams publisher never says it paused.
    assert_eq!(subscriber.flush_count(), 0);
    subscriber.cancel();
    publisher.expect_cancel().expect("cancelled");
    env.verify_no_async_errors_no_delay().expect("no violation");
}

#[test]
fn the_manual_publisher_with_extensions_flushes_after_each_item() {
    let env = Env::new(weir_tck::Settings {
        upstream: weir_tck::UpstreamSignals::Extensions,
        ..weir_tck::Settings::default()
    });
    let publisher = ManualPublisher::<u64>::new(&env);
    let subscriber = ManualSubscriber::new(&env);
    publisher.clone().subscribe(subscriber.subscriber());
    subscriber.expect_subscribed().expect("subscribed");
    subscriber.request(2);
    assert_eq!(publisher.expect_request().expect("a request"), 2);
    assert!(publisher.send_next(7));
    assert_eq!(subscriber.next_element().expect("an item"), 7);
    assert_eq!(subscriber.flush_count(), 1);
    env.verify_no_async_errors_no_delay().expect("no violation");
}

#[test]
fn the_settings_come_from_the_environment_variables() {
    // Only reads: setting variables would race with the other tests.
    let settings = weir_tck::Settings::from_env();
    if std::env::var_os(weir_tck::TIMEOUT_ENV).is_none() {
        assert_eq!(settings.default_timeout, Duration::from_millis(500));
    }
}
