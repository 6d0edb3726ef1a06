//! The onboarding dialog: HR sends `/onboard 入职 <who>` (and the daily
//! scan job starts it for anyone hired in the last week who never had it);
//! the bot tells the person what is kept and why (a PIPL processing notice)
//! and asks, one message at a time, for an emergency contact and their
//! phone, the postal address, consent to electronic delivery at the agreed
//! addresses, and acknowledgment of the attendance rules; then shows the
//! answers to confirm or correct (`修改 2`). Each answer is checked (phone
//! formats, lengths, yes/no), kept sealed between messages (a restart
//! loses nothing), and logged as a leaf holding its hash, not its value;
//! confirmed answers go to the employee's record, sealed as an import
//! seals them.

use chrono::{DateTime, Utc};
use entity::{employee, onboarding};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::conversation::turn::{HandleError, Turn};
use crate::employees::{SealedColumn, seal};
use crate::evidence::{NewLeaf, append_later};
use crate::outbox::render::hex;
use crate::runtime::Runtime;

/// The questions, in order.
pub const STEPS: [&str; 5] = [
    "emergency_name",
    "emergency_phone",
    "postal_address",
    "consent",
    "rules",
];

/// The step after the last question: the answers shown to confirm.
pub const CONFIRM: &str = "confirm";
const DONE: &str = "done";
const CANCELLED: &str = "cancelled";

/// Why an answer is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Phone,
    Text,
    Choice,
}

impl Invalid {
    fn code(self) -> &'static str {
        match self {
            Invalid::Phone => "phone",
            Invalid::Text => "text",
            Invalid::Choice => "choice",
        }
    }
}

/// A mainland mobile (11 digits from 1), or a landline with its area code
/// (0 and 9 to 11 more digits, a `-` allowed after the code); spaces and
/// dashes between digits are dropped. Returns the number as kept.
pub fn phone(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("+86").unwrap_or(t);
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return None;
    }
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let b = digits.as_bytes();
    let mobile = b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]);
    let landline = (10..=12).contains(&b.len()) && b[0] == b'0';
    (mobile || landline).then_some(digits)
}

/// 同意/是/确认 (yes) or 不同意/否 (no).
pub fn yes_no(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "同意" | "是" | "确认" | "好" | "yes" | "y" => Some(true),
        "不同意" | "否" | "不" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// Checks an answer to `step`: the value kept, or why not.
pub fn check(step: &str, text: &str) -> Result<Value, Invalid> {
    let t = text.trim();
    match step {
        "emergency_name" => {
            let n = t.chars().count();
            if (1..=30).contains(&n) {
                Ok(json!(t))
            } else {
                Err(Invalid::Text)
            }
        }
        "emergency_phone" => phone(t).map(Value::from).ok_or(Invalid::Phone),
        "postal_address" => {
            let n = t.chars().count();
            if (6..=200).contains(&n) {
                Ok(json!(t))
            } else {
                Err(Invalid::Text)
            }
        }
        "consent" => yes_no(t).map(Value::from).ok_or(Invalid::Choice),
        // The rules can only be acknowledged: there is nothing to refuse
        // here (a refusal is a matter for HR, not for a form).
        "rules" => match yes_no(t) {
            Some(true) => Ok(json!(true)),
            _ => Err(Invalid::Choice),
        },
        _ => Err(Invalid::Choice),
    }
}

fn context_of(tenant: &str, user: &str) -> String {
    format!("onboarding:{tenant}:{user}")
}

/// The dialog of `user_id`, if one is under way.
pub async fn active<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<onboarding::Model>, DbErr> {
    Ok(onboarding::Entity::find()
        .filter(onboarding::Column::TenantId.eq(tenant_id))
        .filter(onboarding::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .filter(|o| o.step != DONE && o.step != CANCELLED))
}

/// Starts (or starts again) `person`'s dialog, started `by` (HR's user id,
/// or `rollcall`): the notice and the first question go to them.
pub(crate) async fn start<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    tenant: &crate::runtime::Tenant,
    person: &employee::Model,
    by: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(), HandleError> {
    let config = &tenant.config;
    let empty = rt.key.seal("{}", &context_of(&config.id, &person.user_id));
    onboarding::Entity::insert(onboarding::ActiveModel {
        tenant_id: Set(config.id.clone()),
        user_id: Set(person.user_id.clone()),
        step: Set(STEPS[0].to_owned()),
        answers_sealed: Set(empty),
        correcting: Set(false),
        started_by: Set(by.to_owned()),
        started_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::columns([
            onboarding::Column::TenantId,
            onboarding::Column::UserId,
        ])
        .update_columns([
            onboarding::Column::Step,
            onboarding::Column::AnswersSealed,
            onboarding::Column::Correcting,
            onboarding::Column::StartedBy,
            onboarding::Column::StartedAt,
            onboarding::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    append_later(
        conn,
        &config.id,
        now,
        NewLeaf::new("onboarding_started")
            .subject(Some(&person.user_id))
            .actor(Some(by))
            .detail(json!({ "notice": "onboarding.j2#notice" })),
    )
    .await?;
    let context = json!({
        "name": person.name,
        "company": config.name,
        "hr_contact": config.notice.hr_contact,
        "rules_version": config.notice.rule_version,
        "retention_days": rt.evidence.retention_days,
        "step": STEPS[0],
    });
    let rendered = rt
        .templates
        .render("onboarding", &context, &["notice", "ask"])?;
    let text = format!("{}\n\n{}", rendered.block("notice"), rendered.block("ask"));
    crate::outbox::enqueue(
        conn,
        crate::outbox::NewMessage {
            secret: None,
            tenant_id: config.id.clone(),
            idem_key: key.to_owned(),
            case_id: None,
            fence: None,
            step: Some("onboarding".into()),
            recipient: person.user_id.clone(),
            template: rendered.template.clone(),
            template_hash: rendered.hash.clone(),
            payload: crate::outbox::Payload::Text { content: text },
        },
        now,
    )
    .await?;
    Ok(())
}

/// The summary's context: the answers as the person gave them.
fn summary(answers: &Map<String, Value>) -> Value {
    json!({
        "emergency_name": answers.get("emergency_name"),
        "emergency_phone": answers.get("emergency_phone"),
        "postal_address": answers.get("postal_address"),
        "consent": answers.get("consent"),
        "rules": answers.get("rules"),
    })
}

/// `text` from `person`, whose dialog `dialog` is: an answer, a
/// correction, the confirmation, or 退出. Answers in `onboarding.j2`.
pub(crate) async fn answer(
    turn: &Turn<'_>,
    person: &employee::Model,
    dialog: &onboarding::Model,
    text: &str,
) -> Result<(), HandleError> {
    let rt = turn.rt;
    let config = &turn.tenant.config;
    let sealing = context_of(&config.id, &person.user_id);
    let mut answers: Map<String, Value> = rt
        .key
        .open(&dialog.answers_sealed, &sealing)
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let t = text.trim();
    let mut context = json!({
        "name": person.name,
        "rules_version": config.notice.rule_version,
        "company": config.name,
    });
    let set_step = |step: &str, correcting: bool, answers: &Map<String, Value>| {
        let sealed = rt
            .key
            .seal(&Value::Object(answers.clone()).to_string(), &sealing);
        onboarding::Entity::update_many()
            .col_expr(onboarding::Column::Step, Expr::value(step.to_owned()))
            .col_expr(onboarding::Column::AnswersSealed, Expr::value(sealed))
            .col_expr(onboarding::Column::Correcting, Expr::value(correcting))
            .col_expr(onboarding::Column::UpdatedAt, Expr::value(turn.now))
            .filter(onboarding::Column::Id.eq(dialog.id))
            .exec(turn.txn)
    };
    if matches!(t, "退出" | "取消") {
        set_step(CANCELLED, false, &Map::new()).await?;
        turn.record(
            None,
            Some(&person.user_id),
            "onboarding_cancelled",
            json!({}),
        )
        .await?;
        return turn.reply("onboarding", "cancelled", &context).await;
    }
    if dialog.step == CONFIRM {
        if let Some(n) = t
            .strip_prefix("修改")
            .and_then(|n| n.trim().parse::<usize>().ok())
            .filter(|n| (1..=STEPS.len()).contains(n))
        {
            set_step(STEPS[n - 1], true, &answers).await?;
            context["step"] = json!(STEPS[n - 1]);
            return turn.reply("onboarding", "ask", &context).await;
        }
        if yes_no(t) == Some(true) {
            finish(turn, person, &answers).await?;
            set_step(DONE, false, &Map::new()).await?;
            context["summary"] = summary(&answers);
            return turn.reply("onboarding", "done", &context).await;
        }
        context["summary"] = summary(&answers);
        return turn.reply("onboarding", "summary", &context).await;
    }
    let step = dialog.step.as_str();
    match check(step, t) {
        Err(why) => {
            context["step"] = json!(step);
            context["invalid"] = json!(why.code());
            turn.reply("onboarding", "ask", &context).await
        }
        Ok(value) => {
            // The leaf proves what was answered when, not the answer itself.
            turn.record(
                None,
                Some(&person.user_id),
                "onboarding_answer",
                json!({ "step": step, "sha256": hex(&Sha256::digest(value.to_string().as_bytes())) }),
            )
            .await?;
            answers.insert(step.to_owned(), value);
            let next = STEPS
                .iter()
                .position(|s| *s == step)
                .and_then(|i| STEPS.get(i + 1))
                .filter(|_| !dialog.correcting)
                .copied()
                .unwrap_or(CONFIRM);
            set_step(next, false, &answers).await?;
            if next == CONFIRM {
                context["summary"] = summary(&answers);
                turn.reply("onboarding", "summary", &context).await
            } else {
                context["step"] = json!(next);
                turn.reply("onboarding", "ask", &context).await
            }
        }
    }
}

/// Writes the confirmed answers to the employee's record (sealed where
/// the record seals), with the agreement and the acknowledgment dated
/// today, and logs it.
async fn finish(
    turn: &Turn<'_>,
    person: &employee::Model,
    answers: &Map<String, Value>,
) -> Result<(), HandleError> {
    let config = &turn.tenant.config;
    let key = &turn.rt.key;
    let today = turn.now.with_timezone(&config.timezone).date_naive();
    let text = |k: &str| answers.get(k).and_then(Value::as_str).unwrap_or_default();
    let consent = answers.get("consent").and_then(Value::as_bool);
    let sealed = |column, value: &str| Some(seal(key, column, &config.id, &person.user_id, value));
    employee::Entity::update_many()
        .col_expr(
            employee::Column::EmergencyContactNameSealed,
            Expr::value(sealed(
                SealedColumn::EmergencyContactName,
                text("emergency_name"),
            )),
        )
        .col_expr(
            employee::Column::EmergencyContactPhoneSealed,
            Expr::value(sealed(
                SealedColumn::EmergencyContactPhone,
                text("emergency_phone"),
            )),
        )
        .col_expr(
            employee::Column::PostalAddressSealed,
            Expr::value(sealed(SealedColumn::PostalAddress, text("postal_address"))),
        )
        .col_expr(employee::Column::ElectronicConsent, Expr::value(consent))
        .col_expr(
            employee::Column::DeliveryClause,
            Expr::value(Some(format!(
                "入职对话（rollcall，{}）",
                config.notice.rule_version
            ))),
        )
        .col_expr(employee::Column::DeliveryAgreedOn, Expr::value(Some(today)))
        .col_expr(
            employee::Column::RulesVersion,
            Expr::value(Some(config.notice.rule_version.clone())),
        )
        .col_expr(
            employee::Column::RulesAcknowledgedOn,
            Expr::value(Some(today)),
        )
        .col_expr(employee::Column::UpdatedAt, Expr::value(turn.now))
        .filter(employee::Column::Id.eq(person.id))
        .exec(turn.txn)
        .await?;
    turn.record(
        None,
        Some(&person.user_id),
        "onboarding_completed",
        json!({
            "electronic_consent": consent,
            "rules_version": config.notice.rule_version,
            "answers": STEPS.iter().map(|s| (*s, hex(&Sha256::digest(answers.get(*s).map(Value::to_string).unwrap_or_default().as_bytes())))).collect::<std::collections::BTreeMap<_, _>>(),
        }),
    )
    .await?;
    Ok(())
}

/// Starts the dialog of everyone active hired in the last `days` days who
/// never had one (with the daily scan job).
pub async fn start_new_hires(
    rt: &Runtime,
    tenant: &crate::runtime::Tenant,
    now: DateTime<Utc>,
    days: i64,
) -> Result<usize, HandleError> {
    let config = &tenant.config;
    let today = now.with_timezone(&config.timezone).date_naive();
    let txn = rt.db.write().await?;
    let had: std::collections::HashSet<String> = onboarding::Entity::find()
        .filter(onboarding::Column::TenantId.eq(&config.id))
        .all(&*txn)
        .await?
        .into_iter()
        .map(|o| o.user_id)
        .collect();
    let new: Vec<employee::Model> = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(&config.id))
        .filter(employee::Column::Active.eq(true))
        .filter(employee::Column::HireDate.gte(today - chrono::Duration::days(days)))
        .filter(employee::Column::HireDate.lte(today))
        .all(&*txn)
        .await?;
    let mut started = 0;
    for person in new.iter().filter(|p| !had.contains(&p.user_id)) {
        let key = format!("onboarding:{}:{}", person.user_id, today);
        start(rt, &*txn, tenant, person, "rollcall", &key, now).await?;
        started += 1;
    }
    txn.commit().await?;
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("13900001111", Some("13900001111"))]
    #[case("139-0000-1111", Some("13900001111"))]
    #[case("+86 139 0000 1111", Some("13900001111"))]
    #[case("021-61234567", Some("02161234567"))]
    #[case("12900001111", None)]
    #[case("1390000111", None)]
    #[case("139O0001111", None)]
    #[case("张三", None)]
    #[case("", None)]
    fn phones(#[case] text: &str, #[case] kept: Option<&str>) {
        assert_eq!(phone(text).as_deref(), kept);
    }

    #[rstest]
    #[case("emergency_name", "张父", true)]
    #[case("emergency_name", "", false)]
    #[case("emergency_phone", "13900000003", true)]
    #[case("emergency_phone", "明天再说", false)]
    #[case("postal_address", "上海市浦东新区示例路1号", true)]
    #[case("postal_address", "上海", false)]
    #[case("consent", "同意", true)]
    #[case("consent", "不同意", true)]
    #[case("consent", "也许", false)]
    #[case("rules", "确认", true)]
    #[case("rules", "不同意", false)]
    fn answers_are_checked(#[case] step: &str, #[case] text: &str, #[case] ok: bool) {
        assert_eq!(check(step, text).is_ok(), ok, "{step} {text}");
    }
}
