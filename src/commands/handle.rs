//! Running a chat command: who may, what it does, the answer (from
//! `bot-templates/command.j2`), and a record of both.

use chrono::{DateTime, Utc};
use entity::{absence_case, check_in, employee, leave, outbox};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use super::{
    Caption, Command, LETTER_CHOICES, POST_ACTIONS, ParseError, PostAction, REPORT_KINDS, Subject,
    UNION_CHOICES, allowed, may_file_evidence, parse, parse_archive_caption, parse_caption,
};
use crate::attendance::sheet::Month;
use crate::cases::CaseStatus;
use crate::cases::departure::{self, Recorded, Refusal};
use crate::cases::exhibits;
use crate::cases::notify::local;
use crate::cases::post::{self, LetterError, LetterKind};
use crate::cases::store::{self, Resolution, case_no, parse_case_no};
use crate::conversation::turn::{HandleError, Turn};
use crate::employees::Role;
use crate::outbox::{OutboxStatus, Payload};

/// How many people `/风险` lists.
const RISK_TOP: usize = 10;

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
        ParseError::BadTracking(text) => json!({ "code": "bad_tracking", "text": text }),
        ParseError::BadMonth(text) => json!({ "code": "bad_month", "text": text }),
        ParseError::BadChoice {
            command,
            argument,
            text,
        } => {
            // The words help shows: one per choice.
            let choices: Vec<&str> = match (*command, *argument) {
                ("post", "action") => POST_ACTIONS.to_vec(),
                ("post", _) => LETTER_CHOICES.iter().map(|(w, _)| *w).collect(),
                ("report", _) => REPORT_KINDS[..1].to_vec(),
                ("docs", _) => crate::hr::archive::TAGS.to_vec(),
                _ => UNION_CHOICES.iter().take(2).map(|(w, _)| *w).collect(),
            };
            json!({ "code": "bad_choice", "command": command, "argument": argument, "text": text, "choices": choices })
        }
    }
}

enum Found {
    One(Box<employee::Model>),
    None,
    Many(Vec<String>),
}

/// Finds a person by user id or by name, among those `sender` may ask
/// about at all: everyone for HR; for a manager themself and their reports;
/// for an employee themself. Whoever else exists is not found, so that the
/// answer never tells someone without the right who is in the directory.
async fn find(turn: &Turn<'_>, sender: &employee::Model, who: &str) -> Result<Found, HandleError> {
    let tenant = &turn.tenant.config.id;
    let visible = |e: &employee::Model| {
        role_of(sender) == Role::Hr
            || matches!(subject_of(sender, e), Subject::Themself | Subject::Report)
    };
    if let Some(e) = crate::employees::directory::employee_row(turn.txn, tenant, who)
        .await?
        .filter(visible)
    {
        return Ok(Found::One(Box::new(e)));
    }
    let mut named: Vec<employee::Model> = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .filter(employee::Column::Name.eq(who))
        .all(turn.txn)
        .await?
        .into_iter()
        .filter(visible)
        .collect();
    Ok(match named.len() {
        0 => Found::None,
        1 => Found::One(Box::new(named.remove(0))),
        _ => Found::Many(named.into_iter().map(|e| e.user_id).collect()),
    })
}

/// `#证据 <who> <caption>` from `sender`: opens the window in which their
/// files are filed on that person's case, and answers.
pub(crate) async fn caption(
    turn: &Turn<'_>,
    sender: &employee::Model,
    text: &str,
) -> Result<(), HandleError> {
    let (block, context) = match parse_caption(text) {
        None => ("error", json!({ "error": { "code": "not_a_command" } })),
        Some(Err(e)) => ("error", json!({ "error": error_context(&e) })),
        Some(Ok(c)) => open_window(turn, sender, &c).await?,
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

async fn open_window(
    turn: &Turn<'_>,
    sender: &employee::Model,
    c: &Caption,
) -> Result<(&'static str, Value), HandleError> {
    let target = match find(turn, sender, &c.who).await? {
        Found::One(e) => *e,
        Found::None if role_of(sender) != Role::Hr => return Ok(("refused", json!({}))),
        Found::None => return Ok(("not_found", json!({ "who": c.who }))),
        Found::Many(ids) => {
            return Ok(("ambiguous", json!({ "who": c.who, "candidates": ids })));
        }
    };
    if !may_file_evidence(role_of(sender), subject_of(sender, &target)) {
        return Ok(("refused", json!({})));
    }
    let Some(case) = exhibits::case_for(turn.txn, &turn.tenant.config.id, &target.user_id).await?
    else {
        return Ok(("evidence_no_case", json!({ "name": target.name })));
    };
    let window = exhibits::open_window(
        turn.txn,
        &case,
        &sender.user_id,
        &c.text,
        turn.tenant.config.departure.evidence_window,
        turn.event_id,
        turn.now,
    )
    .await?;
    Ok((
        "evidence_window_open",
        json!({
            "name": target.name,
            "case_no": case_no(case.id),
            "caption": window.caption,
            "until": local(turn.tenant, window.expires_at),
        }),
    ))
}

/// `#合同 <who> [说明]` (or another archive tag) from `sender`: opens the
/// window in which their files are that person's documents, and answers.
/// HR's only (a manager files evidence on a report's case with `#证据`).
pub(crate) async fn archive_caption(
    turn: &Turn<'_>,
    sender: &employee::Model,
    text: &str,
) -> Result<(), HandleError> {
    let (block, context) = match parse_archive_caption(text) {
        None => ("error", json!({ "error": { "code": "not_a_command" } })),
        Some(Err(e)) => ("error", json!({ "error": error_context(&e) })),
        Some(Ok(_)) if role_of(sender) != Role::Hr => ("refused", json!({})),
        Some(Ok(c)) => match find(turn, sender, &c.who).await? {
            Found::One(target) => {
                let window = crate::hr::archive::open_window(
                    turn.txn,
                    &turn.tenant.config.id,
                    &sender.user_id,
                    &target.user_id,
                    c.tag,
                    &c.note,
                    turn.tenant.config.departure.evidence_window,
                    turn.event_id,
                    turn.now,
                )
                .await?;
                (
                    "archive_window_open",
                    json!({
                        "name": target.name,
                        "tag": c.tag,
                        "note": c.note,
                        "until": local(turn.tenant, window.expires_at),
                    }),
                )
            }
            Found::None => ("not_found", json!({ "who": c.who })),
            Found::Many(ids) => ("ambiguous", json!({ "who": c.who, "candidates": ids })),
        },
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

fn window_minutes(turn: &Turn<'_>) -> i64 {
    turn.tenant.config.departure.evidence_window.num_minutes()
}

/// Runs `text` as a command from `sender` and answers.
pub(crate) async fn command(
    turn: &Turn<'_>,
    sender: &employee::Model,
    text: &str,
) -> Result<(), HandleError> {
    // The command is recorded under whom it is about (`/status 张三` under
    // 张三, HR as its actor), so forgetting that person finds it.
    let mut about = None;
    let (block, context) = match parse(text) {
        Err(e) => ("error", json!({ "error": error_context(&e) })),
        Ok(cmd) => run(turn, sender, &cmd, &mut about).await?,
    };
    turn.record(
        None,
        Some(about.as_deref().unwrap_or(&sender.user_id)),
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
    about: &mut Option<String>,
) -> Result<(&'static str, Value), HandleError> {
    let role = role_of(sender);
    let refused = Ok(("refused", json!({})));
    // Who the command is about (and, for /resolve and /resume, the case).
    let mut case_row = None;
    let mut mailed = None;
    let target = match cmd {
        Command::Help
        | Command::Cases
        | Command::Report { .. }
        | Command::Reasons
        | Command::Risk => None,
        Command::Status { who: None } => Some(sender.clone()),
        Command::Status { who: Some(who) }
        | Command::Leave { who, .. }
        | Command::Depart { who }
        | Command::Evidence { who }
        | Command::Export { who, .. }
        | Command::Docs { who, .. }
        | Command::History { who }
        | Command::Onboard { who }
        | Command::Announce { who, .. }
        | Command::Post(PostAction::Mailed { who, .. })
        | Command::Union { who, .. } => match find(turn, sender, who).await? {
            Found::One(e) => Some(*e),
            // Not someone they may ask about, or no one: the same answer.
            Found::None if role != Role::Hr => return refused,
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
                if role != Role::Hr {
                    return refused;
                }
                return Ok(("not_found", json!({ "who": case })));
            };
            let person = crate::employees::directory::employee_row(
                turn.txn,
                &turn.tenant.config.id,
                &found.user_id,
            )
            .await?;
            case_row = Some(found);
            person
        }
        Command::Post(PostAction::Signed { tracking_no, .. })
        | Command::Post(PostAction::Returned { tracking_no, .. }) => {
            if role != Role::Hr {
                return refused;
            }
            let Some(found) =
                post::find_mailed(turn.txn, &turn.tenant.config.id, tracking_no).await?
            else {
                return Ok(("post_unknown", json!({ "tracking_no": tracking_no })));
            };
            let person = crate::employees::directory::employee_row(
                turn.txn,
                &turn.tenant.config.id,
                &found.user_id,
            )
            .await?;
            mailed = Some(found);
            person
        }
    };
    *about = target.as_ref().map(|t| t.user_id.clone());
    let subject = match &target {
        None => Subject::None,
        Some(t) => subject_of(sender, t),
    };
    if !allowed(role, cmd, subject) {
        return refused;
    }
    // Closing or going on with a self-departure process is HR's decision.
    if role != Role::Hr
        && case_row
            .as_ref()
            .is_some_and(|c| CaseStatus::of(c) == Some(CaseStatus::Departing))
    {
        return refused;
    }
    match cmd {
        Command::Help => Ok(("help", json!({ "window_minutes": window_minutes(turn) }))),
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
                // A self-departure process is closed by HR only.
                && (CaseStatus::of(&case) != Some(CaseStatus::Departing) || role == Role::Hr)
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
            if CaseStatus::of(&row) == Some(CaseStatus::Departing) {
                let Some(progress) = departure::resume(
                    turn.rt,
                    turn.txn,
                    turn.tenant,
                    &row,
                    &sender.user_id,
                    turn.event_id,
                    turn.now,
                )
                .await?
                else {
                    return Ok((
                        "resume_not_paused",
                        json!({ "case_no": case_no(row.id), "name": t.name }),
                    ));
                };
                return Ok((
                    "resume_departure_ok",
                    json!({ "case_no": case_no(row.id), "name": t.name, "pending": progress.pending }),
                ));
            }
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
        Command::Depart { who } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            depart(turn, sender, &t).await
        }
        Command::Export { who, case } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            let case_id = match case {
                None => None,
                Some(text) => {
                    let found = match parse_case_no(text) {
                        Some(id) => absence_case::Entity::find_by_id(id)
                            .one(turn.txn)
                            .await?
                            .filter(|c| {
                                c.tenant_id == turn.tenant.config.id && c.user_id == t.user_id
                            }),
                        None => None,
                    };
                    match found {
                        Some(c) => Some(c.id),
                        None => return Ok(("not_found", json!({ "who": text }))),
                    }
                }
            };
            // Built by a job, outside this transaction: the package signs a
            // checkpoint and reads the whole log.
            crate::evidence::download::request(
                turn.txn,
                &turn.tenant.config.id,
                &t.user_id,
                case_id,
                &sender.user_id,
                turn.event_id,
                turn.now,
            )
            .await?;
            Ok((
                "export_queued",
                json!({ "name": t.name, "case_no": case_id.map(case_no) }),
            ))
        }
        Command::Report { month } => {
            let month = month.unwrap_or_else(|| {
                let today = turn.now.with_timezone(&turn.tenant.config.timezone);
                Month {
                    year: chrono::Datelike::year(&today),
                    month: chrono::Datelike::month(&today),
                }
            });
            // Built by a job, outside this transaction: a month of a whole
            // tenant is no work for the event's turn.
            crate::evidence::download::request_sheet(
                turn.txn,
                &turn.tenant.config.id,
                month,
                &sender.user_id,
                turn.event_id,
                turn.now,
            )
            .await?;
            Ok(("report_queued", json!({ "month": month.to_string() })))
        }
        Command::Docs { who, tag } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            let docs = crate::hr::archive::list(
                turn.txn,
                &turn.tenant.config.id,
                &t.user_id,
                tag.as_deref(),
            )
            .await?;
            let docs: Vec<Value> = docs
                .iter()
                .map(|d| {
                    json!({
                        "date": local(turn.tenant, d.filed_at),
                        "tag": d.tag,
                        "note": d.note,
                        "file_name": d.file_name,
                        "size": d.size,
                        "sha256": d.sha256,
                    })
                })
                .collect();
            Ok((
                "docs",
                json!({ "name": t.name, "tag": tag, "documents": docs }),
            ))
        }
        Command::History { who } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            let mut context = crate::hr::history::of(turn.txn, turn.tenant, &t, turn.now).await?;
            // The printable page goes by a one-time link, built by a job.
            crate::evidence::download::request_history(
                turn.txn,
                &turn.tenant.config.id,
                &t.user_id,
                &sender.user_id,
                turn.event_id,
                turn.now,
            )
            .await?;
            context["page_queued"] = json!(true);
            Ok(("history", context))
        }
        Command::Onboard { who } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            crate::hr::onboarding::start(
                turn.rt,
                turn.txn,
                turn.tenant,
                &t,
                &sender.user_id,
                &format!("onboarding:{}:{}", t.user_id, turn.event_id),
                turn.now,
            )
            .await?;
            Ok(("onboard_started", json!({ "name": t.name })))
        }
        Command::Risk => {
            let w = &turn.tenant.config.risk;
            let scored = crate::hr::risk::scores(turn.txn, turn.tenant, turn.now).await?;
            let top: Vec<Value> = scored
                .iter()
                .filter(|s| s.score > 0)
                .take(RISK_TOP)
                .map(|s| crate::hr::risk::context(s, w))
                .collect();
            Ok((
                "risk",
                json!({
                    "top": top,
                    "threshold": w.threshold,
                    "window_days": w.window_days,
                    "w": crate::hr::risk::weights(w),
                }),
            ))
        }
        Command::Reasons => Ok((
            "reasons",
            crate::hr::leavers::counts(turn.txn, &turn.tenant.config.id).await?,
        )),
        Command::Evidence { who } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            evidence(turn, &t).await.map(|c| ("evidence_list", c))
        }
        Command::Union { who, notice, note } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            let case = store::unresolved(turn.txn, &turn.tenant.config.id, &t.user_id)
                .await?
                .filter(|c| CaseStatus::of(c) == Some(CaseStatus::Departing));
            let Some(case) = case else {
                return Ok(("union_no_departure", json!({ "name": t.name })));
            };
            let context = |pending: Vec<&str>, status: Option<String>, note: Option<String>| json!({ "name": t.name, "case_no": case_no(case.id), "pending": pending, "union_status": status, "note": note });
            match departure::record_union(
                turn.rt,
                turn.txn,
                turn.tenant,
                &case,
                sender,
                *notice,
                note.as_deref(),
                turn.event_id,
                turn.sent_at,
                turn.now,
            )
            .await?
            {
                Recorded::Done(p) => Ok((
                    "union_ok",
                    context(p.pending, p.departure.union_status, p.departure.union_note),
                )),
                Recorded::Already(d) => Ok((
                    "union_already",
                    context(Vec::new(), d.union_status, d.union_note),
                )),
                Recorded::Stale => Ok(("union_no_departure", json!({ "name": t.name }))),
            }
        }
        Command::Announce {
            who,
            published_on,
            place,
        } => {
            let Some(t) = target else {
                return Ok(("not_found", json!({ "who": who })));
            };
            let Some(case) =
                store::unresolved(turn.txn, &turn.tenant.config.id, &t.user_id).await?
            else {
                return Ok(("announce_no_notice", json!({ "name": t.name })));
            };
            let zone = turn.tenant.config.timezone;
            // Published between the notice and today (tenant time).
            let today = turn.now.with_timezone(&zone).date_naive();
            let issued = case
                .formal_notice_at
                .map(|at| at.with_timezone(&zone).date_naive());
            if issued.is_some_and(|d| *published_on < d) || *published_on > today {
                return Ok((
                    "announce_bad_date",
                    json!({ "name": t.name, "case_no": case_no(case.id), "published_on": published_on.to_string(), "issued": issued.map(|d| d.to_string()), "today": today.to_string() }),
                ));
            }
            let published_at = published_on
                .and_time(chrono::NaiveTime::MIN)
                .and_local_timezone(zone)
                .earliest()
                .map_or_else(
                    || published_on.and_time(chrono::NaiveTime::MIN).and_utc(),
                    |d| d.with_timezone(&chrono::Utc),
                );
            let context = |extra: serde_json::Value| {
                let mut c = json!({ "name": t.name, "case_no": case_no(case.id), "published_on": published_on.to_string(), "place": place });
                if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
                    c.extend(extra.clone());
                }
                c
            };
            match store::record_announcement(
                turn.txn,
                &case,
                &sender.user_id,
                published_at,
                place,
                Some(turn.event_id),
                turn.now,
            )
            .await?
            {
                store::Announced::NoNotice => Ok(("announce_no_notice", json!({ "name": t.name }))),
                store::Announced::Received => Ok(("announce_received", context(json!({})))),
                store::Announced::Reachable(copies) => {
                    // `channel:status`, or `post:<tracking number>`.
                    let reachable: Vec<Value> = copies
                        .iter()
                        .map(|c| {
                            let (channel, detail) = c.split_once(':').unwrap_or((c, ""));
                            json!({ "channel": channel, "detail": detail })
                        })
                        .collect();
                    Ok((
                        "announce_reachable",
                        context(json!({ "reachable": reachable })),
                    ))
                }
                store::Announced::Already(at) => Ok((
                    "announce_already",
                    context(json!({ "deemed_at": local(turn.tenant, at) })),
                )),
                store::Announced::Recorded { deemed_at } => Ok((
                    "announce_ok",
                    context(json!({ "deemed_at": local(turn.tenant, deemed_at) })),
                )),
            }
        }
        Command::Post(action) => post_command(turn, sender, target, mailed, action).await,
    }
}

/// `/post`: a letter mailed, signed for or returned.
async fn post_command(
    turn: &Turn<'_>,
    sender: &employee::Model,
    target: Option<employee::Model>,
    mailed: Option<post::Mailed>,
    action: &PostAction,
) -> Result<(&'static str, Value), HandleError> {
    let tenant = turn.tenant;
    let Some(t) = target else {
        return Ok(("not_found", json!({ "who": "" })));
    };
    let kind_of = |k: LetterKind| k.step();
    match action {
        PostAction::Mailed {
            tracking_no, kind, ..
        } => {
            let context =
                json!({ "name": t.name, "kind": kind_of(*kind), "tracking_no": tracking_no });
            let Some(case) = post::case_for(turn.txn, &tenant.config.id, &t.user_id, *kind).await?
            else {
                return Ok(("post_no_notice", context));
            };
            let letter = match post::letter(
                turn.txn,
                &turn.rt.templates,
                &turn.rt.key,
                tenant,
                &case,
                *kind,
            )
            .await
            {
                Ok(l) => l,
                Err(LetterError::NoAddress(_)) => return Ok(("post_no_address", context)),
                Err(LetterError::NoNotice(..) | LetterError::NoEmployee(_)) => {
                    return Ok(("post_no_notice", context));
                }
                Err(LetterError::Db(e)) => return Err(e.into()),
                Err(LetterError::Template(e)) => return Err(e.into()),
                Err(e @ LetterError::Employee(_)) => {
                    return Err(HandleError::Unreadable {
                        id: turn.event_id,
                        reason: e.to_string(),
                    });
                }
            };
            match post::record_mailed(
                turn.txn,
                tenant,
                &case,
                &letter,
                tracking_no,
                &sender.user_id,
                Some(turn.event_id),
                turn.now,
            )
            .await?
            {
                Err(post::Refusal::Duplicate { same }) => Ok((
                    "post_duplicate",
                    json!({ "tracking_no": tracking_no, "same": same }),
                )),
                Err(_) => Ok(("post_no_notice", context)),
                Ok(()) => Ok((
                    "post_mailed",
                    json!({
                        "name": t.name,
                        "case_no": case_no(case.id),
                        "kind": kind_of(*kind),
                        "tracking_no": tracking_no,
                        "pdf_sha256": letter.pdf_sha256,
                        "html_sha256": letter.html_sha256,
                    }),
                )),
            }
        }
        PostAction::Signed { on, .. } | PostAction::Returned { on, .. } => {
            let Some(mailed) = mailed else {
                return Ok(("not_found", json!({ "who": "" })));
            };
            let (signed, note) = match action {
                PostAction::Returned { note, .. } => (false, note.as_deref()),
                _ => (true, None),
            };
            let context = json!({
                "name": t.name,
                "case_no": case_no(mailed.case_id),
                "kind": kind_of(mailed.kind),
                "tracking_no": mailed.tracking_no,
                "on": on.to_string(),
            });
            let with = |extra: Value| {
                let mut c = context.clone();
                if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
                    c.extend(extra.clone());
                }
                c
            };
            match post::record_outcome(
                turn.txn,
                tenant,
                &mailed,
                signed,
                *on,
                note,
                &sender.user_id,
                Some(turn.event_id),
                turn.now,
            )
            .await?
            {
                Err(post::Refusal::BadDate { mailed_on, today }) => Ok((
                    "post_bad_date",
                    with(json!({ "mailed_on": mailed_on.to_string(), "today": today.to_string() })),
                )),
                Err(post::Refusal::Settled(outcome)) => Ok((
                    "post_settled",
                    with(match outcome {
                        post::Outcome::Signed(d) => json!({ "signed_on": d.to_string() }),
                        post::Outcome::Returned(d) => json!({ "returned_on": d.to_string() }),
                        post::Outcome::InTransit => json!({}),
                    }),
                )),
                Err(_) => Ok(("post_unknown", json!({ "tracking_no": mailed.tracking_no }))),
                Ok(case) if signed => Ok((
                    "post_signed",
                    with(json!({
                        "received_at": local(tenant, post::received_at(tenant, *on)),
                        "receipt_via": case.receipt_via,
                        "deadline": case.deadline_at.map(|d| local(tenant, d)),
                    })),
                )),
                Ok(_) => Ok(("post_returned", with(json!({ "note": note })))),
            }
        }
    }
}

/// `/depart <who>`: starts the self-departure process on their case.
async fn depart(
    turn: &Turn<'_>,
    sender: &employee::Model,
    t: &employee::Model,
) -> Result<(&'static str, Value), HandleError> {
    let Some(case) = store::unresolved(turn.txn, &turn.tenant.config.id, &t.user_id).await? else {
        return Ok(("depart_no_case", json!({ "name": t.name })));
    };
    let context = json!({ "name": t.name, "case_no": case_no(case.id) });
    let started = departure::start(
        turn.rt,
        turn.txn,
        turn.tenant,
        &case,
        sender,
        "command",
        turn.event_id,
        turn.now,
    )
    .await?;
    Ok(match started {
        Ok(s) => (
            "depart_ok",
            json!({
                "name": t.name,
                "case_no": case_no(s.case.id),
                "document_sha256": s.departure.document_sha256,
                "manager_name": s.manager.map(|m| m.name),
                "window_minutes": window_minutes(turn),
            }),
        ),
        Err(Refusal::NotDue { deadline }) => (
            "depart_not_due",
            json!({ "name": t.name, "case_no": case_no(case.id), "deadline": deadline.map(|d| local(turn.tenant, d)) }),
        ),
        Err(Refusal::NotReceived) => ("depart_not_received", context),
        Err(Refusal::Already) => ("depart_already", context),
        Err(Refusal::Closed) => ("depart_no_case", context),
    })
}

/// `/evidence <who>`: the exhibits of their case.
async fn evidence(turn: &Turn<'_>, t: &employee::Model) -> Result<Value, HandleError> {
    let Some(case) = exhibits::case_for(turn.txn, &turn.tenant.config.id, &t.user_id).await? else {
        return Ok(json!({ "name": t.name, "case_no": null, "exhibits": [] }));
    };
    let mut list = Vec::new();
    for e in exhibits::list(turn.txn, case.id).await? {
        let sender =
            crate::employees::directory::employee_row(turn.txn, &turn.tenant.config.id, &e.sender)
                .await?
                .map(|s| s.name)
                .unwrap_or_else(|| e.sender.clone());
        list.push(json!({
            "kind": e.media_kind,
            "file_name": e.file_name,
            "size": e.size,
            "caption": e.caption,
            "sender": sender,
            "at": local(turn.tenant, e.received_at),
            "sha256": e.sha256,
        }));
    }
    Ok(json!({ "name": t.name, "case_no": case_no(case.id), "exhibits": list }))
}

/// How the formal notice of case `c` reached its employee, one entry per
/// channel (its card to acknowledge left out): sent or not, and by chat
/// whether it was read — `read` (with when), `checking` (the platform is
/// still being asked), `unread` (not read when the asking ended),
/// `not_reported` (the platform tells no reads) — and `None` elsewhere.
async fn notice_delivery(
    turn: &Turn<'_>,
    c: &absence_case::Model,
) -> Result<Vec<Value>, HandleError> {
    let rows = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(c.id))
        .filter(outbox::Column::Step.eq("formal_notice"))
        .filter(outbox::Column::Recipient.eq(&c.user_id))
        .order_by_asc(outbox::Column::Id)
        .all(turn.txn)
        .await?;
    let reports_reads = turn
        .tenant
        .chat
        .as_deref()
        .and_then(|api| api.read_window())
        .is_some();
    Ok(rows
        .into_iter()
        .filter(|r| !matches!(serde_json::from_str(&r.payload), Ok(Payload::Card { .. })))
        .map(|r| {
            let sent = r.status == OutboxStatus::Sent.as_str();
            let read = match (r.channel.as_str(), r.read_at) {
                ("chat", Some(_)) => Some("read"),
                ("chat", None) if !reports_reads => Some("not_reported"),
                ("chat", None) if r.read_checked_at.is_some() => Some("unread"),
                ("chat", None) if sent => Some("checking"),
                _ => None,
            };
            json!({
                "channel": r.channel,
                "status": r.status,
                "sent_at": r.sent_at.map(|t| local(turn.tenant, t)),
                "read": read,
                "read_at": r.read_at.map(|t| local(turn.tenant, t)),
                // The SMS gateway's report: delivered, failed or unknown.
                "delivery": r.delivery_status,
                "delivered_at": r.delivered_at.map(|t| local(turn.tenant, t)),
            })
        })
        .collect())
}

async fn case_json(
    turn: &Turn<'_>,
    c: &absence_case::Model,
    name: &str,
) -> Result<Value, HandleError> {
    let departure = departure::summary(turn.txn, turn.tenant, c.id).await?;
    let notice = notice_delivery(turn, c).await?;
    Ok(json!({
        "no": case_no(c.id),
        "name": name,
        "status": c.status,
        "missed_days": c.missed_workdays,
        "first_missed": c.first_missed.to_string(),
        "steps": store::steps_done(c).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "deadline": c.deadline_at.map(|d| local(turn.tenant, d)),
        "notice": notice,
        "departure": departure,
    }))
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
    let case = match &case {
        Some(c) => Some(case_json(turn, c, &t.name).await?),
        None => None,
    };
    // With no open case, a contract ended by the self-departure process is shown.
    let terminated = match case {
        Some(_) => None,
        None => absence_case::Entity::find()
            .filter(absence_case::Column::TenantId.eq(&turn.tenant.config.id))
            .filter(absence_case::Column::UserId.eq(&t.user_id))
            .filter(absence_case::Column::Resolution.eq("terminated"))
            .order_by_desc(absence_case::Column::Id)
            .one(turn.txn)
            .await?
            .map(|c| json!({ "no": case_no(c.id), "at": c.resolved_at.map(|r| local(turn.tenant, r)) })),
    };
    Ok(json!({
        "name": t.name,
        "department": t.department,
        "last_checkin": last.map(|l| local(turn.tenant, l)),
        "case": case,
        "terminated": terminated,
    }))
}

async fn cases(
    turn: &Turn<'_>,
    sender: &employee::Model,
    role: Role,
) -> Result<Value, HandleError> {
    let open = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(&turn.tenant.config.id))
        .filter(absence_case::Column::Status.ne(CaseStatus::Resolved.as_str()))
        .order_by_asc(absence_case::Column::Id)
        .all(turn.txn)
        .await?;
    let mut list = Vec::new();
    for c in &open {
        let Some(e) =
            crate::employees::directory::employee_row(turn.txn, &turn.tenant.config.id, &c.user_id)
                .await?
        else {
            continue;
        };
        if role == Role::Hr || e.manager_user_id.as_deref() == Some(sender.user_id.as_str()) {
            list.push(case_json(turn, c, &e.name).await?);
        }
    }
    Ok(json!({ "cases": list }))
}
