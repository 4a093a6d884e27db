#![doc = include_str!("../README.md")]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub use weir_dsl as dsl;
#[cfg(feature = "nats")]
pub use weir_nats as nats;
pub use weir_operators as operators;
pub use weir_runtime as runtime;
pub use weir_spill as spill;
#[cfg(feature = "tck")]
pub use weir_tck as tck;

/// The names most programs need: `use weir::prelude::*;`.
pub mod prelude {
    pub use weir_dsl::Pipeline;
    pub use weir_operators::{Lagging, PublisherExt};
    pub use weir_runtime::boundary::BoundaryConfig;
    pub use weir_runtime::ingress::{self, IngressConfig, Overflow, PushError, SpillFull};
    pub use weir_runtime::queue::{Pushed, WhenFull};
    pub use weir_runtime::{
        BoxPublisher, Error, ErrorKind, Publisher, Subscriber, Subscription, sink, source,
    };
    pub use weir_spill::{SpillConfig, SpillQueue};
}
