//! Chat platforms behind one vocabulary. Nothing platform-specific leaks out of
//! this folder: the rest of rollcall sees [`InboundEvent`]s.

use serde::{Deserialize, Serialize};

pub mod dingtalk;
pub mod sandbox;
pub mod wecom;

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
}

/// A message or event a user sent to the bot, as the platform delivered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The platform user id of the sender.
    pub from_user: String,
    /// The receiving corp / app id as the platform states it.
    pub to_user: String,
    /// The platform's own message time (seconds since the epoch).
    pub create_time: i64,
    /// The agent (app) id, when the platform sends one.
    pub agent_id: Option<String>,
    /// What was sent.
    #[serde(flatten)]
    pub kind: InboundKind,
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
    /// A voice message; `format` is WeCom's `Format` (amr, speex, …).
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
    /// A file; the name is WeCom's `FileName` when it sends one (otherwise
    /// the download's `Content-disposition` names it).
    File {
        msg_id: String,
        media_id: String,
        file_name: Option<String>,
    },
    /// A button press on a template card (`template_card_event`).
    CardButton {
        event_key: String,
        task_id: String,
        card_type: Option<String>,
        response_code: Option<String>,
    },
    /// The user opened the app (`enter_agent`).
    EnterAgent {
        event_key: Option<String>,
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
            InboundKind::CardButton { .. } => "card_button",
            InboundKind::EnterAgent { .. } => "enter_agent",
            InboundKind::Other { .. } => "other",
        }
    }
}

impl InboundEvent {
    /// The key that identifies one platform delivery, so that a retry of the
    /// same message is recognised: the MsgId for messages; for events
    /// FromUserName + CreateTime + Event + EventKey + TaskId.
    pub fn msg_key(&self) -> String {
        let event = |event: &str, key: &str, task: &str| {
            format!(
                "event:{}:{}:{event}:{key}:{task}",
                self.from_user, self.create_time
            )
        };
        match &self.kind {
            InboundKind::Text { msg_id, .. }
            | InboundKind::Location { msg_id, .. }
            | InboundKind::Image { msg_id, .. }
            | InboundKind::Voice { msg_id, .. }
            | InboundKind::Video { msg_id, .. }
            | InboundKind::File { msg_id, .. } => format!("msg:{msg_id}"),
            InboundKind::CardButton {
                event_key, task_id, ..
            } => event("template_card_event", event_key, task_id),
            InboundKind::EnterAgent { event_key } => {
                event("enter_agent", event_key.as_deref().unwrap_or(""), "")
            }
            InboundKind::Other {
                msg_id: Some(id), ..
            } => format!("msg:{id}"),
            InboundKind::Other {
                msg_type,
                event: ev,
                event_key,
                ..
            } => event(
                ev.as_deref().unwrap_or(msg_type),
                event_key.as_deref().unwrap_or(""),
                "",
            ),
        }
    }

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
