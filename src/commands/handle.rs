//! Running a chat command: who may, what it does, the answer (from
//! `bot-templates/command.j2`), and a record of both.

use chrono::{DateTime, Utc};
use entity::{absence_case, check_in, employee, leave};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::{Command, ParseError, Role, Subject, allowed, parse};
use crate::cases::notify::local;
use crate::cases::store::{self, Resolution, case_no, parse_case_no};
use crate::conversation::{HandleError, Turn};

fn role_of(e: &employee::Model) -> Role {
    // The import refuses other values; anything unknown gets the least rights.
    crate::employees::parse_role(&e.role).unwrap_or(Role::Employee)
}

fn subject_of(sender: &employee::Model, target: &employee::Model) -> Subject {
    if target.user_id == sender.user_id {
        Subject::Themself
    } else if target.manager_user_id.as_deref() == Some(sender.user_id.as_str()) {
        Subject::Report
    } else {
        Subject::Other
    }
}

/// The parse error as the template wants it: a code and its values.
fn error_context(e: &ParseError) -> Value {
    match e {
        ParseError::NotACommand => json!({ "code": "not_a_command" }),
        ParseError::Unknown(name) => json!({ "code": "unknown", "name": name }),
        ParseError::Missing { command, argument } => {
            json!({ "code": "missing", "command": command, "argument": argument })
        }
        ParseError::BadDate(text) => json!({ "code": "bad_date", "text": text }),
        ParseError::DateOrder { from, to } => {
            json!({ "code": "date_order", "from": from.to_string(), "to": to.to_string() })
        }
    }
}

enum Found {
    One(Box<employee::Model>),
    None,
    Many(Vec<String>),
}

/// Finds a person by user id or by name.
async fn find(turn: &Turn<'_>, who: &str) -> Result<Found, HandleError> {
    let tenant = &turn.tenant.config.id;
    if let Some(e) = crate::cases::notify::employee_row(turn.txn, tenant, who).await? {
        return Ok(Found::One(Box::new(e)));
    }
    let mut named = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .filter(employee::Column::Name.eq(who))
        .all(turn.txn)
        .await?;
    Ok(match named.len() {
        0 => Found::None,
        1 => Found::One(Box::new(named.remove(0))),
        _ => Found::Many(named.into_iter().map(|e| e.user_id).collect()),
    })
}

/// Runs `text` as a command from `sender` and answers.
pub(crate) async fn command(
    turn: &Turn<'_>,
    sender: &employee::Model,
    text: &str,
) -> Result<(), HandleError> {
    let (block, context) = match parse(text) {
        Err(e) => ("error", json!({ "error": error_context(&e) })),
        Ok(cmd) => run(turn, sender, &cmd).await?,
    };
    turn.record(
        None,
        Some(&sender.user_id),
        "command",
        json!({ "text": text, "answer": block }),
    )
    .await?;
    turn.reply("command", block, &context).await
}

async fn run(
    turn: &Turn<'_>,
    sender: &employee::Model,
    cmd: &Command,
) -> Result<(&'static str, Value), HandleError> {
    let role = role_of(sender);
    let refused = Ok(("refused", json!({})));
    // Who the command is about (and, for /resolve and /resume, the case).
    let mut case_row = None;
    let target = match cmd {
        Command::Help | Command::Cases => None,
        Command::Status { who: None } => Some(sender.clone()),
        Command::Status { who: Some(who) } | Command::Leave { who, .. } => match find(turn, who)
            .await?
        {
            Found::One(e) => Some(*e),
            Found::None => return Ok(("not_found", json!({ "who": who }))),
            Found::Many(ids) => return Ok(("ambiguous", json!({ "who": who, "candidates": ids }))),
        },
        Command::Resolve { case, .. } | Command::Resume { case } => {
            let found = match parse_case_no(case) {
                Some(id) => absence_case::Entity::find_by_id(id)
                    .one(turn.txn)
                    .await?
                    .filter(|c| c.tenant_id == turn.tenant.config.id),
                None => None,
            };
            let Some(found) = found else {
                return Ok(("not_found", json!({ "who": case })));
            };
            let person = crate::cases::notify::employee_row(
                turn.txn,
                &turn.tenant.config.id,
                &found.user_id,
            )
            .await?;
            case_row = Some(found);
            person
        }
    };
    let subject = match &target {
        None => Subject::None,
        Some(t) => subject_of(sender, t),
    };
    if !allowed(role, cmd, subject) {
        return refused;
    }
    match cmd {
        Command::Help => Ok(("help", json!({}))),
        Command::Status { .. } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": "" })));
            };
            status(turn, &t).await.map(|c| ("status", c))
        }
        Command::Cases => cases(turn, sender, role).await.map(|c| ("cases", c)),
        Command::Leave {
            from, to, reason, ..
        } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": "" })));
            };
            leave::Entity::insert(leave::ActiveModel {
                tenant_id: Set(turn.tenant.config.id.clone()),
                user_id: Set(t.user_id.clone()),
                from_date: Set(*from),
                to_date: Set(*to),
                reason: Set(reason.clone()),
                approved_by: Set(sender.user_id.clone()),
                created_at: Set(turn.now),
                ..Default::default()
            })
            .exec_without_returning(turn.txn)
            .await?;
            let mut resolved = None;
            if let Some(case) =
                store::unresolved(turn.txn, &turn.tenant.config.id, &t.user_id).await?
                // Leave for some of the missed days leaves the others unexcused.
                && *from <= case.first_missed
                && *to >= case.last_missed
                && store::resolve(
                    turn.txn,
                    &case,
                    &Resolution::Leave {
                        from: *from,
                        to: *to,
                    },
                    Some(&sender.user_id),
                    Some(turn.event_id),
                    turn.now,
                )
                .await?
            {
                resolved = Some(case_no(case.id));
            }
            turn.record(
                None,
                Some(&t.user_id),
                "leave_approved",
                json!({ "from": from, "to": to, "reason": reason }),
            )
            .await?;
            Ok((
                "leave_ok",
                json!({ "name": t.name, "leave_from": from.to_string(), "leave_to": to.to_string(), "reason": reason, "resolved_case": resolved }),
            ))
        }
        Command::Resolve { case, reason } => {
            let (Some(t), Some(row)) = (target, case_row) else {
                return Ok(("not_found", json!({ "who": case })));
            };
            let id = row.id;
            store::resolve(
                turn.txn,
                &row,
                &Resolution::ClosedByHr {
                    reason: reason.clone(),
                },
                Some(&sender.user_id),
                Some(turn.event_id),
                turn.now,
            )
            .await?;
            Ok((
                "resolve_ok",
                json!({ "case_no": case_no(id), "name": t.name, "reason": reason }),
            ))
        }
        Command::Resume { case } => {
            let (Some(t), Some(row)) = (target, case_row) else {
                return Ok(("not_found", json!({ "who": case })));
            };
            if !store::resume(turn.txn, &row, &sender.user_id, turn.event_id, turn.now).await? {
                return Ok((
                    "resume_not_paused",
                    json!({ "case_no": case_no(row.id), "name": t.name }),
                ));
            }
            // The ladder picks up where it stopped: what is due now goes out.
            if let Some(current) = absence_case::Entity::find_by_id(row.id)
                .one(turn.txn)
                .await?
            {
                crate::cases::scan::escalate(turn.rt, turn.txn, turn.tenant, &current, turn.now)
                    .await
                    .map_err(|e| match e {
                        crate::cases::scan::ScanError::Db(e) => HandleError::Db(e),
                        crate::cases::scan::ScanError::Notify(e) => e.into(),
                        other => HandleError::Unreadable {
                            id: turn.event_id,
                            reason: other.to_string(),
                        },
                    })?;
            }
            Ok((
                "resume_ok",
                json!({ "case_no": case_no(row.id), "name": t.name }),
            ))
        }
    }
}

fn case_json(turn: &Turn<'_>, c: &absence_case::Model, name: &str) -> Value {
    json!({
        "no": case_no(c.id),
        "name": name,
        "status": c.status,
        "missed_days": c.missed_workdays,
        "first_missed": c.first_missed.to_string(),
        "steps": store::steps_done(c).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "deadline": c.deadline_at.map(|d| local(turn.tenant, d)),
    })
}

async fn status(turn: &Turn<'_>, t: &employee::Model) -> Result<Value, HandleError> {
    let last: Option<DateTime<Utc>> = check_in::Entity::find()
        .filter(check_in::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(check_in::Column::UserId.eq(&t.user_id))
        .order_by_desc(check_in::Column::CheckedAt)
        .one(turn.txn)
        .await?
        .map(|c| c.checked_at);
    let case = store::unresolved(turn.txn, &turn.tenant.config.id, &t.user_id).await?;
    Ok(json!({
        "name": t.name,
        "department": t.department,
        "last_checkin": last.map(|l| local(turn.tenant, l)),
        "case": case.as_ref().map(|c| case_json(turn, c, &t.name)),
    }))
}

async fn cases(
    turn: &Turn<'_>,
    sender: &employee::Model,
    role: Role,
) -> Result<Value, HandleError> {
    let open = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(absence_case::Column::Status.ne("resolved"))
        .order_by_asc(absence_case::Column::Id)
        .all(turn.txn)
        .await?;
    let mut list = Vec::new();
    for c in &open {
        let Some(e) =
            crate::cases::notify::employee_row(turn.txn, &turn.tenant.config.id, &c.user_id)
                .await?
        else {
            continue;
        };
        if role == Role::Hr || e.manager_user_id.as_deref() == Some(sender.user_id.as_str()) {
            list.push(case_json(turn, c, &e.name));
        }
    }
    Ok(json!({ "cases": list }))
}
