//! `ingress_spilling`: overflow goes to the spill log and comes back in FIFO order; the disk budget
//! is the ceiling, and what happens at the ceiling is the caller's choice.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use support::probe;
use weir::prelude::*;
use weir::runtime::ingress::{self, SpillFull};
use weir::runtime::metrics::{BufferMetrics, Reason};
use weir::runtime::queue::Pushed;
use weir::spill::{SpillConfig, SpillQueue};

fn small_segments() -> SpillConfig {
    SpillConfig::new().segment_bytes(512).batch_records(8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Push everything (most of it spills), then drain with random requests: every item arrives
    /// once, in order, never more than requested.
    #[test]
    fn spilled_items_come_back_in_fifo_order_under_random_demand(
        capacity in 1usize..16,
        items in 1u64..300,
        requests in proptest::collection::vec(1u64..40, 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SpillQueue::<u64>::open(dir.path(), capacity, small_segments()).unwrap();
        let full = SpillFull::Reject { retry_after: Duration::from_millis(10) };
        let (handle, publisher) = ingress::spilling("orders", store, full).unwrap();
        let mut spilled = 0;
        for i in 0..items {
            if handle.try_push(i).unwrap() == Pushed::Spilled {
                spilled += 1;
            }
        }
        prop_assert_eq!(spilled, items.saturating_sub(capacity as u64));
        let metrics = handle.metrics();
        let (subscriber, recorder) = probe::<u64>();
        publisher.subscribe(subscriber);
        let mut requested = 0;
        for n in requests {
            recorder.request(n);
            requested = (requested + n).min(items);
            prop_assert_eq!(recorder.items().len() as u64, requested);
            // Pushes while draining keep following the spilled ones.
        }
        drop(handle);
        recorder.request(u64::MAX);
        prop_assert!(recorder.expect_terminal().is_ok());
        prop_assert_eq!(recorder.items(), (0..items).collect::<Vec<_>>());
        let snapshot = metrics.snapshot();
        prop_assert_eq!((snapshot.items_in, snapshot.items_out), (items, items));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_spilling_follow_the_spilled_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u32>::open(dir.path(), 4, small_segments()).unwrap();
    let full = SpillFull::Block {
        timeout: Duration::from_secs(5),
    };
    let (handle, publisher) = ingress::spilling("orders", store, full).unwrap();
    let consumer = tokio::spawn(
        publisher
            .boundary(BoundaryConfig::new("work", 8).unwrap())
            .map(|x| {
                std::thread::sleep(Duration::from_micros(20)); // a slow consumer
                x
            })
            .collect(),
    );
    for i in 0..2_000u32 {
        handle.push(i).await.unwrap();
    }
    drop(handle);
    let delivered = consumer.await.unwrap().unwrap();
    assert_eq!(delivered, (0..2_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_budget_rejects_with_a_retry_hint_and_frees_as_the_consumer_drains() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments().budget_bytes(2_048);
    let store = SpillQueue::<u64>::open(dir.path(), 2, config).unwrap();
    let retry_after = Duration::from_millis(25);
    let (handle, publisher) =
        ingress::spilling("orders", store, SpillFull::Reject { retry_after }).unwrap();
    let mut accepted = 0u64;
    let refused = loop {
        match handle.push(accepted).await {
            Ok(_) => accepted += 1,
            Err(refused) => break refused,
        }
        assert!(accepted < 10_000, "the budget never filled");
    };
    assert_eq!(refused.retry_after(), Some(retry_after));
    assert_eq!(refused.reason(), Reason::Full);
    assert_eq!(refused.into_inner(), accepted);
    assert_eq!(handle.metrics().shed(Reason::Full), 1);

    // Drain everything: the log acknowledges and deletes segments, so pushes succeed again.
    let (subscriber, recorder) = probe::<u64>();
    publisher.subscribe(subscriber);
    recorder.request(accepted);
    assert_eq!(
        recorder.expect_items(accepted as usize).len() as u64,
        accepted
    );
    for extra in 0..50 {
        handle.push(accepted + extra).await.unwrap();
    }
    drop(handle);
    recorder.request(u64::MAX);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(
        recorder.items(),
        (0..accepted + 50).collect::<Vec<_>>(),
        "order kept across the full budget"
    );
}

const FULL: SpillFull = SpillFull::Reject {
    retry_after: Duration::from_millis(10),
};

/// A spilling ingress in `dir` (5 items in memory) takes 0..40 (35 spill); its consumer takes the
/// first `n` and goes away (cancel). Returns the ingress's counters.
async fn take_some_and_leave(dir: &std::path::Path, n: usize) -> Arc<BufferMetrics> {
    let store = SpillQueue::<u32>::open(dir, 5, small_segments()).unwrap();
    let (handle, publisher) = ingress::spilling("orders", store, FULL).unwrap();
    for i in 0..40 {
        handle.push(i).await.unwrap();
    }
    let (subscriber, recorder) = probe::<u32>();
    publisher.subscribe(subscriber);
    recorder.request(n as u64);
    assert_eq!(recorder.expect_items(n), (0..n as u32).collect::<Vec<_>>());
    recorder.cancel();
    handle.metrics()
}

/// The spilling ingress reopened on `dir`: its counters and everything it hands out, `push`ed
/// items after the recovered ones.
async fn reopen(dir: &std::path::Path, push: &[u32]) -> (Arc<BufferMetrics>, Vec<u32>) {
    let store = SpillQueue::<u32>::open(dir, 5, small_segments()).unwrap();
    let (handle, publisher) = ingress::spilling("orders", store, FULL).unwrap();
    for &item in push {
        handle.push(item).await.unwrap();
    }
    let metrics = handle.metrics();
    drop(handle);
    (metrics, publisher.collect().await.unwrap())
}

#[tokio::test]
async fn spilled_items_survive_the_ingress_and_come_first_next_time() {
    let dir = tempfile::tempdir().unwrap();
    // Three taken: the 2 others in memory are counted as dropped, the 35 on disk stay for the
    // next run.
    let metrics = take_some_and_leave(dir.path(), 3).await;
    assert_eq!(metrics.shed(Reason::Cancelled), 2);
    let (_, replayed) = reopen(dir.path(), &[100]).await;
    let mut expected: Vec<u32> = (5..40).collect();
    expected.push(100);
    assert_eq!(replayed, expected);
}

/// Waits (up to 5 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_in_stream_spilling_buffer_keeps_everything_in_order() {
    let runtime = support::runtime();
    let _entered = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 8, small_segments()).unwrap();
    let (subscriber, recorder) = probe::<u64>();
    let buffered = source::from_iter(0..5_000u64).buffer_spilling("orders", store);
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    // Nothing requested yet: the upstream runs to its end, 8 items in memory, the rest on disk.
    eventually("everything buffered", || metrics.snapshot().depth == 5_000);
    recorder.request(u64::MAX);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items(), (0..5_000).collect::<Vec<_>>());
}

#[test]
fn an_in_stream_spilling_buffer_pauses_its_upstream_while_the_budget_is_full() {
    let runtime = support::runtime();
    let _entered = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let store =
        SpillQueue::<u64>::open(dir.path(), 2, small_segments().budget_bytes(2_048)).unwrap();
    let (subscriber, recorder) = probe::<u64>();
    let produced = Arc::new(AtomicU64::new(0));
    let count = produced.clone();
    let buffered = source::from_iter(0..20_000u64)
        .inspect(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .buffer_spilling("orders", store);
    let metrics = buffered.metrics().unwrap();
    buffered.subscribe(subscriber);
    // The feeder fills memory and the disk budget, then waits: the upstream stops being asked.
    let mut last = u64::MAX;
    eventually("the upstream pauses", || {
        let now = produced.load(Ordering::Relaxed);
        let paused = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(20));
        paused && now > 0
    });
    assert!(last < 20_000, "paused after {last} items");
    let snapshot = metrics.snapshot();
    assert!(snapshot.rejected.values().all(|&n| n == 0), "{snapshot:?}");

    recorder.request(u64::MAX);
    assert!(recorder.expect_terminal().is_ok());
    assert_eq!(recorder.items(), (0..20_000).collect::<Vec<_>>());
}

#[test]
fn an_in_stream_spilling_buffer_needs_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 2, small_segments()).unwrap();
    let (subscriber, recorder) = probe::<u64>();
    source::from_iter(0..10u64)
        .buffer_spilling("orders", store)
        .subscribe(subscriber);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(error.stage(), Some("orders"));
    assert!(matches!(error.kind(), ErrorKind::NoRuntime), "{error}");
}

#[test]
fn a_panic_while_feeding_a_spilling_buffer_fails_its_stream_naming_it() {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 2, small_segments()).unwrap();
    let buffered = support::panics_on_request::<u64>().buffer_spilling("orders", store);
    let error = runtime.block_on(buffered.collect()).unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Panicked(_)), "{error}");
    assert_eq!(
        error.to_string(),
        "stage `orders`: panicked: upstream exploded"
    );
}

/// Items a store holds from an earlier run are in the queue's books from the start: its depth,
/// its items in (`recovered`, not `offered`: nobody offered them in this run) and the age of the
/// oldest one. They used to be invisible until handed out (depth 0, no age), and then went out
/// without ever having come in (items out 8, items in 0).
#[tokio::test]
async fn items_recovered_from_an_earlier_run_are_in_the_books_with_an_age() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SpillQueue::<u32>::open(dir.path(), 2, small_segments()).unwrap();
        let (handle, publisher) = ingress::spilling("orders", store, FULL).unwrap();
        for i in 0..10 {
            handle.push(i).await.unwrap();
        }
        let metrics = handle.metrics();
        drop((handle, publisher));
        // The two in memory went with the queue, counted; the eight on disk stay.
        assert_eq!(metrics.shed(Reason::Cancelled), 2);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let store = SpillQueue::<u32>::open(dir.path(), 2, small_segments()).unwrap();
    let (handle, publisher) = ingress::spilling("orders", store, FULL).unwrap();
    let metrics = handle.metrics();
    let before = metrics.snapshot();
    assert_eq!(
        (
            before.depth,
            before.items_in,
            before.recovered,
            metrics.offered()
        ),
        (8, 8, 8, 0),
        "{before:?}"
    );
    let age = before.oldest_item_age_ms;
    assert!(
        age.is_some_and(|ms| ms >= 50.0),
        "written 60 ms ago: {age:?}"
    );
    handle.push(100).await.unwrap();
    drop(handle);
    let replayed = publisher.collect().await.unwrap();
    assert_eq!(replayed, vec![2, 3, 4, 5, 6, 7, 8, 9, 100]);
    let after = metrics.snapshot();
    assert_eq!(
        (
            after.depth,
            after.items_in,
            after.items_out,
            metrics.offered()
        ),
        (0, 9, 9, 1),
        "{after:?}"
    );
    assert_eq!(after.oldest_item_age_ms, None);
}

/// A consumer that cancels after the queue read records back from disk into memory: those records
/// stay in the log (the next run replays them), so they are still held, not cancelled. They used
/// to be counted as cancelled in this run and recovered and delivered in the next: twice.
#[tokio::test]
async fn records_read_back_but_not_handed_out_stay_held_when_the_consumer_leaves() {
    let dir = tempfile::tempdir().unwrap();
    // Items 0..5 from memory, then 5, 6 read back with 7, 8, 9 (memory refilled from disk).
    let metrics = take_some_and_leave(dir.path(), 7).await;
    let counts = metrics.snapshot();
    assert_eq!(metrics.shed(Reason::Cancelled), 0, "{counts:?}");
    assert_eq!(counts.depth, 33, "on disk, still held: {counts:?}");
    let (metrics, replayed) = reopen(dir.path(), &[]).await;
    assert_eq!(replayed, (7..40).collect::<Vec<_>>());
    assert_eq!(metrics.recovered(), 33);
}

/// Flips a payload byte of the last record of `dir`'s first (sealed) segment: its CRC fails, its
/// length is intact, so it is skipped alone under `OnCorruption::Skip`.
fn corrupt_a_record(dir: &std::path::Path) {
    let segments = support::spill_segments(dir);
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(first, &bytes).unwrap();
}

/// A record that no longer checks out on disk, skipped under `OnCorruption::Skip`: the queue's
/// books count it (failed, `corrupt`) instead of holding it for ever, and the stream completes,
/// whether the skip happens inside a take (memory part of 1) or is found by a take that hands out
/// nothing (memory part of 256, one more record than that on disk, demand for exactly the good
/// ones first: the queue used to wait for ever instead of completing).
#[tokio::test]
async fn a_corrupt_record_skipped_on_read_back_is_counted() {
    use weir::spill::OnCorruption;
    for (capacity, records) in [(1usize, 40u64), (256, 256 + 257)] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store =
                SpillQueue::<u64>::open(dir.path(), capacity, small_segments()).unwrap();
            for i in 0..records {
                store.push(i).unwrap();
            }
            store.flush().unwrap();
        }
        corrupt_a_record(dir.path());
        let on_disk = records - capacity as u64;
        let config = small_segments().on_corruption(OnCorruption::Skip);
        let store = SpillQueue::<u64>::open(dir.path(), capacity, config).unwrap();
        let (handle, publisher) = ingress::spilling("orders", store, FULL).unwrap();
        let metrics = handle.metrics();
        drop(handle);
        // Exactly the good records requested, then more: the skip is found by a take that
        // hands out nothing.
        let (subscriber, recorder) = probe::<u64>();
        publisher.subscribe(subscriber);
        let good = (on_disk - 1) as usize;
        recorder.request(good as u64);
        assert_eq!(recorder.expect_items(good).len(), good, "one corrupt");
        recorder.request(10);
        assert!(recorder.expect_terminal().is_ok());
        assert_eq!(recorder.items().len(), good);
        let counts = metrics.snapshot();
        assert_eq!(
            (counts.recovered, counts.items_out, counts.depth),
            (on_disk, on_disk - 1, 0),
            "{counts:?}"
        );
        assert_eq!(metrics.shed(Reason::Corrupt), 1);
    }
}

/// Pushes 0..100 into a spill queue of capacity 16 (16..100 spill, over several 512-byte
/// segments), flips a bit of the first segment's last record (corrupt, not a torn tail: later
/// segments follow), and returns the item that record holds.
fn spilled_with_a_corrupt_record(dir: &std::path::Path, push: impl FnMut(u64)) -> u64 {
    (0..100).for_each(push);
    let segments = support::spill_segments(dir);
    assert!(segments.len() > 1, "{segments:?}");
    corrupt_a_record(dir);
    // A segment is named after its first record's sequence number; the log's first record is
    // item 16 (the first one spilled).
    let second: u64 = segments[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    16 + second - 1
}

/// A read error in a spill queue: the records read from disk before the corrupt one come out
/// first, in order, then the error. The take used to fail with them still in memory, where
/// nothing would hand them out (and the next run replays them into the same window).
#[test]
fn a_spill_queue_hands_out_the_records_read_before_a_corrupt_one_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SpillQueue::<u64>::open(dir.path(), 16, small_segments()).unwrap();
    let corrupt = spilled_with_a_corrupt_record(dir.path(), |i| {
        store.push(i).unwrap();
    });
    let mut out = Vec::new();
    let error = loop {
        match store.take_into(1_000, &mut out) {
            Ok(0) => panic!("no error for the corrupt record; took {out:?}"),
            Ok(_) => {}
            Err(error) => break error,
        }
    };
    assert_eq!(out, (0..corrupt).collect::<Vec<_>>(), "{error}");
}

/// The same through a spilling ingress: every item before the corrupt record reaches the
/// subscriber, then the error; none is counted as cancelled. The ingress used to end at the
/// store's error, dropping the items the take had moved (counted as cancelled although the
/// subscriber was there with demand).
#[test]
fn a_spilling_ingress_delivers_what_was_read_before_a_corrupt_record_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 16, small_segments()).unwrap();
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let (handle, publisher) = ingress::spilling("orders", store, full).unwrap();
    let corrupt = spilled_with_a_corrupt_record(dir.path(), |i| {
        handle.try_push(i).unwrap();
    });
    let metrics = handle.metrics();
    let (subscriber, recorder) = probe::<u64>();
    publisher.subscribe(subscriber);
    recorder.request(1_000);
    assert!(recorder.expect_terminal().is_err());
    assert_eq!(recorder.items(), (0..corrupt).collect::<Vec<_>>());
    assert_eq!(metrics.shed(Reason::Cancelled), 0);
}
