//! Small measuring tools: a latency histogram of fixed size, a random number generator for
//! jitter and failures, and the process's peak memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: quantiles within about 6%.
const SUB: usize = 16;
/// Powers of two covered (microseconds up to about 2^40: 12 days).
const POWERS: usize = 40;

/// A log-linear histogram of microseconds; its memory does not grow with the count.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Mutex<Vec<u64>>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(vec![0; POWERS * SUB]),
        }
    }
}

fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let power = 63 - micros.leading_zeros() as usize; // >= 4
    let sub = ((micros >> (power - 4)) as usize) & (SUB - 1);
    ((power - 3) * SUB + sub).min(POWERS * SUB - 1)
}

fn lower_bound(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let power = index / SUB + 3;
    let sub = (index % SUB) as u64;
    (1u64 << power) + (sub << (power - 4))
}

impl Histogram {
    pub(crate) fn record(&self, value: Duration) {
        let index = bucket(value.as_micros() as u64);
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())[index] += 1;
    }

    pub(crate) fn count(&self) -> u64 {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .sum()
    }

    /// The `q` quantile (0.0-1.0), or `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, &n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(lower_bound(index)));
            }
        }
        None
    }
}

/// splitmix64: good enough for jitter and simulated failures, no dependency.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0.0..1.0.
    pub(crate) fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The process's peak resident memory in bytes (Linux `VmHWM`), if known.
pub(crate) fn peak_rss() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// The process's resident memory now in bytes (Linux `VmRSS`), if known.
pub(crate) fn rss() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|kib| kib * 1024)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_width() {
        let h = Histogram::default();
        for micros in 1..=10_000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.07, "{p50}");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.07, "{p99}");
        assert_eq!(h.count(), 10_000);
    }
}
