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
    // What the leaked drain did not hand out is leaked with it (as `Vec::drain` does).
    assert!(consumer.pop().is_none());
    producer.push(Box::new(9)).unwrap();
    producer.publish();
    assert_eq!(consumer.pop().map(|b| *b), Some(9));
}

#[test]
fn a_panic_while_pulling_a_drain_leaves_the_rest_for_the_next_reader() {
    let (mut producer, mut consumer, _credit) = ring::<Box<u64>>(4);
    for i in 0..3 {
        producer.push(Box::new(i)).unwrap();
    }
    producer.publish();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut drain = consumer.drain();
        assert_eq!(drain.next().map(|b| *b), Some(0));
        panic!("the subscriber fails after one item");
    }));
    assert!(outcome.is_err());
    let rest: Vec<u64> = consumer.drain().map(|b| *b).collect();
    assert_eq!(rest, vec![1, 2]);
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

#[test]
fn pop_into_copies_across_the_wrap_and_stops_at_max() {
    let (mut producer, mut consumer, _credit) = ring::<String>(4);
    let mut out = vec!["before".to_string()];
    // Move the positions near the end of the slots so the next items wrap around.
    for i in 0..3 {
        producer.push(i.to_string()).unwrap();
    }
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, 2), 2);
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 1);
    consumer.release();
    for i in 3..7 {
        producer.push(i.to_string()).unwrap(); // slots 3, 0, 1, 2
    }
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, 3), 3);
    assert_eq!(consumer.pop_into(&mut out, 8), 1);
    assert_eq!(consumer.pop_into(&mut out, 8), 0);
    assert!(consumer.pop().is_none());
    let expected: Vec<String> = std::iter::once("before".to_string())
        .chain((0..7).map(|i| i.to_string()))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn write_from_front_copies_across_the_wrap_and_keeps_the_rest_in_the_buffer() {
    let (mut producer, mut consumer, _credit) = ring::<String>(4);
    for i in 0..3 {
        producer.push(i.to_string()).unwrap();
    }
    producer.publish();
    let mut out = Vec::new();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 3);
    consumer.release();
    // Three free slots from slot 3 on (3, 0, 1), then a fourth (2): at most `max` are taken.
    let mut buffer: Vec<String> = (3..9).map(|i| i.to_string()).collect();
    let (written, moved) = producer.push_with(3, |writer| writer.write_from_front(&mut buffer, 3));
    assert_eq!((written, moved), (3, 3));
    // As many as fit: one slot left.
    let (written, _) = producer.push_with(8, |writer| writer.write_from_front(&mut buffer, 8));
    assert_eq!(written, 1);
    assert_eq!(buffer, ["7", "8"]);
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 4);
    let expected: Vec<String> = (0..7).map(|i| i.to_string()).collect();
    assert_eq!(out, expected);
}
