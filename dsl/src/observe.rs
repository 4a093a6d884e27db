//! Observing a running pipeline: a serde snapshot per stage and edge, rates over a recent window,
//! and readiness against the pipeline's recovery budget.
//!
//! Rates need two readings. The handle keeps a short history of readings (one is taken at start
//! and one at every [`metrics`](crate::PipelineHandle::metrics) or
//! [`ready`](crate::PipelineHandle::ready) call) and measures against the newest reading that is
//! at least one rate window old (or the oldest kept), so a rate is "items per second over about
//! the last window". Time is tokio's clock, so paused-time tests are deterministic.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use weir_runtime::metrics::{BoundarySnapshot, Reason};

use crate::PipelineHandle;
use weir_spill::SpillSnapshot;

use crate::graph::StageKind;
use crate::inventory::BufferKind;
use crate::run::Running;

/// Readings kept at most (older ones are thinned out).
const MAX_READINGS: usize = 64;

/// One buffer's counters at one moment: items in, items out, rejections that count against
/// readiness.
type BufferReading = Option<(u64, u64, u64)>;

#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    stages: Vec<u64>,
    buffers: Vec<BufferReading>,
}

/// The history of readings of one running pipeline.
#[derive(Debug)]
pub(crate) struct Monitor {
    window: Duration,
    readings: VecDeque<Reading>,
}

impl Monitor {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            readings: VecDeque::new(),
        }
    }

    /// Records `now` and returns the reading to measure rates against.
    fn record(&mut self, now: Reading) -> Option<Reading> {
        while self.readings.len() >= 2 && now.at.duration_since(self.readings[1].at) >= self.window
        {
            self.readings.pop_front();
        }
        if self.readings.len() >= MAX_READINGS {
            self.readings.remove(1);
        }
        let baseline = self.readings.front().cloned();
        self.readings.push_back(now);
        baseline
    }
}

/// Rejections that say "the pipeline cannot keep up" (not the ones caused by closing it).
fn overload_rejections(snapshot: &BoundarySnapshot) -> u64 {
    [Reason::Full, Reason::Timeout, Reason::SpillFailed]
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
    pub counters: BoundarySnapshot,
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
    /// Items the stage emitted (a sink: consumed; a fan-out: taken in) so far.
    pub items: u64,
    /// The same per second over the recent window.
    pub items_per_sec: Option<f64>,
    /// The stage's own queue (ingress, boundary).
    pub buffer: Option<BufferSnapshot>,
    /// The durable part of a spilling ingress: records and bytes spilled, replayed, disk used
    /// against the budget, oldest spilled record's age, segments, truncations, corruptions.
    pub spill: Option<SpillSnapshot>,
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

impl Running {
    fn read(&self) -> (Reading, Vec<Option<BoundarySnapshot>>) {
        let snapshots: Vec<_> = self.buffers.iter().map(|b| b.read()).collect();
        let reading = Reading {
            at: Instant::now(),
            stages: self
                .cells
                .iter()
                .map(|c| c.items.load(std::sync::atomic::Ordering::Relaxed))
                .collect(),
            buffers: snapshots
                .iter()
                .map(|s| {
                    s.as_ref()
                        .map(|s| (s.items_in, s.items_out, overload_rejections(s)))
                })
                .collect(),
        };
        (reading, snapshots)
    }

    /// Takes a reading (the one at start is the first baseline).
    pub(crate) fn sample(&self) {
        let (reading, _) = self.read();
        self.monitor.lock().unwrap().record(reading);
    }

    pub(crate) fn snapshot(&self) -> PipelineSnapshot {
        let (now, snapshots) = self.read();
        let baseline = self.monitor.lock().unwrap().record(now.clone());
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
                kind: self.buffers[index].kind,
                in_per_sec: rate(counters.items_in, then_in),
                out_per_sec,
                recently_rejected: overload_rejections(&counters).saturating_sub(then_rejected),
                backlog_secs,
                counters,
            })
        };
        let nodes = &self.nodes;
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
                buffer: self
                    .buffers
                    .iter()
                    .position(|b| b.stage == index && b.edge.is_none())
                    .and_then(buffer),
                spill: self
                    .spills
                    .iter()
                    .find(|s| s.stage == index)
                    .map(|s| s.metrics.snapshot()),
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
                    buffers: (0..self.buffers.len())
                        .filter(|&b| self.buffers[b].edge == Some((to, k)))
                        .filter_map(buffer)
                        .collect(),
                });
            }
        }
        PipelineSnapshot {
            pipeline: self.name.clone(),
            live: self.is_live(),
            rate_span_secs: span.unwrap_or(0.0),
            stages,
            edges,
        }
    }
}

impl PipelineHandle {
    /// A snapshot of every stage and edge: items and rates per stage; depth, capacity, in / out
    /// rates, demand, rejects and drops by reason, oldest-item age and lag per buffer.
    pub fn metrics(&self) -> PipelineSnapshot {
        self.running.snapshot()
    }

    /// Whether the pipeline keeps up: not ready when it is not running, when an ingress rejected
    /// items (full, timed out) within the recent window, or when a buffer's backlog would take
    /// longer than the recovery budget to drain at its recent drain rate (or does not drain at
    /// all). Every reason is given.
    pub fn ready(&self) -> Readiness {
        let snapshot = self.metrics();
        self.running.readiness(&snapshot)
    }
}

impl Running {
    /// Readiness judged from `snapshot` (see [`PipelineHandle::ready`]).
    pub(crate) fn readiness(&self, snapshot: &PipelineSnapshot) -> Readiness {
        let budget = self.settings.recovery_budget;
        let window = self.settings.rate_window;
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
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}
