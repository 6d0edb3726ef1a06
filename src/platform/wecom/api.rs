//! The WeCom server API (`api_base` from config): access tokens cached per
//! app with single-flight refresh, `message/send`,
//! `message/update_template_card`, `media/get`, and error classification.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::platform::PlatformError;
use crate::platform::download::{self, Download, file_name};

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
    /// The request body as sent (the token travels in the query, not here).
    pub request: String,
}

/// A file downloaded with `media/get` (the name from `Content-disposition`).
pub use crate::platform::Media;

#[derive(Debug, Deserialize)]
pub(crate) struct ApiReply {
    #[serde(default)]
    pub(crate) errcode: i64,
    #[serde(default)]
    pub(crate) errmsg: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
    /// `"a|b"` from `message/send`, `["a","b"]` from `update_template_card`.
    invaliduser: Option<Value>,
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

/// Classifies a non-zero errcode that is not (or no longer) a token error:
/// a token refused again right after a refresh is WeCom's hiccup, retried
/// later like a busy answer (within the caller's bounded retries), not a
/// reason to give the message up.
pub(crate) fn refusal(what: &str, reply: &ApiReply) -> PlatformError {
    match reply.errcode {
        -1 => PlatformError::Retryable(format!("{what}: system busy: {}", reply.errmsg)),
        code if is_token_error(code) => PlatformError::Retryable(format!(
            "{what}: token refused again after a refresh: {code} {}",
            reply.errmsg
        )),
        45009 | 45033 => PlatformError::RateLimited {
            after_secs: RATE_LIMIT_BACKOFF_SECS,
            reason: format!("{} {}", reply.errcode, reply.errmsg),
        },
        code => PlatformError::Permanent(format!("{what}: {code} {}", reply.errmsg)),
    }
}

/// Whether `user` is in an `invaliduser` answer (a `|`-joined string or
/// an array, depending on the API).
fn is_listed(invalid: Option<&Value>, user: &str) -> bool {
    match invalid {
        Some(Value::String(s)) => s.split('|').any(|u| u.eq_ignore_ascii_case(user)),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|u| u.eq_ignore_ascii_case(user)),
        _ => false,
    }
}

fn transport(e: reqwest::Error) -> PlatformError {
    // Timeouts and refused connections are worth another try; the URL or the
    // body being wrong is not, but we build both ourselves.
    // Without the URL: a gettoken URL carries the app secret.
    PlatformError::Retryable(format!("request failed: {}", e.without_url()))
}

impl WecomApi {
    pub fn new(
        base: &str,
        corp_id: &str,
        secret: Secret,
        agent_id: i64,
        timeout: Duration,
    ) -> WecomApi {
        crate::tls::install_crypto_provider();
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
        // A gateway's "slow down": wait what it says (a minute if it says
        // nothing), within the caller's cap.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let raw = response.text().await.map_err(transport)?;
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(PlatformError::RateLimited {
                after_secs: retry_after.unwrap_or(RATE_LIMIT_BACKOFF_SECS).max(1),
                reason: format!("HTTP {status}"),
            });
        }
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
        let fetched = async {
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
                // Fetching the token is rate limited too.
                (45009 | 45033, _) => Err(PlatformError::RateLimited {
                    after_secs: RATE_LIMIT_BACKOFF_SECS,
                    reason: format!("gettoken: {} {}", reply.errcode, reply.errmsg),
                }),
                (code, _) => Err(PlatformError::Permanent(format!(
                    "gettoken refused: {code} {}",
                    reply.errmsg
                ))),
            }
        }
        .await;
        crate::metrics::count_token_fetch("wecom", fetched.is_ok());
        fetched
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
    // The address-book sync (employees issue) is its first caller.
    #[allow(dead_code)]
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
                _ => return Err(refusal(path, &reply)),
            }
        }
    }

    /// POSTs `body` as JSON to an API `path` with the token; the answer
    /// parsed and as received. A rejected token is refreshed once.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(ApiReply, String), PlatformError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let request = self
                .http
                .post(format!("{}{path}", self.base))
                .query(&[("access_token", token.as_str())])
                .json(body);
            let (reply, raw) = self.call(request).await?;
            match reply.errcode {
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                _ => return Ok((reply, raw)),
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

    /// Greys out the button of a `button_interaction` card for `userids`
    /// and relabels it (`message/update_template_card`). `response_code` is
    /// single-use (from the send's receipt or the click callback); a used or
    /// expired one is refused with 60140, which is permanent. A rejected
    /// token is refreshed once. Returns the answer as received.
    pub async fn update_template_card(
        &self,
        userids: &[&str],
        response_code: &str,
        replace_name: &str,
    ) -> Result<String, PlatformError> {
        let body = json!({
            "userids": userids,
            "agentid": self.agent_id,
            "response_code": response_code,
            "button": { "replace_name": replace_name },
        });
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let request = self
                .http
                .post(format!(
                    "{}/cgi-bin/message/update_template_card",
                    self.base
                ))
                .query(&[("access_token", token.as_str())])
                .json(&body);
            let (reply, raw) = self.call(request).await?;
            match reply.errcode {
                0 => return Ok(raw),
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                81013 => {
                    return Err(PlatformError::Undeliverable {
                        user: userids.join("|"),
                        reason: format!("{} {}", reply.errcode, reply.errmsg),
                    });
                }
                _ => return Err(refusal("update_template_card", &reply)),
            }
        }
    }

    /// Downloads media (`media/get`): the bytes on success, a JSON errcode
    /// on failure. Unknown or expired ids (40007) and files over
    /// [`MAX_MEDIA_BYTES`](download::MAX_MEDIA_BYTES) (or WeCom's 45001) are permanent; a rejected
    /// token is refreshed once.
    pub async fn media_get(&self, media_id: &str) -> Result<Media, PlatformError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let response = self
                .http
                .get(format!("{}/cgi-bin/media/get", self.base))
                .query(&[("access_token", token.as_str()), ("media_id", media_id)])
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            if status.is_server_error() {
                return Err(PlatformError::Retryable(format!(
                    "media/get: HTTP {status}"
                )));
            }
            if !status.is_success() {
                return Err(PlatformError::Permanent(format!(
                    "media/get: HTTP {status}"
                )));
            }
            let Download {
                content_type,
                disposition,
                bytes,
            } = download::read(response, "media/get").await?;
            // Errors come as JSON (WeCom labels them application/json or
            // text/plain); a download always carries a Content-disposition.
            let is_error = disposition.is_none()
                && (content_type.starts_with("application/json")
                    || content_type.starts_with("text/plain"));
            if !is_error {
                return Ok(Media {
                    bytes,
                    content_type,
                    file_name: disposition.as_deref().and_then(file_name),
                });
            }
            let reply: ApiReply = serde_json::from_slice(&bytes).map_err(|e| {
                PlatformError::Retryable(format!("media/get: unreadable answer ({e})"))
            })?;
            match reply.errcode {
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                0 => {
                    return Err(PlatformError::Retryable(
                        "media/get: JSON answer without media".into(),
                    ));
                }
                45001 => return Err(download::too_large("media/get")),
                _ => return Err(refusal("media/get", &reply)),
            }
        }
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
                    if is_listed(reply.invaliduser.as_ref(), touser) {
                        return Err(PlatformError::Undeliverable {
                            user: touser.into(),
                            reason: "invaliduser".into(),
                        });
                    }
                    return Ok(Receipt {
                        msgid: reply.msgid,
                        response_code: reply.response_code,
                        raw,
                        request: body.to_string(),
                    });
                }
                code if is_token_error(code) && !refreshed => {
                    self.forget(&token).await;
                    refreshed = true;
                }
                81013 | 82001 => {
                    return Err(PlatformError::Undeliverable {
                        user: touser.into(),
                        reason: format!("{} {}", reply.errcode, reply.errmsg),
                    });
                }
                _ => return Err(refusal("message/send", &reply)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_name_comes_from_the_disposition() {
        assert_eq!(
            file_name("attachment; filename=\"MEDIA_ID.jpg\"").as_deref(),
            Some("MEDIA_ID.jpg")
        );
        assert_eq!(file_name("attachment").as_deref(), None);
        assert_eq!(
            file_name("attachment; filename=a.amr").as_deref(),
            Some("a.amr")
        );
    }
}
