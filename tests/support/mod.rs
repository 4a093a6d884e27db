//! Shared test doubles: a subscriber that records every signal and lets the test request and cancel.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use weir::runtime::{Error, Subscriber, Subscription};

/// The spill log's segment files in `dir`, in order.
pub fn spill_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments
}

/// The runtime most tests use: two workers (like CI's machine), timers enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One recorded signal.
#[derive(Debug, Clone)]
pub enum Signal<T> {
    Next(T),
    Error(Error),
    Complete,
}

struct Log<T> {
    subscription: Option<Subscription>,
    signals: Vec<Signal<T>>,
}

/// A subscriber that records what it receives; the test drives demand through [`Recorder`].
pub struct Probe<T> {
    shared: Arc<(Mutex<Log<T>>, Condvar)>,
}

/// The test's side of a [`Probe`].
#[derive(Clone)]
pub struct Recorder<T> {
    shared: Arc<(Mutex<Log<T>>, Condvar)>,
}

pub fn probe<T>() -> (Probe<T>, Recorder<T>) {
    let shared = Arc::new((
        Mutex::new(Log {
            subscription: None,
            signals: Vec::new(),
        }),
        Condvar::new(),
    ));
    (
        Probe {
            shared: shared.clone(),
        },
        Recorder { shared },
    )
}

impl<T: Send + 'static> Subscriber<T> for Probe<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.shared.0.lock().unwrap().subscription = Some(subscription);
        self.shared.1.notify_all();
    }
    fn on_next(&mut self, item: T) {
        self.push(Signal::Next(item));
    }
    fn on_error(&mut self, error: Error) {
        self.push(Signal::Error(error));
    }
    fn on_complete(&mut self) {
        self.push(Signal::Complete);
    }
}

impl<T> Probe<T> {
    fn push(&self, signal: Signal<T>) {
        self.shared.0.lock().unwrap().signals.push(signal);
        self.shared.1.notify_all();
    }
}

impl<T: Clone> Recorder<T> {
    fn wait_until<R>(
        &self,
        within: Duration,
        mut check: impl FnMut(&Log<T>) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + within;
        let mut log = self.shared.0.lock().unwrap();
        loop {
            if let Some(found) = check(&log) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            log = self.shared.1.wait_timeout(log, deadline - now).unwrap().0;
        }
    }

    pub fn subscription(&self) -> Subscription {
        self.wait_until(Duration::from_secs(5), |log| log.subscription.clone())
            .expect("on_subscribe within 5 s")
    }

    pub fn request(&self, n: u64) {
        self.subscription().request(n);
    }

    pub fn cancel(&self) {
        self.subscription().cancel();
    }

    /// All items received so far.
    pub fn items(&self) -> Vec<T> {
        let log = self.shared.0.lock().unwrap();
        log.signals
            .iter()
            .filter_map(|s| match s {
                Signal::Next(item) => Some(item.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn signals(&self) -> Vec<Signal<T>> {
        self.shared.0.lock().unwrap().signals.clone()
    }

    /// Waits until `n` items have arrived in total.
    pub fn expect_items(&self, n: usize) -> Vec<T> {
        self.wait_until(Duration::from_secs(5), |log| {
            let items = log
                .signals
                .iter()
                .filter(|s| matches!(s, Signal::Next(_)))
                .count();
            (items >= n).then_some(())
        })
        .unwrap_or_else(|| panic!("expected {n} items, got {}", self.items().len()));
        self.items()
    }

    /// Waits for the terminal signal.
    pub fn expect_terminal(&self) -> Result<(), Error> {
        self.wait_until(Duration::from_secs(5), |log| {
            log.signals.iter().find_map(|s| match s {
                Signal::Error(error) => Some(Err(error.clone())),
                Signal::Complete => Some(Ok(())),
                Signal::Next(_) => None,
            })
        })
        .expect("a terminal signal within 5 s")
    }

    /// Asserts no new signal arrives within `within`.
    pub fn expect_quiet(&self, within: Duration) {
        let before = self.shared.0.lock().unwrap().signals.len();
        std::thread::sleep(within);
        let after = self.shared.0.lock().unwrap().signals.len();
        assert_eq!(before, after, "unexpected signals while quiet");
    }
}

/// A publisher that knows only the Reactive Streams signals: `on_subscribe`, `on_next`, `on_error`
/// and `on_complete`, never weir's `try_on_next`, `try_on_next_iter` or `on_flush`. The test sends
/// each item by hand through the [`PlainDriver`], after waiting for demand, and may then pause for
/// as long as it likes: whatever it subscribed to must still hand the items on.
pub struct PlainPublisher<T> {
    shared: Arc<PlainShared<T>>,
}

/// The test's side of a [`PlainPublisher`].
pub struct PlainDriver<T> {
    shared: Arc<PlainShared<T>>,
}

struct PlainShared<T> {
    subscriber: Mutex<Option<Box<dyn Subscriber<T>>>>,
    /// (requested, sent, cancelled)
    demand: Mutex<(u64, u64, bool)>,
    changed: Condvar,
}

struct PlainSubscription<T>(Arc<PlainShared<T>>);

impl<T: Send + 'static> weir::runtime::RawSubscription for PlainSubscription<T> {
    fn request(&self, n: u64) {
        let mut demand = self.0.demand.lock().unwrap();
        demand.0 = demand.0.saturating_add(n);
        self.0.changed.notify_all();
    }
    fn cancel(&self) {
        self.0.demand.lock().unwrap().2 = true;
        self.0.changed.notify_all();
    }
}

pub fn plain_publisher<T: Send + 'static>() -> (PlainPublisher<T>, PlainDriver<T>) {
    let shared = Arc::new(PlainShared {
        subscriber: Mutex::new(None),
        demand: Mutex::new((0, 0, false)),
        changed: Condvar::new(),
    });
    (
        PlainPublisher {
            shared: shared.clone(),
        },
        PlainDriver { shared },
    )
}

impl<T: Send + 'static> weir::runtime::Publisher<T> for PlainPublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let mut subscriber: Box<dyn Subscriber<T>> = Box::new(subscriber);
        subscriber.on_subscribe(Subscription::new(Arc::new(PlainSubscription(
            self.shared.clone(),
        ))));
        *self.shared.subscriber.lock().unwrap() = Some(subscriber);
        self.shared.changed.notify_all();
    }
}

impl<T: Send + 'static> PlainDriver<T> {
    /// Waits (up to 5 s) for a subscriber and a unit of demand, then signals `on_next(item)`.
    pub fn send(&self, item: T) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut demand = self.shared.demand.lock().unwrap();
        while demand.0 <= demand.1 && !demand.2 {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("no demand for the plain publisher within 5 s");
            demand = self.shared.changed.wait_timeout(demand, left).unwrap().0;
        }
        assert!(!demand.2, "the plain publisher was cancelled");
        demand.1 += 1;
        drop(demand);
        let mut subscriber = self.shared.subscriber.lock().unwrap();
        subscriber
            .as_mut()
            .expect("requested before subscribing")
            .on_next(item);
    }

    /// Signals `on_complete()`.
    pub fn complete(&self) {
        let mut subscriber = self.shared.subscriber.lock().unwrap();
        subscriber.as_mut().expect("not subscribed").on_complete();
    }

    /// Total demand received so far.
    pub fn requested(&self) -> u64 {
        self.shared.demand.lock().unwrap().0
    }
}

/// A hand-written publisher whose subscription panics at the first `request`: stands for user code
/// that an operator's task drives while reading its upstream.
pub struct PanicsOnRequest<T>(std::marker::PhantomData<fn() -> T>);

pub fn panics_on_request<T>() -> PanicsOnRequest<T> {
    PanicsOnRequest(std::marker::PhantomData)
}

impl<T: Send + 'static> weir::runtime::Publisher<T> for PanicsOnRequest<T> {
    fn subscribe<S: Subscriber<T>>(self, mut subscriber: S) {
        struct Exploding;
        impl weir::runtime::RawSubscription for Exploding {
            fn request(&self, _: u64) {
                panic!("upstream exploded");
            }
            fn cancel(&self) {}
        }
        subscriber.on_subscribe(Subscription::new(Arc::new(Exploding)));
    }
}
