//! Chat platforms behind one vocabulary. Nothing platform-specific leaks out of
//! this folder: the rest of rollcall sees [`InboundEvent`]s coming in, and
//! sends [`OutboundMessage`]s through a tenant's [`ChatApi`], built by
//! [`build`] (the one place that matches on a platform's name).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod aes_key;
pub mod dingtalk;
pub mod download;
pub mod feishu;
pub mod sandbox;
mod select;
pub mod wecom;

pub use select::{PlatformTexts, build, build_with};

/// A tenant's chat platform: its server API, and how its events arrive (at
/// a callback URL, over a connection rollcall opens, or both).
#[derive(Clone, Debug)]
pub struct Platform {
    pub api: Arc<dyn ChatApi>,
    /// What answers the platform's HTTP callbacks, when it sends any.
    pub callbacks: Option<Arc<dyn CallbackSide>>,
    /// What keeps the connection rollcall opens to the platform, when
    /// events come that way (DingTalk's Stream mode).
    pub listener: Option<Arc<dyn Listener>>,
}

/// Events a platform pushes over a connection rollcall opens and keeps
/// (rather than to a callback URL).
#[async_trait::async_trait]
pub trait Listener: Send + Sync + std::fmt::Debug {
    /// The platform's name as the configuration spells it.
    fn platform(&self) -> &'static str;

    /// Keeps the connection open (reconnecting with backoff, also when the
    /// platform refuses the app's credentials, which are logged) until
    /// `shutdown` resolves, handing each event to `sink` and acknowledging it
    /// to the platform only once `sink` has stored it. Returns early only on
    /// a configuration that cannot work (an empty app key or secret).
    async fn run(
        &self,
        sink: Arc<dyn EventSink>,
        shutdown: futures::future::BoxFuture<'static, ()>,
    ) -> Result<(), String>;
}

/// Where a [`Listener`] puts each event: stored durably (with `raw`, the
/// bytes as received, and `plaintext`, the event's own text) before `store`
/// returns. A delivery stored before is not stored again, and is `Ok`.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    async fn store(&self, event: &InboundEvent, raw: &str, plaintext: &str) -> Result<(), String>;
}

/// One HTTP callback as received, before anything in it is trusted.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    pub method: CallbackMethod,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub headers: &'a reqwest::header::HeaderMap,
    pub body: &'a [u8],
    /// The server's time now (seconds since the epoch), for replay checks.
    pub now: i64,
    /// How far a signed timestamp may be from `now`, in seconds.
    pub replay_window_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMethod {
    Get,
    Post,
}

/// What a verified callback asks of rollcall.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    /// The platform's check of the callback URL: answer it, store nothing.
    Verified(Answer),
    /// Events: store them (each with the raw request and `plaintext`, the
    /// text it was decrypted to), then give the platform `answer`. One
    /// delivery is one event, except where the platform batches several
    /// (DingTalk's attendance event lists punches); never empty.
    Event {
        events: Vec<InboundEvent>,
        plaintext: String,
        answer: Answer,
        /// The body to store instead of the request's, when the platform
        /// side redacted a secret from it (Feishu's verification token in a
        /// plain event); `None`: the request's body as received.
        body: Option<String>,
    },
}

/// The body of a 200 answer, exactly as the platform expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    pub fn text(body: impl Into<String>) -> Answer {
        Answer {
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Why a callback was refused (each a 4xx; nothing is stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Undecryptable(String),
    /// Decrypted, but for another app or corp than the tenant's.
    #[error("{0}")]
    WrongReceiveId(String),
    /// Not the format the platform sends.
    #[error("{0}")]
    Malformed(String),
    #[error("timestamp outside the allowed window")]
    StaleTimestamp,
}

/// The callback side of a platform: verify, decrypt and parse a request,
/// and say what to answer. Pure: storing is the ingress's job.
pub trait CallbackSide: Send + Sync + std::fmt::Debug {
    /// The platform's name as the configuration and the callback URL
    /// (`/callback/{platform}/{tenant}`) spell it.
    fn platform(&self) -> &'static str;

    fn handle(&self, request: &CallbackRequest<'_>) -> Result<Callback, Refusal>;
}

/// What rollcall asks of a chat platform's server API. Implemented once per
/// platform; everything above `platform/` holds an `Arc<dyn ChatApi>`.
#[async_trait::async_trait]
pub trait ChatApi: Send + Sync + std::fmt::Debug {
    /// The platform's name as the configuration spells it (`wecom`, …).
    fn platform(&self) -> &'static str;

    /// Sends `message` to the user `to`. `unique_text`: the text is unique
    /// by design (a notice), so a platform's own duplicate check may guard
    /// it against a resend after a crash; answers to commands may rightly
    /// repeat a text and must not be dropped as duplicates.
    async fn send(
        &self,
        to: &str,
        message: &OutboundMessage,
        unique_text: bool,
    ) -> Result<Receipt, PlatformError>;

    /// [`ChatApi::send`] of the message that `key` names, stable across
    /// resends of it (the outbox row's key): a platform that takes an
    /// idempotency key (Feishu's `uuid`) sends one derived from it, so that a
    /// resend after a crash is one message.
    async fn send_keyed(
        &self,
        to: &str,
        message: &OutboundMessage,
        unique_text: bool,
        key: &str,
    ) -> Result<Receipt, PlatformError> {
        let _ = key;
        self.send(to, message, unique_text).await
    }

    /// [`ChatApi::update_card`] given the card as it was sent (`None` when
    /// not known), for a platform that replaces a whole card (Feishu).
    async fn update_card_of(
        &self,
        to: &str,
        card_ref: &str,
        label: &str,
        card: Option<&Card>,
    ) -> Result<Receipt, PlatformError> {
        let _ = card;
        self.update_card(to, card_ref, label).await
    }

    /// Turns the pressed button of the card that `card_ref` designates
    /// (from the press, see [`InboundKind::CardButton`], or the send's
    /// [`Receipt`]) into the label `label`, for the user `to`.
    async fn update_card(
        &self,
        to: &str,
        card_ref: &str,
        label: &str,
    ) -> Result<Receipt, PlatformError>;

    /// Downloads the media (photo, file, voice, video) a user sent.
    async fn fetch_media(&self, media_id: &str) -> Result<Media, PlatformError>;

    /// Everyone in the directory the app can see.
    async fn directory(&self) -> Result<Vec<Member>, PlatformError>;

    /// How long after a send the platform still says who read a message
    /// (`None`: it never does, as for WeCom's app messages).
    fn read_window(&self) -> Option<Duration>;

    /// Who of the recipients of the message `message_id` (a send's
    /// [`Receipt::message_id`]) has read it, with the platform's answer as
    /// received (evidence).
    async fn read_status(&self, message_id: &str) -> Result<ReadStatus, PlatformError>;

    /// The punches `users` made in the platform's own attendance app from
    /// `from` to `to` (each a [`InboundKind::Punch`] keyed by
    /// [`punch_key`], so that the same punch arriving as an event too is
    /// stored once), with each record as the platform answered it. Real
    /// punches only: rows the platform fills in for a missed punch are not.
    async fn punches(
        &self,
        users: &[String],
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<PunchRecord>, PlatformError>;
}

/// One punch read from a platform's attendance records.
#[derive(Debug, Clone, PartialEq)]
pub struct PunchRecord {
    pub event: InboundEvent,
    /// The record as the platform answered it (one entry of its list).
    pub raw: String,
    /// What was asked, without the other users of the same request, as a
    /// query string (stored where a callback keeps its query): the API
    /// path (`api`) and the period as the platform was asked for it.
    pub request: String,
}

/// `from`..=`to` cut into periods of at most `longest` (the platforms limit
/// how long a period one call may ask about), each starting where the last
/// ended: a punch at a boundary is read twice rather than missed (its key
/// makes it one).
pub(crate) fn periods(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    longest: chrono::Duration,
) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let mut periods = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + longest).min(to);
        periods.push((start, end));
        if end == to {
            break;
        }
        start = end;
    }
    periods
}

/// [`PunchRecord::request`]: `api` and then `fields`, form-urlencoded.
pub(crate) fn punch_request(api: &str, fields: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("api", api);
    for (name, value) in fields {
        query.append_pair(name, value);
    }
    query.finish()
}

/// The dedup key of `user`'s punch at `at_ms` (ms since the epoch),
/// however it reached rollcall: an event, or an import of the records.
pub fn punch_key(user: &str, at_ms: i64) -> String {
    format!("punch:{user}:{at_ms}")
}

/// What a platform says about who read one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStatus {
    pub receipts: Vec<ReadReceipt>,
    /// Recipients the platform accepted the message for and then says it
    /// never delivered to (user, why): a DingTalk work notice it dropped.
    pub undelivered: Vec<(String, String)>,
    /// The answer as received.
    pub response: Exchange,
}

/// Whether one recipient has read a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReceipt {
    pub user_id: String,
    pub read: bool,
    /// When it was read (ms since the epoch), when the platform says.
    pub read_at: Option<i64>,
}

/// A message to one user, in no platform's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboundMessage {
    Text { content: String },
    Card(Card),
}

/// A card with buttons that call back when pressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// Who it is from, as a header (the company's name).
    pub source: String,
    pub title: String,
    pub body: String,
    /// rollcall's id of the card, unique per tenant (`[0-9A-Za-z_-]`): what
    /// a platform that names cards (WeCom's `task_id`) gets.
    pub card_id: String,
    pub buttons: Vec<CardButton>,
}

/// One button: `key` is the opaque token a press sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardButton {
    pub key: String,
    pub label: String,
}

/// What the platform answered for a message it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The platform's id of the message, when it gives one.
    pub message_id: Option<String>,
    /// For cards: what updating this card later takes, when the platform
    /// gives one.
    pub card_ref: Option<String>,
    /// The request as sent (without credentials), for the evidence log.
    pub request: Option<Exchange>,
    /// The answer as received.
    pub response: Exchange,
}

/// Bytes that crossed the wire, with their media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Exchange {
    pub fn json(text: impl Into<String>) -> Exchange {
        Exchange {
            media_type: "application/json",
            bytes: text.into().into_bytes(),
        }
    }
}

/// A downloaded photo, file, voice or video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub bytes: Vec<u8>,
    /// The media type the platform gave.
    pub content_type: String,
    /// The file name, when the platform gives one.
    pub file_name: Option<String>,
}

/// One person in a platform's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub name: String,
    /// The name of their main department.
    pub department: Option<String>,
    /// The user id of their direct manager, when the directory has one.
    pub manager: Option<String>,
    /// Only when the app may read it.
    pub mobile: Option<String>,
    pub email: Option<String>,
    /// Still working there (not disabled, not left).
    pub active: bool,
}

/// How a call to a platform failed, so that the caller knows what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// Busy, 5xx, timeout, connection refused: try again with backoff.
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// The platform asked us to slow down.
    #[error("rate limited ({reason}); retry after {after_secs} s")]
    RateLimited { after_secs: u64, reason: String },
    /// The recipient cannot receive on this platform (left, not in the app's
    /// visible range): record it, tell HR, use the other channels.
    #[error("recipient {user} cannot receive: {reason}")]
    Undeliverable { user: String, reason: String },
    /// Anything else: retrying will not help.
    #[error("refused: {0}")]
    Permanent(String),
    /// The request went out and no answer came (a timeout after
    /// connecting): the other side may have acted on it. An SMS in this
    /// state is never sent again blindly (see `outbox::sms`).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// A message or event a user sent to the bot, as the platform delivered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The platform user id of the sender.
    #[serde(alias = "from_user")]
    pub sender: String,
    /// When the platform says it was sent (seconds since the epoch).
    #[serde(alias = "create_time")]
    pub sent_at: i64,
    /// The key that identifies one delivery, so that the platform's retry
    /// of the same message or event is recognised (see each parser).
    #[serde(default)]
    pub dedup_key: String,
    /// The media type of the raw body and of its decrypted text.
    #[serde(default = "xml")]
    pub media_type: String,
    /// What was sent.
    #[serde(flatten)]
    pub kind: InboundKind,
    /// When the delivery carries several people's events (a DingTalk
    /// attendance event listing several punches): this event's own part of
    /// it, stored as its raw body and text instead of the whole delivery, so
    /// that no one's record (nor their evidence package) holds another
    /// person's. `None`: the delivery is this event's alone.
    #[serde(skip)]
    pub own_part: Option<String>,
}

/// Whether (`latitude`, `longitude`) is a place on Earth: finite, within
/// ±90 and ±180. Every parser refuses anything else ("NaN" and "inf" parse
/// as numbers), so that no geofence is judged on one.
pub fn on_earth(latitude: f64, longitude: f64) -> bool {
    latitude.is_finite()
        && longitude.is_finite()
        && latitude.abs() <= 90.0
        && longitude.abs() <= 180.0
}

/// What events stored before the seam carried (WeCom's XML).
fn xml() -> String {
    "application/xml".to_owned()
}

/// The kinds of inbound events rollcall understands; anything else is kept as
/// [`InboundKind::Other`] so nothing is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboundKind {
    Text {
        msg_id: String,
        content: String,
    },
    Location {
        msg_id: String,
        latitude: f64,
        longitude: f64,
        scale: Option<u32>,
        label: Option<String>,
    },
    Image {
        msg_id: String,
        pic_url: Option<String>,
        media_id: String,
    },
    /// A voice message; `format` is the platform's name of its encoding
    /// (amr, speex, …) when it gives one.
    Voice {
        msg_id: String,
        media_id: String,
        format: Option<String>,
    },
    Video {
        msg_id: String,
        media_id: String,
        thumb_media_id: Option<String>,
    },
    /// A file, with its name when the platform sends one (otherwise the
    /// download may name it).
    File {
        msg_id: String,
        media_id: String,
        file_name: Option<String>,
    },
    /// A punch in the platform's own attendance app (DingTalk's
    /// `attendance_check_record`): the employee clocked in without chatting.
    /// The sender is who punched, the event's time when.
    Punch {
        latitude: Option<f64>,
        longitude: Option<f64>,
        /// Where the app says they were (an address).
        label: Option<String>,
    },
    /// A button pressed on one of our cards.
    CardButton {
        /// The button's opaque key (see [`CardButton::key`]).
        #[serde(alias = "event_key")]
        key: String,
        /// Which card ([`Card::card_id`]).
        #[serde(alias = "task_id")]
        card_id: String,
        /// What updating the pressed card takes, when the platform gives it
        /// with the press ([`ChatApi::update_card`]).
        #[serde(alias = "response_code")]
        card_ref: Option<String>,
    },
    /// The platform says the sender read messages rollcall sent them
    /// (Feishu's `im.message.message_read_v1`): a read receipt pushed
    /// rather than asked for (see [`ChatApi::read_status`]).
    Read {
        /// The platform's ids of the messages read ([`Receipt::message_id`]).
        message_ids: Vec<String>,
        /// When they were read (ms since the epoch), when the platform says.
        read_at: Option<i64>,
    },
    Other {
        msg_type: String,
        event: Option<String>,
        event_key: Option<String>,
        msg_id: Option<String>,
    },
}

impl InboundKind {
    /// A stable name for storage and classification.
    pub fn name(&self) -> &'static str {
        match self {
            InboundKind::Text { .. } => "text",
            InboundKind::Location { .. } => "location",
            InboundKind::Image { .. } => "image",
            InboundKind::Voice { .. } => "voice",
            InboundKind::Video { .. } => "video",
            InboundKind::File { .. } => "file",
            InboundKind::Punch { .. } => "punch",
            InboundKind::CardButton { .. } => "card_button",
            InboundKind::Read { .. } => "read",
            InboundKind::Other { .. } => "other",
        }
    }
}

impl InboundEvent {
    /// The platform's id of the media a voice, video or file message carries
    /// (images are check-ins first, see `conversation`).
    pub fn attachment(&self) -> Option<&str> {
        match &self.kind {
            InboundKind::Voice { media_id, .. }
            | InboundKind::Video { media_id, .. }
            | InboundKind::File { media_id, .. } => Some(media_id),
            _ => None,
        }
    }

    /// The text of a text message.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            InboundKind::Text { content, .. } => Some(content),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[rstest::rstest]
    #[case(31.23, 121.47, true)]
    #[case(-90.0, 180.0, true)]
    #[case(90.5, 0.0, false)]
    #[case(0.0, -180.5, false)]
    #[case(f64::NAN, 121.0, false)]
    #[case(31.0, f64::INFINITY, false)]
    fn a_place_is_finite_and_on_earth(#[case] lat: f64, #[case] lon: f64, #[case] ok: bool) {
        assert_eq!(super::on_earth(lat, lon), ok);
    }
}
