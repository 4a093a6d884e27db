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

/// Pulls and drops at most `max` items of a burst, returning how many it took: for a subscriber's
/// `try_on_next_iter` that must take the rest of a burst it will not handle (and count it).
///
/// A plain loop, always inlined, rather than `items.take(n).count()`: once a burst's iterator is
/// handed to an out-of-line call, the compiler keeps the state of the whole fused chain that feeds
/// it (the source's position, each operator's counters) in memory instead of registers, per item.
/// So every `try_on_next_iter` in weir is `#[inline(always)]` and uses this.
///
/// ```
/// let mut items = 1..=10;
/// assert_eq!(weir_runtime::kit::discard(&mut items, 4), 4);
/// assert_eq!(items.next(), Some(5));
/// ```
#[inline(always)]
pub fn discard<I: Iterator>(items: &mut I, max: u64) -> u64 {
    let mut taken = 0;
    while taken < max && items.next().is_some() {
        taken += 1;
    }
    taken
}
