//! `try_map`: a fallible `map`.
//!
//! Its closure may fail with any error that converts into `Box<dyn Error + Send + Sync>`: a std or
//! library error, a `String` or `&str` message, an `anyhow::Error`, a boxed error. A weir
//! [`Error`] passes through as it is; anything else becomes [`ErrorKind::Failed`] with the original
//! error as its [`source`](std::error::Error::source) (for an `anyhow::Error`, the box anyhow makes
//! of it, which keeps its message and chain). Either way the stream fails naming the stage (unless
//! the error named one already).

use std::sync::Arc;

use weir_runtime::{Error, ErrorKind};

use crate::fused::Fused;
use crate::fused::step::{Step, StepFn};

/// See [`PublisherExt::try_map`](crate::PublisherExt::try_map).
pub type TryMap<P, F, T> = Fused<P, TryMapStep<F>, T>;

/// `try_map`: transforms every item with a fallible function; an `Err` fails the stream.
#[derive(Debug, Clone)]
pub struct TryMapStep<F>(pub(crate) F);

impl<T, U, E, F> StepFn<T> for TryMapStep<F>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnMut(T) -> Result<U, E> + Send + 'static,
{
    type Out = U;
    const NAME: &'static str = "try_map";
    const MAY_DROP: bool = false;
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        match (self.0)(item) {
            Ok(out) => Step::Emit(out),
            Err(error) => Step::Fail(failed(error.into())),
        }
    }
}

/// The stream's error for a closure's error.
#[cold]
fn failed(error: Box<dyn std::error::Error + Send + Sync>) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::new(ErrorKind::Failed(Arc::from(other))),
    }
}
