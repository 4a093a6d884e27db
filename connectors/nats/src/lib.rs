//! NATS JetStream for weir: pipelines that meet across machines through a clustered broker, with
//! demand kept end to end.
//!
//! - [`JetStreamSource`](crate::source::JetStreamSource): a durable pull consumer whose pulls follow downstream demand
//!   (`request(n)` becomes pulls of at most `n` messages, never more asked of the broker than
//!   requested). Each item is a [`Delivery`](crate::delivery::Delivery) carrying its [`Ack`](crate::delivery::Ack): acknowledged when the
//!   pipeline is done with it, nak'ed (redelivered) when it fails or is dropped undecided,
//!   redelivered by the broker after the ack wait if the process dies.
//! - [`JetStreamSink`](crate::sink::JetStreamSink): publishes with JetStream acknowledgements and message ids (the broker's
//!   duplicate window dedupes retries), at most `max_in_flight` unconfirmed; retries transient
//!   errors with backoff; settles the input's [`Ack`](crate::delivery::Ack) once its output is stored.
//! - [`JetStreamSpillStore`](crate::spill::JetStreamSpillStore): a spill store for an ingress (`ingress::spilling`) backed by a
//!   JetStream stream, so overflow goes to the broker instead of a local disk.
//! - [`local`]: `nats-server` processes on loopback for tests, examples and benchmarks.
//!
//! Processes that share one durable consumer split its messages between them: that is how a
//! pipeline scales out (`examples/scale_out.rs`, `SCALING.md`).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weir_nats::{sink::{JetStreamSink, OutMessage, SinkConfig}, source::{JetStreamSource, SourceConfig}};
//! use weir_operators::PublisherExt;
//!
//! let jetstream = async_nats::jetstream::new(weir_nats::connect("nats://127.0.0.1:4222").await?);
//! let orders = JetStreamSource::bind(&jetstream, SourceConfig::new("orders", "ORDERS", "billing")).await?;
//! let invoices = JetStreamSink::bind(&jetstream, SinkConfig::new("invoices", "INVOICES", "invoices.new")).await?;
//! // Each invoice is stored before its order is acknowledged; a redelivered order is deduped.
//! let priced = orders.map(|order| order.map(|m| OutMessage::new(m.payload)));
//! invoices.run(priced).await?;
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod connect;
pub mod delivery;
mod error;
pub mod local;
mod metrics;
pub mod sink;
pub mod source;
pub mod spill;

pub use async_nats;
pub use connect::{CONNECT_TIMEOUT, connect, connect_with, install_crypto_provider};
pub use error::NatsError;
pub use metrics::{ConsumerLag, SinkMetrics, SinkSnapshot, SourceMetrics, SourceSnapshot};
