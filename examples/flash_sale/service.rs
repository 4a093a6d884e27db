//! The order service: one weir pipeline behind an HTTP front.
//!
//! ```text
//! POST /checkout -> [checkout: durable log, 429 when full] --8--\
//!                                                               priority lanes -> authorise
//! POST /import ---> [import: durable log, 429 when full]   --1--/   (breaker, retry) -> batch -> database
//! ```
//!
//! A 202 is given only once the order is fsynced in its lane's log (many requests share one fsync),
//! and a log forgets an order only after the database committed it: an order that got a 202
//! reaches the database even if the process is killed (a restart replays what was not committed;
//! the idempotency key makes a replay of a committed order a no-op). The report checks
//! `lost = accepted + replayed - rows added - duplicates = 0`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir::dsl::{
    Pipeline, PipelineAbort, PipelineError, PipelineHandle, PipelineSnapshot, Readiness,
};
use weir::operators::{Breaker, BreakerConfig, BreakerState, PublisherExt, Rejected, RetryPolicy};
use weir::runtime::ingress::{IngressHandle, Overflow};
use weir::spill::{Acker, Durable, SpillConfig, SpillError, durable};

use crate::db::Database;
use crate::order::{Accepted, Lane, Payment, Settled, unix_micros};
use crate::stats::{Histogram, Rng};

/// Where orders enter a lane.
enum Door {
    /// A log: the push returns once the order is on disk.
    Durable(Durable<Accepted>),
    /// `--no-backpressure`: a queue in memory that never refuses.
    Memory(IngressHandle<Accepted>),
}

/// The "capacity" of a lane without backpressure: what memory holds.
const UNBOUNDED: usize = 1 << 40;

/// How the service is sized.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the database (`orders.db`) and the lanes' logs (`checkout/`, `import/`) live.
    pub(crate) data_dir: PathBuf,
    /// Orders per second the payment step sustains.
    pub(crate) capacity: u64,
    /// Checkouts accepted and not yet stored before answering 429.
    pub(crate) checkout_capacity: u64,
    /// Import orders accepted and not yet stored before answering 429.
    pub(crate) import_capacity: u64,
    /// The disk each lane's log may fill before answering 429.
    pub(crate) log_budget_bytes: u64,
    /// The payment provider fails most calls in this window (from the start).
    pub(crate) failure_burst: Option<(Duration, Duration)>,
    /// Backlog that may take longer than this to drain makes the service not ready.
    pub(crate) recovery_budget: Duration,
    /// `false` (`--no-backpressure`): lanes are queues in memory that never refuse, and a 202 is
    /// sent before the order is anywhere durable. The failure mode weir exists to prevent.
    pub(crate) backpressure: bool,
}

impl Settings {
    pub(crate) fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            capacity: 2_000,
            checkout_capacity: 256,
            import_capacity: 500_000,
            log_budget_bytes: 256 << 20,
            failure_burst: None,
            recovery_budget: Duration::from_secs(2),
            backpressure: true,
        }
    }
}

/// Per-call latency of the simulated payment provider.
const PAYMENT_LATENCY: Duration = Duration::from_millis(8);
/// Orders in one database transaction, and the longest an order waits for its batch to fill.
const BATCH: usize = 256;
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long a refused checkout client should wait.
const CHECKOUT_RETRY: Duration = Duration::from_secs(1);
const IMPORT_RETRY: Duration = Duration::from_secs(2);
const CLOSING_RETRY: Duration = Duration::from_secs(5);

/// Everything the service counted, by outcome. Exported through the `metrics` facade as
/// `flash_sale_*`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Orders answered 202, by lane.
    pub(crate) accepted: [AtomicU64; 2],
    /// Orders refused because the lane was full (429), by lane.
    pub(crate) full: [AtomicU64; 2],
    /// Checkouts refused while the payment breaker was open (503).
    pub(crate) breaker_open: AtomicU64,
    /// Orders refused while shutting down (503).
    pub(crate) closing: AtomicU64,
    /// Imports refused because the spill log failed (503).
    pub(crate) store_failed: AtomicU64,
    /// Requests refused as malformed JSON (400).
    pub(crate) malformed: AtomicU64,
    /// Requests refused for a missing or bad field (400).
    pub(crate) invalid: AtomicU64,
    /// Requests refused as too large (413).
    pub(crate) too_large: AtomicU64,
    /// Orders an earlier run accepted and had not stored: replayed from the logs.
    pub(crate) replayed: AtomicU64,
    /// Rows the database took, and orders it already had.
    pub(crate) rows: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    /// Payments authorised and declined.
    pub(crate) authorised: AtomicU64,
    pub(crate) declined: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What the pipeline's stages share with the HTTP side.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counts: Counts,
    /// Accepted-to-committed latency, by lane.
    pub(crate) latency: [Histogram; 2],
}

/// The simulated payment provider, called through a circuit breaker with jittered retries.
struct Provider {
    breaker: Breaker,
    retry: RetryPolicy,
    burst: Option<(Instant, Instant)>,
    rng: Rng,
    shared: Arc<Shared>,
}

impl Provider {
    fn failing_now(&self) -> bool {
        let now = Instant::now();
        let in_burst = self.burst.is_some_and(|(from, to)| now >= from && now < to);
        in_burst && self.rng.unit() < 0.8
    }

    async fn authorise(self: Arc<Self>, accepted: Accepted) -> Settled {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let provider = self.clone();
            let mut call = move |()| {
                let fail = provider.failing_now();
                async move {
                    tokio::time::sleep(PAYMENT_LATENCY).await;
                    if fail {
                        Err("declined by the provider")
                    } else {
                        Ok(())
                    }
                }
            };
            let wait = match self.breaker.call(&mut call, ()).await {
                Ok(()) => {
                    bump(&self.shared.counts.authorised, 1);
                    return Settled {
                        accepted,
                        payment: Payment::Authorised,
                        attempts,
                    };
                }
                Err(Rejected::Open { retry_after, .. }) => retry_after.min(self.retry.max_delay),
                Err(Rejected::Failed(_)) => self.retry.backoff(attempts - 1, self.rng.next()),
            };
            if attempts >= self.retry.max_attempts {
                bump(&self.shared.counts.declined, 1);
                return Settled {
                    accepted,
                    payment: Payment::Declined,
                    attempts,
                };
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot open a lane's log: {0}")]
    Spill(#[from] SpillError),
    #[error("the pipeline is invalid: {0}")]
    Build(#[from] weir::dsl::BuildError),
    #[error("cannot start the pipeline: {0}")]
    Start(#[from] PipelineError),
}

/// The running service: its ingresses, its pipeline and what it counted.
pub(crate) struct Service {
    checkout: Door,
    import: Door,
    breaker: Breaker,
    open_for: Duration,
    closing: AtomicBool,
    abort: PipelineAbort,
    pipeline: Mutex<Option<PipelineHandle>>,
    /// The latest snapshot: what `/api/state` and the report read while the pipeline drains.
    last: Mutex<Option<PipelineSnapshot>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) db: Database,
    pub(crate) settings: Settings,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How the shutdown went.
#[derive(Debug)]
pub(crate) struct Shutdown {
    pub(crate) result: Result<(), PipelineError>,
    pub(crate) snapshot: PipelineSnapshot,
}

impl Service {
    /// Opens the database and the spill log in `settings.data_dir` and starts the pipeline (on
    /// the current tokio runtime). Imports left on disk by an earlier run are replayed first.
    pub(crate) fn start(settings: Settings) -> Result<Arc<Self>, StartError> {
        let dir = &settings.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let db = Database::open(&dir.join("orders.db"))?;
        let shared = Arc::new(Shared::default());
        let breaker_config = BreakerConfig {
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            open_for: Duration::from_millis(500),
            probes: 3,
        };
        let breaker = Breaker::new(breaker_config);
        let started = Instant::now();
        let provider = Arc::new(Provider {
            breaker: breaker.clone(),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(1),
            },
            burst: settings
                .failure_burst
                .map(|(from, to)| (started + from, started + to)),
            rng: Rng::new(unix_micros()),
            shared: shared.clone(),
        });

        let mut p = Pipeline::builder("flash_sale");
        let (checkout, import, checkouts, imports, ackers) = if settings.backpressure {
            let log = || SpillConfig::new().budget_bytes(settings.log_budget_bytes);
            let (checkout, checkout_tail, checkout_acker) = durable::<Accepted>(
                "checkout",
                dir.join("checkout"),
                log(),
                settings.checkout_capacity,
            )?;
            let (import, import_tail, import_acker) = durable::<Accepted>(
                "import",
                dir.join("import"),
                log(),
                settings.import_capacity,
            )?;
            bump(
                &shared.counts.replayed,
                checkout.recovered() + import.recovered(),
            );
            let checkouts = p.ingress_durable("checkout", checkout_tail);
            let imports = p.ingress_durable("import", import_tail);
            let ackers: Arc<[Acker<Accepted>; 2]> = Arc::new([checkout_acker, import_acker]);
            (
                Door::Durable(checkout),
                Door::Durable(import),
                checkouts,
                imports,
                Some(ackers),
            )
        } else {
            // The failure mode, on purpose: queues as long as memory lasts, a 202 at once.
            let unbounded = Overflow::Reject {
                retry_after: CHECKOUT_RETRY,
            };
            let (checkout, checkouts) = p.ingress("checkout", UNBOUNDED, unbounded);
            let (import, imports) = p.ingress("import", UNBOUNDED, unbounded);
            (
                Door::Memory(checkout),
                Door::Memory(import),
                checkouts,
                imports,
                None,
            )
        };
        // Interactive over batch 8 to 1: a saturated import lane delays a checkout by at most one
        // import order.
        let lanes = p.priority_lanes("lanes", [(&checkouts, 8, 64), (&imports, 1, 64)]);
        // Calls in flight so that `capacity` orders/s go through at the provider's latency (plus
        // the millisecond a timer may round up).
        let per_call = PAYMENT_LATENCY + Duration::from_millis(1);
        let concurrency =
            ((settings.capacity as f64 * per_call.as_secs_f64()).ceil() as usize).max(1);
        let settled = p.stage_async("authorise", &lanes, concurrency, move |accepted| {
            provider.clone().authorise(accepted)
        });
        let batches = p.stage("batch", &settled, |orders| orders.batch(BATCH, BATCH_WAIT));
        let sink_db = db.clone();
        let sink_shared = shared.clone();
        p.sink_async("database", &batches, 1, move |batch: Vec<Settled>| {
            let db = sink_db.clone();
            let shared = sink_shared.clone();
            let ackers = ackers.clone();
            async move {
                let accepted: Vec<(Lane, u64)> = batch
                    .iter()
                    .map(|s| (s.accepted.lane, s.accepted.accepted_micros))
                    .collect();
                let inserted = db.insert(batch).await.map_err(StoreError::Database)?;
                // Committed: the logs may forget these orders (each lane's arrive in its order).
                for lane in Lane::ALL {
                    let n = accepted.iter().filter(|(l, _)| *l == lane).count() as u64;
                    if let Some(ackers) = ackers.as_deref()
                        && n > 0
                    {
                        ackers[lane.index()].ack(n).map_err(StoreError::Log)?;
                    }
                }
                bump(&shared.counts.rows, inserted.rows);
                bump(&shared.counts.duplicates, inserted.duplicates);
                let now = unix_micros();
                for (lane, at) in accepted {
                    shared.latency[lane.index()]
                        .record(Duration::from_micros(now.saturating_sub(at)));
                }
                Ok::<(), StoreError>(())
            }
        });
        p.recovery_budget(settings.recovery_budget);
        let pipeline = p.build()?.start()?;
        let service = Arc::new(Self {
            checkout,
            import,
            breaker,
            open_for: breaker_config.open_for,
            closing: AtomicBool::new(false),
            abort: pipeline.abort_handle(),
            last: Mutex::new(Some(pipeline.snapshot())),
            pipeline: Mutex::new(Some(pipeline)),
            shared,
            db,
            settings,
            started,
        });
        // Keep a recent snapshot for readers that come while the pipeline drains.
        let weak = Arc::downgrade(&service);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticks.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                let live = service
                    .pipeline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|h| h.snapshot());
                if let Some(snapshot) = live {
                    *service.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
                }
            }
        });
        Ok(service)
    }

    /// Takes one checkout: 202 once it is on disk, or why not.
    pub(crate) async fn checkout(&self, accepted: Accepted) -> Answer {
        if let Some(refused) = self.refuse_early(1) {
            return refused;
        }
        if self.breaker.snapshot().state == BreakerState::Open {
            bump(&self.shared.counts.breaker_open, 1);
            return Answer::Unavailable {
                reason: "payment_breaker_open",
                retry_after: self.open_for,
            };
        }
        self.push(Lane::Interactive, &[accepted]).await
    }

    /// Takes the orders of one import, all or none: 202 once they are on disk, or why not.
    pub(crate) async fn import(&self, orders: Vec<Accepted>) -> Answer {
        if let Some(refused) = self.refuse_early(orders.len() as u64) {
            return refused;
        }
        self.push(Lane::Batch, &orders).await
    }

    fn refuse_early(&self, orders: u64) -> Option<Answer> {
        if !self.closing.load(Ordering::Acquire) {
            return None;
        }
        bump(&self.shared.counts.closing, orders);
        Some(Answer::Unavailable {
            reason: "shutting_down",
            retry_after: CLOSING_RETRY,
        })
    }

    async fn push(&self, lane: Lane, orders: &[Accepted]) -> Answer {
        let ingress = match lane {
            Lane::Interactive => &self.checkout,
            Lane::Batch => &self.import,
        };
        let n = orders.len() as u64;
        let counts = &self.shared.counts;
        let pushed = match ingress {
            Door::Durable(log) => log.push_all(orders).await.map(|_| ()),
            Door::Memory(queue) => {
                for order in orders {
                    if queue.try_push(order.clone()).is_err() {
                        break; // only when closed: the queue is unbounded
                    }
                }
                if queue.is_closed() {
                    Err(SpillError::Closed)
                } else {
                    Ok(())
                }
            }
        };
        match pushed {
            Ok(_) => {
                bump(&counts.accepted[lane.index()], n);
                Answer::Accepted
            }
            Err(SpillError::Closed) => {
                bump(&counts.closing, n);
                Answer::Unavailable {
                    reason: "shutting_down",
                    retry_after: CLOSING_RETRY,
                }
            }
            Err(SpillError::BacklogFull { .. } | SpillError::BudgetFull { .. }) => {
                bump(&counts.full[lane.index()], n);
                Answer::Full {
                    retry_after: match lane {
                        Lane::Interactive => CHECKOUT_RETRY,
                        Lane::Batch => IMPORT_RETRY,
                    },
                }
            }
            Err(error) => {
                // A disk error: the orders may still be written by a later sync (then they are
                // stored although refused here; never the other way round).
                tracing::error!(lane = lane.name(), %error, "cannot make orders durable");
                bump(&counts.store_failed, n);
                Answer::Unavailable {
                    reason: "log_failed",
                    retry_after: IMPORT_RETRY,
                }
            }
        }
    }

    /// A handle that aborts the pipeline (a second Ctrl-C while draining).
    pub(crate) fn abort_handle(&self) -> PipelineAbort {
        self.abort.clone()
    }

    /// Whether the service is shutting down (refusing new orders).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The pipeline's readiness (not ready while shutting down).
    pub(crate) fn ready(&self) -> Readiness {
        if self.closing.load(Ordering::Acquire) {
            return Readiness {
                ready: false,
                reasons: vec!["shutting down".to_owned()],
            };
        }
        match &*self.pipeline.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(pipeline) => pipeline.ready(),
            None => Readiness {
                ready: false,
                reasons: vec!["stopped".to_owned()],
            },
        }
    }

    /// A snapshot of the pipeline now (or the last one taken, once it stopped).
    pub(crate) fn snapshot(&self) -> PipelineSnapshot {
        if let Some(pipeline) = &*self.pipeline.lock().unwrap_or_else(|p| p.into_inner()) {
            return pipeline.snapshot();
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("a snapshot is taken at start")
    }

    /// Records every counter through the `metrics` facade: the pipeline's and the service's.
    pub(crate) fn export_metrics(&self) {
        describe_metrics();
        if let Some(pipeline) = &*self.pipeline.lock().unwrap_or_else(|p| p.into_inner()) {
            pipeline.export_metrics();
        }
        let c = &self.shared.counts;
        for lane in Lane::ALL {
            metrics::counter!("flash_sale_orders_total", "lane" => lane.name(), "outcome" => "accepted")
                .absolute(read(&c.accepted[lane.index()]));
            metrics::counter!("flash_sale_orders_total", "lane" => lane.name(), "outcome" => "full")
                .absolute(read(&c.full[lane.index()]));
        }
        for (outcome, counter) in [
            ("breaker_open", &c.breaker_open),
            ("shutting_down", &c.closing),
            ("log_failed", &c.store_failed),
        ] {
            metrics::counter!("flash_sale_orders_total", "lane" => "any", "outcome" => outcome)
                .absolute(read(counter));
        }
        for (reason, counter) in [
            ("malformed", &c.malformed),
            ("invalid", &c.invalid),
            ("too_large", &c.too_large),
        ] {
            metrics::counter!("flash_sale_requests_refused_total", "reason" => reason)
                .absolute(read(counter));
        }
        metrics::counter!("flash_sale_orders_replayed_total").absolute(read(&c.replayed));
        metrics::counter!("flash_sale_rows_total").absolute(read(&c.rows));
        metrics::counter!("flash_sale_duplicates_total").absolute(read(&c.duplicates));
        metrics::counter!("flash_sale_payments_total", "outcome" => "authorised")
            .absolute(read(&c.authorised));
        metrics::counter!("flash_sale_payments_total", "outcome" => "declined")
            .absolute(read(&c.declined));
        let breaker = self.breaker.snapshot();
        metrics::gauge!("flash_sale_breaker_open").set(if breaker.state == BreakerState::Closed {
            0.0
        } else {
            1.0
        });
        metrics::counter!("flash_sale_breaker_opened_total").absolute(breaker.opened);
    }

    /// The payment breaker's state.
    pub(crate) fn breaker(&self) -> BreakerState {
        self.breaker.snapshot().state
    }

    /// Stops accepting (every new request gets 503) and drains: every accepted order reaches the
    /// database unless `deadline` passes first (then what was cancelled is in the ledger).
    pub(crate) async fn shutdown(&self, deadline: Duration) -> Shutdown {
        self.closing.store(true, Ordering::Release);
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut pipeline) = pipeline else {
            return Shutdown {
                result: Ok(()),
                snapshot: self.snapshot(),
            };
        };
        let result = pipeline.drain(deadline).await;
        let snapshot = pipeline.snapshot();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Shutdown { result, snapshot }
    }
}

/// The help text of the service's own series (Prometheus wants one per metric).
fn describe_metrics() {
    metrics::describe_counter!(
        "flash_sale_orders_total",
        "Orders by lane and outcome: accepted (202), full (429), breaker_open, shutting_down, log_failed (503)."
    );
    metrics::describe_counter!(
        "flash_sale_requests_refused_total",
        "Requests refused before any order was read: malformed or invalid (400), too_large (413)."
    );
    metrics::describe_counter!(
        "flash_sale_orders_replayed_total",
        "Orders an earlier run accepted and had not stored, replayed from the lanes' logs."
    );
    metrics::describe_counter!("flash_sale_rows_total", "Rows the database took.");
    metrics::describe_counter!(
        "flash_sale_duplicates_total",
        "Orders whose idempotency key the database already held."
    );
    metrics::describe_counter!(
        "flash_sale_payments_total",
        "Payments by outcome: authorised, declined after retries."
    );
    metrics::describe_gauge!(
        "flash_sale_breaker_open",
        "1 while the payment breaker is open or half-open, 0 while closed."
    );
    metrics::describe_counter!(
        "flash_sale_breaker_opened_total",
        "How many times the payment breaker opened."
    );
}

/// Why the database stage failed: the insert, or forgetting the stored orders in their log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("database: {0}")]
    Database(#[source] rusqlite::Error),
    #[error("acknowledging stored orders in their log: {0}")]
    Log(#[source] SpillError),
}

/// The service's answer to one order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// 202: the order will reach the database.
    Accepted,
    /// 429: the lane is full.
    Full { retry_after: Duration },
    /// 503: the breaker is open, the disk failed, or the service is shutting down.
    Unavailable {
        reason: &'static str,
        retry_after: Duration,
    },
}
