//! The Reactive Streams protocol in Rust form.
//!
//! A [`Publisher`] emits to one [`Subscriber`] per subscription, never more items than the subscriber
//! asked for through its [`Subscription`]. The shape follows the Reactive Streams specification §1-§3
//! (<https://www.reactive-streams.org>), with these Rust-specific points:
//!
//! - Subscriber methods take `&mut self`: signals to one subscriber are serialised (rule 1.3), so a
//!   subscriber needs no locks. Publishers own their subscriber and hand it back (drop it) after a
//!   terminal signal or a cancel (rules 1.8, 3.13).
//! - [`Publisher::subscribe`] consumes the publisher, like `IntoIterator`. A publisher that can serve
//!   several subscribers is `Clone`; one that is a handle to a single resource (an ingress, the output
//!   of a boundary) answers a second subscriber with `on_subscribe` followed by
//!   [`ErrorKind::AlreadySubscribed`](crate::ErrorKind::AlreadySubscribed) (rules 1.9, 1.11).
//! - Rules that guard against `null` (1.9 for a null subscriber, 2.13 for null elements) cannot be
//!   broken in safe Rust: there is no null reference, and items are moved, never shared.
//! - Rule 2.13's "must return normally" is matched by "must not panic": weir's sinks and operators catch
//!   panics from user closures and turn them into [`ErrorKind::Panicked`](crate::ErrorKind::Panicked).
//! - Four weir extensions, all optional to implement: [`Subscriber::try_on_next`] lets a filtering
//!   subscriber decline an item so that the demand unit is reused instead of re-requested (Reactor's
//!   "conditional subscriber"); [`Subscriber::try_on_next_iter`] hands over a burst of items at once
//!   (a [`Burst`], which runs the loop itself); [`Subscriber::try_on_next_chunk`] hands over items
//!   that already sit in a buffer (a type-erased edge's chunk); and [`Subscriber::on_flush`] tells a
//!   subscriber that the publisher paused emitting, so batched hand-offs (async boundaries) publish
//!   what they hold.

use std::fmt;
use std::sync::Arc;

use weir_lockfree::ring::Drain;

use crate::Error;
use crate::ledger::{Reason, Tally};

/// Receives the signals of one subscription.
///
/// The order is `on_subscribe (on_next)* (on_error | on_complete)?`, never concurrent (rule 1.3).
///
/// ```
/// use weir_runtime::{Error, Publisher, Subscriber, Subscription, source};
///
/// struct Print(Option<Subscription>);
/// impl Subscriber<u32> for Print {
///     fn on_subscribe(&mut self, subscription: Subscription) {
///         subscription.request(2);
///         self.0 = Some(subscription);
///     }
///     fn on_next(&mut self, item: u32) {
///         println!("{item}");
///     }
///     fn on_error(&mut self, error: Error) {
///         eprintln!("{error}");
///     }
///     fn on_complete(&mut self) {}
/// }
/// source::from_iter(1..=5).subscribe(Print(None)); // prints 1 and 2
/// ```
pub trait Subscriber<T>: Send + 'static {
    /// The first signal: the handle to request items and to cancel. Call `request` here (or later) to
    /// receive anything.
    fn on_subscribe(&mut self, subscription: Subscription);

    /// One item, only ever in response to demand.
    fn on_next(&mut self, item: T);

    /// One item, where the subscriber may decline it: return `false` if the item did not use up a unit
    /// of demand (a filter dropped it), and the publisher emits one more in its place without a new
    /// `request`. Publishers in weir call this; the default accepts every item.
    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        self.on_next(item);
        true
    }

    /// Many items at once: pulls from `items` until `limit` of them were accepted (as by
    /// [`try_on_next`](Subscriber::try_on_next)) or `items` runs out, and returns how many were
    /// accepted. It returns less than `limit` only when `items` ran out (it never pulls after a
    /// `None`). Publishers that hold items call it instead of a loop of `try_on_next`, so that a
    /// subscriber can move a burst with its state in registers (a boundary writes its ring this way);
    /// operators wrap `items` in an adapter and pass the call on. Subscribers take the items with
    /// [`Burst::feed`], which runs the whole fused chain as one loop. The default is that loop
    /// around [`try_on_next`](Subscriber::try_on_next).
    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
        Self: Sized,
    {
        let mut accepted = 0;
        while accepted < limit {
            let want = limit - accepted;
            let handed = items.feed(want, |item| {
                accepted += u64::from(self.try_on_next(item));
                true
            });
            if handed < want {
                break; // ran out
            }
        }
        accepted
    }

    /// Items that already sit in a buffer (a type-erased edge's chunk): takes them from the front
    /// of `chunk` until `limit` were accepted or none is left, leaving `chunk` empty, and returns
    /// how many were accepted and how many it left (dropped: the caller counts them). The default
    /// hands them to [`try_on_next_iter`](Subscriber::try_on_next_iter); a subscriber that stores
    /// items (a boundary's inlet writing its ring) can move them in bulk instead, and one that
    /// wraps another passes the call on.
    #[inline]
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize)
    where
        Self: Sized,
    {
        let mut items = ChunkItems::take(chunk);
        let accepted = self.try_on_next_iter(&mut items, limit);
        (accepted, items.drop_rest())
    }

    /// The stream failed; no other signal follows.
    fn on_error(&mut self, error: Error);

    /// The stream ended; no other signal follows.
    fn on_complete(&mut self);

    /// The publisher paused: it will not call `on_next` until something changes (new demand, new
    /// input). Subscribers that batch their hand-off downstream must make held items visible now.
    /// Operators forward it. Not a request to emit partial batches.
    #[inline]
    fn on_flush(&mut self) {}
}

impl<T, S: Subscriber<T> + ?Sized> Subscriber<T> for Box<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        (**self).on_subscribe(subscription)
    }
    #[inline]
    fn on_next(&mut self, item: T) {
        (**self).on_next(item)
    }
    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        (**self).try_on_next(item)
    }
    fn on_error(&mut self, error: Error) {
        (**self).on_error(error)
    }
    fn on_complete(&mut self) {
        (**self).on_complete()
    }
    fn on_flush(&mut self) {
        (**self).on_flush()
    }
}

/// The items of one burst, as [`Subscriber::try_on_next_iter`] receives them: an iterator that
/// can also hand its items to a closure in a loop of its own.
///
/// [`feed`](Burst::feed) is internal iteration: a source runs the loop over its items and calls the
/// closure, and an operator's adapter passes its own closure on to the one it wraps, so a fused
/// chain (source, operators, sink) compiles to one loop with every counter in a register. Pulling
/// with `next` through the same adapters nests a loop per filtering operator and keeps the
/// source's position in memory. Wrap a plain iterator in [`Each`] to hand it over as a burst.
///
/// ```
/// use weir_runtime::protocol::{Burst, Each};
///
/// let mut items = Each(1..=10);
/// let mut sum = 0;
/// // At most four items, and stop after the one that makes the sum pass 5.
/// let handed = items.feed(4, |item| {
///     sum += item;
///     sum <= 5
/// });
/// assert_eq!((handed, sum), (3, 6));
/// assert_eq!(items.next(), Some(4));
/// ```
pub trait Burst: Iterator {
    /// Hands items to `f`, in order, until `max` were handed, `f` returned `false` (after taking
    /// that item) or the burst ran out; returns how many were handed. Fewer than `max` means `f`
    /// said stop or the burst ran out (the caller knows which); like `next`, nothing is pulled
    /// after the burst ran out. The default is a loop of `next`.
    ///
    /// weir's subscribers keep every item of a burst that breaks these rules (hands over more
    /// than `max`, or goes on after `false`) in an account: a boundary fails its stream with
    /// `DemandExceeded` and counts the extra items as dropped.
    #[inline(always)]
    fn feed<F: FnMut(Self::Item) -> bool>(&mut self, max: u64, mut f: F) -> u64 {
        let mut handed = 0;
        while handed < max {
            let Some(item) = self.next() else { break };
            handed += 1;
            if !f(item) {
                break;
            }
        }
        handed
    }
}

/// A plain iterator as a [`Burst`] (its [`feed`](Burst::feed) is a loop of `next`).
#[derive(Debug, Clone)]
pub struct Each<I>(pub I);

impl<I: Iterator> Iterator for Each<I> {
    type Item = I::Item;

    #[inline(always)]
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<I: Iterator> Burst for Each<I> {}

/// A ring's items straight from its slots (a boundary's outlet, a lane): a loop per run of the
/// ring ([`Drain::feed`]).
impl<T> Burst for Drain<'_, T> {
    #[inline(always)]
    fn feed<F: FnMut(T) -> bool>(&mut self, max: u64, f: F) -> u64 {
        Drain::feed(self, max, f)
    }
}

/// What a [`Subscription`] does: implemented by publishers, called through the cheap handle.
pub trait RawSubscription: Send + Sync + 'static {
    /// Adds `n` to the demand (see [`Subscription::request`]).
    fn request(&self, n: u64);
    /// Stops the subscription (see [`Subscription::cancel`]).
    fn cancel(&self);
}

/// The link between one publisher and one subscriber: `request(n)` and `cancel()`.
///
/// Cheap to clone, `Send + Sync`, callable from any thread and from inside `on_next` (the call is
/// trampolined, never recursive: rule 3.3).
#[derive(Clone)]
pub struct Subscription(Arc<dyn RawSubscription>);

impl Subscription {
    /// Wraps a publisher's subscription state.
    pub fn new(raw: Arc<dyn RawSubscription>) -> Self {
        Self(raw)
    }

    /// A subscription that ignores every call: for publishers that fail or complete at once.
    pub fn noop() -> Self {
        struct Noop;
        impl RawSubscription for Noop {
            fn request(&self, _: u64) {}
            fn cancel(&self) {}
        }
        Self(Arc::new(Noop))
    }

    /// Asks for `n` more items. Demand adds up and saturates at `u64::MAX`, which means unbounded
    /// (rule 3.17). `request(0)` fails the stream with
    /// [`ErrorKind::RequestZero`](crate::ErrorKind::RequestZero) (rule 3.9). After cancel or a terminal
    /// signal it does nothing (rule 3.6).
    #[inline]
    pub fn request(&self, n: u64) {
        self.0.request(n)
    }

    /// Stops the stream: idempotent (rule 3.7), signals stop eventually (rule 3.12) and the publisher
    /// drops its reference to the subscriber (rule 3.13).
    pub fn cancel(&self) {
        self.0.cancel()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// A source of items that emits on demand.
///
/// Operators are generic over their upstream so that chains compile to static dispatch, like
/// iterators; [`BoxPublisher`] erases the type where a graph needs it.
pub trait Publisher<T>: Send + 'static {
    /// Starts a subscription: `on_subscribe` is called first (rule 1.9), then items as requested.
    fn subscribe<S: Subscriber<T>>(self, subscriber: S);

    /// Erases the publisher's type (one allocation, at a graph edge).
    fn boxed(self) -> BoxPublisher<T>
    where
        Self: Sized,
        T: Send + 'static,
    {
        BoxPublisher::new(self)
    }
}

trait ErasedPublisher<T>: Send + 'static {
    fn subscribe_boxed(self: Box<Self>, subscriber: ErasedSubscriber<T>);
}

impl<T: Send + 'static, P: Publisher<T>> ErasedPublisher<T> for P {
    fn subscribe_boxed(self: Box<Self>, subscriber: ErasedSubscriber<T>) {
        (*self).subscribe(subscriber)
    }
}

/// The object-safe face of a [`Subscriber`], with bursts: `try_on_next_iter` is generic, so a
/// `dyn Subscriber` would take a burst one virtual call per item. Through this trait the publisher's
/// side moves a chunk of the burst into a buffer (its own iterator inlined), and the concrete
/// subscriber takes the chunk's items through [`ChunkItems`], a type both sides know: one virtual
/// call per chunk, static dispatch for every item.
trait DynSubscriber<T>: Send + 'static {
    fn on_subscribe(&mut self, subscription: Subscription);
    fn on_next(&mut self, item: T);
    fn try_on_next(&mut self, item: T) -> bool;
    /// Takes the chunk's items (leaving it empty) until `limit` were accepted; returns how many
    /// were accepted and how many it left (dropped here: the caller counts them).
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize);
    fn on_error(&mut self, error: Error);
    fn on_complete(&mut self);
    fn on_flush(&mut self);
}

impl<T, S: Subscriber<T>> DynSubscriber<T> for S {
    fn on_subscribe(&mut self, subscription: Subscription) {
        Subscriber::on_subscribe(self, subscription);
    }
    #[inline]
    fn on_next(&mut self, item: T) {
        Subscriber::on_next(self, item);
    }
    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        Subscriber::try_on_next(self, item)
    }
    fn try_on_next_chunk(&mut self, chunk: &mut Vec<T>, limit: u64) -> (u64, usize) {
        Subscriber::try_on_next_chunk(self, chunk, limit)
    }
    fn on_error(&mut self, error: Error) {
        Subscriber::on_error(self, error);
    }
    fn on_complete(&mut self) {
        Subscriber::on_complete(self);
    }
    fn on_flush(&mut self) {
        Subscriber::on_flush(self);
    }
}

/// The items of an edge's chunk, moved out one by one. Not `vec::Drain`: an iterator with drop
/// code has its address passed to that code, and an iterator whose address escapes is kept in
/// memory instead of registers, per item, through the whole fused chain that pulls from it.
struct ChunkItems<T> {
    base: *mut T,
    /// The next item to move out.
    at: usize,
    len: usize,
}

impl<T> ChunkItems<T> {
    /// Takes over the chunk's items, leaving it empty (its buffer stays where it is).
    fn take(chunk: &mut Vec<T>) -> Self {
        let len = chunk.len();
        // SAFETY: the chunk's items now belong to the returned value, which moves each out at
        // most once and drops the rest in `drop_rest`. (Were a subscriber to unwind before that,
        // they would leak, never be dropped twice.)
        unsafe { chunk.set_len(0) };
        Self {
            base: chunk.as_mut_ptr(),
            at: 0,
            len,
        }
    }

    /// Drops the items not moved out and returns how many there were.
    fn drop_rest(&mut self) -> usize {
        let left = self.len - self.at;
        // SAFETY: the items in `at..len` were written by the chunk's filler and not moved out;
        // `at` moves past them, so they are dropped exactly once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.base.add(self.at),
                left,
            ))
        };
        self.at = self.len;
        left
    }
}

impl<T> Burst for ChunkItems<T> {
    /// One loop over the chunk with the position in a register, unrolled by four: a fused sink
    /// must look at something after each item (a halt, `f`'s `false`), so the compiler cannot
    /// unroll it, and the bound check per item was a third of a summing sink's loop.
    #[inline(always)]
    fn feed<F: FnMut(T) -> bool>(&mut self, max: u64, mut f: F) -> u64 {
        let (base, start) = (self.base, self.at);
        let end = start + (self.len - start).min(usize::try_from(max).unwrap_or(usize::MAX));
        let mut at = start;
        let mut one = |at: &mut usize| {
            // SAFETY: `at < end <= len`: the item was written by the chunk's filler and not moved
            // out yet; `at` moves past it before `f` runs, so it is read exactly once even if `f`
            // unwinds and the caller catches it (`drop_rest` then starts after it).
            let item = unsafe { base.add(*at).read() };
            *at += 1;
            self.at = *at;
            f(item)
        };
        // Four items per bound check while four are left, then one by one; `f`'s `false` ends
        // the burst.
        'burst: {
            while end - at >= 4 {
                for _ in 0..4 {
                    if !one(&mut at) {
                        break 'burst;
                    }
                }
            }
            while at < end {
                if !one(&mut at) {
                    break 'burst;
                }
            }
        }
        (at - start) as u64
    }
}

impl<T> Iterator for ChunkItems<T> {
    type Item = T;

    #[inline(always)]
    fn next(&mut self) -> Option<T> {
        if self.at == self.len {
            return None;
        }
        // SAFETY: `at < len`: the item was written by the chunk's filler and not moved out yet;
        // `at` moves past it, so it is read exactly once.
        let item = unsafe { self.base.add(self.at).read() };
        self.at += 1;
        Some(item)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len - self.at, Some(self.len - self.at))
    }
}

/// Bytes of items moved across a type-erased edge per virtual call, at most (see [`edge_chunk`]).
const EDGE_CHUNK_BYTES: usize = 4 * 1024;

/// Items moved across a type-erased edge of `T` per virtual call, at most: [`EDGE_CHUNK_BYTES`]
/// worth, and between 64 and 1,024 items. A chunk's call and the checks around it cost a few
/// hundred instructions, so the longer the chunk the better, until the chunks of a pipeline's
/// edges and its rings no longer fit the CPU's first-level cache: measured on a `u64` pipeline
/// (the `dsl` bench), 512-item chunks ran 7% faster than 256-item ones, 1,024-item chunks slower.
fn edge_chunk<T>() -> usize {
    match std::mem::size_of::<T>() {
        0 => 1024,
        size => (EDGE_CHUNK_BYTES / size).clamp(64, 1024),
    }
}

/// A type-erased subscriber, as a [`BoxPublisher`] hands it to the publisher it wraps: allocated
/// at subscribe time (with its chunk buffer); one virtual call per signal and per chunk of a burst.
pub(crate) struct ErasedSubscriber<T> {
    inner: Box<dyn DynSubscriber<T>>,
    chunk: Vec<T>,
    /// Where items left in the chunk by a subscriber that stopped mid-burst are counted.
    leftovers: Option<Arc<Tally>>,
}

impl<T: 'static> ErasedSubscriber<T> {
    /// A burst in chunks of at most [`edge_chunk`] items, each filled by `fill(chunk, want)` (at
    /// most `want` items into the empty chunk, returning how many) and never more than the demand
    /// left (`limit - accepted`), so the subscriber takes every item of a chunk (it returns less
    /// than its limit only when its items run out). Stops once a chunk comes back short. Returns
    /// how many items were accepted and how many `fill` moved.
    ///
    /// A publisher whose items sit in a ring (a boundary's outlet) fills the chunk with a block
    /// copy this way, instead of one item at a time through `try_on_next_iter`.
    #[inline(always)]
    pub(crate) fn try_on_next_chunks(
        &mut self,
        limit: u64,
        mut fill: impl FnMut(&mut Vec<T>, usize) -> usize,
    ) -> (u64, usize) {
        let (mut accepted, mut moved) = (0, 0);
        while accepted < limit {
            let want = (limit - accepted).min(edge_chunk::<T>() as u64) as usize;
            let got = fill(&mut self.chunk, want);
            moved += got;
            if got == 0 {
                break;
            }
            let (taken, mut left) = self
                .inner
                .try_on_next_chunk(&mut self.chunk, limit - accepted);
            if !self.chunk.is_empty() {
                // A subscriber that left items in the chunk (its contract is to empty it):
                // counted with what it left, never handed out twice.
                left += self.chunk.len();
                self.chunk.clear();
            }
            accepted += taken;
            if left > 0 {
                // The subscriber stopped mid-burst (cancelled, failed): what it left was already
                // taken from the publisher, so it is dropped here, counted.
                if let Some(leftovers) = &self.leftovers {
                    leftovers.add(Reason::Cancelled, left as u64);
                }
                break;
            }
            if got < want {
                break; // the publisher's items ran out
            }
        }
        (accepted, moved)
    }
}

impl<T: Send + 'static> Subscriber<T> for ErasedSubscriber<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.inner.on_subscribe(subscription);
    }
    #[inline]
    fn on_next(&mut self, item: T) {
        self.inner.on_next(item);
    }
    #[inline]
    fn try_on_next(&mut self, item: T) -> bool {
        self.inner.try_on_next(item)
    }
    /// Moves the burst over in chunks ([`try_on_next_chunks`](ErasedSubscriber::try_on_next_chunks));
    /// nothing is pulled after `items` ends.
    #[inline(always)]
    fn try_on_next_iter<I>(&mut self, items: &mut I, limit: u64) -> u64
    where
        I: Burst<Item = T>,
    {
        // Inlined, whatever the burst's size: the burst's position stays in registers for the
        // loop instead of being written back per item.
        self.try_on_next_chunks(
            limit,
            #[inline(always)]
            |chunk, want| fill(chunk, items, want),
        )
        .0
    }
    fn on_error(&mut self, error: Error) {
        self.inner.on_error(error);
    }
    fn on_complete(&mut self) {
        self.inner.on_complete();
    }
    fn on_flush(&mut self) {
        self.inner.on_flush();
    }
}

/// Moves at most `want` items of `items` into the empty `chunk` (whose capacity is at least
/// `want`) and returns how many: the burst runs the loop ([`Burst::feed`]), each item written into
/// the chunk's spare room.
#[inline(always)]
fn fill<T, I: Burst<Item = T>>(chunk: &mut Vec<T>, items: &mut I, want: usize) -> usize {
    debug_assert!(chunk.is_empty());
    // A subscriber's `try_on_next_chunk` may have taken the buffer itself (`mem::take`).
    chunk.reserve(want);
    let spare = chunk.spare_capacity_mut();
    let want = want.min(spare.len());
    let spare = &mut spare[..want];
    let mut got = 0;
    // A burst that hands over more than asked (or goes on after `false`): the extra items are
    // kept, not lost.
    let mut extra = Vec::new();
    items.feed(want as u64, |item| match spare.get_mut(got) {
        Some(slot) => {
            slot.write(item);
            got += 1;
            true
        }
        None => {
            extra.push(item);
            false
        }
    });
    // SAFETY: the first `got` spare slots were just written (the chunk was empty).
    unsafe { chunk.set_len(got) };
    chunk.append(&mut extra);
    chunk.len()
}

/// A type-erased publisher.
///
/// A subscriber that stops in the middle of a burst (cancelled or failed) may leave items of the
/// chunk it was handed: they are counted as [`Reason::Cancelled`] in an account named `edge`,
/// registered with the [`ledger::scope`](crate::ledger::scope) the publisher was boxed in.
pub struct BoxPublisher<T> {
    publisher: Box<dyn ErasedPublisher<T>>,
    leftovers: Option<Arc<Tally>>,
}

impl<T: Send + 'static> BoxPublisher<T> {
    /// Erases `publisher`'s type; see [`Publisher::boxed`].
    pub fn new(publisher: impl Publisher<T>) -> Self {
        Self {
            publisher: Box::new(publisher),
            leftovers: crate::ledger::in_scope().then(|| Tally::new("edge")),
        }
    }
}

impl<T: Send + 'static> Publisher<T> for BoxPublisher<T> {
    fn subscribe<S: Subscriber<T>>(self, subscriber: S) {
        if let Some(leftovers) = &self.leftovers {
            // Boxed in a stage's code, subscribed as part of an upstream being joined.
            crate::ledger::claim(leftovers.clone());
        }
        self.publisher.subscribe_boxed(ErasedSubscriber {
            inner: Box::new(subscriber),
            chunk: Vec::with_capacity(edge_chunk::<T>()),
            leftovers: self.leftovers,
        })
    }

    fn boxed(self) -> BoxPublisher<T>
    where
        T: Send + 'static,
    {
        self
    }
}

impl<T> fmt::Debug for BoxPublisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxPublisher")
    }
}

/// Both a subscriber (of `In`) and a publisher (of `Out`): a stage that can sit between any
/// upstream and any downstream. Because subscribing moves a value, a processor is a pair of ends
/// that share state; `(subscriber, publisher)` tuples are processors.
pub trait Processor<In, Out> {
    /// The end that subscribes to the upstream.
    type Subscriber: Subscriber<In>;
    /// The end that downstream subscribes to.
    type Publisher: Publisher<Out>;
    /// Splits the processor into its two ends.
    fn into_parts(self) -> (Self::Subscriber, Self::Publisher);
}

impl<In, Out, S: Subscriber<In>, P: Publisher<Out>> Processor<In, Out> for (S, P) {
    type Subscriber = S;
    type Publisher = P;
    fn into_parts(self) -> (S, P) {
        self
    }
}

/// Answers a subscriber that cannot be served: `on_subscribe` with a no-op subscription, then
/// `on_error` (rule 1.9 requires `on_subscribe` first).
pub fn reject<T, S: Subscriber<T>>(mut subscriber: S, error: Error) {
    subscriber.on_subscribe(Subscription::noop());
    subscriber.on_error(error);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst whose `feed` ignores its `max`: everything it has, whatever was asked.
    struct Greedy<I>(Each<I>);

    impl<I: Iterator> Iterator for Greedy<I> {
        type Item = I::Item;
        fn next(&mut self) -> Option<I::Item> {
            self.0.next()
        }
    }

    impl<I: Iterator> Burst for Greedy<I> {
        fn feed<F: FnMut(I::Item) -> bool>(&mut self, _: u64, f: F) -> u64 {
            self.0.feed(u64::MAX, f)
        }
    }

    #[test]
    fn an_edge_chunk_holds_4_kib_of_items_and_between_64_and_1024_of_them() {
        assert_eq!(edge_chunk::<()>(), 1024);
        assert_eq!(edge_chunk::<u8>(), 1024);
        assert_eq!(edge_chunk::<u32>(), 1024);
        assert_eq!(edge_chunk::<u64>(), 512);
        assert_eq!(edge_chunk::<[u8; 32]>(), 128);
        assert_eq!(edge_chunk::<[u8; 256]>(), 64);
        assert_eq!(edge_chunk::<[u8; 4096]>(), 64);
    }

    #[test]
    fn an_edge_chunk_keeps_the_item_a_burst_hands_over_beyond_what_was_asked() {
        let mut chunk = Vec::with_capacity(4);
        let mut items = Greedy(Each(0..10));
        assert_eq!(fill(&mut chunk, &mut items, 3), 4);
        assert_eq!(chunk, [0, 1, 2, 3]);
        assert_eq!(items.next(), Some(4));
    }

    #[test]
    fn chunk_items_feed_moves_each_item_out_once_and_stops_where_asked() {
        let mut chunk: Vec<String> = (0..8).map(|i| i.to_string()).collect();
        let mut items = ChunkItems::take(&mut chunk);
        let mut seen = Vec::new();
        let mut take = |item| {
            seen.push(item);
            true
        };
        assert_eq!(items.feed(2, &mut take), 2);
        // The closure says stop after the first item it takes.
        assert_eq!(
            items.feed(10, |item| {
                seen.push(item);
                false
            }),
            1
        );
        assert_eq!(items.next().as_deref(), Some("3"));
        assert_eq!(
            items.feed(2, |item| {
                seen.push(item);
                true
            }),
            2
        );
        assert_eq!(items.drop_rest(), 2);
        assert_eq!(items.feed(10, |_| true), 0);
        assert_eq!(seen, ["0", "1", "2", "4", "5"]);
    }

    /// `feed` takes four items per bound check while four are left: whatever the chunk's length,
    /// the limit and the item whose call says stop (in a block of four or in the tail), it hands
    /// over exactly the items up to that one or the limit, in order, and the next item is the
    /// one after.
    #[test]
    fn chunk_items_feed_stops_at_the_limit_or_the_first_false_wherever_it_falls() {
        for len in 0..12usize {
            for max in 0..14u64 {
                for stop in 0..13usize {
                    let mut chunk: Vec<String> = (0..len).map(|i| i.to_string()).collect();
                    let mut items = ChunkItems::take(&mut chunk);
                    let mut seen = Vec::new();
                    let handed = items.feed(max, |item| {
                        seen.push(item);
                        seen.len() - 1 != stop
                    });
                    let expected = (len as u64).min(max).min(stop as u64 + 1);
                    assert_eq!(handed, expected, "len {len} max {max} stop {stop}");
                    let want: Vec<String> = (0..expected).map(|i| i.to_string()).collect();
                    assert_eq!(seen, want, "len {len} max {max} stop {stop}");
                    let next = (expected < len as u64).then(|| expected.to_string());
                    assert_eq!(items.next(), next, "len {len} max {max} stop {stop}");
                    let rest = len.saturating_sub(expected as usize + 1);
                    assert_eq!(items.drop_rest(), rest, "len {len} max {max} stop {stop}");
                }
            }
        }
    }
}
