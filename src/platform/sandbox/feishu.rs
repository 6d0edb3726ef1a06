//! The sandbox's Feishu personality: an API server on 127.0.0.1 speaking
//! Feishu's wire format (see `src/platform/feishu/PROTOCOL.md`): the tenant
//! token, `im/v1/messages` with its `uuid` (one message per uuid within the
//! hour), card updates by PATCH, `read_users`, message resources, the
//! contact directory and attendance flows; and [`FeishuPhone`], which plays
//! Feishu's servers pushing encrypted, signed events to rollcall's
//! callback URL. It records what rollcall did and meets faults a test pushes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::platform::feishu::crypto::FeishuCrypto;

/// Feishu sends at most one message per `uuid` within this long.
pub const UUID_WINDOW: Duration = Duration::from_secs(60 * 60);
/// `contact/v3` pages hold at most this many.
pub const MAX_PAGE: usize = 50;
/// `user_flows/query` takes at most this many users.
const MAX_FLOW_USERS: usize = 50;

/// A fault the next API call meets (one queue for every call but the token
/// call), each as Feishu answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeishuFault {
    /// HTTP 502 from the gateway, without a JSON body.
    ServerError,
    /// HTTP 200 with code 1500, "internal error".
    Busy,
    /// No answer for this long, then the call goes on.
    Timeout(Duration),
    /// HTTP 429, code 99991400, `x-ogw-ratelimit-reset: 1`.
    RateLimited,
    /// The caller's token is revoked: HTTP 400, code 99991663.
    ExpiredToken,
}

/// One message Feishu took (a resend under the same uuid is not another).
#[derive(Debug, Clone, PartialEq)]
pub struct FeishuSent {
    pub message_id: String,
    pub receive_id: String,
    pub receive_id_type: String,
    pub msg_type: String,
    /// `content`, parsed from the JSON text it travels as.
    pub content: Value,
    pub uuid: Option<String>,
    /// The request body as received.
    pub body: Value,
    /// Its place among the sandbox's sends.
    pub seq: u64,
}

impl FeishuSent {
    /// For a card: the `card` value of its buttons (rollcall's card id).
    pub fn card_id(&self) -> Option<String> {
        self.content["elements"]
            .as_array()?
            .iter()
            .filter_map(|e| e["actions"].as_array())
            .flatten()
            .find_map(|b| b["value"]["card"].as_str().map(str::to_owned))
    }

    /// For a card: the key of the button labelled `label`.
    pub fn button_key(&self, label: &str) -> Option<String> {
        self.content["elements"]
            .as_array()?
            .iter()
            .filter_map(|e| e["actions"].as_array())
            .flatten()
            .find(|b| b["text"]["content"] == label)
            .and_then(|b| b["value"]["key"].as_str().map(str::to_owned))
    }
}

/// A successful card update.
#[derive(Debug, Clone, PartialEq)]
pub struct FeishuCardUpdate {
    pub message_id: String,
    pub content: Value,
}

/// One department of the sandbox's directory (below the root, "0").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuDepartment {
    pub open_department_id: String,
    pub name: String,
}

/// One person of the sandbox's directory, as `find_by_department` lists
/// them (`user_id`, `open_id`, `department_ids`, `status`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct FeishuUser {
    pub user: Value,
    /// The departments they are a direct member of ("0": the root).
    pub departments: Vec<String>,
}

struct StoredMedia {
    message_id: String,
    kind: String,
    bytes: Vec<u8>,
    content_type: String,
    file_name: Option<String>,
}

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    next: u64,
    calls: HashMap<String, usize>,
    faults: VecDeque<FeishuFault>,
    invalid_users: HashSet<String>,
    sent: Vec<FeishuSent>,
    /// uuid → (message id, when).
    uuids: HashMap<String, (String, Instant)>,
    updates: Vec<FeishuCardUpdate>,
    /// message id → reader → read at (ms).
    reads: HashMap<String, HashMap<String, i64>>,
    /// file key → media.
    media: HashMap<String, StoredMedia>,
    departments: Vec<FeishuDepartment>,
    users: Vec<FeishuUser>,
    flows: Vec<Value>,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn count(&mut self, path: &str) {
        *self.calls.entry(path.to_owned()).or_default() += 1;
    }
}

#[derive(Clone)]
struct Shared {
    app_id: String,
    app_secret: String,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock already failed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Feishu API sandbox.
pub struct SandboxFeishuApi {
    pub addr: SocketAddr,
    shared: Shared,
    outage: super::Outage,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxFeishuApi {
    /// Starts on a free port, accepting `app_id` / `app_secret`.
    pub async fn start(app_id: &str, app_secret: &str) -> std::io::Result<SandboxFeishuApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            inner: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(tenant_access_token),
            )
            .route("/open-apis/im/v1/messages", post(create_message))
            .route(
                "/open-apis/im/v1/messages/{id}",
                axum::routing::patch(update_message),
            )
            .route("/open-apis/im/v1/messages/{id}/read_users", get(read_users))
            .route(
                "/open-apis/im/v1/messages/{id}/resources/{key}",
                get(resource),
            )
            .route(
                "/open-apis/contact/v3/departments/{id}/children",
                get(department_children),
            )
            .route(
                "/open-apis/contact/v3/users/find_by_department",
                get(users_by_department),
            )
            .route(
                "/open-apis/attendance/v1/user_flows/query",
                post(user_flows),
            )
            .with_state(shared.clone());
        let outage = super::Outage::default();
        let router = outage.guard(router);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxFeishuApi {
            addr,
            shared,
            outage,
            server,
        })
    }

    /// This platform's outage switch.
    pub fn outage(&self) -> &super::Outage {
        &self.outage
    }

    /// The `api_base` of a tenant on this sandbox.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner()
    }

    /// Queues a fault for the next API call.
    pub fn push_fault(&self, fault: FeishuFault) {
        self.inner().faults.push_back(fault);
    }

    /// Makes `user` unreachable for the bot (code 230013).
    pub fn mark_invalid(&self, user: &str) {
        self.inner().invalid_users.insert(user.to_owned());
    }

    /// Every message taken, oldest first.
    pub fn sent(&self) -> Vec<FeishuSent> {
        self.inner().sent.clone()
    }

    /// Every card update, oldest first.
    pub fn card_updates(&self) -> Vec<FeishuCardUpdate> {
        self.inner().updates.clone()
    }

    /// `user` read message `message_id` at `at_ms`: `read_users` lists them
    /// from now on.
    pub fn mark_read(&self, message_id: &str, user: &str, at_ms: i64) {
        self.inner()
            .reads
            .entry(message_id.to_owned())
            .or_default()
            .insert(user.to_owned(), at_ms);
    }

    /// Stores media that `message_id` carries under a new key of `kind`
    /// (`image` or `file`); returns the key.
    pub fn add_media(
        &self,
        message_id: &str,
        kind: &str,
        bytes: Vec<u8>,
        content_type: &str,
        file_name: Option<&str>,
    ) -> String {
        let mut inner = self.inner();
        let prefix = if kind == "image" {
            "img_v3_"
        } else {
            "file_v3_"
        };
        let key = format!("{prefix}{}", inner.next());
        inner.media.insert(
            key.clone(),
            StoredMedia {
                message_id: message_id.to_owned(),
                kind: kind.to_owned(),
                bytes,
                content_type: content_type.to_owned(),
                file_name: file_name.map(str::to_owned),
            },
        );
        key
    }

    /// Replaces the directory.
    pub fn set_directory(&self, departments: Vec<FeishuDepartment>, users: Vec<FeishuUser>) {
        let mut inner = self.inner();
        inner.departments = departments;
        inner.users = users;
    }

    /// Adds `user_flow_results` entries served by `user_flows/query`.
    pub fn add_flows(&self, flows: Vec<Value>) {
        self.inner().flows.extend(flows);
    }

    /// Calls made to `path` (the route's pattern), refusals included.
    pub fn calls(&self, path: &str) -> usize {
        self.inner().calls.get(path).copied().unwrap_or(0)
    }
}

impl Drop for SandboxFeishuApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        Json(json!({ "code": code, "msg": msg, "data": {} })),
    )
        .into_response()
}

fn ok(data: Value) -> Response {
    Json(json!({ "code": 0, "msg": "success", "data": data })).into_response()
}

async fn tenant_access_token(State(s): State<Shared>, body: Bytes) -> Response {
    let mut inner = s.inner();
    inner.count("/open-apis/auth/v3/tenant_access_token/internal");
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    if body["app_id"].as_str() != Some(&s.app_id)
        || body["app_secret"].as_str() != Some(&s.app_secret)
    {
        return error(StatusCode::BAD_REQUEST, 10014, "app secret invalid");
    }
    let token = format!("t-sandbox-{}", inner.next());
    inner.tokens.insert(token.clone());
    Json(json!({ "code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200 }))
        .into_response()
}

/// Counts the call to `path`, checks the bearer token, then meets the next
/// queued fault.
async fn gate(s: &Shared, path: &str, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let fault = {
        let mut inner = s.inner();
        inner.count(path);
        if token.is_empty() {
            return Some(error(
                StatusCode::BAD_REQUEST,
                99991661,
                "Missing access token for authorization.",
            ));
        }
        if !inner.tokens.contains(&token) {
            return Some(invalid_token());
        }
        inner.faults.pop_front()
    };
    match fault? {
        FeishuFault::ServerError => Some((StatusCode::BAD_GATEWAY, "Bad Gateway").into_response()),
        FeishuFault::Busy => Some(error(StatusCode::OK, 1500, "internal error")),
        FeishuFault::Timeout(d) => {
            tokio::time::sleep(d).await;
            None
        }
        FeishuFault::RateLimited => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                99991400,
                "request trigger frequency limit",
            );
            response.headers_mut().insert(
                "x-ogw-ratelimit-reset",
                header::HeaderValue::from_static("1"),
            );
            Some(response)
        }
        FeishuFault::ExpiredToken => {
            s.inner().tokens.remove(&token);
            Some(invalid_token())
        }
    }
}

fn invalid_token() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        99991663,
        "Invalid access token for authorization. Please make a request with token attached.",
    )
}

fn message_data(m: &FeishuSent) -> Value {
    json!({
        "message_id": m.message_id,
        "msg_type": m.msg_type,
        "create_time": chrono::Utc::now().timestamp_millis().to_string(),
        "chat_id": format!("oc_sandbox_{}", m.receive_id),
        "sender": { "id": "cli_sandbox", "id_type": "app_id", "sender_type": "app" },
        "body": { "content": m.content.to_string() },
    })
}

async fn create_message(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(refused) = gate(&s, "/open-apis/im/v1/messages", &headers).await {
        return refused;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, 230001, "invalid request body");
    };
    let id_type = q.get("receive_id_type").cloned().unwrap_or_default();
    if !["open_id", "user_id", "union_id", "email", "chat_id"].contains(&id_type.as_str()) {
        return error(StatusCode::BAD_REQUEST, 230001, "invalid receive_id_type");
    }
    let (Some(to), Some(msg_type), Some(content)) = (
        body["receive_id"].as_str(),
        body["msg_type"].as_str(),
        body["content"].as_str(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            230001,
            "receive_id, msg_type and content are required",
        );
    };
    let Ok(content) = serde_json::from_str::<Value>(content) else {
        return error(StatusCode::BAD_REQUEST, 230001, "content is not JSON");
    };
    let uuid = body["uuid"].as_str().map(str::to_owned);
    if uuid.as_ref().is_some_and(|u| u.chars().count() > 50) {
        return error(StatusCode::BAD_REQUEST, 230001, "uuid is longer than 50");
    }
    let mut inner = s.inner();
    if inner.invalid_users.contains(to) {
        return error(
            StatusCode::BAD_REQUEST,
            230013,
            "Bot has NO availability to this user.",
        );
    }
    let now = Instant::now();
    if let Some(uuid) = &uuid
        && let Some((id, at)) = inner.uuids.get(uuid)
        && now.duration_since(*at) < UUID_WINDOW
    {
        let id = id.clone();
        let earlier = inner.sent.iter().find(|m| m.message_id == id).cloned();
        if let Some(m) = earlier {
            return ok(message_data(&m));
        }
    }
    let seq = inner.next();
    let sent = FeishuSent {
        message_id: format!("om_sandbox{seq:08}"),
        receive_id: to.to_owned(),
        receive_id_type: id_type,
        msg_type: msg_type.to_owned(),
        content,
        uuid: uuid.clone(),
        body: body.clone(),
        seq,
    };
    if let Some(uuid) = uuid {
        inner.uuids.insert(uuid, (sent.message_id.clone(), now));
    }
    inner.sent.push(sent.clone());
    ok(message_data(&sent))
}

async fn update_message(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = gate(&s, "/open-apis/im/v1/messages/{id}", &headers).await {
        return refused;
    }
    let content = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b["content"]
            .as_str()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
    });
    let Some(content) = content else {
        return error(StatusCode::BAD_REQUEST, 230001, "content is not a card");
    };
    let mut inner = s.inner();
    let Some(original) = inner.sent.iter().find(|m| m.message_id == id) else {
        return error(StatusCode::BAD_REQUEST, 230001, "message not found");
    };
    if original.msg_type != "interactive" {
        return error(StatusCode::BAD_REQUEST, 230001, "only cards can be updated");
    }
    // Both cards must say update_multi (Feishu's rule for PATCH).
    if original.content["config"]["update_multi"] != json!(true)
        || content["config"]["update_multi"] != json!(true)
    {
        return error(
            StatusCode::BAD_REQUEST,
            230099,
            "Failed to create card content, ext=ErrCode: 200810; ErrMsg: update_multi is required",
        );
    }
    inner.updates.push(FeishuCardUpdate {
        message_id: id,
        content,
    });
    ok(json!({}))
}

async fn read_users(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = gate(&s, "/open-apis/im/v1/messages/{id}/read_users", &headers).await {
        return refused;
    }
    let inner = s.inner();
    if !inner.sent.iter().any(|m| m.message_id == id) {
        return error(
            StatusCode::BAD_REQUEST,
            230012,
            "Bot is NOT the sender of the message.",
        );
    }
    let id_type = q
        .get("user_id_type")
        .cloned()
        .unwrap_or_else(|| "open_id".into());
    let items: Vec<Value> = inner
        .reads
        .get(&id)
        .into_iter()
        .flatten()
        .map(|(user, at)| {
            json!({
                "user_id_type": id_type,
                "user_id": user,
                "timestamp": at.to_string(),
                "tenant_key": "sandbox",
            })
        })
        .collect();
    ok(json!({ "items": items, "has_more": false }))
}

async fn resource(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((id, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = gate(
        &s,
        "/open-apis/im/v1/messages/{id}/resources/{key}",
        &headers,
    )
    .await
    {
        return refused;
    }
    let inner = s.inner();
    let Some(media) = inner.media.get(&key) else {
        return error(StatusCode::BAD_REQUEST, 234003, "File not in msg.");
    };
    if media.message_id != id {
        return error(StatusCode::BAD_REQUEST, 234003, "File not in msg.");
    }
    if q.get("type") != Some(&media.kind) {
        return error(StatusCode::BAD_REQUEST, 234001, "Invalid request param.");
    }
    let mut response = (
        [(header::CONTENT_TYPE, media.content_type.clone())],
        media.bytes.clone(),
    )
        .into_response();
    if let Some(name) = &media.file_name
        && let Ok(value) =
            header::HeaderValue::from_bytes(format!("attachment; filename=\"{name}\"").as_bytes())
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The `page_token`-th page (a number) of `items`, as Feishu pages them.
fn page(items: Vec<Value>, q: &HashMap<String, String>) -> Response {
    let size: usize = q
        .get("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    if size == 0 || size > MAX_PAGE {
        return error(StatusCode::BAD_REQUEST, 40011, "page size is invalid");
    }
    let start: usize = q
        .get("page_token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let has_more = end < items.len();
    let mut data =
        json!({ "items": items.get(start..end).unwrap_or_default(), "has_more": has_more });
    if has_more {
        data["page_token"] = json!(end.to_string());
    }
    ok(data)
}

async fn department_children(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = "/open-apis/contact/v3/departments/{id}/children";
    if let Some(refused) = gate(&s, path, &headers).await {
        return refused;
    }
    if id != "0" {
        return error(StatusCode::BAD_REQUEST, 40004, "no dept authority error");
    }
    let items = s
        .inner()
        .departments
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "open_department_id": d.open_department_id,
                "department_id": d.open_department_id,
                "parent_department_id": "0",
                "status": { "is_deleted": false },
            })
        })
        .collect();
    page(items, &q)
}

async fn users_by_department(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = "/open-apis/contact/v3/users/find_by_department";
    if let Some(refused) = gate(&s, path, &headers).await {
        return refused;
    }
    let Some(dept) = q.get("department_id") else {
        return error(StatusCode::BAD_REQUEST, 40001, "department_id is required");
    };
    let items = s
        .inner()
        .users
        .iter()
        .filter(|u| u.departments.contains(dept))
        .map(|u| u.user.clone())
        .collect();
    page(items, &q)
}

async fn user_flows(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = "/open-apis/attendance/v1/user_flows/query";
    if let Some(refused) = gate(&s, path, &headers).await {
        return refused;
    }
    if q.get("employee_type").map(String::as_str) != Some("employee_id") {
        return error(StatusCode::BAD_REQUEST, 1220001, "employee_type invalid");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let users: Vec<&str> = body["user_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if users.is_empty() || users.len() > MAX_FLOW_USERS {
        return error(StatusCode::BAD_REQUEST, 1220001, "user_ids: 1 to 50 users");
    }
    let secs = |k: &str| body[k].as_str().and_then(|t| t.parse::<i64>().ok());
    let (Some(from), Some(to)) = (secs("check_time_from"), secs("check_time_to")) else {
        return error(
            StatusCode::BAD_REQUEST,
            1220001,
            "check_time_from and check_time_to are second timestamps",
        );
    };
    let flows: Vec<Value> = s
        .inner()
        .flows
        .iter()
        .filter(|f| f["user_id"].as_str().is_some_and(|u| users.contains(&u)))
        .filter(|f| {
            f["check_time"]
                .as_str()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| from <= t && t <= to)
        })
        .cloned()
        .collect();
    ok(json!({ "user_flow_results": flows }))
}

/// What became of one pushed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuDelivery {
    pub event_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// The HTTP status of the last answer; `None` without one.
    pub status: Option<u16>,
    pub body: String,
    /// Answered with HTTP 200.
    pub delivered: bool,
    /// The event as sent, before encryption.
    pub plaintext: String,
}

/// Plays Feishu's servers: pushes schema 2.0 events, encrypted and signed
/// (when the app has an Encrypt Key), to one app's callback URL, retrying
/// what is not answered with HTTP 200 (Feishu retries after 15 s, 5 min,
/// 1 h and 6 h; the sandbox at once).
pub struct FeishuPhone {
    http: reqwest::Client,
    url: String,
    crypto: Option<FeishuCrypto>,
    verification_token: String,
    app_id: String,
    timeout: Duration,
    retries: u32,
    counter: AtomicU64,
}

impl std::fmt::Debug for FeishuPhone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuPhone")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FeishuPhone {
    pub fn new(
        url: &str,
        encrypt_key: Option<&str>,
        verification_token: &str,
        app_id: &str,
    ) -> FeishuPhone {
        crate::tls::install_crypto_provider();
        FeishuPhone {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            crypto: encrypt_key.map(FeishuCrypto::new),
            verification_token: verification_token.to_owned(),
            app_id: app_id.to_owned(),
            // Feishu waits 3 s.
            timeout: Duration::from_secs(3),
            retries: 4,
            counter: AtomicU64::new(0),
        }
    }

    /// Waits `timeout` for each answer instead of Feishu's 3 s.
    pub fn with_timeout(mut self, timeout: Duration) -> FeishuPhone {
        self.timeout = timeout;
        self
    }

    /// A fresh id (an event's or a message's), unique in this process.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{prefix}{}{n:06}",
            ulid::Ulid::new().to_string().to_lowercase()
        )
    }

    /// The schema 2.0 envelope of `event` of `event_type` created at
    /// `created` (Feishu's own unit: ms, µs for card callbacks).
    pub fn envelope(&self, event_type: &str, created: i64, event: Value) -> Value {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": self.next_id(""),
                "event_type": event_type,
                "create_time": created.to_string(),
                "token": self.verification_token,
                "app_id": self.app_id,
                "tenant_key": "sandbox",
            },
            "event": event,
        })
    }

    /// The body and headers Feishu sends for `plaintext` now.
    pub fn seal(&self, plaintext: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let Some(crypto) = &self.crypto else {
            return (Vec::new(), plaintext.as_bytes().to_vec());
        };
        let timestamp = chrono::Utc::now().timestamp().to_string();
        crypto.seal(plaintext, &timestamp, &self.next_id("n"))
    }

    /// Pushes `envelope` (retrying, each attempt signed anew).
    pub async fn push(&self, envelope: &Value) -> FeishuDelivery {
        let plaintext = envelope.to_string();
        let mut delivery = FeishuDelivery {
            event_id: envelope["header"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            attempts: 0,
            status: None,
            body: String::new(),
            delivered: false,
            plaintext: plaintext.clone(),
        };
        while delivery.attempts <= self.retries {
            delivery.attempts += 1;
            let (headers, body) = self.seal(&plaintext);
            let mut request = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    delivery.status = Some(status);
                    delivery.body = response.text().await.unwrap_or_default();
                    if status == 200 {
                        delivery.delivered = true;
                        return delivery;
                    }
                    // A refusal (4xx) is not retried by the sandbox: the same
                    // bytes would be refused again.
                    if (400..500).contains(&status) {
                        return delivery;
                    }
                }
                Err(_) => {
                    delivery.status = None;
                    delivery.body.clear();
                }
            }
        }
        delivery
    }

    /// An `im.message.receive_v1` of `message_type` with `content` from
    /// `user` (as their `user_id`) in their one-to-one chat, sent at `at`
    /// (seconds); returns the delivery and the message's id.
    pub async fn message(
        &self,
        user: &str,
        message_type: &str,
        content: Value,
        at: i64,
        message_id: Option<String>,
    ) -> FeishuDelivery {
        let message_id = message_id.unwrap_or_else(|| self.next_id("om_"));
        let ms = (at * 1000).to_string();
        let event = json!({
            "sender": {
                "sender_id": { "user_id": user, "open_id": format!("ou_{user}"), "union_id": format!("on_{user}") },
                "sender_type": "user",
                "tenant_key": "sandbox",
            },
            "message": {
                "message_id": message_id,
                "create_time": ms,
                "update_time": ms,
                "chat_id": format!("oc_{user}"),
                "chat_type": "p2p",
                "message_type": message_type,
                "content": content.to_string(),
            },
        });
        self.push(&self.envelope("im.message.receive_v1", at * 1000, event))
            .await
    }

    /// A text message.
    pub async fn text(&self, user: &str, text: &str, at: i64) -> FeishuDelivery {
        self.message(user, "text", json!({ "text": text }), at, None)
            .await
    }

    /// A press of the button with `value` on the card message `message_id`.
    pub async fn press(
        &self,
        user: &str,
        value: Value,
        message_id: &str,
        at: i64,
    ) -> FeishuDelivery {
        let event = json!({
            "operator": { "tenant_key": "sandbox", "user_id": user, "open_id": format!("ou_{user}") },
            "token": self.next_id("c-"),
            "action": { "value": value, "tag": "button" },
            "host": "im_message",
            "context": { "open_message_id": message_id, "open_chat_id": format!("oc_{user}") },
        });
        // Card callbacks carry microseconds.
        self.push(&self.envelope("card.action.trigger", at * 1_000_000, event))
            .await
    }

    /// `im.message.message_read_v1`: `user` read `message_ids` at `at_ms`.
    pub async fn read(&self, user: &str, message_ids: &[String], at_ms: i64) -> FeishuDelivery {
        let event = json!({
            "reader": {
                "reader_id": { "user_id": user, "open_id": format!("ou_{user}") },
                "read_time": at_ms.to_string(),
                "tenant_key": "sandbox",
            },
            "message_id_list": message_ids,
        });
        self.push(&self.envelope("im.message.message_read_v1", at_ms, event))
            .await
    }
}
