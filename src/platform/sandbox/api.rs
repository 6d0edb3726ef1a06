//! The sandbox's WeCom-compatible API server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::platform::wecom::directory::{Department, DirectoryUser};

/// A fault the next API call will meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 502.
    ServerError,
    /// No answer for this long.
    Timeout(Duration),
    /// errcode -1, system busy.
    Busy,
    /// errcode 45009, frequency limit.
    RateLimited,
    /// errcode 42001: the caller's token has expired (and is revoked).
    ExpiredToken,
}

/// A message the sandbox accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub touser: String,
    pub msgtype: String,
    pub body: Value,
    pub msgid: String,
}

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    gettoken_calls: u64,
    faults: VecDeque<Fault>,
    invalid_users: HashSet<String>,
    sent: Vec<SentMessage>,
    next: u64,
    departments: Vec<Department>,
    users: Vec<DirectoryUser>,
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
            .route("/cgi-bin/department/list", get(department_list))
            .route("/cgi-bin/user/list", get(user_list))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxApi {
            addr,
            shared,
            server,
        })
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

    /// Every message accepted so far.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.inner().sent.clone()
    }

    /// Sets the address book served by `department/list` and `user/list`.
    pub fn set_directory(&self, departments: Vec<Department>, users: Vec<DirectoryUser>) {
        let mut inner = self.inner();
        inner.departments = departments;
        inner.users = users;
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
    let token = q.get("access_token").cloned().unwrap_or_default();
    let fault = {
        let mut inner = s.inner.lock().expect("sandbox state");
        if !inner.tokens.contains(&token) {
            return reply(40014, "invalid access_token");
        }
        inner.faults.pop_front()
    };
    match fault {
        Some(Fault::ServerError) => return StatusCode::BAD_GATEWAY.into_response(),
        Some(Fault::Timeout(d)) => tokio::time::sleep(d).await,
        Some(Fault::Busy) => return reply(-1, "system busy"),
        Some(Fault::RateLimited) => return reply(45009, "api freq out of limit"),
        Some(Fault::ExpiredToken) => {
            s.inner.lock().expect("sandbox state").tokens.remove(&token);
            return reply(42001, "access_token expired");
        }
        None => {}
    }
    let mut inner = s.inner.lock().expect("sandbox state");
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
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
        return Json(json!({ "errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": invaliduser }))
            .into_response();
    }
    inner.next += 1;
    let msgid = format!("sandbox-msg-{}", inner.next);
    let msgtype = body["msgtype"].as_str().unwrap_or_default().to_owned();
    let mut answer =
        json!({ "errcode": 0, "errmsg": "ok", "invaliduser": invaliduser, "msgid": msgid });
    if msgtype == "template_card" {
        answer["response_code"] = json!(format!("sandbox-rc-{}", inner.next));
    }
    inner.sent.push(SentMessage {
        touser,
        msgtype,
        body,
        msgid,
    });
    Json(answer).into_response()
}

/// Checks the token; on success returns nothing, else the error answer.
fn check_token(s: &Shared, q: &HashMap<String, String>) -> Option<Response> {
    let token = q.get("access_token").cloned().unwrap_or_default();
    let inner = s.inner.lock().expect("sandbox state");
    (!inner.tokens.contains(&token)).then(|| reply(40014, "invalid access_token"))
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
