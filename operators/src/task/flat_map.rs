//! `flat_map(concurrency, f)`: each item becomes a publisher; up to `concurrency` of them are read
//! at once and their items merged as they come.
//!
//! Built like `map_async`: the upstream is read with a prefetch of `concurrency`, each inner
//! publisher through a bounded [`into_stream`](weir_runtime::sink::into_stream_named) (prefetch
//! [`INNER_PREFETCH`]), merged by `futures`' `flatten_unordered`, and emitted by a stream task that
//! polls only with demand. So at most `concurrency` inner publishers run, each holding at most
//! `INNER_PREFETCH` items. A panic in `f` fails the stream naming the stage.

use futures::future::{Either, ready};
use futures::stream::{self, StreamExt};
use weir_runtime::sink::into_stream_named;
use weir_runtime::source::from_try_stream;
use weir_runtime::{Publisher, Subscriber, reject};

use super::check_concurrent;
use crate::guard;

/// Items each inner publisher may have buffered.
pub const INNER_PREFETCH: usize = 64;

/// See [`PublisherExt::flat_map`](crate::PublisherExt::flat_map).
pub struct FlatMap<P, F, T> {
    upstream: P,
    f: F,
    concurrency: usize,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<P, F, T> FlatMap<P, F, T> {
    pub(crate) fn new(upstream: P, concurrency: usize, f: F) -> Self {
        Self {
            upstream,
            f,
            concurrency,
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
        if let Err(error) = check_concurrent("flat_map", self.concurrency) {
            return reject(subscriber, error);
        }
        let mut f = self.f;
        let inners =
            into_stream_named(self.upstream, self.concurrency, "flat_map").map(move |item| {
                let inner = item.and_then(|item| {
                    guard::catch(|| f(item)).map_err(|panicked| panicked.in_stage("flat_map"))
                });
                match inner {
                    Ok(inner) => {
                        Either::Left(into_stream_named(inner, INNER_PREFETCH, "flat_map.inner"))
                    }
                    Err(error) => Either::Right(stream::once(ready(Err(error)))),
                }
            });
        from_try_stream(inners.flatten_unordered(self.concurrency)).subscribe(subscriber);
    }
}
