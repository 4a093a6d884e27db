//! weir's operators. Each is a publisher generic over its upstream, so a chain such as
//! `source.map(f).filter(g)` compiles to one fused call chain with no queue and no allocation per item,
//! like an iterator chain. [`PublisherExt`] adds them as methods to every publisher.
//!
//! User closures run under `catch_unwind`: a panic cancels the upstream and fails the stream with
//! [`ErrorKind::Panicked`](weir_runtime::ErrorKind::Panicked) naming the stage; it never unwinds into
//! the publisher.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use weir_operators::PublisherExt;
//! use weir_runtime::source;
//! let sum = source::from_iter(1..=10u64)
//!     .map(|x| x * 2)
//!     .filter(|x| x % 3 == 0)
//!     .fold(0, |sum, x| *sum += x)
//!     .await
//!     .unwrap();
//! assert_eq!(sum, 6 + 12 + 18);
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod batch;
mod breaker;
mod buffer;
mod ext;
mod fan_out;
mod flat_map;
mod fused;
mod group_by;
mod map_async;
pub mod merge;
mod retry;
mod stage;
mod steps;
mod timing;
mod zip;

pub use batch::Batch;
pub use breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState, Rejected};
pub use buffer::Buffer;
pub use ext::PublisherExt;
pub use fan_out::{FanOutput, Lagging, balance, broadcast, partition};
pub use flat_map::{FlatMap, INNER_PREFETCH};
pub use fused::{Fused, Step, StepFn};
pub use group_by::{GroupBy, GroupOverflow};
pub use map_async::MapAsync;
pub use merge::{Merge, PriorityLanes, merge, merge_delay_error};
pub use retry::{Retry, RetryPolicy, retry};
pub use steps::{
    DedupeStep, FilterMapStep, FilterStep, InspectStep, MapStep, ScanStep, SkipStep, TakeStep,
    TakeWhileStep, TryMapStep,
};
pub use timing::{OnSilence, Throttle, ThrottleMode, Timeout};
pub use zip::{Zip, zip};

/// See [`PublisherExt::map`].
pub type Map<P, F, T> = Fused<P, MapStep<F>, T>;
/// See [`PublisherExt::filter`].
pub type Filter<P, F, T> = Fused<P, FilterStep<F>, T>;
/// See [`PublisherExt::filter_map`].
pub type FilterMap<P, F, T> = Fused<P, FilterMapStep<F>, T>;
/// See [`PublisherExt::inspect`].
pub type Inspect<P, F, T> = Fused<P, InspectStep<F>, T>;
/// See [`PublisherExt::scan`].
pub type Scan<P, A, F, T> = Fused<P, ScanStep<A, F>, T>;
/// See [`PublisherExt::take`].
pub type Take<P, T> = Fused<P, TakeStep, T>;
/// See [`PublisherExt::take_while`].
pub type TakeWhile<P, F, T> = Fused<P, TakeWhileStep<F>, T>;
/// See [`PublisherExt::skip`].
pub type Skip<P, T> = Fused<P, SkipStep, T>;
/// See [`PublisherExt::try_map`].
pub type TryMap<P, F, T> = Fused<P, TryMapStep<F>, T>;
/// See [`PublisherExt::dedupe`].
pub type Dedupe<P, K, F, T> = Fused<P, DedupeStep<K, F>, T>;

impl<P, K, F, T> Dedupe<P, K, F, T> {
    /// How many duplicates were dropped so far (shared, live).
    pub fn duplicates(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.step().duplicates.clone()
    }
}
