//! The HTTP routes: health, metrics, the platforms' callbacks, package
//! downloads and SMS delivery reports.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Ingress, callback, export, sms_report};

/// The HTTP routes.
pub fn router(state: Ingress) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/callback/{platform}/{tenant}",
            get(callback::receive).post(callback::receive),
        )
        .with_state(state)
}

/// The routes that need the handlers' runtime: package downloads, the
/// published checkpoint and SMS delivery reports.
pub fn runtime_router(rt: crate::runtime::Runtime) -> Router {
    Router::new()
        .route("/export/{token}", get(export::download))
        .route("/evidence/{tenant}/checkpoint", get(export::checkpoint))
        .route("/sms/report/{tenant}", post(sms_report::receive))
        .with_state(rt)
}

async fn readyz(State(state): State<Ingress>) -> Response {
    if state.db.ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

/// Everything `/metrics` tells (`crate::metrics`): the callbacks, this
/// process's counters, and the database's gauges.
async fn metrics(State(state): State<Ingress>) -> Response {
    let mut out = state.metrics.render();
    crate::metrics::render_counters(&mut out);
    crate::metrics::render_gauges(&state.db, chrono::Utc::now(), &mut out).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
