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
    /// Accepts the text (it is recorded, as sent) and never answers: the
    /// client gives up with its request timeout, not knowing.
    AcceptThenHang,
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
    /// Where delivery reports go (rollcall's `/sms/report/{tenant}`).
    report_url: Option<String>,
    /// Post a report of this status for each text as it is accepted.
    auto_report: Option<&'static str>,
    /// The out_id of every signed, well-formed request, in order (a resend
    /// shows here, though the contract keeps it from being texted twice).
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    secret: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
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
        crate::tls::install_crypto_provider();
        let shared = Shared {
            secret: secret.to_owned(),
            inner: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(std::io::Error::other)?,
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

    /// The out_id of every signed request received, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared.inner().requests.clone()
    }

    /// Sends delivery reports to `url` (rollcall's `/sms/report/{tenant}`);
    /// with `auto` (`delivered` or `failed`), one for each text as it is
    /// accepted.
    pub fn report_to(&self, url: &str, auto: Option<&'static str>) {
        let mut inner = self.shared.inner();
        inner.report_url = Some(url.to_owned());
        inner.auto_report = auto;
    }

    /// Posts a delivery report of text `id` (`delivered` or `failed`,
    /// received `at`), signed as the contract says; returns rollcall's HTTP
    /// status. `forged`: signed with another secret.
    pub async fn post_report(
        &self,
        id: &str,
        status: &str,
        at: chrono::DateTime<chrono::Utc>,
        forged: bool,
    ) -> Result<u16, String> {
        let url = self
            .shared
            .inner()
            .report_url
            .clone()
            .ok_or("no report URL set (report_to)")?;
        post_report(&self.shared, &url, id, status, at, forged).await
    }
}

/// Posts one signed delivery report.
async fn post_report(
    shared: &Shared,
    url: &str,
    id: &str,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
    forged: bool,
) -> Result<u16, String> {
    let body = json!({
        "id": id,
        "status": status,
        "at": at.to_rfc3339(),
        "code": if status == "delivered" { "DELIVRD" } else { "UNDELIV" },
    })
    .to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let secret = if forged {
        "not-the-secret"
    } else {
        shared.secret.as_str()
    };
    let signature = crate::outbox::sms::webhook_signature(secret, &timestamp, body.as_bytes());
    let response = shared
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(WEBHOOK_TIMESTAMP_HEADER, timestamp)
        .header(WEBHOOK_SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
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

/// Records `msg` as texted; returns its new id.
fn accept(inner: &mut Inner, msg: WebhookBody) -> String {
    inner.next += 1;
    let id = format!("sandbox-sms-{}", inner.next);
    inner.by_out_id.insert(msg.out_id.clone(), id.clone());
    inner.texts.push(SmsRecord {
        to: msg.to,
        text: msg.text,
        out_id: msg.out_id,
        id: id.clone(),
    });
    id
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
    let fault = {
        let mut inner = s.inner();
        inner.requests.push(msg.out_id.clone());
        inner.faults.pop_front()
    };
    let answer = match fault {
        None => None,
        Some(SmsFault::ServerError) => Some(error(StatusCode::BAD_GATEWAY, "upstream_unavailable")),
        Some(SmsFault::RateLimited) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            Some(r)
        }
        Some(SmsFault::InvalidNumber) => Some(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            WEBHOOK_INVALID_NUMBER,
        )),
        Some(SmsFault::AcceptThenHang) => {
            // Taken (as a real gateway may, before its answer is lost),
            // then silence until the client gives up.
            accept(&mut s.inner(), msg);
            return std::future::pending::<Response>().await;
        }
    };
    if let Some(answer) = answer {
        return answer;
    }
    let mut inner = s.inner();
    // The contract: a repeated out_id gets the first id and is not sent again.
    if let Some(id) = inner.by_out_id.get(&msg.out_id) {
        return axum::Json(json!({ "id": id })).into_response();
    }
    let id = accept(&mut inner, msg);
    if let (Some(url), Some(status)) = (inner.report_url.clone(), inner.auto_report) {
        // The carrier's report comes a little after the answer.
        let (shared, id) = (s.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if let Err(e) = post_report(&shared, &url, &id, status, chrono::Utc::now(), false).await
            {
                tracing::warn!(error = %e, "the sandbox could not post an SMS report");
            }
        });
    }
    axum::Json(json!({ "id": id })).into_response()
}
