//! Model-based property test of [`SpillLog`]: random sequences of append, flush, read (one record
//! or a batch), acknowledge and close-and-reopen on a real log with tiny segments, compared step by
//! step with a model that is a `VecDeque` of the unacknowledged items plus the read and acknowledged
//! positions.
//!
//! Checked after every step: reads are FIFO and return exactly the model's next items; a reader
//! that caught up has seen everything flushed; after a reopen everything not acknowledged comes back
//! (at-least-once), from the acknowledged position; a segment whose every record is acknowledged is
//! deleted (except the active one) and no segment holding an unacknowledged record is.

use std::collections::VecDeque;
use std::path::Path;

use proptest::prelude::*;
use weir_spill::{FsyncPolicy, SpillConfig, SpillLog};

type Item = (u64, Vec<u8>);

#[derive(Debug, Clone)]
enum Op {
    /// Append this many items (each with a payload of 0..40 bytes).
    Append(Vec<u8>),
    Flush,
    /// `read()` up to this many times, one record each.
    Read(usize),
    /// `read_batch(max)`.
    ReadBatch(usize),
    /// Acknowledge through a point between the acknowledged and the read position (a fraction in
    /// per mille of the gap), or past the read position (the log caps it).
    Ack(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0u8..40, 1..8).prop_map(Op::Append),
        1 => Just(Op::Flush),
        2 => (1usize..6).prop_map(Op::Read),
        2 => (1usize..12).prop_map(Op::ReadBatch),
        2 => (0u16..=1100).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

/// Tiny segments (a frame is 16 + ~12..52 bytes) so that rollover and deletion happen every few
/// records; batches of 3 so that some appends are written by a full batch, some only by a flush.
fn config() -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(160)
        .batch_records(3)
        .fsync(FsyncPolicy::Never)
        .ledger_every(1 << 20)
}

/// The model: every appended, unacknowledged item, in order, and the positions.
#[derive(Debug, Default)]
struct Model {
    /// Items `acked..next`, oldest first.
    items: VecDeque<Item>,
    acked: u64,
    read: u64,
    next: u64,
    /// Every record below this is written (a flush, a close or a reopen covered it).
    flushed: u64,
}

impl Model {
    fn item(&self, seq: u64) -> &Item {
        &self.items[(seq - self.acked) as usize]
    }
}

fn segment_firsts(dir: &Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}

fn check_read(model: &mut Model, seq: u64, item: &Item) -> Result<(), TestCaseError> {
    prop_assert_eq!(seq, model.read, "records come in order, none skipped");
    prop_assert!(seq < model.next, "only appended records are read");
    prop_assert_eq!(item, model.item(seq));
    model.read += 1;
    Ok(())
}

fn caught_up(model: &Model) -> Result<(), TestCaseError> {
    prop_assert!(
        model.read >= model.flushed,
        "the reader caught up at {} but {} records are flushed",
        model.read,
        model.flushed
    );
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SpillLog::<Item>::open(dir.path(), config()).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(sizes) => {
                for size in sizes {
                    let item = (model.next, vec![size; size as usize]);
                    prop_assert_eq!(log.append(&item).unwrap(), model.next);
                    model.items.push_back(item);
                    model.next += 1;
                }
            }
            Op::Flush => {
                let written = log.flush().unwrap();
                prop_assert_eq!(written.written, model.next);
                model.flushed = model.next;
            }
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
                let through = through.min(model.read);
                while model.acked < through {
                    model.items.pop_front();
                    model.acked += 1;
                }
            }
            Op::Reopen => {
                drop(log);
                log = SpillLog::open(dir.path(), config()).unwrap();
                // Closing wrote everything; the reader starts again at the acknowledged position.
                model.flushed = model.next;
                model.read = model.acked;
            }
        }
        prop_assert_eq!(log.acked(), model.acked);
        prop_assert_eq!(log.next_seq(), model.next);
        prop_assert_eq!(log.unread(), model.next - model.read);
        let firsts = segment_firsts(dir.path());
        prop_assert!(!firsts.is_empty(), "the active segment is always there");
        prop_assert!(
            firsts[0] <= model.acked,
            "segment {} was deleted with unacknowledged records (acknowledged: {})",
            firsts[0],
            model.acked
        );
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
    drop(log);
    let log = SpillLog::<Item>::open(dir.path(), config()).unwrap();
    let mut rest = Vec::new();
    while log.read_batch(64, &mut rest).unwrap() > 0 {}
    let rest: Vec<(u64, Item)> = rest.into_iter().map(|r| (r.seq, r.item)).collect();
    let expected: Vec<(u64, Item)> = (model.acked..).zip(model.items.iter().cloned()).collect();
    prop_assert_eq!(rest, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_fifo_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
