//! When a spilling queue's items went in, sampled. A spill store keeps no time per item, so the
//! queue notes when the item at a push position went in (at most one note per millisecond) and
//! bounds the age of the oldest held item by the newest note at or before it.

use std::collections::VecDeque;

/// At most one sample per this many nanoseconds of pushes: the age is an upper bound, within
/// about this much.
const EVERY_NANOS: u64 = 1_000_000;

/// The most samples kept: a backlog older than this many milliseconds keeps its older samples
/// and newer pushes go unsampled until those are taken (the bound only loosens). Bounded memory.
const MAX_SAMPLES: usize = 4096;

/// Sampled push times of a queue whose items are taken oldest first.
#[derive(Debug)]
pub(super) struct Ages {
    /// (push position, time on the metrics clock), oldest first.
    samples: VecDeque<(u64, u64)>,
    /// The position the next pushed item takes.
    pushed: u64,
    /// Items taken so far: the position of the oldest held item.
    taken: u64,
}

impl Ages {
    /// For a store that already holds `held` items (from an earlier run), the oldest of which
    /// went in at `oldest` (when known; else no age is reported until they have been taken).
    pub(super) fn after(held: u64, oldest: Option<u64>) -> Self {
        Self {
            samples: oldest
                .filter(|_| held > 0)
                .map(|at| (0, at))
                .into_iter()
                .collect(),
            pushed: held,
            taken: 0,
        }
    }

    /// One item went in at `now`.
    pub(super) fn pushed(&mut self, now: u64) {
        let due = self
            .samples
            .back()
            .is_none_or(|&(_, at)| now.saturating_sub(at) >= EVERY_NANOS);
        if due && self.samples.len() < MAX_SAMPLES {
            self.samples.push_back((self.pushed, now));
        }
        self.pushed += 1;
    }

    /// `n` items were taken, oldest first.
    pub(super) fn taken(&mut self, n: u64) {
        self.taken = (self.taken + n).min(self.pushed);
        // Keep the newest sample at or before the oldest held item; older ones bound nothing.
        while self
            .samples
            .get(1)
            .is_some_and(|&(position, _)| position <= self.taken)
        {
            self.samples.pop_front();
        }
    }

    /// A time no later than when the oldest held item went in (so `now` minus it bounds that
    /// item's age from above); `None` when nothing pushed is held or its time is unknown.
    pub(super) fn oldest(&self) -> Option<u64> {
        if self.taken >= self.pushed {
            return None;
        }
        self.samples
            .front()
            .filter(|&&(position, _)| position <= self.taken)
            .map(|&(_, at)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_item_is_bounded_by_the_newest_sample_before_it() {
        let mut ages = Ages::after(0, None);
        assert_eq!(ages.oldest(), None);
        ages.pushed(10); // position 0: sampled
        ages.pushed(20); // position 1: within a millisecond, not sampled
        ages.pushed(EVERY_NANOS + 10); // position 2: sampled
        assert_eq!(ages.oldest(), Some(10));
        ages.taken(1);
        assert_eq!(ages.oldest(), Some(10), "position 1 went in after 10");
        ages.taken(1);
        assert_eq!(ages.oldest(), Some(EVERY_NANOS + 10));
        ages.taken(1);
        assert_eq!(ages.oldest(), None);
    }

    #[test]
    fn items_from_an_earlier_run_have_no_known_age_unless_the_store_knows_it() {
        let mut ages = Ages::after(2, None);
        ages.pushed(5);
        assert_eq!(ages.oldest(), None);
        ages.taken(2);
        assert_eq!(ages.oldest(), Some(5));

        let mut ages = Ages::after(2, Some(0));
        ages.pushed(EVERY_NANOS);
        assert_eq!(ages.oldest(), Some(0));
        ages.taken(1);
        assert_eq!(
            ages.oldest(),
            Some(0),
            "the second recovered item: no later than 0"
        );
        ages.taken(1);
        assert_eq!(ages.oldest(), Some(EVERY_NANOS));
        ages.taken(1);
        assert_eq!(ages.oldest(), None);
        assert_eq!(Ages::after(0, Some(0)).oldest(), None, "nothing held");
    }
}
