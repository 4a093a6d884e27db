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
    fn try_on_next_iter<I: Iterator<Item = Counted>>(&mut self, items: &mut I, _: u64) -> u64 {
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
