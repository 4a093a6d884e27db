//! The Reactive Streams TCK (weir-tck) over every publisher, subscriber and processor of the runtime.
//!
//! One line per verified type; each generates a module with one `#[test]` per rule
//! (`cargo test --test tck -- --list`). Skipped rules pass and print why (`-- --nocapture`).
//!
//! To add a type, add one line with the macro that fits it:
//! - `weir_tck::publisher_verification!(name, |n: u64| publisher_of_n_items(n), options...)`;
//! - `weir_tck::subscriber_blackbox_verification!(name, || subscriber)`;
//! - `weir_tck::subscriber_whitebox_verification!(name, |probe: WhiteboxProbe<T>| probe.wrap(subscriber))`;
//! - `weir_tck::identity_processor_verification!(name, |buffer: usize| (subscriber_end, publisher_end))`.

use std::time::Duration;

use weir_runtime as runtime;

use runtime::boundary::{self, BoundaryConfig, Inlet};
use runtime::ingress::{self, IngressConfig, Overflow};
use runtime::queue::QueuePublisher;
use runtime::sink::Fold;
use runtime::{Error, Publisher, Subscriber, source};
use weir_tck::WhiteboxProbe;

/// The capacity of the boundaries under test.
const CAPACITY: usize = 16;

/// The most items an ingress under test is pre-filled with.
const INGRESS_MAX: u64 = 1024;

fn config(capacity: usize) -> BoundaryConfig {
    BoundaryConfig::new("tck", capacity).expect("a positive capacity")
}

fn failed() -> source::Fail<u64> {
    source::error(Error::msg("failed publisher"))
}

/// `once(0)`, or `empty()` when asked for no element.
fn once_or_empty(n: u64) -> source::Once<u64> {
    if n == 0 {
        source::empty()
    } else {
        source::once(0)
    }
}

/// The outlet of a boundary whose inlet is fed by `upstream`.
fn outlet_of<P: Publisher<u64>>(upstream: P) -> boundary::Outlet<u64> {
    let (inlet, outlet) = boundary::processor::<u64>(config(CAPACITY));
    upstream.subscribe(inlet);
    outlet
}

/// An ingress pre-filled with `0..n`, then closed.
fn ingress_of(n: u64) -> QueuePublisher<u64> {
    let capacity = usize::try_from(n.max(1)).expect("ingress capacity fits usize");
    let overflow = Overflow::Reject {
        retry_after: Duration::from_millis(1),
    };
    let (handle, publisher) = ingress::bounded(
        IngressConfig::new("tck", capacity, overflow).expect("a positive capacity"),
    );
    for item in 0..n {
        handle
            .try_push(item)
            .expect("the ingress has room for every item");
    }
    handle.close();
    publisher
}

/// An ingress that already has its subscriber: it answers every other one with `on_subscribe` then
/// `on_error(AlreadySubscribed)`, which makes it a failed publisher (rule 1.9).
fn rejecting_ingress() -> QueuePublisher<u64> {
    let publisher = ingress_of(0);
    publisher
        .clone()
        .subscribe(Fold::new((), |_: &mut (), _: u64| {}).0);
    publisher
}

/// A boundary inlet whose outlet is consumed (unbounded demand), so that the inlet requests.
fn consumed_inlet() -> Inlet<u64> {
    let (inlet, outlet) = boundary::processor::<u64>(config(CAPACITY));
    let (consumer, _outcome) = Fold::new((), |_: &mut (), _: u64| {});
    outlet.subscribe(consumer);
    inlet
}

/// The subscriber end of a [`Fold`] summing its items, wrapped so that `probe` sees its signals (its
/// subscription is the puppet: `Fold` requests everything by itself).
fn probed_fold(probe: WhiteboxProbe<u64>) -> impl Subscriber<u64> {
    probe.wrap(summing_fold())
}

/// A consumed boundary inlet, wrapped so that `probe` sees its signals.
fn probed_inlet(probe: WhiteboxProbe<u64>) -> impl Subscriber<u64> {
    probe.wrap(consumed_inlet())
}

fn summing_fold() -> Fold<u64, impl FnMut(&mut u64, u64) + Send + 'static> {
    Fold::new(0u64, |sum: &mut u64, x: u64| *sum = sum.wrapping_add(x)).0
}

// ---------------------------------------------------------------------------------------- publishers

weir_tck::publisher_verification!(
    from_iter,
    |n: u64| source::from_iter(0..n),
    failed = Some(failed),
);

weir_tck::publisher_verification!(once, once_or_empty, failed = Some(failed), max_elements = 1,);

weir_tck::publisher_verification!(
    empty,
    |_: u64| source::empty::<u64>(),
    failed = Some(failed),
    max_elements = 0,
);

weir_tck::publisher_verification!(
    from_stream,
    |n: u64| source::from_stream(futures::stream::iter(0..n)),
    failed = Some(failed),
);

weir_tck::publisher_verification!(
    boundary_outlet,
    |n: u64| outlet_of(source::from_iter(0..n)),
    failed = Some(|| outlet_of(failed())),
);

weir_tck::publisher_verification!(
    boundary_of_from_iter,
    |n: u64| boundary::boundary(source::from_iter(0..n), config(CAPACITY)),
    failed = Some(|| boundary::boundary(failed(), config(CAPACITY))),
);

weir_tck::publisher_verification!(
    ingress_publisher,
    ingress_of,
    failed = Some(rejecting_ingress),
    max_elements = INGRESS_MAX,
);

weir_tck::publisher_verification!(
    boxed_from_iter,
    |n: u64| source::from_iter(0..n).boxed(),
    failed = Some(|| failed().boxed()),
);

// --------------------------------------------------------------------------------------- subscribers

weir_tck::subscriber_blackbox_verification!(fold, summing_fold);

weir_tck::subscriber_blackbox_verification!(boundary_inlet, consumed_inlet);

weir_tck::subscriber_whitebox_verification!(fold_whitebox, probed_fold);

weir_tck::subscriber_whitebox_verification!(boundary_inlet_whitebox, probed_inlet);

// ---------------------------------------------------------------------------------------- processors

weir_tck::identity_processor_verification!(boundary_processor, |buffer: usize| {
    boundary::processor::<u64>(config(buffer))
});

#[test]
fn every_rule_is_generated() {
    use weir_tck::{blackbox, processor, publisher, whitebox};
    let publishers = [
        from_iter::RULES,
        once::RULES,
        empty::RULES,
        from_stream::RULES,
        boundary_outlet::RULES,
        boundary_of_from_iter::RULES,
        ingress_publisher::RULES,
        boxed_from_iter::RULES,
    ];
    for generated in publishers {
        assert_eq!(generated, publisher::RULES);
    }
    for generated in [fold::RULES, boundary_inlet::RULES] {
        assert_eq!(generated, blackbox::RULES);
    }
    for generated in [fold_whitebox::RULES, boundary_inlet_whitebox::RULES] {
        assert_eq!(generated, whitebox::RULES);
    }
    assert_eq!(boundary_processor::RULES, processor::rules().as_slice());
}
