//! Ingress behaviour: every overflow policy, counted outcomes, close and cancel.

mod support;

use std::time::Duration;

use support::probe;
use weir::prelude::*;
use weir::runtime::ErrorKind;
use weir::runtime::metrics::Reason;

fn config(capacity: usize, overflow: Overflow) -> IngressConfig {
    IngressConfig::new("checkout", capacity, overflow).unwrap()
}

#[tokio::test]
async fn reject_hands_the_item_back_with_a_retry_hint_and_counts_it() {
    let retry_after = Duration::from_millis(250);
    let (handle, publisher) = ingress::bounded::<u32>(config(2, Overflow::Reject { retry_after }));
    assert_eq!(handle.push(1).await.unwrap(), Pushed::Enqueued);
    assert_eq!(handle.push(2).await.unwrap(), Pushed::Enqueued);
    let error = handle.push(3).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(retry_after));
    assert_eq!(error.reason(), Reason::Full);
    assert_eq!(
        error.to_string(),
        "ingress `checkout` is full: retry after 250ms"
    );
    assert_eq!(error.into_inner(), 3);
    let metrics = handle.metrics();
    drop(handle);
    assert_eq!(publisher.collect().await.unwrap(), vec![1, 2]);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.rejected["full"], 1);
    assert_eq!(
        (snapshot.items_in, snapshot.items_out, snapshot.depth),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn drop_newest_refuses_the_new_item_and_drop_oldest_evicts_the_old_one() {
    let (handle, publisher) = ingress::bounded::<u32>(config(2, Overflow::DropNewest));
    for i in 0..5 {
        let _ = handle.try_push(i);
    }
    let metrics = handle.metrics();
    drop(handle);
    assert_eq!(publisher.collect().await.unwrap(), vec![0, 1]);
    assert_eq!(metrics.shed(Reason::DroppedNewest), 3);

    let (handle, publisher) = ingress::bounded::<u32>(config(2, Overflow::DropOldest));
    let mut outcomes = Vec::new();
    for i in 0..5 {
        outcomes.push(handle.try_push(i).unwrap());
    }
    assert_eq!(outcomes[..2], [Pushed::Enqueued, Pushed::Enqueued]);
    assert_eq!(outcomes[2..], [Pushed::EvictedOldest; 3]);
    let metrics = handle.metrics();
    drop(handle);
    assert_eq!(publisher.collect().await.unwrap(), vec![3, 4]);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.dropped["dropped_oldest"], 3);
    assert_eq!(snapshot.depth, 0);
}

#[tokio::test(start_paused = true)]
async fn block_waits_for_space_then_times_out_with_the_item() {
    let timeout = Duration::from_millis(100);
    let (handle, publisher) = ingress::bounded::<u32>(config(1, Overflow::Block { timeout }));
    handle.push(1).await.unwrap();
    // Full and nobody consumes: the push waits the whole timeout, then hands the item back.
    let started = tokio::time::Instant::now();
    let error = handle.push(2).await.unwrap_err();
    assert!(matches!(error, PushError::Timeout { .. }));
    assert!(started.elapsed() >= timeout);
    assert_eq!(error.into_inner(), 2);
    assert_eq!(handle.metrics().shed(Reason::Timeout), 1);
    // try_push never waits.
    assert!(matches!(handle.try_push(3), Err(PushError::Full { .. })));

    // With a consumer taking one item at a time, a blocked push gets through.
    let (subscriber, recorder) = probe::<u32>();
    publisher.subscribe(subscriber);
    let pusher = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.push(4).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    recorder.request(1);
    pusher.await.unwrap().unwrap();
    recorder.request(1);
    assert_eq!(recorder.expect_items(2), vec![1, 4]);
    assert!(handle.metrics().snapshot().producer_waits >= 2);
}

#[tokio::test]
async fn pushes_after_close_fail_and_return_the_item() {
    let (handle, publisher) = ingress::bounded::<String>(config(4, Overflow::DropNewest));
    handle.push("a".into()).await.unwrap();
    handle.close();
    assert!(handle.is_closed());
    let error = handle.push("b".into()).await.unwrap_err();
    assert!(matches!(error, PushError::Closed { .. }));
    assert_eq!(error.into_inner(), "b");
    assert_eq!(publisher.collect().await.unwrap(), vec!["a".to_string()]);
}

#[tokio::test]
async fn cancel_closes_the_ingress_and_counts_what_was_still_queued() {
    let (handle, publisher) = ingress::bounded::<u32>(config(8, Overflow::DropNewest));
    for i in 0..6 {
        handle.push(i).await.unwrap();
    }
    let (subscriber, recorder) = probe::<u32>();
    publisher.subscribe(subscriber);
    recorder.request(3);
    recorder.expect_items(3);
    assert_eq!(handle.metrics().snapshot().demand, 0);
    assert_eq!(handle.metrics().snapshot().depth, 3);
    recorder.cancel();
    let error = handle.push(99).await.unwrap_err();
    assert!(matches!(error, PushError::Closed { .. }));
    let snapshot = handle.metrics().snapshot();
    assert_eq!(snapshot.dropped["cancelled"], 3);
    assert_eq!(snapshot.rejected["closed"], 1);
    assert_eq!(snapshot.depth, 0);
    // Every pushed item is accounted for: 3 delivered + 3 dropped on cancel.
    assert_eq!(snapshot.items_in, 6);
}

#[tokio::test]
async fn a_second_subscriber_gets_a_clear_error() {
    let (handle, publisher) = ingress::bounded::<u32>(config(4, Overflow::DropNewest));
    let (first, _recorder) = probe::<u32>();
    publisher.clone().subscribe(first);
    let error = publisher.collect().await.unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::AlreadySubscribed));
    assert_eq!(error.stage(), Some("checkout"));
    drop(handle);
}

#[test]
fn zero_capacity_is_refused_with_the_stage_name() {
    let error = IngressConfig::new("checkout", 0, Overflow::DropNewest).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `checkout`: an ingress needs a capacity of at least 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_producers_every_item_is_delivered_or_counted() {
    let (handle, publisher) = ingress::bounded::<u64>(config(
        64,
        Overflow::Reject {
            retry_after: Duration::from_millis(1),
        },
    ));
    let metrics = handle.metrics();
    let consumer = tokio::spawn(
        publisher
            .boundary(BoundaryConfig::new("work", 16).unwrap())
            .fold(0u64, |n, _| *n += 1),
    );
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let handle = handle.clone();
        producers.push(tokio::spawn(async move {
            let mut rejected = 0u64;
            for i in 0..20_000u64 {
                if handle.push(p * 1_000_000 + i).await.is_err() {
                    rejected += 1;
                }
            }
            rejected
        }));
    }
    drop(handle);
    let mut rejected = 0;
    for producer in producers {
        rejected += producer.await.unwrap();
    }
    let delivered = consumer.await.unwrap().unwrap();
    assert_eq!(delivered + rejected, 80_000);
    assert_eq!(metrics.shed(Reason::Full), rejected);
}
