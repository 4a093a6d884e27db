//! [`ManualPublisher`]: a publisher the test drives signal by signal, recording every `request` and
//! `cancel` of the subscriber under test ([`SubscriptionProbe`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use weir_runtime::{
    Error, ErrorKind, Publisher, RawSubscription, Subscriber, Subscription, reject,
};

use crate::env::Env;
use crate::outcome::{Failure, TckResult};
use crate::sync::{lock, wait_until};

/// A [`Subscription`] that records what its subscriber asks for, with blocking expectations.
///
/// Flags, as violations in the [`Env`], `request(0)` (demand must be positive) and any `request` /
/// `cancel` made synchronously from inside `on_complete` or `on_error` delivered by a
/// [`ManualPublisher`] (rule 2.3).
#[derive(Clone)]
pub struct SubscriptionProbe {
    shared: Arc<ProbeShared>,
}

struct ProbeShared {
    env: Env,
    name: String,
    state: Mutex<ProbeState>,
    changed: Condvar,
}

#[derive(Default)]
struct ProbeState {
    /// Requests not yet consumed by `expect_request`.
    pending: VecDeque<u64>,
    /// Every request, in order.
    all: Vec<u64>,
    total: u64,
    cancels: u32,
    /// The thread delivering a terminal signal now, and which.
    terminal: Option<(ThreadId, &'static str)>,
}

impl fmt::Debug for SubscriptionProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("SubscriptionProbe")
            .field("name", &self.shared.name)
            .field("requests", &state.all)
            .field("cancels", &state.cancels)
            .finish()
    }
}

impl ProbeShared {
    fn check_not_in_terminal(&self, state: &ProbeState, call: &str) {
        if let Some((thread, signal)) = state.terminal
            && thread == thread::current().id()
        {
            self.env.flop(format!(
                "rule 2.3 broken: Subscription::{call} was called from inside Subscriber::{signal} \
                 ({})",
                self.name
            ));
        }
    }
}

impl RawSubscription for ProbeShared {
    fn request(&self, n: u64) {
        let mut state = lock(&self.state);
        self.check_not_in_terminal(&state, &format!("request({n})"));
        if n == 0 {
            self.env.flop(format!(
                "the subscriber called request(0) on {}: demand must be positive (rule 3.9)",
                self.name
            ));
        }
        state.pending.push_back(n);
        state.all.push(n);
        state.total = state.total.saturating_add(n);
        self.changed.notify_all();
    }

    fn cancel(&self) {
        let mut state = lock(&self.state);
        self.check_not_in_terminal(&state, "cancel()");
        state.cancels += 1;
        self.changed.notify_all();
    }
}

impl SubscriptionProbe {
    /// A probe named `name` (used in messages).
    pub fn new(env: &Env, name: impl Into<String>) -> Self {
        Self {
            shared: Arc::new(ProbeShared {
                env: env.clone(),
                name: name.into(),
                state: Mutex::new(ProbeState::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// The subscription to hand to a subscriber: it records into this probe.
    pub fn subscription(&self) -> Subscription {
        Subscription::new(self.shared.clone())
    }

    /// Expects a `request(n)` within the default timeout and returns `n`.
    pub fn expect_request(&self) -> TckResult<u64> {
        self.expect_request_within(self.shared.env.default_timeout())
    }

    /// Expects a `request(n)` within `timeout` and returns `n`.
    pub fn expect_request_within(&self, timeout: Duration) -> TckResult<u64> {
        let requested = wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.pending.pop_front()
        })
        .ok_or_else(|| {
            Failure::new(format!(
                "no request on {} within {timeout:?}",
                self.shared.name
            ))
        })?;
        if requested == 0 {
            return Err(Failure::new(format!(
                "requests must be positive but {} received request(0)",
                self.shared.name
            )));
        }
        Ok(requested)
    }

    /// Expects exactly `request(expected)` next.
    pub fn expect_exact_request(&self, expected: u64) -> TckResult {
        let requested = self.expect_request()?;
        if requested != expected {
            return Err(Failure::new(format!(
                "{} received request({requested}) but expected request({expected})",
                self.shared.name
            )));
        }
        Ok(())
    }

    /// Waits `within`, then expects that no request arrived (and was not consumed).
    pub fn expect_no_request(&self, within: Duration) -> TckResult {
        std::thread::sleep(within);
        match lock(&self.shared.state).pending.front() {
            None => Ok(()),
            Some(n) => Err(Failure::new(format!(
                "{} received an unexpected request({n})",
                self.shared.name
            ))),
        }
    }

    /// Expects `cancel()` within the default timeout.
    pub fn expect_cancelling(&self) -> TckResult {
        self.expect_cancelling_within(self.shared.env.default_timeout())
    }

    /// Expects `cancel()` within `timeout`.
    pub fn expect_cancelling_within(&self, timeout: Duration) -> TckResult {
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            (state.cancels > 0).then_some(())
        })
        .ok_or_else(|| {
            Failure::new(format!(
                "{} was not cancelled within {timeout:?}",
                self.shared.name
            ))
        })
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        lock(&self.shared.state).cancels > 0
    }

    /// Every request so far, in order (consumed by `expect_request` or not).
    pub fn requests(&self) -> Vec<u64> {
        lock(&self.shared.state).all.clone()
    }

    /// The sum of all requests, saturating.
    pub fn total_requested(&self) -> u64 {
        lock(&self.shared.state).total
    }

    fn set_terminal(&self, terminal: Option<&'static str>) {
        lock(&self.shared.state).terminal = terminal.map(|signal| (thread::current().id(), signal));
    }
}

/// A publisher whose test sends each signal by hand (the Java TCK's `ManualPublisher`, which the
/// subscriber verifications call the "helper publisher" stage).
///
/// Clone it before subscribing: the clone given to `subscribe` stores the subscriber under test, the
/// one the test keeps drives it with [`ManualPublisher::send_next`], [`ManualPublisher::send_complete`]
/// and [`ManualPublisher::send_error`], and expects its requests with
/// [`ManualPublisher::expect_request`]. Serves one subscriber: a second one gets `on_subscribe` and
/// `on_error(AlreadySubscribed)`, and a violation is recorded.
///
/// Signals are delivered on the calling thread, serialised by a lock. By default
/// ([`UpstreamSignals::Plain`](crate::UpstreamSignals)) [`ManualPublisher::send_next`] calls only
/// `on_next`, as a publisher written without weir does, and then pauses without saying so: a
/// subscriber that holds items back until `on_flush` fails the rules. With
/// [`UpstreamSignals::Extensions`](crate::UpstreamSignals) it calls `try_on_next` followed by
/// `on_flush`, as weir's publishers do when they pause.
pub struct ManualPublisher<T> {
    shared: Arc<PublisherShared<T>>,
}

struct PublisherShared<T> {
    env: Env,
    probe: SubscriptionProbe,
    subscriber: Mutex<Option<Box<dyn Subscriber<T>>>>,
    subscribed: AtomicBool,
    /// Items accepted by the subscriber (`try_on_next` returned `true`).
    accepted: AtomicU64,
}

impl<T> Clone for ManualPublisher<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for ManualPublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualPublisher")
            .field(
                "subscribed",
                &self.shared.subscribed.load(Ordering::Relaxed),
            )
            .field("accepted", &self.shared.accepted.load(Ordering::Relaxed))
            .field("probe", &self.shared.probe)
            .finish()
    }
}

impl<T: Send + 'static> Publisher<T> for ManualPublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let mut slot = lock(&self.shared.subscriber);
        if self.shared.subscribed.swap(true, Ordering::AcqRel) {
            drop(slot);
            self.shared
                .env
                .flop("the manual publisher supports only one subscriber");
            reject(subscriber, Error::new(ErrorKind::AlreadySubscribed));
            return;
        }
        let mut subscriber: Box<dyn Subscriber<T>> = Box::new(subscriber);
        subscriber.on_subscribe(self.shared.probe.subscription());
        *slot = Some(subscriber);
    }
}

impl<T: Send + 'static> ManualPublisher<T> {
    /// A publisher without subscriber yet.
    pub fn new(env: &Env) -> Self {
        Self {
            shared: Arc::new(PublisherShared {
                env: env.clone(),
                probe: SubscriptionProbe::new(env, "the manual publisher's subscription"),
                subscriber: Mutex::new(None),
                subscribed: AtomicBool::new(false),
                accepted: AtomicU64::new(0),
            }),
        }
    }

    /// The probe behind the subscription handed to the subscriber.
    pub fn probe(&self) -> &SubscriptionProbe {
        &self.shared.probe
    }

    /// Whether a subscriber subscribed.
    pub fn has_subscriber(&self) -> bool {
        lock(&self.shared.subscriber).is_some()
    }

    fn with_subscriber(&self, signal: &str, f: impl FnOnce(&mut dyn Subscriber<T>)) {
        let mut slot = lock(&self.shared.subscriber);
        match slot.as_mut() {
            Some(subscriber) => f(subscriber.as_mut()),
            None => self
                .shared
                .env
                .flop(format!("cannot {signal} before a subscriber subscribed")),
        }
    }

    /// Signals `on_next(item)` (or, with [`UpstreamSignals::Extensions`](crate::UpstreamSignals),
    /// `try_on_next(item)` then `on_flush()`); returns whether the item used up a unit of demand
    /// (always for `on_next`, what `try_on_next` returned otherwise).
    pub fn send_next(&self, item: T) -> bool {
        let mut accepted = false;
        let extensions = self.shared.env.settings().upstream == crate::UpstreamSignals::Extensions;
        self.with_subscriber("send on_next", |subscriber| {
            if extensions {
                accepted = subscriber.try_on_next(item);
                subscriber.on_flush();
            } else {
                subscriber.on_next(item);
                accepted = true;
            }
        });
        if accepted {
            self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        }
        accepted
    }

    /// Signals `on_complete()`.
    pub fn send_complete(&self) {
        self.with_subscriber("send on_complete", |subscriber| {
            self.shared.probe.set_terminal(Some("on_complete"));
            subscriber.on_complete();
            self.shared.probe.set_terminal(None);
        });
    }

    /// Signals `on_error(error)`.
    pub fn send_error(&self, error: Error) {
        self.with_subscriber("send on_error", |subscriber| {
            self.shared.probe.set_terminal(Some("on_error"));
            subscriber.on_error(error);
            self.shared.probe.set_terminal(None);
        });
    }

    /// Signals a further `on_subscribe(subscription)` (rule 2.5 tests).
    pub fn send_on_subscribe(&self, subscription: Subscription) {
        self.with_subscriber("send on_subscribe", |subscriber| {
            subscriber.on_subscribe(subscription);
        });
    }

    /// Requested minus accepted items (saturating; `u64::MAX` once the demand is unbounded).
    pub fn pending_demand(&self) -> u64 {
        let total = self.shared.probe.total_requested();
        if total == u64::MAX {
            return u64::MAX;
        }
        total.saturating_sub(self.shared.accepted.load(Ordering::Acquire))
    }

    /// Expects a `request(n)` within the default timeout and returns `n`.
    pub fn expect_request(&self) -> TckResult<u64> {
        self.shared.probe.expect_request()
    }

    /// Expects a `request(n)` within `timeout` and returns `n`.
    pub fn expect_request_within(&self, timeout: Duration) -> TckResult<u64> {
        self.shared.probe.expect_request_within(timeout)
    }

    /// Expects exactly `request(expected)` next.
    pub fn expect_exact_request(&self, expected: u64) -> TckResult {
        self.shared.probe.expect_exact_request(expected)
    }

    /// Waits `within`, then expects that no request arrived.
    pub fn expect_no_request(&self, within: Duration) -> TckResult {
        self.shared.probe.expect_no_request(within)
    }

    /// Expects `cancel()` within the default timeout.
    pub fn expect_cancel(&self) -> TckResult {
        self.shared.probe.expect_cancelling()
    }

    /// Whether the subscriber cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.probe.is_cancelled()
    }
}
