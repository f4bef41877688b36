//! Calls to the sidecars' admin API (savepoints and status), authenticated with the job's admin
//! token. The token is sent, never logged.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("sidecar at {addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("sidecar at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("sidecar at {addr} sent an unreadable answer: {message}")]
    Decode { addr: String, message: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub location: String,
    /// pending, complete or failed.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// When the sidecar fenced writes for it (RFC 3339), for a stop-with-savepoint.
    #[serde(default)]
    pub fenced_at: Option<String>,
    /// What the replica uploaded for the savepoint (the rest it references in its checkpoints).
    #[serde(default)]
    pub uploaded_bytes: Option<u64>,
}

impl SavepointStatus {
    pub fn is_complete(&self) -> bool {
        self.state == "complete"
    }

    pub fn is_failed(&self) -> bool {
        self.state == "failed"
    }
}

/// A standby sidecar's answer to `GET /v1/standby`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StandbyStatus {
    /// warming, warm, promoted or none.
    pub state: String,
}

impl StandbyStatus {
    /// It restored the bulk of the state (and may already have been promoted).
    pub fn is_warm(&self) -> bool {
        self.state == "warm" || self.state == "promoted"
    }
}

/// How long a savepoint request waits at the sidecar for the savepoint to end.
pub const SAVEPOINT_WAIT_MS: u64 = 2000;

pub struct SidecarApi {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    token: String,
}

impl SidecarApi {
    pub fn new(token: String) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            token,
        }
    }

    async fn call(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, ApiError> {
        let unreachable = |message: String| ApiError::Unreachable {
            addr: addr.to_owned(),
            message,
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                addr: addr.to_owned(),
                status,
                body: String::from_utf8_lossy(&bytes).trim().to_owned(),
            });
        }
        Ok(bytes)
    }

    /// Starts a savepoint at `location` for operation `operation_id`, or reports the one already
    /// started: idempotent per operation. A location holding another operation's savepoint is
    /// refused (HTTP 409).
    pub async fn trigger_savepoint(
        &self,
        addr: &str,
        location: &str,
        stop: bool,
        operation_id: &str,
    ) -> Result<SavepointStatus, ApiError> {
        // The sidecar holds the answer until the savepoint completes or fails, for at most this
        // long (well inside the request timeout): the operator learns of it at once.
        let body = serde_json::json!({
            "location": location,
            "stop": stop,
            "operationId": operation_id,
            "waitMs": SAVEPOINT_WAIT_MS,
        });
        let bytes = self
            .call(addr, "POST", "/v1/savepoints", Some(body))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            addr: addr.to_owned(),
            message: e.to_string(),
        })
    }

    /// The sidecar's latest completed checkpoint: its id and when it was cut (RFC 3339).
    pub async fn latest_checkpoint(&self, addr: &str) -> Result<Option<(u64, String)>, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Latest {
            id: u64,
            created_at: String,
        }
        #[derive(Deserialize)]
        struct Checkpoints {
            latest: Option<Latest>,
        }
        let bytes = self.call(addr, "GET", "/v1/checkpoints", None).await?;
        let c: Checkpoints = serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        Ok(c.latest.map(|l| (l.id, l.created_at)))
    }

    /// Whether the sidecar answers its readiness check (`/readyz`) with success within a second.
    pub async fn is_ready(&self, addr: &str) -> bool {
        let ask = self.call(addr, "GET", "/readyz", None);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ask).await,
            Ok(Ok(_))
        )
    }

    /// A standby sidecar's progress (`GET /v1/standby`): warming, warm, promoted, or none (not
    /// a standby).
    pub async fn standby(&self, addr: &str) -> Result<StandbyStatus, ApiError> {
        let bytes = self.call(addr, "GET", "/v1/standby", None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            addr: addr.to_owned(),
            message: e.to_string(),
        })
    }

    /// Tells a standby sidecar to restore what `location` (its configured restore point) adds
    /// to the state it warmed up with, and serve. Idempotent; accepted while it still warms.
    pub async fn promote(&self, addr: &str, location: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({ "restoreFrom": location });
        self.call(addr, "POST", "/v1/promote", Some(body))
            .await
            .map(|_| ())
    }

    /// Lets a fenced replica accept writes again (an abandoned stop-with-savepoint).
    pub async fn unfence(&self, addr: &str) -> Result<(), ApiError> {
        self.call(addr, "POST", "/v1/unfence", None)
            .await
            .map(|_| ())
    }
}
