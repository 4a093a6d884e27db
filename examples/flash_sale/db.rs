//! The orders table in a real SQLite file: WAL mode, one transaction per batch, the idempotency key
//! as the primary key (`ON CONFLICT DO NOTHING`), writes on a blocking thread.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use crate::order::{Settled, unix_micros};

/// What one batch did to the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// New rows.
    pub(crate) rows: u64,
    /// Orders whose key was already stored (a client sent it twice): not a second row.
    pub(crate) duplicates: u64,
}

/// A shared connection; clones write through the same one, one transaction at a time.
#[derive(Clone)]
pub(crate) struct Database {
    connection: Arc<Mutex<Connection>>,
}

impl Database {
    /// Opens (or creates) the database at `path` and its table.
    pub(crate) fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed batch survives a crash of the machine, not only of the process.
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS orders (
                key TEXT PRIMARY KEY,
                lane TEXT NOT NULL,
                customer TEXT NOT NULL,
                sku TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                cents INTEGER NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                accepted_micros INTEGER NOT NULL,
                committed_micros INTEGER NOT NULL
            )",
        )?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Inserts `batch` in one transaction on a blocking thread.
    pub(crate) async fn insert(&self, batch: Vec<Settled>) -> Result<Inserted, rusqlite::Error> {
        let database = self.clone();
        tokio::task::spawn_blocking(move || database.insert_now(&batch))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    fn insert_now(&self, batch: &[Settled]) -> Result<Inserted, rusqlite::Error> {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let transaction = connection.transaction()?;
        let mut inserted = Inserted::default();
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO orders (key, lane, customer, sku, quantity, cents, status, attempts,
                                     accepted_micros, committed_micros)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (key) DO NOTHING",
            )?;
            let committed = unix_micros() as i64;
            for settled in batch {
                let order = &settled.accepted.order;
                let changed = insert.execute(params![
                    order.key,
                    settled.accepted.lane.name(),
                    order.customer,
                    order.sku,
                    order.quantity,
                    order.cents as i64,
                    settled.payment.status(),
                    settled.attempts,
                    settled.accepted.accepted_micros as i64,
                    committed,
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

    /// Whether an order with `key` is stored.
    pub(crate) fn contains(&self, key: &str) -> Result<bool, rusqlite::Error> {
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE key = ?1)",
            [key],
            |row| row.get(0),
        )
    }
}
