//! Hand-off liveness with an upstream that knows only the Reactive Streams signals (no `on_flush`,
//! no bursts): a boundary, the lanes behind map_async and merge, and batch's `max_wait` must deliver
//! what such a publisher emitted before it paused, however long it pauses.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{plain_publisher, runtime};
use weir::prelude::*;
use weir::runtime::{boundary, sink};

/// How long an item may take to come out: generous for a loaded CI machine, far below "never".
const WITHIN: Duration = Duration::from_secs(2);

async fn next_within<T>(stream: &mut (impl futures::Stream<Item = Result<T, Error>> + Unpin)) -> T {
    tokio::time::timeout(WITHIN, stream.next())
        .await
        .expect("an item emitted before the upstream paused did not arrive")
        .expect("the stream ended early")
        .expect("the stream failed")
}

#[test]
fn a_boundary_delivers_each_item_of_a_pausing_plain_publisher() {
    let rt = runtime();
    rt.block_on(async {
        let (publisher, driver) = plain_publisher::<u64>();
        let (inlet, outlet) = boundary::processor::<u64>(BoundaryConfig::new("hop", 16).unwrap());
        publisher.subscribe(inlet);
        let mut stream = sink::into_stream(outlet, 4);
        let driver = std::thread::spawn(move || {
            for item in 1..=3 {
                driver.send(item);
                std::thread::sleep(Duration::from_millis(20));
            }
            driver
        });
        for expected in 1..=3 {
            assert_eq!(next_within(&mut stream).await, expected);
        }
        driver.join().unwrap().complete();
        assert!(stream.next().await.is_none());
    });
}

#[test]
fn an_item_then_a_long_pause_is_delivered() {
    let rt = runtime();
    rt.block_on(async {
        let (publisher, driver) = plain_publisher::<u64>();
        let mut stream = sink::into_stream(
            publisher.boundary(BoundaryConfig::new("hop", 16).unwrap()),
            16,
        );
        let sender = std::thread::spawn(move || {
            driver.send(7);
            driver.send(8);
            driver
        });
        assert_eq!(next_within(&mut stream).await, 7);
        assert_eq!(next_within(&mut stream).await, 8);
        sender.join().unwrap().complete();
    });
}

#[test]
fn map_async_and_merge_lanes_deliver_a_pausing_plain_publisher() {
    let rt = runtime();
    rt.block_on(async {
        let (first, first_driver) = plain_publisher::<u64>();
        let (second, second_driver) = plain_publisher::<u64>();
        let merged = weir::operators::merge([first.boxed(), second.boxed()])
            .map_async(4, |x| async move { x * 10 });
        let mut stream = sink::into_stream(merged, 8);
        let senders = std::thread::spawn(move || {
            first_driver.send(1);
            std::thread::sleep(Duration::from_millis(20));
            first_driver.send(2);
            second_driver.send(3);
            std::thread::sleep(Duration::from_millis(20));
            second_driver.send(4);
            (first_driver, second_driver)
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_within(&mut stream).await);
        }
        got.sort_unstable();
        assert_eq!(got, vec![10, 20, 30, 40]);
        let (first_driver, second_driver) = senders.join().unwrap();
        first_driver.complete();
        second_driver.complete();
        assert!(stream.next().await.is_none());
    });
}

#[test]
fn batch_max_wait_fires_for_a_pausing_plain_publisher() {
    let rt = runtime();
    rt.block_on(async {
        let (publisher, driver) = plain_publisher::<u64>();
        let mut stream = sink::into_stream(publisher.batch(100, Duration::from_millis(50)), 4);
        let sender = std::thread::spawn(move || {
            for item in 0..3 {
                driver.send(item);
            }
            driver
        });
        assert_eq!(next_within(&mut stream).await, vec![0, 1, 2]);
        sender.join().unwrap().complete();
        assert!(stream.next().await.is_none());
    });
}
