//! Turning ladder actions into outbox rows: who receives what, rendered from
//! `bot-templates/`, keyed `notice:{case}:{step}:{recipient}:{channel}`.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use entity::{absence_case, case_event, employee, outbox};
use futures::future::BoxFuture;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::store::{case_no, record};
use super::{Action, Channel, Recipient, Step};
use crate::attendance::calendar::{DayStatus, RestDays, day_status};
use crate::employees::directory::{Unseal, employee_row, hr_people, person};
use crate::outbox::render::{Rendered, TemplateError};
use crate::outbox::{Button, NewMessage, OutboxStatus, Payload, channel_name, enqueue};
use crate::runtime::{Runtime, Tenant};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl From<NotifyError> for crate::outbox::DeliverError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Db(e) => Self::Db(e),
            NotifyError::Template(e) => Self::Template(e),
        }
    }
}

/// The workdays of the case, from its first to its last missed day.
pub fn missed_days(
    tenant: &Tenant,
    employee: &employee::Model,
    case: &absence_case::Model,
) -> Vec<NaiveDate> {
    let rest = employee
        .rest_days
        .as_deref()
        .and_then(|r| RestDays::parse(r).ok())
        .unwrap_or(tenant.config.attendance.rest_days);
    case.first_missed
        .iter_days()
        .take_while(|d| *d <= case.last_missed)
        .filter(|d| {
            day_status(&tenant.config.attendance.calendar, rest, &[], *d) == DayStatus::Workday
        })
        .collect()
}

/// One earlier attempt to reach the employee, for the formal notice.
#[derive(Debug, Serialize)]
struct Attempt {
    at: String,
    step: String,
    channel: String,
    who: String,
}

pub fn local(tenant: &Tenant, at: DateTime<Utc>) -> String {
    at.with_timezone(&tenant.config.timezone)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn local_day(tenant: &Tenant, at: DateTime<Utc>) -> String {
    at.with_timezone(&tenant.config.timezone)
        .format("%Y-%m-%d")
        .to_string()
}

async fn attempts<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
) -> Result<Vec<Attempt>, DbErr> {
    let sent = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case.id))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent.as_str()))
        .filter(outbox::Column::Recipient.eq(&case.user_id))
        .order_by_asc(outbox::Column::Id)
        .all(conn)
        .await?;
    let mut out: Vec<Attempt> = sent
        .into_iter()
        .filter_map(|r| {
            Some(Attempt {
                at: local(tenant, r.sent_at?),
                step: r.step.unwrap_or_default(),
                channel: r.channel,
                who: "company".into(),
            })
        })
        .collect();
    let contacts = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .filter(case_event::Column::Kind.eq("manager_contacted"))
        .order_by_asc(case_event::Column::Id)
        .all(conn)
        .await?;
    out.extend(contacts.into_iter().map(|e| Attempt {
        at: local(tenant, e.at),
        step: "manager_contacted".into(),
        channel: "phone".into(),
        who: e.actor.unwrap_or_default(),
    }));
    Ok(out)
}

/// Whether the employee read the formal notice's text on chat, where the
/// platform says (DingTalk, Feishu): `{"reported": false}` where it never
/// does (or nothing went out by chat), else `{"reported": true, "state":
/// "read" | "unread" | "checking", "read_at": <local time or null>}`:
/// `unread` once the asking ended without a read (the platform answered
/// unread, or could not say), `checking` while it is still asked.
async fn notice_read<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
) -> Result<serde_json::Value, DbErr> {
    let reported = tenant
        .chat
        .as_deref()
        .and_then(|api| api.read_window())
        .is_some();
    if !reported {
        return Ok(json!({ "reported": false }));
    }
    let rows = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case.id))
        .filter(outbox::Column::Step.eq("formal_notice"))
        .filter(outbox::Column::Recipient.eq(&case.user_id))
        .filter(outbox::Column::Channel.eq("chat"))
        .filter(outbox::Column::Status.eq(OutboxStatus::Sent.as_str()))
        .order_by_asc(outbox::Column::Id)
        .all(conn)
        .await?;
    let read_at = rows.iter().filter_map(|r| r.read_at).min();
    // Unread only once the asking ended without a read; before that, not
    // read yet.
    let state = match read_at {
        Some(_) => "read",
        None if rows.iter().all(|r| r.read_checked_at.is_some()) => "unread",
        None => "checking",
    };
    Ok(json!({
        "reported": !rows.is_empty(),
        "state": state,
        "read_at": read_at.map(|t| local(tenant, t)),
    }))
}

struct Plan {
    template: &'static str,
    blocks: &'static [&'static str],
    buttons: &'static [&'static str],
}

fn plan(step: Step, recipient: Recipient) -> Option<Plan> {
    const REMINDER: &[&str] = &["arrived", "on_leave", "explain"];
    Some(match (step, recipient) {
        (Step::FirstReminder, Recipient::Employee) => Plan {
            template: "first_reminder.employee",
            blocks: &["title", "body"],
            buttons: REMINDER,
        },
        (Step::SecondReminder, Recipient::Employee) => Plan {
            template: "second_reminder.employee",
            blocks: &["title", "body"],
            buttons: REMINDER,
        },
        (Step::FirstReminder | Step::SecondReminder, Recipient::Manager | Recipient::Hr) => Plan {
            template: "second_reminder.manager",
            blocks: &["title", "body"],
            buttons: &["contacted"],
        },
        (Step::FormalNotice, Recipient::Employee) => Plan {
            template: "formal_notice.employee",
            blocks: &[
                "title",
                "body",
                "card_summary",
                "sms",
                "email_subject",
                "email_body",
            ],
            buttons: &["received"],
        },
        (Step::FormalNotice, Recipient::Manager | Recipient::Hr) => Plan {
            template: "formal_notice.copy",
            blocks: &["title", "body"],
            buttons: &[],
        },
        (Step::DeadlinePassed, Recipient::Manager | Recipient::Hr) => Plan {
            template: "deadline_passed.hr",
            blocks: &["title", "body"],
            buttons: &["start_departure"],
        },
        (Step::DeadlinePassed, Recipient::Employee) => return None,
    })
}

/// Records that a notice could not be made (no such person, address, template).
async fn skipped<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    record(
        conn,
        &case.tenant_id,
        Some(case.id),
        Some(&case.user_id),
        "notice_skipped",
        None,
        detail,
        None,
        now,
    )
    .await
}

/// Enqueues the notices for `actions` on `case`; returns the steps issued.
/// A recipient or address that does not exist is recorded, not fatal: the
/// ladder goes on over the other channels.
pub async fn issue<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    actions: &[Action],
    now: DateTime<Utc>,
) -> Result<BTreeSet<Step>, NotifyError> {
    let mut steps = BTreeSet::new();
    if actions.is_empty() {
        return Ok(steps);
    }
    let tenant_id = &tenant.config.id;
    // The emergency contact only for the manager's card, the phone only for an SMS.
    let unseal = Unseal {
        phone: actions.iter().any(
            |Action::Notify {
                 channel, recipient, ..
             }| *channel == Channel::Sms && *recipient == Recipient::Employee,
        ),
        emergency_contact: actions
            .iter()
            .any(|Action::Notify { recipient, .. }| *recipient == Recipient::Manager),
    };
    let Some(subject) = person(rt, conn, tenant_id, &case.user_id, unseal).await? else {
        skipped(
            conn,
            case,
            json!({ "reason": "employee not in the directory" }),
            now,
        )
        .await?;
        return Ok(steps);
    };
    let manager = match &subject.row.manager_user_id {
        Some(m) => employee_row(conn, tenant_id, m).await?,
        None => None,
    };
    let hr = hr_people(conn, tenant_id).await?;
    let policy = super::store::policy(case);
    // No deadline before a proven receipt: a text that needs one says the
    // term instead (the SMS template's `deadline` parameter).
    let deadline_text = match case.deadline_at {
        Some(d) => local(tenant, d),
        None => format!(
            "自收到本通知之时起{}小时内",
            (policy.expected_receipt_days + policy.deadline_days) * 24
        ),
    };
    let dates: Vec<String> = missed_days(tenant, &subject.row, case)
        .iter()
        .map(|d| d.to_string())
        .collect();
    let past = attempts(conn, tenant, case).await?;
    let replied = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .filter(case_event::Column::Kind.eq("case_paused"))
        .one(conn)
        .await?
        .is_some();
    // Asked only for the deadline card, the one notice that says it.
    let notice_read = match actions
        .iter()
        .any(|Action::Notify { step, .. }| *step == Step::DeadlinePassed)
    {
        true => notice_read(conn, tenant, case).await?,
        false => json!({ "reported": false }),
    };
    let mut context = json!({
        "employer": tenant.config.name,
        "case_no": case_no(case.id),
        "name": subject.row.name,
        "user_id": subject.row.user_id,
        "department": subject.row.department,
        "first_missed": case.first_missed.to_string(),
        "last_missed": case.last_missed.to_string(),
        "missed_days": case.missed_workdays,
        "dates": dates,
        "today": local_day(tenant, now),
        "deadline": deadline_text,
        // The formal notice's term, counted in hours from its proven receipt
        // (a term in days would end at midnight of its last day, 民法典 art.
        // 201; in hours it ends exactly when rollcall's deadline does).
        "deadline_hours": (policy.expected_receipt_days + policy.deadline_days) * 24,
        "rule": tenant.config.notice.rule,
        "rule_version": tenant.config.notice.rule_version,
        "hr_contact": tenant.config.notice.hr_contact,
        "manager_name": manager.as_ref().map(|m| m.name.clone()),
        "emergency_name": subject.emergency_name,
        "emergency_phone": subject.emergency_phone,
        "acknowledged_at": case.acknowledged_at.map(|a| local(tenant, a)),
        // What the employee agreed to (employee record, from the CSV): the
        // notice names it.
        "rules_acknowledged_on": subject.row.rules_acknowledged_on.map(|d| d.to_string()),
        "rules_acknowledged_version": subject.row.rules_version,
        "delivery_clause": subject.row.delivery_clause,
        "delivery_agreed_on": subject.row.delivery_agreed_on.map(|d| d.to_string()),
        "notice_read": notice_read,
        "attempts": past,
        "replied": replied,
    });
    // The channels the employee's notice of each step really went out on
    // (queued, with a provider to send it), for the copies, which come
    // after it in ladder order and name them.
    let mut used: Vec<&'static str> = Vec::new();
    let mut used_step = None;
    for action in actions {
        let Action::Notify {
            step,
            recipient,
            channel,
        } = *action;
        steps.insert(step);
        if used_step != Some(step) {
            used.clear();
            used_step = Some(step);
        }
        context["channels_used"] = json!(used);
        let Some(plan) = plan(step, recipient) else {
            skipped(conn, case, json!({ "step": step, "recipient": recipient, "reason": "no template for this recipient" }), now).await?;
            continue;
        };
        let people: Vec<&employee::Model> = match recipient {
            Recipient::Employee => vec![&subject.row],
            Recipient::Manager => manager.iter().collect(),
            Recipient::Hr => hr.iter().collect(),
        };
        if people.is_empty() {
            skipped(
                conn,
                case,
                json!({ "step": step, "recipient": recipient, "reason": "nobody in this role" }),
                now,
            )
            .await?;
            continue;
        }
        let mut blocks: Vec<&str> = plan.blocks.to_vec();
        let button_blocks: Vec<String> =
            plan.buttons.iter().map(|b| format!("button_{b}")).collect();
        blocks.extend(button_blocks.iter().map(String::as_str));
        let rendered =
            rt.templates
                .render_for(tenant.config.platform(), plan.template, &context, &blocks)?;
        for person in people {
            let payload = match channel {
                Channel::Chat => chat_payload(tenant, case, step, &rendered, plan.buttons),
                Channel::Sms => {
                    let phone = if person.user_id == subject.row.user_id {
                        subject.phone.clone()
                    } else {
                        None
                    };
                    if phone.is_none() {
                        skipped(conn, case, json!({ "step": step, "recipient": person.user_id, "channel": "sms", "reason": "no phone number" }), now).await?;
                        continue;
                    }
                    let text = if rendered.blocks.contains_key("sms") {
                        rendered.block("sms")
                    } else {
                        rendered.block("body")
                    };
                    let mut params = serde_json::Map::new();
                    for k in [
                        "case_no",
                        "name",
                        "first_missed",
                        "missed_days",
                        "deadline",
                        "hr_contact",
                    ] {
                        // Template parameters are strings; an absent value is empty.
                        let v = match &context[k] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        params.insert(k.to_owned(), json!(v));
                    }
                    Payload::Sms {
                        text: text.to_owned(),
                        params,
                    }
                }
                Channel::Email => {
                    let Some(to) = person.email.clone().filter(|e| !e.is_empty()) else {
                        skipped(conn, case, json!({ "step": step, "recipient": person.user_id, "channel": "email", "reason": "no email address" }), now).await?;
                        continue;
                    };
                    let pick = |a: &str, b: &str| {
                        if rendered.blocks.contains_key(a) {
                            rendered.block(a).to_owned()
                        } else {
                            rendered.block(b).to_owned()
                        }
                    };
                    Payload::Email {
                        to,
                        subject: pick("email_subject", "title"),
                        text: pick("email_body", "body"),
                    }
                }
            };
            let message = NewMessage {
                secret: None,
                tenant_id: tenant_id.clone(),
                // After a pause and a resume (a new fencing token) a step
                // whose notices were stopped goes out again, under new keys.
                idem_key: format!(
                    "notice:{}:{}:{}:{}{}",
                    case.id,
                    step.as_str(),
                    person.user_id,
                    channel_name(channel),
                    if case.fence > 1 {
                        format!(":f{}", case.fence)
                    } else {
                        String::new()
                    }
                ),
                case_id: Some(case.id),
                fence: Some(case.fence),
                step: Some(step.as_str().to_owned()),
                recipient: person.user_id.clone(),
                template: rendered.template.clone(),
                template_hash: rendered.hash.clone(),
                payload,
            };
            // The formal notice's full text goes as a text message (a card
            // shows only a short text); the card to acknowledge it follows.
            let ack = (step == Step::FormalNotice
                && channel == Channel::Chat
                && recipient == Recipient::Employee)
                .then(|| {
                    let mut ack = message.clone();
                    ack.idem_key.push_str("-ack");
                    ack.payload = chat_payload(tenant, case, step, &rendered, plan.buttons);
                    if let Payload::Card { body, .. } = &mut ack.payload {
                        *body = rendered.block("card_summary").to_owned();
                    }
                    ack
                });
            let mut message = message;
            if ack.is_some() {
                message.payload = chat_payload(tenant, case, step, &rendered, &[]);
            }
            enqueue(conn, message, now).await?;
            if let Some(ack) = ack {
                enqueue(conn, ack, now).await?;
            }
            let provided = match channel {
                Channel::Chat => tenant.chat.is_some(),
                Channel::Sms => tenant.sms.is_some(),
                Channel::Email => tenant.mail.is_some(),
            };
            if recipient == Recipient::Employee && provided {
                let name = channel_name(channel);
                if !used.contains(&name) {
                    used.push(name);
                }
            }
        }
    }
    Ok(steps)
}

fn chat_payload(
    tenant: &Tenant,
    case: &absence_case::Model,
    step: Step,
    rendered: &Rendered,
    buttons: &[&str],
) -> Payload {
    if buttons.is_empty() {
        return Payload::Text {
            content: format!("{}\n{}", rendered.block("title"), rendered.block("body")),
        };
    }
    Payload::Card {
        source: tenant.config.name.clone(),
        title: rendered.block("title").to_owned(),
        body: rendered.block("body").to_owned(),
        card_id: format!("rc-{}-{}-{}", case.id, step.as_str(), ulid::Ulid::new()),
        buttons: buttons
            .iter()
            .map(|b| Button {
                action: (*b).to_owned(),
                label: rendered.block(&format!("button_{b}")).to_owned(),
                key: String::new(),
            })
            .collect(),
    }
}

/// What the outbox does when it gives a row up (see
/// [`crate::outbox::OnGiveUp`]): tell HR ([`tell_hr_undeliverable`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TellHr;

impl crate::outbox::OnGiveUp for TellHr {
    fn given_up<'a>(
        &'a self,
        rt: &'a Runtime,
        txn: &'a DatabaseTransaction,
        tenant: &'a Tenant,
        row: &'a outbox::Model,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), crate::outbox::DeliverError>> {
        Box::pin(async move {
            tell_hr_undeliverable(rt, txn, tenant, row, reason).await?;
            Ok(())
        })
    }

    fn outcome_unknown<'a>(
        &'a self,
        rt: &'a Runtime,
        txn: &'a DatabaseTransaction,
        tenant: &'a Tenant,
        row: &'a outbox::Model,
        looked_up: bool,
    ) -> BoxFuture<'a, Result<(), crate::outbox::DeliverError>> {
        Box::pin(async move {
            tell_hr_unknown(rt, txn, tenant, row, looked_up).await?;
            Ok(())
        })
    }
}

/// Tells HR that whether the text of `row` went out is unknown (the
/// gateway did not answer; with `looked_up`, Aliyun holds no record of it
/// either), and that it will not be sent again by itself.
pub async fn tell_hr_unknown<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    row: &outbox::Model,
    looked_up: bool,
) -> Result<(), NotifyError> {
    tell_hr_about_copy(
        rt,
        conn,
        tenant,
        row,
        AboutCopy {
            template: "sms_unknown.hr",
            kind: "sms_outcome_unknown",
            idem: "sms_unknown",
            facts: json!({ "looked_up": looked_up }),
        },
    )
    .await
}

impl crate::outbox::reads::OnRead for TellHr {
    /// A read formal notice proves its receipt: its deadline starts.
    fn was_read<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        row: &'a outbox::Model,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async move {
            let Some(case_id) = row.case_id else {
                return Ok(());
            };
            if let Some(case) = absence_case::Entity::find_by_id(case_id).one(txn).await? {
                super::store::establish_receipt(txn, &case, now).await?;
            }
            Ok(())
        })
    }
}

/// Tells HR that `row` could not be delivered (`reason`).
pub async fn tell_hr_undeliverable<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    row: &outbox::Model,
    reason: &str,
) -> Result<(), NotifyError> {
    tell_hr_about_copy(
        rt,
        conn,
        tenant,
        row,
        AboutCopy {
            template: "undeliverable.hr",
            kind: "undeliverable",
            idem: "undeliverable",
            facts: json!({ "channel": row.channel, "reason": reason }),
        },
    )
    .await
}

/// What HR is told about one outbox copy.
struct AboutCopy {
    /// The template (its block `text`).
    template: &'static str,
    /// The case event recorded.
    kind: &'static str,
    /// The idempotency key's prefix: HR is told once per copy and person.
    idem: &'static str,
    /// Facts for the template and the event, beside the recipient's name,
    /// the case and the step.
    facts: Value,
}

/// Records `about.kind` for the copy `row` and tells every HR person with
/// `about.template` (an HR person whose own chat copy it was is skipped:
/// their chat is what failed).
async fn tell_hr_about_copy<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &Tenant,
    row: &outbox::Model,
    about: AboutCopy,
) -> Result<(), NotifyError> {
    let now = rt.clock.now();
    let name = employee_row(conn, &row.tenant_id, &row.recipient)
        .await?
        .map(|e| e.name)
        .unwrap_or_else(|| row.recipient.clone());
    let mut context = json!({
        "name": name,
        "case_no": row.case_id.map(case_no),
        "step": row.step,
    });
    let mut detail = json!({ "outbox": row.id });
    if let Some(facts) = about.facts.as_object() {
        for target in [&mut context, &mut detail] {
            if let Some(t) = target.as_object_mut() {
                t.extend(facts.clone());
            }
        }
    }
    let rendered = rt.templates.render_for(
        tenant.config.platform(),
        about.template,
        &context,
        &["text"],
    )?;
    record(
        conn,
        &row.tenant_id,
        row.case_id,
        Some(&row.recipient),
        about.kind,
        None,
        detail,
        None,
        now,
    )
    .await?;
    for hr in hr_people(conn, &row.tenant_id).await? {
        if hr.user_id == row.recipient && row.channel == "chat" {
            continue;
        }
        let message = NewMessage {
            secret: None,
            tenant_id: row.tenant_id.clone(),
            idem_key: format!("{}:{}:{}", about.idem, row.id, hr.user_id),
            case_id: row.case_id,
            fence: None,
            step: None,
            recipient: hr.user_id,
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: Payload::Text {
                content: rendered.block("text").to_owned(),
            },
        };
        enqueue(conn, message, now).await?;
    }
    Ok(())
}
