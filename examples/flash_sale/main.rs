//! An order service that survives a flash sale: checkouts and bulk imports over HTTP into one weir
//! pipeline (priority lanes -> payment behind a circuit breaker -> batches -> SQLite), driven at
//! five times its capacity by a built-in open-loop load generator.
//!
//! ```text
//! cargo run --release --example flash_sale                     # ~20 s run, then the report
//! cargo run --release --example flash_sale -- --serve --port 8080   # serve until Ctrl-C
//! wrk -t2 -c64 -d10s -s post.lua http://127.0.0.1:8080/checkout     # an outside load tool
//! ```
//!
//! Open `http://127.0.0.1:PORT/` while it runs for the live pipeline graph. Flags: `--port N`
//! (default 0: any free port), `--capacity ORDERS_PER_S` (2000), `--load ORDERS_PER_S` (5x the
//! capacity), `--duration SECONDS` (12), `--data DIR` (default: a temporary directory), `--serve`
//! (no built-in load: run until Ctrl-C), `--no-backpressure` (the failure mode: lanes that queue
//! in memory without bound and answer 202 at once; the run stops at `--memory-cap MIB`, 1024, and
//! the shutdown shows what happens to orders held only in memory). Exits non-zero when an accepted
//! order did not reach the database or the pipeline's books do not balance (except with
//! `--no-backpressure`, whose report shows the loss on purpose).

mod db;
mod http;
mod load;
mod order;
mod page;
mod report;
mod service;
mod stats;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::load::LoadSettings;
use crate::service::{Service, Settings};

struct Options {
    port: u16,
    capacity: u64,
    load: Option<u64>,
    duration: Duration,
    data: Option<PathBuf>,
    serve: bool,
    backpressure: bool,
    memory_cap_mib: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        port: 0,
        capacity: 2_000,
        load: None,
        duration: Duration::from_secs(12),
        data: None,
        serve: false,
        backpressure: true,
        memory_cap_mib: 1_024,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| -> Result<u64, String> {
            text.parse()
                .map_err(|_| format!("{flag}: `{text}` is not a whole number"))
        };
        match flag.as_str() {
            "--port" => {
                options.port = u16::try_from(number(value()?)?)
                    .map_err(|_| "--port: at most 65535".to_owned())?
            }
            "--capacity" => options.capacity = number(value()?)?.max(1),
            "--load" => options.load = Some(number(value()?)?),
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            "--data" => options.data = Some(PathBuf::from(value()?)),
            "--serve" => options.serve = true,
            "--no-backpressure" => options.backpressure = false,
            "--memory-cap" => options.memory_cap_mib = number(value()?)?.max(64),
            "--help" | "-h" => {
                return Err(
                    "flags: --port N --capacity N --load N --duration S --data DIR --serve \
                     --no-backpressure --memory-cap MIB"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("flash_sale: {message}");
            return ExitCode::from(2);
        }
    };
    let prometheus = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("flash_sale: cannot install the metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The data directory: the one given (kept, so a restart replays what was accepted and not stored), or a
    // temporary one removed at the end.
    let temporary = match &options.data {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(dir) => Some(dir),
            Err(error) => {
                eprintln!("flash_sale: cannot create a temporary directory: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let data_dir = options
        .data
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("made above").path().to_owned());
    let mut settings = Settings::new(data_dir);
    settings.capacity = options.capacity;
    settings.backpressure = options.backpressure;
    if !options.serve {
        // The payment provider fails most calls for 2 s in the middle of the run.
        let middle = options.duration / 2;
        settings.failure_burst = Some((
            middle.saturating_sub(Duration::from_secs(1)),
            middle + Duration::from_secs(1),
        ));
    }
    let service = match Service::start(settings) {
        Ok(service) => service,
        Err(error) => {
            eprintln!("flash_sale: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port))).await
        {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "flash_sale: cannot listen on 127.0.0.1:{}: {error}",
                    options.port
                );
                return ExitCode::FAILURE;
            }
        };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = http::router(service.clone(), prometheus);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .await
    });
    println!(
        "flash_sale: serving http://{addr}/ (data in {})",
        service.settings.data_dir.display()
    );

    let progress = tokio::spawn(view::progress(service.clone()));
    let load = if options.serve {
        println!("flash_sale: no built-in load; Ctrl-C stops accepting, drains and reports");
        let _ = tokio::signal::ctrl_c().await;
        None
    } else {
        let rate = options.load.unwrap_or(options.capacity * 5);
        println!(
            "flash_sale: offering {rate} orders/s for {} s (capacity {} orders/s)",
            options.duration.as_secs(),
            options.capacity
        );
        let settings = LoadSettings {
            rate,
            duration: options.duration,
            import_share: 0.15,
            bad_every: 200,
            key_prefix: format!("run{}", order::unix_micros()),
        };
        let cap = options.memory_cap_mib << 20;
        tokio::select! {
            report = load::run(addr, settings) => Some(report),
            _ = tokio::signal::ctrl_c() => {
                println!("flash_sale: Ctrl-C: stopping");
                None
            }
            rss = memory_reaches(cap) => {
                println!("flash_sale: resident memory reached {} MiB (cap {} MiB): stopping", rss >> 20, cap >> 20);
                None
            }
        }
    };
    // Ctrl-C (again) while draining aborts: what is still held is counted as cancelled.
    let abort = service.abort_handle();
    let second = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("flash_sale: Ctrl-C while draining: aborting");
            abort.abort();
        }
    });
    // Without backpressure the backlog would take minutes to drain: a short deadline shows what
    // a shutdown does to orders that were only in memory.
    let deadline = if options.backpressure {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(3)
    };
    let shutdown = service.shutdown(deadline).await;
    second.abort();
    progress.abort();
    let _ = stop_server.send(());
    let _ = server.await;
    let verdict = report::print(&service, &shutdown, load.as_ref());
    drop(temporary);
    if verdict {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Resolves once the process's resident memory reaches `cap` bytes (checked every 100 ms).
async fn memory_reaches(cap: u64) -> u64 {
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticks.tick().await;
        if let Some(rss) = stats::rss()
            && rss >= cap
        {
            return rss;
        }
    }
}
