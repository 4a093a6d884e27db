//! Wiring: what a validated graph becomes when it starts. The builder records, per stage, the code
//! that builds it ([`BuildFn`]); at start each runs once, in dependency order, with a [`Wiring`]
//! through which it takes its inputs (tapped, type-erased), sets its outputs and registers what
//! the running pipeline observes: buffers, spill logs, sinks and ledger accounts.
//!
//! A stage's build code runs inside the stage's ledger [`Scope`] and its `tracing` span, and so does
//! the subscription of its output (when task-based operators make their lanes): every account its
//! operators create is that stage's, and everything it logs is labelled with it.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use weir_operators::merge::{LaneMetrics, Merge};
use weir_runtime::ledger::Scope;
use weir_runtime::metrics::{BufferCounts, BufferMetrics};
use weir_runtime::{BoxPublisher, Error, Publisher, Subscriber};
use weir_spill::SpillMetrics;

use crate::graph::{self, LaneSpec, Node};
use crate::inventory::BufferKind;
use crate::tap::{Failures, Input, InputCount, SinkSlot};

/// What a running pipeline is judged by; see [`PipelineBuilder::recovery_budget`](crate::PipelineBuilder::recovery_budget).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) recovery_budget: Duration,
    pub(crate) rate_window: Duration,
}

/// The code that builds one stage when the pipeline starts.
pub(crate) type BuildFn = Box<dyn FnOnce(&mut Wiring<'_>) + Send>;

/// Closes one ingress (the pipeline keeps a handle until it drains).
pub(crate) type Closer = Box<dyn Fn() + Send + Sync>;
/// An outside input of readiness: given the recovery budget, `Err` with the reason when not ready.
pub(crate) type ReadinessCheck = Box<dyn Fn(Duration) -> Result<(), String> + Send + Sync>;

/// Where a buffer's counters come from.
#[derive(Debug, Clone)]
pub(crate) enum Counters {
    Direct(Arc<BufferMetrics>),
    /// Lane `k` of a merge, known once the merge is subscribed.
    Lane(Arc<OnceLock<LaneMetrics>>, usize),
}

impl Counters {
    fn snapshot(&self) -> Option<BufferCounts> {
        match self {
            Counters::Direct(metrics) => Some(metrics.snapshot()),
            Counters::Lane(slot, k) => slot.get()?.snapshot().into_iter().nth(*k),
        }
    }
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
    counters: Counters,
}

impl BufferProbe {
    /// The buffer's counters now, named after the DSL stage.
    pub(crate) fn read(&self) -> Option<BufferCounts> {
        let mut snapshot = self.counters.snapshot()?;
        snapshot.name.clone_from(&self.name);
        Some(snapshot)
    }
}

/// The durable part of a spilling stage (an ingress or an in-stream spill).
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
    pub(crate) fn wrap<P>(&self, merge: Merge<P>) -> ObservedMerge<P> {
        ObservedMerge {
            merge,
            slot: self.slot.clone(),
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

/// A sink, ready to subscribe in its own task.
pub(crate) struct SinkRun {
    pub(crate) node: usize,
    pub(crate) subscribe: Box<dyn FnOnce() + Send>,
    pub(crate) outcome: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
    pub(crate) slot: Arc<Mutex<SinkSlot>>,
}

/// What the running pipeline counts of one stage.
#[derive(Debug)]
pub(crate) struct StageCounters {
    /// Items received, one count per input.
    pub(crate) inputs: Vec<Arc<InputCount>>,
    /// The stage's accounts (queues, lanes, operators, its output edge).
    pub(crate) scope: Arc<Scope>,
    /// Pushes offered, for an ingress.
    pub(crate) offered: Option<Arc<BufferMetrics>>,
    pub(crate) span: tracing::Span,
}

/// A stage's output: subscribed inside the stage's ledger scope and span, so the lanes and
/// accounts its operators make when subscribed are the stage's.
struct Scoped<P> {
    inner: P,
    scope: Arc<Scope>,
    span: tracing::Span,
}

impl<T, P: Publisher<T>> Publisher<T> for Scoped<P> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        let Scoped { inner, scope, span } = self;
        span.in_scope(|| scope.enter(|| inner.subscribe(subscriber)));
    }
}

/// What the stages' build code gets while the pipeline starts.
pub(crate) struct Wiring<'g> {
    nodes: &'g [Node],
    failures: Arc<Failures>,
    stages: Vec<StageCounters>,
    /// Every output of every stage, type-erased, until the stage it feeds takes it.
    outputs: Vec<Vec<Option<Box<dyn Any + Send>>>>,
    pub(crate) buffers: Vec<BufferProbe>,
    pub(crate) sinks: Vec<SinkRun>,
    pub(crate) spills: Vec<SpillProbe>,
}

/// What wiring a whole graph produced.
pub(crate) struct Wired {
    /// A stage whose build code panicked, with the error: nothing runs (no sink subscribes).
    pub(crate) build_failure: Option<(usize, Error)>,
    pub(crate) failures: Arc<Failures>,
    pub(crate) stages: Vec<StageCounters>,
    pub(crate) buffers: Vec<BufferProbe>,
    pub(crate) sinks: Vec<SinkRun>,
    pub(crate) spills: Vec<SpillProbe>,
}

/// Runs every stage's build code in dependency order, each in its stage's ledger scope and span.
pub(crate) fn wire(
    pipeline: &str,
    nodes: &[Node],
    builds: &mut [Option<BuildFn>],
    parent: &tracing::Span,
) -> Wired {
    let failures = Arc::new(Failures::default());
    let stages = nodes
        .iter()
        .map(|node| StageCounters {
            inputs: node.inputs.iter().map(|_| Arc::default()).collect(),
            scope: Scope::new(),
            offered: None,
            span: tracing::info_span!(
                parent: parent,
                "stage",
                pipeline = %pipeline,
                stage = %node.name
            ),
        })
        .collect();
    let mut wiring = Wiring {
        nodes,
        failures: failures.clone(),
        stages,
        outputs: nodes
            .iter()
            .map(|node| (0..node.outputs).map(|_| None).collect())
            .collect(),
        buffers: Vec::new(),
        sinks: Vec::new(),
        spills: Vec::new(),
    };
    let mut build_failure = None;
    for index in graph::topological_order(nodes) {
        if let Some(build) = builds[index].take() {
            let span = wiring.stages[index].span.clone();
            let scope = wiring.stages[index].scope.clone();
            // The authors' stage closures run here: a panic is that stage's failure (the
            // pipeline's result), not an unwind out of `start`. Nothing was subscribed yet
            // (sinks subscribe in their tasks), so nothing runs.
            let built = catch_unwind(AssertUnwindSafe(|| {
                span.in_scope(|| scope.enter(|| build(&mut wiring)))
            }));
            if let Err(payload) = built {
                let error = Error::panicked(payload.as_ref()).in_stage(nodes[index].name.clone());
                build_failure = Some((index, error));
                wiring.sinks.clear();
                break;
            }
        }
    }
    Wired {
        build_failure,
        failures,
        stages: wiring.stages,
        buffers: wiring.buffers,
        sinks: wiring.sinks,
        spills: wiring.spills,
    }
}

impl Wiring<'_> {
    /// The `k`-th input of stage `node`: type-erased at the edge, and tapped (counted, run in the
    /// stage's span, errors recorded against the stage it comes from).
    pub(crate) fn input<T: Send + 'static>(&mut self, node: usize, k: usize) -> Input<T> {
        let input = &self.nodes[node].inputs[k];
        let output = self.outputs[input.from][input.output]
            .take()
            .expect("validated: each output feeds one input");
        let erased = *output
            .downcast::<BoxPublisher<T>>()
            .expect("ports are typed");
        let stage = &self.stages[node];
        Input {
            inner: erased,
            count: stage.inputs[k].clone(),
            span: stage.span.clone(),
            from: input.from,
            failures: self.failures.clone(),
        }
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

    /// The `tracing` span of stage `node`.
    pub(crate) fn span(&self, node: usize) -> tracing::Span {
        self.stages[node].span.clone()
    }

    /// Sets output `k` of `node` (0 unless it is a fan-out), type-erased: boxed here, in the
    /// stage's ledger scope, so what the edge drops when its consumer stops mid-burst is counted
    /// as this stage's; and subscribed in that scope and the stage's span.
    pub(crate) fn output<T: Send + 'static>(
        &mut self,
        node: usize,
        k: usize,
        publisher: impl Publisher<T>,
    ) {
        let stage = &self.stages[node];
        let scoped = Scoped {
            inner: publisher,
            scope: stage.scope.clone(),
            span: stage.span.clone(),
        };
        self.outputs[node][k] = Some(Box::new(scoped.boxed()));
    }

    /// Counts the pushes offered to the ingress `stage` (its queue's counters).
    pub(crate) fn offered(&mut self, stage: usize, metrics: Arc<BufferMetrics>) {
        self.stages[stage].offered = Some(metrics);
    }

    /// Registers the own queue of `stage` (an ingress, a boundary).
    pub(crate) fn own_buffer(
        &mut self,
        stage: usize,
        kind: BufferKind,
        metrics: Arc<BufferMetrics>,
    ) {
        self.buffers.push(BufferProbe {
            stage,
            edge: None,
            kind,
            name: self.nodes[stage].name.clone(),
            counters: Counters::Direct(metrics),
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
            counters: Counters::Lane(observed.slot.clone(), k),
        });
    }

    /// Registers the queue of output `output` of the fan-out `stage`, named `stage[output]`.
    pub(crate) fn branch_buffer(
        &mut self,
        stage: usize,
        output: usize,
        metrics: Arc<BufferMetrics>,
    ) {
        let Some((to, k)) = Node::consumer_of(self.nodes, stage, output) else {
            return;
        };
        self.buffers.push(BufferProbe {
            stage,
            edge: Some((to, k)),
            kind: BufferKind::FanOut,
            name: graph::output_name(self.nodes, stage, output),
            counters: Counters::Direct(metrics),
        });
    }

    /// Registers the durable part of the spilling `stage`.
    pub(crate) fn spill(&mut self, stage: usize, metrics: Arc<SpillMetrics>) {
        self.spills.push(SpillProbe { stage, metrics });
    }

    pub(crate) fn sink(&mut self, run: SinkRun) {
        self.sinks.push(run);
    }
}
