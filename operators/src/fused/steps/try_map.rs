//! `try_map`: a fallible `map`.

use crate::fused::Fused;
use crate::fused::step::{Step, StepFn};

/// See [`PublisherExt::try_map`](crate::PublisherExt::try_map).
pub type TryMap<P, F, T> = Fused<P, TryMapStep<F>, T>;

/// `try_map`: transforms every item with a fallible function; an `Err` fails the stream.
#[derive(Debug, Clone)]
pub struct TryMapStep<F>(pub(crate) F);

impl<T, U, E, F> StepFn<T> for TryMapStep<F>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(T) -> Result<U, E> + Send + 'static,
{
    type Out = U;
    const NAME: &'static str = "try_map";
    #[inline]
    fn step(&mut self, item: T) -> Step<U> {
        match (self.0)(item) {
            Ok(out) => Step::Emit(out),
            Err(error) => Step::Fail(weir_runtime::Error::failed(error)),
        }
    }
}
