//! Rates need two readings: the history of readings a running pipeline keeps, and the choice of
//! the one to measure against.
//!
//! One reading is taken at start and one at every snapshot (the pipeline takes one every quarter
//! of its rate window while it runs). A rate is measured against the newest reading at least one
//! rate window old (or the oldest kept), so it means "items per second over about the last
//! window" whoever asks and however often. Time is tokio's clock, so paused-time tests are
//! deterministic.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Readings kept at most (older ones are thinned out).
const MAX_READINGS: usize = 64;

/// One buffer's counters at one moment: items in, items out, rejections that count against
/// readiness.
pub(crate) type BufferReading = Option<(u64, u64, u64)>;

/// Every counter rates are measured from, at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub(crate) at: Instant,
    /// Items each stage emitted.
    pub(crate) stages: Vec<u64>,
    pub(crate) buffers: Vec<BufferReading>,
}

/// The history of readings of one running pipeline.
#[derive(Debug)]
pub(crate) struct Monitor {
    window: Duration,
    readings: VecDeque<Reading>,
}

impl Monitor {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            readings: VecDeque::new(),
        }
    }

    /// Records `now` and returns the reading to measure rates against.
    pub(crate) fn record(&mut self, now: Reading) -> Option<Reading> {
        while self.readings.len() >= 2 && now.at.duration_since(self.readings[1].at) >= self.window
        {
            self.readings.pop_front();
        }
        if self.readings.len() >= MAX_READINGS {
            self.readings.remove(1);
        }
        let baseline = self.readings.front().cloned();
        self.readings.push_back(now);
        baseline
    }
}
