//! Model-based property test of [`SpillLog`]: random sequences of append, flush, read (one record
//! or a batch), acknowledge, close-and-reopen and (with faults) injected write failures, taking
//! unwritten records back and process crashes, on a real log with tiny segments, compared step by
//! step with a model: every accepted item by sequence number, plus the read and acknowledged
//! positions.
//!
//! Checked after every step: an append that returns `Ok` holds its item and one that fails does
//! not (whatever the disk does); sequence numbers stay dense; reads are FIFO and return exactly
//! the model's next items; a reader that caught up has seen everything flushed; after a reopen
//! everything not acknowledged comes back (at-least-once), and after a crash exactly the records
//! written and not acknowledged; a segment whose every record is acknowledged is deleted (except
//! the active one) and no segment holding an unacknowledged record is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use weir_spill::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use weir_spill::fs::MemFilesystem;
use weir_spill::{FsyncPolicy, SpillConfig, SpillLog, Spilled};

type Item = (u64, Vec<u8>);

#[derive(Debug, Clone)]
enum Fault {
    /// The device fills up after this many more bytes.
    Full(u16),
    /// The next writes to a segment fail.
    FailWrites(u32),
    /// The next fsyncs fail.
    FailSyncs(u32),
    /// The next file creations (segment rolls) fail.
    FailCreates(u32),
}

#[derive(Debug, Clone)]
enum Op {
    /// Append items with these payload sizes.
    Append(Vec<u8>),
    Flush,
    /// `read()` up to this many times, one record each.
    Read(usize),
    /// `read_batch(max)`.
    ReadBatch(usize),
    /// Acknowledge through a point between the acknowledged and the read position (a fraction in
    /// per mille of the gap), or past the read position (the log caps it).
    Ack(u16),
    /// Close (faults stay on: a close whose last write fails drops, and counts, the unwritten
    /// records), heal, reopen.
    Reopen,
    /// A process crash (the log is leaked, not closed), then heal and reopen.
    Crash,
    /// `take_unwritten`.
    TakeBack,
    Fault(Fault),
    Heal,
}

fn plain_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u8..40, 1..8).prop_map(Op::Append),
        1 => Just(Op::Flush),
        2 => (1usize..6).prop_map(Op::Read),
        2 => (1usize..12).prop_map(Op::ReadBatch),
        2 => (0u16..=1100).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

fn faulty_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => plain_op(),
        1 => Just(Op::Crash),
        1 => Just(Op::TakeBack),
        1 => (0u16..400).prop_map(|slack| Op::Fault(Fault::Full(slack))),
        1 => (1u32..3).prop_map(|n| Op::Fault(Fault::FailWrites(n))),
        1 => (1u32..3).prop_map(|n| Op::Fault(Fault::FailSyncs(n))),
        1 => (1u32..3).prop_map(|n| Op::Fault(Fault::FailCreates(n))),
        2 => Just(Op::Heal),
    ]
}

/// Tiny segments (a frame is 16 + ~12..52 bytes) so that rollover and deletion happen every few
/// records; batches of 3 so that some appends are written by a full batch, some only by a flush.
fn config(fsync: FsyncPolicy) -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(160)
        .batch_records(3)
        .fsync(fsync)
        .ledger_every(1 << 20)
}

/// The model.
#[derive(Debug, Default)]
struct Model {
    /// Every accepted item, by sequence number (`len()` is the next sequence number).
    all: Vec<Item>,
    acked: u64,
    read: u64,
    /// Every record below this is written (a flush reported it, or a reopen or crash found it).
    flushed: u64,
    /// The acknowledged position before the last reopen or crash: a reader may start past
    /// `acked` (up to here) when the ledger on disk lagged and acknowledged segments were deleted.
    floor: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.all.len() as u64
    }
}

/// Where the log lives: a real temporary directory, or an in-memory filesystem with faults.
struct Place {
    dir: PathBuf,
    mem: Option<MemFilesystem>,
    _tmp: Option<tempfile::TempDir>,
}

impl Place {
    fn config(&self, fsync: FsyncPolicy) -> SpillConfig {
        match &self.mem {
            Some(fs) => config(fsync).filesystem(Arc::new(fs.clone())),
            None => config(fsync),
        }
    }

    fn open(&self, fsync: FsyncPolicy) -> SpillLog<Item> {
        SpillLog::open(&self.dir, self.config(fsync)).expect("open the log")
    }

    /// The first sequence numbers of the segment files holding at least one record.
    fn segment_firsts(&self) -> Vec<u64> {
        let files: Vec<(PathBuf, u64)> = match &self.mem {
            Some(fs) => fs
                .files(&self.dir)
                .into_iter()
                .map(|path| {
                    let len = fs.read_file(&path).map_or(0, |b| b.len() as u64);
                    (path, len)
                })
                .collect(),
            None => std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    (entry.path(), entry.metadata().unwrap().len())
                })
                .collect(),
        };
        let mut firsts: Vec<u64> = files
            .into_iter()
            .filter(|(_, len)| *len > SEGMENT_HEADER_LEN + FRAME_HEADER_LEN)
            .filter_map(|(path, _)| name_first(&path))
            .collect();
        firsts.sort_unstable();
        firsts
    }

    fn heal(&self) {
        if let Some(fs) = &self.mem {
            fs.set_capacity(None);
            fs.fail_writes(0);
            fs.fail_syncs(0);
            fs.fail_creates(0);
        }
    }
}

fn name_first(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

fn check_read(model: &mut Model, seq: u64, item: &Item) -> Result<(), TestCaseError> {
    if seq != model.read {
        // Only records acknowledged before a reopen may be skipped (their segment is gone).
        prop_assert!(
            seq > model.read && seq <= model.floor,
            "records come in order, none skipped: read {seq}, expected {}",
            model.read
        );
        model.read = seq;
    }
    prop_assert!(seq < model.next(), "only appended records are read");
    prop_assert_eq!(item, &model.all[seq as usize]);
    model.read += 1;
    Ok(())
}

fn caught_up(model: &Model) -> Result<(), TestCaseError> {
    // Records acknowledged before a reopen (below `floor`) may be gone with their segment.
    prop_assert!(
        model.read >= model.flushed || model.flushed <= model.floor,
        "the reader caught up at {} but {} records are flushed",
        model.read,
        model.flushed
    );
    Ok(())
}

/// After a reopen or crash: the log's positions, compared with what the model allows.
fn reopened(model: &mut Model, log: &SpillLog<Item>) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.next_seq(), model.next());
    // At-least-once: the ledger may lag behind the acknowledgements, never run ahead.
    prop_assert!(log.acked() <= model.acked);
    model.floor = model.floor.max(model.acked);
    model.acked = log.acked();
    model.read = model.acked;
    model.flushed = model.next();
    Ok(())
}

fn run(ops: Vec<Op>, fsync: FsyncPolicy, faults: bool) -> Result<(), TestCaseError> {
    let place = if faults {
        Place {
            dir: PathBuf::from("/spill"),
            mem: Some(MemFilesystem::new()),
            _tmp: None,
        }
    } else {
        let tmp = tempfile::tempdir().unwrap();
        Place {
            dir: tmp.path().to_path_buf(),
            mem: None,
            _tmp: Some(tmp),
        }
    };
    let mut log = place.open(fsync);
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(sizes) => {
                for size in sizes {
                    let item = (model.next(), vec![size; size as usize]);
                    match log.append(&item) {
                        Ok(seq) => {
                            prop_assert_eq!(seq, model.next(), "dense sequence numbers");
                            model.all.push(item);
                        }
                        Err(error) => {
                            prop_assert!(faults, "append failed without a fault: {}", error);
                            // A refused item was not appended; the log still holds what it had.
                            prop_assert_eq!(log.next_seq(), model.next(), "{}", error);
                            if let Some(records) = error.unwritten_records() {
                                prop_assert_eq!(records, log.unwritten());
                            }
                        }
                    }
                }
            }
            Op::Flush => match log.flush() {
                Ok(written) => {
                    prop_assert_eq!(written.written, model.next());
                    prop_assert_eq!(log.unwritten(), 0);
                    model.flushed = model.next();
                }
                Err(error) => {
                    prop_assert!(faults, "flush failed without a fault: {}", error);
                    prop_assert_eq!(error.unwritten_records().unwrap_or(0), log.unwritten());
                }
            },
            Op::Read(times) => {
                for _ in 0..times {
                    match log.read().unwrap() {
                        Some(record) => check_read(&mut model, record.seq, &record.item)?,
                        None => {
                            caught_up(&model)?;
                            break;
                        }
                    }
                }
            }
            Op::ReadBatch(max) => {
                let mut out = Vec::new();
                let n = log.read_batch(max, &mut out).unwrap();
                prop_assert_eq!(n, out.len());
                prop_assert!(n <= max);
                for record in &out {
                    check_read(&mut model, record.seq, &record.item)?;
                }
                if n < max {
                    caught_up(&model)?;
                }
            }
            Op::Ack(per_mille) => {
                let gap = model.read - model.acked;
                let through = model.acked + gap * u64::from(per_mille) / 1000;
                log.ack_through(through).unwrap();
                // The log caps an acknowledgement at what was read.
                model.acked = model.acked.max(through.min(model.read));
            }
            Op::TakeBack => {
                let unwritten = log.unwritten();
                let mut back: Vec<Spilled<Item>> = Vec::new();
                prop_assert_eq!(log.take_unwritten(&mut back), unwritten);
                let first = model.next() - unwritten;
                let expected: Vec<(u64, Item)> = (first..)
                    .zip(model.all[first as usize..].iter().cloned())
                    .collect();
                let back: Vec<(u64, Item)> = back.into_iter().map(|r| (r.seq, r.item)).collect();
                prop_assert_eq!(back, expected, "the unwritten records, in order");
                model.all.truncate(first as usize);
                prop_assert_eq!(log.next_seq(), model.next());
            }
            Op::Reopen => {
                let metrics = log.metrics();
                let dropped = metrics.snapshot().dropped_unwritten;
                let unwritten = log.unwritten();
                drop(log);
                // A close whose last write failed drops the unwritten records, and counts them.
                let lost = metrics.snapshot().dropped_unwritten - dropped;
                prop_assert!(lost == 0 || lost >= unwritten);
                model.all.truncate(model.all.len() - lost as usize);
                place.heal();
                log = place.open(fsync);
                reopened(&mut model, &log)?;
            }
            Op::Crash => {
                let written = log.acked() + log.unacked();
                let fs = place
                    .mem
                    .as_ref()
                    .expect("crashes run on the in-memory filesystem");
                fs.crash();
                std::mem::forget(log);
                // What was written survives; what was only batched (or failed) does not.
                model.all.truncate(written as usize);
                place.heal();
                log = place.open(fsync);
                reopened(&mut model, &log)?;
            }
            Op::Fault(fault) => {
                let fs = place
                    .mem
                    .as_ref()
                    .expect("faults need the in-memory filesystem");
                match fault {
                    Fault::Full(slack) => fs.set_capacity(Some(fs.used() + u64::from(slack))),
                    Fault::FailWrites(n) => fs.fail_writes(n),
                    Fault::FailSyncs(n) => fs.fail_syncs(n),
                    Fault::FailCreates(n) => fs.fail_creates(n),
                }
            }
            Op::Heal => place.heal(),
        }
        prop_assert_eq!(log.acked(), model.acked);
        prop_assert_eq!(log.next_seq(), model.next());
        prop_assert!(log.unread() <= model.next() - model.read);
        let firsts = place.segment_firsts();
        if let Some(&first) = firsts.first() {
            prop_assert!(
                first <= model.acked.max(model.floor),
                "segment {} was deleted with unacknowledged records (acknowledged: {})",
                first,
                model.acked
            );
        }
        for pair in firsts.windows(2) {
            prop_assert!(
                pair[1] > model.acked,
                "segment {} is wholly acknowledged (acknowledged: {}) but not deleted",
                pair[0],
                model.acked
            );
        }
    }
    // At-least-once: after a final reopen, everything not acknowledged comes back, in order.
    place.heal();
    let metrics = log.metrics();
    let dropped = metrics.snapshot().dropped_unwritten;
    drop(log);
    prop_assert_eq!(
        metrics.snapshot().dropped_unwritten,
        dropped,
        "a healthy close drops nothing"
    );
    let log = place.open(fsync);
    let mut rest = Vec::new();
    while log.read_batch(64, &mut rest).unwrap() > 0 {}
    let first = rest.first().map_or(model.next(), |r| r.seq);
    prop_assert!(first <= model.acked.max(model.floor));
    let rest: Vec<(u64, Item)> = rest.into_iter().map(|r| (r.seq, r.item)).collect();
    let expected: Vec<(u64, Item)> = (first..)
        .zip(model.all[first as usize..].iter().cloned())
        .collect();
    prop_assert_eq!(rest, expected);
    Ok(())
}

fn fsync_policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![Just(FsyncPolicy::Never), Just(FsyncPolicy::EveryBatch)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_fifo_model(ops in prop::collection::vec(plain_op(), 1..60)) {
        run(ops, FsyncPolicy::Never, false)?;
    }

    /// The ledger under a failing disk: full, failing writes, fsyncs and segment creations,
    /// crashes. Every accepted item is read back, taken back, or counted as dropped by a close.
    #[test]
    fn ledger_the_log_behaves_like_a_fifo_model_under_write_faults(
        ops in prop::collection::vec(faulty_op(), 1..80),
        fsync in fsync_policy(),
    ) {
        run(ops, fsync, true)?;
    }
}
