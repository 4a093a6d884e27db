//! `circuit_breaker`: closed / open / half-open around an async stage.
//!
//! Every item is a call to `f`. While the breaker is **closed** calls go through and their outcomes
//! fill a sliding window; when at least `min_calls` outcomes are in the window and the share of
//! failures reaches `failure_rate`, it **opens**: for `open_for`, items are not called at all but
//! handed back at once as [`Rejected::Open`] with a retry hint (fast rejection, counted). Then it is
//! **half-open**: up to `probes` calls go through; if they all succeed it closes (window cleared),
//! one failure opens it again. A failed call is emitted as [`Rejected::Failed`] with its error.
//! The stream itself does not fail on call errors: the caller decides what a rejection means (route
//! it, spill it, count it), and the item is never lost silently.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{Either, FutureExt, ready};
use serde::Serialize;
use tokio::time::Instant;
use weir_runtime::Publisher;

use super::map_async::MapAsync;

/// Settings of a [`circuit_breaker`](crate::PublisherExt::circuit_breaker).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Share of failed calls (0.0-1.0) in the window that opens the breaker.
    pub failure_rate: f64,
    /// How many recent outcomes the window keeps.
    pub window: usize,
    /// The fewest outcomes in the window before the rate counts.
    pub min_calls: usize,
    /// How long the breaker stays open before probing.
    pub open_for: Duration,
    /// Calls allowed while half-open.
    pub probes: u32,
}

impl Default for BreakerConfig {
    /// Opens at 50% failures over the last 20 calls (at least 10), for 5 s, then 3 probes.
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            open_for: Duration::from_secs(5),
            probes: 3,
        }
    }
}

/// An item the breaker did not turn into a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected<T, E> {
    /// The breaker was open: the item was not called; it is handed back.
    Open {
        /// The item.
        item: T,
        /// When the breaker will let a probe through.
        retry_after: Duration,
    },
    /// The call failed.
    Failed(E),
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Items are rejected without a call.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

/// Counters of one breaker.
#[derive(Debug, Default)]
pub(crate) struct BreakerMetrics {
    calls: AtomicU64,
    failures: AtomicU64,
    rejected_open: AtomicU64,
    opened: AtomicU64,
}

/// A copy of a breaker's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The state now.
    pub state: BreakerState,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Items rejected without a call because the breaker was open.
    pub rejected_open: u64,
    /// How many times the breaker opened.
    pub opened: u64,
}

struct Machine {
    config: BreakerConfig,
    state: BreakerState,
    outcomes: VecDeque<bool>,
    opened_at: Instant,
    probes_left: u32,
}

/// The shared breaker: state machine plus counters. Cheap to clone.
#[derive(Clone)]
pub struct Breaker {
    machine: Arc<Mutex<Machine>>,
    metrics: Arc<BreakerMetrics>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// What the breaker says about the next call.
enum Admit {
    /// Call; `probe`: as one of the half-open breaker's probes.
    Call {
        probe: bool,
    },
    Reject(Duration),
}

/// A call in flight: records its outcome when it finishes. A call that ends otherwise still
/// leaves the breaker usable: one whose future panicked counts as failed, and a probe whose
/// future was dropped (cancelled: a client went away, a timeout) gives its place back, so that
/// the next call probes instead (its outcome is unknown; without this a half-open breaker with
/// every probe dropped would reject every call from then on).
struct InFlight {
    breaker: Breaker,
    probe: bool,
    recorded: bool,
}

impl InFlight {
    fn finish(&mut self, ok: bool) {
        self.recorded = true;
        self.breaker.record(ok);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        if std::thread::panicking() {
            self.breaker.record(false);
        } else if self.probe {
            self.breaker.release_probe();
        }
    }
}

impl Breaker {
    /// A closed breaker with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            machine: Arc::new(Mutex::new(Machine {
                config,
                state: BreakerState::Closed,
                outcomes: VecDeque::with_capacity(config.window),
                opened_at: Instant::now(),
                probes_left: 0,
            })),
            metrics: Arc::default(),
        }
    }

    /// The state and counters now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let state = self.lock().state;
        BreakerSnapshot {
            state,
            calls: self.metrics.calls.load(Ordering::Relaxed),
            failures: self.metrics.failures.load(Ordering::Relaxed),
            rejected_open: self.metrics.rejected_open.load(Ordering::Relaxed),
            opened: self.metrics.opened.load(Ordering::Relaxed),
        }
    }

    fn admit(&self) -> Admit {
        let mut m = self.lock();
        if m.state == BreakerState::Open {
            let elapsed = m.opened_at.elapsed();
            if elapsed < m.config.open_for {
                self.metrics.rejected_open.fetch_add(1, Ordering::Relaxed);
                return Admit::Reject(m.config.open_for - elapsed);
            }
            m.state = BreakerState::HalfOpen;
            m.probes_left = m.config.probes.max(1);
        }
        if m.state == BreakerState::HalfOpen {
            if m.probes_left == 0 {
                self.metrics.rejected_open.fetch_add(1, Ordering::Relaxed);
                return Admit::Reject(Duration::ZERO);
            }
            m.probes_left -= 1;
        }
        self.metrics.calls.fetch_add(1, Ordering::Relaxed);
        Admit::Call {
            probe: m.state == BreakerState::HalfOpen,
        }
    }

    /// A probe ended without an outcome: its place goes to the next call.
    fn release_probe(&self) {
        let mut m = self.lock();
        if m.state == BreakerState::HalfOpen && m.probes_left < m.config.probes.max(1) {
            m.probes_left += 1;
        }
    }

    /// The state machine; a poisoned lock is taken as is (it is only ever held by this file's
    /// code, which leaves it consistent, and `record` runs while a call's panic unwinds).
    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, ok: bool) {
        if !ok {
            self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = self.lock();
        match m.state {
            BreakerState::HalfOpen if !ok => self.open(&mut m),
            BreakerState::HalfOpen => {
                if m.probes_left == 0 {
                    m.state = BreakerState::Closed;
                    m.outcomes.clear();
                }
            }
            BreakerState::Closed => {
                if m.outcomes.len() == m.config.window.max(1) {
                    m.outcomes.pop_front();
                }
                m.outcomes.push_back(ok);
                let failed = m.outcomes.iter().filter(|ok| !**ok).count();
                if m.outcomes.len() >= m.config.min_calls.max(1)
                    && failed as f64 >= m.config.failure_rate * m.outcomes.len() as f64
                {
                    self.open(&mut m);
                }
            }
            BreakerState::Open => {} // a call admitted before the breaker opened
        }
    }

    fn open(&self, m: &mut Machine) {
        m.state = BreakerState::Open;
        m.opened_at = Instant::now();
        m.outcomes.clear();
        self.metrics.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            stage = "circuit_breaker",
            "circuit opened: rejecting items fast"
        );
    }

    /// Calls `f(item)` through the breaker: a future of the call's result, or an immediate
    /// rejection while open. A call whose future panics counts as failed; a probe whose future is
    /// dropped before it finishes (its outcome unknown) gives its place to the next call.
    pub fn call<T, U, E, F, Fut>(
        &self,
        f: &mut F,
        item: T,
    ) -> impl Future<Output = Result<U, Rejected<T, E>>> + Send + 'static + use<T, U, E, F, Fut>
    where
        T: Send + 'static,
        U: Send + 'static,
        E: Send + 'static,
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        match self.admit() {
            Admit::Reject(retry_after) => {
                Either::Left(ready(Err(Rejected::Open { item, retry_after })))
            }
            Admit::Call { probe } => {
                let mut in_flight = InFlight {
                    breaker: self.clone(),
                    probe,
                    recorded: false,
                };
                // The call's panic is recorded as it unwinds out of the call, then goes on: who
                // polls the call (`map_async` catches it) may drop the future only afterwards,
                // when `InFlight`'s drop no longer sees a panic.
                let call = AssertUnwindSafe(f(item)).catch_unwind();
                Either::Right(call.map(move |outcome| match outcome {
                    Ok(result) => {
                        in_flight.finish(result.is_ok());
                        result.map_err(Rejected::Failed)
                    }
                    Err(payload) => {
                        in_flight.finish(false);
                        std::panic::resume_unwind(payload)
                    }
                }))
            }
        }
    }
}

/// Runs `f` through `breaker` for every item of `upstream`, `concurrency` calls at a time, in order.
pub(crate) fn through<P, T, U, E, F, Fut>(
    upstream: P,
    concurrency: usize,
    breaker: Breaker,
    mut f: F,
) -> impl Publisher<Result<U, Rejected<T, E>>>
where
    P: Publisher<T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Result<U, E>> + Send + 'static,
{
    MapAsync::new(
        upstream,
        concurrency,
        move |item| breaker.call(&mut f, item),
        true,
    )
}
