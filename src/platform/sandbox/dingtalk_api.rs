//! The sandbox's DingTalk-compatible API server: one server on 127.0.0.1
//! plays both hosts (api.dingtalk.com and oapi.dingtalk.com), speaking their
//! wire formats (see `src/platform/dingtalk/PROTOCOL.md`): both tokens,
//! `oToMessages/batchSend` and `readStatus`, card `createAndDeliver` and
//! update, `messageFiles/download` and the temporary link it hands out, and
//! the address book (`department/listsub`, paged `user/list`, `user/get`).
//!
//! It records what rollcall did, enforces DingTalk's silent drop of
//! identical content to the same user, and meets faults a test pushes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

/// DingTalk accepts the same content to the same user again and drops it
/// without an error; the sandbox remembers content this long (work
/// notifications: "一天只能发送一条内容相同的消息").
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest `size` the sandbox's `topapi/v2/user/list` accepts (the real
/// maximum is not documented; 100 is the common value).
pub const MAX_USER_PAGE: usize = 100;
/// Users per `batchSend` call.
const MAX_BATCH_USERS: usize = 20;

/// A fault the next API call meets (one queue for every call except the two
/// token calls and the download link, in call order). Each takes the form of
/// the host that is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DingtalkFault {
    /// api: HTTP 500 `system.error`; oapi: HTTP 502.
    ServerError,
    /// api: HTTP 500 `system.busy`; oapi: errcode -1.
    Busy,
    /// No answer for this long, then the call goes on.
    Timeout(Duration),
    /// api: HTTP 403 `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`;
    /// oapi: errcode 90018.
    RateLimited,
    /// The caller's token is revoked: api: HTTP 400 `InvalidAuthentication`;
    /// oapi: errcode 42001.
    ExpiredToken,
    /// `batchSend` answers 200 with the users in `flowControlledStaffIdList`
    /// and delivers nothing; other calls meet it as [`Self::RateLimited`].
    FlowControlled,
    /// The IP frequency limit: HTTP 403 `{"status":1111,"wait":5,…}`.
    IpLimited,
}

/// One accepted `batchSend` call.
#[derive(Debug, Clone, PartialEq)]
pub struct DingtalkSent {
    pub user_ids: Vec<String>,
    pub msg_key: String,
    /// `msgParam`, parsed from the JSON string it travels as.
    pub msg_param: Value,
    pub body: Value,
    pub process_query_key: String,
    /// Its place among the sandbox's calls (texts and cards share it).
    pub seq: u64,
}

/// A message DingTalk accepted but did not deliver to `user_id`: the same
/// content had reached that user within [`DUPLICATE_WINDOW`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DingtalkDropped {
    pub user_id: String,
    pub process_query_key: String,
}

/// A card created and delivered, with its params as they stand now.
#[derive(Debug, Clone, PartialEq)]
pub struct DingtalkCard {
    pub out_track_id: String,
    pub template_id: String,
    pub user_id: String,
    pub callback_type: String,
    pub params: Map<String, Value>,
    /// The `createAndDeliver` body as received.
    pub body: Value,
    /// Its place among the sandbox's calls (texts and cards share it).
    pub seq: u64,
}

/// A successful `PUT /v1.0/card/instances`.
#[derive(Debug, Clone, PartialEq)]
pub struct DingtalkCardUpdate {
    pub out_track_id: String,
    pub params: Map<String, Value>,
    pub body: Value,
}

/// One department of the sandbox's address book (the root, 1, is implicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DingtalkDepartment {
    pub dept_id: i64,
    pub name: String,
    pub parent_id: i64,
}

/// One person of the sandbox's address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DingtalkUser {
    pub userid: String,
    pub name: String,
    pub dept_id_list: Vec<i64>,
    pub mobile: Option<String>,
    pub email: Option<String>,
    /// Only `topapi/v2/user/get` returns it.
    pub manager_userid: Option<String>,
    /// DingTalk's `active`: whether the account was activated.
    pub active: bool,
}

struct StoredMedia {
    bytes: Vec<u8>,
    content_type: String,
}

#[derive(Default)]
struct Inner {
    legacy_tokens: HashSet<String>,
    v1_tokens: HashSet<String>,
    next: u64,
    calls: HashMap<String, usize>,
    faults: VecDeque<DingtalkFault>,
    invalid_users: HashSet<String>,
    sent: Vec<DingtalkSent>,
    /// Per (user, msgKey, msgParam): when it last reached the user.
    delivered_content: HashMap<(String, String, String), Instant>,
    delivered: HashMap<String, Vec<String>>,
    dropped: Vec<DingtalkDropped>,
    /// processQueryKey → user → read at (ms).
    reads: HashMap<String, HashMap<String, i64>>,
    cards: Vec<DingtalkCard>,
    card_updates: Vec<DingtalkCardUpdate>,
    /// downloadCode → media.
    media: HashMap<String, StoredMedia>,
    /// link name → downloadCode.
    links: HashMap<String, String>,
    links_expired: bool,
    departments: Vec<DingtalkDepartment>,
    users: Vec<DingtalkUser>,
    /// Where Stream connections are opened (a sandbox gateway's API).
    gateway: Option<String>,
    /// `recordresult` entries served by `attendance/listRecord`.
    punch_records: Vec<Value>,
    list_record_calls: usize,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn count(&mut self, path: &str) {
        *self.calls.entry(path.to_owned()).or_default() += 1;
    }

    /// Delivers message `key` to `user`, unless the same `content`
    /// (message kind and body) reached them within [`DUPLICATE_WINDOW`]:
    /// then it is dropped, silently, as DingTalk does.
    fn deliver_once(&mut self, user: &str, content: (String, String), key: &str, now: Instant) {
        let content = (user.to_owned(), content.0, content.1);
        match self.delivered_content.get(&content) {
            Some(at) if now.duration_since(*at) < DUPLICATE_WINDOW => {
                self.dropped.push(DingtalkDropped {
                    user_id: user.to_owned(),
                    process_query_key: key.to_owned(),
                });
            }
            _ => {
                self.delivered_content.insert(content, now);
                self.delivered
                    .entry(user.to_owned())
                    .or_default()
                    .push(key.to_owned());
            }
        }
    }
}

#[derive(Clone)]
struct Shared {
    app_key: String,
    app_secret: String,
    base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock already failed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running DingTalk sandbox on 127.0.0.1. Its robot code is the app key
/// (as for an app's own robot).
pub struct SandboxDingtalkApi {
    pub addr: SocketAddr,
    shared: Shared,
    outage: super::Outage,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxDingtalkApi {
    /// Starts on a free port, accepting `app_key` / `app_secret`.
    pub async fn start(app_key: &str, app_secret: &str) -> std::io::Result<SandboxDingtalkApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            base: format!("http://{addr}"),
            inner: Arc::default(),
        };
        let router = Router::new()
            .route("/gettoken", get(gettoken))
            .route("/v1.0/oauth2/accessToken", post(access_token))
            .route("/v1.0/robot/oToMessages/batchSend", post(batch_send))
            .route("/v1.0/robot/oToMessages/readStatus", get(read_status))
            .route(
                "/v1.0/card/instances/createAndDeliver",
                post(create_and_deliver),
            )
            .route("/v1.0/card/instances", axum::routing::put(update_card))
            .route("/v1.0/robot/messageFiles/download", post(files_download))
            .route("/sandbox-files/{name}", get(download_link))
            .route("/topapi/v2/department/listsub", post(department_listsub))
            .route("/topapi/v2/user/list", post(user_list))
            .route("/topapi/v2/user/get", post(user_get))
            .route("/attendance/listRecord", post(list_record))
            .route(
                "/topapi/message/corpconversation/asyncsend_v2",
                post(work_notice),
            )
            .route(
                "/topapi/message/corpconversation/getsendresult",
                post(work_notice_result),
            )
            .route("/v1.0/gateway/connections/open", post(open_connection))
            .with_state(shared.clone());
        let outage = super::Outage::default();
        let router = outage.guard(router);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxDingtalkApi {
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

    /// The oapi.dingtalk.com stand-in.
    pub fn api_base(&self) -> String {
        self.shared.base.clone()
    }

    /// The api.dingtalk.com stand-in (the same server).
    pub fn api_base_v1(&self) -> String {
        self.shared.base.clone()
    }

    /// Hands Stream connection opens (`/v1.0/gateway/connections/open`, on
    /// api.dingtalk.com like the rest) to the sandbox gateway whose API is
    /// at `gateway_api_base`, so that one `api_base_v1` serves a tenant.
    pub fn set_gateway(&self, gateway_api_base: &str) {
        self.inner().gateway = Some(gateway_api_base.trim_end_matches('/').to_owned());
    }

    /// The robot code the sandbox accepts (the app key).
    pub fn robot_code(&self) -> String {
        self.shared.app_key.clone()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner()
    }

    /// Queues a fault for the next API call.
    pub fn push_fault(&self, fault: DingtalkFault) {
        self.inner().faults.push_back(fault);
    }

    /// Makes `user` unknown to the app: `batchSend` lists them in
    /// `invalidStaffIdList`, cards answer `param.userIdNotExist`.
    pub fn mark_invalid(&self, user: &str) {
        self.inner().invalid_users.insert(user.to_owned());
    }

    /// Every accepted `batchSend` (dropped ones included: DingTalk accepts
    /// them too), oldest first.
    pub fn sent(&self) -> Vec<DingtalkSent> {
        self.inner().sent.clone()
    }

    /// The processQueryKeys of the messages that reached `user`.
    pub fn delivered_to(&self, user: &str) -> Vec<String> {
        self.inner()
            .delivered
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Messages accepted but not delivered because the user had received
    /// the same content within [`DUPLICATE_WINDOW`], oldest first.
    pub fn dropped(&self) -> Vec<DingtalkDropped> {
        self.inner().dropped.clone()
    }

    /// Marks the message `process_query_key` read by `user` at `at_ms`.
    pub fn mark_read(&self, process_query_key: &str, user: &str, at_ms: i64) {
        self.inner()
            .reads
            .entry(process_query_key.to_owned())
            .or_default()
            .insert(user.to_owned(), at_ms);
    }

    /// Every card created, with its params as updated since.
    pub fn cards(&self) -> Vec<DingtalkCard> {
        self.inner().cards.clone()
    }

    /// Adds punches to the attendance records (`attendance/listRecord`
    /// entries: `userId`, `userCheckTime` (ms), `userLatitude`,
    /// `userLongitude`, `userAddress`, `timeResult`, `sourceType`, …).
    pub fn add_punch_records(&self, records: Vec<Value>) {
        self.inner().punch_records.extend(records);
    }

    /// How many `attendance/listRecord` calls were answered.
    pub fn list_record_calls(&self) -> usize {
        self.inner().list_record_calls
    }

    /// Every successful card update, oldest first.
    pub fn card_updates(&self) -> Vec<DingtalkCardUpdate> {
        self.inner().card_updates.clone()
    }

    /// Holds media a user sent to the robot and returns its `downloadCode`.
    pub fn add_media(&self, bytes: Vec<u8>, content_type: &str) -> String {
        let mut inner = self.inner();
        let code = format!("sandbox-download-code-{}", inner.next());
        inner.media.insert(
            code.clone(),
            StoredMedia {
                bytes,
                content_type: content_type.to_owned(),
            },
        );
        code
    }

    /// Makes every download link handed out so far answer 403, as an
    /// expired signed link does.
    pub fn expire_download_links(&self) {
        self.inner().links_expired = true;
    }

    /// Sets the address book (the root department, 1, is implicit).
    pub fn set_directory(&self, departments: Vec<DingtalkDepartment>, users: Vec<DingtalkUser>) {
        let mut inner = self.inner();
        inner.departments = departments;
        inner.users = users;
    }

    /// How many times `path` was called (e.g. `/gettoken`,
    /// `/v1.0/oauth2/accessToken`, `/topapi/v2/user/list`), faulted calls
    /// and refusals included.
    pub fn calls(&self, path: &str) -> usize {
        self.inner().calls.get(path).copied().unwrap_or(0)
    }
}

impl Drop for SandboxDingtalkApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An api.dingtalk.com error answer.
fn v1_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message, "requestid": "sandbox-request" })),
    )
        .into_response()
}

/// An oapi answer with a non-zero errcode (HTTP 200, as DingTalk does).
fn oapi_error(errcode: i64, errmsg: &str) -> Response {
    Json(json!({ "errcode": errcode, "errmsg": errmsg, "request_id": "sandbox-request" }))
        .into_response()
}

fn ip_limited() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "status": 1111, "wait": 5, "source": "x5", "punish": "deny", "uuid": "sandbox" })),
    )
        .into_response()
}

async fn gettoken(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = s.inner();
    inner.count("/gettoken");
    if q.get("appkey") != Some(&s.app_key) || q.get("appsecret") != Some(&s.app_secret) {
        return oapi_error(40089, "不合法的corpid或corpsecret");
    }
    let token = format!("sandbox-legacy-token-{}", inner.next());
    inner.legacy_tokens.insert(token.clone());
    Json(json!({ "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200 }))
        .into_response()
}

async fn access_token(State(s): State<Shared>, body: Bytes) -> Response {
    let mut inner = s.inner();
    inner.count("/v1.0/oauth2/accessToken");
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return missing_body();
    };
    if body["appKey"].as_str() != Some(&s.app_key)
        || body["appSecret"].as_str() != Some(&s.app_secret)
    {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let token = format!("sandbox-v1-token-{}", inner.next());
    inner.v1_tokens.insert(token.clone());
    Json(json!({ "accessToken": token, "expireIn": 7200 })).into_response()
}

/// What a gate decided about a call.
enum Gate {
    Go,
    /// Go on, but the users are flow-controlled (`batchSend` only).
    FlowControlled,
    Refuse(Response),
}

/// Counts the call to `path` on api.dingtalk.com, checks the token header,
/// then meets the next queued fault.
async fn v1_gate(s: &Shared, path: &str, headers: &HeaderMap) -> Gate {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fault = {
        let mut inner = s.inner();
        inner.count(path);
        if token.is_empty() {
            return Gate::Refuse(v1_error(StatusCode::UNAUTHORIZED, "-", "Unauthorized"));
        }
        if !inner.v1_tokens.contains(&token) {
            return Gate::Refuse(v1_error(
                StatusCode::BAD_REQUEST,
                "InvalidAuthentication",
                "不合法的access_token",
            ));
        }
        inner.faults.pop_front()
    };
    let Some(fault) = fault else {
        return Gate::Go;
    };
    match fault {
        DingtalkFault::ServerError => Gate::Refuse(v1_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "system.error",
            "系统错误",
        )),
        DingtalkFault::Busy => Gate::Refuse(v1_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "system.busy",
            "系统繁忙",
        )),
        DingtalkFault::Timeout(d) => {
            tokio::time::sleep(d).await;
            Gate::Go
        }
        DingtalkFault::FlowControlled if path == "/v1.0/robot/oToMessages/batchSend" => {
            Gate::FlowControlled
        }
        DingtalkFault::RateLimited | DingtalkFault::FlowControlled => Gate::Refuse(v1_error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "应用调用该接口的并发量超过限制",
        )),
        DingtalkFault::ExpiredToken => {
            s.inner().v1_tokens.remove(&token);
            Gate::Refuse(v1_error(
                StatusCode::BAD_REQUEST,
                "InvalidAuthentication",
                "不合法的access_token",
            ))
        }
        DingtalkFault::IpLimited => Gate::Refuse(ip_limited()),
    }
}

/// Counts the call to `path` on oapi, checks the `access_token` query, then
/// meets the next queued fault.
async fn oapi_gate(s: &Shared, path: &str, q: &HashMap<String, String>) -> Option<Response> {
    let token = q.get("access_token").cloned().unwrap_or_default();
    let fault = {
        let mut inner = s.inner();
        inner.count(path);
        if token.is_empty() {
            return Some(oapi_error(41001, "缺少access_token参数"));
        }
        if !inner.legacy_tokens.contains(&token) {
            return Some(oapi_error(40014, "不合法的access_token"));
        }
        inner.faults.pop_front()
    }?;
    match fault {
        DingtalkFault::ServerError => Some(StatusCode::BAD_GATEWAY.into_response()),
        DingtalkFault::Busy => Some(oapi_error(-1, "系统繁忙")),
        DingtalkFault::Timeout(d) => {
            tokio::time::sleep(d).await;
            None
        }
        DingtalkFault::RateLimited | DingtalkFault::FlowControlled => {
            Some(oapi_error(90018, "当前企业对该API的调用频率超过限制"))
        }
        DingtalkFault::ExpiredToken => {
            s.inner().legacy_tokens.remove(&token);
            Some(oapi_error(42001, "access_token超时"))
        }
        DingtalkFault::IpLimited => Some(ip_limited()),
    }
}

/// api.dingtalk.com's answer to a body that is not JSON.
fn missing_body() -> Response {
    v1_error(StatusCode::BAD_REQUEST, "MissingBody", "body is mandatory")
}

fn invalid_parameter(what: &str) -> Response {
    v1_error(
        StatusCode::BAD_REQUEST,
        &format!("invalidParameter.{what}"),
        &format!("{what} is invalid"),
    )
}

async fn batch_send(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let flow_controlled = match v1_gate(&s, "/v1.0/robot/oToMessages/batchSend", &headers).await {
        Gate::Refuse(r) => return r,
        Gate::FlowControlled => true,
        Gate::Go => false,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return missing_body();
    };
    if body["robotCode"].as_str() != Some(&s.app_key) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "robot.oto.notExist",
            "robot not found",
        );
    }
    let user_ids: Vec<String> = body["userIds"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if user_ids.is_empty() {
        return invalid_parameter("userIds");
    }
    if user_ids.len() > MAX_BATCH_USERS {
        return invalid_parameter("userIds.overMax");
    }
    let Some(msg_key) = body["msgKey"].as_str().map(str::to_owned) else {
        return invalid_parameter("msgKey");
    };
    // msgParam is a JSON string holding an object.
    let Some(param_text) = body["msgParam"].as_str().map(str::to_owned) else {
        return invalid_parameter("msgParam");
    };
    let Ok(msg_param) = serde_json::from_str::<Value>(&param_text) else {
        return invalid_parameter("msgParam");
    };
    let required: &[&str] = match msg_key.as_str() {
        "sampleText" => &["content"],
        "sampleMarkdown" => &["title", "text"],
        _ => &[],
    };
    if required.iter().any(|k| !msg_param[*k].is_string()) {
        return invalid_parameter("msgParam");
    }
    let mut inner = s.inner();
    let n = inner.next();
    // Real keys are base64: the `+`, `/` and `=` test the caller's URL encoding.
    let key = format!("sandbox+pqk/{n}=");
    let invalid: Vec<String> = user_ids
        .iter()
        .filter(|u| inner.invalid_users.contains(*u))
        .cloned()
        .collect();
    let mut throttled = Vec::new();
    let now = Instant::now();
    for user in user_ids.iter().filter(|u| !invalid.contains(u)) {
        if flow_controlled {
            throttled.push(user.clone());
            continue;
        }
        inner.deliver_once(user, (msg_key.clone(), param_text.clone()), &key, now);
    }
    inner.sent.push(DingtalkSent {
        user_ids,
        msg_key,
        msg_param,
        body,
        process_query_key: key.clone(),
        seq: n,
    });
    Json(json!({
        "processQueryKey": key,
        "invalidStaffIdList": invalid,
        "flowControlledStaffIdList": throttled,
    }))
    .into_response()
}

async fn read_status(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Gate::Refuse(r) = v1_gate(&s, "/v1.0/robot/oToMessages/readStatus", &headers).await {
        return r;
    }
    if q.get("robotCode") != Some(&s.app_key) {
        return invalid_parameter("robotCode");
    }
    let key = q.get("processQueryKey").cloned().unwrap_or_default();
    let inner = s.inner();
    let Some(sent) = inner.sent.iter().find(|m| m.process_query_key == key) else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "invalid.processQueryKey",
            "processQueryKey不合法",
        );
    };
    let reads = inner.reads.get(&key);
    // The recipients it reached (not the invalid, throttled or dropped).
    let list: Vec<Value> = sent
        .user_ids
        .iter()
        .filter(|u| {
            inner
                .delivered
                .get(*u)
                .is_some_and(|keys| keys.contains(&key))
        })
        .map(|u| {
            let name = inner
                .users
                .iter()
                .find(|d| &d.userid == u)
                .map(|d| d.name.clone())
                .unwrap_or_default();
            let mut info = json!({ "name": name, "userId": u, "readStatus": "UNREAD" });
            if let Some(at) = reads.and_then(|r| r.get(u)) {
                info["readStatus"] = json!("READ");
                info["readTimestamp"] = json!(at);
            }
            info
        })
        .collect();
    Json(json!({ "sendStatus": "SUCCESS", "messageReadInfoList": list })).into_response()
}

/// A `cardParamMap`, whose values must all be strings.
fn param_map(value: &Value) -> Option<Map<String, Value>> {
    let map = value.as_object()?;
    map.values().all(Value::is_string).then(|| map.clone())
}

async fn create_and_deliver(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Gate::Refuse(r) = v1_gate(&s, "/v1.0/card/instances/createAndDeliver", &headers).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return missing_body();
    };
    let Some(template_id) = body["cardTemplateId"].as_str().filter(|t| !t.is_empty()) else {
        return invalid_parameter("cardTemplateId");
    };
    let Some(out_track_id) = body["outTrackId"].as_str().filter(|t| !t.is_empty()) else {
        return invalid_parameter("outTrackId");
    };
    let Some(params) = param_map(&body["cardData"]["cardParamMap"]) else {
        return invalid_parameter("cardData");
    };
    let deliver = &body["imRobotOpenDeliverModel"];
    if deliver["spaceType"] != "IM_ROBOT" {
        return invalid_parameter("imRobotOpenDeliverModel");
    }
    if deliver["robotCode"]
        .as_str()
        .is_some_and(|code| code != s.app_key)
    {
        return invalid_parameter("robotCode");
    }
    let Some(user) = body["openSpaceId"]
        .as_str()
        .and_then(|id| id.strip_prefix("dtv1.card//IM_ROBOT."))
        .filter(|u| !u.is_empty() && !u.contains(';'))
    else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "param.openSpaceIdInvalid",
            "openSpaceId不合法",
        );
    };
    let mut inner = s.inner();
    if inner.cards.iter().any(|c| c.out_track_id == out_track_id) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "param.cardAlreadyExist",
            "卡片已存在",
        );
    }
    if inner.invalid_users.contains(user) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "param.userIdNotExist",
            "用户不存在",
        );
    }
    let seq = inner.next();
    let carrier = format!("sandbox+card/{seq}=");
    inner.cards.push(DingtalkCard {
        out_track_id: out_track_id.to_owned(),
        template_id: template_id.to_owned(),
        user_id: user.to_owned(),
        callback_type: body["callbackType"].as_str().unwrap_or_default().to_owned(),
        params,
        body: body.clone(),
        seq,
    });
    Json(json!({
        "success": true,
        "result": {
            "outTrackId": out_track_id,
            "deliverResults": [{
                "spaceType": "IM_ROBOT",
                "spaceId": user,
                "success": true,
                "carrierId": carrier,
                "errorMsg": "",
            }],
        },
    }))
    .into_response()
}

async fn update_card(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Gate::Refuse(r) = v1_gate(&s, "/v1.0/card/instances", &headers).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return missing_body();
    };
    let out_track_id = body["outTrackId"].as_str().unwrap_or_default().to_owned();
    let card_data = &body["cardData"]["cardParamMap"];
    let private = &body["privateData"];
    let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
    if empty(card_data) && empty(private) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "param.cardDataAndPrivateDataBothEmpty",
            "cardData和privateData不能同时为空",
        );
    }
    let params = if empty(card_data) {
        Map::new()
    } else {
        match param_map(card_data) {
            Some(p) => p,
            None => return invalid_parameter("cardData"),
        }
    };
    let by_key = body["cardUpdateOptions"]["updateCardDataByKey"] == json!(true);
    let mut inner = s.inner();
    let Some(card) = inner
        .cards
        .iter_mut()
        .find(|c| c.out_track_id == out_track_id)
    else {
        return v1_error(StatusCode::BAD_REQUEST, "param.cardNotExist", "卡片不存在");
    };
    if !empty(card_data) {
        // Without updateCardDataByKey the whole cardData is replaced.
        if !by_key {
            card.params.clear();
        }
        card.params.extend(params.clone());
    }
    inner.card_updates.push(DingtalkCardUpdate {
        out_track_id,
        params,
        body,
    });
    Json(json!({ "success": true, "result": true })).into_response()
}

async fn files_download(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Gate::Refuse(r) = v1_gate(&s, "/v1.0/robot/messageFiles/download", &headers).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return missing_body();
    };
    if body["robotCode"].as_str() != Some(&s.app_key) {
        return invalid_parameter("robotCode.auth");
    }
    let code = body["downloadCode"].as_str().unwrap_or_default();
    let mut inner = s.inner();
    if !inner.media.contains_key(code) {
        return invalid_parameter("robotCode.downloadCode");
    }
    let n = inner.next();
    let name = format!("{n}.file");
    inner.links.insert(name.clone(), code.to_owned());
    // Shaped like DingTalk's signed OSS links.
    let url = format!(
        "{}/sandbox-files/{name}?Expires=4102444800&OSSAccessKeyId=sandbox&Signature=sandbox-signature-{n}",
        s.base
    );
    Json(json!({ "downloadUrl": url })).into_response()
}

/// The temporary link: no token, the bytes with their media type.
async fn download_link(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let inner = s.inner();
    if inner.links_expired {
        return (StatusCode::FORBIDDEN, "Request has expired").into_response();
    }
    let Some(media) = inner
        .links
        .get(&name)
        .and_then(|code| inner.media.get(code))
    else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    (
        [(header::CONTENT_TYPE, media.content_type.clone())],
        media.bytes.clone(),
    )
        .into_response()
}

/// oapi's answer to a body that is not JSON.
fn bad_oapi_body() -> Response {
    oapi_error(40035, "不合法的参数")
}

async fn department_listsub(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/topapi/v2/department/listsub", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    let parent = body["dept_id"].as_i64().unwrap_or(1);
    let inner = s.inner();
    if parent != 1 && !inner.departments.iter().any(|d| d.dept_id == parent) {
        return oapi_error(60003, "部门不存在");
    }
    let children: Vec<Value> = inner
        .departments
        .iter()
        .filter(|d| d.parent_id == parent && d.dept_id != parent)
        .map(|d| {
            json!({
                "dept_id": d.dept_id,
                "name": d.name,
                "parent_id": d.parent_id,
                "create_dept_group": false,
                "auto_add_user": false,
            })
        })
        .collect();
    Json(json!({ "errcode": 0, "errmsg": "ok", "result": children, "request_id": "sandbox-request" }))
        .into_response()
}

/// A user as `user/list` shows them (no `manager_userid`).
fn listed_user(u: &DingtalkUser) -> Value {
    let mut user = json!({
        "userid": u.userid,
        "unionid": format!("union-{}", u.userid),
        "name": u.name,
        "dept_id_list": u.dept_id_list,
        "active": u.active,
        "admin": false,
        "boss": false,
        "leader": false,
    });
    if let Some(m) = &u.mobile {
        user["mobile"] = json!(m);
    }
    if let Some(e) = &u.email {
        user["email"] = json!(e);
    }
    user
}

/// The `msgKey` under which [`SandboxDingtalkApi::sent`] lists work
/// notices (their `msg_param` is the notice's `msg`, their
/// `process_query_key` the task id).
pub const WORK_NOTICE_KEY: &str = "workNotice";

/// `asyncsend_v2`: a work notice to `userid_list` (a comma string). Like
/// DingTalk, it answers with a task id and then drops, silently, a notice
/// whose content already reached the user ([`DUPLICATE_WINDOW`]), and
/// leaves out users it does not know.
async fn work_notice(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/topapi/message/corpconversation/asyncsend_v2", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    if body["agent_id"].as_i64().is_none_or(|a| a <= 0) {
        return oapi_error(40035, "不合法的参数: agent_id");
    }
    let user_ids: Vec<String> = body["userid_list"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if user_ids.is_empty() || user_ids.len() > 100 {
        return oapi_error(40035, "不合法的参数: userid_list");
    }
    let msg = body["msg"].clone();
    if msg["msgtype"] != "text" || !msg["text"]["content"].is_string() {
        return oapi_error(40035, "不合法的参数: msg");
    }
    let mut inner = s.inner();
    let n = inner.next();
    let task = (1_000_000 + n).to_string();
    let now = Instant::now();
    let known: Vec<String> = user_ids
        .iter()
        .filter(|u| !inner.invalid_users.contains(*u))
        .cloned()
        .collect();
    for user in &known {
        inner.deliver_once(
            user,
            (WORK_NOTICE_KEY.to_owned(), msg.to_string()),
            &task,
            now,
        );
    }
    inner.sent.push(DingtalkSent {
        user_ids,
        msg_key: WORK_NOTICE_KEY.to_owned(),
        msg_param: msg,
        body,
        process_query_key: task.clone(),
        seq: n,
    });
    Json(json!({ "errcode": 0, "errmsg": "ok", "task_id": n + 1_000_000, "request_id": format!("sandbox-{n}") }))
        .into_response()
}

/// `getsendresult`: who of a work notice's recipients read it, who did not,
/// and whom it never reached (unknown: invalid; dropped as a duplicate:
/// forbidden, code 143106).
async fn work_notice_result(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/topapi/message/corpconversation/getsendresult", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    let task = body["task_id"]
        .as_i64()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let inner = s.inner();
    let Some(sent) = inner
        .sent
        .iter()
        .find(|m| m.msg_key == WORK_NOTICE_KEY && m.process_query_key == task)
    else {
        return oapi_error(40035, "不合法的参数: task_id");
    };
    let reads = inner.reads.get(&task);
    let (mut read, mut unread, mut invalid, mut forbidden, mut codes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for user in &sent.user_ids {
        if inner.invalid_users.contains(user) {
            invalid.push(user.clone());
        } else if inner
            .dropped
            .iter()
            .any(|d| &d.user_id == user && d.process_query_key == task)
        {
            forbidden.push(user.clone());
            codes.push(json!({ "code": "143106", "count": 1, "userid": user }));
        } else if reads.is_some_and(|r| r.contains_key(user)) {
            read.push(user.clone());
        } else {
            unread.push(user.clone());
        }
    }
    Json(json!({
        "errcode": 0,
        "send_result": {
            "invalid_user_id_list": invalid,
            "forbidden_user_id_list": forbidden,
            "failed_user_id_list": [],
            "read_user_id_list": read,
            "unread_user_id_list": unread,
            "invalid_dept_id_list": [],
            "forbidden_list": codes,
        },
        "request_id": format!("sandbox-result-{task}"),
    }))
    .into_response()
}

/// Most users and the longest period one `attendance/listRecord` call takes.
const LIST_RECORD_USERS: usize = 50;
const LIST_RECORD_DAYS: i64 = 7;

/// `attendance/listRecord`: the punches of `userIds` between
/// `checkDateFrom` and `checkDateTo` (Beijing time), with DingTalk's limits.
async fn list_record(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/attendance/listRecord", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    let users: Vec<&str> = body["userIds"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if users.is_empty() || users.len() > LIST_RECORD_USERS {
        return oapi_error(40032, "不合法的userid列表长度");
    }
    let beijing = |key: &str| {
        let text = body[key].as_str()?;
        let local = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
        local
            .and_local_timezone(chrono_tz::Asia::Shanghai)
            .earliest()
            .map(|t| t.timestamp_millis())
    };
    let (Some(from), Some(to)) = (beijing("checkDateFrom"), beijing("checkDateTo")) else {
        return oapi_error(40035, "不合法的参数: checkDateFrom/checkDateTo");
    };
    if to < from || to - from > LIST_RECORD_DAYS * 24 * 60 * 60 * 1000 {
        return oapi_error(40035, "不合法的参数: 起始与结束工作日最多相隔7天");
    }
    let mut inner = s.inner();
    inner.list_record_calls += 1;
    let list: Vec<&Value> = inner
        .punch_records
        .iter()
        .filter(|r| r["userId"].as_str().is_some_and(|u| users.contains(&u)))
        .filter(|r| {
            r["userCheckTime"]
                .as_i64()
                .is_some_and(|t| (from..=to).contains(&t))
        })
        .collect();
    Json(json!({ "errcode": 0, "errmsg": "ok", "recordresult": list })).into_response()
}

async fn user_list(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/topapi/v2/user/list", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    let (Some(dept), Some(cursor), Some(size)) = (
        body["dept_id"].as_i64(),
        body["cursor"].as_u64(),
        body["size"].as_u64(),
    ) else {
        return oapi_error(40035, "不合法的参数");
    };
    let (cursor, size) = (cursor as usize, size as usize);
    if size == 0 || size > MAX_USER_PAGE {
        return oapi_error(40035, "不合法的参数: size");
    }
    let inner = s.inner();
    if dept != 1 && !inner.departments.iter().any(|d| d.dept_id == dept) {
        return oapi_error(60003, "部门不存在");
    }
    let members: Vec<&DingtalkUser> = inner
        .users
        .iter()
        .filter(|u| u.dept_id_list.contains(&dept))
        .collect();
    let page: Vec<Value> = members
        .iter()
        .skip(cursor)
        .take(size)
        .map(|u| listed_user(u))
        .collect();
    let has_more = cursor + size < members.len();
    let mut result = json!({ "has_more": has_more, "list": page });
    if has_more {
        result["next_cursor"] = json!(cursor + size);
    }
    Json(json!({ "errcode": 0, "errmsg": "ok", "result": result, "request_id": "sandbox-request" }))
        .into_response()
}

async fn user_get(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = oapi_gate(&s, "/topapi/v2/user/get", &q).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_oapi_body();
    };
    let userid = body["userid"].as_str().unwrap_or_default();
    let inner = s.inner();
    let Some(user) = inner.users.iter().find(|u| u.userid == userid) else {
        return oapi_error(60121, "找不到该用户");
    };
    let mut result = listed_user(user);
    if let Some(m) = &user.manager_userid {
        result["manager_userid"] = json!(m);
    }
    Json(json!({ "errcode": 0, "errmsg": "ok", "result": result, "request_id": "sandbox-request" }))
        .into_response()
}

/// `POST /v1.0/gateway/connections/open`, passed to the gateway as it came.
async fn open_connection(State(shared): State<Shared>, body: Bytes) -> Response {
    let Some(gateway) = shared.inner().gateway.clone() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "sandbox.noGateway", "message": "no Stream gateway set"})),
        )
            .into_response();
    };
    crate::tls::install_crypto_provider();
    let answer = reqwest::Client::new()
        .post(format!("{gateway}/v1.0/gateway/connections/open"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await;
    match answer {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                bytes.to_vec(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
