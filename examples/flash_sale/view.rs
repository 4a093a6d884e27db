//! What the service shows while it runs: a live view when stdout is a terminal (a bar per lane
//! with its backlog, rates, p99, refusals, the breaker and readiness), one plain line a second
//! otherwise (logs, CI).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use weir::dsl::PipelineSnapshot;

use crate::order::Lane;
use crate::report::get;
use crate::service::Service;

/// One reading of the figures the views show.
struct Figures {
    accepted: u64,
    rows: u64,
    /// Per lane: backlog (accepted, not yet handed to payment), its bound, bytes on disk.
    depth: [u64; 2],
    capacity: [u64; 2],
    disk: [u64; 2],
    full: [u64; 2],
    unavailable: u64,
    p99_ms: [Option<f64>; 2],
    breaker: String,
    ready: String,
}

impl Figures {
    fn read(service: &Service) -> Self {
        let snapshot = service.snapshot();
        let c = &service.shared.counts;
        let buffer = |snapshot: &PipelineSnapshot, lane: Lane| {
            snapshot
                .stage(lane.stage())
                .and_then(|s| s.buffer.as_ref())
                .map_or((0, 0), |b| (b.counters.depth, b.counters.capacity))
        };
        let disk = |lane: Lane| {
            snapshot
                .stage(lane.stage())
                .and_then(|s| s.spill.as_ref())
                .map_or(0, |s| s.disk_bytes)
        };
        let ready = service.ready();
        let [(d0, c0), (d1, c1)] = Lane::ALL.map(|l| buffer(&snapshot, l));
        Self {
            accepted: get(&c.accepted[0]) + get(&c.accepted[1]),
            rows: get(&c.rows),
            depth: [d0, d1],
            capacity: [c0, c1],
            disk: Lane::ALL.map(disk),
            full: [get(&c.full[0]), get(&c.full[1])],
            unavailable: get(&c.breaker_open) + get(&c.closing) + get(&c.store_failed),
            p99_ms: Lane::ALL.map(|l| {
                service.shared.latency[l.index()]
                    .quantile(0.99)
                    .map(|d| d.as_secs_f64() * 1e3)
            }),
            breaker: format!("{:?}", service.breaker()),
            ready: if ready.ready {
                "ready".to_owned()
            } else {
                format!("NOT READY: {}", ready.reasons.join("; "))
            },
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn ms(p99: Option<f64>) -> String {
    p99.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"))
}

/// Shows the service's figures until it starts shutting down (then one line a second for the
/// drain): live when stdout is a terminal, plain lines otherwise.
pub(crate) async fn progress(service: Arc<Service>) {
    if std::io::stdout().is_terminal() {
        live(&service).await;
    }
    lines(&service).await;
}

/// The live view, until the service starts shutting down.
async fn live(service: &Service) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:32}] {pos:>7}/{len:<7} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bars = Lane::ALL.map(|lane| {
        multi.add(
            ProgressBar::new(1)
                .with_style(style.clone())
                .with_prefix(lane.stage()),
        )
    });
    let status = multi.add(ProgressBar::new_spinner());
    status.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let mut before = (0, 0, std::time::Instant::now());
    while !service.is_closing() {
        ticks.tick().await;
        let f = Figures::read(service);
        for lane in Lane::ALL {
            let k = lane.index();
            let bar = &bars[k];
            bar.set_length(f.capacity[k].max(1));
            bar.set_position(f.depth[k].min(f.capacity[k].max(1)));
            bar.set_message(format!(
                "p99 {:>8} | 429 {:>7} | disk {:>6.1} MiB",
                ms(f.p99_ms[k]),
                f.full[k],
                mib(f.disk[k])
            ));
        }
        let secs = before.2.elapsed().as_secs_f64().max(1e-3);
        status.set_message(format!(
            "accepted {:>6.0}/s stored {:>5.0}/s | 503 {:>6} | breaker {} | {}",
            (f.accepted - before.0) as f64 / secs,
            (f.rows - before.1) as f64 / secs,
            f.unavailable,
            f.breaker,
            f.ready
        ));
        status.tick();
        before = (f.accepted, f.rows, std::time::Instant::now());
    }
    let _ = multi.clear();
}

/// One plain line a second.
async fn lines(service: &Service) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let (mut accepted_before, mut rows_before) = (0, 0);
    loop {
        ticks.tick().await;
        let f = Figures::read(service);
        println!(
            "t={:>3.0}s accepted {:>6}/s stored {:>5}/s | checkout {:>4} import {:>6} (disk {:>6.1} MiB) | p99 {} / {} | 429 {:>7} 503 {:>6} | breaker {} | {}",
            service.started.elapsed().as_secs_f64(),
            f.accepted - accepted_before,
            f.rows - rows_before,
            f.depth[0],
            f.depth[1],
            mib(f.disk[0] + f.disk[1]),
            ms(f.p99_ms[0]),
            ms(f.p99_ms[1]),
            f.full[0] + f.full[1],
            f.unavailable,
            f.breaker,
            f.ready,
        );
        accepted_before = f.accepted;
        rows_before = f.rows;
    }
}
