//! `group_by(key, max_groups, max_items, policy)`: gathers items into per-key groups and emits each
//! group as `(key, Vec<item>)`.
//!
//! Memory is bounded by construction: at most `max_groups` groups are open and each holds at most
//! `max_items` items. A group is emitted when it is full; when an item with a new key arrives while
//! `max_groups` groups are open, the [`GroupOverflow`] policy picks a group to emit first to make
//! room; at the end of the stream every open group is emitted. Groups go out only as the downstream
//! requests them: while one waits, the upstream is not read (its lane fills, then it stops).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use weir_runtime::kit::{Lane, LaneEvent};
use weir_runtime::metrics::BufferMetrics;
use weir_runtime::{Error, Publisher, Subscriber, reject};

use super::{Outlet, Progress, TaskOperator, input_observed, start};

/// Which open group to emit when a new key needs room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOverflow {
    /// The group opened longest ago.
    EmitOldest,
    /// The group holding the most items.
    EmitLargest,
}

/// See [`PublisherExt::group_by`](crate::PublisherExt::group_by).
pub struct GroupBy<P, F, T> {
    upstream: P,
    key: F,
    max_groups: usize,
    max_items: usize,
    overflow: GroupOverflow,
    metrics: Arc<BufferMetrics>,
    _input: std::marker::PhantomData<fn(T)>,
}

impl<P, F, T> GroupBy<P, F, T> {
    pub(crate) fn new(
        upstream: P,
        key: F,
        max_groups: usize,
        max_items: usize,
        overflow: GroupOverflow,
    ) -> Self {
        Self {
            upstream,
            key,
            max_groups,
            max_items,
            overflow,
            metrics: BufferMetrics::new("group_by", max_items.clamp(1, 1024)),
            _input: std::marker::PhantomData,
        }
    }

    /// The counters of the stage's input lane (the open groups are bounded separately).
    pub fn metrics(&self) -> Arc<BufferMetrics> {
        self.metrics.clone()
    }
}

impl<P, F, T> std::fmt::Debug for GroupBy<P, F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupBy")
            .field("max_groups", &self.max_groups)
            .field("max_items", &self.max_items)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl<T, K, P, F> Publisher<(K, Vec<T>)> for GroupBy<P, F, T>
where
    P: Publisher<T>,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    F: FnMut(&T) -> K + Send + 'static,
{
    fn subscribe<S: Subscriber<(K, Vec<T>)>>(self, subscriber: S) {
        // Built in a stage's code, subscribed as part of an upstream being joined: that
        // upstream's account (see `ledger::claim`).
        weir_runtime::ledger::claim(self.metrics.clone());
        if self.max_groups == 0 || self.max_items == 0 {
            let error =
                Error::msg("max_groups and max_items must be at least 1").in_stage("group_by");
            return reject(subscriber, error);
        }
        start("group_by", subscriber, || GroupTask {
            lane: input_observed(self.upstream, self.metrics),
            key: self.key,
            groups: HashMap::new(),
            opened: 0,
            max_groups: self.max_groups,
            max_items: self.max_items,
            overflow: self.overflow,
            ready: Vec::new(),
            ended: None,
            holding: 0,
            in_hand: false,
        });
    }
}

struct GroupTask<T, K, F> {
    lane: Lane<T>,
    key: F,
    /// Open groups: items and the order in which they were opened.
    groups: HashMap<K, (u64, Vec<T>)>,
    opened: u64,
    max_groups: usize,
    max_items: usize,
    overflow: GroupOverflow,
    /// Groups to emit, in order.
    ready: Vec<(K, Vec<T>)>,
    ended: Option<Result<(), Error>>,
    /// Items in open and ready groups (and the one being filed).
    holding: u64,
    /// An item is being handed to the key function.
    in_hand: bool,
}

impl<T, K, F> GroupTask<T, K, F>
where
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    F: FnMut(&T) -> K,
{
    /// Files one item, emitting a group first if the item's key needs room.
    fn file(&mut self, key: K, item: T) {
        if let Some((_, items)) = self.groups.get_mut(&key) {
            items.push(item);
            if items.len() == self.max_items {
                let (_, full) = self.groups.remove(&key).expect("just found");
                self.ready.push((key, full));
            }
            return;
        }
        if self.groups.len() == self.max_groups {
            let victim = match self.overflow {
                GroupOverflow::EmitOldest => self.groups.iter().min_by_key(|(_, (at, _))| *at),
                GroupOverflow::EmitLargest => {
                    self.groups.iter().max_by_key(|(_, (_, items))| items.len())
                }
            }
            .map(|(k, _)| k.clone())
            .expect("max_groups >= 1 groups are open");
            let (_, items) = self.groups.remove(&victim).expect("just found");
            self.ready.push((victim, items));
        }
        self.opened += 1;
        let mut items = Vec::with_capacity(self.max_items.min(64));
        items.push(item);
        if self.max_items == 1 {
            self.ready.push((key, items));
        } else {
            self.groups.insert(key, (self.opened, items));
        }
    }
}

impl<T, K, F> TaskOperator<(K, Vec<T>)> for GroupTask<T, K, F>
where
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    F: FnMut(&T) -> K + Send + 'static,
{
    fn held(&self) -> u64 {
        self.holding
    }

    fn in_hand(&self) -> u64 {
        u64::from(self.in_hand)
    }

    fn advance<S: Subscriber<(K, Vec<T>)>>(
        &mut self,
        cx: &mut Context<'_>,
        demand: u64,
        out: &mut Outlet<S>,
    ) -> Progress {
        // Emit what is ready, as far as demand goes.
        if !self.ready.is_empty() {
            if demand == 0 {
                return Progress::Wait;
            }
            let n = (demand as usize).min(self.ready.len());
            for group in self.ready.drain(..n) {
                let members = group.1.len() as u64;
                self.holding -= members;
                out.reshaped(members, 1);
                out.emit(group);
            }
            out.flush();
            return Progress::Again;
        }
        if let Some(result) = self.ended.take() {
            if result.is_ok() && !self.groups.is_empty() {
                let mut rest: Vec<_> = self.groups.drain().collect();
                rest.sort_by_key(|(_, (at, _))| *at);
                self.ready
                    .extend(rest.into_iter().map(|(k, (_, items))| (k, items)));
                self.ended = Some(Ok(()));
                return Progress::Again;
            }
            return Progress::Done(result);
        }
        // Nothing ready: read more (the groups are bounded, so reading is bounded too).
        match self.lane.poll_lane(cx) {
            Poll::Pending => return Progress::Wait,
            Poll::Ready(LaneEvent::Ended(result)) => self.ended = Some(result),
            Poll::Ready(LaneEvent::Items) => {
                let mut popped = None;
                self.lane.pop_each(1, |item| {
                    popped = Some(item);
                    true
                });
                // The key runs once the item is out of the lane: a panic in it must not unwind
                // through the lane's pop, which would leave the item in its slot to be dropped a
                // second time.
                if let Some(item) = popped {
                    self.holding += 1;
                    self.in_hand = true;
                    let key = (self.key)(&item);
                    self.in_hand = false;
                    self.file(key, item);
                }
            }
        }
        Progress::Again
    }
}
