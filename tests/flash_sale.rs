//! The flash-sale service in-process: a random loopback port, a temporary database and spill
//! directory, five times its capacity offered for a few seconds by the example's own open-loop
//! client. Every response is one the service promises, every refusal carries `Retry-After`, the
//! database holds exactly the accepted orders, the checkout lane stays fast while imports queue up,
//! readiness goes false and comes back, `/metrics` is valid Prometheus text, bad requests are
//! refused and counted, and the live page renders in a real headless browser.

#![allow(dead_code, unreachable_pub)]

#[path = "../examples/flash_sale/db.rs"]
mod db;
#[path = "../examples/flash_sale/http.rs"]
mod http;
#[path = "../examples/flash_sale/load.rs"]
mod load;
#[path = "../examples/flash_sale/order.rs"]
mod order;
#[path = "../examples/flash_sale/page.rs"]
mod page;
#[path = "../examples/flash_sale/service.rs"]
mod service;
#[path = "../examples/flash_sale/stats.rs"]
mod stats;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;

use load::LoadSettings;
use order::Lane;
use service::{Service, Settings};

const STAGES: [&str; 6] = [
    "checkout",
    "import",
    "lanes",
    "authorise",
    "batch",
    "database",
];

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.expect("the service answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Whether `tool` is on the PATH (some tools, such as hey, have no `--version`).
fn required(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install `{tool}` (see .ci/run)"
        );
        eprintln!("skipping the `{tool}` check: not installed");
    }
    found
}

/// The page as a headless Chromium renders it after its script ran for a while.
fn rendered_page(addr: SocketAddr) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn updated(dom: &str) -> String {
    let start =
        dom.find("id=\"updated\">").expect("the page shows its age") + "id=\"updated\">".len();
    dom[start..start + dom[start..].find('<').unwrap()].to_owned()
}

#[test]
fn flash_sale_keeps_every_accepted_order_under_five_times_its_capacity() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(data.path().to_owned());
        settings.capacity = 500;
        settings.checkout_capacity = 64;
        settings.recovery_budget = Duration::from_millis(500);
        let service = Service::start(settings).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = http::router(service.clone(), prometheus);
        let server = tokio::spawn(async move { axum::serve(listener, router).await });

        // Bad requests: refused with a JSON error, counted, nothing panics.
        let (status, _, body) =
            request(addr, Method::POST, "/checkout", b"{\"key\": ".to_vec()).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("\"reason\":\"malformed\""), "{body}");
        let (status, _, body) = request(
            addr,
            Method::POST,
            "/checkout",
            br#"{"key":"k","customer":"c","sku":"s","cents":1}"#.to_vec(),
        )
        .await;
        assert_eq!(status, 400);
        assert!(
            body.contains("quantity") && body.contains("\"reason\":\"invalid\""),
            "{body}"
        );
        let (status, _, body) = request(
            addr,
            Method::POST,
            "/checkout",
            br#"{"key":"","customer":"c","sku":"s","quantity":1,"cents":1}"#.to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, _, body) = request(
            addr,
            Method::POST,
            "/checkout",
            vec![b' '; http::CHECKOUT_LIMIT + 1],
        )
        .await;
        assert_eq!(status, 413, "{body}");
        let (status, _, _) = request(addr, Method::POST, "/import", b"[]".to_vec()).await;
        assert_eq!(status, 400);
        let counts = &service.shared.counts;
        assert_eq!(counts.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(counts.invalid.load(Ordering::Relaxed), 3);
        assert_eq!(counts.too_large.load(Ordering::Relaxed), 1);
        let (status, _, _) = request(addr, Method::GET, "/health/live", Vec::new()).await;
        assert_eq!(status, 200);
        let (status, _, body) = request(addr, Method::GET, "/health/ready", Vec::new()).await;
        assert_eq!(status, 200, "{body}");

        // Watch readiness while the load runs and after.
        let watching = Arc::new(AtomicBool::new(true));
        let (went_false, came_back) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let watcher = {
            let (watching, went_false, came_back) =
                (watching.clone(), went_false.clone(), came_back.clone());
            tokio::spawn(async move {
                while watching.load(Ordering::Relaxed) {
                    let (status, _, _) =
                        request(addr, Method::GET, "/health/ready", Vec::new()).await;
                    if status == 503 {
                        went_false.store(true, Ordering::Relaxed);
                    } else if status == 200 && went_false.load(Ordering::Relaxed) {
                        came_back.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let settings = LoadSettings {
            rate: 2_500,
            duration: Duration::from_secs(4),
            import_share: 0.3,
            bad_every: 50,
            key_prefix: "test".to_owned(),
        };
        let report = load::run(addr, settings).await;
        let import_backlog = service
            .snapshot()
            .stage("import")
            .and_then(|s| s.buffer.as_ref())
            .map_or(0, |b| b.counters.depth);

        // The page in a real browser: every stage drawn, and the figures move.
        if required("chromium") {
            let first = rendered_page(addr);
            for stage in STAGES {
                assert!(
                    first.contains(&format!("data-name=\"{stage}\"")),
                    "stage {stage} missing from the page"
                );
            }
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let second = rendered_page(addr);
            assert_ne!(updated(&first), updated(&second), "the page did not update");
        }

        // An outside load tool that ignores Retry-After (every request the same order: the
        // database stores it once): the service answers only what it promises and stays up.
        if required("hey") {
            let order = r#"{"key":"hey-1","customer":"c","sku":"s","quantity":1,"cents":100}"#;
            let url = format!("http://{addr}/checkout");
            let hey = tokio::task::spawn_blocking(move || {
                Command::new("hey")
                    .args([
                        "-z",
                        "2s",
                        "-c",
                        "64",
                        "-m",
                        "POST",
                        "-T",
                        "application/json",
                    ])
                    .args(["-d", order, &url])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let summary = String::from_utf8_lossy(&hey.stdout).into_owned();
            assert!(hey.status.success(), "hey: {summary}");
            let statuses: Vec<(u16, u64)> = summary
                .lines()
                .filter_map(|line| {
                    let line = line.trim().strip_prefix('[')?;
                    let (status, rest) = line.split_once(']')?;
                    Some((
                        status.parse().ok()?,
                        rest.split_whitespace().next()?.parse().ok()?,
                    ))
                })
                .collect();
            assert!(!statuses.is_empty(), "no status distribution: {summary}");
            for (status, _) in &statuses {
                assert!(
                    [202, 429, 503].contains(status),
                    "hey got {status}: {summary}"
                );
            }
            assert!(
                statuses.iter().any(|&(status, n)| status == 429 && n > 0),
                "hey never hit a full lane: {summary}"
            );
            let (status, _, _) = request(addr, Method::GET, "/health/live", Vec::new()).await;
            assert_eq!(status, 200);
        }

        // Readiness comes back once the backlog drains.
        for _ in 0..300 {
            if came_back.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watching.store(false, Ordering::Relaxed);
        watcher.await.unwrap();
        assert!(
            went_false.load(Ordering::Relaxed),
            "readiness never went false under 5x load"
        );
        assert!(
            came_back.load(Ordering::Relaxed),
            "readiness did not come back after the load"
        );

        // Valid Prometheus text with the pipeline's and the service's series.
        let (status, _, scrape) = request(addr, Method::GET, "/metrics", Vec::new()).await;
        assert_eq!(status, 200);
        assert!(
            scrape.contains("weir_stage_offered_total")
                && scrape.contains("flash_sale_orders_total"),
            "{scrape}"
        );
        if required("promtool") {
            let file = data.path().join("scrape.txt");
            std::fs::write(&file, &scrape).unwrap();
            let check = Command::new("sh")
                .arg("-c")
                .arg(format!("promtool check metrics < {}", file.display()))
                .output()
                .unwrap();
            let problems = String::from_utf8_lossy(&check.stdout).into_owned()
                + &String::from_utf8_lossy(&check.stderr);
            assert!(check.status.success(), "promtool: {problems}");
        }

        let shutdown = service.shutdown(Duration::from_secs(60)).await;
        shutdown.result.expect("the pipeline drains");
        let (status, retry_after, _) = request(
            addr,
            Method::POST,
            "/checkout",
            br#"{"key":"late","customer":"c","sku":"s","quantity":1,"cents":1}"#.to_vec(),
        )
        .await;
        assert_eq!(
            (status, retry_after.is_some()),
            (503, true),
            "refused while shutting down"
        );
        server.abort();

        for status in report.responses.keys() {
            assert!(
                [202, 400, 413, 429, 503].contains(status),
                "unexpected status {status}: {:?}",
                report.responses
            );
        }
        assert!(
            report.responses.get(&429).copied().unwrap_or(0) > 0,
            "5x load never hit a full lane: {:?}",
            report.responses
        );
        assert_eq!(
            report.missing_retry_after, 0,
            "a 429/503 without Retry-After"
        );
        assert_eq!(report.transport_errors, 0);
        assert!(
            report.responses.get(&400).copied().unwrap_or(0) > 0
                && report.responses.get(&413).copied().unwrap_or(0) > 0
        );

        // Exactly the accepted orders are in the database: none lost, none doubled.
        let accepted: u64 = Lane::ALL
            .iter()
            .map(|lane| counts.accepted[lane.index()].load(Ordering::Relaxed))
            .sum();
        let rows = service.db.rows().unwrap();
        let duplicates = counts.duplicates.load(Ordering::Relaxed);
        assert_eq!(
            rows + duplicates,
            accepted,
            "rows in SQLite + repeated keys = accepted orders"
        );
        let hey_accepted = accepted - report.accepted;
        assert_eq!(
            duplicates + 1,
            hey_accepted.max(1),
            "hey's orders stored once"
        );
        for key in &report.accepted_keys {
            assert!(
                service.db.contains(key).unwrap(),
                "order {key} got a 202 but is not stored"
            );
        }
        assert!(
            import_backlog > 0,
            "the import lane had no backlog when the load ended: it was not saturated"
        );
        let ledger = shutdown.snapshot.ledger();
        assert!(ledger.balances(), "{ledger}");

        // Checkouts stay within their budget while the import lane is saturated.
        let p99 = service.shared.latency[Lane::Interactive.index()]
            .quantile(0.99)
            .unwrap();
        assert!(p99 < Duration::from_secs(2), "checkout p99 {p99:?}");
    });
}
