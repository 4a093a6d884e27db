//! The spill log against its invariants: round trip, rollover and deletion, budget, restart,
//! locking, torn tails, corruption and injected I/O faults.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use support::segments;
use weir_spill::fs::MemFilesystem;
use weir_spill::{
    BudgetFull, FsyncPolicy, OnCorruption, Placement, SpillConfig, SpillError, SpillLog, SpillQueue,
};

/// Small segments reach rollover quickly (a 40-byte item makes a ~57-byte frame).
fn small() -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(512)
        .budget_bytes(64 << 10)
        .batch_records(4)
}

fn item(i: u64) -> (u64, String) {
    (i, format!("payload-{i:032}"))
}

fn read_all(log: &SpillLog<(u64, String)>) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(record) = log.read().unwrap() {
        assert_eq!(record.item, item(record.item.0));
        seen.push(record.item.0);
    }
    seen
}

#[test]
fn round_trip_rollover_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::open(dir.path(), small()).unwrap();
    for i in 0..100 {
        assert_eq!(log.append(&item(i)).unwrap(), i);
    }
    assert_eq!(log.flush().unwrap().durable, 100);
    assert!(segments(dir.path()).len() > 5, "rolled over");
    let before = log.metrics().snapshot();
    assert_eq!(before.spilled_records, 100);
    assert!(before.oldest_age_ms.is_some());
    assert_eq!(read_all(&log), (0..100).collect::<Vec<_>>());
    log.ack_through(100).unwrap();
    let after = log.metrics().snapshot();
    assert_eq!(after.segments, 1, "only the active segment stays");
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(after.disk_bytes < before.disk_bytes);
    assert_eq!(after.oldest_age_ms, None);
    assert_eq!(after.replayed_records, 100);
}

#[test]
fn restart_replays_only_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SpillLog::open(dir.path(), small()).unwrap();
        for i in 0..50 {
            log.append(&item(i)).unwrap();
        }
        log.flush().unwrap();
        for _ in 0..20 {
            log.read().unwrap().unwrap();
        }
        log.ack_through(20).unwrap();
    }
    let log = SpillLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.next_seq(), 50);
    assert_eq!(read_all(&log), (20..50).collect::<Vec<_>>());
    // New records continue the numbering.
    assert_eq!(log.append(&item(50)).unwrap(), 50);
}

#[test]
fn a_directory_is_locked_by_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::<u64>::open(dir.path(), small()).unwrap();
    let second = SpillLog::<u64>::open(dir.path(), small()).unwrap_err();
    assert!(matches!(second, SpillError::Locked { .. }), "{second}");
    assert!(second.to_string().contains("already opened"));
    drop(log);
    SpillLog::<u64>::open(dir.path(), small()).unwrap();
}

#[test]
fn a_missing_directory_is_created_and_bad_configs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    SpillLog::<u64>::open(&nested, small()).unwrap();
    assert!(nested.join("ledger").exists());
    let tiny_budget = small().budget_bytes(600);
    assert!(matches!(
        SpillLog::<u64>::open(dir.path().join("x"), tiny_budget),
        Err(SpillError::Config(_))
    ));
}

#[test]
fn budget_rejects_then_frees_on_ack() {
    let dir = tempfile::tempdir().unwrap();
    let config = small().budget_bytes(1024).budget_full(BudgetFull::Reject);
    let log = SpillLog::open(dir.path(), config).unwrap();
    let mut accepted = 0;
    let error = loop {
        match log.append(&item(accepted)) {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(error.is_budget(), "{error}");
    assert!(log.metrics().snapshot().budget_rejections >= 1);
    assert!(log.metrics().snapshot().disk_bytes <= 1024);
    log.flush().unwrap();
    for _ in 0..accepted {
        log.read().unwrap().unwrap();
    }
    log.ack_through(accepted).unwrap();
    log.append(&item(accepted)).unwrap();
}

#[test]
fn an_append_after_close_is_refused_and_the_budget_holds_across_acknowledgements() {
    // The writer keeps the budget's room from its last look at the shared state and looks
    // again only when an append does not fit: a close must still refuse the very next append,
    // and room freed by a reader must be found, never overstated. Budgets that are not whole
    // numbers of 512-byte segments run out inside a segment (where appends go by the writer's
    // room, also after a batch was written there), not only at a roll (which always looks at
    // the state).
    for budget in (1024..1600).step_by(23) {
        fill_ack_and_close(budget);
    }
}

fn fill_ack_and_close(budget: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = small().budget_bytes(budget).budget_full(BudgetFull::Reject);
    let log = SpillLog::open(dir.path(), config).unwrap();
    let within = |log: &SpillLog<(u64, String)>| {
        let used = log.metrics().snapshot().disk_bytes;
        assert!(used <= budget, "{used} bytes on disk, budget {budget}");
    };
    let mut next = 0;
    for _round in 0..5 {
        let before = next;
        let error = loop {
            match log.append(&item(next)) {
                Ok(_) => next += 1,
                Err(error) => break error,
            }
            within(&log);
        };
        assert!(error.is_budget(), "{error}");
        assert!(
            next > before,
            "the room freed by the last round's acknowledgement is found (budget {budget})"
        );
        // What was accepted, written: still within the budget.
        log.flush().unwrap();
        within(&log);
        assert_eq!(read_all(&log), (before..next).collect::<Vec<_>>());
        log.ack_through(next).unwrap();
    }
    log.append(&item(next)).unwrap();
    log.close().unwrap();
    for _ in 0..2 {
        assert!(matches!(
            log.append(&item(next + 1)),
            Err(SpillError::Closed)
        ));
        assert!(matches!(
            log.try_append(&item(next + 1)),
            Err(SpillError::Closed)
        ));
        let _ = log.flush();
    }
    assert_eq!(
        log.next_seq(),
        next + 1,
        "nothing joined the log after its close"
    );
}

#[test]
fn a_wholly_acknowledged_segment_is_freed_when_the_writer_rolls_over() {
    // Budget: two 512-byte segments of eight ~58-byte frames each.
    let dir = tempfile::tempdir().unwrap();
    let config = small().budget_bytes(1024).budget_full(BudgetFull::Reject);
    let log = SpillLog::open(dir.path(), config).unwrap();
    for i in 0..8 {
        log.append(&item(i)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "eight records fit in the first segment"
    );
    assert_eq!(read_all(&log), (0..8).collect::<Vec<_>>());
    log.ack_through(8).unwrap();
    // Everything written so far is acknowledged; the first segment is the active one, so it stays.
    // Ten more records (fewer than two segments' worth) roll over twice: the first roll seals the
    // wholly acknowledged segment, which must be freed then, or the second roll finds the budget
    // full of acknowledged data.
    for i in 8..18 {
        log.append(&item(i))
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
    }
    log.flush().unwrap();
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(read_all(&log), (8..18).collect::<Vec<_>>());
}

#[test]
fn budget_blocks_until_a_reader_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let config = small().budget_bytes(1024).budget_full(BudgetFull::Block {
        timeout: Duration::from_secs(5),
    });
    let log = SpillLog::<(u64, String)>::open(dir.path(), config).unwrap();
    let reader = log.clone();
    let consumer = std::thread::spawn(move || {
        let mut next = 0;
        while next < 200 {
            match reader.read().unwrap() {
                Some(record) => {
                    assert_eq!(record.item.0, next);
                    next += 1;
                    reader.ack_through(record.seq + 1).unwrap();
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    for i in 0..200 {
        log.append(&item(i)).unwrap();
    }
    log.flush().unwrap();
    consumer.join().unwrap();
    // With nobody reading, a block times out with a clear error.
    let config = small().budget_bytes(1024).budget_full(BudgetFull::Block {
        timeout: Duration::from_millis(50),
    });
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::open(dir.path(), config).unwrap();
    let error = (0..100).find_map(|i| log.append(&item(i)).err()).unwrap();
    assert!(matches!(error, SpillError::BudgetTimeout { .. }), "{error}");
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SpillLog::open(dir.path(), small()).unwrap();
        for i in 0..5 {
            log.append(&item(i)).unwrap();
        }
        log.flush().unwrap();
    }
    let last = segments(dir.path()).pop().unwrap();
    let good = std::fs::metadata(&last).unwrap().len();
    // A crash mid-write: half a frame of garbage after the last good record.
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xAB; 30]);
    std::fs::write(&last, &bytes).unwrap();
    let log = SpillLog::open(dir.path(), small()).unwrap();
    let snapshot = log.metrics().snapshot();
    assert_eq!(snapshot.truncations, 1);
    assert_eq!(snapshot.truncated_bytes, 30);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good);
    assert_eq!(read_all(&log), (0..5).collect::<Vec<_>>());
    assert_eq!(log.append(&item(5)).unwrap(), 5);
}

fn corrupt_first_segment(dir: &Path) -> (PathBuf, u64) {
    {
        let log = SpillLog::open(dir, small()).unwrap();
        for i in 0..40 {
            log.append(&item(i)).unwrap();
        }
        log.flush().unwrap();
    }
    let first = segments(dir).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    // Flip a payload byte of the second record (36-byte header, 16-byte frame header).
    let frame = (bytes.len() as u64 - 36) / 8; // 8 records of equal size per 512-byte segment
    let second = 36 + frame;
    bytes[(second + 20) as usize] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    (first, second)
}

#[test]
fn corruption_in_the_middle_fails_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (file, offset) = corrupt_first_segment(dir.path());
    let log = SpillLog::<(u64, String)>::open(dir.path(), small()).unwrap();
    assert_eq!(log.read().unwrap().unwrap().item.0, 0);
    let error = log.read().unwrap_err();
    match &error {
        SpillError::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, &file);
            assert_eq!(*o, offset);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(error.to_string().contains("crc mismatch"), "{error}");
    // It stays failed: the reader does not silently move on.
    assert!(log.read().unwrap_err().is_corruption());
}

#[test]
fn corruption_in_the_middle_can_be_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    corrupt_first_segment(dir.path());
    let config = small().on_corruption(OnCorruption::Skip);
    let log = SpillLog::<(u64, String)>::open(dir.path(), config).unwrap();
    let seen = read_all(&log);
    assert_eq!(seen.len(), 39);
    assert!(!seen.contains(&1));
    assert_eq!(log.metrics().snapshot().corruptions, 1);
}

/// Sealed segments are mapped (`mmap`) by default and read with `read(2)` when
/// `mapped_reads(false)`: both give the same records, report the same corruption at the same file
/// and offset, and skip the same record.
#[test]
fn mapped_and_read_paths_agree_on_records_and_corruption() {
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for mapped in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (file, offset) = corrupt_first_segment(dir.path());
        let config = small().mapped_reads(mapped);
        let log = SpillLog::<(u64, String)>::open(dir.path(), config).unwrap();
        let mut out = Vec::new();
        let error = log.read_batch(10, &mut out).unwrap_err();
        assert_eq!(
            out.len(),
            1,
            "the record before the corrupt one is delivered"
        );
        match error {
            SpillError::Corrupt {
                file: f, offset: o, ..
            } => {
                assert_eq!((&f, o), (&file, offset));
                failures.push((f, o));
            }
            other => panic!("expected corruption, got {other}"),
        }
        drop(log);
        let config = small()
            .mapped_reads(mapped)
            .on_corruption(OnCorruption::Skip);
        let log = SpillLog::<(u64, String)>::open(dir.path(), config).unwrap();
        skipped.push(read_all(&log));
    }
    assert_eq!(skipped[0], skipped[1]);
    assert_eq!(skipped[0].len(), 39);
}

/// Reading through maps while acknowledging: the log deletes wholly acknowledged segments, some of
/// them still mapped by the reader (unlinking a mapped file only removes its name), and every
/// record comes back once, in order, from many sealed segments and the active one.
#[test]
fn mapped_segments_can_be_deleted_while_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::open(dir.path(), small().budget_bytes(1 << 20)).unwrap();
    for i in 0..300 {
        log.append(&item(i)).unwrap();
    }
    log.flush().unwrap();
    assert!(segments(dir.path()).len() > 20);
    let mut seen = Vec::new();
    let mut batch = Vec::new();
    let mut next = 300;
    // 7 per batch: batches end in the middle of segments (8 records each) and at their ends.
    while log.read_batch(7, &mut batch).unwrap() > 0 {
        log.ack_through(batch.last().unwrap().seq + 1).unwrap();
        seen.extend(batch.drain(..).map(|r| r.item.0));
        // Appends meanwhile: the active segment is read with read(2), then sealed and mapped.
        if next < 330 {
            log.append(&item(next)).unwrap();
            next += 1;
        }
    }
    log.flush().unwrap();
    while log.read_batch(7, &mut batch).unwrap() > 0 {
        log.ack_through(batch.last().unwrap().seq + 1).unwrap();
        seen.extend(batch.drain(..).map(|r| r.item.0));
    }
    assert_eq!(seen, (0..next).collect::<Vec<_>>());
    assert!(
        segments(dir.path()).len() <= 2,
        "acknowledged segments are deleted"
    );
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let fs = MemFilesystem::new();
    let config = || small().filesystem(Arc::new(fs.clone()));
    let log = SpillLog::open("/spill", config()).unwrap();
    for i in 0..3 {
        log.append(&item(i)).unwrap();
    }
    assert_eq!(log.flush().unwrap().durable, 3);
    fs.set_capacity(Some(fs.used() + 20));
    log.append(&item(3)).unwrap();
    let error = log.flush().unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert!(error.to_string().contains("write batch"), "{error}");
    fs.set_capacity(None);
    // The failed batch was kept: it is written before the next record, numbering continues.
    assert_eq!(log.append(&item(4)).unwrap(), 4);
    log.flush().unwrap();
    assert_eq!(read_all(&log), vec![0, 1, 2, 3, 4]);
    drop(log);
    // At open, a full disk (the ledger cannot be written) is an error too.
    fs.set_capacity(Some(fs.used()));
    let error = SpillLog::<u64>::open("/spill", config()).unwrap_err();
    assert!(matches!(error, SpillError::DiskFull { .. }), "{error}");
}

/// A batch the interval syncer fails to write is kept, and reported by the next call while the
/// disk stays full.
#[test]
fn a_failed_background_write_is_reported_by_the_next_call() {
    let fs = MemFilesystem::new();
    let config = small()
        .batch_records(1_000)
        .fsync(FsyncPolicy::Interval(Duration::from_millis(5)))
        .filesystem(Arc::new(fs.clone()));
    let log = SpillLog::open("/spill", config).unwrap();
    fs.set_capacity(Some(fs.used()));
    log.append(&item(0)).unwrap();
    // The syncer tries to write the batch within a few intervals and fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let error = loop {
        std::thread::sleep(Duration::from_millis(10));
        if let Err(error) = log.append(&item(1)) {
            break error;
        }
        assert!(std::time::Instant::now() < deadline, "no error reported");
    };
    assert!(error.is_disk_full(), "{error}");
}

#[test]
fn a_zero_fsync_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = small().fsync(FsyncPolicy::Interval(Duration::ZERO));
    let error = SpillLog::<u64>::open(dir.path(), config).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("fsync interval must be positive"),
        "{error}"
    );
}

#[cfg(unix)]
#[test]
fn an_unwritable_directory_fails_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores permissions: only check when the directory really is read-only.
    if std::fs::write(locked.join("probe"), b"x").is_err() {
        let error = SpillLog::<u64>::open(&locked, small()).unwrap_err();
        assert!(matches!(error, SpillError::NotWritable { .. }), "{error}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn every_fsync_policy_round_trips() {
    for policy in [
        FsyncPolicy::EveryBatch,
        FsyncPolicy::Interval(Duration::from_millis(1)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SpillLog::open(dir.path(), small().fsync(policy)).unwrap();
            for i in 0..30 {
                log.append(&item(i)).unwrap();
            }
        }
        let log = SpillLog::open(dir.path(), small().fsync(policy)).unwrap();
        assert_eq!(read_all(&log), (0..30).collect::<Vec<_>>(), "{policy:?}");
    }
}

/// Under `Interval(d)`, a log whose writes stop is still made durable within about `d`: the batch
/// left in memory is written and fsynced by the log's syncer thread, with no call from the caller.
#[test]
fn interval_fsync_makes_a_quiet_log_durable() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(20);
    let config = small()
        .batch_records(1_000)
        .fsync(FsyncPolicy::Interval(every));
    let log = SpillLog::open(dir.path(), config).unwrap();
    for i in 0..5 {
        log.append(&item(i)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.metrics().snapshot().spilled_records < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch was never written"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Nothing is left to write, and what the syncer wrote is durable.
    let written = log.flush().unwrap();
    assert_eq!((written.written, written.durable), (5, 5));
    drop(log);
    let log = SpillLog::open(dir.path(), small()).unwrap();
    assert_eq!(read_all(&log), (0..5).collect::<Vec<_>>());
}

/// A tiny deterministic generator (xorshift), so the tests need no extra crate.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn queue_keeps_fifo_order_under_random_pushes_and_takes() {
    for seed in 1..=5u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = SpillQueue::open(dir.path(), 8, small().budget_bytes(1 << 20)).unwrap();
        let mut rng = Rng(seed * 0x9E37_79B9);
        let (mut pushed, mut taken) = (0u64, Vec::new());
        let mut spilled = 0;
        while taken.len() < 2_000 {
            if pushed < 2_000 && rng.below(3) != 0 {
                for _ in 0..rng.below(20) {
                    if pushed < 2_000 {
                        if let Placement::Spilled(_) = queue.push(item(pushed)).unwrap() {
                            spilled += 1;
                        }
                        pushed += 1;
                    }
                }
            } else {
                let mut out = Vec::new();
                queue
                    .take_into(rng.below(16) as usize + 1, &mut out)
                    .unwrap();
                taken.extend(out.into_iter().map(|(i, s)| {
                    assert_eq!(s, item(i).1);
                    i
                }));
            }
        }
        assert_eq!(taken, (0..2_000).collect::<Vec<_>>(), "seed {seed}");
        assert!(spilled > 100, "the disk path was exercised ({spilled})");
        assert!(queue.is_empty());
        assert_eq!(queue.log().unacked(), 0);
    }
}

#[test]
fn queue_recovers_spilled_items_first_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut queue = SpillQueue::open(dir.path(), 2, small()).unwrap();
        for i in 0..10 {
            queue.push(item(i)).unwrap();
        }
        assert_eq!(queue.on_disk(), 8);
        // Memory items (0, 1) are lost in a "crash"; the 8 on disk survive.
    }
    let mut queue = SpillQueue::open(dir.path(), 2, small()).unwrap();
    assert!(queue.is_spilling());
    queue.push(item(100)).unwrap();
    let mut out = Vec::new();
    queue.take_into(100, &mut out).unwrap();
    let order: Vec<u64> = out.into_iter().map(|(i, _)| i).collect();
    assert_eq!(order, vec![2, 3, 4, 5, 6, 7, 8, 9, 100]);
}

/// A segment deleted by someone else while the log is open is an error naming it: the reader
/// does not look for it forever.
#[test]
fn a_segment_that_vanishes_under_the_log_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::open(dir.path(), small()).unwrap();
    for i in 0..30 {
        log.append(&item(i)).unwrap();
    }
    log.flush().unwrap();
    let first = segments(dir.path()).remove(0);
    std::fs::remove_file(&first).unwrap();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(log.read().map(|r| r.map(|r| r.seq))));
    let error = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("the read returns")
        .unwrap_err();
    assert!(
        error.to_string().contains(&first.display().to_string()),
        "{error}"
    );
}

/// An item, or (`None`) one whose encoding fails part way, after it has written bytes.
struct Maybe(Option<(u64, String)>);

impl serde::Serialize for Maybe {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        if let Some(item) = &self.0 {
            return item.serialize(serializer);
        }
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&0xABCD_u64)?;
        tuple.serialize_element("some bytes already encoded")?;
        drop(tuple);
        Err(S::Error::custom("this item cannot be encoded"))
    }
}

impl<'de> serde::Deserialize<'de> for Maybe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <(u64, String)>::deserialize(deserializer).map(|item| Maybe(Some(item)))
    }
}

#[test]
fn an_item_that_fails_to_encode_leaves_nothing_behind() {
    // Items are encoded straight into the batch: the bytes a failed encoding wrote must go, in
    // the middle of a batch and where the batch is full (the item is then encoded aside).
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::<Maybe>::open(dir.path(), small()).unwrap();
    for i in 0..12 {
        if i % 3 == 0 || i % 4 == 0 {
            assert!(matches!(
                log.append(&Maybe(None)),
                Err(SpillError::Encode(_))
            ));
        }
        assert_eq!(log.append(&Maybe(Some(item(i)))).unwrap(), i);
    }
    log.flush().unwrap();
    let mut seen = Vec::new();
    while let Some(record) = log.read().unwrap() {
        let got = record.item.0.unwrap();
        assert_eq!(got, item(got.0));
        seen.push(got.0);
    }
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
}

/// Encodes its number, then panics before its text when the number is 666.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Risky(u64, String);

impl serde::Serialize for Risky {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleStruct;
        let mut fields = serializer.serialize_tuple_struct("Risky", 2)?;
        fields.serialize_field(&self.0)?;
        if self.0 == 666 {
            panic!("the user's encoder failed half way");
        }
        fields.serialize_field(&self.1)?;
        fields.end()
    }
}

#[test]
fn an_encoder_that_panics_half_way_is_an_error_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::<Risky>::open(dir.path(), small()).unwrap();
    assert_eq!(log.append(&Risky(1, "one".into())).unwrap(), 0);
    let error = log.append(&Risky(666, "never".into())).unwrap_err();
    assert!(
        matches!(error, SpillError::EncodePanicked(_)),
        "a panic in the item's encoder is this append's error, not an unwind: {error}"
    );
    assert_eq!(
        error.to_string(),
        "spill log: encoding an item panicked: the user's encoder failed half way"
    );
    assert_eq!(log.append(&Risky(2, "two".into())).unwrap(), 1);
    log.flush().unwrap();
    let mut seen = Vec::new();
    while let Some(record) = log.read().unwrap() {
        seen.push(record.item);
    }
    assert_eq!(seen, vec![Risky(1, "one".into()), Risky(2, "two".into())]);
}

/// A ledger lost (corrupt, replaced by an empty one under `OnCorruption::Skip`) after segments
/// were acknowledged and deleted: the records before the first segment left are gone, not
/// unread. The log counted them as unread (what a queue over it takes as recovered, then as
/// skipped corrupt records once the reader jumps over them).
#[test]
fn records_deleted_before_a_lost_ledger_are_not_counted_unread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SpillLog::open(dir.path(), small()).unwrap();
        for i in 0..50 {
            log.append(&item(i)).unwrap();
        }
        log.flush().unwrap();
        for _ in 0..30 {
            log.read().unwrap().unwrap();
        }
        log.ack_through(30).unwrap();
    }
    std::fs::write(dir.path().join("ledger"), b"not a ledger").unwrap();
    let log = SpillLog::open(dir.path(), small().on_corruption(OnCorruption::Skip)).unwrap();
    let unread = log.unread();
    let replayed = read_all(&log);
    assert!(replayed.len() >= 20 && replayed.len() < 50, "{replayed:?}");
    assert_eq!(unread, replayed.len() as u64, "{replayed:?}");
    assert_eq!(log.acked() + unread, 50);
}
