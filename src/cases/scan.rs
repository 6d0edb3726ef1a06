//! The absence scan: for one tenant and one ended day, open a case for each
//! employee with no check-in on that workday, count one more missed day on
//! open cases, resolve cases covered by leave, and issue what the ladder says
//! is due. Idempotent: a day is counted once per case, every notice has its key.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use entity::{absence_case, check_in, employee, leave};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use super::notify::{NotifyError, issue};
use super::store::{self, Resolution};
use super::{Action, CaseStatus, decide};
use crate::attendance::calendar::{
    DayStatus, Leave, RestDays, day_is_closed, day_status, last_closed_workday,
};
use crate::lease::{Lease, LeaseError};
use crate::runtime::{Runtime, Tenant};

/// Cases written per transaction: bounded so the callback path never waits long.
const CHUNK: usize = 256;

/// How long a scan waits for another scan of its tenant (another job, or
/// another instance) to finish, before it fails and its job is tried again
/// later. Long enough for a daily scan of a large tenant, so that the
/// hourly scan usually just runs after it; bounded so that a job never
/// holds a worker indefinitely.
pub const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The lease a scan of `tenant_id` holds (see [`crate::lease`]).
pub fn lease_name(tenant_id: &str) -> String {
    format!("scan:{tenant_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error(
        "{day} has not ended yet in {tz} (plus the {grace_minutes}-minute grace period): it cannot be judged"
    )]
    NotClosed {
        day: NaiveDate,
        tz: String,
        grace_minutes: i64,
    },
    #[error("no ended workday in the last 31 days")]
    NoWorkday,
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    pub tenant: String,
    pub day: Option<NaiveDate>,
    pub employees: usize,
    pub workday_for: usize,
    pub opened: usize,
    pub advanced: usize,
    pub resolved: usize,
    /// Cases whose ladder issued at least one step.
    pub escalated: usize,
}

/// The day a scan judges when none is given: the last ended workday.
pub fn default_day(tenant: &Tenant, now: DateTime<Utc>) -> Result<NaiveDate, ScanError> {
    let a = &tenant.config.attendance;
    last_closed_workday(
        &a.calendar,
        a.rest_days,
        &[],
        tenant.config.timezone,
        a.grace,
        now,
        31,
    )
    .ok_or(ScanError::NoWorkday)
}

/// The most recent day that has ended (plus the grace period) at `now`.
pub fn last_closed_day(tenant: &Tenant, now: DateTime<Utc>) -> Option<NaiveDate> {
    let tz = tenant.config.timezone;
    let today = now.with_timezone(&tz).date_naive();
    (1..=3)
        .filter_map(|back| today.checked_sub_signed(chrono::Duration::days(back)))
        .find(|d| day_is_closed(*d, tz, tenant.config.attendance.grace, now))
}

struct Worker {
    user_id: String,
    rest: RestDays,
    /// Employed on the day judged (between hire date and contract end).
    employed: bool,
}

/// Runs the scan of `tenant_id` for `day` (default: the last ended workday).
pub async fn scan(
    rt: &Runtime,
    tenant_id: &str,
    day: Option<NaiveDate>,
) -> Result<ScanReport, ScanError> {
    let tenant = rt
        .tenant(tenant_id)
        .cloned()
        .ok_or_else(|| ScanError::UnknownTenant(tenant_id.to_owned()))?;
    let now = rt.clock.now();
    let a = &tenant.config.attendance;
    let day = match day {
        Some(d) => d,
        None => default_day(&tenant, now)?,
    };
    if !day_is_closed(day, tenant.config.timezone, a.grace, now) {
        return Err(ScanError::NotClosed {
            day,
            tz: tenant.config.timezone.to_string(),
            grace_minutes: a.grace.num_minutes(),
        });
    }
    if !a.calendar.covers(chrono::Datelike::year(&day)) {
        tracing::warn!(tenant = tenant_id, %day, "the holiday calendar has no data for this year: only weekly rest days count");
    }
    // Scans of one tenant do not interleave, in this process or any other
    // on the database: the hourly scan of a day may start while the daily
    // one still runs, here or on another instance.
    let lease = Lease::acquire(&rt.db, &lease_name(tenant_id), LEASE_WAIT).await?;
    // The time the scan runs at, now that it may (it may have waited).
    let now = rt.clock.now();
    let db = &rt.db.orm;
    let mut report = ScanReport {
        tenant: tenant_id.to_owned(),
        day: Some(day),
        ..Default::default()
    };

    type Row = (String, Option<String>, Option<NaiveDate>, Option<NaiveDate>);
    let rows: Vec<Row> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .column(employee::Column::RestDays)
        .column(employee::Column::HireDate)
        .column(employee::Column::ContractEndDate)
        .filter(employee::Column::TenantId.eq(tenant_id))
        .filter(employee::Column::Active.eq(true))
        .into_tuple()
        .all(db)
        .await?;
    report.employees = rows.len();
    let workers: Vec<Worker> = rows
        .into_iter()
        .map(|(user_id, rest, hired, contract_end)| Worker {
            rest: rest
                .as_deref()
                .and_then(|r| RestDays::parse(r).ok())
                .unwrap_or(a.rest_days),
            employed: hired.is_none_or(|h| h <= day) && contract_end.is_none_or(|e| day <= e),
            user_id,
        })
        .collect();
    let checked: HashSet<String> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::UserId)
        .distinct()
        .filter(check_in::Column::TenantId.eq(tenant_id))
        .filter(check_in::Column::WorkDate.eq(day))
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut leaves: HashMap<String, Vec<Leave>> = HashMap::new();
    for l in leave::Entity::find()
        .filter(leave::Column::TenantId.eq(tenant_id))
        .filter(leave::Column::FromDate.lte(day))
        .filter(leave::Column::ToDate.gte(day))
        .all(db)
        .await?
    {
        leaves.entry(l.user_id).or_default().push(Leave {
            from: l.from_date,
            to: l.to_date,
        });
    }
    let mut cases: HashMap<String, absence_case::Model> = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(tenant_id))
        .filter(absence_case::Column::Status.ne(CaseStatus::Resolved.as_str()))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.user_id.clone(), c))
        .collect();
    // Days already judged by a case that is closed now (the scan of a day
    // runs again hourly, for deadlines): never a new case for them.
    let judged: HashSet<String> = absence_case::Entity::find()
        .select_only()
        .column(absence_case::Column::UserId)
        .filter(absence_case::Column::TenantId.eq(tenant_id))
        .filter(absence_case::Column::Status.eq(CaseStatus::Resolved.as_str()))
        .filter(absence_case::Column::FirstMissed.lte(day))
        .filter(absence_case::Column::ScannedThrough.gte(day))
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();
    // The first check-in after the day, of each employee who came back since.
    // One row per person (a scan of an old day must not read every later check-in).
    let back: HashMap<String, NaiveDate> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::UserId)
        .column_as(check_in::Column::WorkDate.min(), "first_back")
        .filter(check_in::Column::TenantId.eq(tenant_id))
        .filter(check_in::Column::WorkDate.gt(day))
        .group_by(check_in::Column::UserId)
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();

    // Decide per employee without I/O; write only where something changes.
    enum Change {
        Open(String),
        /// A missed day of someone who has come back since: recorded as a
        /// case resolved by that return, with no reminder.
        OpenResolved(String, NaiveDate),
        /// Count `day` as missed (when true), then check the ladder.
        Advance(absence_case::Model, bool),
        Resolve(absence_case::Model, Resolution),
    }
    let mut changes = Vec::new();
    for w in &workers {
        let status = if w.employed {
            day_status(
                &a.calendar,
                w.rest,
                leaves.get(&w.user_id).map(Vec::as_slice).unwrap_or(&[]),
                day,
            )
        } else {
            // Before the hire date or after the contract: not a workday for them.
            DayStatus::RestDay
        };
        let case = cases.remove(&w.user_id);
        match (status, case) {
            (DayStatus::Workday, case) => {
                report.workday_for += 1;
                let present = checked.contains(&w.user_id);
                match case {
                    Some(c) if present && c.first_missed <= day => {
                        changes.push(Change::Resolve(c, Resolution::CheckedIn { day }))
                    }
                    Some(c) => changes.push(Change::Advance(c, !present)),
                    None if present || judged.contains(&w.user_id) => {}
                    None => match back.get(&w.user_id) {
                        Some(returned) => {
                            changes.push(Change::OpenResolved(w.user_id.clone(), *returned))
                        }
                        None => changes.push(Change::Open(w.user_id.clone())),
                    },
                }
            }
            // A day of leave is not a missed day; it does not close the case
            // either (`/leave` covering every missed day does).
            (_, Some(c)) => changes.push(Change::Advance(c, false)),
            (_, None) => {}
        }
    }
    // Cases of people no longer active still get their deadline checks.
    changes.extend(cases.into_values().map(|c| Change::Advance(c, false)));

    let policy = &tenant.config.policy;
    for chunk in changes.chunks(CHUNK) {
        // A scan cut off from the database for a whole lease stops: another
        // instance's scan of the tenant may have begun.
        lease.check()?;
        let txn = rt.db.write().await?;
        if rt.db.engine == crate::db::Engine::Postgres {
            // Other instances' scans of this tenant wait for this chunk.
            use sea_orm::ConnectionTrait;
            txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                [format!("scan:{tenant_id}").into()],
            ))
            .await?;
        }
        for change in chunk {
            let case = match change {
                // Judged already (by a case closed since it was read).
                Change::OpenResolved(user, _) | Change::Open(user)
                    if store::judged(&txn, tenant_id, user, day).await? =>
                {
                    continue;
                }
                Change::Open(user) => {
                    match store::open(&txn, tenant_id, user, day, policy, now).await? {
                        Some(c) => {
                            report.opened += 1;
                            c
                        }
                        None => continue,
                    }
                }
                Change::OpenResolved(user, returned) => {
                    if let Some(c) = store::open(&txn, tenant_id, user, day, policy, now).await? {
                        report.opened += 1;
                        let why = Resolution::CheckedIn { day: *returned };
                        if store::resolve(&txn, &c, &why, None, None, now).await? {
                            report.resolved += 1;
                        }
                    }
                    continue;
                }
                Change::Advance(c, missed) => {
                    // store::advance counts a day once (scanned_through < day).
                    let counted = if *missed {
                        store::advance(&txn, c, day, now).await?
                    } else {
                        None
                    };
                    if counted.is_some() {
                        report.advanced += 1;
                    }
                    // The case as it is now, inside this transaction: a
                    // check-in may have resolved it since it was read.
                    let current = match counted {
                        Some(c) => Some(c),
                        None => absence_case::Entity::find_by_id(c.id).one(&txn).await?,
                    };
                    match current {
                        Some(c) if CaseStatus::of(&c) != Some(CaseStatus::Resolved) => c,
                        _ => continue,
                    }
                }
                Change::Resolve(c, why) => {
                    if store::resolve(&txn, c, why, None, None, now).await? {
                        report.resolved += 1;
                    }
                    continue;
                }
            };
            if escalate(rt, &txn, &tenant, &case, now).await? {
                report.escalated += 1;
            }
        }
        txn.commit().await?;
    }
    lease.release().await?;
    Ok(report)
}

/// Issues what the ladder says is due for `case` now. Returns whether any step was issued.
pub async fn escalate<C: sea_orm::ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    now: DateTime<Utc>,
) -> Result<bool, ScanError> {
    if store::status_of(case) != CaseStatus::Open {
        return Ok(false);
    }
    // The deadline runs from a proven receipt of the formal notice, never
    // from its sending (a channel may take a message and not deliver it):
    // a proof that came since the last look starts it now.
    let case = &store::establish_receipt(conn, case, now).await?;
    let actions: Vec<Action> = decide(now, &store::state(case), &store::policy(case));
    if actions.is_empty() {
        return Ok(false);
    }
    let steps = issue(rt, conn, tenant, case, &actions, now).await?;
    store::mark_steps(conn, case, &steps, now).await?;
    Ok(!steps.is_empty())
}
