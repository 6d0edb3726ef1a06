//! One message to send on one channel, keyed so it is sent at most once.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    /// notice:{case}:{step}:{recipient}:{channel}, reply:{event}, …
    pub idem_key: String,
    pub case_id: Option<i64>,
    /// The case's fencing token when this was enqueued.
    pub fence: Option<i64>,
    pub step: Option<String>,
    /// Platform user id of the recipient.
    pub recipient: String,
    /// chat, sms or email.
    pub channel: String,
    pub template: String,
    /// SHA-256 of the template's source text.
    pub template_hash: String,
    /// The rendered message (JSON).
    pub payload: String,
    /// pending, sending, sent, unknown, undeliverable, failed or cancelled.
    pub status: String,
    pub attempts: i32,
    pub not_before: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// When the current attempt was claimed.
    pub claimed_at: Option<DateTimeUtc>,
    pub sent_at: Option<DateTimeUtc>,
    /// The chat platform's message id, the SMS gateway's id (Aliyun's
    /// BizId) or the email's Message-ID.
    pub receipt_id: Option<String>,
    /// The provider's answer as received.
    pub receipt: Option<String>,
    /// For a card: what updating it later takes (see `ChatApi::update_card`).
    pub card_ref: Option<String>,
    pub error: Option<String>,
    /// When the platform says the recipient read it (chat on a platform
    /// that reports reads; see `ChatApi::read_window`).
    pub read_at: Option<DateTimeUtc>,
    /// When asking the platform about the read ended (read, or the schedule
    /// over): its outcome is recorded once.
    pub read_checked_at: Option<DateTimeUtc>,
    /// A secret the text holds a mark in place of (a one-time download
    /// token), sealed with the data key until the message is sent.
    pub secret_sealed: Option<String>,
    /// What the SMS gateway reported of the text: `delivered`, `failed`, or
    /// `unknown` (the request may have reached the gateway, no answer came).
    pub delivery_status: Option<String>,
    /// When the handset received it, as the report says.
    pub delivered_at: Option<DateTimeUtc>,
    /// The gateway's report exactly as received.
    pub delivery_report: Option<String>,
    /// When the gateway was last asked about it.
    pub report_checked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
