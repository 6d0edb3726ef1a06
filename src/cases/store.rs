//! Absence cases in the database: opening, advancing, pausing, resolving,
//! each with its case event. Resolving or pausing changes the fencing token,
//! so notices still queued for the case are cancelled instead of sent.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{absence_case, case_event};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::{Value, json};

use super::{CaseState, CaseStatus, DepartureState, Policy, Step};
use crate::evidence::{NewLeaf, append_later};

/// How a case is shown to people: `RC-000042`.
pub fn case_no(id: i64) -> String {
    format!("RC-{id:06}")
}

/// Reads `RC-000042`, `rc-42` or `42`.
pub fn parse_case_no(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t
        .strip_prefix("RC-")
        .or_else(|| t.strip_prefix("rc-"))
        .unwrap_or(t);
    digits.parse().ok().filter(|id| *id > 0)
}

/// The status the ladder works with: a word rollcall does not write counts
/// as open.
pub fn status_of(row: &absence_case::Model) -> CaseStatus {
    CaseStatus::of(row).unwrap_or(CaseStatus::Open)
}

pub fn steps_done(row: &absence_case::Model) -> BTreeSet<Step> {
    serde_json::from_str(&row.steps_done).unwrap_or_default()
}

/// The policy snapshotted onto the case.
pub fn policy(row: &absence_case::Model) -> Policy {
    serde_json::from_str(&row.policy).unwrap_or_default()
}

/// What [`super::decide`] needs of a stored case.
pub fn state(row: &absence_case::Model) -> CaseState {
    CaseState {
        status: status_of(row),
        missed_workdays: u32::try_from(row.missed_workdays).unwrap_or(0),
        steps_done: steps_done(row),
        receipt_at: row.receipt_at,
        acknowledged_at: row.acknowledged_at,
    }
}

/// Records something that happened, for the case file.
#[allow(clippy::too_many_arguments)]
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    case_id: Option<i64>,
    user_id: Option<&str>,
    kind: &str,
    actor: Option<&str>,
    detail: Value,
    inbound_event_id: Option<i64>,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let leaf = NewLeaf::new(kind)
        .case(case_id)
        .subject(user_id)
        .actor(actor)
        .detail(detail);
    record_leaf(conn, tenant_id, leaf, inbound_event_id, at).await?;
    Ok(())
}

/// Records `leaf` as a case event (its kind, case, subject, actor and
/// detail) and appends it to the evidence log with what only the leaf
/// carries (a document's hash, a file, the platform's time). Returns the
/// case event's id.
pub async fn record_leaf<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    leaf: NewLeaf,
    inbound_event_id: Option<i64>,
    at: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let inserted = case_event::Entity::insert(case_event::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        case_id: Set(leaf.case_id),
        user_id: Set(leaf.subject.clone()),
        kind: Set(leaf.kind.clone()),
        actor: Set(leaf.actor.clone()),
        detail: Set(leaf.detail.to_string()),
        inbound_event_id: Set(inbound_event_id),
        at: Set(at),
        ..Default::default()
    })
    .exec(conn)
    .await?;
    let mut leaf = leaf.source("case_events", inserted.last_insert_id);
    if let Some(event) = inbound_event_id {
        leaf = leaf.id("inbound_event", event.to_string());
    }
    append_later(conn, tenant_id, at, leaf).await?;
    Ok(inserted.last_insert_id)
}

/// Opens a case for a first missed workday, with `policy` snapshotted.
/// Returns `None` if the employee already has an unresolved case.
pub async fn open<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
    day: NaiveDate,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Option<absence_case::Model>, DbErr> {
    let row = absence_case::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        user_id: Set(user_id.to_owned()),
        status: Set(CaseStatus::Open.as_str().to_owned()),
        opened_at: Set(now),
        first_missed: Set(day),
        last_missed: Set(day),
        missed_workdays: Set(1),
        scanned_through: Set(day),
        steps_done: Set("[]".to_owned()),
        fence: Set(1),
        policy: Set(serde_json::to_string(policy).expect("plain data")),
        updated_at: Set(now),
        ..Default::default()
    };
    // No conflict target: the clash to ignore is on the partial unique
    // index (one unresolved case per employee), not on the id.
    let inserted = absence_case::Entity::insert(row)
        .on_conflict(
            sea_orm::sea_query::OnConflict::new()
                .do_nothing()
                .to_owned(),
        )
        .exec_with_returning(conn)
        .await;
    let case = match inserted {
        Ok(case) => case,
        Err(DbErr::RecordNotInserted | DbErr::RecordNotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    record(
        conn,
        tenant_id,
        Some(case.id),
        Some(user_id),
        "case_opened",
        None,
        json!({ "first_missed": day, "policy": policy }),
        None,
        now,
    )
    .await?;
    Ok(Some(case))
}

/// Counts one more missed workday, once per day.
pub async fn advance<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<absence_case::Model>, DbErr> {
    let updated = absence_case::Entity::update_many()
        .col_expr(
            absence_case::Column::MissedWorkdays,
            Expr::col(absence_case::Column::MissedWorkdays).add(1),
        )
        .col_expr(absence_case::Column::LastMissed, Expr::value(day))
        .col_expr(absence_case::Column::ScannedThrough, Expr::value(day))
        .col_expr(absence_case::Column::UpdatedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(case.id))
        .filter(absence_case::Column::ScannedThrough.lt(day))
        .filter(absence_case::Column::Status.ne(CaseStatus::Resolved.as_str()))
        .exec(conn)
        .await?;
    if updated.rows_affected == 0 {
        return Ok(None);
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "missed_workday",
        None,
        json!({ "day": day, "missed_workdays": case.missed_workdays + 1 }),
        None,
        now,
    )
    .await?;
    absence_case::Entity::find_by_id(case.id).one(conn).await
}

/// Marks `steps` issued; the formal notice also records when it was issued.
pub async fn mark_steps<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    steps: &BTreeSet<Step>,
    now: DateTime<Utc>,
) -> Result<absence_case::Model, DbErr> {
    let mut done = steps_done(case);
    done.extend(steps.iter().copied());
    let mut update = absence_case::Entity::update_many()
        .col_expr(
            absence_case::Column::StepsDone,
            Expr::value(serde_json::to_string(&done).expect("plain data")),
        )
        .col_expr(absence_case::Column::UpdatedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(case.id));
    // The deadline waits for a proven receipt (see [`establish_receipt`]).
    if steps.contains(&Step::FormalNotice) && case.formal_notice_at.is_none() {
        update = update.col_expr(absence_case::Column::FormalNoticeAt, Expr::value(now));
    }
    update.exec(conn).await?;
    for step in steps {
        record(
            conn,
            &case.tenant_id,
            Some(case.id),
            Some(&case.user_id),
            "step_issued",
            None,
            json!({ "step": step, "missed_workdays": case.missed_workdays }),
            None,
            now,
        )
        .await?;
    }
    absence_case::Entity::find_by_id(case.id)
        .one(conn)
        .await?
        .ok_or(DbErr::RecordNotFound(format!("case {}", case.id)))
}

/// Whether a case of the employee (open or closed) already judged `day`.
pub async fn judged<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
    day: NaiveDate,
) -> Result<bool, DbErr> {
    Ok(absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(tenant_id))
        .filter(absence_case::Column::UserId.eq(user_id))
        .filter(absence_case::Column::FirstMissed.lte(day))
        .filter(absence_case::Column::ScannedThrough.gte(day))
        .one(conn)
        .await?
        .is_some())
}

/// The employee's unresolved case, if any.
pub async fn unresolved<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<absence_case::Model>, DbErr> {
    absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(tenant_id))
        .filter(absence_case::Column::UserId.eq(user_id))
        .filter(absence_case::Column::Status.ne(CaseStatus::Resolved.as_str()))
        .one(conn)
        .await
}

/// Changes the status of `case` and its fencing token, if it is still at
/// `case.fence`. Returns whether this call made the change.
async fn transition<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    status: CaseStatus,
    resolution: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut update = absence_case::Entity::update_many()
        .col_expr(
            absence_case::Column::Status,
            Expr::value(status.as_str().to_owned()),
        )
        .col_expr(absence_case::Column::Fence, Expr::value(case.fence + 1))
        .col_expr(absence_case::Column::UpdatedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(case.id))
        .filter(absence_case::Column::Fence.eq(case.fence));
    if status == CaseStatus::Resolved {
        update = update
            .col_expr(absence_case::Column::ResolvedAt, Expr::value(now))
            .col_expr(
                absence_case::Column::Resolution,
                Expr::value(resolution.map(str::to_owned)),
            );
    }
    Ok(update.exec(conn).await?.rows_affected == 1)
}

/// Why a case was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    CheckedIn {
        day: NaiveDate,
    },
    Leave {
        from: NaiveDate,
        to: NaiveDate,
    },
    ClosedByHr {
        reason: String,
    },
    /// The self-departure process ended with the termination notice.
    Terminated,
}

impl Resolution {
    fn summary(&self) -> String {
        match self {
            Resolution::CheckedIn { day } => format!("checked_in {day}"),
            Resolution::Leave { from, to } => format!("leave {from}..{to}"),
            Resolution::ClosedByHr { reason } => format!("closed: {reason}"),
            Resolution::Terminated => "terminated".to_owned(),
        }
    }
}

/// Resolves `case` (stops its ladder). Returns whether it was still unresolved.
#[allow(clippy::too_many_arguments)]
pub async fn resolve<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    resolution: &Resolution,
    actor: Option<&str>,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if CaseStatus::of(case) == Some(CaseStatus::Resolved) {
        return Ok(false);
    }
    // A check-in never closes a case in the self-departure process: HR
    // decides (see `departure::halt`).
    let departing = CaseStatus::of(case) == Some(CaseStatus::Departing);
    if departing && matches!(resolution, Resolution::CheckedIn { .. }) {
        return Ok(false);
    }
    let summary = resolution.summary();
    if !transition(conn, case, CaseStatus::Resolved, Some(&summary), now).await? {
        return Ok(false);
    }
    // A self-departure process closed otherwise than by its notice ends too.
    if departing && *resolution != Resolution::Terminated {
        entity::departure::Entity::update_many()
            .col_expr(
                entity::departure::Column::State,
                Expr::value(DepartureState::Cancelled.as_str().to_owned()),
            )
            .col_expr(entity::departure::Column::UpdatedAt, Expr::value(now))
            .filter(entity::departure::Column::CaseId.eq(case.id))
            .filter(entity::departure::Column::State.ne(DepartureState::Terminated.as_str()))
            .exec(conn)
            .await?;
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "case_resolved",
        actor,
        json!({ "resolution": summary }),
        inbound_event_id,
        now,
    )
    .await?;
    Ok(true)
}

/// Pauses `case`: the employee answered, HR decides. Returns whether it was open.
pub async fn pause<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    why: Value,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if CaseStatus::of(case) != Some(CaseStatus::Open)
        || !transition(conn, case, CaseStatus::Paused, None, now).await?
    {
        return Ok(false);
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "case_paused",
        Some(&case.user_id),
        why,
        inbound_event_id,
        now,
    )
    .await?;
    Ok(true)
}

/// Resumes a paused case (HR decided): the ladder goes on, with a new
/// fencing token. Returns whether the case was paused.
pub async fn resume<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    actor: &str,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if CaseStatus::of(case) != Some(CaseStatus::Paused)
        || !transition(conn, case, CaseStatus::Open, None, now).await?
    {
        return Ok(false);
    }
    let reissue = unsent_steps(conn, case).await?;
    if !reissue.is_empty() {
        let mut done = steps_done(case);
        done.retain(|s| !reissue.contains(s));
        let mut update = absence_case::Entity::update_many()
            .col_expr(
                absence_case::Column::StepsDone,
                Expr::value(serde_json::to_string(&done).expect("plain data")),
            )
            .filter(absence_case::Column::Id.eq(case.id));
        if reissue.contains(&Step::FormalNotice) {
            update = update.col_expr(
                absence_case::Column::FormalNoticeAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        }
        update.exec(conn).await?;
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "case_resumed",
        Some(actor),
        json!({ "reissue": reissue }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    Ok(true)
}

/// The steps marked done on `case` none of whose notices to the employee
/// went out, nor will: every such row was cancelled, or is still waiting
/// under a fencing token the case no longer holds (its delivery will cancel
/// it). The step goes out again whole (HR's copies too). A pause stops
/// what was queued; a resume must send it again rather than leave the step
/// marked done with nothing sent.
async fn unsent_steps<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
) -> Result<Vec<Step>, DbErr> {
    use crate::outbox::OutboxStatus;
    let rows = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.eq(case.id))
        .all(conn)
        .await?;
    // The fence the transition just set.
    let fence = case.fence + 1;
    Ok(steps_done(case)
        .into_iter()
        .filter(|step| {
            // The employee's notices decide: a copy to HR that went out
            // does not make up for a notice to the employee that did not.
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r.step.as_deref() == Some(step.as_str()))
                .filter(|r| r.recipient == case.user_id)
                .collect();
            !mine.is_empty()
                && mine.iter().all(|r| {
                    r.status == OutboxStatus::Cancelled.as_str()
                        || (r.status == OutboxStatus::Pending.as_str()
                            && r.fence.is_some_and(|f| f != fence))
                })
        })
        .collect())
}

/// Stops the ladder of an open or paused case for the self-departure
/// process (a new fencing token cancels what is still queued). Returns
/// whether this call started it.
pub async fn begin_departure<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    actor: &str,
    via: &str,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if !matches!(
        CaseStatus::of(case),
        Some(CaseStatus::Open | CaseStatus::Paused)
    ) || !transition(conn, case, CaseStatus::Departing, None, now).await?
    {
        return Ok(false);
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "departure_started",
        Some(actor),
        json!({ "via": via, "from_status": case.status, "deadline": case.deadline_at }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    Ok(true)
}

/// The employee acknowledged the formal notice (saw it; the case stays open).
pub async fn acknowledge<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    absence_case::Entity::update_many()
        .col_expr(absence_case::Column::AcknowledgedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(case.id))
        .filter(absence_case::Column::AcknowledgedAt.is_null())
        .exec(conn)
        .await?;
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "notice_acknowledged",
        Some(&case.user_id),
        json!({}),
        inbound_event_id,
        now,
    )
    .await
}

/// Case `id` as it stands.
pub async fn reload<C: ConnectionTrait>(conn: &C, id: i64) -> Result<absence_case::Model, DbErr> {
    absence_case::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(DbErr::RecordNotFound(format!("case {id}")))
}

/// How long a copy sent to an agreed address waits before it counts (its
/// sending time is then the delivery): long enough for a platform's read
/// check or a gateway's report to say it never arrived.
pub const DEEMED_AFTER_HOURS: i64 = 24;

/// When the employee's copy of the formal notice counts as delivered at an
/// agreed address: only if the employee record holds consent to electronic
/// delivery with where and when it was agreed (the contract clause, the
/// date), the agreement predates the copy, and the copy itself told the
/// employee so (it names the clause: an agreement recorded after the
/// notice went out does not reach back). Then the first such copy sent on
/// chat, SMS or email counts from when it was sent, once it has stood
/// [`DEEMED_AFTER_HOURS`] without failing (the policy's
/// `expected_receipt_days` is added to the deadline). Returns (sent at,
/// channel, outbox row).
async fn deemed_delivery<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, String, i64)>, DbErr> {
    let Some(employee) = entity::employee::Entity::find()
        .filter(entity::employee::Column::TenantId.eq(&case.tenant_id))
        .filter(entity::employee::Column::UserId.eq(&case.user_id))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let (Some(true), Some(clause), Some(agreed_on)) = (
        employee.electronic_consent,
        employee.delivery_clause,
        employee.delivery_agreed_on,
    ) else {
        return Ok(None);
    };
    Ok(entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.eq(case.id))
        .filter(entity::outbox::Column::Step.eq("formal_notice"))
        .filter(entity::outbox::Column::Recipient.eq(&case.user_id))
        .filter(entity::outbox::Column::Status.eq("sent"))
        .all(conn)
        .await?
        .into_iter()
        .filter(|r| {
            match serde_json::from_str::<crate::outbox::Payload>(&r.payload) {
                // The notice itself, not the card asking to acknowledge it.
                Ok(crate::outbox::Payload::Card { .. }) | Err(_) => false,
                Ok(p) => p.text().contains(&clause),
            }
        })
        .filter_map(|r| Some((r.sent_at?, r.channel, r.id)))
        .filter(|(at, _, _)| {
            agreed_on <= at.date_naive() && *at + Duration::hours(DEEMED_AFTER_HOURS) <= now
        })
        .min_by_key(|(at, _, _)| *at))
}

/// How long after its publication a public announcement (公告送达) counts
/// as delivered (民事诉讼法 art. 95: 30 days).
pub const ANNOUNCEMENT_DAYS: i64 = 30;

/// What `/announce` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced {
    /// No formal notice was sent yet: there is nothing to announce.
    NoNotice,
    /// The notice is proven received already.
    Received,
    /// A copy is still pending, or was sent and may have arrived: the
    /// channels and their state. An announcement is for when every channel
    /// failed.
    Reachable(Vec<String>),
    /// Recorded before (its deemed delivery).
    Already(DateTime<Utc>),
    /// Recorded now: delivered as of `deemed_at`.
    Recorded { deemed_at: DateTime<Utc> },
}

/// Records that the formal notice of `case` was published on `published_at`
/// (the day's start, tenant time) at `place`, by `actor`: it counts as
/// delivered once [`ANNOUNCEMENT_DAYS`] full days have passed after that
/// day, and only when every copy sent to the employee failed for good
/// (none pending, sent or cancelled). The caller checks the date (not
/// before the notice, not in the future).
#[allow(clippy::too_many_arguments)]
pub async fn record_announcement<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    actor: &str,
    published_at: DateTime<Utc>,
    place: &str,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Announced, DbErr> {
    if case.formal_notice_at.is_none() {
        return Ok(Announced::NoNotice);
    }
    if case.receipt_at.is_some() {
        return Ok(Announced::Received);
    }
    if let Some(at) = announced(conn, case).await? {
        return Ok(Announced::Already(at));
    }
    let reachable: Vec<String> = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.eq(case.id))
        .filter(entity::outbox::Column::Step.eq("formal_notice"))
        .filter(entity::outbox::Column::Recipient.eq(&case.user_id))
        .all(conn)
        .await?
        .into_iter()
        // Failed for good, on every channel: a cancelled copy (the case
        // paused when the employee answered) is no failure, the employee
        // was reachable.
        .filter(|r| {
            !matches!(
                crate::outbox::OutboxStatus::of(r),
                Some(
                    crate::outbox::OutboxStatus::Failed
                        | crate::outbox::OutboxStatus::Undeliverable
                )
            )
        })
        .map(|r| format!("{}:{}", r.channel, r.status))
        .chain(
            letters_in_post(conn, case.id)
                .await?
                .into_iter()
                .map(|t| format!("post:{t}")),
        )
        .collect();
    if !reachable.is_empty() {
        return Ok(Announced::Reachable(reachable));
    }
    // The day of publication does not count (民法典 art. 201): the 30 days
    // end with the 30th day after it, so delivery is deemed at the start of
    // the next.
    let deemed_at = published_at + Duration::days(ANNOUNCEMENT_DAYS + 1);
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "notice_announced",
        Some(actor),
        json!({ "published_at": published_at, "place": place, "deemed_delivered_at": deemed_at }),
        inbound_event_id,
        now,
    )
    .await?;
    Ok(Announced::Recorded { deemed_at })
}

/// The postal events of a case (`letter_mailed`, `letter_signed`,
/// `letter_returned`), with their details, in order.
pub(crate) async fn letter_events<C: ConnectionTrait>(
    conn: &C,
    case_id: i64,
) -> Result<Vec<(String, Value)>, DbErr> {
    Ok(case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case_id))
        .filter(case_event::Column::Kind.is_in([
            "letter_mailed",
            "letter_signed",
            "letter_returned",
        ]))
        .order_by_asc(case_event::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .filter_map(|e| Some((e.kind, serde_json::from_str(&e.detail).ok()?)))
        .collect())
}

/// When the formal notice of case `case_id` counts as received by post:
/// a letter of it recorded as signed for (`/邮政 签收`) counts from the
/// start of the day after the slip's date, but only once a file was filed
/// on the case (`#证据`: the slip, or the tracking page) after the letter
/// was mailed. HR's word alone starts no deadline.
async fn signed_letter<C: ConnectionTrait>(
    conn: &C,
    case_id: i64,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let events = letter_events(conn, case_id).await?;
    let mut earliest = None;
    for (kind, d) in &events {
        if kind != "letter_signed" || d["kind"] != "formal_notice" {
            continue;
        }
        let Some(received) = d["received_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let mailed_at = case_event::Entity::find_by_id(d["mailed_event"].as_i64().unwrap_or(0))
            .one(conn)
            .await?
            .map(|e| e.at);
        let Some(mailed_at) = mailed_at else { continue };
        let slip = entity::exhibit::Entity::find()
            .filter(entity::exhibit::Column::CaseId.eq(case_id))
            .filter(entity::exhibit::Column::RecordedAt.gte(mailed_at))
            .one(conn)
            .await?;
        if slip.is_some() && earliest.is_none_or(|e| received < e) {
            earliest = Some(received);
        }
    }
    Ok(earliest)
}

/// The tracking numbers of the formal-notice letters of a case that are
/// still in the post (neither signed for nor returned).
async fn letters_in_post<C: ConnectionTrait>(conn: &C, case_id: i64) -> Result<Vec<String>, DbErr> {
    let events = letter_events(conn, case_id).await?;
    let settled: BTreeSet<&str> = events
        .iter()
        .filter(|(kind, _)| kind != "letter_mailed")
        .filter_map(|(_, d)| d["tracking_no"].as_str())
        .collect();
    Ok(events
        .iter()
        .filter(|(kind, d)| kind == "letter_mailed" && d["kind"] == "formal_notice")
        .filter_map(|(_, d)| d["tracking_no"].as_str())
        .filter(|t| !settled.contains(t))
        .map(str::to_owned)
        .collect())
}

/// When the announcement of `case`'s notice counts as delivered, if one
/// was recorded.
async fn announced<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    Ok(case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .filter(case_event::Column::Kind.eq("notice_announced"))
        .one(conn)
        .await?
        .and_then(|e| {
            serde_json::from_str::<Value>(&e.detail).ok()?["deemed_delivered_at"]
                .as_str()?
                .parse::<DateTime<Utc>>()
                .ok()
        }))
}

/// Proves, if it can, that the employee of `case` received the formal
/// notice, and starts the deadline from the earliest proof: their
/// acknowledgment (已收到), the platform's word that they read the
/// notice's text on chat (DingTalk, Feishu), the SMS gateway's report that
/// their handset received the text (`delivered:sms`), a registered letter
/// signed for (see [`super::post`]), a copy at an agreed address, or a
/// public announcement whose 30 days ran. A notice that was only sent
/// proves nothing (a platform may accept a message and never deliver it),
/// so it starts no deadline. The first proof found fixes the deadline;
/// later ones change nothing. Returns the case as it now stands.
pub async fn establish_receipt<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    now: DateTime<Utc>,
) -> Result<absence_case::Model, DbErr> {
    if case.receipt_at.is_some() || case.formal_notice_at.is_none() {
        return Ok(case.clone());
    }
    let read = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.eq(case.id))
        .filter(entity::outbox::Column::Step.eq("formal_notice"))
        .filter(entity::outbox::Column::Recipient.eq(&case.user_id))
        .filter(entity::outbox::Column::Channel.eq("chat"))
        .filter(entity::outbox::Column::ReadAt.is_not_null())
        .all(conn)
        .await?
        .into_iter()
        // The notice's text, not the card that asks to acknowledge it.
        .filter(|r| {
            !matches!(
                serde_json::from_str::<crate::outbox::Payload>(&r.payload),
                Ok(crate::outbox::Payload::Card { .. })
            )
        })
        .filter_map(|r| Some((r.read_at?, r.id)))
        .min();
    // The gateway's report that the handset received the text.
    let delivered = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.eq(case.id))
        .filter(entity::outbox::Column::Step.eq("formal_notice"))
        .filter(entity::outbox::Column::Recipient.eq(&case.user_id))
        .filter(entity::outbox::Column::Channel.eq("sms"))
        .filter(entity::outbox::Column::Status.eq("sent"))
        .filter(entity::outbox::Column::DeliveryStatus.eq("delivered"))
        .all(conn)
        .await?
        .into_iter()
        .filter_map(|r| Some((r.delivered_at?, r.id)))
        .min();
    let deemed = deemed_delivery(conn, case, now).await?;
    let signed = signed_letter(conn, case.id).await?;
    let proofs = [
        signed.map(|at| (at, "signed:post".to_owned(), None)),
        case.acknowledged_at
            .map(|at| (at, "acknowledged".to_owned(), None)),
        read.map(|(at, id)| (at, "read:chat".to_owned(), Some(id))),
        delivered.map(|(at, id)| (at, "delivered:sms".to_owned(), Some(id))),
        deemed.map(|(at, channel, id)| (at, format!("deemed:{channel}"), Some(id))),
        announced(conn, case)
            .await?
            .filter(|at| *at <= now)
            .map(|at| (at, "announced".to_owned(), None)),
    ];
    let Some((at, via, outbox_id)) = proofs.into_iter().flatten().min_by_key(|p| p.0) else {
        return Ok(case.clone());
    };
    let deadline = policy(case).deadline(at);
    let first = absence_case::Entity::update_many()
        .col_expr(absence_case::Column::ReceiptAt, Expr::value(at))
        .col_expr(absence_case::Column::ReceiptVia, Expr::value(via.clone()))
        .col_expr(absence_case::Column::DeadlineAt, Expr::value(deadline))
        .col_expr(absence_case::Column::UpdatedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(case.id))
        .filter(absence_case::Column::ReceiptAt.is_null())
        .exec(conn)
        .await?
        .rows_affected
        == 1;
    if first {
        record(
            conn,
            &case.tenant_id,
            Some(case.id),
            Some(&case.user_id),
            "notice_received",
            None,
            json!({ "via": via, "received_at": at, "deadline": deadline, "outbox": outbox_id }),
            None,
            now,
        )
        .await?;
    }
    absence_case::Entity::find_by_id(case.id)
        .one(conn)
        .await?
        .ok_or(DbErr::RecordNotFound(format!("case {}", case.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("RC-000042", Some(42))]
    #[case("rc-42", Some(42))]
    #[case("42", Some(42))]
    #[case(" RC-7 ", Some(7))]
    #[case("RC-", None)]
    #[case("0", None)]
    #[case("张三", None)]
    fn case_numbers_parse(#[case] text: &str, #[case] expected: Option<i64>) {
        assert_eq!(parse_case_no(text), expected);
    }

    #[test]
    fn case_numbers_print_and_parse_back() {
        assert_eq!(case_no(42), "RC-000042");
        assert_eq!(parse_case_no(&case_no(123_456_789)), Some(123_456_789));
    }
}
