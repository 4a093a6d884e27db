//! The ledger under a failing disk, through the `Filesystem` seam ([`MemFilesystem`]): once
//! `append`, `SpillQueue::push` or the sink accepted an item, it is written, handed back, or named
//! in an error and counted. A full device in the middle of a batch, a partial write, a failing
//! fsync, a failed segment roll, a close that cannot write and a failing background write each
//! lose nothing that was accepted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_runtime::{Publisher, source};
use weir_spill::fs::MemFilesystem;
use weir_spill::{FsyncPolicy, SpillConfig, SpillLog, SpillQueue, SpillSink};

const DIR: &str = "/spill";

/// 512-byte segments of ~57-byte frames, batches of 4, an fsync per batch.
fn config(fs: &MemFilesystem) -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(512)
        .budget_bytes(1 << 20)
        .batch_records(4)
        .fsync(FsyncPolicy::EveryBatch)
        .filesystem(Arc::new(fs.clone()))
}

fn item(i: u64) -> (u64, String) {
    (i, format!("payload-{i:032}"))
}

fn open(fs: &MemFilesystem) -> SpillLog<(u64, String)> {
    SpillLog::open(DIR, config(fs)).unwrap()
}

/// A log holding items `0..n`, written.
fn written(fs: &MemFilesystem, n: u64) -> SpillLog<(u64, String)> {
    let log = open(fs);
    for i in 0..n {
        log.append(&item(i)).unwrap();
    }
    assert_eq!(log.flush().unwrap().written, n);
    log
}

fn read_all(log: &SpillLog<(u64, String)>) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(record) = log.read().unwrap() {
        assert_eq!(record.item, item(record.item.0));
        assert_eq!(record.seq, record.item.0, "sequence numbers are dense");
        seen.push(record.item.0);
    }
    seen
}

fn segments(fs: &MemFilesystem) -> Vec<PathBuf> {
    fs.files(Path::new(DIR))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect()
}

/// Every segment ends at a record boundary: what a crash would leave now opens without a torn
/// tail to cut, and reads back without corruption.
fn assert_whole_records(fs: &MemFilesystem) {
    let log = open(&fs.snapshot());
    assert_eq!(
        log.metrics().snapshot().truncations,
        0,
        "a torn tail was left"
    );
    read_all(&log);
}

#[test]
fn ledger_enospc_in_the_middle_of_a_batch_keeps_the_batch() {
    let fs = MemFilesystem::new();
    let log = written(&fs, 4);
    // The device fills up while the next batch is written: part of it lands.
    fs.set_capacity(Some(fs.used() + 100));
    for i in 4..8 {
        assert_eq!(log.append(&item(i)).unwrap(), i, "accepted");
    }
    let error = log.flush().unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(error.unwritten_records(), Some(4), "{error}");
    assert!(
        error.to_string().contains("4 records are not written"),
        "{error}"
    );
    assert_eq!(log.unwritten(), 4);
    assert_whole_records(&fs);
    // While the disk stays full, a new item is refused (not appended), the batch is kept.
    let refused = log.append(&item(8)).unwrap_err();
    assert_eq!(refused.unwritten_records(), Some(4), "{refused}");
    assert_eq!(log.next_seq(), 8);
    let snapshot = log.metrics().snapshot();
    assert_eq!(snapshot.write_failures, 2);
    assert_eq!(snapshot.unwritten_records, 4);
    assert_eq!(snapshot.dropped_unwritten, 0);
    // Space comes back: the next append writes the kept batch first, with its numbers.
    fs.set_capacity(None);
    assert_eq!(log.append(&item(8)).unwrap(), 8);
    assert_eq!(log.flush().unwrap().durable, 9);
    assert_eq!(read_all(&log), (0..9).collect::<Vec<_>>());
    assert_eq!(log.metrics().snapshot().unwritten_records, 0);
    drop(log);
    assert_eq!(read_all(&open(&fs)), (0..9).collect::<Vec<_>>());
}

#[test]
fn ledger_a_partial_write_is_cut_back_and_written_again_then_survives_a_crash() {
    let fs = MemFilesystem::new();
    let log = written(&fs, 4);
    let segment = segments(&fs).pop().unwrap();
    let before = fs.read_file(&segment).unwrap().len();
    fs.set_capacity(Some(fs.used() + 30)); // half a frame fits
    for i in 4..8 {
        log.append(&item(i)).unwrap();
    }
    log.flush().unwrap_err();
    assert_eq!(
        fs.read_file(&segment).unwrap().len(),
        before,
        "the partial write was cut off"
    );
    fs.set_capacity(None);
    let written = log.flush().unwrap();
    assert_eq!((written.written, written.durable), (8, 8));
    // A crash now (nothing closed): reopening replays exactly what was acknowledged as written.
    fs.crash();
    std::mem::forget(log);
    let log = open(&fs);
    assert_eq!(log.metrics().snapshot().truncations, 0, "no torn tail");
    assert_eq!(read_all(&log), (0..8).collect::<Vec<_>>());
}

#[test]
fn ledger_a_failing_fsync_keeps_the_batch_and_refuses_only_the_next_item() {
    let fs = MemFilesystem::new();
    let log = open(&fs);
    for i in 0..4 {
        assert_eq!(log.append(&item(i)).unwrap(), i);
    }
    fs.fail_syncs(1);
    // The full batch is written before item 4 joins it; its fsync fails: item 4 is refused.
    let error = log.append(&item(4)).unwrap_err();
    assert_eq!(error.unwritten_records(), Some(4), "{error}");
    assert!(error.to_string().contains("fsync segment"), "{error}");
    assert_eq!(log.next_seq(), 4, "the refused item was not appended");
    assert!(
        log.read().unwrap().is_none(),
        "nothing unsynced is published"
    );
    assert_whole_records(&fs);
    // The retry writes and fsyncs the batch again.
    assert_eq!(log.append(&item(4)).unwrap(), 4);
    let written = log.flush().unwrap();
    assert_eq!((written.written, written.durable), (5, 5));
    assert_eq!(read_all(&log), (0..5).collect::<Vec<_>>());
    drop(log);
    assert_eq!(read_all(&open(&fs)), (0..5).collect::<Vec<_>>());
}

#[test]
fn ledger_a_failed_segment_roll_refuses_only_the_new_item() {
    let fs = MemFilesystem::new();
    // Seven 58-byte frames: 442 of the segment's 512 bytes.
    let log = written(&fs, 7);
    // A 78-byte frame needs a new segment, and there is no room for one: the roll fails and the
    // item that needed it is refused.
    fs.set_capacity(Some(fs.used()));
    let error = log.append(&(7, "x".repeat(60))).unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(log.next_seq(), 7);
    fs.set_capacity(None);
    // The next item would fit in the old segment, but the half-made new one already claims
    // sequence number 7 by its name: the roll comes first.
    assert_eq!(log.append(&item(7)).unwrap(), 7);
    log.flush().unwrap();
    drop(log);
    let log = open(&fs);
    assert_eq!(log.next_seq(), 8);
    assert_eq!(read_all(&log), (0..8).collect::<Vec<_>>());
}

#[test]
fn ledger_a_close_that_cannot_write_counts_what_it_drops() {
    let fs = MemFilesystem::new();
    let log = open(&fs);
    for i in 0..3 {
        log.append(&item(i)).unwrap();
    }
    let metrics = log.metrics();
    fs.set_capacity(Some(fs.used()));
    let error = log.close().unwrap_err();
    assert_eq!(error.unwritten_records(), Some(3), "{error}");
    assert_eq!(metrics.snapshot().dropped_unwritten, 3);
    assert_eq!(metrics.snapshot().unwritten_records, 0);
    drop(log);
    fs.set_capacity(None);
    let log = open(&fs);
    assert_eq!(log.next_seq(), 0, "dropped records leave no gap");
}

/// Under `Interval`, the syncer thread writes batches in the background: a write it cannot do
/// keeps the batch, which a later interval writes once space is back.
#[test]
fn ledger_a_failed_background_write_keeps_the_batch() {
    let fs = MemFilesystem::new();
    let config = config(&fs)
        .batch_records(1_000)
        .fsync(FsyncPolicy::Interval(Duration::from_millis(5)));
    let log = SpillLog::<(u64, String)>::open(DIR, config).unwrap();
    fs.set_capacity(Some(fs.used()));
    log.append(&item(0)).unwrap();
    let metrics = log.metrics();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.snapshot().write_failures == 0 {
        assert!(Instant::now() < deadline, "the syncer never tried");
        std::thread::sleep(Duration::from_millis(2));
    }
    fs.set_capacity(None);
    while metrics.snapshot().spilled_records == 0 {
        assert!(
            Instant::now() < deadline,
            "the kept batch was never written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_all(&log), vec![0]);
}

/// The queue behind a spilling ingress: the disk fills up while the producer is faster than the
/// consumer, then recovers. Every push that returned `Ok` comes out, in order; every refused item
/// is handed back to the caller.
#[test]
fn ledger_the_queue_hands_out_every_accepted_item_in_order_when_the_disk_fills() {
    let fs = MemFilesystem::new();
    let config = config(&fs).batch_records(8).budget_bytes(1 << 30);
    let mut queue = SpillQueue::<(u64, String)>::open(DIR, 4, config).unwrap();
    let (mut accepted, mut taken, mut refused) = (Vec::new(), Vec::new(), 0u64);
    let mut out = Vec::new();
    for i in 0..3_000u64 {
        match i {
            300 => fs.set_capacity(Some(fs.used() + 700)),
            1_500 => fs.set_capacity(None),
            2_000 => fs.fail_syncs(3),
            2_400 => fs.fail_writes(5),
            _ => {}
        }
        match queue.push(item(i)) {
            Ok(_) => accepted.push(i),
            Err(error) => {
                assert!(!error.error.is_budget(), "{}", error.error);
                assert_eq!(error.into_inner(), item(i), "the refused item comes back");
                refused += 1;
            }
        }
        if i % 7 == 0 {
            queue.take_into(3, &mut out).unwrap();
            taken.extend(out.drain(..).map(|(i, _)| i));
        }
    }
    while queue.take_into(64, &mut out).unwrap() > 0 {
        taken.extend(out.drain(..).map(|(i, _)| i));
    }
    assert!(refused > 0, "the disk never filled");
    assert_eq!(taken, accepted, "every accepted item, in order");
    assert_eq!(accepted.len() as u64 + refused, 3_000);
    assert!(queue.is_empty());
    assert_eq!(queue.held_back(), 0);
    let snapshot = queue.metrics().snapshot();
    assert!(snapshot.write_failures > 0);
    assert_eq!(snapshot.dropped_unwritten, 0);
    assert_eq!(queue.log().unacked(), 0);
}

/// Records taken back after a failure keep their place: the ones on disk first, then the ones
/// taken back, then newer pushes. While the disk stays full the queue still hands them out, and
/// accepts new items into memory while memory has room; `flush` writes them once space is back.
#[test]
fn ledger_the_queue_keeps_held_back_items_in_their_place() {
    let fs = MemFilesystem::new();
    let config = config(&fs).batch_records(8).budget_bytes(1 << 30);
    let mut queue = SpillQueue::<(u64, String)>::open(DIR, 2, config).unwrap();
    for i in 0..6 {
        queue.push(item(i)).unwrap(); // 0, 1 in memory; 2..6 batched in the log
    }
    fs.set_capacity(Some(fs.used()));
    let error = queue.flush().unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(
        queue.held_back(),
        4,
        "the unwritten records are held in memory"
    );
    assert_eq!((queue.len(), queue.on_disk()), (6, 0));
    // Memory (2) and the held-back items (4) are over capacity: a push is refused, handed back.
    let refused = queue.push(item(6)).unwrap_err();
    assert!(refused.error.is_disk_full(), "{}", refused.error);
    assert_eq!(refused.into_inner(), item(6));
    // The consumer still gets everything, in order, with the disk full.
    let mut out = Vec::new();
    queue.take_into(5, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    // Room again: the next push goes behind the held-back item, in memory.
    queue.push(item(6)).unwrap();
    fs.set_capacity(None);
    queue.flush().unwrap();
    assert_eq!(queue.held_back(), 0, "written again");
    assert_eq!(queue.on_disk(), 2);
    queue.push(item(7)).unwrap();
    out.clear();
    queue.take_into(100, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(queue.is_empty());
}

/// The sink fails its stream naming how many items it received and could not write, and the
/// log holds exactly the others, in order.
#[tokio::test]
async fn ledger_the_sink_fails_naming_the_items_it_could_not_write() {
    let fs = MemFilesystem::new();
    let log = SpillLog::<u64>::open(DIR, config(&fs).batch_records(16)).unwrap();
    fs.set_capacity(Some(fs.used() + 1_000));
    let dropped = log.metrics();
    let (sink, outcome) = SpillSink::new(log);
    let emitted = Arc::new(AtomicU64::new(0));
    let count = emitted.clone();
    source::from_iter((0..10_000u64).inspect(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
    }))
    .subscribe(sink);
    let error = outcome.await.unwrap_err();
    let spill = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<weir_spill::SpillError>())
        .expect("a spill error");
    let lost = spill.unwritten_records().expect("names the count");
    assert!(
        error.to_string().contains("records are not written"),
        "{error}"
    );
    assert_eq!(error.stage(), Some("spill_to_disk"));
    fs.set_capacity(None);
    let log = SpillLog::<u64>::open(DIR, config(&fs)).unwrap();
    let mut kept = Vec::new();
    while let Some(record) = log.read().unwrap() {
        kept.push(record.item);
    }
    assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>());
    // Every item the sink received is written or counted: the error names those of the failed
    // write; items that arrived after the cancel are counted too.
    assert!(lost > 0);
    assert!(dropped.snapshot().dropped_unwritten >= lost);
    assert_eq!(
        kept.len() as u64 + dropped.snapshot().dropped_unwritten,
        emitted.load(Ordering::Relaxed),
    );
}
