//! `rollcall evidence verify`: recomputes a tenant's log from what is
//! stored — every leaf's hash from its content, every raw payload's hash,
//! the tree at every checkpoint, each checkpoint's signature and the
//! consistency between consecutive checkpoints — and names each record and
//! field that does not match.
//!
//! Content that hashes to its stored leaf hash is what was committed, so it
//! is only read for the fields kept in columns and its raw references; the
//! whole leaf is parsed, and compared with the operational rows it records,
//! only when its hash no longer matches.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use entity::{
    check_in, evidence_checkpoint, evidence_leaf, evidence_log, evidence_raw, inbound_event, outbox,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, IsolationLevel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use super::handover::{self, Handover};
use super::leaf_read::{LeafReadError, LeafRow, SqliteLeaves};
use super::log::{LeafData, RawRef, parse_frontier, sha256_hex, utc_text};
use super::merkle::{Hash, Tree, leaf_hash, parse_hash, verify_consistency};
use super::note::{self, NoteError};
use super::witness::Witnessed;
use crate::outbox::Payload;
use crate::outbox::render::hex;

/// Leaves read per query (in index order).
const LEAF_PAGE: i64 = 50_000;
/// Raw payloads read per query.
const RAW_PAGE: u64 = 2_000;
/// Raw payloads larger than this (photos) are read one at a time.
const INLINE_RAW: i64 = 4 << 20;
/// Below this many items a batch is checked on one thread.
const PARALLEL_FROM: usize = 2_048;
/// Values quoted in a problem are cut to this many characters.
const QUOTE_CHARS: usize = 96;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("tenant `{0}` has no evidence log")]
    NoLog(String),
    #[error("the verifier key: {0}")]
    Key(NoteError),
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    LeafRead(#[from] LeafReadError),
    #[error("a verification thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

/// The stored record a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The log's head (`evidence_logs`).
    Log,
    Leaf {
        index: u64,
        kind: Option<String>,
        source: Option<String>,
    },
    /// A raw payload; `leaf` and `position` say which reference led to it.
    Raw {
        sha256: String,
        leaf: Option<u64>,
        position: Option<usize>,
        role: Option<String>,
    },
    Checkpoint {
        size: u64,
    },
    /// The witness file of the last checkpoint signed (outside the database).
    Witness {
        size: u64,
    },
    /// A hand-over from one evidence key to the next, by their key ids.
    Handover {
        old: String,
        new: String,
    },
}

/// What inside a record does not match: a field of the leaf data (or of a
/// checkpoint note), or a column of the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Field(String),
    Column(String),
}

/// One thing that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub record: Record,
    #[serde(flatten)]
    pub field: Option<Field>,
    pub message: String,
}

impl Problem {
    fn new(record: Record, field: Option<Field>, message: impl Into<String>) -> Problem {
        Problem {
            record,
            field,
            message: message.into(),
        }
    }

    /// The leaf index it is about, if any (of the leaf, or of the leaf that
    /// references the raw payload).
    pub fn leaf(&self) -> Option<u64> {
        match &self.record {
            Record::Leaf { index, .. } => Some(*index),
            Record::Raw { leaf, .. } => *leaf,
            _ => None,
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Log => f.write_str("log head"),
            Record::Leaf {
                index,
                kind,
                source,
            } => {
                write!(f, "leaf {index}")?;
                match (kind, source) {
                    (Some(k), Some(s)) => write!(f, " ({k}, {s})"),
                    (Some(k), None) => write!(f, " ({k})"),
                    _ => Ok(()),
                }
            }
            Record::Raw {
                sha256,
                leaf,
                position,
                role,
            } => {
                write!(f, "raw {}…", short(sha256))?;
                if let (Some(l), Some(p)) = (leaf, position) {
                    write!(
                        f,
                        " (leaf {l}, raw[{p}] {})",
                        role.as_deref().unwrap_or("?")
                    )?;
                }
                Ok(())
            }
            Record::Checkpoint { size } => write!(f, "checkpoint size {size}"),
            Record::Witness { size } => write!(f, "witnessed checkpoint size {size}"),
            Record::Handover { old, new } => write!(f, "key hand-over {old} to {new}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.record)?;
        match &self.field {
            Some(Field::Field(name)) => write!(f, "field {name} ")?,
            Some(Field::Column(name)) => write!(f, "column {name} ")?,
            None => {}
        }
        f.write_str(&self.message)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub tenant: String,
    pub origin: String,
    /// The head's size.
    pub size: u64,
    /// Leaf rows read.
    pub leaves: u64,
    /// Indexes of the leaves whose content was erased (forgotten).
    pub erased: Vec<u64>,
    /// Raw payloads read, and how many of them were erased.
    pub raw: u64,
    pub raw_erased: u64,
    pub checkpoints: u64,
    /// The last checkpoint: its size and when it was signed.
    pub last_checkpoint: Option<(u64, DateTime<Utc>)>,
    /// Leaves appended after the last checkpoint (no signature covers them yet).
    pub unsigned_tail: u64,
    /// The size of the checkpoint in the witness file, if one was read.
    pub witnessed: Option<u64>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `verified N leaves (E erased), K checkpoints: OK` or `…: P problems`.
    pub fn summary(&self) -> String {
        let verdict = match self.problems.len() {
            0 => "OK".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        };
        format!(
            "verified {} leaves ({} erased), {} raw payloads ({} erased), {} checkpoints: {verdict}",
            self.leaves,
            self.erased.len(),
            self.raw,
            self.raw_erased,
            self.checkpoints
        )
    }

    /// The erased indexes as ranges: `3, 7-9, 12`.
    pub fn erased_ranges(&self) -> String {
        ranges(&self.erased)
    }
}

/// Sorted indexes as `a, b-c, …`.
pub fn ranges(indexes: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indexes.len() {
        let start = indexes[i];
        let mut end = start;
        while i + 1 < indexes.len() && indexes[i + 1] == end + 1 {
            i += 1;
            end = indexes[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// The inclusive ranges of a text written by [`ranges`] (`3, 7-9`: 3 to 3
/// and 7 to 9); `None` if it is not one.
pub fn parse_ranges(text: &str) -> Option<Vec<(u64, u64)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let number = |t: &str| {
        (!t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit())
            && (t == "0" || !t.starts_with('0')))
        .then(|| t.parse::<u64>().ok())
        .flatten()
    };
    text.split(", ")
        .map(|part| match part.split_once('-') {
            Some((start, end)) => {
                let (start, end) = (number(start)?, number(end)?);
                (start < end).then_some((start, end))
            }
            None => number(part).map(|n| (n, n)),
        })
        .collect()
}

/// Verifies the whole log of `tenant` against `verifier_key` (the published
/// `<name>+<id>+<key>`), in one read snapshot.
pub async fn verify_log(
    db: &DatabaseConnection,
    tenant: &str,
    verifier_key: &str,
    witness: Option<&Witnessed>,
) -> Result<VerifyReport, VerifyError> {
    note::check_verifier_key(verifier_key).map_err(VerifyError::Key)?;
    let (txn, head, fast) = begin_snapshot(db, tenant).await?;
    let mut v = Verifier {
        tenant: tenant.to_owned(),
        size: u64::try_from(head.size).unwrap_or(0),
        problems: Vec::new(),
        hashes: Vec::new(),
        first_gap: None,
        refs: Vec::new(),
        erased: Vec::new(),
        leaves: 0,
    };
    if head.size < 0 {
        v.problems.push(Problem::new(
            Record::Log,
            Some(Field::Column("size".into())),
            format!("is negative ({})", head.size),
        ));
    }
    let altered = v.read_leaves(&txn, fast).await?;
    let unrecorded = unrecorded_erasures(&txn, tenant, &v.erased).await?;
    v.problems.extend(unrecorded);
    for index in altered {
        let found = diagnose(&txn, tenant, index).await?;
        v.problems.extend(found);
    }
    let tree = {
        let hashes = std::mem::take(&mut v.hashes);
        tokio::task::spawn_blocking(move || Tree::new(hashes)).await?
    };
    v.check_head(&head, &tree);
    let (raw, raw_erased) = v.check_raws(&txn).await?;
    let checkpoints = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .order_by_asc(evidence_checkpoint::Column::Size)
        .all(&txn)
        .await?;
    let count = checkpoints.len() as u64;
    if let Some(w) = witness {
        v.problems
            .extend(check_witness(w, v.size, &head.origin, &checkpoints));
    }
    let last_checkpoint = checkpoints
        .last()
        .and_then(|c| Some((u64::try_from(c.size).ok()?, c.created_at)));
    let (keys, found) = key_chain(
        verifier_key,
        &handover::stored(&txn).await?,
        &head.origin,
        &checkpoints,
    );
    v.problems.extend(found);
    let (size, first_gap, origin) = (v.size, v.first_gap, head.origin.clone());
    let found = tokio::task::spawn_blocking(move || {
        check_checkpoints(&tree, size, first_gap, &origin, &keys, &checkpoints)
    })
    .await?;
    v.problems.extend(found);
    txn.commit().await?;
    // Problems in the order of the records: log, leaves, raws, checkpoints.
    v.problems.sort_by_key(|p| match &p.record {
        Record::Log => (0, 0),
        Record::Leaf { index, .. } => (1, *index),
        Record::Raw { leaf, .. } => (2, leaf.unwrap_or(u64::MAX)),
        Record::Checkpoint { size } => (3, *size),
        Record::Witness { size } => (4, *size),
        Record::Handover { .. } => (5, 0),
    });
    Ok(VerifyReport {
        tenant: tenant.to_owned(),
        origin: head.origin,
        size: v.size,
        leaves: v.leaves,
        erased: v.erased,
        raw,
        raw_erased,
        checkpoints: count,
        unsigned_tail: v
            .size
            .saturating_sub(last_checkpoint.map_or(0, |(size, _)| size)),
        last_checkpoint,
        witnessed: witness.map(|w| w.size),
        problems: v.problems,
    })
}

/// How many times the verifier tries to open the SQLite fast path on the
/// snapshot of its own transaction before it reads the leaves through
/// sea-orm instead (a service appending without pause).
const SNAPSHOT_TRIES: usize = 3;

/// The verifier's read transaction, the head of `tenant`'s log in it and,
/// on SQLite, the fast reader of its leaves (`leaf_read`) when that sees
/// the same head.
async fn begin_snapshot(
    db: &DatabaseConnection,
    tenant: &str,
) -> Result<
    (
        DatabaseTransaction,
        evidence_log::Model,
        Option<SqliteLeaves>,
    ),
    VerifyError,
> {
    let file = match db.get_database_backend() {
        DbBackend::Sqlite => Some(
            db.get_sqlite_connection_pool()
                .connect_options()
                .get_filename()
                .to_owned(),
        )
        .filter(|f| f.is_file()),
        _ => None,
    };
    let mut tries = 0;
    loop {
        tries += 1;
        // One snapshot, so that leaves, raws and checkpoints appended
        // meanwhile by a running service are all seen or all not. SQLite's
        // deferred transaction that only reads is a snapshot already, from
        // its first read.
        let txn = match db.get_database_backend() {
            DbBackend::Postgres => {
                db.begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?
            }
            _ => db.begin().await?,
        };
        let head = evidence_log::Entity::find_by_id(tenant.to_owned())
            .one(&txn)
            .await?
            .ok_or_else(|| VerifyError::NoLog(tenant.to_owned()))?;
        let Some(file) = file.clone() else {
            return Ok((txn, head, None));
        };
        let (t, size, frontier) = (tenant.to_owned(), head.size, head.frontier.clone());
        let opened =
            tokio::task::spawn_blocking(move || SqliteLeaves::open(&file, &t, size, &frontier))
                .await?;
        let fast = match opened {
            Ok(fast) => fast,
            // The file cannot be opened on its own (its permissions, say):
            // the slow way reads the same leaves.
            Err(e) => {
                tracing::warn!(tenant, error = %e, "reading the leaves through the pool instead");
                return Ok((txn, head, None));
            }
        };
        if fast.is_some() || tries == SNAPSHOT_TRIES {
            if fast.is_none() {
                tracing::info!(
                    tenant,
                    "the log moved while verification began; reading its leaves the slow way"
                );
            }
            return Ok((txn, head, fast));
        }
        txn.rollback().await?;
    }
}

/// Erased leaves that no later `forgotten` leaf lists: content deleted by
/// hand, not by `privacy forget` (which records what it erased).
async fn unrecorded_erasures<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    erased: &[u64],
) -> Result<Vec<Problem>, DbErr> {
    if erased.is_empty() {
        return Ok(Vec::new());
    }
    let records = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Kind.eq("forgotten"))
        .all(conn)
        .await?;
    // (index of the record, ranges it lists)
    let listed: Vec<(u64, Vec<(u64, u64)>)> = records
        .iter()
        .filter_map(|r| {
            let data: Value = serde_json::from_str(r.content.as_deref()?).ok()?;
            let ranges = parse_ranges(data["detail"]["leaves"].as_str()?)?;
            Some((u64::try_from(r.idx).ok()?, ranges))
        })
        .collect();
    Ok(erased
        .iter()
        .filter(|&&index| {
            !listed.iter().any(|(at, ranges)| {
                *at > index && ranges.iter().any(|(a, b)| (*a..=*b).contains(&index))
            })
        })
        .map(|&index| {
            Problem::new(
                Record::Leaf {
                    index,
                    kind: None,
                    source: None,
                },
                Some(Field::Column("content".into())),
                "is erased, but no later forgotten record lists it (deleted outside privacy forget)",
            )
        })
        .collect())
}

/// The witness file against the database: the checkpoint it holds must
/// be stored, note for note (the stored ones are then checked against the
/// leaves like any other), and the log must not be shorter.
fn check_witness(
    w: &Witnessed,
    log_size: u64,
    origin: &str,
    checkpoints: &[evidence_checkpoint::Model],
) -> Vec<Problem> {
    let record = || Record::Witness { size: w.size };
    let mut out = Vec::new();
    if w.origin != origin {
        out.push(Problem::new(
            record(),
            Some(Field::Field("origin".into())),
            format!("is {} but the log's is {}", quote(&w.origin), quote(origin)),
        ));
        return out;
    }
    if w.size > log_size {
        out.push(Problem::new(
            record(),
            None,
            format!("is beyond the log's size {log_size}: leaves signed before were removed"),
        ));
    }
    match checkpoints
        .iter()
        .find(|c| u64::try_from(c.size).ok() == Some(w.size))
    {
        None => out.push(Problem::new(
            record(),
            None,
            format!(
                "was signed at {} but is missing from the database",
                utc_text(w.witnessed_at)
            ),
        )),
        Some(c) if c.note != w.note => out.push(Problem::new(
            record(),
            Some(Field::Field("note".into())),
            "is not the note the database holds for that size",
        )),
        Some(_) => {}
    }
    out
}

/// The state of one verification as it goes.
struct Verifier {
    tenant: String,
    size: u64,
    problems: Vec<Problem>,
    /// Stored leaf hashes, in index order, up to the first gap.
    hashes: Vec<Hash>,
    /// The first index with no usable hash (missing row, unreadable hash).
    first_gap: Option<u64>,
    refs: Vec<RawUse>,
    erased: Vec<u64>,
    leaves: u64,
}

/// One leaf row as read for verification.
type LeafTuple = (
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
);

impl From<LeafTuple> for LeafRow {
    fn from(t: LeafTuple) -> LeafRow {
        LeafRow {
            idx: t.0,
            kind: t.1,
            case_id: t.2,
            subject: t.3,
            source: t.4,
            leaf_hash: t.5,
            content: t.6,
            erased: t.7.is_some(),
        }
    }
}

impl LeafRow {
    fn record(&self) -> Record {
        Record::Leaf {
            index: u64::try_from(self.idx).unwrap_or(u64::MAX),
            kind: Some(self.kind.clone()),
            source: self.source.clone(),
        }
    }
}

/// A leaf's reference to a raw payload.
#[derive(Debug, Clone)]
struct RawUse {
    sha: Hash,
    leaf: u64,
    position: usize,
    role: String,
    size: u64,
    media_type: String,
}

impl RawUse {
    fn record(&self) -> Record {
        Record::Raw {
            sha256: hex(&self.sha),
            leaf: Some(self.leaf),
            position: Some(self.position),
            role: Some(self.role.clone()),
        }
    }
}

/// The fields of a leaf's data that are kept in columns, and its raw
/// references: what is read of content that hashes correctly.
#[derive(Deserialize)]
struct Indexed<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(default)]
    case: Option<i64>,
    #[serde(default, borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(default)]
    raw: Vec<RawRef>,
}

/// What checking one batch of leaves found.
#[derive(Default)]
struct Checked {
    /// (index, stored hash if readable), in index order.
    hashes: Vec<(u64, Option<Hash>)>,
    problems: Vec<Problem>,
    refs: Vec<RawUse>,
    erased: Vec<u64>,
    /// Leaves whose content no longer hashes to their leaf hash.
    altered: Vec<u64>,
}

impl Checked {
    fn append(&mut self, mut other: Checked) {
        self.hashes.append(&mut other.hashes);
        self.problems.append(&mut other.problems);
        self.refs.append(&mut other.refs);
        self.erased.append(&mut other.erased);
        self.altered.append(&mut other.altered);
    }
}

fn show(value: Option<&str>) -> String {
    match value {
        None => "empty".to_owned(),
        Some(v) => quote(v),
    }
}

fn quote(v: &str) -> String {
    if v.chars().count() > QUOTE_CHARS {
        let cut: String = v.chars().take(QUOTE_CHARS).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{v}\"")
    }
}

/// Reads leaves `0..size` through the SQLite fast path on this thread while
/// another checks the page read before (on rayon's threads). Returns each
/// page's index range (together `0..size`, so that [`Verifier::take`] names
/// the missing leaves) and its check, in index order.
fn read_and_check(
    leaves: &SqliteLeaves,
    tenant: &str,
    size: i64,
) -> Result<Vec<(i64, i64, Checked)>, LeafReadError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(i64, i64, Vec<LeafRow>)>(1);
    std::thread::scope(|s| {
        let checker = s.spawn(move || {
            rx.into_iter()
                .map(|(start, end, rows)| (start, end, check_batch(tenant, rows)))
                .collect::<Vec<_>>()
        });
        let mut start = 0;
        let read = leaves.pages(0, size, LEAF_PAGE as usize, |rows| {
            let end = rows.last().map_or(start, |r| r.idx + 1);
            let sent = tx.send((start, end, rows)).is_ok();
            start = end;
            sent
        });
        if read.is_ok() && start < size {
            // The last leaves are missing: an empty page names them.
            let _ = tx.send((start, size, Vec::new()));
        }
        drop(tx);
        let pages = checker
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        read.map(|()| pages)
    })
}

/// Checks a batch of leaves on rayon's threads; the result keeps index
/// order.
fn check_batch(tenant: &str, rows: Vec<LeafRow>) -> Checked {
    use rayon::prelude::*;
    rows.into_par_iter()
        .with_min_len(PARALLEL_FROM)
        .fold(Checked::default, |mut out, row| {
            check_leaf(tenant, row, &mut out);
            out
        })
        .reduce(Checked::default, |mut a, b| {
            a.append(b);
            a
        })
}

/// Checks one leaf row on its own: its hash, its erasure, its columns
/// against its data, and collects its raw references.
fn check_leaf(tenant: &str, row: LeafRow, out: &mut Checked) {
    let index = u64::try_from(row.idx).unwrap_or(u64::MAX);
    let stored = parse_hash(&row.leaf_hash);
    if stored.is_none() {
        out.problems.push(Problem::new(
            row.record(),
            Some(Field::Column("leaf_hash".into())),
            format!("is not a lowercase hex SHA-256: {}", quote(&row.leaf_hash)),
        ));
    }
    out.hashes.push((index, stored));
    let Some(content) = &row.content else {
        if row.erased {
            out.erased.push(index);
        } else {
            out.problems.push(Problem::new(
                row.record(),
                Some(Field::Column("content".into())),
                "is empty but the leaf is not marked erased (erased_at is empty)",
            ));
        }
        return;
    };
    if row.erased {
        out.problems.push(Problem::new(
            row.record(),
            Some(Field::Column("erased_at".into())),
            "is set but the content (and its salt) is still stored",
        ));
    }
    let intact = stored == Some(leaf_hash(content.as_bytes()));
    let parsed = serde_json::from_str::<Indexed>(content);
    if !intact {
        // Named field by field later, against what is stored elsewhere.
        out.altered.push(index);
    }
    let data = match parsed {
        Ok(d) => d,
        Err(e) => {
            if intact {
                out.problems.push(Problem::new(
                    row.record(),
                    None,
                    format!("content hashes to its leaf_hash but is not leaf data: {e}"),
                ));
            }
            return;
        }
    };
    if intact {
        compare_columns(tenant, &row, &data, out);
    }
    for (position, r) in data.raw.into_iter().enumerate() {
        match parse_hash(&r.sha256) {
            Some(sha) => out.refs.push(RawUse {
                sha,
                leaf: index,
                position,
                role: r.role,
                size: r.size,
                media_type: r.media_type,
            }),
            None if intact => out.problems.push(Problem::new(
                row.record(),
                Some(Field::Field(format!("raw[{position}].sha256"))),
                format!("is not a lowercase hex SHA-256: {}", quote(&r.sha256)),
            )),
            None => {}
        }
    }
}

/// The columns kept beside the content must say what the content says.
fn compare_columns(tenant: &str, row: &LeafRow, data: &Indexed<'_>, out: &mut Checked) {
    if data.tenant != tenant {
        out.problems.push(Problem::new(
            row.record(),
            Some(Field::Field("tenant".into())),
            format!(
                "is {}, not this log's tenant {}",
                quote(&data.tenant),
                quote(tenant)
            ),
        ));
    }
    let mut column = |name: &str, stored: Option<&str>, said: Option<&str>| {
        if stored != said {
            out.problems.push(Problem::new(
                row.record(),
                Some(Field::Column(name.to_owned())),
                format!("is {} but the leaf says {}", show(stored), show(said)),
            ));
        }
    };
    column("kind", Some(&row.kind), Some(&data.kind));
    column(
        "case_id",
        row.case_id.map(|c| c.to_string()).as_deref(),
        data.case.map(|c| c.to_string()).as_deref(),
    );
    column("subject", row.subject.as_deref(), data.subject.as_deref());
    column("source", row.source.as_deref(), data.source.as_deref());
}

impl Verifier {
    /// Reads every leaf in index order, a page at a time (the next page is
    /// read while this one is hashed), and checks each on its own. Returns
    /// the indexes of leaves whose content no longer hashes.
    async fn read_leaves<C: ConnectionTrait>(
        &mut self,
        conn: &C,
        fast: Option<SqliteLeaves>,
    ) -> Result<Vec<u64>, VerifyError> {
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let mut altered = Vec::new();
        if let Some(fast) = fast {
            let tenant = self.tenant.clone();
            let pages =
                tokio::task::spawn_blocking(move || read_and_check(&fast, &tenant, size)).await??;
            for (start, end, checked) in pages {
                self.take(start, end, checked, &mut altered);
            }
        } else {
            let mut start = 0i64;
            let mut page = leaf_page(conn, &self.tenant, start, size).await?;
            while start < size {
                let end = (start + LEAF_PAGE).min(size);
                let tenant = self.tenant.clone();
                let rows = std::mem::take(&mut page);
                let check = tokio::task::spawn_blocking(move || check_batch(&tenant, rows));
                let (checked, next) = tokio::join!(check, leaf_page(conn, &self.tenant, end, size));
                let checked = checked?;
                page = next?;
                self.take(start, end, checked, &mut altered);
                start = end;
            }
        }
        // Rows outside 0..size: appended without moving the head, or forged.
        let extra: Vec<LeafRow> = evidence_leaf::Entity::find()
            .select_only()
            .columns(LEAF_COLUMNS)
            .filter(evidence_leaf::Column::TenantId.eq(&self.tenant))
            .filter(
                sea_orm::Condition::any()
                    .add(evidence_leaf::Column::Idx.gte(size))
                    .add(evidence_leaf::Column::Idx.lt(0)),
            )
            .order_by_asc(evidence_leaf::Column::Idx)
            .into_tuple::<LeafTuple>()
            .all(conn)
            .await?
            .into_iter()
            .map(LeafRow::from)
            .collect();
        for row in extra {
            self.leaves += 1;
            self.problems.push(Problem::new(
                row.record(),
                None,
                format!("is stored outside the log, whose head says size {size}"),
            ));
        }
        Ok(altered)
    }

    /// Takes in the check of leaves `start..end`, naming the missing ones.
    fn take(&mut self, start: i64, end: i64, checked: Checked, altered: &mut Vec<u64>) {
        let mut expected = start as u64;
        for (index, hash) in checked.hashes {
            for missing in expected..index {
                self.missing(missing);
            }
            expected = index + 1;
            self.leaves += 1;
            match hash {
                Some(h) if self.first_gap.is_none() => self.hashes.push(h),
                Some(_) => {}
                None => {
                    self.first_gap.get_or_insert(index);
                }
            }
        }
        for missing in expected..end as u64 {
            self.missing(missing);
        }
        self.problems.extend(checked.problems);
        self.refs.extend(checked.refs);
        self.erased.extend(checked.erased);
        altered.extend(checked.altered);
    }

    fn missing(&mut self, index: u64) {
        self.first_gap.get_or_insert(index);
        self.problems.push(Problem::new(
            Record::Leaf {
                index,
                kind: None,
                source: None,
            },
            None,
            format!("is missing (the log has {} leaves)", self.size),
        ));
    }

    /// The head's size and frontier against the recomputed tree.
    fn check_head(&mut self, head: &evidence_log::Model, tree: &Tree) {
        if self.first_gap.is_some() || tree.size() != self.size {
            return;
        }
        let recomputed = tree.frontier_at(self.size);
        match parse_frontier(head.size, &head.frontier) {
            Err(_) => self.problems.push(Problem::new(
                Record::Log,
                Some(Field::Column("frontier".into())),
                format!(
                    "cannot be read as the {} subtree roots of size {}",
                    self.size.count_ones(),
                    self.size
                ),
            )),
            Ok(stored) if stored != recomputed => self.problems.push(Problem::new(
                Record::Log,
                Some(Field::Column("frontier".into())),
                format!(
                    "does not match the stored leaves: its root is {}, theirs {}",
                    hex(&stored.root()),
                    hex(&recomputed.root())
                ),
            )),
            Ok(_) => {}
        }
    }

    /// Checks every raw payload: each reference has its payload, whose
    /// bytes (unless erased) hash to its name and have the size the leaf
    /// says; a payload no leaf references is named too. Returns how many
    /// payloads were read, and how many of them are erased.
    async fn check_raws<C: ConnectionTrait>(
        &mut self,
        conn: &C,
    ) -> Result<(u64, u64), VerifyError> {
        let mut refs = std::mem::take(&mut self.refs);
        refs.sort_unstable_by_key(|r| (r.sha, r.leaf, r.position));
        let mut seen = vec![false; refs.len()];
        let (mut read, mut erased) = (0u64, 0u64);
        let mut large: Vec<RawUse> = Vec::new();
        let mut page = raw_page(conn, &self.tenant, None).await?;
        while let Some(last) = page.last() {
            let after = last.sha256.clone();
            read += page.len() as u64;
            let mut to_hash: Vec<(Vec<u8>, RawUse)> = Vec::new();
            for row in std::mem::take(&mut page) {
                erased += u64::from(row.erased);
                let Some(sha) = parse_hash(&row.sha256) else {
                    self.problems.push(Problem::new(
                        unreferenced(&row.sha256),
                        Some(Field::Column("sha256".into())),
                        "is not a lowercase hex SHA-256",
                    ));
                    continue;
                };
                let lo = refs.partition_point(|r| r.sha < sha);
                let hi = refs.partition_point(|r| r.sha <= sha);
                seen[lo..hi].iter_mut().for_each(|s| *s = true);
                if lo == hi {
                    if !row.erased {
                        self.problems.push(Problem::new(
                            unreferenced(&row.sha256),
                            None,
                            "is stored but no leaf references it",
                        ));
                    }
                    continue;
                }
                for r in &refs[lo..hi] {
                    if i64::try_from(r.size).ok() != Some(row.size) {
                        self.problems.push(Problem::new(
                            r.record(),
                            Some(Field::Column("size".into())),
                            format!("is {} but the leaf says {}", row.size, r.size),
                        ));
                    }
                    if r.media_type != row.media_type {
                        self.problems.push(Problem::new(
                            r.record(),
                            Some(Field::Column("media_type".into())),
                            format!(
                                "is {} but the leaf says {}",
                                quote(&row.media_type),
                                quote(&r.media_type)
                            ),
                        ));
                    }
                }
                let first = &refs[lo];
                match (row.bytes, row.no_bytes, row.erased) {
                    (_, true, true) => self.problems.push(Problem::new(
                        first.record(),
                        None,
                        format!(
                            "was erased, but leaf {} still references it{}",
                            first.leaf,
                            and_others(hi - lo - 1)
                        ),
                    )),
                    (_, true, false) => self.problems.push(Problem::new(
                        first.record(),
                        Some(Field::Column("bytes".into())),
                        "is empty but the payload is not marked erased (erased_at is empty)",
                    )),
                    (_, false, true) => self.problems.push(Problem::new(
                        first.record(),
                        Some(Field::Column("erased_at".into())),
                        "is set but the bytes are still stored",
                    )),
                    (Some(bytes), false, false) => to_hash.push((bytes, first.clone())),
                    (None, false, false) => large.push(first.clone()),
                }
            }
            let hashing = tokio::task::spawn_blocking(move || hash_raws(to_hash));
            let (found, next) = tokio::join!(hashing, raw_page(conn, &self.tenant, Some(&after)));
            self.problems.extend(found?);
            page = next?;
        }
        // Photos and other large payloads, one at a time.
        for r in large {
            let bytes = evidence_raw::Entity::find_by_id((self.tenant.clone(), hex(&r.sha)))
                .select_only()
                .column(evidence_raw::Column::Bytes)
                .into_tuple::<Option<Vec<u8>>>()
                .one(conn)
                .await?
                .flatten();
            if let Some(bytes) = bytes {
                self.problems.extend(raw_bytes_problem(&bytes, &r));
            }
        }
        for (r, seen) in refs.iter().zip(seen) {
            if !seen {
                self.problems.push(Problem::new(
                    r.record(),
                    None,
                    "is missing: no payload with this SHA-256 is stored",
                ));
            }
        }
        Ok((read, erased))
    }
}

fn unreferenced(sha256: &str) -> Record {
    Record::Raw {
        sha256: sha256.to_owned(),
        leaf: None,
        position: None,
        role: None,
    }
}

/// Hashes stored payloads on rayon's threads.
fn hash_raws(items: Vec<(Vec<u8>, RawUse)>) -> Vec<Problem> {
    use rayon::prelude::*;
    items
        .par_iter()
        .with_min_len(PARALLEL_FROM / 4)
        .filter_map(|(bytes, r)| raw_bytes_problem(bytes, r))
        .collect()
}

/// The stored bytes must hash to the payload's name and have the size the
/// (first) referencing leaf says.
fn raw_bytes_problem(bytes: &[u8], r: &RawUse) -> Option<Problem> {
    let actual = sha2::Sha256::digest(bytes);
    if actual.as_slice() != r.sha {
        return Some(Problem::new(
            r.record(),
            None,
            format!("stored bytes hash to {}", hex(&actual)),
        ));
    }
    (bytes.len() as u64 != r.size).then(|| {
        Problem::new(
            r.record(),
            None,
            format!(
                "stored bytes are {} bytes long, the leaf says {}",
                bytes.len(),
                r.size
            ),
        )
    })
}

fn and_others(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (and 1 other leaf)".to_owned(),
        n => format!(" (and {n} other leaves)"),
    }
}

const LEAF_COLUMNS: [evidence_leaf::Column; 8] = [
    evidence_leaf::Column::Idx,
    evidence_leaf::Column::Kind,
    evidence_leaf::Column::CaseId,
    evidence_leaf::Column::Subject,
    evidence_leaf::Column::Source,
    evidence_leaf::Column::LeafHash,
    evidence_leaf::Column::Content,
    evidence_leaf::Column::ErasedAt,
];

/// Leaves `start..` (one page, not beyond `size`), in index order.
async fn leaf_page<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    start: i64,
    size: i64,
) -> Result<Vec<LeafRow>, DbErr> {
    if start >= size {
        return Ok(Vec::new());
    }
    let end = start.saturating_add(LEAF_PAGE).min(size);
    Ok(evidence_leaf::Entity::find()
        .select_only()
        .columns(LEAF_COLUMNS)
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Idx.gte(start))
        .filter(evidence_leaf::Column::Idx.lt(end))
        .order_by_asc(evidence_leaf::Column::Idx)
        .into_tuple::<LeafTuple>()
        .all(conn)
        .await?
        .into_iter()
        .map(LeafRow::from)
        .collect())
}

/// One raw payload as read for verification; `bytes` only when small.
struct RawRow {
    sha256: String,
    media_type: String,
    size: i64,
    bytes: Option<Vec<u8>>,
    no_bytes: bool,
    erased: bool,
}

/// The page of raw payloads after `after` (by name).
async fn raw_page<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    after: Option<&str>,
) -> Result<Vec<RawRow>, DbErr> {
    use evidence_raw::Column as R;
    use sea_orm::sea_query::ExprTrait as _;
    let mut query = evidence_raw::Entity::find()
        .select_only()
        .column(R::Sha256)
        .column(R::MediaType)
        .column(R::Size)
        .expr::<Expr>(Expr::case(Expr::col(R::Size).lte(INLINE_RAW), Expr::col(R::Bytes)).into())
        .expr(Expr::col(R::Bytes).is_null())
        .expr(Expr::col(R::ErasedAt).is_not_null())
        .filter(R::TenantId.eq(tenant));
    if let Some(after) = after {
        query = query.filter(R::Sha256.gt(after));
    }
    Ok(query
        .order_by_asc(R::Sha256)
        .limit(RAW_PAGE)
        .into_tuple::<(String, String, i64, Option<Vec<u8>>, bool, bool)>()
        .all(conn)
        .await?
        .into_iter()
        .map(|t| RawRow {
            sha256: t.0,
            media_type: t.1,
            size: t.2,
            bytes: t.3,
            no_bytes: t.4,
            erased: t.5,
        })
        .collect())
}

/// A key that may sign this log's checkpoints: the configured one (no
/// limit), or an older one up to the size its hand-over names.
#[derive(Debug, Clone)]
struct ChainKey {
    key: String,
    up_to: Option<u64>,
}

fn key_id(verifier_key: &str) -> String {
    verifier_key.split('+').nth(1).unwrap_or("?").to_owned()
}

/// The chain of hand-overs from `current` back: every stored hand-over
/// must carry both signatures, and each on the chain must name a
/// checkpoint of this log that the database holds (or none, if the log
/// began after it). Returns the keys checkpoints may be signed by.
fn key_chain(
    current: &str,
    stored: &[entity::key_handover::Model],
    origin: &str,
    checkpoints: &[evidence_checkpoint::Model],
) -> (Vec<ChainKey>, Vec<Problem>) {
    let mut problems = Vec::new();
    let record = |old: &str, new: &str| Record::Handover {
        old: key_id(old),
        new: key_id(new),
    };
    let mut valid = Vec::new();
    for row in stored {
        match Handover::verify(&row.note) {
            Ok(h) if h.old_key == row.old_key && h.new_key == row.new_key => valid.push(h),
            Ok(_) => problems.push(Problem::new(
                record(&row.old_key, &row.new_key),
                Some(Field::Column("note".into())),
                "names other keys than its row",
            )),
            Err(e) => problems.push(Problem::new(
                record(&row.old_key, &row.new_key),
                Some(Field::Column("note".into())),
                format!("does not verify: {e}"),
            )),
        }
    }
    // A key hands over once, to one key: a second hand-over of the same
    // key (a fork) was made by someone holding the retired key.
    for (i, h) in valid.iter().enumerate() {
        if let Some(other) = valid[i + 1..]
            .iter()
            .find(|o| o.old_key == h.old_key || o.new_key == h.new_key)
        {
            problems.push(Problem::new(
                record(&other.old_key, &other.new_key),
                None,
                format!(
                    "a fork: key {} was handed over (or key {} received) twice",
                    key_id(&h.old_key),
                    key_id(&h.new_key)
                ),
            ));
        }
    }
    let mut keys = vec![ChainKey {
        key: current.to_owned(),
        up_to: None,
    }];
    let mut at = current.to_owned();
    while let Some(h) = valid.iter().find(|h| h.new_key == at) {
        if keys.iter().any(|k| k.key == h.old_key) {
            problems.push(Problem::new(
                record(&h.old_key, &h.new_key),
                None,
                "hands over to a key that came before it: the chain loops",
            ));
            break;
        }
        let up_to = match h.covered(origin) {
            None => 0,
            Some(c) => {
                match checkpoints
                    .iter()
                    .find(|k| u64::try_from(k.size).ok() == Some(c.size))
                {
                    None => problems.push(Problem::new(
                        record(&h.old_key, &h.new_key),
                        None,
                        format!(
                            "names the checkpoint of {} leaves of this log, which is not in the database",
                            c.size
                        ),
                    )),
                    Some(k) if k.root != hex(&c.root) => problems.push(Problem::new(
                        record(&h.old_key, &h.new_key),
                        None,
                        format!(
                            "names root {} for the checkpoint of {} leaves, but the database's is {}",
                            hex(&c.root),
                            c.size,
                            k.root
                        ),
                    )),
                    Some(_) => {}
                }
                c.size
            }
        };
        keys.push(ChainKey {
            key: h.old_key.clone(),
            up_to: Some(up_to),
        });
        at = h.old_key.clone();
    }
    (keys, problems)
}

/// Each checkpoint against the tree recomputed from the stored leaf
/// hashes (its root column and the root inside its signed note), its
/// signature, and consecutive checkpoints' consistency.
fn check_checkpoints(
    tree: &Tree,
    log_size: u64,
    first_gap: Option<u64>,
    origin: &str,
    keys: &[ChainKey],
    checkpoints: &[evidence_checkpoint::Model],
) -> Vec<Problem> {
    let checked: Vec<_> = {
        use rayon::prelude::*;
        checkpoints
            .par_iter()
            .map(|c| check_checkpoint(tree, log_size, first_gap, origin, keys, c))
            .collect()
    };
    let mut problems = Vec::new();
    let mut previous: Option<(u64, Hash)> = None;
    for (found, claim) in checked {
        problems.extend(found);
        let Some((size, root)) = claim else { continue };
        if let Some((before, before_root)) = previous
            && size <= tree.size()
        {
            // The proof is built from the stored leaves; the roots are what
            // the two signed notes claim.
            let proof = tree.consistency_proof(before, size);
            if !verify_consistency(before, size, &before_root, &root, &proof) {
                problems.push(Problem::new(
                    Record::Checkpoint { size },
                    None,
                    format!(
                        "is not consistent with checkpoint size {before}: the stored leaves prove no append-only path between their roots"
                    ),
                ));
            }
        }
        previous = Some((size, root));
    }
    problems
}

/// One checkpoint on its own; also returns the (size, root) its note claims.
fn check_checkpoint(
    tree: &Tree,
    log_size: u64,
    first_gap: Option<u64>,
    origin: &str,
    keys: &[ChainKey],
    c: &evidence_checkpoint::Model,
) -> (Vec<Problem>, Option<(u64, Hash)>) {
    let mut out = Vec::new();
    let Ok(size) = u64::try_from(c.size) else {
        out.push(Problem::new(
            Record::Checkpoint { size: 0 },
            Some(Field::Column("size".into())),
            format!("is negative ({})", c.size),
        ));
        return (out, None);
    };
    let record = || Record::Checkpoint { size };
    let recomputed = if size > log_size {
        out.push(Problem::new(
            record(),
            None,
            format!("is beyond the log's size {log_size}"),
        ));
        None
    } else if size <= tree.size() {
        Some(tree.root_at(size))
    } else {
        out.push(Problem::new(
            record(),
            None,
            format!(
                "cannot be recomputed: leaf {} is missing or unreadable",
                first_gap.unwrap_or(tree.size())
            ),
        ));
        None
    };
    match parse_hash(&c.root) {
        None => out.push(Problem::new(
            record(),
            Some(Field::Column("root".into())),
            format!("is not a lowercase hex SHA-256: {}", quote(&c.root)),
        )),
        Some(root) => {
            if let Some(r) = recomputed.filter(|r| *r != root) {
                out.push(Problem::new(
                    record(),
                    Some(Field::Column("root".into())),
                    format!("is {} but the stored leaves give {}", hex(&root), hex(&r)),
                ));
            }
        }
    }
    // The configured key, or an older one of the chain of hand-overs.
    let signed = keys
        .iter()
        .find_map(|k| note::verify(&c.note, &k.key).ok().map(|t| (k, t)));
    let verified = match signed {
        Some((k, text)) => {
            if let Some(up_to) = k.up_to.filter(|up_to| size > *up_to) {
                out.push(Problem::new(
                    record(),
                    None,
                    format!(
                        "is signed by key {}, which handed over at the checkpoint of {up_to} leaves",
                        key_id(&k.key)
                    ),
                ));
            }
            Ok(text)
        }
        None => note::verify(&c.note, &keys[0].key),
    };
    let text = match verified {
        Ok(text) => text,
        Err(e) => {
            out.push(Problem::new(
                record(),
                None,
                format!("signature does not verify ({e})"),
            ));
            // What the note says is still compared, to name what changed.
            c.note
                .rfind("\n\n")
                .map_or(c.note.as_str(), |i| &c.note[..=i])
                .to_owned()
        }
    };
    let mut lines = text.lines();
    let (note_origin, note_size, note_root) = (lines.next(), lines.next(), lines.next());
    if note_origin != Some(origin) {
        out.push(Problem::new(
            record(),
            Some(Field::Field("origin".into())),
            format!(
                "of the note is {} but the log's origin is {}",
                show(note_origin),
                quote(origin)
            ),
        ));
    }
    if note_size != Some(size.to_string().as_str()) {
        out.push(Problem::new(
            record(),
            Some(Field::Field("size".into())),
            format!("of the note is {}", show(note_size)),
        ));
    }
    let claimed = note_root
        .and_then(|r| STANDARD.decode(r).ok())
        .and_then(|b| Hash::try_from(b.as_slice()).ok());
    match claimed {
        None => out.push(Problem::new(
            record(),
            Some(Field::Field("root".into())),
            format!("of the note is not a base64 SHA-256: {}", show(note_root)),
        )),
        Some(root) => {
            if let Some(r) = recomputed.filter(|r| *r != root) {
                out.push(Problem::new(
                    record(),
                    Some(Field::Field("root".into())),
                    format!(
                        "of the note is {} but the stored leaves give {}",
                        hex(&root),
                        hex(&r)
                    ),
                ));
            }
        }
    }
    (out, claimed.map(|r| (size, r)))
}

/// Names what changed in a leaf whose content no longer hashes to its
/// leaf hash, from what is still stored elsewhere.
async fn diagnose<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    index: u64,
) -> Result<Vec<Problem>, DbErr> {
    let Some(row) = evidence_leaf::Entity::find_by_id((tenant.to_owned(), index as i64))
        .one(conn)
        .await?
    else {
        return Ok(Vec::new());
    };
    let record = Record::Leaf {
        index,
        kind: Some(row.kind.clone()),
        source: row.source.clone(),
    };
    let content = row.content.clone().unwrap_or_default();
    let data: LeafData = match serde_json::from_str(&content) {
        Ok(d) => d,
        Err(e) => {
            return Ok(vec![Problem::new(
                record,
                None,
                format!(
                    "content no longer hashes to its leaf_hash and is not valid leaf data: {e}"
                ),
            )]);
        }
    };
    let diffs = field_differences(conn, tenant, &row, &data).await?;
    if diffs.is_empty() {
        let form = match data.canonical() {
            Ok(c) if c == content => "",
            _ => ", and it is no longer in canonical (RFC 8785) form",
        };
        return Ok(vec![Problem::new(
            record,
            None,
            format!(
                "content was altered: it hashes to {}, not to its leaf_hash {}{form}; no field differs from what is stored elsewhere",
                hex(&leaf_hash(content.as_bytes())),
                row.leaf_hash
            ),
        )]);
    }
    Ok(diffs
        .into_iter()
        .map(|d| {
            Problem::new(
                record.clone(),
                Some(Field::Field(d.field)),
                format!(
                    "was altered: the leaf says {}, {} says {} (the content no longer hashes to its leaf_hash)",
                    d.leaf, d.from, d.other
                ),
            )
        })
        .collect())
}

/// A field of a leaf's data that differs from what another record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field's path in the leaf data: `text_sha256`, `raw[0].sha256`, `detail`.
    pub field: String,
    /// Its value in the leaf, and in the other record (quoted, cut short).
    pub leaf: String,
    pub other: String,
    /// The other record: `column subject`, `outbox/9 payload`, …
    pub from: String,
}

#[derive(Default)]
struct Diffs(Vec<FieldDiff>);

impl Diffs {
    fn text(
        &mut self,
        field: impl Into<String>,
        leaf: Option<&str>,
        other: Option<&str>,
        from: impl Into<String>,
    ) {
        if leaf != other {
            self.0.push(FieldDiff {
                field: field.into(),
                leaf: show(leaf),
                other: show(other),
                from: from.into(),
            });
        }
    }

    fn json(&mut self, field: &str, leaf: Option<&Value>, other: &Value, from: impl Into<String>) {
        let leaf = leaf.unwrap_or(&Value::Null);
        if !json_eq(leaf, other) {
            let cut = |v: &Value| {
                let text = v.to_string();
                if text.chars().count() > QUOTE_CHARS {
                    format!("{}…", text.chars().take(QUOTE_CHARS).collect::<String>())
                } else {
                    text
                }
            };
            self.0.push(FieldDiff {
                field: field.to_owned(),
                leaf: cut(leaf),
                other: cut(other),
                from: from.into(),
            });
        }
    }
}

/// JSON equality with numbers compared by value (`29` equals `29.0`: the
/// canonical form writes a whole float without its fraction).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn text_of<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|v| v.to_string())
}

/// The fields of `data` (the content of leaf `row`) that differ from what
/// is stored independently of it: the row's columns, the raw payloads it
/// names, and the operational row it records (the callback, the case
/// event, the outbox message, the check-in). Empty for an intact leaf.
pub async fn field_differences<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    row: &evidence_leaf::Model,
    data: &LeafData,
) -> Result<Vec<FieldDiff>, DbErr> {
    let mut d = Diffs::default();
    d.text("tenant", Some(&data.tenant), Some(tenant), "the log");
    d.text("kind", Some(&data.kind), Some(&row.kind), "column kind");
    d.text(
        "case",
        text_of(data.case).as_deref(),
        text_of(row.case_id).as_deref(),
        "column case_id",
    );
    d.text(
        "subject",
        data.subject.as_deref(),
        row.subject.as_deref(),
        "column subject",
    );
    d.text(
        "source",
        data.source.as_deref(),
        row.source.as_deref(),
        "column source",
    );
    d.text(
        "recorded_at.utc",
        Some(&data.recorded_at.utc),
        Some(&utc_text(row.recorded_at)),
        "column recorded_at",
    );
    if let Ok(zone) = data.recorded_at.zone.parse::<Tz>()
        && let Ok(utc) = DateTime::parse_from_rfc3339(&data.recorded_at.utc)
    {
        let local = utc
            .with_timezone(&zone)
            .to_rfc3339_opts(SecondsFormat::Secs, false);
        d.text(
            "recorded_at.local",
            Some(&data.recorded_at.local),
            Some(&local),
            "its recorded_at.utc in its zone",
        );
    }
    for (i, r) in data.raw.iter().enumerate() {
        let stored = evidence_raw::Entity::find_by_id((tenant.to_owned(), r.sha256.clone()))
            .select_only()
            .column(evidence_raw::Column::Size)
            .column(evidence_raw::Column::MediaType)
            .into_tuple::<(i64, String)>()
            .one(conn)
            .await?;
        if let Some((size, media_type)) = stored {
            let from = format!("raw {}…", short(&r.sha256));
            d.text(
                format!("raw[{i}].size"),
                Some(&r.size.to_string()),
                Some(&size.to_string()),
                &from,
            );
            d.text(
                format!("raw[{i}].media_type"),
                Some(&r.media_type),
                Some(&media_type),
                from,
            );
        }
    }
    let source = row.source.as_deref().or(data.source.as_deref());
    let id = source
        .and_then(|s| s.split_once('/'))
        .and_then(|(table, id)| Some((table, id.parse::<i64>().ok()?)));
    match id {
        Some(("inbound_events", id)) => {
            callback_differences(conn, tenant, id, data, &mut d).await?
        }
        Some(("case_events", id)) => case_event_differences(conn, tenant, id, data, &mut d).await?,
        Some(("outbox", id)) => message_differences(conn, tenant, id, data, &mut d).await?,
        _ if data.kind == "check_in" => check_in_differences(conn, tenant, data, &mut d).await?,
        _ => {}
    }
    Ok(d.0)
}

async fn callback_differences<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: i64,
    data: &LeafData,
    d: &mut Diffs,
) -> Result<(), DbErr> {
    let Some(ev) = inbound_event::Entity::find_by_id(id)
        .filter(inbound_event::Column::TenantId.eq(tenant))
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let at = format!("inbound_events/{id}");
    for (i, r) in data.raw.iter().enumerate() {
        let (column, stored) = match r.role.as_str() {
            "callback" => ("raw_body", &ev.raw_body),
            "query" => ("raw_query", &ev.raw_query),
            "decrypted" => ("plaintext", &ev.plaintext),
            _ => continue,
        };
        d.text(
            format!("raw[{i}].sha256"),
            Some(&r.sha256),
            Some(&sha256_hex(stored.as_bytes())),
            format!("the SHA-256 of {at} {column}"),
        );
        d.text(
            format!("raw[{i}].size"),
            Some(&r.size.to_string()),
            Some(&stored.len().to_string()),
            format!("the length of {at} {column}"),
        );
    }
    let id = |name: &str| data.platform_ids.get(name).map(String::as_str);
    d.text(
        "platform_ids.msg_key",
        id("msg_key"),
        Some(&ev.msg_key),
        format!("{at} msg_key"),
    );
    d.text(
        "platform_ids.platform",
        id("platform"),
        Some(&ev.platform),
        format!("{at} platform"),
    );
    d.text(
        "subject",
        data.subject.as_deref(),
        Some(&ev.from_user),
        format!("{at} from_user"),
    );
    d.text(
        "actor",
        data.actor.as_deref(),
        Some(&ev.from_user),
        format!("{at} from_user"),
    );
    d.text(
        "occurred_at",
        data.occurred_at.as_deref(),
        DateTime::from_timestamp(ev.platform_time, 0)
            .map(utc_text)
            .as_deref(),
        format!("{at} platform_time"),
    );
    let fields: Value = serde_json::from_str(&ev.fields).unwrap_or(Value::Null);
    d.json(
        "detail",
        Some(&data.detail),
        &fields,
        format!("{at} fields"),
    );
    Ok(())
}

async fn case_event_differences<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: i64,
    data: &LeafData,
    d: &mut Diffs,
) -> Result<(), DbErr> {
    let Some(ev) = entity::case_event::Entity::find_by_id(id)
        .filter(entity::case_event::Column::TenantId.eq(tenant))
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let at = format!("case_events/{id}");
    d.text(
        "kind",
        Some(&data.kind),
        Some(&ev.kind),
        format!("{at} kind"),
    );
    d.text(
        "case",
        text_of(data.case).as_deref(),
        text_of(ev.case_id).as_deref(),
        format!("{at} case_id"),
    );
    d.text(
        "subject",
        data.subject.as_deref(),
        ev.user_id.as_deref(),
        format!("{at} user_id"),
    );
    d.text(
        "actor",
        data.actor.as_deref(),
        ev.actor.as_deref(),
        format!("{at} actor"),
    );
    d.text(
        "platform_ids.inbound_event",
        data.platform_ids.get("inbound_event").map(String::as_str),
        text_of(ev.inbound_event_id).as_deref(),
        format!("{at} inbound_event_id"),
    );
    d.text(
        "recorded_at.utc",
        Some(&data.recorded_at.utc),
        Some(&utc_text(ev.at)),
        format!("{at} at"),
    );
    let detail: Value = serde_json::from_str(&ev.detail).unwrap_or(Value::Null);
    d.json(
        "detail",
        Some(&data.detail),
        &detail,
        format!("{at} detail"),
    );
    Ok(())
}

async fn message_differences<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: i64,
    data: &LeafData,
    d: &mut Diffs,
) -> Result<(), DbErr> {
    let Some(o) = outbox::Entity::find_by_id(id)
        .filter(outbox::Column::TenantId.eq(tenant))
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let at = format!("outbox/{id}");
    d.text(
        "case",
        text_of(data.case).as_deref(),
        text_of(o.case_id).as_deref(),
        format!("{at} case_id"),
    );
    d.text(
        "channel",
        data.channel.as_deref(),
        Some(&o.channel),
        format!("{at} channel"),
    );
    d.text(
        "template.id",
        data.template.as_ref().map(|t| t.id.as_str()),
        Some(&o.template),
        format!("{at} template"),
    );
    d.text(
        "template.sha256",
        data.template.as_ref().map(|t| t.sha256.as_str()),
        Some(&o.template_hash),
        format!("{at} template_hash"),
    );
    d.text(
        "platform_ids.idem_key",
        data.platform_ids.get("idem_key").map(String::as_str),
        Some(&o.idem_key),
        format!("{at} idem_key"),
    );
    d.json(
        "detail.recipient",
        data.detail.get("recipient"),
        &Value::from(o.recipient.clone()),
        format!("{at} recipient"),
    );
    let text_sha = serde_json::from_str::<Payload>(&o.payload)
        .ok()
        .map(|p| sha256_hex(p.text().as_bytes()));
    match data.kind.as_str() {
        "message_queued" => {
            for (i, r) in data.raw.iter().enumerate() {
                if r.role == "rendered" {
                    d.text(
                        format!("raw[{i}].sha256"),
                        Some(&r.sha256),
                        Some(&sha256_hex(o.payload.as_bytes())),
                        format!("the SHA-256 of {at} payload"),
                    );
                    d.text(
                        format!("raw[{i}].size"),
                        Some(&r.size.to_string()),
                        Some(&o.payload.len().to_string()),
                        format!("the length of {at} payload"),
                    );
                }
            }
            d.text(
                "text_sha256",
                data.text_sha256.as_deref(),
                text_sha.as_deref(),
                format!("the SHA-256 of the text of {at} payload"),
            );
            d.text(
                "recorded_at.utc",
                Some(&data.recorded_at.utc),
                Some(&utc_text(o.created_at)),
                format!("{at} created_at"),
            );
            d.json(
                "detail.step",
                data.detail.get("step"),
                &o.step.clone().map_or(Value::Null, Value::from),
                format!("{at} step"),
            );
        }
        "message_sent" => {
            d.text(
                "text_sha256",
                data.text_sha256.as_deref(),
                text_sha.as_deref(),
                format!("the SHA-256 of the text of {at} payload"),
            );
            d.text(
                "platform_ids.receipt",
                data.platform_ids.get("receipt").map(String::as_str),
                o.receipt_id.as_deref().filter(|r| !r.is_empty()),
                format!("{at} receipt_id"),
            );
            d.text(
                "occurred_at",
                data.occurred_at.as_deref(),
                o.sent_at.map(utc_text).as_deref(),
                format!("{at} sent_at"),
            );
        }
        "message_read" => {
            d.text(
                "platform_ids.receipt",
                data.platform_ids.get("receipt").map(String::as_str),
                o.receipt_id.as_deref().filter(|r| !r.is_empty()),
                format!("{at} receipt_id"),
            );
            d.text(
                "occurred_at",
                data.occurred_at.as_deref(),
                o.read_at.map(utc_text).as_deref(),
                format!("{at} read_at"),
            );
        }
        _ => {}
    }
    Ok(())
}

async fn check_in_differences<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    data: &LeafData,
    d: &mut Diffs,
) -> Result<(), DbErr> {
    let Some(event) = data
        .platform_ids
        .get("inbound_event")
        .and_then(|e| e.parse::<i64>().ok())
    else {
        return Ok(());
    };
    let Some(c) = check_in::Entity::find()
        .filter(check_in::Column::TenantId.eq(tenant))
        .filter(check_in::Column::InboundEventId.eq(event))
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let at = format!("check_ins/{}", c.id);
    d.text(
        "subject",
        data.subject.as_deref(),
        Some(&c.user_id),
        format!("{at} user_id"),
    );
    d.text(
        "actor",
        data.actor.as_deref(),
        Some(&c.user_id),
        format!("{at} user_id"),
    );
    d.text(
        "occurred_at",
        data.occurred_at.as_deref(),
        Some(&utc_text(c.checked_at)),
        format!("{at} checked_at"),
    );
    d.text(
        "recorded_at.utc",
        Some(&data.recorded_at.utc),
        Some(&utc_text(c.recorded_at)),
        format!("{at} recorded_at"),
    );
    let detail = |name: &str| data.detail.get(name);
    d.json(
        "detail.source",
        detail("source"),
        &Value::from(c.source.clone()),
        format!("{at} source"),
    );
    d.json(
        "detail.work_date",
        detail("work_date"),
        &Value::from(c.work_date.to_string()),
        format!("{at} work_date"),
    );
    d.json(
        "detail.site",
        detail("site"),
        &c.site.clone().map_or(Value::Null, Value::from),
        format!("{at} site"),
    );
    d.json(
        "detail.flagged",
        detail("flagged"),
        &Value::from(c.flagged),
        format!("{at} flagged"),
    );
    d.json(
        "detail.distance_m",
        detail("distance_m"),
        &c.distance_m.map_or(Value::Null, Value::from),
        format!("{at} distance_m"),
    );
    d.json(
        "detail.media_sha256",
        detail("media_sha256"),
        &c.media_sha256.clone().map_or(Value::Null, Value::from),
        format!("{at} media_sha256"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_shown_as_ranges() {
        for (indexes, text) in [
            (vec![], ""),
            (vec![3], "3"),
            (vec![3, 4], "3-4"),
            (vec![0, 2, 3, 4, 9], "0, 2-4, 9"),
            (vec![7, 8, 9, 11, 12], "7-9, 11-12"),
        ] {
            assert_eq!(ranges(&indexes), text, "{indexes:?}");
            let back: Vec<u64> = parse_ranges(text)
                .unwrap()
                .into_iter()
                .flat_map(|(start, end)| start..=end)
                .collect();
            assert_eq!(back, indexes, "{text}");
        }
        for bad in ["x", "3,4", "3-", "-3", "4-3", "3-3", "03", "3, ", "1 2"] {
            assert_eq!(parse_ranges(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_numbers_compare_by_value() {
        use serde_json::json;
        for (a, b, equal) in [
            (json!(29), json!(29.0), true),
            (
                json!({"d": 29, "s": "x"}),
                json!({"s": "x", "d": 29.0}),
                true,
            ),
            (json!([1, 2]), json!([1.0, 2.0]), true),
            (json!(29), json!(29.5), false),
            (json!({"d": 1}), json!({"d": 1, "e": null}), false),
            (json!("1"), json!(1), false),
            (json!(null), json!({}), false),
        ] {
            assert_eq!(json_eq(&a, &b), equal, "{a} vs {b}");
        }
    }

    #[test]
    fn a_hash_must_be_64_lowercase_hex_digits() {
        let good = "ab".repeat(32);
        assert_eq!(parse_hash(&good), Some([0xab; 32]));
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            "zz".repeat(32),
            String::new(),
        ] {
            assert_eq!(parse_hash(&bad), None, "{bad}");
        }
    }

    fn record() -> Record {
        Record::Leaf {
            index: 17,
            kind: Some("message_sent".into()),
            source: Some("outbox/9".into()),
        }
    }

    #[test]
    fn problems_read_as_one_line_naming_the_record_and_field() {
        let sha = "3fa2".repeat(16);
        for (problem, line) in [
            (
                Problem::new(
                    record(),
                    Some(Field::Field("text_sha256".into())),
                    "was altered",
                ),
                "leaf 17 (message_sent, outbox/9): field text_sha256 was altered",
            ),
            (
                Problem::new(
                    Record::Leaf {
                        index: 3,
                        kind: None,
                        source: None,
                    },
                    None,
                    "is missing",
                ),
                "leaf 3: is missing",
            ),
            (
                Problem::new(
                    Record::Raw {
                        sha256: sha.clone(),
                        leaf: Some(17),
                        position: Some(1),
                        role: Some("response".into()),
                    },
                    None,
                    "stored bytes hash to 00",
                ),
                "raw 3fa23fa23fa23fa2… (leaf 17, raw[1] response): stored bytes hash to 00",
            ),
            (
                Problem::new(
                    unreferenced(&sha),
                    Some(Field::Column("sha256".into())),
                    "x",
                ),
                "raw 3fa23fa23fa23fa2…: column sha256 x",
            ),
            (
                Problem::new(
                    Record::Checkpoint { size: 120 },
                    None,
                    "signature does not verify",
                ),
                "checkpoint size 120: signature does not verify",
            ),
            (
                Problem::new(
                    Record::Log,
                    Some(Field::Column("frontier".into())),
                    "is corrupt",
                ),
                "log head: column frontier is corrupt",
            ),
        ] {
            assert_eq!(problem.to_string(), line);
        }
        let json = serde_json::to_value(Problem::new(
            record(),
            Some(Field::Column("subject".into())),
            "is \"a\"",
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "record": {"type": "leaf", "index": 17, "kind": "message_sent", "source": "outbox/9"},
                "column": "subject",
                "message": "is \"a\"",
            })
        );
    }

    fn leaf_row(content: Option<&str>, erased: bool, hash: Option<String>) -> LeafRow {
        LeafRow {
            idx: 5,
            kind: "check_in".into(),
            case_id: None,
            subject: Some("lisi".into()),
            source: None,
            leaf_hash: hash
                .or_else(|| content.map(|c| hex(&leaf_hash(c.as_bytes()))))
                .unwrap_or_else(|| "00".repeat(32)),
            content: content.map(str::to_owned),
            erased,
        }
    }

    const CONTENT: &str = r#"{"kind":"check_in","raw":[{"media_type":"text/plain","role":"file","sha256":"abababababababababababababababababababababababababababababababab","size":3}],"recorded_at":{"local":"x","utc":"y","zone":"z"},"salt":"00","subject":"lisi","tenant":"acme","v":1}"#;

    #[test]
    fn each_leaf_is_checked_on_its_own() {
        // (row, erased, altered, problems as "column/field: start of message")
        let other_subject = CONTENT.replace("\"lisi\"", "\"wangwu\"");
        let cases: Vec<(LeafRow, bool, bool, Vec<&str>)> = vec![
            (leaf_row(Some(CONTENT), false, None), false, false, vec![]),
            (leaf_row(None, true, None), true, false, vec![]),
            (
                leaf_row(None, false, None),
                false,
                false,
                vec!["column content is empty"],
            ),
            (
                leaf_row(Some(CONTENT), true, None),
                false,
                false,
                vec!["column erased_at is set"],
            ),
            (
                leaf_row(Some(CONTENT), false, Some("11".repeat(32))),
                false,
                true,
                vec![],
            ),
            (
                leaf_row(Some(CONTENT), false, Some("XYZ".into())),
                false,
                true,
                vec!["column leaf_hash is not"],
            ),
            (
                leaf_row(Some(&other_subject), false, None),
                false,
                false,
                vec!["column subject is \"lisi\" but the leaf says \"wangwu\""],
            ),
            (
                leaf_row(Some("{not json"), false, None),
                false,
                false,
                vec!["content hashes to its leaf_hash but is not leaf data"],
            ),
        ];
        for (row, erased, altered, expected) in cases {
            let mut out = Checked::default();
            let content = row.content.clone();
            check_leaf("acme", row, &mut out);
            assert_eq!(out.erased == [5], erased, "{content:?}");
            assert_eq!(out.altered == [5], altered, "{content:?}");
            assert_eq!(out.problems.len(), expected.len(), "{:?}", out.problems);
            for (p, e) in out.problems.iter().zip(&expected) {
                let line = p.to_string();
                assert!(line.starts_with("leaf 5 (check_in): "), "{line}");
                assert!(line["leaf 5 (check_in): ".len()..].starts_with(e), "{line}");
            }
            if content.as_deref() == Some(CONTENT) {
                assert_eq!(out.refs.len(), 1);
                assert_eq!(out.refs[0].sha, [0xab; 32]);
                assert_eq!((out.refs[0].position, out.refs[0].size), (0, 3));
            }
        }
    }

    #[test]
    fn a_raw_payload_must_hash_to_its_name_and_have_its_size() {
        let bytes = b"abc".to_vec();
        let sha: Hash = sha2::Sha256::digest(&bytes).into();
        let use_ = |sha: Hash, size: u64| RawUse {
            sha,
            leaf: 4,
            position: 1,
            role: "response".into(),
            size,
            media_type: "text/plain".into(),
        };
        assert_eq!(raw_bytes_problem(&bytes, &use_(sha, 3)), None);
        let wrong = raw_bytes_problem(b"abd", &use_(sha, 3)).unwrap();
        assert!(
            wrong.message.starts_with("stored bytes hash to "),
            "{wrong}"
        );
        let short = raw_bytes_problem(&bytes, &use_(sha, 4)).unwrap();
        assert_eq!(
            short.message,
            "stored bytes are 3 bytes long, the leaf says 4"
        );
        // Many at once are hashed on two threads, in order.
        let many: Vec<_> = (0..2000)
            .map(|i| {
                let b = format!("payload {i}").into_bytes();
                let sha: Hash = sha2::Sha256::digest(&b).into();
                let size = if i == 1500 { 0 } else { b.len() as u64 };
                (b, use_(sha, size))
            })
            .collect();
        let found = hash_raws(many);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("the leaf says 0"));
    }
}
