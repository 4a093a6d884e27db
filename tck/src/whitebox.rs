//! [`SubscriberWhiteboxVerification`]: the subscriber rules checked through a [`WhiteboxProbe`] that sees
//! every signal the subscriber receives and a [`SubscriberPuppet`] that makes it request and cancel,
//! after the Java TCK's `SubscriberWhiteboxVerification`.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use weir_runtime::{Publisher, Subscriber};

use crate::element::Element;
use crate::env::Env;
use crate::manual_publisher::{ManualPublisher, SubscriptionProbe};
use crate::outcome::{Context, Outcome, TckResult};
use crate::probe::{SubscriberPuppet, WhiteboxProbe};
use crate::{check_test_error, test_error};

/// Every rule of [`SubscriberWhiteboxVerification`], in the Java TCK's order.
pub const RULES: &[&str] = crate::__whitebox_rules!(__tck_names {});

/// Verifies a subscriber through a [`WhiteboxProbe`]: the factory receives the probe and returns the
/// subscriber under test, wired so that the probe sees its signals and holds its puppet — most simply
/// `|probe| probe.wrap(subscriber)` (see [`WhiteboxProbe`] for the design). The verification subscribes
/// it to a [`ManualPublisher`], waits for the puppet, and drives both sides. Items are made with
/// [`Element::element`].
pub struct SubscriberWhiteboxVerification<T> {
    env: Env,
    create: Box<dyn Fn(WhiteboxProbe<T>) -> Box<dyn Subscriber<T>>>,
}

impl<T> fmt::Debug for SubscriberWhiteboxVerification<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberWhiteboxVerification")
            .field("env", &self.env)
            .finish()
    }
}

/// The default setup of a whitebox rule (the Java TCK's `WhiteboxTestStage`).
struct WhiteboxStage<T> {
    publisher: ManualPublisher<T>,
    probe: WhiteboxProbe<T>,
    puppet: Arc<dyn SubscriberPuppet>,
    next: Cell<u64>,
}

impl<T: Element> WhiteboxStage<T> {
    fn signal_next(&self) -> T {
        let item = T::element(self.next.get());
        self.next.set(self.next.get() + 1);
        self.publisher.send_next(item.clone());
        item
    }
}

impl<T: Element> SubscriberWhiteboxVerification<T> {
    /// Verifies the subscribers made by `create`.
    pub fn new<S, F>(env: Env, create: F) -> Self
    where
        S: Subscriber<T>,
        F: Fn(WhiteboxProbe<T>) -> S + 'static,
    {
        Self {
            env,
            create: Box::new(move |probe| Box::new(create(probe))),
        }
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The Java TCK's `subscriberTest`.
    fn test(&self, body: impl FnOnce(&WhiteboxStage<T>) -> TckResult) -> Outcome {
        self.env.clear_async_errors();
        let publisher = ManualPublisher::new(&self.env);
        let probe = WhiteboxProbe::new(&self.env);
        publisher.clone().subscribe((self.create)(probe.clone()));
        let result = probe
            .expect_puppet()
            .context("the subscriber did not register_on_subscribe")
            .and_then(|puppet| {
                body(&WhiteboxStage {
                    publisher,
                    probe,
                    puppet,
                    next: Cell::new(0),
                })
            })
            .and_then(|()| self.env.verify_no_async_errors_no_delay());
        Outcome::from(result)
    }

    /// The Java TCK's `subscriberTestWithoutSetup`.
    fn test_without_setup(&self, body: impl FnOnce() -> TckResult) -> Outcome {
        self.env.clear_async_errors();
        Outcome::from(body().and_then(|()| self.env.verify_no_async_errors_no_delay()))
    }

    /// Requests, items, more requests, cancel: the whole life of a subscription.
    pub fn required_exercise_whitebox_happy_path(&self) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(1);
            stage.puppet.trigger_request(1);
            let received_requests = stage.publisher.expect_request()?;
            let item = stage.signal_next();
            stage.probe.expect_next(&item)?;
            stage.puppet.trigger_request(1);
            if received_requests == 1 {
                stage.publisher.expect_request()?;
            }
            let item = stage.signal_next();
            stage.probe.expect_next(&item)?;
            stage.puppet.signal_cancel();
            stage
                .publisher
                .expect_cancel()
                .context("the subscriber did not cancel upstream when told to")?;
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 2.1: demand is signalled through `request`.
    pub fn required_spec201_must_signal_demand_via_subscription_request(&self) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(1);
            stage.publisher.expect_request()?;
            stage.signal_next();
            Ok(())
        })
    }

    /// Rule 2.2 (untested in the TCK).
    pub fn untested_spec202_should_asynchronously_dispatch(&self) -> Outcome {
        Outcome::untested("no agreed way to tell whether a subscriber really goes asynchronous")
    }

    /// Rule 2.3: no `request` / `cancel` from inside `on_complete`.
    pub fn required_spec203_must_not_call_methods_on_subscription_or_publisher_in_on_complete(
        &self,
    ) -> Outcome {
        self.test_without_setup(|| {
            let publisher = ManualPublisher::new(&self.env);
            let probe = WhiteboxProbe::new(&self.env);
            publisher.clone().subscribe((self.create)(probe));
            publisher.send_complete();
            Ok(())
        })
    }

    /// Rule 2.3: no `request` / `cancel` from inside `on_error`.
    pub fn required_spec203_must_not_call_methods_on_subscription_or_publisher_in_on_error(
        &self,
    ) -> Outcome {
        self.test_without_setup(|| {
            let publisher = ManualPublisher::new(&self.env);
            let probe = WhiteboxProbe::new(&self.env);
            publisher.clone().subscribe((self.create)(probe));
            publisher.send_error(test_error());
            Ok(())
        })
    }

    /// Rule 2.4 (untested in the TCK).
    pub fn untested_spec204_must_consider_the_subscription_as_cancelled_in_after_recieving_on_complete_or_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "what the subscriber \"considers\" cannot be observed, since rule 2.3 forbids calls from \
             on_complete / on_error",
        )
    }

    /// Rule 2.5: a second `on_subscribe` is cancelled.
    pub fn required_spec205_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            let second = SubscriptionProbe::new(&self.env, "the second subscription");
            stage.publisher.send_on_subscribe(second.subscription());
            second.expect_cancelling().context(
                "expected the second subscription given to the subscriber to be cancelled",
            )?;
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 2.6 (untested in the TCK).
    pub fn untested_spec206_must_call_subscription_cancel_if_it_is_no_longer_valid(
        &self,
    ) -> Outcome {
        Outcome::untested("needs control over when the subscriber finds its subscription invalid")
    }

    /// Rule 2.7 (untested in the TCK).
    pub fn untested_spec207_must_ensure_all_calls_on_its_subscription_take_place_from_the_same_thread_or_take_care_of_synchronization(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "the same-thread part is not useful to verify (in Rust, `Subscription` is `Send + Sync` \
             and synchronised by the publisher)",
        )
    }

    /// Rule 2.8: items may still arrive after `cancel`.
    pub fn required_spec208_must_be_prepared_to_receive_on_next_signals_after_having_called_subscription_cancel(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(1);
            stage.puppet.signal_cancel();
            stage.signal_next();
            stage.puppet.trigger_request(1);
            stage.puppet.trigger_request(1);
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 2.9: `on_complete` after a request.
    pub fn required_spec209_must_be_prepared_to_receive_an_on_complete_signal_with_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(1);
            stage.publisher.send_complete();
            stage.probe.expect_completion()?;
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 2.9: `on_complete` without a request.
    pub fn required_spec209_must_be_prepared_to_receive_an_on_complete_signal_without_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.publisher.send_complete();
            stage.probe.expect_completion()?;
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 2.10: `on_error` after requests.
    pub fn required_spec210_must_be_prepared_to_receive_an_on_error_signal_with_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(1);
            stage.puppet.trigger_request(1);
            stage.publisher.send_error(test_error());
            check_test_error(&stage.probe.expect_error()?)
        })
    }

    /// Rule 2.10: `on_error` without a request.
    pub fn required_spec210_must_be_prepared_to_receive_an_on_error_signal_without_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.publisher.send_error(test_error());
            check_test_error(&stage.probe.expect_error()?)
        })
    }

    /// Rule 2.11 (untested in the TCK).
    pub fn untested_spec211_must_make_sure_that_all_calls_on_its_methods_happen_before_the_processing_of_the_respective_events(
        &self,
    ) -> Outcome {
        Outcome::untested("would require analysing what the subscriber does")
    }

    /// Rule 2.12 (untested in the TCK).
    pub fn untested_spec212_must_not_call_on_subscribe_more_than_once_based_on_object_equality_spec_violation(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "cannot be meaningfully tested (and in Rust `subscribe` moves the subscriber)",
        )
    }

    /// Rule 2.13, failing signals (untested in the TCK).
    pub fn untested_spec213_failing_on_signal_invocation(&self) -> Outcome {
        Outcome::untested(
            "needs the subscriber to fail internally on legal signals; in Rust \"must return \
             normally\" means \"must not panic\"",
        )
    }

    /// Rule 2.13, null subscription: impossible in Rust.
    pub fn required_spec213_on_subscribe_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: `on_subscribe` takes a `Subscription` \
             by value",
        )
    }

    /// Rule 2.13, null item: impossible in Rust.
    pub fn required_spec213_on_next_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: items are moved into `on_next`, there \
             is no null reference",
        )
    }

    /// Rule 2.13, null error: impossible in Rust.
    pub fn required_spec213_on_error_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: `on_error` takes an `Error` by value",
        )
    }

    /// Rule 3.1 (untested in the TCK).
    pub fn untested_spec301_must_not_be_called_outside_subscriber_context(&self) -> Outcome {
        Outcome::untested("no agreed way to specify a subscriber's context")
    }

    /// Rule 3.8: `request(n)` lets exactly `n` items through.
    pub fn required_spec308_request_must_register_given_number_elements_to_be_produced(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.puppet.trigger_request(2);
            let first = stage.signal_next();
            stage.probe.expect_next(&first)?;
            let second = stage.signal_next();
            stage.probe.expect_next(&second)?;
            stage.probe.expect_none()?;
            stage.puppet.trigger_request(3);
            self.env.verify_no_async_errors()
        })
    }

    /// Rule 3.10 (untested in the TCK).
    pub fn untested_spec310_request_may_synchronously_call_on_next_on_subscriber(&self) -> Outcome {
        Outcome::untested("element production is the publisher's responsibility")
    }

    /// Rule 3.11 (untested in the TCK).
    pub fn untested_spec311_request_may_synchronously_call_on_complete_or_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested("covered from the subscriber's side by rules 2.9 and 2.10")
    }

    /// Rule 3.14 (untested in the TCK).
    pub fn untested_spec314_cancel_may_cause_the_publisher_to_shutdown_if_no_other_subscription_exists(
        &self,
    ) -> Outcome {
        Outcome::untested("shutting down is the publisher's responsibility")
    }

    /// Rule 3.15 (untested in the TCK).
    pub fn untested_spec315_cancel_must_not_throw_exception_and_must_signal_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested("needs more control over the subscriber")
    }

    /// Rule 3.16 (untested in the TCK).
    pub fn untested_spec316_request_must_not_throw_exception_and_must_on_error_the_subscriber(
        &self,
    ) -> Outcome {
        Outcome::untested("needs more control over the subscriber")
    }
}
