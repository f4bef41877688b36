//! The admin HTTP endpoint the operator and Prometheus use.
//!
//! `/healthz` and `/metrics` are open (kubelet probes and scrapers carry no token); everything
//! under `/v1/` needs `Authorization: Bearer <token>` with the token from the admin token file.
//! Without a configured token those routes refuse every request. The endpoint serves from the
//! start, while the store is still being restored (`/readyz` false, `/v1/*` 503).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::checkpoint::{Coordinator, TriggerError};
use crate::metrics::Metrics;
use crate::store::Store;

pub struct AdminState {
    /// Set once the store is open (and restored).
    pub store: OnceLock<Arc<Store>>,
    pub coordinator: OnceLock<Arc<Coordinator>>,
    pub metrics: Arc<Metrics>,
    /// True once the store is open (and restored) and the socket serves.
    pub ready: AtomicBool,
    pub token: Option<String>,
    /// Set when this sidecar starts as a warm standby.
    pub standby: Option<Arc<crate::standby::Standby>>,
}

pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route(
            "/v1/checkpoints",
            get(list_checkpoints).post(trigger_checkpoint),
        )
        .route(
            "/v1/savepoints",
            get(list_savepoints).post(trigger_savepoint),
        )
        .route("/v1/savepoints/{id}", get(get_savepoint))
        .route("/v1/unfence", axum::routing::post(unfence))
        .route("/v1/standby", get(standby))
        .route("/v1/promote", axum::routing::post(promote))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .with_state(state)
}

fn restoring() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the state store is still opening or restoring\n",
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let fenced = state.store.get().is_none_or(|s| s.is_fenced());
    if state.ready.load(Ordering::SeqCst) && !fenced {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Encodes the metrics; the RocksDB figures among them are cached (read every 5 s off the async
/// workers), so a scrape never waits on the store.
async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
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
    let (Some(store), Some(coordinator)) = (state.store.get(), state.coordinator.get()) else {
        return restoring();
    };
    let p = store.placement();
    let latest = coordinator
        .latest()
        .map(|c| serde_json::json!({"id": c.id, "createdAt": c.created_at}));
    axum::Json(serde_json::json!({
        "replicaIndex": p.replica,
        "parallelism": p.layout.parallelism(),
        "maxParallelism": p.layout.max_parallelism(),
        "keyGroups": {"start": p.range.start, "end": p.range.end},
        "states": store.states(),
        "operatorStates": store.operator_states(),
        "fenced": store.is_fenced(),
        "latestCheckpoint": latest,
    }))
    .into_response()
}

fn trigger_error(e: TriggerError) -> Response {
    let code = match e {
        TriggerError::NoStateLocation => StatusCode::CONFLICT,
        TriggerError::InvalidLocation(_) => StatusCode::BAD_REQUEST,
        TriggerError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        TriggerError::Taken { .. } => StatusCode::CONFLICT,
        TriggerError::NotStarted => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        code,
        axum::Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

async fn trigger_checkpoint(State(state): State<Arc<AdminState>>) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return restoring();
    };
    match coordinator.trigger_checkpoint().await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"id": id})),
        )
            .into_response(),
        Err(e) => trigger_error(e),
    }
}

async fn list_checkpoints(State(state): State<Arc<AdminState>>) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return restoring();
    };
    axum::Json(serde_json::json!({
        "latest": coordinator.latest(),
        "retained": coordinator.retained(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavepointRequest {
    location: String,
    #[serde(default)]
    stop: bool,
    /// The operation the savepoint is for; see [`Coordinator::trigger_savepoint`].
    #[serde(default)]
    operation_id: Option<String>,
    /// Answer once the savepoint has completed or failed, or after this many milliseconds (at
    /// most 5000), whichever comes first; 0 answers at once.
    #[serde(default)]
    wait_ms: u64,
}

/// The longest a savepoint request may wait for its savepoint to end.
const MAX_SAVEPOINT_WAIT: Duration = Duration::from_secs(5);

async fn trigger_savepoint(
    State(state): State<Arc<AdminState>>,
    axum::Json(request): axum::Json<SavepointRequest>,
) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return restoring();
    };
    match coordinator
        .trigger_savepoint(
            &request.location,
            request.stop,
            request.operation_id.as_deref(),
        )
        .await
    {
        Ok(info) => {
            let wait = Duration::from_millis(request.wait_ms).min(MAX_SAVEPOINT_WAIT);
            let info = coordinator.wait_savepoint(info, wait).await;
            (StatusCode::ACCEPTED, axum::Json(info)).into_response()
        }
        Err(e) => trigger_error(e),
    }
}

/// Lifts the write fence of a stop-with-savepoint that the operator abandoned (it timed out), so
/// the running version keeps serving. Idempotent.
async fn unfence(State(state): State<Arc<AdminState>>) -> Response {
    let Some(store) = state.store.get() else {
        return restoring();
    };
    let was = store.is_fenced();
    store.unfence();
    if was {
        tracing::warn!("write fence lifted by the operator: the stop-with-savepoint was abandoned");
    }
    axum::Json(serde_json::json!({ "fenced": false, "wasFenced": was })).into_response()
}

/// A warm standby's progress: warming, warm or promoted; none for a sidecar that is not one.
async fn standby(State(state): State<Arc<AdminState>>) -> Response {
    let name = state.standby.as_ref().map_or("none", |s| s.state().name());
    axum::Json(serde_json::json!({ "state": name })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromoteRequest {
    restore_from: String,
}

/// Promotes a warm standby: it restores `restoreFrom` (which must be its configured restore
/// point), fetching only what it adds to the warm state, and serves. Idempotent.
async fn promote(
    State(state): State<Arc<AdminState>>,
    axum::Json(request): axum::Json<PromoteRequest>,
) -> Response {
    let Some(standby) = &state.standby else {
        return (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": "this sidecar is not a warm standby"})),
        )
            .into_response();
    };
    let standby = standby.clone();
    let location = request.restore_from;
    // The promotion is written to the volume (and synced) before it is acknowledged.
    let promoted = tokio::task::spawn_blocking(move || standby.promote(&location)).await;
    match promoted {
        Ok(Ok(())) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"state": "promoted"})),
        )
            .into_response(),
        Ok(Err(e @ crate::standby::PromoteError::OtherLocation { .. })) => (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn list_savepoints(State(state): State<Arc<AdminState>>) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return restoring();
    };
    axum::Json(coordinator.savepoints()).into_response()
}

async fn get_savepoint(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let Some(coordinator) = state.coordinator.get() else {
        return restoring();
    };
    match coordinator.savepoint(&id) {
        Some(info) => axum::Json(info).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no savepoint {id:?}")})),
        )
            .into_response(),
    }
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
