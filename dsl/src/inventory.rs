//! The inventory: every place a pipeline holds items, with its capacity (the most items in flight
//! there) and its worst-case memory (capacity x bytes per item), plus the totals.
//!
//! Bytes per item are `size_of::<T>()` unless the author declared a typical size for heap-owning
//! items ([`PipelineBuilder::item_size`](crate::PipelineBuilder::item_size)); stages that pass items
//! through (boundaries, merges, junctions) inherit their input's size. Buffers inside an author's
//! stage closure (a `batch` in a `stage`) are not seen by the graph and are not listed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::graph::{self, Node, StageKind};

/// What kind of place holds the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// An ingress queue.
    Ingress,
    /// An async boundary's ring.
    Boundary,
    /// A fan-in lane (merge, priority lanes).
    Lane,
    /// The queue of one output of a fan-out (broadcast, balance, partition).
    FanOut,
    /// The read-ahead of an async stage or sink (`concurrency` input items).
    Prefetch,
    /// The futures in flight of an async stage or sink (each holds its item).
    InFlight,
    /// The memory part of a spilling queue (an ingress or an in-stream spill).
    Spill,
    /// Buffers of a spill log, in bytes (its read-ahead, its write batch).
    SpillLog,
}

impl BufferKind {
    /// The label used in tables and serialised snapshots.
    pub fn as_str(self) -> &'static str {
        match self {
            BufferKind::Ingress => "ingress",
            BufferKind::Boundary => "boundary",
            BufferKind::Lane => "lane",
            BufferKind::FanOut => "fan_out",
            BufferKind::Prefetch => "prefetch",
            BufferKind::InFlight => "in_flight",
            BufferKind::Spill => "spill",
            BufferKind::SpillLog => "spill_log",
        }
    }
}

/// One place that holds items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The buffer: the stage's name, `merge.upstream` for a lane, `fan[k]` for output `k` of a
    /// fan-out, `stage.prefetch` /
    /// `stage.in_flight` for an async stage.
    pub name: String,
    /// The stage it belongs to.
    pub stage: String,
    /// What it is.
    pub kind: BufferKind,
    /// The most items it holds.
    pub capacity: u64,
    /// The items' type.
    pub item_type: String,
    /// Bytes per item (declared, or `size_of`).
    pub item_bytes: u64,
    /// `capacity x item_bytes`.
    pub max_bytes: u64,
}

/// Every buffer of a pipeline and the totals; `Display` renders a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The pipeline's name.
    pub pipeline: String,
    /// The buffers, in the order their stages were added.
    pub entries: Vec<InventoryEntry>,
    /// Items in flight at most, over all buffers.
    pub total_capacity: u64,
    /// Worst-case bytes over all buffers.
    pub total_bytes: u64,
}

impl Inventory {
    pub(crate) fn new(pipeline: &str, nodes: &[Node]) -> Self {
        let sizes = graph::item_sizes(nodes);
        let mut entries = Vec::new();
        let mut add = |name: String, stage: &Node, kind, capacity: usize, item_type, bytes| {
            entries.push(InventoryEntry {
                name,
                stage: stage.name.clone(),
                kind,
                capacity: capacity as u64,
                item_type,
                item_bytes: bytes as u64,
                // A log's buffers are bytes without an item capacity.
                max_bytes: if kind == BufferKind::SpillLog {
                    bytes as u64
                } else {
                    (capacity as u64).saturating_mul(bytes as u64)
                },
            });
        };
        for (index, node) in nodes.iter().enumerate() {
            match node.kind {
                StageKind::Ingress | StageKind::Boundary | StageKind::Spill => {
                    let kind = match (node.kind, node.spill) {
                        (_, Some(_)) => BufferKind::Spill,
                        (StageKind::Ingress, None) => BufferKind::Ingress,
                        _ => BufferKind::Boundary,
                    };
                    let capacity = node.capacity.unwrap_or(0);
                    let item = node.item.short_name();
                    add(
                        node.name.clone(),
                        node,
                        kind,
                        capacity,
                        item.clone(),
                        sizes[index],
                    );
                    if let Some(spill) = node.spill {
                        if spill.read_ahead > 0 {
                            let name = format!("{}.read_ahead", node.name);
                            let kind = BufferKind::Prefetch;
                            add(
                                name,
                                node,
                                kind,
                                spill.read_ahead,
                                item.clone(),
                                sizes[index],
                            );
                        }
                        // A failed write hands one batch back to memory.
                        let name = format!("{}.held_back", node.name);
                        add(
                            name,
                            node,
                            BufferKind::Spill,
                            spill.held_back,
                            item,
                            sizes[index],
                        );
                        // The log's buffers hold bytes, not items: no capacity, their size.
                        let name = format!("{}.log", node.name);
                        let bytes = spill.log_bytes as usize;
                        add(
                            name,
                            node,
                            BufferKind::SpillLog,
                            0,
                            "bytes".to_owned(),
                            bytes,
                        );
                    }
                }
                StageKind::Merge | StageKind::PriorityLanes => {
                    for input in &node.inputs {
                        let Some(lane) = input.lane else { continue };
                        let upstream = graph::output_name(nodes, input.from, input.output);
                        let name = format!("{}.{upstream}", node.name);
                        let bytes = sizes[input.from];
                        let item = nodes[input.from].item.short_name();
                        add(name, node, BufferKind::Lane, lane.capacity, item, bytes);
                    }
                }
                StageKind::AsyncStage | StageKind::Sink => {
                    let (Some(concurrency), Some(input)) = (node.capacity, node.inputs.first())
                    else {
                        continue;
                    };
                    let in_bytes = sizes[input.from];
                    let in_item = nodes[input.from].item.short_name();
                    let name = format!("{}.prefetch", node.name);
                    let kind = BufferKind::Prefetch;
                    add(name, node, kind, concurrency, in_item.clone(), in_bytes);
                    // A future holds its item until it yields the result.
                    let (item, bytes) = if node.kind == StageKind::AsyncStage {
                        (
                            format!("{in_item} -> {}", node.item.short_name()),
                            in_bytes.max(sizes[index]),
                        )
                    } else {
                        (in_item, in_bytes)
                    };
                    let name = format!("{}.in_flight", node.name);
                    add(name, node, BufferKind::InFlight, concurrency, item, bytes);
                }
                StageKind::Broadcast
                | StageKind::Balance
                | StageKind::Partition
                | StageKind::Route => {
                    let capacity = node.capacity.unwrap_or(0);
                    for output in 0..node.outputs {
                        let name = graph::output_name(nodes, index, output);
                        let item = node.item.short_name();
                        add(name, node, BufferKind::FanOut, capacity, item, sizes[index]);
                    }
                }
                StageKind::Source | StageKind::Stage | StageKind::Junction => {}
            }
        }
        Self {
            pipeline: pipeline.to_owned(),
            total_capacity: entries.iter().map(|e| e.capacity).sum(),
            total_bytes: entries.iter().map(|e| e.max_bytes).sum(),
            entries,
        }
    }
}

impl fmt::Display for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "inventory of pipeline `{}`", self.pipeline)?;
        writeln!(
            f,
            "{:<24} {:<9} {:>10} {:<16} {:>10} {:>14}",
            "buffer", "kind", "capacity", "item", "item bytes", "max bytes"
        )?;
        for e in &self.entries {
            writeln!(
                f,
                "{:<24} {:<9} {:>10} {:<16} {:>10} {:>14}",
                e.name,
                e.kind.as_str(),
                e.capacity,
                e.item_type,
                e.item_bytes,
                e.max_bytes
            )?;
        }
        write!(
            f,
            "{:<24} {:<9} {:>10} {:<16} {:>10} {:>14}",
            "total", "", self.total_capacity, "", "", self.total_bytes
        )
    }
}
