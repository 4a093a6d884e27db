//! `flat_map(concurrency, f)`: each item becomes a publisher; up to `concurrency` of them are read
//! at once and their items merged as they come.
//!
//! Built like `map_async`: the upstream is read with a prefetch of `concurrency`, each inner
//! publisher through a bounded [`into_stream`](weir_runtime::sink::into_stream_named) (prefetch
//! [`INNER_PREFETCH`]), merged by `futures`' `flatten_unordered`, and emitted by a stream task that
//! polls only with demand. So at most `concurrency` inner publishers run, each holding at most
//! `INNER_PREFETCH` items. A panic in `f` fails the stream naming the stage.

use std::sync::Arc;

use futures::future::{Either, ready};
use futures::stream::{self, StreamExt};
use weir_runtime::sink::into_stream_named;
use weir_runtime::source::from_try_stream;
use weir_runtime::{Publisher, Subscriber, reject};

use super::calls::{Calls, InnerCall};
use super::check_concurrent;
use crate::guard;

/// Items each inner publisher may have buffered.
pub const INNER_PREFETCH: usize = 64;

/// See [`PublisherExt::flat_map`](crate::PublisherExt::flat_map).
pub struct FlatMap<P, F, T> {
    upstream: P,
    f: F,
    concurrency: usize,
    calls: Arc<Calls>,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<P, F, T> FlatMap<P, F, T> {
    pub(crate) fn new(upstream: P, concurrency: usize, f: F) -> Self {
        Self {
            upstream,
            f,
            concurrency,
            calls: Calls::new("flat_map", true),
            _input: std::marker::PhantomData,
        }
    }
}

impl<P: std::fmt::Debug, F, T> std::fmt::Debug for FlatMap<P, F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatMap")
            .field("upstream", &self.upstream)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl<T, U, P, F, Q> Publisher<U> for FlatMap<P, F, T>
where
    P: Publisher<T>,
    T: Send + 'static,
    U: Send + 'static,
    F: FnMut(T) -> Q + Send + 'static,
    Q: Publisher<U>,
{
    fn subscribe<S: Subscriber<U>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.calls.clone());
        if let Err(error) = check_concurrent("flat_map", self.concurrency) {
            return reject(subscriber, error);
        }
        let mut f = self.f;
        let calls = self.calls;
        // Dropped with the stream: counts the outer items still in flight then.
        let in_flight = calls.guard();
        // A panic in the upstream (its `request` runs inside the poll) fails the stream naming
        // this stage.
        let outer = into_stream_named(self.upstream, self.concurrency, "flat_map");
        let inners = guard::catch_stream(outer, "flat_map").map(move |item| {
            let _in_flight = &in_flight;
            // `f`, and the inner publisher's `subscribe` (user code too), under the guard: a
            // panic fails the stream naming the stage, the item counted as failed.
            let inner = match item {
                Ok(item) => {
                    calls.taken();
                    guard::catch(|| {
                        into_stream_named(f(item), INNER_PREFETCH, "flat_map.inner")
                            .failing_as("flat_map")
                    })
                    .map_err(|panicked| {
                        calls.failed();
                        panicked.in_stage("flat_map")
                    })
                }
                Err(error) => Err(error),
            };
            match inner {
                Ok(inner) => Either::Left(InnerCall {
                    // The inner publisher's items count once the stage emits them; a panic in
                    // its `request` (inside the poll) ends it as failed.
                    stream: guard::catch_stream(inner, "flat_map"),
                    calls: calls.clone(),
                    over: false,
                }),
                Err(error) => Either::Right(stream::once(ready(Err(error)))),
            }
        });
        from_try_stream(inners.flatten_unordered(self.concurrency)).subscribe(subscriber);
    }
}
