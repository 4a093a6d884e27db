//! The fan-in and fan-out stages of the builder: merges and priority lanes, broadcast, balance
//! and partition, and junctions connected later.

use std::hash::Hash;
use std::marker::PhantomData;

use weir_operators::{
    FanOutput, Lagging, PriorityLanes, balance, broadcast, merge::DEFAULT_LANE_CAPACITY, partition,
    route,
};
use weir_runtime::{Error, source};

use super::{Feed, PipelineBuilder, Port};
use crate::graph::{ItemType, LaneSpec, Problem, StageKind};
use crate::tap::Input;
use crate::wiring::{Observed, Wiring};

impl PipelineBuilder {
    /// Merges `inputs` fairly (each gets an equal share while all have items), each read through
    /// a lane of 256 items. Completes when all inputs complete; the first error fails it.
    pub fn merge<'a, T: Send + 'static>(
        &mut self,
        name: &str,
        inputs: impl IntoIterator<Item = &'a Port<T>>,
    ) -> Port<T> {
        self.merge_with(name, DEFAULT_LANE_CAPACITY, inputs)
    }

    /// [`merge`](PipelineBuilder::merge) with lanes of `lane_capacity` items.
    pub fn merge_with<'a, T: Send + 'static>(
        &mut self,
        name: &str,
        lane_capacity: usize,
        inputs: impl IntoIterator<Item = &'a Port<T>>,
    ) -> Port<T> {
        let lanes = inputs.into_iter().map(|port| (port, 1, lane_capacity));
        self.fan_in(name, StageKind::Merge, lanes)
    }

    /// Merges `lanes` of `(input, weight, capacity)` by weight: over any stretch where all are
    /// busy, each lane gets `weight / total` of the output, and a saturated low lane delays a high
    /// lane by at most its weight in items.
    pub fn priority_lanes<'a, T: Send + 'static>(
        &mut self,
        name: &str,
        lanes: impl IntoIterator<Item = (&'a Port<T>, u64, usize)>,
    ) -> Port<T> {
        self.fan_in(name, StageKind::PriorityLanes, lanes)
    }

    fn fan_in<'a, T: Send + 'static>(
        &mut self,
        name: &str,
        kind: StageKind,
        lanes: impl IntoIterator<Item = (&'a Port<T>, u64, usize)>,
    ) -> Port<T> {
        let mut node = Self::node(name, kind, ItemType::of::<T>());
        node.min_inputs = 1;
        for (port, weight, capacity) in lanes {
            if let Some(mut input) = self.input_of(name, port) {
                input.lane = Some(LaneSpec { weight, capacity });
                node.inputs.push(input);
            }
        }
        let me = self.nodes.len();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let count = w.input_count(me);
                let observed = Observed::default();
                for k in 0..count {
                    w.lane_buffer(me, k, &observed);
                }
                if kind == StageKind::Merge {
                    let capacity = w.lane(me, 0).1.capacity;
                    let sources: Vec<Input<T>> = (0..count).map(|k| w.input::<T>(me, k)).collect();
                    let merged = weir_operators::merge(sources).lane_capacity(capacity);
                    w.output(me, 0, observed.wrap(merged));
                    return;
                }
                let mut lanes = PriorityLanes::new();
                for k in 0..count {
                    let (_, lane) = w.lane(me, k);
                    let lane_name = w.input_name(me, k);
                    let upstream = w.input::<T>(me, k);
                    lanes = lanes.lane(lane_name, lane.weight, lane.capacity, upstream);
                }
                match lanes.build() {
                    Ok(built) => w.output(me, 0, observed.wrap(built)),
                    Err(error) => w.output(me, 0, source::error::<T>(error)),
                }
            }),
        );
        self.port(me)
    }

    /// Adds a broadcast: every item to each of `outputs` outputs (cloned), each output a queue of
    /// `capacity` items; `lagging` says what a full output does ([`Lagging::Wait`]: the slowest
    /// sets the pace). Returns one port per output; each must feed one input. Items start flowing
    /// once every output is subscribed (when the pipeline starts).
    pub fn broadcast<T: Clone + Send + 'static>(
        &mut self,
        name: &str,
        input: &Port<T>,
        outputs: usize,
        capacity: usize,
        lagging: Lagging,
    ) -> Vec<Port<T>> {
        let detail = match lagging {
            Lagging::Wait => "wait for the slowest",
            Lagging::Drop => "drop for a full output",
            Lagging::Disconnect => "disconnect a full output",
        };
        self.fan_out(
            name,
            StageKind::Broadcast,
            input,
            outputs,
            capacity,
            Some(detail),
            move |upstream, n, capacity| broadcast(upstream, n, capacity, lagging),
        )
    }

    /// Adds a balance: each item to the output with the most free room (work spread over
    /// `outputs` consumers by their demand), each output a queue of `capacity` items. Put a
    /// boundary or an async stage behind each output so that they work in parallel.
    pub fn balance<T: Send + 'static>(
        &mut self,
        name: &str,
        input: &Port<T>,
        outputs: usize,
        capacity: usize,
    ) -> Vec<Port<T>> {
        self.fan_out(
            name,
            StageKind::Balance,
            input,
            outputs,
            capacity,
            None,
            balance,
        )
    }

    /// Adds a partition: each item to output `hash(key(item)) % outputs` (items with one key stay
    /// together and in order), each output a queue of `capacity` items. The slowest output sets
    /// the pace.
    pub fn partition<T, K, F>(
        &mut self,
        name: &str,
        input: &Port<T>,
        outputs: usize,
        capacity: usize,
        key: F,
    ) -> Vec<Port<T>>
    where
        T: Send + 'static,
        K: Hash,
        F: FnMut(&T) -> K + Send + 'static,
    {
        self.fan_out(
            name,
            StageKind::Partition,
            input,
            outputs,
            capacity,
            None,
            move |upstream, n, capacity| partition(upstream, n, capacity, key),
        )
    }

    /// Adds a route: each item to the output `pick(item)` names (0-based), each output a queue
    /// of `capacity` items: routing by content (valid rows on, rejects to a dead-letter sink).
    /// Items sent to one output stay in order; the slowest output sets the pace. An index out of
    /// range fails the pipeline naming this stage.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// use weir_dsl::Pipeline;
    /// use weir_runtime::source;
    /// let mut p = Pipeline::builder("rows");
    /// let rows = p.source("rows", source::from_iter(["7", "x", "9"]));
    /// let [good, bad] = <[_; 2]>::try_from(p.route("check", &rows, 2, 16, |row: &&str| {
    ///     usize::from(row.parse::<u32>().is_err())
    /// }))
    /// .unwrap();
    /// p.sink("store", &good, |_| {});
    /// p.sink("dead_letters", &bad, |row| assert_eq!(row, "x"));
    /// let mut running = p.build().unwrap().start().unwrap();
    /// (&mut running).await.unwrap();
    /// assert_eq!(running.snapshot().stage("store").unwrap().items, 2);
    /// # }
    /// ```
    pub fn route<T, F>(
        &mut self,
        name: &str,
        input: &Port<T>,
        outputs: usize,
        capacity: usize,
        pick: F,
    ) -> Vec<Port<T>>
    where
        T: Send + 'static,
        F: FnMut(&T) -> usize + Send + 'static,
    {
        self.fan_out(
            name,
            StageKind::Route,
            input,
            outputs,
            capacity,
            None,
            move |upstream, n, capacity| route(upstream, n, capacity, pick),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn fan_out<T, F>(
        &mut self,
        name: &str,
        kind: StageKind,
        input: &Port<T>,
        outputs: usize,
        capacity: usize,
        detail: Option<&str>,
        split: F,
    ) -> Vec<Port<T>>
    where
        T: Send + 'static,
        F: FnOnce(Input<T>, usize, usize) -> Result<Vec<FanOutput<T>>, Error> + Send + 'static,
    {
        let (mut node, me) = self.fed_node(name, kind, ItemType::of::<T>(), input);
        node.capacity = Some(capacity);
        node.detail = detail.map(str::to_owned);
        node.outputs = outputs;
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                match split(upstream, outputs, capacity) {
                    Ok(branches) => {
                        for (k, branch) in branches.into_iter().enumerate() {
                            w.branch_buffer(me, k, branch.metrics());
                            w.output(me, k, branch);
                        }
                    }
                    Err(error) => {
                        for k in 0..outputs {
                            let error = error.clone().in_stage(w.name(me).to_owned());
                            w.output(me, k, source::error::<T>(error));
                        }
                    }
                }
            }),
        );
        (0..outputs).map(|k| self.port_at(me, k)).collect()
    }

    /// Adds a junction: a named stage whose input is connected later with
    /// [`connect`](PipelineBuilder::connect), for graphs whose wiring is not a straight line of
    /// declarations. An unconnected junction, and a cycle through one, are build errors.
    pub fn junction<T: Send + 'static>(&mut self, name: &str) -> (Feed<T>, Port<T>) {
        let mut node = Self::node(name, StageKind::Junction, ItemType::of::<T>());
        node.min_inputs = 1;
        let me = self.nodes.len();
        self.add(
            node,
            Box::new(move |w: &mut Wiring<'_>| {
                let upstream = w.input::<T>(me, 0);
                w.output(me, 0, upstream);
            }),
        );
        (
            Feed {
                builder: self.id,
                node: me,
                _items: PhantomData,
            },
            self.port(me),
        )
    }

    /// Feeds the junction of `feed` from `from`.
    pub fn connect<T: Send + 'static>(&mut self, from: &Port<T>, feed: Feed<T>) {
        if feed.builder != self.id || feed.node >= self.nodes.len() {
            self.early.push(Problem::ForeignPort {
                stage: "(junction)".to_owned(),
            });
            return;
        }
        let stage = self.nodes[feed.node].name.clone();
        if !self.nodes[feed.node].inputs.is_empty() {
            self.early.push(Problem::AlreadyFed { stage });
            return;
        }
        if let Some(input) = self.input_of(&stage, from) {
            self.nodes[feed.node].inputs.push(input);
        }
    }
}
