//! The ledger: every item accounted for.
//!
//! weir's promise is checkable arithmetic. Every place that can hold an item or let it leave the
//! happy path is an [`Account`]: a queue (its [`BufferMetrics`](crate::metrics::BufferMetrics)),
//! an operator that filters, batches or awaits (a [`Tally`]), a sink. An account reports an
//! [`Entry`]: what it holds now, how many items left it by [`Reason`], and, for operators that
//! reshape items (a batch made of many, copies made by a broadcast), how many it *made* and how
//! many it *consumed* into what it made, and, for a store reopened with items an earlier run left
//! in it, how many it *recovered*. For any stretch of a stream, at a quiescent point:
//!
//! ```text
//! in + made + recovered = out + consumed + rejected + dropped + failed + cancelled + held
//! ```
//!
//! where `in` is what entered the stretch and `out` what left it downstream; for a whole pipeline
//! `in` is what was offered and `out` what the sinks delivered. The pipeline DSL adds the accounts
//! up per stage and for the graph.
//!
//! Operators find the stage they belong to through a [`scope`]: the DSL runs a stage's building
//! code inside one, and every account created meanwhile ([`register`]) is that stage's. Outside a
//! scope, registration does nothing and the counters are still there for whoever holds them.
//!
//! An operator that joins several upstreams into one stream (`zip`, `merge`) subscribes each in a
//! [`join`]: one that carries the stage's input (counted as it came in) keeps its accounts in the
//! stage's books; one that makes its own items (a source built in the stage's code) has each item
//! counted as made when the operator takes it, and its accounts kept out, since its items never
//! entered the books. Accounts registered when an operator is built move to the join it is
//! subscribed in ([`claim`]).
//!
//! A scope also knows its stage's tasks: an operator that runs a task holding items spawns it with
//! [`spawn`], and [`Scope::settled`] waits until every such task has ended and let go of what it
//! held (counted). A pipeline that stops resolves after that, so its books are final then.
//!
//! Counting costs nothing per item on the happy path; a [`TallyWriter`] counts an exit with a plain
//! store to a cell only its writer touches (no read-modify-write per item).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::ops::{Index, IndexMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};

pub use crate::metrics::{Exit, Reason};

/// Counts by [`Reason`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Exits([u64; Reason::COUNT]);

impl Exits {
    /// No exits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The total under `exit`.
    pub fn total(&self, exit: Exit) -> u64 {
        Reason::ALL
            .iter()
            .filter(|reason| reason.exit() == exit)
            .map(|&reason| self[reason])
            .sum()
    }

    /// The total of every reason.
    pub fn sum(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other` reason by reason.
    pub fn add(&mut self, other: &Exits) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    /// The reasons with a count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .into_iter()
            .map(|reason| (reason, self[reason]))
            .filter(|&(_, n)| n > 0)
    }
}

impl Index<Reason> for Exits {
    type Output = u64;
    fn index(&self, reason: Reason) -> &u64 {
        &self.0[reason as usize]
    }
}

impl IndexMut<Reason> for Exits {
    fn index_mut(&mut self, reason: Reason) -> &mut u64 {
        &mut self.0[reason as usize]
    }
}

impl fmt::Debug for Exits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(reason, n)| (reason.as_str(), n)))
            .finish()
    }
}

impl Serialize for Exits {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Exits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<Reason, u64>::deserialize(deserializer)?;
        let mut exits = Exits::new();
        for (reason, n) in map {
            exits[reason] = n;
        }
        Ok(exits)
    }
}

/// What one account reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Items held now (queued, in flight, in a partial batch, on disk).
    pub held: u64,
    /// Items that left the happy path here, by reason.
    pub exits: Exits,
    /// Items this account made out of others (a batch, a broadcast copy, an expansion's output).
    pub made: u64,
    /// Items consumed into what was made (a batch's members, a broadcast's original).
    pub consumed: u64,
    /// Items found held at the start, left by an earlier run (a spill store reopened with
    /// records in it): they come out without having come in during this run.
    pub recovered: u64,
    /// Items finished here: a sink's successful calls (0 for accounts that pass items on).
    pub delivered: u64,
}

impl Entry {
    /// Adds `other` term by term.
    pub fn add(&mut self, other: &Entry) {
        self.delivered += other.delivered;
        self.held += other.held;
        self.exits.add(&other.exits);
        self.made += other.made;
        self.consumed += other.consumed;
        self.recovered += other.recovered;
    }
}

/// A place that holds items or lets them leave the happy path.
pub trait Account: Send + Sync + 'static {
    /// Its name (the operator or queue).
    fn name(&self) -> &str;
    /// What it reports now.
    fn entry(&self) -> Entry;
}

impl fmt::Debug for dyn Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name())
            .field("entry", &self.entry())
            .finish()
    }
}

/// One writer's cells.
#[derive(Debug, Default)]
struct Cells {
    exits: [AtomicU64; Reason::COUNT],
    held: AtomicU64,
    made: AtomicU64,
    consumed: AtomicU64,
    delivered: AtomicU64,
}

impl Cells {
    fn read(&self, into: &mut Entry) {
        for reason in Reason::ALL {
            into.exits[reason] += self.exits[reason as usize].load(Ordering::Relaxed);
        }
        into.held += self.held.load(Ordering::Relaxed);
        into.made += self.made.load(Ordering::Relaxed);
        into.consumed += self.consumed.load(Ordering::Relaxed);
        into.delivered += self.delivered.load(Ordering::Relaxed);
    }
}

/// The general-purpose [`Account`]: counters an operator updates as it drops, fails, holds or
/// reshapes items.
///
/// Cold paths count with [`Tally::add`] (an atomic add); per-item paths take a [`TallyWriter`]
/// (one per subscription) whose counts are plain stores.
///
/// ```
/// use weir_runtime::ledger::{Account, Reason, Tally};
/// let tally = Tally::new("filter");
/// let mut writer = tally.writer();
/// writer.add(Reason::Filtered, 1);
/// writer.add(Reason::Filtered, 1);
/// tally.add(Reason::Failed, 1);
/// let entry = tally.entry();
/// assert_eq!((entry.exits[Reason::Filtered], entry.exits[Reason::Failed]), (2, 1));
/// ```
pub struct Tally {
    name: Arc<str>,
    shared: Cells,
    writers: Mutex<Vec<Arc<Cells>>>,
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally")
            .field("name", &self.name)
            .field("entry", &self.entry())
            .finish()
    }
}

impl Tally {
    /// A fresh account named `name`, registered with the current [`scope`] if there is one.
    pub fn new(name: impl Into<Arc<str>>) -> Arc<Self> {
        let tally = Arc::new(Self {
            name: name.into(),
            shared: Cells::default(),
            writers: Mutex::new(Vec::new()),
        });
        register(tally.clone());
        tally
    }

    /// Counts `n` items that left for `reason` (an atomic add: for paths that are not per item).
    pub fn add(&self, reason: Reason, n: u64) {
        if n > 0 {
            self.shared.exits[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Notes that `n` more items are held (an atomic add: for paths that are not per item, or
    /// state shared between tasks; per-subscription state uses [`TallyWriter::set_held`]).
    pub fn hold(&self, n: u64) {
        self.shared.held.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes that `n` held items left (delivered, or counted under an exit).
    pub fn release(&self, n: u64) {
        self.shared.held.fetch_sub(n, Ordering::Relaxed);
    }

    /// Releases up to `n` of the items held (none below zero); returns how many it released.
    /// For a guard that lets go of what is still held when its task is dropped, after a panic
    /// handler may already have counted it.
    pub fn release_up_to(&self, n: u64) -> u64 {
        let before = self
            .shared
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(n))
            })
            .unwrap_or_else(|held| held);
        before.min(n)
    }

    /// Items held as noted with [`hold`](Self::hold) / [`release`](Self::release).
    pub fn shared_held(&self) -> u64 {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Counts `n` items made (see [`Entry::made`]).
    pub fn add_made(&self, n: u64) {
        self.shared.made.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items consumed into what was made (see [`Entry::consumed`]).
    pub fn add_consumed(&self, n: u64) {
        self.shared.consumed.fetch_add(n, Ordering::Relaxed);
    }

    /// A writer with cells of its own, for one subscription's per-item counting.
    pub fn writer(self: &Arc<Self>) -> TallyWriter {
        let cells = Arc::new(Cells::default());
        lock(&self.writers).push(cells.clone());
        TallyWriter {
            cells,
            exits: [0; Reason::COUNT],
            made: 0,
            consumed: 0,
            delivered: 0,
        }
    }
}

impl Account for Tally {
    fn name(&self) -> &str {
        &self.name
    }

    fn entry(&self) -> Entry {
        let mut entry = Entry::default();
        self.shared.read(&mut entry);
        for cells in lock(&self.writers).iter() {
            cells.read(&mut entry);
        }
        entry
    }
}

/// One subscription's counters in a [`Tally`]: each count is a plain store of a running total
/// into a cell only this writer touches.
#[derive(Debug)]
pub struct TallyWriter {
    cells: Arc<Cells>,
    exits: [u64; Reason::COUNT],
    made: u64,
    consumed: u64,
    delivered: u64,
}

impl TallyWriter {
    /// Counts `n` items finished here (a sink's successful calls).
    #[inline]
    pub fn add_delivered(&mut self, n: u64) {
        self.delivered += n;
        self.cells
            .delivered
            .store(self.delivered, Ordering::Relaxed);
    }

    /// Counts `n` items that left for `reason`.
    #[inline]
    pub fn add(&mut self, reason: Reason, n: u64) {
        let total = &mut self.exits[reason as usize];
        *total += n;
        self.cells.exits[reason as usize].store(*total, Ordering::Relaxed);
    }

    /// Sets how many items this writer's subscription holds now.
    #[inline]
    pub fn set_held(&mut self, held: u64) {
        self.cells.held.store(held, Ordering::Relaxed);
    }

    /// Counts what this writer's subscription holds (its last [`set_held`](Self::set_held)) as
    /// cancelled: for a task dropped before it ended (its runtime shut down), whose items go
    /// with it.
    pub fn cancel_held(&mut self) {
        let held = self.cells.held.swap(0, Ordering::Relaxed);
        self.add(Reason::Cancelled, held);
    }

    /// Counts `n` items made.
    #[inline]
    pub fn add_made(&mut self, n: u64) {
        self.made += n;
        self.cells.made.store(self.made, Ordering::Relaxed);
    }

    /// Counts `n` items consumed into what was made.
    #[inline]
    pub fn add_consumed(&mut self, n: u64) {
        self.consumed += n;
        self.cells.consumed.store(self.consumed, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    static SCOPES: RefCell<Vec<Arc<Scope>>> = const { RefCell::new(Vec::new()) };
}

/// The accounts of one stage: every account created while it is [entered](Scope::enter) on a
/// thread is added to it (the innermost scope of that thread wins). A pipeline enters a stage's
/// scope while it builds the stage and again while the stage's operators subscribe, which is when
/// task-based operators make their lanes.
///
/// ```
/// use weir_runtime::ledger::{Scope, Tally};
/// let stage = Scope::new();
/// stage.enter(|| Tally::new("filter"));
/// stage.enter(|| Tally::new("batch"));
/// let names: Vec<String> = stage.accounts().iter().map(|a| a.name().to_owned()).collect();
/// assert_eq!(names, ["filter", "batch"]);
/// ```
#[derive(Default)]
pub struct Scope {
    accounts: Mutex<Vec<Arc<dyn Account>>>,
    /// Tasks [spawned](spawn) in this scope that have not ended.
    tasks: AtomicUsize,
    /// Notified when the last of them ends.
    settled: Notify,
    /// The scope a [`join`] made this one in (`None` for a stage's own scope).
    parent: Option<Arc<Scope>>,
    /// Whether a publisher whose items the books already counted was subscribed in this scope
    /// ([`input_counted`]).
    counted: AtomicBool,
    /// The scope a [`join`] found this one belongs to: accounts added later go there.
    joined: OnceLock<Arc<Scope>>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("accounts", &lock(&self.accounts).len())
            .field("tasks", &self.tasks())
            .finish()
    }
}

impl Scope {
    /// An empty scope.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Runs `f` with this scope entered on the current thread.
    pub fn enter<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                SCOPES.with(|scopes| scopes.borrow_mut().pop());
            }
        }
        SCOPES.with(|scopes| scopes.borrow_mut().push(self.clone()));
        let _leave = Leave;
        f()
    }

    /// The innermost scope entered on this thread, if any: for an operator that makes accounts
    /// later, outside it (a retry's next attempt, in its task), to enter it again then.
    pub fn current() -> Option<Arc<Scope>> {
        SCOPES.with(|scopes| scopes.borrow().last().cloned())
    }

    /// Adds `account`.
    pub fn add(&self, account: Arc<dyn Account>) {
        let mut accounts = lock(&self.accounts);
        match self.joined.get() {
            Some(owner) => {
                drop(accounts);
                owner.add(account);
            }
            None => accounts.push(account),
        }
    }

    /// The scope that owns this one's tasks: the stage's own scope, above every [`join`].
    fn owner(self: &Arc<Self>) -> Arc<Scope> {
        let mut scope = self.clone();
        while let Some(parent) = scope.parent.clone() {
            scope = parent;
        }
        scope
    }

    /// Every account added so far.
    pub fn accounts(&self) -> Vec<Arc<dyn Account>> {
        lock(&self.accounts).clone()
    }

    /// Tasks [spawned](spawn) in this scope that have not ended yet.
    pub fn tasks(&self) -> usize {
        self.tasks.load(Ordering::Acquire)
    }

    /// Waits until every task [spawned](spawn) in this scope has ended, its future dropped (so
    /// whatever it held is counted). weir's operator tasks end once their stream ends or is
    /// cancelled (cancel wakes them, also while they wait for their upstream) and they next run.
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: the last task ending after it wakes this wait.
            notified.as_mut().enable();
            if self.tasks() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The sum of every account's entry now.
    pub fn entry(&self) -> Entry {
        let mut total = Entry::default();
        for account in lock(&self.accounts).iter() {
            total.add(&account.entry());
        }
        total
    }
}

/// Runs `build` in a fresh [`Scope`] and returns, with its result, every account registered on
/// this thread meanwhile (by operators constructed in it).
///
/// ```
/// use weir_runtime::ledger::{self, Tally};
/// let (_, accounts) = ledger::scope(|| Tally::new("filter"));
/// assert_eq!(accounts.len(), 1);
/// assert_eq!(accounts[0].name(), "filter");
/// ```
pub fn scope<R>(build: impl FnOnce() -> R) -> (R, Vec<Arc<dyn Account>>) {
    let scope = Scope::new();
    let result = scope.enter(build);
    (result, scope.accounts())
}

/// Spawns `future` on `runtime` as a task of the innermost [`Scope`] entered on this thread (if
/// any), which [`Scope::settled`] waits for: for operators whose task holds items (a lane, a
/// boundary's outlet, calls in flight). The task counts as ended once its future is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use weir_runtime::ledger::{self, Scope};
/// let stage = Scope::new();
/// let runtime = tokio::runtime::Handle::current();
/// let task = stage.enter(|| ledger::spawn(&runtime, async { 7 }));
/// assert_eq!(stage.tasks(), 1);
/// assert_eq!(task.await.unwrap(), 7);
/// stage.settled().await;
/// assert_eq!(stage.tasks(), 0);
/// # }
/// ```
pub fn spawn<F>(runtime: &Handle, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match Scope::current().map(|scope| scope.owner()) {
        None => runtime.spawn(future),
        Some(scope) => {
            scope.tasks.fetch_add(1, Ordering::AcqRel);
            runtime.spawn(InScope {
                future: Box::pin(future),
                _task: TaskOf(scope),
            })
        }
    }
}

/// A task's future and its place in its scope's count. Fields drop in declaration order: the
/// future (and what it holds) first, then the count.
struct InScope<F> {
    future: Pin<Box<F>>,
    _task: TaskOf,
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// One task of a scope; leaves the count on drop and wakes the scope's waiters when it was the
/// last.
struct TaskOf(Arc<Scope>);

impl Drop for TaskOf {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// Whether this thread runs inside a [`scope`].
pub(crate) fn in_scope() -> bool {
    SCOPES.with(|scopes| !scopes.borrow().is_empty())
}

/// Adds `account` to the innermost [`Scope`] entered on this thread, if any.
pub fn register(account: Arc<dyn Account>) {
    let scope = SCOPES.with(|scopes| scopes.borrow().last().cloned());
    if let Some(scope) = scope {
        scope.add(account);
    }
}

/// Where an upstream that an operator joins into its stream comes from (see [`join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It carries items the stage's books counted as they came in (a pipeline stage's input,
    /// through whatever operators): its accounts are the stage's.
    Counted,
    /// It makes items of its own (a source built in the stage's code): each enters the stream,
    /// counted as made, when the operator takes it. Its accounts (a filter inside it, the lane
    /// it fills) are about items that never entered the stage's books, so they stay out of them.
    Own,
}

/// Subscribes one of an operator's upstreams (`subscribe`) in a scope of its own, to tell where
/// its items come from: for operators that join several upstreams into one stream (`zip`,
/// `merge`). Every account made or [claimed](claim) meanwhile, and later by what it started (a
/// retry's next attempt), is that upstream's. If a publisher whose items the books already
/// counted was subscribed in it ([`input_counted`]: a pipeline stage's input), the upstream is
/// [`Origin::Counted`] and its accounts join the enclosing scope's; otherwise it is
/// [`Origin::Own`], and they stay out of the stage's books. Tasks started in it are the stage's
/// either way ([`Scope::settled`] waits for them). `None` outside any scope: there are no books
/// to keep, and the operator keeps its own default.
///
/// ```
/// use weir_runtime::ledger::{self, Origin, Scope, Tally};
/// let stage = Scope::new();
/// let (own, counted) = stage.enter(|| {
///     let (_, own) = ledger::join(|| Tally::new("filter inside a generated source"));
///     let (_, counted) = ledger::join(|| {
///         ledger::input_counted();
///         Tally::new("filter on the stage's input")
///     });
///     (own, counted)
/// });
/// assert_eq!((own, counted), (Some(Origin::Own), Some(Origin::Counted)));
/// let names: Vec<String> = stage.accounts().iter().map(|a| a.name().to_owned()).collect();
/// assert_eq!(names, ["filter on the stage's input"]);
/// ```
pub fn join<R>(subscribe: impl FnOnce() -> R) -> (R, Option<Origin>) {
    let Some(parent) = Scope::current() else {
        return (subscribe(), None);
    };
    let child = Arc::new(Scope {
        parent: Some(parent.clone()),
        ..Scope::default()
    });
    let result = child.enter(subscribe);
    if !child.counted.load(Ordering::Acquire) {
        return (result, Some(Origin::Own));
    }
    parent.counted.store(true, Ordering::Release);
    let accounts = {
        let mut accounts = lock(&child.accounts);
        // Set under the lock: an account added from now on goes straight to the parent.
        let _ = child.joined.set(parent.clone());
        std::mem::take(&mut *accounts)
    };
    for account in accounts {
        parent.add(account);
    }
    (result, Some(Origin::Counted))
}

/// Tells the innermost scope that a publisher whose items its books already counted as they came
/// in is being subscribed in it (a pipeline stage's input calls it): see [`join`].
pub fn input_counted() {
    if let Some(scope) = Scope::current() {
        scope.counted.store(true, Ordering::Release);
    }
}

/// For an operator whose account was registered when it was built: call it when it is
/// subscribed. If it was built in a stage's code and is subscribed inside a [`join`] (it is part
/// of the upstream being joined), its account moves from the stage's scope to the join's.
/// Elsewhere it stays where it was registered.
///
/// ```
/// use std::sync::Arc;
/// use weir_runtime::ledger::{self, Account, Scope, Tally};
/// let stage = Scope::new();
/// stage.enter(|| {
///     let filter = Tally::new("filter inside a generated source");
///     ledger::join(|| ledger::claim(filter.clone() as Arc<dyn Account>));
/// });
/// assert!(stage.accounts().is_empty());
/// ```
pub fn claim(account: Arc<dyn Account>) {
    let Some(current) = Scope::current() else {
        return;
    };
    let mut above = current.parent.clone();
    while let Some(scope) = above {
        let found = {
            let mut accounts = lock(&scope.accounts);
            let at = accounts.iter().position(|a| Arc::ptr_eq(a, &account));
            at.map(|at| accounts.remove(at))
        };
        if let Some(account) = found {
            current.add(account);
            return;
        }
        above = scope.parent.clone();
    }
}
