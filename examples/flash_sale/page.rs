//! `GET /`: the live pipeline graph (stages coloured by pressure, depth / capacity on each edge)
//! and the service's figures, refreshed every second from `GET /api/state`.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::order::Lane;
use crate::service::Service;

/// The state the page draws: the pipeline snapshot reduced to what a picture needs.
pub(crate) fn state(service: &Service) -> Value {
    let snapshot = service.snapshot();
    let readiness = service.ready();
    let stages: Vec<Value> = snapshot
        .stages
        .iter()
        .map(|stage| {
            let (depth, capacity) = stage
                .buffer
                .as_ref()
                .map_or((0, 0), |b| (b.counters.depth, b.counters.capacity));
            let disk = stage.spill.as_ref().map(|s| (s.disk_bytes, s.budget_bytes));
            let pressure = match disk {
                Some((bytes, budget)) if bytes > 0 && budget > 0 => {
                    (0.5 + 0.5 * bytes as f64 / budget as f64).min(1.0)
                }
                _ if capacity > 0 => depth as f64 / capacity as f64,
                _ => 0.0,
            };
            json!({
                "name": stage.name,
                "kind": format!("{:?}", stage.kind),
                "items": stage.items,
                "per_sec": stage.items_per_sec.unwrap_or(0.0).round(),
                "depth": depth,
                "capacity": capacity,
                "disk_bytes": disk.map_or(0, |(bytes, _)| bytes),
                "pressure": pressure,
            })
        })
        .collect();
    let edges: Vec<Value> = snapshot
        .edges
        .iter()
        .map(|edge| {
            let depth: u64 = edge.buffers.iter().map(|b| b.counters.depth).sum();
            let capacity: u64 = edge.buffers.iter().map(|b| b.counters.capacity).sum();
            json!({ "from": edge.from, "to": edge.to, "depth": depth, "capacity": capacity })
        })
        .collect();
    let c = &service.shared.counts;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let latency: Value = Lane::ALL
        .iter()
        .map(|lane| {
            let h = &service.shared.latency[lane.index()];
            let ms = |q| h.quantile(q).map(|d| d.as_secs_f64() * 1e3);
            (
                lane.name().to_owned(),
                json!({ "p50_ms": ms(0.5), "p99_ms": ms(0.99) }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({
        "pipeline": snapshot.pipeline,
        "uptime_secs": service.started.elapsed().as_secs_f64(),
        "ready": readiness.ready,
        "reasons": readiness.reasons,
        "breaker": format!("{:?}", service.breaker()),
        "stages": stages,
        "edges": edges,
        "accepted": { "interactive": load(&c.accepted[0]), "batch": load(&c.accepted[1]) },
        "full": { "interactive": load(&c.full[0]), "batch": load(&c.full[1]) },
        "breaker_open": load(&c.breaker_open),
        "shutting_down": load(&c.closing),
        "bad_requests": load(&c.malformed) + load(&c.invalid) + load(&c.too_large),
        "replayed": load(&c.replayed),
        "rows": load(&c.rows),
        "latency": latency,
    })
}

/// The page: plain HTML, an SVG drawn by a few lines of script, no outside resources.
pub(crate) const HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flash sale: weir pipeline</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
.stage rect { stroke: #333; rx: 6; }
.stage text { font-size: 12px; text-anchor: middle; }
.edge line { stroke: #666; stroke-width: 2; marker-end: url(#arrow); }
.edge text { font-size: 11px; fill: #444; text-anchor: middle; }
table { border-collapse: collapse; margin-top: 1em; }
td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #ddd; }
th { text-align: left; }
#ready.no { color: #b00; } #ready.yes { color: #070; }
</style></head>
<body>
<h1>flash sale <small id="updated"></small></h1>
<p>ready: <b id="ready">?</b> <span id="reasons"></span> &middot; payment breaker: <b id="breaker">?</b></p>
<svg id="graph" width="1000" height="260" role="img" aria-label="pipeline graph">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto">
<path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>
<g id="edges"></g><g id="stages"></g></svg>
<table id="figures"></table>
<script>
const W = 150, H = 54, GAP_X = 40, GAP_Y = 30;
function colour(p) { // green -> yellow -> red by pressure 0..1
  const r = Math.round(Math.min(1, 2 * p) * 230), g = Math.round(Math.min(1, 2 * (1 - p)) * 200);
  return `rgb(${r},${g},90)`;
}
function layout(state) { // column = longest path from a stage without inputs
  const col = {}; state.stages.forEach(s => col[s.name] = 0);
  for (let i = 0; i < state.stages.length; i++)
    state.edges.forEach(e => { col[e.to] = Math.max(col[e.to], col[e.from] + 1); });
  const rows = {}, pos = {};
  state.stages.forEach(s => { const c = col[s.name]; rows[c] = (rows[c] || 0);
    pos[s.name] = { x: 10 + c * (W + GAP_X), y: 10 + rows[c] * (H + GAP_Y) }; rows[c]++; });
  return pos;
}
function el(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function draw(state) {
  const pos = layout(state), edges = document.getElementById("edges"), stages = document.getElementById("stages");
  edges.replaceChildren(); stages.replaceChildren();
  let width = 0, height = 0;
  state.edges.forEach(e => {
    const a = pos[e.from], b = pos[e.to]; if (!a || !b) return;
    const g = el("g", { class: "edge" });
    g.appendChild(el("line", { x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2 }));
    if (e.capacity > 0) g.appendChild(el("text", { x: (a.x + W + b.x) / 2, y: (a.y + b.y + H) / 2 - 4 }, `${e.depth}/${e.capacity}`));
    edges.appendChild(g);
  });
  state.stages.forEach(s => {
    const p = pos[s.name], g = el("g", { class: "stage", "data-name": s.name });
    g.appendChild(el("rect", { x: p.x, y: p.y, width: W, height: H, fill: colour(s.pressure) }));
    g.appendChild(el("text", { x: p.x + W / 2, y: p.y + 18 }, s.name));
    let detail = `${s.per_sec}/s`;
    if (s.capacity > 0) detail += ` · ${s.depth}/${s.capacity}`;
    if (s.disk_bytes > 0) detail += ` · ${(s.disk_bytes / 1048576).toFixed(1)} MiB disk`;
    g.appendChild(el("text", { x: p.x + W / 2, y: p.y + 38 }, detail));
    stages.appendChild(g);
    width = Math.max(width, p.x + W + 10); height = Math.max(height, p.y + H + 10);
  });
  const svg = document.getElementById("graph"); svg.setAttribute("width", width); svg.setAttribute("height", height);
  const ready = document.getElementById("ready");
  ready.textContent = state.ready ? "yes" : "no"; ready.className = state.ready ? "yes" : "no";
  document.getElementById("reasons").textContent = state.reasons.join("; ");
  document.getElementById("breaker").textContent = state.breaker;
  const ms = v => v === null ? "-" : v.toFixed(1) + " ms";
  const rows = [
    ["accepted (202)", state.accepted.interactive, state.accepted.batch],
    ["refused: full (429)", state.full.interactive, state.full.batch],
    ["refused: breaker open (503)", state.breaker_open, ""],
    ["refused: shutting down (503)", state.shutting_down, ""],
    ["bad requests (400/413)", state.bad_requests, ""],
    ["replayed from an earlier run", state.replayed, ""],
    ["rows in the database", state.rows, ""],
    ["latency p50", ms(state.latency.interactive.p50_ms), ms(state.latency.batch.p50_ms)],
    ["latency p99", ms(state.latency.interactive.p99_ms), ms(state.latency.batch.p99_ms)],
  ];
  document.getElementById("figures").innerHTML = "<tr><th></th><th>interactive</th><th>batch</th></tr>" +
    rows.map(r => `<tr><th>${r[0]}</th><td>${r[1]}</td><td>${r[2]}</td></tr>`).join("");
  document.getElementById("updated").textContent = `${state.uptime_secs.toFixed(0)} s`;
}
async function refresh() {
  try { const r = await fetch("/api/state"); if (r.ok) draw(await r.json()); } catch (e) {}
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"##;
