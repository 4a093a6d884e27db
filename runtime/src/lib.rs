//! weir's runtime: the Reactive Streams protocol, demand accounting, async boundaries on tokio,
//! ingress (push -> demand), the metrics core and typed errors.
//!
//! - [`Publisher`], [`Subscriber`], [`Subscription`], [`Processor`]: the protocol ([`protocol`] documents
//!   how it maps the Reactive Streams rules to Rust);
//! - [`source`] and [`sink`]: publishers from iterators and streams, subscribers that fold, collect or
//!   turn a publisher back into a `futures::Stream`;
//! - [`boundary`]: the bounded, credit-based hand-off between two tokio tasks;
//! - [`kit`]: what operators are made of, for people who write operators: lanes (an upstream
//!   read through a bounded credit ring from a task of your own) and the subscription state of a
//!   task that emits;
//! - [`queue`]: a bounded queue pushed into and emitting on demand, with an explicit policy when
//!   full (in-stream buffers, fan-out outputs);
//! - [`ingress`]: the queue's face for callers that cannot be slowed: deadlines and retry hints;
//! - [`metrics`]: counters per boundary and ingress, as serde snapshots;
//! - [`processor`]: operator chains as processors, through a [`processor::relay`].
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use weir_runtime::{boundary::{boundary, BoundaryConfig}, sink, source};
//! let numbers = source::from_iter(1..=1_000u64);
//! let handed_over = boundary(numbers, BoundaryConfig::new("hop", 256).unwrap());
//! assert_eq!(sink::fold(handed_over, 0, |sum, x| *sum += x).await.unwrap(), 500_500);
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod boundary;
mod error;
pub mod ingress;
pub mod kit;
mod lane;
pub mod ledger;
pub mod metrics;
pub mod processor;
pub mod protocol;
pub mod queue;
mod recheck;
pub mod sink;
pub mod source;
mod task;

pub use error::{Error, ErrorKind};
pub use protocol::{
    BoxPublisher, Burst, Processor, Publisher, RawSubscription, Subscriber, Subscription, reject,
};
pub use weir_lockfree::Demand;
