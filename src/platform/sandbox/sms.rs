//! The sandbox's SMS gateway: a receiver of rollcall's signed webhook
//! (see [`WebhookSms`](crate::outbox::sms::WebhookSms)) that checks each
//! request the way a real gateway must, records what it would have texted,
//! and answers with faults a test can switch on.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::outbox::sms::{
    WEBHOOK_INVALID_NUMBER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
};

/// How far a request's timestamp may be from the sandbox's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// The path the gateway listens on.
const PATH: &str = "/sms";

/// A fault the next signed request will meet (in push order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsFault {
    /// HTTP 502.
    ServerError,
    /// HTTP 429 with `Retry-After: 1`.
    RateLimited,
    /// HTTP 422 `{"error": "invalid_number"}`: the number cannot receive texts.
    InvalidNumber,
}

/// A text the sandbox accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRecord {
    /// The phone number.
    pub to: String,
    /// The full notice.
    pub text: String,
    /// rollcall's idempotency key.
    pub out_id: String,
    /// The id the sandbox answered (`sandbox-sms-N`).
    pub id: String,
}

#[derive(Default)]
struct Inner {
    faults: VecDeque<SmsFault>,
    texts: Vec<SmsRecord>,
    /// out_id → the id first given for it.
    by_out_id: HashMap<String, String>,
    next: u64,
}

#[derive(Clone)]
struct Shared {
    secret: String,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the data usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running sandbox SMS gateway on 127.0.0.1.
pub struct SandboxSms {
    pub addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxSms {
    /// Starts on a free port, accepting requests signed with `secret`.
    pub async fn start(secret: &str) -> std::io::Result<SandboxSms> {
        let shared = Shared {
            secret: secret.to_owned(),
            inner: Arc::default(),
        };
        let router = Router::new()
            .route(PATH, post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxSms {
            addr,
            shared,
            server,
        })
    }

    /// The webhook `url` to configure (`[tenants.sms] provider = "webhook"`).
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// Queues a fault for the next correctly signed request.
    pub fn push_fault(&self, fault: SmsFault) {
        self.shared.inner().faults.push_back(fault);
    }

    /// Every text accepted so far, oldest first (a repeated out_id once).
    pub fn texts(&self) -> Vec<SmsRecord> {
        self.shared.inner().texts.clone()
    }
}

impl Drop for SandboxSms {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// Checks the signature headers as the contract on `WebhookSms` tells a
/// receiver to; `Err` is the reason to give with a 401.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<i64, &'static str> {
    let timestamp = headers
        .get(WEBHOOK_TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing_timestamp")?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid_timestamp");
    }
    let secs: i64 = timestamp.parse().map_err(|_| "invalid_timestamp")?;
    let signature = headers
        .get(WEBHOOK_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing_signature")?;
    let signature = hex::decode(signature).map_err(|_| "invalid_signature")?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| "invalid_signature")?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| "invalid_signature")?;
    // Checked after the signature, so an unsigned request learns nothing
    // about the clock.
    if (chrono::Utc::now().timestamp() - secs).abs() > MAX_CLOCK_SKEW_SECS {
        return Err("stale_timestamp");
    }
    Ok(secs)
}

#[derive(Deserialize)]
struct WebhookBody {
    to: String,
    text: String,
    out_id: String,
    timestamp: i64,
}

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let signed_at = match verify(&s.secret, &headers, &body) {
        Ok(secs) => secs,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    let Ok(msg) = serde_json::from_slice::<WebhookBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_body");
    };
    if msg.timestamp != signed_at {
        return error(StatusCode::BAD_REQUEST, "timestamp_mismatch");
    }
    if msg.to.trim().is_empty() || msg.out_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_body");
    }
    let mut inner = s.inner();
    if let Some(fault) = inner.faults.pop_front() {
        return match fault {
            SmsFault::ServerError => error(StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            SmsFault::RateLimited => {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                r
            }
            SmsFault::InvalidNumber => {
                error(StatusCode::UNPROCESSABLE_ENTITY, WEBHOOK_INVALID_NUMBER)
            }
        };
    }
    // The contract: a repeated out_id gets the first id and is not sent again.
    if let Some(id) = inner.by_out_id.get(&msg.out_id) {
        return axum::Json(json!({ "id": id })).into_response();
    }
    inner.next += 1;
    let id = format!("sandbox-sms-{}", inner.next);
    inner.by_out_id.insert(msg.out_id.clone(), id.clone());
    inner.texts.push(SmsRecord {
        to: msg.to,
        text: msg.text,
        out_id: msg.out_id,
        id: id.clone(),
    });
    axum::Json(json!({ "id": id })).into_response()
}
