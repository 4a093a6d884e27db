//! The test environment: timeouts and the list of protocol violations ("async errors") that the test
//! doubles observed on other threads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outcome::{Failure, TckResult};
use crate::sync::lock;

/// Environment variable: the timeout, in milliseconds, for signals that are expected to arrive
/// (default 500). Raise it on slow CI machines.
pub const TIMEOUT_ENV: &str = "WEIR_TCK_TIMEOUT_MS";
/// Environment variable: how long, in milliseconds, "no signal arrives" checks wait (default 60).
pub const NO_SIGNAL_TIMEOUT_ENV: &str = "WEIR_TCK_NO_SIGNAL_TIMEOUT_MS";
/// Environment variable: how long, in milliseconds, a publisher may take to drop a cancelled
/// subscriber (rule 3.13; default 300, or the expected-signal timeout if that is longer).
pub const REFERENCE_DROP_TIMEOUT_ENV: &str = "WEIR_TCK_REFERENCE_DROP_TIMEOUT_MS";
/// Environment variable: which signals the manual publisher (the upstream of subscribers and
/// processors under test) sends: `plain` (default: only `on_next`, as any Reactive Streams
/// publisher) or `extensions` (`try_on_next` followed by `on_flush`, as weir's publishers).
pub const UPSTREAM_ENV: &str = "WEIR_TCK_UPSTREAM";

/// How the [`ManualPublisher`](crate::ManualPublisher) signals items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamSignals {
    /// Only the Reactive Streams signals: `on_next` per item, never `on_flush`. What a
    /// publisher written without weir does; subscribers must not depend on anything more.
    #[default]
    Plain,
    /// weir's extensions too: `try_on_next` per item followed by `on_flush` (the publisher paused).
    Extensions,
}

/// Timeouts and runtime size for one verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long to wait for a signal that must arrive (the Java TCK's `defaultTimeoutMillis`).
    pub default_timeout: Duration,
    /// How long to watch for a signal that must not arrive (`defaultNoSignalsTimeoutMillis`).
    pub no_signal_timeout: Duration,
    /// How long a publisher may keep a cancelled subscriber alive (rule 3.13; the Java TCK's
    /// `publisherReferenceGCTimeoutMillis`).
    pub reference_drop_timeout: Duration,
    /// Worker threads of the tokio runtime that [`run`](crate::run) builds for each rule.
    pub worker_threads: usize,
    /// The signals the manual publisher sends (see [`UPSTREAM_ENV`]).
    pub upstream: UpstreamSignals,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_millis(500),
            no_signal_timeout: Duration::from_millis(60),
            reference_drop_timeout: Duration::from_millis(300),
            worker_threads: 2,
            upstream: UpstreamSignals::Plain,
        }
    }
}

impl Settings {
    /// The defaults, overridden by [`TIMEOUT_ENV`], [`NO_SIGNAL_TIMEOUT_ENV`],
    /// [`REFERENCE_DROP_TIMEOUT_ENV`] and [`UPSTREAM_ENV`] where set.
    ///
    /// # Panics
    ///
    /// If a timeout variable is set to something other than a number of milliseconds, or
    /// [`UPSTREAM_ENV`] to something other than `plain` or `extensions`.
    pub fn from_env() -> Self {
        let mut settings = Self::default();
        if let Some(timeout) = read_millis(TIMEOUT_ENV) {
            settings.default_timeout = timeout;
            settings.reference_drop_timeout = settings.reference_drop_timeout.max(timeout);
        }
        if let Some(timeout) = read_millis(NO_SIGNAL_TIMEOUT_ENV) {
            settings.no_signal_timeout = timeout;
        }
        if let Some(timeout) = read_millis(REFERENCE_DROP_TIMEOUT_ENV) {
            settings.reference_drop_timeout = timeout;
        }
        if let Ok(value) = std::env::var(UPSTREAM_ENV) {
            settings.upstream = match value.trim() {
                "plain" => UpstreamSignals::Plain,
                "extensions" => UpstreamSignals::Extensions,
                other => panic!("{UPSTREAM_ENV}={other:?}: expected `plain` or `extensions`"),
            };
        }
        settings
    }
}

fn read_millis(name: &str) -> Option<Duration> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<u64>() {
        Ok(millis) => Some(Duration::from_millis(millis)),
        Err(_) => panic!("{name}={value:?} is not a number of milliseconds"),
    }
}

/// The environment of one verification: its [`Settings`] and the protocol violations observed so far.
///
/// Test doubles run their checks on whatever thread the publisher or subscriber under test signals
/// from; what they find is recorded here with [`Env::flop`] (the Java TCK's name) and turned into a
/// test failure by [`Env::verify_no_async_errors`]. An `on_error` received by a
/// [`ManualSubscriber`](crate::ManualSubscriber) counts as such an error until the test consumes it with
/// [`ManualSubscriber::expect_error`](crate::ManualSubscriber::expect_error). Cheap to clone: clones share the list.
#[derive(Clone)]
pub struct Env {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    errors: Mutex<Vec<AsyncError>>,
    ids: AtomicU64,
}

struct AsyncError {
    message: String,
    /// `Some(id)` for an `on_error` received by the manual subscriber `id`, which
    /// `expect_error` consumes.
    error_signal_of: Option<u64>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("settings", &self.shared.settings)
            .field("async_errors", &self.async_errors())
            .finish()
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new(Settings::default())
    }
}

impl Env {
    /// An environment with `settings` and no errors.
    pub fn new(settings: Settings) -> Self {
        Self {
            shared: Arc::new(Shared {
                settings,
                errors: Mutex::new(Vec::new()),
                ids: AtomicU64::new(0),
            }),
        }
    }

    /// An environment with [`Settings::from_env`].
    pub fn from_env() -> Self {
        Self::new(Settings::from_env())
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// How long to wait for a signal that must arrive.
    pub fn default_timeout(&self) -> Duration {
        self.shared.settings.default_timeout
    }

    /// How long to watch for a signal that must not arrive.
    pub fn no_signal_timeout(&self) -> Duration {
        self.shared.settings.no_signal_timeout
    }

    /// Records a protocol violation observed asynchronously.
    pub fn flop(&self, message: impl Into<String>) {
        lock(&self.shared.errors).push(AsyncError {
            message: message.into(),
            error_signal_of: None,
        });
    }

    /// The violations recorded so far.
    pub fn async_errors(&self) -> Vec<String> {
        lock(&self.shared.errors)
            .iter()
            .map(|error| error.message.clone())
            .collect()
    }

    /// Forgets the violations recorded so far (every rule starts with this).
    pub fn clear_async_errors(&self) {
        lock(&self.shared.errors).clear();
    }

    /// Waits [`Settings::no_signal_timeout`] (late violations show up meanwhile), then fails if any
    /// violation was recorded.
    pub fn verify_no_async_errors(&self) -> TckResult {
        std::thread::sleep(self.no_signal_timeout());
        self.verify_no_async_errors_no_delay()
    }

    /// Fails if any violation was recorded.
    pub fn verify_no_async_errors_no_delay(&self) -> TckResult {
        let errors = lock(&self.shared.errors);
        if errors.is_empty() {
            return Ok(());
        }
        let messages: Vec<&str> = errors.iter().map(|error| error.message.as_str()).collect();
        Err(Failure::new(format!(
            "{} async error(s): {}",
            messages.len(),
            messages.join("; ")
        )))
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.shared.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record_error_signal(&self, id: u64, message: String) {
        lock(&self.shared.errors).push(AsyncError {
            message,
            error_signal_of: Some(id),
        });
    }

    pub(crate) fn take_error_signal(&self, id: u64) {
        let mut errors = lock(&self.shared.errors);
        if let Some(index) = errors
            .iter()
            .position(|error| error.error_signal_of == Some(id))
        {
            errors.remove(index);
        }
    }
}
