//! Counters of the connector's stages, as serde snapshots.
//!
//! A source counts every message the broker delivered and how each was settled, so that
//! `fetched = acked + filtered + naked + termed + abandoned + released + excess + held` where
//! `held` is what is still somewhere in the pipeline ([`SourceSnapshot::unsettled`]). It also
//! keeps the consumer's lag as the server reports it (polled every `lag_interval`): messages
//! not yet delivered (`num_pending`) and delivered but not yet acknowledged (`num_ack_pending`),
//! with the settle rate, which together say whether the pipeline keeps up
//! ([`SourceSnapshot::readiness`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Live counters of one JetStream source. Shared (`Arc`) between the source and its readers.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    name: String,
    pub(crate) fetched: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) pulls: AtomicU64,
    pub(crate) pulls_expired: AtomicU64,
    pub(crate) pulls_lost: AtomicU64,
    pub(crate) excess: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) naked: AtomicU64,
    pub(crate) termed: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) progress: AtomicU64,
    pub(crate) ack_send_failed: AtomicU64,
    pub(crate) outstanding: AtomicU64,
    pub(crate) num_pending: AtomicU64,
    pub(crate) num_ack_pending: AtomicU64,
    pub(crate) num_waiting: AtomicU64,
    pub(crate) num_redelivered: AtomicU64,
    /// Messages settled per second over the last lag interval, as `f64` bits.
    pub(crate) settle_rate: AtomicU64,
    pub(crate) lag_known: AtomicBool,
    pub(crate) lag_errors: AtomicU64,
}

impl SourceMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn settled(&self) -> u64 {
        [
            &self.acked,
            &self.filtered,
            &self.naked,
            &self.termed,
            &self.abandoned,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> SourceSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lag_known = self.lag_known.load(Ordering::Relaxed);
        SourceSnapshot {
            name: self.name.clone(),
            fetched: get(&self.fetched),
            emitted: get(&self.emitted),
            pulls: get(&self.pulls),
            pulls_expired: get(&self.pulls_expired),
            pulls_lost: get(&self.pulls_lost),
            outstanding: get(&self.outstanding),
            excess: get(&self.excess),
            released: get(&self.released),
            acked: get(&self.acked),
            filtered: get(&self.filtered),
            naked: get(&self.naked),
            termed: get(&self.termed),
            abandoned: get(&self.abandoned),
            progress: get(&self.progress),
            ack_send_failed: get(&self.ack_send_failed),
            lag: lag_known.then(|| ConsumerLag {
                num_pending: get(&self.num_pending),
                num_ack_pending: get(&self.num_ack_pending),
                num_waiting: get(&self.num_waiting),
                num_redelivered: get(&self.num_redelivered),
                settled_per_sec: f64::from_bits(get(&self.settle_rate)),
            }),
            lag_errors: get(&self.lag_errors),
        }
    }
}

/// The consumer's lag, as the server last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerLag {
    /// Messages in the stream not yet delivered to the consumer.
    pub num_pending: u64,
    /// Messages delivered (to any process sharing the consumer) and not yet acknowledged.
    pub num_ack_pending: u64,
    /// Pull requests waiting at the server.
    pub num_waiting: u64,
    /// Messages delivered more than once.
    pub num_redelivered: u64,
    /// Messages this source settled per second over the last interval.
    pub settled_per_sec: f64,
}

impl ConsumerLag {
    /// The backlog (pending plus unacknowledged).
    pub fn backlog(&self) -> u64 {
        self.num_pending + self.num_ack_pending
    }

    /// How long the backlog takes at the current settle rate (`None` when nothing settles).
    pub fn backlog_secs(&self) -> Option<f64> {
        (self.settled_per_sec > 0.0).then(|| self.backlog() as f64 / self.settled_per_sec)
    }
}

/// Everything a JetStream source counted at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// The stage's name.
    pub name: String,
    /// Messages the broker delivered to this source.
    pub fetched: u64,
    /// Deliveries handed downstream.
    pub emitted: u64,
    /// Pull requests sent.
    pub pulls: u64,
    /// Pull requests that ended before they were filled (the stream had nothing more).
    pub pulls_expired: u64,
    /// Pull requests given up for lost (a reconnect, or no answer past their expiry).
    pub pulls_lost: u64,
    /// Messages asked for and not yet arrived.
    pub outstanding: u64,
    /// Messages that arrived with no demand for them (after a pull was given up for lost): nak'ed.
    pub excess: u64,
    /// Messages that arrived after the subscriber cancelled: nak'ed.
    pub released: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries acknowledged as filtered out.
    pub filtered: u64,
    /// Deliveries nak'ed (redelivered).
    pub naked: u64,
    /// Deliveries terminated (never redelivered).
    pub termed: u64,
    /// Deliveries dropped undecided (nak'ed, redelivered).
    pub abandoned: u64,
    /// Work-in-progress signals sent.
    pub progress: u64,
    /// Settlements that could not be sent (the broker redelivers after the ack wait): refused by
    /// the client, still queued when the runtime shut down, or the naks of `released` messages
    /// still held when the source's task was dropped.
    pub ack_send_failed: u64,
    /// The consumer's lag (`None` until the server answered once).
    pub lag: Option<ConsumerLag>,
    /// Lag polls that failed.
    pub lag_errors: u64,
}

impl SourceSnapshot {
    /// Deliveries emitted and not yet settled: still in the pipeline.
    pub fn unsettled(&self) -> u64 {
        let settled = self.acked + self.filtered + self.naked + self.termed + self.abandoned;
        self.emitted.saturating_sub(settled)
    }

    /// Whether the consumer keeps up: its backlog drains within `budget` at the settle rate.
    /// `Err` gives the reason.
    pub fn readiness(&self, budget: Duration) -> Result<(), String> {
        let Some(lag) = &self.lag else {
            return Err(format!(
                "source `{}`: consumer lag not known yet",
                self.name
            ));
        };
        if lag.backlog() == 0 {
            return Ok(());
        }
        match lag.backlog_secs() {
            Some(secs) if secs <= budget.as_secs_f64() => Ok(()),
            Some(secs) => Err(format!(
                "source `{}`: a backlog of {} messages needs {secs:.2}s at {:.0}/s (budget {budget:?})",
                self.name,
                lag.backlog(),
                lag.settled_per_sec
            )),
            None => Err(format!(
                "source `{}`: a backlog of {} messages is not draining",
                self.name,
                lag.backlog()
            )),
        }
    }
}

/// Live counters of one JetStream sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    name: String,
    pub(crate) published: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight_seen: AtomicU64,
}

impl SinkMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// A publish starts: in flight until the returned guard goes. A guard that goes before
    /// [`Publishing::answered`] was called (the publish was dropped unanswered: the sink failed
    /// or was aborted) counts the publish as cancelled.
    pub(crate) fn start_publish(self: &Arc<Self>) -> Publishing {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight_seen.fetch_max(now, Ordering::AcqRel);
        Publishing {
            metrics: self.clone(),
            answered: false,
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> SinkSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkSnapshot {
            name: self.name.clone(),
            published: get(&self.published),
            duplicates: get(&self.duplicates),
            retries: get(&self.retries),
            failed: get(&self.failed),
            cancelled: get(&self.cancelled),
            in_flight: get(&self.in_flight),
            max_in_flight_seen: get(&self.max_in_flight_seen),
        }
    }
}

/// One publish in flight (see [`SinkMetrics::start_publish`]).
pub(crate) struct Publishing {
    metrics: Arc<SinkMetrics>,
    answered: bool,
}

impl Publishing {
    /// The broker answered (confirmed, or the publish failed for good).
    pub(crate) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.answered {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything a JetStream sink counted at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkSnapshot {
    /// The stage's name.
    pub name: String,
    /// Publishes the broker confirmed (duplicates included).
    pub published: u64,
    /// Confirmed publishes the broker recognised as duplicates of an earlier message id (stored once).
    pub duplicates: u64,
    /// Publish attempts repeated after a transient error.
    pub retries: u64,
    /// Items given up on (the stream failed with the error).
    pub failed: u64,
    /// Items dropped before the broker confirmed them, queued or in flight (the sink failed on
    /// another item, was aborted, or its runtime shut down): their acknowledgements left
    /// unsettled (a delivery in them is redelivered).
    #[serde(default)]
    pub cancelled: u64,
    /// Publishes awaiting the broker's confirmation now.
    pub in_flight: u64,
    /// The most publishes ever awaiting confirmation at once.
    pub max_in_flight_seen: u64,
}
