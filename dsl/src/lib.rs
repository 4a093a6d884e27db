//! weir's pipeline DSL: named stages assembled into graphs, started on tokio, observed and stopped.
//!
//! A [`PipelineBuilder`] adds stages with typed methods that return typed [`Port`]s; each port feeds
//! one input, so the code reads like the graph it builds. [`PipelineBuilder::build`] validates the
//! graph and reports every problem at once ([`BuildError`]); [`Pipeline::start`] runs it and returns
//! a [`PipelineHandle`] to observe it ([`snapshot`](PipelineHandle::snapshot),
//! [`ready`](PipelineHandle::ready), [`live`](PipelineHandle::live),
//! [`describe`](PipelineHandle::describe)) and to stop it ([`drain`](PipelineHandle::drain),
//! [`abort`](PipelineHandle::abort)); awaiting the handle yields the result, naming the failing
//! stage on error.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use weir_dsl::Pipeline;
//! use weir_operators::PublisherExt;
//! use weir_runtime::{ingress::Overflow, source};
//!
//! let mut p = Pipeline::builder("checkout");
//! let (orders_in, orders) = p.ingress::<u64>("orders", 1_024, Overflow::Reject {
//!     retry_after: Duration::from_millis(100),
//! });
//! let replays = p.source("replays", source::from_iter(1_000..1_003u64));
//! let all = p.merge("all", [&orders, &replays]);
//! let priced = p.stage("price", &all, |ids| ids.map(|id| id * 10));
//! let hop = p.boundary("hop", &priced, 256);
//! let stored = Arc::new(Mutex::new(Vec::new()));
//! let store = stored.clone();
//! p.sink("store", &hop, move |amount| store.lock().unwrap().push(amount));
//! let pipeline = p.build().expect("a valid graph");
//!
//! let mut running = pipeline.start().unwrap();
//! orders_in.push(7).await.unwrap();
//! running.drain(Duration::from_secs(5)).await.unwrap();
//! let mut got = stored.lock().unwrap().clone();
//! got.sort_unstable();
//! assert_eq!(got, vec![70, 10_000, 10_010, 10_020]);
//! # }
//! ```
//!
//! Fan-out stages ([`broadcast`](PipelineBuilder::broadcast),
//! [`balance`](PipelineBuilder::balance), [`partition`](PipelineBuilder::partition)) return one
//! port per output; a spilling ingress ([`ingress_spilling`](PipelineBuilder::ingress_spilling))
//! overflows to a durable log. A running pipeline exports its counters through the `metrics`
//! facade under the names in [`export`], and keeps a [`Ledger`] per stage and for the graph:
//! every item that entered is delivered, counted under a named exit, or still held.
//!
//! Inside the crate, dependencies between modules point one way: `name`, `graph` <- `inventory`,
//! `rates`, `tap` <- `wiring` (what a graph becomes at start) <- `running` (lifecycle) <-
//! `ledger`, `observe` <- `export`, `describe` <- `handle` <- `builder` (which also holds
//! [`Pipeline`]).
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod builder;
mod describe;
mod error;
pub mod export;
mod graph;
mod handle;
mod inventory;
mod ledger;
mod name;
mod observe;
mod rates;
mod running;
mod tap;
mod wiring;

pub use builder::{Feed, Pipeline, PipelineBuilder, Port};
pub use describe::{Diagram, DiagramEdge, DiagramNode};
pub use error::PipelineError;
pub use graph::{BuildError, Problem, StageKind};
pub use handle::{PipelineAbort, PipelineHandle};
pub use inventory::{BufferKind, Inventory, InventoryEntry};
pub use ledger::Ledger;
pub use name::{InvalidStageName, StageName};
pub use observe::{BufferSnapshot, EdgeSnapshot, PipelineSnapshot, Readiness, StageSnapshot};
pub use tap::Input;
