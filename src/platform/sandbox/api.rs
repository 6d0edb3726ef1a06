//! The sandbox's WeCom-compatible API server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::platform::wecom::directory::{Department, DirectoryUser};

/// WeCom drops (without an error) what an app sends one member beyond 30
/// messages a minute ("每应用对同一个成员不可超过30次/分钟，超过部分会被丢弃不下发").
pub const PER_MEMBER_PER_MINUTE: usize = 30;
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A fault the next call to `message/send`, `message/update_template_card`
/// or `media/get` will meet (one queue for the three, in call order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `message/send` accepts and records the message, then answers only
    /// after this long (a sender killed meanwhile never sees the receipt).
    AcceptThenHang(Duration),
    /// HTTP 502.
    ServerError,
    /// No answer for this long.
    Timeout(Duration),
    /// errcode -1, system busy.
    Busy,
    /// errcode 45009, frequency limit.
    RateLimited,
    /// HTTP 429 from a gateway in front of WeCom, `Retry-After: 2`.
    TooManyRequests,
    /// errcode 42001: the caller's token has expired (and is revoked).
    ExpiredToken,
    /// errcode 45001, media file too large (`media/get` only; other calls
    /// answer it as they would any 45001).
    MediaTooLarge,
}

/// A message the sandbox accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub touser: String,
    pub msgtype: String,
    pub body: Value,
    pub msgid: String,
}

/// A message WeCom accepted but did not deliver to `touser`, because that
/// member had already received [`PER_MEMBER_PER_MINUTE`] in the last minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedMessage {
    pub touser: String,
    pub msgid: String,
}

/// A successful `message/update_template_card` call.
#[derive(Debug, Clone, PartialEq)]
pub struct CardUpdate {
    pub userids: Vec<String>,
    pub response_code: String,
    /// `button.replace_name`, when the call greyed the button out.
    pub replace_name: Option<String>,
    /// `template_card`, when the call replaced the whole card.
    pub template_card: Option<Value>,
    pub body: Value,
}

/// Media served by `media/get`.
#[derive(Debug, Clone)]
struct StoredMedia {
    bytes: Vec<u8>,
    content_type: String,
}

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    gettoken_calls: u64,
    faults: VecDeque<Fault>,
    invalid_users: HashSet<String>,
    sent: Vec<SentMessage>,
    next: u64,
    /// Answers of recent sends, by duplicate-check key.
    sent_recently: HashMap<String, (Instant, Value)>,
    duplicates: u64,
    departments: Vec<Department>,
    users: Vec<DirectoryUser>,
    /// response_code → already used.
    response_codes: HashMap<String, bool>,
    updates: Vec<CardUpdate>,
    media: HashMap<String, StoredMedia>,
    /// Per member (lower case): delivery times within the rate window.
    recent: HashMap<String, VecDeque<Instant>>,
    delivered: HashMap<String, usize>,
    dropped: Vec<DroppedMessage>,
    /// The per-member limit: this many messages per window.
    member_limit: Option<(usize, Duration)>,
    /// `checkindata` entries served by `checkin/getcheckindata`.
    checkins: Vec<Value>,
    /// `checkin/getcheckindata` answers 48002 (the app may not read 打卡 data).
    checkins_denied: bool,
    checkin_calls: usize,
}

impl Inner {
    /// Counts a delivery to `user`, or records it as dropped when the member
    /// is over the per-minute limit; returns whether it was delivered.
    fn deliver(&mut self, user: &str, msgid: &str, now: Instant) -> bool {
        let (limit, window) = self
            .member_limit
            .unwrap_or((PER_MEMBER_PER_MINUTE, RATE_WINDOW));
        let recent = self.recent.entry(user.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() >= limit {
            self.dropped.push(DroppedMessage {
                touser: user.to_owned(),
                msgid: msgid.to_owned(),
            });
            return false;
        }
        recent.push_back(now);
        *self.delivered.entry(user.to_owned()).or_default() += 1;
        true
    }

    fn issue_response_code(&mut self) -> String {
        self.next += 1;
        let code = format!("sandbox-rc-{}-{:08x}", self.next, rand::random::<u32>());
        self.response_codes.insert(code.clone(), false);
        code
    }
}

#[derive(Clone)]
struct Shared {
    corp_id: String,
    secret: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running sandbox API on 127.0.0.1.
pub struct SandboxApi {
    pub addr: SocketAddr,
    shared: Shared,
    outage: super::Outage,
    server: tokio::task::JoinHandle<()>,
}

impl SandboxApi {
    /// Starts on a free port, accepting `corp_id` / `secret`.
    pub async fn start(corp_id: &str, secret: &str) -> std::io::Result<SandboxApi> {
        let shared = Shared {
            corp_id: corp_id.into(),
            secret: secret.into(),
            inner: Arc::default(),
        };
        let router = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/message/send", post(send))
            .route(
                "/cgi-bin/message/update_template_card",
                post(update_template_card),
            )
            .route("/cgi-bin/media/get", get(media_get))
            .route("/cgi-bin/department/list", get(department_list))
            .route("/cgi-bin/user/list", get(user_list))
            .route("/cgi-bin/checkin/getcheckindata", post(checkin_data))
            .with_state(shared.clone());
        let outage = super::Outage::default();
        let router = outage.guard(router);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxApi {
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

    /// The `api_base` to configure.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("sandbox state")
    }

    /// Queues a fault for the next call.
    pub fn push_fault(&self, fault: Fault) {
        self.inner().faults.push_back(fault);
    }

    /// Makes `user` unknown to the app (81013 when messaged alone).
    pub fn mark_invalid(&self, user: &str) {
        self.inner().invalid_users.insert(user.to_lowercase());
    }

    /// Every message accepted so far (dropped ones included: WeCom accepts
    /// them too).
    pub fn sent(&self) -> Vec<SentMessage> {
        self.inner().sent.clone()
    }

    /// How many messages reached `user` (case-insensitive), not counting the
    /// ones dropped by the per-member limit.
    pub fn sent_to(&self, user: &str) -> usize {
        self.inner()
            .delivered
            .get(&user.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Messages accepted but dropped by the 30-a-minute limit, oldest first.
    pub fn dropped(&self) -> Vec<DroppedMessage> {
        self.inner().dropped.clone()
    }

    /// Every successful `update_template_card`, oldest first.
    pub fn updates(&self) -> Vec<CardUpdate> {
        self.inner().updates.clone()
    }

    /// A fresh single-use response code, as WeCom puts in the
    /// `template_card_event` callback of a button press.
    pub fn issue_response_code(&self) -> String {
        self.inner().issue_response_code()
    }

    /// Registers media for `media/get` and returns its `media_id`.
    pub fn add_media(&self, bytes: Vec<u8>, content_type: &str) -> String {
        let mut inner = self.inner();
        inner.next += 1;
        // Real media ids are long opaque strings; the counter keeps them unique.
        let media_id = format!("3sandbox{}{:016x}", inner.next, rand::random::<u64>());
        inner.media.insert(
            media_id.clone(),
            StoredMedia {
                bytes,
                content_type: content_type.to_owned(),
            },
        );
        media_id
    }

    /// Adds punches to WeCom's 打卡 records (`checkin/getcheckindata`
    /// entries: `userid`, `checkin_time`, `exception_type`, `lat`, `lng`, …).
    pub fn add_checkins(&self, records: Vec<Value>) {
        self.inner().checkins.extend(records);
    }

    /// From now on `checkin/getcheckindata` answers 48002, as WeCom does
    /// for an app not among those allowed to read 打卡 data.
    pub fn deny_checkins(&self) {
        self.inner().checkins_denied = true;
    }

    /// How many `checkin/getcheckindata` calls were answered.
    pub fn checkin_calls(&self) -> usize {
        self.inner().checkin_calls
    }

    /// Sets the address book served by `department/list` and `user/list`.
    pub fn set_directory(&self, departments: Vec<Department>, users: Vec<DirectoryUser>) {
        let mut inner = self.inner();
        inner.departments = departments;
        inner.users = users;
    }

    /// Changes the per-member limit (default 30 a minute), so a test can
    /// reach it in seconds.
    pub fn set_member_limit(&self, messages: usize, window: Duration) {
        self.inner().member_limit = Some((messages, window));
    }

    /// How many sends were recognised as duplicates (and not delivered again).
    pub fn duplicates(&self) -> u64 {
        self.inner().duplicates
    }

    /// How many times `gettoken` was called.
    pub fn gettoken_calls(&self) -> u64 {
        self.inner().gettoken_calls
    }
}

impl Drop for SandboxApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(errcode: i64, errmsg: &str) -> Response {
    Json(json!({ "errcode": errcode, "errmsg": errmsg })).into_response()
}

async fn gettoken(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = s.inner.lock().expect("sandbox state");
    inner.gettoken_calls += 1;
    if q.get("corpid") != Some(&s.corp_id) {
        return reply(40013, "invalid corpid");
    }
    if q.get("corpsecret") != Some(&s.secret) {
        return reply(40001, "invalid credential");
    }
    inner.next += 1;
    let token = format!("sandbox-token-{}", inner.next);
    inner.tokens.insert(token.clone());
    Json(json!({ "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200 }))
        .into_response()
}

async fn send(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let hang = {
        let mut inner = s.inner.lock().expect("sandbox state");
        match inner.faults.front() {
            Some(Fault::AcceptThenHang(d))
                if inner
                    .tokens
                    .contains(q.get("access_token").map(String::as_str).unwrap_or("")) =>
            {
                let d = *d;
                inner.faults.pop_front();
                Some(d)
            }
            _ => None,
        }
    };
    if hang.is_none()
        && let Some(refusal) = token_and_fault(&s, &q).await
    {
        return refusal;
    }
    let answer = accept(&s, body);
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    Json(answer).into_response()
}

/// Records an accepted message (or recognises a duplicate) and makes the answer.
fn accept(s: &Shared, body: Value) -> Value {
    let mut inner = s.inner.lock().expect("sandbox state");
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
    let msgtype = body["msgtype"].as_str().unwrap_or_default().to_owned();
    // enable_duplicate_check: the same content to the same users within the
    // interval is not sent again; WeCom answers as for the first.
    let dedup_key = format!("{touser}\u{0}{msgtype}\u{0}{}", body[msgtype.as_str()]);
    if body["enable_duplicate_check"] == 1 {
        let interval = body["duplicate_check_interval"].as_u64().unwrap_or(1800);
        if let Some((at, answer)) = inner.sent_recently.get(&dedup_key)
            && at.elapsed() < Duration::from_secs(interval)
        {
            let answer = answer.clone();
            inner.duplicates += 1;
            return answer;
        }
    }
    let users: Vec<String> = touser.split('|').map(str::to_lowercase).collect();
    let invalid: Vec<&String> = users
        .iter()
        .filter(|u| inner.invalid_users.contains(*u))
        .collect();
    let invaliduser = invalid
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join("|");
    if !users.is_empty() && invalid.len() == users.len() {
        return json!({ "errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": invaliduser });
    }
    inner.next += 1;
    let msgid = format!("sandbox-msg-{}", inner.next);
    let mut answer =
        json!({ "errcode": 0, "errmsg": "ok", "invaliduser": invaliduser, "msgid": msgid });
    if msgtype == "template_card" {
        answer["response_code"] = json!(inner.issue_response_code());
    }
    let now = Instant::now();
    let reachable: Vec<&String> = users
        .iter()
        .filter(|u| !u.is_empty() && !inner.invalid_users.contains(*u))
        .collect();
    for user in reachable {
        inner.deliver(user, &msgid, now);
    }
    inner.sent.push(SentMessage {
        touser,
        msgtype,
        body,
        msgid,
    });
    inner.sent_recently.insert(dedup_key, (now, answer.clone()));
    answer
}

/// Checks the token, then meets the next queued fault; `Some` is the answer
/// to give instead of going on.
async fn token_and_fault(s: &Shared, q: &HashMap<String, String>) -> Option<Response> {
    let token = q.get("access_token").cloned().unwrap_or_default();
    let fault = {
        let mut inner = s.inner.lock().expect("sandbox state");
        if !inner.tokens.contains(&token) {
            return Some(reply(40014, "invalid access_token"));
        }
        inner.faults.pop_front()
    };
    match fault? {
        Fault::ServerError => Some(StatusCode::BAD_GATEWAY.into_response()),
        Fault::Timeout(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Busy => Some(reply(-1, "system busy")),
        Fault::RateLimited => Some(reply(45009, "api freq out of limit")),
        Fault::TooManyRequests => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, "2")],
                "slow down",
            )
                .into_response(),
        ),
        Fault::ExpiredToken => {
            s.inner.lock().expect("sandbox state").tokens.remove(&token);
            Some(reply(42001, "access_token expired"))
        }
        Fault::MediaTooLarge => Some(reply(45001, "media size out of limit")),
        // Only message/send accepts first; elsewhere it is a slow answer.
        Fault::AcceptThenHang(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

/// `message/update_template_card`: the response code must have been issued
/// (by a template_card send or a button callback) and not used yet; WeCom
/// answers 60140 ("无效的response_code") otherwise.
async fn update_template_card(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = token_and_fault(&s, &q).await {
        return refusal;
    }
    let Some(code) = body["response_code"].as_str().filter(|c| !c.is_empty()) else {
        return reply(40058, "invalid Request Parameter: response_code");
    };
    let userids: Vec<String> = body["userids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let replace_name = body["button"]["replace_name"].as_str().map(str::to_owned);
    let template_card = body.get("template_card").cloned();
    if replace_name.is_none() && template_card.is_none() {
        return reply(40058, "invalid Request Parameter: button or template_card");
    }
    let mut inner = s.inner.lock().expect("sandbox state");
    match inner.response_codes.get(code) {
        Some(false) => {}
        _ => return reply(60140, "invalid response_code"),
    }
    let invalid: Vec<&String> = userids
        .iter()
        .filter(|u| inner.invalid_users.contains(&u.to_lowercase()))
        .collect();
    if !userids.is_empty() && invalid.len() == userids.len() {
        return Json(json!({ "errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": invalid }))
            .into_response();
    }
    let answer = json!({ "errcode": 0, "errmsg": "ok", "invaliduser": invalid });
    inner.response_codes.insert(code.to_owned(), true);
    inner.updates.push(CardUpdate {
        userids,
        response_code: code.to_owned(),
        replace_name,
        template_card,
        body,
    });
    Json(answer).into_response()
}

/// The file extension WeCom gives a media file of this type.
fn extension(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "audio/amr" => "amr",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// `media/get`: the bytes as a download (Content-Type, Content-disposition
/// with the file name), or a JSON error (40007 unknown media id).
async fn media_get(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(refusal) = token_and_fault(&s, &q).await {
        return refusal;
    }
    let Some(media_id) = q.get("media_id").filter(|m| !m.is_empty()) else {
        return reply(41006, "media_id missing");
    };
    let inner = s.inner.lock().expect("sandbox state");
    let Some(media) = inner.media.get(media_id) else {
        return reply(40007, "invalid media_id");
    };
    let disposition = format!(
        "attachment; filename=\"{media_id}.{}\"",
        extension(&media.content_type)
    );
    (
        [
            (header::CONTENT_TYPE, media.content_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CACHE_CONTROL,
                "no-cache, must-revalidate".to_owned(),
            ),
        ],
        media.bytes.clone(),
    )
        .into_response()
}

/// Checks the token; on success returns nothing, else the error answer.
fn check_token(s: &Shared, q: &HashMap<String, String>) -> Option<Response> {
    let token = q.get("access_token").cloned().unwrap_or_default();
    let inner = s.inner.lock().expect("sandbox state");
    (!inner.tokens.contains(&token)).then(|| reply(40014, "invalid access_token"))
}

/// Most users and the longest period (s) one `getcheckindata` call takes.
const CHECKIN_USERS: usize = 100;
const CHECKIN_SPAN_SECS: i64 = 30 * 24 * 60 * 60;

/// `checkin/getcheckindata`: the punches of `useridlist` between
/// `starttime` and `endtime` (seconds), with WeCom's limits.
async fn checkin_data(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refusal) = check_token(&s, &q) {
        return refusal;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return reply(47001, "data format error");
    };
    let mut inner = s.inner.lock().expect("sandbox state");
    if inner.checkins_denied {
        return reply(48002, "api forbidden");
    }
    let users: Vec<&str> = body["useridlist"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if users.is_empty() || users.len() > CHECKIN_USERS {
        return reply(301023, "userlist is over threshold");
    }
    let (Some(start), Some(end)) = (body["starttime"].as_i64(), body["endtime"].as_i64()) else {
        return reply(40058, "starttime and endtime are required");
    };
    if end < start || end - start > CHECKIN_SPAN_SECS {
        return reply(301024, "time span is too long");
    }
    inner.checkin_calls += 1;
    let list: Vec<&Value> = inner
        .checkins
        .iter()
        .filter(|r| r["userid"].as_str().is_some_and(|u| users.contains(&u)))
        .filter(|r| {
            r["checkin_time"]
                .as_i64()
                .is_some_and(|t| (start..=end).contains(&t))
        })
        .collect();
    Json(json!({ "errcode": 0, "errmsg": "ok", "checkindata": list })).into_response()
}

/// The department and, with `fetch_child=1`, all below it.
fn department_ids(departments: &[Department], root: i64, children: bool) -> Vec<i64> {
    let mut ids = vec![root];
    let mut i = 0;
    while children && i < ids.len() {
        let parent = ids[i];
        ids.extend(
            departments
                .iter()
                .filter(|d| d.parentid == Some(parent) && d.id != parent)
                .map(|d| d.id),
        );
        i += 1;
    }
    ids
}

async fn department_list(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refusal) = check_token(&s, &q) {
        return refusal;
    }
    let inner = s.inner.lock().expect("sandbox state");
    let departments: Vec<&Department> = match q.get("id").and_then(|id| id.parse().ok()) {
        Some(root) => {
            let ids = department_ids(&inner.departments, root, true);
            inner
                .departments
                .iter()
                .filter(|d| ids.contains(&d.id))
                .collect()
        }
        None => inner.departments.iter().collect(),
    };
    Json(json!({ "errcode": 0, "errmsg": "ok", "department": departments })).into_response()
}

async fn user_list(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(refusal) = check_token(&s, &q) {
        return refusal;
    }
    let Some(root) = q.get("department_id").and_then(|id| id.parse::<i64>().ok()) else {
        return reply(40009, "invalid department_id");
    };
    let inner = s.inner.lock().expect("sandbox state");
    let ids = department_ids(
        &inner.departments,
        root,
        q.get("fetch_child").is_some_and(|f| f == "1"),
    );
    let users: Vec<&DirectoryUser> = inner
        .users
        .iter()
        .filter(|u| u.department.iter().any(|d| ids.contains(d)))
        .collect();
    Json(json!({ "errcode": 0, "errmsg": "ok", "userlist": users })).into_response()
}
