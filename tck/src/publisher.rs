//! [`PublisherVerification`]: the publisher rules (Reactive Streams §1 and the publisher side of §3),
//! after the Java TCK's `PublisherVerification`.
//!
//! One file for one concept: the publisher rules of the specification (§1 and §3), one function
//! each, in the order of the Java TCK, so that the list reads like the specification (~940
//! lines).

use std::cell::Cell;
use std::fmt::{self, Debug};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weir_runtime::{ErrorKind, Publisher};

use crate::env::Env;
use crate::manual_subscriber::{Hooks, ManualSubscriber, Signal};
use crate::outcome::{Context, Failure, Outcome, TckResult};
use crate::sync::{lock, wait_until};
use crate::test_publisher::TestPublisher;

/// Every rule of [`PublisherVerification`], in the Java TCK's order.
pub const RULES: &[&str] = crate::__publisher_rules!(__tck_names {});

const OPTIONAL_SKIP: &str =
    "the publisher does not implement this OPTIONAL requirement; reason it failed";

/// Verifies a publisher against the publisher rules.
///
/// The factory makes a publisher of exactly `n` items (for `n` up to
/// [`PublisherVerification::max_elements`]); each rule asks for the length it needs and is skipped,
/// with the reason, when the publisher cannot provide it. Rules run their blocking expectations on the
/// calling thread and need a multi-thread tokio runtime entered there (publishers that spawn tasks
/// need one): [`crate::run`] provides both, and the [`publisher_verification!`](crate::publisher_verification)
/// macro generates one `#[test]` per rule around it.
///
/// Differences from the Java TCK:
/// - `max_elements` is the largest length the factory accepts, `u64::MAX` meaning any; a publisher
///   that can never complete says so with [`PublisherVerification::completes`]`(false)` instead of
///   Java's `Long.MAX_VALUE` convention.
/// - The multi-subscriber rules (1.11) need a `Clone` publisher ([`TestPublisher`]); the macro detects
///   it.
/// - Rule 3.9's `IllegalArgumentException` is `ErrorKind::RequestZero`, so
///   `requestZeroMustSignalIllegalArgumentException` is named
///   `required_spec309_request_zero_must_signal_error` (and the negative-request rules likewise).
pub struct PublisherVerification<T> {
    env: Env,
    create: Box<dyn Fn(u64) -> TestPublisher<T>>,
    failed: Option<Box<dyn Fn() -> TestPublisher<T>>>,
    max_elements: u64,
    completes: bool,
    bounded_depth: u64,
    skip_stochastic: bool,
    stochastic_iterations: u32,
}

impl<T> fmt::Debug for PublisherVerification<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherVerification")
            .field("env", &self.env)
            .field("failed", &self.failed.is_some())
            .field("max_elements", &self.max_elements)
            .field("completes", &self.completes)
            .field("bounded_depth", &self.bounded_depth)
            .field("skip_stochastic", &self.skip_stochastic)
            .field("stochastic_iterations", &self.stochastic_iterations)
            .finish()
    }
}

impl<T: Debug + PartialEq + Send + 'static> PublisherVerification<T> {
    /// Verifies the publishers made by `create` (subscribed to once each: the 1.11 rules are skipped).
    pub fn new<P, F>(env: Env, create: F) -> Self
    where
        P: Publisher<T>,
        F: Fn(u64) -> P + 'static,
    {
        Self::from_test_publishers(env, move |elements| TestPublisher::once(create(elements)))
    }

    /// Verifies the `Clone` publishers made by `create`, including the multi-subscriber rules.
    pub fn new_cloneable<P, F>(env: Env, create: F) -> Self
    where
        P: Publisher<T> + Clone,
        F: Fn(u64) -> P + 'static,
    {
        Self::from_test_publishers(env, move |elements| {
            TestPublisher::cloneable(create(elements))
        })
    }

    /// Verifies the publishers made by `create`, already erased.
    pub fn from_test_publishers<F>(env: Env, create: F) -> Self
    where
        F: Fn(u64) -> TestPublisher<T> + 'static,
    {
        Self {
            env,
            create: Box::new(create),
            failed: None,
            max_elements: u64::MAX,
            completes: true,
            bounded_depth: 1,
            skip_stochastic: false,
            stochastic_iterations: 100,
        }
    }

    /// Also runs the rules about a publisher that fails (1.4, 1.9): `failed` makes a publisher that
    /// signals `on_subscribe` then `on_error` (the Java TCK's `createFailedPublisher`).
    pub fn failed<Q, G>(mut self, failed: G) -> Self
    where
        Q: Publisher<T>,
        G: Fn() -> Q + 'static,
    {
        self.failed = Some(Box::new(move || TestPublisher::once(failed())));
        self
    }

    /// Like [`PublisherVerification::failed`], with the publisher already erased.
    pub(crate) fn failed_test_publisher(
        mut self,
        failed: impl Fn() -> TestPublisher<T> + 'static,
    ) -> Self {
        self.failed = Some(Box::new(failed));
        self
    }

    /// Skips the rules about a failed publisher (the default).
    pub fn without_failed(mut self) -> Self {
        self.failed = None;
        self
    }

    /// The most items the factory can produce (default `u64::MAX`: any length).
    pub fn max_elements(mut self, max_elements: u64) -> Self {
        self.max_elements = max_elements;
        self
    }

    /// Whether the publisher signals `on_complete` after its items (default `true`); `false` skips the
    /// rules that need completion.
    pub fn completes(mut self, completes: bool) -> Self {
        self.completes = completes;
        self
    }

    /// How deep `request` inside `on_next` may recurse (rule 3.3; default 1).
    pub fn bounded_depth(mut self, depth: u64) -> Self {
        self.bounded_depth = depth;
        self
    }

    /// Skips the `stochastic_` rules.
    pub fn skip_stochastic(mut self, skip: bool) -> Self {
        self.skip_stochastic = skip;
        self
    }

    /// How often the `stochastic_` rules repeat (default 100, as in the Java TCK).
    pub fn stochastic_iterations(mut self, iterations: u32) -> Self {
        self.stochastic_iterations = iterations;
        self
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    // ------------------------------------------------------------------ infrastructure

    fn skip_reason(&self, elements: u64, needs_completion: bool) -> Option<String> {
        if elements > self.max_elements {
            Some(format!(
                "the rule needs {elements} elements, the publisher has at most {} (max_elements)",
                self.max_elements
            ))
        } else if needs_completion && !self.completes {
            Some(
                "the rule needs on_complete, which this publisher never signals (completes = false)"
                    .to_owned(),
            )
        } else {
            None
        }
    }

    /// A rule that must hold (the Java TCK's `activePublisherTest`).
    fn active(
        &self,
        elements: u64,
        needs_completion: bool,
        body: impl FnOnce(&mut TestPublisher<T>) -> TckResult,
    ) -> Outcome {
        self.env.clear_async_errors();
        if let Some(reason) = self.skip_reason(elements, needs_completion) {
            return Outcome::Skipped(reason);
        }
        let mut publisher = (self.create)(elements);
        let result = body(&mut publisher).and_then(|()| self.env.verify_no_async_errors_no_delay());
        Outcome::from(result)
    }

    /// A rule that may hold: failing it skips (the Java TCK's `optionalActivePublisherTest`).
    fn optional(
        &self,
        elements: u64,
        needs_completion: bool,
        body: impl FnOnce(&mut TestPublisher<T>) -> TckResult,
    ) -> Outcome {
        match self.active(elements, needs_completion, body) {
            Outcome::Failed(message) => Outcome::Skipped(format!("{OPTIONAL_SKIP}: {message}")),
            outcome => outcome,
        }
    }

    /// A 1.11 rule: needs a publisher that can be subscribed to several times.
    fn multi_subscriber(
        &self,
        elements: u64,
        needs_completion: bool,
        body: impl FnOnce(&mut TestPublisher<T>) -> TckResult,
    ) -> Outcome {
        self.optional(elements, needs_completion, |publisher| {
            if !publisher.is_cloneable() {
                return Err(Failure::new(format!(
                    "{} is not Clone: subscribe consumes it, so it serves a single subscriber",
                    publisher.type_name()
                )));
            }
            body(publisher)
        })
    }

    /// A rule about the failed publisher (the Java TCK's `whenHasErrorPublisherTest`).
    fn with_failed_publisher(
        &self,
        body: impl FnOnce(&mut TestPublisher<T>) -> TckResult,
    ) -> Outcome {
        self.env.clear_async_errors();
        let Some(failed) = &self.failed else {
            return Outcome::Skipped(
                "no failed publisher was given (`failed = ...`), and the rule needs one".to_owned(),
            );
        };
        let mut publisher = failed();
        Outcome::from(body(&mut publisher))
    }

    fn manual(&self, publisher: &mut TestPublisher<T>) -> TckResult<ManualSubscriber<T>> {
        self.env.new_manual_subscriber(publisher.instance()?)
    }

    // ------------------------------------------------------------------ setup validation

    /// `maxElementsFromPublisher` must not be negative: always true of a `u64`.
    pub fn required_validate_max_elements_from_publisher(&self) -> Outcome {
        Outcome::Passed
    }

    /// `boundedDepthOfOnNextAndRequestRecursion` must be at least 1.
    pub fn required_validate_bounded_depth_of_on_next_and_request_recursion(&self) -> Outcome {
        if self.bounded_depth >= 1 {
            Outcome::Passed
        } else {
            Outcome::Failed("bounded_depth must be at least 1".to_owned())
        }
    }

    /// A publisher of 1 element emits it in response to `request(1)`, then completes.
    pub fn required_create_publisher1_must_produce_a_stream_of_exactly1_element(&self) -> Outcome {
        self.active(1, true, |publisher| {
            let sub = self.manual(publisher)?;
            if sub.request_next_element_or_end_of_stream()?.is_none() {
                return Err(Failure::new(format!(
                    "{} produced no elements",
                    publisher.type_name()
                )));
            }
            sub.request_end_of_stream()
        })
    }

    /// A publisher of 3 elements emits them one `request(1)` at a time, then completes.
    pub fn required_create_publisher3_must_produce_a_stream_of_exactly3_elements(&self) -> Outcome {
        self.active(3, true, |publisher| {
            let sub = self.manual(publisher)?;
            for produced in 0..3 {
                if sub.request_next_element_or_end_of_stream()?.is_none() {
                    return Err(Failure::new(format!(
                        "{} produced only {produced} element(s)",
                        publisher.type_name()
                    )));
                }
            }
            sub.request_end_of_stream()
        })
    }

    // ------------------------------------------------------------------ §1

    /// Rule 1.1: nothing before the first request, exactly what was requested after.
    pub fn required_spec101_subscription_request_must_result_in_the_correct_number_of_produced_elements(
        &self,
    ) -> Outcome {
        self.active(5, false, |publisher| {
            let sub = self.manual(publisher)?;
            let result = (|| {
                sub.expect_no_signal()
                    .context("produced a signal before the first request")?;
                sub.request(1);
                sub.next_element()
                    .context("produced no element after the first request")?;
                sub.expect_no_signal()
                    .context("produced unrequested items")?;
                sub.request(1);
                sub.request(2);
                sub.expect_n(3)
                    .context("produced less than 3 elements after two more requests")?;
                sub.expect_no_signal().context("produced unrequested items")
            })();
            sub.cancel();
            result
        })
    }

    /// Rule 1.2: a publisher may signal less than requested, then completes.
    pub fn required_spec102_may_signal_less_than_requested_and_terminate_subscription(
        &self,
    ) -> Outcome {
        self.active(3, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(10);
            sub.expect_n(3)?;
            sub.expect_complete()
        })
    }

    /// Rule 1.3: signals are never concurrent (repeated, as it is probabilistic).
    pub fn stochastic_spec103_must_signal_on_methods_sequentially(&self) -> Outcome {
        const ELEMENTS: u64 = 10;
        if self.skip_stochastic {
            return Outcome::Skipped("stochastic rules are skipped (skip_stochastic)".to_owned());
        }
        for iteration in 0..self.stochastic_iterations {
            let outcome = self.active(ELEMENTS, true, |publisher| {
                let sub = ManualSubscriber::new(&self.env);
                let hooks = Hooks::new()
                    .on_subscribe(|sub: &ManualSubscriber<T>| sub.request(1))
                    .on_next(|sub: &ManualSubscriber<T>, received| {
                        // One more than the stream has: some publishers need it to complete.
                        if received <= ELEMENTS {
                            sub.request(1);
                        }
                    });
                publisher
                    .instance()?
                    .subscribe(sub.subscriber_with_hooks(hooks));
                let timeout = self.env.default_timeout() * (ELEMENTS as u32);
                sub.await_terminal(timeout).context(format!(
                    "expected completion after {ELEMENTS} elements (received {})",
                    sub.received_count()
                ))?;
                let signals = sub.take_all();
                if !matches!(signals.last(), Some(Signal::Complete)) {
                    return Err(Failure::new(format!(
                        "the stream did not end with on_complete: {signals:?}"
                    )));
                }
                Ok(())
            });
            match outcome {
                Outcome::Failed(message) => {
                    return Outcome::Failed(format!(
                        "iteration {} of {}: {message}",
                        iteration + 1,
                        self.stochastic_iterations
                    ));
                }
                Outcome::Skipped(reason) => return Outcome::Skipped(reason),
                Outcome::Passed => {}
            }
        }
        Outcome::Passed
    }

    /// Rule 1.4: the failed publisher signals `on_subscribe`, then exactly one `on_error`, without being
    /// asked.
    pub fn optional_spec104_must_signal_on_error_when_fails(&self) -> Outcome {
        self.with_failed_publisher(|publisher| {
            let sub = ManualSubscriber::new(&self.env);
            publisher.instance()?.subscribe(sub.subscriber());
            sub.expect_subscribed()
                .context("should have received on_subscribe")?;
            sub.expect_error().context(format!(
                "the failed publisher {} did not call on_error",
                publisher.type_name()
            ))?;
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 1.5: a finite stream completes after its last element.
    pub fn required_spec105_must_signal_on_complete_when_finite_stream_terminates(
        &self,
    ) -> Outcome {
        self.active(3, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request_next_element()?;
            sub.request_next_element()?;
            sub.request_next_element()?;
            sub.request_end_of_stream()?;
            sub.expect_no_signal()
        })
    }

    /// Rule 1.5: an empty stream completes.
    pub fn optional_spec105_empty_stream_must_terminate_by_signalling_on_complete(
        &self,
    ) -> Outcome {
        self.optional(0, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(1);
            sub.expect_complete()?;
            sub.expect_no_signal()
        })
    }

    /// Rule 1.6 (untested in the TCK).
    pub fn untested_spec106_must_consider_subscription_cancelled_after_on_error_or_on_complete_has_been_called(
        &self,
    ) -> Outcome {
        Outcome::untested("not testable without more control over the publisher")
    }

    /// Rule 1.7: nothing after `on_complete`, even when requested.
    pub fn required_spec107_must_not_emit_further_signals_once_on_complete_has_been_signalled(
        &self,
    ) -> Outcome {
        self.active(1, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(10);
            sub.next_element()?;
            sub.expect_complete()?;
            sub.request(10);
            sub.expect_no_signal()
        })
    }

    /// Rule 1.7 after `on_error` (untested in the TCK).
    pub fn untested_spec107_must_not_emit_further_signals_once_on_error_has_been_signalled(
        &self,
    ) -> Outcome {
        Outcome::untested("not testable without more control over the publisher")
    }

    /// Rule 1.8 (untested in the TCK).
    pub fn untested_spec108_possibly_canceled_subscription_should_not_receive_on_error_or_on_complete_signals(
        &self,
    ) -> Outcome {
        Outcome::untested("no agreement on how to verify its \"eventually\" requirement")
    }

    /// Rule 1.9: `on_subscribe` comes first, and once.
    pub fn required_spec109_must_issue_on_subscribe_for_non_null_subscriber(&self) -> Outcome {
        self.active(0, false, |publisher| {
            let sub = ManualSubscriber::new(&self.env);
            publisher.instance()?.subscribe(sub.subscriber());
            let result = sub
                .expect_subscribed()
                .context("should have received on_subscribe")
                .and_then(|_| self.env.verify_no_async_errors_no_delay());
            if let Some(subscription) = sub.subscription() {
                subscription.cancel();
            }
            result
        })
    }

    /// Rule 1.9, `subscribe` throwing (untested in the TCK).
    pub fn untested_spec109_subscribe_should_not_throw_non_fatal_throwable(&self) -> Outcome {
        Outcome::untested("no common agreement on what is a fatal exception")
    }

    /// Rule 1.9, null subscriber: impossible in Rust.
    pub fn required_spec109_subscribe_throw_npe_on_null_subscriber(&self) -> Outcome {
        Outcome::not_applicable(
            "rule 1.9 null subscriber is impossible in Rust: `subscribe` takes the subscriber by \
             value and there is no null reference",
        )
    }

    /// Rule 1.9: a publisher that refuses a subscriber signals `on_subscribe`, then `on_error`.
    pub fn required_spec109_may_reject_calls_to_subscribe_if_publisher_is_unable_or_unwilling_to_serve_them_rejection_must_trigger_on_error_after_on_subscribe(
        &self,
    ) -> Outcome {
        self.with_failed_publisher(|publisher| {
            let sub = ManualSubscriber::new(&self.env);
            publisher.instance()?.subscribe(sub.subscriber());
            sub.expect_subscribed()
                .context("should have received on_subscribe")?;
            sub.expect_error()
                .context("should have received on_error")?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// Rule 1.10 (untested in the TCK).
    pub fn untested_spec110_reject_a_subscription_request_if_the_same_subscriber_subscribes_twice(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "needs unlimited retention of subscribers; in Rust `subscribe` moves the subscriber, so \
             the same instance cannot be passed twice anyway",
        )
    }

    /// Rule 1.11: two subscribers may subscribe.
    pub fn optional_spec111_may_support_multi_subscribe(&self) -> Outcome {
        self.multi_subscriber(1, false, |publisher| {
            let sub1 = self.manual(publisher)?;
            let result = self.manual(publisher).and_then(|sub2| {
                let result = self.env.verify_no_async_errors();
                sub2.cancel();
                result
            });
            sub1.cancel();
            result
        })
    }

    /// Rule 1.11: each of two subscribers gets `on_next` or `on_complete`.
    pub fn optional_spec111_registered_subscribers_must_receive_on_next_or_on_complete_signals(
        &self,
    ) -> Outcome {
        self.multi_subscriber(1, false, |publisher| {
            let sub1 = self.manual(publisher)?;
            let sub2 = self.manual(publisher)?;
            let result = (|| {
                sub1.request_next_element_or_end_of_stream()?;
                sub2.request_next_element_or_end_of_stream()?;
                self.env.verify_no_async_errors()
            })();
            sub1.cancel();
            sub2.cancel();
            result
        })
    }

    /// Rule 1.11: three subscribers requesting one by one see the same sequence.
    pub fn optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_one_by_one(
        &self,
    ) -> Outcome {
        self.multi_subscriber(5, true, |publisher| {
            let sub1 = self.manual(publisher)?;
            let sub2 = self.manual(publisher)?;
            let sub3 = self.manual(publisher)?;

            sub1.request(1);
            let x1 = sub1.next_element().context("1st subscriber, 1st element")?;
            sub2.request(2);
            let y1 = sub2.expect_n(2).context("2nd subscriber, 2 elements")?;
            sub1.request(1);
            let x2 = sub1.next_element().context("1st subscriber, 2nd element")?;
            sub3.request(3);
            let z1 = sub3.expect_n(3).context("3rd subscriber, 3 elements")?;
            sub3.request(1);
            let z2 = sub3.next_element().context("3rd subscriber, 4th element")?;
            sub3.request(1);
            let z3 = sub3.next_element().context("3rd subscriber, 5th element")?;
            sub3.request_end_of_stream()
                .context("3rd subscriber did not complete")?;
            sub2.request(3);
            let y2 = sub2
                .expect_n(3)
                .context("2nd subscriber, 3 more elements")?;
            sub2.request_end_of_stream()
                .context("2nd subscriber did not complete")?;
            sub1.request(2);
            let x3 = sub1
                .expect_n(2)
                .context("1st subscriber, 2 more elements")?;
            sub1.request(1);
            let x4 = sub1.next_element().context("1st subscriber, 5th element")?;
            sub1.request_end_of_stream()
                .context("1st subscriber did not complete")?;

            let mut first = vec![x1, x2];
            first.extend(x3);
            first.push(x4);
            let mut second = y1;
            second.extend(y2);
            let mut third = z1;
            third.push(z2);
            third.push(z3);
            ensure_same(&first, &second, "1st and 2nd")?;
            ensure_same(&first, &third, "1st and 3rd")
        })
    }

    /// Rule 1.11: three subscribers requesting more than the length upfront see the same sequence.
    pub fn optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_many_upfront(
        &self,
    ) -> Outcome {
        self.multi_subscriber(3, false, |publisher| {
            let sub1 = self.manual(publisher)?;
            let sub2 = self.manual(publisher)?;
            let sub3 = self.manual(publisher)?;
            sub1.request(4);
            sub2.request(4);
            sub3.request(4);
            let received1 = sub1.expect_n(3)?;
            let received2 = sub2.expect_n(3)?;
            let received3 = sub3.expect_n(3)?;
            ensure_same(&received1, &received2, "1st and 2nd")?;
            ensure_same(&received2, &received3, "2nd and 3rd")
        })
    }

    /// Rule 1.11: as above, and all three complete.
    pub fn optional_spec111_multicast_must_produce_the_same_elements_in_the_same_sequence_to_all_of_its_subscribers_when_requesting_many_upfront_and_complete_as_expected(
        &self,
    ) -> Outcome {
        self.multi_subscriber(3, true, |publisher| {
            let sub1 = self.manual(publisher)?;
            let sub2 = self.manual(publisher)?;
            let sub3 = self.manual(publisher)?;
            sub1.request(4);
            sub2.request(4);
            sub3.request(4);
            let received1 = sub1.expect_n(3)?;
            let received2 = sub2.expect_n(3)?;
            let received3 = sub3.expect_n(3)?;
            sub1.expect_complete()?;
            sub2.expect_complete()?;
            sub3.expect_complete()?;
            ensure_same(&received1, &received2, "1st and 2nd")?;
            ensure_same(&received2, &received3, "2nd and 3rd")
        })
    }

    // ------------------------------------------------------------------ §3

    /// Rule 3.2: `request` may be called from `on_subscribe` and `on_next`.
    pub fn required_spec302_must_allow_synchronous_request_calls_from_on_next_and_on_subscribe(
        &self,
    ) -> Outcome {
        self.active(6, false, |publisher| {
            let sub = ManualSubscriber::new(&self.env);
            let hooks = Hooks::new()
                .on_subscribe(|sub: &ManualSubscriber<T>| {
                    sub.request(1);
                    sub.request(1);
                    sub.request(1);
                })
                .on_next(|sub: &ManualSubscriber<T>, _| sub.request(1));
            publisher
                .instance()?
                .subscribe(sub.subscriber_with_hooks(hooks));
            sub.expect_subscribed()?;
            let result = self.env.verify_no_async_errors();
            sub.cancel();
            result
        })
    }

    /// Rule 3.3: `request` inside `on_next` must not recurse beyond
    /// [`PublisherVerification::bounded_depth`].
    pub fn required_spec303_must_not_allow_unbounded_recursion(&self) -> Outcome {
        thread_local! {
            static DEPTH: Cell<u64> = const { Cell::new(0) };
        }
        let bound = self.bounded_depth;
        let signals = bound.saturating_add(1);
        self.active(signals, false, |publisher| {
            let done = Latch::default();
            let too_deep = Arc::new(AtomicU64::new(0));
            let sub = ManualSubscriber::new(&self.env);
            let hooks = {
                let done = done.clone();
                let too_deep = too_deep.clone();
                Hooks::new().on_next(move |sub: &ManualSubscriber<T>, received| {
                    let depth = DEPTH.with(|depth| {
                        depth.set(depth.get() + 1);
                        depth.get()
                    });
                    if depth > bound {
                        too_deep.store(depth, Ordering::Release);
                        done.close();
                    } else if received >= signals {
                        done.close();
                    } else {
                        sub.request(1); // the publisher must break the recursion
                    }
                    DEPTH.with(|depth| depth.set(depth.get() - 1));
                })
            };
            let recorder = sub.subscriber_with_hooks(hooks);
            publisher.instance()?.subscribe(recorder);
            let result = (|| {
                sub.expect_subscribed()?;
                sub.request(1);
                if !done.wait(self.env.default_timeout()) && !sub.is_terminated() {
                    return Err(Failure::new(format!(
                        "could not validate the call stack depth: expected {signals} on_next or \
                         completion within {:?}",
                        self.env.default_timeout()
                    )));
                }
                let depth = too_deep.load(Ordering::Acquire);
                if depth > 0 {
                    return Err(Failure::new(format!(
                        "on_next was called {depth} deep on one thread (request inside on_next \
                         recursed), the allowed depth is {bound}"
                    )));
                }
                self.env.verify_no_async_errors_no_delay()
            })();
            sub.cancel();
            result
        })
    }

    /// Rule 3.4 (untested in the TCK).
    pub fn untested_spec304_request_should_not_perform_heavy_computations(&self) -> Outcome {
        Outcome::untested("no agreed way to detect heavy computation inside request")
    }

    /// Rule 3.5 (untested in the TCK).
    pub fn untested_spec305_cancel_must_not_synchronously_perform_heavy_computation(
        &self,
    ) -> Outcome {
        Outcome::untested("no agreed way to detect heavy computation inside cancel")
    }

    /// Rule 3.6: `request` after `cancel` does nothing.
    pub fn required_spec306_after_subscription_is_cancelled_request_must_be_nops(&self) -> Outcome {
        self.active(3, false, |publisher| {
            let sub = self.manual(publisher)?;
            sub.cancel();
            sub.request(1);
            sub.request(1);
            sub.request(1);
            sub.expect_no_signal()?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// Rule 3.7: `cancel` after `cancel` does nothing.
    pub fn required_spec307_after_subscription_is_cancelled_additional_cancelations_must_be_nops(
        &self,
    ) -> Outcome {
        self.active(1, false, |publisher| {
            let sub = self.manual(publisher)?;
            let subscription = sub.expect_subscribed()?;
            subscription.cancel();
            subscription.cancel();
            subscription.cancel();
            sub.expect_no_signal()?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// Rule 3.9: `request(0)` fails the stream with [`ErrorKind::RequestZero`] through `on_error`.
    pub fn required_spec309_request_zero_must_signal_error(&self) -> Outcome {
        self.active(10, false, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(0);
            let error = sub
                .expect_error()
                .context("request(0) did not fail the stream")?;
            if !matches!(error.kind(), ErrorKind::RequestZero) {
                return Err(Failure::new(format!(
                    "request(0) failed the stream with `{error}` ({:?}) instead of \
                     ErrorKind::RequestZero",
                    error.kind()
                )));
            }
            Ok(())
        })
    }

    /// Rule 3.9, negative request: impossible in Rust.
    pub fn required_spec309_request_negative_number_must_signal_error(&self) -> Outcome {
        Outcome::not_applicable(
            "rule 3.9 negative request cannot be expressed in Rust: `request` takes a u64",
        )
    }

    /// Rule 3.9, negative request message: impossible in Rust.
    pub fn optional_spec309_request_negative_number_may_signal_error_with_specific_message(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 3.9 negative request cannot be expressed in Rust: `request` takes a u64",
        )
    }

    /// Rule 3.12: after `cancel`, the publisher eventually stops, never exceeding the demand.
    pub fn required_spec312_cancel_must_make_the_publisher_to_eventually_stop_signaling(
        &self,
    ) -> Outcome {
        const ROUNDS: u32 = 100;
        self.active(20, false, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(10);
            sub.request(5);
            let total_demand = 15;
            // Expect an element first: an asynchronous publisher may legally handle the cancel before
            // it ever emitted.
            sub.next_element()?;
            sub.cancel();
            let mut on_nexts = 1;
            for _ in 0..ROUNDS {
                std::thread::sleep(self.env.no_signal_timeout());
                let arrived = sub
                    .take_all()
                    .iter()
                    .filter(|signal| matches!(signal, Signal::Next(_)))
                    .count() as u64;
                if arrived == 0 {
                    return Ok(());
                }
                on_nexts += arrived;
                if on_nexts > total_demand {
                    return Err(Failure::new(format!(
                        "the publisher signalled {on_nexts} elements, more than the demand of \
                         {total_demand}"
                    )));
                }
            }
            Err(Failure::new(format!(
                "the publisher kept signalling for {ROUNDS} rounds after cancel"
            )))
        })
    }

    /// Rule 3.13: after `cancel`, the publisher eventually drops the subscriber.
    pub fn required_spec313_cancel_must_make_the_publisher_eventually_drop_all_references_to_the_subscriber(
        &self,
    ) -> Outcome {
        self.active(3, false, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(1);
            sub.next_element()?;
            sub.cancel();
            sub.expect_subscriber_dropped(self.env.settings().reference_drop_timeout)
                .context(format!(
                    "{} did not drop the subscriber after cancel",
                    publisher.type_name()
                ))?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// Rule 3.17: `request(u64::MAX)` (unbounded) delivers everything and completes.
    pub fn required_spec317_must_support_a_pending_element_count_up_to_long_max_value(
        &self,
    ) -> Outcome {
        self.active(3, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(u64::MAX);
            sub.expect_n(3)?;
            sub.expect_complete()?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// Rule 3.17: requests adding up to `u64::MAX` deliver everything and complete.
    pub fn required_spec317_must_support_a_cumulative_pending_element_count_up_to_long_max_value(
        &self,
    ) -> Outcome {
        self.active(3, true, |publisher| {
            let sub = self.manual(publisher)?;
            sub.request(u64::MAX / 2);
            sub.request(u64::MAX / 2);
            sub.request(1);
            let result = (|| {
                sub.expect_n(3)?;
                sub.expect_complete()?;
                self.env.verify_no_async_errors_no_delay()
            })();
            sub.cancel();
            result
        })
    }

    /// Rule 3.17: demand beyond `u64::MAX` saturates; it must not fail the stream.
    pub fn required_spec317_must_not_signal_on_error_when_pending_above_long_max_value(
        &self,
    ) -> Outcome {
        const CALLS: u64 = 10;
        self.active(i32::MAX as u64, false, |publisher| {
            let sub = ManualSubscriber::new(&self.env);
            let hooks = Hooks::new().on_next(|sub: &ManualSubscriber<T>, received| {
                if received <= CALLS {
                    sub.request(u64::MAX - 1);
                } else {
                    sub.cancel();
                }
            });
            publisher
                .instance()?
                .subscribe(sub.subscriber_with_hooks(hooks));
            sub.expect_subscribed()?;
            // Triggers on_next, which triggers up to CALLS times request(u64::MAX - 1): the demand
            // overflows after two of them.
            sub.request(1);
            let result = self.env.verify_no_async_errors();
            sub.cancel();
            drop(sub.take_all());
            result
        })
    }
}

fn ensure_same<T: Debug + PartialEq>(left: &[T], right: &[T], which: &str) -> TckResult {
    if left == right {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "the {which} subscribers received different sequences: {left:?} vs {right:?}"
        )))
    }
}

/// A one-shot latch (the Java TCK's `Latch`).
#[derive(Clone, Default)]
pub(crate) struct Latch {
    shared: Arc<(Mutex<bool>, Condvar)>,
}

impl Latch {
    pub(crate) fn close(&self) {
        *lock(&self.shared.0) = true;
        self.shared.1.notify_all();
    }

    /// Waits up to `timeout`; returns whether the latch closed.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        wait_until(&self.shared.0, &self.shared.1, timeout, |closed| {
            closed.then_some(())
        })
        .is_some()
    }
}
