//! The durable ingress: a push returns once its item is fsynced, pushes share fsyncs, the backlog
//! is bounded, the tail follows the log, and what was pushed and not acknowledged survives a crash.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weir_runtime::sink;
use weir_spill::fs::MemFilesystem;
use weir_spill::{SpillConfig, SpillError, durable};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Many pushes at once share fsyncs (group commit), and every one is durable when it returns.
#[test]
fn concurrent_pushes_share_fsyncs() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 10_000).unwrap();
        let pushes: Vec<_> = (0..400u64)
            .map(|n| {
                let orders = orders.clone();
                tokio::spawn(async move { orders.push(&n).await })
            })
            .collect();
        for push in pushes {
            push.await.unwrap().unwrap();
        }
        let syncs = orders.metrics().snapshot().fsyncs;
        assert!((1..200).contains(&syncs), "{syncs} fsyncs for 400 pushes");
        orders.close();
        let mut items = sink::collect(tail).await.unwrap();
        assert_eq!(acker.ack(items.len() as u64).unwrap(), 400);
        items.sort_unstable();
        assert_eq!(items, (0..400).collect::<Vec<_>>());
        assert_eq!(orders.backlog(), 0);
    });
}

/// The backlog bound refuses at once, with nothing written, and frees up as items are acknowledged.
#[test]
fn the_backlog_is_bounded_until_items_are_acknowledged() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 3).unwrap();
        for n in 0..3 {
            orders.push(&n).await.unwrap();
        }
        let refused = orders.push(&3).await.unwrap_err();
        assert!(
            matches!(
                refused,
                SpillError::BacklogFull {
                    backlog: 3,
                    limit: 3
                }
            ),
            "{refused}"
        );
        let mut stream = weir_runtime::sink::into_stream(tail, 8);
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        // Handed out is not done: still refused until the consumer acknowledges.
        assert!(orders.push(&3).await.is_err());
        acker.ack(1).unwrap();
        orders.push(&3).await.unwrap();
        orders.close();
        let rest: Vec<u64> = stream.map(|item| item.unwrap()).collect().await;
        assert_eq!(rest, vec![1, 2, 3]);
        assert!(matches!(orders.push(&4).await, Err(SpillError::Closed)));
    });
}

/// The tail hands out items pushed after it subscribed, and completes only after the close.
#[test]
fn the_tail_follows_pushes_and_completes_after_close() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, _acker) =
            durable::<String>("orders", dir.path(), SpillConfig::new(), 100).unwrap();
        let mut stream = weir_runtime::sink::into_stream(tail, 4);
        for round in 0..3 {
            let item = format!("order {round}");
            orders.push(&item).await.unwrap();
            let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("the tail hands out a pushed item without waiting for more");
            assert_eq!(next.unwrap().unwrap(), item);
        }
        let pending = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(
            pending.is_err(),
            "the tail must wait, not complete, while open"
        );
        orders.close();
        assert!(stream.next().await.is_none());
    });
}

/// A process killed after pushes returned: a new run replays every pushed item that was not
/// acknowledged, and nothing that was.
#[test]
fn pushed_items_survive_a_crash_and_acknowledged_ones_are_not_replayed() {
    runtime().block_on(async {
        let fs = Arc::new(MemFilesystem::new());
        let config = || SpillConfig::new().filesystem(fs.clone()).ledger_every(1);
        let dir = std::path::Path::new("/spill");
        let (orders, tail, acker) = durable::<u64>("orders", dir, config(), 1_000).unwrap();
        for n in 0..10 {
            orders.push(&n).await.unwrap();
        }
        let mut stream = weir_runtime::sink::into_stream(tail, 4);
        for expected in 0..4 {
            assert_eq!(stream.next().await.unwrap().unwrap(), expected);
        }
        acker.ack(4).unwrap();
        // The kill: nothing is closed or flushed, the locks go with the process.
        std::mem::forget((orders, stream, acker));
        fs.crash();

        let (orders, tail, acker) = durable::<u64>("orders", dir, config(), 1_000).unwrap();
        assert_eq!(orders.recovered(), 6);
        orders.push(&10).await.unwrap();
        orders.close();
        let replayed = sink::collect(tail).await.unwrap();
        assert_eq!(replayed, (4..=10).collect::<Vec<_>>());
        acker.ack(7).unwrap();
    });
}

/// A pusher that stops waiting after its append (a client that hung up) leaves the item in the
/// log: it is made durable by the next sync and handed out.
#[test]
fn an_abandoned_push_is_still_delivered() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, _acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 100).unwrap();
        let abandoned = orders.push(&1);
        // Polled once (the append happens), then dropped.
        let _ = tokio::time::timeout(Duration::ZERO, abandoned).await;
        orders.push(&2).await.unwrap();
        let last = orders.push(&3);
        let _ = tokio::time::timeout(Duration::ZERO, last).await;
        // Nobody waits for 3's sync: the close writes it, and the tail hands it out and ends.
        orders.close();
        let all = tokio::time::timeout(Duration::from_secs(5), sink::collect(tail)).await;
        assert_eq!(all.expect("the tail completes").unwrap(), vec![1, 2, 3]);
    });
}

/// A batch push goes in whole or not at all, with one sync for all of it.
#[test]
fn a_batch_push_is_all_or_nothing() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, _acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 5).unwrap();
        orders.push_all(&[1, 2, 3]).await.unwrap();
        let syncs = orders.metrics().snapshot().fsyncs;
        assert!(matches!(
            orders.push_all(&[4, 5, 6]).await,
            Err(SpillError::BacklogFull {
                backlog: 3,
                limit: 5
            })
        ));
        orders.push_all(&[4, 5]).await.unwrap();
        assert_eq!(orders.metrics().snapshot().fsyncs, syncs + 1);
        assert!(orders.push_all(&[]).await.is_err());
        let queue = orders.queue_metrics().snapshot();
        assert_eq!((queue.items_in, queue.rejected["full"]), (5, 3));
        orders.close();
        assert_eq!(sink::collect(tail).await.unwrap(), vec![1, 2, 3, 4, 5]);
    });
}

/// The ingress's queue reports the age of its oldest item while items wait (it read `None`: the
/// queue is the log, which records no push times in the runtime's counters), and `None` again once
/// the tail handed every item out.
#[test]
fn the_queue_reports_the_age_of_its_oldest_waiting_item() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, _acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 100).unwrap();
        assert_eq!(orders.queue_metrics().snapshot().oldest_item_age_ms, None);
        orders.push_all(&[1, 2, 3]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let age = orders.queue_metrics().snapshot().oldest_item_age_ms;
        assert!(age.is_some_and(|ms| ms >= 50.0), "{age:?}");
        orders.close();
        assert_eq!(sink::collect(tail).await.unwrap(), vec![1, 2, 3]);
        assert_eq!(orders.queue_metrics().snapshot().oldest_item_age_ms, None);
    });
}

/// Flips a bit of the last byte of the log's first segment: the last record written to it, a
/// corrupt record (not a torn tail: a later segment follows).
fn corrupt_the_first_segments_last_record(dir: &std::path::Path) {
    let segments = support::segments(dir);
    assert!(segments.len() > 1, "{segments:?}");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&segments[0], &bytes).unwrap();
}

/// Segments of 512 bytes and batches of 8 records: the 40 records below fill several segments.
fn small() -> SpillConfig {
    SpillConfig::new().segment_bytes(512).batch_records(8)
}

/// Pushes 0..40 through a durable ingress in `dir` (`small` segments), closes it, and corrupts
/// the first segment's last record.
async fn forty_pushed_then_one_corrupted(dir: &std::path::Path) {
    let (orders, tail, acker) = durable::<u64>("orders", dir, small(), 100).unwrap();
    orders.push_all(&(0..40).collect::<Vec<_>>()).await.unwrap();
    orders.close();
    drop((orders, tail, acker));
    corrupt_the_first_segments_last_record(dir);
}

/// A recovered record skipped as corrupt on read-back (`OnCorruption::Skip`) leaves the queue,
/// counted as `corrupt`, instead of staying in its depth for ever (readiness would report a
/// backlog that never drains); also with pushes of this run behind it.
#[test]
fn a_recovered_record_skipped_as_corrupt_is_counted() {
    use weir_runtime::metrics::Reason;
    use weir_spill::OnCorruption;
    for pushed_after in [0u64, 2] {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            forty_pushed_then_one_corrupted(dir.path()).await;
            let config = small().on_corruption(OnCorruption::Skip);
            let (orders, tail, _acker) = durable::<u64>("orders", dir.path(), config, 100).unwrap();
            assert_eq!(orders.recovered(), 40);
            let queue = orders.queue_metrics();
            let mut stream = weir_runtime::sink::into_stream(tail, 16);
            let mut last = None;
            for _ in 0..39 {
                let item = stream.next().await.unwrap().unwrap();
                assert!(last.is_none_or(|last| item > last) && item < 40);
                last = Some(item);
            }
            for n in 0..pushed_after {
                orders.push(&(100 + n)).await.unwrap();
                assert_eq!(stream.next().await.unwrap().unwrap(), 100 + n);
            }
            let counts = queue.snapshot();
            assert_eq!(
                (
                    counts.recovered,
                    counts.items_in,
                    counts.items_out,
                    counts.depth
                ),
                (40, 40 + pushed_after, 39 + pushed_after, 0),
                "{counts:?}"
            );
            assert_eq!(queue.shed(Reason::Corrupt), 1);
            orders.close();
            assert!(stream.next().await.is_none());
        });
    }
}

/// The tail reads a record only for demand: a record it read ahead of demand and held when the
/// subscriber left was counted out of the queue (and as cancelled by the stream's task), yet it
/// stays in the log, unacknowledged, and the next run replays it.
#[test]
fn the_tail_reads_nothing_ahead_of_demand() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (orders, tail, _acker) =
            durable::<u64>("orders", dir.path(), SpillConfig::new(), 100).unwrap();
        orders.push_all(&[1, 2, 3, 4, 5]).await.unwrap();
        let queue = orders.queue_metrics();
        // Four requested (the stream's prefetch, at its first poll) and handed out; one taken.
        let mut stream = weir_runtime::sink::into_stream(tail, 4);
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queue.snapshot().items_out < 4 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Time for a read ahead of demand, if the tail did one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let counts = queue.snapshot();
        assert_eq!((counts.items_out, counts.depth), (4, 1), "{counts:?}");
        assert_eq!(orders.backlog(), 5);
    });
}

/// With `OnCorruption::Fail` (the default), the tail hands out the good records it read before a
/// corrupt one, in order, and only then fails: it used to fail at once and drop them with its
/// read-ahead (counted in, never out, and read into the same window, and lost, at every restart).
#[test]
fn the_tail_hands_out_the_records_read_before_a_corrupt_one_then_fails() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        forty_pushed_then_one_corrupted(dir.path()).await;
        let (orders, tail, _acker) = durable::<u64>("orders", dir.path(), small(), 100).unwrap();
        let queue = orders.queue_metrics();
        let mut stream = weir_runtime::sink::into_stream(tail, 16);
        let mut good = Vec::new();
        let failed = loop {
            match stream.next().await {
                Some(Ok(item)) => good.push(item),
                Some(Err(error)) => break error,
                None => panic!("the tail completed without the corrupt record's error"),
            }
        };
        assert!(!good.is_empty(), "{failed}");
        assert_eq!(good, (0..good.len() as u64).collect::<Vec<_>>());
        let counts = queue.snapshot();
        assert_eq!(
            (counts.items_in, counts.items_out, counts.depth),
            (40, good.len() as u64, 40 - good.len() as u64),
            "{counts:?}"
        );
    });
}

/// A durable ingress on an in-memory filesystem with item 1 pushed (on disk) and item 2 pushed
/// into a batch whose write failed (the push returned the error), every later write failing.
async fn one_written_one_not() -> weir_spill::DurableParts<u64> {
    let fs = Arc::new(MemFilesystem::new());
    let config = SpillConfig::new().filesystem(fs.clone());
    let parts = durable::<u64>("orders", std::path::Path::new("/spill"), config, 100).unwrap();
    parts.0.push(&1).await.unwrap();
    fs.fail_writes(1_000);
    assert!(parts.0.push(&2).await.is_err());
    parts
}

/// A batch whose write fails when the handle is closed, and again when the tail has handed out
/// everything else: the tail takes its records back, counts them as `spill_failed` and ends with
/// the error. It used to wait for ever (the log still counted them unread), and once the log was
/// dropped they were gone, counted in the queue as in and never out.
#[test]
fn records_that_cannot_be_written_at_close_are_counted_and_the_tail_ends() {
    use weir_runtime::metrics::Reason;
    runtime().block_on(async {
        let (orders, tail, _acker) = one_written_one_not().await;
        orders.close();
        let mut stream = weir_runtime::sink::into_stream(tail, 16);
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            let mut items = Vec::new();
            let mut error = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(item) => items.push(item),
                    Err(failed) => error = Some(failed),
                }
            }
            (items, error)
        })
        .await;
        let (items, error) = ended.expect("the tail did not end");
        assert_eq!(items, [1]);
        assert!(error.is_some(), "the lost record's error");
        let queue = orders.queue_metrics();
        let counts = queue.snapshot();
        assert_eq!(
            (counts.items_in, counts.items_out, counts.depth),
            (2, 1, 0),
            "{counts:?}"
        );
        assert_eq!(queue.shed(Reason::SpillFailed), 1);
    });
}

/// A batch whose write failed, with no tail to try it again: when the handles and the tail are
/// dropped, one last write is tried, and its records leave the queue counted as `spill_failed`.
/// They used to stay in the queue's counters as held (the log gave them up on its own, counting
/// them only in its `dropped_unwritten`).
#[test]
fn records_never_written_are_counted_when_the_ingress_is_dropped() {
    use weir_runtime::metrics::Reason;
    runtime().block_on(async {
        let (orders, tail, acker) = one_written_one_not().await;
        let queue = orders.queue_metrics();
        let log = orders.metrics();
        drop((orders, tail, acker));
        let counts = queue.snapshot();
        assert_eq!(
            (counts.items_in, counts.items_out, counts.depth),
            (2, 0, 1),
            "{counts:?}"
        );
        assert_eq!(queue.shed(Reason::SpillFailed), 1);
        assert_eq!(log.snapshot().dropped_unwritten, 1);
    });
}
