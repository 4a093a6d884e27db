//! The pipeline's ledger (see [`Ledger`]).

use serde::{Deserialize, Serialize};
use weir_runtime::ledger::{Entry, Exit, Exits};

/// The pipeline's ledger: every item accounted for, per stage and for the whole graph.
///
/// For a stage, at a quiescent point:
///
/// ```text
/// offered + made + recovered = delivered + consumed + rejected + dropped + failed + cancelled + held
/// ```
///
/// - `offered`: what came in: the pushes offered to an ingress (accepted or not), the items a
///   source produced, the items any other stage received on its inputs (counted by the taps on
///   its input edges);
/// - `delivered`: what went out: the items a stage handed to the next ones (what they received),
///   the items a sink handled successfully;
/// - `rejected`, `dropped`, `failed`, `cancelled`: the exits, each split by reason in
///   [`Ledger::by_reason`], as the stage's accounts counted them (its queues, its operators,
///   what its output edge dropped when a consumer stopped mid-burst);
/// - `held`: what the stage holds now: queues, rings, lanes, futures in flight, a partial batch,
///   records on disk;
/// - `made` / `consumed`: items a stage made out of others (a batch out of its members, broadcast
///   copies out of an original) and the items consumed into them;
/// - `recovered`: items a stage found held when the pipeline started, left by an earlier run (a
///   spill store or a durable ingress reopened with records in it).
///
/// For the graph the same equation holds with `offered` summed over the ingresses and sources,
/// `delivered` over the sinks, and the rest over every stage: every item that entered (or was
/// recovered) is delivered, counted under a named exit,
/// or still held. While items move, counters are read one after another, so the equation holds
/// exactly only at a quiescent point (a pipeline that completed, failed, drained or was aborted);
/// [`Ledger::unaccounted`] is the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Items that came in.
    pub offered: u64,
    /// Items that went out (a sink: handled successfully).
    pub delivered: u64,
    /// Items handed back to their caller (a refused push).
    pub rejected: u64,
    /// Items dropped on purpose (overflow policy, throttle, filter, dedupe).
    pub dropped: u64,
    /// Items whose processing failed.
    pub failed: u64,
    /// Items whose consumer went away before they were delivered.
    pub cancelled: u64,
    /// Items held now.
    pub held: u64,
    /// Items made out of others (a batch, a broadcast copy).
    pub made: u64,
    /// Items consumed into what was made.
    pub consumed: u64,
    /// Items found held at the start, left by an earlier run.
    #[serde(default)]
    pub recovered: u64,
    /// The exits by reason.
    pub by_reason: Exits,
}

impl Ledger {
    /// A stage's books from what came in, what went out and its accounts' entries.
    pub(crate) fn of(offered: u64, delivered: u64, entries: &Entry) -> Self {
        Self {
            offered,
            delivered,
            rejected: entries.exits.total(Exit::Rejected),
            dropped: entries.exits.total(Exit::Dropped),
            failed: entries.exits.total(Exit::Failed),
            cancelled: entries.exits.total(Exit::Cancelled),
            held: entries.held,
            made: entries.made,
            consumed: entries.consumed,
            recovered: entries.recovered,
            by_reason: entries.exits,
        }
    }

    /// `offered + made + recovered - (delivered + consumed + exits + held)`: zero when every item
    /// is accounted for. Positive: items went missing; negative: items were counted twice. Exact
    /// only at a quiescent point.
    pub fn unaccounted(&self) -> i128 {
        let came = i128::from(self.offered) + i128::from(self.made) + i128::from(self.recovered);
        let went = [
            self.delivered,
            self.consumed,
            self.rejected,
            self.dropped,
            self.failed,
            self.cancelled,
            self.held,
        ]
        .into_iter()
        .map(i128::from)
        .sum::<i128>();
        came - went
    }

    /// Whether every item is accounted for ([`unaccounted`](Self::unaccounted) is zero).
    pub fn balances(&self) -> bool {
        self.unaccounted() == 0
    }

    /// Adds the exits, holdings and reshaping of `other` (not its offered / delivered).
    pub(crate) fn add_inside(&mut self, other: &Ledger) {
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.held += other.held;
        self.made += other.made;
        self.consumed += other.consumed;
        self.recovered += other.recovered;
        self.by_reason.add(&other.by_reason);
    }
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "offered {}", self.offered)?;
        if self.recovered > 0 {
            write!(f, " + recovered {}", self.recovered)?;
        }
        write!(
            f,
            " = delivered {} + rejected {} + dropped {} + failed {} + cancelled {} + held {}",
            self.delivered, self.rejected, self.dropped, self.failed, self.cancelled, self.held
        )?;
        if self.made > 0 || self.consumed > 0 {
            write!(f, " (made {}, consumed {})", self.made, self.consumed)?;
        }
        match self.unaccounted() {
            0 => Ok(()),
            n => write!(f, " [unaccounted {n}]"),
        }
    }
}
