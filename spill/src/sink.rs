//! [`spill_to_disk`]: a weir [`Subscriber`] that writes every item to a [`SpillLog`].
//!
//! It requests `batch_records` items at a time and writes each window as one batch (fsync per
//! policy), so demand, batching and durability line up: when its request is renewed, the previous
//! window is written. When the publisher pauses (`on_flush`) the partial batch is written too. When
//! the budget is full the log's [`BudgetFull`](crate::BudgetFull) decides: `Reject` fails the stream,
//! `Block` holds the calling thread up to its timeout (run the sink behind a boundary then).
//! Acknowledgement happens downstream of the log: whoever replays it ([`crate::replay`]).
//!
//! A failed write fails the stream with [`SpillError::Unwritten`], whose count is every item the
//! sink received and did not write: the records of the failed batch (given up) and the item the
//! log refused. Everything before them is written. The sink cancels its upstream then; items that
//! still arrive (a publisher may emit what was requested before it sees the cancel) are not
//! written either. All of them are counted in the log's `dropped_unwritten`.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::oneshot;
use weir_runtime::{Error, Subscriber, Subscription};

use crate::{SpillConfig, SpillError, SpillLog, SpillMetrics, Written};

/// What a finished [`SpillSink`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkReport {
    /// Items written by this sink.
    pub records: u64,
    /// The log's position when the stream ended.
    pub written: Written,
}

/// Resolves when the sink's stream ends: its report, or the error that ended it.
#[derive(Debug)]
pub struct SinkOutcome(oneshot::Receiver<Result<SinkReport, Error>>);

impl std::future::Future for SinkOutcome {
    type Output = Result<SinkReport, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|received| {
            received.unwrap_or_else(|_| {
                Err(Error::msg(
                    "the publisher dropped the spill sink without a terminal signal",
                ))
            })
        })
    }
}

/// Opens a log in `dir` and returns a sink writing into it, with its outcome.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::{Publisher, source};
/// use weir_spill::{SpillConfig, spill_to_disk};
/// let dir = tempfile::tempdir().unwrap();
/// let (sink, outcome) = spill_to_disk::<u64>(dir.path(), SpillConfig::new()).unwrap();
/// source::from_iter(0..10u64).subscribe(sink);
/// let report = outcome.await.unwrap();
/// assert_eq!(report.records, 10);
/// assert_eq!(report.written.durable, 10);
/// # }
/// ```
pub fn spill_to_disk<T: Serialize + Send + 'static>(
    dir: impl AsRef<Path>,
    config: SpillConfig,
) -> Result<(SpillSink<T>, SinkOutcome), SpillError> {
    Ok(SpillSink::new(SpillLog::open(dir, config)?))
}

/// The subscriber behind [`spill_to_disk`].
pub struct SpillSink<T> {
    log: SpillLog<T>,
    window: u64,
    received: u64,
    records: u64,
    subscription: Option<Subscription>,
    done: Option<oneshot::Sender<Result<SinkReport, Error>>>,
}

impl<T> fmt::Debug for SpillSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillSink")
            .field("log", &self.log)
            .field("records", &self.records)
            .finish()
    }
}

impl<T> SpillSink<T> {
    /// A sink writing into `log` (shared: keep a clone to replay or acknowledge).
    pub fn new(log: SpillLog<T>) -> (Self, SinkOutcome) {
        let (done, outcome) = oneshot::channel();
        let window = log.config().batch_records as u64;
        (
            Self {
                log,
                window,
                received: 0,
                records: 0,
                subscription: None,
                done: Some(done),
            },
            SinkOutcome(outcome),
        )
    }

    /// The log this sink writes into.
    pub fn log(&self) -> &SpillLog<T> {
        &self.log
    }

    fn finish(&mut self, result: Result<(), Error>) {
        self.subscription = None;
        if let Some(done) = self.done.take() {
            let result = result.and_then(|()| match self.log.flush() {
                Ok(written) => Ok(SinkReport {
                    records: self.records,
                    written,
                }),
                Err(error) => Err(self.not_written(error, 0)),
            });
            let _ = done.send(result);
        }
    }

    /// The stream's error after `error` from the log, naming every item received and not
    /// written: the records the log could not write (given up here: the sink does not retry) and
    /// `refused` items the log did not take.
    fn not_written(&self, error: SpillError, refused: u64) -> Error {
        SpillMetrics::add(&self.log.metrics().dropped_unwritten, refused);
        let lost = self.log.discard_unwritten() + refused;
        let error = match error {
            _ if lost == 0 => error,
            SpillError::Unwritten { source, .. } => SpillError::Unwritten {
                records: lost,
                source,
            },
            other => SpillError::Unwritten {
                records: lost,
                source: Box::new(other),
            },
        };
        Error::from(error).in_stage("spill_to_disk")
    }

    fn fail(&mut self, error: SpillError, refused: u64) {
        if let Some(subscription) = self.subscription.take() {
            subscription.cancel();
        }
        let error = self.not_written(error, refused);
        self.finish(Err(error));
    }
}

impl<T: Serialize + Send + 'static> Subscriber<T> for SpillSink<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        if self.subscription.is_some() || self.done.is_none() {
            subscription.cancel(); // rule 2.5
            return;
        }
        subscription.request(self.window);
        self.subscription = Some(subscription);
    }

    fn on_next(&mut self, item: T) {
        if self.done.is_none() {
            // Failed: an item requested before the cancel (rule 2.8). Not written, counted.
            SpillMetrics::add(&self.log.metrics().dropped_unwritten, 1);
            return;
        }
        if let Err(error) = self.log.append(&item) {
            self.fail(error, 1);
            return;
        }
        self.records += 1;
        self.received += 1;
        if self.received == self.window {
            self.received = 0;
            if let Err(error) = self.log.flush() {
                self.fail(error, 0);
                return;
            }
            if let Some(subscription) = &self.subscription {
                subscription.request(self.window);
            }
        }
    }

    fn on_error(&mut self, error: Error) {
        // What arrived before the failure is kept: write it, then report the upstream's error
        // (the cause of the end). Items that cannot be written are counted and logged.
        if let Err(write) = self.log.flush() {
            let lost = self.log.discard_unwritten();
            tracing::error!(records = lost, error = %write, "spill_to_disk: the upstream failed, and items received before it could not be written");
        }
        self.finish(Err(error));
    }

    fn on_complete(&mut self) {
        self.finish(Ok(()));
    }

    fn on_flush(&mut self) {
        if self.done.is_some()
            && let Err(error) = self.log.flush()
        {
            self.fail(error, 0);
        }
    }
}
