//! The customer directory the ETL enriches orders from: a service in a tokio task of its own,
//! asked over a bounded channel and answering on a one-shot reply, as a remote lookup would be.
//! Its table has a fixed size (one record per customer), whatever the input's size.

use tokio::sync::{mpsc, oneshot};

use crate::row::{Customer, Tier};

/// Requests waiting for the directory at most.
const QUEUE: usize = 1_024;

/// Why a lookup got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the customer directory stopped answering")]
pub(crate) struct LookupError;

struct Request {
    customer: u32,
    reply: oneshot::Sender<Option<Customer>>,
}

/// A handle on the directory; clones ask the same service. The service stops when every handle
/// is dropped.
#[derive(Clone)]
pub(crate) struct Directory {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// Starts the service (on the current tokio runtime) with a record for each of customers
    /// `0..customers`.
    pub(crate) fn start(customers: u32) -> Self {
        let table: Vec<Customer> = (0..customers).map(record).collect();
        let (requests, mut incoming) = mpsc::channel::<Request>(QUEUE);
        tokio::spawn(async move {
            while let Some(request) = incoming.recv().await {
                let found = table.get(request.customer as usize).copied();
                // The asker may have gone (its pipeline aborted): nothing to do then.
                let _ = request.reply.send(found);
            }
        });
        Self { requests }
    }

    /// The record of `customer`, `None` if the directory does not know it.
    pub(crate) async fn lookup(&self, customer: u32) -> Result<Option<Customer>, LookupError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { customer, reply })
            .await
            .map_err(|_| LookupError)?;
        answer.await.map_err(|_| LookupError)
    }
}

/// The directory's record of `customer`: a tier spread by a hash of the number.
fn record(customer: u32) -> Customer {
    let spread = customer.wrapping_mul(0x9E37_79B1) >> 24;
    let (tier, discount_pct) = match spread {
        0..=178 => (Tier::Basic, 0),
        179..=235 => (Tier::Silver, 5),
        _ => (Tier::Gold, 10),
    };
    Customer { tier, discount_pct }
}
