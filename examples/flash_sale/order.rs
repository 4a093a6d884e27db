//! Orders as they arrive over HTTP, and as they travel through the pipeline.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The longest idempotency key, customer or SKU accepted.
const MAX_TEXT: usize = 64;
/// The most units of one SKU in one order.
const MAX_QUANTITY: u32 = 100;

/// An order as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Order {
    /// The idempotency key: an order sent twice with the same key is stored once.
    pub(crate) key: String,
    pub(crate) customer: String,
    pub(crate) sku: String,
    pub(crate) quantity: u32,
    /// The price in cents.
    pub(crate) cents: u64,
}

impl Order {
    /// Checks what serde cannot: lengths and ranges. The error names the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("key", &self.key),
            ("customer", &self.customer),
            ("sku", &self.sku),
        ] {
            if value.is_empty() || value.len() > MAX_TEXT {
                return Err(format!("`{field}` must be 1 to {MAX_TEXT} bytes"));
            }
        }
        if self.quantity == 0 || self.quantity > MAX_QUANTITY {
            return Err(format!("`quantity` must be 1 to {MAX_QUANTITY}"));
        }
        Ok(())
    }
}

/// Which door an order came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Lane {
    /// `POST /checkout`: a customer waits for the answer.
    Interactive,
    /// `POST /import`: back-office bulk orders.
    Batch,
}

impl Lane {
    pub(crate) const ALL: [Lane; 2] = [Lane::Interactive, Lane::Batch];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Batch => "batch",
        }
    }

    /// The pipeline stage (the ingress) the lane's orders enter through.
    pub(crate) fn stage(self) -> &'static str {
        match self {
            Lane::Interactive => "checkout",
            Lane::Batch => "import",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// An order the service answered 202 for: it will reach the database. Spilled to disk as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Accepted {
    pub(crate) order: Order,
    pub(crate) lane: Lane,
    /// When the service accepted it (microseconds since the Unix epoch): latency is measured from
    /// here to the database commit, across a spill and a restart.
    pub(crate) accepted_micros: u64,
}

impl Accepted {
    pub(crate) fn now(order: Order, lane: Lane) -> Self {
        Self {
            order,
            lane,
            accepted_micros: unix_micros(),
        }
    }
}

/// The outcome of the payment step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payment {
    Authorised,
    /// Every attempt failed or found the provider's breaker open: stored as declined.
    Declined,
}

impl Payment {
    pub(crate) fn status(self) -> &'static str {
        match self {
            Payment::Authorised => "authorised",
            Payment::Declined => "declined",
        }
    }
}

/// An order after payment, on its way to the database.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub(crate) accepted: Accepted,
    pub(crate) payment: Payment,
    pub(crate) attempts: u32,
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
