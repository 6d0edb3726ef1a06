//! The platform's own punch records (DingTalk's attendance app, WeCom's
//! 打卡), read through the tenant's chat API and recorded as check-ins with
//! source `punch`, so that employees who already clock in there need not
//! also chat. Each punch is stored as an inbound event keyed by its person
//! and time (the key a punch event of the same punch gets too: stored
//! once, however it arrived), with the record as the platform answered it
//! as its raw body, and handled like any event: a check-in, a leaf, a case
//! closed where it closes one.

use chrono::{DateTime, Utc};
use entity::{employee, inbound_event};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::conversation::{self, turn::HandleError};
use crate::inbox::{Inbox, InboxError, NewInbound, Stored};
use crate::platform::PlatformError;
use crate::runtime::Runtime;

/// Keys looked up per query.
const IN_CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("tenant `{0}` has no chat platform configured")]
    NoPlatform(String),
    #[error("reading the punches from the platform failed: {0}")]
    Platform(#[from] PlatformError),
    #[error("storing the punches failed: {0}")]
    Store(#[from] InboxError),
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("recording a punch failed: {0}")]
    Handle(#[from] HandleError),
    #[error("no such period: {0}")]
    Period(String),
}

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    pub tenant: String,
    /// Punches the platform listed in the period.
    pub listed: usize,
    /// Of those, punches rollcall had not stored before.
    pub new: usize,
}

/// Reads the punches of `tenant_id`'s active employees from `from` to `to`
/// from its platform, stores the new ones, and handles every listed punch
/// not handled yet (a check-in each) before it returns, so that a scan
/// right after counts them.
pub async fn import(
    rt: &Runtime,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Imported, ImportError> {
    let tenant = rt
        .tenant(tenant_id)
        .ok_or_else(|| ImportError::UnknownTenant(tenant_id.to_owned()))?;
    let api = tenant
        .chat
        .clone()
        .ok_or_else(|| ImportError::NoPlatform(tenant_id.to_owned()))?;
    let db = &rt.db.orm;
    let users: Vec<String> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .filter(employee::Column::TenantId.eq(tenant_id))
        .filter(employee::Column::Active.eq(true))
        .order_by_asc(employee::Column::UserId)
        .into_tuple()
        .all(db)
        .await?;
    let mut report = Imported {
        tenant: tenant_id.to_owned(),
        ..Default::default()
    };
    if users.is_empty() {
        return Ok(report);
    }
    let records = api.punches(&users, from, to).await?;
    report.listed = records.len();

    let (inbox, mut committers) = Inbox::start(rt.db.clone());
    let mut keys = Vec::with_capacity(records.len());
    for record in &records {
        let row = NewInbound::new(
            tenant_id,
            api.platform(),
            &record.event,
            record.request.clone(),
            record.raw.clone(),
            record.raw.clone(),
            Utc::now(),
        );
        if inbox.store(row).await? == Stored::New {
            report.new += 1;
        }
        keys.push(record.event.dedup_key.clone());
    }
    drop(inbox);
    while committers.join_next().await.is_some() {}

    // Every listed punch not yet handled is handled here, in the order they
    // were punched, rather than left to the queued jobs (which then find
    // them handled): the new ones, and those stored before but not handled
    // yet (a punch event still in the queue, an import that stopped
    // half-way, another import running beside this one). Handling claims
    // each row, so doing it twice does nothing twice.
    let mut ids: Vec<(i64, i64)> = Vec::new();
    for keys in keys.chunks(IN_CHUNK) {
        let rows: Vec<(i64, i64)> = inbound_event::Entity::find()
            .select_only()
            .column(inbound_event::Column::PlatformTime)
            .column(inbound_event::Column::Id)
            .filter(inbound_event::Column::TenantId.eq(tenant_id))
            .filter(inbound_event::Column::Platform.eq(api.platform()))
            .filter(inbound_event::Column::MsgKey.is_in(keys.iter().cloned()))
            .filter(inbound_event::Column::ProcessedAt.is_null())
            .into_tuple()
            .all(db)
            .await?;
        ids.extend(rows);
    }
    ids.sort();
    for (_, id) in ids {
        conversation::handle(rt, id).await?;
    }
    tracing::info!(
        tenant = tenant_id,
        listed = report.listed,
        new = report.new,
        "imported the platform's punches"
    );
    Ok(report)
}

/// The instants from the start of day `from` (default: yesterday) to the
/// end of day `to` (default: today) in `tenant_id`'s time zone, the end no
/// later than now.
pub fn period(
    rt: &Runtime,
    tenant_id: &str,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ImportError> {
    let tenant = rt
        .tenant(tenant_id)
        .ok_or_else(|| ImportError::UnknownTenant(tenant_id.to_owned()))?;
    let tz = tenant.config.timezone;
    let now = rt.clock.now();
    let today = now.with_timezone(&tz).date_naive();
    let from = from.unwrap_or(today - chrono::Duration::days(1));
    let to = to.unwrap_or(today);
    if from > to {
        return Err(ImportError::Period(format!("{from} is after {to}")));
    }
    let start = start_of(from, tz).unwrap_or(now);
    let end = to
        .succ_opt()
        .and_then(|next| start_of(next, tz))
        .map_or(now, |t| (t - chrono::Duration::seconds(1)).min(now));
    Ok((start, end))
}

/// When `day` begins in `tz`.
fn start_of(day: chrono::NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    day.and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(tz).earliest())
        .map(|t| t.with_timezone(&Utc))
}

/// Why [`scan`] did not judge the day.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The tenant counts the platform's punches and they could not be
    /// read: judging the day now could count absent someone who punched.
    #[error("the day is not judged until the platform's punches can be read: {0}")]
    Punches(#[from] ImportError),
    #[error(transparent)]
    Scan(#[from] crate::cases::scan::ScanError),
}

/// The absence scan of `tenant_id` for `day` (default: the last ended
/// workday), after importing the platform's punches from that day's start
/// to now when the tenant counts them (`attendance.platform_punches`): the
/// hourly scans so bring in today's punches too, which close the cases of
/// people back at work.
pub async fn scan(
    rt: &Runtime,
    tenant_id: &str,
    day: Option<chrono::NaiveDate>,
) -> Result<crate::cases::scan::ScanReport, ScanError> {
    use crate::cases::scan::{ScanError as Judging, default_day};
    let tenant = rt
        .tenant(tenant_id)
        .ok_or_else(|| Judging::UnknownTenant(tenant_id.to_owned()))?;
    if tenant.config.attendance.platform_punches {
        let now = rt.clock.now();
        let day = match day {
            Some(day) => day,
            None => default_day(tenant, now)?,
        };
        let from = start_of(day, tenant.config.timezone).unwrap_or(now);
        import(rt, tenant_id, from, now).await?;
        return Ok(crate::cases::scan::scan(rt, tenant_id, Some(day)).await?);
    }
    Ok(crate::cases::scan::scan(rt, tenant_id, day).await?)
}
