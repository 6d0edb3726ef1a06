//! After departure: whoever left (by the self-departure process, by a
//! contract HR chose not to renew, or by leaving the platform's directory)
//! is noted with the daily scan job, and `[tenants.hr] follow_up_days`
//! later HR gets a card to record why (薪酬 / 工作量 / 家庭 / 工作条件 /
//! 其他); `/reasons 离职原因` counts the answers by reason, department and
//! month.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{card_action, contract_reminder, departure, employee, leaver};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::{Value, json};

use super::cards::{self, HrCard};
use crate::conversation::turn::{HandleError, Turn};
use crate::employees::directory::{employee_row, hr_people};
use crate::evidence::{NewLeaf, append_later};
use crate::runtime::{Runtime, Tenant};

/// The reasons HR may record, as stored.
pub const REASONS: [&str; 5] = ["pay", "workload", "family", "conditions", "other"];

/// The card's button for `reason` (`card_actions.action`).
pub fn action(reason: &str) -> String {
    format!("leaver_{reason}")
}

/// What one day's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FollowedUp {
    /// People newly noted as having left.
    pub noted: usize,
    /// Cards sent to HR (follow-ups that came due).
    pub reminded: usize,
}

/// The cards' kind: their message keys are `leaver:<leaver>:<hr>`.
const KIND: &str = "leaver";

/// Notes who left and sends the follow-up cards due on `tenant`'s local
/// day at `now`, in one transaction.
pub async fn follow_up(
    rt: &Runtime,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<FollowedUp, HandleError> {
    let config = &tenant.config;
    let tz = config.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let after = Duration::days(config.hr.follow_up_days);
    let txn = rt.db.write().await?;
    let mut report = FollowedUp::default();
    let mut left: Vec<(String, NaiveDate, &'static str)> = Vec::new();
    for d in departure::Entity::find()
        .filter(departure::Column::TenantId.eq(&config.id))
        .filter(departure::Column::TerminatedAt.is_not_null())
        .all(&*txn)
        .await?
    {
        if let Some(at) = d.terminated_at {
            left.push((
                d.user_id,
                at.with_timezone(&tz).date_naive(),
                "self_departure",
            ));
        }
    }
    for c in contract_reminder::Entity::find()
        .filter(contract_reminder::Column::TenantId.eq(&config.id))
        .filter(contract_reminder::Column::Decision.eq("not_renew"))
        .filter(contract_reminder::Column::ContractEnd.lt(today))
        .all(&*txn)
        .await?
    {
        left.push((c.user_id, c.contract_end, "contract_end"));
    }
    let known: HashSet<String> = leaver::Entity::find()
        .filter(leaver::Column::TenantId.eq(&config.id))
        .all(&*txn)
        .await?
        .into_iter()
        .map(|l| l.user_id)
        .collect();
    let noted_now: HashSet<String> = left.iter().map(|l| l.0.clone()).collect();
    // Gone from the directory, and not noted otherwise: left that day.
    for e in employee::Entity::find()
        .filter(employee::Column::TenantId.eq(&config.id))
        .filter(employee::Column::Active.eq(false))
        .all(&*txn)
        .await?
    {
        if !known.contains(&e.user_id) && !noted_now.contains(&e.user_id) {
            left.push((
                e.user_id,
                e.updated_at.with_timezone(&tz).date_naive(),
                "directory",
            ));
        }
    }
    for (user, left_on, how) in left {
        let department = employee_row(&*txn, &config.id, &user)
            .await?
            .map(|e| e.department)
            .unwrap_or_default();
        let inserted = leaver::Entity::insert(leaver::ActiveModel {
            tenant_id: Set(config.id.clone()),
            user_id: Set(user),
            department: Set(department),
            left_on: Set(left_on),
            how: Set(how.to_owned()),
            follow_up_on: Set(left_on + after),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([
            leaver::Column::TenantId,
            leaver::Column::UserId,
            leaver::Column::LeftOn,
        ])
        .exec_without_returning(&*txn)
        .await?;
        // A conflict is `Inserted(0)` (see `checkin::store`).
        if matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
            report.noted += 1;
        }
    }
    let due = leaver::Entity::find()
        .filter(leaver::Column::TenantId.eq(&config.id))
        .filter(leaver::Column::RemindedAt.is_null())
        .filter(leaver::Column::Reason.is_null())
        .filter(leaver::Column::FollowUpOn.lte(today))
        .order_by_asc(leaver::Column::Id)
        .all(&*txn)
        .await?;
    let hr = hr_people(&*txn, &config.id).await?;
    for row in due {
        let taken = leaver::Entity::update_many()
            .col_expr(leaver::Column::RemindedAt, Expr::value(now))
            .filter(leaver::Column::Id.eq(row.id))
            .filter(leaver::Column::RemindedAt.is_null())
            .exec(&*txn)
            .await?;
        if taken.rows_affected == 0 {
            continue;
        }
        send_cards(rt, &*txn, tenant, &hr, &row, now).await?;
        report.reminded += 1;
    }
    txn.commit().await?;
    Ok(report)
}

async fn send_cards<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    hr: &[employee::Model],
    row: &leaver::Model,
    now: DateTime<Utc>,
) -> Result<(), HandleError> {
    let config = &tenant.config;
    let name = cards::name_of(conn, &config.id, &row.user_id).await?;
    let context = json!({
        "name": name,
        "department": row.department,
        "left_on": row.left_on.to_string(),
        "how": row.how,
        "days": config.hr.follow_up_days,
    });
    let actions: Vec<String> = REASONS.iter().map(|r| action(r)).collect();
    let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
    let to = cards::send(
        rt,
        conn,
        tenant,
        hr,
        &HrCard {
            template: "leaver.hr",
            context: &context,
            actions: &actions,
            kind: KIND,
            id: row.id,
            round: None,
            subject: &row.user_id,
            step: "leaver_follow_up",
        },
        now,
    )
    .await?;
    append_later(
        conn,
        &config.id,
        now,
        NewLeaf::new("leaver_follow_up")
            .subject(Some(&row.user_id))
            .detail(json!({
                "left_on": row.left_on,
                "how": row.how,
                "hr": to,
            })),
    )
    .await?;
    Ok(())
}

/// HR pressed a reason on a follow-up card (the press is claimed already):
/// the first reason recorded stands. Returns the block of `card_pressed`
/// to answer with, filling `context`.
pub(crate) async fn pressed(
    turn: &Turn<'_>,
    sender: &employee::Model,
    action: &card_action::Model,
    context: &mut Value,
) -> Result<&'static str, HandleError> {
    let row = match cards::pressed_id(turn.txn, action.outbox_id, KIND).await? {
        Some(id) => leaver::Entity::find_by_id(id).one(turn.txn).await?,
        None => None,
    };
    let Some(row) = row.filter(|r| r.tenant_id == turn.tenant.config.id) else {
        return Ok("reply_stale");
    };
    let Some(reason) = REASONS
        .iter()
        .find(|r| action.action == self::action(r))
        .copied()
    else {
        return Ok("reply_stale");
    };
    let name = cards::name_of(turn.txn, &turn.tenant.config.id, &row.user_id).await?;
    context["name"] = json!(name);
    context["reason"] = json!(reason);
    if sender.role != "hr" {
        return Ok("reply_leaver_refused");
    }
    if let Some(recorded) = &row.reason {
        context["reason"] = json!(recorded);
        context["decided_by"] = json!(match &row.recorded_by {
            Some(u) => cards::name_of(turn.txn, &turn.tenant.config.id, u).await?,
            None => String::new(),
        });
        return Ok("reply_leaver_recorded_already");
    }
    leaver::Entity::update_many()
        .col_expr(leaver::Column::Reason, Expr::value(reason))
        .col_expr(
            leaver::Column::RecordedBy,
            Expr::value(sender.user_id.clone()),
        )
        .col_expr(leaver::Column::RecordedAt, Expr::value(turn.now))
        .filter(leaver::Column::Id.eq(row.id))
        .filter(leaver::Column::Reason.is_null())
        .exec(turn.txn)
        .await?;
    turn.record(
        None,
        Some(&row.user_id),
        "leaver_reason",
        json!({ "reason": reason, "left_on": row.left_on, "how": row.how }),
    )
    .await?;
    Ok("reply_leaver_recorded")
}

/// The counts `/reasons 离职原因` shows: by reason, by department and by
/// month left, with everyone who left and has no reason yet as `pending`.
pub async fn counts<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<Value, DbErr> {
    let rows = leaver::Entity::find()
        .filter(leaver::Column::TenantId.eq(tenant))
        .order_by_asc(leaver::Column::LeftOn)
        .all(conn)
        .await?;
    let key = |r: &leaver::Model| r.reason.clone().unwrap_or_else(|| "pending".into());
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_department: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_month: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &rows {
        *total.entry(key(r)).or_default() += 1;
        *by_department
            .entry(r.department.clone())
            .or_default()
            .entry(key(r))
            .or_default() += 1;
        *by_month
            .entry(r.left_on.format("%Y-%m").to_string())
            .or_default()
            .entry(key(r))
            .or_default() += 1;
    }
    Ok(json!({
        "left": rows.len(),
        "total": total,
        "by_department": by_department,
        "by_month": by_month,
    }))
}
