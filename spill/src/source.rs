//! [`replay`]: a weir [`Publisher`] of the records of a [`SpillLog`], read on demand.
//!
//! It emits the unacknowledged records present when it runs (after a restart: everything not
//! acknowledged before the crash) and completes when it has caught up with the written end of the
//! log. Reads are demand-driven: records are read from disk when the subscriber has asked for them,
//! [`REPLAY_READ_AHEAD`] at a time with [`SpillLog::read_batch`] (records read ahead and not delivered when
//! the stream is cancelled are handed back to the log's reader, not lost); only the first record is
//! read at subscription, so that an unreadable log fails at once (`on_subscribe` then `on_error`).
//!
//! Acknowledgement, two modes:
//! - [`replay`] acknowledges a record once the subscriber's `on_next` for it has returned (when the
//!   next record is pulled, or at the end). For a fused, synchronous chain that is "processed";
//!   behind an async boundary it is only "handed over": use the manual mode there.
//! - [`replay_with_acker`] acknowledges nothing by itself: the consumer calls [`Acker::ack`]`(n)`
//!   when it has processed `n` more records, in order (acknowledgement is cumulative, FIFO).
//!
//! Either way delivery is at-least-once: records delivered but not acknowledged (or acknowledged
//! after the ledger's last persist) are replayed after a crash. A read error (a corrupt record under
//! [`OnCorruption::Fail`](crate::OnCorruption::Fail)) ends the stream with `on_error`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use weir_runtime::{Error, Publisher, Subscriber, Subscription, reject, source};

use crate::{SpillError, SpillLog, Spilled};

/// Records a replay reads per [`SpillLog::read_batch`]: enough to amortise the reader's lock and
/// position update (~32 KiB of 256-byte records: the decoded batch stays in the L2 cache; 1,024 at a
/// time measured slower than 128), few enough that a slow subscriber does not hold
/// much decoded data.
pub const REPLAY_READ_AHEAD: usize = 128;

/// Replays `log`, acknowledging each record once `on_next` for it returned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::sink;
/// use weir_spill::{SpillConfig, SpillLog, replay};
/// let dir = tempfile::tempdir().unwrap();
/// let log = SpillLog::<u64>::open(dir.path(), SpillConfig::new()).unwrap();
/// for x in 0..5 {
///     log.append(&x).unwrap();
/// }
/// log.flush().unwrap();
/// assert_eq!(sink::collect(replay(log.clone())).await.unwrap(), vec![0, 1, 2, 3, 4]);
/// assert_eq!(log.acked(), 5);
/// # }
/// ```
pub fn replay<T>(log: SpillLog<T>) -> Replay<T> {
    Replay {
        log,
        delivered: None,
    }
}

/// Replays `log` without acknowledging: the [`Acker`] acknowledges processed records, in order.
pub fn replay_with_acker<T>(log: SpillLog<T>) -> (Replay<T>, Acker<T>) {
    let delivered = Arc::new(Mutex::new(VecDeque::new()));
    (
        Replay {
            log: log.clone(),
            delivered: Some(delivered.clone()),
        },
        Acker { log, delivered },
    )
}

/// See [`replay`]. Serves one subscriber (subscribing consumes it).
pub struct Replay<T> {
    log: SpillLog<T>,
    delivered: Option<Arc<Mutex<VecDeque<u64>>>>,
}

impl<T> fmt::Debug for Replay<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("log", &self.log)
            .field("manual_ack", &self.delivered.is_some())
            .finish()
    }
}

/// Acknowledges records delivered by a [`replay_with_acker`] source, oldest first.
pub struct Acker<T> {
    log: SpillLog<T>,
    delivered: Arc<Mutex<VecDeque<u64>>>,
}

impl<T> Clone for Acker<T> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            delivered: self.delivered.clone(),
        }
    }
}

impl<T> fmt::Debug for Acker<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker").field("log", &self.log).finish()
    }
}

impl<T> Acker<T> {
    /// An acker of the records whose sequence numbers a publisher pushes into `delivered`.
    pub(crate) fn manual(log: SpillLog<T>, delivered: Arc<Mutex<VecDeque<u64>>>) -> Self {
        Self { log, delivered }
    }

    /// Acknowledges the `n` oldest delivered, unacknowledged records (fewer if fewer were
    /// delivered). Returns how many were acknowledged.
    pub fn ack(&self, n: u64) -> Result<u64, SpillError> {
        let last = {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            let n = n.min(delivered.len() as u64) as usize;
            let last = delivered.drain(..n).next_back();
            last.map(|seq| (seq, n as u64))
        };
        match last {
            Some((seq, n)) => self.log.ack_through(seq + 1).map(|()| n),
            None => Ok(0),
        }
    }

    /// Records delivered and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64
    }
}

type ErrorSlot = Arc<Mutex<Option<SpillError>>>;

impl<T: DeserializeOwned + Send + 'static> Publisher<T> for Replay<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        // Read the first record now: a log that cannot be read fails at once, before any demand
        // (rule 1.4), with `on_subscribe` then `on_error`.
        let first = match self.log.read() {
            Ok(first) => first,
            Err(error) => {
                reject(subscriber, Error::from(error).in_stage("spill_replay"));
                return;
            }
        };
        let error: ErrorSlot = Arc::default();
        let records = Records {
            done: first.is_none(),
            ahead: first.into_iter().collect(),
            failed: None,
            log: self.log,
            delivered: self.delivered,
            last: None,
            error: error.clone(),
        };
        source::from_iter(records).subscribe(RelayErrors {
            inner: subscriber,
            error,
        });
    }
}

/// The iterator the runtime's `from_iter` drains on demand.
struct Records<T> {
    log: SpillLog<T>,
    delivered: Option<Arc<Mutex<VecDeque<u64>>>>,
    /// Records read and not yet handed out (the first one is read at subscription).
    ahead: VecDeque<Spilled<T>>,
    /// An error met while reading ahead, reported once the records read before it are handed out.
    failed: Option<SpillError>,
    /// Automatic mode: the record handed out last, acknowledged when the next one is pulled.
    last: Option<u64>,
    error: ErrorSlot,
    done: bool,
}

impl<T> Records<T> {
    fn ack_last(&mut self) -> Result<(), SpillError> {
        match self.last.take() {
            Some(seq) => self.log.ack_through(seq + 1),
            None => Ok(()),
        }
    }

    fn stop(&mut self, error: SpillError) -> Option<T> {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.done = true;
        None
    }
}

impl<T: DeserializeOwned> Iterator for Records<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.done {
            return None;
        }
        if let Err(error) = self.ack_last() {
            return self.stop(error);
        }
        if self.ahead.is_empty() {
            if let Some(error) = self.failed.take() {
                return self.stop(error);
            }
            if let Err(error) = self.log.read_batch(REPLAY_READ_AHEAD, &mut self.ahead) {
                self.failed = Some(error);
            }
        }
        match self.ahead.pop_front() {
            Some(record) => {
                match &self.delivered {
                    Some(delivered) => delivered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(record.seq),
                    None => self.last = Some(record.seq),
                }
                Some(record.item)
            }
            None => match self.failed.take() {
                Some(error) => self.stop(error),
                None => {
                    self.done = true;
                    None
                }
            },
        }
    }
}

impl<T> Drop for Records<T> {
    fn drop(&mut self) {
        // Cancelled after an item was handed out: it was delivered, acknowledge it.
        if let Err(error) = self.ack_last() {
            tracing::warn!(%error, "acknowledging the last replayed record failed");
        }
        // Read ahead but never handed out: give them back, so that a later reader of this log
        // delivers them (they are not acknowledged, so a restart would replay them anyway).
        if let Some(first) = self.ahead.front() {
            self.log.unread_from(first.seq);
        }
    }
}

/// Turns the completion that follows a read error into `on_error`.
struct RelayErrors<S> {
    inner: S,
    error: ErrorSlot,
}

impl<T, S: Subscriber<T>> Subscriber<T> for RelayErrors<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.inner.on_subscribe(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        self.inner.on_next(item);
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        self.inner.try_on_next(item)
    }

    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: weir_runtime::Burst<Item = T>,
    {
        self.inner.try_on_next_iter(items, limit)
    }

    #[inline]
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize) {
        self.inner.try_on_next_chunk(chunk, limit)
    }

    fn on_error(&mut self, error: Error) {
        self.inner.on_error(error);
    }

    fn on_complete(&mut self) {
        let failed = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
        match failed {
            Some(error) => self
                .inner
                .on_error(Error::from(error).in_stage("spill_replay")),
            None => self.inner.on_complete(),
        }
    }

    fn on_flush(&mut self) {
        self.inner.on_flush();
    }
}
