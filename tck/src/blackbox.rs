//! [`SubscriberBlackboxVerification`]: the subscriber rules (§2 and the subscriber side of §3) that can
//! be checked without instrumenting the subscriber, after the Java TCK's
//! `SubscriberBlackboxVerification`.

use std::cell::Cell;
use std::fmt;

use weir_runtime::{Publisher, Subscriber};

use crate::element::Element;
use crate::env::Env;
use crate::manual_publisher::{ManualPublisher, SubscriptionProbe};
use crate::outcome::{Context, Failure, Outcome, TckResult};
use crate::probe::WhiteboxProbe;
use crate::{check_test_error, test_error};

/// Every rule of [`SubscriberBlackboxVerification`], in the Java TCK's order.
pub const RULES: &[&str] = crate::__blackbox_rules!(__tck_names {});

/// How many items rule 2.1 sends at most, whatever the subscriber requested.
const MAX_SIGNALS: u64 = 512;

/// Verifies a subscriber as a black box: the factory makes the subscriber under test, which the
/// verification subscribes to a [`ManualPublisher`] and drives signal by signal.
///
/// The subscriber must request on its own after `on_subscribe` (Java's `triggerRequest` hook has no
/// equivalent: a subscriber that needs an outside stimulus to request should get it in the factory,
/// e.g. the boundary `Inlet` requests once its `Outlet` is subscribed). Items are made with
/// [`Element::element`].
pub struct SubscriberBlackboxVerification<T> {
    env: Env,
    create: Box<dyn Fn() -> Box<dyn Subscriber<T>>>,
}

impl<T> fmt::Debug for SubscriberBlackboxVerification<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberBlackboxVerification")
            .field("env", &self.env)
            .finish()
    }
}

/// The default setup of a blackbox rule: the subscriber under test, wrapped in a probe (the Java TCK's
/// `BlackboxSubscriberProxy`), subscribed to a manual publisher.
struct BlackboxStage<T> {
    publisher: ManualPublisher<T>,
    probe: WhiteboxProbe<T>,
    next: Cell<u64>,
}

impl<T: Element> BlackboxStage<T> {
    fn signal_next(&self) -> T {
        let item = T::element(self.next.get());
        self.next.set(self.next.get() + 1);
        self.publisher.send_next(item.clone());
        item
    }
}

impl<T: Element> SubscriberBlackboxVerification<T> {
    /// Verifies the subscribers made by `create`.
    pub fn new<S, F>(env: Env, create: F) -> Self
    where
        S: Subscriber<T>,
        F: Fn() -> S + 'static,
    {
        Self {
            env,
            create: Box::new(move || Box::new(create())),
        }
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The Java TCK's `blackboxSubscriberTest`.
    fn test(&self, body: impl FnOnce(&BlackboxStage<T>) -> TckResult) -> Outcome {
        self.env.clear_async_errors();
        let publisher = ManualPublisher::new(&self.env);
        let probe = WhiteboxProbe::new(&self.env);
        publisher.clone().subscribe(probe.wrap((self.create)()));
        let stage = BlackboxStage {
            publisher,
            probe,
            next: Cell::new(0),
        };
        Outcome::from(body(&stage).and_then(|()| self.env.verify_no_async_errors_no_delay()))
    }

    /// The Java TCK's `blackboxSubscriberWithoutSetupTest`.
    fn test_without_setup(&self, body: impl FnOnce() -> TckResult) -> Outcome {
        self.env.clear_async_errors();
        Outcome::from(body().and_then(|()| self.env.verify_no_async_errors_no_delay()))
    }

    /// Rule 2.1: the subscriber signals demand and copes with that many items.
    pub fn required_spec201_blackbox_must_signal_demand_via_subscription_request(&self) -> Outcome {
        self.test(|stage| {
            let requested = stage
                .publisher
                .expect_request()
                .context("the subscriber did not request after on_subscribe")?;
            let mut sent = Vec::new();
            for index in 0..requested.min(MAX_SIGNALS) {
                if index % 10 == 0 && stage.publisher.is_cancelled() {
                    break;
                }
                sent.push(stage.signal_next());
            }
            // Completing after fewer items than requested is legal (rule 1.2).
            stage.publisher.send_complete();
            for item in &sent {
                stage.probe.expect_next(item)?;
            }
            stage.probe.expect_completion()
        })
    }

    /// Rule 2.2 (untested in the TCK).
    pub fn untested_spec202_blackbox_should_asynchronously_dispatch(&self) -> Outcome {
        Outcome::untested("no agreed way to tell whether a subscriber really goes asynchronous")
    }

    /// Rule 2.3: no `request` / `cancel` from inside `on_complete`.
    pub fn required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_complete(
        &self,
    ) -> Outcome {
        self.test_without_setup(|| {
            let publisher = ManualPublisher::new(&self.env);
            publisher.clone().subscribe((self.create)());
            publisher.send_complete();
            Ok(())
        })
    }

    /// Rule 2.3: no `request` / `cancel` from inside `on_error`.
    pub fn required_spec203_blackbox_must_not_call_methods_on_subscription_or_publisher_in_on_error(
        &self,
    ) -> Outcome {
        self.test_without_setup(|| {
            let publisher = ManualPublisher::new(&self.env);
            publisher.clone().subscribe((self.create)());
            publisher.send_error(test_error());
            Ok(())
        })
    }

    /// Rule 2.4 (untested in the TCK).
    pub fn untested_spec204_blackbox_must_consider_the_subscription_as_cancelled_in_after_recieving_on_complete_or_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "what the subscriber \"considers\" cannot be observed, since rule 2.3 forbids calls from \
             on_complete / on_error",
        )
    }

    /// Rule 2.5: a second `on_subscribe` is cancelled, without requests.
    pub fn required_spec205_blackbox_must_call_subscription_cancel_if_it_already_has_an_subscription_and_receives_another_on_subscribe_signal(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            let second = SubscriptionProbe::new(&self.env, "the second subscription");
            stage.publisher.send_on_subscribe(second.subscription());
            second.expect_cancelling().context(
                "expected the second subscription given to the subscriber to be cancelled",
            )?;
            let requests = second.requests();
            if !requests.is_empty() {
                return Err(Failure::new(format!(
                    "the subscriber illegally requested {requests:?} from its second subscription"
                )));
            }
            self.env.verify_no_async_errors_no_delay()?;
            stage.publisher.send_complete();
            Ok(())
        })
    }

    /// Rule 2.6 (untested in the TCK).
    pub fn untested_spec206_blackbox_must_call_subscription_cancel_if_it_is_no_longer_valid(
        &self,
    ) -> Outcome {
        Outcome::untested("needs control over when the subscriber finds its subscription invalid")
    }

    /// Rule 2.7 (untested in the TCK).
    pub fn untested_spec207_blackbox_must_ensure_all_calls_on_its_subscription_take_place_from_the_same_thread_or_take_care_of_synchronization(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "needs control over the subscriber's requests (in Rust, `Subscription` is `Send + Sync` \
             and synchronised by the publisher)",
        )
    }

    /// Rule 2.8 (untested in the blackbox TCK; see the whitebox verification).
    pub fn untested_spec208_blackbox_must_be_prepared_to_receive_on_next_signals_after_having_called_subscription_cancel(
        &self,
    ) -> Outcome {
        Outcome::untested("the subscriber cannot be made to cancel from outside in a blackbox test")
    }

    /// Rule 2.9: `on_complete` after a request, without items.
    pub fn required_spec209_blackbox_must_be_prepared_to_receive_an_on_complete_signal_with_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage
                .publisher
                .expect_request()
                .context("the subscriber did not request after on_subscribe")?;
            stage.publisher.send_complete();
            stage.probe.expect_completion()
        })
    }

    /// Rule 2.9: `on_complete` whether or not the subscriber requested.
    pub fn required_spec209_blackbox_must_be_prepared_to_receive_an_on_complete_signal_without_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.publisher.send_complete();
            stage.probe.expect_completion()
        })
    }

    /// Rule 2.10: `on_error` after a request.
    pub fn required_spec210_blackbox_must_be_prepared_to_receive_an_on_error_signal_with_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage
                .publisher
                .expect_request()
                .context("the subscriber did not request after on_subscribe")?;
            stage.publisher.send_error(test_error());
            check_test_error(&stage.probe.expect_error()?)
        })
    }

    /// Rule 2.10: `on_error` whether or not the subscriber requested.
    pub fn required_spec210_blackbox_must_be_prepared_to_receive_an_on_error_signal_without_preceding_request_call(
        &self,
    ) -> Outcome {
        self.test(|stage| {
            stage.publisher.send_error(test_error());
            check_test_error(&stage.probe.expect_error()?)
        })
    }

    /// Rule 2.11 (untested in the TCK).
    pub fn untested_spec211_blackbox_must_make_sure_that_all_calls_on_its_methods_happen_before_the_processing_of_the_respective_events(
        &self,
    ) -> Outcome {
        Outcome::untested("would require analysing what the subscriber does")
    }

    /// Rule 2.12 (untested in the TCK).
    pub fn untested_spec212_blackbox_must_not_call_on_subscribe_more_than_once_based_on_object_equality(
        &self,
    ) -> Outcome {
        Outcome::untested(
            "rule 2.5 covers the reuse of a subscriber better (and in Rust `subscribe` moves it)",
        )
    }

    /// Rule 2.13, failing signals (untested in the TCK).
    pub fn untested_spec213_blackbox_failing_on_signal_invocation(&self) -> Outcome {
        Outcome::untested(
            "needs the subscriber to fail internally on legal signals; in Rust \"must return \
             normally\" means \"must not panic\"",
        )
    }

    /// Rule 2.13, null subscription: impossible in Rust.
    pub fn required_spec213_blackbox_on_subscribe_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: `on_subscribe` takes a `Subscription` \
             by value",
        )
    }

    /// Rule 2.13, null item: impossible in Rust.
    pub fn required_spec213_blackbox_on_next_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: items are moved into `on_next`, there \
             is no null reference",
        )
    }

    /// Rule 2.13, null error: impossible in Rust.
    pub fn required_spec213_blackbox_on_error_must_throw_null_pointer_exception_when_parameters_are_null(
        &self,
    ) -> Outcome {
        Outcome::not_applicable(
            "rule 2.13 null parameters are impossible in Rust: `on_error` takes an `Error` by value",
        )
    }

    /// Rule 3.1 (untested in the TCK).
    pub fn untested_spec301_blackbox_must_not_be_called_outside_subscriber_context(
        &self,
    ) -> Outcome {
        Outcome::untested("no agreed way to specify a subscriber's context")
    }

    /// Rule 3.8 (untested in the blackbox TCK).
    pub fn untested_spec308_blackbox_request_must_register_given_number_elements_to_be_produced(
        &self,
    ) -> Outcome {
        Outcome::untested("element production is the publisher's responsibility")
    }

    /// Rule 3.10 (untested in the TCK).
    pub fn untested_spec310_blackbox_request_may_synchronously_call_on_next_on_subscriber(
        &self,
    ) -> Outcome {
        Outcome::untested("element production is the publisher's responsibility")
    }

    /// Rule 3.11 (untested in the TCK).
    pub fn untested_spec311_blackbox_request_may_synchronously_call_on_complete_or_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested("covered from the subscriber's side by rules 2.9 and 2.10")
    }

    /// Rule 3.14 (untested in the TCK).
    pub fn untested_spec314_blackbox_cancel_may_cause_the_publisher_to_shutdown_if_no_other_subscription_exists(
        &self,
    ) -> Outcome {
        Outcome::untested("shutting down is the publisher's responsibility")
    }

    /// Rule 3.15 (untested in the TCK).
    pub fn untested_spec315_blackbox_cancel_must_not_throw_exception_and_must_signal_on_error(
        &self,
    ) -> Outcome {
        Outcome::untested("needs more control over the subscriber")
    }

    /// Rule 3.16 (untested in the TCK).
    pub fn untested_spec316_blackbox_request_must_not_throw_exception_and_must_on_error_the_subscriber(
        &self,
    ) -> Outcome {
        Outcome::untested("needs more control over the subscriber")
    }
}
