//! The graph a builder records: nodes (stages) with their kind, capacity and item type, and the
//! edges between them; and its validation, which reports every problem at once.
//!
//! The graph is plain data. It is what validation, [`describe`](crate::Pipeline::describe) and
//! [`inventory`](crate::Pipeline::inventory) read; the code that runs each stage is kept beside it
//! and consumed when the pipeline starts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use weir_runtime::ingress::Overflow;

use crate::name::{InvalidStageName, StageName};

/// What a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Where callers push in: a bounded queue with an overflow policy.
    Ingress,
    /// A publisher that emits on demand (an iterator, a stream).
    Source,
    /// An operator chain fused into its upstream's task (no queue).
    Stage,
    /// A stage that awaits a future per item, with bounded concurrency (its own tasks).
    AsyncStage,
    /// An async boundary: a bounded queue and a task on the consumer side.
    Boundary,
    /// An in-stream spill: a bounded memory queue whose overflow goes to a durable log and comes
    /// back in order (the upstream runs in a task of its own).
    Spill,
    /// Fan-in, fair across inputs, each read through a bounded lane.
    Merge,
    /// Fan-in by weight, each input a bounded lane; no lane starves.
    PriorityLanes,
    /// A named pass-through whose input is connected later ([`crate::PipelineBuilder::connect`]).
    Junction,
    /// Fan-out: every item to every output (items are cloned), each output a bounded queue.
    Broadcast,
    /// Fan-out: each item to the output with the most free room, each output a bounded queue.
    Balance,
    /// Fan-out: each item to the output its key hashes to, each output a bounded queue.
    Partition,
    /// Fan-out: each item to the output a function of it names, each output a bounded queue.
    Route,
    /// Where items leave the pipeline.
    Sink,
}

impl StageKind {
    /// The label used in pictures, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Ingress => "ingress",
            StageKind::Source => "source",
            StageKind::Stage => "stage",
            StageKind::AsyncStage => "async_stage",
            StageKind::Boundary => "boundary",
            StageKind::Spill => "spill",
            StageKind::Merge => "merge",
            StageKind::PriorityLanes => "priority_lanes",
            StageKind::Junction => "junction",
            StageKind::Broadcast => "broadcast",
            StageKind::Balance => "balance",
            StageKind::Partition => "partition",
            StageKind::Route => "route",
            StageKind::Sink => "sink",
        }
    }

    /// Whether the stage splits its input over several outputs, each with its own queue.
    pub fn is_fan_out(self) -> bool {
        matches!(
            self,
            StageKind::Broadcast | StageKind::Balance | StageKind::Partition | StageKind::Route
        )
    }

    /// Whether the stage passes its input's items on unchanged (so it inherits their declared size).
    pub(crate) fn passes_items_through(self) -> bool {
        matches!(
            self,
            StageKind::Boundary
                | StageKind::Spill
                | StageKind::Merge
                | StageKind::PriorityLanes
                | StageKind::Junction
                | StageKind::Broadcast
                | StageKind::Balance
                | StageKind::Partition
                | StageKind::Route
        )
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of the items on an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemType {
    /// `std::any::type_name`.
    pub(crate) name: &'static str,
    /// `std::mem::size_of`.
    pub(crate) size: usize,
}

impl ItemType {
    pub(crate) fn of<T>() -> Self {
        Self {
            name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
        }
    }

    /// The type name without module paths: `alloc::vec::Vec<app::Order>` becomes `Vec<Order>`.
    pub(crate) fn short_name(&self) -> String {
        short_type_name(self.name)
    }
}

pub(crate) fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment_start = 0;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment_start);
        } else {
            out.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                segment_start = out.len();
            }
        }
    }
    out
}

/// The memory a spilling stage (an ingress, an in-stream spill) holds besides its memory part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpillMemory {
    /// Items read ahead from the upstream before they are placed (an in-stream spill).
    pub(crate) read_ahead: usize,
    /// Items a failed write hands back to memory at most (one batch).
    pub(crate) held_back: usize,
    /// Bytes of the log's buffers (read-ahead, write batch).
    pub(crate) log_bytes: u64,
}

/// One input of a stage: where it comes from (which output of which stage) and, for fan-in
/// stages, its lane.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    /// The output of `from` (0 unless `from` is a fan-out stage).
    pub(crate) output: usize,
    pub(crate) lane: Option<LaneSpec>,
}

/// A fan-in lane: its share and its buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneSpec {
    pub(crate) weight: u64,
    pub(crate) capacity: usize,
}

/// One stage as recorded by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    /// The stage's own buffer (ingress, boundary) or concurrency (async stage).
    pub(crate) capacity: Option<usize>,
    /// A short note for pictures: the overflow policy of an ingress.
    pub(crate) detail: Option<String>,
    /// The items of the stage's output (for a sink: of its input).
    pub(crate) item: ItemType,
    /// The items a stage takes, when they differ from its output (async stages).
    pub(crate) input_item: Option<ItemType>,
    /// Bytes per item declared by the author (heap-owning items).
    pub(crate) declared_size: Option<usize>,
    pub(crate) inputs: Vec<Edge>,
    /// Inputs a fan-in stage expects at least.
    pub(crate) min_inputs: usize,
    /// How many outputs the stage has: 0 for a sink, 1 for most, n for a fan-out.
    pub(crate) outputs: usize,
    /// What a spilling stage holds in memory besides its memory part (`capacity`).
    pub(crate) spill: Option<SpillMemory>,
}

/// How output `output` of stage `from` is named in buffers and metrics: the stage's name, or
/// `fan[k]` for output `k` of a fan-out.
pub(crate) fn output_name(nodes: &[Node], from: usize, output: usize) -> String {
    let node = &nodes[from];
    if node.kind.is_fan_out() {
        format!("{}[{output}]", node.name)
    } else {
        node.name.clone()
    }
}

impl Node {
    /// The stage and input index fed by output `output` of stage `from`, if exactly one is.
    pub(crate) fn consumer_of(
        nodes: &[Node],
        from: usize,
        output: usize,
    ) -> Option<(usize, usize)> {
        nodes.iter().enumerate().find_map(|(to, node)| {
            node.inputs
                .iter()
                .position(|i| i.from == from && i.output == output)
                .map(|k| (to, k))
        })
    }
}

pub(crate) fn overflow_label(overflow: &Overflow) -> String {
    match overflow {
        Overflow::Block { timeout } => format!("block {timeout:?}"),
        Overflow::Reject { .. } => "reject".to_owned(),
        Overflow::DropOldest => "drop oldest".to_owned(),
        Overflow::DropNewest => "drop newest".to_owned(),
    }
}

/// One thing wrong with a pipeline graph. [`BuildError`] carries all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The pipeline's own name is not a valid [`StageName`].
    InvalidPipelineName(InvalidStageName),
    /// A stage name is not a valid [`StageName`].
    InvalidName(InvalidStageName),
    /// Several stages share a name.
    DuplicateName {
        /// The shared name.
        name: String,
        /// How many stages use it.
        count: usize,
    },
    /// A stage's output goes nowhere.
    UnconnectedOutput {
        /// The stage.
        stage: String,
    },
    /// One output of a fan-out stage goes nowhere.
    UnconnectedBranch {
        /// The fan-out stage.
        stage: String,
        /// Which of its outputs (from 0).
        output: usize,
        /// How many outputs it has.
        outputs: usize,
    },
    /// A stage's input (a junction, or a fan-in stage without inputs) is fed by nothing.
    UnfedInput {
        /// The stage.
        stage: String,
    },
    /// One output feeds several inputs: that needs a broadcast or partition stage.
    FanOutWithoutStage {
        /// The stage whose output is used more than once.
        stage: String,
        /// The stages it feeds.
        consumers: Vec<String>,
    },
    /// The stages form a cycle (listed in flow order, the first repeated at the end).
    Cycle {
        /// The stages around the cycle.
        stages: Vec<String>,
    },
    /// A capacity, lane capacity, weight or concurrency of zero.
    Zero {
        /// The stage.
        stage: String,
        /// What is zero: `capacity`, `concurrency`, `capacity of the lane from `x``...
        what: String,
    },
    /// A port or feed from another builder was used.
    ForeignPort {
        /// The stage that used it.
        stage: String,
    },
    /// A junction was connected twice.
    AlreadyFed {
        /// The junction.
        stage: String,
    },
    /// The pipeline has no stages.
    Empty,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::InvalidPipelineName(invalid) => write!(f, "pipeline name: {invalid}"),
            Problem::InvalidName(invalid) => write!(f, "{invalid}"),
            Problem::DuplicateName { name, count } => {
                write!(f, "stage name `{name}` is used by {count} stages")
            }
            Problem::UnconnectedOutput { stage } => {
                write!(f, "stage `{stage}`: output is connected to nothing")
            }
            Problem::UnconnectedBranch {
                stage,
                output,
                outputs,
            } => write!(
                f,
                "stage `{stage}`: output {output} of {outputs} is connected to nothing"
            ),
            Problem::UnfedInput { stage } => write!(f, "stage `{stage}`: input is fed by nothing"),
            Problem::FanOutWithoutStage { stage, consumers } => {
                let consumers: Vec<String> = consumers.iter().map(|c| format!("`{c}`")).collect();
                write!(
                    f,
                    "stage `{stage}`: output feeds {} inputs ({}); fan-out needs a broadcast or partition stage",
                    consumers.len(),
                    consumers.join(", ")
                )
            }
            Problem::Cycle { stages } => {
                let stages: Vec<String> = stages.iter().map(|s| format!("`{s}`")).collect();
                write!(f, "cycle: {}", stages.join(" -> "))
            }
            Problem::Zero { stage, what } => {
                write!(f, "stage `{stage}`: {what} must be at least 1")
            }
            Problem::ForeignPort { stage } => {
                write!(
                    f,
                    "stage `{stage}`: input comes from another pipeline builder"
                )
            }
            Problem::AlreadyFed { stage } => {
                write!(f, "stage `{stage}`: junction is connected twice")
            }
            Problem::Empty => f.write_str("the pipeline has no stages"),
        }
    }
}

/// Why a pipeline could not be built: every problem found, in a stable order.
///
/// The message lists them one per line:
///
/// ```text
/// pipeline `shop` is invalid (2 problems):
/// - stage name `parse` is used by 2 stages
/// - stage `hop`: capacity must be at least 1
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BuildError {
    /// The pipeline's name.
    pub pipeline: String,
    /// Everything wrong with it.
    pub problems: Vec<Problem>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "pipeline `{}` is invalid ({n} problem{}):",
            self.pipeline,
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n- {problem}")?;
        }
        Ok(())
    }
}

/// Checks the graph. `early` holds problems found while building (foreign ports, junctions fed
/// twice); they come first. Order: names, capacities, inputs and outputs per stage, then cycles.
pub(crate) fn validate(pipeline: &str, nodes: &[Node], early: Vec<Problem>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(invalid) = StageName::new(pipeline) {
        problems.push(Problem::InvalidPipelineName(invalid));
    }
    problems.extend(early);
    if nodes.is_empty() {
        problems.push(Problem::Empty);
        return problems;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node in nodes {
        *counts.entry(&node.name).or_default() += 1;
    }
    let mut reported = std::collections::BTreeSet::new();
    for node in nodes {
        if let Err(invalid) = StageName::new(&node.name)
            && reported.insert(node.name.as_str())
        {
            problems.push(Problem::InvalidName(invalid));
        }
    }
    for node in nodes {
        let count = counts[node.name.as_str()];
        if count > 1 && reported.insert(node.name.as_str()) {
            problems.push(Problem::DuplicateName {
                name: node.name.clone(),
                count,
            });
        }
    }
    // Consumers of every output of every stage.
    let mut consumers: Vec<Vec<Vec<usize>>> =
        nodes.iter().map(|n| vec![Vec::new(); n.outputs]).collect();
    for (index, node) in nodes.iter().enumerate() {
        for input in &node.inputs {
            if let Some(output) = consumers[input.from].get_mut(input.output) {
                output.push(index);
            }
        }
    }
    for (index, node) in nodes.iter().enumerate() {
        let zero = |what: String| Problem::Zero {
            stage: node.name.clone(),
            what,
        };
        if node.capacity == Some(0) {
            problems.push(zero(match node.kind {
                StageKind::AsyncStage | StageKind::Sink => "concurrency".to_owned(),
                _ => "capacity".to_owned(),
            }));
        }
        if node.kind.is_fan_out() && node.outputs == 0 {
            problems.push(zero("the number of outputs".to_owned()));
        }
        for input in &node.inputs {
            if let Some(lane) = input.lane {
                let from = &nodes[input.from].name;
                if lane.capacity == 0 {
                    problems.push(zero(format!("the capacity of the lane from `{from}`")));
                }
                if lane.weight == 0 {
                    problems.push(zero(format!("the weight of the lane from `{from}`")));
                }
            }
        }
        if node.inputs.len() < node.min_inputs {
            problems.push(Problem::UnfedInput {
                stage: node.name.clone(),
            });
        }
        for (output, fed) in consumers[index].iter().enumerate() {
            match fed.len() {
                0 if node.kind.is_fan_out() => problems.push(Problem::UnconnectedBranch {
                    stage: node.name.clone(),
                    output,
                    outputs: node.outputs,
                }),
                0 => problems.push(Problem::UnconnectedOutput {
                    stage: node.name.clone(),
                }),
                1 => {}
                _ => problems.push(Problem::FanOutWithoutStage {
                    stage: node.name.clone(),
                    consumers: fed.iter().map(|&c| nodes[c].name.clone()).collect(),
                }),
            }
        }
    }
    problems.extend(find_cycles(nodes));
    problems
}

/// Every cycle, one per strongly connected tangle: prune stages without remaining inputs (Kahn),
/// then walk inputs backwards from the first stage left until one repeats.
fn find_cycles(nodes: &[Node]) -> Vec<Problem> {
    let mut remaining = vec![true; nodes.len()];
    let mut cycles = Vec::new();
    loop {
        // Prune: a stage none of whose inputs remain cannot be on a cycle.
        loop {
            let mut pruned = false;
            for (index, node) in nodes.iter().enumerate() {
                if remaining[index] && !node.inputs.iter().any(|i| remaining[i.from]) {
                    remaining[index] = false;
                    pruned = true;
                }
            }
            if !pruned {
                break;
            }
        }
        let Some(start) = remaining.iter().position(|&r| r) else {
            return cycles;
        };
        let mut path = vec![start];
        let mut at = start;
        let closed_at = loop {
            let next = nodes[at]
                .inputs
                .iter()
                .map(|i| i.from)
                .find(|&from| remaining[from])
                .expect("a remaining stage has a remaining input");
            if let Some(position) = path.iter().position(|&p| p == next) {
                break position;
            }
            path.push(next);
            at = next;
        };
        // `path[closed_at..]` walks against the flow; reverse it into flow order.
        let mut cycle: Vec<usize> = path[closed_at..].iter().rev().copied().collect();
        // Start at the stage added first, so the report does not depend on where the walk began.
        let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
        cycle.rotate_left(first);
        cycle.push(cycle[0]);
        for &index in &cycle {
            remaining[index] = false;
        }
        cycles.push(Problem::Cycle {
            stages: cycle.iter().map(|&i| nodes[i].name.clone()).collect(),
        });
    }
}

/// Stage indices in an order where every stage comes after its inputs (the graph is acyclic).
pub(crate) fn topological_order(nodes: &[Node]) -> Vec<usize> {
    let mut placed = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let before = order.len();
        for (index, node) in nodes.iter().enumerate() {
            if !placed[index] && node.inputs.iter().all(|i| placed[i.from]) {
                placed[index] = true;
                order.push(index);
            }
        }
        assert!(order.len() > before, "validated graphs are acyclic");
    }
    order
}

/// Bytes per item of each stage's output: declared, else inherited through pass-through stages,
/// else `size_of`.
pub(crate) fn item_sizes(nodes: &[Node]) -> Vec<usize> {
    let mut sizes = vec![0; nodes.len()];
    for index in topological_order(nodes) {
        let node = &nodes[index];
        sizes[index] = node.declared_size.unwrap_or_else(|| {
            match (node.kind.passes_items_through(), node.inputs.first()) {
                (true, Some(input)) => sizes[input.from],
                _ => node.item.size,
            }
        });
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(
            short_type_name("alloc::vec::Vec<app::orders::Order>"),
            "Vec<Order>"
        );
        assert_eq!(
            short_type_name("(u32, core::option::Option<alloc::string::String>)"),
            "(u32, Option<String>)"
        );
    }
}
