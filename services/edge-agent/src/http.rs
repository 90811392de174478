//! The agent's local HTTP port: `GET /metrics` (Prometheus), `GET /status` (JSON, what the
//! `status` command prints), `POST /trigger` (a line controller marks the next frames
//! urgent), `POST /detect` (one image, detections back; see [`crate::detect`]) and
//! `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::detect::{self, Numbering};
use crate::lanes::Lane;
use crate::metrics::{AgentMetrics, UplinkState};
use crate::spooled::SharedSpool;
use crate::uplink::{Summary, UplinkConfig};

/// What the endpoints read.
#[derive(Clone)]
pub struct AgentState {
    /// The agent's metrics.
    pub metrics: Arc<AgentMetrics>,
    /// The spool lanes, with store-and-forward on.
    pub spool: Option<SharedSpool>,
    /// This device's id.
    pub device_id: String,
    /// The uplink settings (endpoints, identity), for `Detect`.
    pub uplink: Arc<UplinkConfig>,
    /// Sequence numbers for `Detect` calls.
    pub numbering: Numbering,
}

/// One lane in [`StatusReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LaneStatus {
    /// `urgent` or `routine`.
    pub lane: String,
    /// Frames waiting.
    pub frames: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Age of the oldest waiting frame.
    pub oldest_age_seconds: f64,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    /// This device's id.
    pub device_id: String,
    /// Uplink state: connecting, streaming, backoff, stopped.
    pub uplink: String,
    /// The endpoint in use.
    pub endpoint: String,
    /// Counts so far.
    pub captured: u64,
    /// Frames acknowledged.
    pub acknowledged: u64,
    /// Frames sent again after a reconnect or restart.
    pub resent: u64,
    /// Frames skipped by motion gating.
    pub skipped_still: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// The spool's lanes (empty without store-and-forward).
    pub lanes: Vec<LaneStatus>,
}

impl AgentState {
    fn refresh(&self) {
        if let Some(spool) = &self.spool {
            self.metrics.refresh_spool(&spool.lock());
            self.metrics.refresh_triggers(spool.priority().triggers());
        }
    }

    /// The status report now.
    pub fn report(&self) -> StatusReport {
        let summary = Summary::from_metrics(&self.metrics);
        let index = self.metrics.endpoint_index.get().max(0) as usize;
        let state = match self.metrics.state() {
            UplinkState::Connecting => "connecting",
            UplinkState::Streaming => "streaming",
            UplinkState::Backoff => "backoff",
            UplinkState::Stopped => "stopped",
        };
        let lanes = self.spool.as_ref().map_or_else(Vec::new, |spool| {
            let lanes = spool.lock();
            Lane::ALL
                .into_iter()
                .map(|lane| {
                    let s = lanes.lane(lane);
                    LaneStatus {
                        lane: lane.name().into(),
                        frames: s.len(),
                        bytes: s.disk_bytes(),
                        oldest_age_seconds: s.oldest_age().map_or(0.0, |a| a.as_secs_f64()),
                    }
                })
                .collect()
        });
        StatusReport {
            device_id: self.device_id.clone(),
            uplink: state.into(),
            endpoint: {
                let list = &self.uplink.transport.endpoints;
                list.get(index % list.len().max(1))
                    .cloned()
                    .unwrap_or_default()
            },
            captured: summary.captured,
            acknowledged: summary.acknowledged,
            resent: summary.resent,
            skipped_still: summary.skipped_still,
            reconnects: summary.reconnects,
            lanes,
        }
    }
}

async fn metrics(State(s): State<AgentState>) -> impl IntoResponse {
    s.refresh();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn status(State(s): State<AgentState>) -> Json<StatusReport> {
    Json(s.report())
}

async fn trigger(State(s): State<AgentState>) -> (StatusCode, String) {
    match &s.spool {
        Some(spool) => {
            spool.priority().trigger();
            (
                StatusCode::OK,
                "triggered: the next frames are urgent\n".into(),
            )
        }
        None => (
            StatusCode::CONFLICT,
            "priority lanes need --spool-dir\n".into(),
        ),
    }
}

async fn detect(State(s): State<AgentState>, body: axum::body::Bytes) -> impl IntoResponse {
    let image = match detect::sniff(body.to_vec()) {
        Ok(image) => image,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let sequence = s.numbering.take(s.uplink.start_sequence);
    match detect::detect(&s.uplink, sequence, image).await {
        Ok(r) => (StatusCode::OK, Json(detect::to_json(&r))),
        Err(status) => error(
            StatusCode::from_u16(detect::http_status(status.code()))
                .unwrap_or(StatusCode::BAD_GATEWAY),
            format!("{:?}: {}", status.code(), status.message()),
        ),
    }
}

fn error(code: StatusCode, message: String) -> (StatusCode, Json<serde_json::Value>) {
    (code, Json(serde_json::json!({ "error": message })))
}

/// Binds `addr` and serves until the process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, state: AgentState) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--http-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/trigger", post(trigger))
        .route("/detect", post(detect))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "agent HTTP server stopped");
        }
    });
    Ok(bound)
}
