//! The on-disk format. Everything is little-endian; every structure carries a CRC-32C (Castagnoli,
//! hardware-accelerated: the `crc32c` crate, and for records three interleaved chains where the CPU
//! has SSE 4.2 and PCLMULQDQ, see [`record_crc`]) so that a torn or flipped byte is detected.
//!
//! ```text
//! <dir>/LOCK                      flock'ed while a log is open (one writer process per directory)
//! <dir>/ledger                    struct Ledger, replaced atomically (tmp + fsync + rename)
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
//!     written_ms: u64,            // wall clock when appended, for the oldest-record age
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

use std::io::{self, Read};

/// The lock file's name.
pub const LOCK_FILE: &str = "LOCK";
/// The ledger file's name.
pub const LEDGER_FILE: &str = "ledger";
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
            return Err(format!(
                "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
                bytes.len()
            ));
        }
        if bytes[0..4] != SEGMENT_MAGIC {
            return Err(format!("bad segment magic {:02x?}", &bytes[0..4]));
        }
        let stored = u32_at(bytes, 32);
        let computed = crc32c::crc32c(&bytes[..32]);
        if stored != computed {
            return Err(format!(
                "segment header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!("unsupported segment version {version}"));
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
            return Err(format!(
                "ledger is {} bytes, expected {LEDGER_LEN}",
                bytes.len()
            ));
        }
        if bytes[0..4] != LEDGER_MAGIC {
            return Err(format!("bad ledger magic {:02x?}", &bytes[0..4]));
        }
        let stored = u32_at(bytes, 36);
        let computed = crc32c::crc32c(&bytes[..36]);
        if stored != computed {
            return Err(format!(
                "ledger crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
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
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&written_ms.to_le_bytes());
    let crc = record_crc(&header, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// What reading one frame found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A record whose payload is now in the caller's buffer.
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
/// frame's start (bytes past `remaining` are ignored). No copy: a record's payload is borrowed. Never
/// panics, whatever the bytes: this is the reader's hot path and, through [`scan_segment`], the fuzz
/// target's entry point.
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

/// Reads one frame from `reader`, of which `remaining` bytes are readable, into `payload`. Never
/// allocates more than `max_record` bytes and never panics, whatever the bytes. (The log's reader
/// parses its own read-ahead buffer with [`parse_frame`] instead, without the copy.)
pub fn read_frame<R: Read + ?Sized>(
    reader: &mut R,
    remaining: u64,
    max_record: u32,
    payload: &mut Vec<u8>,
) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < FRAME_HEADER_LEN {
        return Ok(Frame::Torn { remaining });
    }
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let len = u32_at(&header, 0);
    let stored = u32_at(&header, 4);
    let written_ms = u64_at(&header, 8);
    if len > max_record {
        return Ok(Frame::BadLength { len });
    }
    let frame_len = FRAME_HEADER_LEN + u64::from(len);
    if frame_len > remaining {
        return Ok(Frame::Torn { remaining });
    }
    payload.clear();
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    let computed = record_crc(&header, payload);
    if computed != stored {
        return Ok(Frame::BadCrc {
            stored,
            computed,
            frame_len,
        });
    }
    Ok(Frame::Record {
        written_ms,
        frame_len,
    })
}

/// What [`scan_segment`] found in a segment's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The header, if it parsed.
    pub header: Option<SegmentHeader>,
    /// Whole records with a good CRC, in order.
    pub records: u64,
    /// The offset after the last good record: where a torn tail would be truncated.
    pub valid_len: u64,
    /// Records skipped for a bad CRC (their framing was intact).
    pub bad_crc: u64,
    /// Where the scan stopped and why, if not at a clean end.
    pub stopped: Option<(u64, String)>,
    /// The written time of the first good record.
    pub first_written_ms: Option<u64>,
}

/// Scans a whole segment held in memory: the header, then every frame. Stops at a torn tail or a
/// lost framing; skips (and counts) records with a bad CRC when `skip_bad_crc`. Never panics: this is
/// the fuzz target's entry point, and the log's reader uses the same [`parse_frame`].
pub fn scan_segment(bytes: &[u8], max_record: u32, skip_bad_crc: bool) -> SegmentScan {
    let mut scan = SegmentScan::default();
    match SegmentHeader::decode(bytes) {
        Ok(header) => scan.header = Some(header),
        Err(reason) => {
            scan.stopped = Some((0, reason));
            return scan;
        }
    }
    let mut offset = SEGMENT_HEADER_LEN;
    scan.valid_len = offset;
    loop {
        let rest = bytes.get(offset as usize..).unwrap_or_default();
        let frame = match parse_frame(rest, rest.len() as u64, max_record) {
            Parsed::Frame(frame, _) => frame,
            // Unreachable: the slice holds every readable byte. Stop rather than loop.
            Parsed::Incomplete { needed } => {
                scan.stopped = Some((offset, format!("frame needs {needed} bytes")));
                return scan;
            }
        };
        match frame {
            Frame::End => return scan,
            Frame::Record {
                written_ms,
                frame_len,
            } => {
                scan.first_written_ms.get_or_insert(written_ms);
                scan.records += 1;
                offset += frame_len;
                scan.valid_len = offset;
            }
            Frame::BadCrc {
                stored,
                computed,
                frame_len,
            } => {
                let reason = format!(
                    "record crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
                );
                if !skip_bad_crc {
                    scan.stopped = Some((offset, reason));
                    return scan;
                }
                scan.bad_crc += 1;
                offset += frame_len;
            }
            Frame::BadLength { len } => {
                scan.stopped = Some((
                    offset,
                    format!("record length {len} exceeds the maximum {max_record}"),
                ));
                return scan;
            }
            Frame::Torn { remaining } => {
                scan.stopped = Some((offset, format!("torn record: only {remaining} bytes left")));
                return scan;
            }
        }
    }
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

    #[test]
    fn record_round_trip_and_bit_flips() {
        let mut bytes = SegmentHeader {
            first_seq: 7,
            created_ms: 1,
        }
        .encode()
        .to_vec();
        encode_record(&mut bytes, b"hello", 42);
        encode_record(&mut bytes, b"world!", 43);
        let scan = scan_segment(&bytes, 1024, false);
        assert_eq!(scan.records, 2);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert_eq!(scan.first_written_ms, Some(42));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let scan = scan_segment(&flipped, 1024, false);
            assert!(
                scan.records < 2
                    || scan.header
                        != Some(SegmentHeader {
                            first_seq: 7,
                            created_ms: 1
                        }),
                "bit {bit} went unnoticed"
            );
        }
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
