//! Forgetting a person once the retention period has passed (PIPL art. 47):
//! crypto-shredding in the evidence log, and their personal content in the
//! operational tables.
//!
//! In the log, a leaf's content — which holds its random salt — is deleted
//! and `erased_at` set; its hash stays, so the tree, every checkpoint and
//! every other person's inclusion proof are unchanged, and without the salt
//! the hash no longer confirms a guess of the content. Raw payloads only
//! the erased leaves reference are deleted, row and all: a row is named by
//! the payload's unsalted SHA-256.
//!
//! What is about the person is found by whom it is about, not by who sent
//! it ([`About`]): besides their own rows, HR's commands naming them, the
//! exhibits filed on them, their packages, and the answers to those.
//!
//! What stays, because others' proofs and the counts need it: every row
//! (but the raw payloads and photos) and id, the platform user id (the key
//! that ties a case to its events and messages), dates and times, kinds and
//! statuses, the geofence result of a check-in (site, flagged), the
//! template name and hash of a message and its receipt id, who confirmed a
//! 自离 notice and when. What goes: callback bodies, decrypted text and
//! parsed fields, coordinates, place labels and photos, exhibits' captions,
//! file names, hashes and files, the drafted 自离 notice and the union
//! note, stored packages, case-event details (texts, the policy snapshot),
//! rendered messages and provider answers, leave reasons, HR's free-text
//! reason for closing a case, and the directory's contact columns (the
//! whole directory entry if the person has left). On SQLite the WAL is
//! emptied afterwards, so erased pages do not stay in it.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use entity::{
    absence_case, case_event, check_in, departure, employee, evidence_leaf, evidence_log,
    evidence_raw, exhibit, exhibit_window, export_download, inbound_event, leave, media, outbox,
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
    /// Raw payloads deleted (bytes and row).
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
    /// Exhibits filed about them: caption, file name and hash cleared.
    pub exhibits: u64,
    /// 自离 processes: the drafted notice and the union note cleared.
    pub departures: u64,
    /// Packages about them: the stored zip deleted.
    pub exports: u64,
    pub directory: DirectoryEntry,
    /// The leaf that records the erasure.
    pub recorded_as: Option<u64>,
    /// SQLite: whether the WAL was checkpointed and emptied after the
    /// erasure (`false` if a reader held it; it empties at a later
    /// checkpoint). `None` on PostgreSQL or for a dry run.
    pub wal_truncated: Option<bool>,
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
    let about = About::find(db, tenant, user).await?;
    let theirs = live_leaves(db, tenant, user, &about).await?;
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
        let rows = Operational::count(db, tenant, user, &about).await?;
        let (raw, raw_kept) = split_raw(&candidates, &excluding(referenced, &theirs));
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
            exhibits: rows.exhibits,
            departures: rows.departures,
            exports: rows.exports,
            directory: match &known {
                None => DirectoryEntry::None,
                Some(e) if e.active => DirectoryEntry::ContactsCleared,
                Some(_) => DirectoryEntry::Deleted,
            },
            recorded_as: None,
            wal_truncated: None,
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
    let about = About::find(&txn, tenant, user).await?;
    let theirs = live_leaves(&txn, tenant, user, &about).await?;
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
    let (raw, raw_kept) = split_raw(&all, &excluding(referenced, &theirs));
    // The whole row goes, not only its bytes: it is named by the payload's
    // unsalted SHA-256, which would confirm a guess of it. No leaf with
    // content references it, so verify does not look for it.
    for chunk in raw.chunks(IN_CHUNK) {
        evidence_raw::Entity::delete_many()
            .filter(evidence_raw::Column::TenantId.eq(tenant))
            .filter(evidence_raw::Column::Sha256.is_in(chunk.iter().cloned()))
            .exec(&txn)
            .await?;
    }
    let indexes: Vec<i64> = theirs.keys().map(|i| *i as i64).collect();
    for chunk in indexes.chunks(IN_CHUNK) {
        evidence_leaf::Entity::update_many()
            .col_expr(
                evidence_leaf::Column::Content,
                Expr::value(Value::String(None)),
            )
            .col_expr(evidence_leaf::Column::ErasedAt, Expr::value(now))
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Idx.is_in(chunk.iter().copied()))
            .filter(evidence_leaf::Column::Content.is_not_null())
            .exec(&txn)
            .await?;
    }
    let rows = Operational::clear(&txn, tenant, user, &about).await?;
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
    let wal_truncated = truncate_wal(db).await?;
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
        exhibits: rows.exhibits,
        departures: rows.departures,
        exports: rows.exports,
        directory: rows.directory,
        recorded_as: Some(recorded.index),
        wal_truncated,
    })
}

/// SQLite: copies the WAL into the database and empties it, so that the
/// pages holding what was erased do not stay in the WAL file (the erasing
/// connection zeroes what it frees: `secure_delete`, see `src/db/mod.rs`). Whether
/// it could; `None` on PostgreSQL, where `VACUUM` reclaims later.
async fn truncate_wal(db: &DatabaseConnection) -> Result<Option<bool>, DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Ok(None);
    }
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ))
        .await?;
    // (busy, frames in the WAL, frames checkpointed); busy = 1 when a
    // reader or writer kept it from finishing.
    let busy = row.map_or(Ok(1), |r| r.try_get_by_index::<i64>(0))?;
    Ok(Some(busy == 0))
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
    about: &About,
) -> Result<BTreeMap<u64, Theirs>, DbErr> {
    let find = || {
        evidence_leaf::Entity::find()
            .select_only()
            .column(evidence_leaf::Column::Idx)
            .column(evidence_leaf::Column::Kind)
            .column(evidence_leaf::Column::Content)
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Content.is_not_null())
    };
    let mut rows: Vec<(i64, String, Option<String>)> = find()
        .filter(evidence_leaf::Column::Subject.eq(user))
        .into_tuple()
        .all(conn)
        .await?;
    // Others' leaves about them: HR's callback naming them, the answer.
    for chunk in about.sources().chunks(IN_CHUNK) {
        rows.extend(
            find()
                .filter(evidence_leaf::Column::Source.is_in(chunk.iter().cloned()))
                .into_tuple::<(i64, String, Option<String>)>()
                .all(conn)
                .await?,
        );
    }
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

/// Drops, from `found`, the references of leaves that are being erased
/// too (another person's leaf about this one: HR's command naming them).
fn excluding(
    found: HashMap<String, Vec<i64>>,
    erasing: &BTreeMap<u64, Theirs>,
) -> HashMap<String, Vec<i64>> {
    found
        .into_iter()
        .filter_map(|(sha, idx)| {
            let idx: Vec<i64> = idx
                .into_iter()
                .filter(|i| !erasing.contains_key(&(*i as u64)))
                .collect();
            (!idx.is_empty()).then_some((sha, idx))
        })
        .collect()
}

/// What is about the person, found by whom it is about, not by who sent
/// it: their cases; their own callbacks and the ones others sent about
/// them (HR's `/status 张三`, the `#证据` caption and photo, a card press
/// on their case, the `/export` that built their package); the case
/// events about them or caused by those callbacks; and the messages about
/// them (on their cases, to them, or answering those callbacks).
#[derive(Debug, Default)]
struct About {
    cases: Vec<i64>,
    /// Inbound events: their own and others' about them.
    events: BTreeSet<i64>,
    case_events: BTreeSet<i64>,
    messages: BTreeSet<i64>,
    /// Their packages (`export_downloads`).
    downloads: BTreeSet<i64>,
}

impl About {
    async fn find<C: ConnectionTrait>(conn: &C, tenant: &str, user: &str) -> Result<Self, DbErr> {
        let cases: Vec<i64> = absence_case::Entity::find()
            .select_only()
            .column(absence_case::Column::Id)
            .filter(absence_case::Column::TenantId.eq(tenant))
            .filter(absence_case::Column::UserId.eq(user))
            .into_tuple()
            .all(conn)
            .await?;
        let own: BTreeSet<i64> = inbound_event::Entity::find()
            .select_only()
            .column(inbound_event::Column::Id)
            .filter(inbound_event::Column::TenantId.eq(tenant))
            .filter(inbound_event::Column::FromUser.eq(user))
            .into_tuple::<i64>()
            .all(conn)
            .await?
            .into_iter()
            .collect();
        let rows: Vec<(i64, Option<i64>)> = case_event::Entity::find()
            .select_only()
            .column(case_event::Column::Id)
            .column(case_event::Column::InboundEventId)
            .filter(case_event::Column::TenantId.eq(tenant))
            .filter(
                Condition::any()
                    .add(case_event::Column::UserId.eq(user))
                    .add(case_event::Column::CaseId.is_in(cases.clone())),
            )
            .into_tuple()
            .all(conn)
            .await?;
        let mut case_events: BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
        let mut linked: BTreeSet<i64> = rows.into_iter().filter_map(|r| r.1).collect();
        linked.extend(
            exhibit::Entity::find()
                .select_only()
                .column(exhibit::Column::InboundEventId)
                .filter(exhibit::Column::TenantId.eq(tenant))
                .filter(exhibit::Column::UserId.eq(user))
                .into_tuple::<i64>()
                .all(conn)
                .await?,
        );
        linked.extend(
            exhibit_window::Entity::find()
                .select_only()
                .column(exhibit_window::Column::InboundEventId)
                .filter(exhibit_window::Column::TenantId.eq(tenant))
                .filter(exhibit_window::Column::UserId.eq(user))
                .into_tuple::<i64>()
                .all(conn)
                .await?,
        );
        let downloads: Vec<(i64, i64)> = export_download::Entity::find()
            .select_only()
            .column(export_download::Column::Id)
            .column(export_download::Column::InboundEventId)
            .filter(export_download::Column::TenantId.eq(tenant))
            .filter(export_download::Column::Employee.eq(user))
            .into_tuple()
            .all(conn)
            .await?;
        linked.extend(downloads.iter().map(|d| d.1));
        // Only others' callbacks about them: what the person's own
        // commands caused about someone else stays that person's.
        let linked: Vec<i64> = linked.difference(&own).copied().collect();
        for chunk in linked.chunks(IN_CHUNK) {
            case_events.extend(
                case_event::Entity::find()
                    .select_only()
                    .column(case_event::Column::Id)
                    .filter(case_event::Column::TenantId.eq(tenant))
                    .filter(case_event::Column::InboundEventId.is_in(chunk.iter().copied()))
                    .into_tuple::<i64>()
                    .all(conn)
                    .await?,
            );
        }
        let mut events = own;
        events.extend(linked);
        let downloads: BTreeSet<i64> = downloads.into_iter().map(|d| d.0).collect();
        let mut messages: BTreeSet<i64> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Id)
            .filter(outbox::Column::TenantId.eq(tenant))
            .filter(
                Condition::any()
                    .add(outbox::Column::CaseId.is_in(cases.clone()))
                    .add(
                        Condition::all()
                            .add(outbox::Column::CaseId.is_null())
                            .add(outbox::Column::Recipient.eq(user)),
                    ),
            )
            .into_tuple::<i64>()
            .all(conn)
            .await?
            .into_iter()
            .collect();
        // Messages to others about no case: answers to the callbacks above
        // (`reply:{event}`, `card_update:{event}`, `forward:{event}:{hr}`)
        // and the link to their package (`export:{download}:{block}`).
        let keyed: Vec<(i64, String)> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Id)
            .column(outbox::Column::IdemKey)
            .filter(outbox::Column::TenantId.eq(tenant))
            .filter(outbox::Column::CaseId.is_null())
            .filter(outbox::Column::Recipient.ne(user))
            .filter(
                Condition::any()
                    .add(outbox::Column::IdemKey.like("reply:%"))
                    .add(outbox::Column::IdemKey.like("card_update:%"))
                    .add(outbox::Column::IdemKey.like("forward:%"))
                    .add(outbox::Column::IdemKey.like("export:%")),
            )
            .into_tuple()
            .all(conn)
            .await?;
        for (id, key) in keyed {
            let mut parts = key.split(':');
            let kind = parts.next().unwrap_or_default();
            let Some(n) = parts.next().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            let about = match kind {
                "export" => downloads.contains(&n),
                _ => events.contains(&n),
            };
            if about {
                messages.insert(id);
            }
        }
        Ok(About {
            cases,
            events,
            case_events,
            messages,
            downloads,
        })
    }

    /// The `source` of the leaves recording these rows.
    fn sources(&self) -> Vec<String> {
        let events = self.events.iter().map(|i| format!("inbound_events/{i}"));
        let case_events = self.case_events.iter().map(|i| format!("case_events/{i}"));
        let messages = self.messages.iter().map(|i| format!("outbox/{i}"));
        events.chain(case_events).chain(messages).collect()
    }
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
    exhibits: u64,
    departures: u64,
    exports: u64,
    directory: DirectoryEntry,
}

/// Photos of the person's check-ins and exhibits that no one else's
/// check-in or exhibit shows.
async fn their_photos<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    user: &str,
) -> Result<Vec<String>, DbErr> {
    let mut shas: BTreeSet<String> = check_in::Entity::find()
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
    shas.extend(
        exhibit::Entity::find()
            .select_only()
            .column(exhibit::Column::Sha256)
            .filter(exhibit::Column::TenantId.eq(tenant))
            .filter(exhibit::Column::UserId.eq(user))
            .filter(exhibit::Column::Sha256.ne(""))
            .into_tuple::<String>()
            .all(conn)
            .await?,
    );
    let mut shared: BTreeSet<String> = BTreeSet::new();
    let list: Vec<String> = shas.iter().cloned().collect();
    for chunk in list.chunks(IN_CHUNK) {
        shared.extend(
            check_in::Entity::find()
                .select_only()
                .column(check_in::Column::MediaSha256)
                .filter(check_in::Column::TenantId.eq(tenant))
                .filter(check_in::Column::UserId.ne(user))
                .filter(check_in::Column::MediaSha256.is_in(chunk.iter().cloned()))
                .into_tuple::<Option<String>>()
                .all(conn)
                .await?
                .into_iter()
                .flatten(),
        );
        shared.extend(
            exhibit::Entity::find()
                .select_only()
                .column(exhibit::Column::Sha256)
                .filter(exhibit::Column::TenantId.eq(tenant))
                .filter(exhibit::Column::UserId.ne(user))
                .filter(exhibit::Column::Sha256.is_in(chunk.iter().cloned()))
                .into_tuple::<String>()
                .all(conn)
                .await?,
        );
    }
    Ok(shas.difference(&shared).cloned().collect())
}

/// Runs `update` on `ids` in chunks; the rows it changed.
async fn by_ids<'a, F, Fut>(ids: impl IntoIterator<Item = &'a i64>, update: F) -> Result<u64, DbErr>
where
    F: Fn(Vec<i64>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, DbErr>>,
{
    let ids: Vec<i64> = ids.into_iter().copied().collect();
    let mut changed = 0;
    for chunk in ids.chunks(IN_CHUNK) {
        changed += update(chunk.to_vec()).await?;
    }
    Ok(changed)
}

impl Operational {
    async fn count<C: ConnectionTrait>(
        conn: &C,
        tenant: &str,
        user: &str,
        about: &About,
    ) -> Result<Self, DbErr> {
        use sea_orm::PaginatorTrait as _;
        Ok(Operational {
            inbound_events: about.events.len() as u64,
            check_ins: check_in::Entity::find()
                .filter(check_in::Column::TenantId.eq(tenant))
                .filter(check_in::Column::UserId.eq(user))
                .count(conn)
                .await?,
            photos: their_photos(conn, tenant, user).await?.len() as u64,
            case_events: about.case_events.len() as u64,
            messages: about.messages.len() as u64,
            leave_records: leave::Entity::find()
                .filter(leave::Column::TenantId.eq(tenant))
                .filter(leave::Column::UserId.eq(user))
                .count(conn)
                .await?,
            cases: about.cases.len() as u64,
            exhibits: exhibit::Entity::find()
                .filter(exhibit::Column::TenantId.eq(tenant))
                .filter(exhibit::Column::UserId.eq(user))
                .count(conn)
                .await?,
            departures: departure::Entity::find()
                .filter(departure::Column::TenantId.eq(tenant))
                .filter(departure::Column::UserId.eq(user))
                .count(conn)
                .await?,
            exports: about.downloads.len() as u64,
            directory: DirectoryEntry::None,
        })
    }

    /// Clears the person's content, keeping ids, dates and statuses.
    async fn clear<C: ConnectionTrait>(
        conn: &C,
        tenant: &str,
        user: &str,
        about: &About,
    ) -> Result<Self, DbErr> {
        let null_text = || Expr::value(Value::String(None));
        let empty = || Expr::value(String::new());
        let inbound_events = by_ids(&about.events, |ids| async move {
            Ok(inbound_event::Entity::update_many()
                .col_expr(inbound_event::Column::RawBody, empty())
                .col_expr(inbound_event::Column::RawQuery, empty())
                .col_expr(inbound_event::Column::Plaintext, empty())
                .col_expr(inbound_event::Column::Content, null_text())
                .col_expr(inbound_event::Column::Fields, Expr::value("{}"))
                .filter(inbound_event::Column::TenantId.eq(tenant))
                .filter(inbound_event::Column::Id.is_in(ids))
                .exec(conn)
                .await?
                .rows_affected)
        })
        .await?;
        // Before the check-ins and exhibits lose their photos' hashes.
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
        // A photo's unsalted hash would confirm a guess of it.
        let exhibits = exhibit::Entity::update_many()
            .col_expr(exhibit::Column::Caption, empty())
            .col_expr(exhibit::Column::Sha256, empty())
            .col_expr(exhibit::Column::FileName, null_text())
            .col_expr(exhibit::Column::PlatformMediaId, null_text())
            .filter(exhibit::Column::TenantId.eq(tenant))
            .filter(exhibit::Column::UserId.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        exhibit_window::Entity::update_many()
            .col_expr(exhibit_window::Column::Caption, empty())
            .filter(exhibit_window::Column::TenantId.eq(tenant))
            .filter(exhibit_window::Column::UserId.eq(user))
            .exec(conn)
            .await?;
        // The drafted notice (and its hash, which would confirm a guess of
        // it) and the union note; who confirmed what, and when, stays.
        let departures = departure::Entity::update_many()
            .col_expr(departure::Column::Document, Expr::value("{}"))
            .col_expr(departure::Column::DocumentSha256, empty())
            .col_expr(departure::Column::UnionNote, null_text())
            .filter(departure::Column::TenantId.eq(tenant))
            .filter(departure::Column::UserId.eq(user))
            .exec(conn)
            .await?
            .rows_affected;
        let exports = by_ids(&about.downloads, |ids| async move {
            Ok(export_download::Entity::update_many()
                .col_expr(
                    export_download::Column::Bytes,
                    Expr::value(Value::Bytes(None)),
                )
                .col_expr(export_download::Column::Error, null_text())
                // Its link no longer gives anything: gone, not an empty zip.
                .col_expr(export_download::Column::Status, Expr::value("expired"))
                .filter(export_download::Column::Id.is_in(ids))
                .exec(conn)
                .await?
                .rows_affected)
        })
        .await?;
        let case_events = by_ids(&about.case_events, |ids| async move {
            Ok(case_event::Entity::update_many()
                .col_expr(case_event::Column::Detail, Expr::value("{}"))
                .filter(case_event::Column::Id.is_in(ids))
                .exec(conn)
                .await?
                .rows_affected)
        })
        .await?;
        let messages = by_ids(&about.messages, |ids| async move {
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
                .filter(outbox::Column::Id.is_in(ids.clone()))
                .filter(outbox::Column::Status.is_in([
                    OutboxStatus::Pending.as_str(),
                    OutboxStatus::Sending.as_str(),
                ]))
                .exec(conn)
                .await?;
            Ok(outbox::Entity::update_many()
                .col_expr(outbox::Column::Payload, Expr::value("{}"))
                .col_expr(outbox::Column::Receipt, null_text())
                .col_expr(outbox::Column::CardRef, null_text())
                .col_expr(outbox::Column::SecretSealed, null_text())
                // Aliyun's report quotes the text, and with it the name.
                .col_expr(outbox::Column::DeliveryReport, null_text())
                .filter(outbox::Column::Id.is_in(ids))
                .exec(conn)
                .await?
                .rows_affected)
        })
        .await?;
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
            exhibits,
            departures,
            exports,
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
