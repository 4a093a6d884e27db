//! A type-erased edge (`BoxPublisher`) moves bursts in chunks: what a subscriber that stops in
//! the middle of a chunk leaves is dropped exactly once and counted as cancelled at the edge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_runtime::ledger::{Reason, Scope};
use weir_runtime::{Error, Publisher, Subscriber, Subscription, source};

/// An item that counts its drops.
struct Counted(Arc<AtomicU64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Takes `keep` items of its first burst, then stops pulling (as a subscriber that failed and
/// cancelled would), leaving the rest of the chunk it was handed.
struct StopsMidBurst {
    keep: usize,
    taken: Arc<Mutex<Vec<Counted>>>,
}

impl Subscriber<Counted> for StopsMidBurst {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, item: Counted) {
        self.taken.lock().unwrap().push(item);
    }
    fn try_on_next_iter<I: weir_runtime::Burst<Item = Counted>>(
        &mut self,
        items: &mut I,
        _: u64,
    ) -> u64 {
        let mut taken = self.taken.lock().unwrap();
        let before = taken.len();
        while taken.len() < self.keep {
            match items.next() {
                Some(item) => taken.push(item),
                None => break,
            }
        }
        (taken.len() - before) as u64
    }
    fn on_error(&mut self, _: Error) {}
    fn on_complete(&mut self) {}
}

#[test]
fn items_left_in_a_chunk_are_dropped_once_and_counted() {
    let drops = Arc::new(AtomicU64::new(0));
    let made: Vec<Counted> = (0..100).map(|_| Counted(drops.clone())).collect();
    let stage = Scope::new();
    let edge = stage.enter(|| source::from_iter(made).boxed());
    let taken = Arc::new(Mutex::new(Vec::new()));
    edge.subscribe(StopsMidBurst {
        keep: 10,
        taken: taken.clone(),
    });
    let left = stage.entry().exits[Reason::Cancelled];
    assert_eq!(taken.lock().unwrap().len(), 10);
    assert!(
        left > 0,
        "the rest of the first chunk is counted at the edge"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        left,
        "each item left in the chunk is dropped once, none of the taken ones"
    );
    taken.lock().unwrap().clear();
    assert_eq!(drops.load(Ordering::SeqCst), 10 + left);
}

#[test]
fn a_boundary_behind_an_edge_hands_over_chunks_and_counts_what_is_left() {
    // The outlet fills the edge's chunk straight from its ring (a block copy): the same rules.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let drops = Arc::new(AtomicU64::new(0));
    let made: Vec<Counted> = (0..1_000).map(|_| Counted(drops.clone())).collect();
    let stage = Scope::new();
    let config = weir_runtime::boundary::BoundaryConfig::new("hop", 64).unwrap();
    let edge =
        stage.enter(|| weir_runtime::boundary::boundary(source::from_iter(made), config).boxed());
    let taken = Arc::new(Mutex::new(Vec::new()));
    edge.subscribe(StopsMidBurst {
        keep: 10,
        taken: taken.clone(),
    });
    // It keeps asking for more, takes nothing more: every other item is handed over and left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stage.entry().exits[Reason::Cancelled] < 990 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(stage.entry().exits[Reason::Cancelled], 990);
    assert_eq!(taken.lock().unwrap().len(), 10);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        990,
        "each left item dropped once"
    );
    taken.lock().unwrap().clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1_000);
}

/// Takes its bursts with `feed` and catches a panic of its own handling (as a subscriber that
/// must not unwind into its publisher does), then stops: the item it was handling is gone.
struct CatchesItsOwnPanic {
    handled: Arc<Mutex<Vec<Counted>>>,
}

impl Subscriber<Counted> for CatchesItsOwnPanic {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, item: Counted) {
        self.handled.lock().unwrap().push(item);
    }
    fn try_on_next_iter<I: weir_runtime::Burst<Item = Counted>>(
        &mut self,
        items: &mut I,
        limit: u64,
    ) -> u64 {
        let handled = self.handled.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            items.feed(limit, |item| {
                let full = handled.lock().unwrap().len() == 5;
                if full {
                    drop(item);
                    panic!("the sixth item breaks the handler");
                }
                handled.lock().unwrap().push(item);
                true
            })
        }));
        caught.unwrap_or(6) // six taken: five handled, the sixth dropped
    }
    fn on_error(&mut self, _: Error) {}
    fn on_complete(&mut self) {}
}

#[test]
fn an_item_handed_over_before_a_caught_panic_is_never_dropped_again() {
    let drops = Arc::new(AtomicU64::new(0));
    let made: Vec<Counted> = (0..100).map(|_| Counted(drops.clone())).collect();
    let stage = Scope::new();
    let edge = stage.enter(|| source::from_iter(made).boxed());
    let handled = Arc::new(Mutex::new(Vec::new()));
    edge.subscribe(CatchesItsOwnPanic {
        handled: handled.clone(),
    });
    // 5 handled, the sixth dropped by the handler, the other 94 of the chunk left at the edge.
    assert_eq!(handled.lock().unwrap().len(), 5);
    assert_eq!(stage.entry().exits[Reason::Cancelled], 94);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1 + 94,
        "nothing dropped twice"
    );
    handled.lock().unwrap().clear();
    assert_eq!(drops.load(Ordering::SeqCst), 100);
}

/// Takes each chunk by taking the edge's buffer itself (`mem::take`), which leaves the edge a
/// buffer of no capacity.
struct TakesTheBuffer {
    taken: Arc<Mutex<Vec<Counted>>>,
    done: Arc<AtomicU64>,
}

impl Subscriber<Counted> for TakesTheBuffer {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, item: Counted) {
        self.taken.lock().unwrap().push(item);
    }
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<Counted>, _limit: u64) -> (u64, usize) {
        let items = std::mem::take(chunk);
        let n = items.len() as u64;
        self.taken.lock().unwrap().extend(items);
        (n, 0)
    }
    fn on_error(&mut self, _: Error) {}
    fn on_complete(&mut self) {
        self.done.store(1, Ordering::SeqCst);
    }
}

#[test]
fn a_subscriber_that_takes_the_edges_buffer_still_gets_every_item() {
    let drops = Arc::new(AtomicU64::new(0));
    let made: Vec<Counted> = (0..1_000).map(|_| Counted(drops.clone())).collect();
    let edge = source::from_iter(made).boxed();
    let (taken, done) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicU64::new(0)),
    );
    edge.subscribe(TakesTheBuffer {
        taken: taken.clone(),
        done: done.clone(),
    });
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(taken.lock().unwrap().len(), 1_000);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
}
