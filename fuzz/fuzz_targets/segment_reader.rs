//! Fuzz target for the spill log's readers: any bytes, as a segment file or as the ledger, must
//! give records, a counted truncation or a clear error, never a panic or an unbounded allocation;
//! and the record CRC's fast path must agree with the portable one on any header and payload.
//!
//! The bytes go through the production path: `SpillLog::open` (crash recovery of the last segment,
//! the ledger) and reads, on an in-memory filesystem, under both corruption policies, as the last
//! segment and as a sealed one.
//!
//! - libFuzzer (nightly): `cd fuzz && cargo +nightly fuzz run segment_reader --features libfuzzer`
//! - stable replay: `cd fuzz && cargo run --release --bin segment_reader -- FILE...` (stdin if none)
#![cfg_attr(feature = "libfuzzer", no_main)]

use std::path::Path;
use std::sync::Arc;

use weir_spill::format::{self, SegmentHeader};
use weir_spill::fs::MemFilesystem;
use weir_spill::{OnCorruption, SpillConfig, SpillLog};

const DIR: &str = "/spill";

/// Opens a log whose directory holds `files` and reads everything it can.
fn through_the_log(files: &[(&str, &[u8])], policy: OnCorruption) {
    let fs = MemFilesystem::new();
    for (name, bytes) in files {
        fs.write_file(&Path::new(DIR).join(name), bytes);
    }
    let config = SpillConfig::new()
        .max_record_bytes(1 << 20)
        .on_corruption(policy)
        .filesystem(Arc::new(fs));
    let Ok(log) = SpillLog::<(u64, String)>::open(DIR, config) else {
        return;
    };
    let mut batch = Vec::new();
    while let Ok(n) = log.read_batch(16, &mut batch) {
        if n == 0 {
            break;
        }
        batch.clear();
    }
}

fn check(data: &[u8]) {
    let last = SegmentHeader {
        first_seq: 1 << 40,
        created_ms: 0,
    }
    .encode();
    for policy in [OnCorruption::Fail, OnCorruption::Skip] {
        // The last segment: recovered at open, then read.
        through_the_log(&[("00000000000000000000.seg", data)], policy);
        // A sealed segment: read by the reader alone.
        through_the_log(
            &[
                ("00000000000000000000.seg", data),
                ("00000001099511627776.seg", &last),
            ],
            policy,
        );
        // The ledger.
        through_the_log(&[("ledger", data)], policy);
    }
    // The reader's CRC (three interleaved chains where the CPU allows) is the portable one.
    if let Some((header, payload)) = data.split_first_chunk::<16>() {
        assert_eq!(
            format::record_crc(header, payload),
            format::record_crc_portable(header, payload)
        );
    }
}

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| check(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() {
    use std::io::Read;
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        let mut data = Vec::new();
        std::io::stdin().read_to_end(&mut data).expect("read stdin");
        check(&data);
    }
    for file in &files {
        check(&std::fs::read(file).expect("read input file"));
    }
    println!("checked {} input(s)", files.len().max(1));
}
