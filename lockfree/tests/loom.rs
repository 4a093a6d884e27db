//! loom models of weir's lock-free primitives. Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p weir-lockfree --release --test loom`
#![cfg(loom)]

use std::future::poll_fn;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use weir_lockfree::ring::{Consumer, Readable, ring};
use weir_lockfree::{Demand, Next, SerialCell, SubscriptionCore, TaskSubscription};

#[test]
fn demand_adds_up_and_saturates() {
    loom::model(|| {
        let demand = Arc::new(Demand::new());
        demand.add(2);
        let adder = {
            let demand = demand.clone();
            thread::spawn(move || {
                demand.add(3);
            })
        };
        // The emitter consumes what it saw, concurrently with the add.
        let seen = demand.get();
        let rest = demand.consume(seen.min(2));
        assert!(rest == 0 || rest == 3);
        adder.join().unwrap();
        assert_eq!(demand.get(), 3);
        demand.add(u64::MAX - 1);
        assert_eq!(demand.get(), Demand::UNBOUNDED);
        assert_eq!(demand.consume(10), Demand::UNBOUNDED);
    });
}

/// What a model source keeps in its `SerialCell`: the next item, and whether its subscriber was
/// released.
#[derive(Debug, Default)]
struct SourceState {
    next: u64,
    released: bool,
}

/// A source of `items` numbers behind the real `SerialCell` (what `weir_runtime`'s emitter uses),
/// emitting into counters. loom's cell checks that two passes never touch the state at once.
struct Source {
    cell: SerialCell<SourceState>,
    emitted: AtomicUsize,
    requested: AtomicUsize,
    /// How many terminal signals were sent (must end at most 1).
    terminals: AtomicUsize,
    items: u64,
}

impl Source {
    fn new(items: u64) -> Self {
        Self {
            cell: SerialCell::new(SourceState::default()),
            emitted: AtomicUsize::new(0),
            requested: AtomicUsize::new(0),
            terminals: AtomicUsize::new(0),
            items,
        }
    }

    fn pass(&self, core: &SubscriptionCore, state: &mut SourceState) {
        if state.released {
            return;
        }
        if core.is_cancelled() {
            state.released = true; // release the subscriber
            return;
        }
        let demand = core.demand().get();
        let mut sent = 0;
        while sent < demand && state.next < self.items {
            state.next += 1;
            sent += 1;
            self.emitted.fetch_add(1, Ordering::Relaxed);
        }
        core.demand().consume(sent);
        if state.next == self.items {
            // Completion needs no demand; then the subscriber is released.
            self.terminals.fetch_add(1, Ordering::Relaxed);
            state.released = true;
        }
    }

    fn request(&self, n: u64) {
        self.requested.fetch_add(n as usize, Ordering::Relaxed);
        self.cell.request(n, |core, state| self.pass(core, state));
    }

    fn cancel(&self) {
        self.cell.cancel(|core, state| self.pass(core, state));
    }

    fn is_released(&self) -> bool {
        let mut released = false;
        self.cell.signal(|_, state| released = state.released);
        released
    }
}

#[test]
fn subscription_request_races_never_overshoot_and_lose_nothing() {
    loom::model(|| {
        let source = Arc::new(Source::new(5));
        let other = {
            let source = source.clone();
            thread::spawn(move || source.request(2))
        };
        source.request(1);
        other.join().unwrap();
        // Every request was served exactly: 3 items, whichever thread emitted them.
        assert_eq!(source.emitted.load(Ordering::Relaxed), 3);
        assert_eq!(source.cell.core().demand().get(), 0);
    });
}

#[test]
fn subscription_cancel_races_stop_and_release() {
    loom::model(|| {
        let source = Arc::new(Source::new(5));
        let canceller = {
            let source = source.clone();
            thread::spawn(move || source.cancel())
        };
        source.request(2);
        source.request(1);
        canceller.join().unwrap();
        let emitted = source.emitted.load(Ordering::Relaxed);
        assert!(emitted <= 3);
        // After cancel returned and no emitter is running, the subscriber has been released and
        // requests are no-ops.
        source.request(5);
        assert_eq!(source.emitted.load(Ordering::Relaxed), emitted);
        assert!(source.is_released());
    });
}

#[test]
fn ring_hands_over_every_item_in_order_without_lost_wakeups() {
    loom::model(|| {
        let (mut producer, mut consumer, _credit) = ring::<u64>(4);
        let writer = thread::spawn(move || {
            for i in 0..3 {
                producer.push(i).unwrap();
            }
            producer.publish();
            producer.close();
        });
        let mut got = Vec::new();
        loom::future::block_on(async {
            loop {
                match poll_fn(|cx| consumer.poll_readable(cx)).await {
                    Readable::Items => {
                        while let Some(item) = consumer.pop() {
                            got.push(item);
                        }
                    }
                    Readable::Closed => break,
                }
            }
        });
        writer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

#[test]
fn ring_credit_waiter_is_woken_when_slots_free() {
    loom::model(|| {
        let (mut producer, mut consumer, credit) = ring::<u64>(2);
        producer.push(0).unwrap();
        producer.push(1).unwrap();
        assert!(producer.push(9).is_err());
        producer.publish();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            loom::future::block_on(async {
                while got.len() < 3 {
                    poll_fn(|cx| consumer.poll_readable(cx)).await;
                    while let Some(item) = consumer.pop() {
                        got.push(item);
                    }
                    consumer.release();
                }
            });
            got
        });
        // Wait until one slot is free, then write the third item.
        let head = loom::future::block_on(poll_fn(|cx| credit.poll_head(cx, 1)));
        assert!(head >= 1);
        producer.push(2).unwrap();
        producer.publish();
        assert_eq!(reader.join().unwrap(), vec![0, 1, 2]);
    });
}

/// How the writer of `burst_hand_over` moves its items into the ring: pulled one by one
/// (`push_from`), or copied from the front of a buffer (`Writer::write_from_front`).
#[derive(Clone, Copy)]
enum Write {
    Pulled,
    FromBuffer,
    /// Pulled, the first burst a single item: the next reservation starts at slot 1, so a
    /// writer wraps within it and a drain can start at slot 1 and cross the array's end.
    PulledOneFirst,
}

/// A writer pushing bursts into a ring of 2 while the reader takes what is published with `take`.
fn burst_hand_over(take: fn(&mut Consumer<u64>, &mut Vec<u64>)) {
    burst_hand_over_written(Write::Pulled, take);
}

fn burst_hand_over_written(write: Write, take: fn(&mut Consumer<u64>, &mut Vec<u64>)) {
    loom::model(move || {
        let (mut producer, mut consumer, credit) = ring::<u64>(2);
        let writer = thread::spawn(move || {
            let mut items = 0..3u64;
            let mut buffer: Vec<u64> = (0..3).collect();
            let mut written = 0usize;
            while written < 3 {
                // Wait for a free slot, then write as many as fit.
                let head = loom::future::block_on(poll_fn(|cx| {
                    credit.poll_head(cx, written.saturating_sub(1))
                }));
                assert!(head + 2 >= written);
                let n = match write {
                    Write::Pulled => producer.push_from(&mut items, 3 - written).0,
                    Write::PulledOneFirst => {
                        let most = if written == 0 { 1 } else { 3 - written };
                        producer.push_from(&mut items, most).0
                    }
                    Write::FromBuffer => {
                        let want = 3 - written;
                        producer
                            .push_with(want, |writer| writer.write_from_front(&mut buffer, want))
                            .0
                    }
                };
                written += n;
                producer.publish();
            }
            producer.close();
        });
        let mut got = Vec::new();
        loom::future::block_on(async {
            loop {
                match poll_fn(|cx| consumer.poll_readable(cx)).await {
                    Readable::Items => {
                        take(&mut consumer, &mut got);
                        consumer.release();
                    }
                    Readable::Closed => break,
                }
            }
        });
        writer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

#[test]
fn ring_burst_hand_over_with_push_from_and_pop_each() {
    burst_hand_over(|consumer, got| {
        consumer.pop_each(u64::MAX, |item| {
            got.push(item);
            true
        });
    });
}

#[test]
fn ring_burst_hand_over_with_push_from_and_pop_into() {
    // Block copies of runs of slots, with the ring of 2 wrapping around between them.
    burst_hand_over(|consumer, got| {
        consumer.pop_into(got, usize::MAX);
    });
}

#[test]
fn ring_burst_hand_over_copied_from_a_buffer_with_wrap_around() {
    // The writer copies runs from the front of a buffer; the ring of 2 wraps between them.
    burst_hand_over_written(Write::FromBuffer, |consumer, got| {
        consumer.pop_into(got, usize::MAX);
    });
}

#[test]
fn ring_burst_hand_over_with_partial_drains() {
    // One item per drain: the rest stays published for the next one (the head is written back).
    burst_hand_over(|consumer, got| got.extend(consumer.drain().take(1)));
}

#[test]
fn ring_burst_hand_over_with_drains_fed_across_the_wrap() {
    // `Drain::feed` reads the slots run by run; after a first burst of one item, the writer's
    // second reservation wraps (slot 1, then 0) and a drain from slot 1 crosses the array's end.
    burst_hand_over_written(Write::PulledOneFirst, |consumer, got| {
        consumer.drain().feed(u64::MAX, |item| {
            got.push(item);
            true
        });
    });
}

#[test]
fn subscription_terminal_signal_at_most_once_under_request_and_cancel_races() {
    loom::model(|| {
        let source = Arc::new(Source::new(2));
        let requester = {
            let source = source.clone();
            thread::spawn(move || source.request(1))
        };
        let canceller = {
            let source = source.clone();
            thread::spawn(move || source.cancel())
        };
        source.request(1);
        requester.join().unwrap();
        canceller.join().unwrap();
        source.request(1);
        // Completed once, or cancelled first: never twice, never more items than requested.
        assert!(source.terminals.load(Ordering::Relaxed) <= 1);
        assert!(source.emitted.load(Ordering::Relaxed) <= 2);
        assert!(source.is_released());
    });
}

/// A producer writes one item and pauses without publishing or closing (a plain Reactive Streams
/// publisher never says it paused), while the consumer looks for items. Either the consumer finds
/// the item, or it parked having *started* a wait (`take_fresh_wait`), and then its second look,
/// once the producer's store is visible (the recheck, modelled by joining the producer), finds it.
#[test]
fn ring_an_unpublished_write_is_found_by_the_look_before_waiting_or_the_recheck() {
    loom::model(|| {
        let (mut producer, mut consumer, _credit) = ring::<u64>(4);
        let writer = thread::spawn(move || {
            producer.push(1).unwrap();
            if producer.is_consumer_waiting() {
                producer.publish();
            }
            producer // paused: neither published nor closed
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let found = match consumer.poll_readable(&mut cx) {
            std::task::Poll::Ready(Readable::Items) => consumer.pop(),
            std::task::Poll::Ready(Readable::Closed) => panic!("the producer did not close"),
            std::task::Poll::Pending => {
                assert!(consumer.take_fresh_wait(), "a first wait is a fresh one");
                let _producer = writer.join().unwrap();
                assert!(matches!(
                    consumer.poll_readable(&mut cx),
                    std::task::Poll::Ready(Readable::Items)
                ));
                let item = consumer.pop();
                assert_eq!(item, Some(1));
                return;
            }
        };
        assert_eq!(found, Some(1));
        writer.join().unwrap();
    });
}

/// A task-emitting publisher's subscription: a `request` or `cancel` from another thread while the
/// task decides to wait is never lost (the task sees it, or is woken by it).
#[test]
fn task_subscription_never_loses_a_request_or_a_cancel() {
    loom::model(|| {
        let state = Arc::new(TaskSubscription::default());
        let requester = {
            let state = state.clone();
            thread::spawn(move || state.request(2))
        };
        let canceller = {
            let state = state.clone();
            thread::spawn(move || state.cancel())
        };
        // The task: waits until it sees the cancel (it may see the demand first).
        let mut emitted = 0;
        loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                match state.poll_next(cx) {
                    Next::Emit(n) => {
                        emitted += n;
                        state.demand().consume(n);
                    }
                    Next::Wait => return std::task::Poll::Pending,
                    Next::Cancelled => return std::task::Poll::Ready(()),
                    Next::BadRequest => panic!("no request(0) was made"),
                }
            }
        }));
        requester.join().unwrap();
        canceller.join().unwrap();
        assert!(emitted <= 2);
    });
}
