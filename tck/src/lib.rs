//! # weir-tck: the Reactive Streams TCK for weir
//!
//! A Rust port of the [Reactive Streams TCK](https://github.com/reactive-streams/reactive-streams-jvm/tree/master/tck)
//! (Technology Compatibility Kit): every rule of the Java TCK's `PublisherVerification`,
//! `SubscriberBlackboxVerification`, `SubscriberWhiteboxVerification` and
//! `IdentityProcessorVerification`, as methods of the same names in snake case, run against weir's
//! [`Publisher`](weir_runtime::Publisher) / [`Subscriber`](weir_runtime::Subscriber) protocol.
//!
//! ## Verifying a type: one line
//!
//! Each macro generates a module with one `#[test]` per rule, so `cargo test -- --list` shows every
//! rule for every verified type:
//!
//! ```
//! use weir_runtime::{Error, boundary::{self, BoundaryConfig}, sink::Fold, source};
//! use weir_tck::WhiteboxProbe;
//!
//! // A publisher: a factory from the number of elements to anything implementing Publisher<T>.
//! weir_tck::publisher_verification!(
//!     from_iter,
//!     |n: u64| source::from_iter(0..n),
//!     failed = Some(|| source::error::<u64>(Error::msg("boom"))),
//! );
//! // A publisher of at most one element.
//! weir_tck::publisher_verification!(
//!     once,
//!     |n: u64| if n == 0 { source::empty() } else { source::once(0u64) },
//!     max_elements = 1,
//! );
//! // A subscriber, as a black box or through a probe.
//! weir_tck::subscriber_blackbox_verification!(fold, || Fold::new(0u64, |s, x: u64| *s += x).0);
//! weir_tck::subscriber_whitebox_verification!(fold_whitebox, |probe: WhiteboxProbe<u64>| {
//!     probe.wrap(Fold::new(0u64, |s, x: u64| *s += x).0)
//! });
//! // An identity processor: a factory from the buffer size to (subscriber end, publisher end).
//! weir_tck::identity_processor_verification!(boundary_processor, |buffer: usize| {
//!     boundary::processor::<u64>(BoundaryConfig::new("tck", buffer).unwrap())
//! });
//! # fn main() {}
//! ```
//!
//! A skipped rule passes and prints why (`cargo test -- --nocapture` shows it): Rust's test harness has
//! no "skipped" state, and a generated test per rule keeps the coverage visible.
//!
//! ## How a rule runs
//!
//! [`run`] (or [`run_rule`]) builds a multi-thread tokio runtime (publishers that spawn tasks need one to be current when
//! they are subscribed), enters it on the test thread, and calls the rule, which blocks that thread on
//! its expectations while the code under test signals from wherever it runs. The rule returns an
//! [`Outcome`]: `Passed`, `Skipped(reason)` or `Failed(message)`.
//!
//! The test doubles, all usable on their own:
//! - [`ManualSubscriber`]: a subscriber driven from the test thread (`request`, `cancel`) that
//!   records every signal and checks the publisher's side of the protocol as signals arrive (rules
//!   1.1, 1.3, 1.7, 1.9), with blocking expectations (`expect_next`, `expect_n`, `expect_complete`,
//!   `expect_error`, `expect_none`, ...);
//! - [`ManualPublisher`]: the "helper publisher" whose test sends `on_next` / `on_complete` /
//!   `on_error` to a subscriber under test, recording every `request` and `cancel` it makes
//!   (`expect_request`, `expect_cancel`, `expect_no_request`), and flagging calls made from inside
//!   `on_complete` / `on_error` (rule 2.3); [`SubscriptionProbe`] is its recording subscription;
//! - [`WhiteboxProbe`] and [`SubscriberPuppet`]: see every signal a subscriber receives and make it
//!   request or cancel (the whitebox design is described on [`WhiteboxProbe`]).
//!
//! Violations seen on other threads are collected in the [`Env`] ("async errors", as in the Java TCK)
//! and fail the rule at its end.
//!
//! ## Timeouts
//!
//! [`Settings`]: 500 ms for signals that must arrive, 60 ms for "no signal" checks, 300 ms for a
//! publisher to drop a cancelled subscriber. On slow machines raise them with the environment variables
//! `WEIR_TCK_TIMEOUT_MS`, `WEIR_TCK_NO_SIGNAL_TIMEOUT_MS` and `WEIR_TCK_REFERENCE_DROP_TIMEOUT_MS`.
//!
//! ## Differences from the Java TCK
//!
//! - Rules that guard against `null` cannot be broken in safe Rust (1.9 null subscriber, 2.13 null
//!   parameters), nor can a negative request be expressed (3.9, `request` takes a `u64`): those rules
//!   are generated and report `Skipped("not applicable: ...")`. The `untested_` rules report
//!   `Skipped("untested in the TCK too: ...")`.
//! - Rule 3.9's `IllegalArgumentException` is [`ErrorKind::RequestZero`](weir_runtime::ErrorKind), so
//!   the rules `...MustSignalIllegalArgumentException` are named `..._must_signal_error`.
//! - `max_elements` is the largest length a publisher factory accepts (`u64::MAX`: any); a publisher
//!   that never completes says `completes = false` rather than using Java's `Long.MAX_VALUE`.
//! - `subscribe` consumes a publisher; the multi-subscriber rules (1.11) run on publishers that are
//!   `Clone` and are skipped for others ([`TestPublisher`]).
//! - Weir's processors serve one subscriber: the two processor rules that the Java TCK runs only with
//!   two subscribers run here with one (and with two when `max_supported_subscribers >= 2`).
//! - [`ManualPublisher::send_next`] sends plain `on_next` signals by default, never weir's
//!   extensions: subscribers and processors are verified against any spec-following publisher.
//!   [`UPSTREAM_ENV`]`=extensions` makes it send `try_on_next` + `on_flush` instead, as weir's
//!   publishers do (CI runs the suites both ways).

mod element;
mod env;
mod macros;
mod manual_publisher;
mod manual_subscriber;
mod outcome;
mod probe;
mod rules;
mod sync;
mod test_publisher;

pub mod blackbox;
pub mod processor;
pub mod publisher;
pub mod whitebox;

pub use blackbox::SubscriberBlackboxVerification;
pub use element::Element;
pub use env::{
    Env, NO_SIGNAL_TIMEOUT_ENV, REFERENCE_DROP_TIMEOUT_ENV, Settings, TIMEOUT_ENV, UPSTREAM_ENV,
    UpstreamSignals,
};
pub use manual_publisher::{ManualPublisher, SubscriptionProbe};
pub use manual_subscriber::{Hooks, ManualSubscriber, Recorder, Signal};
pub use outcome::{Context, Failure, Outcome, TckResult};
pub use probe::{ProbeSubscriber, Probed, SubscriberPuppet, WhiteboxProbe};
pub use processor::IdentityProcessorVerification;
pub use publisher::PublisherVerification;
pub use test_publisher::TestPublisher;
pub use whitebox::SubscriberWhiteboxVerification;

use weir_runtime::Error;

/// The message of the error the rules send with `on_error` (the Java TCK's `TestException`).
pub const TEST_ERROR_MESSAGE: &str = "weir-tck test error";

/// The error the rules send with `on_error`.
pub fn test_error() -> Error {
    Error::msg(TEST_ERROR_MESSAGE)
}

/// Checks that `error` is (possibly wrapped with a stage name) the [`test_error`].
pub(crate) fn check_test_error(error: &Error) -> TckResult {
    if error.to_string().contains(TEST_ERROR_MESSAGE) {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "expected the test error `{TEST_ERROR_MESSAGE}` but got `{error}`"
        )))
    }
}

/// Runs one rule the way the generated tests do: with an [`Env::from_env`], inside a fresh multi-thread
/// tokio runtime entered on the calling thread; returns its [`Outcome`].
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn run_rule(verify: impl FnOnce(Env) -> Outcome) -> Outcome {
    let env = Env::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env.settings().worker_threads.max(1))
        .thread_name("weir-tck")
        .enable_all()
        .build()
        .expect("weir-tck: cannot build a tokio runtime");
    let outcome = {
        let _entered = runtime.enter();
        verify(env)
    };
    runtime.shutdown_background();
    outcome
}

/// [`run_rule`], then [`Outcome::report`]: what each generated `#[test]` calls.
///
/// # Panics
///
/// If the rule fails, or the runtime cannot be built.
#[track_caller]
pub fn run(rule: &str, verify: impl FnOnce(Env) -> Outcome) {
    run_rule(verify).report(rule);
}

#[doc(hidden)]
pub mod __private {
    pub use crate::test_publisher::{Autoref, ViaClone, ViaOnce};
}
