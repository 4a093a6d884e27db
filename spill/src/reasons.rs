//! Every operation name and every reason the spill log puts in its errors and warnings, in one
//! place: the `stage` of an I/O error ([`SpillError::Io`](crate::SpillError::Io) and its kin) says
//! what the log was doing, the `reason` of a [`SpillError::Corrupt`](crate::SpillError::Corrupt)
//! what was wrong with the bytes.

// What the log was doing when an I/O call failed (the `stage` of an error).
pub(crate) const CREATE_DIRECTORY: &str = "create directory";
pub(crate) const LOCK_DIRECTORY: &str = "lock directory";
pub(crate) const LIST_DIRECTORY: &str = "list directory";
pub(crate) const FSYNC_DIRECTORY: &str = "fsync directory";
pub(crate) const READ_LEDGER: &str = "read ledger";
pub(crate) const WRITE_LEDGER: &str = "write ledger";
pub(crate) const CREATE_SEGMENT: &str = "create segment";
pub(crate) const RESET_SEGMENT: &str = "reset segment";
pub(crate) const WRITE_SEGMENT_HEADER: &str = "write segment header";
pub(crate) const OPEN_FOR_APPEND: &str = "open segment for append";
pub(crate) const OPEN_FOR_READING: &str = "open segment for reading";
pub(crate) const OPEN_FOR_RECOVERY: &str = "open segment for recovery";
pub(crate) const READ_SEGMENT_HEADER: &str = "read segment header";
pub(crate) const READ_SEGMENT: &str = "read segment";
pub(crate) const SCAN_SEGMENT: &str = "scan segment";
pub(crate) const TRUNCATE_TORN_TAIL: &str = "truncate torn tail";
pub(crate) const WRITE_BATCH: &str = "write batch";
pub(crate) const FSYNC_SEGMENT: &str = "fsync segment";
pub(crate) const CUT_FAILED_WRITE: &str = "cut a failed write";
pub(crate) const START_SYNCER: &str = "start the interval fsync thread";
pub(crate) const CHECK_DIRECTORY: &str = "check directory";
pub(crate) const CHECK_FILE: &str = "check file";
pub(crate) const MAKE_PRIVATE: &str = "make file private";

// Why recovery truncated the end of the last segment (logged with the truncation).
pub(crate) const HEADER_CUT_SHORT: &str = "segment header cut short";
pub(crate) const HEADER_GARBLED_NOTHING_FOLLOWS: &str =
    "segment header garbled and no record follows";
pub(crate) const PARTIAL_RECORDS_AT_THE_END: &str =
    "partial or garbled records after the last good one";

// Why reading a segment's bytes failed (the message of an `UnexpectedEof` I/O error).
pub(crate) const FRAME_PAST_WRITTEN: &str = "a frame reaches past the segment's written length";
pub(crate) const FILE_SHORTER_THAN_WRITTEN: &str =
    "the segment file is shorter than its written length";
pub(crate) const FRAME_PAST_MAP: &str = "a frame reaches past the mapped segment";

// What is wrong with a structure's bytes (the `reason` of a corruption).

/// A stored CRC-32C that does not match the bytes (`what`: "record", "segment header", "ledger").
pub(crate) fn crc_mismatch(what: &str, stored: u32, computed: u32) -> String {
    format!("{what} crc mismatch: stored {stored:#010x}, computed {computed:#010x}")
}

/// A structure of the wrong size.
pub(crate) fn wrong_size(what: &str, len: usize, expected: u64) -> String {
    format!("{what} is {len} bytes, expected {expected}")
}

/// A structure that does not start with its magic bytes.
pub(crate) fn bad_magic(what: &str, magic: &[u8]) -> String {
    format!("bad {what} magic {magic:02x?}")
}

/// A segment header of an unknown version.
pub(crate) fn unsupported_version(version: u16) -> String {
    format!("unsupported segment version {version}")
}

/// A segment file too short to hold its header.
pub(crate) fn shorter_than_header(len: u64) -> String {
    format!("segment is {len} bytes, shorter than its header")
}

/// A segment whose header and file name disagree on its first record.
pub(crate) fn first_seq_mismatch(header: u64, name: u64) -> String {
    format!("header says the first record is {header}, the file name says {name}")
}

/// A record length above the configured maximum: the framing is lost.
pub(crate) fn record_too_long(len: u32, max: u32) -> String {
    format!("record length {len} exceeds the maximum {max}")
}

/// A record that goes past the end of the written data.
pub(crate) fn record_cut_short(remaining: u64) -> String {
    format!("record cut short: {remaining} bytes before the end of written data")
}
