//! The risk score: per employee, over the last `[tenants.risk] window_days`
//! days, each factor (days late, days leaving early, missed workdays, open
//! absence cases, punishments archived with `#奖惩`) times its configured
//! weight, summed ([`score`]). Nothing else goes in. With the daily scan
//! job, a score reaching the threshold sends HR a card with every factor,
//! once per crossing (the crossing closes when the score falls back);
//! `/risk 风险` lists the highest scores with their factors.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{absence_case, card_action, case_event, check_in, document, employee, risk_alert};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
};
use serde_json::{Value, json};

use super::archive::is_punishment;
use super::cards::{self, HrCard};
use crate::cases::CaseStatus;
use crate::config::RiskConfig;
use crate::conversation::turn::{HandleError, Turn};
use crate::employees::directory::hr_people;
use crate::evidence::{NewLeaf, append_later};
use crate::runtime::{Runtime, Tenant};

/// What the score is made of, for one person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Factors {
    pub late: i64,
    pub early: i64,
    pub missed: i64,
    pub open_cases: i64,
    pub punishments: i64,
}

/// The documented formula: each factor times its weight, summed.
pub fn score(f: &Factors, w: &RiskConfig) -> i64 {
    f.late * w.late
        + f.early * w.early
        + f.missed * w.missed_day
        + f.open_cases * w.open_case
        + f.punishments * w.punishment
}

/// One person's score.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scored {
    pub user_id: String,
    pub name: String,
    pub department: String,
    pub factors: Factors,
    pub score: i64,
}

/// Every active employee's score on `tenant`'s local day at `now`, highest
/// first (then by user id).
pub async fn scores<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<Vec<Scored>, DbErr> {
    let config = &tenant.config;
    let w = &config.risk;
    let tz = config.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let since = today - Duration::days(w.window_days - 1);
    let since_at = now - Duration::days(w.window_days);
    let mut factors: HashMap<String, Factors> = HashMap::new();
    // Days late (the day's least late check-in) and early (its least early
    // check-out), as the monthly sheet counts them.
    type Day = (String, NaiveDate, Option<i32>, Option<i32>);
    let days: Vec<Day> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::UserId)
        .column(check_in::Column::WorkDate)
        .expr(Expr::cust(
            "MIN(CASE WHEN direction = 'in' THEN COALESCE(minutes_off, 0) END)",
        ))
        .expr(Expr::cust(
            "MIN(CASE WHEN direction = 'out' THEN COALESCE(minutes_off, 0) END)",
        ))
        .filter(check_in::Column::TenantId.eq(&config.id))
        .filter(check_in::Column::WorkDate.gte(since))
        .filter(check_in::Column::WorkDate.lte(today))
        .group_by(check_in::Column::UserId)
        .group_by(check_in::Column::WorkDate)
        .into_tuple()
        .all(conn)
        .await?;
    for (user, _, late, early) in days {
        let f = factors.entry(user).or_default();
        f.late += i64::from(late.is_some_and(|m| m > 0));
        f.early += i64::from(early.is_some_and(|m| m > 0));
    }
    // Missed workdays the scan recorded (the case's first, then each more).
    let mut missed: HashMap<String, BTreeSet<NaiveDate>> = HashMap::new();
    for e in case_event::Entity::find()
        .filter(case_event::Column::TenantId.eq(&config.id))
        .filter(case_event::Column::Kind.is_in(["case_opened", "missed_workday"]))
        .filter(case_event::Column::At.gte(since_at - Duration::days(7)))
        .all(conn)
        .await?
    {
        let day = super::history::missed_day(&e.detail);
        if let (Some(user), Some(day)) = (e.user_id, day.filter(|d| *d >= since && *d <= today)) {
            missed.entry(user).or_default().insert(day);
        }
    }
    for (user, days) in missed {
        factors.entry(user).or_default().missed = days.len() as i64;
    }
    for c in absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(&config.id))
        .filter(absence_case::Column::Status.ne(CaseStatus::Resolved.as_str()))
        .all(conn)
        .await?
    {
        factors.entry(c.user_id).or_default().open_cases += 1;
    }
    for d in document::Entity::find()
        .filter(document::Column::TenantId.eq(&config.id))
        .filter(document::Column::Tag.eq("奖惩"))
        .filter(document::Column::FiledAt.gte(since_at))
        .all(conn)
        .await?
    {
        if is_punishment(&d.note) {
            factors.entry(d.user_id).or_default().punishments += 1;
        }
    }
    type Person = (String, String, String);
    let people: Vec<Person> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .column(employee::Column::Name)
        .column(employee::Column::Department)
        .filter(employee::Column::TenantId.eq(&config.id))
        .filter(employee::Column::Active.eq(true))
        .into_tuple()
        .all(conn)
        .await?;
    let mut scored: Vec<Scored> = people
        .into_iter()
        .map(|(user_id, name, department)| {
            let factors = factors.get(&user_id).copied().unwrap_or_default();
            Scored {
                score: score(&factors, w),
                user_id,
                name,
                department,
                factors,
            }
        })
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
    Ok(scored)
}

/// What one day's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Alerted {
    /// People whose score reached the threshold (HR got a card).
    pub crossed: usize,
    /// People whose score fell back below it (a later crossing alerts again).
    pub cleared: usize,
}

/// The cards' kind: their message keys are `risk:<alert>:<hr>`.
const KIND: &str = "risk";

/// Scores `tenant` at `now` and sends HR a card for each new crossing.
pub async fn alert(
    rt: &Runtime,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<Alerted, HandleError> {
    let config = &tenant.config;
    // Scored before the write transaction: a large tenant's month of
    // check-ins is read without holding the one SQLite writer's turn.
    let scored = scores(&rt.db.orm, tenant, now).await?;
    let txn = rt.db.write().await?;
    let open: HashMap<String, risk_alert::Model> = risk_alert::Entity::find()
        .filter(risk_alert::Column::TenantId.eq(&config.id))
        .filter(risk_alert::Column::ClearedAt.is_null())
        .all(&*txn)
        .await?
        .into_iter()
        .map(|a| (a.user_id.clone(), a))
        .collect();
    let hr = hr_people(&*txn, &config.id).await?;
    let mut report = Alerted::default();
    let mut closing: Vec<i64> = Vec::new();
    for s in &scored {
        let above = s.score >= config.risk.threshold;
        match (above, open.get(&s.user_id)) {
            (true, None) => {
                let inserted = risk_alert::Entity::insert(risk_alert::ActiveModel {
                    tenant_id: Set(config.id.clone()),
                    user_id: Set(s.user_id.clone()),
                    crossed_at: Set(now),
                    score: Set(s.score),
                    factors: Set(serde_json::to_string(&s.factors).unwrap_or_default()),
                    ..Default::default()
                })
                .exec(&*txn)
                .await?;
                send_cards(rt, &*txn, tenant, &hr, s, inserted.last_insert_id, now).await?;
                report.crossed += 1;
            }
            (false, Some(a)) => closing.push(a.id),
            _ => {}
        }
    }
    // Someone who left keeps no crossing open.
    let active: BTreeSet<&str> = scored.iter().map(|s| s.user_id.as_str()).collect();
    closing.extend(
        open.values()
            .filter(|a| !active.contains(a.user_id.as_str()))
            .map(|a| a.id),
    );
    if !closing.is_empty() {
        risk_alert::Entity::update_many()
            .col_expr(risk_alert::Column::ClearedAt, Expr::value(now))
            .filter(risk_alert::Column::Id.is_in(closing.iter().copied()))
            .exec(&*txn)
            .await?;
    }
    report.cleared = closing.len();
    txn.commit().await?;
    Ok(report)
}

/// The template context of one person's score.
pub fn context(s: &Scored, w: &RiskConfig) -> Value {
    json!({
        "name": s.name,
        "user_id": s.user_id,
        "department": s.department,
        "score": s.score,
        "late": s.factors.late,
        "early": s.factors.early,
        "missed": s.factors.missed,
        "open_cases": s.factors.open_cases,
        "punishments": s.factors.punishments,
        "w": weights(w),
        "threshold": w.threshold,
        "window_days": w.window_days,
    })
}

/// The weights as the templates name them (`w.late`, …).
pub fn weights(w: &RiskConfig) -> Value {
    json!({
        "late": w.late,
        "early": w.early,
        "missed_day": w.missed_day,
        "open_case": w.open_case,
        "punishment": w.punishment,
    })
}

async fn send_cards<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    hr: &[employee::Model],
    s: &Scored,
    alert: i64,
    now: DateTime<Utc>,
) -> Result<(), HandleError> {
    let config = &tenant.config;
    let context = context(s, &config.risk);
    let to = cards::send(
        rt,
        conn,
        tenant,
        hr,
        &HrCard {
            template: "risk.hr",
            context: &context,
            actions: &["risk_seen"],
            kind: KIND,
            id: alert,
            round: None,
            subject: &s.user_id,
            step: "risk_alert",
        },
        now,
    )
    .await?;
    append_later(
        conn,
        &config.id,
        now,
        NewLeaf::new("risk_alert")
            .subject(Some(&s.user_id))
            .detail(json!({
                "score": s.score,
                "factors": s.factors,
                "threshold": config.risk.threshold,
                "hr": to,
            })),
    )
    .await?;
    Ok(())
}

/// HR pressed 已知悉 on a risk card (the press is claimed already).
pub(crate) async fn pressed(
    turn: &Turn<'_>,
    sender: &employee::Model,
    action: &card_action::Model,
    context: &mut Value,
) -> Result<&'static str, HandleError> {
    let row = match cards::pressed_id(turn.txn, action.outbox_id, KIND).await? {
        Some(id) => risk_alert::Entity::find_by_id(id).one(turn.txn).await?,
        None => None,
    };
    let Some(row) = row.filter(|r| r.tenant_id == turn.tenant.config.id) else {
        return Ok("reply_stale");
    };
    let name = cards::name_of(turn.txn, &turn.tenant.config.id, &row.user_id).await?;
    context["name"] = json!(name);
    context["score"] = json!(row.score);
    risk_alert::Entity::update_many()
        .col_expr(
            risk_alert::Column::SeenBy,
            Expr::value(sender.user_id.clone()),
        )
        .col_expr(risk_alert::Column::SeenAt, Expr::value(turn.now))
        .filter(risk_alert::Column::Id.eq(row.id))
        .filter(risk_alert::Column::SeenAt.is_null())
        .exec(turn.txn)
        .await?;
    turn.record(
        None,
        Some(&row.user_id),
        "risk_acknowledged",
        json!({ "alert": row.id, "score": row.score }),
    )
    .await?;
    Ok("reply_risk_seen")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn f(late: i64, early: i64, missed: i64, open_cases: i64, punishments: i64) -> Factors {
        Factors {
            late,
            early,
            missed,
            open_cases,
            punishments,
        }
    }

    #[rstest]
    #[case::nothing(f(0, 0, 0, 0, 0), 0)]
    #[case::late_days(f(3, 0, 0, 0, 0), 3)]
    #[case::early_days(f(0, 2, 0, 0, 0), 2)]
    #[case::missed_days(f(0, 0, 2, 0, 0), 10)]
    #[case::an_open_case(f(0, 0, 0, 1, 0), 10)]
    #[case::a_punishment(f(0, 0, 0, 0, 1), 5)]
    #[case::all_of_it(f(4, 1, 3, 1, 2), 4 + 1 + 15 + 10 + 10)]
    fn the_default_formula(#[case] factors: Factors, #[case] expected: i64) {
        assert_eq!(score(&factors, &RiskConfig::default()), expected);
    }

    #[test]
    fn weights_come_from_the_configuration() {
        let w = RiskConfig {
            late: 2,
            early: 0,
            missed_day: 1,
            open_case: 0,
            punishment: 100,
            ..RiskConfig::default()
        };
        assert_eq!(score(&f(1, 5, 2, 3, 1), &w), 2 + 2 + 100);
    }
}
