//! Export: every counter of a running pipeline through the [`metrics`] facade, so that any
//! exporter (Prometheus, StatsD, OpenTelemetry...) can publish it, and readiness changes as
//! `tracing` events.
//!
//! A running pipeline records its counters every quarter of its rate window (250 ms by default)
//! and on every [`PipelineHandle::export_metrics`](crate::PipelineHandle::export_metrics) call. Install the recorder before or after
//! starting the pipeline: handles are looked up at every export. Without a recorder, an export
//! costs a few dozen no-op calls.
//!
//! # Names and labels
//!
//! Every metric has the label `pipeline`. Counters are running totals (set with
//! `Counter::absolute`), gauges are the latest value.
//!
//! | name | type | labels | what it is |
//! |---|---|---|---|
//! | `weir_pipeline_live` | gauge | | 1 while the pipeline's tasks run, else 0 |
//! | `weir_pipeline_ready` | gauge | | 1 when [`ready`](crate::PipelineHandle::ready) holds, else 0 |
//! | `weir_pipeline_unaccounted` | gauge | | the graph's [ledger](crate::Ledger) difference: 0 when every item is accounted for (at a quiescent point) |
//! | `weir_stage_items_total` | counter | `stage`, `kind` | items a stage emitted (a sink: handled; a fan-out: taken in) |
//! | `weir_stage_offered_total` | counter | `stage`, `kind` | items that came into the stage (an ingress: pushes offered) |
//! | `weir_stage_recovered_total` | counter | `stage`, `kind` | items it found held when the pipeline started, left by an earlier run (a spill store or durable ingress reopened) |
//! | `weir_stage_delivered_total` | counter | `stage`, `kind` | items it passed on (a sink: handled successfully) |
//! | `weir_stage_exits_total` | counter | `stage`, `kind`, `exit`, `reason` | items that left it otherwise: `exit` is `rejected`, `dropped`, `failed` or `cancelled`; `reason` as in the buffers (`filtered`, `duplicate`, `cancelled_in_flight`, ...) |
//! | `weir_stage_held` | gauge | `stage`, `kind` | items it holds now (queues, in flight, on disk) |
//! | `weir_buffer_depth` | gauge | `stage`, `buffer`, `kind` | items in the buffer (accepted, not yet handed on) |
//! | `weir_buffer_capacity` | gauge | `stage`, `buffer`, `kind` | the most items it holds |
//! | `weir_buffer_demand` | gauge | `stage`, `buffer`, `kind` | outstanding demand of its consumer |
//! | `weir_buffer_items_in_total` | counter | `stage`, `buffer`, `kind` | items accepted |
//! | `weir_buffer_items_out_total` | counter | `stage`, `buffer`, `kind` | items handed downstream |
//! | `weir_buffer_rejected_total` | counter | `stage`, `buffer`, `kind`, `reason` | items refused and handed back, or given up by their pusher (`full`, `timeout`, `closed`, `spill_failed`, `abandoned`) |
//! | `weir_buffer_dropped_total` | counter | `stage`, `buffer`, `kind`, `reason` | items dropped by policy (`dropped_oldest`, `dropped_newest`, `cancelled`, `throttled`, ...) |
//! | `weir_buffer_producer_waits_total` | counter | `stage`, `buffer`, `kind` | pushes that had to wait for room |
//! | `weir_buffer_oldest_item_age_seconds` | gauge | `stage`, `buffer`, `kind` | age of the oldest waiting item (0 when empty) |
//! | `weir_buffer_lag_seconds` | gauge | `stage`, `buffer`, `kind` | backlog / recent drain rate: how long the backlog takes to clear (0 when empty, `+Inf` when it holds items and nothing drained over the window; absent until measured) |
//! | `weir_spill_records_total` | counter | `stage` | records written to the spill log |
//! | `weir_spill_bytes_total` | counter | `stage` | bytes written to the spill log |
//! | `weir_spill_replayed_total` | counter | `stage` | records read back from the log |
//! | `weir_spill_disk_bytes` | gauge | `stage` | bytes the log's segments take on disk |
//! | `weir_spill_budget_bytes` | gauge | `stage` | the log's disk budget |
//! | `weir_spill_segments` | gauge | `stage` | segment files |
//! | `weir_spill_oldest_age_seconds` | gauge | `stage` | age of the oldest spilled, unacknowledged record |
//! | `weir_spill_budget_rejections_total` | counter | `stage` | appends refused because the budget was full |
//! | `weir_spill_truncations_total` | counter | `stage` | torn tails truncated on open |
//! | `weir_spill_corruptions_total` | counter | `stage` | corrupt records found |
//!
//! `buffer` is the stage's name for its own queue (an ingress, a boundary), `merge.upstream` for a
//! fan-in lane and `fan[k]` for output `k` of a fan-out; `kind` is `ingress`, `boundary`, `lane`
//! or `fan_out` for buffers and the [`StageKind`](crate::StageKind) label for stages.
//!
//! # Logs
//!
//! The pipeline runs in a `pipeline` span (field `pipeline`), each sink in a `stage` span (fields
//! `pipeline`, `stage`). A pipeline that stops being ready logs one `warn` event with the reasons,
//! and one `info` event when it recovers: a transition is logged once, however long it lasts. The
//! runtime's own warnings (an ingress rejecting, a spill failing) carry the stage's name and are
//! rate-limited there.

use metrics::{Label, counter, gauge};

use weir_spill::SpillSnapshot;

use crate::ledger::Ledger;
use crate::observe::{BufferSnapshot, PipelineSnapshot, Readiness};
use crate::running::Running;

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every series with its help text (the table above, for exporters that publish it:
/// Prometheus's `# HELP`).
const HELP: &[(&str, Kind, &str)] = &[
    (
        "weir_pipeline_live",
        Kind::Gauge,
        "1 while the pipeline's tasks run, else 0.",
    ),
    (
        "weir_pipeline_ready",
        Kind::Gauge,
        "1 when the pipeline is ready, else 0.",
    ),
    (
        "weir_pipeline_unaccounted",
        Kind::Gauge,
        "The graph's ledger difference: 0 when every item is accounted for (at a quiescent point).",
    ),
    (
        "weir_stage_items_total",
        Kind::Counter,
        "Items a stage emitted (a sink: handled; a fan-out: taken in).",
    ),
    (
        "weir_stage_offered_total",
        Kind::Counter,
        "Items that came into the stage (an ingress: pushes offered).",
    ),
    (
        "weir_stage_recovered_total",
        Kind::Counter,
        "Items it found held when the pipeline started, left by an earlier run (a spill store or durable ingress reopened).",
    ),
    (
        "weir_stage_delivered_total",
        Kind::Counter,
        "Items it passed on (a sink: handled successfully).",
    ),
    (
        "weir_stage_exits_total",
        Kind::Counter,
        "Items that left it otherwise: exit is rejected, dropped, failed or cancelled; reason as in the buffers (filtered, duplicate, cancelled_in_flight, ...).",
    ),
    (
        "weir_stage_held",
        Kind::Gauge,
        "Items it holds now (queues, in flight, on disk).",
    ),
    (
        "weir_buffer_depth",
        Kind::Gauge,
        "Items in the buffer (accepted, not yet handed on).",
    ),
    (
        "weir_buffer_capacity",
        Kind::Gauge,
        "The most items it holds.",
    ),
    (
        "weir_buffer_demand",
        Kind::Gauge,
        "Outstanding demand of its consumer.",
    ),
    (
        "weir_buffer_items_in_total",
        Kind::Counter,
        "Items accepted.",
    ),
    (
        "weir_buffer_items_out_total",
        Kind::Counter,
        "Items handed downstream.",
    ),
    (
        "weir_buffer_rejected_total",
        Kind::Counter,
        "Items refused and handed back, or given up by their pusher (full, timeout, closed, spill_failed, abandoned).",
    ),
    (
        "weir_buffer_dropped_total",
        Kind::Counter,
        "Items dropped by policy (dropped_oldest, dropped_newest, cancelled, throttled, ...).",
    ),
    (
        "weir_buffer_producer_waits_total",
        Kind::Counter,
        "Pushes that had to wait for room.",
    ),
    (
        "weir_buffer_oldest_item_age_seconds",
        Kind::Gauge,
        "Age of the oldest waiting item (0 when empty).",
    ),
    (
        "weir_buffer_lag_seconds",
        Kind::Gauge,
        "Backlog / recent drain rate: how long the backlog takes to clear (0 when empty, +Inf when it holds items and nothing drained over the window; absent until measured).",
    ),
    (
        "weir_spill_records_total",
        Kind::Counter,
        "Records written to the spill log.",
    ),
    (
        "weir_spill_bytes_total",
        Kind::Counter,
        "Bytes written to the spill log.",
    ),
    (
        "weir_spill_replayed_total",
        Kind::Counter,
        "Records read back from the log.",
    ),
    (
        "weir_spill_disk_bytes",
        Kind::Gauge,
        "Bytes the log's segments take on disk.",
    ),
    (
        "weir_spill_budget_bytes",
        Kind::Gauge,
        "The log's disk budget.",
    ),
    ("weir_spill_segments", Kind::Gauge, "Segment files."),
    (
        "weir_spill_oldest_age_seconds",
        Kind::Gauge,
        "Age of the oldest spilled, unacknowledged record.",
    ),
    (
        "weir_spill_budget_rejections_total",
        Kind::Counter,
        "Appends refused because the budget was full.",
    ),
    (
        "weir_spill_truncations_total",
        Kind::Counter,
        "Torn tails truncated on open.",
    ),
    (
        "weir_spill_corruptions_total",
        Kind::Counter,
        "Corrupt records found.",
    ),
];

/// Describes every series to the recorder (its help text); cheap, and repeated at every export
/// so that a recorder installed after the pipeline started gets it too.
fn describe() {
    for &(name, kind, help) in HELP {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
        }
    }
}

/// Records `snapshot` and `readiness` through the `metrics` facade.
pub(crate) fn record(snapshot: &PipelineSnapshot, readiness: &Readiness) {
    describe();
    let pipeline = Label::new("pipeline", snapshot.pipeline.clone());
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    gauge!("weir_pipeline_live", vec![pipeline.clone()]).set(flag(snapshot.live));
    gauge!("weir_pipeline_ready", vec![pipeline.clone()]).set(flag(readiness.ready));
    gauge!("weir_pipeline_unaccounted", vec![pipeline.clone()])
        .set(snapshot.ledger().unaccounted() as f64);
    for stage in &snapshot.stages {
        let labels = vec![
            pipeline.clone(),
            Label::new("stage", stage.name.clone()),
            Label::new("kind", stage.kind.as_str()),
        ];
        counter!("weir_stage_items_total", labels.clone()).absolute(stage.items);
        export_ledger(&labels, &stage.ledger);
        if let Some(buffer) = &stage.buffer {
            export_buffer(&pipeline, &stage.name, buffer);
        }
        if let Some(spill) = &stage.spill {
            export_spill(&pipeline, &stage.name, spill);
        }
    }
    for edge in &snapshot.edges {
        for buffer in &edge.buffers {
            // A lane belongs to the stage it enters, a fan-out queue to the stage it leaves.
            let owner = match buffer.kind {
                crate::BufferKind::FanOut => &edge.from,
                _ => &edge.to,
            };
            export_buffer(&pipeline, owner, buffer);
        }
    }
}

/// Logs readiness when it changes (once per transition).
pub(crate) fn log_transition(running: &Running, readiness: &Readiness) {
    let was = running
        .was_ready
        .swap(readiness.ready, std::sync::atomic::Ordering::AcqRel);
    if was == readiness.ready || !running.is_live() {
        return;
    }
    if readiness.ready {
        tracing::info!(pipeline = %running.name, "pipeline ready again");
    } else {
        tracing::warn!(
            pipeline = %running.name,
            reasons = %readiness.reasons.join("; "),
            "pipeline not ready"
        );
    }
}

fn export_ledger(labels: &[Label], ledger: &Ledger) {
    counter!("weir_stage_offered_total", labels.to_vec()).absolute(ledger.offered);
    counter!("weir_stage_recovered_total", labels.to_vec()).absolute(ledger.recovered);
    counter!("weir_stage_delivered_total", labels.to_vec()).absolute(ledger.delivered);
    gauge!("weir_stage_held", labels.to_vec()).set(ledger.held as f64);
    for (reason, count) in ledger.by_reason.iter() {
        let mut labels = labels.to_vec();
        labels.push(Label::new("exit", reason.exit().as_str()));
        labels.push(Label::new("reason", reason.as_str()));
        counter!("weir_stage_exits_total", labels).absolute(count);
    }
}

fn export_spill(pipeline: &Label, stage: &str, spill: &SpillSnapshot) {
    let labels = vec![pipeline.clone(), Label::new("stage", stage.to_owned())];
    let total = |name: &'static str, value: u64| {
        counter!(name, labels.clone()).absolute(value);
    };
    total("weir_spill_records_total", spill.spilled_records);
    total("weir_spill_bytes_total", spill.spilled_bytes);
    total("weir_spill_replayed_total", spill.replayed_records);
    total(
        "weir_spill_budget_rejections_total",
        spill.budget_rejections,
    );
    total("weir_spill_truncations_total", spill.truncations);
    total("weir_spill_corruptions_total", spill.corruptions);
    let level = |name: &'static str, value: f64| gauge!(name, labels.clone()).set(value);
    level("weir_spill_disk_bytes", spill.disk_bytes as f64);
    level("weir_spill_budget_bytes", spill.budget_bytes as f64);
    level("weir_spill_segments", spill.segments as f64);
    let age = spill.oldest_age_ms.map_or(0.0, |ms| ms as f64 / 1e3);
    level("weir_spill_oldest_age_seconds", age);
}

fn export_buffer(pipeline: &Label, stage: &str, buffer: &BufferSnapshot) {
    let counters = &buffer.counters;
    let labels = vec![
        pipeline.clone(),
        Label::new("stage", stage.to_owned()),
        Label::new("buffer", counters.name.clone()),
        Label::new("kind", buffer.kind.as_str()),
    ];
    let level = |name: &'static str, value: f64| gauge!(name, labels.clone()).set(value);
    level("weir_buffer_depth", counters.depth as f64);
    level("weir_buffer_capacity", counters.capacity as f64);
    level("weir_buffer_demand", counters.demand as f64);
    let age = counters.oldest_item_age_ms.map_or(0.0, |ms| ms / 1e3);
    level("weir_buffer_oldest_item_age_seconds", age);
    // Empty: no lag. Items but no drain over the window: +Inf (a stalled consumer must not keep
    // showing its last small value). Not measured yet: left as it was.
    let lag = match (counters.depth, buffer.out_per_sec, buffer.backlog_secs) {
        (0, _, _) => Some(0.0),
        (_, _, Some(lag)) => Some(lag),
        (_, Some(_), None) => Some(f64::INFINITY),
        (_, None, None) => None,
    };
    if let Some(lag) = lag {
        level("weir_buffer_lag_seconds", lag);
    }
    let total = |name: &'static str, value: u64| counter!(name, labels.clone()).absolute(value);
    total("weir_buffer_items_in_total", counters.items_in);
    total("weir_buffer_items_out_total", counters.items_out);
    total("weir_buffer_producer_waits_total", counters.producer_waits);
    for (name, by_reason) in [
        ("weir_buffer_rejected_total", &counters.rejected),
        ("weir_buffer_dropped_total", &counters.dropped),
    ] {
        for (reason, &count) in by_reason {
            let mut labels = labels.clone();
            labels.push(Label::new("reason", reason.clone()));
            counter!(name, labels).absolute(count);
        }
    }
}
