//! weir's operators, on two levels.
//!
//! - **Fused** ([`fused`]): per-item operators (`map`, `filter`, `take`, `try_map`...) run inside
//!   their upstream's call chain. Each is a publisher generic over its upstream, so a chain such as
//!   `source.map(f).filter(g)` compiles to one call chain with no queue and no allocation per item,
//!   like an iterator chain.
//! - **Task** ([`task`]): operators that wait for something besides their upstream (a timer, a
//!   second source, a backoff, the downstream's demand) or hold items (`batch`, `group_by`, `zip`,
//!   `merge`, `throttle`, `timeout`, `retry`...) run in a tokio task of their own and read their
//!   upstreams through bounded lanes.
//!
//! [`PublisherExt`] adds them as methods to every publisher. User code runs under one panic guard
//! on both levels: a panic cancels the upstream and fails the stream with
//! [`ErrorKind::Panicked`](weir_runtime::ErrorKind::Panicked) naming the stage; it never unwinds
//! into the publisher, and no task ends without a terminal signal.
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
//!
//! # How to write an operator
//!
//! Pick the level by what the operator waits for. If it decides what to do with each item as it
//! comes, with no waiting and no other input, write a fused step: a [`StepFn`](fused::StepFn)
//! returns a [`Step`](fused::Step) for each item, and [`Fused`](fused::Fused) does the rest
//! (demand, bursts, the panic guard, termination, cancelling the upstream when the step stops).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use weir_operators::PublisherExt;
//! use weir_operators::fused::{Fused, Step, StepFn};
//! use weir_runtime::source;
//!
//! /// Pairs every item with its position.
//! struct Enumerate {
//!     next: u64,
//! }
//!
//! impl<T: 'static> StepFn<T> for Enumerate {
//!     type Out = (u64, T);
//!     const NAME: &'static str = "enumerate";
//!     fn step(&mut self, item: T) -> Step<(u64, T)> {
//!         self.next += 1;
//!         Step::Emit((self.next - 1, item))
//!     }
//! }
//!
//! let numbered = Fused::new(source::from_iter(["a", "b"]), Enumerate { next: 0 })
//!     .collect()
//!     .await
//!     .unwrap();
//! assert_eq!(numbered, vec![(0, "a"), (1, "b")]);
//! # }
//! ```
//!
//! If it waits for a timer, a second source or free demand, or holds items between calls, write a
//! task operator: a [`TaskOperator`](task::TaskOperator) takes one step with the downstream's
//! current demand (read a lane, emit through the [`Outlet`](task::Outlet)) and says whether it
//! made [`Progress`](task::Progress); [`task::start`] does the rest (the runtime, the task, the
//! subscription, demand and cancel, the poll budget, the panic guard, exactly one terminal
//! signal).
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use std::task::{Context, Poll};
//! use weir_operators::PublisherExt;
//! use weir_operators::task::{Outlet, Progress, TaskOperator, input, start};
//! use weir_runtime::kit::{Lane, LaneEvent};
//! use weir_runtime::{Publisher, Subscriber, source};
//!
//! /// Every item of the first source, then every item of the second.
//! struct Concat<A, B>(A, B);
//!
//! struct ConcatTask<T> {
//!     lanes: [Lane<T>; 2],
//!     current: usize,
//! }
//!
//! impl<T: Send + 'static> TaskOperator<T> for ConcatTask<T> {
//!     fn advance<S: Subscriber<T>>(
//!         &mut self,
//!         cx: &mut Context<'_>,
//!         demand: u64,
//!         out: &mut Outlet<S>,
//!     ) -> Progress {
//!         let lane = &mut self.lanes[self.current];
//!         match lane.poll_lane(cx) {
//!             Poll::Ready(LaneEvent::Items) if demand > 0 => {
//!                 out.emit_from(lane, demand);
//!                 out.flush();
//!                 Progress::Again
//!             }
//!             Poll::Ready(LaneEvent::Ended(Ok(()))) if self.current == 0 => {
//!                 self.current = 1;
//!                 Progress::Again
//!             }
//!             Poll::Ready(LaneEvent::Ended(result)) => Progress::Done(result),
//!             _ => Progress::Wait, // for items, or for demand
//!         }
//!     }
//! }
//!
//! impl<T: Send + 'static, A: Publisher<T>, B: Publisher<T>> Publisher<T> for Concat<A, B> {
//!     fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
//!         start("concat", subscriber, || ConcatTask {
//!             lanes: [input(self.0, "concat.first", 64), input(self.1, "concat.second", 64)],
//!             current: 0,
//!         });
//!     }
//! }
//!
//! let both = Concat(source::from_iter(0..3u32), source::from_iter(10..12u32));
//! assert_eq!(both.collect().await.unwrap(), vec![0, 1, 2, 10, 11]);
//! # }
//! ```
//!
//! To offer either as a method, put it in an extension trait of your own, as [`PublisherExt`]
//! does.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod ext;
pub mod fused;
mod guard;
pub mod merge;
pub mod task;

pub use ext::PublisherExt;
pub use fused::steps::{
    Dedupe, DedupeStep, Filter, FilterMap, FilterMapStep, FilterStep, Inspect, InspectStep, Map,
    MapStep, Scan, ScanStep, Skip, SkipStep, Take, TakeStep, TakeWhile, TakeWhileStep, TryMap,
    TryMapStep,
};
pub use merge::{Merge, PriorityLanes, merge, merge_delay_error};
pub use task::batch::Batch;
pub use task::breaker::{Breaker, BreakerConfig, BreakerSnapshot, BreakerState, Rejected};
pub use task::buffer::{Buffer, spill_read_ahead};
pub use task::fan_out::{FanOutput, Lagging, balance, broadcast, partition, route};
pub use task::flat_map::{FlatMap, INNER_PREFETCH};
pub use task::group_by::{GroupBy, GroupOverflow};
pub use task::map_async::MapAsync;
pub use task::retry::{Retry, RetryPolicy, retry};
pub use task::throttle::{Throttle, ThrottleMode};
pub use task::timeout::{OnSilence, Timeout};
pub use task::zip::{Zip, zip};
