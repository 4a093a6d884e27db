//! Streaming ETL with bounded memory at any input size: a JSONL file of orders is read, parsed and
//! validated (bad rows go to a dead-letter JSONL file with the reason), enriched through a
//! bounded-concurrency async lookup, deduplicated by order id, batched, and written to SQLite and
//! to rotating JSONL files, all through one weir pipeline (see `pipeline.rs` for the graph).
//!
//! ```text
//! cargo run --release --example etl                                   # 5 M generated orders, ~15 s
//! cargo run --release --example etl -- --rows 1000000                 # 1 M
//! cargo run --release --example etl -- --rows 10000000 --out /tmp/etl # 10 M (1.1 GiB in), outputs kept
//! cargo run --release --example etl -- --input orders.jsonl           # your own file
//! ```
//!
//! Without `--input` it generates its input first: `--rows N` orders (default 5,000,000, 560 MiB), of
//! which `--bad-share` (0.02) are bad rows and `--dup-share` (0.05) repeat an earlier order, most
//! a few lines back (the dedupe window catches them), a fifth far back (the database's primary
//! key catches them). Other flags: `--out DIR` (default: a temporary directory, removed at the
//! end), `--rows-per-file N` (250,000 lines per output file), `--batch N` (1,024 rows per
//! transaction), `--window N` (4,096 ids remembered by the dedupe stage), `--concurrency N` (64
//! lookups in flight), `--seed N`.
//!
//! Memory does not grow with the input: every buffer in the pipeline is bounded, the dedupe window
//! holds a fixed number of ids, and the reader reads only as fast as the writers write. The
//! summary prints every count and exits non-zero unless `rows read = bad + window duplicates +
//! written + database duplicates`, the JSONL output holds every row that passed the window, the
//! dead-letter file holds every bad row, and the pipeline's ledger balances.

mod generate;
mod lookup;
mod output;
mod pipeline;
mod progress;
mod reader;
mod report;
mod row;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::generate::{CUSTOMERS, Generated, Spec};
use crate::lookup::Directory;
use crate::pipeline::{Etl, Settings};
use crate::progress::Progress;

/// Generated orders when no `--input` is given: about 15 s in release on 2 cores.
const DEFAULT_ROWS: u64 = 5_000_000;

struct Options {
    input: Option<PathBuf>,
    spec: Spec,
    rows_given: bool,
    out: Option<PathBuf>,
    rows_per_file: u64,
    batch: usize,
    window: usize,
    concurrency: usize,
}

const HELP: &str = "flags: --input FILE | --rows N --bad-share F --dup-share F --seed N; \
--out DIR --rows-per-file N --batch N --window N --concurrency N";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        input: None,
        spec: Spec {
            rows: DEFAULT_ROWS,
            bad_share: 0.02,
            dup_share: 0.05,
            seed: 1,
        },
        rows_given: false,
        out: None,
        rows_per_file: 250_000,
        batch: 1_024,
        window: 4_096,
        concurrency: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| -> Result<u64, String> {
            text.replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: `{text}` is not a whole number"))
        };
        let share = |text: String| -> Result<f64, String> {
            text.parse()
                .map_err(|_| format!("{flag}: `{text}` is not a number"))
        };
        let size = |n: u64| usize::try_from(n).map_err(|_| format!("{flag}: too large"));
        match flag.as_str() {
            "--input" => options.input = Some(PathBuf::from(value()?)),
            "--rows" => {
                options.spec.rows = number(value()?)?;
                options.rows_given = true;
            }
            "--bad-share" => options.spec.bad_share = share(value()?)?,
            "--dup-share" => options.spec.dup_share = share(value()?)?,
            "--seed" => options.spec.seed = number(value()?)?,
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--rows-per-file" => options.rows_per_file = number(value()?)?,
            "--batch" => options.batch = size(number(value()?)?)?,
            "--window" => options.window = size(number(value()?)?)?,
            "--concurrency" => options.concurrency = size(number(value()?)?)?,
            "--help" | "-h" => return Err(HELP.to_owned()),
            other => return Err(format!("unknown flag `{other}` (try --help)")),
        }
    }
    if options.input.is_some() && options.rows_given {
        return Err("--rows generates an input; it cannot go with --input".to_owned());
    }
    options.spec.validate()?;
    Ok(options)
}

/// Writes the input `spec` describes to `path` (on a blocking thread), saying how long it took.
async fn generate_input(spec: Spec, path: &Path) -> std::io::Result<Generated> {
    println!(
        "etl: generating {} orders ({:.0}% bad, {:.0}% duplicates) into {}",
        spec.rows,
        spec.bad_share * 100.0,
        spec.dup_share * 100.0,
        path.display()
    );
    let started = Instant::now();
    let target = path.to_owned();
    let generated = tokio::task::spawn_blocking(move || generate::write(&spec, &target))
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
    println!(
        "etl: generated {:.1} MiB in {:.1} s",
        generated.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(generated)
}

/// Threads for the blocking writes (SQLite, JSONL, the generator): each writer has one batch in
/// hand at a time, so three suffice. Bounded, because every new thread gets a malloc arena of
/// its own: with tokio's default (up to 512, made whenever none is idle at that instant) a long
/// run keeps adding threads and peak memory creeps up with the input's size.
const BLOCKING_THREADS: usize = 3;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("etl: cannot start the tokio runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("etl: {message}");
            return ExitCode::from(2);
        }
    };
    // The output directory: the one given (kept), or a temporary one removed at the end.
    let temporary = match &options.out {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("weir-etl-").tempdir() {
            Ok(dir) => Some(dir),
            Err(error) => {
                eprintln!("etl: cannot create a temporary directory: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let out_dir = options
        .out
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("made above").path().to_owned());
    if let Err(error) = std::fs::create_dir_all(&out_dir) {
        eprintln!("etl: cannot create {}: {error}", out_dir.display());
        return ExitCode::FAILURE;
    }

    let (input, generated) = match &options.input {
        Some(input) => (input.clone(), None),
        None => {
            let path = out_dir.join("input.jsonl");
            match generate_input(options.spec, &path).await {
                Ok(generated) => (path, Some(generated)),
                Err(error) => {
                    eprintln!("etl: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    };

    let mut settings = Settings::new(input, out_dir);
    settings.rows_per_file = options.rows_per_file;
    settings.batch = options.batch;
    settings.window = options.window;
    settings.concurrency = options.concurrency;
    let directory = Directory::start(CUSTOMERS);
    let etl = match Etl::start(&settings, directory) {
        Ok(etl) => etl,
        Err(error) => {
            eprintln!("etl: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "etl: {} -> {} (Ctrl-C aborts)",
        settings.input.display(),
        settings.out_dir.display()
    );
    let progress = Progress::start(etl.counts(), etl.input_bytes());
    let abort = etl.abort_handle();
    let interrupted = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("etl: Ctrl-C: aborting");
            abort.abort();
        }
    });
    let outcome = etl.finish().await;
    interrupted.abort();
    progress.stop();
    let kept = report::print(&outcome, &settings, generated.as_ref());
    drop(temporary);
    if kept {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
