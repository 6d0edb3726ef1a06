//! Text messages: Aliyun SMS (dysmsapi `SendSms`) or a generic signed webhook
//! in front of any other gateway. Both answer with the same
//! [`PlatformError`]s as the chat platforms, so delivery treats every
//! channel alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha1::Sha1;
use sha2::Sha256;

use crate::config::{AliyunSmsConfig, SmsConfig, WebhookSmsConfig};
use crate::platform::PlatformError;

/// What a webhook's 429 means when it sends no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;

/// One text message to one phone.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsMessage {
    /// The phone number, as the provider expects it (mainland numbers: 11 digits).
    pub phone: String,
    /// The full rendered notice (sent by the webhook provider).
    pub text: String,
    /// The values for a pre-approved template (Aliyun `TemplateParam`).
    pub template_param: serde_json::Map<String, serde_json::Value>,
    /// Our idempotency key: Aliyun `OutId`, the webhook's `out_id`.
    pub out_id: String,
}

/// What a provider accepted, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReceipt {
    /// Aliyun's `BizId`, or the webhook's `id`.
    pub provider_id: String,
    /// What was sent, with no secret in it.
    pub request: String,
    /// The provider's answer exactly as received.
    pub response: String,
}

/// A way to send text messages; used as `Arc<dyn SmsProvider>`.
#[async_trait::async_trait]
pub trait SmsProvider: Send + Sync {
    /// A short name for logs and the outbox record (`aliyun`, `webhook`).
    fn name(&self) -> &'static str;
    /// Sends one message. Errors say whether to retry, wait, give up on this
    /// recipient or give up altogether; a request that may have reached the
    /// gateway without an answer is [`outcome_unknown`].
    async fn send(&self, msg: &SmsMessage) -> Result<SmsReceipt, PlatformError>;
    /// Whether rollcall asks this gateway for reports ([`Self::query`]);
    /// otherwise the gateway posts them (`POST /sms/report/{tenant}`).
    fn reports_by_query(&self) -> bool {
        false
    }
    /// Asks the gateway what became of a text. `Ok(None)`: this gateway is
    /// not asked (a webhook gateway posts its reports to rollcall).
    async fn query(&self, _lookup: &SmsLookup) -> Result<Option<SmsQueryAnswer>, PlatformError> {
        Ok(None)
    }
}

/// What a gateway reports of a text it accepted (`outbox.delivery_status`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum DeliveryStatus {
    /// The handset received it.
    Delivered,
    /// The carrier could not deliver it.
    Failed,
    /// rollcall does not know whether the gateway took it (the request
    /// timed out after it may have arrived).
    Unknown,
}

impl DeliveryStatus {
    /// The word stored in `outbox.delivery_status`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which text to ask about: the number, the day it was sent (China time,
/// as Aliyun files it), the gateway's id when known, and our `OutId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsLookup {
    pub phone: String,
    pub sent_on: chrono::NaiveDate,
    pub provider_id: Option<String>,
    pub out_id: String,
}

/// One text's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReport {
    /// `None`: the gateway still waits for the carrier's receipt.
    pub status: Option<DeliveryStatus>,
    /// When the handset received it (or the carrier gave up), as reported.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The carrier's code (Aliyun `ErrCode`: `DELIVERED`, or why not).
    pub code: String,
}

/// The gateway's answer to a [`SmsLookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsQueryAnswer {
    /// The text's record; `None` when the gateway holds no text with our
    /// `OutId` for that number and day.
    pub report: Option<SmsReport>,
    /// The answer exactly as received.
    pub raw: String,
}

/// Whether `e` is a request that may have reached the gateway with no
/// answer (a timeout after connecting): the text must not be sent again
/// blindly, since no gateway guards against a double.
pub fn outcome_unknown(e: &PlatformError) -> bool {
    matches!(e, PlatformError::OutcomeUnknown(_))
}

/// `13812345678` → `138****5678`: enough to tell numbers apart in logs and
/// errors, without the number itself.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 7 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

// ---------------------------------------------------------------------------
// Aliyun
// ---------------------------------------------------------------------------

/// Aliyun's POP percent-encoding: RFC 3986 on UTF-8 bytes, leaving only
/// `A-Z a-z 0-9 - _ . ~` as they are (so space → `%20`, `*` → `%2A`).
pub fn aliyun_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature of an Aliyun RPC request (signature version 1.0, HMAC-SHA1):
/// `base64(HMAC-SHA1(secret + "&", METHOD + "&%2F&" + enc(canonical query)))`
/// where the canonical query is every parameter except `Signature`, sorted by
/// name, as `enc(k)=enc(v)` joined by `&`.
pub fn aliyun_signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let canonical = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", aliyun_percent_encode(k), aliyun_percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!("{method}&%2F&{}", aliyun_percent_encode(&canonical));
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The Aliyun `SendSms` answer (and the gateway's error answer, which has the
/// same `Code` / `Message` shape).
#[derive(Debug, Deserialize)]
struct AliyunReply {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "BizId")]
    biz_id: Option<String>,
}

/// What an Aliyun `Code` asks of us. `http_status` breaks the tie for codes
/// we do not know: a 5xx is worth another try.
fn classify_aliyun(
    code: &str,
    message: &str,
    http_status: u16,
    phone: &str,
) -> Result<(), PlatformError> {
    let detail = format!("aliyun {code}: {message}");
    match code {
        "OK" => Ok(()),
        // Per-number flow control (1/min, 5/h, 10/day for one sign name) and
        // the account's daily quota: wait as long as the limit that tripped.
        c if c.starts_with("isv.BUSINESS_LIMIT")
            || c.starts_with("BUSINESS_LIMIT_CONTROL")
            || c == "isv.DAY_LIMIT_CONTROL" =>
        {
            Err(PlatformError::RateLimited {
                after_secs: limit_window_secs(message),
                reason: detail,
            })
        }
        // The API's own QPS limit: a short pause is enough.
        c if c.starts_with("Throttling") => Err(PlatformError::RateLimited {
            after_secs: 1,
            reason: detail,
        }),
        "isv.MOBILE_NUMBER_ILLEGAL"
        | "isv.MOBILE_COUNT_OVER_LIMIT"
        | "isv.DOMESTIC_NUMBER_NOT_SUPPORTED"
        | "isv.NOT_SUPPORTED_COUNTRY"
        | "isv.COUNTRY_RESTRICTED" => Err(PlatformError::Undeliverable {
            user: mask_phone(phone),
            reason: detail,
        }),
        "isp.SYSTEM_ERROR" | "isp.GATEWAY_ERROR" | "isp.UNKNOWN" | "ServiceUnavailable"
        | "InternalError" => Err(PlatformError::Retryable(detail)),
        _ if http_status >= 500 => Err(PlatformError::Retryable(detail)),
        _ => Err(PlatformError::Permanent(detail)),
    }
}

/// Aliyun says which window tripped only in the message text.
fn limit_window_secs(message: &str) -> u64 {
    let m = message.to_ascii_lowercase();
    if message.contains('天') || message.contains('日') || m.contains("day") {
        86_400
    } else if message.contains("小时") || m.contains("hour") {
        3_600
    } else {
        60
    }
}

fn transport_error(e: reqwest::Error) -> PlatformError {
    // The URL may carry a gateway token in its query: keep it out of errors.
    let e = e.without_url();
    if e.is_builder() {
        PlatformError::Permanent(format!("request could not be built: {e}"))
    } else if e.is_timeout() && !e.is_connect() {
        // Connected and sent, then no answer in time: the gateway may have
        // taken it.
        PlatformError::OutcomeUnknown(format!("request failed: {e}"))
    } else {
        // Timeouts, refused connections, resets, TLS failures: try again.
        PlatformError::Retryable(format!("request failed: {e}"))
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        // A redirected POST turns into a GET: refuse instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client could not be built: {e}"))
}

/// Sends through Aliyun SMS with a pre-approved sign name and template.
pub struct AliyunSms {
    http: Result<reqwest::Client, String>,
    config: AliyunSmsConfig,
}

impl std::fmt::Debug for AliyunSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSms")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AliyunSms {
    /// A sender for this configuration; each request gives up after `timeout`.
    pub fn new(config: AliyunSmsConfig, timeout: Duration) -> AliyunSms {
        AliyunSms {
            http: http_client(timeout),
            config,
        }
    }

    fn params(&self, msg: &SmsMessage) -> BTreeMap<String, String> {
        let c = &self.config;
        let template_param = serde_json::Value::Object(msg.template_param.clone()).to_string();
        let mut params = self.common_params("SendSms");
        params.extend(
            [
                ("PhoneNumbers", msg.phone.as_str()),
                ("SignName", c.sign_name.as_str()),
                ("TemplateCode", c.template_code.as_str()),
                ("TemplateParam", template_param.as_str()),
                ("OutId", msg.out_id.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        params
    }

    /// The parameters every RPC call carries (signed with them).
    fn common_params(&self, action: &str) -> BTreeMap<String, String> {
        let c = &self.config;
        let nonce = format!("{:032x}", rand::random::<u128>());
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        [
            ("Action", action),
            ("Version", "2017-05-25"),
            ("Format", "JSON"),
            ("RegionId", c.region_id.as_str()),
            ("AccessKeyId", c.access_key_id.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce.as_str()),
            ("Timestamp", timestamp.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

fn form_body(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", aliyun_percent_encode(k), aliyun_percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[async_trait::async_trait]
impl SmsProvider for AliyunSms {
    fn name(&self) -> &'static str {
        "aliyun"
    }

    fn reports_by_query(&self) -> bool {
        true
    }

    async fn send(&self, msg: &SmsMessage) -> Result<SmsReceipt, PlatformError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| PlatformError::Permanent(e.clone()))?;
        let mut params = self.params(msg);
        // The evidence copy: everything but the signature (the secret itself
        // is never sent).
        let request = form_body(&params);
        let signature = aliyun_signature("POST", &params, self.config.access_key_secret.expose());
        params.insert("Signature".to_owned(), signature);
        let response = http
            .post(&self.config.endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(form_body(&params))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let raw = response.text().await.map_err(transport_error)?;
        let reply = match serde_json::from_str::<AliyunReply>(&raw) {
            Ok(AliyunReply {
                code: Some(code),
                message,
                biz_id,
            }) => (code, message.unwrap_or_default(), biz_id),
            _ if status.is_server_error() => {
                return Err(PlatformError::Retryable(format!("aliyun: HTTP {status}")));
            }
            _ => {
                return Err(PlatformError::Permanent(format!(
                    "aliyun: HTTP {status} with an answer that is not SendSms JSON"
                )));
            }
        };
        let (code, message, biz_id) = reply;
        classify_aliyun(&code, &message, status.as_u16(), &msg.phone)?;
        let provider_id = biz_id.filter(|b| !b.is_empty()).ok_or_else(|| {
            PlatformError::Permanent("aliyun answered OK without a BizId".to_owned())
        })?;
        Ok(SmsReceipt {
            provider_id,
            request,
            response: raw,
        })
    }

    /// `QuerySendDetails`: the texts sent to the number that day (one page
    /// of 50; the BizId narrows it when known), and among them the one with
    /// our `OutId`. Its `SendStatus` is 1 waiting, 2 failed, 3 delivered;
    /// `ReceiveDate` is China time. The details carry no BizId: the text is
    /// known by its `OutId`.
    async fn query(&self, lookup: &SmsLookup) -> Result<Option<SmsQueryAnswer>, PlatformError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| PlatformError::Permanent(e.clone()))?;
        let mut params = self.common_params("QuerySendDetails");
        let send_date = lookup.sent_on.format("%Y%m%d").to_string();
        params.insert("PhoneNumber".to_owned(), lookup.phone.clone());
        params.insert("SendDate".to_owned(), send_date);
        params.insert("PageSize".to_owned(), "50".to_owned());
        params.insert("CurrentPage".to_owned(), "1".to_owned());
        if let Some(biz_id) = &lookup.provider_id {
            params.insert("BizId".to_owned(), biz_id.clone());
        }
        let signature = aliyun_signature("POST", &params, self.config.access_key_secret.expose());
        params.insert("Signature".to_owned(), signature);
        let response = http
            .post(&self.config.endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(form_body(&params))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let raw = response.text().await.map_err(transport_error)?;
        let Ok(reply) = serde_json::from_str::<QueryReply>(&raw) else {
            return Err(if status.is_server_error() {
                PlatformError::Retryable(format!("aliyun: HTTP {status}"))
            } else {
                PlatformError::Permanent(format!(
                    "aliyun: HTTP {status} with an answer that is not QuerySendDetails JSON"
                ))
            });
        };
        classify_aliyun(
            reply.code.as_deref().unwrap_or_default(),
            reply.message.as_deref().unwrap_or_default(),
            status.as_u16(),
            &lookup.phone,
        )?;
        let report = reply
            .details
            .map(|d| d.detail)
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.out_id.as_deref() == Some(lookup.out_id.as_str()))
            .map(|d| SmsReport {
                status: match d.send_status {
                    Some(2) => Some(DeliveryStatus::Failed),
                    Some(3) => Some(DeliveryStatus::Delivered),
                    _ => None,
                },
                at: d.receive_date.as_deref().and_then(china_time),
                code: d.err_code.unwrap_or_default(),
            });
        Ok(Some(SmsQueryAnswer { report, raw }))
    }
}

/// The `QuerySendDetails` answer.
#[derive(Debug, Deserialize)]
struct QueryReply {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "SmsSendDetailDTOs")]
    details: Option<QueryDetails>,
}

#[derive(Debug, Deserialize)]
struct QueryDetails {
    #[serde(rename = "SmsSendDetailDTO", default)]
    detail: Vec<QueryDetail>,
}

#[derive(Debug, Deserialize)]
struct QueryDetail {
    #[serde(rename = "SendStatus")]
    send_status: Option<i64>,
    #[serde(rename = "ReceiveDate")]
    receive_date: Option<String>,
    #[serde(rename = "ErrCode")]
    err_code: Option<String>,
    #[serde(rename = "OutId")]
    out_id: Option<String>,
}

/// `2026-12-04 10:00:07` in China time (how Aliyun writes dates), as an instant.
fn china_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&chrono::Utc))
}

// ---------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------

/// The `"error"` a webhook answers (with HTTP 422) for a number that cannot
/// receive texts.
pub const WEBHOOK_INVALID_NUMBER: &str = "invalid_number";

/// Header carrying the signing time (Unix seconds).
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "X-Rollcall-Timestamp";
/// Header carrying the hex HMAC-SHA256 signature.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "X-Rollcall-Signature";

/// The webhook signature: lowercase hex of
/// `HMAC-SHA256(secret, timestamp + "." + body)`.
pub fn webhook_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How far a webhook report's timestamp may be from our clock.
pub const WEBHOOK_MAX_SKEW_SECS: i64 = 300;

/// Why a signed webhook request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    #[error("missing or malformed timestamp")]
    Timestamp,
    #[error("missing or wrong signature")]
    Signature,
    #[error("timestamp too far from our clock")]
    Stale,
}

/// Checks a request signed as rollcall signs its own (see [`WebhookSms`]):
/// the HMAC compared in constant time, then the timestamp within
/// [`WEBHOOK_MAX_SKEW_SECS`] of `now` (checked after the signature, so an
/// unsigned request learns nothing of our clock).
pub fn verify_webhook(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), WebhookRefusal> {
    let timestamp = timestamp
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(WebhookRefusal::Timestamp)?;
    let secs: i64 = timestamp.parse().map_err(|_| WebhookRefusal::Timestamp)?;
    let signature = signature
        .and_then(|s| hex::decode(s).ok())
        .ok_or(WebhookRefusal::Signature)?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| WebhookRefusal::Signature)?;
    if (now - secs).abs() > WEBHOOK_MAX_SKEW_SECS {
        return Err(WebhookRefusal::Stale);
    }
    Ok(())
}

/// Sends through any gateway that implements this contract.
///
/// # The contract
///
/// rollcall sends `POST <url>` with `Content-Type: application/json` and the
/// body
///
/// ```json
/// {"to": "13812345678", "text": "…full notice…", "params": {"name": "张三"},
///  "out_id": "case-42-step-1", "timestamp": 1767225600}
/// ```
///
/// and two headers:
///
/// - `X-Rollcall-Timestamp`: the same Unix time in seconds, as decimal digits;
/// - `X-Rollcall-Signature`: lowercase hex of HMAC-SHA256, keyed with the
///   shared secret (its UTF-8 bytes), over the timestamp header's value, one
///   `.` and the raw body bytes exactly as received (do not re-serialise the
///   JSON).
///
/// A receiver should recompute the signature, compare it in constant time,
/// and refuse timestamps far from its clock (we suggest ±5 minutes) to stop
/// replays. `out_id` is rollcall's idempotency key: a receiver that sees the
/// same `out_id` twice should answer with the first message's id and not
/// send again (rollcall delivers at least once).
///
/// The answer:
///
/// - `2xx` with a JSON object holding a string `"id"`: sent; the id is kept;
/// - `429`: wait for `Retry-After` seconds (60 when absent) and try again;
/// - `5xx` (or no answer in time): try again later;
/// - `422` with a JSON object whose `"error"` is `"invalid_number"`: this
///   number cannot receive texts (not a phone, unassigned, blocked); rollcall
///   gives up on this number, tells HR and uses the other channels;
/// - any other status: refused for good (a 2xx without an `id` counts as
///   refused too). Redirects are not followed.
///
/// # Delivery reports
///
/// The gateway may then post what became of a text to
/// `POST {public_url}/sms/report/{tenant}`, signed the same way (same secret,
/// same two headers), with a JSON body
///
/// ```json
/// {"id": "m-1", "status": "delivered", "at": "2026-12-04T10:00:07+08:00", "code": "DELIVRD"}
/// ```
///
/// where `id` is the id the gateway answered (or `"out_id"`, rollcall's key,
/// instead), `status` is `delivered` or `failed`, `at` (RFC 3339) is when
/// the handset received it or the carrier gave up, and `code` (optional) is
/// the carrier's. rollcall answers 200 when it recorded it (or had
/// already), 404 for an id it never sent, 401 for a bad signature or a
/// timestamp more than 5 minutes off, 400 for another body; a refused
/// report changes nothing.
pub struct WebhookSms {
    http: Result<reqwest::Client, String>,
    config: WebhookSmsConfig,
}

impl std::fmt::Debug for WebhookSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSms")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WebhookSms {
    /// A sender for this configuration; each request gives up after `timeout`.
    pub fn new(config: WebhookSmsConfig, timeout: Duration) -> WebhookSms {
        WebhookSms {
            http: http_client(timeout),
            config,
        }
    }
}

#[derive(Deserialize)]
struct WebhookReply {
    id: Option<String>,
    error: Option<String>,
}

/// What a webhook's answer means (see the contract on [`WebhookSms`]): the
/// message id, or what to do instead.
fn classify_webhook(
    status: u16,
    retry_after: Option<u64>,
    raw: &str,
    phone: &str,
) -> Result<String, PlatformError> {
    let reply = serde_json::from_str::<WebhookReply>(raw).ok();
    if status == 429 {
        return Err(PlatformError::RateLimited {
            after_secs: retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS),
            reason: "webhook: HTTP 429".to_owned(),
        });
    }
    if (500..600).contains(&status) {
        return Err(PlatformError::Retryable(format!("webhook: HTTP {status}")));
    }
    if status == 422
        && reply.as_ref().and_then(|r| r.error.as_deref()) == Some(WEBHOOK_INVALID_NUMBER)
    {
        return Err(PlatformError::Undeliverable {
            user: mask_phone(phone),
            reason: format!("webhook: HTTP 422 {WEBHOOK_INVALID_NUMBER}"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(PlatformError::Permanent(format!("webhook: HTTP {status}")));
    }
    reply
        .and_then(|r| r.id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            PlatformError::Permanent(format!(
                "webhook: HTTP {status} but the answer has no string `id`"
            ))
        })
}

#[async_trait::async_trait]
impl SmsProvider for WebhookSms {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, msg: &SmsMessage) -> Result<SmsReceipt, PlatformError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| PlatformError::Permanent(e.clone()))?;
        let now = chrono::Utc::now().timestamp();
        let body = serde_json::json!({
            "to": msg.phone,
            "text": msg.text,
            "params": msg.template_param,
            "out_id": msg.out_id,
            "timestamp": now,
        })
        .to_string();
        let timestamp = now.to_string();
        let signature = webhook_signature(self.config.secret.expose(), &timestamp, body.as_bytes());
        let response = http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_TIMESTAMP_HEADER, &timestamp)
            .header(WEBHOOK_SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let raw = response.text().await.map_err(transport_error)?;
        let id = classify_webhook(status.as_u16(), retry_after, &raw, &msg.phone)?;
        Ok(SmsReceipt {
            provider_id: id,
            request: body,
            response: raw,
        })
    }
}

/// The sender for a checked configuration; each request gives up after `timeout`.
pub fn sms_provider(config: &SmsConfig, timeout: Duration) -> Arc<dyn SmsProvider> {
    match config {
        SmsConfig::Aliyun(c) => Arc::new(AliyunSms::new(c.clone(), timeout)),
        SmsConfig::Webhook(c) => Arc::new(WebhookSms::new(c.clone(), timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ALIYUN_DEFAULT_ENDPOINT, ConfigError, RawSmsConfig, invalid, resolve_sms};
    use rstest::rstest;

    /// Aliyun's published SendSms example (GET, testId / testSecret).
    #[test]
    fn reproduces_aliyuns_published_example_signature() {
        let params: BTreeMap<String, String> = [
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", "{\"customer\":\"test\"}"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            aliyun_signature("GET", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
        // The method is part of what is signed.
        assert_ne!(
            aliyun_signature("POST", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
    }

    #[rstest]
    #[case("a b", "a%20b")]
    #[case("a*b", "a%2Ab")]
    #[case("a~b-_.", "a~b-_.")]
    #[case("a+b=c&d/", "a%2Bb%3Dc%26d%2F")]
    #[case("短", "%E7%9F%AD")]
    fn percent_encoding_is_rfc3986(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(aliyun_percent_encode(input), expected);
    }

    #[rstest]
    #[case("13812345678", "138****5678")]
    #[case("+8613812345678", "+86*******5678")]
    #[case("12345", "*****")]
    fn phones_are_masked(#[case] phone: &str, #[case] masked: &str) {
        assert_eq!(mask_phone(phone), masked);
    }

    #[rstest]
    #[case("触发分钟级流控Permits:1", 60)]
    #[case("触发小时级流控Permits:5", 3_600)]
    #[case("触发天级流控Permits:10", 86_400)]
    #[case("", 60)]
    fn flow_control_waits_for_its_window(#[case] message: &str, #[case] secs: u64) {
        assert_eq!(limit_window_secs(message), secs);
    }

    #[test]
    fn webhook_reports_are_verified_signature_first_then_time() {
        let body = br#"{"id":"m-1","status":"delivered","at":"2026-12-04T10:00:07+08:00"}"#;
        let sig = webhook_signature("k", "1700000000", body);
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now: i64| {
            verify_webhook("k", ts, sig, body, now)
        };
        assert_eq!(
            check(Some("1700000000"), Some(&sig), body, 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            check(Some("1700000000"), Some(&sig), body, 1_700_000_301),
            Err(WebhookRefusal::Stale)
        );
        // A forged request learns nothing about our clock.
        let forged = webhook_signature("other", "1700000000", body);
        assert_eq!(
            check(Some("1700000000"), Some(&forged), body, 1_800_000_000),
            Err(WebhookRefusal::Signature)
        );
        assert_eq!(
            check(Some("1700000000"), Some(&sig), b"{}", 1_700_000_000),
            Err(WebhookRefusal::Signature)
        );
        assert_eq!(
            check(Some("1700000000"), Some("zz"), body, 1_700_000_000),
            Err(WebhookRefusal::Signature)
        );
        assert_eq!(
            check(None, Some(&sig), body, 1_700_000_000),
            Err(WebhookRefusal::Timestamp)
        );
        assert_eq!(
            check(Some("-1"), Some(&sig), body, 1_700_000_000),
            Err(WebhookRefusal::Timestamp)
        );
    }

    #[test]
    fn aliyun_dates_are_china_time() {
        assert_eq!(
            china_time("2026-12-04 10:00:07").map(|t| t.to_rfc3339()),
            Some("2026-12-04T02:00:07+00:00".to_owned())
        );
        assert_eq!(china_time("2026-12-04T10:00:07"), None);
    }

    #[test]
    fn delivery_status_words() {
        use strum::IntoEnumIterator;
        let words: Vec<&str> = DeliveryStatus::iter().map(DeliveryStatus::as_str).collect();
        assert_eq!(words, ["delivered", "failed", "unknown"]);
    }

    #[test]
    fn webhook_signature_is_hex_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: python3 hmac.new(b"k", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            webhook_signature("k", "1700000000", br#"{"a":1}"#),
            "1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3"
        );
        let a = webhook_signature("k", "1", b"{}");
        assert_eq!(a, webhook_signature("k", "1", b"{}"));
        assert_ne!(a, webhook_signature("k", "2", b"{}"));
        assert_ne!(a, webhook_signature("k", "1", b"{ }"));
    }

    #[rstest]
    #[case::sent(200, None, r#"{"id":"m-1"}"#, Ok("m-1".to_owned()))]
    #[case::invalid_number(
        422,
        None,
        r#"{"error":"invalid_number"}"#,
        Err("undeliverable 138****5678")
    )]
    #[case::other_422(422, None, r#"{"error":"template_missing"}"#, Err("permanent"))]
    #[case::plain_422(422, None, "invalid_number", Err("permanent"))]
    #[case::invalid_number_on_400(400, None, r#"{"error":"invalid_number"}"#, Err("permanent"))]
    #[case::rate_limited(429, Some(3), "", Err("rate limited 3"))]
    #[case::server_error(502, None, r#"{"error":"invalid_number"}"#, Err("retryable"))]
    fn webhook_answers_follow_the_contract(
        #[case] status: u16,
        #[case] retry_after: Option<u64>,
        #[case] raw: &str,
        #[case] expected: Result<String, &str>,
    ) {
        let got = classify_webhook(status, retry_after, raw, "13812345678").map_err(|e| match e {
            PlatformError::Undeliverable { user, .. } => format!("undeliverable {user}"),
            PlatformError::RateLimited { after_secs, .. } => format!("rate limited {after_secs}"),
            PlatformError::Retryable(_) => "retryable".to_owned(),
            PlatformError::OutcomeUnknown(_) => "unknown".to_owned(),
            PlatformError::Permanent(_) => "permanent".to_owned(),
        });
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    fn parse(text: &str) -> Result<SmsConfig, ConfigError> {
        let raw: RawSmsConfig = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        resolve_sms("tenants[0].sms", raw, &[("SMS_SECRET", "from-env")])
    }

    #[test]
    fn aliyun_defaults_and_secret_from_env() {
        let c = parse(
            "provider = \"aliyun\"\naccess_key_id = \"LTAI\"\naccess_key_secret_env = \"SMS_SECRET\"\nsign_name = \"人事部\"\ntemplate_code = \"SMS_1\"\n",
        )
        .unwrap();
        let SmsConfig::Aliyun(a) = &c else {
            panic!("not aliyun: {c:?}")
        };
        assert_eq!(a.endpoint, ALIYUN_DEFAULT_ENDPOINT);
        assert_eq!(a.region_id, "cn-hangzhou");
        assert_eq!(a.access_key_secret.expose(), "from-env");
        assert!(!format!("{c:?}").contains("from-env"));
    }

    #[rstest]
    #[case::no_secret(
        "provider = \"aliyun\"\naccess_key_id = \"x\"\nsign_name = \"s\"\ntemplate_code = \"t\"\n",
        "tenants[0].sms.access_key_secret"
    )]
    #[case::no_sign(
        "provider = \"aliyun\"\naccess_key_id = \"x\"\naccess_key_secret = \"k\"\ntemplate_code = \"t\"\n",
        "tenants[0].sms.sign_name"
    )]
    #[case::no_template(
        "provider = \"aliyun\"\naccess_key_id = \"x\"\naccess_key_secret = \"k\"\nsign_name = \"s\"\n",
        "tenants[0].sms.template_code"
    )]
    #[case::no_key_id(
        "provider = \"aliyun\"\naccess_key_secret = \"k\"\nsign_name = \"s\"\ntemplate_code = \"t\"\n",
        "tenants[0].sms.access_key_id"
    )]
    #[case::bad_endpoint(
        "provider = \"aliyun\"\nendpoint = \"ftp://x\"\naccess_key_id = \"x\"\naccess_key_secret = \"k\"\nsign_name = \"s\"\ntemplate_code = \"t\"\n",
        "tenants[0].sms.endpoint"
    )]
    #[case::unset_env(
        "provider = \"webhook\"\nurl = \"https://sms.example/send\"\nsecret_env = \"NOPE\"\n",
        "tenants[0].sms.secret_env"
    )]
    #[case::webhook_no_url("provider = \"webhook\"\nsecret = \"k\"\n", "tenants[0].sms.url")]
    #[case::webhook_bad_url(
        "provider = \"webhook\"\nurl = \"not a url\"\nsecret = \"k\"\n",
        "tenants[0].sms.url"
    )]
    // Phone numbers and notices never cross the network in clear.
    #[case::webhook_plain_http(
        "provider = \"webhook\"\nurl = \"http://sms.example/send\"\nsecret = \"k\"\n",
        "tenants[0].sms.url"
    )]
    #[case::aliyun_plain_http(
        "provider = \"aliyun\"\nendpoint = \"http://dysmsapi.aliyuncs.com\"\naccess_key_id = \"x\"\naccess_key_secret = \"k\"\nsign_name = \"s\"\ntemplate_code = \"t\"\n",
        "tenants[0].sms.endpoint"
    )]
    fn bad_sms_config_names_the_key(#[case] text: &str, #[case] key: &str) {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }

    #[rstest]
    #[case::typo("provider = \"webhook\"\nurl = \"https://x/\"\nsecret = \"k\"\nsecrte = \"k\"\n")]
    #[case::unknown_provider("provider = \"twilio\"\n")]
    fn unknown_keys_and_providers_are_refused(#[case] text: &str) {
        assert!(toml::from_str::<RawSmsConfig>(text).is_err());
    }
}
