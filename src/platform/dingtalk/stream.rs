//! DingTalk Stream mode, the client side: rollcall dials out to DingTalk's
//! gateway, so an employer needs no public callback URL.
//!
//! The protocol (DingTalk's description in open-dingtalk/developerpedia
//! `docs/learn/stream/protocol.md`, and the official SDKs
//! dingtalk-stream-sdk-python `stream.py`/`frames.py`/`handlers.py` and
//! dingtalk-stream-sdk-go `client/client.go`, `event/frame_handler.go`):
//!
//! 1. `POST {api}/v1.0/gateway/connections/open` with
//!    `{clientId, clientSecret, subscriptions, ua, localIp}` answers
//!    `{endpoint, ticket}`; a ticket opens one connection, within 90 s.
//! 2. The WebSocket is opened at `endpoint?ticket=<ticket>`.
//! 3. The gateway sends text frames `{specVersion, type, headers, data}`,
//!    `type` being `EVENT`, `CALLBACK` or `SYSTEM`; `data` is a JSON string.
//! 4. The client answers each with `{code, headers{contentType, messageId},
//!    message, data}`. An EVENT is consumed when `data` says
//!    `{"status":"SUCCESS"}`; `LATER` asks for it again. A CALLBACK's `data` is
//!    `{"response": …}`. SYSTEM `ping` is answered with its own `data`
//!    (the `opaque`); SYSTEM `disconnect` announces that the gateway closes
//!    the connection after 10 s: the client reconnects.
//!
//! What this module does about it: [`FrameHandler::handle`] is called for
//! each EVENT and CALLBACK frame, in order (up to
//! [`StreamConfig::handler_concurrency`] at once), on a task of its own so
//! that a slow handler never delays the answer to a ping. The frame is acknowledged
//! only after `handle` returned `Ok` (rollcall commits durably inside it).
//! When it fails (or panics) the client answers code 500 (protocol.md:
//! "500：内部错误"; for an EVENT with `{"status":"LATER"}`, as the Go SDK),
//! which the gateway takes as "not consumed"; the Python SDK sends nothing
//! at all, which the gateway treats the same way after its timeout.
//!
//! Only EVENT frames come again: the gateway redelivers an unconsumed event,
//! and may also redeliver one that was acknowledged (a lost ack), so the
//! handler deduplicates by `messageId` / `eventId`. CALLBACK frames (robot
//! messages, card callbacks) are fire-and-forget (developerpedia FAQ: robot
//! messages are not pushed again): the gateway never resends one, so a
//! callback frame that was read is never skipped here. When a connection
//! ends, the frames already queued are still handled: on `disconnect` and at
//! shutdown within [`StreamConfig::handler_grace`], with their acks (the
//! socket stays usable ~10 s after `disconnect`); on a broken socket the
//! queued CALLBACK frames still go to the handler (so they are stored) though
//! no ack can go out, and queued EVENT frames are left for redelivery. A
//! robot message whose handler fails is lost to the stream.
//!
//! Nothing here knows what a robot message or a card is: frames go to the
//! handler as they came, with their verbatim text ([`StreamFrame::raw`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::future::{Fuse, FusedFuture};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The robot message topic (单聊/群聊 messages to the app's robot).
pub const TOPIC_BOT_MESSAGE: &str = "/v1.0/im/bot/messages/get";
/// The interactive card callback topic (a button pressed on a card).
pub const TOPIC_CARD_CALLBACK: &str = "/v1.0/card/instances/callback";
/// SYSTEM topic: a health check to answer with its own data.
pub const TOPIC_PING: &str = "ping";
/// SYSTEM topic: the gateway is about to close this connection.
pub const TOPIC_DISCONNECT: &str = "disconnect";
/// The path of the connection-open API under `api_base_v1`.
pub const OPEN_CONNECTION_PATH: &str = "/v1.0/gateway/connections/open";

/// The `data` of a consumed EVENT's ack (developerpedia protocol.md; Go SDK
/// `NewEventProcessResultSuccess`).
const EVENT_SUCCESS: &str = r#"{"status":"SUCCESS","message":"success"}"#;
/// The `data` of an EVENT's ack when it should come again (Go SDK `LATER`).
const EVENT_LATER: &str = r#"{"status":"LATER","message":"later"}"#;
const CONTENT_TYPE_JSON: &str = "application/json";

/// The default [`StreamConfig::queue_capacity`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// How long the ack of a handled frame is kept, to answer a redelivery of it
/// without running the handler again (the Python SDK keeps 5 minutes,
/// `MESSAGE_RESULT_TTL_SECONDS`).
pub const ACK_CACHE_TTL: Duration = Duration::from_secs(300);

/// Why the stream failed. Cloneable (it is part of [`StreamStatus`]), so the
/// causes are kept as text; none of them contains the client secret or a
/// ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The configuration cannot work (an empty client id or secret).
    #[error("invalid stream configuration: {0}")]
    Config(String),
    /// The gateway refused the app's credentials: HTTP 400
    /// `invalidClientIdOrSecret`, or HTTP 401 (`authFailed`). Retrying will
    /// not help until someone fixes the configuration; the client still
    /// retries, slowly.
    #[error("DingTalk refused to open a stream connection: HTTP {status}, {code}: {message}")]
    OpenRejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The open request failed otherwise: HTTP 5xx, throttling (429
    /// `system.busy`, 403 `Forbidden.AccessDenied.Qps…`) or another 4xx.
    /// Retried with backoff. Only the body's `code` and `message` are kept
    /// (never the body itself, which a proxy could fill with the request).
    #[error("DingTalk could not open a stream connection: HTTP {status}, {code}: {message}")]
    OpenUnavailable {
        status: u16,
        code: String,
        message: String,
    },
    /// The open request did not get an answer (refused, timed out, TLS).
    #[error("opening a stream connection failed: {0}")]
    OpenTransport(String),
    /// The open API answered 200 with something other than `{endpoint, ticket}`.
    #[error("unexpected answer to the stream open request: {0}")]
    OpenResponse(String),
    /// The WebSocket could not be opened or broke.
    #[error("stream WebSocket error: {0}")]
    WebSocket(String),
    /// The gateway closed the WebSocket.
    #[error("the gateway closed the stream connection")]
    Closed,
    /// Nothing came back within the ping timeout: the connection is dead.
    #[error("no answer from the gateway within {0:?} of a ping")]
    PingTimeout(Duration),
    /// A text frame that is not a stream frame.
    #[error("invalid stream frame: {0}")]
    InvalidFrame(String),
    /// A frame's `data` is not JSON.
    #[error("stream frame data is not JSON: {0}")]
    InvalidData(String),
}

impl StreamError {
    /// Whether the gateway rejected the app's credentials, as opposed to a
    /// failure that may pass (throttling included).
    pub fn is_rejected(&self) -> bool {
        matches!(self, StreamError::OpenRejected { .. })
    }

    /// The error for a non-2xx answer of the open API, from the HTTP status
    /// and the body's `code` and `message`: only an authentication failure
    /// (400 `invalidClientIdOrSecret`, 401) is [`OpenRejected`]
    /// (dingtalk-api notes §1, §2.1, §10.2).
    ///
    /// [`OpenRejected`]: StreamError::OpenRejected
    fn open_failed(status: u16, code: String, message: String) -> StreamError {
        let auth = status == 401 || (status == 400 && code == "invalidClientIdOrSecret");
        if auth {
            StreamError::OpenRejected {
                status,
                code,
                message,
            }
        } else {
            StreamError::OpenUnavailable {
                status,
                code,
                message,
            }
        }
    }
}

/// A handler's failure: the frame is not acknowledged as consumed, so the
/// gateway may send it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// A failure described by `reason` (kept in logs, not sent to DingTalk).
    pub fn new(reason: impl std::fmt::Display) -> HandlerError {
        HandlerError(reason.to_string())
    }
}

/// What rollcall does with a frame. Implementations commit the frame durably
/// before returning `Ok`, and deduplicate by message id: the gateway may
/// deliver a frame more than once.
#[async_trait::async_trait]
pub trait FrameHandler: Send + Sync {
    /// Handles one EVENT or CALLBACK frame. `Ok(data)` acknowledges it; for a
    /// CALLBACK, `data` is the response DingTalk gets (`{"response": data}`;
    /// `None` sends `null`, as DingTalk suggests for robot messages); an
    /// EVENT's ack is always `{"status":"SUCCESS"}`. `Err` leaves an EVENT
    /// unconsumed (DingTalk sends it again; a CALLBACK never comes again).
    /// The call may be dropped (cancelled) once its connection has ended or
    /// at shutdown, after [`StreamConfig::handler_grace`].
    async fn handle(&self, frame: &StreamFrame) -> Result<Option<Value>, HandlerError>;
}

/// One subscription of the open request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `EVENT` or `CALLBACK`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `*` for events (DingTalk accepts only `*`: the events are chosen in
    /// the developer console), or a callback topic.
    pub topic: String,
}

impl Subscription {
    /// An `EVENT` subscription.
    pub fn event(topic: &str) -> Subscription {
        Subscription {
            kind: "EVENT".into(),
            topic: topic.into(),
        }
    }

    /// A `CALLBACK` subscription.
    pub fn callback(topic: &str) -> Subscription {
        Subscription {
            kind: "CALLBACK".into(),
            topic: topic.into(),
        }
    }
}

/// What rollcall subscribes to: every event chosen in the console, robot
/// messages and card callbacks.
pub fn default_subscriptions() -> Vec<Subscription> {
    vec![
        Subscription::event("*"),
        Subscription::callback(TOPIC_BOT_MESSAGE),
        Subscription::callback(TOPIC_CARD_CALLBACK),
    ]
}

/// Reconnection delays: exponential from `base`, at most `max`, each one
/// drawn between half and all of its nominal value (so that many clients do
/// not reconnect in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// The Python SDK's bounds: 1 s doubling to 60 s.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The nominal delay after `failures` consecutive failures (1 = the first).
    pub fn nominal(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The delay to wait: in `[nominal / 2, nominal]`.
    pub fn delay(&self, failures: u32) -> Duration {
        let nominal = self.nominal(failures);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// How to reach DingTalk and what to subscribe to.
#[derive(Clone)]
pub struct StreamConfig {
    /// The new-style API base, `https://api.dingtalk.com` (the sandbox's
    /// `api_base()` in tests).
    pub api_base_v1: String,
    /// The app's Client ID (AppKey; SuiteKey for an ISV app).
    pub client_id: String,
    /// The app's Client Secret. Never logged.
    pub client_secret: String,
    pub subscriptions: Vec<Subscription>,
    /// Sent as `ua` (DingTalk's format: `name-sdk-lang/version`).
    pub user_agent: String,
    /// Sent as `localIp`, to help DingTalk support find the connection;
    /// `None` finds the address of the default route.
    pub local_ip: Option<String>,
    /// Send a WebSocket ping after this long without a frame (the Python
    /// SDK pings every 60 s; the Go SDK after 120 s idle).
    pub keepalive_idle: Duration,
    /// Give up on the connection when nothing arrives this long after a
    /// ping (the Go SDK waits 5 s; more is kinder to a slow link).
    pub ping_timeout: Duration,
    /// Timeout of the open request, the WebSocket handshake and each write.
    pub http_timeout: Duration,
    pub reconnect: Backoff,
    /// How long the handler may still work through the frames already
    /// queued once their connection has ended (or at shutdown) before it is
    /// dropped, with the frames still behind it. Keep it within the ~10 s
    /// the gateway leaves a socket open after `disconnect`.
    pub handler_grace: Duration,
    /// How many EVENT/CALLBACK frames may wait for the handler (default
    /// [`DEFAULT_QUEUE_CAPACITY`]). When the queue is full the client reads
    /// nothing more from the socket until the handler has taken a frame, so
    /// nothing is dropped: the gateway's frames wait in the socket.
    pub queue_capacity: usize,
    /// How many frames the handler works on at once (default 1: one at a
    /// time, in order). With more, frames start in order but may finish
    /// (and be acknowledged) out of order: a handler that commits each
    /// frame by itself, as rollcall's inbox does, then shares one commit
    /// among many frames instead of waiting for one commit per frame.
    pub handler_concurrency: usize,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("api_base_v1", &self.api_base_v1)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("subscriptions", &self.subscriptions)
            .field("user_agent", &self.user_agent)
            .field("local_ip", &self.local_ip)
            .field("keepalive_idle", &self.keepalive_idle)
            .field("ping_timeout", &self.ping_timeout)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

impl StreamConfig {
    /// A configuration with the default subscriptions and timings.
    pub fn new(api_base_v1: &str, client_id: &str, client_secret: &str) -> StreamConfig {
        StreamConfig {
            api_base_v1: api_base_v1.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            subscriptions: default_subscriptions(),
            user_agent: format!("rollcall-sdk-rust/{}", env!("CARGO_PKG_VERSION")),
            local_ip: None,
            keepalive_idle: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            reconnect: Backoff::default(),
            handler_grace: Duration::from_secs(10),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            handler_concurrency: 1,
        }
    }
}

/// The kind of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameType {
    Event,
    Callback,
    System,
    /// A type this client does not know; kept as sent.
    Other(String),
}

impl FrameType {
    fn parse(s: &str) -> FrameType {
        match s {
            "EVENT" => FrameType::Event,
            "CALLBACK" => FrameType::Callback,
            "SYSTEM" => FrameType::System,
            other => FrameType::Other(other.to_owned()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            FrameType::Event => "EVENT",
            FrameType::Callback => "CALLBACK",
            FrameType::System => "SYSTEM",
            FrameType::Other(s) => s,
        }
    }
}

/// A frame's `headers`. DingTalk sends every value as a string (times too,
/// in milliseconds); a number is accepted and kept as its text. Headers not
/// named here, and known ones whose value is neither, are in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameHeaders {
    pub app_id: Option<String>,
    pub connection_id: Option<String>,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    /// When the gateway pushed the frame (ms since the epoch, as text).
    pub time: Option<String>,
    pub topic: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// When the event happened (ms since the epoch, as text).
    pub event_born_time: Option<String>,
    pub event_corp_id: Option<String>,
    pub event_unified_app_id: Option<String>,
    /// Every other header, as sent.
    pub extra: BTreeMap<String, Value>,
}

impl FrameHeaders {
    fn from_map(map: Map<String, Value>) -> FrameHeaders {
        let mut h = FrameHeaders::default();
        for (name, value) in map {
            let text = match &value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let slot = match name.as_str() {
                "appId" => &mut h.app_id,
                "connectionId" => &mut h.connection_id,
                "contentType" => &mut h.content_type,
                "messageId" => &mut h.message_id,
                "time" => &mut h.time,
                "topic" => &mut h.topic,
                "eventId" => &mut h.event_id,
                "eventType" => &mut h.event_type,
                "eventBornTime" => &mut h.event_born_time,
                "eventCorpId" => &mut h.event_corp_id,
                "eventUnifiedAppId" => &mut h.event_unified_app_id,
                _ => {
                    h.extra.insert(name, value);
                    continue;
                }
            };
            match text {
                Some(t) => *slot = Some(t),
                None => {
                    h.extra.insert(name, value);
                }
            }
        }
        h
    }

    /// `time` as milliseconds since the epoch, when it is a number.
    pub fn time_ms(&self) -> Option<i64> {
        self.time.as_deref()?.trim().parse().ok()
    }

    /// `eventBornTime` as milliseconds since the epoch, when it is a number.
    pub fn event_born_time_ms(&self) -> Option<i64> {
        self.event_born_time.as_deref()?.trim().parse().ok()
    }
}

/// One frame from the gateway, typed, with its exact text.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFrame {
    pub spec_version: Option<String>,
    pub frame_type: FrameType,
    pub headers: FrameHeaders,
    /// The `data` string as sent (a JSON document in a string); empty when
    /// the frame has none.
    pub data: String,
    /// Top-level fields other than `specVersion`, `type`, `headers`, `data`.
    pub extra: BTreeMap<String, Value>,
    /// The frame exactly as received, for the evidence log.
    pub raw: String,
}

impl StreamFrame {
    /// Parses a text frame. Only the envelope must be right (a JSON object
    /// with a string `type`, an object `headers` if present, a string `data`
    /// if present); `data` itself is not parsed here (see [`data_json`]).
    ///
    /// [`data_json`]: StreamFrame::data_json
    pub fn parse(raw: &str) -> Result<StreamFrame, StreamError> {
        let value: Value =
            serde_json::from_str(raw).map_err(|e| StreamError::InvalidFrame(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(StreamError::InvalidFrame("not a JSON object".into()));
        };
        let frame_type = match map.remove("type") {
            Some(Value::String(t)) => FrameType::parse(&t),
            Some(_) => return Err(StreamError::InvalidFrame("`type` is not a string".into())),
            None => return Err(StreamError::InvalidFrame("no `type`".into())),
        };
        let headers = match map.remove("headers") {
            Some(Value::Object(h)) => FrameHeaders::from_map(h),
            None | Some(Value::Null) => FrameHeaders::default(),
            Some(_) => {
                return Err(StreamError::InvalidFrame(
                    "`headers` is not an object".into(),
                ));
            }
        };
        let data = match map.remove("data") {
            Some(Value::String(d)) => d,
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(StreamError::InvalidFrame("`data` is not a string".into())),
        };
        let spec_version = match map.remove("specVersion") {
            Some(Value::String(v)) => Some(v),
            Some(other) => {
                // Keep it where nothing is lost rather than refuse the frame.
                map.insert("specVersion".into(), other);
                None
            }
            None => None,
        };
        Ok(StreamFrame {
            spec_version,
            frame_type,
            headers,
            data,
            extra: map.into_iter().collect(),
            raw: raw.to_owned(),
        })
    }

    /// `data` parsed as JSON (`null` when the frame has no data).
    pub fn data_json(&self) -> Result<Value, StreamError> {
        if self.data.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.data).map_err(|e| StreamError::InvalidData(e.to_string()))
    }

    /// The `messageId` header.
    pub fn message_id(&self) -> Option<&str> {
        self.headers.message_id.as_deref()
    }

    /// The `topic` header.
    pub fn topic(&self) -> Option<&str> {
        self.headers.topic.as_deref()
    }
}

/// The text of an acknowledgement (`{code, headers{contentType, messageId},
/// message, data}`) for `message_id`.
fn ack_text(code: u16, message_id: Option<&str>, message: &str, data: &str) -> String {
    let mut headers = Map::new();
    headers.insert("contentType".into(), CONTENT_TYPE_JSON.into());
    if let Some(id) = message_id {
        headers.insert("messageId".into(), id.into());
    }
    json!({"code": code, "headers": headers, "message": message, "data": data}).to_string()
}

/// The answer to a handled EVENT or CALLBACK frame, or `None` for a frame
/// of another type (SYSTEM frames are answered by [`system_ack`]).
///
/// - EVENT, `Ok`: 200, `{"status":"SUCCESS","message":"success"}` (protocol.md).
/// - CALLBACK, `Ok(v)`: 200, `{"response": v}` (`null` for `None`).
/// - `Err`: 500 `internal error` (protocol.md: "500：内部错误"); an EVENT's
///   data says `LATER` (as the Go SDK's), a CALLBACK's is empty.
pub fn ack_for(
    frame: &StreamFrame,
    outcome: &Result<Option<Value>, HandlerError>,
) -> Option<String> {
    let id = frame.message_id();
    let text = match (&frame.frame_type, outcome) {
        (FrameType::Event, Ok(_)) => ack_text(200, id, "OK", EVENT_SUCCESS),
        (FrameType::Event, Err(_)) => ack_text(500, id, "internal error", EVENT_LATER),
        (FrameType::Callback, Ok(v)) => {
            let data = json!({"response": v.clone().unwrap_or(Value::Null)}).to_string();
            ack_text(200, id, "OK", &data)
        }
        (FrameType::Callback, Err(_)) => ack_text(500, id, "internal error", ""),
        _ => return None,
    };
    Some(text)
}

/// The answer to a SYSTEM frame: 200 with the frame's own `data`, which for
/// `ping` carries back the `opaque` (protocol.md; Go SDK `OnPing`). DingTalk
/// says `disconnect` needs no answer; both SDKs answer it this way anyway.
pub fn system_ack(frame: &StreamFrame) -> String {
    ack_text(200, frame.message_id(), "OK", &frame.data)
}

/// Where to open the WebSocket, from the open API. The ticket is a
/// credential for 90 s: it is never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectionTicket {
    pub endpoint: String,
    pub ticket: String,
}

impl std::fmt::Debug for ConnectionTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTicket")
            .field("endpoint", &self.endpoint)
            .field("ticket", &"<redacted>")
            .finish()
    }
}

impl ConnectionTicket {
    /// `endpoint?ticket=<ticket>`, the ticket URL-encoded.
    pub fn url(&self) -> String {
        let ticket: String = form_urlencoded::byte_serialize(self.ticket.as_bytes()).collect();
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}ticket={ticket}", self.endpoint)
    }

    /// `text` with the ticket (raw or encoded) blotted out.
    fn redact(&self, text: &str) -> String {
        let encoded: String = form_urlencoded::byte_serialize(self.ticket.as_bytes()).collect();
        if self.ticket.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.ticket, "<ticket>")
            .replace(&encoded, "<ticket>")
    }
}

/// What the client is doing, for health checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    /// A WebSocket is open.
    pub connected: bool,
    /// WebSockets opened since start.
    pub connections: u64,
    /// Attempts that failed since the last healthy connection.
    pub failures: u32,
    /// The most recent failure.
    pub last_error: Option<StreamError>,
    /// The gateway's `connectionId` of the current connection, once a
    /// frame has told it.
    pub connection_id: Option<String>,
}

/// The error body of api.dingtalk.com: `{requestid, code, message}`.
#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// What to do with a text frame read from the socket.
enum Route {
    /// Queue it for the handler.
    Handle(Box<StreamFrame>),
    /// The gateway asked to disconnect.
    Disconnect,
    /// Nothing more to do.
    Done,
}

/// How a connection ended, when not by an error.
enum End {
    Shutdown,
    Disconnect,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Stop<'a, F> = &'a mut Pin<Box<Fuse<F>>>;

/// A Stream-mode client: opens connections, serves frames, reconnects.
pub struct StreamClient {
    config: StreamConfig,
    handler: Arc<dyn FrameHandler>,
    http: reqwest::Client,
    status: watch::Sender<StreamStatus>,
    acks: Arc<std::sync::Mutex<AckCache>>,
}

impl StreamClient {
    /// A client for `config` handing frames to `handler`.
    pub fn new(
        config: StreamConfig,
        handler: Arc<dyn FrameHandler>,
    ) -> Result<StreamClient, StreamError> {
        if config.client_id.trim().is_empty() || config.client_secret.is_empty() {
            return Err(StreamError::Config(
                "client_id and client_secret are required".into(),
            ));
        }
        // Both reqwest and the wss:// handshake need the process's rustls provider.
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| StreamError::Config(e.to_string()))?;
        Ok(StreamClient {
            config,
            handler,
            http,
            status: watch::Sender::new(StreamStatus::default()),
            acks: Arc::default(),
        })
    }

    /// Follows the client's state.
    pub fn status(&self) -> watch::Receiver<StreamStatus> {
        self.status.subscribe()
    }

    /// Asks the gateway for a connection (step 1 of the protocol).
    pub async fn open_connection(&self) -> Result<ConnectionTicket, StreamError> {
        let local_ip = self.config.local_ip.clone().unwrap_or_else(local_ip);
        let body = json!({
            "clientId": self.config.client_id,
            "clientSecret": self.config.client_secret,
            "subscriptions": self.config.subscriptions,
            "ua": self.config.user_agent,
            "localIp": local_ip,
        });
        let url = format!("{}{OPEN_CONNECTION_PATH}", self.config.api_base_v1);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE_JSON)
            .json(&body)
            .send()
            .await
            .map_err(|e| StreamError::OpenTransport(e.without_url().to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| StreamError::OpenTransport(e.without_url().to_string()))?;
        if !status.is_success() {
            // Only the parsed code and message: the raw body could echo the
            // request, secret included.
            let err: ApiError = serde_json::from_str(&text).unwrap_or_default();
            return Err(StreamError::open_failed(
                status.as_u16(),
                err.code,
                err.message,
            ));
        }
        let ticket: ConnectionTicket = serde_json::from_str(&text)
            .map_err(|e| StreamError::OpenResponse(format!("not {{endpoint, ticket}}: {e}")))?;
        if ticket.endpoint.is_empty() || ticket.ticket.is_empty() {
            return Err(StreamError::OpenResponse("empty endpoint or ticket".into()));
        }
        Ok(ticket)
    }

    /// Connects and serves frames until `shutdown` resolves, reconnecting
    /// with [`StreamConfig::reconnect`] backoff after any failure.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StreamError> {
        let mut stop = Box::pin(shutdown.fuse());
        let mut failures: u32 = 0;
        loop {
            let result = self.connect_and_serve(&mut stop, &mut failures).await;
            self.status.send_modify(|s| {
                s.connected = false;
                s.connection_id = None;
            });
            match result {
                Ok(End::Shutdown) => break,
                Ok(End::Disconnect) => {
                    // The gateway asked us to move. Both SDKs wait their
                    // first backoff step before reconnecting; so do we, so
                    // that a gateway repeating `disconnect` cannot spin us.
                    let delay = self.config.reconnect.delay(1);
                    tracing::info!(?delay, "DingTalk stream: gateway asked to reconnect");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut stop => break,
                    }
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = self.config.reconnect.delay(failures);
                    if err.is_rejected() {
                        tracing::error!(error = %err, failures, ?delay, "DingTalk stream: connection refused; check the app's Client ID and Secret");
                    } else {
                        tracing::warn!(error = %err, failures, ?delay, "DingTalk stream: connection failed; reconnecting");
                    }
                    self.status.send_modify(|s| {
                        s.failures = failures;
                        s.last_error = Some(err);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut stop => break,
                    }
                }
            }
            if stop.is_terminated() {
                break;
            }
        }
        tracing::info!("DingTalk stream: stopped");
        Ok(())
    }

    async fn connect_and_serve<F: Future<Output = ()>>(
        &self,
        stop: Stop<'_, F>,
        failures: &mut u32,
    ) -> Result<End, StreamError> {
        let ticket = tokio::select! {
            t = self.open_connection() => t?,
            _ = &mut *stop => return Ok(End::Shutdown),
        };
        tracing::info!(endpoint = %ticket.endpoint, "DingTalk stream: connecting");
        let request = ticket.url();
        let handshake = tokio::time::timeout(
            self.config.http_timeout,
            tokio_tungstenite::connect_async(request),
        );
        let ws = tokio::select! {
            r = handshake => match r {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => return Err(StreamError::WebSocket(ticket.redact(&e.to_string()))),
                Err(_) => return Err(StreamError::WebSocket("handshake timed out".into())),
            },
            _ = &mut *stop => return Ok(End::Shutdown),
        };
        self.status.send_modify(|s| {
            s.connected = true;
            s.connections += 1;
        });
        tracing::info!("DingTalk stream: connected");
        self.serve(ws, stop, failures).await
    }

    /// Serves one connection: answers SYSTEM frames at once, hands data
    /// frames to the handler task in order, and writes acks as they come.
    async fn serve<F: Future<Output = ()>>(
        &self,
        ws: Ws,
        stop: Stop<'_, F>,
        failures: &mut u32,
    ) -> Result<End, StreamError> {
        let (mut sink, mut incoming) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (work_tx, work_rx) = mpsc::channel::<StreamFrame>(self.config.queue_capacity.max(1));
        let phase = Arc::new(AtomicU8::new(PHASE_OPEN));
        // Aborted when this future is dropped (the `run` future dropped
        // instead of shut down), so no handler outlives the client.
        let mut worker = AbortOnDrop(tokio::spawn(handle_frames(
            self.handler.clone(),
            work_rx,
            out_tx.clone(),
            phase.clone(),
            self.acks.clone(),
            self.config.handler_concurrency.max(1),
        )));
        let cfg = &self.config;
        let mut last_seen = Instant::now();
        let mut ping_deadline: Option<Instant> = None;
        let connected_at = Instant::now();
        let mut healthy = false;
        // The connection works once a stream frame came, or once it stayed
        // up for `keepalive_idle`: only then does the next failure start the
        // backoff from the beginning. (A Close or a Ping proves nothing: a
        // peer that accepts the upgrade and closes must meet the backoff.)
        let mut proven = |healthy: &mut bool| {
            if !*healthy {
                *healthy = true;
                *failures = 0;
                self.status.send_modify(|s| s.failures = 0);
            }
        };

        let result: Result<End, StreamError> = loop {
            if !healthy && connected_at.elapsed() >= cfg.keepalive_idle {
                proven(&mut healthy);
            }
            let wake = ping_deadline.unwrap_or(last_seen + cfg.keepalive_idle);
            // A full queue: read nothing (so drop nothing) until the handler
            // takes a frame. The socket is not read meanwhile, so silence is
            // not held against it.
            let room = work_tx.capacity() > 0;
            tokio::select! {
                biased;
                _ = &mut *stop => break Ok(End::Shutdown),
                Some(text) = out_rx.recv() => {
                    if let Err(e) = write(&mut sink, Message::text(text), cfg.http_timeout).await {
                        break Err(e);
                    }
                }
                _ = work_tx.reserve(), if !room => {
                    last_seen = Instant::now();
                    ping_deadline = None;
                }
                msg = incoming.next(), if room => {
                    let msg = match msg {
                        None => break Err(StreamError::Closed),
                        Some(Err(e)) => break Err(StreamError::WebSocket(e.to_string())),
                        Some(Ok(m)) => m,
                    };
                    last_seen = Instant::now();
                    ping_deadline = None;
                    match msg {
                        Message::Text(text) => match self.on_text(text.as_str(), &out_tx, || proven(&mut healthy)) {
                            Route::Disconnect => break Ok(End::Disconnect),
                            Route::Handle(frame) => {
                                // There is room: this does not wait.
                                if work_tx.send(*frame).await.is_err() {
                                    break Err(StreamError::WebSocket("the frame handler task ended".into()));
                                }
                            }
                            Route::Done => {}
                        },
                        Message::Close(_) => break Err(StreamError::Closed),
                        // tungstenite answers pings itself; pongs only prove life.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                        Message::Binary(b) => {
                            tracing::warn!(len = b.len(), "DingTalk stream: binary frame ignored");
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake), if room => {
                    if ping_deadline.is_some() {
                        break Err(StreamError::PingTimeout(cfg.ping_timeout));
                    }
                    if let Err(e) = write(&mut sink, Message::Ping(Vec::new().into()), cfg.http_timeout).await {
                        break Err(e);
                    }
                    ping_deadline = Some(Instant::now() + cfg.ping_timeout);
                }
            }
        };

        // The frames already queued are still handled, within the grace
        // time: DingTalk never resends a CALLBACK frame, so one skipped here
        // would be lost. While the socket lives (`disconnect`, shutdown) their
        // acks go out; on a broken one CALLBACK frames are still handled
        // (stored) without an ack, and EVENT frames are left to the gateway,
        // which redelivers them.
        self.status.send_modify(|s| s.connected = false);
        let mut writable = !matches!(
            result,
            Err(StreamError::Closed | StreamError::WebSocket(_) | StreamError::PingTimeout(_))
        );
        phase.store(
            if writable { PHASE_DRAIN } else { PHASE_BROKEN },
            Ordering::SeqCst,
        );
        drop(work_tx);
        let grace = tokio::time::sleep(cfg.handler_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut worker.0 => break,
                Some(text) = out_rx.recv() => {
                    if writable && write(&mut sink, Message::text(text), cfg.http_timeout).await.is_err() {
                        writable = false;
                        phase.store(PHASE_BROKEN, Ordering::SeqCst);
                    }
                }
                _ = &mut grace => {
                    tracing::warn!("DingTalk stream: handler still busy after the grace time; dropped with the frames queued behind it, none acknowledged");
                    worker.0.abort();
                    break;
                }
            }
        }
        while let Ok(text) = out_rx.try_recv() {
            if writable
                && write(&mut sink, Message::text(text), cfg.http_timeout)
                    .await
                    .is_err()
            {
                writable = false;
            }
        }
        if writable {
            let _ = tokio::time::timeout(cfg.http_timeout, sink.close()).await;
        }
        // The worker is gone: what it had not finished may come again.
        lock(&self.acks).forget_in_flight();
        result
    }

    /// Routes one text frame: SYSTEM frames are answered here, a redelivery
    /// of a frame in flight is dropped, one of a handled frame gets its
    /// cached ack again.
    /// `valid` is called when the text is a stream frame.
    fn on_text(
        &self,
        text: &str,
        out: &mpsc::UnboundedSender<String>,
        valid: impl FnOnce(),
    ) -> Route {
        let frame = match StreamFrame::parse(text) {
            Ok(f) => {
                valid();
                f
            }
            Err(e) => {
                // As both SDKs: log and go on; without a messageId there is
                // nothing to acknowledge.
                tracing::warn!(error = %e, len = text.len(), "DingTalk stream: unreadable frame skipped");
                return Route::Done;
            }
        };
        if let Some(id) = &frame.headers.connection_id {
            self.status.send_if_modified(|s| {
                let changed = s.connection_id.as_ref() != Some(id);
                s.connection_id = Some(id.clone());
                changed
            });
        }
        match &frame.frame_type {
            FrameType::System => {
                let topic = frame.topic().unwrap_or_default();
                tracing::debug!(topic, "DingTalk stream: system frame");
                // Answering can only fail when the writer is gone, which the
                // serve loop notices by itself.
                let _ = out.send(system_ack(&frame));
                if topic == TOPIC_DISCONNECT {
                    Route::Disconnect
                } else {
                    Route::Done
                }
            }
            FrameType::Event | FrameType::Callback => {
                let message_id = frame.message_id().unwrap_or_default();
                tracing::debug!(
                    kind = frame.frame_type.as_str(),
                    topic = frame.topic().unwrap_or_default(),
                    message_id,
                    "DingTalk stream: frame received"
                );
                let Some(id) = frame.message_id() else {
                    return Route::Handle(Box::new(frame));
                };
                match lock(&self.acks).admit(id) {
                    Admit::New => Route::Handle(Box::new(frame)),
                    Admit::InFlight => {
                        tracing::debug!(
                            message_id,
                            "DingTalk stream: redelivery of a frame in flight ignored"
                        );
                        Route::Done
                    }
                    Admit::Done(ack) => {
                        tracing::debug!(
                            message_id,
                            "DingTalk stream: redelivery of a handled frame; ack sent again"
                        );
                        let _ = out.send(ack);
                        Route::Done
                    }
                }
            }
            FrameType::Other(kind) => {
                tracing::warn!(kind, "DingTalk stream: frame of unknown type ignored");
                Route::Done
            }
        }
    }
}

fn lock(cache: &std::sync::Mutex<AckCache>) -> std::sync::MutexGuard<'_, AckCache> {
    // A panicking holder leaves a usable map behind.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the client knows about the frames it was given, by `messageId`, so
/// that a redelivery is not handled twice: DingTalk may send an unacked
/// EVENT again while its first copy still waits in the queue, and may send
/// one again after it was acknowledged.
#[derive(Default)]
struct AckCache {
    entries: std::collections::HashMap<String, AckEntry>,
    /// When each `Done` entry was made, oldest first, for expiry.
    done: std::collections::VecDeque<(Instant, String)>,
}

enum AckEntry {
    /// Queued or in the handler.
    InFlight,
    /// Handled; the ack that was sent.
    Done(String),
}

/// What to do with a frame just read.
enum Admit {
    /// New: queue it.
    New,
    /// A copy is queued or being handled: its ack will answer both.
    InFlight,
    /// Handled before: send this ack again.
    Done(String),
}

impl AckCache {
    fn admit(&mut self, id: &str) -> Admit {
        self.expire();
        match self.entries.get(id) {
            Some(AckEntry::InFlight) => Admit::InFlight,
            Some(AckEntry::Done(ack)) => Admit::Done(ack.clone()),
            None => {
                self.entries.insert(id.to_owned(), AckEntry::InFlight);
                Admit::New
            }
        }
    }

    /// The handler is done with `id`: `Some(ack)` when it succeeded (kept
    /// for redeliveries), `None` when it failed (a redelivery runs again).
    fn finish(&mut self, id: &str, ack: Option<String>) {
        match ack {
            Some(ack) => {
                self.entries.insert(id.to_owned(), AckEntry::Done(ack));
                self.done.push_back((Instant::now(), id.to_owned()));
            }
            None => self.forget(id),
        }
    }

    /// Forgets an in-flight frame that was not handled.
    fn forget(&mut self, id: &str) {
        if matches!(self.entries.get(id), Some(AckEntry::InFlight)) {
            self.entries.remove(id);
        }
    }

    /// Forgets every in-flight frame (its connection's worker has ended).
    fn forget_in_flight(&mut self) {
        self.entries.retain(|_, e| matches!(e, AckEntry::Done(_)));
    }

    fn expire(&mut self) {
        while let Some((at, _)) = self.done.front() {
            if at.elapsed() < ACK_CACHE_TTL {
                break;
            }
            if let Some((_, id)) = self.done.pop_front()
                && matches!(self.entries.get(&id), Some(AckEntry::Done(_)))
            {
                self.entries.remove(&id);
            }
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connection serves frames.
const PHASE_OPEN: u8 = 0;
/// The connection is ending, its socket still writable (`disconnect`,
/// shutdown): queued frames are handled and acknowledged.
const PHASE_DRAIN: u8 = 1;
/// The socket is gone: queued CALLBACK frames are handled (DingTalk never
/// resends them), queued EVENT frames skipped (it redelivers those).
const PHASE_BROKEN: u8 = 2;

/// The handler task of one connection: frames taken in order, at most
/// `concurrency` at once, until the queue is closed and empty and every
/// frame taken is done.
async fn handle_frames(
    handler: Arc<dyn FrameHandler>,
    mut frames: mpsc::Receiver<StreamFrame>,
    acks: mpsc::UnboundedSender<String>,
    phase: Arc<AtomicU8>,
    cache: Arc<std::sync::Mutex<AckCache>>,
    concurrency: usize,
) {
    let mut running = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            frame = frames.recv(), if open && running.len() < concurrency => {
                let Some(frame) = frame else {
                    open = false;
                    continue;
                };
                if phase.load(Ordering::SeqCst) == PHASE_BROKEN && frame.frame_type == FrameType::Event {
                    tracing::debug!(
                        message_id = frame.message_id().unwrap_or_default(),
                        "DingTalk stream: connection broken; queued event left for redelivery"
                    );
                    if let Some(id) = frame.message_id() {
                        lock(&cache).forget(id);
                    }
                    continue;
                }
                running.push(handle_one(handler.clone(), frame, acks.clone(), cache.clone()));
            }
            Some(()) = running.next(), if !running.is_empty() => {}
            else => break,
        }
    }
}

/// Hands one frame to the handler, then sends its ack.
async fn handle_one(
    handler: Arc<dyn FrameHandler>,
    frame: StreamFrame,
    acks: mpsc::UnboundedSender<String>,
    cache: Arc<std::sync::Mutex<AckCache>>,
) {
    let outcome = match AssertUnwindSafe(handler.handle(&frame))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(HandlerError::new("the handler panicked")),
    };
    if let Err(e) = &outcome {
        let what = if frame.frame_type == FrameType::Event {
            "DingTalk stream: handler failed; event left for redelivery"
        } else {
            "DingTalk stream: handler failed; DingTalk does not resend callbacks"
        };
        tracing::warn!(
            error = %e,
            message_id = frame.message_id().unwrap_or_default(),
            "{what}"
        );
    }
    if let Some(ack) = ack_for(&frame, &outcome) {
        if let Some(id) = frame.message_id() {
            lock(&cache).finish(id, outcome.is_ok().then(|| ack.clone()));
        }
        let _ = acks.send(ack);
    }
}

async fn write<S>(sink: &mut S, msg: Message, timeout: Duration) -> Result<(), StreamError>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match tokio::time::timeout(timeout, sink.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StreamError::WebSocket(e.to_string())),
        Err(_) => Err(StreamError::WebSocket("write timed out".into())),
    }
}

/// The local address of the default route (no packet is sent: a UDP
/// `connect` only picks a route), or empty, as the Python SDK does.
fn local_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("8.8.8.8:80")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Runs a Stream-mode client for `config` until `shutdown` resolves (see
/// [`StreamClient::run`]). Fails only on a configuration that cannot work.
pub async fn run(
    config: StreamConfig,
    handler: Arc<dyn FrameHandler>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StreamError> {
    StreamClient::new(config, handler)?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    //! The frames and acks in tests/vectors/dingtalk_stream are DingTalk's own
    //! examples, copied verbatim from open-dingtalk/developerpedia
    //! `docs/learn/stream/protocol.md` (commit 211653f9).

    use super::*;

    const EVENT_FRAME: &str =
        include_str!("../../../tests/vectors/dingtalk_stream/event_frame.json");
    const EVENT_ACK: &str = include_str!("../../../tests/vectors/dingtalk_stream/event_ack.json");
    const CALLBACK_FRAME: &str =
        include_str!("../../../tests/vectors/dingtalk_stream/callback_frame.json");
    const CALLBACK_ACK: &str =
        include_str!("../../../tests/vectors/dingtalk_stream/callback_ack.json");
    const PING_FRAME: &str = include_str!("../../../tests/vectors/dingtalk_stream/ping_frame.json");
    const PING_ACK: &str = include_str!("../../../tests/vectors/dingtalk_stream/ping_ack.json");
    const DISCONNECT_FRAME: &str =
        include_str!("../../../tests/vectors/dingtalk_stream/disconnect_frame.json");
    const HEADER_TYPO_FRAME: &str =
        include_str!("../../../tests/vectors/dingtalk_stream/event_frame_header_typo.json");

    /// An ack as JSON, with its `data` string parsed too, so that two acks
    /// compare by meaning (the doc's spacing and key order differ from ours).
    fn meaning(ack: &str) -> Value {
        let mut v: Value = serde_json::from_str(ack).unwrap();
        let data = v["data"].as_str().unwrap().to_owned();
        v["data"] = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&data).unwrap()
        };
        v
    }

    #[test]
    fn event_frame_from_the_protocol_doc() {
        let f = StreamFrame::parse(EVENT_FRAME).unwrap();
        assert_eq!(f.frame_type, FrameType::Event);
        assert_eq!(f.spec_version.as_deref(), Some("1.0"));
        assert_eq!(f.raw, EVENT_FRAME);
        let h = &f.headers;
        assert_eq!(h.topic.as_deref(), Some("dingTalk"));
        assert_eq!(
            h.message_id.as_deref(),
            Some("213d841d_972_1898bb26334_70a7")
        );
        assert_eq!(h.content_type.as_deref(), Some("application/json"));
        assert_eq!(h.time_ms(), Some(1693221579964));
        assert_eq!(h.event_type.as_deref(), Some("user_add_org"));
        assert_eq!(h.event_id.as_deref(), Some("c7c7120f2c07419***ebdba0318c8"));
        assert_eq!(h.event_corp_id.as_deref(), Some("ding9f50b15b***16741"));
        assert_eq!(h.event_born_time_ms(), Some(1683533823336));
        assert_eq!(
            h.event_unified_app_id.as_deref(),
            Some("bbb381b6-f01xxxxx58daac")
        );
        assert!(h.extra.is_empty());
        assert_eq!(
            f.data_json().unwrap(),
            json!({"timestamp": "1685501863357", "userId": ["015xxxx227"]})
        );
        let ack = ack_for(&f, &Ok(None)).unwrap();
        assert_eq!(meaning(&ack), meaning(EVENT_ACK));
    }

    #[test]
    fn callback_frame_from_the_protocol_doc() {
        let f = StreamFrame::parse(CALLBACK_FRAME).unwrap();
        assert_eq!(f.frame_type, FrameType::Callback);
        assert_eq!(f.raw, CALLBACK_FRAME);
        assert_eq!(f.topic(), Some(TOPIC_BOT_MESSAGE));
        assert_eq!(f.message_id(), Some("212ca9d7_974_1898c159aa6_1783b"));
        assert_eq!(
            f.headers.app_id.as_deref(),
            Some("1305d5f5-**-484f-***-97d9****ef67")
        );
        assert_eq!(f.headers.time_ms(), Some(1690362102194));
        let data = f.data_json().unwrap();
        assert_eq!(data["text"]["content"], " 测试数据");
        assert_eq!(data["senderStaffId"], "16650***698");
        // DingTalk's own robot-message ack, with the id of this frame.
        let ack = ack_for(&f, &Ok(None)).unwrap();
        let mut expected = meaning(CALLBACK_ACK);
        expected["headers"]["messageId"] = "212ca9d7_974_1898c159aa6_1783b".into();
        assert_eq!(meaning(&ack), expected);
    }

    #[test]
    fn a_callback_ack_carries_the_handlers_response() {
        let f = StreamFrame::parse(CALLBACK_FRAME).unwrap();
        let card = json!({"cardData": {"cardParamMap": {"status": "done"}}});
        let ack = meaning(&ack_for(&f, &Ok(Some(card.clone()))).unwrap());
        assert_eq!(ack["code"], 200);
        assert_eq!(ack["data"], json!({"response": card}));
    }

    #[test]
    fn failures_are_not_acknowledged_as_consumed() {
        let event = StreamFrame::parse(EVENT_FRAME).unwrap();
        let ack = meaning(&ack_for(&event, &Err(HandlerError::new("db down"))).unwrap());
        assert_eq!(ack["code"], 500);
        assert_eq!(ack["data"]["status"], "LATER");
        assert_eq!(ack["headers"]["messageId"], "213d841d_972_1898bb26334_70a7");
        // The handler's reason stays in the logs.
        assert!(!ack.to_string().contains("db down"));
        let callback = StreamFrame::parse(CALLBACK_FRAME).unwrap();
        let ack = meaning(&ack_for(&callback, &Err(HandlerError::new("x"))).unwrap());
        assert_eq!(ack["code"], 500);
        assert_eq!(ack["data"], Value::Null);
    }

    #[test]
    fn ping_from_the_protocol_doc_is_echoed() {
        // As published, the example has a trailing comma: not JSON, and
        // refused as such rather than guessed at.
        assert!(matches!(
            StreamFrame::parse(PING_FRAME),
            Err(StreamError::InvalidFrame(_))
        ));
        let fixed = PING_FRAME.replacen("\"application/json\", \n", "\"application/json\"\n", 1);
        let f = StreamFrame::parse(&fixed).unwrap();
        assert_eq!(f.frame_type, FrameType::System);
        assert_eq!(f.topic(), Some(TOPIC_PING));
        assert_eq!(f.spec_version, None);
        let ack = system_ack(&f);
        assert_eq!(meaning(&ack), meaning(PING_ACK));
        // The data goes back byte for byte, not re-serialised.
        let v: Value = serde_json::from_str(&ack).unwrap();
        assert_eq!(v["data"], "{\"opaque\" : \"123-dsfs\"}");
    }

    #[test]
    fn disconnect_from_the_protocol_doc() {
        let f = StreamFrame::parse(DISCONNECT_FRAME).unwrap();
        assert_eq!(f.frame_type, FrameType::System);
        assert_eq!(f.topic(), Some(TOPIC_DISCONNECT));
        assert_eq!(f.message_id(), None);
        assert_eq!(
            f.data_json().unwrap(),
            json!({"reason": "connection is expired"})
        );
        let ack: Value = serde_json::from_str(&system_ack(&f)).unwrap();
        assert_eq!(ack["code"], 200);
        assert!(ack["headers"].get("messageId").is_none());
    }

    #[test]
    fn unknown_fields_are_kept() {
        // The doc's second EVENT example says `header`: nothing is lost.
        let f = StreamFrame::parse(HEADER_TYPO_FRAME).unwrap();
        assert_eq!(f.headers, FrameHeaders::default());
        assert_eq!(f.extra["header"]["eventId"], "c7c7120f2c07419**ebdba0318c8");
        let f = StreamFrame::parse(
            r#"{"type":"EVENT","headers":{"messageId":"m1","time":1690362102194,"x-trace":"t","topic":{"odd":1}},"data":"{}","later":true}"#,
        )
        .unwrap();
        assert_eq!(f.headers.time_ms(), Some(1690362102194));
        assert_eq!(f.headers.extra["x-trace"], "t");
        assert_eq!(f.headers.extra["topic"], json!({"odd": 1}));
        assert_eq!(f.headers.topic, None);
        assert_eq!(f.extra["later"], true);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        for raw in [
            "",
            "[]",
            "{}",
            r#"{"type":1}"#,
            r#"{"type":"EVENT","headers":[]}"#,
            r#"{"type":"EVENT","data":{}}"#,
        ] {
            assert!(
                matches!(StreamFrame::parse(raw), Err(StreamError::InvalidFrame(_))),
                "{raw}"
            );
        }
        let f = StreamFrame::parse(r#"{"type":"CALLBACK","data":"{nope"}"#).unwrap();
        assert!(matches!(f.data_json(), Err(StreamError::InvalidData(_))));
        assert_eq!(
            StreamFrame::parse(r#"{"type":"NEW"}"#).unwrap().frame_type,
            FrameType::Other("NEW".into())
        );
    }

    #[test]
    fn ticket_url_is_encoded_and_redacted() {
        let t = ConnectionTicket {
            endpoint: "wss://wss-open-connection.dingtalk.com:443/connect".into(),
            ticket: "a b+c/=".into(),
        };
        assert_eq!(
            t.url(),
            "wss://wss-open-connection.dingtalk.com:443/connect?ticket=a+b%2Bc%2F%3D"
        );
        assert_eq!(
            t.redact(&format!("failed: {}", t.url())),
            "failed: wss://wss-open-connection.dingtalk.com:443/connect?ticket=<ticket>"
        );
        assert!(!format!("{t:?}").contains("a b"));
        let c = StreamConfig::new("https://api.dingtalk.com/", "id", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.api_base_v1, "https://api.dingtalk.com");
    }

    #[test]
    fn the_ack_cache_answers_redeliveries() {
        let mut cache = AckCache::default();
        assert!(matches!(cache.admit("m1"), Admit::New));
        assert!(matches!(cache.admit("m1"), Admit::InFlight));
        cache.finish("m1", Some("ack1".into()));
        assert!(matches!(cache.admit("m1"), Admit::Done(a) if a == "ack1"));
        // A failure is not cached: the redelivery runs the handler again.
        assert!(matches!(cache.admit("m2"), Admit::New));
        cache.finish("m2", None);
        assert!(matches!(cache.admit("m2"), Admit::New));
        // A connection's end forgets what it had not finished, nothing else.
        cache.forget_in_flight();
        assert!(matches!(cache.admit("m2"), Admit::New));
        assert!(matches!(cache.admit("m1"), Admit::Done(_)));
    }

    #[test]
    fn only_auth_failures_are_rejections() {
        let e = |status, code: &str| StreamError::open_failed(status, code.into(), "m".into());
        assert!(e(400, "invalidClientIdOrSecret").is_rejected());
        assert!(e(401, "authFailed").is_rejected());
        // Throttling and other failures are retried as transient.
        assert!(!e(429, "system.busy").is_rejected());
        assert!(!e(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi").is_rejected());
        assert!(!e(403, "Forbidden.AccessDenied.QpsLimitForApi").is_rejected());
        assert!(!e(400, "MissingParameter").is_rejected());
        assert!(!e(503, "ServiceUnavailable").is_rejected());
        assert_eq!(
            e(429, "system.busy"),
            StreamError::OpenUnavailable {
                status: 429,
                code: "system.busy".into(),
                message: "m".into()
            }
        );
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.nominal(1), Duration::from_secs(1));
        assert_eq!(b.nominal(2), Duration::from_secs(2));
        assert_eq!(b.nominal(7), Duration::from_secs(60));
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(60));
        for n in 1..40 {
            let d = b.delay(n);
            assert!(d >= b.nominal(n) / 2 && d <= b.nominal(n), "{n}: {d:?}");
        }
    }

    #[test]
    fn subscriptions_serialise_as_the_open_api_wants() {
        assert_eq!(
            serde_json::to_value(default_subscriptions()).unwrap(),
            json!([
                {"type": "EVENT", "topic": "*"},
                {"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"},
                {"type": "CALLBACK", "topic": "/v1.0/card/instances/callback"},
            ])
        );
    }
}
