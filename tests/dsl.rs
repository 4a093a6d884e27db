//! weir dsl: pipelines built, validated, run, observed, drained and aborted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dsl::{BufferKind, Pipeline, PipelineError, StageKind};
use weir::operators::PublisherExt;
use weir::prelude::*;

fn collector<T>() -> (Arc<Mutex<Vec<T>>>, impl FnMut(T) + Send + 'static)
where
    T: Send + 'static,
{
    let items = Arc::new(Mutex::new(Vec::new()));
    let sink = items.clone();
    (items, move |item| sink.lock().unwrap().push(item))
}

fn reject() -> Overflow {
    Overflow::Reject {
        retry_after: Duration::from_millis(10),
    }
}

// ---------------------------------------------------------------------------------------------
// Running to completion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_graph_runs_to_completion_with_the_exact_output() {
    let mut p = Pipeline::builder("shop");
    let (web_in, web) = p.ingress::<u64>(
        "web",
        64,
        Overflow::Block {
            timeout: Duration::from_secs(5),
        },
    );
    let replay = p.source("replay", source::from_iter(1_000..1_100u64));
    let batch = p.source("batch", source::from_iter(5_000..5_050u64));
    let interactive = p.merge_with("interactive", 16, [&web, &replay]);
    let lanes = p.priority_lanes("lanes", [(&interactive, 8, 32), (&batch, 1, 64)]);
    let priced = p.stage("price", &lanes, |ids| {
        ids.filter(|id| id % 10 != 3).map(|id| (id, id * 2))
    });
    let hop = p.boundary("hop", &priced, 32);
    let checked = p.stage_async("check", &hop, 4, |(id, amount)| async move {
        tokio::task::yield_now().await;
        (id, amount + 1)
    });
    let (stored, store) = collector();
    p.sink("store", &checked, store);
    let pipeline = p.build().unwrap();

    let mut running = pipeline.start().unwrap();
    assert!(running.live());
    for id in 0..200u64 {
        web_in.push(id).await.unwrap();
    }
    running.drain(Duration::from_secs(10)).await.unwrap();
    assert!(!running.live());

    let got = stored.lock().unwrap().clone();
    let expected = |ids: std::ops::Range<u64>| -> Vec<(u64, u64)> {
        ids.filter(|id| id % 10 != 3)
            .map(|id| (id, id * 2 + 1))
            .collect()
    };
    // Every item exactly once, each input's items in their order (merges interleave inputs).
    for (range, name) in [
        (0..200, "web"),
        (1_000..1_100, "replay"),
        (5_000..5_050, "batch"),
    ] {
        let mine: Vec<(u64, u64)> = got
            .iter()
            .copied()
            .filter(|(id, _)| range.contains(id))
            .collect();
        assert_eq!(mine, expected(range.clone()), "{name}");
    }
    assert_eq!(got.len(), 180 + 90 + 45);

    let snapshot = running.snapshot();
    assert_eq!(snapshot.stage("price").unwrap().items, 315);
    assert_eq!(snapshot.stage("store").unwrap().items, 315);
    assert_eq!(snapshot.stage("web").unwrap().items, 200);
    let web_buffer = snapshot.stage("web").unwrap().buffer.as_ref().unwrap();
    assert_eq!(web_buffer.counters.items_in, 200);
    assert_eq!(web_buffer.counters.capacity, 64);
    let lane = snapshot
        .edge("batch", "lanes")
        .unwrap()
        .buffer(BufferKind::Lane)
        .unwrap();
    assert_eq!(lane.counters.name, "lanes.batch");
    assert_eq!(lane.counters.items_out, 50);
    assert_eq!(lane.counters.capacity, 64);
    let hop = snapshot.stage("hop").unwrap().buffer.as_ref().unwrap();
    assert_eq!(hop.counters.items_out, 315);
    assert_eq!(hop.counters.depth, 0);
}

/// Fan-out and fan-in in one graph: a broadcast copies every order to an audit sink and to a
/// partition by shard; each shard runs behind its own boundary; a merge joins them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_fan_in_graph_runs_to_completion_with_the_exact_output() {
    let mut p = Pipeline::builder("shards");
    let orders = p.source("orders", source::from_iter(0..600u64));
    let copies = p.broadcast("copy", &orders, 2, 32, Lagging::Wait);
    let (audited, audit) = collector();
    p.sink("audit", &copies[0], audit);
    let shards = p.partition("shard", &copies[1], 3, 16, |id: &u64| id % 3);
    let mut worked = Vec::new();
    for (k, shard) in shards.iter().enumerate() {
        let hop = p.boundary(&format!("hop{k}"), shard, 8);
        worked.push(p.stage(&format!("work{k}"), &hop, move |ids| {
            ids.map(move |id| (k, id * 10))
        }));
    }
    let joined = p.merge("join", worked.iter());
    let (stored, store) = collector();
    p.sink("store", &joined, store);
    let pipeline = p.build().unwrap();

    let inventory = pipeline.inventory();
    let fan_out: Vec<(&str, u64)> = inventory
        .entries
        .iter()
        .filter(|e| e.kind == BufferKind::FanOut)
        .map(|e| (e.name.as_str(), e.capacity))
        .collect();
    assert_eq!(
        fan_out,
        [
            ("copy[0]", 32),
            ("copy[1]", 32),
            ("shard[0]", 16),
            ("shard[1]", 16),
            ("shard[2]", 16)
        ]
    );
    let dot = pipeline.describe().to_dot();
    assert!(
        dot.contains("\"shard\" -> \"hop2\" [label=\"u64\\nout 2 cap 16\"];"),
        "{dot}"
    );

    let mut running = pipeline.start().unwrap();
    (&mut running).await.unwrap();

    assert_eq!(*audited.lock().unwrap(), (0..600).collect::<Vec<u64>>());
    let got = stored.lock().unwrap().clone();
    assert_eq!(got.len(), 600);
    // Every order once, on the shard its key picked, each shard's items in order.
    let mut seen: Vec<u64> = got.iter().map(|&(_, amount)| amount / 10).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..600).collect::<Vec<u64>>());
    let mut shard_of_key = [None; 3];
    for shard in 0..3 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|&&(k, _)| k == shard)
            .map(|&(_, amount)| amount / 10)
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "shard {shard} in order"
        );
        for id in &mine {
            let key = (id % 3) as usize;
            assert_eq!(
                *shard_of_key[key].get_or_insert(shard),
                shard,
                "one shard per key"
            );
        }
    }

    let snapshot = running.snapshot();
    assert_eq!(snapshot.stage("copy").unwrap().items, 600);
    assert_eq!(snapshot.stage("shard").unwrap().items, 600);
    assert_eq!(snapshot.stage("audit").unwrap().items, 600);
    let edge = snapshot.edge("copy", "audit").unwrap();
    assert_eq!(edge.output, 0);
    let queue = edge.buffer(BufferKind::FanOut).unwrap();
    assert_eq!(queue.counters.name, "copy[0]");
    assert_eq!(
        (queue.counters.items_out, queue.counters.capacity),
        (600, 32)
    );
    let per_shard: u64 = (0..3)
        .map(|k| {
            let edge = snapshot.edge("shard", &format!("hop{k}")).unwrap();
            assert_eq!(edge.output, k);
            edge.buffer(BufferKind::FanOut).unwrap().counters.items_out
        })
        .sum();
    assert_eq!(per_shard, 600);
}

/// Balance spreads work over two async workers; every item is processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_spreads_work_and_loses_nothing() {
    let mut p = Pipeline::builder("workers");
    let (jobs_in, jobs) = p.ingress::<u64>(
        "jobs",
        64,
        Overflow::Block {
            timeout: Duration::from_secs(5),
        },
    );
    let workers = p.balance("spread", &jobs, 2, 4);
    let done: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(k, worker)| {
            p.stage_async(&format!("worker{k}"), worker, 2, move |id| async move {
                tokio::task::yield_now().await;
                (k, id)
            })
        })
        .collect();
    let joined = p.merge("join", done.iter());
    let (stored, store) = collector();
    p.sink("store", &joined, store);
    let running = p.build().unwrap().start().unwrap();
    for id in 0..500u64 {
        jobs_in.push(id).await.unwrap();
    }
    // The pipeline does not keep the ingress open: dropping the last handle completes it.
    drop(jobs_in);
    running.await.unwrap();
    let got = stored.lock().unwrap().clone();
    let mut ids: Vec<u64> = got.iter().map(|&(_, id)| id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..500).collect::<Vec<u64>>());
}

/// Two outputs of one fan-out may feed one fan-in stage: lanes are named per output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lanes_fed_by_two_outputs_of_one_partition() {
    let mut p = Pipeline::builder("split");
    let numbers = p.source("numbers", source::from_iter(0..200u64));
    let parts = p.partition("split", &numbers, 2, 8, |n: &u64| n % 2);
    let joined = p.priority_lanes("prio", [(&parts[0], 3, 16), (&parts[1], 1, 16)]);
    let (stored, store) = collector();
    p.sink("store", &joined, store);
    let mut running = p.build().unwrap().start().unwrap();
    (&mut running).await.unwrap();
    let mut got = stored.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<u64>>());
    let snapshot = running.snapshot();
    let lanes: Vec<(&str, u64)> = snapshot
        .buffers()
        .filter(|(_, b)| b.kind == BufferKind::Lane)
        .map(|(_, b)| (b.counters.name.as_str(), b.counters.items_out))
        .collect();
    // Keys hash to outputs with a random seed: the split between the two varies, the total not.
    let names: Vec<&str> = lanes.iter().map(|&(name, _)| name).collect();
    assert_eq!(names, ["prio.split[0]", "prio.split[1]"]);
    assert_eq!(lanes.iter().map(|&(_, n)| n).sum::<u64>(), 200);
}

/// A spilling ingress in front of a stalled sink: what does not fit in memory goes to disk, comes
/// back in order when the sink resumes, and drain delivers all of it. Spill counters are in the
/// stage's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilling_ingress_drains_what_it_spilled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 8, SpillConfig::new()).unwrap();
    let mut p = Pipeline::builder("durable");
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let (orders_in, orders) = p.ingress_spilling("orders", store, full);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let shut = gate.clone();
    let (stored, store) = collector();
    let store = Arc::new(Mutex::new(store));
    p.sink_async("store", &orders, 1, move |id| {
        let gate = shut.clone();
        let store = store.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            (store.lock().unwrap())(id);
        }
    });
    let pipeline = p.build().unwrap();
    assert!(
        pipeline
            .describe()
            .to_dot()
            .contains("ingress 8 (spill, reject when full)")
    );
    let mut running = pipeline.start().unwrap();

    let (mut enqueued, mut spilled) = (0, 0);
    for id in 0..1_000u64 {
        match orders_in.push(id).await.unwrap() {
            Pushed::Spilled => spilled += 1,
            _ => enqueued += 1,
        }
    }
    assert_eq!(enqueued + spilled, 1_000);
    assert!(spilled >= 900, "{spilled}");
    let snapshot = running.snapshot();
    let orders = snapshot.stage("orders").unwrap();
    // Written records are counted per batch written; the rest wait in the log's write batch.
    assert!(orders.spill.as_ref().unwrap().spilled_records <= spilled);
    assert!(orders.buffer.as_ref().unwrap().counters.depth >= spilled);

    gate.add_permits(10_000);
    running.drain(Duration::from_secs(20)).await.unwrap();
    assert_eq!(*stored.lock().unwrap(), (0..1_000).collect::<Vec<u64>>());
    let snapshot = running.snapshot();
    let spill = snapshot.stage("orders").unwrap().spill.clone().unwrap();
    assert_eq!(spill.spilled_records, spilled);
    assert_eq!(spill.replayed_records, spilled);
    assert_eq!(
        spill.acked_records, spilled,
        "every spilled record acknowledged"
    );
    assert_eq!(snapshot.stage("store").unwrap().items, 1_000);
}

#[tokio::test]
async fn the_failing_stage_is_named() {
    let mut p = Pipeline::builder("etl");
    let numbers = p.source("numbers", source::from_iter(0..100u32));
    let parsed = p.stage("parse", &numbers, |items| {
        items.map(|x| {
            assert!(x != 7, "bad record {x}");
            x
        })
    });
    let hop = p.boundary("hop", &parsed, 8);
    p.sink("store", &hop, |_| {});
    let error = p.build().unwrap().start().unwrap().await.unwrap_err();
    assert_eq!(error.stage(), Some("parse"));
    assert_eq!(
        error.to_string(),
        "pipeline `etl`: stage `parse` failed: panicked: bad record 7 (in `map`)"
    );
    assert!(matches!(error, PipelineError::Failed { .. }));

    let mut p = Pipeline::builder("etl");
    let numbers = p.source("numbers", source::from_iter(0..100u32));
    p.sink("store", &numbers, |x| assert!(x < 3, "disk full"));
    let error = p.build().unwrap().start().unwrap().await.unwrap_err();
    assert_eq!(error.stage(), Some("store"));
    assert_eq!(
        error.to_string(),
        "pipeline `etl`: stage `store` failed: panicked: disk full"
    );
}

/// Producers push as fast as they can while the pipeline drains: every item offered is either
/// processed by the sink or handed back to its producer (rejected while full, or closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_loses_nothing_accepted() {
    let mut p = Pipeline::builder("load");
    let (orders_in, orders) = p.ingress::<u64>("orders", 128, reject());
    let parsed = p.stage("parse", &orders, |ids| ids.map(|id| id + 1));
    let hop = p.boundary("hop", &parsed, 64);
    let processed = Arc::new(AtomicU64::new(0));
    let count = processed.clone();
    p.sink_async("store", &hop, 8, move |_| {
        let count = count.clone();
        async move {
            tokio::task::yield_now().await;
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut running = p.build().unwrap().start().unwrap();

    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let handle = orders_in.clone();
            tokio::spawn(async move {
                let (mut offered, mut refused, mut closed) = (0u64, 0u64, 0u64);
                loop {
                    offered += 1;
                    match handle.push(producer * 1_000_000 + offered).await {
                        Ok(_) => {}
                        Err(error @ PushError::Closed { .. }) => {
                            let _item: u64 = error.into_inner();
                            closed += 1;
                            break;
                        }
                        Err(error) => {
                            let _item: u64 = error.into_inner();
                            refused += 1;
                            tokio::task::yield_now().await;
                        }
                    }
                }
                (offered, refused, closed)
            })
        })
        .collect();
    drop(orders_in);
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.drain(Duration::from_secs(10)).await.unwrap();

    let (mut offered, mut handed_back) = (0, 0);
    for producer in producers {
        let (o, r, c) = producer.await.unwrap();
        assert_eq!(c, 1, "each producer stops at its first closed push");
        offered += o;
        handed_back += r + c;
    }
    let processed = processed.load(Ordering::Relaxed);
    assert!(processed > 0);
    assert_eq!(offered, processed + handed_back);
    let snapshot = running.snapshot();
    let orders = snapshot.stage("orders").unwrap().buffer.as_ref().unwrap();
    assert_eq!(orders.counters.items_in, processed);
    assert_eq!(orders.counters.depth, 0);
    assert_eq!(snapshot.stage("store").unwrap().items, processed);
    assert_eq!(
        orders.counters.rejected["full"] + orders.counters.rejected["closed"],
        handed_back
    );
}

#[tokio::test(start_paused = true)]
async fn abort_stops_an_endless_pipeline_and_drain_has_a_deadline() {
    let mut p = Pipeline::builder("endless");
    let ticks = p.source("ticks", source::from_iter(0u64..));
    let hop = p.boundary("hop", &ticks, 16);
    p.sink_async("store", &hop, 2, |_| {
        tokio::time::sleep(Duration::from_millis(1))
    });
    let mut running = p.build().unwrap().start().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(running.live());
    running.abort();
    let error = (&mut running).await.unwrap_err();
    assert_eq!(error.to_string(), "pipeline `endless` was aborted");
    assert!(!running.live());

    let mut p = Pipeline::builder("endless");
    let ticks = p.source("ticks", source::from_iter(0u64..));
    let hop = p.boundary("hop", &ticks, 16);
    p.sink_async("store", &hop, 2, |_| {
        tokio::time::sleep(Duration::from_millis(1))
    });
    let mut running = p.build().unwrap().start().unwrap();
    let error = running.drain(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "pipeline `endless` did not drain within 50ms and was aborted"
    );
    assert!(matches!(error, PipelineError::DrainTimedOut { .. }));
}

// ---------------------------------------------------------------------------------------------
// Readiness

/// 2,000 items/s offered to a sink that takes 1,000/s: the ingress fills, rejects, and its
/// backlog needs longer than the budget; when the load stops and the backlog drains, the
/// pipeline is ready again.
#[tokio::test(start_paused = true)]
async fn ready_flips_under_sustained_overload_and_back() {
    let mut p = Pipeline::builder("flash-sale");
    p.recovery_budget(Duration::from_millis(50))
        .rate_window(Duration::from_millis(100));
    let (orders_in, orders) = p.ingress::<u64>("orders", 100, reject());
    p.sink_async("store", &orders, 1, |_| {
        tokio::time::sleep(Duration::from_millis(1))
    });
    let mut running = p.build().unwrap().start().unwrap();
    assert!(running.ready().ready, "{}", running.ready());

    // The pipeline does not keep an ingress open: hold a handle so that it runs until drained.
    let _open = orders_in.clone();
    let producer = tokio::spawn(async move {
        let mut rejected = 0;
        for tick in 0..500u64 {
            for k in 0..2 {
                if orders_in.push(tick * 2 + k).await.is_err() {
                    rejected += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        rejected
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readiness = running.ready();
    assert!(!readiness.ready);
    assert_eq!(readiness.reasons.len(), 2, "{readiness}");
    assert!(
        readiness.reasons[0].starts_with("ingress `orders` rejected "),
        "{readiness}"
    );
    assert!(
        readiness.reasons[1].starts_with("ingress `orders`: a backlog of "),
        "{readiness}"
    );
    assert!(
        readiness.reasons[1].ends_with("(budget 50ms)"),
        "{readiness}"
    );
    let snapshot = running.snapshot();
    let orders = snapshot.stage("orders").unwrap().buffer.as_ref().unwrap();
    let drain_rate = orders.out_per_sec.unwrap();
    assert!((800.0..=1_200.0).contains(&drain_rate), "{drain_rate}");
    assert!(orders.backlog_secs.unwrap() > 0.05);

    assert!(producer.await.unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readiness = running.ready();
    assert!(readiness.ready, "{readiness}");
    assert_eq!(readiness.to_string(), "ready");
    running.drain(Duration::from_secs(1)).await.unwrap();
    assert_eq!(running.ready().reasons, vec!["the pipeline is not running"]);
}

// ---------------------------------------------------------------------------------------------
// Pictures and inventory

fn small_graph() -> weir::dsl::PipelineBuilder {
    let mut p = Pipeline::builder("orders");
    let (_web_in, web) = p.ingress::<u64>("web", 1_024, reject());
    let parsed = p.stage("parse", &web, |ids| ids.map(|id| id.to_string()));
    p.item_size(&parsed, 64);
    let hop = p.boundary("hop", &parsed, 256);
    let replay = p.source("replay", source::from_iter(["r1".to_string()]));
    let lanes = p.priority_lanes("lanes", [(&hop, 8, 64), (&replay, 1, 16)]);
    let enriched = p.stage_async("enrich", &lanes, 4, |order: String| async move {
        order.len() as u32
    });
    p.sink("store", &enriched, |_| {});
    p
}

#[test]
fn dot_of_a_small_graph_matches_the_golden_file() {
    let dot = small_graph().build().unwrap().describe().to_dot();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/dsl_small.dot");
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(path, &dot).unwrap();
    }
    let golden = std::fs::read_to_string(path).expect("golden file (WEIR_BLESS=1 writes it)");
    assert_eq!(dot, golden);
}

#[test]
fn mermaid_of_a_small_graph() {
    let mermaid = small_graph().build().unwrap().describe().to_mermaid();
    let lines: Vec<&str> = mermaid.lines().collect();
    assert_eq!(lines[0], "flowchart LR");
    assert_eq!(lines[1], "  s0[/\"web<br/>ingress 1024 (reject)\"/]");
    assert!(
        lines.contains(&"  s2 -->|\"String<br/>cap 256<br/>lane w8 cap 64\"| s4"),
        "{mermaid}"
    );
    assert!(
        lines.contains(&"  s0 -->|\"u64<br/>cap 1024\"| s1"),
        "{mermaid}"
    );
}

#[test]
fn inventory_of_a_small_graph_states_capacities_and_memory() {
    let inventory = small_graph().build().unwrap().inventory();
    let rows: Vec<(&str, BufferKind, u64, u64, u64)> = inventory
        .entries
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.kind,
                e.capacity,
                e.item_bytes,
                e.max_bytes,
            )
        })
        .collect();
    let string = std::mem::size_of::<String>() as u64;
    assert_eq!(
        rows,
        vec![
            ("web", BufferKind::Ingress, 1_024, 8, 8_192),
            ("hop", BufferKind::Boundary, 256, 64, 16_384),
            ("lanes.hop", BufferKind::Lane, 64, 64, 4_096),
            ("lanes.replay", BufferKind::Lane, 16, string, 16 * string),
            ("enrich.prefetch", BufferKind::Prefetch, 4, 64, 256),
            ("enrich.in_flight", BufferKind::InFlight, 4, 64, 256),
        ]
    );
    assert_eq!(inventory.total_capacity, 1_024 + 256 + 64 + 16 + 4 + 4);
    assert_eq!(
        inventory.total_bytes,
        8_192 + 16_384 + 4_096 + 16 * string + 256 + 256
    );
    let table = inventory.to_string();
    assert!(
        table.starts_with("inventory of pipeline `orders`\n"),
        "{table}"
    );
    assert!(
        table.lines().last().unwrap().starts_with("total"),
        "{table}"
    );
}

/// The picture of a running pipeline shows the live depth of each buffered edge, and the
/// snapshot serialises (what a UI or an HTTP endpoint would serve).
#[tokio::test(start_paused = true)]
async fn live_picture_and_snapshot() {
    let mut p = Pipeline::builder("live");
    let (web_in, web) = p.ingress::<u64>("web", 8, reject());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let shut = gate.clone();
    p.sink_async("store", &web, 1, move |_| {
        let gate = shut.clone();
        async move {
            let _permit = gate.acquire().await;
        }
    });
    let mut running = p.build().unwrap().start().unwrap();
    for id in 0..6 {
        web_in.push(id).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let snapshot = running.snapshot();
    let depth = snapshot
        .stage("web")
        .unwrap()
        .buffer
        .as_ref()
        .unwrap()
        .counters
        .depth;
    assert!((4..=6).contains(&depth), "{depth}");
    let dot = running.describe().to_dot();
    assert!(
        dot.contains(&format!(
            "\"web\" -> \"store\" [label=\"u64\\n{depth}/8\"];"
        )),
        "{dot}"
    );
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["pipeline"], "live");
    assert_eq!(json["stages"][0]["kind"], "ingress");
    assert_eq!(json["stages"][0]["buffer"]["counters"]["capacity"], 8);
    assert_eq!(json["edges"][0]["from"], "web");
    assert_eq!(snapshot.stages[1].kind, StageKind::Sink);

    gate.add_permits(100);
    running.drain(Duration::from_secs(1)).await.unwrap();
    assert_eq!(running.snapshot().stage("store").unwrap().items, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_build_code_panics_fails_the_pipeline_naming_it() {
    let mut p = Pipeline::builder("broken");
    let numbers = p.source("numbers", source::from_iter(0..10u64));
    let bug = AtomicU64::new(1);
    let kept = p.stage("work", &numbers, move |xs| {
        if bug.load(Ordering::Relaxed) == 1 {
            panic!("a bug in the stage's wiring");
        }
        xs
    });
    let (_, sink) = collector();
    p.sink("out", &kept, sink);
    // `start` runs the stages' build code: a panic there is the pipeline's failure, not an
    // unwind out of `start`.
    let running = p.build().unwrap().start().unwrap();
    match running.await {
        Err(PipelineError::Failed { stage, error, .. }) => {
            assert_eq!(stage, "work");
            assert_eq!(
                error.to_string(),
                "stage `work`: panicked: a bug in the stage's wiring"
            );
        }
        other => panic!("expected the stage's failure, got {other:?}"),
    }
}
