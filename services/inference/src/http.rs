//! The pod's HTTP side: Prometheus `/metrics` and the `/healthz` and `/readyz` probes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    kafka: Arc<AtomicBool>,
}

/// The router; `ready` flips false while the pod drains, `kafka` while the Kafka producer
/// is being replaced after a fatal error.
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, kafka: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState {
            metrics,
            ready,
            kafka,
        })
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<HttpState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !s.kafka.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka producer failed; replacing it\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}
