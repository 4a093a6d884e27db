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

mod ext;
mod fused;
pub mod merge;
mod task;

pub use ext::PublisherExt;
pub use fused::steps::{
    Dedupe, DedupeStep, Filter, FilterMap, FilterMapStep, FilterStep, Inspect, InspectStep, Map,
    MapStep, Scan, ScanStep, Skip, SkipStep, Take, TakeStep, TakeWhile, TakeWhileStep, TryMap,
    TryMapStep,
};
pub use fused::{Fused, Step, StepFn};
pub use merge::{Merge, PriorityLanes, merge, merge_delay_error};
pub use task::batch::Batch;
pub use task::breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState, Rejected};
pub use task::buffer::Buffer;
pub use task::fan_out::{FanOutput, Lagging, balance, broadcast, partition};
pub use task::flat_map::{FlatMap, INNER_PREFETCH};
pub use task::group_by::{GroupBy, GroupOverflow};
pub use task::map_async::MapAsync;
pub use task::retry::{Retry, RetryPolicy, retry};
pub use task::throttle::{Throttle, ThrottleMode};
pub use task::timeout::{OnSilence, Timeout};
pub use task::zip::{Zip, zip};
