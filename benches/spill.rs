//! spill: write then read back 1 GiB of 256-byte records through the spill log, with fsync every
//! batch of 1,000 records and with no fsync, against the raw device in the same run: a sequential
//! write of the same bytes with one fdatasync per 256 KiB, and a sequential read.
//!
//! `cargo bench --bench spill` (set `WEIR_SPILL_BENCH_MIB` to use less than 1,024 MiB; `-- read`
//! for the read benches, `-- crc` for the CRC floor). Reads come from the page cache for both the
//! log and the raw file (the machine has far more RAM than 1 GiB), so the read ratio compares the
//! log's check-and-decode path with a plain read of the same bytes. The log maps its sealed
//! segments (64 MiB each) and reads the active one with `read(2)`: at 1 GiB 16 of 17 segments are
//! mapped, at 256 MiB 4 of 5.
//!
//! The floors of any reader that checks every record, over the log's own segment files in the
//! same run: `mapped_walk` maps each segment and reads every payload byte (a sum, no check),
//! `mapped_walk_crc` maps each segment and checks every record's CRC, `read_walk_crc` reads each
//! segment with `read(2)` in 256 KiB chunks (as `raw_read`) and checks every record's CRC. None
//! decodes or makes an item: the log's readers do both on top.
//!
//! The write ratio compares two runs on a shared disk whose speed drifts between criterion's
//! functions (the raw write alone moved 1.5-6 s per GiB across sessions). `WEIR_SPILL_PAIRS=N`
//! runs N pairs instead, each a raw write and a log write (fsync every batch) of the same bytes
//! back to back, the order alternating from pair to pair, and prints each pair's ratio and their
//! median: both peers then meet the same disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weir_spill::format::{
    FRAME_HEADER_LEN, Frame, Parsed, SEGMENT_EXT, SEGMENT_HEADER_LEN, parse_frame,
};
use weir_spill::{FsyncPolicy, SpillConfig, SpillLog};

/// A record: 254 bytes of data, which postcard frames as exactly 256 bytes (2-byte length).
#[derive(Clone)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// The same 256-byte wire format decoded into a fixed array: a payload whose decode does not
/// allocate, to separate the log's own cost from the item's allocation.
struct Fixed([u8; RECORD - 2]);

impl<'de> Deserialize<'de> for Fixed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Fixed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("254 bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Fixed, E> {
                let array = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Fixed(array))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

const RECORD: usize = 256;
const RAW_SYNC_EVERY: usize = 256 << 10;
const READ_BATCH: usize = 128;

fn total_bytes() -> u64 {
    let mib: u64 = std::env::var("WEIR_SPILL_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    mib << 20
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-spill-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The benches read sealed segments through maps (`mapped_reads`, off by default) except the
/// `_unmapped` one.
fn config(fsync: FsyncPolicy) -> SpillConfig {
    SpillConfig::new()
        .mapped_reads(true)
        .fsync(fsync)
        .batch_records(1_000)
        .batch_bytes(4 << 20)
        .budget_bytes(8 << 30)
}

fn write_log(dir: &Path, fsync: FsyncPolicy, records: u64) -> Duration {
    let blob = Blob(vec![0x5A; RECORD - 2]);
    let log = SpillLog::<Blob>::open(dir, config(fsync)).unwrap();
    let started = Instant::now();
    for _ in 0..records {
        log.append(&blob).unwrap();
    }
    log.flush().unwrap();
    let elapsed = started.elapsed();
    drop(log);
    elapsed
}

/// Reads the whole log back one record per call, as `SpillLog::read`.
fn read_log(dir: &Path, records: u64) -> Duration {
    let log = SpillLog::<Blob>::open(dir, config(FsyncPolicy::Never)).unwrap();
    let started = Instant::now();
    let mut seen = 0u64;
    while let Some(record) = log.read().unwrap() {
        seen += record.item.0.len() as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records * (RECORD as u64 - 2));
    elapsed
}

/// The same, decoding into a fixed array (no allocation per item).
fn read_log_fixed(dir: &Path, records: u64) -> Duration {
    let log = SpillLog::<Fixed>::open(dir, config(FsyncPolicy::Never)).unwrap();
    let started = Instant::now();
    let mut seen = 0u64;
    while let Some(record) = log.read().unwrap() {
        seen += u64::from(record.item.0[7]);
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records * 0x5A);
    elapsed
}

/// Reads the whole log back with `SpillLog::read_batch`, 128 records per call into a reused `Vec`
/// (what the spill queue and the replay source do).
fn read_log_batch(dir: &Path, records: u64) -> Duration {
    let log = SpillLog::<Blob>::open(dir, config(FsyncPolicy::Never)).unwrap();
    let mut batch = Vec::with_capacity(READ_BATCH);
    let started = Instant::now();
    let mut seen = 0u64;
    while log.read_batch(READ_BATCH, &mut batch).unwrap() > 0 {
        seen += batch.iter().map(|r| r.item.0.len() as u64).sum::<u64>();
        batch.clear();
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records * (RECORD as u64 - 2));
    elapsed
}

/// The same, decoding into a fixed array (no allocation per item); sealed segments mapped
/// (`mapped`) or read with `read(2)` like the active one.
fn read_log_batch_fixed(dir: &Path, records: u64, mapped: bool) -> Duration {
    let config = config(FsyncPolicy::Never).mapped_reads(mapped);
    let log = SpillLog::<Fixed>::open(dir, config).unwrap();
    let mut batch = Vec::with_capacity(READ_BATCH);
    let started = Instant::now();
    let mut seen = 0u64;
    while log.read_batch(READ_BATCH, &mut batch).unwrap() > 0 {
        seen += batch.iter().map(|r| u64::from(r.item.0[7])).sum::<u64>();
        batch.clear();
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records * 0x5A);
    elapsed
}

/// The floors of any reader of the log's mapped segments, over the log's own files (every
/// segment mapped, the last one too): `check` false reads every byte of every record's payload (a
/// sum of 8-byte words) and nothing else, so it costs the pages' faults and the memory's speed;
/// `check` true checks every record's CRC instead (`parse_frame`, as the reader does), and decodes
/// nothing and makes no item.
fn walk_mapped(dir: &Path, records: u64, check: bool) -> Duration {
    let segments = segments(dir);
    let started = Instant::now();
    let (mut seen, mut sum) = (0u64, 0u64);
    for path in &segments {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: the log that wrote these files was dropped and nothing changes them while the
        // map lives (the bench is the only user of its scratch directory).
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        map.advise(memmap2::Advice::Sequential).unwrap();
        let mut at = SEGMENT_HEADER_LEN as usize;
        while let Some(rest) = map.get(at..).filter(|rest| !rest.is_empty()) {
            if check {
                let Parsed::Frame(Frame::Record { frame_len, .. }, payload) =
                    parse_frame(rest, rest.len() as u64, u32::MAX)
                else {
                    panic!("{}: no record at {at}", path.display());
                };
                sum += u64::from(payload[7]);
                at += frame_len as usize;
            } else {
                let (header, rest) = rest
                    .split_first_chunk::<{ FRAME_HEADER_LEN as usize }>()
                    .unwrap();
                let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
                let mut words = rest[..len].chunks_exact(8);
                sum += words
                    .by_ref()
                    .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                    .fold(0u64, u64::wrapping_add);
                sum += words.remainder().iter().map(|&b| u64::from(b)).sum::<u64>();
                at += FRAME_HEADER_LEN as usize + len;
            }
            seen += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records);
    std::hint::black_box(sum);
    elapsed
}

/// The floor of any reader of the log's segments through `read(2)`: each segment read in 256 KiB
/// chunks (as `raw_read`), every record's CRC checked where the chunk holds it (a frame cut by the
/// chunk's end is moved to its front), nothing decoded, no item made.
fn walk_read(dir: &Path, records: u64) -> Duration {
    let mut chunk = vec![0u8; RAW_SYNC_EVERY];
    let started = Instant::now();
    let (mut seen, mut sum) = (0u64, 0u64);
    for path in segments(dir) {
        let mut file = std::fs::File::open(&path).unwrap();
        let (mut filled, mut at) = (0, SEGMENT_HEADER_LEN as usize);
        loop {
            let n = file.read(&mut chunk[filled..]).unwrap();
            filled += n;
            loop {
                let rest = &chunk[at..filled];
                match parse_frame(rest, rest.len() as u64, u32::MAX) {
                    Parsed::Frame(Frame::Record { frame_len, .. }, payload) => {
                        sum += u64::from(payload[7]);
                        at += frame_len as usize;
                        seen += 1;
                    }
                    _ => break,
                }
            }
            if n == 0 {
                break;
            }
            chunk.copy_within(at..filled, 0);
            (filled, at) = (filled - at, 0);
        }
        assert_eq!(at, filled, "{}: a torn record", path.display());
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, records);
    std::hint::black_box(sum);
    elapsed
}

/// The log's segment files in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == SEGMENT_EXT))
        .collect();
    segments.sort();
    segments
}

fn raw_write(path: &Path, bytes: u64) -> Duration {
    let chunk = vec![0x5Au8; RAW_SYNC_EVERY];
    let mut file = std::fs::File::create(path).unwrap();
    let started = Instant::now();
    let mut written = 0;
    while written < bytes {
        file.write_all(&chunk).unwrap();
        file.sync_data().unwrap();
        written += chunk.len() as u64;
    }
    started.elapsed()
}

fn raw_read(path: &Path) -> Duration {
    let mut chunk = vec![0u8; RAW_SYNC_EVERY];
    let mut file = std::fs::File::open(path).unwrap();
    let started = Instant::now();
    let mut sum = 0u64;
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        sum += u64::from(chunk[n - 1]);
    }
    std::hint::black_box(sum);
    started.elapsed()
}

fn spill(c: &mut Criterion) {
    let bytes = total_bytes();
    let records = bytes / RECORD as u64;
    let mut group = c.benchmark_group("spill");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_millis(1));
    group.throughput(Throughput::Bytes(bytes));

    let raw_dir = scratch("raw");
    let raw_file = raw_dir.join("raw");
    // Written once up front, so that `raw_read` also runs when the write benches are filtered out.
    raw_write(&raw_file, bytes);
    group.bench_function("raw_write_fsync_256k", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_write(&raw_file, bytes)).sum())
    });
    group.bench_function("raw_read", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_read(&raw_file)).sum())
    });
    let _ = std::fs::remove_dir_all(&raw_dir);
    // The floor of the log's integrity check: CRC-32C of every record's 268 covered bytes, over a
    // warm 1 MiB buffer, as the reader computes it (`record_crc`: three interleaved chains on
    // x86-64 with SSE 4.2 + PCLMULQDQ) and through the `crc32c` crate alone (`_portable`, what
    // the reader used before).
    let frames = vec![0x5Au8; 1 << 20];
    for (name, crc) in [
        (
            "crc32c_per_record",
            weir_spill::format::record_crc as fn(&[u8; 16], &[u8]) -> u32,
        ),
        (
            "crc32c_per_record_portable",
            weir_spill::format::record_crc_portable,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut acc = 0u32;
                    for _ in 0..bytes / frames.len() as u64 {
                        for frame in frames.chunks_exact(RECORD + 16) {
                            let (header, payload) = frame.split_first_chunk::<16>().unwrap();
                            acc ^= crc(std::hint::black_box(header), payload);
                        }
                    }
                    std::hint::black_box(acc);
                }
                started.elapsed()
            })
        });
    }

    for (name, fsync) in [
        ("every_batch", FsyncPolicy::EveryBatch),
        ("never", FsyncPolicy::Never),
    ] {
        group.bench_function(format!("log_write_{name}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = scratch(name);
                        let elapsed = write_log(&dir, fsync, records);
                        let _ = std::fs::remove_dir_all(&dir);
                        elapsed
                    })
                    .sum()
            })
        });
    }
    let dir = scratch("read");
    write_log(&dir, FsyncPolicy::Never, records);
    group.bench_function("log_read_back", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| read_log(&dir, records)).sum())
    });
    group.bench_function("log_read_back_fixed", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| read_log_fixed(&dir, records)).sum())
    });
    group.bench_function("log_read_batch", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| read_log_batch(&dir, records)).sum())
    });
    for (name, mapped) in [
        ("log_read_batch_fixed", true),
        ("log_read_batch_fixed_unmapped", false),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| read_log_batch_fixed(&dir, records, mapped))
                    .sum()
            })
        });
    }
    for (name, check) in [("mapped_walk", false), ("mapped_walk_crc", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| walk_mapped(&dir, records, check)).sum())
        });
    }
    group.bench_function("read_walk_crc", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| walk_read(&dir, records)).sum())
    });
    let _ = std::fs::remove_dir_all(&dir);
    group.finish();
}

/// `WEIR_SPILL_PAIRS=N`: N pairs of a raw write and a log write (fsync every batch), back to
/// back, the first of each pair alternating; prints each pair and the median ratio raw / log.
fn write_pairs(pairs: usize) {
    let bytes = total_bytes();
    let records = bytes / RECORD as u64;
    let raw_dir = scratch("pairs-raw");
    let raw_file = raw_dir.join("raw");
    let mut ratios = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let raw = || {
            let _ = std::fs::remove_file(&raw_file);
            raw_write(&raw_file, bytes)
        };
        let log = || {
            let dir = scratch("pairs-log");
            let elapsed = write_log(&dir, FsyncPolicy::EveryBatch, records);
            let _ = std::fs::remove_dir_all(&dir);
            elapsed
        };
        let (raw, log) = if pair % 2 == 0 {
            let raw = raw();
            (raw, log())
        } else {
            let log = log();
            (raw(), log)
        };
        let ratio = raw.as_secs_f64() / log.as_secs_f64();
        println!(
            "pair {pair}: raw {:.3} s, log {:.3} s, raw / log {ratio:.2}",
            raw.as_secs_f64(),
            log.as_secs_f64()
        );
        ratios.push(ratio);
    }
    let _ = std::fs::remove_dir_all(&raw_dir);
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        println!(
            "{pairs} pairs of {} MiB: median raw / log {median:.2} (lowest {:.2}, highest {:.2})",
            bytes >> 20,
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

criterion_group!(benches, spill);

fn main() {
    match std::env::var("WEIR_SPILL_PAIRS") {
        Ok(pairs) => write_pairs(pairs.parse().expect("WEIR_SPILL_PAIRS: a number of pairs")),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
