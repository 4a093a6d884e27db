//! Running a pipeline: wiring the stages in dependency order, one task per sink, a supervisor that
//! turns the sinks' outcomes into the pipeline's result, and the handle to observe and stop it.
//!
//! Invariants:
//! - every stage's output is wrapped in a [`Tap`] that counts what it emits and records the first
//!   error it passes on. Errors flow downstream, so the first stage to record one is where it came
//!   from: that is the stage a failed pipeline names;
//! - sinks subscribe in tasks of their own (a synchronous source then runs in that task, never
//!   inside `start`);
//! - `abort` cancels every sink's subscription (cancel travels upstream through every stage) and
//!   closes every ingress; the result is [`PipelineError::Aborted`] at once.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use weir_operators::merge::{LaneMetrics, Merge};
use weir_runtime::metrics::{BoundaryMetrics, BoundarySnapshot};
use weir_runtime::{BoxPublisher, Error, Publisher, Subscriber, Subscription};

use weir_spill::SpillMetrics;

use crate::Pipeline;
use crate::builder::{Closer, Settings};
use crate::graph::{self, LaneSpec, Node};
use crate::inventory::BufferKind;
use crate::observe::Monitor;

/// The live counters of one stage: items emitted (a sink: consumed).
#[derive(Debug)]
pub(crate) struct StageCell {
    index: usize,
    pub(crate) items: AtomicU64,
    failures: Arc<Failures>,
}

/// The first error seen on any stage's output, with that stage.
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<Option<(usize, Error)>>);

impl Failures {
    fn record(&self, stage: usize, error: &Error) {
        let mut first = self.0.lock().unwrap();
        if first.is_none() {
            *first = Some((stage, error.clone()));
        }
    }

    fn first(&self) -> Option<(usize, Error)> {
        self.0.lock().unwrap().clone()
    }
}

/// Where a buffer's counters come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Direct(Arc<BoundaryMetrics>),
    /// Lane `k` of a merge, known once the merge is subscribed.
    Lane(Arc<OnceLock<LaneMetrics>>, usize),
}

/// One buffer of a running pipeline: a stage's own queue (`edge: None`), or a queue on an edge (a
/// fan-out's output queue, a fan-in lane), the edge given as the stage it feeds and which of that
/// stage's inputs it is.
#[derive(Debug, Clone)]
pub(crate) struct BufferProbe {
    /// The stage the buffer belongs to.
    pub(crate) stage: usize,
    pub(crate) edge: Option<(usize, usize)>,
    pub(crate) kind: BufferKind,
    /// The stage's name; `merge.upstream` for a lane, `fan[k]` for output `k` of a fan-out.
    pub(crate) name: String,
    source: Source,
}

impl BufferProbe {
    /// The buffer's counters now, named after the DSL stage.
    pub(crate) fn read(&self) -> Option<BoundarySnapshot> {
        let mut snapshot = match &self.source {
            Source::Direct(metrics) => metrics.snapshot(),
            Source::Lane(slot, k) => slot.get()?.snapshot().into_iter().nth(*k)?,
        };
        snapshot.name.clone_from(&self.name);
        Some(snapshot)
    }
}

/// The durable part of a spilling ingress.
#[derive(Debug, Clone)]
pub(crate) struct SpillProbe {
    pub(crate) stage: usize,
    pub(crate) metrics: Arc<SpillMetrics>,
}

/// Captures a merge's lane counters when it is subscribed.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    slot: Arc<OnceLock<LaneMetrics>>,
}

impl Observed {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn wrap<P>(self, merge: Merge<P>) -> ObservedMerge<P> {
        ObservedMerge {
            merge,
            slot: self.slot,
        }
    }
}

/// A merge that publishes its lane counters into a slot when subscribed.
pub(crate) struct ObservedMerge<P> {
    merge: Merge<P>,
    slot: Arc<OnceLock<LaneMetrics>>,
}

impl<T, P> Publisher<T> for ObservedMerge<P>
where
    P: Publisher<T>,
    T: Send + 'static,
{
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let lanes = self.merge.subscribe_observed(subscriber);
        let _ = self.slot.set(lanes);
    }
}

/// A sink's subscription, for `abort`; once `stopped`, a late subscription is cancelled at once.
#[derive(Default)]
pub(crate) struct SinkSlot {
    subscription: Option<Subscription>,
    stopped: bool,
}

/// A sink, ready to subscribe in its own task.
pub(crate) struct SinkRun {
    pub(crate) node: usize,
    pub(crate) subscribe: Box<dyn FnOnce() + Send>,
    pub(crate) outcome: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
    pub(crate) subscription: Arc<Mutex<SinkSlot>>,
}

/// What the stages' build code gets while the pipeline starts.
pub(crate) struct Wiring<'g> {
    nodes: &'g [Node],
    cells: &'g [Arc<StageCell>],
    /// Every output of every stage, type-erased, until the stage it feeds takes it.
    outputs: Vec<Vec<Option<Box<dyn Any + Send>>>>,
    buffers: Vec<BufferProbe>,
    sinks: Vec<SinkRun>,
    spills: Vec<SpillProbe>,
}

impl Wiring<'_> {
    /// The `k`-th input of stage `node`, type-erased at the edge.
    pub(crate) fn input<T: 'static>(&mut self, node: usize, k: usize) -> BoxPublisher<T> {
        let input = &self.nodes[node].inputs[k];
        let output = self.outputs[input.from][input.output]
            .take()
            .expect("validated: each output feeds one input");
        *output
            .downcast::<BoxPublisher<T>>()
            .expect("ports are typed")
    }

    pub(crate) fn input_count(&self, node: usize) -> usize {
        self.nodes[node].inputs.len()
    }

    /// The stage feeding lane `k` of `node`, and the lane.
    pub(crate) fn lane(&self, node: usize, k: usize) -> (usize, LaneSpec) {
        let input = &self.nodes[node].inputs[k];
        (input.from, input.lane.expect("fan-in inputs have lanes"))
    }

    /// The name of what feeds input `k` of `node`: its stage, or `fan[i]` for a fan-out output.
    pub(crate) fn input_name(&self, node: usize, k: usize) -> String {
        let input = &self.nodes[node].inputs[k];
        graph::output_name(self.nodes, input.from, input.output)
    }

    pub(crate) fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// Sets the output of `node`: counted and type-erased.
    pub(crate) fn output<T: Send + 'static>(&mut self, node: usize, publisher: impl Publisher<T>) {
        let tapped = self.tap(node, publisher);
        self.outputs[node][0] = Some(Box::new(tapped.boxed()));
    }

    /// `publisher` with what it emits counted as the items of `node` (and errors passing by
    /// recorded against it).
    pub(crate) fn tap<T, P: Publisher<T>>(&self, node: usize, publisher: P) -> Tap<P> {
        Tap {
            inner: publisher,
            cell: self.cells[node].clone(),
            counts: true,
        }
    }

    /// Sets output `k` of the fan-out `node` (its items are counted where the fan-out takes them
    /// in, see [`Wiring::tap`]; errors passing by are recorded against it).
    pub(crate) fn branch<T: Send + 'static>(
        &mut self,
        node: usize,
        k: usize,
        publisher: impl Publisher<T>,
    ) {
        let tapped = Tap {
            inner: publisher,
            cell: self.cells[node].clone(),
            counts: false,
        };
        self.outputs[node][k] = Some(Box::new(tapped.boxed()));
    }

    /// Registers the own queue of `stage` (an ingress, a boundary).
    pub(crate) fn own_buffer(
        &mut self,
        stage: usize,
        kind: BufferKind,
        metrics: Arc<BoundaryMetrics>,
    ) {
        self.buffers.push(BufferProbe {
            stage,
            edge: None,
            kind,
            name: self.nodes[stage].name.clone(),
            source: Source::Direct(metrics),
        });
    }

    /// Registers lane `k` of the fan-in `stage`, named `stage.upstream`.
    pub(crate) fn lane_buffer(&mut self, stage: usize, k: usize, observed: &Observed) {
        let input = &self.nodes[stage].inputs[k];
        let upstream = graph::output_name(self.nodes, input.from, input.output);
        self.buffers.push(BufferProbe {
            stage,
            edge: Some((stage, k)),
            kind: BufferKind::Lane,
            name: format!("{}.{upstream}", self.nodes[stage].name),
            source: Source::Lane(observed.slot.clone(), k),
        });
    }

    /// Registers the queue of output `output` of the fan-out `stage`, named `stage[output]`.
    pub(crate) fn branch_buffer(
        &mut self,
        stage: usize,
        output: usize,
        metrics: Arc<BoundaryMetrics>,
    ) {
        let Some((to, k)) = Node::consumer_of(self.nodes, stage, output) else {
            return;
        };
        self.buffers.push(BufferProbe {
            stage,
            edge: Some((to, k)),
            kind: BufferKind::FanOut,
            name: graph::output_name(self.nodes, stage, output),
            source: Source::Direct(metrics),
        });
    }

    /// Registers the durable part of the spilling ingress `stage`.
    pub(crate) fn spill(&mut self, stage: usize, metrics: Arc<SpillMetrics>) {
        self.spills.push(SpillProbe { stage, metrics });
    }

    pub(crate) fn cell(&self, node: usize) -> Arc<StageCell> {
        self.cells[node].clone()
    }

    pub(crate) fn sink(&mut self, run: SinkRun) {
        self.sinks.push(run);
    }
}

/// A stage's output, counted.
pub(crate) struct Tap<P> {
    inner: P,
    cell: Arc<StageCell>,
    /// Off for a fan-out's outputs: the fan-out counts what it takes in, once.
    counts: bool,
}

impl<T, P: Publisher<T>> Publisher<T> for Tap<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        self.inner.subscribe(Counted {
            inner: subscriber,
            count: 0,
            cell: self.cell,
            counts: self.counts,
            record_errors: true,
        });
    }
}

/// Counts accepted items into the stage's cell and records errors passing by.
struct Counted<S> {
    inner: S,
    count: u64,
    cell: Arc<StageCell>,
    counts: bool,
    record_errors: bool,
}

impl<S> Counted<S> {
    #[inline]
    fn add(&mut self, n: u64) {
        if !self.counts {
            return;
        }
        self.count += n;
        // One writer per stage: a plain store, no read-modify-write per item.
        self.cell.items.store(self.count, Ordering::Relaxed);
    }
}

impl<T, S: Subscriber<T>> Subscriber<T> for Counted<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.inner.on_subscribe(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        self.add(1);
        self.inner.on_next(item);
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        // Emitted by this stage whether or not the next one declines it (a filter there).
        self.add(1);
        self.inner.try_on_next(item)
    }

    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Iterator<Item = T>,
    {
        // Count what the next stage pulled (this stage emitted), not what it accepted.
        let mut pulled = 0;
        let accepted = self
            .inner
            .try_on_next_iter(&mut items.inspect(|_| pulled += 1), limit);
        self.add(pulled);
        accepted
    }

    fn on_error(&mut self, error: Error) {
        if self.record_errors {
            self.cell.failures.record(self.cell.index, &error);
        }
        self.inner.on_error(error);
    }

    fn on_complete(&mut self) {
        self.inner.on_complete();
    }

    fn on_flush(&mut self) {
        self.inner.on_flush();
    }
}

/// A sink's subscriber: counts what it consumes and keeps its subscription for `abort`.
pub(crate) struct SinkSubscriber<S> {
    counted: Counted<S>,
    subscription: Arc<Mutex<SinkSlot>>,
}

impl<S> SinkSubscriber<S> {
    pub(crate) fn new(inner: S, cell: Arc<StageCell>) -> Self {
        Self {
            counted: Counted {
                inner,
                count: 0,
                cell,
                counts: true,
                // An error reaching a sink was recorded upstream, or is the sink's own.
                record_errors: false,
            },
            subscription: Arc::default(),
        }
    }

    pub(crate) fn subscription_slot(&self) -> Arc<Mutex<SinkSlot>> {
        self.subscription.clone()
    }
}

impl<T, S: Subscriber<T>> Subscriber<T> for SinkSubscriber<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        // Decided under the lock `stop` takes: a sink subscribing after an abort is cancelled.
        let stopped = {
            let mut slot = self.subscription.lock().unwrap();
            if !slot.stopped {
                slot.subscription = Some(subscription.clone());
            }
            slot.stopped
        };
        if stopped {
            subscription.cancel();
        }
        self.counted.on_subscribe(subscription);
    }

    #[inline]
    fn on_next(&mut self, item: T) {
        self.counted.on_next(item);
    }

    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        self.counted.try_on_next(item)
    }

    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Iterator<Item = T>,
    {
        self.counted.try_on_next_iter(items, limit)
    }

    fn on_error(&mut self, error: Error) {
        self.counted.on_error(error);
    }

    fn on_complete(&mut self) {
        self.counted.on_complete();
    }

    fn on_flush(&mut self) {
        self.counted.on_flush();
    }
}

/// Why a running pipeline did not complete.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage failed; `stage` is where the error came from.
    #[error("pipeline `{pipeline}`: stage `{stage}` failed: {}", describe_cause(.stage, .error))]
    Failed {
        /// The pipeline.
        pipeline: String,
        /// The stage the error came from.
        stage: String,
        /// The error, as the stage's operator raised it.
        #[source]
        error: Error,
    },
    /// [`PipelineHandle::abort`] stopped it.
    #[error("pipeline `{pipeline}` was aborted")]
    Aborted {
        /// The pipeline.
        pipeline: String,
    },
    /// [`PipelineHandle::drain`] ran out of time, and the pipeline was aborted.
    #[error("pipeline `{pipeline}` did not drain within {deadline:?} and was aborted")]
    DrainTimedOut {
        /// The pipeline.
        pipeline: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// `start` was called outside a tokio runtime.
    #[error("pipeline `{pipeline}`: no tokio runtime (start it within one, or use start_on)")]
    NoRuntime {
        /// The pipeline.
        pipeline: String,
    },
    /// The supervising task ended abnormally (it panicked or its runtime shut down).
    #[error("pipeline `{pipeline}`: the supervising task ended abnormally: {reason}")]
    Lost {
        /// The pipeline.
        pipeline: String,
        /// What tokio reported.
        reason: String,
    },
}

impl PipelineError {
    /// The stage that failed, if a stage did.
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::Failed { stage, .. } => Some(stage),
            _ => None,
        }
    }
}

/// The error's message, with the operator that raised it when that is not the stage itself.
fn describe_cause(stage: &str, error: &Error) -> String {
    match error.stage() {
        Some(operator) if operator != stage => format!("{} (in `{operator}`)", error.kind()),
        _ => error.kind().to_string(),
    }
}

/// What the handle and the supervisor share.
pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) nodes: Arc<Vec<Node>>,
    pub(crate) cells: Vec<Arc<StageCell>>,
    pub(crate) buffers: Vec<BufferProbe>,
    pub(crate) spills: Vec<SpillProbe>,
    pub(crate) settings: Settings,
    pub(crate) monitor: Mutex<Monitor>,
    closers: Vec<Closer>,
    subscriptions: Vec<Arc<Mutex<SinkSlot>>>,
    failures: Arc<Failures>,
    running: AtomicBool,
    /// Readiness at the last export (transitions are logged).
    pub(crate) was_ready: AtomicBool,
    aborting: AtomicBool,
    abort: Notify,
}

impl Running {
    pub(crate) fn is_live(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn close_ingresses(&self) {
        for close in &self.closers {
            close();
        }
    }

    /// Stops everything now: ingresses closed, every sink's subscription cancelled.
    fn stop(&self) {
        self.close_ingresses();
        for slot in &self.subscriptions {
            let taken = {
                let mut slot = slot.lock().unwrap();
                slot.stopped = true;
                slot.subscription.take()
            };
            if let Some(subscription) = taken {
                subscription.cancel();
            }
        }
    }

    fn abort(&self) {
        if !self.aborting.swap(true, Ordering::AcqRel) {
            self.stop();
            self.abort.notify_one();
        }
    }

    fn failed(&self, sink: usize, error: Error) -> PipelineError {
        let (stage, error) = self.failures.first().unwrap_or((sink, error));
        PipelineError::Failed {
            pipeline: self.name.clone(),
            stage: self.nodes[stage].name.clone(),
            error,
        }
    }
}

impl Pipeline {
    /// Starts the pipeline on the current tokio runtime.
    pub fn start(self) -> Result<PipelineHandle, PipelineError> {
        match Handle::try_current() {
            Ok(runtime) => Ok(self.start_on(&runtime)),
            Err(_) => Err(PipelineError::NoRuntime {
                pipeline: self.name,
            }),
        }
    }

    /// Starts the pipeline on `runtime`: stages are wired in dependency order (the authors'
    /// stage closures run now), then each sink subscribes in a task of its own.
    pub fn start_on(mut self, runtime: &Handle) -> PipelineHandle {
        let _entered = runtime.enter();
        let failures = Arc::new(Failures::default());
        let cells: Vec<Arc<StageCell>> = (0..self.nodes.len())
            .map(|index| {
                Arc::new(StageCell {
                    index,
                    items: AtomicU64::new(0),
                    failures: failures.clone(),
                })
            })
            .collect();
        let mut wiring = Wiring {
            nodes: &self.nodes,
            cells: &cells,
            outputs: self
                .nodes
                .iter()
                .map(|node| (0..node.outputs).map(|_| None).collect())
                .collect(),
            buffers: Vec::new(),
            sinks: Vec::new(),
            spills: Vec::new(),
        };
        for index in graph::topological_order(&self.nodes) {
            if let Some(build) = self.builds[index].take() {
                build(&mut wiring);
            }
        }
        let Wiring {
            buffers,
            sinks,
            spills,
            ..
        } = wiring;
        let running = Arc::new(Running {
            name: self.name.clone(),
            nodes: self.nodes.clone(),
            cells,
            buffers,
            spills,
            settings: self.settings,
            monitor: Mutex::new(Monitor::new(self.settings.rate_window)),
            closers: std::mem::take(&mut self.closers),
            subscriptions: sinks.iter().map(|s| s.subscription.clone()).collect(),
            failures,
            running: AtomicBool::new(true),
            was_ready: AtomicBool::new(true),
            aborting: AtomicBool::new(false),
            abort: Notify::new(),
        });
        running.sample();
        let span = tracing::info_span!("pipeline", pipeline = %self.name);
        tracing::info!(parent: &span, stages = self.nodes.len(), "pipeline started");
        let tasks = sinks
            .into_iter()
            .map(|sink| {
                let run = running.clone();
                let stage = tracing::info_span!(
                    parent: &span,
                    "stage",
                    pipeline = %self.name,
                    stage = %self.nodes[sink.node].name
                );
                let join = runtime.spawn(tracing::Instrument::instrument(
                    async move {
                        if run.aborting.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        (sink.subscribe)();
                        sink.outcome.await
                    },
                    stage,
                ));
                (sink.node, join)
            })
            .collect();
        let join = runtime.spawn(tracing::Instrument::instrument(
            supervise(running.clone(), tasks),
            span,
        ));
        runtime.spawn(sample_while_live(running.clone()));
        PipelineHandle {
            running,
            join,
            result: None,
        }
    }
}

/// Takes a reading every quarter of the rate window while the pipeline runs, so that "recent"
/// means the last window whoever asks and however often, and exports it through the `metrics`
/// facade (logging readiness transitions); a last export once the pipeline has stopped.
async fn sample_while_live(running: Arc<Running>) {
    let period = (running.settings.rate_window / 4).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks.tick().await;
    loop {
        let live = running.is_live();
        ticks.tick().await;
        let snapshot = running.snapshot();
        let readiness = running.readiness(&snapshot);
        running.log_transition(&readiness);
        running.export(&snapshot, &readiness);
        if !live {
            break;
        }
    }
}

async fn supervise(
    running: Arc<Running>,
    sinks: Vec<(usize, JoinHandle<Result<(), Error>>)>,
) -> Result<(), PipelineError> {
    let mut pending: FuturesUnordered<_> = sinks
        .into_iter()
        .map(|(node, join)| async move { (node, join.await) })
        .collect();
    let outcome = loop {
        tokio::select! {
            biased;
            () = running.abort.notified() => {
                break Err(PipelineError::Aborted { pipeline: running.name.clone() });
            }
            next = pending.next() => match next {
                None => break Ok(()),
                Some((_, Ok(Ok(())))) => {}
                Some((node, Ok(Err(error)))) => break Err(running.failed(node, error)),
                Some((node, Err(join_error))) => {
                    break Err(running.failed(node, Error::msg(join_error)));
                }
            },
        }
    };
    match &outcome {
        Ok(()) => tracing::info!("pipeline completed"),
        Err(error) => {
            running.stop();
            match error.stage() {
                Some(stage) => tracing::warn!(stage, %error, "pipeline failed"),
                None => tracing::warn!(%error, "pipeline stopped"),
            }
        }
    }
    running.running.store(false, Ordering::Release);
    outcome
}

/// A running pipeline. Await it (`(&mut handle).await` keeps it usable) for the result; dropping
/// it leaves the pipeline running.
#[must_use = "a pipeline runs until it completes; keep the handle to observe, drain or abort it"]
pub struct PipelineHandle {
    pub(crate) running: Arc<Running>,
    join: JoinHandle<Result<(), PipelineError>>,
    result: Option<Result<(), PipelineError>>,
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandle")
            .field("pipeline", &self.running.name)
            .field("live", &self.live())
            .finish()
    }
}

impl PipelineHandle {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.running.name
    }

    /// Whether the pipeline's tasks are running (cheap: one atomic load).
    pub fn live(&self) -> bool {
        self.running.is_live()
    }

    /// Stops taking input and finishes the work in flight: closes every ingress (pushes from now
    /// on are refused with [`PushError::Closed`](weir_runtime::ingress::PushError::Closed), the
    /// item handed back), lets every stage and sink finish what was accepted, and resolves with
    /// the pipeline's result. If that takes longer than `deadline`, aborts and returns
    /// [`PipelineError::DrainTimedOut`].
    pub async fn drain(&mut self, deadline: Duration) -> Result<(), PipelineError> {
        self.running.close_ingresses();
        match tokio::time::timeout(deadline, &mut *self).await {
            Ok(result) => result,
            Err(_) => {
                self.abort();
                let _ = (&mut *self).await;
                let timed_out = PipelineError::DrainTimedOut {
                    pipeline: self.running.name.clone(),
                    deadline,
                };
                self.result = Some(Err(timed_out.clone()));
                Err(timed_out)
            }
        }
    }

    /// Cancels everything now: ingresses close, every stage is cancelled (queued items are dropped
    /// and counted as `cancelled`), and the result is [`PipelineError::Aborted`].
    pub fn abort(&self) {
        self.running.abort();
    }

    /// A handle that can [`abort`](PipelineAbort::abort) the pipeline from elsewhere: a second
    /// Ctrl-C while [`drain`](PipelineHandle::drain) holds the handle, a supervisor task.
    pub fn abort_handle(&self) -> PipelineAbort {
        PipelineAbort {
            running: self.running.clone(),
        }
    }
}

/// Aborts a running pipeline; see [`PipelineHandle::abort_handle`].
#[derive(Clone)]
pub struct PipelineAbort {
    running: Arc<Running>,
}

impl std::fmt::Debug for PipelineAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineAbort")
            .field("pipeline", &self.running.name)
            .finish()
    }
}

impl PipelineAbort {
    /// As [`PipelineHandle::abort`].
    pub fn abort(&self) {
        self.running.abort();
    }
}

impl Future for PipelineHandle {
    type Output = Result<(), PipelineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = &self.result {
            return Poll::Ready(result.clone());
        }
        let result = match Pin::new(&mut self.join).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(join_error)) => Err(PipelineError::Lost {
                pipeline: self.running.name.clone(),
                reason: join_error.to_string(),
            }),
        };
        self.result = Some(result.clone());
        Poll::Ready(result)
    }
}
