//! The panic guard every operator runs user code under: a panic becomes an
//! [`ErrorKind::Panicked`](weir_runtime::ErrorKind::Panicked) error (keeping the payload's message),
//! which the caller names after its stage and sends downstream. Nothing unwinds into a publisher,
//! and no task dies without its downstream hearing why.
//!
//! Both levels use it: the fused level around each step (see [`crate::fused`]), the task level
//! around each poll of an operator's task (see [`crate::task`]). On the path without a panic
//! `catch_unwind` costs nothing measurable, so the guard stays on the per-item path.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{FutureExt, Stream, StreamExt};
use weir_runtime::Error;

/// Runs `f`; a panic comes back as a `Panicked` error (its stage not named yet).
///
/// `AssertUnwindSafe` is sound here because whatever `f` touched is either dropped or never used
/// again after a panic: the caller fails its stage and drops (or stops calling) the state involved.
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panicked)
}

/// Polls `future` to its end; a panic in any poll comes back as a `Panicked` error.
pub(crate) fn catch_future<F: Future>(future: F) -> impl Future<Output = Result<F::Output, Error>> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .map(|polled| polled.map_err(panicked))
}

/// `stream`, with a panic in any poll turned into its last item: a `Panicked` error naming
/// `stage`. For an upstream a task operator reads through a stream (`into_stream`), whose
/// `request` runs a synchronous upstream's code inside the poll.
pub(crate) fn catch_stream<S>(stream: S, stage: &'static str) -> CatchStream<S> {
    CatchStream {
        stream: Some(stream),
        stage,
    }
}

/// See [`catch_stream`].
pub(crate) struct CatchStream<S> {
    /// `None` after the panic: the stream ended.
    stream: Option<S>,
    stage: &'static str,
}

impl<S, T> Stream for CatchStream<S>
where
    S: Stream<Item = Result<T, Error>> + Unpin,
{
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match catch(|| stream.poll_next_unpin(cx)) {
            Ok(polled) => polled,
            Err(panicked) => {
                this.stream = None;
                Poll::Ready(Some(Err(panicked.in_stage(this.stage))))
            }
        }
    }
}

#[cold]
fn panicked(payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::panicked(payload.as_ref())
}
