//! Fan-out: `broadcast` (every output gets every item), `balance` (each item to the output with the
//! most room) and `partition` (each item to the output its key picks).
//!
//! A hub task reads the upstream through a bounded prefetch and pushes into one bounded queue per
//! output (an ingress: its metrics count depth and drops per output). Outputs are publishers to
//! subscribe to. What a slow output does to the others is explicit ([`Lagging`]): by default the
//! slowest output sets the pace (backpressure reaches the upstream); a broadcast can instead drop
//! items for an output that is full (counted) or disconnect it, so one slow consumer is shed
//! instead of stalling all. When every output has gone away, the upstream is cancelled.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;
use weir_runtime::Subscriber;
use weir_runtime::metrics::BufferMetrics;

use futures::StreamExt;
use weir_runtime::ledger::{Reason, Tally, TallyWriter};
use weir_runtime::queue::{self, QueueHandle, QueuePublisher, Refused, WhenFull};
use weir_runtime::sink::into_stream_named;
use weir_runtime::{Error, Publisher};

use super::{runtime, spawn_guarded};

/// What a full output does to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lagging {
    /// Wait for it: the slowest output sets the pace for all.
    Wait,
    /// Drop the item for that output only (counted as `dropped_newest` in its metrics).
    Drop,
    /// Fail that output ("too slow") and go on without it.
    Disconnect,
}

/// A broadcast's route: every item to every live output, a full output handled per [`Lagging`].
struct BroadcastRoute(Lagging);
/// `next`: where the scan for the roomiest output starts, rotated so that ties are shared.
struct BalanceRoute {
    next: usize,
}
struct PartitionRoute<K>(K);

/// Every item to every output (items are cloned). See the module docs for [`Lagging`].
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_operators::{Lagging, PublisherExt, broadcast};
/// use weir_runtime::source;
/// let outputs = broadcast(source::from_iter(1..=3u32), 2, 16, Lagging::Wait).unwrap();
/// let (a, b) = (outputs[0].clone(), outputs[1].clone());
/// let (a, b) = tokio::join!(a.collect(), b.collect());
/// assert_eq!((a.unwrap(), b.unwrap()), (vec![1, 2, 3], vec![1, 2, 3]));
/// # }
/// ```
pub fn broadcast<T, P>(
    upstream: P,
    outputs: usize,
    capacity: usize,
    lagging: Lagging,
) -> Result<Vec<FanOutput<T>>, Error>
where
    T: Clone + Send + 'static,
    P: Publisher<T>,
{
    // A full output waits (backpressure), drops the copy (counted) or refuses it (then the hub
    // disconnects that output).
    let when_full = match lagging {
        Lagging::Wait => WhenFull::Wait,
        Lagging::Drop => WhenFull::DropNewest,
        Lagging::Disconnect => WhenFull::Refuse,
    };
    start(
        upstream,
        "broadcast",
        outputs,
        capacity,
        when_full,
        BroadcastRoute(lagging),
    )
}

/// Each item to the output with the most free room (ties taken in turn): spreads work over
/// `outputs` subscribers by their free demand. Put a boundary after each output so that the
/// subscribers work in parallel, each in its own task.
pub fn balance<T, P>(
    upstream: P,
    outputs: usize,
    capacity: usize,
) -> Result<Vec<FanOutput<T>>, Error>
where
    T: Send + 'static,
    P: Publisher<T>,
{
    start(
        upstream,
        "balance",
        outputs,
        capacity,
        WhenFull::Wait,
        BalanceRoute { next: 0 },
    )
}

/// Each item to output `hash(key(item)) % outputs`: items with the same key stay together and in
/// order (which output a key goes to is not fixed across runs; to choose the output, use
/// [`route`]).
pub fn partition<T, P, K, F>(
    upstream: P,
    outputs: usize,
    capacity: usize,
    key: F,
) -> Result<Vec<FanOutput<T>>, Error>
where
    T: Send + 'static,
    P: Publisher<T>,
    K: Hash,
    F: FnMut(&T) -> K + Send + 'static,
{
    let hasher = std::hash::RandomState::new();
    let mut key = key;
    start(
        upstream,
        "partition",
        outputs,
        capacity,
        WhenFull::Wait,
        PartitionRoute(move |item: &T, outputs: usize| {
            Ok((hasher.hash_one(key(item)) % outputs as u64) as usize)
        }),
    )
}

/// Each item to the output `pick(item)` names (0-based): routing by content, e.g. valid rows to
/// output 0 and rejects to output 1. Items sent to one output stay in order; the slowest output
/// sets the pace. An index out of range fails every output with an error naming the stage and
/// the index (the item is counted as failed).
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_operators::{PublisherExt, route};
/// use weir_runtime::source;
/// let outputs = route(source::from_iter(1..=6u32), 2, 16, |x| usize::from(x % 3 == 0)).unwrap();
/// let (rest, threes) = (outputs[0].clone(), outputs[1].clone());
/// let (rest, threes) = tokio::join!(rest.collect(), threes.collect());
/// assert_eq!((rest.unwrap(), threes.unwrap()), (vec![1, 2, 4, 5], vec![3, 6]));
/// # }
/// ```
pub fn route<T, P, F>(
    upstream: P,
    outputs: usize,
    capacity: usize,
    pick: F,
) -> Result<Vec<FanOutput<T>>, Error>
where
    T: Send + 'static,
    P: Publisher<T>,
    F: FnMut(&T) -> usize + Send + 'static,
{
    let mut pick = pick;
    start(
        upstream,
        "route",
        outputs,
        capacity,
        WhenFull::Wait,
        PartitionRoute(move |item: &T, outputs: usize| match pick(item) {
            index if index < outputs => Ok(index),
            index => Err(Error::msg(format!(
                "the route picked output {index}, but there are {outputs} (0 to {})",
                outputs - 1
            ))),
        }),
    )
}

fn start<T, P, R>(
    upstream: P,
    stage: &'static str,
    outputs: usize,
    capacity: usize,
    when_full: WhenFull,
    route: R,
) -> Result<Vec<FanOutput<T>>, Error>
where
    T: Send + 'static,
    P: Publisher<T>,
    R: Dispatch<T> + Send + 'static,
{
    if outputs == 0 {
        return Err(Error::msg("at least one output is needed").in_stage(stage));
    }
    let runtime = runtime(stage)?;
    let waiting = Arc::new(Waiting {
        left: AtomicUsize::new(outputs),
        all_in: Notify::new(),
    });
    let mut handles = Vec::with_capacity(outputs);
    let mut publishers = Vec::with_capacity(outputs);
    for i in 0..outputs {
        let (handle, publisher) = queue::bounded::<T>(format!("{stage}.{i}"), capacity, when_full)?;
        handles.push(Some(handle));
        publishers.push(FanOutput {
            inner: publisher,
            slot: Arc::new(OutputSlot {
                arrived: AtomicBool::new(false),
                waiting: waiting.clone(),
            }),
        });
    }
    // A panic in the hub (a key function, `Clone`, or a hand-written upstream it drives) fails
    // every output: dropping their handles would close them as if the stream had completed.
    // The hub's account: copies made and originals consumed (a broadcast), items it could not
    // place, the item in its hands while it waits for an output (failed if the hub panics with
    // it). Its input lane is made here too (its upstream is only asked for items once the hub
    // runs), so both are counted in the ledger scope the fan-out is built in.
    let account = Tally::new(stage);
    let mut tally = account.writer();
    let mut items = into_stream_named(upstream, capacity, stage);
    let failing: Vec<QueueHandle<T>> = handles.iter().flatten().cloned().collect();
    let hub_account = account.clone();
    let on_panic = move |error: Error| {
        let in_hand = account.shared_held();
        account.release(in_hand);
        account.add(Reason::Failed, in_hand);
        for handle in &failing {
            handle.fail(error.clone());
        }
    };
    let mut route = route;
    let closers: Vec<_> = handles.iter().flatten().map(QueueHandle::closer).collect();
    let hub = async move {
        // Every output closed (its subscriber gone, or never coming: a pipeline aborted before
        // its sinks ran): nothing is left to do, also while the upstream is quiet. Returning
        // drops `items`, which cancels the upstream.
        let gone = async {
            for closer in &closers {
                closer.closed().await;
            }
        };
        let mut gone = std::pin::pin!(gone);
        // Nothing flows until every output has its subscriber (or went without one): items
        // pushed earlier would be shed (or would stall) for an output nobody reads yet.
        let all_in = waiting.all_in.notified();
        if waiting.left.load(Ordering::Acquire) > 0 {
            tokio::select! {
                biased;
                () = all_in => {}
                () = &mut gone => return,
            }
        }
        loop {
            let item = tokio::select! {
                biased;
                item = items.next() => item,
                () = &mut gone => return,
            };
            let Some(item) = item else { break };
            match item {
                Ok(item) => {
                    let mut in_hand = InHand::take(&hub_account);
                    let live = route
                        .dispatch(item, &mut handles, stage, &mut tally, &mut in_hand)
                        .await;
                    drop(in_hand);
                    match live {
                        Ok(true) => {}
                        // Every output went away: dropping `items` cancels the upstream.
                        Ok(false) => return,
                        Err(error) => {
                            let error = error.in_stage(stage);
                            for handle in handles.iter().flatten() {
                                handle.fail(error.clone());
                            }
                            return;
                        }
                    }
                }
                Err(error) => {
                    for handle in handles.iter().flatten() {
                        handle.fail(error.clone());
                    }
                    return;
                }
            }
        }
        for handle in handles.iter().flatten() {
            handle.close();
        }
    };
    spawn_guarded(&runtime, stage.into(), hub, on_panic);
    Ok(publishers)
}

/// The hub's item in hand while a dispatch runs, held in the hub's account until the dispatch
/// lets go of it: when the item (or its first copy) goes into an output's push, whose queue
/// counts it from then on, or when the dispatch counts it itself. Dropped before that, the item
/// dies with the hub: counted as failed if the hub is panicking (a key function or `Clone`
/// panicked on it; the hub's locals are dropped while the panic unwinds, before the panic
/// handler runs), else as cancelled (the hub was dropped mid-dispatch: its runtime shut down).
struct InHand<'a> {
    account: &'a Tally,
    held: bool,
}

impl<'a> InHand<'a> {
    fn take(account: &'a Tally) -> Self {
        account.hold(1);
        Self {
            account,
            held: true,
        }
    }

    /// The item is someone else's to count from now on.
    fn let_go(&mut self) {
        if std::mem::take(&mut self.held) {
            self.account.release(1);
        }
    }
}

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        if self.held {
            let released = self.account.release_up_to(1);
            let reason = if std::thread::panicking() {
                Reason::Failed
            } else {
                Reason::Cancelled
            };
            self.account.add(reason, released);
        }
    }
}

/// Counts outputs still waiting for their subscriber.
struct Waiting {
    left: AtomicUsize,
    all_in: Notify,
}

/// One output of a fan-out: a publisher serving one subscriber (a second one gets
/// `AlreadySubscribed`). Items start flowing once every output of the fan-out is subscribed (or
/// dropped without a subscriber: it no longer holds the others back).
pub struct FanOutput<T> {
    inner: QueuePublisher<T>,
    slot: Arc<OutputSlot>,
}

impl<T> Clone for FanOutput<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            slot: self.slot.clone(),
        }
    }
}

/// One output's place among those the hub waits for, shared by the output's clones.
struct OutputSlot {
    arrived: AtomicBool,
    waiting: Arc<Waiting>,
}

impl OutputSlot {
    /// The output is subscribed, or gone: the hub no longer waits for it.
    fn arrive(&self) {
        if !self.arrived.swap(true, Ordering::AcqRel)
            && self.waiting.left.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.waiting.all_in.notify_one();
        }
    }
}

impl Drop for OutputSlot {
    /// An output dropped without a subscriber (its queue closed with it) no longer holds the
    /// other outputs back.
    fn drop(&mut self) {
        self.arrive();
    }
}

impl<T> std::fmt::Debug for FanOutput<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutput")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T> FanOutput<T> {
    /// This output's queue counters (depth, drops by reason).
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.inner.metrics()
    }
}

impl<T: Send + 'static> Publisher<T> for FanOutput<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        self.inner.subscribe(subscriber);
        self.slot.arrive();
    }
}

/// Pushes into an output, waiting while it is full. `false` if the output is gone.
async fn push_waiting<T>(handle: &QueueHandle<T>, item: T) -> bool {
    handle.push(item).await.is_ok()
}

/// How a route places one item; returns `false` when no output is left. It lets go of `in_hand`
/// once the item is counted or in an output's push (see [`InHand`]).
trait Dispatch<T> {
    fn dispatch(
        &mut self,
        item: T,
        outputs: &mut [Option<QueueHandle<T>>],
        stage: &'static str,
        tally: &mut TallyWriter,
        in_hand: &mut InHand<'_>,
    ) -> impl std::future::Future<Output = Result<bool, Error>> + Send;
}

impl<T: Clone + Send + 'static> Dispatch<T> for BroadcastRoute {
    async fn dispatch(
        &mut self,
        item: T,
        outputs: &mut [Option<QueueHandle<T>>],
        stage: &'static str,
        tally: &mut TallyWriter,
        in_hand: &mut InHand<'_>,
    ) -> Result<bool, Error> {
        // The item is consumed into one copy per live output (made as it is cloned; a copy an
        // output refuses is counted by that output's queue: dropped, rejected or closed). Once
        // the first copy is made, the original counts as consumed.
        let mut copies = 0;
        for (index, slot) in outputs.iter_mut().enumerate() {
            let Some(handle) = slot.as_ref() else {
                continue;
            };
            let copy = item.clone();
            tally.add_made(1);
            if copies == 0 {
                tally.add_consumed(1);
                in_hand.let_go();
            }
            copies += 1;
            let keep = match self.0 {
                Lagging::Wait => push_waiting(handle, copy).await,
                // A full output drops the item (counted by its ingress).
                Lagging::Drop => !matches!(handle.try_push(copy), Err(Refused::Closed(_))),
                Lagging::Disconnect => match handle.try_push(copy) {
                    Ok(_) => true,
                    Err(Refused::Closed(_)) => false,
                    Err(_) => {
                        tracing::warn!(
                            stage,
                            output = index,
                            "disconnecting a subscriber that fell behind"
                        );
                        handle.fail(
                            Error::msg("disconnected: this subscriber fell too far behind")
                                .in_stage(stage),
                        );
                        false
                    }
                },
            };
            if !keep {
                *slot = None;
            }
        }
        if copies == 0 {
            tally.add(Reason::Cancelled, 1); // every output went away
            in_hand.let_go();
        }
        Ok(outputs.iter().any(Option::is_some))
    }
}

impl<T: Send + 'static> Dispatch<T> for BalanceRoute {
    async fn dispatch(
        &mut self,
        item: T,
        outputs: &mut [Option<QueueHandle<T>>],
        _: &'static str,
        tally: &mut TallyWriter,
        in_hand: &mut InHand<'_>,
    ) -> Result<bool, Error> {
        let count = outputs.len();
        let start = self.next;
        self.next = (self.next + 1) % count;
        loop {
            let roomiest = (0..count)
                .map(|k| (start + k) % count)
                .filter_map(|i| outputs[i].as_ref().map(|h| (i, h.len())))
                .min_by_key(|&(_, len)| len)
                .map(|(i, _)| i);
            let Some(index) = roomiest else {
                tally.add(Reason::Cancelled, 1); // every output went away
                in_hand.let_go();
                return Ok(false);
            };
            let handle = outputs[index].as_ref().expect("chosen among live outputs");
            if handle.is_empty() && handle.is_closed() {
                // Gone (its subscriber left, or it was dropped without one): an empty queue
                // looks the roomiest; the item goes to one still there.
                outputs[index] = None;
                continue;
            }
            in_hand.let_go();
            if !push_waiting(handle, item).await {
                outputs[index] = None;
            }
            return Ok(outputs.iter().any(Option::is_some));
        }
    }
}

impl<T, K> Dispatch<T> for PartitionRoute<K>
where
    T: Send + 'static,
    K: FnMut(&T, usize) -> Result<usize, Error> + Send,
{
    async fn dispatch(
        &mut self,
        item: T,
        outputs: &mut [Option<QueueHandle<T>>],
        stage: &'static str,
        tally: &mut TallyWriter,
        in_hand: &mut InHand<'_>,
    ) -> Result<bool, Error> {
        let index = match (self.0)(&item, outputs.len()) {
            Ok(index) => index,
            Err(error) => {
                tally.add(Reason::Failed, 1);
                in_hand.let_go();
                return Err(error);
            }
        };
        let Some(handle) = outputs[index].as_ref() else {
            // That partition's subscriber went away: its items cannot go anywhere else.
            tracing::warn!(
                stage,
                output = index,
                "dropping an item for a closed partition"
            );
            tally.add(Reason::Cancelled, 1);
            in_hand.let_go();
            return Ok(outputs.iter().any(Option::is_some));
        };
        in_hand.let_go();
        if !push_waiting(handle, item).await {
            outputs[index] = None;
        }
        Ok(outputs.iter().any(Option::is_some))
    }
}
