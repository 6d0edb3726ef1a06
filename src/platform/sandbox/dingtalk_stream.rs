//! The sandbox's DingTalk Stream gateway: plays `api.dingtalk.com`'s
//! connection-open API and the WebSocket gateway behind it, in the real wire
//! format (open-dingtalk/developerpedia `docs/learn/stream/protocol.md`), so
//! that the real client in `platform::dingtalk::stream` can be tested.
//!
//! What DingTalk does, and so what this does:
//! - `POST /v1.0/gateway/connections/open` checks `clientId`/`clientSecret`
//!   (wrong ones: HTTP 400 `{"requestid","code":"invalidClientIdOrSecret",
//!   "message"}`, as api.dingtalk.com answers `oauth2/accessToken`; the open
//!   API's own error body is not documented) and answers `{endpoint, ticket}`.
//!   "ticket的有效期为90秒且只能用来建立一条连接": a ticket opens one
//!   connection, within 90 s; an unknown, used or expired one gets HTTP 401.
//!   The endpoint is a second listener, as wss-open-connection.dingtalk.com is
//!   another host than api.dingtalk.com.
//! - Frames get a fresh `messageId` and the headers the examples show
//!   (EVENT: `topic, messageId, contentType, time, eventType, eventId,
//!   eventCorpId, eventBornTime, eventUnifiedAppId`; CALLBACK: `appId,
//!   contentType, messageId, time, topic`), plus `connectionId`.
//! - A frame counts as consumed on an ack with code 200 (and, for an EVENT,
//!   `data` saying `"status":"SUCCESS"`). An unconsumed EVENT goes again
//!   after [`SandboxStreamGateway::with_redeliver_after`], and on every new
//!   connection. DingTalk documents redelivery for events only ("事件订阅"
//!   is "相对可靠"; robot messages are "fire-forgot", not pushed again), so a
//!   CALLBACK frame is sent once: a client that skips one loses it, as it
//!   would with DingTalk. A callback pushed while no client is connected
//!   waits for the next connection (it was never sent).
//!   [`SandboxStreamGateway::with_callback_redelivery`] turns resending
//!   callbacks on, for tests that want it.
//! - `disconnect`: "服务端在静默10s之后会主动断开 tcp 连接": after
//!   [`SandboxStreamGateway::send_disconnect`] no new frame goes to that
//!   connection, and it is closed after the grace time (10 s by default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request, Response as WsResponse,
};

/// How long a ticket opens a connection.
const TICKET_TTL: Duration = Duration::from_secs(90);
/// How long the gateway keeps a connection after announcing `disconnect`.
const DISCONNECT_GRACE: Duration = Duration::from_secs(10);
/// Unconsumed frames go again after this long, unless changed.
const DEFAULT_REDELIVER_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Callback,
}

/// A frame pushed by a test, until it is consumed.
struct Pending {
    message_id: String,
    kind: Kind,
    /// Headers without `connectionId` (set per connection).
    headers: Map<String, Value>,
    data: String,
    last_sent: Option<Instant>,
    deliveries: u32,
    /// The connections (serials) it was sent on.
    sent_on: Vec<u64>,
    /// The ack that consumed it.
    settled_by: Option<Value>,
}

enum Command {
    Text(String),
    /// Close with a close frame, as the gateway does after `disconnect`.
    Close,
    /// Drop the socket, no close frame.
    Drop,
    /// Stop reading and writing (a dead link): no pongs, no frames.
    Freeze,
}

struct Conn {
    serial: u64,
    connection_id: String,
    tx: mpsc::UnboundedSender<Command>,
    /// `disconnect` was sent: no new frames.
    draining: bool,
}

struct Inner {
    redeliver_after: Duration,
    /// Resend unconsumed CALLBACK frames too (DingTalk does not).
    callback_redelivery: bool,
    disconnect_grace: Duration,
    /// Issued and not yet used.
    tickets: HashMap<String, Instant>,
    tickets_used: Vec<String>,
    opens: u64,
    refuse_opens: u32,
    close_after_upgrade: u32,
    open_requests: Vec<Value>,
    connections: u64,
    current: Option<Conn>,
    pending: Vec<Pending>,
    acks: Vec<(String, Value)>,
    /// Answers refused by the envelope check: why, and the text.
    invalid_acks: Vec<(String, String)>,
    /// SYSTEM frames sent: messageId → (topic, data, connection serial).
    system_sent: HashMap<String, (String, String, u64)>,
    sent: Vec<(String, String)>,
    counter: u64,
    conn_tasks: Vec<AbortHandle>,
}

struct Shared {
    client_id: String,
    client_secret: String,
    app_id: String,
    corp_id: String,
    ws_endpoint: String,
    inner: Mutex<Inner>,
    /// Bumped on every change a test may wait for.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

fn hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn uuid_like() -> String {
    format!("{}-{}-{}-{}-{}", hex(4), hex(2), hex(2), hex(2), hex(6))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Inner {
    /// A messageId shaped like DingTalk's (`213d841d_972_1898bb26334_70a7`).
    fn message_id(&mut self) -> String {
        self.counter += 1;
        format!(
            "{}_{:x}_{:x}_{:x}",
            hex(4),
            std::process::id() & 0xfff,
            now_ms(),
            self.counter
        )
    }

    /// Sends pending frame `i` on the current connection, if one takes frames.
    fn deliver(&mut self, i: usize) {
        let Some(conn) = self.current.as_ref().filter(|c| !c.draining) else {
            return;
        };
        let p = &mut self.pending[i];
        let mut headers = p.headers.clone();
        headers.insert("connectionId".into(), conn.connection_id.clone().into());
        let kind = match p.kind {
            Kind::Event => "EVENT",
            Kind::Callback => "CALLBACK",
        };
        let text = json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": p.data})
            .to_string();
        if conn.tx.send(Command::Text(text.clone())).is_ok() {
            p.last_sent = Some(Instant::now());
            p.deliveries += 1;
            p.sent_on.push(conn.serial);
            self.sent.push((p.message_id.clone(), text));
        }
    }

    /// Whether pending frame `i` is to be sent (again): unconsumed, and an
    /// EVENT, or a CALLBACK never sent or with callback redelivery on.
    fn redeliverable(&self, i: usize) -> bool {
        let p = &self.pending[i];
        p.settled_by.is_none()
            && (p.kind == Kind::Event || p.deliveries == 0 || self.callback_redelivery)
    }

    fn deliver_unsettled(&mut self) {
        for i in 0..self.pending.len() {
            if self.redeliverable(i) {
                self.deliver(i);
            }
        }
    }

    /// Sends a SYSTEM frame on the current connection; its messageId.
    fn system(&mut self, topic: &str, data: Value) -> Option<String> {
        let id = self.message_id();
        let conn = self.current.as_ref()?;
        let data = data.to_string();
        let text = json!({
            "specVersion": "1.0",
            "type": "SYSTEM",
            "headers": {
                "connectionId": conn.connection_id,
                "contentType": "application/json",
                "messageId": id,
                "time": now_ms().to_string(),
                "topic": topic,
            },
            "data": data,
        })
        .to_string();
        conn.tx.send(Command::Text(text.clone())).ok()?;
        let serial = conn.serial;
        self.system_sent
            .insert(id.clone(), (topic.to_owned(), data, serial));
        self.sent.push((id.clone(), text));
        Some(id)
    }

    /// Records an answer that came on connection `serial`. Only a whole,
    /// well-formed envelope counts (protocol.md: `{code, headers{messageId,
    /// contentType}, message, data}`, `data` a JSON string), answering a
    /// frame sent on that same connection; anything else goes to
    /// `invalid_acks` and consumes nothing.
    fn record_ack(&mut self, serial: u64, text: &str) {
        match self.check_ack(serial, text) {
            Ok((id, ack, consumed)) => {
                if let Some(i) = consumed
                    && self.pending[i].settled_by.is_none()
                {
                    self.pending[i].settled_by = Some(ack.clone());
                }
                self.acks.push((id, ack));
            }
            Err(why) => {
                tracing::warn!(why, "sandbox stream gateway: an invalid answer");
                self.invalid_acks.push((why, text.to_owned()));
            }
        }
    }

    /// The messageId, the ack, and the pending frame it consumes.
    fn check_ack(&self, serial: u64, text: &str) -> Result<(String, Value, Option<usize>), String> {
        let ack: Value = serde_json::from_str(text).map_err(|_| "not JSON".to_owned())?;
        let code = ack["code"].as_u64().ok_or("`code` is not a number")?;
        let headers = ack["headers"].as_object().ok_or("no `headers` object")?;
        let id = headers
            .get("messageId")
            .and_then(Value::as_str)
            .ok_or("no headers.messageId")?
            .to_owned();
        if headers.get("contentType").and_then(Value::as_str) != Some("application/json") {
            return Err("headers.contentType is not application/json".into());
        }
        if !ack["message"].is_string() {
            return Err("`message` is not a string".into());
        }
        let data_text = ack["data"].as_str().ok_or("`data` is not a string")?;
        let data: Option<Value> = if data_text.is_empty() {
            None
        } else {
            Some(serde_json::from_str(data_text).map_err(|_| "`data` is not JSON".to_owned())?)
        };
        if let Some(i) = self.pending.iter().position(|p| p.message_id == id) {
            let p = &self.pending[i];
            if !p.sent_on.contains(&serial) {
                return Err(format!(
                    "an answer to {id} on a connection it was not sent on"
                ));
            }
            let consumed = match p.kind {
                Kind::Event => {
                    // `{"status":"SUCCESS"|"LATER","message":…}`.
                    let d = data.ok_or("an EVENT answer without data")?;
                    let status = d["status"].as_str().unwrap_or_default();
                    if !matches!(status, "SUCCESS" | "LATER") || !d["message"].is_string() {
                        return Err(format!("EVENT answer data is not {{status, message}}: {d}"));
                    }
                    code == 200 && status == "SUCCESS"
                }
                Kind::Callback => match data {
                    // `{"response": …}`; `null` for a robot message.
                    Some(d) if d.as_object().is_some_and(|o| o.contains_key("response")) => {
                        code == 200
                    }
                    // A failure may carry no data (Go SDK's error response).
                    None if code != 200 => false,
                    other => {
                        return Err(format!(
                            "CALLBACK answer data is not {{response}}: {other:?}"
                        ));
                    }
                },
            };
            return Ok((id, ack, consumed.then_some(i)));
        }
        let Some((topic, sent_data, sent_serial)) = self.system_sent.get(&id) else {
            return Err(format!("an answer to unknown messageId {id}"));
        };
        if *sent_serial != serial {
            return Err(format!(
                "an answer to {id} on a connection it was not sent on"
            ));
        }
        if code != 200 {
            return Err(format!("SYSTEM {topic} answered with code {code}"));
        }
        if topic == "ping" && data_text != sent_data {
            return Err("a ping answered with other data than its own".into());
        }
        Ok((id, ack, None))
    }
}

/// A running sandbox Stream gateway on 127.0.0.1.
pub struct SandboxStreamGateway {
    api_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl SandboxStreamGateway {
    /// Starts the open API and the WebSocket endpoint on free ports, for the
    /// app `client_id` / `client_secret`.
    pub async fn start(
        client_id: &str,
        client_secret: &str,
    ) -> std::io::Result<SandboxStreamGateway> {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_addr = api.local_addr()?;
        let ws_addr = ws.local_addr()?;
        let shared = Arc::new(Shared {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            app_id: uuid_like(),
            corp_id: format!("ding{}", hex(8)),
            ws_endpoint: format!("ws://{ws_addr}/connect"),
            inner: Mutex::new(Inner {
                redeliver_after: DEFAULT_REDELIVER_AFTER,
                callback_redelivery: false,
                disconnect_grace: DISCONNECT_GRACE,
                tickets: HashMap::new(),
                tickets_used: Vec::new(),
                opens: 0,
                refuse_opens: 0,
                close_after_upgrade: 0,
                open_requests: Vec::new(),
                connections: 0,
                current: None,
                pending: Vec::new(),
                acks: Vec::new(),
                invalid_acks: Vec::new(),
                system_sent: HashMap::new(),
                sent: Vec::new(),
                counter: 0,
                conn_tasks: Vec::new(),
            }),
            changed: watch::Sender::new(0),
        });
        let router = Router::new()
            .route("/v1.0/gateway/connections/open", post(open))
            .with_state(shared.clone());
        let api_task = tokio::spawn(async move {
            let _ = axum::serve(api, router).await;
        });
        let ws_task = tokio::spawn(accept_loop(ws, shared.clone()));
        let redeliver_task = tokio::spawn(redeliver_loop(Arc::downgrade(&shared)));
        Ok(SandboxStreamGateway {
            api_addr,
            shared,
            tasks: vec![api_task, ws_task, redeliver_task],
        })
    }

    /// Sends unconsumed frames again after `after` (default 60 s).
    pub fn with_redeliver_after(self, after: Duration) -> SandboxStreamGateway {
        self.shared.lock().redeliver_after = after;
        self
    }

    /// Also resends unconsumed CALLBACK frames (after `redeliver_after` and
    /// on a new connection), which DingTalk does not do (default off).
    pub fn with_callback_redelivery(self, on: bool) -> SandboxStreamGateway {
        self.shared.lock().callback_redelivery = on;
        self
    }

    /// Closes a connection this long after `disconnect` (default 10 s).
    pub fn with_disconnect_grace(self, grace: Duration) -> SandboxStreamGateway {
        self.shared.lock().disconnect_grace = grace;
        self
    }

    /// The `api_base_v1` to configure.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The WebSocket endpoint the open API hands out.
    pub fn ws_endpoint(&self) -> String {
        self.shared.ws_endpoint.clone()
    }

    /// The `appId` header of callbacks.
    pub fn app_id(&self) -> String {
        self.shared.app_id.clone()
    }

    /// The `eventCorpId` header of events.
    pub fn corp_id(&self) -> String {
        self.shared.corp_id.clone()
    }

    fn push(
        &self,
        kind: Kind,
        headers: impl FnOnce(&str) -> Map<String, Value>,
        data: &str,
    ) -> String {
        let mut inner = self.shared.lock();
        let id = inner.message_id();
        inner.pending.push(Pending {
            message_id: id.clone(),
            kind,
            headers: headers(&id),
            data: data.to_owned(),
            last_sent: None,
            deliveries: 0,
            sent_on: Vec::new(),
            settled_by: None,
        });
        let i = inner.pending.len() - 1;
        inner.deliver(i);
        drop(inner);
        self.shared.bump();
        id
    }

    /// Pushes an event (`eventType`, the event's JSON as `data`) to the
    /// connected client, or queues it until one connects; its messageId.
    pub fn push_event(&self, event_type: &str, data_json: &str) -> String {
        let (app, corp) = (self.shared.app_id.clone(), self.shared.corp_id.clone());
        self.push(
            Kind::Event,
            |id| {
                let now = now_ms().to_string();
                let mut h = Map::new();
                h.insert("topic".into(), "*".into());
                h.insert("messageId".into(), id.into());
                h.insert("contentType".into(), "application/json".into());
                h.insert("time".into(), now.clone().into());
                h.insert("eventType".into(), event_type.into());
                h.insert("eventId".into(), hex(16).into());
                h.insert("eventCorpId".into(), corp.into());
                h.insert("eventBornTime".into(), now.into());
                h.insert("eventUnifiedAppId".into(), app.into());
                h
            },
            data_json,
        )
    }

    /// Pushes a callback on `topic` (e.g. a robot message) to the connected
    /// client, or queues it; its messageId.
    pub fn push_callback(&self, topic: &str, data_json: &str) -> String {
        let app = self.shared.app_id.clone();
        self.push(
            Kind::Callback,
            |id| {
                let mut h = Map::new();
                h.insert("appId".into(), app.into());
                h.insert("contentType".into(), "application/json".into());
                h.insert("messageId".into(), id.into());
                h.insert("time".into(), now_ms().to_string().into());
                h.insert("topic".into(), topic.into());
                h
            },
            data_json,
        )
    }

    /// Sends the pushed frame `message_id` again now, consumed or not (as
    /// DingTalk may redeliver an event whose ack is late or lost); whether
    /// a client took it.
    pub fn resend(&self, message_id: &str) -> bool {
        let mut inner = self.shared.lock();
        let Some(i) = inner
            .pending
            .iter()
            .position(|p| p.message_id == message_id)
        else {
            return false;
        };
        let before = inner.pending[i].deliveries;
        inner.deliver(i);
        let sent = inner.pending[i].deliveries > before;
        drop(inner);
        self.shared.bump();
        sent
    }

    /// Sends a SYSTEM `ping` with a fresh `opaque`; its messageId, or `None`
    /// when no client is connected.
    pub fn send_ping(&self) -> Option<String> {
        let id = self
            .shared
            .lock()
            .system("ping", json!({"opaque": uuid_like()}));
        self.shared.bump();
        id
    }

    /// Sends a SYSTEM `disconnect`; the connection takes no new frames and
    /// is closed after the grace time. `None` when no client is connected.
    pub fn send_disconnect(&self) -> Option<String> {
        let mut inner = self.shared.lock();
        let id = inner.system("disconnect", json!({"reason": "connection is expired"}))?;
        let grace = inner.disconnect_grace;
        let conn = inner.current.as_mut()?;
        conn.draining = true;
        let tx = conn.tx.clone();
        drop(inner);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(Command::Close);
        });
        self.shared.bump();
        Some(id)
    }

    fn command(&self, command: Command) -> bool {
        let inner = self.shared.lock();
        inner
            .current
            .as_ref()
            .is_some_and(|c| c.tx.send(command).is_ok())
    }

    /// Drops the current connection's socket without a close frame; whether
    /// there was one.
    pub fn drop_connection(&self) -> bool {
        self.command(Command::Drop)
    }

    /// Makes the current connection dead without closing it: nothing is read
    /// or written any more (no pongs), until the client gives up on it.
    pub fn freeze_connection(&self) -> bool {
        self.command(Command::Freeze)
    }

    /// The next `n` open requests get HTTP 503.
    pub fn refuse_opens(&self, n: u32) {
        self.shared.lock().refuse_opens = n;
    }

    /// The next `n` WebSocket connections are closed (with a close frame)
    /// right after the upgrade, before any frame.
    pub fn close_after_upgrade(&self, n: u32) {
        self.shared.lock().close_after_upgrade = n;
    }

    /// Open requests received (refused ones included).
    pub fn opens(&self) -> u64 {
        self.shared.lock().opens
    }

    /// The bodies of the open requests, in order.
    pub fn open_requests(&self) -> Vec<Value> {
        self.shared.lock().open_requests.clone()
    }

    /// WebSocket connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// The tickets that opened connections, in order.
    pub fn tickets_used(&self) -> Vec<String> {
        self.shared.lock().tickets_used.clone()
    }

    /// Whether a client is connected (and not told to disconnect).
    pub fn connected(&self) -> bool {
        self.shared
            .lock()
            .current
            .as_ref()
            .is_some_and(|c| !c.draining)
    }

    /// Every valid answer received, in order: (messageId, the ack as JSON)
    /// (see [`invalid_acks`](Self::invalid_acks) for the others).
    pub fn acks(&self) -> Vec<(String, Value)> {
        self.shared.lock().acks.clone()
    }

    /// Answers that failed the envelope check (or came on another
    /// connection than their frame), in order: (why, the text).
    pub fn invalid_acks(&self) -> Vec<(String, String)> {
        self.shared.lock().invalid_acks.clone()
    }

    /// Every frame sent (redeliveries and SYSTEM frames included), in order:
    /// (messageId, the exact text).
    pub fn sent_frames(&self) -> Vec<(String, String)> {
        self.shared.lock().sent.clone()
    }

    /// How many times the frame `message_id` was sent.
    pub fn deliveries(&self, message_id: &str) -> u32 {
        let inner = self.shared.lock();
        inner
            .pending
            .iter()
            .find(|p| p.message_id == message_id)
            .map_or(0, |p| p.deliveries)
    }

    /// The messageIds of pushed frames not consumed yet.
    pub fn unconsumed(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner
            .pending
            .iter()
            .filter(|p| p.settled_by.is_none())
            .map(|p| p.message_id.clone())
            .collect()
    }

    /// Waits up to `timeout` until `f` gives something.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        f: impl Fn(&Self) -> Option<T>,
    ) -> Option<T> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return f(self),
            }
        }
    }

    /// Waits for the ack that consumed the pushed frame `message_id` (for a
    /// SYSTEM frame: its first answer).
    pub async fn wait_ack(&self, message_id: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(timeout, |g| {
            let inner = g.shared.lock();
            match inner.pending.iter().find(|p| p.message_id == message_id) {
                Some(p) => p.settled_by.clone(),
                None => inner
                    .acks
                    .iter()
                    .find(|(id, _)| id == message_id)
                    .map(|(_, a)| a.clone()),
            }
        })
        .await
    }

    /// Waits until `n` connections were accepted and one is open.
    pub async fn wait_connections(&self, n: u64, timeout: Duration) -> bool {
        self.wait_for(timeout, |g| {
            (g.connections() >= n && g.connected()).then_some(())
        })
        .await
        .is_some()
    }

    /// Waits until no connection is open.
    pub async fn wait_disconnected(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |g| g.shared.lock().current.is_none().then_some(()))
            .await
            .is_some()
    }
}

impl Drop for SandboxStreamGateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in &self.shared.lock().conn_tasks {
            t.abort();
        }
    }
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"requestid": uuid_like().to_uppercase(), "code": code, "message": message});
    (status, axum::Json(body)).into_response()
}

/// `POST /v1.0/gateway/connections/open`.
async fn open(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = s.lock();
    inner.opens += 1;
    inner.open_requests.push(request.clone());
    let refuse = inner.refuse_opens > 0;
    if refuse {
        inner.refuse_opens -= 1;
    }
    drop(inner);
    s.bump();
    if refuse {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "服务暂不可用",
        );
    }
    let id = request["clientId"].as_str();
    let secret = request["clientSecret"].as_str();
    if id.is_none() || secret.is_none() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "缺少参数 clientId 或 clientSecret",
        );
    }
    if id != Some(s.client_id.as_str()) || secret != Some(s.client_secret.as_str()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let subscriptions_ok = request["subscriptions"].as_array().is_some_and(|subs| {
        !subs.is_empty()
            && subs.iter().all(|sub| {
                // The Go SDK also subscribes SYSTEM `ping` and `disconnect`.
                matches!(sub["type"].as_str(), Some("EVENT" | "CALLBACK" | "SYSTEM"))
                    && sub["topic"].as_str().is_some_and(|t| !t.is_empty())
            })
    });
    if !subscriptions_ok {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "subscriptions 不合法",
        );
    }
    let ticket = uuid_like();
    s.lock().tickets.insert(ticket.clone(), Instant::now());
    axum::Json(json!({"endpoint": s.ws_endpoint, "ticket": ticket})).into_response()
}

/// Checks the handshake's path and ticket, consuming the ticket.
// The error type is the one tungstenite's handshake callback must return.
#[allow(clippy::result_large_err)]
fn check_ticket(s: &Shared, req: &Request) -> Result<(), ErrorResponse> {
    let refuse = |status: u16, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_owned()));
        *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
            .unwrap_or(tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED);
        r
    };
    if req.uri().path() != "/connect" {
        return Err(refuse(404, "not found"));
    }
    let ticket = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut inner = s.lock();
    match inner.tickets.remove(&ticket) {
        Some(issued) if issued.elapsed() <= TICKET_TTL => {
            inner.tickets_used.push(ticket);
            Ok(())
        }
        _ => Err(refuse(401, "invalid ticket")),
    }
}

// The handshake callback's error type is tungstenite's (see check_ticket).
#[allow(clippy::result_large_err)]
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let check = |req: &Request, resp: WsResponse| check_ticket(&s, req).map(|()| resp);
            match tokio_tungstenite::accept_hdr_async(tcp, check).await {
                Ok(ws) => serve_connection(ws, s).await,
                Err(e) => tracing::debug!(error = %e, "sandbox stream gateway: handshake refused"),
            }
        });
        shared.lock().conn_tasks.push(task.abort_handle());
    }
}

async fn serve_connection(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    s: Arc<Shared>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let close_at_once = {
        let mut inner = s.lock();
        let close = inner.close_after_upgrade > 0;
        if close {
            inner.close_after_upgrade -= 1;
            inner.connections += 1;
        }
        close
    };
    if close_at_once {
        s.bump();
        let _ = ws.close(None).await;
        return;
    }
    let serial = {
        let mut inner = s.lock();
        inner.connections += 1;
        let serial = inner.connections;
        inner.current = Some(Conn {
            serial,
            connection_id: uuid_like(),
            tx,
            draining: false,
        });
        // A new connection gets every frame not consumed yet.
        inner.deliver_unsettled();
        serial
    };
    s.bump();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Text(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close) => {
                    let _ = ws.close(None).await;
                    break;
                }
                Some(Command::Drop) | None => break,
                Some(Command::Freeze) => {
                    // Hold the socket open, read nothing (so no pong goes
                    // out), write nothing, until told to drop it.
                    loop {
                        match rx.recv().await {
                            Some(Command::Drop) | None => break,
                            Some(_) => {}
                        }
                    }
                    break;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    s.lock().record_ack(serial, text.as_str());
                    s.bump();
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(ws);
    let mut inner = s.lock();
    if inner.current.as_ref().is_some_and(|c| c.serial == serial) {
        inner.current = None;
    }
    drop(inner);
    s.bump();
}

/// Sends unconsumed frames again once `redeliver_after` has passed.
async fn redeliver_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let tick = {
            let mut inner = s.lock();
            let after = inner.redeliver_after;
            let due: Vec<usize> = (0..inner.pending.len())
                .filter(|&i| {
                    inner.redeliverable(i)
                        && inner.pending[i]
                            .last_sent
                            .is_some_and(|t| t.elapsed() >= after)
                })
                .collect();
            let resent = !due.is_empty();
            for i in due {
                inner.deliver(i);
            }
            inner
                .tickets
                .retain(|_, issued| issued.elapsed() <= TICKET_TTL);
            drop(inner);
            if resent {
                // Tests wait on deliveries too.
                s.bump();
            }
            (after / 4).clamp(Duration::from_millis(10), Duration::from_millis(200))
        };
        drop(s);
        tokio::time::sleep(tick).await;
    }
}
