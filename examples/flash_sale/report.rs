//! The report the service prints at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::load::LoadReport;
use crate::order::Lane;
use crate::service::{Service, Shutdown};
use crate::stats::peak_rss;

/// The p99 a checkout may take from 202 to the database while imports saturate their lane.
pub(crate) const INTERACTIVE_P99_BUDGET: Duration = Duration::from_secs(2);

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The report; returns whether the run kept its promise (nothing lost, the books balanced).
pub(crate) fn print(service: &Service, shutdown: &Shutdown, load: Option<&LoadReport>) -> bool {
    let c = &service.shared.counts;
    let mut kept_by_client = true;
    let snapshot = &shutdown.snapshot;
    let ledger = snapshot.ledger();
    let accepted = get(&c.accepted[0]) + get(&c.accepted[1]);
    let rows = service.db.rows().unwrap_or_else(|error| {
        eprintln!("flash_sale: cannot count the rows: {error}");
        u64::MAX
    });
    // Rows this run added (a restarted service's table may hold an earlier run's rows).
    let added = get(&c.rows);
    let duplicates = get(&c.duplicates);
    let log = |lane: &str| snapshot.stage(lane).and_then(|s| s.spill.clone());
    let (written, written_bytes, fsyncs) = ["checkout", "import"]
        .iter()
        .filter_map(|lane| log(lane))
        .fold((0, 0, 0), |(r, b, f), s| {
            (r + s.spilled_records, b + s.spilled_bytes, f + s.fsyncs)
        });
    let replayed = get(&c.replayed);
    println!();
    println!("=== flash sale report ===");
    if let Some(load) = load {
        println!(
            "offered        {:>9} orders (+{} bad requests on purpose)",
            load.offered, load.bad_sent
        );
        println!(
            "client         {:>9} accepted, {} gave up, {} retries after Retry-After, {} not sent (client busy)",
            load.accepted, load.gave_up, load.retries, load.client_overflow
        );
        let statuses: Vec<String> = load
            .responses
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        println!("responses      {}", statuses.join(", "));
        let missing = load
            .accepted_keys
            .iter()
            .filter(|key| !service.db.contains(key).unwrap_or(false))
            .count();
        println!(
            "               every order the client got a 202 for is in the database: {}",
            if missing == 0 {
                "yes".to_owned()
            } else {
                format!("NO, {missing} missing")
            }
        );
        if missing > 0 {
            kept_by_client = false;
        }
        if load.missing_retry_after > 0 || load.transport_errors > 0 {
            println!(
                "               {} refusals without Retry-After, {} transport errors",
                load.missing_retry_after, load.transport_errors
            );
        }
    }
    println!(
        "accepted (202) {:>9} orders: {} checkout, {} import",
        accepted,
        get(&c.accepted[0]),
        get(&c.accepted[1])
    );
    println!(
        "refused        {:>9} full (429: {} checkout, {} import), {} breaker open (503), {} shutting down (503), {} log failed (503)",
        get(&c.full[0]) + get(&c.full[1]),
        get(&c.full[0]),
        get(&c.full[1]),
        get(&c.breaker_open),
        get(&c.closing),
        get(&c.store_failed)
    );
    println!(
        "bad requests   {:>9} malformed (400), {} invalid (400), {} too large (413)",
        get(&c.malformed),
        get(&c.invalid),
        get(&c.too_large)
    );
    println!(
        "on disk        {:>9} orders written to the lanes' logs ({:.1} MiB) in {} fsyncs ({:.1} orders per fsync); {} replayed from an earlier run",
        written,
        written_bytes as f64 / (1 << 20) as f64,
        fsyncs,
        written as f64 / fsyncs.max(1) as f64,
        replayed
    );
    println!(
        "payments       {:>9} authorised, {} declined after retries",
        get(&c.authorised),
        get(&c.declined)
    );
    println!(
        "database       {:>9} rows added ({} in the table), {} duplicate keys",
        added, rows, duplicates
    );
    let lost = accepted as i128 + replayed as i128 - added as i128 - duplicates as i128;
    println!(
        "lost           {:>9} (accepted + replayed - rows added - duplicates)",
        lost
    );
    for lane in Lane::ALL {
        let h = &service.shared.latency[lane.index()];
        let ms = |q| {
            h.quantile(q).map_or("-".to_owned(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
        };
        println!(
            "latency {:<11} p50 {:>10}  p99 {:>10}  (202 to commit, {} orders)",
            lane.name(),
            ms(0.5),
            ms(0.99),
            h.count()
        );
    }
    println!("pipeline       {}", ledger);
    match &shutdown.result {
        Ok(()) => println!("shutdown       drained"),
        Err(error) => println!("shutdown       {error}"),
    }
    if let Some(peak) = peak_rss() {
        println!("peak RSS       {:>9.1} MiB", peak as f64 / (1 << 20) as f64);
    }
    let interactive_p99 = service.shared.latency[Lane::Interactive.index()].quantile(0.99);
    if !service.settings.backpressure {
        println!();
        println!(
            "--no-backpressure: every order got a 202 at once and waited in memory; {lost} of them \
             were still queued when the drain deadline passed (the ledger shows them held) and die \
             with the process, and the stored ones waited {} at p99. With backpressure the service \
             answers 429 instead, and every 202 is on disk first.",
            service.shared.latency[Lane::Interactive.index()]
                .quantile(0.99)
                .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
        return ledger.balances();
    }
    let mut kept = kept_by_client;
    if lost != 0 {
        println!("FAILED: {lost} accepted orders did not reach the database");
        kept = false;
    }
    if !ledger.balances() {
        println!("FAILED: the pipeline's books do not balance");
        kept = false;
    }
    if let Some(p99) = interactive_p99
        && p99 > INTERACTIVE_P99_BUDGET
    {
        println!("note: the checkout p99 {p99:?} is over its budget of {INTERACTIVE_P99_BUDGET:?}");
    }
    kept
}
