//! The order service: one weir pipeline behind an HTTP front.
//!
//! ```text
//! POST /checkout -> [checkout ingress: reject when full, 429] --8--\
//!                                                                  priority lanes -> authorise
//! POST /import ---> [import ingress: spill to disk]           --1--/   (breaker, retry) -> batch -> database
//! ```
//!
//! A 202 is given only when an ingress took the order: from then on the pipeline's ledger counts
//! it until the database has it (`lost = accepted - rows` is the check the report makes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir::dsl::{Pipeline, PipelineError, PipelineHandle, PipelineSnapshot, Readiness};
use weir::operators::{Breaker, BreakerConfig, BreakerState, PublisherExt, Rejected, RetryPolicy};
use weir::runtime::ingress::{IngressHandle, Overflow, PushError, SpillFull};
use weir::runtime::queue::Pushed;
use weir::spill::{SpillConfig, SpillError, SpillQueue};

use crate::db::Database;
use crate::order::{Accepted, Lane, Payment, Settled, unix_micros};
use crate::stats::{Histogram, Rng};

/// How the service is sized.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the database (`orders.db`) and the import lane's spill log (`spill/`) live.
    pub(crate) data_dir: PathBuf,
    /// Orders per second the payment step sustains.
    pub(crate) capacity: u64,
    /// Orders the checkout ingress holds before answering 429.
    pub(crate) checkout_capacity: usize,
    /// Import orders held in memory before the rest go to disk.
    pub(crate) import_memory: usize,
    /// The disk the import lane may fill before answering 429.
    pub(crate) spill_budget_bytes: u64,
    /// The payment provider fails most calls in this window (from the start).
    pub(crate) failure_burst: Option<(Duration, Duration)>,
    /// Backlog that may take longer than this to drain makes the service not ready.
    pub(crate) recovery_budget: Duration,
}

impl Settings {
    pub(crate) fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            capacity: 2_000,
            checkout_capacity: 256,
            import_memory: 1_024,
            spill_budget_bytes: 256 << 20,
            failure_burst: None,
            recovery_budget: Duration::from_secs(2),
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
    /// Import orders that went to disk.
    pub(crate) spilled: AtomicU64,
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
    #[error("cannot open the import lane's spill log: {0}")]
    Spill(#[from] SpillError),
    #[error("the pipeline is invalid: {0}")]
    Build(#[from] weir::dsl::BuildError),
    #[error("cannot start the pipeline: {0}")]
    Start(#[from] PipelineError),
}

/// The running service: its ingresses, its pipeline and what it counted.
pub(crate) struct Service {
    checkout: IngressHandle<Accepted>,
    import: IngressHandle<Accepted>,
    breaker: Breaker,
    open_for: Duration,
    closing: AtomicBool,
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
        let (checkout, checkouts) = p.ingress::<Accepted>(
            "checkout",
            settings.checkout_capacity,
            Overflow::Reject {
                retry_after: CHECKOUT_RETRY,
            },
        );
        let spill_config = SpillConfig::new().budget_bytes(settings.spill_budget_bytes);
        let store = SpillQueue::open(dir.join("spill"), settings.import_memory, spill_config)?;
        let (import, imports) = p.ingress_spilling(
            "import",
            store,
            SpillFull::Reject {
                retry_after: IMPORT_RETRY,
            },
        );
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
            async move {
                let accepted: Vec<(Lane, u64)> = batch
                    .iter()
                    .map(|s| (s.accepted.lane, s.accepted.accepted_micros))
                    .collect();
                let inserted = db.insert(batch).await?;
                bump(&shared.counts.rows, inserted.rows);
                bump(&shared.counts.duplicates, inserted.duplicates);
                let now = unix_micros();
                for (lane, at) in accepted {
                    shared.latency[lane.index()]
                        .record(Duration::from_micros(now.saturating_sub(at)));
                }
                Ok::<(), rusqlite::Error>(())
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

    /// Takes one checkout: 202, or why not.
    pub(crate) fn checkout(&self, accepted: Accepted) -> Answer {
        if self.closing.load(Ordering::Acquire) {
            bump(&self.shared.counts.closing, 1);
            return Answer::Unavailable {
                reason: "shutting_down",
                retry_after: CLOSING_RETRY,
            };
        }
        if self.breaker.snapshot().state == BreakerState::Open {
            bump(&self.shared.counts.breaker_open, 1);
            return Answer::Unavailable {
                reason: "payment_breaker_open",
                retry_after: self.open_for,
            };
        }
        self.push(Lane::Interactive, accepted)
    }

    /// Takes the orders of one import in order, up to the first refusal: how many went in, and
    /// the answer for the rest (`None`: all went in).
    pub(crate) fn import(&self, orders: Vec<Accepted>) -> (usize, Option<Answer>) {
        if self.closing.load(Ordering::Acquire) {
            bump(&self.shared.counts.closing, orders.len() as u64);
            return (
                0,
                Some(Answer::Unavailable {
                    reason: "shutting_down",
                    retry_after: CLOSING_RETRY,
                }),
            );
        }
        let total = orders.len();
        for (taken, accepted) in orders.into_iter().enumerate() {
            match self.push(Lane::Batch, accepted) {
                Answer::Accepted => {}
                refused => {
                    // Everything after the refused order is refused with it.
                    let rest = (total - taken - 1) as u64;
                    match &refused {
                        Answer::Full { .. } => {
                            bump(&self.shared.counts.full[Lane::Batch.index()], rest)
                        }
                        Answer::Unavailable {
                            reason: "shutting_down",
                            ..
                        } => bump(&self.shared.counts.closing, rest),
                        Answer::Unavailable { .. } => bump(&self.shared.counts.store_failed, rest),
                        Answer::Accepted => {}
                    }
                    return (taken, Some(refused));
                }
            }
        }
        (total, None)
    }

    fn push(&self, lane: Lane, accepted: Accepted) -> Answer {
        let ingress = match lane {
            Lane::Interactive => &self.checkout,
            Lane::Batch => &self.import,
        };
        match ingress.try_push(accepted) {
            Ok(pushed) => {
                bump(&self.shared.counts.accepted[lane.index()], 1);
                if pushed == Pushed::Spilled {
                    bump(&self.shared.counts.spilled, 1);
                }
                Answer::Accepted
            }
            Err(PushError::Closed { .. }) => {
                bump(&self.shared.counts.closing, 1);
                Answer::Unavailable {
                    reason: "shutting_down",
                    retry_after: CLOSING_RETRY,
                }
            }
            Err(PushError::Failed { .. }) => {
                bump(&self.shared.counts.store_failed, 1);
                Answer::Unavailable {
                    reason: "spill_failed",
                    retry_after: IMPORT_RETRY,
                }
            }
            Err(refused) => {
                bump(&self.shared.counts.full[lane.index()], 1);
                let retry_after = refused.retry_after().unwrap_or(CHECKOUT_RETRY);
                Answer::Full { retry_after }
            }
        }
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
            ("spill_failed", &c.store_failed),
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
        metrics::counter!("flash_sale_orders_spilled_total").absolute(read(&c.spilled));
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
        "Orders by lane and outcome: accepted (202), full (429), breaker_open, shutting_down, spill_failed (503)."
    );
    metrics::describe_counter!(
        "flash_sale_requests_refused_total",
        "Requests refused before any order was read: malformed or invalid (400), too_large (413)."
    );
    metrics::describe_counter!(
        "flash_sale_orders_spilled_total",
        "Import orders that went to the spill log on disk."
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
