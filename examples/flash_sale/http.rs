//! The HTTP front: routes, body limits, JSON errors and `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::order::{Accepted, Lane, Order};
use crate::service::{Answer, Service};

/// The largest checkout body (one order).
pub(crate) const CHECKOUT_LIMIT: usize = 16 << 10;
/// The largest import body, and the most orders in one import.
pub(crate) const IMPORT_LIMIT: usize = 1 << 20;
pub(crate) const IMPORT_MAX_ORDERS: usize = 1_000;

#[derive(Clone)]
struct App {
    service: Arc<Service>,
    prometheus: PrometheusHandle,
}

/// The service's routes.
pub(crate) fn router(service: Arc<Service>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/checkout", post(checkout))
        .route("/import", post(import))
        .route("/metrics", get(scrape))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .with_state(App {
            service,
            prometheus,
        })
}

/// A request refused before any order was taken: a status and a JSON error.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "reason": self.reason });
        (self.status, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason,
        message: message.into(),
    }
}

fn with_retry_after(mut response: Response, retry_after: Duration) -> Response {
    // Whole seconds (RFC 9110), rounded up so that a client never comes back too early.
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// The response for a refused order (`accepted` orders of the request went in before it).
fn refusal(answer: Answer, accepted: usize) -> Response {
    match answer {
        Answer::Accepted => accepted_response(accepted),
        Answer::Full { retry_after } => {
            let body =
                json!({ "error": "the lane is full", "reason": "full", "accepted": accepted });
            with_retry_after(
                (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response(),
                retry_after,
            )
        }
        Answer::Unavailable {
            reason,
            retry_after,
        } => {
            let body = json!({ "error": "the service cannot take orders now", "reason": reason, "accepted": accepted });
            with_retry_after(
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response(),
                retry_after,
            )
        }
    }
}

fn accepted_response(accepted: usize) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "accepted": accepted })),
    )
        .into_response()
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Reads the body up to `limit` bytes: 413 beyond it.
async fn read_body(service: &Service, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            count(&service.shared.counts.too_large);
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {limit} bytes"),
            ))
        }
        Err(e) => {
            count(&service.shared.counts.malformed);
            Err(error(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("cannot read the body: {e}"),
            ))
        }
    }
}

/// Parses JSON, telling a syntax error (malformed) from a bad or missing field (invalid).
fn parse<T: serde::de::DeserializeOwned>(service: &Service, bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data => "invalid",
            _ => "malformed",
        };
        let counts = &service.shared.counts;
        count(if reason == "invalid" {
            &counts.invalid
        } else {
            &counts.malformed
        });
        error(StatusCode::BAD_REQUEST, reason, e.to_string())
    })
}

fn invalid(service: &Service, message: String) -> Refusal {
    count(&service.shared.counts.invalid);
    error(StatusCode::BAD_REQUEST, "invalid", message)
}

async fn checkout(State(app): State<App>, body: Body) -> Response {
    let service = &app.service;
    let bytes = match read_body(service, body, CHECKOUT_LIMIT).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    let order: Order = match parse(service, &bytes) {
        Ok(order) => order,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(message) = order.validate() {
        return invalid(service, message).into_response();
    }
    match service
        .checkout(Accepted::now(order, Lane::Interactive))
        .await
    {
        Answer::Accepted => accepted_response(1),
        refused => refusal(refused, 0),
    }
}

async fn import(State(app): State<App>, body: Body) -> Response {
    let service = &app.service;
    let bytes = match read_body(service, body, IMPORT_LIMIT).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    let orders: Vec<Order> = match parse(service, &bytes) {
        Ok(orders) => orders,
        Err(refusal) => return refusal.into_response(),
    };
    if orders.is_empty() || orders.len() > IMPORT_MAX_ORDERS {
        return invalid(
            service,
            format!(
                "an import holds 1 to {IMPORT_MAX_ORDERS} orders, not {}",
                orders.len()
            ),
        )
        .into_response();
    }
    for (index, order) in orders.iter().enumerate() {
        if let Err(message) = order.validate() {
            return invalid(service, format!("order {index}: {message}")).into_response();
        }
    }
    let orders: Vec<Accepted> = orders
        .into_iter()
        .map(|order| Accepted::now(order, Lane::Batch))
        .collect();
    let accepted = orders.len();
    match service.import(orders).await {
        Answer::Accepted => accepted_response(accepted),
        refused => refusal(refused, 0),
    }
}

async fn scrape(State(app): State<App>) -> Response {
    app.service.export_metrics();
    let text = app.prometheus.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn ready(State(app): State<App>) -> Response {
    let readiness = app.service.ready();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": readiness.ready, "reasons": readiness.reasons })),
    )
        .into_response()
}

async fn state(State(app): State<App>) -> Response {
    axum::Json(crate::page::state(&app.service)).into_response()
}

async fn page() -> Html<&'static str> {
    Html(crate::page::HTML)
}
