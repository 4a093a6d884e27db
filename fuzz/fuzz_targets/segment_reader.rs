//! Fuzz target for the spill segment reader: any bytes must give records, a stop reason or an error,
//! never a panic or an unbounded allocation; and the record CRC's fast path must agree with the
//! portable one on any header and payload.
//!
//! - libFuzzer (nightly): `cd fuzz && cargo +nightly fuzz run segment_reader --features libfuzzer`
//! - stable replay: `cd fuzz && cargo run --release --bin segment_reader -- FILE...` (stdin if none)
#![cfg_attr(feature = "libfuzzer", no_main)]

fn check(data: &[u8]) {
    for skip in [false, true] {
        let scan = weir_spill::format::scan_segment(data, 1 << 20, skip);
        assert!(scan.valid_len <= data.len() as u64 || scan.header.is_none());
    }
    let _ = weir_spill::format::Ledger::decode(data);
    // The reader's CRC (three interleaved chains where the CPU allows) is the portable one.
    if let Some((header, payload)) = data.split_first_chunk::<16>() {
        assert_eq!(
            weir_spill::format::record_crc(header, payload),
            weir_spill::format::record_crc_portable(header, payload)
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
