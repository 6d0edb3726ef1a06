//! SMS delivery reports as evidence. A gateway that accepted a text may
//! still fail to deliver it, and a request that timed out may or may not
//! have gone out; the reports say which.
//!
//! - Aliyun is asked (`QuerySendDetails`) by [`poll_due`], from the tick:
//!   each notice's SMS (the formal notice, the termination notice) that was
//!   sent and has no final report, at most every [`POLL_EVERY_MINUTES`] and
//!   for [`POLL_FOR_HOURS`] after sending.
//! - A webhook gateway posts its reports (`POST /sms/report/{tenant}`,
//!   [`webhook_report`]).
//!
//! Each report becomes the row's `delivery_status`, `delivered_at` and
//! `delivery_report` and an `sms_delivery_report` leaf on the case, once.
//! `delivered` is a proof of receipt of the formal notice
//! (`cases::store::establish_receipt`, `delivered:sms`); `failed` gives the
//! copy up as undeliverable and HR is told, as when a gateway refuses a
//! number.
//!
//! A text whose request timed out after connecting is `unknown` (status and
//! `delivery_status`), never resent by itself: Aliyun is asked by number,
//! day and our `OutId` for [`UNKNOWN_LOOKUP_MINUTES`] (found: it was sent);
//! then, or at once for a webhook gateway, which cannot be asked, HR is told.

use chrono::{DateTime, Duration, Utc};
use entity::outbox;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use super::leaf::message_leaf;
use super::sms::{DeliveryStatus, SmsLookup, SmsReport, mask_phone};
use super::{DeliverError, OnGiveUp, OutboxStatus, Why, give_up_in};
use crate::evidence::append_one;
use crate::runtime::{Runtime, Tenant};

/// A row is asked about at most this often.
pub const POLL_EVERY_MINUTES: i64 = 5;
/// … and for this long after it was sent (Aliyun keeps 30 days; carriers
/// report within hours or not at all).
pub const POLL_FOR_HOURS: i64 = 72;
/// How long an unknown text is looked for at Aliyun before HR is told.
pub const UNKNOWN_LOOKUP_MINUTES: i64 = 30;
/// Rows asked about per tick.
const POLL_BATCH: u64 = 50;
/// The steps whose texts are followed: those whose receipt matters.
pub const REPORTED_STEPS: [&str; 2] = ["formal_notice", "termination_notice"];

/// A report to record, from either way it arrives.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub report: SmsReport,
    /// The gateway's answer or post, as received (phone masked).
    pub raw: String,
    pub media_type: &'static str,
    /// `aliyun_query` or `webhook_post`.
    pub via: &'static str,
}

/// Records `incoming` on `row`, once per final status, in one transaction:
/// the columns, an `sms_delivery_report` leaf, then what it proves
/// (`delivered`: the receipt hook) or ends (`failed`: undeliverable, HR
/// told). A report of waiting only notes when it was asked. Returns whether
/// a final report was recorded now.
pub async fn record(
    rt: &Runtime,
    tenant: &Tenant,
    row: &outbox::Model,
    incoming: Incoming,
    on_give_up: &dyn OnGiveUp,
) -> Result<bool, DeliverError> {
    let now = rt.clock.now();
    let db = &rt.db.orm;
    let Some(status) = incoming.report.status else {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::ReportCheckedAt, Expr::value(now))
            .col_expr(
                outbox::Column::DeliveryReport,
                Expr::value(incoming.raw.clone()),
            )
            .filter(outbox::Column::Id.eq(row.id))
            .exec(db)
            .await?;
        return Ok(false);
    };
    // A delivery is never dated before the text left (a gateway's clock
    // would otherwise start a deadline early), and one reported with no
    // time counts from when rollcall learned of it: both only ever later,
    // which is the employee's side.
    let sent = row.sent_at.or(row.claimed_at);
    let at = match (status, incoming.report.at) {
        (DeliveryStatus::Delivered, None) => Some(now),
        (_, Some(at)) => Some(sent.map_or(at, |sent| at.max(sent))),
        (_, None) => None,
    };
    // Read before the transaction (SQLite: a reading transaction cannot
    // always upgrade to writing).
    let leaf = message_leaf(db, "sms_delivery_report", row)
        .await?
        .occurred_at(at.unwrap_or(now))
        .id("receipt", row.receipt_id.clone().unwrap_or_default())
        .detail(json!({
            "recipient": row.recipient,
            "status": status.as_str(),
            "delivered_at": at,
            "reported_at": incoming.report.at,
            "code": incoming.report.code,
            "via": incoming.via,
        }))
        .raw(
            "report",
            incoming.media_type,
            incoming.raw.clone().into_bytes(),
        );
    let txn = rt.db.write().await?;
    let first = outbox::Entity::update_many()
        .col_expr(outbox::Column::DeliveryStatus, Expr::value(status.as_str()))
        .col_expr(outbox::Column::DeliveredAt, Expr::value(at))
        .col_expr(
            outbox::Column::DeliveryReport,
            Expr::value(incoming.raw.clone()),
        )
        .col_expr(outbox::Column::ReportCheckedAt, Expr::value(now))
        // A report of an unknown text proves the gateway took it.
        .col_expr(
            outbox::Column::Status,
            Expr::value(OutboxStatus::Sent.as_str()),
        )
        .col_expr(outbox::Column::SentAt, Expr::value(sent))
        .filter(outbox::Column::Id.eq(row.id))
        .filter(
            outbox::Column::Status
                .is_in([OutboxStatus::Sent.as_str(), OutboxStatus::Unknown.as_str()]),
        )
        .filter(
            Condition::any()
                .add(outbox::Column::DeliveryStatus.is_null())
                .add(outbox::Column::DeliveryStatus.eq(DeliveryStatus::Unknown.as_str())),
        )
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !first {
        txn.rollback().await?;
        return Ok(false);
    }
    append_one(&txn, &row.tenant_id, now, leaf).await?;
    match status {
        DeliveryStatus::Delivered => on_give_up.was_read(&txn, row, now).await?,
        DeliveryStatus::Failed => {
            let reason = format!("SMS report: not delivered ({})", incoming.report.code);
            let why = Why {
                reason: &reason,
                response: None,
            };
            give_up_in(
                rt,
                &txn,
                on_give_up,
                tenant,
                row,
                OutboxStatus::Undeliverable,
                why,
            )
            .await?;
        }
        DeliveryStatus::Unknown => {}
    }
    txn.commit().await?;
    Ok(true)
}

/// Asks Aliyun about the texts due (see the module's doc); returns how many
/// rows were asked about. One row's failure is logged and does not stop
/// the others.
pub async fn poll_due(rt: &Runtime, on_give_up: &dyn OnGiveUp) -> Result<usize, DeliverError> {
    let now = rt.clock.now();
    // Only tenants whose gateway is asked (a webhook gateway posts).
    let asking: Vec<String> = rt
        .tenants()
        .filter(|t| t.sms.as_ref().is_some_and(|s| s.reports_by_query()))
        .map(|t| t.config.id.clone())
        .collect();
    if asking.is_empty() {
        return Ok(0);
    }
    let rows = outbox::Entity::find()
        .filter(outbox::Column::TenantId.is_in(asking))
        .filter(outbox::Column::Channel.eq("sms"))
        .filter(outbox::Column::Step.is_in(REPORTED_STEPS))
        .filter(outbox::Column::CreatedAt.gt(now - Duration::hours(POLL_FOR_HOURS)))
        .filter(
            Condition::any()
                .add(
                    Condition::all()
                        .add(outbox::Column::Status.eq(OutboxStatus::Sent.as_str()))
                        .add(outbox::Column::DeliveryStatus.is_null()),
                )
                .add(outbox::Column::Status.eq(OutboxStatus::Unknown.as_str())),
        )
        .filter(
            Condition::any()
                .add(outbox::Column::ReportCheckedAt.is_null())
                .add(
                    outbox::Column::ReportCheckedAt
                        .lte(now - Duration::minutes(POLL_EVERY_MINUTES)),
                ),
        )
        // Round robin: never asked first, then the longest since asked, so a
        // batch of rows that cannot be settled starves none.
        .order_by_with_nulls(
            outbox::Column::ReportCheckedAt,
            sea_orm::Order::Asc,
            sea_orm::sea_query::NullOrdering::First,
        )
        .order_by_asc(outbox::Column::Id)
        .limit(POLL_BATCH)
        .all(&rt.db.orm)
        .await?;
    let mut asked = 0;
    for row in rows {
        let Some(tenant) = rt.tenant(&row.tenant_id).cloned() else {
            continue;
        };
        if !tenant.sms.as_ref().is_some_and(|s| s.reports_by_query()) {
            continue;
        }
        if OutboxStatus::of(&row) == Some(OutboxStatus::Unknown) && concluded(&row) {
            // Left to HR: not asked again, only moved to the back.
            checked(rt, row.id, now).await?;
            continue;
        }
        match poll_one(rt, &tenant, &row, on_give_up).await {
            Ok(()) => asked += 1,
            Err(e) => tracing::warn!(id = row.id, error = %e, "asking for an SMS report failed"),
        }
    }
    Ok(asked)
}

/// Whether the looking for an unknown row ended (HR was told).
fn concluded(row: &outbox::Model) -> bool {
    let since = row.claimed_at.unwrap_or(row.created_at);
    row.report_checked_at
        .is_some_and(|at| at >= since + Duration::minutes(UNKNOWN_LOOKUP_MINUTES))
}

async fn poll_one(
    rt: &Runtime,
    tenant: &Tenant,
    row: &outbox::Model,
    on_give_up: &dyn OnGiveUp,
) -> Result<(), DeliverError> {
    let now = rt.clock.now();
    let Some(sms) = tenant.sms.as_ref() else {
        return Ok(());
    };
    let phone =
        crate::employees::directory::phone_of(rt, &rt.db.orm, &row.tenant_id, &row.recipient)
            .await?;
    let Some(phone) = phone else {
        return Ok(());
    };
    let sent = row.sent_at.or(row.claimed_at).unwrap_or(row.created_at);
    let lookup = SmsLookup {
        phone: phone.clone(),
        sent_on: sent.with_timezone(&chrono_tz::Asia::Shanghai).date_naive(),
        provider_id: row.receipt_id.clone(),
        out_id: format!("{}:{}", row.tenant_id, row.idem_key),
    };
    let answer = match sms.query(&lookup).await {
        Ok(Some(answer)) => answer,
        Ok(None) => return Ok(()),
        Err(e) => {
            // Asked again on a later tick.
            checked(rt, row.id, now).await?;
            tracing::info!(id = row.id, error = %e, "SMS report not available now");
            return Ok(());
        }
    };
    let raw = answer.raw.replace(&phone, &mask_phone(&phone));
    let incoming = |report: SmsReport| Incoming {
        report,
        raw: raw.clone(),
        media_type: "application/json",
        via: "aliyun_query",
    };
    if OutboxStatus::of(row) != Some(OutboxStatus::Unknown) {
        match answer.report {
            Some(report) => {
                record(rt, tenant, row, incoming(report), on_give_up).await?;
            }
            None => checked(rt, row.id, now).await?,
        }
        return Ok(());
    }
    // An unknown text: found means Aliyun took it.
    match answer.report {
        Some(report) => {
            let leaf = message_leaf(&rt.db.orm, "message_sent", row)
                .await?
                .occurred_at(now)
                .detail(json!({
                    "recipient": row.recipient,
                    "found_by": "aliyun_query",
                    "out_id": lookup.out_id,
                }))
                .raw("response", "application/json", raw.clone().into_bytes());
            let txn = rt.db.write().await?;
            let found = outbox::Entity::update_many()
                .col_expr(
                    outbox::Column::Status,
                    Expr::value(OutboxStatus::Sent.as_str()),
                )
                .col_expr(outbox::Column::SentAt, Expr::value(Some(sent)))
                .col_expr(outbox::Column::Error, Expr::value(Option::<String>::None))
                .col_expr(
                    outbox::Column::DeliveryStatus,
                    Expr::value(Option::<String>::None),
                )
                .col_expr(outbox::Column::ReportCheckedAt, Expr::value(now))
                .col_expr(outbox::Column::DeliveryReport, Expr::value(raw.clone()))
                .filter(outbox::Column::Id.eq(row.id))
                .filter(outbox::Column::Status.eq(OutboxStatus::Unknown.as_str()))
                .exec(&txn)
                .await?
                .rows_affected
                == 1;
            if found {
                append_one(&txn, &row.tenant_id, now, leaf).await?;
            }
            txn.commit().await?;
            if found && report.status.is_some() {
                let Some(row) = outbox::Entity::find_by_id(row.id).one(&rt.db.orm).await? else {
                    return Ok(());
                };
                record(rt, tenant, &row, incoming(report), on_give_up).await?;
            }
        }
        None => {
            let since = row.claimed_at.unwrap_or(row.created_at);
            if now < since + Duration::minutes(UNKNOWN_LOOKUP_MINUTES) {
                checked(rt, row.id, now).await?;
                return Ok(());
            }
            // Not found for long enough: HR decides, once.
            let txn = rt.db.write().await?;
            let first = outbox::Entity::update_many()
                .col_expr(outbox::Column::ReportCheckedAt, Expr::value(now))
                .col_expr(outbox::Column::DeliveryReport, Expr::value(raw.clone()))
                .filter(outbox::Column::Id.eq(row.id))
                .filter(outbox::Column::Status.eq(OutboxStatus::Unknown.as_str()))
                .filter(
                    Condition::any()
                        .add(outbox::Column::ReportCheckedAt.is_null())
                        .add(
                            outbox::Column::ReportCheckedAt
                                .lt(since + Duration::minutes(UNKNOWN_LOOKUP_MINUTES)),
                        ),
                )
                .exec(&txn)
                .await?
                .rows_affected
                == 1;
            if first {
                on_give_up
                    .outcome_unknown(rt, &txn, tenant, row, true)
                    .await?;
            }
            txn.commit().await?;
        }
    }
    Ok(())
}

/// Notes that row `id` was asked about at `now` (the poll's pace).
async fn checked(rt: &Runtime, id: i64, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::ReportCheckedAt, Expr::value(now))
        .filter(outbox::Column::Id.eq(id))
        .exec(&rt.db.orm)
        .await?;
    Ok(())
}

/// What a webhook gateway's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Recorded now.
    Recorded,
    /// The row had its final report already (a gateway's retry): nothing
    /// changed.
    Already,
    /// No SMS of this tenant has that id.
    UnknownId,
}

/// A report a webhook gateway posted, already checked (signature, time):
/// finds the text by the gateway's `id` or our `out_id` among `tenant`'s
/// SMS rows and records it.
pub async fn webhook_report(
    rt: &Runtime,
    tenant: &Tenant,
    gateway_id: Option<&str>,
    out_id: Option<&str>,
    report: SmsReport,
    raw: &[u8],
    on_give_up: &dyn OnGiveUp,
) -> Result<Posted, DeliverError> {
    let tenant_id = tenant.config.id.as_str();
    let mut find = outbox::Entity::find()
        .filter(outbox::Column::TenantId.eq(tenant_id))
        .filter(outbox::Column::Channel.eq("sms"));
    find = match (gateway_id, out_id) {
        (Some(id), _) => find.filter(outbox::Column::ReceiptId.eq(id)),
        (None, Some(out)) => {
            let Some(key) = out.strip_prefix(&format!("{tenant_id}:")) else {
                return Ok(Posted::UnknownId);
            };
            find.filter(outbox::Column::IdemKey.eq(key))
        }
        (None, None) => return Ok(Posted::UnknownId),
    };
    let Some(row) = find.one(&rt.db.orm).await? else {
        return Ok(Posted::UnknownId);
    };
    let phone =
        crate::employees::directory::phone_of(rt, &rt.db.orm, &row.tenant_id, &row.recipient)
            .await?;
    let mut raw = String::from_utf8_lossy(raw).into_owned();
    if let Some(phone) = phone {
        raw = raw.replace(&phone, &mask_phone(&phone));
    }
    let incoming = Incoming {
        report,
        raw,
        media_type: "application/json",
        via: "webhook_post",
    };
    match record(rt, tenant, &row, incoming, on_give_up).await? {
        true => Ok(Posted::Recorded),
        false => Ok(Posted::Already),
    }
}
