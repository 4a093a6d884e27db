//! Pictures of a pipeline: Graphviz DOT and Mermaid, from the recorded graph, with live queue
//! depths on the edges when taken from a running handle.
//!
//! An edge's label names its item type and, where items wait on that edge, the buffers: the queue
//! of the ingress or boundary it leaves (`cap 256` before start, `12/256` live) and the lane of the
//! fan-in stage it enters (`lane w8 cap 64`). Output is deterministic (stages in the order they were added), so it can be
//! compared with a golden file.

use std::fmt::Write as _;

use crate::graph::{Node, StageKind};
use crate::inventory::BufferKind;
use crate::observe::PipelineSnapshot;

/// One stage in a [`Diagram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagramNode {
    /// The stage's name.
    pub name: String,
    /// What it is.
    pub kind: StageKind,
    /// The second line of its label (`ingress 1024 (reject)`, `boundary 256`).
    pub note: String,
}

/// One edge in a [`Diagram`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagramEdge {
    /// Index of the stage the items come from.
    pub from: usize,
    /// Index of the stage they go to.
    pub to: usize,
    /// The item type.
    pub item_type: String,
    /// The buffers on the edge, one line each: the queue of the ingress or boundary it leaves
    /// (`cap 256`, live `12/256`), then the fan-in lane it enters (`lane w8 cap 64`, live
    /// `lane w8 3/64`).
    pub buffers: Vec<String>,
}

/// A picture of a pipeline's graph; render it with [`to_dot`](Diagram::to_dot) or
/// [`to_mermaid`](Diagram::to_mermaid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagram {
    /// The pipeline's name.
    pub pipeline: String,
    /// The stages, in the order they were added.
    pub nodes: Vec<DiagramNode>,
    /// The edges, grouped by the stage they feed.
    pub edges: Vec<DiagramEdge>,
}

fn note(node: &Node) -> String {
    let kind = node.kind.as_str();
    match (node.kind, node.capacity, &node.detail) {
        (_, Some(capacity), Some(detail)) => format!("{kind} {capacity} ({detail})"),
        (StageKind::AsyncStage | StageKind::Sink, Some(concurrency), None) => {
            format!("{kind} x{concurrency}")
        }
        (_, Some(capacity), None) => format!("{kind} {capacity}"),
        _ => kind.to_owned(),
    }
}

fn has_own_queue(kind: StageKind) -> bool {
    matches!(
        kind,
        StageKind::Ingress | StageKind::Boundary | StageKind::Spill
    )
}

impl Diagram {
    pub(crate) fn new(name: &str, nodes: &[Node], live: Option<&PipelineSnapshot>) -> Self {
        let depth = |label: String, capacity: usize, live: Option<u64>| match live {
            Some(depth) => format!("{label}{depth}/{capacity}"),
            None => format!("{label}cap {capacity}"),
        };
        let mut edges = Vec::new();
        for (to, node) in nodes.iter().enumerate() {
            for input in &node.inputs {
                // Snapshot edges come in the same order as these.
                let live_edge = live.and_then(|s| s.edges.get(edges.len()));
                let from = &nodes[input.from];
                let mut buffers = Vec::new();
                if has_own_queue(from.kind)
                    && let Some(capacity) = from.capacity
                {
                    let live = live
                        .and_then(|s| s.stage(&from.name))
                        .and_then(|s| s.buffer.as_ref())
                        .map(|b| b.counters.depth);
                    buffers.push(depth(String::new(), capacity, live));
                }
                if from.kind.is_fan_out()
                    && let Some(capacity) = from.capacity
                {
                    let live = live_edge
                        .and_then(|e| e.buffer(BufferKind::FanOut))
                        .map(|b| b.counters.depth);
                    buffers.push(depth(format!("out {} ", input.output), capacity, live));
                }
                if let Some(lane) = input.lane {
                    let weight = if node.kind == StageKind::PriorityLanes {
                        format!("w{} ", lane.weight)
                    } else {
                        String::new()
                    };
                    let live = live_edge
                        .and_then(|e| e.buffer(BufferKind::Lane))
                        .map(|b| b.counters.depth);
                    buffers.push(depth(format!("lane {weight}"), lane.capacity, live));
                }
                edges.push(DiagramEdge {
                    from: input.from,
                    to,
                    item_type: from.item.short_name(),
                    buffers,
                });
            }
        }
        Self {
            pipeline: name.to_owned(),
            nodes: nodes
                .iter()
                .map(|node| DiagramNode {
                    name: node.name.clone(),
                    kind: node.kind,
                    note: note(node),
                })
                .collect(),
            edges,
        }
    }

    fn edge_lines(edge: &DiagramEdge) -> Vec<&str> {
        let mut lines = vec![edge.item_type.as_str()];
        lines.extend(edge.buffers.iter().map(String::as_str));
        lines
    }

    /// Graphviz DOT (`dot -Tsvg`).
    pub fn to_dot(&self) -> String {
        let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", quote(&self.pipeline));
        out.push_str("  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
        for node in &self.nodes {
            let shape = match node.kind {
                StageKind::Ingress => "shape=cds",
                StageKind::Source => "shape=ellipse",
                StageKind::Stage => "shape=box",
                StageKind::AsyncStage => "shape=box, peripheries=2",
                StageKind::Boundary => "shape=box3d",
                StageKind::Spill => "shape=folder",
                StageKind::Merge | StageKind::PriorityLanes => "shape=invtrapezium",
                StageKind::Broadcast
                | StageKind::Balance
                | StageKind::Partition
                | StageKind::Route => "shape=trapezium",
                StageKind::Junction => "shape=circle",
                StageKind::Sink => "shape=cylinder",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\\n{}\", {shape}];",
                quote(&node.name),
                quote(&node.name),
                quote(&node.note)
            );
        }
        for edge in &self.edges {
            let label: Vec<String> = Self::edge_lines(edge).iter().map(|l| quote(l)).collect();
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                quote(&self.nodes[edge.from].name),
                quote(&self.nodes[edge.to].name),
                label.join("\\n")
            );
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart (renders in GitHub and GitLab markdown).
    pub fn to_mermaid(&self) -> String {
        let quote = |text: &str| {
            text.replace('"', "#quot;")
                .replace('<', "#lt;")
                .replace('>', "#gt;")
        };
        let mut out = String::from("flowchart LR\n");
        for (index, node) in self.nodes.iter().enumerate() {
            let (open, close) = match node.kind {
                StageKind::Ingress => ("[/", "/]"),
                StageKind::Source => ("([", "])"),
                StageKind::Stage => ("[", "]"),
                StageKind::AsyncStage => ("[[", "]]"),
                StageKind::Boundary => ("{{", "}}"),
                StageKind::Spill => ("[(", ")]"),
                StageKind::Merge | StageKind::PriorityLanes => ("[\\", "/]"),
                StageKind::Broadcast
                | StageKind::Balance
                | StageKind::Partition
                | StageKind::Route => ("[/", "\\]"),
                StageKind::Junction => ("((", "))"),
                StageKind::Sink => ("[(", ")]"),
            };
            let _ = writeln!(
                out,
                "  s{index}{open}\"{}<br/>{}\"{close}",
                quote(&node.name),
                quote(&node.note)
            );
        }
        for edge in &self.edges {
            let label: Vec<String> = Self::edge_lines(edge).iter().map(|l| quote(l)).collect();
            let _ = writeln!(
                out,
                "  s{} -->|\"{}\"| s{}",
                edge.from,
                label.join("<br/>"),
                edge.to
            );
        }
        out
    }
}
