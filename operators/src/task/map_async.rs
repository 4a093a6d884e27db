//! `map_async` and `map_async_unordered`: run a future per item with at most `concurrency` in flight.
//!
//! Built from pieces that already keep their bounds: the upstream is read through
//! [`into_stream`](weir_runtime::sink::into_stream_named) with a prefetch of `concurrency` (so the
//! upstream is asked for items only as in-flight slots free up), the futures run in
//! `futures`' `buffered` / `buffer_unordered` (at most `concurrency` at a time), and the results are
//! emitted by a stream task that polls only while the downstream has demand. Memory is bounded by
//! `2 * concurrency` items. Each in-flight future costs one allocation (a task node), which is noise
//! next to the I/O such a stage waits for.

use std::future::Future;
use std::sync::Arc;

use futures::future::{Either, FutureExt, ready};
use futures::stream::StreamExt;
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::sink::into_stream_observed;
use weir_runtime::source::from_try_stream;
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::calls::Calls;
use super::check_concurrent;
use crate::guard;

/// See [`PublisherExt::map_async`](crate::PublisherExt::map_async).
pub struct MapAsync<P, F, T> {
    upstream: P,
    f: F,
    concurrency: usize,
    ordered: bool,
    metrics: Arc<BufferMetrics>,
    calls: Arc<Calls>,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<P, F, T> MapAsync<P, F, T> {
    pub(crate) fn new(upstream: P, concurrency: usize, f: F, ordered: bool) -> Self {
        let name = if ordered {
            "map_async"
        } else {
            "map_async_unordered"
        };
        Self {
            upstream,
            f,
            concurrency,
            ordered,
            metrics: BufferMetrics::new(name, concurrency.max(1)),
            calls: Calls::new(name, false),
            _input: std::marker::PhantomData,
        }
    }

    /// The counters of the stage's input buffer (items waiting for an in-flight slot).
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }

    fn name(&self) -> &'static str {
        if self.ordered {
            "map_async"
        } else {
            "map_async_unordered"
        }
    }
}

impl<P: std::fmt::Debug, F, T> std::fmt::Debug for MapAsync<P, F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.name())
            .field("upstream", &self.upstream)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl<T, U, P, F, Fut> Publisher<U> for MapAsync<P, F, T>
where
    P: Publisher<T>,
    T: Send + 'static,
    U: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = U> + Send + 'static,
{
    fn subscribe<S: Subscriber<U>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.metrics.clone());
        weir_runtime::ledger::claim(self.calls.clone());
        let name = self.name();
        if let Err(error) = check_concurrent(name, self.concurrency) {
            return reject(subscriber, error);
        }
        let mut f = self.f;
        let concurrency = self.concurrency;
        let account = self.calls;
        // Dropped with the stream: counts the calls still in flight then (cancel, abort).
        let in_flight = account.guard();
        let counted = account.clone();
        // A panic in the upstream (its `request` runs inside the poll) fails the stream naming
        // this stage.
        let items = guard::catch_stream(into_stream_observed(self.upstream, self.metrics), name);
        let calls = items.map(move |item| {
            let _in_flight = &in_flight;
            match item {
                Ok(item) => {
                    counted.taken();
                    let counted = counted.clone();
                    Either::Left(call_guarded(&mut f, item, name).inspect(move |result| {
                        if result.is_err() {
                            counted.failed();
                        }
                    }))
                }
                Err(error) => Either::Right(ready(Err(error))),
            }
        });
        // A result leaves the stage when it is emitted (an ordered stage may hold one back).
        let emitted = move |result: &Result<U, Error>| {
            if result.is_ok() {
                account.finished();
            }
        };
        if self.ordered {
            from_try_stream(calls.buffered(concurrency).inspect(emitted)).subscribe(subscriber);
        } else {
            from_try_stream(calls.buffer_unordered(concurrency).inspect(emitted))
                .subscribe(subscriber);
        }
    }
}

/// Calls `f` and polls its future under the panic guard: a panic in either fails the stream with
/// an error naming the stage.
fn call_guarded<T, U, F, Fut>(
    f: &mut F,
    item: T,
    stage: &'static str,
) -> impl Future<Output = Result<U, Error>> + Send + 'static + use<T, U, F, Fut>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = U> + Send + 'static,
    U: Send + 'static,
{
    match guard::catch(|| f(item)) {
        Ok(future) => Either::Left(
            guard::catch_future(future).map(move |result| result.map_err(|e| e.in_stage(stage))),
        ),
        Err(panicked) => Either::Right(ready(Err(panicked.in_stage(stage)))),
    }
}
