//! The self-departure (自离) process of a case whose formal notice's deadline
//! has passed. HR starts it (the deadline card's button, or `/depart`): the
//! case leaves the ladder (status `departing`, a new fencing token) and the
//! termination notice (解除劳动合同通知书) is drafted once from the case's
//! facts. The manager and HR each confirm the draft on a card (recorded with
//! the draft's SHA-256), and HR records that the union was told beforehand
//! (劳动合同法 art. 43) or that there is none. When all three are in, the
//! notice goes out exactly as confirmed over the formal notice's channels,
//! and the case closes as `terminated`.
//!
//! An employee who checks in or answers meanwhile halts the process (nothing
//! goes out by itself) and HR is told: `/resolve` closes the case, `/resume`
//! goes on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entity::{absence_case, departure, employee, outbox};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::notify::{NotifyError, local, missed_days};
use super::status::{CaseStatus, DepartureState};
use super::store::{self, Resolution, case_no, record, record_leaf};
use super::{Channel, Policy, Recipient, Step};
use crate::employees::directory::{Unseal, employee_row, hr_people, person};
use crate::evidence::NewLeaf;
use crate::evidence::log::sha256_hex;
use crate::outbox::render::Rendered;
use crate::outbox::{Button, NewMessage, OutboxStatus, Payload, channel_name, enqueue};
use crate::runtime::{Runtime, Tenant};

/// The template of the termination notice, and the blocks drafted.
const DOCUMENT: &str = "termination_notice.employee";
const DOCUMENT_BLOCKS: &[&str] = &[
    "title",
    "body",
    "card_summary",
    "button_termination_received",
    "sms",
    "email_subject",
];
/// The step name in outbox rows and idempotency keys.
const STEP: &str = "termination_notice";

/// In what capacity someone confirms the facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    Manager,
    Hr,
}

impl Capacity {
    pub fn as_str(self) -> &'static str {
        match self {
            Capacity::Manager => "manager",
            Capacity::Hr => "hr",
        }
    }

    /// The card action of its button.
    pub fn action(self) -> &'static str {
        match self {
            Capacity::Manager => "confirm_manager",
            Capacity::Hr => "confirm_hr",
        }
    }
}

/// What HR records about the union (劳动合同法 art. 43). Stored as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnionNotice {
    /// The reasons were notified to the union beforehand.
    Notified,
    /// The employer has no union.
    NoUnion,
}

impl UnionNotice {
    pub fn as_str(self) -> &'static str {
        match self {
            UnionNotice::Notified => "notified",
            UnionNotice::NoUnion => "no_union",
        }
    }

    /// The card action of its button.
    pub fn action(self) -> &'static str {
        match self {
            UnionNotice::Notified => "union_notified",
            UnionNotice::NoUnion => "no_union",
        }
    }
}

/// Why the process did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The case is closed.
    Closed,
    /// Nothing proves the employee received the formal notice (no
    /// acknowledgment, no read receipt): its deadline has not started.
    NotReceived,
    /// The formal notice's deadline has not passed.
    NotDue { deadline: Option<DateTime<Utc>> },
    /// It was started already.
    Already,
}

/// A started process.
#[derive(Debug, Clone)]
pub struct Started {
    pub case: absence_case::Model,
    pub departure: departure::Model,
    pub manager: Option<employee::Model>,
}

/// Where a process stands after a step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub departure: departure::Model,
    /// What is still missing: `returned`, `manager`, `hr`, `union`.
    pub pending: Vec<&'static str>,
    /// This step sent the termination notice.
    pub terminated: bool,
}

/// What became of a confirmation or the union item.
#[derive(Debug, Clone)]
pub enum Recorded {
    Done(Progress),
    /// Someone recorded this item already; nothing new.
    Already(departure::Model),
    /// No process in progress on this case.
    Stale,
}

/// The drafted notice as stored: its rendered blocks and the facts they
/// were rendered from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Document {
    blocks: BTreeMap<String, String>,
    facts: Value,
}

fn document_of(d: &departure::Model) -> Document {
    serde_json::from_str(&d.document).unwrap_or(Document {
        blocks: BTreeMap::new(),
        facts: Value::Null,
    })
}

/// The process of a case, if one was started.
pub async fn of_case<C: ConnectionTrait>(
    conn: &C,
    case_id: i64,
) -> Result<Option<departure::Model>, DbErr> {
    departure::Entity::find()
        .filter(departure::Column::CaseId.eq(case_id))
        .one(conn)
        .await
}

async fn reload_case<C: ConnectionTrait>(conn: &C, id: i64) -> Result<absence_case::Model, DbErr> {
    absence_case::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("case {id}")))
}

async fn reload<C: ConnectionTrait>(conn: &C, id: i64) -> Result<departure::Model, DbErr> {
    departure::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("departure {id}")))
}

/// What is still missing before the notice can go out.
pub fn pending(d: &departure::Model) -> Vec<&'static str> {
    let mut out = Vec::new();
    if DepartureState::of(d) == Some(DepartureState::Halted) {
        out.push("returned");
    }
    if d.manager_user_id.is_some() && d.manager_confirmed_at.is_none() {
        out.push("manager");
    }
    if d.hr_confirmed_at.is_none() {
        out.push("hr");
    }
    if d.union_status.is_none() {
        out.push("union");
    }
    out
}

fn local_day(tenant: &Tenant, at: DateTime<Utc>) -> String {
    at.with_timezone(&tenant.config.timezone)
        .format("%Y-%m-%d")
        .to_string()
}

/// The facts the notice states, as of `now`.
async fn facts<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    subject: &employee::Model,
    now: DateTime<Utc>,
) -> Result<Value, DbErr> {
    let dates: Vec<String> = missed_days(tenant, subject, case)
        .iter()
        .map(|d| d.to_string())
        .collect();
    // Each channel the formal notice reached the employee on, with its receipt.
    let receipts: Vec<Value> = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case.id))
        .filter(outbox::Column::Step.eq(Step::FormalNotice.as_str()))
        .filter(outbox::Column::Recipient.eq(&case.user_id))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent.as_str()))
        .order_by_asc(outbox::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .filter(|r| !r.idem_key.ends_with("-ack"))
        .filter_map(|r| {
            Some(json!({
                "channel": r.channel,
                "at": local(tenant, r.sent_at?),
                "receipt": r.receipt_id,
            }))
        })
        .collect();
    let policy = store::policy(case);
    Ok(json!({
        "employer": tenant.config.name,
        "case_no": case_no(case.id),
        "name": subject.name,
        "user_id": subject.user_id,
        "department": subject.department,
        "hire_date": subject.hire_date.map(|d| d.to_string()),
        "first_missed": case.first_missed.to_string(),
        "last_missed": case.last_missed.to_string(),
        "missed_days": case.missed_workdays,
        "dates": dates,
        "formal_notice_at": case.formal_notice_at.map(|t| local(tenant, t)),
        "receipts": receipts,
        "acknowledged_at": case.acknowledged_at.map(|t| local(tenant, t)),
        "deadline": case.deadline_at.map(|t| local(tenant, t)),
        "rule": tenant.config.notice.rule,
        "rule_version": tenant.config.notice.rule_version,
        "policy_version": policy.version,
        "hr_contact": tenant.config.notice.hr_contact,
        "today": local_day(tenant, now),
    }))
}

/// A message about `case` to `to`, keyed `key`, carrying the case's fence.
#[allow(clippy::too_many_arguments)]
async fn send<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    key: String,
    step: &str,
    to: &str,
    rendered: &Rendered,
    payload: Payload,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let message = NewMessage {
        secret: None,
        tenant_id: case.tenant_id.clone(),
        idem_key: key,
        case_id: Some(case.id),
        fence: Some(case.fence),
        step: Some(step.to_owned()),
        recipient: to.to_owned(),
        template: rendered.template.clone(),
        template_hash: rendered.hash.clone(),
        payload,
    };
    enqueue(conn, message, now).await?;
    Ok(())
}

fn card(
    tenant: &Tenant,
    case: &absence_case::Model,
    step: &str,
    title: &str,
    body: &str,
    buttons: &[(&str, &str)],
) -> Payload {
    Payload::Card {
        source: tenant.config.name.clone(),
        title: title.to_owned(),
        body: body.to_owned(),
        card_id: format!("rc-{}-{step}-{}", case.id, ulid::Ulid::new()),
        buttons: buttons
            .iter()
            .map(|(action, label)| Button {
                action: (*action).to_owned(),
                label: (*label).to_owned(),
                key: String::new(),
            })
            .collect(),
    }
}

/// Starts the process on `case` for `actor` (HR), started `via` the card
/// or a command: stops the ladder, drafts the notice, and sends the draft
/// with a card to confirm it to the manager and to HR, and HR the union card.
#[allow(clippy::too_many_arguments)]
pub async fn start<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    actor: &employee::Model,
    via: &str,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<Result<Started, Refusal>, NotifyError> {
    match CaseStatus::of(case) {
        Some(CaseStatus::Resolved) => return Ok(Err(Refusal::Closed)),
        Some(CaseStatus::Departing) => return Ok(Err(Refusal::Already)),
        _ => {}
    }
    // No 自离 on a notice nobody can prove arrived (违法解除 otherwise).
    let case = &store::establish_receipt(conn, case, now).await?;
    if case.receipt_at.is_none() {
        return Ok(Err(Refusal::NotReceived));
    }
    if case.deadline_at.is_none_or(|d| now < d) {
        return Ok(Err(Refusal::NotDue {
            deadline: case.deadline_at,
        }));
    }
    if !store::begin_departure(conn, case, &actor.user_id, via, inbound_event_id, now).await? {
        return Ok(Err(Refusal::Already));
    }
    let case = reload_case(conn, case.id).await?;
    let tenant_id = &tenant.config.id;
    let subject = employee_row(conn, tenant_id, &case.user_id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("employee {}", case.user_id)))?;
    let manager = match &subject.manager_user_id {
        Some(m) => employee_row(conn, tenant_id, m)
            .await?
            .filter(|m| m.active && m.user_id != subject.user_id),
        None => None,
    };
    let facts = facts(conn, tenant, &case, &subject, now).await?;
    let drafted =
        rt.templates
            .render_for(tenant.config.platform(), DOCUMENT, &facts, DOCUMENT_BLOCKS)?;
    let body = drafted.block("body").to_owned();
    let document_sha256 = sha256_hex(body.as_bytes());
    let document = Document {
        blocks: drafted.blocks.clone(),
        facts: facts.clone(),
    };
    let row = departure::Entity::insert(departure::ActiveModel {
        tenant_id: Set(tenant_id.clone()),
        case_id: Set(case.id),
        user_id: Set(case.user_id.clone()),
        state: Set(DepartureState::Collecting.as_str().to_owned()),
        started_at: Set(now),
        started_by: Set(actor.user_id.clone()),
        started_via: Set(via.to_owned()),
        document_template: Set(drafted.template.clone()),
        document_template_hash: Set(drafted.hash.clone()),
        document: Set(serde_json::to_string(&document).expect("plain data")),
        document_sha256: Set(document_sha256.clone()),
        manager_user_id: Set(manager.as_ref().map(|m| m.user_id.clone())),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec_with_returning(conn)
    .await?;
    // The draft itself is evidence: its text, template and hash.
    let leaf = NewLeaf::new("departure_drafted")
        .case(Some(case.id))
        .subject(Some(&case.user_id))
        .actor(Some(&actor.user_id))
        .template(&drafted.template, &drafted.hash)
        .text(&body)
        .raw("document", "text/plain; charset=utf-8", body.clone())
        .detail(json!({
            "departure": row.id,
            "document_sha256": document_sha256,
            "manager": row.manager_user_id,
            "facts": facts,
        }));
    record_leaf(conn, tenant_id, leaf, Some(inbound_event_id), now).await?;

    let context = json!({
        "name": subject.name,
        "case_no": case_no(case.id),
        "document_sha256": document_sha256,
        "document_title": drafted.block("title"),
        "document_body": body,
        "actor_name": actor.name,
        "started_at": local(tenant, now),
        "first_missed": case.first_missed.to_string(),
        "missed_days": case.missed_workdays,
        "formal_notice_at": case.formal_notice_at.map(|t| local(tenant, t)),
        "deadline": case.deadline_at.map(|t| local(tenant, t)),
    });
    let process = rt.templates.render(
        "departure",
        &context,
        &[
            "draft",
            "confirm_title",
            "confirm_body",
            "button_confirm",
            "union_title",
            "union_body",
            "button_union_notified",
            "button_no_union",
        ],
    )?;
    let mut confirmers: Vec<(&employee::Model, Capacity)> = Vec::new();
    if let Some(m) = &manager {
        confirmers.push((m, Capacity::Manager));
    }
    let hr = hr_people(conn, tenant_id).await?;
    confirmers.extend(hr.iter().map(|h| (h, Capacity::Hr)));
    for (person, capacity) in confirmers {
        let to = &person.user_id;
        let c = case.id;
        let draft = Payload::Text {
            content: process.block("draft").to_owned(),
        };
        send(
            conn,
            &case,
            format!("departure:{c}:draft:{}:{to}", capacity.as_str()),
            "departure_draft",
            to,
            &process,
            draft,
            now,
        )
        .await?;
        let confirm = card(
            tenant,
            &case,
            "departure_confirm",
            process.block("confirm_title"),
            process.block("confirm_body"),
            &[(capacity.action(), process.block("button_confirm"))],
        );
        send(
            conn,
            &case,
            format!("departure:{c}:confirm_{}:{to}", capacity.as_str()),
            "departure_confirm",
            to,
            &process,
            confirm,
            now,
        )
        .await?;
        if capacity == Capacity::Hr {
            let union = card(
                tenant,
                &case,
                "departure_union",
                process.block("union_title"),
                process.block("union_body"),
                &[
                    (
                        UnionNotice::Notified.action(),
                        process.block("button_union_notified"),
                    ),
                    (
                        UnionNotice::NoUnion.action(),
                        process.block("button_no_union"),
                    ),
                ],
            );
            send(
                conn,
                &case,
                format!("departure:{c}:union:{to}"),
                "departure_union",
                to,
                &process,
                union,
                now,
            )
            .await?;
        }
    }
    Ok(Ok(Started {
        case,
        departure: row,
        manager,
    }))
}

/// `sender` confirms the draft's facts in `capacity` (one confirmation per
/// capacity counts). Sends the notice if that was the last item.
#[allow(clippy::too_many_arguments)]
pub async fn confirm<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    sender: &employee::Model,
    capacity: Capacity,
    inbound_event_id: i64,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Recorded, NotifyError> {
    let Some(d) = of_case(conn, case.id).await? else {
        return Ok(Recorded::Stale);
    };
    if CaseStatus::of(case) != Some(CaseStatus::Departing)
        || DepartureState::of(&d) == Some(DepartureState::Terminated)
    {
        return Ok(Recorded::Stale);
    }
    if capacity == Capacity::Manager && d.manager_user_id.as_deref() != Some(&sender.user_id) {
        return Ok(Recorded::Stale);
    }
    let (at, by) = match capacity {
        Capacity::Manager => (
            departure::Column::ManagerConfirmedAt,
            departure::Column::ManagerConfirmedBy,
        ),
        Capacity::Hr => (
            departure::Column::HrConfirmedAt,
            departure::Column::HrConfirmedBy,
        ),
    };
    let first = departure::Entity::update_many()
        .col_expr(at, Expr::value(now))
        .col_expr(by, Expr::value(sender.user_id.clone()))
        .col_expr(departure::Column::UpdatedAt, Expr::value(now))
        .filter(departure::Column::Id.eq(d.id))
        .filter(at.is_null())
        .exec(conn)
        .await?;
    if first.rows_affected == 0 {
        return Ok(Recorded::Already(d));
    }
    let body = document_of(&d)
        .blocks
        .get("body")
        .cloned()
        .unwrap_or_default();
    // The confirmation names the document by the hash of its text.
    let leaf = NewLeaf::new("departure_confirmed")
        .case(Some(case.id))
        .subject(Some(&case.user_id))
        .actor(Some(&sender.user_id))
        .channel("chat")
        .occurred_at(occurred_at)
        .template(&d.document_template, &d.document_template_hash)
        .text(&body)
        .detail(json!({
            "departure": d.id,
            "capacity": capacity.as_str(),
            "document_sha256": d.document_sha256,
            "confirmed_by": sender.user_id,
        }));
    record_leaf(conn, &case.tenant_id, leaf, Some(inbound_event_id), now).await?;
    let progress = advance(
        rt,
        conn,
        tenant,
        case.id,
        &sender.user_id,
        inbound_event_id,
        now,
    )
    .await?;
    Ok(Recorded::Done(progress))
}

/// HR records the union item (once). Sends the notice if that was the last item.
#[allow(clippy::too_many_arguments)]
pub async fn record_union<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    sender: &employee::Model,
    notice: UnionNotice,
    note: Option<&str>,
    inbound_event_id: i64,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Recorded, NotifyError> {
    let Some(d) = of_case(conn, case.id).await? else {
        return Ok(Recorded::Stale);
    };
    if CaseStatus::of(case) != Some(CaseStatus::Departing)
        || DepartureState::of(&d) == Some(DepartureState::Terminated)
    {
        return Ok(Recorded::Stale);
    }
    let first = departure::Entity::update_many()
        .col_expr(
            departure::Column::UnionStatus,
            Expr::value(notice.as_str().to_owned()),
        )
        .col_expr(
            departure::Column::UnionNote,
            Expr::value(note.map(str::to_owned)),
        )
        .col_expr(departure::Column::UnionRecordedAt, Expr::value(now))
        .col_expr(
            departure::Column::UnionRecordedBy,
            Expr::value(sender.user_id.clone()),
        )
        .col_expr(departure::Column::UpdatedAt, Expr::value(now))
        .filter(departure::Column::Id.eq(d.id))
        .filter(departure::Column::UnionStatus.is_null())
        .exec(conn)
        .await?;
    if first.rows_affected == 0 {
        return Ok(Recorded::Already(d));
    }
    let leaf = NewLeaf::new("union_recorded")
        .case(Some(case.id))
        .subject(Some(&case.user_id))
        .actor(Some(&sender.user_id))
        .channel("chat")
        .occurred_at(occurred_at)
        .detail(json!({
            "departure": d.id,
            "union": notice.as_str(),
            "note": note,
            "law": "劳动合同法 第四十三条",
        }));
    record_leaf(conn, &case.tenant_id, leaf, Some(inbound_event_id), now).await?;
    let progress = advance(
        rt,
        conn,
        tenant,
        case.id,
        &sender.user_id,
        inbound_event_id,
        now,
    )
    .await?;
    Ok(Recorded::Done(progress))
}

/// Why a process halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The employee checked in (`source`: text, location, image, card,
    /// punch): HR is told here. Only a punch in the platform's attendance
    /// app comes with the device's own record of where it was; a text, a
    /// place picked on a map, a photo or a button prove nothing of
    /// presence, and HR is told so (`verified` false).
    CheckedIn { source: &'static str },
    /// The employee answered (a reply, 我在请假): their answer is forwarded
    /// to HR by the conversation, with the same two choices.
    Replied,
}

impl Halt {
    /// Whether the halt rests on a record of presence the employee could not
    /// have made from elsewhere (a punch in the platform's attendance app).
    pub fn verified(self) -> Option<bool> {
        match self {
            Halt::CheckedIn { source } => Some(source == "punch"),
            Halt::Replied => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Halt::CheckedIn { .. } => "checked_in",
            Halt::Replied => "replied",
        }
    }
}

/// The employee came back or answered while the process runs: it halts
/// (nothing goes out by itself) until HR closes the case or goes on.
/// Returns whether this call halted it.
#[allow(clippy::too_many_arguments)]
pub async fn halt<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    employee: &employee::Model,
    why: Halt,
    at: DateTime<Utc>,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, NotifyError> {
    let Some(d) = of_case(conn, case.id).await? else {
        return Ok(false);
    };
    let halted = departure::Entity::update_many()
        .col_expr(
            departure::Column::State,
            Expr::value(DepartureState::Halted.as_str().to_owned()),
        )
        .col_expr(departure::Column::ReturnedAt, Expr::value(at))
        .col_expr(departure::Column::UpdatedAt, Expr::value(now))
        .filter(departure::Column::Id.eq(d.id))
        .filter(departure::Column::State.eq(DepartureState::Collecting.as_str()))
        .exec(conn)
        .await?;
    if halted.rows_affected == 0 {
        return Ok(false);
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "departure_halted",
        Some(&employee.user_id),
        json!({
            "departure": d.id,
            "at": at,
            "reason": why.as_str(),
            "source": match why { Halt::CheckedIn { source } => Some(source), Halt::Replied => None },
            "verified": why.verified(),
        }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    let Halt::CheckedIn { source } = why else {
        return Ok(true);
    };
    let context = json!({
        "name": employee.name,
        "case_no": case_no(case.id),
        "time": local(tenant, at),
        "source": source,
        "verified": why.verified(),
    });
    let rendered = rt.templates.render("departure", &context, &["returned"])?;
    for hr in hr_people(conn, &tenant.config.id).await? {
        let message = NewMessage {
            secret: None,
            tenant_id: case.tenant_id.clone(),
            idem_key: format!(
                "departure:{}:returned:{inbound_event_id}:{}",
                case.id, hr.user_id
            ),
            case_id: Some(case.id),
            // HR hears of it whatever happens to the case meanwhile.
            fence: None,
            step: Some("departure_returned".to_owned()),
            recipient: hr.user_id.clone(),
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: Payload::Text {
                content: rendered.block("returned").to_owned(),
            },
        };
        enqueue(conn, message, now).await?;
    }
    Ok(true)
}

/// HR goes on with a halted process. Returns `None` if it was not halted.
pub async fn resume<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    actor: &str,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Progress>, NotifyError> {
    let Some(d) = of_case(conn, case.id).await? else {
        return Ok(None);
    };
    if CaseStatus::of(case) != Some(CaseStatus::Departing) {
        return Ok(None);
    }
    let resumed = departure::Entity::update_many()
        .col_expr(
            departure::Column::State,
            Expr::value(DepartureState::Collecting.as_str().to_owned()),
        )
        .col_expr(departure::Column::UpdatedAt, Expr::value(now))
        .filter(departure::Column::Id.eq(d.id))
        .filter(departure::Column::State.eq(DepartureState::Halted.as_str()))
        .exec(conn)
        .await?;
    if resumed.rows_affected == 0 {
        return Ok(None);
    }
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "departure_resumed",
        Some(actor),
        json!({ "departure": d.id, "returned_at": d.returned_at }),
        Some(inbound_event_id),
        now,
    )
    .await?;
    Ok(Some(
        advance(rt, conn, tenant, case.id, actor, inbound_event_id, now).await?,
    ))
}

/// Sends the notice and closes the case if nothing is missing any more.
async fn advance<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case_id: i64,
    actor: &str,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<Progress, NotifyError> {
    let d = of_case(conn, case_id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("departure of case {case_id}")))?;
    let case = reload_case(conn, case_id).await?;
    let missing = pending(&d);
    if !missing.is_empty()
        || DepartureState::of(&d) != Some(DepartureState::Collecting)
        || CaseStatus::of(&case) != Some(CaseStatus::Departing)
    {
        return Ok(Progress {
            departure: d,
            pending: missing,
            terminated: false,
        });
    }
    let claimed = departure::Entity::update_many()
        .col_expr(
            departure::Column::State,
            Expr::value(DepartureState::Terminated.as_str().to_owned()),
        )
        .col_expr(departure::Column::TerminatedAt, Expr::value(now))
        .col_expr(departure::Column::UpdatedAt, Expr::value(now))
        .filter(departure::Column::Id.eq(d.id))
        .filter(departure::Column::State.eq(DepartureState::Collecting.as_str()))
        .exec(conn)
        .await?;
    if claimed.rows_affected == 0 {
        let d = reload(conn, d.id).await?;
        return Ok(Progress {
            pending: pending(&d),
            departure: d,
            terminated: false,
        });
    }
    // Closed first: the notice's rows carry the final fencing token, which
    // nothing changes any more.
    store::resolve(
        conn,
        &case,
        &Resolution::Terminated,
        Some(actor),
        Some(inbound_event_id),
        now,
    )
    .await?;
    let case = reload_case(conn, case_id).await?;
    let d = reload(conn, d.id).await?;
    send_notice(rt, conn, tenant, &case, &d, inbound_event_id, now).await?;
    Ok(Progress {
        departure: d,
        pending: Vec::new(),
        terminated: true,
    })
}

/// A channel the notice did not go out on, and why (a code the templates name).
#[derive(Debug, Clone, Serialize)]
struct Skipped {
    recipient: String,
    channel: &'static str,
    reason: &'static str,
}

/// The termination notice, exactly as drafted and confirmed, to the
/// employee over the formal notice's channels (chat text and a card to
/// acknowledge it, SMS, email), and a copy to the manager and HR.
async fn send_notice<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    d: &departure::Model,
    inbound_event_id: i64,
    now: DateTime<Utc>,
) -> Result<(), NotifyError> {
    let tenant_id = &tenant.config.id;
    let document = document_of(d);
    let doc = Rendered {
        template: d.document_template.clone(),
        hash: d.document_template_hash.clone(),
        blocks: document.blocks,
    };
    let routes: Vec<(Recipient, Channel)> = store::policy(case)
        .rungs
        .into_iter()
        .chain(Policy::default().rungs)
        .find(|r| r.step == Step::FormalNotice)
        .map(|r| r.send)
        .unwrap_or_default();
    let unseal = Unseal {
        phone: routes.contains(&(Recipient::Employee, Channel::Sms)),
        emergency_contact: false,
    };
    let subject = person(rt, conn, tenant_id, &case.user_id, unseal)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("employee {}", case.user_id)))?;
    let manager = match &subject.row.manager_user_id {
        Some(m) => employee_row(conn, tenant_id, m).await?.filter(|m| m.active),
        None => None,
    };
    let hr = hr_people(conn, tenant_id).await?;
    let key = |user: &str, channel: &str| format!("notice:{}:{STEP}:{user}:{channel}", case.id);
    let mut channels: Vec<&'static str> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut copies: Vec<(&employee::Model, Channel)> = Vec::new();
    for (recipient, channel) in &routes {
        let (recipient, channel) = (*recipient, *channel);
        match recipient {
            Recipient::Employee => {
                let to = &subject.row.user_id;
                let payload = match channel {
                    Channel::Chat => {
                        // The full text, then a card to acknowledge it.
                        let text = Payload::Text {
                            content: format!("{}\n{}", doc.block("title"), doc.block("body")),
                        };
                        send(conn, case, key(to, "chat"), STEP, to, &doc, text, now).await?;
                        let ack = card(
                            tenant,
                            case,
                            STEP,
                            doc.block("title"),
                            doc.block("card_summary"),
                            &[(
                                "termination_received",
                                doc.block("button_termination_received"),
                            )],
                        );
                        send(
                            conn,
                            case,
                            format!("{}-ack", key(to, "chat")),
                            STEP,
                            to,
                            &doc,
                            ack,
                            now,
                        )
                        .await?;
                        channels.push("chat");
                        continue;
                    }
                    // An Aliyun account sends only its one approved template
                    // (the formal notice's): never this notice in its words.
                    Channel::Sms if tenant.sms.as_ref().is_some_and(|s| s.name() == "aliyun") => {
                        skipped.push(Skipped {
                            recipient: to.clone(),
                            channel: "sms",
                            reason: "sms_template",
                        });
                        continue;
                    }
                    Channel::Sms if subject.phone.is_none() => {
                        skipped.push(Skipped {
                            recipient: to.clone(),
                            channel: "sms",
                            reason: "no_phone",
                        });
                        continue;
                    }
                    Channel::Sms => {
                        let mut params = serde_json::Map::new();
                        for k in [
                            "case_no",
                            "name",
                            "first_missed",
                            "missed_days",
                            "deadline",
                            "hr_contact",
                        ] {
                            let v = match &document.facts[k] {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            };
                            params.insert(k.to_owned(), json!(v));
                        }
                        Payload::Sms {
                            text: doc.block("sms").to_owned(),
                            params,
                        }
                    }
                    Channel::Email => match subject.row.email.clone().filter(|e| !e.is_empty()) {
                        Some(address) => Payload::Email {
                            to: address,
                            subject: doc.block("email_subject").to_owned(),
                            text: doc.block("body").to_owned(),
                        },
                        None => {
                            skipped.push(Skipped {
                                recipient: to.clone(),
                                channel: "email",
                                reason: "no_email",
                            });
                            continue;
                        }
                    },
                };
                let name = channel_name(channel);
                send(conn, case, key(to, name), STEP, to, &doc, payload, now).await?;
                channels.push(name);
            }
            Recipient::Manager => copies.extend(manager.iter().map(|m| (m, channel))),
            Recipient::Hr => copies.extend(hr.iter().map(|h| (h, channel))),
        }
    }
    // HR is always told on chat, whatever the policy's copies.
    copies.extend(hr.iter().map(|h| (h, Channel::Chat)));
    let name_of = |user: &Option<String>| {
        let user = user.clone()?;
        Some(
            [&subject.row]
                .into_iter()
                .chain(manager.iter())
                .chain(hr.iter())
                .find(|e| e.user_id == user)
                .map(|e| e.name.clone())
                .unwrap_or(user),
        )
    };
    let context = json!({
        "employer": tenant.config.name,
        "case_no": case_no(case.id),
        "name": subject.row.name,
        "department": subject.row.department,
        "channels_sent": channels,
        "skipped": skipped,
        "manager_confirmed_by": name_of(&d.manager_confirmed_by),
        "manager_confirmed_at": d.manager_confirmed_at.map(|t| local(tenant, t)),
        "hr_confirmed_by": name_of(&d.hr_confirmed_by),
        "hr_confirmed_at": d.hr_confirmed_at.map(|t| local(tenant, t)),
        "union_status": d.union_status,
        "union_note": d.union_note,
        "document_sha256": d.document_sha256,
        "today": local_day(tenant, now),
    });
    let copy = rt.templates.render_for(
        tenant.config.platform(),
        "termination_notice.copy",
        &context,
        &["title", "body"],
    )?;
    for (person, channel) in copies {
        let to = &person.user_id;
        let payload = match channel {
            Channel::Chat => Payload::Text {
                content: format!("{}\n{}", copy.block("title"), copy.block("body")),
            },
            Channel::Email => match person.email.clone().filter(|e| !e.is_empty()) {
                Some(address) => Payload::Email {
                    to: address,
                    subject: copy.block("title").to_owned(),
                    text: copy.block("body").to_owned(),
                },
                None => continue,
            },
            // A copy is never a text message (only the employee's phone is unsealed).
            Channel::Sms => continue,
        };
        // The same key for a person in two roles: one copy each.
        send(
            conn,
            case,
            key(to, channel_name(channel)),
            STEP,
            to,
            &copy,
            payload,
            now,
        )
        .await?;
    }
    for s in &skipped {
        record(
            conn,
            tenant_id,
            Some(case.id),
            Some(&case.user_id),
            "notice_skipped",
            None,
            json!({ "step": STEP, "recipient": s.recipient, "channel": s.channel, "reason": s.reason }),
            None,
            now,
        )
        .await?;
    }
    let leaf = NewLeaf::new("termination_notice_issued")
        .case(Some(case.id))
        .subject(Some(&case.user_id))
        .template(&doc.template, &doc.hash)
        .text(doc.block("body"))
        .detail(json!({
            "departure": d.id,
            "document_sha256": d.document_sha256,
            "channels": channels,
            "skipped": skipped,
        }));
    record_leaf(conn, tenant_id, leaf, Some(inbound_event_id), now).await?;
    Ok(())
}

/// The process of a case for `/status` and `/cases`, if one was started.
pub async fn summary<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    case_id: i64,
) -> Result<Option<Value>, DbErr> {
    let Some(d) = of_case(conn, case_id).await? else {
        return Ok(None);
    };
    let started_by = employee_row(conn, &tenant.config.id, &d.started_by)
        .await?
        .map(|e| e.name)
        .unwrap_or_else(|| d.started_by.clone());
    let exhibits = super::exhibits::count(conn, case_id).await?;
    Ok(Some(json!({
        "state": d.state,
        "started_by": started_by,
        "started_at": local(tenant, d.started_at),
        "manager_required": d.manager_user_id.is_some(),
        "manager_confirmed_at": d.manager_confirmed_at.map(|t| local(tenant, t)),
        "hr_confirmed_at": d.hr_confirmed_at.map(|t| local(tenant, t)),
        "union_status": d.union_status,
        "returned_at": d.returned_at.map(|t| local(tenant, t)),
        "terminated_at": d.terminated_at.map(|t| local(tenant, t)),
        "exhibits": exhibits,
        "pending": pending(&d),
    })))
}

#[cfg(test)]
mod tests {
    use super::Halt;

    #[rstest::rstest]
    #[case("punch", Some(true))]
    #[case("text", Some(false))]
    #[case("location", Some(false))]
    #[case("image", Some(false))]
    #[case("card", Some(false))]
    fn only_a_punch_is_a_verified_return(
        #[case] source: &'static str,
        #[case] verified: Option<bool>,
    ) {
        assert_eq!(Halt::CheckedIn { source }.verified(), verified);
        assert_eq!(Halt::Replied.verified(), None);
    }
}
