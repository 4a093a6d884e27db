use std::future::Future;

use weir_runtime::boundary::{Boundary, BoundaryConfig, boundary};
use weir_runtime::sink::{self, IntoStream};
use weir_runtime::{Error, Publisher};

use crate::fused::Fused;
use crate::fused::steps::{
    Dedupe, DedupeStep, Filter, FilterMap, FilterMapStep, FilterStep, Inspect, InspectStep, Map,
    MapStep, Scan, ScanStep, Skip, SkipStep, Take, TakeStep, TakeWhile, TakeWhileStep, TryMap,
    TryMapStep,
};
use crate::task::batch::Batch;
use crate::task::breaker::{self, Breaker, Rejected};
use crate::task::buffer::Buffer;
use crate::task::flat_map::FlatMap;
use crate::task::group_by::{GroupBy, GroupOverflow};
use crate::task::map_async::MapAsync;
use crate::task::throttle::{Throttle, ThrottleMode};
use crate::task::timeout::{OnSilence, Timeout};

/// Operators and sinks as methods on every [`Publisher`].
pub trait PublisherExt<T>: Publisher<T> + Sized {
    /// Transforms every item with `f` (fused: runs in the upstream's call chain).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let doubled = weir_runtime::source::from_iter([1, 2]).map(|x| x * 2).collect().await.unwrap();
    /// assert_eq!(doubled, vec![2, 4]);
    /// # }
    /// ```
    fn map<U, F>(self, f: F) -> Map<Self, F, T>
    where
        F: FnMut(T) -> U + Send + 'static,
    {
        Fused::new(self, MapStep(f))
    }

    /// Transforms every item with a fallible `f`; the first `Err` fails the stream with an error
    /// naming the stage (and keeping the original error as its source), cancelling the upstream.
    /// The error may be anything that converts into `Box<dyn Error + Send + Sync>`: a std or
    /// library error, a `String` or `&str`, an `anyhow::Error`, a boxed error, or a weir
    /// [`Error`] (passed on as it is).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let error = weir_runtime::source::from_iter(["1", "2", "x"])
    ///     .try_map(|s| s.parse::<u32>())
    ///     .collect()
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(error.to_string(), "stage `try_map`: invalid digit found in string");
    /// let source = std::error::Error::source(&error).unwrap();
    /// assert!(source.is::<std::num::ParseIntError>());
    ///
    /// let error = weir_runtime::source::from_iter([1, 2, 3])
    ///     .try_map(|x| if x < 3 { Ok(x) } else { Err(format!("{x} is too many")) })
    ///     .collect()
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(error.to_string(), "stage `try_map`: 3 is too many");
    /// # }
    /// ```
    fn try_map<U, E, F>(self, f: F) -> TryMap<Self, F, T>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: FnMut(T) -> Result<U, E> + Send + 'static,
    {
        Fused::new(self, TryMapStep(f))
    }

    /// Keeps the items for which `predicate` returns `true`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let even = weir_runtime::source::from_iter(1..=6).filter(|x| x % 2 == 0).collect().await.unwrap();
    /// assert_eq!(even, vec![2, 4, 6]);
    /// # }
    /// ```
    fn filter<F>(self, predicate: F) -> Filter<Self, F, T>
    where
        F: FnMut(&T) -> bool + Send + 'static,
    {
        Fused::new(self, FilterStep(predicate))
    }

    /// Transforms and filters in one closure: `None` drops the item.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let parsed = weir_runtime::source::from_iter(["1", "x", "3"])
    ///     .filter_map(|s| s.parse::<u32>().ok())
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(parsed, vec![1, 3]);
    /// # }
    /// ```
    fn filter_map<U, F>(self, f: F) -> FilterMap<Self, F, T>
    where
        F: FnMut(T) -> Option<U> + Send + 'static,
    {
        Fused::new(self, FilterMapStep(f))
    }

    /// Calls `f` with each item on its way through.
    fn inspect<F>(self, f: F) -> Inspect<Self, F, T>
    where
        F: FnMut(&T) + Send + 'static,
    {
        Fused::new(self, InspectStep(f))
    }

    /// Threads a state through the items, emitting what `f` returns for each.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let running = weir_runtime::source::from_iter(1..=4u32)
    ///     .scan(0, |total, x| { *total += x; *total })
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(running, vec![1, 3, 6, 10]);
    /// # }
    /// ```
    fn scan<A, U, F>(self, init: A, f: F) -> Scan<Self, A, F, T>
    where
        A: Send + 'static,
        F: FnMut(&mut A, T) -> U + Send + 'static,
    {
        Fused::new(self, ScanStep { state: init, f })
    }

    /// The first `n` items, then completes and cancels the upstream; never requests more than `n`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let first = weir_runtime::source::from_iter(0u64..).take(3).collect().await.unwrap();
    /// assert_eq!(first, vec![0, 1, 2]);
    /// # }
    /// ```
    fn take(self, n: u64) -> Take<Self, T> {
        Fused::new(self, TakeStep { left: n })
    }

    /// Items while `predicate` holds; the first item that fails it completes the stream.
    fn take_while<F>(self, predicate: F) -> TakeWhile<Self, F, T>
    where
        F: FnMut(&T) -> bool + Send + 'static,
    {
        Fused::new(self, TakeWhileStep(predicate))
    }

    /// Drops items whose idempotency key (from `key`) was seen among the last `window` distinct
    /// keys: redelivery happens under pressure (at-least-once), so consumers dedupe. Memory is
    /// bounded by `window` keys; dropped duplicates are counted ([`Dedupe::duplicates`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let once = weir_runtime::source::from_iter([1, 2, 1, 3, 2, 4])
    ///     .dedupe(|x| *x, 100)
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(once, vec![1, 2, 3, 4]);
    /// # }
    /// ```
    fn dedupe<K, F>(self, key: F, window: usize) -> Dedupe<Self, K, F, T>
    where
        K: std::hash::Hash + Eq + Clone + Send + 'static,
        F: FnMut(&T) -> K + Send + 'static,
    {
        Fused::new(
            self,
            DedupeStep {
                key,
                window: window.max(1),
                seen: Default::default(),
                order: Default::default(),
                duplicates: Default::default(),
            },
        )
    }

    /// Drops the first `n` items.
    fn skip(self, n: u64) -> Skip<Self, T> {
        Fused::new(self, SkipStep { left: n })
    }

    /// Runs `f`'s future for every item with at most `concurrency` in flight, emitting results in
    /// input order. In-flight slots are the demand: the upstream is asked for more only as futures
    /// finish. Needs a tokio runtime; a panic in `f` or its future fails the stream naming the stage.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let doubled = weir_runtime::source::from_iter(1..=5u64)
    ///     .map_async(3, |x| async move { x * 2 })
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(doubled, vec![2, 4, 6, 8, 10]);
    /// # }
    /// ```
    fn map_async<U, F, Fut>(self, concurrency: usize, f: F) -> MapAsync<Self, F, T>
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        MapAsync::new(self, concurrency, f, true)
    }

    /// Maps every item to a publisher and merges the items of up to `concurrency` of them as they
    /// come (each inner publisher holds at most [`INNER_PREFETCH`](crate::INNER_PREFETCH) items).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::PublisherExt;
    /// use weir_runtime::source;
    /// let mut all = source::from_iter(1..=3u32)
    ///     .flat_map(2, |n| source::from_iter(0..n))
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// all.sort_unstable();
    /// assert_eq!(all, vec![0, 0, 0, 1, 1, 2]);
    /// # }
    /// ```
    fn flat_map<U, F, Q>(self, concurrency: usize, f: F) -> FlatMap<Self, F, T>
    where
        F: FnMut(T) -> Q + Send + 'static,
        Q: Publisher<U>,
    {
        FlatMap::new(self, concurrency, f)
    }

    /// Like [`map_async`](PublisherExt::map_async), but emits results as they complete.
    fn map_async_unordered<U, F, Fut>(self, concurrency: usize, f: F) -> MapAsync<Self, F, T>
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        MapAsync::new(self, concurrency, f, false)
    }

    /// Groups items into batches of at most `max_items`, emitted when full or when the oldest item
    /// has waited `max_wait`. Respects downstream demand: without it, at most one full batch and
    /// one lane of `max_items` are held and the upstream is not asked for more. Needs a tokio
    /// runtime; `max_items` of zero fails the subscription.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use std::time::Duration;
    /// use weir_operators::PublisherExt;
    /// let batches = weir_runtime::source::from_iter(0..10u32)
    ///     .batch(4, Duration::from_millis(10))
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(batches, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    /// # }
    /// ```
    fn batch(self, max_items: usize, max_wait: std::time::Duration) -> Batch<Self> {
        Batch::new(self, max_items, max_wait)
    }

    /// An in-stream bounded buffer of `capacity` items named `name`, with a queue's policy when
    /// full: `Wait` is backpressure (an async boundary), `DropOldest` / `DropNewest` shed and
    /// count, `Refuse` fails the stream on overflow. See [`Buffer`] for details.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::PublisherExt;
    /// use weir_runtime::queue::WhenFull;
    /// let kept = weir_runtime::source::from_iter(0..10u32)
    ///     .buffer("telemetry", 4, WhenFull::DropOldest)
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(kept.len(), 10); // a fast consumer: nothing had to be dropped
    /// # }
    /// ```
    fn buffer(
        self,
        name: &str,
        capacity: usize,
        when_full: weir_runtime::queue::WhenFull,
    ) -> Buffer<Self, T>
    where
        T: Send + 'static,
    {
        Buffer::new(self, name, capacity, when_full)
    }

    /// Token-bucket rate limiting: at most `per_second` items per second on average, bursts of up
    /// to `burst`. [`ThrottleMode::Delay`] holds items back (backpressure reaches the upstream);
    /// [`ThrottleMode::Shed`] drops items over the rate, counted in [`Throttle::metrics`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::{PublisherExt, ThrottleMode};
    /// let started = std::time::Instant::now();
    /// let items = weir_runtime::source::from_iter(0..20u32)
    ///     .throttle(200, 10, ThrottleMode::Delay)
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(items.len(), 20);
    /// assert!(started.elapsed() >= std::time::Duration::from_millis(40)); // 10 at once, then 200/s
    /// # }
    /// ```
    fn throttle(self, per_second: u32, burst: u32, mode: ThrottleMode) -> Throttle<Self> {
        Throttle::new(self, per_second, burst, mode)
    }

    /// Ends or fails the stream when the upstream is silent for `silence` while the downstream
    /// waits for an item (a slow downstream is not the upstream's silence).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use std::time::Duration;
    /// use weir_operators::{OnSilence, PublisherExt};
    /// let endless = weir_runtime::source::from_stream(futures::stream::pending::<u32>());
    /// let error = endless.timeout(Duration::from_millis(20), OnSilence::Fail).collect().await.unwrap_err();
    /// assert_eq!(error.to_string(), "stage `timeout`: timed out after 20ms");
    /// # }
    /// ```
    fn timeout(self, silence: std::time::Duration, on_silence: OnSilence) -> Timeout<Self> {
        Timeout::new(self, silence, on_silence)
    }

    /// Calls `f` for every item through a circuit `breaker` (closed / open / half-open), at most
    /// `concurrency` calls in flight, results in input order. While the breaker is open items are
    /// not called but handed back at once as [`Rejected::Open`](crate::Rejected::Open) with a retry
    /// hint; failed calls come out as [`Rejected::Failed`](crate::Rejected::Failed). Keep a clone of
    /// the [`Breaker`](crate::Breaker) to read its state and counters.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::{Breaker, BreakerConfig, PublisherExt};
    /// let breaker = Breaker::new(BreakerConfig { min_calls: 2, ..BreakerConfig::default() });
    /// let out = weir_runtime::source::from_iter(0..5u32)
    ///     .circuit_breaker(1, breaker.clone(), |x| async move {
    ///         if x < 2 { Err("down") } else { Ok(x) }
    ///     })
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert!(out[..2].iter().all(|r| r.is_err())); // two failures open the breaker...
    /// assert_eq!(breaker.snapshot().rejected_open, 3); // ...and the rest are rejected fast
    /// # }
    /// ```
    fn circuit_breaker<U, E, F, Fut>(
        self,
        concurrency: usize,
        breaker: Breaker,
        f: F,
    ) -> impl Publisher<Result<U, Rejected<T, E>>>
    where
        T: Send + 'static,
        U: Send + 'static,
        E: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        breaker::through(self, concurrency, breaker, f)
    }

    /// An in-stream buffer that spills: items beyond the store's memory part go to its durable
    /// part (e.g. `weir_spill::SpillQueue`) and come back in FIFO order; the upstream is not slowed
    /// while the disk budget lasts, and is paused (backpressure) while it is full. The upstream
    /// runs in a task of its own: subscribe within a tokio runtime. See [`Buffer`].
    fn buffer_spilling(
        self,
        name: &str,
        store: impl weir_runtime::queue::SpillStore<T> + 'static,
    ) -> Buffer<Self, T>
    where
        T: Send + 'static,
    {
        Buffer::spilling(self, name, store)
    }

    /// Groups items into `Vec`s of `size` (the last one may be shorter): [`batch`](PublisherExt::batch)
    /// without a time limit.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::PublisherExt;
    /// let chunks = weir_runtime::source::from_iter(0..5u8).chunks(2).collect().await.unwrap();
    /// assert_eq!(chunks, vec![vec![0, 1], vec![2, 3], vec![4]]);
    /// # }
    /// ```
    fn chunks(self, size: usize) -> Batch<Self> {
        Batch::new(self, size, std::time::Duration::MAX)
    }

    /// Gathers items into per-key groups emitted as `(key, Vec<item>)`: a group goes when it holds
    /// `max_items`, when a new key needs room among `max_groups` open groups (`overflow` picks which),
    /// or at the end of the stream. Memory is bounded by `max_groups x max_items`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::{GroupOverflow, PublisherExt};
    /// let groups = weir_runtime::source::from_iter(["a1", "b1", "a2", "b2", "a3"])
    ///     .group_by(|s| s.as_bytes()[0], 8, 2, GroupOverflow::EmitOldest)
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(groups, vec![(b'a', vec!["a1", "a2"]), (b'b', vec!["b1", "b2"]), (b'a', vec!["a3"])]);
    /// # }
    /// ```
    fn group_by<K, F>(
        self,
        key: F,
        max_groups: usize,
        max_items: usize,
        overflow: GroupOverflow,
    ) -> GroupBy<Self, F, T>
    where
        K: std::hash::Hash + Eq + Clone + Send + 'static,
        F: FnMut(&T) -> K + Send + 'static,
    {
        GroupBy::new(self, key, max_groups, max_items, overflow)
    }

    /// Ends the fused segment at an async boundary (see [`weir_runtime::boundary`]).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_operators::PublisherExt;
    /// use weir_runtime::boundary::BoundaryConfig;
    /// let items = weir_runtime::source::from_iter(0..100u32)
    ///     .boundary(BoundaryConfig::new("hop", 16).unwrap())
    ///     .collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(items.len(), 100);
    /// # }
    /// ```
    fn boundary(self, config: BoundaryConfig) -> Boundary<Self> {
        boundary(self, config)
    }

    /// Folds every item into `init`; see [`sink::fold`].
    fn fold<A, F>(self, init: A, f: F) -> impl Future<Output = Result<A, Error>> + Send
    where
        A: Send + 'static,
        F: FnMut(&mut A, T) + Send + 'static,
    {
        sink::fold(self, init, f)
    }

    /// Runs `f` on every item; see [`sink::for_each`].
    fn for_each<F>(self, f: F) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnMut(T) + Send + 'static,
    {
        sink::for_each(self, f)
    }

    /// Collects every item; see [`sink::collect`].
    fn collect(self) -> impl Future<Output = Result<Vec<T>, Error>> + Send
    where
        T: Send + 'static,
    {
        sink::collect(self)
    }

    /// Turns the publisher into a `futures::Stream` with at most `prefetch` buffered items; see
    /// [`sink::into_stream`].
    fn into_stream(self, prefetch: usize) -> IntoStream<T>
    where
        T: Send + 'static,
    {
        sink::into_stream(self, prefetch)
    }
}

impl<T, P: Publisher<T>> PublisherExt<T> for P {}
