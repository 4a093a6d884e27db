//! Where the rows go: a SQLite table (WAL, one transaction per batch, the order id as primary
//! key), rotating JSONL files (a new file every N rows) and the dead-letter JSONL file. Writes
//! run on tokio's blocking threads.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::row::{DeadLetter, Enriched};

/// What one batch did to the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// New rows.
    pub(crate) rows: u64,
    /// Orders whose id the table already held (a duplicate the window did not see): no new row.
    pub(crate) duplicates: u64,
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    /// The database refused.
    #[error("SQLite: {0}")]
    Database(#[from] rusqlite::Error),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::File {
        path: path.to_owned(),
        source,
    }
}

/// Runs `work` on a blocking thread; a panic there is raised here.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// The orders table; clones share one connection.
#[derive(Clone)]
pub(crate) struct Database {
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// Creates the database at `path` with an empty `orders` table (WAL; `synchronous = NORMAL`:
    /// a committed batch survives a crash of the process, the last ones may not survive a power
    /// cut).
    pub(crate) fn create(path: &Path) -> Result<Self, rusqlite::Error> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(
            "CREATE TABLE orders (
                id INTEGER PRIMARY KEY,
                customer TEXT NOT NULL,
                tier TEXT NOT NULL,
                sku TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                unit_cents INTEGER NOT NULL,
                total_cents INTEGER NOT NULL,
                country TEXT NOT NULL,
                region TEXT NOT NULL,
                ts INTEGER NOT NULL
            )",
        )?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Inserts `batch` in one transaction on a blocking thread.
    pub(crate) async fn insert(&self, batch: Arc<Vec<Enriched>>) -> Result<Inserted, OutputError> {
        let database = self.clone();
        blocking(move || database.insert_now(&batch)).await
    }

    fn insert_now(&self, batch: &[Enriched]) -> Result<Inserted, OutputError> {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let transaction = connection.transaction()?;
        let mut inserted = Inserted::default();
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO orders (id, customer, tier, sku, quantity, unit_cents, total_cents,
                                     country, region, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (id) DO NOTHING",
            )?;
            for row in batch {
                let order = &row.order;
                let changed = insert.execute(params![
                    order.id as i64,
                    row.customer_code(),
                    row.tier.name(),
                    row.sku_code(),
                    order.quantity,
                    order.unit_cents as i64,
                    row.total_cents as i64,
                    row.country(),
                    row.region().name(),
                    order.ts,
                ])?;
                if changed == 1 {
                    inserted.rows += 1;
                } else {
                    inserted.duplicates += 1;
                }
            }
        }
        transaction.commit()?;
        Ok(inserted)
    }

    /// Rows in the table.
    pub(crate) fn rows(&self) -> Result<u64, rusqlite::Error> {
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection.query_row("SELECT COUNT(*) FROM orders", [], |row| {
            row.get::<_, i64>(0).map(|n| n as u64)
        })
    }
}

/// A JSONL file being written: one JSON value a line, through a buffer.
#[derive(Debug)]
struct JsonLines {
    path: PathBuf,
    file: BufWriter<File>,
    line: Vec<u8>,
}

impl JsonLines {
    /// Creates (or empties) the file at `path`.
    fn create(path: PathBuf) -> Result<Self, OutputError> {
        let file = File::create(&path).map_err(file_error(&path))?;
        Ok(Self {
            path,
            file: BufWriter::with_capacity(256 * 1024, file),
            line: Vec::with_capacity(512),
        })
    }

    /// Appends `value` as one line.
    fn append(&mut self, value: &impl Serialize) -> Result<(), OutputError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value)
            .map_err(io::Error::from)
            .and_then(|()| {
                self.line.push(b'\n');
                self.file.write_all(&self.line)
            })
            .map_err(file_error(&self.path))
    }

    /// Flushes the buffer and syncs the file to disk.
    fn close(self) -> Result<(), OutputError> {
        let path = self.path;
        let file = self
            .file
            .into_inner()
            .map_err(|e| file_error(&path)(e.into_error()))?;
        file.sync_all().map_err(file_error(&path))
    }
}

/// JSONL files of at most `rows_per_file` lines each: `orders-00001.jsonl`, `orders-00002.jsonl`...
#[derive(Debug)]
pub(crate) struct Rotating {
    dir: PathBuf,
    rows_per_file: u64,
    current: Option<JsonLines>,
    in_current: u64,
    files: Vec<PathBuf>,
}

impl Rotating {
    /// Writes into `dir` (created if missing), a new file every `rows_per_file` lines (at least 1).
    pub(crate) fn new(dir: &Path, rows_per_file: u64) -> Result<Self, OutputError> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            rows_per_file: rows_per_file.max(1),
            current: None,
            in_current: 0,
            files: Vec::new(),
        })
    }

    /// Appends one line per row, starting a new file whenever the current one is full.
    pub(crate) fn write(&mut self, rows: &[Enriched]) -> Result<(), OutputError> {
        for row in rows {
            let file = match self.current.take() {
                Some(file) if self.in_current < self.rows_per_file => file,
                full => {
                    if let Some(full) = full {
                        full.close()?;
                    }
                    let path = self
                        .dir
                        .join(format!("orders-{:05}.jsonl", self.files.len() + 1));
                    self.files.push(path.clone());
                    self.in_current = 0;
                    JsonLines::create(path)?
                }
            };
            let file = self.current.insert(file);
            file.append(row)?;
            self.in_current += 1;
        }
        Ok(())
    }

    /// Flushes and closes the last file.
    pub(crate) fn finish(&mut self) -> Result<(), OutputError> {
        self.current.take().map_or(Ok(()), JsonLines::close)
    }

    /// The files written so far, in order.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// A [`Rotating`] writer shared by its sink and the report.
#[derive(Debug, Clone)]
pub(crate) struct SharedRotating(Arc<Mutex<Rotating>>);

impl SharedRotating {
    /// Shares `writer`.
    pub(crate) fn new(writer: Rotating) -> Self {
        Self(Arc::new(Mutex::new(writer)))
    }

    /// Locks the writer.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Rotating> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `batch` on a blocking thread.
    pub(crate) async fn write(&self, batch: Arc<Vec<Enriched>>) -> Result<(), OutputError> {
        let writer = self.clone();
        blocking(move || writer.lock().write(&batch)).await
    }
}

/// The dead-letter file: one `{"line": N, "reason": "...", "raw": "..."}` a line.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    path: PathBuf,
    file: Option<JsonLines>,
    written: u64,
}

impl DeadLetters {
    /// Creates (or empties) the file at `path`.
    pub(crate) fn create(path: &Path) -> Result<Self, OutputError> {
        Ok(Self {
            path: path.to_owned(),
            file: Some(JsonLines::create(path.to_owned())?),
            written: 0,
        })
    }

    /// Appends `letter`.
    pub(crate) fn write(&mut self, letter: &DeadLetter) -> Result<(), OutputError> {
        let Some(file) = self.file.as_mut() else {
            return Err(file_error(&self.path)(io::Error::other("already closed")));
        };
        file.append(letter)?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and closes the file.
    pub(crate) fn finish(&mut self) -> Result<(), OutputError> {
        self.file.take().map_or(Ok(()), JsonLines::close)
    }

    /// Dead letters written.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }
}
