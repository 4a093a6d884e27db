//! The single-producer, single-consumer credit ring behind every async boundary.
//!
//! Three handles share one fixed array of `capacity` slots (a power of two):
//! - [`Producer`] writes items. It exposes its tail every [`PUBLISH_EVERY`] items (a plain release
//!   store: a running consumer sees them) and on [`Producer::publish`], which also wakes a waiting
//!   consumer. Never per item: a fence or read-modify-write per item cost 8-9x the throughput when
//!   measured (BENCHMARKS.md, `boundary`). Leaving the wake to `publish` lets the owner hand a whole burst over at once, so
//!   the woken consumer runs after the producer on the same core instead of fighting it for the
//!   ring's cache lines from another one.
//! - [`Consumer`] reads items and publishes its head in the same batched way.
//! - [`Credit`] lets a task wait until the head reaches a position, i.e. until enough slots are free to
//!   grant more demand upstream.
//!
//! Wake-ups happen on transitions only: a side that finds nothing to do registers its waker and raises
//! a "waiting" word with a read-modify-write; the other side, after publishing, swaps that word back and
//! wakes only if it was raised. Because both sides use read-modify-writes on the same word, one of them
//! always sees the other's publication (no lost wake-up; checked by the loom models).
//!
//! A producer that stops between two publications (a plain Reactive Streams publisher never says it
//! paused) must not strand what it wrote. Three things make sure it does not, without a fence or a
//! read-modify-write per item:
//! - every write also moves a second position, `written`, with a plain release store to a cache line
//!   that only the producer writes and the consumer reads only when it is about to wait: a consumer
//!   that finds nothing published takes everything written instead of waiting;
//! - the producer looks at the consumer's "waiting" word after each item (a load of a line that
//!   changes only when the consumer parks) and publishes at once, waking it, when it waits;
//! - the one race left (the consumer starts waiting while the producer's last store is still on its
//!   way) is closed by a second look: [`Consumer::poll_readable`] reports, through
//!   [`Consumer::take_fresh_wait`], each time the consumer *starts* waiting, and the owner then looks
//!   again a little later (the runtime's recheck), when that store is long visible.
//!
//! Invariants: at most `capacity` items are ever between head and tail; an item is written once, read
//! once and dropped exactly once (by the consumer, or by the ring when both ends are gone).

use std::fmt;
use std::mem::MaybeUninit;
use std::task::{Context, Poll};

use crate::loom::{Arc, AtomicBool, AtomicUsize, AtomicWaker, Ordering, UnsafeCell};
use crate::{CachePadded, WakeSlot};

/// How many items a side moves before it publishes its position without being asked to.
#[cfg(not(loom))]
pub const PUBLISH_EVERY: usize = 256;
/// How many items a side moves before it publishes its position without being asked to.
#[cfg(loom)]
pub const PUBLISH_EVERY: usize = 2;

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Items `[head, tail)` are readable. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Items `[head, written)` are readable too: the producer's every write, stored per item (a
    /// release store to its own line). The consumer reads it only before it waits, so the line does
    /// not bounce between the cores while both run.
    written: CachePadded<AtomicUsize>,
    /// Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Written by the producer's publications and the consumer's waits.
    consumer: CachePadded<WakeSlot>,
    /// 0 when no credit waiter; otherwise the head position it waits for, plus one. Written by the
    /// consumer's releases and the credit waiter.
    credit_wanted: CachePadded<AtomicUsize>,
    credit_waker: AtomicWaker,
    producer_closed: AtomicBool,
    consumer_closed: AtomicBool,
}

// SAFETY: the ring owns its items (`T: Send`) and hands each from one thread to another: slots are
// only accessed by the single producer (writes to free slots) and the single consumer (reads of
// published slots), with positions handed over by release/acquire.
unsafe impl<T: Send> Send for Shared<T> {}

// SAFETY: shared between the producer's, the consumer's and the credit side's threads, which touch a
// slot only as described for `Send` (one writer before publication, one reader after); everything
// else is atomics. No `&T` is ever shared, so `T: Sync` is not needed.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    #[inline(always)]
    fn slot(&self, position: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // SAFETY: `mask` is `slots.len() - 1` and the length is a power of two.
        unsafe { self.slots.get_unchecked(position & self.mask) }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.written.load(Ordering::Acquire);
        for position in head..tail {
            self.slots[position & self.mask].with_mut(|slot| {
                // SAFETY: [head, tail) were written and not read; both handles are gone.
                unsafe { (*slot).assume_init_drop() }
            });
        }
    }
}

/// A read-only view of a ring's positions, for metrics: no item type, no effect on the ring.
pub trait Occupancy: Send + Sync + 'static {
    /// Total items the producer has published.
    fn published(&self) -> usize;
    /// Total items the consumer has released.
    fn released(&self) -> usize;
}

impl fmt::Debug for dyn Occupancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Occupancy")
            .field("published", &self.published())
            .field("released", &self.released())
            .finish()
    }
}

impl<T: Send + 'static> Occupancy for Shared<T> {
    fn published(&self) -> usize {
        later(
            self.tail.load(Ordering::Acquire),
            self.written.load(Ordering::Acquire),
        )
    }
    fn released(&self) -> usize {
        self.head.load(Ordering::Acquire)
    }
}

/// Creates a ring of `capacity` slots (rounded up to a power of two, at least 2).
///
/// ```
/// let (mut producer, mut consumer, _credit) = weir_lockfree::ring::ring::<u64>(4);
/// producer.push(1).unwrap();
/// producer.push(2).unwrap();
/// producer.publish();
/// assert_eq!(consumer.pop(), Some(1));
/// assert_eq!(consumer.pop(), Some(2));
/// assert_eq!(consumer.pop(), None);
/// ```
#[inline]
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>, Credit<T>) {
    let capacity = capacity.max(2).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        slots,
        mask: capacity - 1,
        tail: CachePadded(AtomicUsize::new(0)),
        written: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        consumer: CachePadded(WakeSlot::new()),
        credit_wanted: CachePadded(AtomicUsize::new(0)),
        credit_waker: AtomicWaker::new(),
        producer_closed: AtomicBool::new(false),
        consumer_closed: AtomicBool::new(false),
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            published: 0,
            woken_at: 0,
            head_seen: 0,
            capacity,
        },
        Consumer {
            shared: shared.clone(),
            head: 0,
            released: 0,
            tail_seen: 0,
            fresh_wait: false,
        },
        Credit { shared, capacity },
    )
}

/// The writing end. Not `Clone`: one producer.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    published: usize,
    /// The tail as of the last wake check: items up to here were announced to a waiting consumer.
    woken_at: usize,
    head_seen: usize,
    capacity: usize,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .field("published", &self.published)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> Producer<T> {
    /// Writes `item`, or gives it back if all slots are taken. The item becomes visible to a running
    /// consumer within [`PUBLISH_EVERY`] items; a waiting consumer is woken by
    /// [`publish`](Self::publish).
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.tail.wrapping_sub(self.head_seen) == self.capacity {
            self.head_seen = self.shared.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_seen) == self.capacity {
                return Err(item);
            }
        }
        self.shared.slot(self.tail).with_mut(|slot| {
            // SAFETY: the slot is free (the consumer released it) and only the producer writes.
            unsafe { (*slot).write(item) };
        });
        self.tail = self.tail.wrapping_add(1);
        // Released after the slot's write: a consumer that reads it may read the slot.
        self.shared.written.store(self.tail, Ordering::Release);
        if self.tail.wrapping_sub(self.published) >= PUBLISH_EVERY {
            self.expose();
        }
        Ok(())
    }

    /// Writes items pulled from `items` until `max` were written, the ring is full or `items` runs out
    /// (it never pulls after a `None`, nor an item it cannot store). Returns how many were written
    /// and whether `items` ran out. A loop of `next` inside [`push_with`](Self::push_with).
    #[inline(always)]
    pub fn push_from<I: Iterator<Item = T>>(&mut self, items: &mut I, max: usize) -> (usize, bool) {
        self.push_with(max, |writer| {
            while writer.room() > 0 {
                let Some(item) = items.next() else {
                    return true;
                };
                if writer.write(item).is_err() {
                    unreachable!("a slot was free");
                }
            }
            false
        })
    }

    /// Lets `fill` write up to `max` items, or fewer if the ring has less room ([`Writer::room`]),
    /// then makes them visible as [`push`](Self::push) does. Returns how many were written and
    /// what `fill` returned. The writer keeps the positions in registers: the fast path for a
    /// burst whose source runs the loop and hands each item to a closure.
    ///
    /// ```
    /// let (mut producer, mut consumer, _credit) = weir_lockfree::ring::ring::<u32>(4);
    /// let (written, ()) = producer.push_with(8, |writer| {
    ///     for item in 1..=10 {
    ///         if writer.write(item).is_err() {
    ///             break; // no room: `item` came back (4 slots)
    ///         }
    ///     }
    /// });
    /// producer.publish();
    /// assert_eq!(written, 4);
    /// assert_eq!(consumer.drain().collect::<Vec<_>>(), [1, 2, 3, 4]);
    /// ```
    #[inline(always)]
    pub fn push_with<R>(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut Writer<'_, T>) -> R,
    ) -> (usize, R) {
        let mut free = self.capacity - self.tail.wrapping_sub(self.head_seen);
        if free < max {
            self.head_seen = self.shared.head.load(Ordering::Acquire);
            free = self.capacity - self.tail.wrapping_sub(self.head_seen);
        }
        let start = self.tail;
        let reserved = free.min(max);
        // The reserved slots as at most two runs of the array (before and after its end): each
        // item is written at an index that moves by one, with no mask per item; the slots live
        // in the writer, so a write into a slot, which could for all the compiler knows change
        // `Shared`'s fields, does not make it read them again per item.
        let first = start & self.shared.mask;
        let run = reserved.min(self.shared.slots.len() - first);
        let mut writer = Writer {
            slots: &self.shared.slots,
            at: first,
            run_end: first + run,
            wrapped: reserved - run,
            offset: first.wrapping_neg(),
        };
        let filled = fill(&mut writer);
        let tail = start.wrapping_add(writer.written());
        self.tail = tail;
        self.shared.written.store(tail, Ordering::Release);
        if tail.wrapping_sub(self.published) >= PUBLISH_EVERY {
            self.expose();
        }
        (tail.wrapping_sub(start), filled)
    }

    /// Makes every pushed item visible to a running consumer, without waking a waiting one.
    #[inline]
    fn expose(&mut self) {
        self.shared.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    /// Makes every pushed item visible and wakes the consumer if it was waiting.
    #[inline]
    pub fn publish(&mut self) {
        if self.tail != self.published {
            self.expose();
        }
        if self.tail != self.woken_at {
            self.woken_at = self.tail;
            self.shared.consumer.notify();
        }
    }

    /// Publishes, then tells the consumer no more items will come. Dropping the producer does the same.
    #[inline]
    pub fn close(&mut self) {
        self.publish();
        if self.shared.producer_closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.consumer.notify();
        if self.shared.credit_wanted.swap(0, Ordering::AcqRel) != 0 {
            self.shared.credit_waker.wake();
        }
    }

    /// Whether the consumer is waiting for items (a hint, one plain load): an owner that writes item
    /// by item without knowing when its input pauses publishes as soon as this is true.
    #[inline]
    pub fn is_consumer_waiting(&self) -> bool {
        self.shared.consumer.is_waiting()
    }

    /// Whether the consumer has gone away (items pushed now are dropped with the ring).
    #[inline]
    pub fn is_consumer_closed(&self) -> bool {
        self.shared.consumer_closed.load(Ordering::Acquire)
    }

    /// Pushed but not yet consumed, as far as this producer knows.
    #[inline]
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.shared.head.load(Ordering::Acquire))
    }

    /// Whether nothing is waiting to be consumed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total items pushed so far.
    #[inline]
    pub fn pushed(&self) -> usize {
        self.tail
    }

    /// The ring's capacity (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Writes into the free slots a [`Producer::push_with`] reserved.
pub struct Writer<'a, T> {
    slots: &'a [UnsafeCell<MaybeUninit<T>>],
    /// The next slot to write (an index into `slots`).
    at: usize,
    /// One past the last reserved slot of the run `at` is in (at most `slots.len()`).
    run_end: usize,
    /// Reserved slots at the start of the array, written once the first run is full.
    wrapped: usize,
    /// Added to `at`, how many items were written (wrapping): minus the first run's start before
    /// the wrap, the first run's length after it.
    offset: usize,
}

impl<T> Writer<'_, T> {
    /// How many more items fit.
    #[inline(always)]
    pub fn room(&self) -> usize {
        self.run_end - self.at + self.wrapped
    }

    /// How many items were written.
    #[inline(always)]
    fn written(&self) -> usize {
        self.at.wrapping_add(self.offset)
    }

    /// Moves on to the reserved slots at the start of the array; `false` if there are none.
    #[cold]
    fn wrap(&mut self) -> bool {
        if self.wrapped == 0 {
            return false;
        }
        self.offset = self.offset.wrapping_add(self.run_end);
        (self.at, self.run_end, self.wrapped) = (0, self.wrapped, 0);
        true
    }

    /// Writes `item` into the next reserved slot, or gives it back if none is left.
    #[inline(always)]
    pub fn write(&mut self, item: T) -> Result<(), T> {
        if self.at == self.run_end && !self.wrap() {
            return Err(item);
        }
        // SAFETY: `at < run_end <= slots.len()`: `wrap` made it so or it already was.
        let slot = unsafe { self.slots.get_unchecked(self.at) };
        slot.with_mut(|slot| {
            // SAFETY: the slot is free: `push_with` reserved it against the consumer's head, and
            // only the producer writes (`push_with` borrows it mutably while the writer lives).
            unsafe { (*slot).write(item) };
        });
        self.at += 1;
        Ok(())
    }

    /// Moves items from the front of `items` into the reserved slots, as many as fit and at most
    /// `max`; the rest of `items` moves to its front. Returns how many were moved. A counted copy
    /// per run of the ring (no test per item), for items that already sit in a buffer.
    ///
    /// ```
    /// let (mut producer, mut consumer, _credit) = weir_lockfree::ring::ring::<u32>(4);
    /// let mut items = vec![1, 2, 3, 4, 5, 6];
    /// let (written, moved) = producer.push_with(8, |writer| writer.write_from_front(&mut items, 8));
    /// producer.publish();
    /// assert_eq!((written, moved), (4, 4));
    /// assert_eq!(items, [5, 6]);
    /// assert_eq!(consumer.drain().collect::<Vec<_>>(), [1, 2, 3, 4]);
    /// ```
    #[inline]
    pub fn write_from_front(&mut self, items: &mut Vec<T>, max: usize) -> usize {
        let n = self.room().min(items.len()).min(max);
        let mut moved = items.drain(..n);
        let mut left = n;
        while left > 0 {
            if self.at == self.run_end {
                // `left <= room`: the wrapped slots are there.
                self.wrap();
            }
            let len = left.min(self.run_end - self.at);
            for (cell, item) in self.slots[self.at..self.at + len].iter().zip(&mut moved) {
                cell.with_mut(|slot| {
                    // SAFETY: the slots of the run are free: `push_with` reserved them against
                    // the consumer's head (`len` is at most the room left), and only the
                    // producer writes.
                    unsafe { (*slot).write(item) };
                });
            }
            self.at += len;
            left -= len;
        }
        n
    }
}

impl<T> fmt::Debug for Writer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("room", &self.room())
            .finish()
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// What [`Consumer::poll_readable`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// At least one item can be popped.
    Items,
    /// The producer closed and every item has been read.
    Closed,
}

/// Pops the items that were published when it was made; see [`Consumer::drain`]. Dropping the
/// drain sets the consumer's head to what it handed out and publishes it if a slice's worth was
/// read; a leaked drain (`mem::forget`) leaks the items it did not hand out, never hands an item
/// out twice.
pub struct Drain<'a, T> {
    consumer: &'a mut Consumer<T>,
    /// The slots, the mask and the head in the drain itself, so that they stay in registers
    /// while a burst is pulled.
    slots: *const UnsafeCell<MaybeUninit<T>>,
    mask: usize,
    head: usize,
    start: usize,
    end: usize,
}

impl<T> Drain<'_, T> {
    /// How many items were popped so far.
    #[inline]
    pub fn popped(&self) -> usize {
        self.head.wrapping_sub(self.start)
    }

    /// Hands items to `f`, oldest first, until `max` were handed, `f` returned `false` (after
    /// taking that item) or none is left; returns how many were handed. A loop per run of the
    /// array (before and after its end) with the slot moving by one per item and no mask, so a
    /// closure that always goes on makes a counted loop with one exit.
    ///
    /// ```
    /// let (mut producer, mut consumer, _credit) = weir_lockfree::ring::ring::<u32>(4);
    /// for i in 1..=4 {
    ///     producer.push(i).unwrap();
    /// }
    /// producer.publish();
    /// let mut sum = 0;
    /// let handed = consumer.drain().feed(3, |item| {
    ///     sum += item;
    ///     true
    /// });
    /// assert_eq!((handed, sum), (3, 6));
    /// assert_eq!(consumer.pop(), Some(4));
    /// ```
    #[inline(always)]
    pub fn feed(&mut self, max: u64, mut f: impl FnMut(T) -> bool) -> u64 {
        let left = self.end.wrapping_sub(self.head);
        let most = left.min(usize::try_from(max).unwrap_or(usize::MAX));
        let mut handed = 0;
        while handed < most {
            let first = self.head & self.mask;
            let run = (most - handed).min(self.mask + 1 - first);
            for index in first..first + run {
                // SAFETY: `slots` points at the ring's slots, kept alive by the consumer's `Arc`
                // that the drain borrows; `index` is within this run, inside the array.
                let slot = unsafe { &*self.slots.add(index) };
                let item = slot.with_mut(|slot| {
                    // SAFETY: as in `next`: published before `end` was read, and read exactly
                    // once (the head moves past it before `f` runs, so also if `f` unwinds).
                    unsafe { (*slot).assume_init_read() }
                });
                self.head = self.head.wrapping_add(1);
                if !f(item) {
                    return (handed + index - first + 1) as u64;
                }
            }
            handed += run;
        }
        handed as u64
    }
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        let head = self.head;
        if head == self.end {
            return None;
        }
        self.head = head.wrapping_add(1);
        // SAFETY: `slots` points at the ring's slots, kept alive by the consumer's `Arc` that the
        // drain borrows; `mask` is their count minus one (a power of two), so the index is in bounds.
        let slot = unsafe { &*self.slots.add(head & self.mask) };
        let item = slot.with_mut(|slot| {
            // SAFETY: published by the producer (before `end` was read) and read exactly once:
            // the drain's head has moved past it, and the consumer's head is at `end` until the
            // drain is dropped, when it comes back to the drain's head (past this slot).
            unsafe { (*slot).assume_init_read() }
        });
        Some(item)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.wrapping_sub(self.head);
        (left, Some(left))
    }
}

impl<T> Drop for Drain<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let consumer = &mut *self.consumer;
        // Back from the end of the drain to what it handed out (also when a subscriber pulling
        // from it unwinds: the rest stays for the next reader).
        consumer.head = self.head;
        if consumer.head.wrapping_sub(consumer.released) >= PUBLISH_EVERY {
            consumer.release();
        }
    }
}

impl<T> fmt::Debug for Drain<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("popped", &self.popped())
            .field("left", &self.end.wrapping_sub(self.head))
            .finish()
    }
}

/// The reading end. Not `Clone`: one consumer.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    released: usize,
    tail_seen: usize,
    /// The last `poll_readable` that returned `Pending` started a wait (see `take_fresh_wait`).
    fresh_wait: bool,
}

/// The later of two ring positions (they wrap around).
#[inline(always)]
fn later(a: usize, b: usize) -> usize {
    if b.wrapping_sub(a) as isize > 0 { b } else { a }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .field("released", &self.released)
            .finish()
    }
}

impl<T> Consumer<T> {
    /// Reads the next published item, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_seen {
            self.see_tail();
            if self.head == self.tail_seen {
                return None;
            }
        }
        let item = self.shared.slot(self.head).with_mut(|slot| {
            // SAFETY: the slot was published by the producer and is read exactly once.
            unsafe { (*slot).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        if self.head.wrapping_sub(self.released) >= PUBLISH_EVERY {
            self.release();
        }
        Some(item)
    }

    /// Pops published items and hands each to `f` until `f` has returned `true` `max` times or no
    /// item is left; returns `(popped, accepted)`. The positions stay in registers for the burst and
    /// the head is published once at the end.
    #[inline]
    pub fn pop_each(&mut self, max: u64, mut f: impl FnMut(T) -> bool) -> (usize, u64) {
        self.see_tail();
        let start = self.head;
        let end = self.tail_seen;
        let mut accepted = 0;
        while self.head != end && accepted < max {
            let head = self.head;
            // The head moves before `f` runs: if `f` panics, the item it was given is never read
            // (nor dropped) again.
            self.head = head.wrapping_add(1);
            let item = self.shared.slot(head).with_mut(|slot| {
                // SAFETY: published by the producer, read exactly once: the head is already past it.
                unsafe { (*slot).assume_init_read() }
            });
            accepted += u64::from(f(item));
        }
        if self.head.wrapping_sub(self.released) >= PUBLISH_EVERY {
            self.release();
        }
        (self.head.wrapping_sub(start), accepted)
    }

    /// Moves up to `max` published items to the end of `out`, oldest first, and returns how many:
    /// a contiguous run of slots at a time, each a loop without exits that the compiler turns into
    /// a block copy. The head is published as by [`pop_each`](Consumer::pop_each).
    #[inline]
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.see_tail();
        let n = self.tail_seen.wrapping_sub(self.head).min(max);
        out.reserve(n);
        let slots: &[UnsafeCell<MaybeUninit<T>>] = &self.shared.slots;
        let first = self.head & self.shared.mask;
        let run = n.min(slots.len() - first);
        for (start, len) in [(first, run), (0, n - run)] {
            let runs = slots[start..start + len].iter();
            for (cell, spare) in runs.zip(out.spare_capacity_mut()) {
                cell.with_mut(|slot| {
                    // SAFETY: the `n` slots from the head were published by the producer (`n` is
                    // at most `tail_seen - head`) and are read exactly once: the head moves past
                    // them below, before anything else can read.
                    spare.write(unsafe { (*slot).assume_init_read() });
                });
            }
            // SAFETY: the `len` spare slots after the old length were just written (`reserve(n)`
            // made room for all `n`, and `zip` stopped at `len`).
            unsafe { out.set_len(out.len() + len) };
        }
        self.head = self.head.wrapping_add(n);
        if self.head.wrapping_sub(self.released) >= PUBLISH_EVERY {
            self.release();
        }
        n
    }

    /// The published items as an iterator, for handing a burst to code that pulls (a subscriber's
    /// `try_on_next_iter`). Like [`pop_each`](Consumer::pop_each): the tail is read once when the
    /// drain starts, and the head is published when it is dropped (if a slice's worth was read).
    #[inline]
    pub fn drain(&mut self) -> Drain<'_, T> {
        self.see_tail();
        let head = self.head;
        // The consumer's head jumps to the end of what the drain may hand out and comes back on
        // drop: the drain keeps its head in a register instead of writing it to the consumer per
        // item, and a drain that is leaked (`mem::forget`) leaks its items, never hands them out
        // twice.
        self.head = self.tail_seen;
        Drain {
            slots: self.shared.slots.as_ptr(),
            mask: self.shared.mask,
            head,
            start: head,
            end: self.tail_seen,
            consumer: self,
        }
    }

    /// Published items not yet popped (as of the last look at the tail, refreshed now).
    #[inline]
    pub fn available(&mut self) -> usize {
        self.see_tail();
        self.tail_seen.wrapping_sub(self.head)
    }

    /// Refreshes what is readable from the published tail (never moving backwards: an earlier look
    /// at `written` may have seen further).
    #[inline(always)]
    fn see_tail(&mut self) {
        self.tail_seen = later(self.tail_seen, self.shared.tail.load(Ordering::Acquire));
    }

    /// Everything written so far, published or not: the look before waiting.
    #[inline]
    fn written(&mut self) -> usize {
        self.tail_seen = later(self.tail_seen, self.shared.written.load(Ordering::Acquire));
        self.tail_seen.wrapping_sub(self.head)
    }

    /// Frees the slots of every popped item and wakes the credit waiter if its position was reached.
    #[inline]
    pub fn release(&mut self) {
        if self.head == self.released {
            return;
        }
        self.shared.head.store(self.head, Ordering::Release);
        self.released = self.head;
        // A read-modify-write, not a load: it orders this release against a waiter that is just
        // raising `credit_wanted` (see the module doc).
        let wanted = self.shared.credit_wanted.fetch_add(0, Ordering::AcqRel);
        if wanted != 0
            && self.head.wrapping_sub(wanted - 1) as isize >= 0
            && self
                .shared
                .credit_wanted
                .compare_exchange(wanted, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.shared.credit_waker.wake();
        }
    }

    /// Ready when an item can be popped or the producer has closed and all items were read; otherwise
    /// registers the task to be woken by the producer's next publication. When this call started a
    /// wait, [`take_fresh_wait`](Self::take_fresh_wait) says so: look again a little later.
    #[inline]
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Readable> {
        if let Some(ready) = self.readable() {
            return Poll::Ready(ready);
        }
        self.release();
        let started = self.shared.consumer.prepare(cx);
        match self.readable() {
            Some(ready) => {
                self.shared.consumer.clear();
                Poll::Ready(ready)
            }
            None => {
                self.fresh_wait |= started;
                Poll::Pending
            }
        }
    }

    /// Whether a `poll_readable` that returned `Pending` started a new wait since the last call
    /// (rather than renewing one). A producer's last write may have raced with that start; a look
    /// ([`poll_readable`](Self::poll_readable)) once its store is surely visible, e.g. a millisecond
    /// later, finds it. Waits that only renew need no second look: the producer sees the waiting
    /// word and wakes the consumer itself.
    #[inline]
    pub fn take_fresh_wait(&mut self) -> bool {
        std::mem::take(&mut self.fresh_wait)
    }

    fn readable(&mut self) -> Option<Readable> {
        if self.available() > 0 || self.written() > 0 {
            return Some(Readable::Items);
        }
        if self.shared.producer_closed.load(Ordering::Acquire) {
            // The tail was published before the close flag: look once more.
            return Some(if self.written() > 0 {
                Readable::Items
            } else {
                Readable::Closed
            });
        }
        None
    }

    /// Whether the producer has closed (items may still be left to pop).
    #[inline]
    pub fn is_producer_closed(&self) -> bool {
        self.shared.producer_closed.load(Ordering::Acquire)
    }

    /// Total items popped so far.
    #[inline]
    pub fn popped(&self) -> usize {
        self.head
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.release();
        self.shared.consumer_closed.store(true, Ordering::Release);
        if self.shared.credit_wanted.swap(0, Ordering::AcqRel) != 0 {
            self.shared.credit_waker.wake();
        }
    }
}

/// Waits for the consumer to free slots: the demand-granting side of a boundary.
pub struct Credit<T> {
    shared: Arc<Shared<T>>,
    capacity: usize,
}

impl<T> fmt::Debug for Credit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credit")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> Credit<T> {
    /// The ring's capacity (a power of two).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The consumer's published head: total items released so far.
    #[inline]
    pub fn head(&self) -> usize {
        self.shared.head.load(Ordering::Acquire)
    }

    /// The producer's published tail: total items made visible so far.
    #[inline]
    pub fn tail(&self) -> usize {
        self.shared.tail.load(Ordering::Acquire)
    }

    /// Whether the consumer has gone away.
    #[inline]
    pub fn is_consumer_closed(&self) -> bool {
        self.shared.consumer_closed.load(Ordering::Acquire)
    }

    /// A read-only view of the ring's positions, for metrics. (Not in loom builds: loom's `Arc` does
    /// not coerce to a trait object.)
    #[cfg(not(loom))]
    #[inline]
    pub fn occupancy(&self) -> Arc<dyn Occupancy>
    where
        T: Send + 'static,
    {
        self.shared.clone()
    }

    /// Whether either end has closed: no more credit is needed.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.is_consumer_closed() || self.shared.producer_closed.load(Ordering::Acquire)
    }

    /// Ready with the current head once the consumer has released up to `position`, or once either
    /// end has closed; otherwise registers the task to be woken when one of these happens.
    #[inline]
    pub fn poll_head(&self, cx: &mut Context<'_>, position: usize) -> Poll<usize> {
        let head = self.head();
        if head.wrapping_sub(position) as isize >= 0 || self.is_closed() {
            return Poll::Ready(head);
        }
        self.shared.credit_waker.register(cx.waker());
        self.shared
            .credit_wanted
            .swap(position.wrapping_add(1).max(1), Ordering::AcqRel);
        let head = self.head();
        if head.wrapping_sub(position) as isize >= 0 || self.is_closed() {
            self.shared.credit_wanted.swap(0, Ordering::AcqRel);
            return Poll::Ready(head);
        }
        Poll::Pending
    }
}
