//! Opening a log: the directory (checked private first, see `private.rs`), its lock, the ledger,
//! the segments, and crash recovery of the last segment. A torn tail (a partial or garbled last record with no good record after it, what
//! a crash mid-write leaves) is truncated, counted and logged; a bad record followed by good ones
//! is corruption in the middle, handled by [`OnCorruption`]. The last segment is read with the same
//! [`Cursor`] (and so the same frame parser) as the reader's.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::private;
use super::reader::Reader;
use super::segment::{BadHeader, Cursor, OpenCursor, ReadBuf};
use super::state::{SegmentInfo, Shared, State, lock};
use super::writer::{Writer, create_segment};
use crate::config::{OnCorruption, SpillConfig};
use crate::error::SpillError;
use crate::format::{
    Frame, LEDGER_FILE, LEDGER_TMP_FILE, LOCK_FILE, Ledger, SEGMENT_HEADER_LEN, SegmentHeader,
    parse_segment_name,
};
use crate::fs::{DirLock, Filesystem};
use crate::metrics::SpillMetrics;
use crate::reasons;

/// Read-ahead of the recovery scan at open.
const RECOVERY_BUFFER: usize = 256 << 10;

/// An opened log's parts, for the handle to assemble.
pub(super) struct Opened {
    pub(super) shared: Shared,
    pub(super) writer: Writer,
    pub(super) reader: Reader,
    pub(super) lock: Box<dyn DirLock>,
}

/// Opens (or creates) the log in `dir`: creates the directory, locks it, reads the ledger, scans
/// the last segment and writes the ledger back, which proves the directory writable.
pub(super) fn open(dir: &Path, config: SpillConfig) -> Result<Opened, SpillError> {
    config.validate()?;
    let fs = config.fs.clone();
    let metrics = Arc::new(SpillMetrics::default());
    SpillMetrics::set(&metrics.budget_bytes, config.budget_bytes);
    fs.create_dir_all(dir)
        .map_err(|e| SpillError::io(dir, reasons::CREATE_DIRECTORY, e))?;
    // Nothing in the directory is trusted before it and the lock file are.
    private::check_directory(&*fs, dir, &config)?;
    let lock_path = dir.join(LOCK_FILE);
    private::check_file(&*fs, &lock_path, &config)?;
    let dir_lock = match fs.try_lock(&lock_path) {
        Ok(held) => held,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(SpillError::Locked { dir: dir.into() });
        }
        Err(e) => return Err(SpillError::io(lock_path, reasons::LOCK_DIRECTORY, e)),
    };

    // The segments, and every other file the log keeps: checked before any is read.
    let mut segments = BTreeMap::new();
    for path in fs
        .list(dir)
        .map_err(|e| SpillError::io(dir, reasons::LIST_DIRECTORY, e))?
    {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let first_seq = parse_segment_name(name);
        if first_seq.is_none() && name != LEDGER_FILE && name != LEDGER_TMP_FILE {
            continue;
        }
        let Some(info) = private::check_file(&*fs, &path, &config)? else {
            continue; // gone meanwhile
        };
        if let Some(first_seq) = first_seq {
            segments.insert(
                first_seq,
                SegmentInfo {
                    path,
                    bytes: info.len,
                },
            );
        }
    }
    let ledger = read_ledger(&*fs, dir, &config, &metrics)?;

    // Recover the last segment: its valid records give the next sequence number.
    let mut samples = VecDeque::new();
    let mut next_seq = ledger.next_seq.max(ledger.acked_seq);
    if let Some((&first_seq, info)) = segments.iter_mut().next_back() {
        let recovered = recover_last(&*fs, &config, &metrics, first_seq, info)?;
        next_seq = first_seq + recovered.records;
        if let Some(ms) = recovered.first_written_ms {
            samples.push_back((first_seq, ms));
        }
    }
    for (&first_seq, info) in segments.iter().rev().skip(1) {
        if let Ok(header) = read_header(&*fs, &info.path) {
            samples.push_front((first_seq, header.created_ms));
        }
    }
    // Records before the first segment left were acknowledged (their segments deleted), whatever
    // the ledger says: it may be lost, or a crash came between a deletion and its write.
    let first_kept = segments.keys().next().copied().unwrap_or(next_seq);
    let acked_seq = ledger.acked_seq.max(first_kept).min(next_seq);

    let mut state = State {
        segments,
        written_seq: next_seq,
        durable_seq: next_seq,
        acked_seq,
        disk_bytes: 0,
        ledger,
        ledger_at: Instant::now(),
        samples,
        closed: false,
    };

    // The writer: append to the last segment, or start one.
    let writer = match state.segments.iter().next_back() {
        Some((&first, info)) if info.bytes >= SEGMENT_HEADER_LEN => {
            let file = fs
                .open_append(&info.path)
                .map_err(|e| SpillError::io(&info.path, reasons::OPEN_FOR_APPEND, e))?;
            Writer::new(
                file,
                first,
                info.path.clone(),
                info.bytes,
                next_seq,
                &config,
            )
        }
        _ => {
            let (path, file) = create_segment(&*fs, dir, next_seq, config.fsync)?;
            state.segments.insert(
                next_seq,
                SegmentInfo {
                    path: path.clone(),
                    bytes: SEGMENT_HEADER_LEN,
                },
            );
            Writer::new(file, next_seq, path, SEGMENT_HEADER_LEN, next_seq, &config)
        }
    };
    state.disk_bytes = state.segments.values().map(|s| s.bytes).sum();

    let shared = Shared {
        dir: dir.into(),
        fs,
        config,
        state: Mutex::new(state),
        read_seq: AtomicU64::new(acked_seq),
        space: Condvar::new(),
        metrics,
    };
    {
        // Delete what the ledger says is acknowledged, then persist the ledger: this also proves
        // that the directory is writable and the disk not full, at open time.
        let mut state = lock(&shared.state);
        shared.delete_acked_segments(&mut state);
        shared.persist_ledger(&mut state, next_seq)?;
        shared.publish_gauges(&mut state);
    }
    Ok(Opened {
        shared,
        writer,
        reader: Reader::new(acked_seq),
        lock: dir_lock,
    })
}

/// The ledger, or an empty one for a new log. A corrupt ledger fails the open, or under
/// [`OnCorruption::Skip`] is counted and replaced by an empty one (every segment is replayed).
fn read_ledger(
    fs: &dyn Filesystem,
    dir: &Path,
    config: &SpillConfig,
    metrics: &SpillMetrics,
) -> Result<Ledger, SpillError> {
    let ledger_path = dir.join(LEDGER_FILE);
    match fs.read(&ledger_path) {
        Ok(bytes) => match Ledger::decode(&bytes) {
            Ok(ledger) => Ok(ledger),
            Err(reason) => {
                SpillMetrics::add(&metrics.corruptions, 1);
                if config.on_corruption == OnCorruption::Fail {
                    return Err(SpillError::Corrupt {
                        file: ledger_path,
                        offset: 0,
                        reason,
                    });
                }
                tracing::warn!(file = %ledger_path.display(), %reason, "corrupt spill ledger: replaying every segment");
                Ok(Ledger::default())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(e) => Err(SpillError::io(ledger_path, reasons::READ_LEDGER, e)),
    }
}

/// A sealed segment's header (for its creation time).
fn read_header(fs: &dyn Filesystem, path: &Path) -> io::Result<SegmentHeader> {
    let mut file = fs.open_read(path)?;
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact(&mut header)?;
    SegmentHeader::decode(&header).map_err(io::Error::other)
}

struct Recovered {
    records: u64,
    first_written_ms: Option<u64>,
}

/// Scans the last segment. A torn tail (a partial or garbled last record, with no good record after
/// it) is truncated, counted and logged; a bad record followed by good ones is corruption in the
/// middle, handled by [`OnCorruption`].
fn recover_last(
    fs: &dyn Filesystem,
    config: &SpillConfig,
    metrics: &SpillMetrics,
    first_seq: u64,
    info: &mut SegmentInfo,
) -> Result<Recovered, SpillError> {
    let path = info.path.clone();
    let len = info.bytes;
    let truncate = |to: u64, reason: &str| -> Result<(), SpillError> {
        tracing::warn!(file = %path.display(), offset = to, dropped_bytes = len - to, reason, "truncating the torn tail of a spill segment");
        SpillMetrics::add(&metrics.truncations, 1);
        SpillMetrics::add(&metrics.truncated_bytes, len - to);
        fs.truncate(&path, to)
            .map_err(|e| SpillError::io(&path, reasons::TRUNCATE_TORN_TAIL, e))
    };
    let mut recovered = Recovered {
        records: 0,
        first_written_ms: None,
    };
    if len < SEGMENT_HEADER_LEN {
        // Crashed while creating the segment: it holds nothing. It is started over at open.
        truncate(0, reasons::HEADER_CUT_SHORT)?;
        info.bytes = 0;
        return Ok(recovered);
    }
    let mut buf = ReadBuf::new(RECOVERY_BUFFER);
    let opened = Cursor::open(
        fs,
        first_seq,
        path.clone(),
        len,
        false,
        &mut buf,
        reasons::OPEN_FOR_RECOVERY,
    );
    let mut cursor = match opened {
        Ok(cursor) => cursor,
        Err(OpenCursor::Gone(path, e)) => {
            return Err(SpillError::io(path, reasons::OPEN_FOR_RECOVERY, e));
        }
        Err(OpenCursor::Failed(error)) => return Err(error),
        Err(OpenCursor::BadHeader(_, bad @ (BadHeader::Mismatch { .. } | BadHeader::Short(_)))) => {
            return Err(SpillError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: bad.reason(),
            });
        }
        Err(OpenCursor::BadHeader(_, BadHeader::Garbled(reason))) => {
            SpillMetrics::add(&metrics.corruptions, 1);
            if config.on_corruption == OnCorruption::Fail || len > SEGMENT_HEADER_LEN {
                return Err(SpillError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    reason,
                });
            }
            truncate(0, reasons::HEADER_GARBLED_NOTHING_FOLLOWS)?;
            info.bytes = 0;
            return Ok(recovered);
        }
    };
    let max_record = config.max_record_bytes;
    let mut valid_len = cursor.offset;
    let mut valid_records = 0;
    // The first bad record seen since the last good one: (offset, reason).
    let mut bad: Option<(u64, String)> = None;
    loop {
        let step = cursor
            .next_frame(&mut buf, max_record)
            .map_err(|e| SpillError::io(&path, reasons::SCAN_SEGMENT, e))?;
        match step.frame {
            Frame::Record { written_ms, .. } => {
                if let Some((bad_offset, reason)) = bad.take() {
                    // A good record after a bad one: not a torn tail.
                    SpillMetrics::add(&metrics.corruptions, 1);
                    if config.on_corruption == OnCorruption::Fail {
                        return Err(SpillError::Corrupt {
                            file: path.clone(),
                            offset: bad_offset,
                            reason,
                        });
                    }
                    tracing::warn!(file = %path.display(), offset = bad_offset, %reason, "corrupt spill record in the middle of the last segment: it will be skipped");
                }
                recovered.first_written_ms.get_or_insert(written_ms);
                recovered.records += 1;
                valid_len = cursor.offset;
                valid_records = recovered.records;
            }
            Frame::End => break,
            Frame::BadCrc { .. } => {
                let reason = step.frame.problem(max_record).unwrap_or_default();
                bad.get_or_insert((step.offset, reason));
                recovered.records += 1;
            }
            Frame::BadLength { .. } | Frame::Torn { .. } => break,
        }
    }
    recovered.records = valid_records;
    if valid_len < len {
        truncate(valid_len, reasons::PARTIAL_RECORDS_AT_THE_END)?;
        info.bytes = valid_len;
    }
    Ok(recovered)
}
