//! Postal delivery (EMS, registered mail) of the formal notice and the
//! termination notice. rollcall renders the letter, print-ready (HTML and
//! PDF), addressed to the postal address on record: the notice exactly as
//! it went out electronically, with its hash. HR records the tracking
//! number when it is mailed (the letter as rendered then is kept with that
//! leaf, so the package holds the letter as sent), and later the date it was
//! signed for, or that it came back. A signed-for formal notice is a proof
//! of receipt (`signed:post`, see [`super::store::establish_receipt`]); a
//! letter still in the post keeps a public announcement (公告) from being
//! recorded.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use entity::{absence_case, case_event, outbox};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;
use serde_json::{Value, json};

use super::store::{case_no, record, record_leaf};
use crate::evidence::NewLeaf;
use crate::evidence::log::sha256_hex;
use crate::outbox::Payload;
use crate::outbox::render::{TemplateError, Templates};
use crate::pdf::{Align, Paragraph};
use crate::runtime::Tenant;
use crate::sealed::DataKey;

/// Which notice a letter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LetterKind {
    /// 返岗通知书.
    FormalNotice,
    /// 解除劳动合同通知书.
    TerminationNotice,
}

impl LetterKind {
    /// The outbox step (and the word in leaves) of this notice.
    pub fn step(self) -> &'static str {
        match self {
            LetterKind::FormalNotice => "formal_notice",
            LetterKind::TerminationNotice => "termination_notice",
        }
    }

    fn of_step(step: &str) -> Option<LetterKind> {
        match step {
            "formal_notice" => Some(LetterKind::FormalNotice),
            "termination_notice" => Some(LetterKind::TerminationNotice),
            _ => None,
        }
    }
}

/// A letter, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub kind: LetterKind,
    pub case_id: i64,
    pub title: String,
    pub html: String,
    pub pdf: Vec<u8>,
    pub html_sha256: String,
    pub pdf_sha256: String,
    /// SHA-256 of the notice's text as it went out electronically.
    pub notice_sha256: String,
    /// The outbox row whose text the letter carries.
    pub notice_outbox: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("no postal address on record for {0}")]
    NoAddress(String),
    #[error("case {0} has no {1} to send by post")]
    NoNotice(String, &'static str),
    #[error("no employee {0}")]
    NoEmployee(String),
    #[error(transparent)]
    Employee(#[from] crate::employees::LoadError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// The notice's text as it was issued to the employee (whether or not a
/// channel delivered it): the email copy (a whole letter, with its
/// subject), else the chat text, else the SMS. Returns (outbox id, when it
/// was issued, title, body).
async fn notice_text<C: ConnectionTrait>(
    conn: &C,
    case: &absence_case::Model,
    kind: LetterKind,
) -> Result<Option<(i64, DateTime<Utc>, String, String)>, DbErr> {
    let rows = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case.id))
        .filter(outbox::Column::Step.eq(kind.step()))
        .filter(outbox::Column::Recipient.eq(&case.user_id))
        .order_by_asc(outbox::Column::Id)
        .all(conn)
        .await?;
    let mut best: Option<(u8, i64, DateTime<Utc>, String, String)> = None;
    for r in rows {
        let (rank, title, body) = match serde_json::from_str::<Payload>(&r.payload) {
            Ok(Payload::Email { subject, text, .. }) => (0, subject, text),
            Ok(Payload::Text { content }) => {
                let (title, body) = content.split_once('\n').unwrap_or(("", &content));
                (1, title.to_owned(), body.to_owned())
            }
            Ok(Payload::Sms { text, .. }) => (2, String::new(), text),
            _ => continue,
        };
        if best.as_ref().is_none_or(|b| rank < b.0) {
            best = Some((rank, r.id, r.created_at, title, body));
        }
    }
    Ok(best.map(|(_, id, issued, title, body)| (id, issued, title, body)))
}

/// Renders the letter of `kind` for `case`: its notice, addressed to the
/// employee's postal address. The same case and notice always give the
/// same bytes.
pub async fn letter<C: ConnectionTrait>(
    conn: &C,
    templates: &Templates,
    key: &DataKey,
    tenant: &Tenant,
    case: &absence_case::Model,
    kind: LetterKind,
) -> Result<Letter, LetterError> {
    let row = crate::employees::directory::employee_row(conn, &case.tenant_id, &case.user_id)
        .await?
        .ok_or_else(|| LetterError::NoEmployee(case.user_id.clone()))?;
    let employee = crate::employees::Employee::open(key, row)?;
    let address = employee
        .postal_address
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| LetterError::NoAddress(employee.name.clone()))?;
    let Some((outbox_id, issued_at, title, body)) = notice_text(conn, case, kind).await? else {
        return Err(LetterError::NoNotice(case_no(case.id), kind.step()));
    };
    let notice_sha256 = sha256_hex(format!("{title}\n{body}").as_bytes());
    let body_lines: Vec<&str> = body.lines().collect();
    let rendered = templates.render_for(
        tenant.config.platform(),
        "letter",
        json!({
            "employer": tenant.config.name,
            "name": employee.name,
            "address": address.trim(),
            "title": title,
            "body_lines": body_lines,
            "case_no": case_no(case.id),
            "kind": kind.step(),
            "issued": issued_at.with_timezone(&tenant.config.timezone).format("%Y-%m-%d").to_string(),
            "notice_sha256": notice_sha256,
        }),
        &["sender", "recipient", "title", "body", "footer", "html"],
    )?;
    let title = rendered.block("title").to_owned();
    let pdf = crate::pdf::render(
        &title,
        &[
            Paragraph::new(rendered.block("sender"), 11.0, Align::Left, 0.0),
            Paragraph::new(rendered.block("recipient"), 12.0, Align::Left, 6.0),
            Paragraph::new(&title, 16.0, Align::Center, 30.0),
            Paragraph::new(rendered.block("body"), 12.0, Align::Left, 14.0),
            Paragraph::new(rendered.block("footer"), 9.0, Align::Left, 28.0),
        ],
    );
    let html = format!("{}\n", rendered.block("html"));
    Ok(Letter {
        kind,
        case_id: case.id,
        title,
        html_sha256: sha256_hex(html.as_bytes()),
        pdf_sha256: sha256_hex(&pdf),
        html,
        pdf,
        notice_sha256,
        notice_outbox: outbox_id,
    })
}

/// The case a letter of `kind` about `user_id` is for: the formal notice
/// of their open case, or the termination notice of their latest case that
/// has one.
pub async fn case_for<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    user_id: &str,
    kind: LetterKind,
) -> Result<Option<absence_case::Model>, DbErr> {
    match kind {
        LetterKind::FormalNotice => Ok(super::store::unresolved(conn, tenant_id, user_id)
            .await?
            .filter(|c| c.formal_notice_at.is_some())),
        LetterKind::TerminationNotice => {
            let Some(row) = outbox::Entity::find()
                .filter(outbox::Column::TenantId.eq(tenant_id))
                .filter(outbox::Column::Recipient.eq(user_id))
                .filter(outbox::Column::Step.eq(kind.step()))
                .filter(outbox::Column::CaseId.is_not_null())
                .order_by_desc(outbox::Column::Id)
                .one(conn)
                .await?
            else {
                return Ok(None);
            };
            absence_case::Entity::find_by_id(row.case_id.unwrap_or_default())
                .one(conn)
                .await
        }
    }
}

/// A tracking number as HR typed it, normalised: 5 to 40 letters, digits
/// or hyphens, upper case (EMS numbers look like `EA123456789CN` or 13
/// digits).
pub fn tracking_number(text: &str) -> Option<String> {
    let t = text.trim();
    ((5..=40).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then(|| t.to_ascii_uppercase())
}

/// A letter recorded as mailed (its `letter_mailed` event).
#[derive(Debug, Clone, PartialEq)]
pub struct Mailed {
    pub event_id: i64,
    pub case_id: i64,
    pub user_id: String,
    pub kind: LetterKind,
    pub tracking_no: String,
    pub mailed_at: DateTime<Utc>,
    pub pdf_sha256: String,
}

/// What happened to a mailed letter since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    InTransit,
    Signed(NaiveDate),
    Returned(NaiveDate),
}

fn mailed_of(e: &case_event::Model) -> Option<Mailed> {
    let d: Value = serde_json::from_str(&e.detail).ok()?;
    Some(Mailed {
        event_id: e.id,
        case_id: e.case_id?,
        user_id: e.user_id.clone()?,
        kind: LetterKind::of_step(d["kind"].as_str()?)?,
        tracking_no: d["tracking_no"].as_str()?.to_owned(),
        mailed_at: e.at,
        pdf_sha256: d["pdf_sha256"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The letter mailed under `tracking_no` in `tenant_id`, if any.
pub async fn find_mailed<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    tracking_no: &str,
) -> Result<Option<Mailed>, DbErr> {
    Ok(case_event::Entity::find()
        .filter(case_event::Column::TenantId.eq(tenant_id))
        .filter(case_event::Column::Kind.eq("letter_mailed"))
        .all(conn)
        .await?
        .iter()
        .filter_map(mailed_of)
        .find(|m| m.tracking_no == tracking_no))
}

/// What became of the letter `tracking_no` of `case_id`.
pub async fn outcome<C: ConnectionTrait>(
    conn: &C,
    case_id: i64,
    tracking_no: &str,
) -> Result<Outcome, DbErr> {
    for (kind, d) in super::store::letter_events(conn, case_id).await? {
        if kind == "letter_mailed" || d["tracking_no"].as_str() != Some(tracking_no) {
            continue;
        }
        let Some(on) = d["on"].as_str().and_then(|s| s.parse::<NaiveDate>().ok()) else {
            continue;
        };
        return Ok(if kind == "letter_signed" {
            Outcome::Signed(on)
        } else {
            Outcome::Returned(on)
        });
    }
    Ok(Outcome::InTransit)
}

/// Why a postal record was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// That tracking number is recorded already (for this letter: `same`).
    Duplicate { same: bool },
    /// No letter was recorded under that number.
    Unknown,
    /// The date is before the letter was mailed, or in the future.
    BadDate {
        mailed_on: NaiveDate,
        today: NaiveDate,
    },
    /// Signed for or returned already.
    Settled(Outcome),
}

/// Records that `letter` was mailed under `tracking_no` by `actor`: a
/// `letter_mailed` leaf carrying the letter (PDF and HTML) as rendered now.
#[allow(clippy::too_many_arguments)]
pub async fn record_mailed<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    case: &absence_case::Model,
    letter: &Letter,
    tracking_no: &str,
    actor: &str,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Result<(), Refusal>, DbErr> {
    lock_case(conn, case.id, now).await?;
    if let Some(m) = find_mailed(conn, &tenant.config.id, tracking_no).await? {
        return Ok(Err(Refusal::Duplicate {
            same: m.case_id == case.id && m.pdf_sha256 == letter.pdf_sha256,
        }));
    }
    let mailed_on = now.with_timezone(&tenant.config.timezone).date_naive();
    let leaf = NewLeaf::new("letter_mailed")
        .case(Some(case.id))
        .subject(Some(&case.user_id))
        .actor(Some(actor))
        .channel("post")
        .id("tracking_no", tracking_no)
        .raw("letter_pdf", "application/pdf", letter.pdf.clone())
        .raw(
            "letter_html",
            "text/html; charset=utf-8",
            letter.html.clone(),
        )
        .detail(json!({
            "kind": letter.kind.step(),
            "tracking_no": tracking_no,
            "mailed_on": mailed_on.to_string(),
            "pdf_sha256": letter.pdf_sha256,
            "html_sha256": letter.html_sha256,
            "notice_sha256": letter.notice_sha256,
            "notice_outbox": letter.notice_outbox,
        }));
    record_leaf(conn, &tenant.config.id, leaf, inbound_event_id, now).await?;
    Ok(Ok(()))
}

/// Takes the write lock on case `id`'s row until the transaction ends (an
/// update: PostgreSQL locks the row; SQLite has one writer anyway).
async fn lock_case<C: ConnectionTrait>(conn: &C, id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    use sea_orm::sea_query::Expr;
    absence_case::Entity::update_many()
        .col_expr(absence_case::Column::UpdatedAt, Expr::value(now))
        .filter(absence_case::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// The moment a letter signed for on `on` counts as received: the start of
/// the next day (tenant time). The receipt slip gives the day, not the
/// hour, so the deadline runs from the latest moment it could have been.
pub fn received_at(tenant: &Tenant, on: NaiveDate) -> DateTime<Utc> {
    let next = on + Duration::days(1);
    next.and_time(NaiveTime::MIN)
        .and_local_timezone(tenant.config.timezone)
        .earliest()
        .map_or_else(
            || next.and_time(NaiveTime::MIN).and_utc(),
            |d| d.with_timezone(&Utc),
        )
}

/// Records that the letter `mailed` was signed for (`signed` true) or came
/// back undelivered on `on`, by `actor`'s word. A signed-for formal notice
/// of an open case proves its receipt once the slip or the tracking page is
/// filed with `#证据` (see `store::establish_receipt`). Returns the case as
/// it stands.
#[allow(clippy::too_many_arguments)]
pub async fn record_outcome<C: ConnectionTrait>(
    conn: &C,
    tenant: &Tenant,
    mailed: &Mailed,
    signed: bool,
    on: NaiveDate,
    note: Option<&str>,
    actor: &str,
    inbound_event_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Result<absence_case::Model, Refusal>, DbErr> {
    let today = now.with_timezone(&tenant.config.timezone).date_naive();
    let mailed_on = mailed
        .mailed_at
        .with_timezone(&tenant.config.timezone)
        .date_naive();
    if on < mailed_on || on > today {
        return Ok(Err(Refusal::BadDate { mailed_on, today }));
    }
    // Two records of the same letter at once take turns: the case row's
    // lock (held to the end of the transaction) comes before the check.
    lock_case(conn, mailed.case_id, now).await?;
    match outcome(conn, mailed.case_id, &mailed.tracking_no).await? {
        Outcome::InTransit => {}
        settled => return Ok(Err(Refusal::Settled(settled))),
    }
    let mut detail = json!({
        "kind": mailed.kind.step(),
        "tracking_no": mailed.tracking_no,
        "on": on.to_string(),
        "mailed_event": mailed.event_id,
    });
    if signed {
        detail["received_at"] = json!(received_at(tenant, on));
    }
    if let Some(note) = note {
        detail["note"] = json!(note);
    }
    record(
        conn,
        &tenant.config.id,
        Some(mailed.case_id),
        Some(&mailed.user_id),
        if signed {
            "letter_signed"
        } else {
            "letter_returned"
        },
        Some(actor),
        detail,
        inbound_event_id,
        now,
    )
    .await?;
    let case = super::store::reload(conn, mailed.case_id).await?;
    if signed && mailed.kind == LetterKind::FormalNotice {
        return Ok(Ok(super::store::establish_receipt(conn, &case, now).await?));
    }
    Ok(Ok(case))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("EA123456789CN", Some("EA123456789CN"))]
    #[case(" ea123456789cn ", Some("EA123456789CN"))]
    #[case("1234567890123", Some("1234567890123"))]
    #[case("SF-1234", Some("SF-1234"))]
    #[case("SF-1", None)]
    #[case("12345", Some("12345"))]
    #[case("EMS 123", None)]
    #[case("单号123456", None)]
    #[case("", None)]
    fn tracking_numbers(#[case] text: &str, #[case] expected: Option<&str>) {
        assert_eq!(tracking_number(text).as_deref(), expected);
    }
}
