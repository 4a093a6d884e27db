//! Fan-in: `merge` (fair across sources) and `priority_lanes` (weighted, starvation-bounded).
//!
//! Every source is read through its own [`Lane`]: a bounded credit ring, so a source is asked for
//! items only as its lane drains (demand to each lane follows its share) and never holds more than
//! its capacity. One task serves the lanes by deficit round-robin: each visit adds
//! `QUANTUM x weight` to a busy lane's deficit and emits up to that many of its items, so over any
//! stretch where all lanes are busy each gets `weight / total weight` of the output, and an item in
//! a high lane waits at most one low-lane quantum behind a saturated low lane. Items move in bursts
//! (`pop_each`), not one wake-up per item.
//!
//! Errors fail fast (cancelling the other sources) unless the merge delays them
//! ([`merge_delay_error`]): then the other sources run to their end and the first error follows.
//!
//! In the ledger, each source is subscribed in a [`join`]: a source that carries a pipeline
//! stage's input is the stream's, with its accounts; one that makes its own items (built in the
//! stage's code) has each item counted as made when the merge takes it, and its accounts kept out
//! of the stage's books (its items never entered them).

use std::sync::Arc;
use std::task::{Context, Poll};

use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::ledger::{Origin, join};
use weir_runtime::metrics::BufferCounts;
use weir_runtime::{BoxPublisher, Error, Publisher, Subscriber};

use crate::task::{Outlet, Progress, TaskOperator, input, start};

/// Items a lane of weight 1 may emit per visit in a [`merge`]: large enough that serving a lane
/// costs little per item.
pub const QUANTUM: u64 = 64;
/// Items a lane of weight 1 may emit per visit in [`PriorityLanes`]: one, so that an item in a high
/// lane waits behind at most `weight` items of a saturated low lane (latency over throughput).
pub const PRIORITY_QUANTUM: u64 = 1;
/// Items held per source by [`merge`] unless configured.
pub const DEFAULT_LANE_CAPACITY: usize = 256;

/// One input of a merge: a source, its weight and its lane's capacity.
struct Input<P> {
    name: String,
    weight: u64,
    capacity: usize,
    source: P,
}

/// A merge of several sources into one publisher; see [`merge`], [`merge_delay_error`] and
/// [`PriorityLanes`].
pub struct Merge<P> {
    inputs: Vec<Input<P>>,
    delay_error: bool,
    stage: &'static str,
    quantum: u64,
}

impl<P> std::fmt::Debug for Merge<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.stage)
            .field(
                "lanes",
                &self.inputs.iter().map(|i| &i.name).collect::<Vec<_>>(),
            )
            .field("delay_error", &self.delay_error)
            .finish()
    }
}

/// Merges `sources` fairly: while all have items, each gets an equal share of the output. Completes
/// when all complete; the first error fails the merge at once and cancels the other sources.
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_operators::{PublisherExt, merge};
/// use weir_runtime::source;
/// let mut all = merge(vec![source::from_iter(0..3u32), source::from_iter(10..13u32)])
///     .collect()
///     .await
///     .unwrap();
/// all.sort_unstable();
/// assert_eq!(all, vec![0, 1, 2, 10, 11, 12]);
/// # }
/// ```
pub fn merge<P>(sources: impl IntoIterator<Item = P>) -> Merge<P> {
    Merge::equal(sources, false, "merge")
}

/// Like [`merge`], but an error waits until the other sources end, then fails the merge.
pub fn merge_delay_error<P>(sources: impl IntoIterator<Item = P>) -> Merge<P> {
    Merge::equal(sources, true, "merge_delay_error")
}

impl<P> Merge<P> {
    fn equal(sources: impl IntoIterator<Item = P>, delay_error: bool, stage: &'static str) -> Self {
        let inputs = sources
            .into_iter()
            .enumerate()
            .map(|(i, source)| Input {
                name: format!("{stage}.{i}"),
                weight: 1,
                capacity: DEFAULT_LANE_CAPACITY,
                source,
            })
            .collect();
        Self {
            inputs,
            delay_error,
            stage,
            quantum: QUANTUM,
        }
    }

    /// Holds at most `capacity` items per source (at least 1).
    pub fn lane_capacity(mut self, capacity: usize) -> Self {
        for input in &mut self.inputs {
            input.capacity = capacity.max(1);
        }
        self
    }
}

/// Named lanes with weights and capacities, merged so that higher weights get proportionally more
/// of the output while no lane starves: a saturated low lane delays a high lane by at most one
/// low-lane quantum ([`PRIORITY_QUANTUM`] x its weight items).
///
/// ```
/// # #[tokio::main] async fn main() {
/// use weir_operators::{PriorityLanes, PublisherExt};
/// use weir_runtime::source;
/// let lanes = PriorityLanes::new()
///     .lane("interactive", 8, 64, source::from_iter(0..10u32))
///     .lane("batch", 1, 1024, source::from_iter(100..1100u32))
///     .build()
///     .unwrap();
/// assert_eq!(lanes.collect().await.unwrap().len(), 1010);
/// # }
/// ```
#[derive(Default)]
pub struct PriorityLanes<T> {
    inputs: Vec<Input<BoxPublisher<T>>>,
}

impl<T> std::fmt::Debug for PriorityLanes<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityLanes")
            .field(
                "lanes",
                &self
                    .inputs
                    .iter()
                    .map(|i| (&i.name, i.weight))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<T: Send + 'static> PriorityLanes<T> {
    /// No lanes yet.
    pub fn new() -> Self {
        Self { inputs: Vec::new() }
    }

    /// Adds a lane `name` fed by `source`, with `weight` (its share) and `capacity` (its buffer).
    pub fn lane(
        mut self,
        name: impl Into<String>,
        weight: u64,
        capacity: usize,
        source: impl Publisher<T>,
    ) -> Self {
        self.inputs.push(Input {
            name: name.into(),
            weight,
            capacity,
            source: source.boxed(),
        });
        self
    }

    /// Checks the lanes (at least one, names unique and non-empty, weights and capacities of at
    /// least 1) and builds the publisher; every problem is reported at once.
    pub fn build(self) -> Result<Merge<BoxPublisher<T>>, Error> {
        let mut problems = Vec::new();
        if self.inputs.is_empty() {
            problems.push("at least one lane is needed".to_owned());
        }
        for (i, input) in self.inputs.iter().enumerate() {
            if input.name.is_empty() {
                problems.push(format!("lane {i} has an empty name"));
            }
            if self.inputs[..i]
                .iter()
                .any(|other| other.name == input.name)
            {
                problems.push(format!("lane name `{}` is used twice", input.name));
            }
            if input.weight == 0 {
                problems.push(format!(
                    "lane `{}` needs a weight of at least 1",
                    input.name
                ));
            }
            if input.capacity == 0 {
                problems.push(format!(
                    "lane `{}` needs a capacity of at least 1",
                    input.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::msg(problems.join("; ")).in_stage("priority_lanes"));
        }
        Ok(Merge {
            inputs: self.inputs,
            delay_error: false,
            stage: "priority_lanes",
            quantum: PRIORITY_QUANTUM,
        })
    }
}

/// Live counters of a running merge, one snapshot per lane.
#[derive(Debug, Clone)]
pub struct LaneMetrics(Arc<Vec<Arc<weir_runtime::metrics::BufferMetrics>>>);

impl LaneMetrics {
    /// A snapshot of every lane's buffer (depth, items in / out, oldest-item age...).
    pub fn snapshot(&self) -> Vec<BufferCounts> {
        self.0.iter().map(|metrics| metrics.snapshot()).collect()
    }
}

impl<P> Merge<P> {
    /// Subscribes like [`Publisher::subscribe`] and returns the lanes' live counters.
    pub fn subscribe_observed<T, S>(self, subscriber: S) -> LaneMetrics
    where
        P: Publisher<T>,
        T: Send + 'static,
        S: Subscriber<T>,
    {
        run(self, subscriber)
    }
}

impl<T, P> Publisher<T> for Merge<P>
where
    P: Publisher<T>,
    T: Send + 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        run(self, subscriber);
    }
}

/// Starts the merge's task; the lanes' counters come back (none if it could not start).
fn run<T, P, S>(merge: Merge<P>, subscriber: S) -> LaneMetrics
where
    P: Publisher<T>,
    T: Send + 'static,
    S: Subscriber<T>,
{
    let mut metrics = Vec::new();
    start(merge.stage, subscriber, || {
        let lanes: Vec<_> = merge
            .inputs
            .into_iter()
            .map(|source| {
                let (reader, from) = join(|| input(source.source, &source.name, source.capacity));
                LaneState {
                    reader: reader.failing_as(merge.stage),
                    weight: source.weight.max(1),
                    deficit: 0,
                    ended: false,
                    own: from == Some(Origin::Own),
                }
            })
            .collect();
        metrics = lanes.iter().map(|l| l.reader.metrics()).collect();
        MergeTask {
            live: lanes.len(),
            lanes,
            next: 0,
            delay_error: merge.delay_error,
            first_error: None,
            quantum: merge.quantum,
        }
    });
    LaneMetrics(Arc::new(metrics))
}

struct LaneState<T> {
    reader: Lane<T>,
    weight: u64,
    deficit: u64,
    ended: bool,
    /// Its source makes its own items (see [`join`]): each enters the stream, counted as made,
    /// when the merge takes it.
    own: bool,
}

struct MergeTask<T> {
    lanes: Vec<LaneState<T>>,
    /// Where the next round starts (rotated for fairness).
    next: usize,
    /// Lanes not ended yet.
    live: usize,
    delay_error: bool,
    first_error: Option<Error>,
    /// Items per visit for a lane of weight 1.
    quantum: u64,
}

enum Round {
    /// Moved items; go on.
    Served,
    /// Nothing to emit now: every lane is waiting (wakers registered) or demand ran out.
    Idle,
    /// The merge is over (an error failed it, or every lane ended): its result.
    Over(Result<(), Error>),
}

impl<T: Send + 'static> MergeTask<T> {
    /// A lane ended: count it, and fail fast on an error unless errors are delayed. Returns the
    /// merge's result when it is over (ending drops the other lanes, which cancels their sources).
    fn lane_ended(&mut self, index: usize, result: Result<(), Error>) -> Option<Result<(), Error>> {
        self.lanes[index].ended = true;
        self.live -= 1;
        if let Err(error) = result {
            if !self.delay_error {
                return Some(Err(error));
            }
            self.first_error.get_or_insert(error);
        }
        if self.live == 0 {
            return Some(self.first_error.take().map_or(Ok(()), Err));
        }
        None
    }

    /// One deficit round-robin round over the lanes with up to `demand` items.
    fn round<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Round {
        let count = self.lanes.len();
        let quantum = self.quantum;
        let mut served = 0;
        let mut moved = false;
        for k in 0..count {
            let index = (self.next + k) % count;
            if self.lanes[index].ended {
                continue;
            }
            match self.lanes[index].reader.poll_lane(cx) {
                Poll::Pending => self.lanes[index].deficit = 0,
                Poll::Ready(LaneEvent::Ended(result)) => {
                    if let Some(result) = self.lane_ended(index, result) {
                        return Round::Over(result);
                    }
                }
                Poll::Ready(LaneEvent::Items) => {
                    if served >= demand {
                        break;
                    }
                    let lane = &mut self.lanes[index];
                    lane.deficit = lane.deficit.saturating_add(quantum * lane.weight);
                    let max = lane.deficit.min(demand - served);
                    let (taken, accepted) = out.emit_from(&mut lane.reader, max);
                    if lane.own {
                        out.reshaped(0, taken as u64);
                    }
                    lane.deficit = lane.deficit.saturating_sub(taken as u64);
                    served += accepted;
                    moved |= taken > 0;
                }
            }
        }
        self.next = (self.next + 1) % count.max(1);
        // Items a filter downstream declined still count as progress: look again.
        if moved { Round::Served } else { Round::Idle }
    }

    /// Without demand, still notice lanes that end (an error needs no demand to be signalled).
    fn watch_ends(&mut self, cx: &mut Context<'_>) -> Option<Result<(), Error>> {
        for index in 0..self.lanes.len() {
            if self.lanes[index].ended {
                continue;
            }
            if let Poll::Ready(LaneEvent::Ended(result)) = self.lanes[index].reader.poll_lane(cx)
                && let Some(result) = self.lane_ended(index, result)
            {
                return Some(result);
            }
        }
        None
    }
}

impl<T: Send + 'static> TaskOperator<T> for MergeTask<T> {
    fn advance<S: Subscriber<T>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        if self.live == 0 {
            return Progress::Done(Ok(())); // merge of no sources
        }
        if demand == 0 {
            return match self.watch_ends(cx) {
                Some(result) => Progress::Done(result),
                None => Progress::Wait,
            };
        }
        match self.round(cx, demand, out) {
            Round::Over(result) => Progress::Done(result),
            // Every live lane is registered for wake-up, and the engine registered the task for
            // demand and cancel.
            Round::Idle => Progress::Wait,
            Round::Served => {
                out.flush();
                Progress::Again
            }
        }
    }
}
