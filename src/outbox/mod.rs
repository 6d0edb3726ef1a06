//! Outbound messages: every message is first an outbox row with a unique
//! idempotency key (`notice:{case}:{step}:{recipient}:{channel}` for notices,
//! `reply:{inbound event}` for answers), written in the same transaction as
//! the decision that caused it. The outbox is its own queue (`queue`): a
//! row is claimed (its attempt on record) before it is sent and its receipt
//! stored after; claims happen at least once, notices go out once.

pub mod email;
mod leaf;
pub mod queue;
pub mod reads;
pub mod render;
pub mod reports;
pub mod sms;
mod status;

pub use status::OutboxStatus;

use chrono::{DateTime, Duration, Utc};
use entity::{absence_case, card_action, outbox};
use futures::future::BoxFuture;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, TryInsertResult,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cases::Channel;
use crate::evidence::{NewLeaf, append_one};
use crate::platform::{Card, CardButton, OutboundMessage, PlatformError};
use crate::runtime::{Runtime, Tenant};
use leaf::{message_leaf, subject_of};

/// A card button: what pressing it means, and its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub action: String,
    pub label: String,
    /// The opaque key sent to the platform; filled in when enqueued.
    #[serde(default)]
    pub key: String,
}

/// What is sent, rendered. Stored as JSON in `outbox.payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Text {
        content: String,
    },
    /// A card with buttons (see [`crate::platform::Card`]).
    Card {
        source: String,
        title: String,
        body: String,
        /// Rows written before the platform seam call it `task_id`.
        #[serde(alias = "task_id")]
        card_id: String,
        buttons: Vec<Button>,
    },
    /// Turns the pressed card's button into a label.
    CardUpdate {
        /// What the platform needs to update the card (from the press).
        #[serde(alias = "response_code")]
        card_ref: String,
        #[serde(alias = "replace_name")]
        label: String,
        /// The card as it was sent, for a platform that replaces the whole
        /// card (rows written before it have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card: Option<Card>,
    },
    /// The recipient's phone is looked up (and unsealed) when sending.
    Sms {
        text: String,
        params: serde_json::Map<String, Value>,
    },
    Email {
        to: String,
        subject: String,
        text: String,
    },
}

impl Payload {
    /// The card a card payload sends, in the platforms' terms.
    pub fn card(&self) -> Option<Card> {
        let Payload::Card {
            source,
            title,
            body,
            card_id,
            buttons,
        } = self
        else {
            return None;
        };
        Some(Card {
            source: source.clone(),
            title: title.clone(),
            body: body.clone(),
            card_id: card_id.clone(),
            buttons: buttons
                .iter()
                .map(|b| CardButton {
                    key: b.key.clone(),
                    label: b.label.clone(),
                })
                .collect(),
        })
    }

    /// What a person reads: the text, the card's title and body, the
    /// email's subject and text. Its SHA-256 goes into the evidence log.
    pub fn text(&self) -> String {
        match self {
            Payload::Text { content } => content.clone(),
            Payload::Card { title, body, .. } => format!("{title}\n{body}"),
            Payload::CardUpdate { label, .. } => label.clone(),
            Payload::Sms { text, .. } => text.clone(),
            Payload::Email { subject, text, .. } => format!("{subject}\n\n{text}"),
        }
    }

    /// The payload with [`SECRET_MARK`] replaced by `secret` in what a
    /// person reads (a text's content, an email's text, a card's body).
    fn with_secret(&self, secret: &str) -> Payload {
        let put = |text: &str| text.replace(SECRET_MARK, secret);
        let mut out = self.clone();
        match &mut out {
            Payload::Text { content } => *content = put(content),
            Payload::Card { body, .. } => *body = put(body),
            Payload::Sms { text, .. } => *text = put(text),
            Payload::Email { text, .. } => *text = put(text),
            Payload::CardUpdate { .. } => {}
        }
        out
    }

    pub fn channel(&self) -> Channel {
        match self {
            Payload::Text { .. } | Payload::Card { .. } | Payload::CardUpdate { .. } => {
                Channel::Chat
            }
            Payload::Sms { .. } => Channel::Sms,
            Payload::Email { .. } => Channel::Email,
        }
    }
}

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub tenant_id: String,
    pub idem_key: String,
    pub case_id: Option<i64>,
    /// The case's fencing token: if it changed before sending, the row is cancelled.
    pub fence: Option<i64>,
    pub step: Option<String>,
    pub recipient: String,
    pub template: String,
    pub template_hash: String,
    /// The payload holds [`SECRET_MARK`] where this goes (see
    /// [`seal_secret`]): stored sealed, put in at sending only, and withheld
    /// from the evidence log and the stored requests.
    pub payload: Payload,
    pub secret: Option<String>,
}

/// What a message's stored text holds in place of its secret.
pub const SECRET_MARK: &str = "[one-time token withheld]";

/// The sealing context of the secret of message `idem_key` of `tenant`.
pub(crate) fn secret_context(tenant: &str, idem_key: &str) -> String {
    format!("outbox.secret:{tenant}:{idem_key}")
}

/// Seals `secret` for the message `idem_key` of `tenant` (what
/// [`NewMessage::secret`] takes).
pub fn seal_secret(
    key: &crate::sealed::DataKey,
    tenant: &str,
    idem_key: &str,
    secret: &str,
) -> String {
    key.seal(secret, &secret_context(tenant, idem_key))
}

/// `bytes` with every occurrence of `secret` replaced by [`SECRET_MARK`].
fn withhold(bytes: &[u8], secret: &str) -> Vec<u8> {
    let (needle, mark) = (secret.as_bytes(), SECRET_MARK.as_bytes());
    if needle.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(mark);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Chat => "chat",
        Channel::Sms => "sms",
        Channel::Email => "email",
    }
}

/// Puts `message` in the outbox (the queue's next batch takes it), inside the caller's
/// transaction. Returns the new row's id, or `None` if a row with this key
/// already exists (then nothing is written).
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    mut message: NewMessage,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    let mut tokens = Vec::new();
    if let Payload::Card { buttons, .. } = &mut message.payload {
        for b in buttons.iter_mut() {
            b.key = ulid::Ulid::new().to_string();
            tokens.push((b.key.clone(), b.action.clone()));
        }
    }
    let payload_json = serde_json::to_string(&message.payload).expect("plain data");
    let leaf = NewLeaf::new("message_queued")
        .case(message.case_id)
        .channel(channel_name(message.payload.channel()))
        .template(&message.template, &message.template_hash)
        .text(&message.payload.text())
        .id("idem_key", message.idem_key.clone())
        .raw("rendered", "application/json", payload_json.clone())
        .detail(json!({ "recipient": message.recipient, "step": message.step }));
    let row = outbox::ActiveModel {
        tenant_id: Set(message.tenant_id.clone()),
        idem_key: Set(message.idem_key),
        case_id: Set(message.case_id),
        fence: Set(message.fence),
        step: Set(message.step),
        recipient: Set(message.recipient.clone()),
        channel: Set(channel_name(message.payload.channel()).to_owned()),
        template: Set(message.template),
        template_hash: Set(message.template_hash),
        payload: Set(payload_json),
        secret_sealed: Set(message.secret),
        status: Set(OutboxStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        // The queue's time is the system's, as a simulated clock may jump.
        not_before: Set(Utc::now()),
        created_at: Set(now),
        ..Default::default()
    };
    let id = match outbox::Entity::insert(row)
        .on_conflict_do_nothing_on([outbox::Column::IdemKey])
        .exec(txn)
        .await?
    {
        TryInsertResult::Inserted(r) => r.last_insert_id,
        TryInsertResult::Conflicted | TryInsertResult::Empty => return Ok(None),
    };
    if !tokens.is_empty() {
        let actions = tokens
            .into_iter()
            .map(|(token, action)| card_action::ActiveModel {
                tenant_id: Set(message.tenant_id.clone()),
                token: Set(token),
                case_id: Set(message.case_id),
                outbox_id: Set(id),
                action: Set(action),
                for_user: Set(message.recipient.clone()),
                pressed_at: Set(None),
                ..Default::default()
            });
        card_action::Entity::insert_many(actions).exec(txn).await?;
    }
    let subject = subject_of(txn, message.case_id, &message.recipient).await?;
    crate::evidence::append_later(
        txn,
        &message.tenant_id,
        now,
        leaf.subject(Some(&subject)).source("outbox", id),
    )
    .await?;
    Ok(Some(id))
}

/// What became of one delivery attempt that did not end in a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Sent, cancelled, given up or already done: nothing more to do.
    Done(&'static str),
    /// Try again after this long.
    RetryAfter(std::time::Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("rendering: {0}")]
    Template(#[from] render::TemplateError),
}

/// What happens, in the transaction that gives a row up (undeliverable, or
/// failed for good), besides marking it: the cases tell HR
/// (`cases::notify::TellHr`). The app passes it to [`queue::run`], so that
/// the outbox does not depend on the modules that write to it.
pub trait OnGiveUp: reads::OnRead {
    fn given_up<'a>(
        &'a self,
        rt: &'a Runtime,
        txn: &'a DatabaseTransaction,
        tenant: &'a Tenant,
        row: &'a outbox::Model,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliverError>>;

    /// Whether an SMS went out is unknown and it will not be resent: HR is
    /// told (`looked_up`: the gateway was asked and holds no record of it).
    fn outcome_unknown<'a>(
        &'a self,
        rt: &'a Runtime,
        txn: &'a DatabaseTransaction,
        tenant: &'a Tenant,
        row: &'a outbox::Model,
        looked_up: bool,
    ) -> BoxFuture<'a, Result<(), DeliverError>>;
}

/// What a row's state says before a claim, read without writing: send it,
/// or end it without sending.
enum Verdict {
    /// Claim and send it, to this tenant's platform.
    Go(std::sync::Arc<Tenant>, Payload),
    /// Final already (sent, given up, cancelled): nothing to do.
    Final,
    /// Its tenant is no longer configured.
    NoTenant,
    /// Its case was resolved, paused or restarted since it was enqueued
    /// (the fencing token changed): not sent.
    CaseMoved,
    /// Its stored payload does not parse.
    Unreadable(String),
    /// An SMS attempt was interrupted between request and receipt.
    SmsCutOff(std::sync::Arc<Tenant>),
}

/// Judges `row` as it stands (reads only, through `conn`, so that a batch
/// judges inside its claim).
async fn judge<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    row: &outbox::Model,
    now: DateTime<Utc>,
) -> Result<Verdict, DbErr> {
    if !matches!(
        OutboxStatus::of(row),
        Some(OutboxStatus::Pending | OutboxStatus::Sending)
    ) {
        return Ok(Verdict::Final);
    }
    let Some(tenant) = rt.tenant(&row.tenant_id).cloned() else {
        return Ok(Verdict::NoTenant);
    };
    // The fencing token: a notice for a case that was resolved, paused or
    // restarted since it was enqueued is not sent.
    if let (Some(case_id), Some(fence)) = (row.case_id, row.fence) {
        let case = absence_case::Entity::find_by_id(case_id).one(conn).await?;
        if case.is_none_or(|c| c.fence != fence) {
            return Ok(Verdict::CaseMoved);
        }
    }
    let payload: Payload = match serde_json::from_str(&row.payload) {
        Ok(p) => p,
        Err(e) => return Ok(Verdict::Unreadable(e.to_string())),
    };
    // An attempt that was interrupted (the process died between request and
    // receipt): chat is sent again under the platform's own guard (WeCom's
    // duplicate check; on DingTalk the same text reference or card id) and email
    // with the same Message-ID, but an SMS gateway has no such guard, so the
    // SMS is not sent twice: its outcome is unknown, as after a timeout
    // (looked up where the gateway can be asked, else HR is told).
    if OutboxStatus::of(row) == Some(OutboxStatus::Sending)
        && payload.channel() == Channel::Sms
        && row.claimed_at.is_none_or(|c| c + cut_off_after(rt) <= now)
    {
        return Ok(Verdict::SmsCutOff(tenant));
    }
    Ok(Verdict::Go(tenant, payload))
}

/// Why a row whose attempt was cut off (a crash between request and
/// receipt) and whose case then moved on is cancelled: it may have arrived.
pub const CANCELLED_AFTER_CUT_OFF: &str = "the case changed before it was sent again; an earlier attempt was cut off between request and receipt, so the platform may have taken it";

/// Ends `row` as `verdict` (anything but [`Verdict::Go`]) says, in its own
/// transaction.
async fn settle(
    rt: &Runtime,
    on_give_up: &dyn OnGiveUp,
    row: &outbox::Model,
    verdict: Verdict,
) -> Result<Delivered, DeliverError> {
    match verdict {
        Verdict::Go(..) | Verdict::Final => Ok(Delivered::Done("already final")),
        Verdict::NoTenant => {
            let why = "tenant no longer configured";
            finish(rt, row, OutboxStatus::Failed, Some(why)).await?;
            Ok(Delivered::Done("failed"))
        }
        Verdict::CaseMoved => {
            // A row still `sending` here had an attempt cut off between
            // request and receipt (a crash): the platform may have taken it,
            // and the record must not say it went nowhere.
            let why = if OutboxStatus::of(row) == Some(OutboxStatus::Sending) {
                CANCELLED_AFTER_CUT_OFF
            } else {
                "the case changed before sending"
            };
            finish(rt, row, OutboxStatus::Cancelled, Some(why)).await?;
            Ok(Delivered::Done("cancelled"))
        }
        Verdict::Unreadable(e) => {
            let why = format!("unreadable payload: {e}");
            finish(rt, row, OutboxStatus::Failed, Some(&why)).await?;
            Ok(Delivered::Done("failed"))
        }
        Verdict::SmsCutOff(tenant) => {
            let why = "interrupted between request and receipt; not re-sent to avoid a second SMS";
            mark_unknown(rt, on_give_up, &tenant, row, why).await?;
            Ok(Delivered::Done("unknown"))
        }
    }
}

/// A send that succeeded, recorded with the others of its batch by
/// [`record_sent`].
struct Sent {
    row: outbox::Model,
    at: DateTime<Utc>,
    receipt_id: Option<String>,
    receipt: String,
    card_ref: Option<String>,
    leaf: NewLeaf,
    /// When to ask first whether it was read, on a platform that reports reads.
    read_check: Option<std::time::Duration>,
}

/// What one attempt came to.
enum Attempt {
    /// Sent: the receipt waits to be recorded.
    Sent(Box<Sent>),
    /// Anything else, recorded already (a retry later, a give-up).
    Over(Delivered),
}

/// Sends claimed `row` (its attempt is on record) with `payload`, and
/// counts the outcome for `/metrics`.
async fn attempt(
    rt: &Runtime,
    on_give_up: &dyn OnGiveUp,
    tenant: &Tenant,
    row: outbox::Model,
    payload: &Payload,
) -> Result<Attempt, DeliverError> {
    let channel = row.channel.clone();
    let result = try_send(rt, on_give_up, tenant, row, payload).await;
    let outcome = match &result {
        Ok(Attempt::Sent(_)) => "sent",
        Ok(Attempt::Over(Delivered::Done(how))) => how,
        Ok(Attempt::Over(Delivered::RetryAfter(_))) => "retry",
        Err(_) => "error",
    };
    crate::metrics::count_send(&channel, outcome);
    result
}

/// One attempt of [`attempt`]. A success is returned for [`record_sent`];
/// any other outcome is recorded here, each in its own transaction (they
/// are rare).
async fn try_send(
    rt: &Runtime,
    on_give_up: &dyn OnGiveUp,
    tenant: &Tenant,
    row: outbox::Model,
    payload: &Payload,
) -> Result<Attempt, DeliverError> {
    let now = rt.clock.now();
    // The secret goes into the text for this request only.
    let secret = match &row.secret_sealed {
        None => None,
        Some(sealed) => match rt
            .key
            .open(sealed, &secret_context(&row.tenant_id, &row.idem_key))
        {
            Ok(secret) => Some(secret),
            Err(e) => {
                give_up(
                    rt,
                    on_give_up,
                    tenant,
                    &row,
                    OutboxStatus::Failed,
                    &format!("its secret does not open: {e}"),
                )
                .await?;
                return Ok(Attempt::Over(Delivered::Done("failed")));
            }
        },
    };
    let result = match &secret {
        None => send(rt, tenant, &row, payload).await,
        Some(secret) => {
            let revealed = payload.with_secret(secret);
            send(rt, tenant, &row, &revealed)
                .await
                .map(|r| r.withholding(secret))
        }
    };
    let over = match result {
        Ok(receipt) => {
            let at = rt.clock.now();
            let mut leaf = message_leaf(&rt.db.orm, "message_sent", &row)
                .await?
                .occurred_at(at)
                .text(&payload.text())
                .id("receipt", receipt.id.clone().unwrap_or_default())
                .detail(json!({ "recipient": row.recipient, "attempt": row.attempts + 1 }));
            if let Some((media_type, bytes)) = receipt.request {
                leaf = leaf.raw("request", media_type, bytes);
            }
            leaf = leaf.raw("response", receipt.response.0, receipt.response.1);
            // A notice on a platform that reports reads: ask who read it. A
            // card is known by its card reference; DingTalk's read query
            // takes only a robot message's key.
            let api = tenant.chat.as_deref();
            let read_check = if receipt.card_ref.is_none() && reads::wanted(&row, api) {
                api.and_then(|a| a.read_window())
                    .and_then(|w| reads::offset(rt.delivery.read_check_unit_secs, 0, w))
            } else {
                None
            };
            return Ok(Attempt::Sent(Box::new(Sent {
                row,
                at,
                receipt_id: receipt.id,
                receipt: receipt.raw,
                card_ref: receipt.card_ref,
                leaf,
                read_check,
            })));
        }
        // Sent, maybe: an SMS is never sent twice (no gateway guards
        // against a double), so it is asked about or left to HR.
        Err(e) if payload.channel() == Channel::Sms && sms::outcome_unknown(&e) => {
            mark_unknown(rt, on_give_up, tenant, &row, &e.to_string()).await?;
            Delivered::Done("unknown")
        }
        Err(PlatformError::Retryable(reason) | PlatformError::OutcomeUnknown(reason)) => {
            let retry_for = Duration::seconds(
                i64::try_from(rt.delivery.retry_for_secs).unwrap_or(i64::MAX / 2),
            );
            if now - row.created_at > retry_for {
                give_up(rt, on_give_up, tenant, &row, OutboxStatus::Failed, &reason).await?;
                return Ok(Attempt::Over(Delivered::Done("failed")));
            }
            let wait = backoff(row.attempts, rt.delivery.max_backoff_secs);
            retry_later(rt, &row, &reason, wait).await?;
            Delivered::RetryAfter(wait)
        }
        Err(PlatformError::RateLimited { after_secs, reason }) => {
            // The platform's wait, within our cap.
            let wait =
                std::time::Duration::from_secs(Ord::min(after_secs, rt.delivery.max_backoff_secs));
            retry_later(rt, &row, &reason, wait).await?;
            Delivered::RetryAfter(wait)
        }
        Err(PlatformError::Undeliverable { reason, .. }) => {
            let status = OutboxStatus::Undeliverable;
            give_up(rt, on_give_up, tenant, &row, status, &reason).await?;
            Delivered::Done("undeliverable")
        }
        Err(PlatformError::Permanent(reason)) => {
            give_up(rt, on_give_up, tenant, &row, OutboxStatus::Failed, &reason).await?;
            Delivered::Done("failed")
        }
    };
    Ok(Attempt::Over(over))
}

/// Records the receipts of `sent` (rows marked sent, their leaves appended,
/// read checks enqueued) in one transaction: a batch's sends cost one
/// commit. If it fails, the rows stay `sending` and are sent again once
/// their attempt counts as cut off, as after a crash.
async fn record_sent(rt: &Runtime, sent: Vec<Sent>) -> Result<(), DbErr> {
    if sent.is_empty() {
        return Ok(());
    }
    let now = rt.clock.now();
    let mut leaves: std::collections::BTreeMap<String, Vec<NewLeaf>> = Default::default();
    let txn = rt.db.write().await?;
    for s in sent {
        outbox::ActiveModel {
            id: Set(s.row.id),
            status: Set(OutboxStatus::Sent.as_str().to_owned()),
            sent_at: Set(Some(s.at)),
            receipt_id: Set(s.receipt_id),
            receipt: Set(Some(s.receipt)),
            card_ref: Set(s.card_ref),
            error: Set(None),
            secret_sealed: Set(None),
            ..Default::default()
        }
        .update(&txn)
        .await?;
        if let Some(first) = s.read_check {
            crate::jobs::enqueue_read_check(&txn, s.row.id, 0, first).await?;
        }
        leaves.entry(s.row.tenant_id).or_default().push(s.leaf);
    }
    // Tenants in one order, so that two batches take their logs' heads alike.
    for (tenant, leaves) in leaves {
        crate::evidence::log::append(&txn, &tenant, now, leaves).await?;
    }
    txn.commit().await
}

/// An SMS request of `row` timed out after it may have reached the gateway:
/// the row is `unknown`, never resent by itself. A gateway that cannot be
/// asked leaves it to HR now; Aliyun is asked by `reports::poll_due`.
async fn mark_unknown(
    rt: &Runtime,
    on_give_up: &dyn OnGiveUp,
    tenant: &Tenant,
    row: &outbox::Model,
    reason: &str,
) -> Result<(), DeliverError> {
    let now = rt.clock.now();
    let asked = tenant.sms.as_ref().is_some_and(|s| s.reports_by_query());
    let leaf = message_leaf(&rt.db.orm, "message_outcome_unknown", row)
        .await?
        .occurred_at(now)
        .detail(json!({
            "recipient": row.recipient,
            "attempt": row.attempts + 1,
            "reason": reason,
            "asked_later": asked,
        }));
    let txn = rt.db.write().await?;
    let mut update = outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(OutboxStatus::Unknown.as_str()),
        )
        .col_expr(
            outbox::Column::DeliveryStatus,
            Expr::value(sms::DeliveryStatus::Unknown.as_str()),
        )
        .col_expr(outbox::Column::Error, Expr::value(reason.to_owned()))
        .filter(outbox::Column::Id.eq(row.id));
    if !asked {
        // Nothing to ask: the looking is over.
        update = update.col_expr(outbox::Column::ReportCheckedAt, Expr::value(now));
    }
    update.exec(&txn).await?;
    append_one(&txn, &row.tenant_id, now, leaf).await?;
    if !asked {
        on_give_up
            .outcome_unknown(rt, &txn, tenant, row, false)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Exponential: 2, 4, 8 … seconds, at most `max_secs`.
fn backoff(attempts_before: i32, max_secs: u64) -> std::time::Duration {
    let exp = u32::try_from(attempts_before.clamp(0, 16)).unwrap_or(16) + 1;
    std::time::Duration::from_secs(Ord::min(2u64.saturating_pow(exp), max_secs))
}

/// The system time `wait` from now: when a row put off for `wait` is due
/// (the queue's time is the system's, see `queue`).
fn due_after(wait: std::time::Duration) -> DateTime<Utc> {
    Utc::now() + Duration::from_std(wait).unwrap_or(Duration::days(1))
}

/// How long an attempt may be in flight before it counts as cut off (its
/// process died): well past the request timeout.
fn cut_off_after(rt: &Runtime) -> Duration {
    Duration::seconds(i64::try_from(rt.delivery.timeout_secs).unwrap_or(10) * 3 + 5)
}

/// A provider's answer to a successful send.
struct SendReceipt {
    id: Option<String>,
    raw: String,
    /// For cards: what updating it later takes.
    card_ref: Option<String>,
    /// For the evidence log: the request as sent and the answer as
    /// received, each with its media type.
    request: Option<(&'static str, Vec<u8>)>,
    response: (&'static str, Vec<u8>),
}

impl SendReceipt {
    /// The receipt as stored: `secret` withheld from the request, the
    /// answer and the raw receipt.
    fn withholding(mut self, secret: &str) -> SendReceipt {
        self.raw = String::from_utf8_lossy(&withhold(self.raw.as_bytes(), secret)).into_owned();
        if let Some((_, bytes)) = &mut self.request {
            *bytes = withhold(bytes, secret);
        }
        self.response.1 = withhold(&self.response.1, secret);
        self
    }
}

async fn send(
    rt: &Runtime,
    tenant: &Tenant,
    row: &outbox::Model,
    payload: &Payload,
) -> Result<SendReceipt, PlatformError> {
    match payload {
        Payload::Text { content } => {
            let message = OutboundMessage::Text {
                content: content.clone(),
            };
            chat(tenant, row, &message).await
        }
        Payload::Card { .. } => {
            let message = payload
                .card()
                .map(OutboundMessage::Card)
                .ok_or_else(|| PlatformError::Permanent("not a card".into()))?;
            chat(tenant, row, &message).await
        }
        Payload::CardUpdate {
            card_ref,
            label,
            card,
        } => {
            let api = chat_api(tenant)?;
            let receipt = api
                .update_card_of(&row.recipient, card_ref, label, card.as_ref())
                .await?;
            Ok(SendReceipt::of_chat(receipt))
        }
        Payload::Sms { text, params } => {
            let Some(sms) = &tenant.sms else {
                return Err(PlatformError::Permanent(
                    "no SMS gateway is configured ([tenants.sms])".into(),
                ));
            };
            // The number is unsealed only now, for this request.
            let phone = crate::employees::directory::phone_of(
                rt,
                &rt.db.orm,
                &row.tenant_id,
                &row.recipient,
            )
            .await
            .map_err(|e| PlatformError::Retryable(format!("reading the directory: {e}")))?;
            let Some(phone) = phone else {
                return Err(PlatformError::Undeliverable {
                    user: row.recipient.clone(),
                    reason: "no phone number on file".into(),
                });
            };
            let masked = sms::mask_phone(&phone);
            let receipt = sms
                .send(&sms::SmsMessage {
                    phone: phone.clone(),
                    text: text.clone(),
                    template_param: params.clone(),
                    out_id: format!("{}:{}", row.tenant_id, row.idem_key),
                })
                .await?;
            // The number stays sealed at rest: the stored request has it masked.
            let request = receipt.request.replace(&phone, &masked);
            let response = receipt.response.replace(&phone, &masked);
            Ok(SendReceipt {
                id: Some(receipt.provider_id),
                raw: json!({ "provider": sms.name(), "request": request, "response": response })
                    .to_string(),
                card_ref: None,
                request: Some(("text/plain; charset=utf-8", request.into_bytes())),
                response: ("text/plain; charset=utf-8", response.into_bytes()),
            })
        }
        Payload::Email { to, subject, text } => {
            let Some(mail) = &tenant.mail else {
                return Err(PlatformError::Permanent(
                    "no mail server is configured ([tenants.email])".into(),
                ));
            };
            let receipt = mail
                .send(&email::EmailMessage {
                    to: to.clone(),
                    subject: subject.clone(),
                    text: text.clone(),
                    out_id: format!("{}:{}", row.tenant_id, row.idem_key),
                })
                .await?;
            Ok(SendReceipt {
                id: Some(receipt.message_id),
                raw: json!({ "server_reply": receipt.server_reply, "message": String::from_utf8_lossy(&receipt.message) }).to_string(),
                card_ref: None,
                response: ("text/plain; charset=utf-8", receipt.server_reply.into_bytes()),
                request: Some(("message/rfc822", receipt.message)),
            })
        }
    }
}

/// The card that outbox row `id` sent, as it was sent.
pub async fn card_as_sent(
    db: &impl sea_orm::ConnectionTrait,
    id: i64,
) -> Result<Option<Card>, DbErr> {
    let row = outbox::Entity::find_by_id(id).one(db).await?;
    Ok(row
        .and_then(|r| serde_json::from_str::<Payload>(&r.payload).ok())
        .and_then(|p| p.card()))
}

fn chat_api(tenant: &Tenant) -> Result<&dyn crate::platform::ChatApi, PlatformError> {
    tenant.chat.as_deref().ok_or_else(|| {
        PlatformError::Permanent("the tenant has no chat platform configured".into())
    })
}

async fn chat(
    tenant: &Tenant,
    row: &outbox::Model,
    message: &OutboundMessage,
) -> Result<SendReceipt, PlatformError> {
    // A notice's text is unique by design, so a platform's duplicate check
    // may guard it against a resend after a crash; answers to commands may
    // rightly repeat a text ("not allowed"), which such a check would drop.
    // The row's key names this one message across resends.
    let key = format!("{}:{}", row.tenant_id, row.idem_key);
    let receipt = chat_api(tenant)?
        .send_keyed(&row.recipient, message, row.step.is_some(), &key)
        .await?;
    Ok(SendReceipt::of_chat(receipt))
}

impl SendReceipt {
    fn of_chat(receipt: crate::platform::Receipt) -> SendReceipt {
        SendReceipt {
            id: receipt.message_id,
            raw: String::from_utf8_lossy(&receipt.response.bytes).into_owned(),
            card_ref: receipt.card_ref,
            request: receipt.request.map(|r| (r.media_type, r.bytes)),
            response: (receipt.response.media_type, receipt.response.bytes),
        }
    }
}

/// Records a failed attempt that will be retried after `wait` (the queue
/// takes the row again then).
async fn retry_later(
    rt: &Runtime,
    row: &outbox::Model,
    reason: &str,
    wait: std::time::Duration,
) -> Result<(), DbErr> {
    let txn = rt.db.write().await?;
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(OutboxStatus::Pending.as_str()),
        )
        .col_expr(outbox::Column::NotBefore, Expr::value(due_after(wait)))
        .col_expr(outbox::Column::Error, Expr::value(reason.to_owned()))
        .filter(outbox::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    attempt_leaf(rt, &txn, row, "message_attempt_failed", reason.into()).await?;
    txn.commit().await?;
    Ok(())
}

/// The evidence leaf of an attempt that did not deliver.
async fn attempt_leaf<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    row: &outbox::Model,
    kind: &str,
    why: Why<'_>,
) -> Result<(), DbErr> {
    let now = rt.clock.now();
    let mut leaf = message_leaf(conn, kind, row)
        .await?
        .occurred_at(now)
        .detail(
            json!({ "recipient": row.recipient, "attempt": row.attempts + 1, "reason": why.reason }),
        );
    if let Some(response) = why.response {
        leaf = leaf.raw("response", response.media_type, response.bytes.clone());
    }
    append_one(conn, &row.tenant_id, now, leaf).await?;
    Ok(())
}

/// Why an attempt failed or a row was given up: the reason, and the
/// platform's answer that says so when there is one (kept as evidence).
#[derive(Clone, Copy)]
struct Why<'a> {
    reason: &'a str,
    response: Option<&'a crate::platform::Exchange>,
}

impl<'a> From<&'a str> for Why<'a> {
    fn from(reason: &'a str) -> Why<'a> {
        Why {
            reason,
            response: None,
        }
    }
}

/// Marks `row` final without sending it (cancelled, or failed before any
/// attempt).
async fn finish(
    rt: &Runtime,
    row: &outbox::Model,
    status: OutboxStatus,
    error: Option<&str>,
) -> Result<(), DbErr> {
    let txn = rt.db.write().await?;
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(status.as_str().to_owned()),
        )
        .col_expr(outbox::Column::Error, Expr::value(error.map(str::to_owned)))
        .filter(outbox::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    attempt_leaf(
        rt,
        &txn,
        row,
        &format!("message_{status}"),
        error.unwrap_or_default().into(),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Asks whether outbox row `id` was read (check `round`, see
/// [`reads::check`]); a message the platform says never reached its
/// recipient is given up as undeliverable, once, and `on_give_up` tells HR,
/// as when a send is refused.
pub async fn check_read(
    rt: &Runtime,
    id: i64,
    round: u32,
    on_give_up: &dyn OnGiveUp,
) -> Result<reads::Checked, DeliverError> {
    let checked = reads::check(rt, id, round, on_give_up).await?;
    let reads::Checked::NeverDelivered { reason, response } = &checked else {
        return Ok(checked);
    };
    let Some(row) = outbox::Entity::find_by_id(id).one(&rt.db.orm).await? else {
        return Ok(reads::Checked::Done("missing"));
    };
    let Some(tenant) = rt.tenant(&row.tenant_id).cloned() else {
        return Ok(reads::Checked::Done("no such tenant"));
    };
    let txn = rt.db.write().await?;
    if reads::end_once(&txn, id, None, rt.clock.now()).await? {
        let status = OutboxStatus::Undeliverable;
        let why = Why {
            reason,
            response: Some(response),
        };
        give_up_in(rt, &txn, on_give_up, &tenant, &row, status, why).await?;
    }
    txn.commit().await?;
    Ok(reads::Checked::Done("undeliverable"))
}

/// Marks the row final and tells HR that a recipient could not be reached
/// (unless the message was itself for HR about such a failure).
async fn give_up(
    rt: &Runtime,
    on_give_up: &dyn OnGiveUp,
    tenant: &Tenant,
    row: &outbox::Model,
    status: OutboxStatus,
    reason: &str,
) -> Result<(), DeliverError> {
    let txn = rt.db.write().await?;
    give_up_in(rt, &txn, on_give_up, tenant, row, status, reason.into()).await?;
    txn.commit().await?;
    Ok(())
}

/// [`give_up`] inside `txn`.
async fn give_up_in(
    rt: &Runtime,
    txn: &DatabaseTransaction,
    on_give_up: &dyn OnGiveUp,
    tenant: &Tenant,
    row: &outbox::Model,
    status: OutboxStatus,
    why: Why<'_>,
) -> Result<(), DeliverError> {
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(status.as_str().to_owned()),
        )
        .col_expr(outbox::Column::Error, Expr::value(why.reason.to_owned()))
        .filter(outbox::Column::Id.eq(row.id))
        .exec(txn)
        .await?;
    attempt_leaf(rt, txn, row, &format!("message_{status}"), why).await?;
    if !row.idem_key.starts_with("undeliverable:") {
        on_give_up
            .given_up(rt, txn, tenant, row, why.reason)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_withheld_wherever_it_occurs() {
        let mark = SECRET_MARK;
        assert_eq!(withhold(b"abc", "b"), format!("a{mark}c").into_bytes());
        assert_eq!(
            withhold(b"tok tok", "tok"),
            format!("{mark} {mark}").into_bytes()
        );
        assert_eq!(withhold(b"nothing", "tok"), b"nothing".to_vec());
        assert_eq!(withhold(b"", "tok"), b"".to_vec());
        let text = Payload::Text {
            content: format!("/export/{mark}"),
        };
        assert_eq!(
            text.with_secret("ab12"),
            Payload::Text {
                content: "/export/ab12".into()
            }
        );
    }
}
