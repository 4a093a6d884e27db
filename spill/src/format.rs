//! The on-disk format. Everything is little-endian; every structure carries a CRC-32C (Castagnoli,
//! hardware-accelerated: the `crc32c` crate, and for records three interleaved chains where the CPU
//! has SSE 4.2 and PCLMULQDQ, see [`record_crc`]) so that a torn or flipped byte is detected.
//!
//! ```text
//! <dir>/LOCK                      flock'ed while a log is open (one writer process per directory)
//! <dir>/ledger                    struct Ledger, replaced atomically (ledger.tmp + fsync + rename)
//! <dir>/<first_seq:020>.seg       segments; the name is the sequence number of the first record
//!
//! struct SegmentHeader {          // 36 bytes; do not reorder fields
//!     magic: [u8; 4],             // b"WSPL"
//!     version: u16,               // 1
//!     reserved: u16,              // 0
//!     first_seq: u64,             // sequence number of the segment's first record (= its name)
//!     created_ms: u64,            // wall clock at creation, for the oldest-record age
//!     _pad: u32,                  // 0
//!     crc: u32,                   // CRC-32C of the 32 bytes above
//! }
//! struct Record {                 // 16 bytes + payload; do not reorder fields
//!     len: u32,                   // payload length; above max_record_bytes = garbage
//!     crc: u32,                   // CRC-32C of len, written_ms and payload
//!     written_ms: u64,            // wall clock (coarse) when appended, for the oldest-record age
//!     payload: [u8; len],         // postcard (serde) encoding of the item
//! }
//! struct Ledger {                 // 40 bytes; do not reorder fields
//!     magic: [u8; 4],             // b"WSLG"
//!     version: u16, reserved: u16,
//!     acked_seq: u64,             // every record below this was acknowledged downstream
//!     read_seq: u64,              // informational: how far readers had read
//!     next_seq: u64,              // the writer's next sequence number (used when no segment is left)
//!     crc: u32,                   // CRC-32C of the 36 bytes above
//! }
//! ```
//!
//! Records are numbered by a sequence number that is implicit: the segment's `first_seq` plus the
//! record's index. A record never spans two segments. Why postcard for the payload: it is serde's
//! compact binary format (varints, no field names, no padding, so a 256-byte item costs ~256 bytes),
//! has a stable, documented wire format since 1.0, no unsafe code, and is actively maintained; bincode
//! 2 was the alternative, but its serde support is a side feature while postcard is serde-first.

use crate::reasons;

/// The lock file's name.
pub const LOCK_FILE: &str = "LOCK";
/// The ledger file's name.
pub const LEDGER_FILE: &str = "ledger";
/// The name of the ledger's temporary file while it is replaced.
pub const LEDGER_TMP_FILE: &str = "ledger.tmp";
/// The extension of segment files.
pub const SEGMENT_EXT: &str = "seg";

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 36;
/// Bytes of a record frame before its payload.
pub const FRAME_HEADER_LEN: u64 = 16;
/// Bytes of the ledger.
pub const LEDGER_LEN: usize = 40;

const SEGMENT_MAGIC: [u8; 4] = *b"WSPL";
const LEDGER_MAGIC: [u8; 4] = *b"WSLG";
const VERSION: u16 = 1;

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The sequence number of the first record.
    pub first_seq: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut out = [0u8; SEGMENT_HEADER_LEN as usize];
        out[0..4].copy_from_slice(&SEGMENT_MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header, saying what is wrong with a bad one.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < SEGMENT_HEADER_LEN as usize {
            return Err(reasons::wrong_size(
                "segment header",
                bytes.len(),
                SEGMENT_HEADER_LEN,
            ));
        }
        if bytes[0..4] != SEGMENT_MAGIC {
            return Err(reasons::bad_magic("segment", &bytes[0..4]));
        }
        let stored = u32_at(bytes, 32);
        let computed = crc32c::crc32c(&bytes[..32]);
        if stored != computed {
            return Err(reasons::crc_mismatch("segment header", stored, computed));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(reasons::unsupported_version(version));
        }
        Ok(Self {
            first_seq: u64_at(bytes, 8),
            created_ms: u64_at(bytes, 16),
        })
    }
}

/// The persisted read and acknowledged positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    /// Every record below this sequence number was acknowledged.
    pub acked_seq: u64,
    /// How far readers had read (informational).
    pub read_seq: u64,
    /// The writer's next sequence number.
    pub next_seq: u64,
}

impl Ledger {
    /// The ledger's bytes.
    pub fn encode(&self) -> [u8; LEDGER_LEN] {
        let mut out = [0u8; LEDGER_LEN];
        out[0..4].copy_from_slice(&LEDGER_MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.acked_seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.read_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_seq.to_le_bytes());
        let crc = crc32c::crc32c(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a ledger, saying what is wrong with a bad one.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != LEDGER_LEN {
            return Err(reasons::wrong_size(
                "ledger",
                bytes.len(),
                LEDGER_LEN as u64,
            ));
        }
        if bytes[0..4] != LEDGER_MAGIC {
            return Err(reasons::bad_magic("ledger", &bytes[0..4]));
        }
        let stored = u32_at(bytes, 36);
        let computed = crc32c::crc32c(&bytes[..36]);
        if stored != computed {
            return Err(reasons::crc_mismatch("ledger", stored, computed));
        }
        Ok(Self {
            acked_seq: u64_at(bytes, 8),
            read_seq: u64_at(bytes, 16),
            next_seq: u64_at(bytes, 24),
        })
    }
}

/// Appends one record frame (header and payload) to `out`.
pub fn encode_record(out: &mut Vec<u8>, payload: &[u8], written_ms: u64) {
    let start = out.len();
    out.resize(start + FRAME_HEADER_LEN as usize, 0);
    out.extend_from_slice(payload);
    seal_record(&mut out[start..], written_ms);
}

/// Fills in the header of the record frame `frame`: its first [`FRAME_HEADER_LEN`] bytes, followed
/// by the payload already in place (how the writer encodes an item straight into its batch).
/// A slice shorter than a header is left as it is.
#[inline]
pub fn seal_record(frame: &mut [u8], written_ms: u64) {
    let Some((header, payload)) = frame.split_first_chunk_mut::<{ FRAME_HEADER_LEN as usize }>()
    else {
        return;
    };
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&written_ms.to_le_bytes());
    let crc = record_crc(header, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What parsing one frame found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole record with a good CRC.
    Record {
        /// When it was appended (ms since the Unix epoch).
        written_ms: u64,
        /// Bytes of the frame, header included.
        frame_len: u64,
    },
    /// Exactly at the end of the readable bytes.
    End,
    /// Fewer bytes than a whole frame remain: what a crash mid-write leaves.
    Torn {
        /// Bytes from the frame's start to the end.
        remaining: u64,
    },
    /// The length is implausible: the framing is lost from here on.
    BadLength {
        /// The stored length.
        len: u32,
    },
    /// The frame is whole but its CRC does not match: the payload (or header) was altered.
    BadCrc {
        /// The stored CRC.
        stored: u32,
        /// The CRC of what was read.
        computed: u32,
        /// Bytes of the frame, header included (the next frame starts after it).
        frame_len: u64,
    },
}

impl Frame {
    /// What is wrong with this frame, for an error or a warning; `None` for a record or the end.
    pub fn problem(&self, max_record: u32) -> Option<String> {
        match *self {
            Frame::Record { .. } | Frame::End => None,
            Frame::Torn { remaining } => Some(reasons::record_cut_short(remaining)),
            Frame::BadLength { len } => Some(reasons::record_too_long(len, max_record)),
            Frame::BadCrc {
                stored, computed, ..
            } => Some(reasons::crc_mismatch("record", stored, computed)),
        }
    }
}

/// What [`parse_frame`] found at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A verdict on the frame; for a [`Frame::Record`], the payload, borrowed from the slice (empty
    /// otherwise).
    Frame(Frame, &'a [u8]),
    /// The frame is readable (it does not go past `remaining`) but continues past the end of the
    /// slice: parse again with at least `needed` bytes from the frame's start.
    Incomplete {
        /// Bytes needed from the frame's start (at most `remaining`, at most the header plus
        /// `max_record`).
        needed: u64,
    },
}

/// Parses the frame at the start of `bytes`, a prefix of the `remaining` readable bytes from the
/// frame's start (bytes past `remaining` are ignored). No copy: a record's payload is borrowed.
/// Never panics and never allocates, whatever the bytes (a length above `max_record` is
/// [`Frame::BadLength`], a length past `remaining` [`Frame::Torn`]).
///
/// The log's one frame parser: the reader's hot loop calls it on its read-ahead or mapped
/// segment, and the same bytes go through it again, framed by a segment cursor, for the reader's
/// general path, for crash recovery at open and for records taken back after a failed write. The
/// fuzz target and the corruption tests drive it through `SpillLog::open` and reads on a
/// [`MemFilesystem`](crate::fs::MemFilesystem).
#[inline]
pub fn parse_frame(bytes: &[u8], remaining: u64, max_record: u32) -> Parsed<'_> {
    let bytes = &bytes[..bytes
        .len()
        .min(usize::try_from(remaining).unwrap_or(usize::MAX))];
    if remaining == 0 {
        return Parsed::Frame(Frame::End, &[]);
    }
    if remaining < FRAME_HEADER_LEN {
        return Parsed::Frame(Frame::Torn { remaining }, &[]);
    }
    let Some(header) = bytes.first_chunk::<{ FRAME_HEADER_LEN as usize }>() else {
        return Parsed::Incomplete {
            needed: FRAME_HEADER_LEN,
        };
    };
    let len = u32_at(header, 0);
    if len > max_record {
        return Parsed::Frame(Frame::BadLength { len }, &[]);
    }
    let frame_len = FRAME_HEADER_LEN + u64::from(len);
    if frame_len > remaining {
        return Parsed::Frame(Frame::Torn { remaining }, &[]);
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN as usize..frame_len as usize) else {
        return Parsed::Incomplete { needed: frame_len };
    };
    let stored = u32_at(header, 4);
    let computed = record_crc(header, payload);
    if computed != stored {
        return Parsed::Frame(
            Frame::BadCrc {
                stored,
                computed,
                frame_len,
            },
            &[],
        );
    }
    Parsed::Frame(
        Frame::Record {
            written_ms: u64_at(header, 8),
            frame_len,
        },
        payload,
    )
}

/// The CRC-32C a record's frame stores: of its `len`, `written_ms` (from the frame's header) and
/// payload. On x86-64 with SSE 4.2 and PCLMULQDQ the payload runs as three interleaved chains
/// (`crc` module); elsewhere through the `crc32c` crate ([`record_crc_portable`]): same value.
#[inline]
pub fn record_crc(header: &[u8; FRAME_HEADER_LEN as usize], payload: &[u8]) -> u32 {
    crate::crc::record(u32_at(header, 0), u64_at(header, 8), payload)
}

/// [`record_crc`] through the `crc32c` crate alone, whatever the CPU: the reference the fast path
/// is tested (and fuzzed) against.
pub fn record_crc_portable(header: &[u8; FRAME_HEADER_LEN as usize], payload: &[u8]) -> u32 {
    crate::crc::record_portable(u32_at(header, 0), u64_at(header, 8), payload)
}

#[inline]
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[inline]
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch from the kernel's coarse clock, for a record's
/// `written_ms`: on Linux `CLOCK_REALTIME_COARSE`, the time of the last timer tick (1-10 ms old),
/// read without the hardware clock, which cost 15% of an append on a virtual machine; elsewhere
/// [`now_ms`]. The ages computed from it are at most a tick too old.
pub(crate) fn coarse_now_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable `timespec` for the call to fill in; the clock id is
        // one Linux has had since 2.6.32 (an error leaves `now` alone and falls through).
        let read = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
        if read == 0
            && let (Ok(secs), Ok(nanos)) = (u64::try_from(now.tv_sec), u64::try_from(now.tv_nsec))
        {
            return secs * 1_000 + nanos / 1_000_000;
        }
    }
    now_ms()
}

/// The file name of the segment starting at `first_seq`.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// The `first_seq` a segment file name encodes.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `bytes` (frames after a segment header) that parse whole with a good CRC.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut rest = bytes.get(SEGMENT_HEADER_LEN as usize..).unwrap_or_default();
        let mut records = Vec::new();
        while let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
            parse_frame(rest, rest.len() as u64, 1024)
        {
            records.push(payload.to_vec());
            rest = &rest[frame_len as usize..];
        }
        records
    }

    #[test]
    fn record_round_trip_and_bit_flips() {
        let header = SegmentHeader {
            first_seq: 7,
            created_ms: 1,
        };
        let mut bytes = header.encode().to_vec();
        encode_record(&mut bytes, b"hello", 42);
        encode_record(&mut bytes, b"world!", 43);
        assert_eq!(records(&bytes), [b"hello".to_vec(), b"world!".to_vec()]);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                records(&flipped).len() < 2 || SegmentHeader::decode(&flipped) != Ok(header),
                "bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn a_frame_says_what_is_wrong_with_it() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, b"hello", 42);
        let Parsed::Frame(frame, _) = parse_frame(&bytes[..10], 10, 1024) else {
            panic!("a short frame is torn, not incomplete");
        };
        assert_eq!(frame, Frame::Torn { remaining: 10 });
        assert!(frame.problem(1024).unwrap().contains("cut short"));
        let Parsed::Frame(frame, _) = parse_frame(&bytes, bytes.len() as u64, 4) else {
            panic!("a long frame is refused on its length");
        };
        assert_eq!(
            frame.problem(4).unwrap(),
            "record length 5 exceeds the maximum 4"
        );
        bytes[20] ^= 1;
        let Parsed::Frame(frame, _) = parse_frame(&bytes, bytes.len() as u64, 1024) else {
            panic!("a whole frame parses");
        };
        assert!(
            frame
                .problem(1024)
                .unwrap()
                .starts_with("record crc mismatch")
        );
    }

    #[test]
    fn ledger_round_trip() {
        let ledger = Ledger {
            acked_seq: 3,
            read_seq: 5,
            next_seq: 9,
        };
        assert_eq!(Ledger::decode(&ledger.encode()), Ok(ledger));
        let mut bad = ledger.encode();
        bad[10] ^= 4;
        assert!(Ledger::decode(&bad).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("x.seg"), None);
    }
}
