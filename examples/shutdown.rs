//! Graceful shutdown: Ctrl-C drains the pipeline within a deadline; past the deadline (or on a
//! second Ctrl-C) it is aborted.
//!
//! ```text
//! cargo run --example shutdown                       # press Ctrl-C: drains, prints the accounting
//! cargo run --example shutdown -- --slow             # the sink is too slow: the deadline aborts
//! cargo run --example shutdown -- --deadline-ms 500
//! ```
//!
//! Producers push requests until the ingress closes; each refused push hands its item back. After
//! a drain, every request offered was either processed or handed back to its producer (the example
//! checks it and exits non-zero otherwise). After an abort, what was queued or in flight is dropped
//! and counted as `cancelled`. Either way the pipeline's books, read once it resolved, balance.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir::dsl::PipelineError;
use weir::prelude::*;
use weir::runtime::metrics::Reason;

struct Options {
    deadline: Duration,
    slow: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        deadline: Duration::from_secs(2),
        slow: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--deadline-ms" => {
                let value = args.next().ok_or("--deadline-ms needs a value")?;
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("--deadline-ms: `{value}` is not a whole number"))?;
                options.deadline = Duration::from_millis(ms);
            }
            "--slow" => options.slow = true,
            other => {
                return Err(format!(
                    "unknown option `{other}` (--deadline-ms N, --slow)"
                ));
            }
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("shutdown: {message}");
            return ExitCode::from(2);
        }
    };
    let per_item = if options.slow {
        Duration::from_millis(20)
    } else {
        Duration::from_micros(50)
    };

    let mut p = Pipeline::builder("requests");
    let (requests_in, requests) = p.ingress::<u64>(
        "requests",
        1_024,
        Overflow::Block {
            timeout: Duration::from_millis(50),
        },
    );
    let parsed = p.stage("parse", &requests, |ids| ids.map(|id| id * 2));
    let hop = p.boundary("hop", &parsed, 256);
    let processed = Arc::new(AtomicU64::new(0));
    let count = processed.clone();
    p.sink_async("store", &hop, 8, move |_| {
        let count = count.clone();
        async move {
            tokio::time::sleep(per_item).await;
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut running = match p.build() {
        Ok(pipeline) => pipeline.start().expect("inside a tokio runtime"),
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };

    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let handle = requests_in.clone();
            tokio::spawn(async move {
                let (mut offered, mut handed_back) = (0u64, 0u64);
                loop {
                    offered += 1;
                    match handle.push(producer << 48 | offered).await {
                        Ok(_) => {}
                        Err(error @ PushError::Closed { .. }) => {
                            let _request: u64 = error.into_inner();
                            handed_back += 1;
                            break;
                        }
                        Err(error) => {
                            // Timed out waiting for room: a real producer would retry or tell its
                            // client; here it just counts the request as handed back.
                            let _request: u64 = error.into_inner();
                            handed_back += 1;
                        }
                    }
                }
                (offered, handed_back)
            })
        })
        .collect();
    drop(requests_in);

    println!(
        "running; press Ctrl-C to drain (deadline {:?})",
        options.deadline
    );
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C: {error}");
        running.abort();
        return ExitCode::FAILURE;
    }
    println!("Ctrl-C: draining; Ctrl-C again aborts at once");
    let abort = running.abort_handle();
    let second = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            abort.abort();
        }
    });
    let outcome = running.drain(options.deadline).await;
    second.abort();

    let (mut offered, mut handed_back) = (0, 0);
    for producer in producers {
        let (o, h) = producer.await.expect("producers do not panic");
        offered += o;
        handed_back += h;
    }
    // Final once the pipeline resolved, drained or aborted: every stage has let go of what it
    // held and counted it.
    let processed = processed.load(Ordering::Relaxed);
    let books = running.snapshot().ledger();
    println!("offered {offered}, processed {processed}, handed back {handed_back}");
    println!("the pipeline's books: {books}");
    if !books.balances() {
        eprintln!("accounting broken: {} unaccounted", books.unaccounted());
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(()) => {
            println!("drained");
            if offered != processed + handed_back {
                eprintln!("accounting broken: {offered} != {processed} + {handed_back}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(PipelineError::DrainTimedOut { deadline, .. }) => {
            // Queued items (ingress, boundary) and the sink's calls in flight, dropped by the
            // abort, are counted as cancelled.
            println!(
                "not drained within {deadline:?}: aborted ({} cancelled, {} of them calls in flight)",
                books.cancelled,
                books.by_reason[Reason::CancelledInFlight]
            );
            ExitCode::SUCCESS
        }
        Err(PipelineError::Aborted { .. }) => {
            println!("aborted by a second Ctrl-C");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
