//! Outbound messages: every message is first an outbox row with a unique
//! idempotency key (`notice:{case}:{step}:{recipient}:{channel}` for notices,
//! `reply:{inbound event}` for answers), written in the same transaction as
//! the decision that caused it, with its `deliver` job. The job sends the row
//! once and stores the receipt: jobs run at least once, notices go out once.

pub mod email;
mod leaf;
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
    EntityTrait, QueryFilter, TransactionTrait, TryInsertResult,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cases::Channel;
use crate::db::Engine;
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

/// Puts `message` in the outbox with its job, inside the caller's
/// transaction. Returns the new row's id, or `None` if a row with this key
/// already exists (then nothing is written).
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    engine: Engine,
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
        not_before: Set(now),
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
    append_one(
        txn,
        &message.tenant_id,
        now,
        leaf.subject(Some(&subject)).source("outbox", id),
    )
    .await?;
    crate::jobs::enqueue_deliver(txn, engine, id, 0, std::time::Duration::ZERO).await?;
    Ok(Some(id))
}

/// What became of one delivery attempt.
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
/// (`cases::notify::TellHr`). The worker passes it to [`deliver`], so that
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

/// Sends outbox row `id`, once. Safe to call again for the same row.
pub async fn deliver(
    rt: &Runtime,
    id: i64,
    on_give_up: &dyn OnGiveUp,
) -> Result<Delivered, DeliverError> {
    let db = &rt.db.orm;
    let Some(row) = outbox::Entity::find_by_id(id).one(db).await? else {
        return Ok(Delivered::Done("missing"));
    };
    if !matches!(
        OutboxStatus::of(&row),
        Some(OutboxStatus::Pending | OutboxStatus::Sending)
    ) {
        return Ok(Delivered::Done("already final"));
    }
    let now = rt.clock.now();
    let Some(tenant) = rt.tenant(&row.tenant_id).cloned() else {
        finish(
            rt,
            &row,
            OutboxStatus::Failed,
            Some("tenant no longer configured"),
        )
        .await?;
        return Ok(Delivered::Done("failed"));
    };
    // The fencing token: a notice for a case that was resolved, paused or
    // restarted since it was enqueued is not sent.
    if let (Some(case_id), Some(fence)) = (row.case_id, row.fence) {
        let case = absence_case::Entity::find_by_id(case_id).one(db).await?;
        if case.is_none_or(|c| c.fence != fence) {
            finish(
                rt,
                &row,
                OutboxStatus::Cancelled,
                Some("the case changed before sending"),
            )
            .await?;
            return Ok(Delivered::Done("cancelled"));
        }
    }
    let payload: Payload = match serde_json::from_str(&row.payload) {
        Ok(p) => p,
        Err(e) => {
            finish(
                rt,
                &row,
                OutboxStatus::Failed,
                Some(&format!("unreadable payload: {e}")),
            )
            .await?;
            return Ok(Delivered::Done("failed"));
        }
    };
    // An attempt that was interrupted (the process died between request and
    // receipt): chat is sent again under the platform's own guard (WeCom's
    // duplicate check; on DingTalk the same text reference or card id) and email
    // with the same Message-ID, but an SMS gateway has no such guard, so the
    // SMS is not sent twice: its outcome is unknown, as after a timeout
    // (looked up where the gateway can be asked, else HR is told).
    if OutboxStatus::of(&row) == Some(OutboxStatus::Sending)
        && payload.channel() == Channel::Sms
        && row.claimed_at.is_none_or(|c| c + cut_off_after(rt) <= now)
    {
        mark_unknown(
            rt,
            on_give_up,
            &tenant,
            &row,
            "interrupted between request and receipt; not re-sent to avoid a second SMS",
        )
        .await?;
        return Ok(Delivered::Done("unknown"));
    }
    // The attempt is on record before the request leaves: after a crash the
    // row says it may have been sent, and the platform's own guard (WeCom's
    // duplicate check of the same content within 30 minutes; DingTalk's drop
    // of identical content, and its refusal of a card id used before) is the
    // second. For chat, the claim
    // also checks the member's budget in the same statement, so concurrent
    // deliveries to one member cannot all pass the check.
    if !claim(rt, &row, payload.channel() == Channel::Chat, now).await? {
        // Another job holds a live attempt: look again once it would be cut off.
        if OutboxStatus::of(&row) == Some(OutboxStatus::Sending)
            && let Some(claimed) = row.claimed_at
            && claimed + cut_off_after(rt) > now
        {
            let wait = (claimed + cut_off_after(rt) - now)
                .to_std()
                .unwrap_or_default();
            return Ok(Delivered::RetryAfter(
                wait + std::time::Duration::from_millis(100),
            ));
        }
        // Over the member's budget, or the case moved on (the next run
        // cancels it), or final already (the next run sees it).
        let wait = member_budget(rt, &row, now)
            .await?
            .unwrap_or(std::time::Duration::from_millis(100));
        return Ok(Delivered::RetryAfter(wait));
    }
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
                    &tenant,
                    &row,
                    OutboxStatus::Failed,
                    &format!("its secret does not open: {e}"),
                )
                .await?;
                return Ok(Delivered::Done("failed"));
            }
        },
    };
    let result = match &secret {
        None => send(rt, &tenant, &row, &payload).await,
        Some(secret) => {
            let revealed = payload.with_secret(secret);
            send(rt, &tenant, &row, &revealed)
                .await
                .map(|r| r.withholding(secret))
        }
    };
    match result {
        Ok(receipt) => {
            let at = rt.clock.now();
            // Read before the transaction: on SQLite a transaction that
            // reads first cannot always upgrade to writing.
            let mut leaf = message_leaf(db, "message_sent", &row)
                .await?
                .occurred_at(at)
                .text(&payload.text())
                .id("receipt", receipt.id.clone().unwrap_or_default())
                .detail(json!({ "recipient": row.recipient, "attempt": row.attempts + 1 }));
            if let Some((media_type, bytes)) = receipt.request {
                leaf = leaf.raw("request", media_type, bytes);
            }
            leaf = leaf.raw("response", receipt.response.0, receipt.response.1);
            // A card is known by its card reference; DingTalk's read query
            // takes only a robot message's key.
            let is_card = receipt.card_ref.is_some();
            let txn = db.begin().await?;
            let sent = outbox::ActiveModel {
                id: Set(row.id),
                status: Set(OutboxStatus::Sent.as_str().to_owned()),
                sent_at: Set(Some(at)),
                receipt_id: Set(receipt.id),
                receipt: Set(Some(receipt.raw)),
                card_ref: Set(receipt.card_ref),
                error: Set(None),
                secret_sealed: Set(None),
                ..Default::default()
            };
            sent.update(&txn).await?;
            append_one(&txn, &row.tenant_id, at, leaf).await?;
            // A notice on a platform that reports reads: ask who read it.
            let api = tenant.chat.as_deref();
            if !is_card
                && reads::wanted(&row, api)
                && let Some(first) = api
                    .and_then(|a| a.read_window())
                    .and_then(|w| reads::offset(rt.delivery.read_check_unit_secs, 0, w))
            {
                crate::jobs::enqueue_read_check(&txn, rt.db.engine, row.id, 0, first).await?;
            }
            txn.commit().await?;
            Ok(Delivered::Done("sent"))
        }
        // Sent, maybe: an SMS is never sent twice (no gateway guards
        // against a double), so it is asked about or left to HR.
        Err(e) if payload.channel() == Channel::Sms && sms::outcome_unknown(&e) => {
            mark_unknown(rt, on_give_up, &tenant, &row, &e.to_string()).await?;
            Ok(Delivered::Done("unknown"))
        }
        Err(PlatformError::Retryable(reason) | PlatformError::OutcomeUnknown(reason)) => {
            let retry_for = Duration::seconds(
                i64::try_from(rt.delivery.retry_for_secs).unwrap_or(i64::MAX / 2),
            );
            if now - row.created_at > retry_for {
                give_up(rt, on_give_up, &tenant, &row, OutboxStatus::Failed, &reason).await?;
                return Ok(Delivered::Done("failed"));
            }
            let wait = backoff(row.attempts, rt.delivery.max_backoff_secs);
            retry_later(rt, &row, &reason).await?;
            Ok(Delivered::RetryAfter(wait))
        }
        Err(PlatformError::RateLimited { after_secs, reason }) => {
            retry_later(rt, &row, &reason).await?;
            // The platform's wait, within our cap.
            Ok(Delivered::RetryAfter(std::time::Duration::from_secs(
                Ord::min(after_secs, rt.delivery.max_backoff_secs),
            )))
        }
        Err(PlatformError::Undeliverable { reason, .. }) => {
            give_up(
                rt,
                on_give_up,
                &tenant,
                &row,
                OutboxStatus::Undeliverable,
                &reason,
            )
            .await?;
            Ok(Delivered::Done("undeliverable"))
        }
        Err(PlatformError::Permanent(reason)) => {
            give_up(rt, on_give_up, &tenant, &row, OutboxStatus::Failed, &reason).await?;
            Ok(Delivered::Done("failed"))
        }
    }
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
    let txn = rt.db.orm.begin().await?;
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

/// If `row`'s recipient already got the most messages allowed in the
/// window (WeCom: 30 a minute), how long to wait.
async fn member_budget(
    rt: &Runtime,
    row: &outbox::Model,
    now: DateTime<Utc>,
) -> Result<Option<std::time::Duration>, DbErr> {
    let window = Duration::seconds(i64::try_from(rt.delivery.member_window_secs).unwrap_or(60));
    let recent: Vec<Option<DateTime<Utc>>> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::SentAt)
        .filter(outbox::Column::TenantId.eq(&row.tenant_id))
        .filter(outbox::Column::Recipient.eq(&row.recipient))
        .filter(outbox::Column::Channel.eq("chat"))
        .filter(outbox::Column::Id.ne(row.id))
        .filter(
            sea_orm::Condition::any()
                .add(outbox::Column::SentAt.gt(now - window))
                .add(outbox::Column::Status.eq(OutboxStatus::Sending.as_str())),
        )
        .into_tuple()
        .all(&rt.db.orm)
        .await?;
    if (recent.len() as u64) < rt.delivery.member_limit {
        return Ok(None);
    }
    let oldest = recent.iter().flatten().min().copied().unwrap_or(now);
    let wait = (oldest + window + Duration::milliseconds(100) - now)
        .to_std()
        .unwrap_or(std::time::Duration::from_millis(100));
    Ok(Some(Ord::min(
        wait,
        std::time::Duration::from_secs(rt.delivery.max_backoff_secs),
    )))
}

use sea_orm::QuerySelect;

/// Marks `row` as being sent (and counts the attempt), if it is pending, or
/// `sending` with a claim so old that its attempt was cut off; if its case
/// still has the row's fencing token; and, for chat, if its recipient is
/// under the per-member limit. One statement, so two jobs for one row, or
/// deliveries to one member, cannot both pass. Returns whether this call
/// claimed it.
async fn claim(
    rt: &Runtime,
    row: &outbox::Model,
    chat: bool,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait, Value};
    let window_start =
        now - Duration::seconds(i64::try_from(rt.delivery.member_window_secs).unwrap_or(60));
    let stale = now - cut_off_after(rt);
    let limit = i64::try_from(rt.delivery.member_limit).unwrap_or(30);
    let values: Vec<Value> = vec![
        row.id.into(),
        row.tenant_id.clone().into(),
        row.recipient.clone().into(),
        window_start.into(),
        limit.into(),
        chat.into(),
        now.into(),
        stale.into(),
    ];
    let sql = "UPDATE outbox SET status = 'sending', attempts = attempts + 1, claimed_at = {now} \
         WHERE id = {id} AND (status = 'pending' OR (status = 'sending' AND (claimed_at IS NULL OR claimed_at < {stale}))) \
         AND (fence IS NULL OR fence = (SELECT c.fence FROM absence_cases c WHERE c.id = outbox.case_id)) \
         AND (NOT {chat} OR (SELECT count(*) FROM outbox o WHERE o.tenant_id = {tenant} AND o.recipient = {recipient} \
         AND o.channel = 'chat' AND o.id <> {id} AND (o.sent_at > {since} OR o.status = 'sending')) < {limit})";
    let txn = rt.db.orm.begin().await?;
    let placeholder = |n: usize| match rt.db.engine {
        crate::db::Engine::Sqlite => format!("?{n}"),
        crate::db::Engine::Postgres => format!("${n}"),
    };
    let sql = sql
        .replace("{id}", &placeholder(1))
        .replace("{tenant}", &placeholder(2))
        .replace("{recipient}", &placeholder(3))
        .replace("{since}", &placeholder(4))
        .replace("{limit}", &placeholder(5))
        .replace("{chat}", &placeholder(6))
        .replace("{now}", &placeholder(7))
        .replace("{stale}", &placeholder(8));
    if rt.db.engine == crate::db::Engine::Postgres {
        // One claimer per member at a time across instances.
        txn.execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("{}:{}", row.tenant_id, row.recipient).into()],
        ))
        .await?;
    }
    let done = txn
        .execute_raw(Statement::from_sql_and_values(
            rt.db.orm.get_database_backend(),
            sql,
            values,
        ))
        .await?;
    txn.commit().await?;
    Ok(done.rows_affected() == 1)
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

/// Records a failed attempt that will be retried.
async fn retry_later(rt: &Runtime, row: &outbox::Model, reason: &str) -> Result<(), DbErr> {
    let txn = rt.db.orm.begin().await?;
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(OutboxStatus::Pending.as_str()),
        )
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
    let txn = rt.db.orm.begin().await?;
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
    let txn = rt.db.orm.begin().await?;
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
    let txn = rt.db.orm.begin().await?;
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
