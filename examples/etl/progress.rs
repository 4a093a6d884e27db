//! Progress while the ETL runs: an indicatif bar (bytes of the input read, rows/s, ETA) when
//! stdout is a terminal, else one plain line a second (for logs and CI).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::pipeline::Counts;

/// Shows progress until [`Progress::stop`].
#[derive(Debug)]
pub(crate) struct Progress {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

/// The rate over the last interval, rows per second.
fn rate(rows: u64, before: u64, over: Duration) -> f64 {
    (rows.saturating_sub(before)) as f64 / over.as_secs_f64().max(1e-6)
}

impl Progress {
    /// Starts showing the progress of a run over an input of `total_bytes`.
    pub(crate) fn start(counts: Arc<Counts>, total_bytes: u64) -> Self {
        if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new(total_bytes);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(200));
                let (mut before, mut at) = (0, Instant::now());
                let mut shown_rate = 0.0;
                loop {
                    ticks.tick().await;
                    let rows = counts.read.lines.load(Ordering::Relaxed);
                    // Rows/s over about a second, so the number is readable.
                    if at.elapsed() >= Duration::from_secs(1) {
                        shown_rate = rate(rows, before, at.elapsed());
                        (before, at) = (rows, Instant::now());
                    }
                    shown.set_position(counts.read.bytes.load(Ordering::Relaxed));
                    shown.set_message(format!(
                        "{rows} rows, {shown_rate:.0} rows/s, {} written",
                        counts.db_rows.load(Ordering::Relaxed)
                    ));
                }
            });
            return Self {
                task,
                bar: Some(bar),
            };
        }
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            let (mut before, mut at) = (0, Instant::now());
            loop {
                ticks.tick().await;
                let rows = counts.read.lines.load(Ordering::Relaxed);
                let bytes = counts.read.bytes.load(Ordering::Relaxed);
                let done = bytes as f64 / total_bytes.max(1) as f64;
                let elapsed = started.elapsed().as_secs_f64();
                let eta = if done > 0.0 {
                    format!("{:.0}s", elapsed * (1.0 - done) / done)
                } else {
                    "-".to_owned()
                };
                println!(
                    "etl: t={elapsed:>4.0}s {:>5.1}% read {rows:>9} rows ({:>7.0} rows/s), {} bad, {} duplicates, {} written, ETA {eta}",
                    done * 100.0,
                    rate(rows, before, at.elapsed()),
                    counts.bad(),
                    counts.window_duplicates() + counts.db_duplicates.load(Ordering::Relaxed),
                    counts.db_rows.load(Ordering::Relaxed),
                );
                (before, at) = (rows, Instant::now());
            }
        });
        Self { task, bar: None }
    }

    /// Stops showing progress (the bar is cleared).
    pub(crate) fn stop(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
