//! The builder: typed methods that add named stages and return typed [`Port`]s, recording the
//! graph for validation, pictures and the inventory, and the code that runs each stage.
//!
//! Types are checked where the author connects stages: a `Port<Order>` only feeds inputs that take
//! `Order`. Inside a stage the operator chain keeps static dispatch (it is built by the author's
//! closure from the stage's input); between stages the items cross a type-erased
//! [`BoxPublisher`], one virtual call per signal: the graph edge.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;
use weir_operators::PublisherExt;
use weir_runtime::Publisher;
use weir_runtime::boundary::{BoundaryConfig, boundary};
use weir_runtime::ledger::Tally;
use weir_runtime::sink::{Fold, SinkResult};
use weir_spill::SpillQueue;

use crate::describe::Diagram;
use crate::error::PipelineError;
use crate::graph::{self, BuildError, Edge, ItemType, Node, Problem, SpillMemory, StageKind};
use crate::handle::{self, PipelineHandle};
use crate::inventory::{BufferKind, Inventory};
use crate::tap::{Input, SinkSubscriber};
use crate::wiring::{BuildFn, Closer, ReadinessCheck, Settings, SinkRun, Wiring};

mod ingresses;
mod junctions;

static NEXT_BUILDER: AtomicU64 = AtomicU64::new(1);

/// The output of a stage, carrying items of type `T`. Pass it (by reference) to the stage that
/// consumes it; each output feeds exactly one input.
pub struct Port<T> {
    builder: u64,
    node: usize,
    /// Which output of the stage (0 unless it is a fan-out).
    output: usize,
    _items: PhantomData<fn() -> T>,
}

impl<T> Clone for Port<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Port<T> {}

impl<T> std::fmt::Debug for Port<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("stage", &self.node)
            .field("output", &self.output)
            .field("items", &std::any::type_name::<T>())
            .finish()
    }
}

/// The input of a junction, to be connected once with [`PipelineBuilder::connect`].
pub struct Feed<T> {
    builder: u64,
    node: usize,
    _items: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for Feed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("stage", &self.node).finish()
    }
}

/// Assembles a pipeline; see [`Pipeline::builder`].
///
/// Problems (a zero capacity, a port from another builder...) are recorded, not raised, so that
/// [`build`](PipelineBuilder::build) can report all of them at once.
pub struct PipelineBuilder {
    id: u64,
    name: String,
    nodes: Vec<Node>,
    builds: Vec<Option<BuildFn>>,
    early: Vec<Problem>,
    closers: Vec<Closer>,
    checks: Vec<ReadinessCheck>,
    settings: Settings,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .field(
                "stages",
                &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PipelineBuilder {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            id: NEXT_BUILDER.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            nodes: Vec::new(),
            builds: Vec::new(),
            early: Vec::new(),
            closers: Vec::new(),
            checks: Vec::new(),
            settings: Settings {
                recovery_budget: Duration::from_secs(5),
                rate_window: Duration::from_secs(1),
            },
        }
    }

    fn add(&mut self, node: Node, build: BuildFn) -> usize {
        self.nodes.push(node);
        self.builds.push(Some(build));
        self.nodes.len() - 1
    }

    fn node(name: &str, kind: StageKind, item: ItemType) -> Node {
        Node {
            name: name.to_owned(),
            kind,
            capacity: None,
            detail: None,
            item,
            input_item: None,
            declared_size: None,
            inputs: Vec::new(),
            min_inputs: 0,
            outputs: usize::from(kind != StageKind::Sink),
            spill: None,
        }
    }

    /// A node of `kind` with the single input `input`, and the index it gets when added.
    fn fed_node<In>(
        &mut self,
        name: &str,
        kind: StageKind,
        item: ItemType,
        input: &Port<In>,
    ) -> (Node, usize) {
        let mut node = Self::node(name, kind, item);
        node.min_inputs = 1;
        node.inputs.extend(self.input_of(name, input));
        (node, self.nodes.len())
    }

    /// Resolves `port` as an input of the stage named `stage`, or records that it is foreign.
    fn input_of<T>(&mut self, stage: &str, port: &Port<T>) -> Option<Edge> {
        if port.builder != self.id || port.node >= self.nodes.len() {
            self.early.push(Problem::ForeignPort {
                stage: stage.to_owned(),
            });
            return None;
        }
        Some(Edge {
            from: port.node,
            output: port.output,
            lane: None,
        })
    }

    fn port<T>(&self, node: usize) -> Port<T> {
        self.port_at(node, 0)
    }

    fn port_at<T>(&self, node: usize, output: usize) -> Port<T> {
        Port {
            builder: self.id,
            node,
            output,
            _items: PhantomData,
        }
    }

    /// Adds a source: any publisher (an iterator, a stream). It ends the pipeline's input when it
    /// completes; [`drain`](crate::PipelineHandle::drain) closes ingresses only, so an endless
    /// source is stopped by the drain deadline's abort.
    pub fn source<T: Send + 'static>(
        &mut self,
        name: &str,
        publisher: impl Publisher<T>,
    ) -> Port<T> {
        let node = Self::node(name, StageKind::Source, ItemType::of::<T>());
        let me = self.nodes.len();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| w.output(me, 0, publisher)),
        );
        self.port(me)
    }

    /// Adds an operator stage: `build` receives the input as a publisher ([`Input`]) and returns
    /// the chain built on it (`|orders| orders.map(parse).filter(valid)`). The chain is fused into
    /// the upstream's task: no queue, static dispatch between its operators. `build` runs when the
    /// pipeline starts, and what its operators count (a filter's drops, a batch's partial batch,
    /// an async map's futures in flight) is this stage's in the [ledger](crate::Ledger).
    pub fn stage<In, Out, P, F>(&mut self, name: &str, input: &Port<In>, build: F) -> Port<Out>
    where
        In: Send + 'static,
        Out: Send + 'static,
        P: Publisher<Out>,
        F: FnOnce(Input<In>) -> P + Send + 'static,
    {
        let (node, me) = self.fed_node(name, StageKind::Stage, ItemType::of::<Out>(), input);
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<In>(me, 0);
                w.output(me, 0, build(upstream));
            }),
        );
        self.port(me)
    }

    /// Adds a stage that awaits `f`'s future for every item, at most `concurrency` at a time,
    /// emitting results in input order (`map_async`). It runs in tasks of its own: an async
    /// boundary whose free slots are its demand.
    pub fn stage_async<In, Out, F, Fut>(
        &mut self,
        name: &str,
        input: &Port<In>,
        concurrency: usize,
        f: F,
    ) -> Port<Out>
    where
        In: Send + 'static,
        Out: Send + 'static,
        F: FnMut(In) -> Fut + Send + 'static,
        Fut: Future<Output = Out> + Send + 'static,
    {
        let (mut node, me) =
            self.fed_node(name, StageKind::AsyncStage, ItemType::of::<Out>(), input);
        node.capacity = Some(concurrency);
        node.input_item = Some(ItemType::of::<In>());
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<In>(me, 0);
                let f = in_span(w.span(me), f);
                w.output(me, 0, upstream.map_async(concurrency, f));
            }),
        );
        self.port(me)
    }

    /// Adds an async boundary of `capacity` items: what feeds it runs in one task, what follows
    /// it in another.
    pub fn boundary<T: Send + 'static>(
        &mut self,
        name: &str,
        input: &Port<T>,
        capacity: usize,
    ) -> Port<T> {
        let (mut node, me) = self.fed_node(name, StageKind::Boundary, ItemType::of::<T>(), input);
        node.capacity = Some(capacity);
        let name: Arc<str> = name.into();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                let config = BoundaryConfig::new(name, capacity).expect("validated capacity");
                let hop = boundary(upstream, config);
                w.own_buffer(me, BufferKind::Boundary, hop.metrics());
                w.output(me, 0, hop);
            }),
        );
        self.port(me)
    }

    /// Adds an in-stream spill: items that do not fit in `store`'s memory part go to its log on
    /// disk and come back in FIFO order as the downstream catches up; while the disk budget lasts
    /// the upstream is not slowed, and while it is full the upstream is paused (backpressure, never
    /// a failure). The upstream runs in a task of its own, reading ahead at most
    /// [`spill_read_ahead`](weir_operators::spill_read_ahead) items. The stage's snapshot carries
    /// the spill counters; its queue's depth (memory and disk) counts against readiness; the
    /// inventory lists its memory part, its read-ahead and the log's buffers.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_dsl::Pipeline;
    /// use weir_runtime::source;
    /// use weir_spill::{SpillConfig, SpillQueue};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SpillQueue::<u64>::open(dir.path(), 64, SpillConfig::new()).unwrap();
    /// let mut p = Pipeline::builder("etl");
    /// let rows = p.source("rows", source::from_iter(0..10_000u64));
    /// let parked = p.spill("parked", &rows, store);
    /// p.sink("store", &parked, |_| {});
    /// let mut running = p.build().unwrap().start().unwrap();
    /// (&mut running).await.unwrap();
    /// assert_eq!(running.snapshot().stage("store").unwrap().items, 10_000);
    /// # }
    /// ```
    pub fn spill<T>(&mut self, name: &str, input: &Port<T>, store: SpillQueue<T>) -> Port<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let (mut node, me) = self.fed_node(name, StageKind::Spill, ItemType::of::<T>(), input);
        let capacity = store.capacity();
        node.capacity = Some(capacity);
        node.detail = Some("spill".to_owned());
        node.spill = Some(spill_memory(
            &store,
            weir_operators::spill_read_ahead(capacity),
        ));
        let spill = store.metrics();
        let stage: Arc<str> = name.into();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                let buffered = upstream.buffer_spilling(&stage, store);
                if let Some(metrics) = buffered.metrics() {
                    w.own_buffer(me, BufferKind::Spill, metrics);
                }
                w.spill(me, spill);
                w.output(me, 0, buffered);
            }),
        );
        self.port(me)
    }

    /// Adds a sink that runs `f` on every item, in the upstream's task. `f` returns `()`, or a
    /// `Result` whose first `Err` fails the pipeline naming this stage (the error is the
    /// [`source`](std::error::Error::source)); a panic in `f` fails it too. Either way `f` is not
    /// called again, and the item it failed on is counted as failed.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_dsl::{Pipeline, PipelineError};
    /// use weir_runtime::source;
    /// let mut p = Pipeline::builder("store");
    /// let rows = p.source("rows", source::from_iter(1..=3u32));
    /// p.sink("db", &rows, |row| if row == 2 { Err("constraint violated") } else { Ok(()) });
    /// let result = p.build().unwrap().start().unwrap().await;
    /// assert!(matches!(result, Err(PipelineError::Failed { ref stage, .. }) if stage == "db"));
    /// # }
    /// ```
    pub fn sink<T, F, R>(&mut self, name: &str, input: &Port<T>, mut f: F)
    where
        T: Send + 'static,
        F: FnMut(T) -> R + Send + 'static,
        R: SinkResult,
    {
        let (node, me) = self.fed_node(name, StageKind::Sink, ItemType::of::<T>(), input);
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                sink_into(w, me, upstream, move |_: &mut (), item| f(item));
            }),
        );
    }

    /// Adds a sink that awaits `f`'s future for every item, at most `concurrency` at a time (in
    /// completion order): where a pipeline writes to a database or a broker. The future's output
    /// is `()` or a `Result`, as for [`sink`](PipelineBuilder::sink).
    pub fn sink_async<T, F, Fut, R>(
        &mut self,
        name: &str,
        input: &Port<T>,
        concurrency: usize,
        f: F,
    ) where
        T: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: SinkResult,
    {
        let (mut node, me) = self.fed_node(name, StageKind::Sink, ItemType::of::<T>(), input);
        node.capacity = Some(concurrency);
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                let f = in_span(w.span(me), f);
                let done = upstream.map_async_unordered(concurrency, f);
                sink_into(w, me, done, |_: &mut (), outcome: R| outcome);
            }),
        );
    }

    /// Declares how many bytes an item on `port` takes, heap included (a `String` of about 200
    /// bytes: 24 + 200), for the [`inventory`](crate::Pipeline::inventory). Stages that pass items
    /// through unchanged (boundaries, merges, junctions) inherit it. Default: `size_of::<T>()`.
    pub fn item_size<T>(&mut self, port: &Port<T>, bytes: usize) -> &mut Self {
        if port.builder == self.id
            && let Some(node) = self.nodes.get_mut(port.node)
        {
            node.declared_size = Some(bytes);
        }
        self
    }

    /// Adds an outside input of readiness, for a backlog the pipeline cannot see: `check` is
    /// asked at every readiness reading with the [recovery budget](Self::recovery_budget), and
    /// its `Err` is one of the reasons the pipeline is not [ready](crate::PipelineHandle::ready).
    /// A broker's consumer lag is the usual one (`weir_nats::source::JetStreamSource::lag_check`).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use weir_dsl::Pipeline;
    /// let pending = Arc::new(AtomicU64::new(50_000)); // e.g. read from a broker
    /// let lag = pending.clone();
    /// let mut p = Pipeline::builder("orders");
    /// let (_orders, port) = p.ingress::<u64>("orders", 8, weir_runtime::ingress::Overflow::DropNewest);
    /// p.sink("db", &port, |_| {});
    /// p.readiness_input(move |budget| match lag.load(Ordering::Relaxed) {
    ///     0 => Ok(()),
    ///     n => Err(format!("{n} messages wait at the broker (budget {budget:?})")),
    /// });
    /// let running = p.build().unwrap().start().unwrap();
    /// assert!(running.ready().reasons.iter().any(|r| r.contains("50000 messages")));
    /// pending.store(0, Ordering::Relaxed);
    /// assert!(running.ready().ready);
    /// # }
    /// ```
    pub fn readiness_input(
        &mut self,
        check: impl Fn(Duration) -> Result<(), String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.checks.push(Box::new(check));
        self
    }

    /// How long a stage's backlog may take to drain at its recent rate before the pipeline
    /// reports itself not [`ready`](crate::PipelineHandle::ready). Default: 5 s.
    pub fn recovery_budget(&mut self, budget: Duration) -> &mut Self {
        self.settings.recovery_budget = budget;
        self
    }

    /// Over how long rates (and "recent" rejections) are measured. Default: 1 s.
    pub fn rate_window(&mut self, window: Duration) -> &mut Self {
        self.settings.rate_window = window;
        self
    }

    /// Validates the graph, reporting every problem at once (see [`Problem`]).
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let problems = graph::validate(&self.name, &self.nodes, self.early);
        if !problems.is_empty() {
            return Err(BuildError {
                pipeline: self.name,
                problems,
            });
        }
        Ok(Pipeline {
            name: self.name,
            nodes: Arc::new(self.nodes),
            builds: self.builds,
            closers: self.closers,
            checks: self.checks,
            settings: self.settings,
        })
    }
}

/// A validated pipeline graph, ready to [`start`](Pipeline::start).
pub struct Pipeline {
    name: String,
    nodes: Arc<Vec<Node>>,
    builds: Vec<Option<BuildFn>>,
    closers: Vec<Closer>,
    checks: Vec<ReadinessCheck>,
    settings: Settings,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field(
                "stages",
                &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pipeline {
    /// Starts assembling a pipeline named `name` (a valid [`StageName`](crate::StageName): it
    /// labels metrics too).
    pub fn builder(name: &str) -> PipelineBuilder {
        PipelineBuilder::new(name)
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A picture of the graph with its capacities.
    pub fn describe(&self) -> Diagram {
        Diagram::new(&self.name, &self.nodes, None)
    }

    /// Every buffer with its capacity and worst-case memory, and the totals.
    pub fn inventory(&self) -> Inventory {
        Inventory::new(&self.name, &self.nodes)
    }

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
    pub fn start_on(self, runtime: &Handle) -> PipelineHandle {
        handle::start(
            self.name,
            self.nodes,
            self.builds,
            self.closers,
            self.checks,
            self.settings,
            runtime,
        )
    }
}

/// What a spilling stage over `store` holds in memory besides its memory part.
fn spill_memory<T>(store: &SpillQueue<T>, read_ahead: usize) -> SpillMemory {
    let extra = store.max_extra_memory();
    SpillMemory {
        read_ahead,
        held_back: extra.items as usize,
        log_bytes: extra.buffer_bytes,
    }
}

/// Subscribes a folding sink (counted, cancellable) to `upstream` when the pipeline starts.
fn sink_into<T, P, F, R>(w: &mut Wiring<'_>, me: usize, upstream: P, f: F)
where
    T: Send + 'static,
    P: Publisher<T>,
    F: FnMut(&mut (), T) -> R + Send + 'static,
    R: SinkResult,
{
    let (fold, outcome) = Fold::new((), f);
    // Counts what the sink handled, the item it failed on and what arrived after that.
    let tally = Tally::new(w.name(me).to_owned());
    let subscriber = SinkSubscriber::new(fold.counted(&tally), &tally);
    let slot = subscriber.slot();
    w.sink(SinkRun {
        node: me,
        subscribe: Box::new(move || upstream.subscribe(subscriber)),
        outcome: Box::pin(outcome),
        slot,
    });
}

/// `f` called inside `span`, its future polled inside it: an async stage's code runs in its
/// stage's span, whichever task polls it.
fn in_span<In, Fut, F>(
    span: tracing::Span,
    mut f: F,
) -> impl FnMut(In) -> tracing::instrument::Instrumented<Fut> + Send + 'static
where
    F: FnMut(In) -> Fut + Send + 'static,
    Fut: Future,
{
    move |item| {
        let _entered = span.enter();
        tracing::Instrument::instrument(f(item), span.clone())
    }
}
