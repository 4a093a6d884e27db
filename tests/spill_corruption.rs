//! Bad data never panics: truncated, bit-flipped and random segment files go through the segment
//! reader (`format::scan_segment`, the fuzz target's entry point) and through a whole log (open,
//! recovery, reads); each gives records, a counted truncation or a clear error naming file and offset.

use std::path::Path;

use weir_spill::format::{self, SegmentHeader};
use weir_spill::{OnCorruption, SpillConfig, SpillError, SpillLog};

const MAX_RECORD: u32 = 1 << 16;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn good_segment(records: u64) -> Vec<u8> {
    let mut bytes = SegmentHeader {
        first_seq: 0,
        created_ms: 1,
    }
    .encode()
    .to_vec();
    for i in 0..records {
        let payload = postcard::to_allocvec(&(i, format!("record {i}"))).unwrap();
        format::encode_record(&mut bytes, &payload, 1_000 + i);
    }
    bytes
}

/// Puts `bytes` as the only segment of a fresh log directory, opens the log and reads everything.
fn through_the_log(dir: &Path, bytes: &[u8], policy: OnCorruption) -> Result<u64, SpillError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("00000000000000000000.seg"), bytes).unwrap();
    let config = SpillConfig::new()
        .segment_bytes(1 << 20)
        .max_record_bytes(MAX_RECORD)
        .on_corruption(policy);
    let log = SpillLog::<(u64, String)>::open(dir, config)?;
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
    let bytes = good_segment(20);
    let dir = tempfile::tempdir().unwrap();
    for cut in 0..bytes.len() {
        let scan = format::scan_segment(&bytes[..cut], MAX_RECORD, false);
        assert!(scan.records <= 20);
        assert!(scan.valid_len <= cut as u64 || scan.header.is_none());
        // Every prefix is what a crash can leave: the log opens and replays the whole records.
        let read = through_the_log(&dir.path().join("t"), &bytes[..cut], OnCorruption::Fail)
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(read, scan.records.min(20), "cut at {cut}");
    }
}

#[test]
fn bit_flips_are_detected_or_reported() {
    let bytes = good_segment(6);
    let dir = tempfile::tempdir().unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let scan = format::scan_segment(&flipped, MAX_RECORD, true);
        assert!(
            scan.records + scan.bad_crc < 6 + 1,
            "bit {bit}: at most the records written"
        );
        for policy in [OnCorruption::Fail, OnCorruption::Skip] {
            match through_the_log(&dir.path().join("f"), &flipped, policy) {
                Ok(read) => assert!(read <= 6),
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
    let dir = tempfile::tempdir().unwrap();
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
        let _ = format::scan_segment(&bytes, MAX_RECORD, round % 3 == 0);
        let _ = through_the_log(&dir.path().join("r"), &bytes, OnCorruption::Fail);
        let _ = through_the_log(&dir.path().join("r"), &bytes, OnCorruption::Skip);
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
