//! A person's history (`/履历 <who>`): attendance anomalies by month (late
//! and early days, days without a check-out, missed workdays, leave days)
//! over the last twelve months, their absence cases, rewards and
//! punishments (`#奖惩`) and the other archived documents. The same facts
//! make the chat answer (`command.j2`, block `history`) and the printable
//! page (`history.html.j2`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use entity::{absence_case, case_event, check_in, employee, leave};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::archive;
use crate::cases::store::case_no;
use crate::runtime::Tenant;

/// One month's anomalies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MonthLine {
    pub month: String,
    pub late: u32,
    pub late_minutes: i64,
    pub early: u32,
    pub early_minutes: i64,
    pub no_check_out: u32,
    pub absent: u32,
    pub leave: u32,
}

/// The workday a `case_opened` or `missed_workday` event (its detail)
/// records as missed.
pub(crate) fn missed_day(detail: &str) -> Option<NaiveDate> {
    let detail: Value = serde_json::from_str(detail).ok()?;
    detail
        .get("day")
        .or_else(|| detail.get("first_missed"))
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
}

/// The history of `person` at `now`, as the templates' context.
pub async fn of<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    person: &employee::Model,
    now: DateTime<Utc>,
) -> Result<Value, DbErr> {
    let config = &tenant.config;
    let tz = config.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
        .and_then(|d| d.checked_sub_months(Months::new(11)))
        .unwrap_or(today);
    let month_of = |d: NaiveDate| d.format("%Y-%m").to_string();
    let mut months: BTreeMap<String, MonthLine> = BTreeMap::new();
    fn line(months: &mut BTreeMap<String, MonthLine>, d: NaiveDate) -> &mut MonthLine {
        let m = d.format("%Y-%m").to_string();
        months.entry(m.clone()).or_insert_with(|| MonthLine {
            month: m,
            ..Default::default()
        })
    }
    // Per day: the earliest check-in's lateness, the latest check-out's
    // earliness, and whether a shift day had no check-out.
    let punches = check_in::Entity::find()
        .filter(check_in::Column::TenantId.eq(&config.id))
        .filter(check_in::Column::UserId.eq(&person.user_id))
        .filter(check_in::Column::WorkDate.gte(first))
        .all(conn)
        .await?;
    let mut days: BTreeMap<NaiveDate, (Option<i32>, Option<i32>, bool)> = BTreeMap::new();
    for c in &punches {
        let e = days.entry(c.work_date).or_insert((None, None, false));
        let off = c.minutes_off.unwrap_or(0);
        if c.direction == "out" {
            e.1 = Some(e.1.map_or(off, |o| o.min(off)));
        } else {
            e.0 = Some(e.0.map_or(off, |o| o.min(off)));
        }
        e.2 |= c.shift.is_some();
    }
    for (day, (late, early, shifted)) in days {
        let l = line(&mut months, day);
        if let Some(m) = late.filter(|m| *m > 0) {
            l.late += 1;
            l.late_minutes += i64::from(m);
        }
        if let Some(m) = early.filter(|m| *m > 0) {
            l.early += 1;
            l.early_minutes += i64::from(m);
        }
        if shifted && late.is_some() && early.is_none() && day < today {
            l.no_check_out += 1;
        }
    }
    // Missed workdays, as the scan recorded them.
    let mut missed: BTreeSet<NaiveDate> = BTreeSet::new();
    for e in case_event::Entity::find()
        .filter(case_event::Column::TenantId.eq(&config.id))
        .filter(case_event::Column::UserId.eq(&person.user_id))
        .filter(case_event::Column::Kind.is_in(["case_opened", "missed_workday"]))
        .all(conn)
        .await?
    {
        if let Some(day) = missed_day(&e.detail).filter(|d| *d >= first) {
            missed.insert(day);
        }
    }
    for day in missed {
        line(&mut months, day).absent += 1;
    }
    for l in leave::Entity::find()
        .filter(leave::Column::TenantId.eq(&config.id))
        .filter(leave::Column::UserId.eq(&person.user_id))
        .filter(leave::Column::ToDate.gte(first))
        .all(conn)
        .await?
    {
        for day in l.from_date.iter_days().take_while(|d| *d <= l.to_date) {
            if day >= first && day <= today {
                line(&mut months, day).leave += 1;
            }
        }
    }
    let cases: Vec<Value> = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(&config.id))
        .filter(absence_case::Column::UserId.eq(&person.user_id))
        .order_by_asc(absence_case::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "no": case_no(c.id),
                "status": c.status,
                "first_missed": c.first_missed.to_string(),
                "missed_workdays": c.missed_workdays,
                "resolution": c.resolution,
            })
        })
        .collect();
    let documents = archive::list(conn, &config.id, &person.user_id, None).await?;
    let doc = |d: &entity::document::Model| {
        json!({
            "date": d.filed_at.with_timezone(&tz).format("%Y-%m-%d").to_string(),
            "tag": d.tag,
            "note": d.note,
            "file_name": d.file_name,
            "size": d.size,
            "sha256": d.sha256,
            "punishment": d.tag == "奖惩" && archive::is_punishment(&d.note),
        })
    };
    let rewards_punishments: Vec<Value> = documents
        .iter()
        .filter(|d| d.tag == "奖惩")
        .map(doc)
        .collect();
    let others: Vec<Value> = documents
        .iter()
        .filter(|d| d.tag != "奖惩")
        .map(doc)
        .collect();
    Ok(json!({
        "name": person.name,
        "user_id": person.user_id,
        "department": person.department,
        "hire_date": person.hire_date.map(|d| d.to_string()),
        "contract_end_date": person.contract_end_date.map(|d| d.to_string()),
        "active": person.active,
        "tenant_name": config.name,
        "since": month_of(first),
        "made_at": now.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
        "months": months.into_values().collect::<Vec<_>>(),
        "cases": cases,
        "rewards_punishments": rewards_punishments,
        "documents": others,
    }))
}
