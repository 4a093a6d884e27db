//! A 202 survives a SIGKILL: the flash-sale service (the example's binary, built by `cargo test`)
//! is killed mid-run with orders accepted and not yet stored, then restarted on the same data
//! directory; once it has drained, every order that got a 202 is in the database (the ones that
//! were not stored yet replayed from the lanes' logs).

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

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use load::LoadSettings;

/// The example's binary next to this test's (`target/<profile>/examples/flash_sale`).
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let binary = profile.join("examples").join("flash_sale");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --example flash_sale`)",
        binary.display()
    );
    binary
}

/// Starts the service on `data` (any free port); its address, and its output read to the end.
fn start(data: &Path) -> (Child, SocketAddr, std::thread::JoinHandle<String>) {
    let mut child = Command::new(example())
        .args(["--serve", "--port", "0", "--capacity", "300", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the service ended early: {seen}"
        );
        seen.push_str(&line);
        if let Some(rest) = line.strip_prefix("flash_sale: serving http://") {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    let rest = std::thread::spawn(move || {
        let mut text = seen;
        let _ = out.read_to_string(&mut text);
        text
    });
    (child, addr, rest)
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the service did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_accepted_order_is_stored_after_a_sigkill_and_a_restart() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();

    // Five times the capacity for 3 s; the kill comes after 1.5 s, with a backlog accepted.
    let (mut first, addr, _) = start(data.path());
    let report = runtime.block_on(async {
        let settings = LoadSettings {
            rate: 1_500,
            duration: Duration::from_secs(3),
            import_share: 0.3,
            bad_every: 0,
            key_prefix: "kill".to_owned(),
        };
        let load = tokio::spawn(load::run(addr, settings));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        first.kill().unwrap(); // SIGKILL
        load.await.unwrap()
    });
    first.wait().unwrap();
    assert!(
        report.accepted > 100,
        "too few orders accepted before the kill: {report:?}"
    );

    // The restart replays what was accepted and not stored; Ctrl-C drains it and reports.
    let (mut second, _, output) = start(data.path());
    std::thread::sleep(Duration::from_millis(500));
    let interrupted = Command::new("kill")
        .args(["-INT", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = wait(&mut second, Duration::from_secs(120));
    let output = output.join().unwrap();
    assert!(status.success(), "the restarted service failed: {output}");
    let replayed: u64 = output
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("fsync); ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no replay count in the report: {output}"));
    assert!(replayed > 0, "nothing was pending at the kill: {output}");

    let db = db::Database::open(&data.path().join("orders.db")).unwrap();
    let missing: Vec<&String> = report
        .accepted_keys
        .iter()
        .filter(|key| !db.contains(key).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} orders that got a 202 are not in the database (first: {:?})",
        missing.len(),
        report.accepted_keys.len(),
        missing.first()
    );
}
