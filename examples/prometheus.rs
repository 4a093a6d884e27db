//! A pipeline's counters through the Prometheus exporter (`metrics-exporter-prometheus`).
//!
//! ```text
//! cargo run --example prometheus                                  # prints the scrape at the end
//! cargo run --example prometheus -- --listen 127.0.0.1:9000 --seconds 60
//! curl -s 127.0.0.1:9000/metrics | grep '^weir_'                  # while it runs
//! ```
//!
//! weir records through the `metrics` facade (names and labels: `weir::dsl::export`), so the
//! exporter is the application's choice; this one serves HTTP or renders text. The pipeline is
//! overloaded on purpose: orders arrive faster than the slow partition drains, so the ingress
//! rejects, readiness fails and `weir_buffer_rejected_total{reason="full"}` climbs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use weir::prelude::*;

struct Options {
    listen: Option<SocketAddr>,
    seconds: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        listen: None,
        seconds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let value = value()?;
                let addr = value.parse().map_err(|_| {
                    format!("--listen: `{value}` is not an address like 127.0.0.1:9000")
                })?;
                options.listen = Some(addr);
            }
            "--seconds" => {
                let value = value()?;
                options.seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds: `{value}` is not a whole number"))?;
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` (--listen ADDR, --seconds N)"
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
            eprintln!("prometheus: {message}");
            return ExitCode::from(2);
        }
    };
    let builder = PrometheusBuilder::new();
    let prometheus = match options.listen {
        Some(addr) => {
            let builder = builder.with_http_listener(addr);
            match builder.build() {
                Ok((recorder, exporter)) => {
                    let handle = recorder.handle();
                    if let Err(error) = metrics::set_global_recorder(recorder) {
                        eprintln!("cannot install the recorder: {error}");
                        return ExitCode::FAILURE;
                    }
                    tokio::spawn(exporter);
                    println!("serving http://{addr}/metrics for {} s", options.seconds);
                    handle
                }
                Err(error) => {
                    eprintln!("cannot listen on {addr}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => match builder.install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                eprintln!("cannot install the recorder: {error}");
                return ExitCode::FAILURE;
            }
        },
    };

    let mut p = Pipeline::builder("orders");
    let (orders_in, orders) = p.ingress::<u64>(
        "orders",
        512,
        Overflow::Reject {
            retry_after: Duration::from_millis(20),
        },
    );
    let priced = p.stage("price", &orders, |ids| ids.map(|id| (id, id % 97)));
    let regions = p.partition("region", &priced, 2, 64, |(id, _): &(u64, u64)| id % 2);
    for (k, region) in regions.iter().enumerate() {
        let hop = p.boundary(&format!("hop{k}"), region, 128);
        // Region 1 is ten times slower than region 0: the partition waits for it.
        let per_item = Duration::from_micros(if k == 0 { 50 } else { 500 });
        p.sink_async(&format!("store{k}"), &hop, 4, move |_| {
            tokio::time::sleep(per_item)
        });
    }
    p.recovery_budget(Duration::from_millis(500));
    let mut running = match p.build() {
        Ok(pipeline) => pipeline.start().expect("inside a tokio runtime"),
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };

    let producer = tokio::spawn(async move {
        let mut id = 0u64;
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        loop {
            ticks.tick().await;
            // 40 orders per millisecond: more than the slow region drains.
            for _ in 0..40 {
                id += 1;
                if let Err(PushError::Closed { .. }) = orders_in.try_push(id) {
                    return;
                }
            }
        }
    });
    let until = tokio::time::Instant::now() + Duration::from_secs(options.seconds);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("{}", running.ready());
    }
    let outcome = running.drain(Duration::from_secs(10)).await;
    producer.abort();
    running.export_metrics();
    println!("--- scrape (weir_ series) ---");
    for line in prometheus.render().lines() {
        if line.starts_with("weir_") {
            println!("{line}");
        }
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
