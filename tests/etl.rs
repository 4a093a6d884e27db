//! The ETL example in-process: 100,000 generated orders with bad rows and duplicates near and
//! far go through the example's weir pipeline into a temporary directory, and every count is
//! checked exactly against what the generator planned for each line; the dead-letter file is read
//! back line by line (line number, reason, raw text), the JSONL output and the SQLite table are
//! counted. Hand-written inputs check the edge cases (blank, over-long, non-UTF-8, CRLF, no final
//! newline) and bad input is refused with a clear error.

#![allow(dead_code, unreachable_pub)]

#[path = "../examples/etl/generate.rs"]
mod generate;
#[path = "../examples/etl/lookup.rs"]
mod lookup;
#[path = "../examples/etl/output.rs"]
mod output;
#[path = "../examples/etl/pipeline.rs"]
mod pipeline;
#[path = "../examples/etl/reader.rs"]
mod reader;
#[path = "../examples/etl/report.rs"]
mod report;
#[path = "../examples/etl/row.rs"]
mod row;

use std::collections::HashSet;
use std::path::Path;

use weir::runtime::ledger::Reason;

use generate::{CUSTOMERS, Plan, Spec};
use lookup::Directory;
use pipeline::{Etl, Outcome, Settings, StartError};
use row::{Checked, Defect, MAX_LINE, RAW_KEPT};

const ROWS: u64 = 100_000;
const ROWS_PER_FILE: u64 = 30_000;

async fn run(settings: &Settings) -> Outcome {
    let etl = Etl::start(settings, Directory::start(CUSTOMERS)).expect("the ETL starts");
    etl.finish().await
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("every output line is JSON"))
        .collect()
}

#[test]
fn every_generated_line_checks_as_planned() {
    let spec = Spec {
        rows: 60_000,
        bad_share: 0.3,
        dup_share: 0.3,
        seed: 3,
    };
    let mut bytes = Vec::new();
    for index in 0..spec.rows {
        bytes.clear();
        generate::render(&spec, index, &mut bytes);
        let checked = row::check(row::Line {
            number: index + 1,
            bytes: bytes.clone(),
            too_long: None,
        });
        match (generate::plan(&spec, index), checked) {
            (Plan::Bad(defect), Checked::Invalid(letter)) => assert_eq!(letter.defect, defect),
            (Plan::Fresh, Checked::Valid(order)) => assert_eq!(order.id, index + 1),
            (Plan::Near { of } | Plan::Far { of }, Checked::Valid(order)) => {
                assert_eq!(order.id, of + 1);
                assert_eq!(generate::plan(&spec, of), Plan::Fresh);
            }
            (plan, checked) => panic!("line {index}: planned {plan:?}, checked {checked:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_rows_every_count_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        rows: ROWS,
        bad_share: 0.05,
        dup_share: 0.10,
        seed: 7,
    };
    let input = dir.path().join("input.jsonl");
    let generated = generate::write(&spec, &input).unwrap();

    // What the generator planned, line by line.
    let mut bad_lines = Vec::new();
    let (mut fresh, mut near, mut far) = (0, 0, 0);
    let mut bad_by_defect = [0u64; Defect::ALL.len()];
    for index in 0..ROWS {
        match generate::plan(&spec, index) {
            Plan::Fresh => fresh += 1,
            Plan::Bad(defect) => {
                bad_by_defect[defect.index()] += 1;
                bad_lines.push((index, defect));
            }
            Plan::Near { .. } => near += 1,
            Plan::Far { .. } => far += 1,
        }
    }
    assert_eq!(
        (
            generated.fresh,
            generated.bad,
            generated.near,
            generated.far
        ),
        (fresh, bad_lines.len() as u64, near, far)
    );
    // The input has every kind of line, in real numbers.
    assert!(
        bad_lines.len() > 4_000 && near > 6_000 && far > 1_000,
        "{generated:?}"
    );
    assert!(bad_by_defect.iter().filter(|n| **n > 0).count() == generate::DEFECTS.len());

    let out = dir.path().join("out");
    let mut settings = Settings::new(input, out.clone());
    settings.rows_per_file = ROWS_PER_FILE;
    let outcome = run(&settings).await;
    assert_eq!(outcome.result, Ok(()));
    let t = &outcome.totals;
    assert_eq!(t.read, ROWS);
    assert_eq!(t.bad_by_defect, bad_by_defect);
    assert_eq!(t.dead_letter_lines, bad_lines.len() as u64);
    assert_eq!(t.window_duplicates, near);
    assert_eq!(t.db_duplicates, far);
    assert_eq!(t.db_rows, fresh);
    assert_eq!(t.table_rows, fresh);
    assert_eq!(t.jsonl_lines, fresh + far);
    assert_eq!(t.bytes, generated.bytes);
    assert_eq!(
        t.jsonl_files.len() as u64,
        (fresh + far).div_ceil(ROWS_PER_FILE)
    );
    assert!(t.problems().is_empty(), "{:?}", t.problems());
    assert!(report::against_generated(&outcome, &generated).is_empty());

    // The pipeline's books: balanced, and the stages counted the same drops.
    let ledger = outcome.snapshot.ledger();
    assert!(ledger.balances(), "{ledger}");
    assert_eq!(ledger.offered, ROWS);
    let stage = |name: &str| outcome.snapshot.stage(name).unwrap().ledger;
    assert_eq!(stage("dedupe").by_reason[Reason::Duplicate], near);
    // The route sends each row to its kind's branch: neither branch drops anything.
    assert_eq!(stage("valid").by_reason[Reason::Filtered], 0);
    assert_eq!(stage("invalid").by_reason[Reason::Filtered], 0);
    assert_eq!(stage("invalid").offered, bad_lines.len() as u64);
    assert_eq!(stage("valid").offered, ROWS - bad_lines.len() as u64);
    assert_eq!(stage("dead_letter").delivered, bad_lines.len() as u64);
    assert!(report::print(&outcome, &settings, Some(&generated)));

    // The dead-letter file: one line per bad row, in input order, with its reason and raw text.
    let letters = read_jsonl(&settings.dead_letter_path());
    assert_eq!(letters.len(), bad_lines.len());
    let mut raw = Vec::new();
    for (letter, (index, defect)) in letters.iter().zip(&bad_lines) {
        assert_eq!(letter["line"], index + 1, "{letter}");
        let reason = letter["reason"].as_str().unwrap();
        let prefix = format!("{}: ", defect.as_str());
        assert!(
            reason.starts_with(&prefix) && reason.len() > prefix.len(),
            "line {}: {reason}",
            index + 1
        );
        raw.clear();
        generate::render(&spec, *index, &mut raw);
        assert_eq!(letter["raw"], *String::from_utf8_lossy(&raw), "{letter}");
        assert_eq!(letter.as_object().unwrap().len(), 3);
    }

    // The JSONL output: every row that passed the window, each file at most ROWS_PER_FILE lines.
    let mut ids = HashSet::new();
    let mut lines = 0u64;
    for file in &t.jsonl_files {
        let rows = read_jsonl(file);
        assert!(rows.len() as u64 <= ROWS_PER_FILE);
        for row in rows {
            assert_ne!(row["tier"], "unknown", "{row}");
            let quantity = row["quantity"].as_u64().unwrap();
            let total = row["total_cents"].as_u64().unwrap();
            assert!(total <= quantity * row["unit_cents"].as_u64().unwrap());
            ids.insert(row["id"].as_u64().unwrap());
            lines += 1;
        }
    }
    assert_eq!(lines, fresh + far);
    assert_eq!(ids.len() as u64, fresh);
    let expected: HashSet<u64> = (0..ROWS)
        .filter(|&i| generate::plan(&spec, i) == Plan::Fresh)
        .map(|i| i + 1)
        .collect();
    assert_eq!(ids, expected);

    // The table holds exactly the new orders.
    let db = rusqlite::Connection::open(settings.database_path()).unwrap();
    let (count, sum): (i64, i64) = db
        .query_row("SELECT COUNT(*), SUM(id) FROM orders", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(count as u64, fresh);
    assert_eq!(sum as u64, expected.iter().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_become_named_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let good = |id: u64| {
        format!(
            r#"{{"id":{id},"customer":"C{id:07}","sku":"SKU-00001","quantity":2,"unit_cents":500,"country":"JP","ts":1}}"#
        )
    };
    let mut input = Vec::new();
    input.extend_from_slice(format!("{}\n", good(1)).as_bytes()); // 1
    input.extend_from_slice(b"\n"); // 2: blank
    input.extend_from_slice(format!("{}\r\n", good(2)).as_bytes()); // 3: CRLF, valid
    input.extend_from_slice(&vec![b'x'; MAX_LINE + 10]); // 4: too long
    input.push(b'\n');
    input.extend_from_slice(b"{\"id\":3,\"customer\":\"C\xc3\x28\"}\n"); // 5: not UTF-8
    input.extend_from_slice(format!("{}\n", good(1)).as_bytes()); // 6: near duplicate
    input.extend_from_slice(b"[1,2,3]\n"); // 7: JSON, not an order
    input.extend_from_slice(
        br#"{"id":0,"customer":"C1","sku":"SKU-1","quantity":1,"unit_cents":1,"country":"DE","ts":1}"#,
    ); // 8: id 0
    input.push(b'\n');
    input.extend_from_slice(
        br#"{"id":9,"customer":"C1","sku":"SKU-","quantity":1,"unit_cents":1,"country":"DE","ts":1}"#,
    ); // 9: bad SKU
    input.push(b'\n');
    input.extend_from_slice(
        good(10)
            .replace("\"ts\":1", "\"ts\":1,\"note\":\"extra\"")
            .as_bytes(),
    ); // 10: unknown field, valid, no final newline
    let path = dir.path().join("edge.jsonl");
    std::fs::write(&path, &input).unwrap();

    let settings = Settings::new(path, dir.path().join("out"));
    let outcome = run(&settings).await;
    assert_eq!(outcome.result, Ok(()));
    let t = &outcome.totals;
    assert_eq!(t.read, 10);
    assert_eq!(t.bytes, input.len() as u64);
    assert_eq!((t.db_rows, t.window_duplicates, t.db_duplicates), (3, 1, 0));
    assert_eq!(t.bad(), 6);
    assert!(t.problems().is_empty(), "{:?}", t.problems());
    assert!(outcome.snapshot.ledger().balances());

    let letters = read_jsonl(&settings.dead_letter_path());
    let got: Vec<(u64, String)> = letters
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (2, "empty: blank line".to_owned()),
        (
            4,
            format!("too_long: {} bytes, the limit is {MAX_LINE}", MAX_LINE + 10),
        ),
        (5, "encoding: not UTF-8 at byte 21".to_owned()),
        (
            7,
            "schema: invalid type: integer `2`, expected a string at line 1 column 4".to_owned(),
        ),
        (8, "id: 0 is not an order id".to_owned()),
        (
            9,
            "sku: `SKU-` is not SKU- followed by up to 9 digits".to_owned(),
        ),
    ];
    assert_eq!(got, expected);
    assert_eq!(letters[1]["raw"].as_str().unwrap().len(), RAW_KEPT);
    assert_eq!(letters[2]["raw"], "{\"id\":3,\"customer\":\"C\u{fffd}(\"}");

    let rows = read_jsonl(&t.jsonl_files[0]);
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 10]);
    assert_eq!(rows[0]["customer"], "C0000001");
    assert_eq!(rows[0]["region"], "asia");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_outputs_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let settings = Settings::new(missing.clone(), dir.path().join("out"));
    let error = Etl::start(&settings, Directory::start(CUSTOMERS)).unwrap_err();
    assert!(matches!(error, StartError::Input { .. }));
    assert!(error.to_string().contains("missing.jsonl"), "{error}");

    // A directory opens but cannot be read: the pipeline fails naming the stage and the file.
    let settings = Settings::new(dir.path().to_owned(), dir.path().join("out"));
    let outcome = run(&settings).await;
    let error = outcome.result.clone().unwrap_err();
    assert!(
        error.contains("stage `parse`")
            && error.contains("after line 0")
            && error.contains("directory"),
        "{error}"
    );
    assert!(!report::print(&outcome, &settings, None));

    // The same output directory again: refused, the earlier run's output is not mixed in.
    let input = dir.path().join("one.jsonl");
    std::fs::write(&input, "{}\n").unwrap();
    let settings = Settings::new(input, dir.path().join("out"));
    let error = Etl::start(&settings, Directory::start(CUSTOMERS)).unwrap_err();
    assert!(error.to_string().contains("orders.db exists"), "{error}");

    let mut settings = Settings::new(dir.path().join("one.jsonl"), dir.path().join("out2"));
    settings.batch = 0;
    let error = Etl::start(&settings, Directory::start(CUSTOMERS)).unwrap_err();
    assert_eq!(error.to_string(), "the batch size must be at least 1");
}
