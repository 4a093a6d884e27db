//! The ledger's counters at a quiescent point: written concurrently by many subscriptions (each
//! with its own writer) and by shared atomic adds, read concurrently by observers, they add up
//! exactly once every writer is done, and a read never sees more than was counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use weir_runtime::ledger::{Account, Reason, Scope, Tally};

#[test]
fn concurrent_writers_add_up_exactly_at_a_quiescent_point() {
    const WRITERS: u64 = 4;
    const ITEMS: u64 = 100_000;
    let scope = Scope::new();
    let tally = scope.enter(|| Tally::new("stress"));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (scope, done) = (scope.clone(), done.clone());
        thread::spawn(move || {
            let mut last = 0;
            while !done.load(Ordering::Acquire) {
                let entry = scope.entry();
                let total = entry.exits.sum() + entry.made;
                // Monotone, and never beyond what the writers will have counted.
                assert!(total >= last, "counts went backwards: {total} < {last}");
                assert!(total <= WRITERS * ITEMS * 2, "counted more than written");
                last = total;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let tally = tally.clone();
            thread::spawn(move || {
                let mut writer = tally.writer();
                for i in 0..ITEMS {
                    if i % 2 == 0 {
                        writer.add(Reason::Filtered, 1);
                    } else {
                        tally.add(Reason::Cancelled, 1);
                    }
                    writer.add_made(1);
                    writer.set_held(i % 7 + w);
                }
                writer.set_held(0);
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Release);
    reader.join().unwrap();
    let entry = tally.entry();
    assert_eq!(entry.exits[Reason::Filtered], WRITERS * ITEMS / 2);
    assert_eq!(entry.exits[Reason::Cancelled], WRITERS * ITEMS / 2);
    assert_eq!(entry.made, WRITERS * ITEMS);
    assert_eq!(entry.held, 0);
    assert_eq!(scope.entry(), entry);
}
