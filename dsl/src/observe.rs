//! Observing a running pipeline: a serde snapshot per stage and edge (counters, rates, the
//! ledger), and readiness against the pipeline's recovery budget.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use weir_runtime::metrics::{BufferCounts, Reason};
use weir_spill::SpillSnapshot;

use crate::graph::StageKind;
use crate::inventory::BufferKind;
use crate::ledger::Ledger;
use crate::rates::Reading;
use crate::running::Running;

/// Rejections that say "the pipeline cannot keep up" (not the ones caused by closing it).
fn overload_rejections(snapshot: &BufferCounts) -> u64 {
    [
        Reason::Full,
        Reason::Timeout,
        Reason::SpillFailed,
        Reason::Abandoned,
    ]
    .iter()
    .map(|reason| snapshot.rejected.get(reason.as_str()).copied().unwrap_or(0))
    .sum()
}

/// The counters of one buffer (an ingress, a boundary, a fan-in lane, a fan-out output) with its
/// rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferSnapshot {
    /// What the buffer is.
    pub kind: BufferKind,
    /// Depth, capacity, items in / out, demand, rejects and drops by reason, oldest-item age and
    /// producer wait, as the runtime counts them (`name` is the stage, `merge.upstream` for a
    /// lane, `fan[k]` for output `k` of a fan-out).
    pub counters: BufferCounts,
    /// Items accepted per second over the recent window.
    pub in_per_sec: Option<f64>,
    /// Items handed on per second over the recent window (the drain rate).
    pub out_per_sec: Option<f64>,
    /// Items rejected because of overload (full, timeout, spill failure) in the recent window.
    pub recently_rejected: u64,
    /// The lag: how long the backlog takes to drain at the recent rate (`None` when nothing is
    /// measured yet or nothing drains).
    pub backlog_secs: Option<f64>,
}

/// One stage of a running pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSnapshot {
    /// The stage's name.
    pub name: String,
    /// What the stage is.
    pub kind: StageKind,
    /// Items the stage emitted so far (a sink: handled; a fan-out: taken in, once).
    pub items: u64,
    /// The same per second over the recent window.
    pub items_per_sec: Option<f64>,
    /// The stage's own queue (ingress, boundary).
    pub buffer: Option<BufferSnapshot>,
    /// The durable part of a spilling stage (an ingress or an in-stream spill): records and bytes
    /// spilled, replayed, disk used against the budget, oldest spilled record's age, segments,
    /// truncations, corruptions.
    pub spill: Option<SpillSnapshot>,
    /// The stage's books: what came in, went out, left by reason, is held.
    pub ledger: Ledger,
}

/// One edge of a running pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    /// The stage the items come from.
    pub from: String,
    /// The stage they go to.
    pub to: String,
    /// Which output of `from` (a fan-out has several; 0 otherwise).
    pub output: usize,
    /// The items' type.
    pub item_type: String,
    /// The queues on this edge: the fan-out output it leaves, then the fan-in lane it enters.
    pub buffers: Vec<BufferSnapshot>,
}

impl EdgeSnapshot {
    /// The buffer of `kind` on this edge.
    pub fn buffer(&self, kind: BufferKind) -> Option<&BufferSnapshot> {
        self.buffers.iter().find(|b| b.kind == kind)
    }
}

/// Everything counted in a running pipeline at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSnapshot {
    /// The pipeline's name.
    pub pipeline: String,
    /// Whether its tasks are running.
    pub live: bool,
    /// The span the rates were measured over, in seconds.
    pub rate_span_secs: f64,
    /// Every stage, in the order they were added.
    pub stages: Vec<StageSnapshot>,
    /// Every edge, grouped by the stage they feed.
    pub edges: Vec<EdgeSnapshot>,
}

impl PipelineSnapshot {
    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// The edge `from -> to` (the first one, when two outputs of a fan-out feed the same stage;
    /// [`EdgeSnapshot::output`] tells them apart in [`edges`](Self::edges)).
    pub fn edge(&self, from: &str, to: &str) -> Option<&EdgeSnapshot> {
        self.edges.iter().find(|e| e.from == from && e.to == to)
    }

    /// The whole graph's books: `offered` over the ingresses and sources, `delivered` over the
    /// sinks, every stage's exits and holdings (see [`Ledger`]).
    pub fn ledger(&self) -> Ledger {
        let mut total = Ledger::default();
        for stage in &self.stages {
            match stage.kind {
                StageKind::Ingress | StageKind::Source => total.offered += stage.ledger.offered,
                StageKind::Sink => total.delivered += stage.ledger.delivered,
                _ => {}
            }
            total.add_inside(&stage.ledger);
        }
        total
    }

    /// Every buffer with the label readiness reasons use: ``ingress `orders` ``,
    /// ``lane `all.a` ``, ``fan_out `split[0]` ``.
    pub fn buffers(&self) -> impl Iterator<Item = (String, &BufferSnapshot)> {
        let own = self.stages.iter().filter_map(|stage| stage.buffer.as_ref());
        let on_edges = self.edges.iter().flat_map(|edge| edge.buffers.iter());
        own.chain(on_edges)
            .map(|b| (format!("{} `{}`", b.kind.as_str(), b.counters.name), b))
    }
}

/// Whether the pipeline keeps up, and if not, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// `true` when no reason below applies.
    pub ready: bool,
    /// One line per problem.
    pub reasons: Vec<String>,
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ready {
            f.write_str("ready")
        } else {
            write!(f, "not ready: {}", self.reasons.join("; "))
        }
    }
}

/// Reads every counter once: the stages' ledgers and the buffers' snapshots.
fn read(running: &Running) -> (Reading, Vec<Option<BufferCounts>>, Vec<Ledger>) {
    let probes = &running.probes;
    let snapshots: Vec<_> = probes.buffers.iter().map(|b| b.read()).collect();
    let ledgers = ledgers(running);
    let reading = Reading {
        at: Instant::now(),
        stages: running
            .nodes
            .iter()
            .zip(&ledgers)
            .map(|(node, ledger)| items(node.kind, ledger))
            .collect(),
        buffers: snapshots
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|s| (s.items_in, s.items_out, overload_rejections(s)))
            })
            .collect(),
    };
    (reading, snapshots, ledgers)
}

/// What a stage's `items` counts: what it emitted; a fan-out counts what it took in, once.
fn items(kind: StageKind, ledger: &Ledger) -> u64 {
    if kind.is_fan_out() {
        ledger.offered
    } else {
        ledger.delivered
    }
}

/// Every stage's books (see [`Ledger`]).
fn ledgers(running: &Running) -> Vec<Ledger> {
    let nodes = &running.nodes;
    let stages = &running.probes.stages;
    // What each stage emitted is what its consumers received on the edges from it.
    let mut emitted = vec![0u64; nodes.len()];
    for (to, node) in nodes.iter().enumerate() {
        for (k, input) in node.inputs.iter().enumerate() {
            emitted[input.from] += stages[to].inputs[k].get();
        }
    }
    nodes
        .iter()
        .zip(stages)
        .enumerate()
        .map(|(index, (node, counters))| {
            let entries = counters.scope.entry();
            let received: u64 = counters.inputs.iter().map(|count| count.get()).sum();
            let delivered = if node.kind == StageKind::Sink {
                entries.delivered
            } else {
                emitted[index]
            };
            let offered = match node.kind {
                StageKind::Ingress => counters.offered.as_ref().map_or(0, |m| m.offered()),
                // A source offers what it produced: what it emitted, let go of, holds or
                // consumed into what it made, less what it made (a zip's pairs, a batch).
                StageKind::Source => {
                    (delivered + entries.consumed + entries.exits.sum() + entries.held)
                        .saturating_sub(entries.made + entries.recovered)
                }
                _ => received,
            };
            Ledger::of(offered, delivered, &entries)
        })
        .collect()
}

/// Takes a reading (the one at start is the first baseline).
pub(crate) fn sample(running: &Running) {
    let (reading, _, _) = read(running);
    running.monitor.lock().unwrap().record(reading);
}

/// A snapshot of every stage and edge, with rates over the recent window.
pub(crate) fn snapshot(running: &Running) -> PipelineSnapshot {
    let (now, snapshots, ledgers) = read(running);
    let probes = &running.probes;
    let baseline = running.monitor.lock().unwrap().record(now.clone());
    let span = baseline
        .as_ref()
        .map(|b| now.at.duration_since(b.at).as_secs_f64())
        .filter(|&span| span > 0.0);
    let rate = |now: u64, then: u64| span.map(|span| now.saturating_sub(then) as f64 / span);
    let buffer = |index: usize| -> Option<BufferSnapshot> {
        let counters = snapshots[index].clone()?;
        let then = baseline
            .as_ref()
            .and_then(|b| b.buffers.get(index).copied().flatten());
        let (then_in, then_out, then_rejected) = then.unwrap_or((0, 0, 0));
        let out_per_sec = rate(counters.items_out, then_out);
        let backlog_secs = out_per_sec
            .filter(|&r| r > 0.0)
            .map(|r| counters.depth as f64 / r);
        Some(BufferSnapshot {
            kind: probes.buffers[index].kind,
            in_per_sec: rate(counters.items_in, then_in),
            out_per_sec,
            recently_rejected: overload_rejections(&counters).saturating_sub(then_rejected),
            backlog_secs,
            counters,
        })
    };
    let nodes = &running.nodes;
    let stages = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| StageSnapshot {
            name: node.name.clone(),
            kind: node.kind,
            items: now.stages[index],
            items_per_sec: baseline
                .as_ref()
                .and_then(|b| rate(now.stages[index], b.stages[index])),
            buffer: probes
                .buffers
                .iter()
                .position(|b| b.stage == index && b.edge.is_none())
                .and_then(buffer),
            spill: probes
                .spills
                .iter()
                .find(|s| s.stage == index)
                .map(|s| s.metrics.snapshot()),
            ledger: ledgers[index],
        })
        .collect();
    let mut edges = Vec::new();
    for (to, node) in nodes.iter().enumerate() {
        for (k, input) in node.inputs.iter().enumerate() {
            edges.push(EdgeSnapshot {
                from: nodes[input.from].name.clone(),
                to: node.name.clone(),
                output: input.output,
                item_type: nodes[input.from].item.short_name(),
                buffers: (0..probes.buffers.len())
                    .filter(|&b| probes.buffers[b].edge == Some((to, k)))
                    .filter_map(buffer)
                    .collect(),
            });
        }
    }
    PipelineSnapshot {
        pipeline: running.name.clone(),
        live: running.is_live(),
        rate_span_secs: span.unwrap_or(0.0),
        stages,
        edges,
    }
}

/// Readiness judged from `snapshot` (see [`PipelineHandle::ready`](crate::PipelineHandle::ready)).
pub(crate) fn readiness(running: &Running, snapshot: &PipelineSnapshot) -> Readiness {
    let budget = running.settings.recovery_budget;
    let window = running.settings.rate_window;
    let mut reasons = Vec::new();
    if !snapshot.live {
        reasons.push("the pipeline is not running".to_owned());
    }
    for (label, buffer) in snapshot.buffers() {
        if buffer.recently_rejected > 0 {
            reasons.push(format!(
                "{label} rejected {} items in the last {:.2}s",
                buffer.recently_rejected, snapshot.rate_span_secs
            ));
        }
        let depth = buffer.counters.depth;
        if depth == 0 {
            continue;
        }
        match buffer.out_per_sec {
            Some(rate) if rate > 0.0 => {
                let needs = depth as f64 / rate;
                if needs > budget.as_secs_f64() {
                    reasons.push(format!(
                        "{label}: a backlog of {depth} items needs {needs:.2}s to drain at {rate:.0}/s (budget {budget:?})"
                    ));
                }
            }
            // A short span says little about a stall: judge it over half a window at least.
            Some(_) if snapshot.rate_span_secs >= window.as_secs_f64() / 2.0 => reasons.push(
                format!("{label}: a backlog of {depth} items is not draining"),
            ),
            _ => {}
        }
    }
    for check in &running.checks {
        if let Err(reason) = check(budget) {
            reasons.push(reason);
        }
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}
