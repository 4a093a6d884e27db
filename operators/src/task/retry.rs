//! `retry`: resubscribe a failed source, with exponential backoff and full jitter, a bounded number
//! of times.
//!
//! The source is made by a factory, so each attempt is a fresh subscription (a consumer that
//! resumes from a stored offset, a reconnecting client...). Items delivered before a failure are
//! not repeated by the operator: where the new subscription starts is the factory's business.
//! Downstream demand carries over: the new attempt is read through a new bounded lane.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::ledger::Scope;
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::{Outlet, Progress, TaskOperator, input, start};

const LANE_CAPACITY: usize = 256;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Subscriptions in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles per retry (before jitter).
    pub base_delay: Duration,
    /// The cap on the backoff.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// `max_attempts` subscriptions with a backoff from 100 ms doubling up to 10 s.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }

    /// The backoff before retry number `retry` (0-based): uniformly random between zero and
    /// `min(max_delay, base_delay * 2^retry)` ("full jitter", which spreads retrying clients apart).
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
    }
}

/// See [`retry`].
pub struct Retry<F> {
    factory: F,
    policy: RetryPolicy,
}

impl<F> std::fmt::Debug for Retry<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .finish()
    }
}

/// A publisher that subscribes to `factory()` and, when that fails, waits a jittered exponential
/// backoff and subscribes to a new `factory()`, up to `policy.max_attempts` subscriptions; then the
/// last error fails the stream.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use weir_operators::{PublisherExt, RetryPolicy, retry};
/// use weir_runtime::{Error, Publisher, source};
/// let attempts = std::sync::Arc::new(AtomicU32::new(0));
/// let counter = attempts.clone();
/// let policy = RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
/// let flaky = retry(move || {
///     // Fails twice, then works.
///     if counter.fetch_add(1, Ordering::SeqCst) < 2 {
///         source::error::<u32>(Error::msg("connection reset")).boxed()
///     } else {
///         source::from_iter([1, 2, 3]).boxed()
///     }
/// }, policy);
/// assert_eq!(flaky.collect().await.unwrap(), vec![1, 2, 3]);
/// assert_eq!(attempts.load(Ordering::SeqCst), 3);
/// # }
/// ```
pub fn retry<F, P>(factory: F, policy: RetryPolicy) -> Retry<F>
where
    F: FnMut() -> P + Send + 'static,
{
    Retry { factory, policy }
}

impl<T, F, P> Publisher<T> for Retry<F>
where
    T: Send + 'static,
    F: FnMut() -> P + Send + 'static,
    P: Publisher<T>,
{
    fn subscribe<S: Subscriber<T>>(mut self, subscriber: S) {
        if self.policy.max_attempts == 0 {
            let error = Error::msg("max_attempts must be at least 1").in_stage("retry");
            return reject(subscriber, error);
        }
        start("retry", subscriber, || RetryTask {
            current: Some(attempt(&mut self.factory)),
            // Later attempts are made in the task: in the stage's books like the first.
            scope: Scope::current(),
            factory: self.factory,
            policy: self.policy,
            attempts: 1,
            backoff: Box::pin(tokio::time::sleep(Duration::ZERO)),
            random: seed(),
        });
    }
}

fn attempt<T: Send + 'static, P: Publisher<T>>(factory: &mut impl FnMut() -> P) -> Lane<T> {
    input(factory(), "retry", LANE_CAPACITY)
}

/// A per-subscription seed for the jitter (no shared generator, no extra dependency).
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// splitmix64: plenty for spreading retries apart.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct RetryTask<T, F> {
    factory: F,
    policy: RetryPolicy,
    /// The running attempt; `None` while backing off.
    current: Option<Lane<T>>,
    /// The ledger scope the operator was subscribed in (a pipeline stage's), entered again to
    /// make each later attempt.
    scope: Option<Arc<Scope>>,
    attempts: u32,
    backoff: Pin<Box<Sleep>>,
    random: u64,
}

impl<T, F, P> TaskOperator<T> for RetryTask<T, F>
where
    T: Send + 'static,
    F: FnMut() -> P + Send + 'static,
    P: Publisher<T>,
{
    fn advance<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        let Some(current) = self.current.as_mut() else {
            // Backing off.
            if self.backoff.as_mut().poll(cx).is_pending() {
                return Progress::Wait;
            }
            self.attempts += 1;
            tracing::info!(stage = "retry", attempt = self.attempts, "resubscribing");
            let factory = &mut self.factory;
            self.current = Some(match &self.scope {
                Some(scope) => scope.enter(|| attempt(factory)),
                None => attempt(factory),
            });
            return Progress::Again;
        };
        match current.poll_lane(cx) {
            Poll::Pending => Progress::Wait,
            Poll::Ready(LaneEvent::Items) if demand == 0 => Progress::Wait,
            Poll::Ready(LaneEvent::Items) => {
                out.emit_from(current, demand);
                out.flush();
                Progress::Again
            }
            Poll::Ready(LaneEvent::Ended(Ok(()))) => Progress::Done(Ok(())),
            Poll::Ready(LaneEvent::Ended(Err(error))) => {
                if self.attempts >= self.policy.max_attempts {
                    return Progress::Done(Err(error));
                }
                let wait = self
                    .policy
                    .backoff(self.attempts - 1, next_random(&mut self.random));
                tracing::warn!(stage = "retry", attempt = self.attempts, %error, ?wait, "source failed; retrying");
                self.current = None;
                self.backoff.as_mut().reset(Instant::now() + wait);
                Progress::Again
            }
        }
    }
}
