//! Contract expiry reminders: every day (with the tenant's scan) HR gets a
//! card for each contract that ends within `[tenants.hr]
//! contract_remind_days`, once per contract (a person and an end date), with
//! 续签 / 不续签 / 稍后提醒; the first choice pressed is recorded, 稍后提醒
//! sends the card again `contract_snooze_days` later, and 不续签 answers
//! with the rules on notice and compensation (`contract.hr.j2`).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{card_action, contract_reminder, employee};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::{Value, json};

use super::cards::{self, HrCard};
use crate::conversation::turn::{HandleError, Turn};
use crate::employees::directory::{employee_row, hr_people};
use crate::evidence::{NewLeaf, append_later};
use crate::runtime::{Runtime, Tenant};

/// The card's buttons, as `card_actions.action`.
pub const ACTIONS: [&str; 3] = ["contract_renew", "contract_not_renew", "contract_later"];

/// What one day's run sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reminded {
    /// Contracts HR was reminded of for the first time.
    pub new: usize,
    /// Contracts whose 稍后提醒 came due.
    pub again: usize,
}

/// The cards' kind: their message keys are `contract:<reminder>:<round>:<hr>`.
const KIND: &str = "contract";

/// Sends the cards due on `tenant`'s local `today`, in one transaction.
pub async fn remind(
    rt: &Runtime,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<Reminded, HandleError> {
    let config = &tenant.config;
    let today = now.with_timezone(&config.timezone).date_naive();
    let horizon = today + Duration::days(config.hr.contract_remind_days);
    let txn = rt.db.write().await?;
    let mut report = Reminded::default();
    let ending: Vec<employee::Model> = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(&config.id))
        .filter(employee::Column::Active.eq(true))
        .filter(employee::Column::ContractEndDate.gte(today))
        .filter(employee::Column::ContractEndDate.lte(horizon))
        .order_by_asc(employee::Column::ContractEndDate)
        .order_by_asc(employee::Column::UserId)
        .all(&*txn)
        .await?;
    let hr = hr_people(&*txn, &config.id).await?;
    for person in ending {
        let Some(end) = person.contract_end_date else {
            continue;
        };
        let inserted = contract_reminder::Entity::insert(contract_reminder::ActiveModel {
            tenant_id: Set(config.id.clone()),
            user_id: Set(person.user_id.clone()),
            contract_end: Set(end),
            reminded_at: Set(now),
            rounds: Set(1),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([
            contract_reminder::Column::TenantId,
            contract_reminder::Column::UserId,
            contract_reminder::Column::ContractEnd,
        ])
        .exec(&*txn)
        .await?;
        let sea_orm::TryInsertResult::Inserted(r) = inserted else {
            continue;
        };
        let Some(row) = contract_reminder::Entity::find_by_id(r.last_insert_id)
            .one(&*txn)
            .await?
        else {
            continue;
        };
        send_cards(rt, &*txn, tenant, &hr, &person, &row, today, now).await?;
        report.new += 1;
    }
    // 稍后提醒 that came due, while the contract has not ended.
    let due = contract_reminder::Entity::find()
        .filter(contract_reminder::Column::TenantId.eq(&config.id))
        .filter(contract_reminder::Column::Decision.is_null())
        .filter(contract_reminder::Column::RemindAgainOn.lte(today))
        .filter(contract_reminder::Column::ContractEnd.gte(today))
        .all(&*txn)
        .await?;
    for row in due {
        let Some(person) = employee_row(&*txn, &config.id, &row.user_id).await? else {
            continue;
        };
        if !person.active || person.contract_end_date != Some(row.contract_end) {
            continue;
        }
        let taken = contract_reminder::Entity::update_many()
            .col_expr(
                contract_reminder::Column::Rounds,
                Expr::col(contract_reminder::Column::Rounds).add(1),
            )
            .col_expr(
                contract_reminder::Column::RemindAgainOn,
                Expr::value(Option::<NaiveDate>::None),
            )
            .filter(contract_reminder::Column::Id.eq(row.id))
            .filter(contract_reminder::Column::RemindAgainOn.eq(row.remind_again_on))
            .exec(&*txn)
            .await?;
        if taken.rows_affected == 0 {
            continue;
        }
        let row = contract_reminder::Model {
            rounds: row.rounds + 1,
            ..row
        };
        send_cards(rt, &*txn, tenant, &hr, &person, &row, today, now).await?;
        report.again += 1;
    }
    txn.commit().await?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn send_cards<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    hr: &[employee::Model],
    person: &employee::Model,
    row: &contract_reminder::Model,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<(), HandleError> {
    let config = &tenant.config;
    let context = json!({
        "name": person.name,
        "department": person.department,
        "contract_end": row.contract_end.to_string(),
        "days_left": (row.contract_end - today).num_days(),
        "hire_date": person.hire_date.map(|d| d.to_string()),
        "round": row.rounds,
        "snooze_days": config.hr.contract_snooze_days,
    });
    let sent = cards::send(
        rt,
        conn,
        tenant,
        hr,
        &HrCard {
            template: "contract.hr",
            context: &context,
            actions: &ACTIONS,
            kind: KIND,
            id: row.id,
            round: Some(row.rounds),
            subject: &person.user_id,
            step: "contract_reminder",
        },
        now,
    )
    .await?;
    append_later(
        conn,
        &config.id,
        now,
        NewLeaf::new("contract_reminder")
            .subject(Some(&person.user_id))
            .detail(json!({
                "contract_end": row.contract_end,
                "round": row.rounds,
                "hr": sent,
            })),
    )
    .await?;
    Ok(())
}

/// HR pressed a button of a contract card (the press is claimed already):
/// records the choice, once per contract, and says which answer to give
/// (a block of `card_pressed`), filling `context`.
pub(crate) async fn pressed(
    turn: &Turn<'_>,
    sender: &employee::Model,
    action: &card_action::Model,
    context: &mut Value,
) -> Result<&'static str, HandleError> {
    let reminder = match cards::pressed_id(turn.txn, action.outbox_id, KIND).await? {
        Some(id) => {
            contract_reminder::Entity::find_by_id(id)
                .one(turn.txn)
                .await?
        }
        None => None,
    };
    let Some(reminder) = reminder.filter(|r| r.tenant_id == turn.tenant.config.id) else {
        return Ok("reply_stale");
    };
    let person = employee_row(turn.txn, &turn.tenant.config.id, &reminder.user_id).await?;
    context["name"] = json!(person.as_ref().map(|p| p.name.clone()));
    context["contract_end"] = json!(reminder.contract_end.to_string());
    context["snooze_days"] = json!(turn.tenant.config.hr.contract_snooze_days);
    if sender.role != "hr" || sender.user_id == reminder.user_id {
        return Ok("reply_contract_refused");
    }
    if let Some(decision) = &reminder.decision {
        context["decision"] = json!(decision);
        context["decided_by"] = json!(match &reminder.decided_by {
            Some(u) => cards::name_of(turn.txn, &turn.tenant.config.id, u).await?,
            None => String::new(),
        });
        return Ok("reply_contract_decided_already");
    }
    let today = turn
        .now
        .with_timezone(&turn.tenant.config.timezone)
        .date_naive();
    let (kind, block) = match action.action.as_str() {
        "contract_later" => {
            let again = today + Duration::days(turn.tenant.config.hr.contract_snooze_days);
            context["again_on"] = json!(again.to_string());
            contract_reminder::Entity::update_many()
                .col_expr(
                    contract_reminder::Column::RemindAgainOn,
                    Expr::value(Some(again)),
                )
                .filter(contract_reminder::Column::Id.eq(reminder.id))
                .filter(contract_reminder::Column::Decision.is_null())
                .exec(turn.txn)
                .await?;
            ("contract_later", "reply_contract_later")
        }
        decision => {
            let word = if decision == "contract_renew" {
                "renew"
            } else {
                "not_renew"
            };
            contract_reminder::Entity::update_many()
                .col_expr(contract_reminder::Column::Decision, Expr::value(word))
                .col_expr(
                    contract_reminder::Column::DecidedBy,
                    Expr::value(sender.user_id.clone()),
                )
                .col_expr(contract_reminder::Column::DecidedAt, Expr::value(turn.now))
                .col_expr(
                    contract_reminder::Column::RemindAgainOn,
                    Expr::value(Option::<NaiveDate>::None),
                )
                .filter(contract_reminder::Column::Id.eq(reminder.id))
                .filter(contract_reminder::Column::Decision.is_null())
                .exec(turn.txn)
                .await?;
            if word == "renew" {
                ("contract_renew", "reply_contract_renew")
            } else {
                ("contract_not_renew", "reply_contract_not_renew")
            }
        }
    };
    turn.record(
        None,
        Some(&reminder.user_id),
        kind,
        json!({ "contract_end": reminder.contract_end, "reminder": reminder.id }),
    )
    .await?;
    Ok(block)
}
