//! The ledger of a spilling ingress on a disk that fills up: every item offered is delivered, in
//! order, or handed back to its producer and counted under a named reason. Nothing accepted is
//! lost, whatever the disk does.
//!
//! `ledger_a_full_tmpfs_loses_no_accepted_item` runs on a real 2 MiB tmpfs: only when `CI=true`
//! and running as root (it mounts one); otherwise it prints why it skipped.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::probe;
use weir::prelude::*;
use weir::runtime::ingress::{self, SpillFull};
use weir::runtime::metrics::Reason;
use weir::spill::fs::MemFilesystem;
use weir::spill::{SpillConfig, SpillQueue};

/// An item of ~110 bytes on disk.
type Record = (u64, Vec<u8>);

fn record(i: u64) -> Record {
    (i, vec![(i % 251) as u8; 90])
}

fn config() -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(64 << 10)
        .budget_bytes(1 << 30) // far above the device: the device fills first
        .batch_records(64)
}

/// Pushes `items` records into a spilling ingress over `dir` as fast as a paced producer goes,
/// with a consumer slower than the producer, and checks the ledger exactly. Returns how many
/// pushes were refused.
fn offer_through_a_spilling_ingress(dir: &Path, config: SpillConfig, items: u64) -> u64 {
    let runtime = support::runtime();
    let _entered = runtime.enter();
    let store = SpillQueue::<Record>::open(dir, 64, config).unwrap();
    let spill = store.metrics();
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(1),
    };
    let (handle, publisher) = ingress::spilling("ledger", store, full).unwrap();
    let metrics = handle.metrics();
    let consumer = runtime.spawn(
        publisher
            .boundary(BoundaryConfig::new("slow", 64).unwrap())
            .map(|record: Record| {
                assert_eq!(record, self::record(record.0), "intact");
                std::thread::sleep(Duration::from_micros(20)); // slower than the producer
                record.0
            })
            .collect(),
    );
    let mut accepted = Vec::new();
    let mut refused: BTreeMap<Reason, u64> = BTreeMap::new();
    for i in 0..items {
        match handle.try_push(record(i)) {
            Ok(_) => accepted.push(i),
            Err(error) => {
                *refused.entry(error.reason()).or_default() += 1;
                assert_eq!(error.into_inner().0, i, "the refused item comes back");
            }
        }
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_micros(400));
        }
    }
    drop(handle);
    let delivered = runtime
        .block_on(consumer)
        .unwrap()
        .expect("the stream completes");
    let refused_total: u64 = refused.values().sum();
    assert_eq!(
        accepted.len() as u64 + refused_total,
        items,
        "offered = accepted + refused"
    );
    assert_eq!(
        delivered.len(),
        accepted.len(),
        "every accepted item is delivered ({} refused: {refused:?})",
        refused_total
    );
    assert_eq!(delivered, accepted, "in order");
    for (reason, n) in &refused {
        assert!(
            matches!(reason, Reason::SpillFailed | Reason::Full),
            "{reason:?}"
        );
        assert_eq!(metrics.shed(*reason), *n, "{reason:?} counted");
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.items_in, accepted.len() as u64);
    assert_eq!(snapshot.items_out, accepted.len() as u64);
    assert_eq!(snapshot.depth, 0);
    let spill = spill.snapshot();
    assert_eq!(spill.dropped_unwritten, 0);
    assert_eq!(spill.unwritten_records, 0);
    eprintln!(
        "{items} offered: {} delivered, {refused:?} refused; {} failed writes",
        delivered.len(),
        spill.write_failures
    );
    refused_total
}

#[test]
fn ledger_a_spilling_ingress_on_a_full_disk_loses_nothing() {
    let fs = MemFilesystem::new();
    fs.set_capacity(Some(2 << 20));
    let refused = offer_through_a_spilling_ingress(
        Path::new("/spill"),
        config().filesystem(Arc::new(fs.clone())),
        30_000,
    );
    assert!(refused > 0, "the disk never filled");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Unmounts on drop, also when the test panics.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn ledger_a_full_tmpfs_loses_no_accepted_item() {
    if std::env::var("CI").as_deref() != Ok("true") {
        println!("skipped: set CI=true (and run as root) to mount a 2 MiB tmpfs for this test");
        return;
    }
    if !is_root() {
        println!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status();
    match mounted {
        Ok(status) if status.success() => {}
        other => {
            println!("skipped: mounting a tmpfs is not permitted here ({other:?})");
            return;
        }
    }
    let _mounted = Mounted(dir.path().to_path_buf());
    let refused = offer_through_a_spilling_ingress(&dir.path().join("spill"), config(), 50_000);
    assert!(refused > 0, "the 2 MiB tmpfs never filled");
}

/// An in-stream spilling buffer whose disk fills up: it delivers every item it accepted, in
/// order, then fails its stream loudly (the item it could not take is counted).
#[test]
fn ledger_a_spilling_buffer_on_a_full_disk_delivers_what_it_accepted_then_fails() {
    let runtime = support::runtime();
    let _entered = runtime.enter();
    let fs = MemFilesystem::new();
    let config = config()
        .segment_bytes(4 << 10)
        .batch_records(16)
        .filesystem(Arc::new(fs.clone()));
    let store = SpillQueue::<u64>::open("/spill", 8, config).unwrap();
    fs.set_capacity(Some(fs.used() + 20_000));
    let (subscriber, recorder) = probe::<u64>();
    let buffered = source::from_iter(0..100_000u64).buffer_spilling("orders", store);
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.shed(Reason::SpillFailed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the disk never filled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    recorder.request(u64::MAX);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(error.stage(), Some("orders"));
    assert!(error.to_string().contains("disk full"), "{error}");
    let items = recorder.items();
    assert_eq!(
        items,
        (0..items.len() as u64).collect::<Vec<_>>(),
        "in order, no gap"
    );
    let snapshot = metrics.snapshot();
    assert_eq!(
        snapshot.items_in,
        items.len() as u64,
        "every accepted item delivered"
    );
    assert_eq!(metrics.shed(Reason::SpillFailed), 1);
}
