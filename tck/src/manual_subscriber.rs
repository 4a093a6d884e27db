//! [`ManualSubscriber`]: a subscriber driven from the test thread, recording every signal it receives.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use weir_runtime::{Error, Publisher, Subscriber, Subscription};

use crate::env::Env;
use crate::outcome::{Context, Failure, TckResult};
use crate::sync::{lock, wait_until};

/// One signal received by a test double.
#[derive(Debug, Clone)]
pub enum Signal<T> {
    /// `on_next(item)`.
    Next(T),
    /// `on_error(error)`.
    Error(Error),
    /// `on_complete()`.
    Complete,
}

/// A subscriber whose demand is driven by the test, with blocking expectations on what it received
/// (the Java TCK's `ManualSubscriber`).
///
/// `ManualSubscriber` is the test-side handle (cheap to clone); [`ManualSubscriber::subscriber`] makes
/// the [`Recorder`] to pass to `Publisher::subscribe`. The recorder stores every signal in a
/// thread-safe log and checks the publisher side of the protocol as signals arrive, recording
/// violations in the [`Env`]:
///
/// - rule 1.1: no more `on_next` than requested through [`ManualSubscriber::request`];
/// - rule 1.3: no signal while another thread is still inside a signal;
/// - rules 1.7 / 1.9: nothing before `on_subscribe`, nothing after `on_complete` / `on_error` (weir's
///   `on_flush` included), a single `on_subscribe` (a second subscription is cancelled, rule 2.5);
/// - an `on_error` counts as an async error until [`ManualSubscriber::expect_error`] consumes it.
///
/// ```
/// use weir_runtime::{Publisher, source};
/// use weir_tck::{Env, ManualSubscriber};
///
/// # fn main() -> weir_tck::TckResult {
/// let env = Env::default();
/// let subscriber = ManualSubscriber::new(&env);
/// source::from_iter(1..=3u64).subscribe(subscriber.subscriber());
/// subscriber.expect_subscribed()?;
/// subscriber.request(2);
/// assert_eq!(subscriber.expect_n(2)?, vec![1, 2]);
/// subscriber.expect_no_signal()?;
/// assert_eq!(subscriber.request_next_element()?, 3);
/// subscriber.request_end_of_stream()?;
/// env.verify_no_async_errors_no_delay()
/// # }
/// ```
pub struct ManualSubscriber<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    env: Env,
    id: u64,
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    subscription: Option<Subscription>,
    subscribed: bool,
    queue: VecDeque<Signal<T>>,
    terminated: bool,
    /// Requested through the handle, saturating (`u64::MAX` is unbounded).
    requested: u64,
    received: u64,
    /// `on_flush` calls (a weir extension: the publisher paused).
    flushes: u64,
    /// The thread inside a signal now, and how deeply (synchronous re-entry).
    signalling: Option<(ThreadId, u32)>,
    /// Live [`Recorder`]s.
    live_ends: usize,
}

impl<T> Clone for ManualSubscriber<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for ManualSubscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("ManualSubscriber")
            .field("id", &self.shared.id)
            .field("subscribed", &state.subscribed)
            .field("requested", &state.requested)
            .field("received", &state.received)
            .field("queued", &state.queue.len())
            .field("terminated", &state.terminated)
            .finish()
    }
}

/// Extra behaviour for a [`Recorder`], run on the publisher's thread after the signal is recorded:
/// for rules that request from inside `on_subscribe` / `on_next` (3.2, 3.3, 3.17).
pub struct Hooks<T> {
    on_subscribe: Option<SubscribeHook<T>>,
    on_next: Option<NextHook<T>>,
}

type SubscribeHook<T> = Box<dyn FnMut(&ManualSubscriber<T>) + Send>;
type NextHook<T> = Box<dyn FnMut(&ManualSubscriber<T>, u64) + Send>;

impl<T> Default for Hooks<T> {
    fn default() -> Self {
        Self {
            on_subscribe: None,
            on_next: None,
        }
    }
}

impl<T> fmt::Debug for Hooks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_subscribe", &self.on_subscribe.is_some())
            .field("on_next", &self.on_next.is_some())
            .finish()
    }
}

impl<T> Hooks<T> {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `hook` after a (first) `on_subscribe` was recorded.
    pub fn on_subscribe(mut self, hook: impl FnMut(&ManualSubscriber<T>) + Send + 'static) -> Self {
        self.on_subscribe = Some(Box::new(hook));
        self
    }

    /// Runs `hook` after each `on_next` was recorded, with the number of items received so far.
    pub fn on_next(mut self, hook: impl FnMut(&ManualSubscriber<T>, u64) + Send + 'static) -> Self {
        self.on_next = Some(Box::new(hook));
        self
    }
}

/// The [`Subscriber`] end of a [`ManualSubscriber`]: records every signal into its log.
pub struct Recorder<T> {
    handle: ManualSubscriber<T>,
    hooks: Hooks<T>,
}

impl<T> fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("subscriber", &self.handle.shared.id)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.handle.shared.state);
        state.live_ends -= 1;
        self.handle.shared.changed.notify_all();
    }
}

impl<T> Shared<T> {
    fn flop(&self, message: String) {
        self.env
            .flop(format!("manual subscriber #{}: {message}", self.id));
    }

    /// Marks the current thread as inside `signal`; flags rule 1.3 if another thread is.
    fn enter(&self, state: &mut State<T>, signal: &str) {
        let me = thread::current().id();
        match &mut state.signalling {
            Some((thread, depth)) if *thread == me => *depth += 1,
            Some((thread, _)) => {
                let other = *thread;
                state.signalling = Some((me, 1));
                self.flop(format!(
                    "rule 1.3 broken: {signal} was signalled on {me:?} while {other:?} was still \
                     inside another signal"
                ));
            }
            None => state.signalling = Some((me, 1)),
        }
    }

    fn leave(&self) {
        let me = thread::current().id();
        let mut state = lock(&self.state);
        if let Some((thread, depth)) = &mut state.signalling
            && *thread == me
        {
            *depth -= 1;
            if *depth == 0 {
                state.signalling = None;
            }
        }
    }

    /// Common checks for on_next / on_error / on_complete.
    fn check_signal(&self, state: &State<T>, signal: &str) {
        if !state.subscribed {
            self.flop(format!(
                "rule 1.9 broken: {signal} was signalled before on_subscribe"
            ));
        }
        if state.terminated {
            self.flop(format!(
                "rule 1.7 broken: {signal} was signalled after on_complete / on_error"
            ));
        }
    }
}

impl<T: Send + 'static> Subscriber<T> for Recorder<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let shared = &self.handle.shared;
        let first = {
            let mut state = lock(&shared.state);
            shared.enter(&mut state, "on_subscribe");
            let first = !state.subscribed;
            if first {
                state.subscribed = true;
                state.subscription = Some(subscription.clone());
            } else {
                shared.flop(
                    "rules 1.9 / 2.12 broken: on_subscribe was signalled a second time".to_owned(),
                );
            }
            shared.changed.notify_all();
            first
        };
        if !first {
            subscription.cancel(); // rule 2.5
        } else if let Some(hook) = &mut self.hooks.on_subscribe {
            hook(&self.handle);
        }
        shared.leave();
    }

    fn on_next(&mut self, item: T) {
        let shared = &self.handle.shared;
        let received = {
            let mut state = lock(&shared.state);
            shared.enter(&mut state, "on_next");
            shared.check_signal(&state, "on_next");
            state.received += 1;
            if state.requested != u64::MAX && state.received > state.requested {
                shared.flop(format!(
                    "rule 1.1 broken: on_next #{} was signalled, but only {} item(s) were requested",
                    state.received, state.requested
                ));
            }
            state.queue.push_back(Signal::Next(item));
            shared.changed.notify_all();
            state.received
        };
        if let Some(hook) = &mut self.hooks.on_next {
            hook(&self.handle, received);
        }
        shared.leave();
    }

    fn on_error(&mut self, error: Error) {
        let shared = &self.handle.shared;
        {
            let mut state = lock(&shared.state);
            shared.enter(&mut state, "on_error");
            shared.check_signal(&state, "on_error");
            state.terminated = true;
            shared.env.record_error_signal(
                shared.id,
                format!(
                    "manual subscriber #{}: unexpected on_error({error})",
                    shared.id
                ),
            );
            state.queue.push_back(Signal::Error(error));
            shared.changed.notify_all();
        }
        shared.leave();
    }

    fn on_flush(&mut self) {
        let shared = &self.handle.shared;
        {
            let mut state = lock(&shared.state);
            shared.enter(&mut state, "on_flush");
            shared.check_signal(&state, "on_flush");
            state.flushes += 1;
        }
        shared.leave();
    }

    fn on_complete(&mut self) {
        let shared = &self.handle.shared;
        {
            let mut state = lock(&shared.state);
            shared.enter(&mut state, "on_complete");
            shared.check_signal(&state, "on_complete");
            state.terminated = true;
            state.queue.push_back(Signal::Complete);
            shared.changed.notify_all();
        }
        shared.leave();
    }
}

impl<T: Send + 'static> ManualSubscriber<T> {
    /// A subscriber that has not subscribed yet.
    pub fn new(env: &Env) -> Self {
        Self {
            shared: Arc::new(Shared {
                env: env.clone(),
                id: env.next_id(),
                state: Mutex::new(State {
                    subscription: None,
                    subscribed: false,
                    queue: VecDeque::new(),
                    terminated: false,
                    requested: 0,
                    received: 0,
                    flushes: 0,
                    signalling: None,
                    live_ends: 0,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// The [`Subscriber`] to pass to `Publisher::subscribe`.
    pub fn subscriber(&self) -> Recorder<T> {
        self.subscriber_with_hooks(Hooks::new())
    }

    /// Like [`ManualSubscriber::subscriber`], running `hooks` after signals are recorded.
    pub fn subscriber_with_hooks(&self, hooks: Hooks<T>) -> Recorder<T> {
        lock(&self.shared.state).live_ends += 1;
        Recorder {
            handle: self.clone(),
            hooks,
        }
    }

    /// The environment violations are recorded in.
    pub fn env(&self) -> &Env {
        &self.shared.env
    }

    /// The subscription, once `on_subscribe` arrived.
    pub fn subscription(&self) -> Option<Subscription> {
        lock(&self.shared.state).subscription.clone()
    }

    /// Waits for `on_subscribe` (default timeout).
    pub fn expect_subscribed(&self) -> TckResult<Subscription> {
        self.expect_subscribed_within(self.shared.env.default_timeout())
    }

    /// Waits up to `timeout` for `on_subscribe`.
    pub fn expect_subscribed_within(&self, timeout: Duration) -> TckResult<Subscription> {
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.subscription.clone()
        })
        .ok_or_else(|| Failure::new(format!("no on_subscribe within {timeout:?}")))
    }

    /// Requests `n` more items. The demand is counted first, so items emitted synchronously inside
    /// `request` are checked against it (rule 1.1). Recorded as a violation if not subscribed yet.
    pub fn request(&self, n: u64) {
        let subscription = {
            let mut state = lock(&self.shared.state);
            state.requested = state.requested.saturating_add(n);
            state.subscription.clone()
        };
        match subscription {
            Some(subscription) => subscription.request(n),
            None => self
                .shared
                .flop(format!("cannot request({n}) before on_subscribe")),
        }
    }

    /// Cancels the subscription (it is kept, so that later `request`s still reach the publisher).
    pub fn cancel(&self) {
        match self.subscription() {
            Some(subscription) => subscription.cancel(),
            None => self
                .shared
                .flop("cannot cancel before on_subscribe".to_owned()),
        }
    }

    /// Items received so far (consumed or not).
    pub fn received_count(&self) -> u64 {
        lock(&self.shared.state).received
    }

    /// `on_flush` calls received so far.
    pub fn flush_count(&self) -> u64 {
        lock(&self.shared.state).flushes
    }

    /// Whether `on_complete` or `on_error` was received.
    pub fn is_terminated(&self) -> bool {
        lock(&self.shared.state).terminated
    }

    /// How many [`Recorder`]s of this subscriber are alive (held by a publisher, typically).
    pub fn live_subscribers(&self) -> usize {
        lock(&self.shared.state).live_ends
    }

    /// Waits up to `within` until every [`Recorder`] of this subscriber was dropped (rule 3.13).
    pub fn expect_subscriber_dropped(&self, within: Duration) -> TckResult {
        wait_until(&self.shared.state, &self.shared.changed, within, |state| {
            (state.live_ends == 0).then_some(())
        })
        .ok_or_else(|| {
            Failure::new(format!(
                "the publisher still holds the subscriber {within:?} after cancel (rule 3.13)"
            ))
        })
    }

    /// Waits up to `timeout` for `on_complete` or `on_error` without consuming anything.
    pub fn await_terminal(&self, timeout: Duration) -> TckResult {
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.terminated.then_some(())
        })
        .ok_or_else(|| Failure::new(format!("no on_complete / on_error within {timeout:?}")))
    }

    fn pop(&self, timeout: Duration) -> Option<Signal<T>> {
        wait_until(&self.shared.state, &self.shared.changed, timeout, |state| {
            state.queue.pop_front()
        })
    }

    /// Takes every signal received and not yet consumed (consuming `on_error` too).
    pub fn take_all(&self) -> Vec<Signal<T>> {
        let signals: Vec<Signal<T>> = lock(&self.shared.state).queue.drain(..).collect();
        for signal in &signals {
            if let Signal::Error(_) = signal {
                self.shared.env.take_error_signal(self.shared.id);
            }
        }
        signals
    }
}

impl<T: fmt::Debug + Send + 'static> ManualSubscriber<T> {
    /// Waits up to `timeout` for the next signal and expects it to be `on_next`.
    pub fn expect_next(&self, timeout: Duration) -> TckResult<T> {
        match self.pop(timeout) {
            Some(Signal::Next(item)) => Ok(item),
            Some(Signal::Complete) => Err(Failure::new(
                "expected on_next but got end-of-stream (on_complete)",
            )),
            Some(Signal::Error(error)) => {
                self.shared.env.take_error_signal(self.shared.id);
                Err(Failure::new(format!(
                    "expected on_next but got on_error({error})"
                )))
            }
            None => Err(Failure::new(format!("no on_next within {timeout:?}"))),
        }
    }

    /// [`ManualSubscriber::expect_next`] with the default timeout (the Java TCK's `nextElement`).
    pub fn next_element(&self) -> TckResult<T> {
        self.expect_next(self.shared.env.default_timeout())
    }

    /// Expects `n` items within the default timeout, in total.
    pub fn expect_n(&self, n: u64) -> TckResult<Vec<T>> {
        let timeout = self.shared.env.default_timeout();
        let deadline = Instant::now() + timeout;
        let mut items = Vec::new();
        for index in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self.expect_next(left).map_err(|failure| {
                failure.context(format!(
                    "expected {n} items within {timeout:?}, got {index} ({items:?})"
                ))
            })?;
            items.push(item);
        }
        Ok(items)
    }

    /// Waits for the next signal: `Some(item)` for `on_next`, `None` for `on_complete`.
    pub fn expect_next_or_complete(&self) -> TckResult<Option<T>> {
        let timeout = self.shared.env.default_timeout();
        match self.pop(timeout) {
            Some(Signal::Next(item)) => Ok(Some(item)),
            Some(Signal::Complete) => Ok(None),
            Some(Signal::Error(error)) => {
                self.shared.env.take_error_signal(self.shared.id);
                Err(Failure::new(format!(
                    "expected on_next or on_complete but got on_error({error})"
                )))
            }
            None => Err(Failure::new(format!(
                "no on_next or on_complete within {timeout:?}"
            ))),
        }
    }

    /// `request(1)`, then [`ManualSubscriber::next_element`].
    pub fn request_next_element(&self) -> TckResult<T> {
        self.request(1);
        self.next_element()
    }

    /// `request(1)`, then [`ManualSubscriber::expect_next_or_complete`].
    pub fn request_next_element_or_end_of_stream(&self) -> TckResult<Option<T>> {
        self.request(1);
        self.expect_next_or_complete()
    }

    /// `request(1)`, then [`ManualSubscriber::expect_complete`].
    pub fn request_end_of_stream(&self) -> TckResult {
        self.request(1);
        self.expect_complete()
    }

    /// Expects `on_complete` as the next signal (default timeout).
    pub fn expect_complete(&self) -> TckResult {
        self.expect_complete_within(self.shared.env.default_timeout())
    }

    /// Expects `on_complete` as the next signal within `timeout`.
    pub fn expect_complete_within(&self, timeout: Duration) -> TckResult {
        match self.pop(timeout) {
            Some(Signal::Complete) => Ok(()),
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected end-of-stream (on_complete) but got on_next({item:?})"
            ))),
            Some(Signal::Error(error)) => {
                self.shared.env.take_error_signal(self.shared.id);
                Err(Failure::new(format!(
                    "expected on_complete but got on_error({error})"
                )))
            }
            None => Err(Failure::new(format!("no on_complete within {timeout:?}"))),
        }
    }

    /// Expects `on_error` as the next signal (default timeout) and returns the error.
    pub fn expect_error(&self) -> TckResult<Error> {
        self.expect_error_within(self.shared.env.default_timeout())
    }

    /// Expects `on_error` as the next signal within `timeout` and returns the error.
    pub fn expect_error_within(&self, timeout: Duration) -> TckResult<Error> {
        match self.pop(timeout) {
            Some(Signal::Error(error)) => {
                self.shared.env.take_error_signal(self.shared.id);
                Ok(error)
            }
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected on_error but got on_next({item:?})"
            ))),
            Some(Signal::Complete) => Err(Failure::new("expected on_error but got on_complete")),
            None => Err(Failure::new(format!("no on_error within {timeout:?}"))),
        }
    }

    /// Waits `within`, then expects that no signal was received (and not consumed).
    pub fn expect_none(&self, within: Duration) -> TckResult {
        std::thread::sleep(within);
        let state = lock(&self.shared.state);
        match state.queue.front() {
            None => Ok(()),
            Some(Signal::Next(item)) => Err(Failure::new(format!(
                "expected no signal within {within:?} but got on_next({item:?})"
            ))),
            Some(Signal::Complete) => Err(Failure::new(format!(
                "expected no signal within {within:?} but got on_complete"
            ))),
            Some(Signal::Error(error)) => Err(Failure::new(format!(
                "expected no signal within {within:?} but got on_error({error})"
            ))),
        }
    }

    /// [`ManualSubscriber::expect_none`] for the no-signal timeout of the [`Env`].
    pub fn expect_no_signal(&self) -> TckResult {
        self.expect_none(self.shared.env.no_signal_timeout())
    }
}

impl Env {
    /// Subscribes a new [`ManualSubscriber`] to `publisher`, waits for its `on_subscribe` and checks that
    /// no violation was recorded (the Java TCK's `newManualSubscriber`).
    pub fn new_manual_subscriber<T, P>(&self, publisher: P) -> TckResult<ManualSubscriber<T>>
    where
        T: fmt::Debug + Send + 'static,
        P: Publisher<T>,
    {
        let subscriber = ManualSubscriber::new(self);
        publisher.subscribe(subscriber.subscriber());
        subscriber
            .expect_subscribed()
            .context("could not subscribe")?;
        self.verify_no_async_errors_no_delay()?;
        Ok(subscriber)
    }
}
