//! A producer ten times faster than its consumer, through an ingress with an explicit overflow policy.
//!
//! ```text
//! cargo run --release --example overload -- --items 1000000 --policy reject
//! ```
//!
//! Policies: `block`, `reject`, `drop-oldest`, `drop-newest` (weir), and `unbounded` (a plain unbounded
//! tokio channel: the failure mode weir exists to prevent). At the end it prints what happened to every
//! item; the outcomes add up to `--items`. Peak RSS is read from /proc (Linux).

use std::time::{Duration, Instant};

use weir::prelude::*;

/// A checkout event: 64 bytes, so memory growth is easy to see.
#[derive(Debug, Clone, Copy)]
struct Event {
    id: u64,
    _payload: [u8; 56],
}

#[derive(Debug, Clone)]
struct Options {
    items: u64,
    policy: String,
    capacity: usize,
    producer_ns: u64,
    consumer_ns: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        items: 1_000_000,
        policy: "reject".into(),
        capacity: 10_000,
        producer_ns: 100,
        consumer_ns: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--items" => options.items = number(value()?)?,
            "--policy" => options.policy = value()?,
            "--capacity" => options.capacity = number(value()?)? as usize,
            "--producer-ns" => options.producer_ns = number(value()?)?,
            "--consumer-ns" => options.consumer_ns = number(value()?)?,
            "--help" | "-h" => {
                return Err("usage: overload [--items N] [--policy block|reject|drop-oldest|drop-newest|unbounded] \
                            [--capacity N] [--producer-ns NS] [--consumer-ns NS]"
                    .into());
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(options)
}

/// Busy work standing in for real per-item cost.
fn work(nanos: u64) {
    let until = Instant::now() + Duration::from_nanos(nanos);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[derive(Debug, Default)]
struct Outcomes {
    delivered: u64,
    rejected: u64,
    timed_out: u64,
    dropped_newest: u64,
    evicted_oldest: u64,
}

async fn run_weir(options: &Options, overflow: Overflow) -> Result<Outcomes, Error> {
    let config = IngressConfig::new("checkout", options.capacity, overflow)?;
    let (handle, events) = ingress::bounded::<Event>(config);
    let metrics = handle.metrics();
    let consumer_ns = options.consumer_ns;
    // The consumer runs behind a boundary, in its own task.
    let consumer = tokio::spawn(events.boundary(BoundaryConfig::new("orders", 1024)?).fold(
        (0u64, None),
        move |(delivered, last), event: Event| {
            work(consumer_ns);
            // FIFO: whatever the policy sheds, what is delivered stays in order.
            assert!(last.is_none_or(|last| last < event.id), "out of order");
            *last = Some(event.id);
            *delivered += 1;
        },
    ));
    let mut outcomes = Outcomes::default();
    for id in 0..options.items {
        work(options.producer_ns);
        let event = Event {
            id,
            _payload: [0; 56],
        };
        match handle.push(event).await {
            Ok(_) => {}
            Err(PushError::Rejected { .. }) => outcomes.rejected += 1,
            Err(PushError::Timeout { .. }) => outcomes.timed_out += 1,
            Err(PushError::Dropped { .. }) => outcomes.dropped_newest += 1,
            Err(error) => return Err(Error::msg(error)),
        }
    }
    drop(handle); // close: the consumer finishes what was accepted
    outcomes.delivered = consumer.await.map_err(Error::msg)??.0;
    outcomes.evicted_oldest = metrics.shed(weir::runtime::metrics::Reason::DroppedOldest);
    println!("ingress metrics: {}", describe(&metrics.snapshot()));
    Ok(outcomes)
}

fn describe(snapshot: &weir::runtime::metrics::BufferCounts) -> String {
    format!(
        "in={} out={} depth={} rejected={:?} dropped={:?} producer_wait={:.0}ms",
        snapshot.items_in,
        snapshot.items_out,
        snapshot.depth,
        snapshot.rejected,
        snapshot.dropped,
        snapshot.producer_wait_ms
    )
}

async fn run_unbounded(options: &Options) -> Outcomes {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let consumer_ns = options.consumer_ns;
    let consumer = tokio::spawn(async move {
        let mut delivered = 0;
        while let Some(_event) = receiver.recv().await {
            work(consumer_ns);
            delivered += 1;
        }
        delivered
    });
    for id in 0..options.items {
        work(options.producer_ns);
        let _ = sender.send(Event {
            id,
            _payload: [0; 56],
        });
    }
    drop(sender);
    Outcomes {
        delivered: consumer.await.unwrap_or(0),
        ..Outcomes::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let overflow = match options.policy.as_str() {
        "block" => Some(Overflow::Block {
            timeout: Duration::from_secs(1),
        }),
        "reject" => Some(Overflow::Reject {
            retry_after: Duration::from_millis(100),
        }),
        "drop-oldest" => Some(Overflow::DropOldest),
        "drop-newest" => Some(Overflow::DropNewest),
        "unbounded" => None,
        other => {
            eprintln!(
                "unknown policy `{other}`: block, reject, drop-oldest, drop-newest or unbounded"
            );
            std::process::exit(2);
        }
    };
    println!(
        "overload: {} items, producer {} ns/item, consumer {} ns/item, policy {}, capacity {}",
        options.items, options.producer_ns, options.consumer_ns, options.policy, options.capacity
    );
    let started = Instant::now();
    let outcomes = match overflow {
        Some(overflow) => match run_weir(&options, overflow).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                eprintln!("pipeline failed: {error}");
                std::process::exit(1);
            }
        },
        None => run_unbounded(&options).await,
    };
    let accounted = outcomes.delivered
        + outcomes.rejected
        + outcomes.timed_out
        + outcomes.dropped_newest
        + outcomes.evicted_oldest;
    println!(
        "outcomes: delivered={} rejected={} timed_out={} dropped_newest={} evicted_oldest={} total={} (items={})",
        outcomes.delivered,
        outcomes.rejected,
        outcomes.timed_out,
        outcomes.dropped_newest,
        outcomes.evicted_oldest,
        accounted,
        options.items
    );
    println!(
        "elapsed: {:.2}s, peak RSS: {}",
        started.elapsed().as_secs_f64(),
        peak_rss_mib().map_or("unknown".into(), |mib| format!("{mib:.1} MiB"))
    );
    if accounted != options.items {
        eprintln!("BUG: outcomes do not add up to the items pushed");
        std::process::exit(1);
    }
}
