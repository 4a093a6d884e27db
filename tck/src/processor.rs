//! [`IdentityProcessorVerification`]: a processor that passes items through unchanged must pass the
//! publisher rules on its publishing end, the whitebox subscriber rules on its subscribing end, and a
//! few rules of its own (§4), after the Java TCK's `IdentityProcessorVerification`.

use std::fmt;
use std::rc::Rc;

use weir_runtime::{Error, Publisher, Subscriber, source};

use crate::element::Element;
use crate::env::Env;
use crate::manual_publisher::ManualPublisher;
use crate::manual_subscriber::ManualSubscriber;
use crate::outcome::{Context, Failure, Outcome, TckResult};
use crate::publisher::PublisherVerification;
use crate::test_publisher::TestPublisher;
use crate::whitebox::SubscriberWhiteboxVerification;
use crate::{check_test_error, test_error};

/// The rules [`IdentityProcessorVerification`] adds to the publisher rules
/// ([`crate::publisher::RULES`]) and the whitebox subscriber rules ([`crate::whitebox::RULES`]).
pub const PROCESSOR_RULES: &[&str] = crate::__processor_rules!(__tck_names {});

/// Every rule of [`IdentityProcessorVerification`]: the publisher rules, the whitebox subscriber rules,
/// then [`PROCESSOR_RULES`].
pub fn rules() -> Vec<&'static str> {
    crate::publisher::RULES
        .iter()
        .chain(crate::whitebox::RULES)
        .chain(PROCESSOR_RULES)
        .copied()
        .collect()
}

/// The message of the error the default failed publisher's upstream fails with.
const FAILED_UPSTREAM: &str = "weir-tck: the processor's upstream failed";

type ProcessorFactory<T> = Rc<dyn Fn(usize) -> (Box<dyn Subscriber<T>>, TestPublisher<T>)>;

enum Failed<T> {
    /// The processor fed by `source::error`.
    Upstream,
    None,
    Custom(Rc<dyn Fn() -> TestPublisher<T>>),
}

/// Verifies an identity processor: the factory takes a buffer size and returns the processor as its two
/// ends, `(subscriber end, publisher end)`.
///
/// - The publisher rules run against the publisher end of a processor whose subscriber end is fed by
///   `source::from_iter` of `n` elements; the failed publisher is, unless configured otherwise, a
///   processor fed by `source::error`.
/// - The whitebox subscriber rules run against the subscriber end, with a probe subscribed to the
///   publisher end whose subscription is the puppet.
/// - The processor rules drive the subscriber end with a [`ManualPublisher`] and read the publisher end
///   with [`ManualSubscriber`]s.
///
/// The Java TCK runs `required_spec104_must_call_on_error_on_all_its_subscribers...` and
/// `required_must_request_from_upstream...` only for processors that support two subscribers. weir's
/// processors serve one ([`IdentityProcessorVerification::max_supported_subscribers`] defaults to 1),
/// so these rules run with one downstream subscriber, and add the second only when more are supported.
pub struct IdentityProcessorVerification<T> {
    env: Env,
    create: ProcessorFactory<T>,
    failed: Failed<T>,
    buffer_size: usize,
    max_elements: u64,
    max_supported_subscribers: u64,
    bounded_depth: u64,
    skip_stochastic: bool,
    stochastic_iterations: u32,
}

impl<T> fmt::Debug for IdentityProcessorVerification<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = match self.failed {
            Failed::Upstream => "processor fed by source::error",
            Failed::None => "none",
            Failed::Custom(_) => "custom",
        };
        f.debug_struct("IdentityProcessorVerification")
            .field("env", &self.env)
            .field("failed", &failed)
            .field("buffer_size", &self.buffer_size)
            .field("max_elements", &self.max_elements)
            .field("max_supported_subscribers", &self.max_supported_subscribers)
            .field("bounded_depth", &self.bounded_depth)
            .field("skip_stochastic", &self.skip_stochastic)
            .field("stochastic_iterations", &self.stochastic_iterations)
            .finish()
    }
}

/// The setup of the processor rules (the Java TCK's `TestSetup`): a manual publisher upstream of the
/// processor.
struct ProcessorSetup<T> {
    env: Env,
    upstream: ManualPublisher<T>,
    publisher: TestPublisher<T>,
    next: u64,
}

impl<T: Element> ProcessorSetup<T> {
    fn new_subscriber(&mut self) -> TckResult<ManualSubscriber<T>> {
        self.env.new_manual_subscriber(self.publisher.instance()?)
    }

    fn send_next_from_upstream(&mut self) -> T {
        let item = T::element(self.next);
        self.next += 1;
        self.upstream.send_next(item.clone());
        item
    }
}

fn expect_next_element<T: Element>(sub: &ManualSubscriber<T>, expected: &T) -> TckResult {
    let received = sub
        .next_element()
        .context(format!("timeout while awaiting {expected:?}"))?;
    if received != *expected {
        return Err(Failure::new(format!(
            "received on_next({received:?}) downstream but expected on_next({expected:?})"
        )));
    }
    Ok(())
}

impl<T: Element> IdentityProcessorVerification<T> {
    /// Verifies the processors made by `create` (their publisher end is subscribed to once each).
    pub fn new<S, P, F>(env: Env, create: F) -> Self
    where
        S: Subscriber<T>,
        P: Publisher<T>,
        F: Fn(usize) -> (S, P) + 'static,
    {
        Self::from_parts(env, move |buffer_size| {
            let (subscriber, publisher) = create(buffer_size);
            (subscriber, TestPublisher::once(publisher))
        })
    }

    /// Verifies the processors made by `create`, whose publisher end is `Clone`.
    pub fn new_cloneable<S, P, F>(env: Env, create: F) -> Self
    where
        S: Subscriber<T>,
        P: Publisher<T> + Clone,
        F: Fn(usize) -> (S, P) + 'static,
    {
        Self::from_parts(env, move |buffer_size| {
            let (subscriber, publisher) = create(buffer_size);
            (subscriber, TestPublisher::cloneable(publisher))
        })
    }

    /// Verifies the processors made by `create`, whose publisher end is already erased.
    pub fn from_parts<S, F>(env: Env, create: F) -> Self
    where
        S: Subscriber<T>,
        F: Fn(usize) -> (S, TestPublisher<T>) + 'static,
    {
        let create: ProcessorFactory<T> = Rc::new(move |buffer_size| {
            let (subscriber, publisher) = create(buffer_size);
            (Box::new(subscriber) as Box<dyn Subscriber<T>>, publisher)
        });
        Self {
            env,
            create,
            failed: Failed::Upstream,
            buffer_size: 16,
            max_elements: u64::MAX,
            max_supported_subscribers: 1,
            bounded_depth: 1,
            skip_stochastic: false,
            stochastic_iterations: 100,
        }
    }

    /// How many items the processor must be able to buffer (default 16, the Java TCK's
    /// `TEST_BUFFER_SIZE`); passed to the factory.
    pub fn buffer_size(mut self, buffer_size: usize) -> Self {
        self.buffer_size = buffer_size;
        self
    }

    /// The most items the processor can pass through (default `u64::MAX`: any).
    pub fn max_elements(mut self, max_elements: u64) -> Self {
        self.max_elements = max_elements;
        self
    }

    /// How many subscribers the publisher end serves at once (default 1).
    pub fn max_supported_subscribers(mut self, subscribers: u64) -> Self {
        self.max_supported_subscribers = subscribers;
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

    /// How often the `stochastic_` rules repeat (default 100).
    pub fn stochastic_iterations(mut self, iterations: u32) -> Self {
        self.stochastic_iterations = iterations;
        self
    }

    /// Uses the publishers made by `failed` for the failed-publisher rules instead of a processor fed
    /// by `source::error`.
    pub fn failed<Q, G>(mut self, failed: G) -> Self
    where
        Q: Publisher<T>,
        G: Fn() -> Q + 'static,
    {
        self.failed = Failed::Custom(Rc::new(move || TestPublisher::once(failed())));
        self
    }

    /// Skips the failed-publisher rules.
    pub fn without_failed(mut self) -> Self {
        self.failed = Failed::None;
        self
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The publisher verification of the processor's publishing end.
    pub fn publisher_verification(&self) -> PublisherVerification<T> {
        let create = self.create.clone();
        let buffer_size = self.buffer_size;
        let verification =
            PublisherVerification::from_test_publishers(self.env.clone(), move |elements| {
                let (subscriber, publisher) = create(buffer_size);
                source::from_iter((0..elements).map(T::element)).subscribe(subscriber);
                publisher
            })
            .max_elements(self.max_elements)
            .bounded_depth(self.bounded_depth)
            .skip_stochastic(self.skip_stochastic)
            .stochastic_iterations(self.stochastic_iterations);
        match &self.failed {
            Failed::None => verification,
            Failed::Custom(failed) => {
                let failed = failed.clone();
                verification.failed_test_publisher(move || failed())
            }
            Failed::Upstream => {
                let create = self.create.clone();
                verification.failed_test_publisher(move || {
                    let (subscriber, publisher) = create(buffer_size);
                    source::error::<T>(Error::msg(FAILED_UPSTREAM)).subscribe(subscriber);
                    publisher
                })
            }
        }
    }

    /// The whitebox subscriber verification of the processor's subscribing end.
    pub fn whitebox_verification(&self) -> SubscriberWhiteboxVerification<T> {
        let create = self.create.clone();
        let buffer_size = self.buffer_size;
        let env = self.env.clone();
        SubscriberWhiteboxVerification::new(self.env.clone(), move |probe| {
            let (subscriber, mut publisher) = create(buffer_size);
            match publisher.instance() {
                Ok(publisher) => publisher.subscribe(probe.subscriber()),
                Err(failure) => env.flop(failure.to_string()),
            }
            subscriber
        })
    }

    fn processor_test(&self, body: impl FnOnce(&mut ProcessorSetup<T>) -> TckResult) -> Outcome {
        self.env.clear_async_errors();
        let (subscriber, publisher) = (self.create)(self.buffer_size);
        let upstream = ManualPublisher::new(&self.env);
        upstream.clone().subscribe(subscriber);
        let mut setup = ProcessorSetup {
            env: self.env.clone(),
            upstream,
            publisher,
            next: 0,
        };
        Outcome::from(body(&mut setup))
    }

    crate::__publisher_rules!(__tck_delegate { publisher_verification: });

    crate::__whitebox_rules!(__tck_delegate { whitebox_verification: });

    /// Rule 1.4 for processors: an error from upstream reaches every subscriber, including one with
    /// outstanding demand. Runs with one subscriber unless
    /// [`IdentityProcessorVerification::max_supported_subscribers`] allows two.
    pub fn required_spec104_must_call_on_error_on_all_its_subscribers_if_it_encounters_a_non_recoverable_error(
        &self,
    ) -> Outcome {
        self.processor_test(|setup| {
            let sub1 = setup.new_subscriber()?;
            let sub2 = if self.max_supported_subscribers >= 2 {
                Some(setup.new_subscriber()?)
            } else {
                None
            };
            sub1.request(1);
            setup
                .upstream
                .expect_request()
                .context("the processor did not request from upstream")?;
            let item = setup.send_next_from_upstream();
            expect_next_element(&sub1, &item)?;
            sub1.request(1);
            // sub1 has received one element and has one demand pending; sub2 requested nothing.
            setup.upstream.send_error(test_error());
            check_test_error(&sub1.expect_error().context("1st subscriber")?)?;
            if let Some(sub2) = sub2 {
                check_test_error(&sub2.expect_error().context("2nd subscriber")?)?;
            }
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// A processor passes `on_error` from upstream to downstream at once, without waiting for demand.
    pub fn must_immediately_pass_on_on_error_events_received_from_its_upstream_to_its_downstream(
        &self,
    ) -> Outcome {
        self.processor_test(|setup| {
            let sub = setup.new_subscriber()?;
            setup.upstream.send_error(test_error());
            // "immediately", i.e. without a preceding request
            check_test_error(&sub.expect_error()?)?;
            self.env.verify_no_async_errors_no_delay()
        })
    }

    /// A processor requests from upstream for demand that was signalled downstream long ago.
    pub fn required_must_request_from_upstream_for_elements_that_have_been_requested_long_ago(
        &self,
    ) -> Outcome {
        self.processor_test(|setup| {
            let sub1 = setup.new_subscriber()?;
            sub1.request(20);

            let mut total_requests = setup.upstream.expect_request()?;
            let x = setup.send_next_from_upstream();
            expect_next_element(&sub1, &x)?;
            if total_requests == 1 {
                total_requests += setup.upstream.expect_request()?;
            }
            let y = setup.send_next_from_upstream();
            expect_next_element(&sub1, &y)?;
            if total_requests == 2 {
                total_requests += setup.upstream.expect_request()?;
            }

            let sub2 = if self.max_supported_subscribers >= 2 {
                Some(setup.new_subscriber()?)
            } else {
                None
            };
            // sub1 now has 18 pending, sub2 (if any) has 0.
            let z = setup.send_next_from_upstream();
            expect_next_element(&sub1, &z)?;
            if let Some(sub2) = &sub2 {
                sub2.expect_no_signal()
                    .context("the 2nd subscriber has not requested anything yet")?;
                sub2.request(1);
                expect_next_element(sub2, &z)?;
            }
            if total_requests == 3 {
                setup.upstream.expect_request()?;
            }

            setup.upstream.send_complete();
            sub1.expect_complete().context("1st subscriber")?;
            if let Some(sub2) = &sub2 {
                sub2.expect_complete().context("2nd subscriber")?;
            }
            self.env.verify_no_async_errors_no_delay()
        })
    }
}
