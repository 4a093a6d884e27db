//! A lane read by a task that waits for its upstream, fed by a plain Reactive Streams publisher:
//! one that sends an item whenever it has one and never says that it paused. Each item must reach
//! the waiting reader on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use weir_runtime::protocol::Each;
use weir_runtime::{Publisher, RawSubscription, Subscriber, Subscription, sink};

/// Hands one item to the subscriber.
type Send1 = Box<dyn FnMut(u64) + Send>;

/// Sends an item when the test says so (`send`), within the demand it was given: with
/// `on_next`, or (`bursts`) as a burst of one through weir's `try_on_next_iter`, never followed
/// by `on_flush`.
#[derive(Clone, Default)]
struct Manual {
    send: Arc<Mutex<Option<Send1>>>,
    requested: Arc<AtomicU64>,
    bursts: bool,
}

impl Manual {
    fn send(&self, item: u64) {
        assert!(
            item < self.requested.load(Ordering::SeqCst),
            "item {item} was not asked for"
        );
        let mut send = self.send.lock().unwrap();
        (send.as_mut().expect("subscribed"))(item);
    }
}

struct Requests(Arc<AtomicU64>);

impl RawSubscription for Requests {
    fn request(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }

    fn cancel(&self) {}
}

impl Publisher<u64> for Manual {
    fn subscribe<S: Subscriber<u64>>(self, mut subscriber: S) {
        subscriber.on_subscribe(Subscription::new(Arc::new(Requests(
            self.requested.clone(),
        ))));
        let bursts = self.bursts;
        let requested = self.requested.clone();
        *self.send.lock().unwrap() = Some(Box::new(move |item| {
            if bursts {
                // Offered with all the demand left: the burst runs out before it.
                let demand = requested.load(Ordering::SeqCst) - item;
                let accepted =
                    subscriber.try_on_next_iter(&mut Each(std::iter::once(item)), demand);
                assert_eq!(accepted, 1);
            } else {
                subscriber.on_next(item);
            }
        }));
    }
}

/// The reader waits in its task (long enough that its wait is an old one, not one just started)
/// while the publisher, on another thread, sends the next item. The lane's inlet used to keep an
/// item that landed on one of its checkpoints (the first item, then every 256th: when it samples
/// the age of held items) instead of waking the reader, until the next item came.
#[test]
fn every_item_a_plain_publisher_sends_reaches_a_waiting_reader() {
    sends_one_at_a_time(Manual::default());
}

/// The same with items handed over as bursts (of one) that no `on_flush` follows: a burst that ran
/// out returned before it looked whether the reader waits.
#[test]
fn every_burst_a_publisher_does_not_flush_reaches_a_waiting_reader() {
    sends_one_at_a_time(Manual {
        bursts: true,
        ..Manual::default()
    });
}

fn sends_one_at_a_time(manual: Manual) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (got, arrivals) = std::sync::mpsc::channel();
    let items = runtime.block_on(async { sink::into_stream(manual.clone(), 64) });
    runtime.spawn(async move {
        let mut items = items;
        while let Some(item) = items.next().await {
            if got.send(item.unwrap()).is_err() {
                return;
            }
        }
    });
    for item in 0..300u64 {
        std::thread::sleep(Duration::from_millis(3));
        manual.send(item);
        let arrived = arrivals
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("item {item} did not reach the waiting reader"));
        assert_eq!(arrived, item);
    }
}
