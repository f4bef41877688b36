//! The admin HTTP endpoint the operator and Prometheus use.
//!
//! `/healthz` and `/metrics` are open (kubelet probes and scrapers carry no token); everything
//! under `/v1/` needs `Authorization: Bearer <token>` with the token from the admin token file.
//! Without a configured token those routes refuse every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{Metrics, ROCKSDB_PROPERTIES};
use crate::store::Store;

pub struct AdminState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// True once the store is open (and restored) and the socket serves.
    pub ready: AtomicBool,
    pub token: Option<String>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) && !state.store.is_fenced() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    for (property, label) in ROCKSDB_PROPERTIES {
        state
            .metrics
            .set_rocksdb(label, state.store.property_sum(property));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let p = state.store.placement();
    axum::Json(serde_json::json!({
        "replicaIndex": p.replica,
        "parallelism": p.layout.parallelism(),
        "maxParallelism": p.layout.max_parallelism(),
        "keyGroups": {"start": p.range.start, "end": p.range.end},
        "states": state.store.states(),
        "operatorStates": state.store.operator_states(),
        "fenced": state.store.is_fenced(),
    }))
    .into_response()
}

async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            "admin API disabled: no admin token configured\n",
        )
            .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong admin token\n",
        )
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
