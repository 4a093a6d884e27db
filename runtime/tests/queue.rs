//! A spilling queue whose store gains items by itself (a store that reads back in the background)
//! emits them when the store calls the queue's wake, without waiting for another push or request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use weir_runtime::queue::{self, SpillStore, StoreRefusal, WhenStoreFull};
use weir_runtime::{Error, sink};

/// How a store wakes its queue.
type Wake = Arc<dyn Fn() + Send + Sync>;

/// Items become takeable only when `arrive` is called from elsewhere; then the store wakes its
/// queue.
#[derive(Clone, Default)]
struct Background {
    ready: Arc<Mutex<VecDeque<u64>>>,
    wake: Arc<Mutex<Option<Wake>>>,
}

impl Background {
    fn arrive(&self, item: u64) {
        self.ready.lock().unwrap().push_back(item);
        let wake = self.wake.lock().unwrap().clone();
        if let Some(wake) = wake {
            wake();
        }
    }
}

impl SpillStore<u64> for Background {
    fn memory_capacity(&self) -> usize {
        4
    }
    fn push(&mut self, item: u64) -> Result<bool, (u64, StoreRefusal)> {
        self.ready.lock().unwrap().push_back(item);
        Ok(false)
    }
    fn take_into(&mut self, max: usize, out: &mut VecDeque<u64>) -> Result<usize, Error> {
        let mut ready = self.ready.lock().unwrap();
        let n = max.min(ready.len());
        out.extend(ready.drain(..n));
        Ok(n)
    }
    fn len(&self) -> u64 {
        self.ready.lock().unwrap().len() as u64
    }
    fn in_memory(&self) -> usize {
        self.ready.lock().unwrap().len()
    }
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn set_wake(&mut self, wake: Wake) {
        *self.wake.lock().unwrap() = Some(wake);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_gains_items_by_itself_wakes_its_queue() {
    let store = Background::default();
    let outside = store.clone();
    let (handle, publisher) = queue::spilling("replayed", store, WhenStoreFull::Wait).unwrap();
    let mut items = sink::into_stream(publisher, 4);
    // Demand is waiting and nothing is pushed: the item must come through the wake alone.
    tokio::time::sleep(Duration::from_millis(20)).await;
    outside.arrive(7);
    let first = tokio::time::timeout(Duration::from_secs(2), items.next())
        .await
        .expect("the store's wake did not reach the queue");
    assert_eq!(first.unwrap().unwrap(), 7);
    drop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilling_queue_reports_the_age_of_its_oldest_item() {
    let (handle, publisher) =
        queue::spilling("spilled", Background::default(), WhenStoreFull::Wait).unwrap();
    let metrics = handle.metrics();
    assert_eq!(metrics.snapshot().oldest_item_age_ms, None, "empty");
    for item in 0..3 {
        handle.try_push(item).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let age = metrics.snapshot().oldest_item_age_ms;
    assert!(age.is_some_and(|ms| ms >= 40.0), "waited 50 ms: {age:?}");
    // Taken to the last one: nothing waits any more.
    let mut items = sink::into_stream(publisher, 4);
    for expected in 0..3 {
        assert_eq!(items.next().await.unwrap().unwrap(), expected);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while metrics.snapshot().oldest_item_age_ms.is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(metrics.snapshot().oldest_item_age_ms, None);
    drop(handle);
}

/// A store whose `push` panics on the item `panics_on`.
struct PanicsOnPush {
    items: VecDeque<u64>,
    panics_on: u64,
}

impl SpillStore<u64> for PanicsOnPush {
    fn memory_capacity(&self) -> usize {
        8
    }
    fn push(&mut self, item: u64) -> Result<bool, (u64, StoreRefusal)> {
        assert_ne!(item, self.panics_on, "the store cannot take this one");
        self.items.push_back(item);
        Ok(false)
    }
    fn take_into(&mut self, max: usize, out: &mut VecDeque<u64>) -> Result<usize, Error> {
        let n = max.min(self.items.len());
        out.extend(self.items.drain(..n));
        Ok(n)
    }
    fn len(&self) -> u64 {
        self.items.len() as u64
    }
    fn in_memory(&self) -> usize {
        self.items.len()
    }
    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// The item a store's `push` panics on went into the store's code and never came back: it is
/// counted as failed (it was offered and left the books before), and the panic reaches the caller.
#[test]
fn the_item_a_stores_push_panics_on_is_counted_as_failed() {
    use weir_runtime::ledger::{Account, Reason};
    let store = PanicsOnPush {
        items: VecDeque::new(),
        panics_on: 2,
    };
    let (handle, _publisher) = queue::spilling("spilled", store, WhenStoreFull::Wait).unwrap();
    let metrics = handle.metrics();
    handle.try_push(0).unwrap();
    handle.try_push(1).unwrap();
    let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.try_push(2)));
    assert!(pushed.is_err(), "the store's panic reaches the caller");
    handle.try_push(3).unwrap();
    let entry = metrics.entry();
    assert_eq!(metrics.offered(), 4);
    assert_eq!(entry.exits[Reason::Failed], 1, "{:?}", entry.exits);
    assert_eq!(entry.held, 3);
    assert_eq!(metrics.offered(), entry.held + entry.exits.sum());
}
