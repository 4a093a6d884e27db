//! Lock-free building blocks of weir's runtime, kept in a crate of their own (no tokio) so that the loom
//! models can compile it with `--cfg loom` in seconds:
//!
//! - [`Demand`]: the Reactive Streams demand counter (adds up, saturates at `u64::MAX` = unbounded);
//! - [`Serial`]: the work-in-progress counter that serialises signals and trampolines re-entrant calls;
//! - [`SubscriptionCore`]: demand + serialiser + cancel / terminal / bad-request flags, the state every
//!   emitting subscription shares between its `request`/`cancel` callers and its emitter;
//! - [`SerialCell`]: a synchronous emitter's state, reachable only by the serialiser's owner;
//! - [`TaskSubscription`]: the subscription state of a publisher that emits from a task of its own;
//! - [`WakeSlot`]: a one-task wake-up that fires on transitions only;
//! - [`ring`]: the single-producer, single-consumer credit ring used by async boundaries.
//!
//! Every type here has a loom model in `tests/loom.rs` (`RUSTFLAGS="--cfg loom"`).
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod demand;
mod loom;
pub mod ring;
mod serial;
mod serial_cell;
mod subscription;
mod task;
mod wake;

pub use demand::Demand;
pub use serial::Serial;
pub use serial_cell::SerialCell;
pub use subscription::SubscriptionCore;
pub use task::{Next, TaskSubscription};
pub use wake::WakeSlot;

/// Pads and aligns a value to 128 bytes so that counters written by different threads do not share a
/// cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
