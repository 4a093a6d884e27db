//! A source's settings, and the handle that stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::task::AtomicWaker;

use crate::NatsError;

/// Settings of a [`JetStreamSource`](crate::source::JetStreamSource).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub(super) name: String,
    pub(super) stream: String,
    pub(super) consumer: String,
    pub(super) max_batch: usize,
    pub(super) max_pulls: usize,
    pub(super) expires: Duration,
    pub(super) lag_interval: Duration,
    pub(super) unavailable_timeout: Duration,
}

impl SourceConfig {
    /// A source named `name` (its stage name) reading the durable pull consumer `consumer` of
    /// `stream`. Defaults: pulls of at most 256 messages, 2 waiting at once, expiring after 2 s;
    /// lag polled every second; JetStream may be unavailable for 60 s before the stream fails.
    pub fn new(name: &str, stream: &str, consumer: &str) -> Self {
        Self {
            name: name.to_owned(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            max_batch: 256,
            max_pulls: 2,
            expires: Duration::from_secs(2),
            lag_interval: Duration::from_secs(1),
            unavailable_timeout: Duration::from_secs(60),
        }
    }

    /// The most messages one pull asks for (at least 1).
    pub fn max_batch(mut self, messages: usize) -> Self {
        self.max_batch = messages;
        self
    }

    /// How many pulls may wait at the server at once (at least 1; 2 keeps the next batch coming
    /// while the last one is processed).
    pub fn max_pulls(mut self, pulls: usize) -> Self {
        self.max_pulls = pulls;
        self
    }

    /// How long a pull waits at the server for messages (at least 1 ms). Also bounds how long
    /// [`SourceStop::stop`] takes.
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }

    /// How often the consumer's lag is read from the server.
    pub fn lag_interval(mut self, interval: Duration) -> Self {
        self.lag_interval = interval;
        self
    }

    /// How long pulls may find no JetStream responders before the stream fails.
    pub fn unavailable_timeout(mut self, timeout: Duration) -> Self {
        self.unavailable_timeout = timeout;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn check(&self) -> Result<(), NatsError> {
        let bad = |what: &str| {
            Err(NatsError::ConsumerUnusable {
                stream: self.stream.clone(),
                consumer: self.consumer.clone(),
                reason: format!("source `{}`: {what}", self.name),
            })
        };
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1");
        }
        if self.max_pulls == 0 {
            return bad("max_pulls must be at least 1");
        }
        if self.expires < Duration::from_millis(1) {
            return bad("expires must be at least 1 ms");
        }
        Ok(())
    }
}

/// Ends a [`JetStreamSource`](crate::source::JetStreamSource)'s stream gracefully; see [`SourceStop::stop`].
#[derive(Debug, Clone, Default)]
pub struct SourceStop(pub(super) Arc<StopState>);

#[derive(Debug, Default)]
pub(super) struct StopState {
    pub(super) stopped: AtomicBool,
    pub(super) waker: AtomicWaker,
}

impl SourceStop {
    /// Stops pulling: pulls waiting at the server run out (within the source's `expires`), what
    /// they deliver is emitted, then the stream completes.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }
}
