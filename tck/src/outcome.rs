//! What a rule concluded ([`Outcome`]) and why a check inside it failed ([`Failure`]).

use std::fmt;

/// Why a check failed: a message naming the rule-relevant fact that did not hold.
///
/// Every blocking expectation of the test doubles returns a [`TckResult`], so rule bodies read like the
/// Java TCK's with `?` instead of exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` (`"context: message"`).
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The result of a check: `Err` carries the [`Failure`].
pub type TckResult<T = ()> = Result<T, Failure>;

/// Adds context to the failure of a [`TckResult`].
pub trait Context<T> {
    /// Prefixes the failure message, if any, with `context`.
    fn context(self, context: impl fmt::Display) -> TckResult<T>;
}

impl<T> Context<T> for TckResult<T> {
    fn context(self, context: impl fmt::Display) -> TckResult<T> {
        self.map_err(|failure| failure.context(context))
    }
}

/// What one rule concluded.
///
/// Rust's test harness has no "skipped" state: [`Outcome::report`] lets a skipped rule pass and prints
/// the reason (visible with `cargo test -- --nocapture`), so that coverage stays visible in
/// `cargo test -- --list` while the reason is one flag away.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The rule holds (as far as the test can tell).
    Passed,
    /// The rule was not verified; the string says why.
    Skipped(String),
    /// The rule is broken; the string says how.
    Failed(String),
}

impl Outcome {
    /// A rule the Java TCK does not verify either (its `untested_` methods).
    pub fn untested(why: &str) -> Self {
        Self::Skipped(format!("untested in the TCK too: {why}"))
    }

    /// A rule that cannot be broken, or cannot be expressed, in Rust.
    pub fn not_applicable(why: &str) -> Self {
        Self::Skipped(format!("not applicable: {why}"))
    }

    /// Whether the rule passed.
    pub fn is_passed(&self) -> bool {
        matches!(self, Self::Passed)
    }

    /// Whether the rule was skipped.
    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Skipped(_))
    }

    /// Whether the rule failed.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// For `#[test]` functions: returns on [`Outcome::Passed`], prints the reason of an
    /// [`Outcome::Skipped`] and returns, panics with the message of an [`Outcome::Failed`].
    #[track_caller]
    pub fn report(self, rule: &str) {
        match self {
            Self::Passed => {}
            Self::Skipped(reason) => println!("{rule}: SKIPPED: {reason}"),
            Self::Failed(message) => panic!("{rule}: FAILED: {message}"),
        }
    }
}

impl From<TckResult> for Outcome {
    fn from(result: TckResult) -> Self {
        match result {
            Ok(()) => Self::Passed,
            Err(failure) => Self::Failed(failure.message),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("passed"),
            Self::Skipped(reason) => write!(f, "skipped: {reason}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}
