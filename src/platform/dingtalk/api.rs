//! The DingTalk server API behind [`ChatApi`]. DingTalk has two hosts with
//! two tokens and two error styles (see `src/platform/dingtalk/PROTOCOL.md` §1, §10):
//!
//! - `api.dingtalk.com` ([`DingtalkApiConfig::api_base_v1`]): the token from
//!   `POST /v1.0/oauth2/accessToken` travels in the header
//!   `x-acs-dingtalk-access-token`; errors are HTTP 4xx/5xx with
//!   `{code, message, requestid}`. Robot messages, cards, media downloads and
//!   read status live here.
//! - `oapi.dingtalk.com` ([`DingtalkApiConfig::api_base`]): the token from
//!   `GET /gettoken` travels in the query as `access_token`; errors are HTTP
//!   200 with a non-zero `errcode`. The address book lives here.
//!
//! Each token is cached until shortly before it expires, fetched by one caller
//! at a time, and dropped and fetched again once when DingTalk says it is
//! invalid or expired.
//!
//! **Every message is unique on the wire.** DingTalk accepts a message with
//! the same content to the same user again and then silently drops it
//! (documented for work notices, "给同一员工一天只能发送一条内容相同的消息通知";
//! assumed for robot messages too, conservatively). So each message ends in a
//! reference line, `"\n#"` and eight hex digits of a SHA-256 (see
//! [`DingtalkApi::send`] for what it is derived from): digits and letters, no
//! bot wording.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::Secret;
use chrono::{DateTime, Utc};

use crate::platform::dingtalk::callbacks::punch_of;
use crate::platform::download::{self, Download, file_name};
use crate::platform::{
    Card, ChatApi, Exchange, Media, Member, OutboundMessage, PlatformError, PunchRecord, Receipt,
    periods, punch_request,
};

/// Refresh this long before DingTalk says a token expires (as the official
/// Python SDK does).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// The header that carries the api.dingtalk.com token.
const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";
/// The root department of the address book.
const ROOT_DEPARTMENT: i64 = 1;
/// `topapi/v2/user/list` page size (the maximum is not documented; 100 is the
/// common value: UNVERIFIED).
const USER_PAGE_SIZE: i64 = 100;
/// Hex digits of the reference that makes each message unique.
const REFERENCE_LEN: usize = 8;

/// Waits after DingTalk's throttling answers (notes §10.2): per app and API
/// "sleep ≥1 s"; global per API "exponential backoff"; per minute (QPM,
/// 143103/143104) a minute; the IP ban lasts five minutes; other throttling
/// a few seconds.
const QPS_APP_WAIT_SECS: u64 = 1;
const QPS_API_WAIT_SECS: u64 = 2;
const THROTTLE_WAIT_SECS: u64 = 5;
const PER_MINUTE_WAIT_SECS: u64 = 60;
const IP_BAN_WAIT_SECS: u64 = 300;

/// One DingTalk app's settings for the server API.
#[derive(Debug, Clone)]
pub struct DingtalkApiConfig {
    /// The legacy host, `https://oapi.dingtalk.com` in production.
    pub api_base: String,
    /// The new host, `https://api.dingtalk.com` in production.
    pub api_base_v1: String,
    /// The app's AppKey (Client ID).
    pub app_key: String,
    /// The app's AppSecret (Client Secret).
    pub app_secret: Secret,
    /// The app's AgentId (work notifications; not used by the robot calls).
    pub agent_id: i64,
    /// The robot's code (for an app's robot, usually the AppKey).
    pub robot_code: String,
    /// A card template registered in DingTalk's card platform with
    /// call-back buttons; without one, cards go out as markdown messages
    /// (see [`DingtalkApi::send`]).
    pub card_template_id: Option<String>,
    /// Texts go out as work notices (工作通知, `asyncsend_v2`) instead of
    /// robot messages.
    pub work_notices: bool,
}

pub use crate::platform::{ReadReceipt, ReadStatus};

/// `getsendresult`'s code for a work notice dropped because the same
/// content reached the user earlier that day.
const DUPLICATE_OF_THE_DAY: &str = "143106";

/// How a work notice's task id is told from a robot message's
/// processQueryKey in a [`Receipt::message_id`].
const WORK_NOTICE: &str = "work_notice:";

/// Most users one `attendance/listRecord` call takes.
const LIST_RECORD_USERS: usize = 50;

/// How long after sending DingTalk answers `readStatus` (PROTOCOL.md).
pub const READ_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// `GET /gettoken`, for oapi.dingtalk.com.
    Legacy,
    /// `POST /v1.0/oauth2/accessToken`, for api.dingtalk.com.
    V1,
}

struct Token {
    value: String,
    fresh_until: Instant,
}

/// One DingTalk app's API client.
pub struct DingtalkApi {
    http: reqwest::Client,
    config: DingtalkApiConfig,
    legacy_token: Mutex<Option<Token>>,
    v1_token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for DingtalkApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkApi")
            .field("api_base", &self.config.api_base)
            .field("api_base_v1", &self.config.api_base_v1)
            .field("app_key", &self.config.app_key)
            .field("robot_code", &self.config.robot_code)
            .finish_non_exhaustive()
    }
}

/// How a call to api.dingtalk.com failed before it could be classified.
enum Failure {
    /// Timeout, refused connection, unreadable answer.
    Transport(PlatformError),
    /// A non-2xx answer (or the IP throttle's answer), as received.
    Answer {
        status: u16,
        code: String,
        message: String,
        body: Value,
        raw: String,
    },
}

impl Failure {
    /// The error class of the failure of `what` (sent to `to`, if a user).
    fn classify(self, what: &str, to: Option<&str>) -> PlatformError {
        match self {
            Failure::Transport(e) => e,
            Failure::Answer {
                status,
                code,
                message,
                body,
                ..
            } => classify_v1(what, status, &code, &message, &body, to),
        }
    }
}

fn transport(what: &str, e: reqwest::Error) -> PlatformError {
    // Without the URL: gettoken's carries the app secret, a download's is a
    // signed link.
    PlatformError::Retryable(format!("{what}: request failed: {}", e.without_url()))
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Retryable(format!("{what}: unreadable answer ({e})"))
}

/// api.dingtalk.com's answers that mean the token must be fetched again.
fn is_v1_token_error(status: u16, code: &str) -> bool {
    status == 401
        || matches!(
            code,
            "InvalidAuthentication" | "invalidAccessToken" | "token.notExisted"
        )
}

/// oapi's errcodes that mean the token must be fetched again (88 carries
/// the reason in `sub_code`).
fn is_oapi_token_error(errcode: i64, sub_code: Option<i64>) -> bool {
    let token = |code| matches!(code, 40001 | 40014 | 41001 | 42001);
    token(errcode) || (errcode == 88 && sub_code.is_some_and(token))
}

/// The IP frequency limit's answer (`{"status":1111,"wait":5,…}`), on either
/// host.
fn is_ip_ban(body: &Value) -> bool {
    body["status"].as_i64() == Some(1111)
}

fn rate_limited(after_secs: u64, reason: String) -> PlatformError {
    PlatformError::RateLimited { after_secs, reason }
}

/// Classifies an api.dingtalk.com error that is not (or no longer) a token
/// error (notes §10.2).
fn classify_v1(
    what: &str,
    status: u16,
    code: &str,
    message: &str,
    body: &Value,
    to: Option<&str>,
) -> PlatformError {
    let reason = format!("{what}: HTTP {status} {code} {message}");
    if is_ip_ban(body) {
        return rate_limited(IP_BAN_WAIT_SECS, format!("{what}: IP frequency limit"));
    }
    if code.contains("QpmLimit") {
        return rate_limited(PER_MINUTE_WAIT_SECS, reason);
    }
    if code.contains("QpsLimitForAppkeyAndApi") {
        return rate_limited(QPS_APP_WAIT_SECS, reason);
    }
    if code.contains("QpsLimit") {
        return rate_limited(QPS_API_WAIT_SECS, reason);
    }
    if status == 429
        || matches!(
            code,
            "send.too.fast"
                | "send.byToken.tooFast"
                | "too.many.people"
                | "qps.exceed.limit"
                | "request.too.fast"
        )
    {
        return rate_limited(THROTTLE_WAIT_SECS, reason);
    }
    if status >= 500 {
        return PlatformError::Retryable(reason);
    }
    if let Some(user) = to
        && matches!(
            code,
            "invalid.userid" | "param.userIdNotExist" | "staffId.notExisted"
        )
    {
        return PlatformError::Undeliverable {
            user: user.to_owned(),
            reason,
        };
    }
    PlatformError::Permanent(reason)
}

/// Classifies a non-zero oapi errcode that is not (or no longer) a token
/// error (notes §10.2).
fn classify_oapi(what: &str, errcode: i64, errmsg: &str, to: Option<&str>) -> PlatformError {
    let reason = format!("{what}: {errcode} {errmsg}");
    match (errcode, to) {
        (-1, _) => PlatformError::Retryable(reason),
        (90018, _) => rate_limited(QPS_APP_WAIT_SECS, reason),
        (90002, _) => rate_limited(QPS_API_WAIT_SECS, reason),
        (90006 | 90010..=90014 | 90017, _) => rate_limited(THROTTLE_WAIT_SECS, reason),
        (143103 | 143104, _) => rate_limited(PER_MINUTE_WAIT_SECS, reason),
        (33012 | 60121 | 50002, Some(user)) => PlatformError::Undeliverable {
            user: user.to_owned(),
            reason,
        },
        _ => PlatformError::Permanent(reason),
    }
}

/// A number DingTalk may send as a JSON number or as a string.
fn lenient_i64(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Whether `user` is in a list of user ids of an answer.
fn is_listed(list: &Value, user: &str) -> bool {
    list.as_array().is_some_and(|ids| {
        ids.iter()
            .filter_map(Value::as_str)
            .any(|u| u.eq_ignore_ascii_case(user))
    })
}

/// The first [`REFERENCE_LEN`] hex digits of the SHA-256 of `parts`, each
/// followed by a NUL (so that `["ab","c"]` and `["a","bc"]` differ).
fn reference(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let mut hex = hex::encode(hash.finalize());
    hex.truncate(REFERENCE_LEN);
    hex
}

/// When this process first sent a repeatable text (ms since the epoch):
/// with [`SEND_COUNTER`], it keeps two processes' sends apart.
static PROCESS_EPOCH_MS: OnceLock<u128> = OnceLock::new();
/// Repeatable texts sent by this process so far.
static SEND_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The reference of a text message (see [`DingtalkApi::send`]).
fn text_reference(to: &str, content: &str, unique_text: bool) -> String {
    if unique_text {
        return reference(&["text", to, content]);
    }
    let epoch = PROCESS_EPOCH_MS.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    });
    let n = SEND_COUNTER.fetch_add(1, Ordering::Relaxed);
    reference(&["text", to, content, &epoch.to_string(), &n.to_string()])
}

/// The reference of a card (see [`DingtalkApi::send`]).
fn card_reference(card: &Card) -> String {
    reference(&["card", &card.card_id])
}

/// `text` with its reference line.
fn with_reference(text: &str, reference: &str) -> String {
    format!("{text}\n#{reference}")
}

/// The markdown a card becomes without a card template: the title as a
/// heading, the body, each button's label on its own line (the words to
/// reply), and the reference.
fn markdown_card(card: &Card) -> String {
    let mut text = format!("#### {}\n\n{}\n\n", card.title, card.body);
    for button in &card.buttons {
        text.push_str(&button.label);
        text.push_str("\n\n");
    }
    // `#` right before the digits, no space: not a markdown heading.
    text.push('#');
    text.push_str(&card_reference(card));
    text
}

/// The `cardParamMap` of a new card (every value a string, as DingTalk
/// requires); see [`DingtalkApi::send`] for the template's params.
fn card_params(card: &Card) -> Value {
    let buttons: Vec<Value> = card
        .buttons
        .iter()
        .map(|b| json!({ "key": b.key, "label": b.label }))
        .collect();
    json!({
        "title": card.title,
        "body": card.body,
        "source": card.source,
        "buttons": Value::Array(buttons).to_string(),
        "pressed": "",
    })
}

/// One department of `topapi/v2/department/listsub`.
#[derive(Debug, Deserialize)]
struct ListedDepartment {
    dept_id: i64,
    #[serde(default)]
    name: String,
}

/// One page of `topapi/v2/user/list`.
#[derive(Debug, Deserialize)]
struct UserPage {
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next_cursor: Option<i64>,
    #[serde(default)]
    list: Vec<ListedUser>,
}

/// One user of `topapi/v2/user/list` (and `manager_userid` of
/// `topapi/v2/user/get`, which `user/list` does not return).
#[derive(Debug, Deserialize)]
struct ListedUser {
    userid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    dept_id_list: Vec<i64>,
    #[serde(default)]
    mobile: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    org_email: Option<String>,
    #[serde(default)]
    manager_userid: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl DingtalkApi {
    /// A client for the app in `config`; `timeout` bounds every request.
    pub fn new(config: DingtalkApiConfig, timeout: Duration) -> DingtalkApi {
        crate::tls::install_crypto_provider();
        let config = DingtalkApiConfig {
            api_base: config.api_base.trim_end_matches('/').to_owned(),
            api_base_v1: config.api_base_v1.trim_end_matches('/').to_owned(),
            ..config
        };
        DingtalkApi {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a client without TLS options builds"),
            config,
            legacy_token: Mutex::new(None),
            v1_token: Mutex::new(None),
        }
    }

    fn slot(&self, kind: TokenKind) -> &Mutex<Option<Token>> {
        match kind {
            TokenKind::Legacy => &self.legacy_token,
            TokenKind::V1 => &self.v1_token,
        }
    }

    /// A valid token of `kind`: cached, and fetched by one caller at a time
    /// (the others wait for it instead of asking DingTalk again).
    async fn token(&self, kind: TokenKind) -> Result<String, PlatformError> {
        let mut slot = self.slot(kind).lock().await;
        if let Some(t) = slot.as_ref().filter(|t| Instant::now() < t.fresh_until) {
            return Ok(t.value.clone());
        }
        let fetched = match kind {
            TokenKind::Legacy => self.fetch_legacy_token().await,
            TokenKind::V1 => self.fetch_v1_token().await,
        };
        crate::metrics::count_token_fetch("dingtalk", fetched.is_ok());
        let (value, lifetime) = fetched?;
        *slot = Some(Token {
            value: value.clone(),
            fresh_until: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        });
        Ok(value)
    }

    /// Forgets `token` if it is still the cached one (DingTalk rejected it).
    async fn forget(&self, kind: TokenKind, token: &str) {
        let mut slot = self.slot(kind).lock().await;
        if slot.as_ref().is_some_and(|t| t.value == token) {
            *slot = None;
        }
    }

    /// `GET /gettoken?appkey=&appsecret=` → `{errcode, access_token, expires_in}`.
    async fn fetch_legacy_token(&self) -> Result<(String, Duration), PlatformError> {
        const WHAT: &str = "gettoken";
        let response = self
            .http
            .get(format!("{}/gettoken", self.config.api_base))
            .query(&[
                ("appkey", self.config.app_key.as_str()),
                ("appsecret", self.config.app_secret.expose()),
            ])
            .send()
            .await
            .map_err(|e| transport(WHAT, e))?;
        let status = response.status();
        let raw = response.text().await.map_err(|e| transport(WHAT, e))?;
        if status.is_server_error() {
            return Err(PlatformError::Retryable(format!("{WHAT}: HTTP {status}")));
        }
        let body: Value = serde_json::from_str(&raw).map_err(|e| unreadable(WHAT, e))?;
        if is_ip_ban(&body) {
            return Err(classify_v1(WHAT, status.as_u16(), "", "", &body, None));
        }
        if !status.is_success() {
            return Err(PlatformError::Permanent(format!("{WHAT}: HTTP {status}")));
        }
        let errcode = lenient_i64(&body["errcode"]).unwrap_or(0);
        match body["access_token"].as_str() {
            Some(token) if errcode == 0 && !token.is_empty() => {
                let lifetime = body["expires_in"].as_u64().unwrap_or(7200);
                Ok((token.to_owned(), Duration::from_secs(lifetime)))
            }
            _ => Err(classify_oapi(
                WHAT,
                errcode,
                body["errmsg"].as_str().unwrap_or_default(),
                None,
            )),
        }
    }

    /// `POST /v1.0/oauth2/accessToken {appKey, appSecret}` → `{accessToken, expireIn}`.
    async fn fetch_v1_token(&self) -> Result<(String, Duration), PlatformError> {
        const WHAT: &str = "oauth2/accessToken";
        let response = self
            .http
            .post(format!(
                "{}/v1.0/oauth2/accessToken",
                self.config.api_base_v1
            ))
            .json(&json!({
                "appKey": self.config.app_key,
                "appSecret": self.config.app_secret.expose(),
            }))
            .send()
            .await
            .map_err(|e| transport(WHAT, e))?;
        let status = response.status();
        let raw = response.text().await.map_err(|e| transport(WHAT, e))?;
        let body: Value = if status.is_server_error() {
            serde_json::from_str(&raw).unwrap_or_default()
        } else {
            serde_json::from_str(&raw).map_err(|e| unreadable(WHAT, e))?
        };
        match body["accessToken"].as_str() {
            Some(token) if status.is_success() && !token.is_empty() => {
                let lifetime = lenient_i64(&body["expireIn"]).unwrap_or(7200).max(0);
                Ok((token.to_owned(), Duration::from_secs(lifetime as u64)))
            }
            // Here an authentication error is the app's credentials, not a
            // token: permanent.
            _ => Err(classify_v1(
                WHAT,
                status.as_u16(),
                body["code"].as_str().unwrap_or_default(),
                body["message"].as_str().unwrap_or_default(),
                &body,
                None,
            )),
        }
    }

    /// Calls api.dingtalk.com with the token header and returns the JSON
    /// answer and its text; a rejected token is dropped and fetched again
    /// once, and the call made again.
    async fn v1(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(Value, String), Failure> {
        let mut refreshed = false;
        loop {
            let token = self
                .token(TokenKind::V1)
                .await
                .map_err(Failure::Transport)?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.config.api_base_v1))
                .header(TOKEN_HEADER, &token)
                .query(query);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| Failure::Transport(transport(path, e)))?;
            let status = response.status();
            let raw = response
                .text()
                .await
                .map_err(|e| Failure::Transport(transport(path, e)))?;
            let parsed = serde_json::from_str::<Value>(&raw);
            if status.is_success() {
                let value = parsed.map_err(|e| Failure::Transport(unreadable(path, e)))?;
                if !is_ip_ban(&value) {
                    return Ok((value, raw));
                }
            }
            // Error answers are JSON, except the IP throttle's HTML page and
            // a proxy's 5xx: those classify by status alone.
            let value = serde_json::from_str::<Value>(&raw).unwrap_or_default();
            let code = value["code"].as_str().unwrap_or_default().to_owned();
            if is_v1_token_error(status.as_u16(), &code) {
                if !refreshed {
                    self.forget(TokenKind::V1, &token).await;
                    refreshed = true;
                    continue;
                }
                // Refused again right after a refresh: DingTalk's hiccup (the
                // credentials themselves are checked when the token is
                // fetched), retried later, not given up.
                return Err(Failure::Transport(PlatformError::Retryable(format!(
                    "{path}: token refused again after a refresh: HTTP {status} {code}"
                ))));
            }
            return Err(Failure::Answer {
                status: status.as_u16(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
                code,
                body: value,
                raw,
            });
        }
    }

    /// POSTs `body` to an oapi path with the token in the query and returns
    /// the JSON answer (errcode 0) and its text; a rejected token is dropped
    /// and fetched again once. `to`: the user the call is about, for
    /// [`PlatformError::Undeliverable`].
    async fn oapi_post(
        &self,
        path: &str,
        body: &Value,
        to: Option<&str>,
    ) -> Result<(Value, String), PlatformError> {
        let mut refreshed = false;
        loop {
            let token = self.token(TokenKind::Legacy).await?;
            let response = self
                .http
                .post(format!("{}{path}", self.config.api_base))
                .query(&[("access_token", token.as_str())])
                .json(body)
                .send()
                .await
                .map_err(|e| transport(path, e))?;
            let status = response.status();
            let raw = response.text().await.map_err(|e| transport(path, e))?;
            if status.is_server_error() {
                return Err(PlatformError::Retryable(format!("{path}: HTTP {status}")));
            }
            let value: Value = match serde_json::from_str(&raw) {
                Ok(value) => value,
                Err(_) if !status.is_success() => {
                    return Err(classify_v1(path, status.as_u16(), "", "", &Value::Null, to));
                }
                Err(e) => return Err(unreadable(path, e)),
            };
            if is_ip_ban(&value) || !status.is_success() {
                return Err(classify_v1(path, status.as_u16(), "", "", &value, to));
            }
            let errcode = lenient_i64(&value["errcode"]).unwrap_or(0);
            if errcode == 0 {
                return Ok((value, raw));
            }
            let sub_code =
                lenient_i64(&value["sub_code"]).or_else(|| lenient_i64(&value["subCode"]));
            if is_oapi_token_error(errcode, sub_code) {
                if !refreshed {
                    self.forget(TokenKind::Legacy, &token).await;
                    refreshed = true;
                    continue;
                }
                return Err(PlatformError::Retryable(format!(
                    "{path}: token refused again after a refresh: {errcode}"
                )));
            }
            let errmsg = value["errmsg"].as_str().unwrap_or_default();
            return Err(classify_oapi(path, errcode, errmsg, to));
        }
    }

    /// A robot one-to-one message to `to` (`oToMessages/batchSend`).
    async fn batch_send(
        &self,
        to: &str,
        msg_key: &str,
        msg_param: Value,
    ) -> Result<Receipt, PlatformError> {
        const WHAT: &str = "oToMessages/batchSend";
        let body = json!({
            "robotCode": self.config.robot_code,
            "userIds": [to],
            "msgKey": msg_key,
            // A JSON string, not an object.
            "msgParam": msg_param.to_string(),
        });
        let (answer, raw) = self
            .v1(
                Method::POST,
                "/v1.0/robot/oToMessages/batchSend",
                &[],
                Some(&body),
            )
            .await
            .map_err(|f| f.classify(WHAT, Some(to)))?;
        if is_listed(&answer["invalidStaffIdList"], to) {
            return Err(PlatformError::Undeliverable {
                user: to.to_owned(),
                reason: format!("{WHAT}: invalidStaffIdList"),
            });
        }
        // Throttled users were not sent the message; how long the limit
        // lasts is not documented, so wait a minute.
        if is_listed(&answer["flowControlledStaffIdList"], to) {
            return Err(rate_limited(
                PER_MINUTE_WAIT_SECS,
                format!("{WHAT}: flowControlledStaffIdList"),
            ));
        }
        Ok(Receipt {
            message_id: answer["processQueryKey"].as_str().map(str::to_owned),
            card_ref: None,
            request: Some(Exchange::json(body.to_string())),
            response: Exchange::json(raw),
        })
    }

    /// A work notice (工作通知) to `to` (`asyncsend_v2`). DingTalk answers
    /// with a task id once it accepted the notice, not once delivered: the
    /// outcome (delivered, read, or dropped as a duplicate or over a
    /// quota) is what [`ChatApi::read_status`] asks with that id.
    async fn work_notice(&self, to: &str, content: &str) -> Result<Receipt, PlatformError> {
        const PATH: &str = "/topapi/message/corpconversation/asyncsend_v2";
        let body = json!({
            "agent_id": self.config.agent_id,
            "userid_list": to,
            "to_all_user": false,
            "msg": { "msgtype": "text", "text": { "content": content } },
        });
        let (answer, raw) = self.oapi_post(PATH, &body, Some(to)).await?;
        let task = lenient_i64(&answer["task_id"])
            .ok_or_else(|| unreadable(PATH, "no task_id in the answer"))?;
        Ok(Receipt {
            message_id: Some(format!("{WORK_NOTICE}{task}")),
            card_ref: None,
            request: Some(Exchange::json(body.to_string())),
            response: Exchange::json(raw),
        })
    }

    /// Who read work notice `task` (`getsendresult`, for 24 hours after
    /// sending). DingTalk says whether, not when. A recipient the notice
    /// never reached (listed as invalid, failed, or forbidden over the daily
    /// quota) is in [`ReadStatus::undelivered`], naming the list and code.
    /// One forbidden as a duplicate of the day (143106) is not: rollcall's
    /// texts differ from each other, so the duplicate is the resend of a
    /// notice whose first answer was lost, and that first copy arrived; the
    /// copy asked about says nothing about its read, so it is answered as
    /// [`PlatformError::Permanent`] (the read status is unavailable).
    async fn work_notice_result(&self, task: &str) -> Result<ReadStatus, PlatformError> {
        const PATH: &str = "/topapi/message/corpconversation/getsendresult";
        let task_id: i64 = task
            .parse()
            .map_err(|_| PlatformError::Permanent(format!("{PATH}: bad task id {task}")))?;
        let body = json!({ "agent_id": self.config.agent_id, "task_id": task_id });
        let (answer, raw) = self.oapi_post(PATH, &body, None).await?;
        let result = &answer["send_result"];
        let listed = |list: &str| -> Vec<String> {
            result[list]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let code_of = |user: &str| {
            result["forbidden_list"]
                .as_array()
                .and_then(|l| l.iter().find(|f| f["userid"] == user))
                .map(|f| match &f["code"] {
                    Value::String(code) => code.clone(),
                    other => other.to_string(),
                })
        };
        let mut undelivered = Vec::new();
        for list in [
            "invalid_user_id_list",
            "forbidden_user_id_list",
            "failed_user_id_list",
        ] {
            for user in listed(list) {
                let code = code_of(&user);
                if code.as_deref() == Some(DUPLICATE_OF_THE_DAY) {
                    return Err(PlatformError::Permanent(format!(
                        "getsendresult: {user} had this notice already (forbidden, code {DUPLICATE_OF_THE_DAY}): a resend of a copy that arrived, whose read this task cannot tell"
                    )));
                }
                let code = code.map(|c| format!(" (code {c})")).unwrap_or_default();
                undelivered.push((user, format!("getsendresult: {list}{code}")));
            }
        }
        let receipts = listed("read_user_id_list")
            .into_iter()
            .map(|user_id| ReadReceipt {
                user_id,
                read: true,
                read_at: None,
            })
            .chain(
                listed("unread_user_id_list")
                    .into_iter()
                    .map(|user_id| ReadReceipt {
                        user_id,
                        read: false,
                        read_at: None,
                    }),
            )
            .collect();
        Ok(ReadStatus {
            receipts,
            undelivered,
            response: Exchange::json(raw),
        })
    }

    /// Creates the card from `template` and delivers it to `to`'s chat with
    /// the robot (`card/instances/createAndDeliver`).
    async fn deliver_card(
        &self,
        to: &str,
        card: &Card,
        template: &str,
    ) -> Result<Receipt, PlatformError> {
        const WHAT: &str = "card/instances/createAndDeliver";
        let body = json!({
            "cardTemplateId": template,
            "outTrackId": card.card_id,
            "callbackType": "STREAM",
            "cardData": { "cardParamMap": card_params(card) },
            "openSpaceId": format!("dtv1.card//IM_ROBOT.{to}"),
            "imRobotOpenSpaceModel": { "supportForward": false },
            "imRobotOpenDeliverModel": {
                "spaceType": "IM_ROBOT",
                "robotCode": self.config.robot_code,
            },
            "userIdType": 1,
        });
        let request = Some(Exchange::json(body.to_string()));
        let (answer, raw) = match self
            .v1(
                Method::POST,
                "/v1.0/card/instances/createAndDeliver",
                &[],
                Some(&body),
            )
            .await
        {
            Ok(answer) => answer,
            // The outTrackId is the card's id: a resend after a crash meets
            // the card the first attempt created. It counts as sent, with
            // DingTalk's answer kept as it came.
            Err(Failure::Answer { code, raw, .. }) if code == "param.cardAlreadyExist" => {
                return Ok(Receipt {
                    message_id: None,
                    card_ref: Some(card.card_id.clone()),
                    request,
                    response: Exchange::json(raw),
                });
            }
            Err(f) => return Err(f.classify(WHAT, Some(to))),
        };
        if answer["success"] == json!(false) {
            return Err(PlatformError::Permanent(format!("{WHAT}: success false")));
        }
        // HTTP 200 does not mean delivered: each space has its own result.
        let results = answer["result"]["deliverResults"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(failed) = results.iter().find(|r| r["success"] == json!(false)) {
            return Err(PlatformError::Undeliverable {
                user: to.to_owned(),
                reason: format!(
                    "{WHAT}: {}",
                    failed["errorMsg"].as_str().unwrap_or("not delivered")
                ),
            });
        }
        Ok(Receipt {
            message_id: results
                .iter()
                .find_map(|r| r["carrierId"].as_str())
                .map(str::to_owned),
            card_ref: Some(card.card_id.clone()),
            request,
            response: Exchange::json(raw),
        })
    }

    /// The user id of `userid`'s direct manager (`topapi/v2/user/get`): not
    /// in `user/list`. A user who is gone by now has none.
    async fn manager_of(&self, userid: &str) -> Result<Option<String>, PlatformError> {
        match self
            .oapi_post(
                "/topapi/v2/user/get",
                &json!({ "userid": userid, "language": "zh_CN" }),
                Some(userid),
            )
            .await
        {
            Ok((answer, _)) => Ok(non_empty(
                answer["result"]["manager_userid"]
                    .as_str()
                    .map(str::to_owned),
            )),
            Err(PlatformError::Undeliverable { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every department id from the root down, with the names of all but
    /// the root (`listsub` lists children only). Breadth-first with a queue:
    /// no recursion, and a department seen twice is walked once.
    async fn departments(&self) -> Result<(Vec<i64>, HashMap<i64, String>), PlatformError> {
        const PATH: &str = "/topapi/v2/department/listsub";
        let mut order = vec![ROOT_DEPARTMENT];
        let mut names = HashMap::new();
        let mut next = 0;
        while let Some(&parent) = order.get(next) {
            next += 1;
            let (answer, _) = self
                .oapi_post(
                    PATH,
                    &json!({ "dept_id": parent, "language": "zh_CN" }),
                    None,
                )
                .await?;
            let children: Vec<ListedDepartment> = serde_json::from_value(answer["result"].clone())
                .map_err(|e| unreadable(PATH, e))?;
            for child in children {
                if child.dept_id != ROOT_DEPARTMENT && !names.contains_key(&child.dept_id) {
                    names.insert(child.dept_id, child.name);
                    order.push(child.dept_id);
                }
            }
        }
        Ok((order, names))
    }

    /// Everyone listed in `dept` (that department only), page by page.
    async fn users_of(&self, dept: i64) -> Result<Vec<ListedUser>, PlatformError> {
        const PATH: &str = "/topapi/v2/user/list";
        let mut users = Vec::new();
        let mut cursor = 0;
        loop {
            let (answer, _) = self
                .oapi_post(
                    PATH,
                    &json!({
                        "dept_id": dept,
                        "cursor": cursor,
                        "size": USER_PAGE_SIZE,
                        "order_field": "custom",
                        "contain_access_limit": false,
                        "language": "zh_CN",
                    }),
                    None,
                )
                .await?;
            let page: UserPage = serde_json::from_value(answer["result"].clone())
                .map_err(|e| unreadable(PATH, e))?;
            users.extend(page.list);
            if !page.has_more {
                return Ok(users);
            }
            match page.next_cursor {
                // A cursor that does not move would page forever.
                Some(next) if next != cursor => cursor = next,
                _ => {
                    return Err(PlatformError::Retryable(format!(
                        "{PATH}: has_more without a new next_cursor"
                    )));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ChatApi for DingtalkApi {
    fn platform(&self) -> &'static str {
        "dingtalk"
    }

    /// A text is a robot one-to-one message (`sampleText`); its
    /// [`Receipt::message_id`] is the `processQueryKey` (for
    /// [`DingtalkApi::read_status`]).
    ///
    /// Each message ends in `"\n#"` and a reference of eight hex digits,
    /// because DingTalk silently drops identical content to the same user:
    /// - a text with `unique_text` (a notice, unique by design: every notice
    ///   names its case, step and date, see `bot-templates/README.md`): from
    ///   the recipient and the text, so a resend after a crash is identical
    ///   on the wire, recognisable, and dropped by DingTalk as WeCom's
    ///   duplicate check would;
    /// - any other text (an answer that may rightly repeat): from the
    ///   recipient, the text, when this process first sent one and a counter
    ///   of this process's sends, so that repeats arrive;
    /// - a card: from its [`Card::card_id`], stable across resends.
    ///
    /// A card, with [`DingtalkApiConfig::card_template_id`], is an interactive
    /// card created from that template and delivered to the user's chat with
    /// the robot (`card/instances/createAndDeliver`, `callbackType` STREAM,
    /// `outTrackId` = the card's id = [`Receipt::card_ref`]). The template must
    /// define these params (all strings):
    /// - `title`, `body`, `source`: the card's title, text and sender;
    /// - `buttons`: a JSON array `[{"key": …, "label": …}]`, one button per
    ///   item showing `label`, whose call-back params (回传参数) carry `key`;
    /// - `pressed`: empty at first; [`ChatApi::update_card`] sets it to the
    ///   label to show instead of the buttons.
    ///
    /// The outTrackId makes each card unique; its content is not changed.
    ///
    /// Without a template, buttons cannot call back (template-free callback
    /// cards are closed to new apps), so none are faked: the card goes out as
    /// a robot markdown message (`sampleMarkdown`): the title, the body, each
    /// button's label on its own line (the words the user may reply) and the
    /// reference, with [`Receipt::card_ref`] `None`.
    async fn send(
        &self,
        to: &str,
        message: &OutboundMessage,
        unique_text: bool,
    ) -> Result<Receipt, PlatformError> {
        match message {
            OutboundMessage::Text { content } => {
                let reference = text_reference(to, content, unique_text);
                let content = with_reference(content, &reference);
                if self.config.work_notices {
                    self.work_notice(to, &content).await
                } else {
                    self.batch_send(to, "sampleText", json!({ "content": content }))
                        .await
                }
            }
            OutboundMessage::Card(card) => match &self.config.card_template_id {
                Some(template) => self.deliver_card(to, card, template).await,
                None => {
                    let param = json!({ "title": card.title, "text": markdown_card(card) });
                    self.batch_send(to, "sampleMarkdown", param).await
                }
            },
        }
    }

    /// Sets the card's `pressed` param to `label`
    /// (`PUT /v1.0/card/instances`, updating that key only); the template
    /// shows it instead of the buttons. `card_ref` is the card's outTrackId
    /// and stays valid for later updates.
    async fn update_card(
        &self,
        to: &str,
        card_ref: &str,
        label: &str,
    ) -> Result<Receipt, PlatformError> {
        const WHAT: &str = "card/instances (update)";
        let body = json!({
            "outTrackId": card_ref,
            "cardData": { "cardParamMap": { "pressed": label } },
            "cardUpdateOptions": { "updateCardDataByKey": true },
            "userIdType": 1,
        });
        let (answer, raw) = self
            .v1(Method::PUT, "/v1.0/card/instances", &[], Some(&body))
            .await
            .map_err(|f| f.classify(WHAT, Some(to)))?;
        if answer["success"] == json!(false) {
            return Err(PlatformError::Permanent(format!("{WHAT}: success false")));
        }
        Ok(Receipt {
            message_id: None,
            card_ref: Some(card_ref.to_owned()),
            request: Some(Exchange::json(body.to_string())),
            response: Exchange::json(raw),
        })
    }

    /// `media_id` is the `downloadCode` of the robot message: exchanged for
    /// a temporary link (`robot/messageFiles/download`), which is then
    /// fetched without credentials, up to [`MAX_MEDIA_BYTES`](download::MAX_MEDIA_BYTES). The link never
    /// appears in an error (it is signed).
    async fn fetch_media(&self, media_id: &str) -> Result<Media, PlatformError> {
        const WHAT: &str = "robot/messageFiles/download";
        let (answer, _) = self
            .v1(
                Method::POST,
                "/v1.0/robot/messageFiles/download",
                &[],
                Some(&json!({ "downloadCode": media_id, "robotCode": self.config.robot_code })),
            )
            .await
            .map_err(|f| f.classify(WHAT, None))?;
        let Some(url) = answer["downloadUrl"].as_str().filter(|u| !u.is_empty()) else {
            return Err(PlatformError::Retryable(format!(
                "{WHAT}: answer without downloadUrl"
            )));
        };
        const DOWNLOAD: &str = "media download";
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transport(DOWNLOAD, e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(PlatformError::Retryable(format!(
                "{DOWNLOAD}: HTTP {status}"
            )));
        }
        if !status.is_success() {
            // Most likely the temporary link expired.
            return Err(PlatformError::Permanent(format!(
                "{DOWNLOAD}: HTTP {status}"
            )));
        }
        let Download {
            content_type,
            disposition,
            bytes,
        } = download::read(response, DOWNLOAD).await?;
        Ok(Media {
            bytes,
            content_type,
            // DingTalk's links name every file `….file`; a name comes with
            // the message (`fileName`), not here.
            file_name: disposition
                .as_deref()
                .and_then(file_name)
                .filter(|n| !n.ends_with(".file")),
        })
    }

    /// DingTalk answers `readStatus` for [`READ_WINDOW`] after a send.
    fn read_window(&self) -> Option<Duration> {
        Some(READ_WINDOW)
    }

    /// Whether the recipients of the robot message `process_query_key` (the
    /// [`Receipt::message_id`] of a send) have read it
    /// (`GET /v1.0/robot/oToMessages/readStatus`; DingTalk answers only within
    /// [`READ_WINDOW`] of sending).
    async fn read_status(&self, process_query_key: &str) -> Result<ReadStatus, PlatformError> {
        const WHAT: &str = "oToMessages/readStatus";
        if let Some(task) = process_query_key.strip_prefix(WORK_NOTICE) {
            return self.work_notice_result(task).await;
        }
        let (answer, raw) = self
            .v1(
                Method::GET,
                "/v1.0/robot/oToMessages/readStatus",
                &[
                    ("robotCode", self.config.robot_code.as_str()),
                    ("processQueryKey", process_query_key),
                ],
                None,
            )
            .await
            .map_err(|f| f.classify(WHAT, None))?;
        let receipts = answer["messageReadInfoList"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|info| {
                        Some(ReadReceipt {
                            user_id: info["userId"].as_str()?.to_owned(),
                            read: info["readStatus"]
                                .as_str()
                                .is_some_and(|s| s.eq_ignore_ascii_case("READ")),
                            read_at: lenient_i64(&info["readTimestamp"]).filter(|t| *t > 0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ReadStatus {
            receipts,
            undelivered: Vec::new(),
            response: Exchange::json(raw),
        })
    }

    /// Every punch of `users` in DingTalk's attendance app
    /// (`attendance/listRecord`: at most [`LIST_RECORD_USERS`] users and 7
    /// days a call, the period in Beijing time as DingTalk reads it). Rows
    /// DingTalk fills in for a scheduled punch nobody made (`NotSigned`)
    /// are left out; punches HR or an approval entered (`BOSS`, `APPROVE`)
    /// are kept: the employer's own records say the person was there.
    async fn punches(
        &self,
        users: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PunchRecord>, PlatformError> {
        const PATH: &str = "/attendance/listRecord";
        #[derive(Deserialize)]
        struct Records {
            #[serde(default)]
            recordresult: Vec<Box<serde_json::value::RawValue>>,
        }
        let beijing = |t: DateTime<Utc>| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let mut punches = Vec::new();
        for (start, end) in periods(from, to, chrono::Duration::days(7)) {
            let (start, end) = (beijing(start), beijing(end));
            for chunk in users.chunks(LIST_RECORD_USERS) {
                let body = json!({
                    "userIds": chunk,
                    "checkDateFrom": start,
                    "checkDateTo": end,
                    "isI18n": false,
                });
                let (_, raw) = self.oapi_post(PATH, &body, None).await?;
                let records: Records =
                    serde_json::from_str(&raw).map_err(|e| unreadable(PATH, e))?;
                for record in records.recordresult {
                    let value: Value =
                        serde_json::from_str(record.get()).map_err(|e| unreadable(PATH, e))?;
                    let not_signed = ["timeResult", "locationResult"]
                        .iter()
                        .any(|k| value[k] == "NotSigned");
                    let Some(event) = punch_of(&value, "userCheckTime", "userAddress") else {
                        continue;
                    };
                    let at = event.sent_at;
                    if not_signed || at < from.timestamp() || at > to.timestamp() {
                        continue;
                    }
                    punches.push(PunchRecord {
                        event,
                        raw: record.get().to_owned(),
                        request: punch_request(
                            PATH,
                            &[("checkDateFrom", &start), ("checkDateTo", &end)],
                        ),
                    });
                }
            }
        }
        Ok(punches)
    }

    /// The address book: departments walked from the root
    /// (`topapi/v2/department/listsub`), the users of each
    /// (`topapi/v2/user/list`, paged), each user once, and each user's
    /// manager from `topapi/v2/user/get` (one call per user, one at a time,
    /// to stay under the per-API QPS limit).
    ///
    /// `department` is the name of the first of the user's departments
    /// (`dept_id_list`) below the root; `None` for a user only in the root.
    /// `active` is true for everyone listed: DingTalk's own `active` says
    /// whether the account was activated, and people who left are no longer
    /// listed (as WeCom's not-yet-activated members count as active).
    async fn directory(&self) -> Result<Vec<Member>, PlatformError> {
        let (departments, names) = self.departments().await?;
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for dept in departments {
            for user in self.users_of(dept).await? {
                // Someone in two departments is listed in both.
                if !user.userid.is_empty() && seen.insert(user.userid.clone()) {
                    users.push(user);
                }
            }
        }
        let mut members = Vec::with_capacity(users.len());
        for user in users {
            let manager = match non_empty(user.manager_userid) {
                Some(manager) => Some(manager),
                None => self.manager_of(&user.userid).await?,
            };
            members.push(Member {
                department: user.dept_id_list.iter().find_map(|d| names.get(d).cloned()),
                manager,
                mobile: non_empty(user.mobile),
                email: non_empty(user.email).or(non_empty(user.org_email)),
                active: true,
                name: user.name,
                user_id: user.userid,
            });
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::CardButton;

    fn card() -> Card {
        Card {
            source: "ACME".into(),
            title: "T".into(),
            body: "B".into(),
            card_id: "case-1-step-1".into(),
            buttons: vec![
                CardButton {
                    key: "k1".into(),
                    label: "L1".into(),
                },
                CardButton {
                    key: "k2".into(),
                    label: "L2".into(),
                },
            ],
        }
    }

    #[test]
    fn references_are_eight_hex_digits_and_stable_where_they_should_be() {
        let a = text_reference("u", "hello", true);
        assert_eq!(a.len(), REFERENCE_LEN);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a,
            text_reference("u", "hello", true),
            "unique texts: stable"
        );
        assert_ne!(a, text_reference("v", "hello", true), "per recipient");
        assert_ne!(
            text_reference("u", "hello", false),
            text_reference("u", "hello", false),
            "repeatable texts: each send its own"
        );
        assert_eq!(card_reference(&card()), card_reference(&card()));
        assert_ne!(reference(&["ab", "c"]), reference(&["a", "bc"]));
    }

    #[test]
    fn the_markdown_card_lists_the_labels_and_ends_in_the_reference() {
        let text = markdown_card(&card());
        assert!(text.starts_with("#### T\n\nB\n\nL1\n\nL2\n\n#"), "{text}");
        assert!(text.ends_with(&card_reference(&card())));
    }

    #[test]
    fn card_params_are_all_strings() {
        let params = card_params(&card());
        let map = params.as_object().unwrap();
        assert!(map.values().all(Value::is_string));
        let buttons: Value = serde_json::from_str(map["buttons"].as_str().unwrap()).unwrap();
        assert_eq!(buttons[1], json!({ "key": "k2", "label": "L2" }));
        assert_eq!(map["pressed"], "");
    }

    #[test]
    fn token_errors_are_recognised_on_both_hosts() {
        assert!(is_v1_token_error(400, "InvalidAuthentication"));
        assert!(is_v1_token_error(401, ""));
        assert!(is_v1_token_error(400, "token.notExisted"));
        assert!(!is_v1_token_error(400, "invalidClientIdOrSecret"));
        for code in [40001, 40014, 41001, 42001] {
            assert!(is_oapi_token_error(code, None));
        }
        assert!(is_oapi_token_error(88, Some(40014)));
        assert!(!is_oapi_token_error(88, Some(60011)));
        assert!(!is_oapi_token_error(-1, None));
    }

    #[test]
    fn api_errors_are_classified() {
        let null = Value::Null;
        let class = |status, code: &str| match classify_v1("x", status, code, "", &null, Some("u"))
        {
            PlatformError::Retryable(_) | PlatformError::OutcomeUnknown(_) => {
                "retryable".to_owned()
            }
            PlatformError::RateLimited { after_secs, .. } => format!("wait {after_secs}"),
            PlatformError::Undeliverable { user, .. } => format!("undeliverable {user}"),
            PlatformError::Permanent(_) => "permanent".to_owned(),
        };
        assert_eq!(class(500, "system.busy"), "retryable");
        assert_eq!(class(502, ""), "retryable");
        assert_eq!(
            class(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"),
            "wait 1"
        );
        assert_eq!(
            class(403, "Forbidden.AccessDenied.QpsLimitForApi"),
            "wait 2"
        );
        assert_eq!(
            class(403, "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi"),
            "wait 60"
        );
        assert_eq!(class(429, "system.busy"), "wait 5");
        assert_eq!(class(400, "send.too.fast"), "wait 5");
        assert_eq!(class(400, "staffId.notExisted"), "undeliverable u");
        assert_eq!(class(400, "param.userIdNotExist"), "undeliverable u");
        assert_eq!(
            class(403, "Forbidden.AccessDenied.ApiCountLimitForOrg"),
            "permanent"
        );
        assert_eq!(class(400, "param.templateNotExist"), "permanent");
        let ban = json!({ "status": 1111, "wait": 5 });
        assert!(matches!(
            classify_v1("x", 403, "", "", &ban, None),
            PlatformError::RateLimited {
                after_secs: 300,
                ..
            }
        ));
        assert!(matches!(
            classify_v1("x", 400, "staffId.notExisted", "", &null, None),
            PlatformError::Permanent(_)
        ));
    }

    #[test]
    fn oapi_errors_are_classified() {
        let class = |code| match classify_oapi("x", code, "m", Some("u")) {
            PlatformError::Retryable(_) | PlatformError::OutcomeUnknown(_) => {
                "retryable".to_owned()
            }
            PlatformError::RateLimited { after_secs, .. } => format!("wait {after_secs}"),
            PlatformError::Undeliverable { .. } => "undeliverable".to_owned(),
            PlatformError::Permanent(_) => "permanent".to_owned(),
        };
        assert_eq!(class(-1), "retryable");
        assert_eq!(class(90018), "wait 1");
        assert_eq!(class(90002), "wait 2");
        assert_eq!(class(90012), "wait 5");
        assert_eq!(class(143103), "wait 60");
        assert_eq!(class(143104), "wait 60");
        assert_eq!(class(60121), "undeliverable");
        assert_eq!(class(33012), "undeliverable");
        assert_eq!(class(90020), "permanent");
        assert_eq!(class(60011), "permanent");
        assert!(matches!(
            classify_oapi("x", 60121, "m", None),
            PlatformError::Permanent(_)
        ));
    }

    #[test]
    fn lenient_numbers_and_listed_users() {
        assert_eq!(lenient_i64(&json!("42")), Some(42));
        assert_eq!(lenient_i64(&json!(42)), Some(42));
        assert_eq!(lenient_i64(&json!(null)), None);
        assert!(is_listed(&json!(["A", "b"]), "a"));
        assert!(!is_listed(&json!(null), "a"));
        assert_eq!(
            file_name("attachment; filename=\"x.jpg\"").as_deref(),
            Some("x.jpg")
        );
    }
}
