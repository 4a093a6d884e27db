//! The connector's typed errors. Each says what was being done and with which stream, subject or
//! server, and keeps the client library's error as its [`source`](std::error::Error::source).
//! Streams fail with a weir [`Error`](weir_runtime::Error) that wraps a [`NatsError`] and names the
//! stage.

use std::error::Error as StdError;

/// Why talking to NATS JetStream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// No server answered at `url` (refused, timed out, unresolvable).
    #[error("cannot reach a NATS server at `{url}`")]
    Unreachable {
        /// The address tried.
        url: String,
        /// What the client reported.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A server address could not be parsed.
    #[error("`{url}` is not a NATS server address")]
    BadAddress {
        /// The address given.
        url: String,
        /// What was wrong with it.
        #[source]
        source: std::io::Error,
    },
    /// The stream does not exist.
    #[error("JetStream stream `{stream}` does not exist")]
    StreamNotFound {
        /// The stream's name.
        stream: String,
    },
    /// The stream exists but does not take `subject`.
    #[error("subject `{subject}` is not bound to stream `{stream}` (its subjects: {bound:?})")]
    SubjectNotBound {
        /// The subject the sink publishes to.
        subject: String,
        /// The stream that was expected to take it.
        stream: String,
        /// The subjects the stream takes.
        bound: Vec<String>,
    },
    /// A publish found no stream listening on its subject (the stream was deleted, or JetStream
    /// stayed unavailable past the retry deadline).
    #[error("no JetStream stream takes subject `{subject}`")]
    NoStreamForSubject {
        /// The subject published to.
        subject: String,
    },
    /// The durable consumer does not exist on the stream.
    #[error("consumer `{consumer}` does not exist on JetStream stream `{stream}`")]
    ConsumerNotFound {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
    },
    /// The consumer is not a pull consumer, or it was deleted while the source ran.
    #[error("consumer `{consumer}` on stream `{stream}` cannot serve pulls: {reason}")]
    ConsumerUnusable {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// What the server said.
        reason: String,
    },
    /// A broker operation failed: `action` says which, `source` why.
    #[error("{action}")]
    Broker {
        /// What was being done ("publish to `orders.new`", "read consumer info").
        action: String,
        /// The client library's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// An item could not be encoded or decoded (the spill store's records).
    #[error("{action}")]
    Codec {
        /// What was being encoded or decoded.
        action: String,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },
}

impl NatsError {
    /// A broker failure while doing `action`.
    pub(crate) fn broker(
        action: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        NatsError::Broker {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// This error as a weir stream error naming `stage`.
    pub fn in_stage(self, stage: &str) -> weir_runtime::Error {
        weir_runtime::Error::failed(self).in_stage(stage.to_owned())
    }
}
