//! broadcast, balance and partition.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::probe;
use weir::operators::{Lagging, balance, broadcast, partition, route};
use weir::prelude::*;
use weir::runtime::metrics::Reason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_waits_for_the_slowest_and_everyone_gets_everything() {
    let outputs = broadcast(source::from_iter(0..2_000u32), 3, 16, Lagging::Wait).unwrap();
    let mut tasks = Vec::new();
    for (i, output) in outputs.into_iter().enumerate() {
        tasks.push(tokio::spawn(output.fold(Vec::new(), move |seen, x| {
            if i == 0 {
                std::thread::sleep(Duration::from_micros(50)); // the slow one
            }
            seen.push(x);
        })));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), (0..2_000).collect::<Vec<_>>());
    }
}

#[test]
fn broadcast_can_shed_a_slow_subscriber_instead_of_stalling_all() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // Drop: the subscriber that never requests loses items (counted); the other gets all.
    let outputs = broadcast(source::from_iter(0..1_000u32), 2, 8, Lagging::Drop).unwrap();
    let stalled_metrics = outputs[1].metrics();
    let (stalled, _recorder) = probe::<u32>();
    outputs[1].clone().subscribe(stalled);
    let fast = rt.block_on(outputs[0].clone().collect()).unwrap();
    assert_eq!(fast, (0..1_000).collect::<Vec<_>>());
    assert_eq!(stalled_metrics.shed(Reason::DroppedNewest), 1_000 - 8);

    // Disconnect: the stalled subscriber is failed with a clear error; the other gets all.
    let outputs = broadcast(source::from_iter(0..1_000u32), 2, 8, Lagging::Disconnect).unwrap();
    let (stalled, recorder) = probe::<u32>();
    outputs[1].clone().subscribe(stalled);
    let fast = rt.block_on(outputs[0].clone().collect()).unwrap();
    assert_eq!(fast.len(), 1_000);
    recorder.request(u64::MAX);
    let error = recorder.expect_terminal().unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `broadcast`: disconnected: this subscriber fell too far behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_spreads_work_and_loses_nothing() {
    let outputs = balance(source::from_iter(0..3_000u32), 3, 8).unwrap();
    let mut tasks = Vec::new();
    for output in outputs {
        tasks.push(tokio::spawn(output.fold(Vec::new(), |seen, x| {
            std::thread::sleep(Duration::from_micros(5));
            seen.push(x);
        })));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap().unwrap();
        assert!(!mine.is_empty(), "an output got nothing");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "order within an output"
        );
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (0..3_000).collect::<Vec<_>>());
}

/// An output dropped without a subscriber (its queue closed) is not picked by `balance`: every
/// item goes to the live outputs. It looked the roomiest (an empty queue), and the items picked
/// for it were refused there (counted, but not delivered by the outputs that were still there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_skips_an_output_that_went_without_a_subscriber() {
    let mut outputs = balance(source::from_iter(0..1_000u32), 3, 8).unwrap();
    drop(outputs.pop());
    let mut tasks = Vec::new();
    for output in outputs {
        tasks.push(tokio::spawn(output.collect()));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap().unwrap());
    }
    all.sort_unstable();
    let missing: Vec<u32> = (0..1_000)
        .filter(|x| all.binary_search(x).is_err())
        .collect();
    assert!(
        missing.is_empty() && all.len() == 1_000,
        "missing {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_keeps_each_key_on_one_output_in_order() {
    let outputs = partition(source::from_iter(0..2_000u32), 4, 16, |x| x % 10).unwrap();
    let mut tasks = Vec::new();
    for output in outputs {
        tasks.push(tokio::spawn(output.collect()));
    }
    let mut owner = HashMap::new();
    let mut total = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let mine = task.await.unwrap().unwrap();
        total += mine.len();
        for x in &mine {
            assert_eq!(
                *owner.entry(x % 10).or_insert(i),
                i,
                "key {} on two outputs",
                x % 10
            );
        }
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(total, 2_000);
}

#[tokio::test]
async fn zero_outputs_is_a_clear_error() {
    let error = balance(source::from_iter(0..3u8), 0, 4).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stage `balance`: at least one output is needed"
    );
}

/// Collects every output and checks each ended with the same panic error.
async fn expect_outputs_panicked<T: std::fmt::Debug + Send + 'static>(
    outputs: Vec<weir::operators::FanOutput<T>>,
    expected: &str,
) {
    let tasks: Vec<_> = outputs
        .into_iter()
        .map(|output| tokio::spawn(output.collect()))
        .collect();
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(matches!(
            error.kind(),
            weir::runtime::ErrorKind::Panicked(_)
        ));
        assert_eq!(error.to_string(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_partition_key_fails_every_output_naming_the_stage() {
    let outputs = partition(source::from_iter(0..100u32), 2, 8, |x| {
        if *x == 5 {
            panic!("bad key");
        }
        x % 2
    })
    .unwrap();
    expect_outputs_panicked(outputs, "stage `partition`: panicked: bad key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_upstream_fails_every_output_instead_of_completing_them() {
    let outputs = broadcast(support::panics_on_request::<u32>(), 2, 8, Lagging::Wait).unwrap();
    expect_outputs_panicked(outputs, "stage `broadcast`: panicked: upstream exploded").await;
    let outputs = balance(support::panics_on_request::<u32>(), 2, 8).unwrap();
    expect_outputs_panicked(outputs, "stage `balance`: panicked: upstream exploded").await;
}

/// Clones itself fine until the fifth item.
#[derive(Debug)]
struct FragileClone(u32);

impl Clone for FragileClone {
    fn clone(&self) -> Self {
        if self.0 == 5 {
            panic!("clone failed");
        }
        Self(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_clone_in_a_broadcast_fails_every_output() {
    let items = source::from_iter((0..100).map(FragileClone));
    let outputs = broadcast(items, 2, 8, Lagging::Wait).unwrap();
    expect_outputs_panicked(outputs, "stage `broadcast`: panicked: clone failed").await;
}

/// The fan-out's own account after its hub panicked on an item: that item is counted as failed,
/// and nothing is still held.
fn hub_entry_after_a_panic(
    accounts: &[std::sync::Arc<dyn weir::runtime::ledger::Account>],
    stage: &str,
) -> weir::runtime::ledger::Entry {
    let hub = accounts
        .iter()
        .find(|a| a.name() == stage)
        .expect("the fan-out's account");
    hub.entry()
}

/// A key that panics on an item: the item in the hub's hands is counted as failed. It was let go
/// of uncounted (the hub's locals are dropped while the panic unwinds, before the panic handler
/// looks at what the hub held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_item_a_partition_key_panics_on_is_counted_as_failed() {
    let (outputs, accounts) = weir::runtime::ledger::scope(|| {
        partition(source::from_iter(0..100u32), 2, 8, |x| {
            assert!(*x != 5, "bad key");
            x % 2
        })
        .unwrap()
    });
    expect_outputs_panicked(outputs, "stage `partition`: panicked: bad key").await;
    let entry = hub_entry_after_a_panic(&accounts, "partition");
    assert_eq!(
        (
            entry.exits[weir::runtime::ledger::Reason::Failed],
            entry.held
        ),
        (1, 0),
        "{entry:?}"
    );
}

/// A `Clone` that panics in a broadcast: the original in the hub's hands is counted as failed, not
/// as cancelled (nobody cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_item_a_broadcast_clone_panics_on_is_counted_as_failed() {
    let (outputs, accounts) = weir::runtime::ledger::scope(|| {
        broadcast(
            source::from_iter((0..100).map(FragileClone)),
            2,
            8,
            Lagging::Wait,
        )
        .unwrap()
    });
    expect_outputs_panicked(outputs, "stage `broadcast`: panicked: clone failed").await;
    let entry = hub_entry_after_a_panic(&accounts, "broadcast");
    assert_eq!(
        (
            entry.exits[weir::runtime::ledger::Reason::Failed],
            entry.exits[weir::runtime::ledger::Reason::Cancelled],
            entry.held
        ),
        (1, 0, 0),
        "{entry:?}"
    );
}

/// A route sends each item where its function says, in order per output; partition's hash could
/// not express "bad rows to output 1" (found writing the ETL example).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_sends_each_item_to_the_output_it_picks() {
    let outputs = route(source::from_iter(0..1_000u32), 3, 8, |x| (x % 3) as usize).unwrap();
    let collected: Vec<_> = outputs
        .into_iter()
        .map(|o| tokio::spawn(o.collect()))
        .collect();
    for (k, output) in collected.into_iter().enumerate() {
        let items = output.await.unwrap().unwrap();
        let expected: Vec<u32> = (0..1_000).filter(|x| x % 3 == k as u32).collect();
        assert_eq!(items, expected, "output {k}");
    }
}

/// An index out of range is a clear error on every output, naming the stage and the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_a_missing_output_fails_naming_it() {
    let outputs = route(source::from_iter(0..10u32), 2, 8, |x| {
        if *x == 4 { 5 } else { 0 }
    })
    .unwrap();
    let (a, b) = (outputs[0].clone(), outputs[1].clone());
    let (a, b) = tokio::join!(a.collect(), b.collect());
    for result in [a, b] {
        let error = result.unwrap_err();
        assert!(
            error.to_string().contains("route")
                && error
                    .to_string()
                    .contains("picked output 5, but there are 2"),
            "{error}"
        );
    }
}
