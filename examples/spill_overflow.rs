//! The three faces of the spill log, end to end:
//! 1. a `SpillQueue` (what `Overflow::Spill` runs on) takes a burst 10x larger than its memory and
//!    hands it back in FIFO order;
//! 2. `spill_to_disk` writes a stream into a log, then the process "restarts";
//! 3. `replay` reads the log back on demand, acknowledging as it goes.
//!
//! `cargo run --release --example spill_overflow`

use weir::runtime::{Publisher, sink, source};
use weir::spill::{
    FsyncPolicy, Placement, SpillConfig, SpillLog, SpillQueue, replay, spill_to_disk,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = || {
        SpillConfig::new()
            .fsync(FsyncPolicy::EveryBatch)
            .segment_bytes(1 << 20)
            .budget_bytes(64 << 20)
    };

    // 1. Overflow: 1,000 items in memory, 10,000 pushed before anyone consumes.
    let mut queue = SpillQueue::<u64>::open(dir.path().join("queue"), 1_000, config())?;
    let mut spilled = 0;
    for order in 0..10_000u64 {
        if let Placement::Spilled(_) = queue.push(order).map_err(|refused| refused.error)? {
            spilled += 1;
        }
    }
    let mut drained = Vec::new();
    while queue.take_into(256, &mut drained)? > 0 {}
    assert!(drained.iter().copied().eq(0..10_000));
    let metrics = queue.metrics().snapshot();
    println!("queue: {spilled} of 10000 spilled, all back in order; {metrics:?}");

    // 2. Sink: a stream of orders written durably.
    let (sink, outcome) = spill_to_disk::<String>(dir.path().join("orders"), config())?;
    source::from_iter((0..5_000).map(|i| format!("order-{i}"))).subscribe(sink);
    let report = outcome.await?;
    println!(
        "sink: wrote {} records ({:?})",
        report.records, report.written
    );

    // 3. After a restart: replay on demand.
    let log = SpillLog::<String>::open(dir.path().join("orders"), config())?;
    let replayed = sink::collect(replay(log.clone())).await?;
    assert_eq!(replayed.len(), 5_000);
    assert_eq!(replayed[4_999], "order-4999");
    println!(
        "replay: {} records, acknowledged up to {}",
        replayed.len(),
        log.acked()
    );
    Ok(())
}
