//! Spilled records stay private at rest: the directory is created `0700` and every file `0600`
//! whatever the umask; a directory others may write to or another user owns is refused; links and
//! special files are never followed, read or truncated; the lock and the ledger's temporary file
//! cannot be used to clobber another file; a frame whose length or contents claim more than the
//! record holds is corruption, not an allocation. Modes and owners are checked with `stat` (as
//! root too), never with access attempts, which root always passes.
#![cfg(unix)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use support::segments;
use weir_spill::format::{self, SegmentHeader};
use weir_spill::fs::{FileKind, Filesystem, MemFilesystem, StdFilesystem};
use weir_spill::{OnCorruption, SpillConfig, SpillError, SpillLog};

fn small() -> SpillConfig {
    SpillConfig::new()
        .segment_bytes(512)
        .budget_bytes(64 << 10)
        .batch_records(4)
        .ledger_every(1)
}

fn euid() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn fill(log: &SpillLog<(u64, String)>, n: u64) {
    for i in 0..n {
        log.append(&(i, format!("payload-{i:032}"))).unwrap();
    }
    log.flush().unwrap();
}

/// Restores the umask when dropped, also when the test fails.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Self {
        // SAFETY: `umask` has no preconditions and cannot fail.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::umask(self.0) };
    }
}

#[test]
fn private_the_directory_is_0700_and_every_file_0600_whatever_the_umask() {
    for mask in [0o000, 0o022, 0o077] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/spill");
        {
            let _umask = Umask::set(mask);
            let log = SpillLog::open(&dir, small()).unwrap();
            fill(&log, 40); // several segments
            while log.read().unwrap().is_some() {}
            log.ack_through(20).unwrap(); // the ledger is replaced
            log.close().unwrap();
        }
        for created in [tmp.path().join("a"), tmp.path().join("a/b"), dir.clone()] {
            assert_eq!(
                mode(&created),
                0o700,
                "{} (umask {mask:03o})",
                created.display()
            );
            assert_eq!(std::fs::metadata(&created).unwrap().uid(), euid());
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            assert!(meta.file_type().is_file(), "{}", entry.path().display());
            assert_eq!(
                meta.mode() & 0o7777,
                0o600,
                "{} (umask {mask:03o})",
                entry.path().display()
            );
            assert_eq!(meta.uid(), euid());
            names.push(entry.file_name().into_string().unwrap());
        }
        assert!(names.iter().any(|n| n == "ledger") && names.iter().any(|n| n == "LOCK"));
        assert!(
            names.iter().filter(|n| n.ends_with(".seg")).count() >= 2,
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n == "ledger.tmp"), "{names:?}");
    }
}

#[test]
fn private_files_others_could_read_are_made_private_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = SpillLog::open(tmp.path(), small()).unwrap();
        fill(&log, 20);
    }
    // What an older version left: files with the process umask.
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let log = SpillLog::<(u64, String)>::open(tmp.path(), small()).unwrap();
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(log.read().unwrap().unwrap().item.0, 0);
}

#[test]
fn private_a_directory_others_may_write_is_refused_naming_the_fix() {
    for loose in [0o770, 0o757, 0o1777] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spill");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(loose)).unwrap();
        let error = SpillLog::<u64>::open(&dir, small()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, SpillError::Insecure { .. }), "{text}");
        assert!(
            text.contains(&dir.display().to_string()),
            "names the path: {text}"
        );
        assert!(text.contains("chmod 700"), "names the fix: {text}");
        assert!(
            text.contains("allow_shared_directory"),
            "names the opt-out: {text}"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing was created in it"
        );
        // The documented opt-out for a deliberately shared directory.
        let log = SpillLog::<u64>::open(&dir, small().allow_shared_directory(true)).unwrap();
        log.append(&1).unwrap();
        drop(log);
        assert_eq!(mode(&dir.join("ledger")), 0o600, "files stay private");
    }
}

#[test]
fn private_a_directory_another_user_owns_is_refused() {
    // Simulated: as any user.
    let fs = MemFilesystem::new();
    fs.write_file(Path::new("/shared/notes"), b"");
    fs.set_owner(Path::new("/shared"), 4242);
    let config = || small().filesystem(Arc::new(fs.clone()));
    let error = SpillLog::<u64>::open("/shared", config()).unwrap_err();
    assert!(
        error.to_string().contains("belongs to user 4242"),
        "{error}"
    );
    assert!(error.to_string().contains("chown"), "{error}");
    SpillLog::<u64>::open("/shared", config().allow_shared_directory(true)).unwrap();
    // Real, when this test may give a directory away.
    if euid() == 0 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let error = SpillLog::<u64>::open(&dir, small()).unwrap_err();
        assert!(matches!(error, SpillError::Insecure { .. }), "{error}");
        assert!(
            error.to_string().contains("belongs to user 65534"),
            "{error}"
        );
    }
}

/// A new `spill` directory in `parent`, `0700` (whatever the umask another test set meanwhile).
fn private_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("spill");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A decoy outside the spill directory, with its bytes, to check it is never touched.
fn decoy(tmp: &Path) -> (PathBuf, Vec<u8>) {
    let path = tmp.join("decoy");
    let bytes = b"not yours to read or truncate".to_vec();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (path, bytes)
}

fn assert_untouched(decoy: &(PathBuf, Vec<u8>)) {
    assert_eq!(
        std::fs::read(&decoy.0).unwrap(),
        decoy.1,
        "the decoy was written"
    );
    assert_eq!(mode(&decoy.0), 0o644, "the decoy's mode changed");
}

#[test]
fn private_links_and_special_files_in_the_directory_are_refused_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let decoy = decoy(tmp.path());
    let dir = tmp.path().join("spill");
    {
        let log = SpillLog::open(&dir, small()).unwrap();
        fill(&log, 30);
    }
    let all = segments(&dir);
    for victim in [
        all[0].clone(),
        all.last().unwrap().clone(),
        dir.join("ledger"),
    ] {
        let saved = std::fs::read(&victim).unwrap();
        std::fs::remove_file(&victim).unwrap();
        std::os::unix::fs::symlink(&decoy.0, &victim).unwrap();
        let error = SpillLog::<(u64, String)>::open(&dir, small()).unwrap_err();
        assert!(matches!(error, SpillError::Insecure { .. }), "{error}");
        assert!(error.to_string().contains("symlink"), "{error}");
        assert!(
            error.to_string().contains(&victim.display().to_string()),
            "{error}"
        );
        assert_untouched(&decoy);
        std::fs::remove_file(&victim).unwrap();
        std::fs::write(&victim, saved).unwrap();
    }
    // A fifo where a segment should be: refused without opening it (an open would block).
    let fifo = dir.join("00000000000000999999.seg");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let error = SpillLog::<(u64, String)>::open(&dir, small()).unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
    std::fs::remove_file(&fifo).unwrap();
    // A directory where the ledger should be.
    let ledger = std::fs::read(dir.join("ledger")).unwrap();
    std::fs::remove_file(dir.join("ledger")).unwrap();
    std::fs::create_dir(dir.join("ledger")).unwrap();
    let error = SpillLog::<(u64, String)>::open(&dir, small()).unwrap_err();
    assert!(error.to_string().contains("is a directory"), "{error}");
    std::fs::remove_dir(dir.join("ledger")).unwrap();
    std::fs::write(dir.join("ledger"), ledger).unwrap();
    // Restored: the log opens and replays everything.
    let log = SpillLog::<(u64, String)>::open(&dir, small()).unwrap();
    let mut n = 0;
    while log.read().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 30);
}

/// The filesystem seam itself never opens, reads, truncates or creates through a link, so a link
/// planted after the check at open (a race) fails the operation instead of being followed.
#[test]
fn private_the_real_filesystem_never_follows_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let decoy = decoy(tmp.path());
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&decoy.0, &link).unwrap();
    let fs = StdFilesystem;
    assert_eq!(fs.symlink_metadata(&link).unwrap().kind, FileKind::Symlink);
    for error in [
        fs.open_read(&link).err(),
        fs.open_append(&link).err(),
        fs.read(&link).err(),
        fs.truncate(&link, 0).err(),
        fs.set_private(&link).err(),
        fs.try_lock(&link).err(),
    ] {
        let error = error.expect("refused");
        assert!(error.to_string().contains("symlink"), "{error}");
    }
    assert_untouched(&decoy);
    // A link to nowhere: nothing is created at its target.
    let nowhere = tmp.path().join("nowhere");
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    assert!(fs.try_lock(&dangling).is_err());
    assert!(fs.open_append(&dangling).is_err());
    assert!(!nowhere.exists(), "created through a link");
}

#[test]
fn private_the_lock_file_cannot_clobber_another_file() {
    let tmp = tempfile::tempdir().unwrap();
    let decoy = decoy(tmp.path());
    let dir = private_dir(tmp.path());
    std::os::unix::fs::symlink(&decoy.0, dir.join("LOCK")).unwrap();
    let error = SpillLog::<u64>::open(&dir, small()).unwrap_err();
    assert!(matches!(error, SpillError::Insecure { .. }), "{error}");
    assert!(error.to_string().contains("LOCK"), "{error}");
    assert_untouched(&decoy);
    // A dangling link: nothing is created where it points.
    let nowhere = tmp.path().join("nowhere");
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    std::os::unix::fs::symlink(&nowhere, dir.join("LOCK")).unwrap();
    assert!(SpillLog::<u64>::open(&dir, small()).is_err());
    assert!(!nowhere.exists(), "the lock created a file through a link");
}

#[test]
fn private_the_ledger_temporary_file_is_new_private_and_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let decoy = decoy(tmp.path());
    let dir = private_dir(tmp.path());
    let ledger = dir.join("ledger");
    std::os::unix::fs::symlink(&decoy.0, dir.join("ledger.tmp")).unwrap();
    // At open, a link at the temporary name is refused like any other.
    let error = SpillLog::<u64>::open(&dir, small()).unwrap_err();
    assert!(error.to_string().contains("ledger.tmp"), "{error}");
    // Planted later (a race): the seam replaces the link, never writes through it.
    let _umask = Umask::set(0);
    StdFilesystem.write_atomic(&ledger, b"new ledger").unwrap();
    assert_untouched(&decoy);
    assert_eq!(std::fs::read(&ledger).unwrap(), b"new ledger");
    assert_eq!(mode(&ledger), 0o600);
    assert!(!dir.join("ledger.tmp").exists());
}

#[test]
fn private_a_file_of_another_user_in_the_directory_is_refused() {
    let fs = MemFilesystem::new();
    let config = || small().filesystem(Arc::new(fs.clone()));
    SpillLog::<u64>::open("/spill", config()).unwrap();
    let segment = fs
        .files(Path::new("/spill"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    fs.set_owner(&segment, 4242);
    let error = SpillLog::<u64>::open("/spill", config()).unwrap_err();
    assert!(matches!(error, SpillError::Insecure { .. }), "{error}");
    assert!(
        error.to_string().contains("belongs to user 4242"),
        "{error}"
    );
}

/// Counts the largest single allocation made on a thread while armed.
struct Largest;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to `System` unchanged; the bookkeeping only reads and writes
// thread-local cells (const-initialised, so touching them never allocates).
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            LARGEST.with(|largest| largest.set(largest.get().max(layout.size())));
        }
        // SAFETY: the caller's layout is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.with(Cell::get) {
            LARGEST.with(|largest| largest.set(largest.get().max(new_size)));
        }
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|largest| largest.set(0));
    ARMED.with(|armed| armed.set(true));
    let result = f();
    ARMED.with(|armed| armed.set(false));
    (result, LARGEST.with(Cell::get))
}

type Item = (u64, HashMap<u64, u64>, Vec<u64>);

/// A varint as postcard writes it.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A segment of records with valid CRCs: a good one, one whose map claims 2^40 entries, one whose
/// list claims 2^40 elements, a good one, then a frame longer than `max_record`.
fn crafted_segment(max_record: u32) -> Vec<u8> {
    let mut bytes = SegmentHeader {
        first_seq: 0,
        created_ms: 1,
    }
    .encode()
    .to_vec();
    let good =
        |seq: u64| postcard::to_allocvec(&(seq, HashMap::<u64, u64>::new(), vec![seq])).unwrap();
    format::encode_record(&mut bytes, &good(0), 1);
    let mut huge_map = vec![1];
    varint(1 << 40, &mut huge_map);
    format::encode_record(&mut bytes, &huge_map, 1);
    let mut huge_list = vec![2, 0];
    varint(1 << 40, &mut huge_list);
    format::encode_record(&mut bytes, &huge_list, 1);
    format::encode_record(&mut bytes, &good(3), 1);
    // Longer than `max_record`, with its bytes and a valid CRC: refused on its length alone.
    format::encode_record(&mut bytes, &vec![0u8; max_record as usize + 1], 1);
    bytes
}

#[test]
fn private_huge_length_prefixes_are_corruption_not_allocations() {
    let max_record = 4096;
    for policy in [OnCorruption::Skip, OnCorruption::Fail] {
        // A sealed segment (a later one exists), read by the reader: no recovery cuts it.
        let fs = MemFilesystem::new();
        fs.write_file(
            Path::new("/spill/00000000000000000000.seg"),
            &crafted_segment(max_record),
        );
        let last = SegmentHeader {
            first_seq: 1 << 20,
            created_ms: 1,
        };
        fs.write_file(Path::new("/spill/00000000000001048576.seg"), &last.encode());
        let config = small()
            .segment_bytes(1 << 20)
            .budget_bytes(4 << 20)
            .max_record_bytes(max_record)
            .on_corruption(policy)
            .filesystem(Arc::new(fs.clone()));
        let log = SpillLog::<Item>::open("/spill", config).unwrap();
        let metrics = log.metrics();
        // The first record allocates the reader's read-ahead.
        assert_eq!(log.read().unwrap().unwrap().seq, 0);
        let (outcome, largest) = largest_allocation(|| {
            let mut seen = Vec::new();
            let mut errors = Vec::new();
            for _ in 0..6 {
                match log.read() {
                    Ok(Some(record)) => seen.push(record.seq),
                    Ok(None) => break,
                    Err(error) => errors.push(error),
                }
            }
            (seen, errors)
        });
        assert!(
            largest < 16 << 10,
            "{policy:?}: a {largest}-byte allocation"
        );
        let (seen, errors) = outcome;
        match policy {
            OnCorruption::Skip => {
                assert_eq!(seen, vec![3], "the lying records are skipped");
                assert!(errors.is_empty(), "{errors:?}");
                assert_eq!(metrics.snapshot().corruptions, 3);
            }
            OnCorruption::Fail => {
                // Each lying record fails its read (naming it); the frame too long stops the
                // reader there, reported again on every read.
                assert_eq!(seen, vec![3]);
                assert!(errors.iter().all(SpillError::is_corruption), "{errors:?}");
                assert!(errors[0].to_string().contains("record 1"), "{}", errors[0]);
                assert!(errors[1].to_string().contains("record 2"), "{}", errors[1]);
                for error in &errors[2..] {
                    assert!(error.to_string().contains("exceeds the maximum"), "{error}");
                }
            }
        }
    }
    // The frame longer than `max_record`, at the end of the last segment, is a torn tail to
    // recovery: cut off at open, never allocated for.
    let fs = MemFilesystem::new();
    let mut bytes = crafted_segment(max_record);
    let header = bytes.len() - (16 + max_record as usize + 1);
    bytes.truncate(header + 16); // just the frame's header, claiming 4097 bytes
    fs.write_file(Path::new("/spill/00000000000000000000.seg"), &bytes);
    let config = small()
        .max_record_bytes(max_record)
        .filesystem(Arc::new(fs));
    let log = SpillLog::<Item>::open("/spill", config).unwrap();
    assert_eq!(log.metrics().snapshot().truncations, 1);
}
