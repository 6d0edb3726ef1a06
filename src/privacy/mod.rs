//! Forgetting a person once the retention period has passed (PIPL art. 47):
//! crypto-shredding in the evidence log, and their personal content in the
//! operational tables.
//!
//! In the log, a leaf's content — which holds its random salt — is deleted
//! and `erased_at` set; its hash stays, so the tree, every checkpoint and
//! every other person's inclusion proof are unchanged, and without the salt
//! the hash no longer confirms a guess of the content. Raw payloads only
//! this person's leaves reference lose their bytes.
//!
//! What stays, because others' proofs and the counts need it: every row and
//! id, the platform user id (the key that ties a case to its events and
//! messages), dates and times, kinds and statuses, the geofence result of a
//! check-in (site, flagged), the template name and hash of a message and its
//! receipt id. What goes: callback bodies, decrypted text and parsed fields,
//! coordinates, place labels and photos, case-event details (texts, the
//! policy snapshot), rendered messages and provider answers, leave reasons,
//! HR's free-text reason for closing a case, and the directory's contact
//! columns (the whole directory entry if the person has left).

pub mod cli;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use entity::{
    absence_case, case_event, check_in, employee, evidence_leaf, evidence_log, evidence_raw,
    inbound_event, leave, media, outbox,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait, Value,
};
use serde::Serialize;
use serde_json::json;

use crate::cases::CaseStatus;
use crate::cases::store::case_no;
use crate::evidence::NewLeaf;
use crate::evidence::log::{LeafData, append_one};
use crate::evidence::verify::ranges;
use crate::outbox::OutboxStatus;

/// Leaves read per query when looking for references to a payload.
const SCAN_PAGE: i64 = 50_000;
/// Values per `IN (…)` list (SQLite binds at most 32,766).
const IN_CHUNK: usize = 500;

/// Why a person was not forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(
        "`{user}` has a case that is not closed ({case}): nobody is forgotten while a case is open or paused"
    )]
    CaseOpen { user: String, case: String },
    #[error(
        "`{user}` cannot be forgotten before {} ({zone}): {days} days after {}",
        local(*possible, *zone),
        basis.describe(*zone)
    )]
    TooEarly {
        user: String,
        possible: DateTime<Utc>,
        basis: Basis,
        days: u64,
        zone: Tz,
    },
    #[error("tenant `{tenant}` has no record of `{user}`")]
    Unknown { tenant: String, user: String },
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string()
}

/// What the retention period of a person counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "basis", content = "at", rename_all = "snake_case")]
pub enum Basis {
    /// The time their last case was closed.
    LastCaseClosed(DateTime<Utc>),
    /// They never had a case: the time of their last leaf.
    LastLeaf(DateTime<Utc>),
    /// Nothing of theirs is in the log or in a case.
    NoRecord,
}

impl Basis {
    fn describe(&self, zone: Tz) -> String {
        match self {
            Basis::LastCaseClosed(at) => format!("their last case closed ({})", local(*at, zone)),
            Basis::LastLeaf(at) => format!(
                "their last record ({}; they never had a case)",
                local(*at, zone)
            ),
            Basis::NoRecord => "nothing (no record)".to_owned(),
        }
    }
}

/// When a person may be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// A case of theirs is open or paused (its id).
    CaseOpen(i64),
    /// From `at` on.
    From { at: DateTime<Utc>, basis: Basis },
}

/// A case as retention sees it.
#[derive(Debug, Clone, Copy)]
pub struct CaseEnd {
    pub id: i64,
    /// `None` while open or paused.
    pub closed_at: Option<DateTime<Utc>>,
}

/// The retention rule: `days` after the person's last case closed; if they
/// never had a case, after their last leaf; never while a case is open.
pub fn retention(cases: &[CaseEnd], last_leaf: Option<DateTime<Utc>>, days: u64) -> Retention {
    if let Some(open) = cases.iter().find(|c| c.closed_at.is_none()) {
        return Retention::CaseOpen(open.id);
    }
    let basis = match (cases.iter().filter_map(|c| c.closed_at).max(), last_leaf) {
        (Some(closed), _) => Basis::LastCaseClosed(closed),
        (None, Some(leaf)) => Basis::LastLeaf(leaf),
        (None, None) => Basis::NoRecord,
    };
    let at = match basis {
        Basis::LastCaseClosed(t) | Basis::LastLeaf(t) => i64::try_from(days)
            .ok()
            .and_then(Duration::try_days)
            .and_then(|d| t.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        Basis::NoRecord => DateTime::<Utc>::MIN_UTC,
    };
    Retention::From { at, basis }
}

/// What happened to the directory entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryEntry {
    #[default]
    None,
    /// Still working there: only the contact columns were cleared.
    ContactsCleared,
    /// Left: the entry was deleted.
    Deleted,
}

/// What was (or, for a dry run, would be) erased.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub tenant: String,
    pub user: String,
    pub dry_run: bool,
    pub basis: Basis,
    /// The leaves whose content and salt are deleted, with their kinds.
    pub leaves: Vec<(u64, String)>,
    /// Raw payloads whose bytes are deleted.
    pub raw: Vec<String>,
    /// Raw payloads of theirs kept because another person's leaf references them.
    pub raw_kept: Vec<String>,
    pub inbound_events: u64,
    pub check_ins: u64,
    pub photos: u64,
    pub case_events: u64,
    pub messages: u64,
    pub leave_records: u64,
    pub cases: u64,
    pub directory: DirectoryEntry,
    /// The leaf that records the erasure.
    pub recorded_as: Option<u64>,
}

/// Forgets `user` of `tenant` if `retention_days` have passed at `now` (see
/// [`retention`]); with `dry_run`, only says what would be erased. Safe to
/// run again: what is erased stays erased, and anything recorded since is
/// erased too.
pub async fn forget(
    db: &DatabaseConnection,
    tenant: &str,
    user: &str,
    retention_days: u64,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ForgetReport, ForgetError> {
    let zone = evidence_log::Entity::find_by_id(tenant.to_owned())
        .one(db)
        .await?
        .and_then(|l| l.zone.parse::<Tz>().ok())
        .unwrap_or(chrono_tz::Asia::Shanghai);
    let basis = allowed(db, tenant, user, retention_days, now, zone).await?;
    // Found before the transaction, so that the long read (other people's
    // leaves) holds no lock; the transaction checks what could have changed.
    let theirs = live_leaves(db, tenant, user).await?;
    let candidates: BTreeSet<String> = theirs.values().flat_map(|l| l.raw.clone()).collect();
    let seen_size = log_size(db, tenant).await?;
    let referenced = references(db, tenant, user, &candidates, 0, seen_size).await?;
    let known = employee::Entity::find()
        .filter(employee::Column::TenantId.eq(tenant))
        .filter(employee::Column::UserId.eq(user))
        .one(db)
        .await?;
    if theirs.is_empty() && matches!(basis, Basis::NoRecord) && known.is_none() {
        return Err(ForgetError::Unknown {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
        });
    }
    if dry_run {
        let rows = Operational::count(db, tenant, user).await?;
        let (raw, raw_kept) = split_raw(&candidates, &referenced);
        return Ok(ForgetReport {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            dry_run,
            basis,
            leaves: theirs.iter().map(|(i, l)| (*i, l.kind.clone())).collect(),
            raw,
            raw_kept,
            inbound_events: rows.inbound_events,
            check_ins: rows.check_ins,
            photos: rows.photos,
            case_events: rows.case_events,
            messages: rows.messages,
            leave_records: rows.leave_records,
            cases: rows.cases,
            directory: match &known {
                None => DirectoryEntry::None,
                Some(e) if e.active => DirectoryEntry::ContactsCleared,
                Some(_) => DirectoryEntry::Deleted,
            },
            recorded_as: None,
        });
    }

    let txn = db.begin().await?;
    // The first statement writes: it takes the log's head row (PostgreSQL)
    // or the database (SQLite) before anything is read, so no leaf of this
    // tenant is appended until the erasure commits, and SQLite never has to
    // upgrade a reading transaction.
    evidence_log::Entity::update_many()
        .col_expr(evidence_log::Column::UpdatedAt, Expr::value(now))
        .filter(evidence_log::Column::TenantId.eq(tenant))
        .exec(&txn)
        .await?;
    // A case may have opened, or a leaf arrived, since the check above.
    let basis = allowed(&txn, tenant, user, retention_days, now, zone).await?;
    let theirs = live_leaves(&txn, tenant, user).await?;
    let all: BTreeSet<String> = theirs.values().flat_map(|l| l.raw.clone()).collect();
    let size = log_size(&txn, tenant).await?;
    let mut referenced = still_referenced(&txn, tenant, user, referenced).await?;
    merge(
        &mut referenced,
        references(&txn, tenant, user, &all, seen_size, size).await?,
    );
    let new: BTreeSet<String> = all.difference(&candidates).cloned().collect();
    if !new.is_empty() {
        merge(
            &mut referenced,
            references(&txn, tenant, user, &new, 0, seen_size).await?,
        );
    }
    let (raw, raw_kept) = split_raw(&all, &referenced);
    for chunk in raw.chunks(IN_CHUNK) {
        evidence_raw::Entity::update_many()
            .col_expr(evidence_raw::Column::Bytes, Expr::value(Value::Bytes(None)))
            .col_expr(evidence_raw::Column::ErasedAt, Expr::value(now))
            .filter(evidence_raw::Column::TenantId.eq(tenant))
            .filter(evidence_raw::Column::Sha256.is_in(chunk.iter().cloned()))
            .filter(evidence_raw::Column::ErasedAt.is_null())
            .exec(&txn)
            .await?;
    }
    evidence_leaf::Entity::update_many()
        .col_expr(
            evidence_leaf::Column::Content,
            Expr::value(Value::String(None)),
        )
        .col_expr(evidence_leaf::Column::ErasedAt, Expr::value(now))
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Subject.eq(user))
        .filter(evidence_leaf::Column::Content.is_not_null())
        .exec(&txn)
        .await?;
    let rows = Operational::clear(&txn, tenant, user).await?;
    let leaves: Vec<(u64, String)> = theirs.iter().map(|(i, l)| (*i, l.kind.clone())).collect();
    let indexes: Vec<u64> = leaves.iter().map(|(i, _)| *i).collect();
    // Counts and indexes only: which person it was is not recorded.
    let record = NewLeaf::new("forgotten").detail(json!({
        "leaves": ranges(&indexes),
        "erased_leaves": indexes.len(),
        "erased_raw": raw.len(),
        "retention_days": retention_days,
    }));
    let recorded = append_one(&txn, tenant, now, record).await?;
    txn.commit().await?;
    Ok(ForgetReport {
        tenant: tenant.to_owned(),
        user: user.to_owned(),
        dry_run,
        basis,
        leaves,
        raw,
        raw_kept,
        inbound_events: rows.inbound_events,
        check_ins: rows.check_ins,
        photos: rows.photos,
        case_events: rows.case_events,
        messages: rows.messages,
        leave_records: rows.leave_records,
        cases: rows.cases,
        directory: rows.directory,
        recorded_as: Some(recorded.index),
    })
}

/// Refuses unless the retention period of `user` has passed at `now`.
async fn allowed<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
    days: u64,
    now: DateTime<Utc>,
    zone: Tz,
) -> Result<Basis, ForgetError> {
    let cases: Vec<CaseEnd> = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(tenant))
        .filter(absence_case::Column::UserId.eq(user))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| CaseEnd {
            id: c.id,
            closed_at: (CaseStatus::of(&c) == Some(CaseStatus::Resolved))
                .then(|| c.resolved_at.unwrap_or(c.updated_at)),
        })
        .collect();
    let last_leaf = evidence_leaf::Entity::find()
        .select_only()
        .column(evidence_leaf::Column::RecordedAt)
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Subject.eq(user))
        .order_by_desc(evidence_leaf::Column::Idx)
        .into_tuple::<DateTime<Utc>>()
        .one(conn)
        .await?;
    match retention(&cases, last_leaf, days) {
        Retention::CaseOpen(id) => Err(ForgetError::CaseOpen {
            user: user.to_owned(),
            case: case_no(id),
        }),
        Retention::From { at, basis } if now < at => Err(ForgetError::TooEarly {
            user: user.to_owned(),
            possible: at,
            basis,
            days,
            zone,
        }),
        Retention::From { basis, .. } => Ok(basis),
    }
}

async fn log_size<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<i64, DbErr> {
    Ok(evidence_log::Entity::find_by_id(tenant.to_owned())
        .one(conn)
        .await?
        .map_or(0, |l| l.size))
}

/// A leaf of the person's that still has its content.
struct Theirs {
    kind: String,
    /// The raw payloads it references.
    raw: Vec<String>,
}

async fn live_leaves<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
) -> Result<BTreeMap<u64, Theirs>, DbErr> {
    let rows: Vec<(i64, String, Option<String>)> = evidence_leaf::Entity::find()
        .select_only()
        .column(evidence_leaf::Column::Idx)
        .column(evidence_leaf::Column::Kind)
        .column(evidence_leaf::Column::Content)
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Subject.eq(user))
        .filter(evidence_leaf::Column::Content.is_not_null())
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(idx, kind, content)| {
            let content = content.unwrap_or_default();
            // Content that no longer parses (tampered) still names its
            // payloads: they are found the way references by others are.
            let raw = match serde_json::from_str::<LeafData>(&content) {
                Ok(d) => d.raw.into_iter().map(|r| r.sha256).collect(),
                Err(_) => sha_mentions(&content).map(str::to_owned).collect(),
            };
            (idx as u64, Theirs { kind, raw })
        })
        .collect())
}

/// Every 64-hex-digit value of a `sha256` key in leaf content (canonical
/// JSON writes `"sha256":"…"` with no space). This finds every raw
/// reference, and also templates' hashes, which only ever keep a payload
/// that could have gone: the safe side.
pub fn sha_mentions(content: &str) -> impl Iterator<Item = &str> {
    const KEY: &str = "\"sha256\":\"";
    content.match_indices(KEY).filter_map(|(at, _)| {
        let value = content.get(at + KEY.len()..at + KEY.len() + 64)?;
        let closed = content[at + KEY.len() + 64..].starts_with('"');
        (closed && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
    })
}

/// For each of `candidates`, the leaves in `from..to` of anyone else (or
/// of no one) that still have content and reference it.
async fn references<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
    candidates: &BTreeSet<String>,
    from: i64,
    to: i64,
) -> Result<HashMap<String, Vec<i64>>, DbErr> {
    let mut found: HashMap<String, Vec<i64>> = HashMap::new();
    if candidates.is_empty() {
        return Ok(found);
    }
    let mut start = from;
    while start < to {
        let end = start.saturating_add(SCAN_PAGE).min(to);
        let rows: Vec<(i64, Option<String>)> = evidence_leaf::Entity::find()
            .select_only()
            .column(evidence_leaf::Column::Idx)
            .column(evidence_leaf::Column::Content)
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Idx.gte(start))
            .filter(evidence_leaf::Column::Idx.lt(end))
            .filter(evidence_leaf::Column::Content.is_not_null())
            .filter(others(user))
            .into_tuple()
            .all(conn)
            .await?;
        for (idx, content) in rows {
            for sha in sha_mentions(content.as_deref().unwrap_or_default()) {
                if candidates.contains(sha) {
                    found.entry(sha.to_owned()).or_default().push(idx);
                }
            }
        }
        start = end;
    }
    Ok(found)
}

/// Leaves about someone else, or about no one.
fn others(user: &str) -> Condition {
    Condition::any()
        .add(evidence_leaf::Column::Subject.is_null())
        .add(evidence_leaf::Column::Subject.ne(user))
}

/// Keeps, of `found`, the payloads whose referencing leaves still have
/// their content (another forget may have erased them meanwhile).
async fn still_referenced<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
    found: HashMap<String, Vec<i64>>,
) -> Result<HashMap<String, Vec<i64>>, DbErr> {
    let leaves: BTreeSet<i64> = found.values().flatten().copied().collect();
    let mut live = BTreeSet::new();
    let leaves: Vec<i64> = leaves.into_iter().collect();
    for chunk in leaves.chunks(IN_CHUNK) {
        let rows: Vec<i64> = evidence_leaf::Entity::find()
            .select_only()
            .column(evidence_leaf::Column::Idx)
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Idx.is_in(chunk.iter().copied()))
            .filter(evidence_leaf::Column::Content.is_not_null())
            .filter(others(user))
            .into_tuple()
            .all(conn)
            .await?;
        live.extend(rows);
    }
    Ok(found
        .into_iter()
        .filter_map(|(sha, idx)| {
            let idx: Vec<i64> = idx.into_iter().filter(|i| live.contains(i)).collect();
            (!idx.is_empty()).then_some((sha, idx))
        })
        .collect())
}

fn merge(into: &mut HashMap<String, Vec<i64>>, from: HashMap<String, Vec<i64>>) {
    for (sha, idx) in from {
        into.entry(sha).or_default().extend(idx);
    }
}

/// The payloads to erase, and those kept for another person's leaf.
fn split_raw(
    all: &BTreeSet<String>,
    referenced: &HashMap<String, Vec<i64>>,
) -> (Vec<String>, Vec<String>) {
    all.iter()
        .cloned()
        .partition(|sha| !referenced.contains_key(sha))
}

/// Rows of the person's in the operational tables, counted or cleared.
#[derive(Debug, Default)]
struct Operational {
    inbound_events: u64,
    check_ins: u64,
    photos: u64,
    case_events: u64,
    messages: u64,
    leave_records: u64,
    cases: u64,
    directory: DirectoryEntry,
}

/// The messages that are about the person: about a case of theirs, or sent
/// to them about no case (the same rule as the subject of their leaves).
async fn their_messages<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
) -> Result<Condition, DbErr> {
    let cases: Vec<i64> = absence_case::Entity::find()
        .select_only()
        .column(absence_case::Column::Id)
        .filter(absence_case::Column::TenantId.eq(tenant))
        .filter(absence_case::Column::UserId.eq(user))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(Condition::all()
        .add(outbox::Column::TenantId.eq(tenant))
        .add(
            Condition::any()
                .add(outbox::Column::CaseId.is_in(cases))
                .add(
                    Condition::all()
                        .add(outbox::Column::CaseId.is_null())
                        .add(outbox::Column::Recipient.eq(user)),
                ),
        ))
}

/// Photos of the person's check-ins that no one else's check-in shows.
async fn their_photos<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
) -> Result<Vec<String>, DbErr> {
    let shas: BTreeSet<String> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::MediaSha256)
        .filter(check_in::Column::TenantId.eq(tenant))
        .filter(check_in::Column::UserId.eq(user))
        .filter(check_in::Column::MediaSha256.is_not_null())
        .into_tuple::<Option<String>>()
        .all(conn)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let shared: BTreeSet<String> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::MediaSha256)
        .filter(check_in::Column::TenantId.eq(tenant))
        .filter(check_in::Column::UserId.ne(user))
        .filter(check_in::Column::MediaSha256.is_in(shas.iter().cloned()))
        .into_tuple::<Option<String>>()
        .all(conn)
        .await?
        .into_iter()
        .flatten()
        .collect();
    Ok(shas.difference(&shared).cloned().collect())
}

impl Operational {
    async fn count<C: ConnectionTrait>(conn: &C, tenant: &str, user: &str) -> Result<Self, DbErr> {
        use sea_orm::PaginatorTrait as _;
        Ok(Operational {
            inbound_events: inbound_event::Entity::find()
                .filter(inbound_event::Column::TenantId.eq(tenant))
                .filter(inbound_event::Column::FromUser.eq(user))
                .count(conn)
                .await?,
            check_ins: check_in::Entity::find()
                .filter(check_in::Column::TenantId.eq(tenant))
                .filter(check_in::Column::UserId.eq(user))
                .count(conn)
                .await?,
            photos: their_photos(conn, tenant, user).await?.len() as u64,
            case_events: case_event::Entity::find()
                .filter(case_event::Column::TenantId.eq(tenant))
                .filter(case_event::Column::UserId.eq(user))
                .count(conn)
                .await?,
            messages: outbox::Entity::find()
                .filter(their_messages(conn, tenant, user).await?)
                .count(conn)
                .await?,
            leave_records: leave::Entity::find()
                .filter(leave::Column::TenantId.eq(tenant))
                .filter(leave::Column::UserId.eq(user))
                .count(conn)
                .await?,
            cases: absence_case::Entity::find()
                .filter(absence_case::Column::TenantId.eq(tenant))
                .filter(absence_case::Column::UserId.eq(user))
                .count(conn)
                .await?,
            directory: DirectoryEntry::None,
        })
    }

    /// Clears the person's content, keeping ids, dates and statuses.
    async fn clear<C: ConnectionTrait>(conn: &C, tenant: &str, user: &str) -> Result<Self, DbErr> {
        let null_text = || Expr::value(Value::String(None));
        let empty = || Expr::value(String::new());
        let inbound_events = inbound_event::Entity::update_many()
            .col_expr(inbound_event::Column::RawBody, empty())
            .col_expr(inbound_event::Column::RawQuery, empty())
            .col_expr(inbound_event::Column::Plaintext, empty())
            .col_expr(inbound_event::Column::Content, null_text())
            .col_expr(inbound_event::Column::Fields, Expr::value("{}"))
            .filter(inbound_event::Column::TenantId.eq(tenant))
            .filter(inbound_event::Column::FromUser.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        // Before the check-ins lose their photos' hashes.
        let photos = their_photos(conn, tenant, user).await?;
        for chunk in photos.chunks(IN_CHUNK) {
            media::Entity::delete_many()
                .filter(media::Column::TenantId.eq(tenant))
                .filter(media::Column::Sha256.is_in(chunk.iter().cloned()))
                .exec(conn)
                .await?;
        }
        let check_ins = check_in::Entity::update_many()
            .col_expr(check_in::Column::Latitude, Expr::value(Value::Double(None)))
            .col_expr(
                check_in::Column::Longitude,
                Expr::value(Value::Double(None)),
            )
            .col_expr(
                check_in::Column::DistanceM,
                Expr::value(Value::Double(None)),
            )
            .col_expr(check_in::Column::Label, null_text())
            .col_expr(check_in::Column::MediaSha256, null_text())
            .filter(check_in::Column::TenantId.eq(tenant))
            .filter(check_in::Column::UserId.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        let case_events = case_event::Entity::update_many()
            .col_expr(case_event::Column::Detail, Expr::value("{}"))
            .filter(case_event::Column::TenantId.eq(tenant))
            .filter(case_event::Column::UserId.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        let mine = their_messages(conn, tenant, user).await?;
        // A message still waiting is not sent to, or about, a forgotten person.
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::Status,
                Expr::value(OutboxStatus::Cancelled.as_str()),
            )
            .col_expr(
                outbox::Column::Error,
                Expr::value("the person was forgotten"),
            )
            .filter(mine.clone())
            .filter(outbox::Column::Status.is_in([
                OutboxStatus::Pending.as_str(),
                OutboxStatus::Sending.as_str(),
            ]))
            .exec(conn)
            .await?;
        let messages = outbox::Entity::update_many()
            .col_expr(outbox::Column::Payload, Expr::value("{}"))
            .col_expr(outbox::Column::Receipt, null_text())
            .col_expr(outbox::Column::CardRef, null_text())
            .filter(mine)
            .exec(conn)
            .await?
            .rows_affected;
        let leave_records = leave::Entity::update_many()
            .col_expr(leave::Column::Reason, empty())
            .filter(leave::Column::TenantId.eq(tenant))
            .filter(leave::Column::UserId.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        // HR's free-text reason goes; how the case ended stays.
        let cases = absence_case::Entity::update_many()
            .col_expr(absence_case::Column::Resolution, Expr::value("closed"))
            .filter(absence_case::Column::TenantId.eq(tenant))
            .filter(absence_case::Column::UserId.eq(user))
            .filter(absence_case::Column::Resolution.like("closed:%"))
            .exec(conn)
            .await?
            .rows_affected;
        let entry = employee::Entity::find()
            .filter(employee::Column::TenantId.eq(tenant))
            .filter(employee::Column::UserId.eq(user))
            .one(conn)
            .await?;
        let directory = match entry {
            None => DirectoryEntry::None,
            Some(e) if e.active => {
                employee::Entity::update_many()
                    .col_expr(employee::Column::PhoneSealed, null_text())
                    .col_expr(employee::Column::Email, null_text())
                    .col_expr(employee::Column::EmergencyContactNameSealed, null_text())
                    .col_expr(employee::Column::EmergencyContactPhoneSealed, null_text())
                    .col_expr(employee::Column::PostalAddressSealed, null_text())
                    .filter(employee::Column::Id.eq(e.id))
                    .exec(conn)
                    .await?;
                DirectoryEntry::ContactsCleared
            }
            Some(e) => {
                employee::Entity::delete_by_id(e.id).exec(conn).await?;
                DirectoryEntry::Deleted
            }
        };
        Ok(Operational {
            inbound_events,
            check_ins,
            photos: photos.len() as u64,
            case_events,
            messages,
            leave_records,
            cases,
            directory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn retention_counts_from_the_last_closed_case_else_the_last_leaf() {
        let closed = |id, t: &str| CaseEnd {
            id,
            closed_at: Some(at(t)),
        };
        let open = |id| CaseEnd {
            id,
            closed_at: None,
        };
        let leaf = Some(at("2027-05-01T00:00:00Z"));
        for (cases, last_leaf, days, expected) in [
            (
                vec![
                    closed(1, "2026-12-02T02:40:00Z"),
                    closed(2, "2026-06-01T00:00:00Z"),
                ],
                leaf,
                1095,
                Retention::From {
                    at: at("2029-12-01T02:40:00Z"),
                    basis: Basis::LastCaseClosed(at("2026-12-02T02:40:00Z")),
                },
            ),
            (
                vec![closed(1, "2026-12-02T02:40:00Z")],
                leaf,
                0,
                Retention::From {
                    at: at("2026-12-02T02:40:00Z"),
                    basis: Basis::LastCaseClosed(at("2026-12-02T02:40:00Z")),
                },
            ),
            (
                vec![],
                leaf,
                30,
                Retention::From {
                    at: at("2027-05-31T00:00:00Z"),
                    basis: Basis::LastLeaf(at("2027-05-01T00:00:00Z")),
                },
            ),
            (
                vec![closed(1, "2026-12-02T02:40:00Z"), open(7)],
                leaf,
                0,
                Retention::CaseOpen(7),
            ),
            (
                vec![],
                None,
                1095,
                Retention::From {
                    at: DateTime::<Utc>::MIN_UTC,
                    basis: Basis::NoRecord,
                },
            ),
            (
                vec![],
                leaf,
                u64::MAX,
                Retention::From {
                    at: DateTime::<Utc>::MAX_UTC,
                    basis: Basis::LastLeaf(at("2027-05-01T00:00:00Z")),
                },
            ),
        ] {
            assert_eq!(
                retention(&cases, last_leaf, days),
                expected,
                "{cases:?} {days}"
            );
        }
    }

    #[test]
    fn sha_mentions_finds_each_hash_valued_sha256_key() {
        let a = "a".repeat(64);
        let b = "0123456789abcdef".repeat(4);
        for (content, expected) in [
            (
                format!(r#"{{"raw":[{{"sha256":"{a}"}},{{"sha256":"{b}"}}]}}"#),
                vec![a.as_str(), b.as_str()],
            ),
            (
                format!(r#"{{"template":{{"id":"x","sha256":"{a}"}}}}"#),
                vec![a.as_str()],
            ),
            // Not 64 digits, not hex, not closed, another key.
            (r#"{"sha256":"abc"}"#.to_owned(), vec![]),
            (format!(r#"{{"sha256":"{}"}}"#, "z".repeat(64)), vec![]),
            (format!(r#"{{"sha256":"{a}0"}}"#), vec![]),
            (format!(r#"{{"text_sha256":"{a}"}}"#), vec![]),
            (format!(r#"{{"sha256":"{}"#, &a[..40]), vec![]),
        ] {
            assert_eq!(
                sha_mentions(&content).collect::<Vec<_>>(),
                expected,
                "{content}"
            );
        }
    }

    #[test]
    fn a_refusal_names_the_date_in_the_tenants_zone() {
        let err = ForgetError::TooEarly {
            user: "lisi".into(),
            possible: at("2029-12-01T02:40:00Z"),
            basis: Basis::LastCaseClosed(at("2026-12-02T02:40:00Z")),
            days: 1095,
            zone: chrono_tz::Asia::Shanghai,
        };
        assert_eq!(
            err.to_string(),
            "`lisi` cannot be forgotten before 2029-12-01 10:40 (Asia/Shanghai): 1095 days after their last case closed (2026-12-02 10:40)"
        );
    }
}
