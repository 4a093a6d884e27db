//! The task level: operators that run in a tokio task of their own, because they wait for
//! something besides their upstream (a timer, a second upstream, a backoff, free demand) or hold
//! items between calls.
//!
//! Such an operator is a [`TaskOperator`]: a step function over its own state that reads its
//! upstreams through bounded [lanes](weir_runtime::kit) and emits through an [`Outlet`]. [`start`]
//! does everything else, the same way for every operator:
//!
//! - it looks up the tokio runtime, and without one fails the subscription with
//!   [`ErrorKind::NoRuntime`] naming the stage;
//! - it builds the operator (which subscribes its lanes, see [`input`]), hands the subscriber its
//!   subscription and spawns the task;
//! - it runs the operator's steps ([`TaskOperator::advance`]) with the downstream's demand, stops
//!   them on cancel, fails the stream on `request(0)`, and keeps a poll budget: after 16 Ki items
//!   in one poll the task yields to the scheduler;
//! - it runs every poll under the crate's one panic guard: a panic in user code the task runs (a
//!   closure, or a hand-written upstream that the task drives while reading a lane) fails the
//!   stream with [`ErrorKind::Panicked`] naming the stage;
//! - when the operator is over it drops the operator first (so the upstreams it still reads are
//!   cancelled) and then sends the downstream exactly one terminal signal, none after a cancel;
//! - it keeps the operator's ledger account (a [`Tally`] named after the stage, registered with
//!   the ledger scope the operator is subscribed in): what the operator holds between polls
//!   ([`TaskOperator::held`]), what it made and consumed ([`Outlet::reshaped`]), and at the end
//!   what it still held: cancelled, or failed for the item a panic happened on
//!   ([`TaskOperator::in_hand`]).
//!
//! Memory stays bounded because a lane holds at most its capacity and asks its upstream for more
//! only as it drains, and an [`Outlet`] emits only within the downstream's demand.
//!
//! See the [crate documentation](crate#how-to-write-an-operator) for an example.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use weir_runtime::kit::{Lane, lane, lane_observed};
use weir_runtime::kit::{Next, TaskSubscription};
use weir_runtime::ledger::{Reason, Tally, TallyWriter};
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::{Error, ErrorKind, Publisher, Subscriber, Subscription, reject};

use crate::guard;

pub(crate) mod batch;
pub(crate) mod breaker;
pub(crate) mod buffer;
mod calls;
pub(crate) mod fan_out;
pub(crate) mod flat_map;
pub(crate) mod group_by;
pub(crate) mod map_async;
pub(crate) mod retry;
pub(crate) mod throttle;
pub(crate) mod timeout;
pub(crate) mod zip;

/// Items an operator's task emits in one poll before it yields to the tokio scheduler, so that a
/// busy stage cannot starve the other tasks of its worker.
pub(crate) const POLL_BUDGET: u64 = 16 * 1024;

/// One task-based operator: its state and how it moves on. Implement it and call [`start`] from
/// your publisher's `subscribe`.
pub trait TaskOperator<T>: Send + 'static {
    /// Moves the operator one step on with `demand`, the items the downstream allows now (zero:
    /// none yet): read a lane, check a timer, emit through `out` (at most `demand` items).
    ///
    /// The engine calls it again while it answers [`Progress::Again`], each time with the demand as
    /// it is then, and stops when the downstream cancels.
    fn advance<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress;

    /// Items the operator holds in its own state (taken from its lanes, not yet emitted: a
    /// partial batch, open groups, futures in flight), for the ledger. Whatever it still holds
    /// when it ends is counted as cancelled (or failed, see [`in_hand`](Self::in_hand)).
    fn held(&self) -> u64 {
        0
    }

    /// Of [`held`](Self::held), the items being handed to user code right now (a key function,
    /// a closure): if that code panics, they are counted as failed rather than cancelled.
    fn in_hand(&self) -> u64 {
        0
    }
}

/// What a [`TaskOperator`] step did.
#[derive(Debug)]
pub enum Progress {
    /// Something moved: call the operator again (answer it only after progress, or it spins).
    Again,
    /// Nothing to do until the task is woken: by a lane or a timer the operator polled, or by the
    /// downstream (the task is registered for its next `request` and for `cancel`).
    Wait,
    /// The operator is over: `Ok(())` completes the stream, `Err` fails it. Name the stage in
    /// errors of the operator's own; an upstream's error passes on as it is.
    Done(Result<(), Error>),
}

/// The tokio runtime to spawn on, or the error that names the stage that needs one.
pub(crate) fn runtime(stage: &str) -> Result<Handle, Error> {
    Handle::try_current().map_err(|_| Error::new(ErrorKind::NoRuntime).in_stage(stage))
}

/// What a stage that runs up to `concurrency` calls at once (`map_async`, `flat_map`) needs before
/// it starts: a concurrency of at least 1 and a runtime; the error names the stage.
pub(crate) fn check_concurrent(stage: &str, concurrency: usize) -> Result<(), Error> {
    if concurrency == 0 {
        return Err(Error::msg("a concurrency of at least 1 is needed").in_stage(stage));
    }
    runtime(stage).map(drop)
}

/// Starts a task-based operator for `subscriber`: `make` builds the operator (subscribing its
/// upstreams, see [`input`]); then the subscriber gets its subscription and the operator runs in a
/// task of its own. Without a tokio runtime, or if `make` panics, the subscription fails with an
/// error naming `stage` (the operator is then never built, or dropped).
pub fn start<T, S, O>(stage: &'static str, mut subscriber: S, make: impl FnOnce() -> O)
where
    T: 'static,
    S: Subscriber<T>,
    O: TaskOperator<T>,
{
    let runtime = match runtime(stage) {
        Ok(runtime) => runtime,
        Err(error) => return reject(subscriber, error),
    };
    let operator = match guard::catch(make) {
        Ok(operator) => operator,
        Err(panicked) => return reject(subscriber, panicked.in_stage(stage)),
    };
    let subscription = Arc::new(TaskSubscription::default());
    subscriber.on_subscribe(Subscription::new(subscription.clone()));
    weir_runtime::ledger::spawn(
        &runtime,
        Task {
            operator: Some(operator),
            out: Outlet {
                subscriber,
                subscription,
                stage,
                closed: false,
                emitted: 0,
                tally: Tally::new(stage).writer(),
            },
            _items: PhantomData,
        },
    );
}

/// Subscribes `upstream` through a lane named `name` holding at most `capacity` items (at least 1).
/// Read it with [`Lane::poll_lane`] and emit from it with [`Outlet::emit_from`]; dropping the lane
/// cancels the upstream.
pub fn input<T, P>(upstream: P, name: &str, capacity: usize) -> Lane<T>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    let (inlet, reader) = lane(name, capacity);
    upstream.subscribe(inlet);
    reader
}

/// [`input`] through a lane reporting into `metrics`, made beforehand (an operator hands them out
/// before it is subscribed); the lane's capacity is the metrics' capacity.
pub fn input_observed<T, P>(upstream: P, metrics: Arc<BufferMetrics>) -> Lane<T>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    let (inlet, reader) = lane_observed(metrics);
    upstream.subscribe(inlet);
    reader
}

/// Spawns `future` for `stage` under the panic guard: if it panics, `on_panic` gets the
/// `Panicked` error naming the stage (for tasks that feed ingresses rather than a subscriber, and
/// must fail them rather than let them close as if the stream had completed).
pub(crate) fn spawn_guarded<F, P>(runtime: &Handle, stage: Arc<str>, future: F, on_panic: P)
where
    F: Future<Output = ()> + Send + 'static,
    P: FnOnce(Error) + Send + 'static,
{
    weir_runtime::ledger::spawn(runtime, async move {
        if let Err(panicked) = guard::catch_future(future).await {
            on_panic(panicked.in_stage(stage));
        }
    });
}

/// The downstream side of a [`TaskOperator`]: its demand, and the calls that emit.
pub struct Outlet<S> {
    subscriber: S,
    subscription: Arc<TaskSubscription>,
    stage: &'static str,
    /// The downstream cancelled, or was failed by `request(0)`: no signal may follow.
    closed: bool,
    /// Items emitted in the current poll, against `POLL_BUDGET`.
    emitted: u64,
    /// The operator's ledger account.
    tally: TallyWriter,
}

impl<S> std::fmt::Debug for Outlet<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("stage", &self.stage)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<S> Outlet<S> {
    /// Runs `operator` as far as it goes in this poll: `Ready` with its result when it is over
    /// (`Ok(())` too when the downstream cancelled: `end` then sends nothing), `Pending` when it
    /// waits or has used up the poll budget (then the task is woken again at once).
    fn drive<T, O>(&mut self, operator: &mut O, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        O: TaskOperator<T>,
        S: Subscriber<T>,
    {
        self.emitted = 0;
        // Registered for `cancel` for the whole poll: the operator may wait for a lane or a timer
        // while demand is outstanding, and a cancel must still wake it.
        let _ = self.subscription.watch(cx);
        loop {
            if self.emitted >= POLL_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let demand = match self.subscription.poll_next(cx) {
                Next::Emit(n) => n,
                Next::Wait => 0,
                Next::Cancelled => {
                    self.closed = true;
                    return Poll::Ready(Ok(()));
                }
                Next::BadRequest => {
                    let error = Error::new(ErrorKind::RequestZero).in_stage(self.stage);
                    return Poll::Ready(Err(error));
                }
            };
            match operator.advance(cx, demand, self) {
                Progress::Again => continue,
                Progress::Wait => return Poll::Pending,
                Progress::Done(result) => return Poll::Ready(result),
            }
        }
    }

    /// Emits one item, using up one unit of demand.
    #[inline]
    pub fn emit<T>(&mut self, item: T)
    where
        S: Subscriber<T>,
    {
        self.subscription.demand().consume(1);
        self.emitted += 1;
        self.subscriber.on_next(item);
    }

    /// Emits a burst of `lane`'s items until the downstream accepted `max` of them (at most the
    /// demand) or the lane has none left; returns `(taken, accepted)` (a filter downstream may
    /// decline items: those are taken but not accepted, and use up no demand).
    #[inline]
    pub fn emit_from<T>(&mut self, lane: &mut Lane<T>, max: u64) -> (usize, u64)
    where
        T: Send + 'static,
        S: Subscriber<T>,
    {
        let (taken, accepted) = lane.emit_to(&mut self.subscriber, max);
        self.subscription.demand().consume(accepted);
        self.emitted += accepted;
        (taken, accepted)
    }

    /// Counts a reshaping for the ledger: `consumed` items went into `made` new ones (a batch of
    /// 100 items: 100, 1; a pair of a zip: the second item, 0 plus the item itself, see its
    /// docs). Call it as the made items are emitted.
    #[inline]
    pub fn reshaped(&mut self, consumed: u64, made: u64) {
        self.tally.add_consumed(consumed);
        self.tally.add_made(made);
    }

    /// Counts `n` items the operator let go for `reason` (a shedding throttle's drops...).
    #[inline]
    pub fn count(&mut self, reason: Reason, n: u64) {
        self.tally.add(reason, n);
    }

    /// Tells the downstream that nothing more comes for now: call it after a burst, before the
    /// task waits (subscribers that batch their hand-off make held items visible).
    #[inline]
    pub fn flush<T>(&mut self)
    where
        S: Subscriber<T>,
    {
        self.subscriber.on_flush();
    }

    /// Sends the terminal signal for `result`, unless the downstream is gone.
    fn end<T>(&mut self, result: Result<(), Error>)
    where
        S: Subscriber<T>,
    {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        match result {
            Ok(()) => self.subscriber.on_complete(),
            Err(error) => self.subscriber.on_error(error),
        }
    }
}

/// The spawned task: an operator and its outlet.
struct Task<O, S, T> {
    /// `None` once the operator is over (dropped, so its lanes cancelled their upstreams).
    operator: Option<O>,
    out: Outlet<S>,
    _items: PhantomData<fn() -> T>,
}

// The operator is polled through `&mut` and never pinned, so moving the task is fine.
impl<O, S, T> Unpin for Task<O, S, T> {}

impl<O, S, T> Drop for Task<O, S, T> {
    /// Dropped before the operator was over (its runtime shut down while it waited): what it held
    /// at its last wait goes with it, counted as cancelled.
    fn drop(&mut self) {
        if self.operator.is_some() {
            self.out.tally.cancel_held();
        }
    }
}

impl<T, O, S> Future for Task<O, S, T>
where
    O: TaskOperator<T>,
    S: Subscriber<T>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(operator) = this.operator.as_mut() else {
            return Poll::Ready(());
        };
        let out = &mut this.out;
        let (result, panicked) = match guard::catch(|| out.drive(operator, cx)) {
            Ok(Poll::Pending) => {
                this.out.tally.set_held(operator.held());
                return Poll::Pending;
            }
            Ok(Poll::Ready(result)) => (result, false),
            Err(panicked) => (Err(panicked.in_stage(this.out.stage)), true),
        };
        // What the operator still holds is dropped with it: counted, never lost.
        let (held, in_hand) = (operator.held(), operator.in_hand().min(operator.held()));
        let failed = if panicked { in_hand } else { 0 };
        this.out.tally.add(Reason::Failed, failed);
        this.out.tally.add(Reason::Cancelled, held - failed);
        this.out.tally.set_held(0);
        this.operator = None;
        this.out.end(result);
        Poll::Ready(())
    }
}
