//! The whitebox side: a [`WhiteboxProbe`] that sees every signal a subscriber under test receives, and a
//! [`SubscriberPuppet`] that makes it request or cancel.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weir_runtime::{Error, Subscriber, Subscription};

use crate::env::Env;
use crate::manual_subscriber::Signal;
use crate::outcome::{Failure, TckResult};
use crate::sync::{lock, wait_until};

/// Makes a subscriber under test act (the Java TCK's `SubscriberPuppet`): whitebox rules call
/// [`SubscriberPuppet::trigger_request`] where the subscriber would decide to request on its own, and
/// [`SubscriberPuppet::signal_cancel`] where it would decide to stop.
///
/// [`Subscription`] is a puppet that requests and cancels directly: the right one for subscribers that
/// have no other way to be told (it is what the Java TCK's `IdentityProcessorVerification` uses). A
/// subscriber with its own control surface (a pull handle, a `close` method) implements this trait on
/// that handle so that the rules exercise its real code path.
pub trait SubscriberPuppet: Send + Sync + 'static {
    /// Makes the subscriber request `n` more items.
    fn trigger_request(&self, n: u64);
    /// Makes the subscriber cancel its subscription.
    fn signal_cancel(&self);
}

impl SubscriberPuppet for Subscription {
    fn trigger_request(&self, n: u64) {
        self.request(n);
    }

    fn signal_cancel(&self) {
        self.cancel();
    }
}

/// Sees what a subscriber under test receives (the Java TCK's `WhiteboxSubscriberProbe`; also its
/// `BlackboxSubscriberProxy` when used through [`WhiteboxProbe::wrap`] in the blackbox verification).
///
/// # Design
///
/// Java's whitebox verification hands the factory a probe that the subscriber calls from its own
/// `onSubscribe` / `onNext` / `onError` / `onComplete`. The Rust factory receives a `WhiteboxProbe<T>`
/// too (cheap to clone, `Send + Sync`) and has two ways to feed it:
///
/// - **wrap** the subscriber: [`WhiteboxProbe::wrap`] returns a [`Probed`] subscriber that registers every
///   signal with the probe before forwarding it, and registers the [`Subscription`] as the puppet
///   ([`WhiteboxProbe::wrap_with_puppet`] registers a puppet of your own instead). No change to the
///   subscriber is needed; the price is that with the default puppet, "the subscriber requests" is
///   emulated through its subscription.
/// - **instrument** the subscriber: call [`WhiteboxProbe::register_on_subscribe`] (with a puppet driving
///   the subscriber's real request / cancel logic), [`WhiteboxProbe::register_on_next`],
///   [`WhiteboxProbe::register_on_error`] and [`WhiteboxProbe::register_on_complete`] from its methods.
///
/// The test side waits on the probe with [`WhiteboxProbe::expect_next`],
/// [`WhiteboxProbe::expect_completion`], [`WhiteboxProbe::expect_error`] and
/// [`WhiteboxProbe::expect_none`], and drives the subscriber through [`WhiteboxProbe::expect_puppet`].
pub struct WhiteboxProbe<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    env: Env,
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    puppet: Option<Arc<dyn SubscriberPuppet>>,
    signals: VecDeque<Signal<T>>,
    completed: bool,
    errored: bool,
}

impl<T> Clone for WhiteboxProbe<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for WhiteboxProbe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("WhiteboxProbe")
            .field("puppet", &state.puppet.is_some())
            .field("queued", &state.signals.len())
            .field("completed", &state.completed)
            .field("errored", &state.errored)
            .finish()
    }
}

impl<T: Send + 'static> WhiteboxProbe<T> {
    /// A probe with nothing registered.
    pub fn new(env: &Env) -> Self {
        Self {
            shared: Arc::new(Shared {
                env: env.clone(),
                state: Mutex::new(State {
                    puppet: None,
                    signals: VecDeque::new(),
                    completed: false,
                    errored: false,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// Registers the puppet: call it when the subscriber has accepted its subscription. Only the first
    /// registration counts (a second `on_subscribe` must be cancelled, not registered).
    pub fn register_on_subscribe(&self, puppet: impl SubscriberPuppet) {
        let mut state = lock(&self.shared.state);
        if state.puppet.is_none() {
            state.puppet = Some(Arc::new(puppet));
            self.shared.changed.notify_all();
        }
    }

    /// Registers an item the subscriber received.
    pub fn register_on_next(&self, element: T) {
        let mut state = lock(&self.shared.state);
        if state.completed || state.errored {
            self.shared.env.flop(
                "rule 1.7 broken: the subscriber under test received on_next after a terminal signal",
            );
        }
        state.signals.push_back(Signal::Next(element));
        self.shared.changed.notify_all();
    }

    /// Registers that the subscriber received `on_complete`.
    pub fn register_on_complete(&self) {
        let mut state = lock(&self.shared.state);
        if state.completed || state.errored {
            self.shared.env.flop(
                "rule 1.7 broken: the subscriber under test received on_complete after a terminal \
                 signal",
            );
        }
        state.completed = true;
        state.signals.push_back(Signal::Complete);
        self.shared.changed.notify_all();
    }

    /// Registers that the subscriber received `on_error(error)`.
    pub fn register_on_error(&self, error: Error) {
        let mut state = lock(&self.shared.state);
        if state.completed || state.errored {
            self.shared.env.flop(
                "rule 1.7 broken: the subscriber under test received on_error after a terminal signal",
            );
        }
        state.errored = true;
        state.signals.push_back(Signal::Error(error));
        self.shared.changed.notify_all();
    }

    /// Waits (default timeout) for the subscriber to register its puppet.
    pub fn expect_puppet(&self) -> TckResult<Arc<dyn SubscriberPuppet>> {
        let timeout = self.shared.env.default_timeout();
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.puppet.clone()
        })
        .ok_or_else(|| {
            Failure::new(format!(
                "the subscriber did not register_on_subscribe within {timeout:?}"
            ))
        })
    }

    fn pop(&self, timeout: Duration) -> Option<Signal<T>> {
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.signals.pop_front()
        })
    }

    /// Wraps `subscriber` so that this probe sees every signal it receives; the subscription is the
    /// puppet.
    pub fn wrap<S: Subscriber<T>>(&self, subscriber: S) -> Probed<T, S>
    where
        T: Clone,
    {
        Probed {
            probe: self.clone(),
            inner: subscriber,
            puppet: None,
        }
    }

    /// Wraps `subscriber` so that this probe sees every signal it receives; `puppet` is registered when
    /// the first `on_subscribe` arrives.
    pub fn wrap_with_puppet<S, P>(&self, subscriber: S, puppet: P) -> Probed<T, S>
    where
        T: Clone,
        S: Subscriber<T>,
        P: SubscriberPuppet,
    {
        Probed {
            probe: self.clone(),
            inner: subscriber,
            puppet: Some(Arc::new(puppet)),
        }
    }

    /// A subscriber that only feeds this probe (its subscription is the puppet, a second subscription is
    /// cancelled): the downstream end the identity-processor verification puts after a processor.
    pub fn subscriber(&self) -> ProbeSubscriber<T> {
        ProbeSubscriber {
            probe: self.clone(),
            subscribed: false,
        }
    }
}

impl<T: fmt::Debug + PartialEq + Send + 'static> WhiteboxProbe<T> {
    /// Expects the subscriber to receive `expected` next (default timeout).
    pub fn expect_next(&self, expected: &T) -> TckResult {
        let received = self.expect_any_next()?;
        if received != *expected {
            return Err(Failure::new(format!(
                "the subscriber received on_next({received:?}) rather than on_next({expected:?})"
            )));
        }
        Ok(())
    }

    /// Expects the subscriber to receive an item next (default timeout) and returns it.
    pub fn expect_any_next(&self) -> TckResult<T> {
        let timeout = self.shared.env.default_timeout();
        match self.pop(timeout) {
            Some(Signal::Next(item)) => Ok(item),
            Some(Signal::Complete) => Err(Failure::new(
                "expected the subscriber to receive on_next but it received on_complete",
            )),
            Some(Signal::Error(error)) => Err(Failure::new(format!(
                "expected the subscriber to receive on_next but it received on_error({error})"
            ))),
            None => Err(Failure::new(format!(
                "the subscriber did not register_on_next within {timeout:?}"
            ))),
        }
    }

    /// Expects the subscriber to receive `on_complete` next (default timeout).
    pub fn expect_completion(&self) -> TckResult {
        let timeout = self.shared.env.default_timeout();
        match self.pop(timeout) {
            Some(Signal::Complete) => Ok(()),
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected the subscriber to receive on_complete but it received on_next({item:?})"
            ))),
            Some(Signal::Error(error)) => Err(Failure::new(format!(
                "expected the subscriber to receive on_complete but it received on_error({error})"
            ))),
            None => Err(Failure::new(format!(
                "the subscriber did not register_on_complete within {timeout:?}"
            ))),
        }
    }

    /// Expects the subscriber to receive `on_error` next (default timeout) and returns the error.
    pub fn expect_error(&self) -> TckResult<Error> {
        let timeout = self.shared.env.default_timeout();
        match self.pop(timeout) {
            Some(Signal::Error(error)) => Ok(error),
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected the subscriber to receive on_error but it received on_next({item:?})"
            ))),
            Some(Signal::Complete) => Err(Failure::new(
                "expected the subscriber to receive on_error but it received on_complete",
            )),
            None => Err(Failure::new(format!(
                "the subscriber did not register_on_error within {timeout:?}"
            ))),
        }
    }

    /// Waits the no-signal timeout, then expects that the subscriber received nothing more.
    pub fn expect_none(&self) -> TckResult {
        let within = self.shared.env.no_signal_timeout();
        std::thread::sleep(within);
        match lock(&self.shared.state).signals.front() {
            None => Ok(()),
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected nothing within {within:?} but the subscriber received on_next({item:?})"
            ))),
            Some(Signal::Complete) => Err(Failure::new(format!(
                "expected nothing within {within:?} but the subscriber received on_complete"
            ))),
            Some(Signal::Error(error)) => Err(Failure::new(format!(
                "expected nothing within {within:?} but the subscriber received on_error({error})"
            ))),
        }
    }
}

/// A subscriber wrapped by [`WhiteboxProbe::wrap`]: registers every signal with the probe, then forwards
/// it to the subscriber under test.
pub struct Probed<T, S> {
    probe: WhiteboxProbe<T>,
    inner: S,
    puppet: Option<Arc<dyn SubscriberPuppet>>,
}

impl<T, S: fmt::Debug> fmt::Debug for Probed<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probed")
            .field("inner", &self.inner)
            .field("custom_puppet", &self.puppet.is_some())
            .finish()
    }
}

/// Forwards to a shared puppet.
struct SharedPuppet(Arc<dyn SubscriberPuppet>);

impl SubscriberPuppet for SharedPuppet {
    fn trigger_request(&self, n: u64) {
        self.0.trigger_request(n);
    }

    fn signal_cancel(&self) {
        self.0.signal_cancel();
    }
}

impl<T: Clone + Send + 'static, S: Subscriber<T>> Subscriber<T> for Probed<T, S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.inner.on_subscribe(subscription.clone());
        match &self.puppet {
            Some(puppet) => self
                .probe
                .register_on_subscribe(SharedPuppet(puppet.clone())),
            None => self.probe.register_on_subscribe(subscription),
        }
    }

    fn on_next(&mut self, item: T) {
        self.probe.register_on_next(item.clone());
        self.inner.on_next(item);
    }

    fn try_on_next(&mut self, item: T) -> bool {
        self.probe.register_on_next(item.clone());
        self.inner.try_on_next(item)
    }

    fn on_error(&mut self, error: Error) {
        self.probe.register_on_error(error.clone());
        self.inner.on_error(error);
    }

    fn on_complete(&mut self) {
        self.probe.register_on_complete();
        self.inner.on_complete();
    }

    fn on_flush(&mut self) {
        self.inner.on_flush();
    }
}

/// A subscriber that only feeds a [`WhiteboxProbe`]; see [`WhiteboxProbe::subscriber`].
pub struct ProbeSubscriber<T> {
    probe: WhiteboxProbe<T>,
    subscribed: bool,
}

impl<T> fmt::Debug for ProbeSubscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeSubscriber")
            .field("subscribed", &self.subscribed)
            .finish()
    }
}

impl<T: Send + 'static> Subscriber<T> for ProbeSubscriber<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscribed {
            subscription.cancel(); // rule 2.5: the probe must pass the subscriber rules itself
            return;
        }
        self.subscribed = true;
        self.probe.register_on_subscribe(subscription);
    }

    fn on_next(&mut self, item: T) {
        self.probe.register_on_next(item);
    }

    fn on_error(&mut self, error: Error) {
        self.probe.register_on_error(error);
    }

    fn on_complete(&mut self) {
        self.probe.register_on_complete();
    }
}
