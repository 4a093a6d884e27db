//! The operator-building kit: the pieces weir's task-based operators are made of, for people who
//! write operators. Programs that use operators and pipelines never need them.
//!
//! - a [`Lane`] reads one upstream through a bounded credit ring from a task (or poll function) of
//!   your own: it asks the upstream for its capacity at first and then for 75% of it each time that
//!   much was taken, so at most `capacity` items are held; [`lane`] makes one, [`lane_observed`]
//!   one that reports into counters made beforehand;
//! - a [`TaskSubscription`] is the subscription a task-emitting publisher hands its subscriber:
//!   `request` and `cancel` record what is wanted and wake the task, which asks
//!   [`poll_next`](TaskSubscription::poll_next) what to do ([`Next`]).
//!
//! `weir_operators::task` builds an engine on these (runtime lookup, lanes, demand, poll budget,
//! panic guard, the ledger); start there to write an operator that runs in a task of its own.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::future::poll_fn;
//! use weir_runtime::kit::{LaneEvent, lane};
//! use weir_runtime::{Publisher, source};
//! let (inlet, mut numbers) = lane::<u32>("numbers", 2);
//! source::from_iter(1..=3).subscribe(inlet);
//! let mut got = Vec::new();
//! loop {
//!     match poll_fn(|cx| numbers.poll_lane(cx)).await {
//!         LaneEvent::Items => { numbers.pop_each(u64::MAX, |x| { got.push(x); true }); }
//!         LaneEvent::Ended(result) => { result.unwrap(); break; }
//!     }
//! }
//! assert_eq!(got, vec![1, 2, 3]);
//! # }
//! ```

pub use crate::lane::{Lane, LaneEvent, lane, lane_observed};
pub use crate::task::{Next, TaskSubscription};
