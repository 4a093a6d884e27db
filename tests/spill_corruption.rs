//! Bad data never panics: truncated, bit-flipped and random segment files go through a whole log
//! (open with crash recovery, then reads, under both corruption policies) on an in-memory
//! filesystem; each gives records, a counted truncation or a clear error naming file and offset.

use std::path::Path;
use std::sync::Arc;

use weir_spill::format::{self, SegmentHeader};
use weir_spill::fs::MemFilesystem;
use weir_spill::{OnCorruption, SpillConfig, SpillError, SpillLog};

const MAX_RECORD: u32 = 1 << 16;
const DIR: &str = "/spill";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A segment of `records` records, and the offset where each record ends.
fn good_segment(records: u64) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = SegmentHeader {
        first_seq: 0,
        created_ms: 1,
    }
    .encode()
    .to_vec();
    let mut ends = Vec::new();
    for i in 0..records {
        let payload = postcard::to_allocvec(&(i, format!("record {i}"))).unwrap();
        format::encode_record(&mut bytes, &payload, 1_000 + i);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// Puts `bytes` as the first segment of a fresh log directory, opens the log and reads everything.
/// The segment is the last one (recovered at open, then read as the active segment) or, when
/// `sealed`, one followed by an empty segment (read as a sealed segment, with no recovery).
fn through_the_log(bytes: &[u8], policy: OnCorruption, sealed: bool) -> Result<u64, SpillError> {
    let fs = MemFilesystem::new();
    fs.write_file(&Path::new(DIR).join("00000000000000000000.seg"), bytes);
    if sealed {
        let last = SegmentHeader {
            first_seq: 1 << 20,
            created_ms: 2,
        };
        fs.write_file(
            &Path::new(DIR).join("00000000000001048576.seg"),
            &last.encode(),
        );
    }
    let config = SpillConfig::new()
        .segment_bytes(1 << 20)
        .max_record_bytes(MAX_RECORD)
        .on_corruption(policy)
        .filesystem(Arc::new(fs));
    let log = SpillLog::<(u64, String)>::open(DIR, config)?;
    let mut read = 0;
    while let Some(record) = log.read()? {
        assert_eq!(
            record.item.0, record.seq,
            "a record that passes its crc is the one written"
        );
        read += 1;
    }
    Ok(read)
}

#[test]
fn truncated_files_lose_only_the_torn_tail() {
    let (bytes, ends) = good_segment(20);
    for cut in 0..bytes.len() {
        // Every prefix is what a crash can leave: the log opens and replays the whole records.
        let read = through_the_log(&bytes[..cut], OnCorruption::Fail, false)
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = ends.iter().filter(|&&end| end <= cut).count() as u64;
        assert_eq!(read, whole, "cut at {cut}");
    }
}

#[test]
fn bit_flips_are_detected_or_reported() {
    let (bytes, _) = good_segment(6);
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        for (policy, sealed) in [
            (OnCorruption::Fail, false),
            (OnCorruption::Skip, false),
            (OnCorruption::Fail, true),
            (OnCorruption::Skip, true),
        ] {
            match through_the_log(&flipped, policy, sealed) {
                Ok(read) => assert!(read <= 6, "bit {bit}: at most the records written"),
                Err(error) => {
                    assert!(error.is_corruption(), "bit {bit}: {error}");
                    assert!(
                        error.to_string().contains(".seg"),
                        "names the file: {error}"
                    );
                }
            }
        }
    }
}

#[test]
fn random_files_never_panic() {
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let header = SegmentHeader {
        first_seq: 0,
        created_ms: 0,
    }
    .encode();
    for round in 0..300 {
        let len = (rng.next() % 2_000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 {
            // Half the files get a valid header, so the record parser sees garbage too.
            bytes.splice(0..0, header);
        }
        for policy in [OnCorruption::Fail, OnCorruption::Skip] {
            for sealed in [false, true] {
                let _ = through_the_log(&bytes, policy, sealed);
            }
        }
    }
}

#[test]
fn a_corrupt_ledger_is_a_clear_error_or_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SpillLog::<u64>::open(dir.path(), SpillConfig::new()).unwrap();
        log.append(&7).unwrap();
    }
    std::fs::write(dir.path().join("ledger"), b"garbage").unwrap();
    let error = SpillLog::<u64>::open(dir.path(), SpillConfig::new()).unwrap_err();
    assert!(error.to_string().contains("ledger"), "{error}");
    let log = SpillLog::<u64>::open(
        dir.path(),
        SpillConfig::new().on_corruption(OnCorruption::Skip),
    )
    .unwrap();
    assert_eq!(log.read().unwrap().unwrap().item, 7);
}
