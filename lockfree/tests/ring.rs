//! The credit ring's edge cases, on the real type (the hand-off races are in `loom.rs`).
#![cfg(not(loom))]

use weir_lockfree::ring::ring;

#[test]
fn a_leaked_drain_never_hands_an_item_out_twice() {
    let (mut producer, mut consumer, _credit) = ring::<Box<u64>>(4);
    producer.push(Box::new(7)).unwrap();
    producer.push(Box::new(8)).unwrap();
    producer.publish();
    let mut drain = consumer.drain();
    let first = drain.next().unwrap();
    std::mem::forget(drain);
    assert_eq!(*first, 7);
    assert_eq!(consumer.pop().map(|b| *b), Some(8));
    assert!(consumer.pop().is_none());
}

#[test]
fn a_panic_in_pop_each_never_drops_an_item_twice() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut producer, mut consumer, credit) = ring::<Counted>(4);
    for _ in 0..3 {
        assert!(producer.push(Counted(drops.clone())).is_ok());
    }
    producer.publish();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consumer.pop_each(u64::MAX, |item| {
            drop(item);
            panic!("the callback fails on the first item");
        })
    }));
    assert!(outcome.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop((producer, consumer, credit));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "each item dropped exactly once"
    );
}

#[test]
fn a_partial_drain_leaves_the_rest_for_the_next() {
    let (mut producer, mut consumer, _credit) = ring::<u64>(8);
    for i in 0..5 {
        producer.push(i).unwrap();
    }
    producer.publish();
    let mut drain = consumer.drain();
    assert_eq!(drain.size_hint(), (5, Some(5)));
    let first: Vec<u64> = drain.by_ref().take(2).collect();
    assert_eq!(drain.popped(), 2);
    drop(drain);
    let rest: Vec<u64> = consumer.drain().collect();
    assert_eq!((first, rest), (vec![0, 1], vec![2, 3, 4]));
}
