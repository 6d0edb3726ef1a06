//! Read status as evidence: on a platform that says who read a message
//! (DingTalk's `readStatus`; WeCom reports no reads for app messages), a
//! notice of a case that was sent by chat is asked about on a schedule —
//! 1, 5, 15, 30, 60, 120, 240, 480, 960 and 1430 units after sending
//! (`delivery.read_check_unit_secs`, a minute by default), within the
//! platform's window — until its recipient has read it.
//!
//! A read becomes a `message_read` leaf (who, when, the platform's answer
//! verbatim) and the row's `read_at`; a notice still unread when the
//! schedule ends gets one `message_not_read` leaf with the last answer, so
//! the log says that the platform was asked and what it said. An answer
//! that cannot come (the platform refuses the query for this message) ends
//! the schedule with a `read_status_unavailable` leaf and its reason.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use entity::outbox;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::evidence::{append_later, append_one};
use crate::platform::{ChatApi, Exchange, PlatformError};
use crate::runtime::Runtime;

/// What the caller does when a row was just recorded read, in the same
/// transaction (a read formal notice starts its deadline: the cases' part).
pub trait OnRead: Sync {
    fn was_read<'a>(
        &'a self,
        txn: &'a sea_orm::DatabaseTransaction,
        row: &'a outbox::Model,
        now: DateTime<Utc>,
    ) -> futures::future::BoxFuture<'a, Result<(), sea_orm::DbErr>>;
}

/// When the checks happen, in units after sending.
const SCHEDULE: [u64; 10] = [1, 5, 15, 30, 60, 120, 240, 480, 960, 1430];

/// The delay of check `round` after sending, if that round falls within
/// `window`.
pub fn offset(unit_secs: u64, round: u32, window: Duration) -> Option<Duration> {
    let units = *SCHEDULE.get(usize::try_from(round).ok()?)?;
    let at = Duration::from_secs(units.saturating_mul(unit_secs));
    (at <= window).then_some(at)
}

/// Whether a sent row is a notice whose reads `api` reports (what the
/// schedule is for).
pub fn wanted(row: &outbox::Model, api: Option<&dyn ChatApi>) -> bool {
    row.channel == "chat" && row.case_id.is_some() && api.and_then(|a| a.read_window()).is_some()
}

/// What a check left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Ask again after this long (round `next`).
    Again { next: u32, after: Duration },
    /// Read, unread at the end, or not to be asked: done.
    Done(&'static str),
    /// The platform says the message, which it had accepted, never
    /// reached its recipient (why, and its answer); nothing is recorded yet.
    NeverDelivered { reason: String, response: Exchange },
}

/// Marks the asking about row `id` ended (with `read_at` when read), once:
/// `false` if another run of the same check got there first (a job runs at
/// least once), and then nothing more is recorded.
pub(super) async fn end_once(
    txn: &sea_orm::DatabaseTransaction,
    id: i64,
    read_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    let mut update = outbox::Entity::update_many()
        .col_expr(outbox::Column::ReadCheckedAt, Expr::value(now))
        .filter(outbox::Column::Id.eq(id))
        .filter(outbox::Column::ReadAt.is_null())
        .filter(outbox::Column::ReadCheckedAt.is_null());
    if let Some(at) = read_at {
        update = update.col_expr(outbox::Column::ReadAt, Expr::value(at));
    }
    Ok(update.exec(txn).await?.rows_affected == 1)
}

/// Appends `leaf` about row `id` and ends the asking, in one transaction,
/// unless it had ended already.
async fn record_end(
    rt: &Runtime,
    row: &outbox::Model,
    read_at: Option<DateTime<Utc>>,
    leaf: crate::evidence::NewLeaf,
    hook: &dyn OnRead,
) -> Result<(), sea_orm::DbErr> {
    let now = rt.clock.now();
    let txn = rt.db.write().await?;
    if end_once(&txn, row.id, read_at, now).await? {
        append_one(&txn, &row.tenant_id, now, leaf).await?;
        if read_at.is_some() {
            hook.was_read(&txn, row, now).await?;
        }
    }
    txn.commit().await
}

/// Asks the platform whether outbox row `id` was read (check `round`). A
/// platform may say only now that a notice it accepted never reached its
/// recipient (a DingTalk work notice dropped as a duplicate of the day or
/// over a quota): that is [`Checked::NeverDelivered`], for the caller to
/// give the row up (`outbox::check_read`).
pub async fn check(
    rt: &Runtime,
    id: i64,
    round: u32,
    hook: &dyn OnRead,
) -> Result<Checked, sea_orm::DbErr> {
    let db = &rt.db.orm;
    let Some(row) = outbox::Entity::find_by_id(id).one(db).await? else {
        return Ok(Checked::Done("missing"));
    };
    if row.read_at.is_some() || row.read_checked_at.is_some() {
        return Ok(Checked::Done("asked already"));
    }
    let (Some(message_id), Some(tenant)) = (row.receipt_id.clone(), rt.tenant(&row.tenant_id))
    else {
        return Ok(Checked::Done("nothing to ask"));
    };
    let Some(api) = tenant.chat.as_deref() else {
        return Ok(Checked::Done("no chat platform"));
    };
    let Some(window) = api.read_window() else {
        return Ok(Checked::Done("platform reports no reads"));
    };
    let unit = rt.delivery.read_check_unit_secs;
    let next = offset(unit, round + 1, window).map(|at| {
        let this = offset(unit, round, window).unwrap_or_default();
        Checked::Again {
            next: round + 1,
            after: at.saturating_sub(this),
        }
    });
    let leaf = |kind: &str| {
        let kind = kind.to_owned();
        let message_id = message_id.clone();
        let row = row.clone();
        async move {
            Ok::<_, sea_orm::DbErr>(
                super::leaf::message_leaf(db, &kind, &row)
                    .await?
                    .occurred_at(rt.clock.now())
                    .id("receipt", message_id),
            )
        }
    };
    let status = match api.read_status(&message_id).await {
        Ok(status) => status,
        Err(PlatformError::Retryable(reason) | PlatformError::RateLimited { reason, .. }) => {
            tracing::debug!(id, round, %reason, "read status not available now");
            if let Some(next) = next {
                return Ok(next);
            }
            // The last round, unanswered: the log says so, with why.
            let leaf = leaf("message_not_read").await?.detail(json!({
                "recipient": row.recipient,
                "rounds": round + 1,
                "reason": reason,
            }));
            record_end(rt, &row, None, leaf, hook).await?;
            return Ok(Checked::Done("unanswered"));
        }
        Err(e) => {
            let leaf = leaf("read_status_unavailable").await?.detail(json!({
                "recipient": row.recipient,
                "round": round,
                "reason": e.to_string(),
            }));
            record_end(rt, &row, None, leaf, hook).await?;
            return Ok(Checked::Done("unavailable"));
        }
    };
    if let Some((_, reason)) = status
        .undelivered
        .iter()
        .find(|(user, _)| *user == row.recipient)
    {
        return Ok(Checked::NeverDelivered {
            reason: reason.clone(),
            response: status.response,
        });
    }
    let reader = status
        .receipts
        .iter()
        .find(|r| r.user_id == row.recipient && r.read);
    let Some(reader) = reader else {
        if let Some(next) = next {
            return Ok(next);
        }
        let leaf = leaf("message_not_read")
            .await?
            .detail(json!({ "recipient": row.recipient, "rounds": round + 1 }))
            .raw(
                "response",
                status.response.media_type,
                status.response.bytes,
            );
        record_end(rt, &row, None, leaf, hook).await?;
        return Ok(Checked::Done("unread"));
    };
    // The platform's time of the read when it gives one, else when we asked.
    let read_at = reader
        .read_at
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_else(|| rt.clock.now());
    let leaf = leaf("message_read")
        .await?
        .occurred_at(read_at)
        .detail(json!({
            "recipient": row.recipient,
            "read_at_reported": reader.read_at.is_some(),
            "round": round,
        }))
        .raw(
            "response",
            status.response.media_type,
            status.response.bytes,
        );
    record_end(rt, &row, Some(read_at), leaf, hook).await?;
    Ok(Checked::Done("read"))
}

/// A read the platform pushed (an [`InboundKind::Read`](crate::platform::InboundKind::Read)
/// event, stored as inbound event `event_id`, whose `callback` leaf holds
/// it as received): each chat row of `tenant` to `reader` among
/// `message_ids` whose read was not recorded yet gets its `message_read`
/// leaf naming that event, in `txn`, also when the asking about it ended
/// unread before (then the log holds both: not read while asked, read
/// later). Rows that are no notice are recorded too (a read reply is
/// evidence as well). Returns how many rows were marked read.
pub async fn pushed(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &str,
    reader: &str,
    message_ids: &[String],
    read_at: Option<DateTime<Utc>>,
    event_id: i64,
    now: DateTime<Utc>,
) -> Result<usize, sea_orm::DbErr> {
    let rows = outbox::Entity::find()
        .filter(outbox::Column::TenantId.eq(tenant))
        .filter(outbox::Column::Recipient.eq(reader))
        .filter(outbox::Column::Channel.eq("chat"))
        .filter(outbox::Column::ReceiptId.is_in(message_ids.iter().cloned()))
        .all(txn)
        .await?;
    let at = read_at.unwrap_or(now);
    let mut marked = 0;
    for row in rows {
        // Also after the asking ended unread (a read on day 2 of Feishu's
        // 7 is still a read): only a read already recorded stops it.
        let first = outbox::Entity::update_many()
            .col_expr(outbox::Column::ReadAt, Expr::value(at))
            .col_expr(
                outbox::Column::ReadCheckedAt,
                Expr::value(row.read_checked_at.unwrap_or(now)),
            )
            .filter(outbox::Column::Id.eq(row.id))
            .filter(outbox::Column::ReadAt.is_null())
            .exec(txn)
            .await?
            .rows_affected
            == 1;
        if !first {
            continue;
        }
        let leaf = super::leaf::message_leaf(txn, "message_read", &row)
            .await?
            .occurred_at(at)
            .id("receipt", row.receipt_id.clone().unwrap_or_default())
            .detail(json!({
                "recipient": row.recipient,
                "read_at_reported": read_at.is_some(),
                "pushed_by": format!("inbound_events/{event_id}"),
            }));
        append_later(txn, tenant, now, leaf).await?;
        marked += 1;
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[rstest::rstest]
    #[case(60, 0, DAY, Some(60))]
    #[case(60, 4, DAY, Some(3600))]
    #[case(60, 9, DAY, Some(1430 * 60))]
    #[case(60, 10, DAY, None)]
    #[case(120, 9, DAY, None)]
    #[case(1, 9, DAY, Some(1430))]
    #[case(60, 0, Duration::from_secs(59), None)]
    fn the_schedule_stays_within_the_window(
        #[case] unit: u64,
        #[case] round: u32,
        #[case] window: Duration,
        #[case] secs: Option<u64>,
    ) {
        assert_eq!(offset(unit, round, window), secs.map(Duration::from_secs));
    }
}
