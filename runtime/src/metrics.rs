//! The metrics core: [`BufferMetrics`], the atomic counters and gauges of one buffer (a queue, a
//! boundary's ring, a lane), read as plain, serde-serialisable [`BufferCounts`].
//!
//! Hot paths never touch these per item. Rings (boundaries, lanes) derive items in / out and depth
//! from their own positions when a snapshot is taken; queues update them under the lock they
//! already hold. Every rejected or dropped item is counted here by [`Reason`] and logged at warn
//! level, at most once per second per buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_lockfree::ring::Occupancy;

/// Why an item did not take the happy path. Each reason belongs to one exit of the ledger
/// ([`Reason::exit`]): handed back to its caller, dropped on purpose, failed, or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Rejected: the queue was full and the policy was `Reject`.
    Full,
    /// Rejected: the queue stayed full until the `Block` deadline.
    Timeout,
    /// Rejected: the ingress was closed.
    Closed,
    /// Rejected: the spill store failed (a disk error).
    SpillFailed,
    /// Rejected: the push was given up while it waited for room (its future dropped: a timeout
    /// around it, a request handler cancelled when its client left); the item went with it.
    Abandoned,
    /// Dropped: evicted by a newer item under `DropOldest`.
    DroppedOldest,
    /// Dropped: refused because the queue was full under `DropNewest`.
    DroppedNewest,
    /// Dropped: over the rate of a shedding `throttle`.
    Throttled,
    /// Dropped: a filter (`filter`, `filter_map`, `skip`, `take_while`...) let it go.
    Filtered,
    /// Dropped: a duplicate of an item seen recently (`dedupe`).
    Duplicate,
    /// Failed: the closure handling it panicked or returned an error.
    Failed,
    /// Failed: a spill store could not give it back (a record that no longer checked out on
    /// disk, skipped).
    Corrupt,
    /// Cancelled: still queued (or arriving) when its consumer went away.
    Cancelled,
    /// Cancelled: in flight (an async stage's future, a sink's write) when the pipeline was aborted.
    CancelledInFlight,
}

/// The exits of the ledger: what happened to an item that was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Refused to the caller that offered it (a push refused with the item), or given up by that
    /// caller while it waited for room.
    Rejected,
    /// Let go on purpose by a policy (overflow, throttle, filter, dedupe).
    Dropped,
    /// Its processing failed.
    Failed,
    /// Its consumer went away before it was delivered.
    Cancelled,
}

impl Exit {
    /// The label used in snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            Exit::Rejected => "rejected",
            Exit::Dropped => "dropped",
            Exit::Failed => "failed",
            Exit::Cancelled => "cancelled",
        }
    }
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 14] = [
        Reason::Full,
        Reason::Timeout,
        Reason::Closed,
        Reason::SpillFailed,
        Reason::Abandoned,
        Reason::DroppedOldest,
        Reason::DroppedNewest,
        Reason::Throttled,
        Reason::Filtered,
        Reason::Duplicate,
        Reason::Failed,
        Reason::Corrupt,
        Reason::Cancelled,
        Reason::CancelledInFlight,
    ];

    /// How many reasons there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The label used in snapshots and exported metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::Timeout => "timeout",
            Reason::Closed => "closed",
            Reason::SpillFailed => "spill_failed",
            Reason::Abandoned => "abandoned",
            Reason::DroppedOldest => "dropped_oldest",
            Reason::DroppedNewest => "dropped_newest",
            Reason::Throttled => "throttled",
            Reason::Filtered => "filtered",
            Reason::Duplicate => "duplicate",
            Reason::Failed => "failed",
            Reason::Corrupt => "corrupt",
            Reason::Cancelled => "cancelled",
            Reason::CancelledInFlight => "cancelled_in_flight",
        }
    }

    /// The reason with this label.
    pub fn from_label(label: &str) -> Option<Reason> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == label)
    }

    /// The ledger's exit this reason belongs to.
    pub fn exit(self) -> Exit {
        match self {
            Reason::Full
            | Reason::Timeout
            | Reason::Closed
            | Reason::SpillFailed
            | Reason::Abandoned => Exit::Rejected,
            Reason::DroppedOldest
            | Reason::DroppedNewest
            | Reason::Throttled
            | Reason::Filtered
            | Reason::Duplicate => Exit::Dropped,
            Reason::Failed | Reason::Corrupt => Exit::Failed,
            Reason::Cancelled | Reason::CancelledInFlight => Exit::Cancelled,
        }
    }

    /// Whether the item was handed back to its caller (a rejection) rather than discarded.
    pub fn is_rejection(self) -> bool {
        self.exit() == Exit::Rejected
    }
}

const AGE_SAMPLES: usize = 16;

/// Where an outside queue's oldest-item age comes from ([`BufferMetrics::attach_oldest_age`]).
struct OldestAge(Box<dyn Fn() -> Option<Duration> + Send + Sync>);

impl std::fmt::Debug for OldestAge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OldestAge")
    }
}

/// Live counters of one buffer (a queue, a ring, a lane). Shared (`Arc`) between the buffer and
/// whoever reads it.
#[derive(Debug)]
pub struct BufferMetrics {
    name: Arc<str>,
    capacity: u64,
    epoch: Instant,
    occupancy: OnceLock<Arc<dyn Occupancy>>,
    /// For a queue kept outside the runtime (a durable log): where the age of its oldest item
    /// comes from, when no push time is recorded here.
    oldest_age: OnceLock<OldestAge>,
    /// The ring's consumer left: what it holds is cancelled (see `cancel_rest`).
    consumer_gone: AtomicBool,
    /// Pushes offered to an ingress (accepted or not).
    offered: AtomicU64,
    /// Items the queue found held when it was made, left by an earlier run (counted in too).
    recovered: AtomicU64,
    items_in: AtomicU64,
    items_out: AtomicU64,
    demand: AtomicU64,
    shed: [AtomicU64; Reason::COUNT],
    /// Items that left the queue from inside it without being handed on (evicted, cancelled
    /// while queued): they were counted in and never out.
    evicted: AtomicU64,
    wait_nanos: AtomicU64,
    waits: AtomicU64,
    /// Front-of-queue enqueue time in nanoseconds since `epoch`, plus one; 0 when empty (ingress).
    oldest_enqueued: AtomicU64,
    /// (position, nanoseconds since epoch) samples of a boundary's producer.
    sample_positions: [AtomicU64; AGE_SAMPLES],
    sample_times: [AtomicU64; AGE_SAMPLES],
    next_sample: AtomicUsize,
    last_warn: AtomicU64,
}

impl BufferMetrics {
    /// Fresh counters for a stage, registered as an account of the current
    /// [`ledger::scope`](crate::ledger::scope) if there is one.
    pub fn new(name: impl Into<Arc<str>>, capacity: usize) -> Arc<Self> {
        let metrics = Self::unregistered(name, capacity);
        crate::ledger::register(metrics.clone());
        metrics
    }

    /// Fresh counters that no ledger scope sees (for a stage that registers them itself).
    pub fn unregistered(name: impl Into<Arc<str>>, capacity: usize) -> Arc<Self> {
        Self::with_epoch(name.into(), capacity, Instant::now())
    }

    /// Fresh counters, registered as [`new`](Self::new) does, whose clock started `earlier`
    /// before now, so that a queue holding items from the start (left by an earlier run) can
    /// give the oldest of them a time on it: time 0 is `earlier` ago. `None` when the monotonic
    /// clock cannot go back that far.
    pub(crate) fn new_since(
        name: impl Into<Arc<str>>,
        capacity: usize,
        earlier: Duration,
    ) -> Option<Arc<Self>> {
        let epoch = Instant::now().checked_sub(earlier)?;
        let metrics = Self::with_epoch(name.into(), capacity, epoch);
        crate::ledger::register(metrics.clone());
        Some(metrics)
    }

    fn with_epoch(name: Arc<str>, capacity: usize, epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            name,
            capacity: capacity as u64,
            epoch,
            occupancy: OnceLock::new(),
            oldest_age: OnceLock::new(),
            consumer_gone: AtomicBool::new(false),
            offered: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            demand: AtomicU64::new(0),
            shed: Default::default(),
            evicted: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            oldest_enqueued: AtomicU64::new(0),
            sample_positions: Default::default(),
            sample_times: Default::default(),
            next_sample: AtomicUsize::new(0),
            last_warn: AtomicU64::new(0),
        })
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn attach_ring(&self, occupancy: Arc<dyn Occupancy>) {
        let _ = self.occupancy.set(occupancy);
    }

    /// For a queue kept outside the runtime (such as a durable log), which records no push times
    /// here: `age` gives the age of its oldest item, or `None` when it holds none. Read by every
    /// [`snapshot`](Self::snapshot). Only the first call takes effect.
    pub fn attach_oldest_age(&self, age: impl Fn() -> Option<Duration> + Send + Sync + 'static) {
        let _ = self.oldest_age.set(OldestAge(Box::new(age)));
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Counts `n` pushes offered to the queue, accepted or not (for queues kept outside the
    /// runtime, such as a durable log: the runtime's own queues count themselves).
    pub fn add_offered(&self, n: u64) {
        self.offered.fetch_add(n, Ordering::Relaxed);
    }

    /// Pushes offered so far (an ingress: accepted or refused; 0 for other queues).
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Counts `n` items the queue holds from the start, left by an earlier run (a spill store
    /// reopened with records in it): they are in the queue (counted in) without having been
    /// offered in this run, and in the ledger as [`recovered`](crate::ledger::Entry::recovered).
    pub fn add_recovered(&self, n: u64) {
        self.recovered.fetch_add(n, Ordering::Relaxed);
        self.items_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Items the queue held from the start, left by an earlier run.
    pub fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    /// Counts `n` items taken into the queue.
    pub fn add_in(&self, n: u64) {
        self.items_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items handed downstream.
    pub fn add_out(&self, n: u64) {
        self.items_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_demand(&self, demand: u64) {
        self.demand.store(demand, Ordering::Relaxed);
    }

    pub(crate) fn set_oldest(&self, enqueued_nanos: Option<u64>) {
        self.oldest_enqueued
            .store(enqueued_nanos.map_or(0, |t| t + 1), Ordering::Relaxed);
    }

    /// Records that a producer was held back by pressure for `waited`.
    pub(crate) fn record_wait(&self, waited: Duration) {
        self.wait_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the item at `position` was written at `now` ([`now_nanos`](Self::now_nanos)),
    /// for boundary age sampling.
    pub(crate) fn sample_position_at(&self, position: usize, now: u64) {
        let slot = self.next_sample.fetch_add(1, Ordering::Relaxed) % AGE_SAMPLES;
        self.sample_times[slot].store(now, Ordering::Relaxed);
        self.sample_positions[slot].store(position as u64, Ordering::Release);
    }

    /// Counts one item that was rejected or dropped, and warns (at most once a second per stage).
    pub fn record_shed(&self, reason: Reason) {
        self.record_shed_n(reason, 1);
    }

    /// Counts `n` items that were rejected or dropped for the same reason.
    pub fn record_shed_n(&self, reason: Reason, n: u64) {
        if n == 0 {
            return;
        }
        let total = self.shed[reason as usize].fetch_add(n, Ordering::Relaxed) + n;
        let now = self.now_nanos().max(1);
        let last = self.last_warn.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1_000_000_000)
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                stage = %self.name,
                reason = reason.as_str(),
                total,
                "items are being {} under overload",
                if reason.is_rejection() { "rejected" } else { "dropped" }
            );
        }
    }

    /// Counts `n` items that were offered and left without being queued for `reason`, without
    /// the overload warning of [`record_shed_n`](Self::record_shed_n) (the caller says why).
    pub(crate) fn record_exit_n(&self, reason: Reason, n: u64) {
        self.shed[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A boundary's consumer left (cancel): from now on, whatever the ring holds, and whatever its
    /// producer still publishes before it notices, counts as `cancelled` (it is dropped with the
    /// ring, never handed on).
    pub(crate) fn cancel_rest(&self) {
        self.consumer_gone.store(true, Ordering::Release);
    }

    /// Counts `n` items that were queued (counted in) and left the queue without being handed on:
    /// evicted by a newer item, or dropped with the queue when its consumer went away.
    pub fn record_evicted_n(&self, reason: Reason, n: u64) {
        self.evicted.fetch_add(n, Ordering::Relaxed);
        self.record_shed_n(reason, n);
    }

    /// How many items were shed for `reason`.
    pub fn shed(&self, reason: Reason) -> u64 {
        self.shed[reason as usize].load(Ordering::Relaxed)
    }

    /// A consistent-enough copy of every counter (each is read atomically; together they are a
    /// moment's approximation).
    pub fn snapshot(&self) -> BufferCounts {
        let now = self.now_nanos();
        let Positions {
            items_in,
            items_out,
            abandoned,
            oldest,
        } = self.positions();
        let mut rejected = BTreeMap::new();
        let mut dropped = BTreeMap::new();
        for reason in Reason::ALL {
            let mut count = self.shed(reason);
            if reason == Reason::Cancelled {
                count += abandoned;
            }
            if reason.is_rejection() {
                rejected.insert(reason.as_str().to_owned(), count);
            } else {
                dropped.insert(reason.as_str().to_owned(), count);
            }
        }
        BufferCounts {
            name: self.name.to_string(),
            capacity: self.capacity,
            depth: self.depth(items_in, items_out, abandoned),
            items_in,
            items_out,
            recovered: self.recovered(),
            demand: self.demand.load(Ordering::Relaxed),
            rejected,
            dropped,
            oldest_item_age_ms: oldest
                .map(|t| now.saturating_sub(t) as f64 / 1e6)
                .or_else(|| {
                    let age = self.oldest_age.get()?;
                    (age.0)().map(|age| age.as_secs_f64() * 1e3)
                }),
            producer_wait_ms: self.wait_nanos.load(Ordering::Relaxed) as f64 / 1e6,
            producer_waits: self.waits.load(Ordering::Relaxed),
        }
    }

    fn positions(&self) -> Positions {
        match self.occupancy.get() {
            Some(ring) => {
                let released = ring.released();
                let published = ring.published();
                // Items a ring holds after its consumer left: cancelled, not queued.
                let abandoned = if self.consumer_gone.load(Ordering::Acquire) {
                    published.saturating_sub(released) as u64
                } else {
                    0
                };
                let oldest = (published > released && abandoned == 0)
                    .then(|| self.sampled_time_of(released))
                    .flatten();
                Positions {
                    items_in: published as u64,
                    items_out: released as u64,
                    abandoned,
                    oldest,
                }
            }
            None => Positions {
                items_in: self.items_in.load(Ordering::Relaxed),
                items_out: self.items_out.load(Ordering::Relaxed),
                abandoned: 0,
                oldest: self.oldest_enqueued.load(Ordering::Relaxed).checked_sub(1),
            },
        }
    }

    /// Items held: in, minus out, minus what left the queue without going downstream (evicted
    /// by a newer item, or cancelled).
    fn depth(&self, items_in: u64, items_out: u64, abandoned: u64) -> u64 {
        let evicted = self.evicted.load(Ordering::Relaxed) + abandoned;
        items_in.saturating_sub(items_out.saturating_add(evicted))
    }

    /// The write time of the newest sample at or before `position`: the item at `position` was
    /// written no earlier, so `now - time` bounds its age from above.
    fn sampled_time_of(&self, position: usize) -> Option<u64> {
        let position = position as u64;
        (0..AGE_SAMPLES)
            .filter_map(|i| {
                let at = self.sample_positions[i].load(Ordering::Acquire);
                let time = self.sample_times[i].load(Ordering::Relaxed);
                (time != 0 && at <= position).then_some((at, time))
            })
            .max_by_key(|&(at, _)| at)
            .map(|(_, time)| time)
    }
}

struct Positions {
    items_in: u64,
    items_out: u64,
    abandoned: u64,
    oldest: Option<u64>,
}

impl crate::ledger::Account for BufferMetrics {
    fn name(&self) -> &str {
        &self.name
    }

    /// Held: the queue's depth; exits: what it shed, by reason.
    fn entry(&self) -> crate::ledger::Entry {
        let positions = self.positions();
        let mut entry = crate::ledger::Entry {
            held: self.depth(positions.items_in, positions.items_out, positions.abandoned),
            recovered: self.recovered(),
            ..Default::default()
        };
        for reason in Reason::ALL {
            entry.exits[reason] = self.shed(reason);
        }
        entry.exits[Reason::Cancelled] += positions.abandoned;
        entry
    }
}

impl BufferCounts {
    /// The queue as a ledger entry: held = depth, exits by reason (from a copy, for queues whose
    /// live counters are out of reach).
    pub fn entry(&self) -> crate::ledger::Entry {
        let mut entry = crate::ledger::Entry {
            held: self.depth,
            recovered: self.recovered,
            ..Default::default()
        };
        for (label, &count) in self.rejected.iter().chain(&self.dropped) {
            if let Some(reason) = Reason::from_label(label) {
                entry.exits[reason] += count;
            }
        }
        entry
    }
}

/// A copy of one stage's counters, for tests, UIs and exporters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferCounts {
    /// The stage's name.
    pub name: String,
    /// The most items the stage may hold.
    pub capacity: u64,
    /// Items held now (`items_in - items_out` minus items evicted or cancelled from the queue).
    pub depth: u64,
    /// Items accepted so far (those recovered included).
    pub items_in: u64,
    /// Items handed downstream (or dropped from the queue) so far.
    pub items_out: u64,
    /// Items the queue held from the start, left by an earlier run (a spill store reopened with
    /// records in it; counted in `items_in` too, never offered).
    #[serde(default)]
    pub recovered: u64,
    /// Outstanding downstream demand as last seen by the stage.
    pub demand: u64,
    /// Items handed back to their caller, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Items discarded, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Age of the oldest held item in milliseconds (an upper bound for boundaries, whose write times
    /// are sampled every `capacity / 8` items), `None` when empty.
    pub oldest_item_age_ms: Option<f64>,
    /// Total time producers were held back by pressure (no credit, or a full `Block` queue).
    pub producer_wait_ms: f64,
    /// How many times producers were held back.
    pub producer_waits: u64,
}
