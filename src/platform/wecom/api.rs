//! The WeCom server API (`api_base` from config): access tokens cached per
//! app with single-flight refresh, `message/send`, and error classification.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::platform::PlatformError;

/// Refresh this long before WeCom says the token expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// How long to wait after WeCom's frequency limits (45009, 45033).
const RATE_LIMIT_BACKOFF_SECS: u64 = 60;

/// A message for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Text {
        content: String,
    },
    Markdown {
        content: String,
    },
    TextCard {
        title: String,
        description: String,
        url: String,
        button: String,
    },
    /// A `template_card` body as WeCom defines it (e.g. `button_interaction`
    /// with a `task_id` unique per app).
    TemplateCard(Value),
}

/// What WeCom answered for a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub msgid: Option<String>,
    /// For button cards: the single-use code for `update_template_card`.
    pub response_code: Option<String>,
    /// The response body exactly as received.
    pub raw: String,
}

#[derive(Debug, Deserialize)]
struct ApiReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
    invaliduser: Option<String>,
    msgid: Option<String>,
    response_code: Option<String>,
}

struct Token {
    value: String,
    fresh_until: Instant,
}

/// One WeCom app's API client.
pub struct WecomApi {
    http: reqwest::Client,
    base: String,
    corp_id: String,
    secret: Secret,
    agent_id: i64,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for WecomApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomApi")
            .field("base", &self.base)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

fn is_token_error(code: i64) -> bool {
    matches!(code, 40001 | 40014 | 42001)
}

fn transport(e: reqwest::Error) -> PlatformError {
    // Timeouts and refused connections are worth another try; the URL or the
    // body being wrong is not, but we build both ourselves.
    PlatformError::Retryable(format!("request failed: {e}"))
}

impl WecomApi {
    pub fn new(
        base: &str,
        corp_id: &str,
        secret: Secret,
        agent_id: i64,
        timeout: Duration,
    ) -> WecomApi {
        WecomApi {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a client without TLS options builds"),
            base: base.trim_end_matches('/').to_owned(),
            corp_id: corp_id.to_owned(),
            secret,
            agent_id,
            token: Mutex::new(None),
        }
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(ApiReply, String), PlatformError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let raw = response.text().await.map_err(transport)?;
        if status.is_server_error() {
            return Err(PlatformError::Retryable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(PlatformError::Permanent(format!("HTTP {status}")));
        }
        let reply: ApiReply = serde_json::from_str(&raw)
            .map_err(|e| PlatformError::Retryable(format!("unreadable answer ({e})")))?;
        Ok((reply, raw))
    }

    /// A valid access token: cached, and fetched by one caller at a time
    /// (the others wait for it instead of asking WeCom again).
    pub async fn access_token(&self) -> Result<String, PlatformError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| Instant::now() < t.fresh_until) {
            return Ok(t.value.clone());
        }
        let request = self
            .http
            .get(format!("{}/cgi-bin/gettoken", self.base))
            .query(&[
                ("corpid", self.corp_id.as_str()),
                ("corpsecret", self.secret.expose()),
            ]);
        let (reply, _) = self.call(request).await?;
        match (reply.errcode, reply.access_token) {
            (0, Some(value)) => {
                let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(7200));
                let fresh_until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
                *slot = Some(Token {
                    value: value.clone(),
                    fresh_until,
                });
                Ok(value)
            }
            (-1, _) => Err(PlatformError::Retryable("gettoken: system busy".into())),
            (code, _) => Err(PlatformError::Permanent(format!(
                "gettoken refused: {code} {}",
                reply.errmsg
            ))),
        }
    }

    /// Forgets `token` if it is still the cached one (WeCom rejected it).
    async fn forget(&self, token: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == token) {
            *slot = None;
        }
    }

    /// GETs an API path with the access token and returns the JSON answer
    /// (errcode 0) and its text; a rejected token is refreshed once.
    pub(crate) async fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(Value, String), PlatformError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let request = self
                .http
                .get(format!("{}{path}", self.base))
                .query(&[("access_token", token.as_str())])
                .query(query);
            let (reply, raw) = self.call(request).await?;
            match reply.errcode {
                0 => {
                    let value = serde_json::from_str(&raw).map_err(|e| {
                        PlatformError::Retryable(format!("unreadable answer ({e})"))
                    })?;
                    return Ok((value, raw));
                }
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                -1 => {
                    return Err(PlatformError::Retryable(format!(
                        "system busy: {}",
                        reply.errmsg
                    )));
                }
                45009 | 45033 => {
                    return Err(PlatformError::RateLimited {
                        after_secs: RATE_LIMIT_BACKOFF_SECS,
                        reason: format!("{} {}", reply.errcode, reply.errmsg),
                    });
                }
                code => {
                    return Err(PlatformError::Permanent(format!(
                        "{path}: {code} {}",
                        reply.errmsg
                    )));
                }
            }
        }
    }

    fn body(&self, touser: &str, message: &Outbound, duplicate_check: bool) -> Value {
        let mut body = json!({ "touser": touser, "agentid": self.agent_id });
        let (msgtype, payload) = match message {
            Outbound::Text { content } => ("text", json!({ "content": content })),
            Outbound::Markdown { content } => ("markdown", json!({ "content": content })),
            Outbound::TextCard {
                title,
                description,
                url,
                button,
            } => (
                "textcard",
                json!({ "title": title, "description": description, "url": url, "btntxt": button }),
            ),
            Outbound::TemplateCard(card) => ("template_card", card.clone()),
        };
        body["msgtype"] = json!(msgtype);
        body[msgtype] = payload;
        if duplicate_check {
            // A second guard behind our own idempotency keys.
            body["enable_duplicate_check"] = json!(1);
            body["duplicate_check_interval"] = json!(1800);
        }
        body
    }

    /// Sends one message to one user (`message/send`). A rejected token is
    /// refreshed once and the message sent again.
    pub async fn send(
        &self,
        touser: &str,
        message: &Outbound,
        duplicate_check: bool,
    ) -> Result<Receipt, PlatformError> {
        let body = self.body(touser, message, duplicate_check);
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let request = self
                .http
                .post(format!("{}/cgi-bin/message/send", self.base))
                .query(&[("access_token", token.as_str())])
                .json(&body);
            let (reply, raw) = self.call(request).await?;
            match reply.errcode {
                0 => {
                    let invalid = reply.invaliduser.unwrap_or_default();
                    if invalid.split('|').any(|u| u.eq_ignore_ascii_case(touser)) {
                        return Err(PlatformError::Undeliverable {
                            user: touser.into(),
                            reason: "invaliduser".into(),
                        });
                    }
                    return Ok(Receipt {
                        msgid: reply.msgid,
                        response_code: reply.response_code,
                        raw,
                    });
                }
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                -1 => {
                    return Err(PlatformError::Retryable(format!(
                        "system busy: {}",
                        reply.errmsg
                    )));
                }
                45009 | 45033 => {
                    return Err(PlatformError::RateLimited {
                        after_secs: RATE_LIMIT_BACKOFF_SECS,
                        reason: format!("{} {}", reply.errcode, reply.errmsg),
                    });
                }
                81013 | 82001 => {
                    return Err(PlatformError::Undeliverable {
                        user: touser.into(),
                        reason: format!("{} {}", reply.errcode, reply.errmsg),
                    });
                }
                code => return Err(PlatformError::Permanent(format!("{code} {}", reply.errmsg))),
            }
        }
    }
}
