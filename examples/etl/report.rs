//! The summary at the end: every count, the pipeline's books, throughput and peak memory, and
//! whether it all adds up.

use weir::runtime::ledger::Reason;

use crate::generate::Generated;
use crate::pipeline::{Outcome, Settings};
use crate::row::Defect;

/// The process's peak resident memory in bytes (Linux `VmHWM`), if known.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What a generated input promised, checked against what the run counted (empty: as promised).
pub(crate) fn against_generated(outcome: &Outcome, generated: &Generated) -> Vec<String> {
    let t = &outcome.totals;
    let mut problems = Vec::new();
    for (what, expected, counted) in [
        ("rows", generated.rows, t.read),
        ("bad rows", generated.bad, t.bad()),
        (
            "near duplicates (window)",
            generated.near,
            t.window_duplicates,
        ),
        ("far duplicates (database)", generated.far, t.db_duplicates),
        ("new orders (rows written)", generated.fresh, t.db_rows),
    ] {
        if expected != counted {
            problems.push(format!("{what}: generated {expected}, counted {counted}"));
        }
    }
    problems
}

/// Prints the summary; returns whether the run kept its promise (it finished, every count adds
/// up, the generated input's counts are matched, the pipeline's books balance).
pub(crate) fn print(outcome: &Outcome, settings: &Settings, generated: Option<&Generated>) -> bool {
    let t = &outcome.totals;
    let ledger = outcome.snapshot.ledger();
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    println!();
    println!("=== etl summary ===");
    println!(
        "input          {} ({:.1} MiB)",
        settings.input.display(),
        t.bytes as f64 / (1 << 20) as f64
    );
    println!("rows read      {:>10}", t.read);
    let by_defect: Vec<String> = Defect::ALL
        .iter()
        .zip(t.bad_by_defect)
        .filter(|(_, n)| *n > 0)
        .map(|(defect, n)| format!("{} {n}", defect.as_str()))
        .collect();
    println!(
        "bad            {:>10}  -> {} ({})",
        t.bad(),
        settings.dead_letter_path().display(),
        if by_defect.is_empty() {
            "none".to_owned()
        } else {
            by_defect.join(", ")
        }
    );
    println!(
        "duplicates     {:>10}  in the dedupe window ({} ids)",
        t.window_duplicates, settings.window
    );
    println!(
        "written        {:>10}  rows to SQLite {} in {} batches ({} in the table)",
        t.db_rows,
        settings.database_path().display(),
        t.batches,
        t.table_rows
    );
    println!(
        "duplicates     {:>10}  caught by the database's primary key",
        t.db_duplicates
    );
    println!(
        "check          {:>10} = bad {} + window duplicates {} + written {} + database duplicates {}",
        t.read,
        t.bad(),
        t.window_duplicates,
        t.db_rows,
        t.db_duplicates
    );
    println!(
        "JSONL          {:>10}  lines in {} files under {} ({} rows a file)",
        t.jsonl_lines,
        t.jsonl_files.len(),
        settings.jsonl_dir().display(),
        settings.rows_per_file
    );
    if let Some(generated) = generated {
        println!(
            "generated      {:>10}  rows: {} new, {} bad, {} near duplicates, {} far duplicates",
            generated.rows, generated.fresh, generated.bad, generated.near, generated.far
        );
    }
    println!("pipeline       {ledger}");
    let dedupe_ledger = outcome
        .snapshot
        .stage("dedupe")
        .map_or(0, |s| s.ledger.by_reason[Reason::Duplicate]);
    println!(
        "time           {:>10.2} s, {:.0} rows/s, {:.1} MiB/s",
        secs,
        t.read as f64 / secs,
        t.bytes as f64 / (1 << 20) as f64 / secs
    );
    if let Some(peak) = peak_rss() {
        println!(
            "peak RSS       {:>10.1} MiB",
            peak as f64 / (1 << 20) as f64
        );
    }
    let mut kept = true;
    if let Err(error) = &outcome.result {
        println!("FAILED: {error}");
        kept = false;
    }
    let mut problems = t.problems();
    if dedupe_ledger != t.window_duplicates {
        problems.push(format!(
            "the dedupe stage's ledger counts {dedupe_ledger} duplicates, its operator {}",
            t.window_duplicates
        ));
    }
    if let Some(generated) = generated {
        problems.extend(against_generated(outcome, generated));
    }
    for problem in &problems {
        println!("FAILED: {problem}");
    }
    if !problems.is_empty() {
        kept = false;
    }
    if !ledger.balances() {
        println!("FAILED: the pipeline's books do not balance");
        kept = false;
    }
    if kept {
        println!("every count adds up");
    }
    kept
}
