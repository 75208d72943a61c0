//! Operations endpoints: liveness, readiness, and the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// Alive: the process answers.
pub async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: the event store answers (and so the read models, which share the database).
/// The bus is reported, not required: while NATS is down, writes go on and the relay
/// catches up afterwards.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Value>) {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({
                "status": "ready",
                "projected_position": state.projections.position(),
                "relayed_position": *state.relayed.borrow(),
                "bus": if state.bus.is_some() { "in_process" } else { "nats" },
            })),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "unavailable", "store": "unreachable" })),
            )
        }
    }
}

pub async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(super::ApiDoc::openapi())
}
