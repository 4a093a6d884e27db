//! weir dsl: a running pipeline's counters reach a `metrics` recorder under the documented names.
//!
//! Its own test binary: the recorder is process-global.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use weir::prelude::*;

fn recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

/// The sample of `name` whose labels include every `labels` pair, from the Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exported_under_the_documented_names() {
    let prometheus = recorder();
    let mut p = Pipeline::builder("exported");
    let (orders_in, orders) = p.ingress::<u64>(
        "orders",
        4,
        Overflow::Reject {
            retry_after: Duration::from_millis(10),
        },
    );
    let copies = p.broadcast("copy", &orders, 2, 8, Lagging::Wait);
    // Small lanes: 200 pushes overflow what the graph can hold (about 30 items).
    let joined = p.merge_with("join", 1, copies.iter());
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let shut = gate.clone();
    p.sink_async("store", &joined, 1, move |_| {
        let gate = shut.clone();
        async move { gate.acquire().await.unwrap().forget() }
    });
    let mut running = p.build().unwrap().start().unwrap();
    // Lanes are counted once the sink has subscribed (in its own task).
    let lanes_counted = |s: &weir::dsl::PipelineSnapshot| {
        s.edges
            .iter()
            .filter(|e| e.to == "join")
            .all(|e| e.buffers.len() == 2)
    };
    while !lanes_counted(&running.snapshot()) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // The sink is stalled: the queues fill, then the ingress rejects.
    let mut rejected = 0;
    for id in 0..200u64 {
        if orders_in.push(id).await.is_err() {
            rejected += 1;
        }
        tokio::task::yield_now().await;
    }
    assert!(rejected > 0);
    running.export_metrics();
    let text = prometheus.render();
    let pipeline = ("pipeline", "exported");
    let orders_buffer = [pipeline, ("stage", "orders"), ("buffer", "orders")];
    assert_eq!(
        sample(&text, "weir_buffer_capacity", &orders_buffer),
        Some(4.0),
        "{text}"
    );
    // Timing decides how many the broadcast took in already; never more than the capacity.
    let depth = sample(&text, "weir_buffer_depth", &orders_buffer).unwrap();
    assert!((0.0..=4.0).contains(&depth), "{text}");
    let full = [pipeline, ("stage", "orders"), ("reason", "full")];
    assert_eq!(
        sample(&text, "weir_buffer_rejected_total", &full),
        Some(f64::from(rejected)),
        "{text}"
    );
    assert!(
        sample(&text, "weir_pipeline_ready", &[pipeline]).is_some(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weir_pipeline_live", &[pipeline]),
        Some(1.0),
        "{text}"
    );
    let fan_out = [pipeline, ("buffer", "copy[1]"), ("kind", "fan_out")];
    assert!(
        sample(&text, "weir_buffer_depth", &fan_out).is_some(),
        "{text}"
    );
    let lane = [pipeline, ("buffer", "join.copy[1]"), ("kind", "lane")];
    assert!(
        sample(&text, "weir_buffer_items_in_total", &lane).is_some(),
        "{text}"
    );
    assert!(sample(&text, "weir_buffer_oldest_item_age_seconds", &orders_buffer).is_some());

    gate.add_permits(1_000);
    drop(orders_in);
    (&mut running).await.unwrap();
    running.export_metrics();
    let text = prometheus.render();
    let accepted = 200 - rejected;
    let store = [pipeline, ("stage", "store"), ("kind", "sink")];
    assert_eq!(
        sample(&text, "weir_stage_items_total", &store),
        // Each accepted order reaches the sink once per broadcast output.
        Some(f64::from(2 * accepted)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weir_buffer_items_out_total", &orders_buffer),
        Some(f64::from(accepted))
    );
    assert_eq!(sample(&text, "weir_pipeline_live", &[pipeline]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_counters_are_exported() {
    let prometheus = recorder();
    let dir = tempfile::tempdir().unwrap();
    let store = SpillQueue::<u64>::open(dir.path(), 2, SpillConfig::new()).unwrap();
    let mut p = Pipeline::builder("spilled");
    let full = SpillFull::Reject {
        retry_after: Duration::from_millis(10),
    };
    let (orders_in, orders) = p.ingress_spilling("orders", store, full);
    p.sink("store", &orders, drop);
    let pipeline = p.build().unwrap();
    // Pushed before the start: nothing consumes yet, so all but two go to disk.
    for id in 0..50u64 {
        orders_in.try_push(id).unwrap();
    }
    let mut running = pipeline.start().unwrap();
    drop(orders_in);
    (&mut running).await.unwrap();
    running.export_metrics();
    let text = prometheus.render();
    let stage = [("pipeline", "spilled"), ("stage", "orders")];
    assert_eq!(
        sample(&text, "weir_spill_records_total", &stage),
        Some(48.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weir_spill_replayed_total", &stage),
        Some(48.0),
        "{text}"
    );
    assert!(sample(&text, "weir_spill_budget_bytes", &stage).unwrap() > 0.0);
    assert!(sample(&text, "weir_spill_segments", &stage).is_some());
    assert_eq!(
        sample(&text, "weir_spill_corruptions_total", &stage),
        Some(0.0)
    );
}

/// Every `weir_` series carries help text (Prometheus's `# HELP`; `promtool check metrics`
/// refuses a scrape without it). It used to have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_has_help_text() {
    let prometheus = recorder();
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pipeline::builder("described");
    let store = SpillQueue::<u64>::open(dir.path(), 4, SpillConfig::new()).unwrap();
    let (orders_in, orders) = p.ingress_spilling(
        "orders",
        store,
        SpillFull::Reject {
            retry_after: Duration::from_millis(10),
        },
    );
    let kept = p.stage("keep", &orders, |o| o.filter(|x| x % 2 == 0));
    p.sink("store", &kept, |_| {});
    let mut running = p.build().unwrap().start().unwrap();
    for order in 0..100 {
        orders_in.push(order).await.unwrap();
    }
    running.drain(Duration::from_secs(10)).await.unwrap();
    running.export_metrics();
    let text = prometheus.render();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .filter(|name| name.starts_with("weir_"))
        .collect();
    assert!(typed.len() >= 20, "{text}");
    for name in typed {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help text"
        );
    }
}
