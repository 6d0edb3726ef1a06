//! HTTP ingress (axum): translates requests into platform calls and inbox
//! rows, and nothing else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::db::Database;
use crate::inbox::Inbox;
use crate::platform::CallbackSide;
use crate::runtime::Runtime;

pub mod callback;
pub mod export;
mod routes;
pub mod server;
pub mod sms_report;

pub use routes::{router, runtime_router};

/// Largest callback body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How long a callback waits for its commit before it is refused with 503
/// (WeCom waits 5 s for an answer).
pub const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

/// What the ingress knows about one tenant: its platform's callback side.
#[derive(Debug)]
pub struct TenantIngress {
    pub callbacks: Option<Arc<dyn CallbackSide>>,
}

/// Why a callback was refused (or what became of it), counted for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Verified,
    UnknownTenant,
    BadRequest,
    BadSignature,
    Undecryptable,
    WrongReceiveId,
    Malformed,
    TooLarge,
    SlowBody,
    StaleTimestamp,
    StoreFailed,
}

impl Outcome {
    const ALL: [Outcome; 13] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Verified,
        Outcome::UnknownTenant,
        Outcome::BadRequest,
        Outcome::BadSignature,
        Outcome::Undecryptable,
        Outcome::WrongReceiveId,
        Outcome::Malformed,
        Outcome::TooLarge,
        Outcome::SlowBody,
        Outcome::StaleTimestamp,
        Outcome::StoreFailed,
    ];

    /// The label used in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Verified => "url_verified",
            Outcome::UnknownTenant => "unknown_tenant",
            Outcome::BadRequest => "bad_request",
            Outcome::BadSignature => "bad_signature",
            Outcome::Undecryptable => "undecryptable",
            Outcome::WrongReceiveId => "wrong_receive_id",
            Outcome::Malformed => "malformed",
            Outcome::TooLarge => "too_large",
            Outcome::SlowBody => "slow_body",
            Outcome::StaleTimestamp => "stale_timestamp",
            Outcome::StoreFailed => "store_failed",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Outcome::Accepted | Outcome::Duplicate | Outcome::Verified => StatusCode::OK,
            Outcome::UnknownTenant => StatusCode::NOT_FOUND,
            Outcome::BadRequest | Outcome::Malformed => StatusCode::BAD_REQUEST,
            Outcome::BadSignature
            | Outcome::Undecryptable
            | Outcome::WrongReceiveId
            | Outcome::StaleTimestamp => StatusCode::UNAUTHORIZED,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Outcome::StoreFailed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Callback counters by outcome.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl Metrics {
    pub fn record(&self, outcome: Outcome) {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("listed");
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("listed");
        self.counts[i].load(Ordering::Relaxed)
    }

    fn render(&self) -> String {
        let mut out = String::from("# TYPE rollcall_callbacks_total counter\n");
        for o in Outcome::ALL {
            out.push_str(&format!(
                "rollcall_callbacks_total{{outcome=\"{}\"}} {}\n",
                o.label(),
                self.get(o)
            ));
        }
        out
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct Ingress {
    pub tenants: Arc<HashMap<String, TenantIngress>>,
    pub inbox: Inbox,
    pub db: Database,
    pub replay_window_secs: u64,
    /// How long a callback's body may take to arrive.
    pub body_timeout: std::time::Duration,
    pub metrics: Arc<Metrics>,
}

impl Ingress {
    /// The ingress state of `rt`'s tenants (their callback sides).
    pub fn new(config: &Config, rt: &Runtime, inbox: Inbox, metrics: Arc<Metrics>) -> Ingress {
        let tenants = rt
            .tenants()
            .map(|t| {
                let callbacks = t.callbacks.clone();
                (t.config.id.clone(), TenantIngress { callbacks })
            })
            .collect::<HashMap<_, _>>();
        let db = rt.db.clone();
        Ingress {
            tenants: Arc::new(tenants),
            inbox,
            db,
            replay_window_secs: config.server.replay_window_secs,
            body_timeout: std::time::Duration::from_secs(config.server.body_timeout_secs),
            metrics,
        }
    }

    /// Counts and logs a refusal or an acceptance, and answers it.
    fn answer(&self, tenant: &str, outcome: Outcome, body: impl Into<String>) -> Response {
        self.metrics.record(outcome);
        let status = outcome.status();
        if status.is_success() {
            tracing::debug!(tenant, outcome = outcome.label(), "callback");
        } else {
            tracing::warn!(
                tenant,
                outcome = outcome.label(),
                status = status.as_u16(),
                "callback refused"
            );
        }
        (status, body.into()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn counters_are_indexed_by_declaration_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(
                *o as usize, i,
                "{o:?}: keep Outcome::ALL in declaration order"
            );
        }
    }
}
