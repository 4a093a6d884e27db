//! The load generator: a real HTTP client over loopback with open-loop arrivals (the offered rate
//! does not fall when the server slows), a mix of checkouts, imports and bad requests, and
//! `Retry-After` honoured with jitter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::order::Order;
use crate::stats::Rng;

/// Orders in one import request.
const IMPORT_SIZE: usize = 20;
/// Requests on the wire at most (the client's connections); other arrivals wait their turn.
const CONNECTIONS: usize = 256;
/// Arrivals pending at most (sending, waiting to send, or waiting to retry): beyond it they are
/// counted as not sent (`client_overflow`), so the client's memory stays bounded.
const MAX_OUTSTANDING: usize = 50_000;
/// Attempts per request, the first included.
const MAX_ATTEMPTS: u32 = 4;

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct LoadSettings {
    /// Orders per second offered.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    /// Share of the orders sent as imports (the rest are checkouts).
    pub(crate) import_share: f64,
    /// One checkout request in this many is malformed JSON, and one import in this many is too
    /// large: the service must refuse them (400 / 413) and count them.
    pub(crate) bad_every: u64,
    /// Prefix of the idempotency keys (unique per run).
    pub(crate) key_prefix: String,
}

/// What happened, counted by the client.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    /// Orders the generator offered (good ones; bad requests are counted apart).
    pub(crate) offered: u64,
    /// Orders answered 202 (possibly after retries).
    pub(crate) accepted: u64,
    /// Orders never accepted: refused on every attempt, or not sent at all.
    pub(crate) gave_up: u64,
    /// Arrivals not sent because `MAX_OUTSTANDING` were pending.
    pub(crate) client_overflow: u64,
    /// Retries made after a 429 / 503.
    pub(crate) retries: u64,
    /// Bad requests sent on purpose.
    pub(crate) bad_sent: u64,
    /// Responses by status code (every attempt).
    pub(crate) responses: BTreeMap<u16, u64>,
    /// 429 / 503 responses without a `Retry-After` header (must stay 0).
    pub(crate) missing_retry_after: u64,
    /// Requests that failed without a response (connection errors).
    pub(crate) transport_errors: u64,
    /// The keys of the accepted orders.
    pub(crate) accepted_keys: Vec<String>,
}

#[derive(Default)]
struct Tally {
    offered: AtomicU64,
    accepted: AtomicU64,
    gave_up: AtomicU64,
    client_overflow: AtomicU64,
    retries: AtomicU64,
    bad_sent: AtomicU64,
    missing_retry_after: AtomicU64,
    transport_errors: AtomicU64,
    responses: Mutex<BTreeMap<u16, u64>>,
    accepted_keys: Mutex<Vec<String>>,
}

struct Load {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    rng: Rng,
    tally: Tally,
    outstanding: AtomicUsize,
    connections: tokio::sync::Semaphore,
}

/// Drives `settings.rate` orders/s at the service on `addr` for `settings.duration`, then waits
/// for the requests in flight (and their retries).
pub(crate) async fn run(addr: SocketAddr, settings: LoadSettings) -> LoadReport {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let load = Arc::new(Load {
        client: Client::builder(TokioExecutor::new()).build(connector),
        addr,
        rng: Rng::new(0x5eed ^ settings.rate),
        tally: Tally::default(),
        outstanding: AtomicUsize::new(0),
        connections: tokio::sync::Semaphore::new(CONNECTIONS),
    });
    let checkout_rate = settings.rate as f64 * (1.0 - settings.import_share);
    let import_rate = settings.rate as f64 * settings.import_share / IMPORT_SIZE as f64;
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut checkouts_sent, mut imports_sent) = (0u64, 0u64);
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < settings.duration {
        ticks.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        // Arrivals are due by the clock, not by the answers: open loop.
        while (checkouts_sent as f64) < checkout_rate * elapsed {
            checkouts_sent += 1;
            let n = checkouts_sent;
            let bad = settings.bad_every > 0 && n % settings.bad_every == 0;
            let orders = if bad {
                Vec::new()
            } else {
                vec![order(&settings.key_prefix, "c", n, &load.rng)]
            };
            spawn(&load, &mut tasks, "/checkout", orders, bad);
        }
        while (imports_sent as f64) < import_rate * elapsed {
            imports_sent += 1;
            let n = imports_sent;
            let bad = settings.bad_every > 0 && n % settings.bad_every == 0;
            let orders = if bad {
                Vec::new()
            } else {
                (0..IMPORT_SIZE as u64)
                    .map(|k| {
                        order(
                            &settings.key_prefix,
                            "i",
                            n * IMPORT_SIZE as u64 + k,
                            &load.rng,
                        )
                    })
                    .collect()
            };
            spawn(&load, &mut tasks, "/import", orders, bad);
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let tally = &load.tally;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    LoadReport {
        offered: get(&tally.offered),
        accepted: get(&tally.accepted),
        gave_up: get(&tally.gave_up),
        client_overflow: get(&tally.client_overflow),
        retries: get(&tally.retries),
        bad_sent: get(&tally.bad_sent),
        responses: tally.responses.lock().unwrap().clone(),
        missing_retry_after: get(&tally.missing_retry_after),
        transport_errors: get(&tally.transport_errors),
        accepted_keys: std::mem::take(&mut *tally.accepted_keys.lock().unwrap()),
    }
}

fn order(prefix: &str, kind: &str, n: u64, rng: &Rng) -> Order {
    Order {
        key: format!("{prefix}-{kind}{n}"),
        customer: format!("customer-{}", rng.next() % 50_000),
        sku: format!("sku-{}", rng.next() % 500),
        quantity: 1 + (rng.next() % 3) as u32,
        cents: 500 + rng.next() % 20_000,
    }
}

fn spawn(
    load: &Arc<Load>,
    tasks: &mut tokio::task::JoinSet<()>,
    path: &'static str,
    orders: Vec<Order>,
    bad: bool,
) {
    let tally = &load.tally;
    if bad {
        tally.bad_sent.fetch_add(1, Ordering::Relaxed);
    } else {
        tally
            .offered
            .fetch_add(orders.len() as u64, Ordering::Relaxed);
    }
    if load.outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
        if !bad {
            tally
                .client_overflow
                .fetch_add(orders.len() as u64, Ordering::Relaxed);
            tally
                .gave_up
                .fetch_add(orders.len() as u64, Ordering::Relaxed);
        }
        return;
    }
    load.outstanding.fetch_add(1, Ordering::Relaxed);
    let load = load.clone();
    tasks.spawn(async move {
        if bad {
            let body = if path == "/import" {
                Bytes::from(vec![b' '; crate::http::IMPORT_LIMIT + 1])
            } else {
                Bytes::from_static(b"{\"key\": \"broken")
            };
            let _ = send(&load, path, body).await;
        } else {
            deliver(&load, path, orders).await;
        }
        load.outstanding.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Sends `orders` until all are accepted or the attempts run out, honouring `Retry-After`.
async fn deliver(load: &Load, path: &'static str, mut orders: Vec<Order>) {
    let tally = &load.tally;
    for attempt in 1..=MAX_ATTEMPTS {
        let body = if path == "/import" {
            serde_json::to_vec(&orders)
        } else {
            serde_json::to_vec(&orders[0])
        };
        let body = Bytes::from(body.expect("orders serialise"));
        let Some((status, retry_after, accepted)) = send(load, path, body).await else {
            break;
        };
        let accepted = if status == StatusCode::ACCEPTED {
            orders.len()
        } else {
            accepted.min(orders.len())
        };
        tally.accepted.fetch_add(accepted as u64, Ordering::Relaxed);
        {
            let mut keys = tally.accepted_keys.lock().unwrap();
            keys.extend(orders.drain(..accepted).map(|o| o.key));
        }
        if orders.is_empty() {
            return;
        }
        let retryable = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        if !retryable || attempt == MAX_ATTEMPTS {
            break;
        }
        let Some(retry_after) = retry_after else {
            break; // counted in `send`
        };
        // Jitter: 0.5x to 1.5x the hint, so refused clients do not come back together.
        let jitter = 0.5 + load.rng.unit();
        tally.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(retry_after.mul_f64(jitter)).await;
    }
    tally
        .gave_up
        .fetch_add(orders.len() as u64, Ordering::Relaxed);
}

/// One request: its status, its `Retry-After`, and the `accepted` count of its JSON body.
async fn send(
    load: &Load,
    path: &str,
    body: Bytes,
) -> Option<(StatusCode, Option<Duration>, usize)> {
    let tally = &load.tally;
    let _connection = load.connections.acquire().await.expect("never closed");
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", load.addr))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a valid request");
    let response = match load.client.request(request).await {
        Ok(response) => response,
        Err(_) => {
            tally.transport_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let status = response.status();
    *tally
        .responses
        .lock()
        .unwrap()
        .entry(status.as_u16())
        .or_default() += 1;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    if retry_after.is_none()
        && matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
    {
        tally.missing_retry_after.fetch_add(1, Ordering::Relaxed);
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let accepted = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("accepted").and_then(|a| a.as_u64()))
        .unwrap_or(0) as usize;
    Some((status, retry_after, accepted))
}
