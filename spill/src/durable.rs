//! The durable ingress: see [`durable`].

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use weir_runtime::metrics::{BufferMetrics, Reason};
use weir_runtime::{Error, Publisher, Subscriber, source};

use crate::source::Acker;
use crate::{REPLAY_READ_AHEAD, SpillConfig, SpillError, SpillLog, SpillMetrics, Spilled};

/// Opens (or reopens) the log in `dir` as the durable ingress `name`, holding at most
/// `max_backlog` items pushed and not yet acknowledged. Records an earlier run left unacknowledged
/// come out of the [`Tail`] first (see [`Durable::recovered`]); the queue's counters and the
/// ledger count them as recovered (taken in, not offered in this run). Call within a tokio
/// runtime (syncs run on its blocking threads). In a pipeline, add the
/// tail with `PipelineBuilder::ingress_durable`: its queue counters are then the stage's.
///
/// A durable ingress: pushes return only once the item is on disk, for services whose
/// "accepted" must survive a crash (an HTTP 202 that means the order will be stored).
///
/// Three parts over one [`SpillLog`]:
/// - [`Durable`], the producers' handle: [`push`](Durable::push) appends the item and waits until
///   its batch is fsynced. Pushes that arrive together share one fsync (group commit): the first
///   waiter whose record is not durable yet runs the sync on a blocking thread while the others
///   wait for its result, and whoever is still not covered leads the next one. The backlog (items
///   pushed and not yet acknowledged) is bounded: beyond `max_backlog` a push is refused at once
///   ([`SpillError::BacklogFull`]), before anything is written.
/// - [`Tail`], a weir publisher of the log's records in order: first what an earlier run left
///   unacknowledged, then every record as its batch is written; it completes once the handle is
///   [closed](Durable::close) and everything written was handed out. It reads on demand,
///   [`REPLAY_READ_AHEAD`] records at a time, so its memory does not grow with the backlog.
/// - [`Acker`], with which the consumer acknowledges records once it has *finished* with them (a
///   database committed them), in order. Acknowledged records are not replayed after a restart.
///
/// Delivery is at-least-once: a crash after the consumer finished with a record and before its
/// acknowledgement reached the log's ledger replays it, so the consumer dedupes (an idempotency
/// key). A push that returned `Ok` is never lost; a push that failed (a disk error during its
/// sync) may still be written by a later sync: the item may arrive although its push failed, never
/// the other way round.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_runtime::sink;
/// use weir_spill::{SpillConfig, durable};
/// let dir = tempfile::tempdir().unwrap();
/// let (orders, tail, acker) = durable::<String>("orders", dir.path(), SpillConfig::new(), 1_000).unwrap();
/// for order in ["a", "b", "c"] {
///     orders.push(&order.to_owned()).await.unwrap(); // on disk when it returns
/// }
/// orders.close();
/// let stored = sink::collect(tail).await.unwrap();
/// acker.ack(stored.len() as u64).unwrap(); // the consumer is done with them
/// assert_eq!(stored, ["a", "b", "c"]);
/// # }
/// ```
pub fn durable<T>(
    name: &str,
    dir: impl AsRef<Path>,
    config: SpillConfig,
    max_backlog: u64,
) -> Result<DurableParts<T>, SpillError> {
    if max_backlog == 0 {
        return Err(SpillError::Config(
            "a durable ingress needs a backlog of at least 1".into(),
        ));
    }
    let log = SpillLog::open(dir, config)?;
    let recovered = log.unread();
    let queue = BufferMetrics::unregistered(name, max_backlog.min(usize::MAX as u64) as usize);
    queue.add_recovered(recovered);
    // The queue is the log's records not yet handed out: the oldest one's age is the log's.
    queue.attach_oldest_age(log.oldest_unread_age());
    let (durable, _) = watch::channel(log.acked() + recovered);
    let last_try = log.untyped();
    let shared = Arc::new(Shared {
        durable,
        leading: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        admit: Mutex::new(()),
        max_backlog,
        recovered,
        queue,
        write_or_give_up: Box::new(move || {
            if last_try.unwritten() == 0 {
                return Ok(());
            }
            last_try
                .flush()
                .map(drop)
                .map_err(|error| (error, last_try.discard_unwritten()))
        }),
    });
    let delivered = Arc::new(Mutex::new(VecDeque::new()));
    let handle = Durable { log, shared };
    let tail = Tail {
        handle: handle.clone(),
        delivered: delivered.clone(),
    };
    let acker = Acker::manual(handle.log.clone(), delivered);
    Ok((handle, tail, acker))
}

/// What [`durable`] opens: the producers' handle, the tail to add to a pipeline, and the acker
/// for the consumer.
pub type DurableParts<T> = (Durable<T>, Tail<T>, Acker<T>);

/// What the handle, its clones and the tail share.
struct Shared {
    /// Every record below this sequence number is durable; also the tail's wake-up.
    durable: watch::Sender<u64>,
    /// A push is running a sync for everyone.
    leading: AtomicBool,
    closed: AtomicBool,
    /// Makes the backlog check and the append one step, so the bound is exact.
    admit: Mutex<()>,
    max_backlog: u64,
    recovered: u64,
    /// The ingress's queue counters: pushes offered, taken in, refused by reason, handed out.
    queue: Arc<BufferMetrics>,
    /// Writes a batch whose write failed once more (nothing if there is none), or gives its
    /// records up (the log counts them in `dropped_unwritten`) and returns the error with how
    /// many: see [`last_try`](Shared::last_try).
    write_or_give_up: Box<dyn Fn() -> Result<(), (SpillError, u64)> + Send + Sync>,
}

impl Shared {
    /// When nothing else will write a batch whose write failed (the handle is closed, or gone):
    /// tries once more, and if that fails, its records leave the queue counted as `spill_failed`.
    fn last_try(&self) -> Result<(), SpillError> {
        (self.write_or_give_up)().map_err(|(error, given_up)| {
            self.queue.record_evicted_n(Reason::SpillFailed, given_up);
            error
        })
    }
}

impl Drop for Shared {
    /// No handle and no tail are left to write a failed batch.
    fn drop(&mut self) {
        let _ = self.last_try();
    }
}

/// The producers' side of a [`durable`] ingress. Cheap to clone.
pub struct Durable<T> {
    log: SpillLog<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Durable<T> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for Durable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("log", &self.log)
            .field("backlog", &self.backlog())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> Durable<T> {
    /// Items pushed (or left by an earlier run) and not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        self.log.next_seq().saturating_sub(self.log.acked())
    }

    /// The most items the backlog holds.
    pub fn max_backlog(&self) -> u64 {
        self.shared.max_backlog
    }

    /// Items an earlier run left unacknowledged: the [`Tail`] hands them out first.
    pub fn recovered(&self) -> u64 {
        self.shared.recovered
    }

    /// The log's counters.
    pub fn metrics(&self) -> Arc<SpillMetrics> {
        self.log.metrics()
    }

    /// The ingress's queue counters (depth: pushed and not yet handed out by the [`Tail`]).
    pub fn queue_metrics(&self) -> Arc<BufferMetrics> {
        self.shared.queue.clone()
    }

    /// Stops taking pushes (they fail with [`SpillError::Closed`]) and writes the current batch,
    /// so that the [`Tail`] hands out every record appended (an abandoned push's too) and then
    /// completes. Pushes waiting for their sync still get it. A failed write is logged and its
    /// records are held in memory: the tail, once it has handed out everything else, tries the
    /// write once more, and if that fails too, counts them as `spill_failed` and ends with the
    /// error.
    pub fn close(&self) {
        {
            // Under the admission lock: no append slips in between the flag and the write.
            let _admit = self.shared.admit.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.closed.store(true, Ordering::Release);
        }
        if let Err(error) = self.log.flush() {
            tracing::error!(dir = %self.log.dir().display(), %error, "closing a durable ingress: its last batch is not written");
        }
        // Wake the tail: it may be waiting for records that will not come.
        self.shared.durable.send_modify(|_| {});
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl<T: Serialize + Send + 'static> Durable<T> {
    /// Appends `item` and waits until it is fsynced, returning its sequence number. Refused at
    /// once, with nothing written, when the backlog is full ([`SpillError::BacklogFull`]), the
    /// disk budget is full ([`SpillError::BudgetFull`]) or the handle is closed. Dropping the
    /// future after the append leaves the item in the log: it is durable with the next sync and
    /// will be handed out (the pusher just does not hear about it).
    pub async fn push(&self, item: &T) -> Result<u64, SpillError> {
        let seq = self.append(std::slice::from_ref(item))?;
        self.wait_durable(seq).await?;
        Ok(seq)
    }

    /// Appends every item of `items`, in order and all or none (the backlog must have room for
    /// all of them), and waits until they are fsynced (one sync for all). Returns the sequence
    /// number of the last. An empty slice is refused ([`SpillError::Config`]). If the disk
    /// budget runs out part way, the items appended before stay (they will be handed out) and
    /// the error says so: `Unwritten` or `BudgetFull` with the count appended in
    /// [`SpillError::Partial`].
    pub async fn push_all(&self, items: &[T]) -> Result<u64, SpillError> {
        if items.is_empty() {
            return Err(SpillError::Config("push_all of no items".into()));
        }
        let seq = self.append(items)?;
        self.wait_durable(seq).await?;
        Ok(seq)
    }

    /// Admits and appends `items`, counting the pushes as the queue's; the last one's sequence
    /// number.
    fn append(&self, items: &[T]) -> Result<u64, SpillError> {
        let queue = &self.shared.queue;
        let n = items.len() as u64;
        queue.add_offered(n);
        let _admit = self.shared.admit.lock().unwrap_or_else(|p| p.into_inner());
        let refused = if self.is_closed() {
            SpillError::Closed
        } else {
            let backlog = self.backlog();
            if backlog + n > self.shared.max_backlog {
                SpillError::BacklogFull {
                    backlog,
                    limit: self.shared.max_backlog,
                }
            } else {
                let mut appended = 0;
                let mut failed = None;
                let mut last = 0;
                for item in items {
                    match self.log.try_append(item) {
                        Ok(seq) => {
                            appended += 1;
                            last = seq;
                        }
                        Err(error) => {
                            failed = Some(error);
                            break;
                        }
                    }
                }
                queue.add_in(appended);
                match failed {
                    None => return Ok(last),
                    Some(error) if appended == 0 => error,
                    Some(error) => {
                        Self::count_refusals(queue, &error, n - appended);
                        return Err(SpillError::Partial {
                            appended,
                            source: Box::new(error),
                        });
                    }
                }
            }
        };
        Self::count_refusals(queue, &refused, n);
        Err(refused)
    }

    fn count_refusals(queue: &BufferMetrics, refused: &SpillError, n: u64) {
        queue.record_shed_n(
            match refused {
                SpillError::Closed => Reason::Closed,
                SpillError::BacklogFull { .. } | SpillError::BudgetFull { .. } => Reason::Full,
                _ => Reason::SpillFailed,
            },
            n,
        );
    }

    /// Waits until record `seq` is durable, leading a sync when nobody else is.
    async fn wait_durable(&self, seq: u64) -> Result<(), SpillError> {
        let mut durable = self.shared.durable.subscribe();
        loop {
            if *durable.borrow_and_update() > seq {
                return Ok(());
            }
            if !self.shared.leading.swap(true, Ordering::AcqRel) {
                // This push leads: one fsync for every record appended so far. The guard hands
                // the lead back (and wakes the others) even if this future is dropped meanwhile.
                let _lead = Lead(&self.shared);
                let log = self.log.clone();
                let synced = tokio::task::spawn_blocking(move || log.sync())
                    .await
                    .map_err(|join| SpillError::Io {
                        stage: "sync",
                        path: self.log.dir().to_owned(),
                        source: std::io::Error::other(join.to_string()),
                    })?;
                let written = synced?;
                self.shared.durable.send_if_modified(|d| {
                    let advanced = written.durable > *d;
                    *d = (*d).max(written.durable);
                    advanced
                });
                continue;
            }
            if durable.changed().await.is_err() {
                return Err(SpillError::Closed);
            }
        }
    }
}

/// Hands the sync lead back on drop and wakes the waiters, one of whom leads next if needed.
struct Lead<'a>(&'a Shared);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.leading.store(false, Ordering::Release);
        self.0.durable.send_modify(|_| {});
    }
}

/// The records of a [`durable`] ingress as a weir publisher, in order, following the log as it
/// grows; it completes once the handle is closed and every record written was handed out.
/// Serves one subscriber (subscribing consumes it).
pub struct Tail<T> {
    handle: Durable<T>,
    delivered: Arc<Mutex<VecDeque<u64>>>,
}

impl<T> fmt::Debug for Tail<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tail")
            .field("log", &self.handle.log)
            .finish()
    }
}

impl<T> Tail<T> {
    /// The ingress's handle (to close it when the pipeline drains, to read its counters).
    pub fn handle(&self) -> &Durable<T> {
        &self.handle
    }
}

struct Reading<T> {
    log: SpillLog<T>,
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    delivered: Arc<Mutex<VecDeque<u64>>>,
    ahead: VecDeque<Spilled<T>>,
    /// The sequence number of the next record to hand out: a record read after a gap means the
    /// records in the gap were skipped as corrupt (`OnCorruption::Skip`) and leave the queue.
    next_seq: u64,
    /// A read failed: handed on once the records read before it (in `ahead`) are out.
    error: Option<Error>,
    failed: bool,
}

impl<T> Reading<T> {
    /// Counts the records below `seq` not handed out (skipped as corrupt) as leaving the queue.
    fn skipped_up_to(&mut self, seq: u64) {
        if seq > self.next_seq {
            let skipped = seq - self.next_seq;
            self.next_seq = seq;
            self.shared.queue.record_evicted_n(Reason::Corrupt, skipped);
        }
    }
}

impl<T: DeserializeOwned> Reading<T> {
    /// The next record: read ahead on demand, waiting for new records while the handle is open.
    async fn next(&mut self) -> Option<Result<T, Error>> {
        loop {
            if let Some(record) = self.ahead.pop_front() {
                self.skipped_up_to(record.seq);
                self.next_seq = record.seq + 1;
                self.delivered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(record.seq);
                self.shared.queue.add_out(1);
                return Some(Ok(record.item));
            }
            if let Some(error) = self.error.take() {
                self.failed = true;
                return Some(Err(error));
            }
            if self.failed {
                return None;
            }
            // Seen before reading: a record written after this read wakes the wait below.
            self.durable.borrow_and_update();
            let closed = self.shared.closed.load(Ordering::Acquire);
            match self.log.read_batch(REPLAY_READ_AHEAD, &mut self.ahead) {
                Ok(0) => {
                    // Nothing left to read: whatever the reader passed was skipped.
                    self.skipped_up_to(self.log.next_unread());
                    if closed {
                        let unread = self.log.unread();
                        if unread == 0 {
                            return None;
                        }
                        if unread == self.log.unwritten() {
                            // All that is left is a batch whose write failed, and the handle
                            // is closed: this is the last try to write it.
                            if let Err(error) = self.shared.last_try() {
                                self.failed = true;
                                return Some(Err(Error::from(error).in_stage("durable_tail")));
                            }
                            continue;
                        }
                    }
                    if self.durable.changed().await.is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    // The good records read before the failure (in `ahead`) go out first.
                    self.error = Some(Error::from(error).in_stage("durable_tail"));
                }
            }
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Publisher<T> for Tail<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let Durable { log, shared } = self.handle;
        let reading = Reading {
            durable: shared.durable.subscribe(),
            next_seq: log.next_unread(),
            log,
            shared,
            delivered: self.delivered,
            ahead: VecDeque::new(),
            error: None,
            failed: false,
        };
        let records = futures::stream::unfold(reading, |mut reading| async move {
            reading.next().await.map(|record| (record, reading))
        });
        // The stream task takes no record ahead of demand: one it held when the subscriber left
        // would count as gone, yet it stays in the log for the next run (records read into
        // `ahead` count as out of the queue only once handed over).
        source::from_try_stream(records)
            .on_demand_only()
            .subscribe(subscriber);
    }
}
