//! The Reactive Streams TCK (weir-tck) over the spill log's faces: the replay source is a publisher,
//! the `spill_to_disk` sink a (blackbox-verified) subscriber.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use weir::runtime::{Error, Subscriber, Subscription};
use weir_spill::{Replay, SpillConfig, SpillLog, SpillSink, replay, spill_to_disk};

/// A fresh directory per publisher or subscriber, under cargo's per-target scratch space.
fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("tck_spill")
        .join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn small() -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(4096)
        .budget_bytes(1 << 30)
        .batch_records(64)
}

/// A replay of a log holding `0..n`.
fn replay_of(n: u64) -> Replay<u64> {
    let log = SpillLog::open(scratch(), small()).expect("open the log");
    for x in 0..n {
        log.append(&x).expect("append");
    }
    log.flush().expect("flush");
    replay(log)
}

/// A replay whose first segment is corrupt: it fails on the first read (rule 1.4).
fn corrupt_replay() -> Replay<u64> {
    let dir = scratch();
    {
        let log = SpillLog::open(&dir, small()).expect("open the log");
        for x in 0..2_000u64 {
            log.append(&x).expect("append");
        }
    }
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[36 + 16] ^= 0xFF; // the first record's payload
    std::fs::write(first, bytes).unwrap();
    replay(SpillLog::open(&dir, small()).expect("reopen the log"))
}

/// The sink over a fresh log (the log closes when the sink is dropped).
struct ScratchSink(SpillSink<u64>);

impl Subscriber<u64> for ScratchSink {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.0.on_subscribe(subscription)
    }
    fn on_next(&mut self, item: u64) {
        self.0.on_next(item)
    }
    fn on_error(&mut self, error: Error) {
        self.0.on_error(error)
    }
    fn on_complete(&mut self) {
        self.0.on_complete()
    }
    fn on_flush(&mut self) {
        self.0.on_flush()
    }
}

fn sink() -> ScratchSink {
    ScratchSink(
        spill_to_disk::<u64>(scratch(), small())
            .expect("open the log")
            .0,
    )
}

weir_tck::publisher_verification!(
    spill_replay,
    replay_of,
    failed = Some(corrupt_replay),
    max_elements = 4_096,
);

weir_tck::subscriber_blackbox_verification!(spill_sink, sink);

/// A spilling ingress pre-filled with `0..n` (memory for 4 of them, the rest on disk), then closed.
fn spilling_ingress_of(n: u64) -> weir::runtime::queue::QueuePublisher<u64> {
    let store = weir_spill::SpillQueue::open(scratch(), 4, small()).expect("open the store");
    let full = weir::runtime::ingress::SpillFull::Reject {
        retry_after: std::time::Duration::from_millis(1),
    };
    let (handle, publisher) =
        weir::runtime::ingress::spilling("tck", store, full).expect("a spilling ingress");
    for x in 0..n {
        handle.try_push(x).expect("room on disk");
    }
    handle.close();
    publisher
}

weir_tck::publisher_verification!(
    spilling_ingress,
    spilling_ingress_of,
    failed = Some(corrupt_replay),
    max_elements = 4_096,
);

#[test]
fn every_rule_is_generated() {
    assert_eq!(spill_replay::RULES, weir_tck::publisher::RULES);
    assert_eq!(spill_sink::RULES, weir_tck::blackbox::RULES);
    assert_eq!(spilling_ingress::RULES, weir_tck::publisher::RULES);
}
