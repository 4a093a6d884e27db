//! The credit ring's edge cases, on the real type (the hand-off races are in `loom.rs`).
#![cfg(not(loom))]

use weir_lockfree::ring::{Consumer, Credit, Producer, ring};

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

/// A ring of four whose next free slot is slot 3 (items "0", "1", "2" went through it; they are
/// returned, read, with the ring).
fn ring_of_four_at_slot_three() -> (
    Producer<String>,
    Consumer<String>,
    Credit<String>,
    Vec<String>,
) {
    let (mut producer, mut consumer, credit) = ring::<String>(4);
    for i in 0..3 {
        producer.push(i.to_string()).unwrap();
    }
    producer.publish();
    let mut out = Vec::new();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 3);
    consumer.release();
    (producer, consumer, credit, out)
}

#[test]
fn write_from_front_copies_across_the_wrap_and_keeps_the_rest_in_the_buffer() {
    let (mut producer, mut consumer, _credit, mut out) = ring_of_four_at_slot_three();
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

#[test]
fn a_writer_writes_item_by_item_across_the_wrap_and_gives_back_what_does_not_fit() {
    let (mut producer, mut consumer, _credit, mut out) = ring_of_four_at_slot_three();
    // The four free slots are 3, then 0, 1, 2: the writer's room counts both runs, and the item
    // after them comes back.
    let mut refused = None;
    let (written, rooms) = producer.push_with(8, |writer| {
        let mut rooms = vec![writer.room()];
        for i in 3..8 {
            if let Err(item) = writer.write(i.to_string()) {
                refused = Some(item);
                break;
            }
            rooms.push(writer.room());
        }
        rooms
    });
    assert_eq!(written, 4);
    assert_eq!(rooms, [4, 3, 2, 1, 0]);
    assert_eq!(refused.as_deref(), Some("7"));
    // Nothing reserved: nothing written, the item comes back.
    let (written, back) = producer.push_with(8, |writer| writer.write("8".to_string()));
    assert_eq!((written, back), (0, Err("8".to_string())));
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 4);
    let expected: Vec<String> = (0..7).map(|i| i.to_string()).collect();
    assert_eq!(out, expected);
    // A reservation of two from slot 3 (the last): one slot before the wrap, one after; a third
    // write is refused.
    consumer.release();
    let (written, ()) = producer.push_with(2, |writer| {
        writer.write("a".into()).unwrap();
        writer.write("b".into()).unwrap();
        assert!(writer.write("c".into()).is_err());
    });
    assert_eq!(written, 2);
    producer.publish();
    out.clear();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 2);
    assert_eq!(out, ["a", "b"]);
}

#[test]
fn a_drain_feeds_across_the_wrap_and_a_panic_leaves_the_rest_for_the_next_reader() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counted(u64, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut producer, mut consumer, credit) = ring::<Counted>(4);
    // Slots 2, 3, 0, 1 hold items 0..4: the drain's items cross the end of the array.
    for i in 0..2 {
        assert!(producer.push(Counted(i, drops.clone())).is_ok());
    }
    producer.publish();
    assert_eq!(consumer.drain().count(), 2);
    consumer.release();
    for i in 0..4 {
        assert!(producer.push(Counted(i, drops.clone())).is_ok());
    }
    producer.publish();
    drops.store(0, Ordering::SeqCst);
    // At most `max`, across the wrap.
    let mut seen = Vec::new();
    let handed = consumer.drain().feed(3, |item| {
        seen.push(item.0);
        true
    });
    assert_eq!((handed, seen), (3, vec![0, 1, 2]));
    // `false` stops after the item it was given.
    consumer.release();
    for i in 4..7 {
        assert!(producer.push(Counted(i, drops.clone())).is_ok());
    }
    producer.publish();
    let mut seen = Vec::new();
    let handed = consumer.drain().feed(u64::MAX, |item| {
        seen.push(item.0);
        item.0 < 4
    });
    assert_eq!((handed, seen), (2, vec![3, 4]));
    // A panic after taking item 5: it is dropped once, 6 stays for the next reader.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consumer.drain().feed(u64::MAX, |item| {
            drop(item);
            panic!("the subscriber fails on its first item");
        })
    }));
    assert!(outcome.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 6);
    let rest: Vec<u64> = consumer.drain().map(|item| item.0).collect();
    assert_eq!(rest, vec![6]);
    drop((producer, consumer, credit));
    assert_eq!(drops.load(Ordering::SeqCst), 7);
}

#[test]
fn a_writer_that_stops_early_publishes_what_it_wrote_and_the_next_write_follows_it() {
    let (mut producer, mut consumer, _credit, mut out) = ring_of_four_at_slot_three();
    // Four reserved (slot 3, then 0, 1, 2), one written: it stops at the end of the first run.
    let (written, ()) = producer.push_with(4, |writer| writer.write("3".into()).unwrap());
    assert_eq!(written, 1);
    // Four asked for, three free (slots 0, 1, 2: one run from the array's start), two written.
    let (written, ()) = producer.push_with(4, |writer| {
        assert_eq!(writer.room(), 3);
        writer.write("4".into()).unwrap();
        writer.write("5".into()).unwrap();
    });
    assert_eq!(written, 2);
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 3);
    consumer.release();
    // From slot 2: one item, then a copy from a buffer in the same reservation, across the wrap
    // (slot 3, then 0).
    let mut buffer: Vec<String> = ["7", "8", "9"].map(String::from).to_vec();
    let (written, moved) = producer.push_with(4, |writer| {
        writer.write("6".into()).unwrap();
        writer.write_from_front(&mut buffer, 2)
    });
    assert_eq!((written, moved), (3, 2));
    assert_eq!(buffer, ["9"]);
    producer.publish();
    assert_eq!(consumer.pop_into(&mut out, usize::MAX), 3);
    let expected: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    assert_eq!(out, expected);
}

#[test]
fn a_drain_fed_stops_where_it_is_told_in_either_run() {
    // Slots 3, 0, 1, 2 hold "3".."6" in both rings.
    let filled = || {
        let (mut producer, consumer, credit, _) = ring_of_four_at_slot_three();
        for i in 3..7 {
            producer.push(i.to_string()).unwrap();
        }
        producer.publish();
        (producer, consumer, credit)
    };
    let (_producer, mut consumer, _credit) = filled();
    // Nothing asked, nothing handed.
    assert_eq!(consumer.drain().feed(0, |_| true), 0);
    // `false` in the second run: the item it was given counts as handed, the rest stays.
    let mut seen = Vec::new();
    let mut drain = consumer.drain();
    let handed = drain.feed(u64::MAX, |item| {
        let go_on = item != "5";
        seen.push(item);
        go_on
    });
    assert_eq!((handed, drain.popped()), (3, 3));
    drop(drain);
    assert_eq!(seen, ["3", "4", "5"]);
    assert_eq!(consumer.drain().collect::<Vec<_>>(), ["6"]);
    // Exactly the first run (slot 3, the array's end), then the rest from slot 0.
    let (_producer, mut consumer, _credit) = filled();
    let mut seen = Vec::new();
    let mut drain = consumer.drain();
    let handed = drain.feed(1, |item| {
        seen.push(item);
        true
    });
    assert_eq!((handed, drain.popped()), (1, 1));
    drop(drain);
    let handed = consumer.drain().feed(u64::MAX, |item| {
        seen.push(item);
        true
    });
    assert_eq!(handed, 3);
    assert_eq!(seen, ["3", "4", "5", "6"]);
}
