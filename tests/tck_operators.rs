//! The Reactive Streams TCK (weir-tck) over the operators: each fused chain is a publisher, so it runs
//! the publisher rules; a chain ending at a boundary also runs them across the task hand-off.

use weir::prelude::*;
use weir_runtime::boundary;
use weir_runtime::processor::{RelayPublisher, from_chain};

const CAPACITY: usize = 16;

fn failed() -> source::Fail<u64> {
    source::error(weir::runtime::Error::msg("failed publisher"))
}

weir_tck::publisher_verification!(
    map,
    |n: u64| source::from_iter(0..n).map(|x| x.wrapping_mul(3)),
    failed = Some(|| failed().map(|x| x + 1)),
);

weir_tck::publisher_verification!(
    filter,
    // Every other item is dropped, so the source holds twice the elements asked for.
    |n: u64| source::from_iter(0..n.saturating_mul(2)).filter(|x| x % 2 == 0),
    failed = Some(|| failed().filter(|_| true)),
);

weir_tck::publisher_verification!(
    inspect,
    |n: u64| source::from_iter(0..n).inspect(|_| {}),
    failed = Some(|| failed().inspect(|_| {})),
);

weir_tck::publisher_verification!(
    filter_map,
    |n: u64| source::from_iter(0..n.saturating_mul(2))
        .filter_map(|x| (x % 2 == 0).then_some(x / 2)),
    failed = Some(|| failed().filter_map(Some)),
);

weir_tck::publisher_verification!(
    try_map,
    |n: u64| source::from_iter(0..n).try_map(Ok::<u64, std::fmt::Error>),
    failed = Some(|| failed().try_map(Ok::<u64, std::fmt::Error>)),
);

weir_tck::publisher_verification!(
    scan,
    |n: u64| source::from_iter(0..n).scan(0u64, |total, x| {
        *total = total.wrapping_add(x);
        *total
    }),
    failed = Some(|| failed().scan((), |_, x| x)),
);

weir_tck::publisher_verification!(
    take,
    |n: u64| source::from_iter(0u64..).take(n),
    failed = Some(|| failed().take(10)),
);

weir_tck::publisher_verification!(
    take_while,
    |n: u64| source::from_iter(0u64..).take_while(move |x| *x < n),
    failed = Some(|| failed().take_while(|_| true)),
);

weir_tck::publisher_verification!(
    skip,
    |n: u64| source::from_iter(0..n.saturating_add(5)).skip(5),
    failed = Some(|| failed().skip(1)),
);

weir_tck::publisher_verification!(
    map_async,
    |n: u64| source::from_iter(0..n).map_async(4, |x| async move { x }),
    failed = Some(|| failed().map_async(4, |x| async move { x })),
);

weir_tck::publisher_verification!(
    map_async_unordered,
    |n: u64| source::from_iter(0..n).map_async_unordered(4, |x| async move { x }),
    failed = Some(|| failed().map_async_unordered(4, |x| async move { x })),
);

/// `n` items split over three sources.
fn three_sources(n: u64) -> Vec<source::FromIter<std::ops::Range<u64>>> {
    let (a, b) = (n / 3, 2 * (n / 3));
    vec![
        source::from_iter(0..a),
        source::from_iter(a..b),
        source::from_iter(b..n),
    ]
}

weir_tck::publisher_verification!(
    merge,
    |n: u64| weir::operators::merge(three_sources(n)),
    failed = Some(|| weir::operators::merge(vec![failed(), failed()])),
);

weir_tck::publisher_verification!(
    merge_delay_error,
    |n: u64| weir::operators::merge_delay_error(three_sources(n)).lane_capacity(8),
    failed = Some(|| weir::operators::merge_delay_error(vec![failed()])),
);

weir_tck::publisher_verification!(
    priority_lanes,
    |n: u64| {
        weir::operators::PriorityLanes::new()
            .lane("high", 8, 16, source::from_iter(0..n / 2))
            .lane("low", 1, 64, source::from_iter(n / 2..n))
            .build()
            .unwrap()
    },
    failed = Some(|| {
        weir::operators::PriorityLanes::new()
            .lane("only", 1, 16, failed())
            .build()
            .unwrap()
    }),
);

weir_tck::publisher_verification!(
    batch,
    // Two items per batch: `n` batches.
    |n: u64| source::from_iter(0..n.saturating_mul(2)).batch(2, std::time::Duration::from_secs(1)),
    failed = Some(|| failed().batch(2, std::time::Duration::from_secs(1))),
);

weir_tck::publisher_verification!(
    buffer_drop_oldest,
    // Capacity above every element count the TCK asks for: nothing is dropped.
    |n: u64| source::from_iter(0..n).buffer(
        "tck",
        4_096,
        weir::runtime::queue::WhenFull::DropOldest
    ),
    failed = Some(|| failed().buffer("tck", 16, weir::runtime::queue::WhenFull::DropOldest)),
    max_elements = 4_096,
);

weir_tck::publisher_verification!(
    buffer_block,
    |n: u64| { source::from_iter(0..n).buffer("tck", 16, weir::runtime::queue::WhenFull::Wait,) },
    failed = Some(|| { failed().buffer("tck", 16, weir::runtime::queue::WhenFull::Wait,) }),
);

weir_tck::publisher_verification!(
    dedupe,
    // Every item twice in a row: the duplicates are dropped, `n` remain.
    |n: u64| source::from_iter((0..n.saturating_mul(2)).map(|x| x / 2)).dedupe(|x| *x, 16),
    failed = Some(|| failed().dedupe(|x| *x, 16)),
);

weir_tck::publisher_verification!(
    throttle,
    |n: u64| source::from_iter(0..n).throttle(
        1_000_000,
        1_000_000,
        weir::operators::ThrottleMode::Delay
    ),
    failed = Some(|| failed().throttle(10, 10, weir::operators::ThrottleMode::Delay)),
);

weir_tck::publisher_verification!(
    timeout,
    |n: u64| source::from_iter(0..n).timeout(
        std::time::Duration::from_secs(5),
        weir::operators::OnSilence::Fail
    ),
    failed = Some(|| failed().timeout(
        std::time::Duration::from_secs(5),
        weir::operators::OnSilence::Fail
    )),
);

weir_tck::publisher_verification!(
    retry,
    |n: u64| weir::operators::retry(
        move || source::from_iter(0..n),
        weir::operators::RetryPolicy::new(3)
    ),
    failed = Some(|| {
        let mut policy = weir::operators::RetryPolicy::new(2);
        policy.base_delay = std::time::Duration::from_millis(1);
        weir::operators::retry(failed, policy)
    }),
);

weir_tck::publisher_verification!(
    circuit_breaker,
    |n: u64| {
        let breaker = weir::operators::Breaker::new(weir::operators::BreakerConfig::default());
        source::from_iter(0..n).circuit_breaker(4, breaker, |x| async move { Ok::<u64, ()>(x) })
    },
    failed = Some(|| {
        let breaker = weir::operators::Breaker::new(weir::operators::BreakerConfig::default());
        failed().circuit_breaker(4, breaker, |x| async move { Ok::<u64, ()>(x) })
    }),
);

/// The single output of a fan-out built by `fan`.
fn only_output<F>(fan: F) -> weir::operators::FanOutput<u64>
where
    F: FnOnce() -> Result<Vec<weir::operators::FanOutput<u64>>, weir::runtime::Error>,
{
    fan().expect("a fan-out").remove(0)
}

weir_tck::publisher_verification!(
    broadcast_output,
    |n: u64| only_output(|| weir::operators::broadcast(
        source::from_iter(0..n),
        1,
        16,
        weir::operators::Lagging::Wait
    )),
    failed = Some(|| only_output(|| weir::operators::broadcast(
        failed(),
        1,
        16,
        weir::operators::Lagging::Wait
    ))),
);

weir_tck::publisher_verification!(
    balance_output,
    |n: u64| only_output(|| weir::operators::balance(source::from_iter(0..n), 1, 16)),
    failed = Some(|| only_output(|| weir::operators::balance(failed(), 1, 16))),
);

weir_tck::publisher_verification!(
    partition_output,
    |n: u64| only_output(|| weir::operators::partition(source::from_iter(0..n), 1, 16, |x| *x)),
    failed = Some(|| only_output(|| weir::operators::partition(failed(), 1, 16, |x| *x))),
);

weir_tck::publisher_verification!(
    route_output,
    |n: u64| only_output(|| weir::operators::route(source::from_iter(0..n), 1, 16, |_| 0)),
    failed = Some(|| only_output(|| weir::operators::route(failed(), 1, 16, |_| 0))),
);

weir_tck::publisher_verification!(
    zip,
    |n: u64| weir::operators::zip(source::from_iter(0..n), source::from_iter(0u64..))
        .map(|(a, _)| a),
    failed = Some(|| weir::operators::zip(failed(), source::from_iter(0u64..)).map(|(a, _)| a)),
);

weir_tck::publisher_verification!(
    flat_map,
    |n: u64| source::from_iter(0..n).flat_map(3, |x| source::from_iter([x])),
    failed = Some(|| failed().flat_map(3, |x| source::from_iter([x]))),
);

weir_tck::publisher_verification!(
    group_by,
    // Distinct keys, one item per group: `n` groups.
    |n: u64| source::from_iter(0..n).group_by(
        |x| *x,
        4,
        1,
        weir::operators::GroupOverflow::EmitOldest
    ),
    failed = Some(|| failed().group_by(|x| *x, 4, 1, weir::operators::GroupOverflow::EmitOldest)),
);

weir_tck::publisher_verification!(
    map_filter_through_boundary,
    |n: u64| {
        source::from_iter(0..n.saturating_mul(2))
            .filter(|x| x % 2 == 1)
            .map(|x| x / 2)
            .boundary(BoundaryConfig::new("tck", CAPACITY).unwrap())
    },
    failed = Some(|| boundary::boundary(
        failed().map(|x| x),
        BoundaryConfig::new("tck", CAPACITY).unwrap()
    )),
);

// Operators as processors: a relay in front of the chain (identity functions, as the TCK requires).

weir_tck::identity_processor_verification!(map_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| relay.map(|x| x))
});

weir_tck::identity_processor_verification!(filter_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| relay.filter(|_| true))
});

weir_tck::identity_processor_verification!(inspect_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| relay.inspect(|_| {}))
});

weir_tck::identity_processor_verification!(map_boundary_processor, |buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| {
        relay
            .map(|x| x)
            .boundary(BoundaryConfig::new("tck", buffer.max(1)).unwrap())
    })
});

weir_tck::identity_processor_verification!(map_async_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| relay.map_async(4, |x| async move { x }))
});

weir_tck::identity_processor_verification!(buffer_processor, |buffer: usize| {
    from_chain(move |relay: RelayPublisher<u64>| {
        relay.buffer("tck", buffer.max(1), weir::runtime::queue::WhenFull::Wait)
    })
});

weir_tck::identity_processor_verification!(throttle_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| {
        relay.throttle(1_000_000, 1_000_000, weir::operators::ThrottleMode::Delay)
    })
});

weir_tck::identity_processor_verification!(timeout_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| {
        relay.timeout(
            std::time::Duration::from_secs(5),
            weir::operators::OnSilence::Fail,
        )
    })
});

weir_tck::identity_processor_verification!(merge_processor, |_buffer: usize| {
    from_chain(|relay: RelayPublisher<u64>| weir::operators::merge(vec![relay]))
});

#[test]
fn every_rule_is_generated() {
    for generated in [
        map::RULES,
        filter::RULES,
        filter_map::RULES,
        inspect::RULES,
        scan::RULES,
        try_map::RULES,
        take::RULES,
        take_while::RULES,
        skip::RULES,
        map_async::RULES,
        map_async_unordered::RULES,
        merge::RULES,
        merge_delay_error::RULES,
        priority_lanes::RULES,
        batch::RULES,
        buffer_drop_oldest::RULES,
        buffer_block::RULES,
        dedupe::RULES,
        throttle::RULES,
        timeout::RULES,
        retry::RULES,
        circuit_breaker::RULES,
        zip::RULES,
        flat_map::RULES,
        group_by::RULES,
        broadcast_output::RULES,
        balance_output::RULES,
        partition_output::RULES,
        route_output::RULES,
        map_filter_through_boundary::RULES,
    ] {
        assert_eq!(generated, weir_tck::publisher::RULES);
    }
    let processor_rules = weir_tck::processor::rules();
    for generated in [
        map_processor::RULES,
        filter_processor::RULES,
        inspect_processor::RULES,
        map_boundary_processor::RULES,
        map_async_processor::RULES,
        buffer_processor::RULES,
        throttle_processor::RULES,
        timeout_processor::RULES,
        merge_processor::RULES,
    ] {
        assert_eq!(generated, processor_rules.as_slice());
    }
}
