//! The ETL as one weir pipeline:
//!
//! ```text
//! read -> parse -> route --valid--> enrich (async lookup, N at a time) -> dedupe (window) -> batch -> write --> sqlite
//!                    \                                                                                   \--> jsonl (rotating)
//!                     \--invalid--> dead_letter
//! ```
//!
//! `route` sends each checked row to the branch of its kind (valid rows to output 0, refused ones
//! to output 1); `write` is a broadcast that hands every batch (an `Arc`, so a copy is a pointer)
//! to both writers. Every buffer is bounded, so memory does not
//! depend on the input's size: the reader is asked for lines only as the writers keep up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use weir::dsl::{Pipeline, PipelineAbort, PipelineError, PipelineHandle, PipelineSnapshot};
use weir::operators::{Lagging, PublisherExt};
use weir::runtime::source;

use crate::lookup::Directory;
use crate::output::{Database, DeadLetters, OutputError, Rotating, SharedRotating};
use crate::reader::{Lines, ReadProgress};
use crate::row::{Checked, DeadLetter, Defect, Enriched, Order, check};

/// How the ETL runs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The JSONL input.
    pub(crate) input: PathBuf,
    /// Where the database, the JSONL output and the dead letters go.
    pub(crate) out_dir: PathBuf,
    /// Lines per output JSONL file.
    pub(crate) rows_per_file: u64,
    /// Rows per batch (one SQLite transaction).
    pub(crate) batch: usize,
    /// The longest a row waits for its batch to fill.
    pub(crate) batch_wait: Duration,
    /// Distinct order ids the dedupe stage remembers.
    pub(crate) window: usize,
    /// Lookups in flight at most.
    pub(crate) concurrency: usize,
}

impl Settings {
    /// Defaults for `input` and `out_dir`.
    pub(crate) fn new(input: PathBuf, out_dir: PathBuf) -> Self {
        Self {
            input,
            out_dir,
            rows_per_file: 250_000,
            batch: 1_024,
            batch_wait: Duration::from_millis(50),
            window: 4_096,
            concurrency: 64,
        }
    }

    /// The SQLite database.
    pub(crate) fn database_path(&self) -> PathBuf {
        self.out_dir.join("orders.db")
    }

    /// The directory of rotating JSONL files.
    pub(crate) fn jsonl_dir(&self) -> PathBuf {
        self.out_dir.join("jsonl")
    }

    /// The dead-letter file.
    pub(crate) fn dead_letter_path(&self) -> PathBuf {
        self.out_dir.join("dead_letter.jsonl")
    }
}

/// Why the ETL could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The input cannot be opened.
    #[error("cannot open the input {path}: {source}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The output directory cannot be used.
    #[error("cannot use the output directory {path}: {reason}")]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An output cannot be created.
    #[error("cannot create the outputs: {0}")]
    Output(#[from] OutputError),
    /// The settings are out of range.
    #[error("{0}")]
    Settings(String),
    /// The graph is invalid (a bug in this example).
    #[error("the pipeline is invalid: {0}")]
    Build(#[from] weir::dsl::BuildError),
    /// No tokio runtime.
    #[error("cannot start the pipeline: {0}")]
    Start(#[from] PipelineError),
}

/// What the stages count while the pipeline runs (the progress line reads it).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Lines and bytes read.
    pub(crate) read: Arc<ReadProgress>,
    /// Dead letters written, by [`Defect::index`].
    pub(crate) dead_letters: [AtomicU64; Defect::ALL.len()],
    /// Rows the dedupe window dropped (the operator's own counter, set when the stage is built).
    pub(crate) window_duplicates: OnceLock<Arc<AtomicU64>>,
    /// Rows SQLite took.
    pub(crate) db_rows: AtomicU64,
    /// Rows whose id SQLite already held.
    pub(crate) db_duplicates: AtomicU64,
    /// Batches committed.
    pub(crate) batches: AtomicU64,
    /// Lines written to the JSONL output.
    pub(crate) jsonl_lines: AtomicU64,
}

impl Counts {
    /// Dead letters written so far.
    pub(crate) fn bad(&self) -> u64 {
        self.dead_letters
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Rows the window dropped so far.
    pub(crate) fn window_duplicates(&self) -> u64 {
        self.window_duplicates
            .get()
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// Every count of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Lines read.
    pub(crate) read: u64,
    /// Bytes read.
    pub(crate) bytes: u64,
    /// Bad rows (dead letters written), by [`Defect::index`].
    pub(crate) bad_by_defect: [u64; Defect::ALL.len()],
    /// Lines in the dead-letter file.
    pub(crate) dead_letter_lines: u64,
    /// Rows the dedupe window dropped.
    pub(crate) window_duplicates: u64,
    /// Rows SQLite took.
    pub(crate) db_rows: u64,
    /// Rows whose id SQLite already held.
    pub(crate) db_duplicates: u64,
    /// Rows in the table at the end.
    pub(crate) table_rows: u64,
    /// Batches committed.
    pub(crate) batches: u64,
    /// Lines written to the JSONL output.
    pub(crate) jsonl_lines: u64,
    /// The JSONL files, in order.
    pub(crate) jsonl_files: Vec<PathBuf>,
}

impl Totals {
    /// Bad rows, all defects.
    pub(crate) fn bad(&self) -> u64 {
        self.bad_by_defect.iter().sum()
    }

    /// Rows that passed the dedupe window.
    pub(crate) fn unique(&self) -> u64 {
        self.db_rows + self.db_duplicates
    }

    /// Every way the counts fail to add up (empty: they add up).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let accounted = self.bad() + self.window_duplicates + self.db_rows + self.db_duplicates;
        if self.read != accounted {
            problems.push(format!(
                "rows read {} != bad {} + window duplicates {} + written {} + database duplicates {} (= {accounted})",
                self.read,
                self.bad(),
                self.window_duplicates,
                self.db_rows,
                self.db_duplicates
            ));
        }
        if self.jsonl_lines != self.unique() {
            problems.push(format!(
                "JSONL lines {} != rows that passed the window {}",
                self.jsonl_lines,
                self.unique()
            ));
        }
        if self.dead_letter_lines != self.bad() {
            problems.push(format!(
                "dead-letter lines {} != bad rows {}",
                self.dead_letter_lines,
                self.bad()
            ));
        }
        if self.table_rows != self.db_rows {
            problems.push(format!(
                "rows in the table {} != rows inserted {}",
                self.table_rows, self.db_rows
            ));
        }
        problems
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The pipeline's result, then the outputs' (closing the files, counting the table).
    pub(crate) result: Result<(), String>,
    /// The pipeline at the end: its ledger, per stage.
    pub(crate) snapshot: PipelineSnapshot,
    /// Every count.
    pub(crate) totals: Totals,
    /// From start to the last batch committed.
    pub(crate) elapsed: Duration,
}

/// A running ETL.
pub(crate) struct Etl {
    handle: PipelineHandle,
    counts: Arc<Counts>,
    database: Database,
    jsonl: SharedRotating,
    dead_letters: Arc<Mutex<DeadLetters>>,
    input_bytes: u64,
    started: Instant,
}

impl std::fmt::Debug for Etl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etl")
            .field("pipeline", &self.handle.name())
            .finish_non_exhaustive()
    }
}

/// Refuses a directory that already holds a run's outputs; creates it if missing.
fn prepare_out_dir(settings: &Settings) -> Result<(), StartError> {
    let dir = &settings.out_dir;
    let refuse = |reason: String| StartError::OutDir {
        path: dir.clone(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| refuse(e.to_string()))?;
    for taken in [settings.database_path(), settings.jsonl_dir()] {
        if taken.exists() {
            return Err(refuse(format!(
                "{} exists (an earlier run's output); choose an empty directory",
                taken.display()
            )));
        }
    }
    Ok(())
}

fn check_settings(settings: &Settings) -> Result<(), StartError> {
    let positive = [
        ("rows per file", settings.rows_per_file as usize),
        ("batch size", settings.batch),
        ("dedupe window", settings.window),
        ("lookup concurrency", settings.concurrency),
    ];
    match positive.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(StartError::Settings(format!(
            "the {name} must be at least 1"
        ))),
        None => Ok(()),
    }
}

impl Etl {
    /// Opens the input and the outputs and starts the pipeline on the current tokio runtime.
    /// `directory` answers the enrichment lookups.
    pub(crate) fn start(settings: &Settings, directory: Directory) -> Result<Self, StartError> {
        check_settings(settings)?;
        let counts = Arc::new(Counts::default());
        let (lines, input_bytes) =
            Lines::open(&settings.input, counts.read.clone()).map_err(|source| {
                StartError::Input {
                    path: settings.input.clone(),
                    source,
                }
            })?;
        prepare_out_dir(settings)?;
        let database = Database::create(&settings.database_path()).map_err(OutputError::from)?;
        let jsonl = SharedRotating::new(Rotating::new(
            &settings.jsonl_dir(),
            settings.rows_per_file,
        )?);
        let dead_letters = Arc::new(Mutex::new(DeadLetters::create(
            &settings.dead_letter_path(),
        )?));
        let started = Instant::now();

        let mut p = Pipeline::builder("etl");
        let read = p.source("read", source::from_iter(lines));
        // An unreadable input fails the pipeline, naming the file and the line.
        let checked = p.stage("parse", &read, |lines| {
            lines.try_map(|line| line).map(check)
        });
        let routes = p.route("route", &checked, 2, 1_024, |row: &Checked| {
            usize::from(matches!(row, Checked::Invalid(_)))
        });
        let orders = p.stage("valid", &routes[0], |rows| rows.filter_map(Checked::valid));
        let refused = p.stage("invalid", &routes[1], |rows| {
            rows.filter_map(Checked::invalid)
        });

        let letters = dead_letters.clone();
        let dead_counts = counts.clone();
        p.sink("dead_letter", &refused, move |letter: DeadLetter| {
            letters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(&letter)?;
            dead_counts.dead_letters[letter.defect.index()].fetch_add(1, Ordering::Relaxed);
            Ok::<(), OutputError>(())
        });

        let enriched = p.stage_async(
            "enrich",
            &orders,
            settings.concurrency,
            move |order: Order| {
                let directory = directory.clone();
                async move {
                    let customer = directory.lookup(order.customer).await?;
                    Ok(Enriched::new(order, customer))
                }
            },
        );
        let window = settings.window;
        let window_counts = counts.clone();
        let unique = p.stage("dedupe", &enriched, move |rows| {
            // A lookup that got no answer fails the pipeline.
            let unique = rows
                .try_map(|row: Result<Enriched, crate::lookup::LookupError>| row)
                .dedupe(|row: &Enriched| row.order.id, window);
            let _ = window_counts.window_duplicates.set(unique.duplicates());
            unique
        });
        let (size, wait) = (settings.batch, settings.batch_wait);
        let batches = p.stage("batch", &unique, move |rows| {
            rows.batch(size, wait).map(Arc::new)
        });
        let writes = p.broadcast("write", &batches, 2, 4, Lagging::Wait);

        let db = database.clone();
        let db_counts = counts.clone();
        p.sink_async("sqlite", &writes[0], 1, move |batch: Arc<Vec<Enriched>>| {
            let db = db.clone();
            let counts = db_counts.clone();
            async move {
                let inserted = db.insert(batch).await?;
                counts.db_rows.fetch_add(inserted.rows, Ordering::Relaxed);
                counts
                    .db_duplicates
                    .fetch_add(inserted.duplicates, Ordering::Relaxed);
                counts.batches.fetch_add(1, Ordering::Relaxed);
                Ok::<(), OutputError>(())
            }
        });
        let files = jsonl.clone();
        let file_counts = counts.clone();
        p.sink_async("jsonl", &writes[1], 1, move |batch: Arc<Vec<Enriched>>| {
            let files = files.clone();
            let counts = file_counts.clone();
            async move {
                let rows = batch.len() as u64;
                files.write(batch).await?;
                counts.jsonl_lines.fetch_add(rows, Ordering::Relaxed);
                Ok::<(), OutputError>(())
            }
        });

        let handle = p.build()?.start()?;
        Ok(Self {
            handle,
            counts,
            database,
            jsonl,
            dead_letters,
            input_bytes,
            started,
        })
    }

    /// The live counts.
    pub(crate) fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// The input's size in bytes.
    pub(crate) fn input_bytes(&self) -> u64 {
        self.input_bytes
    }

    /// A handle that aborts the run (Ctrl-C).
    pub(crate) fn abort_handle(&self) -> PipelineAbort {
        self.handle.abort_handle()
    }

    /// Waits for the pipeline to finish, closes the outputs and counts everything.
    pub(crate) async fn finish(mut self) -> Outcome {
        let pipeline = (&mut self.handle).await;
        let elapsed = self.started.elapsed();
        let snapshot = self.handle.snapshot();
        let mut result = pipeline.map_err(|error| error.to_string());
        let mut note = |outcome: Result<(), String>| {
            if let (Ok(()), Err(error)) = (&result, outcome) {
                result = Err(error);
            }
        };
        let (dead_letter_lines, closed) = {
            let mut letters = self.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
            (letters.written(), letters.finish())
        };
        note(closed.map_err(|e| e.to_string()));
        let (jsonl_files, closed) = {
            let mut files = self.jsonl.lock();
            (files.files().to_vec(), files.finish())
        };
        note(closed.map_err(|e| e.to_string()));
        let table_rows = match self.database.rows() {
            Ok(rows) => rows,
            Err(error) => {
                note(Err(format!("counting the table's rows: {error}")));
                0
            }
        };
        let c = &self.counts;
        let totals = Totals {
            read: c.read.lines.load(Ordering::Relaxed),
            bytes: c.read.bytes.load(Ordering::Relaxed),
            bad_by_defect: std::array::from_fn(|k| c.dead_letters[k].load(Ordering::Relaxed)),
            dead_letter_lines,
            window_duplicates: c.window_duplicates(),
            db_rows: c.db_rows.load(Ordering::Relaxed),
            db_duplicates: c.db_duplicates.load(Ordering::Relaxed),
            table_rows,
            batches: c.batches.load(Ordering::Relaxed),
            jsonl_lines: c.jsonl_lines.load(Ordering::Relaxed),
            jsonl_files,
        };
        Outcome {
            result,
            snapshot,
            totals,
            elapsed,
        }
    }
}
