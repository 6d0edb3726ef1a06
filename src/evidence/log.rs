//! The per-tenant evidence log: each leaf is appended in the transaction of
//! what it records, so a fact and its leaf are committed together or not
//! at all. Appending reserves indexes on the log's head row (which
//! serialises appenders of one tenant), hashes the leaves and pushes them
//! onto the stored frontier: O(log n), and no leaf is ever rewritten.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use entity::{evidence_log, evidence_raw};
use sea_orm::Statement;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::merkle::{Frontier, Hash, leaf_hash};
use crate::outbox::render::hex;

/// The time zone a log starts with when no configured tenant named it.
const DEFAULT_ZONE: &str = "Asia/Shanghai";

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A payload stored verbatim with a leaf, referenced from it by hash.
#[derive(Debug, Clone)]
pub struct NewRaw {
    /// What it is to the leaf: `callback`, `request`, `response`, `file`, …
    pub role: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// What happened, before it becomes a leaf (the log adds the tenant, the
/// time of recording and the salt).
#[derive(Debug, Clone)]
pub struct NewLeaf {
    pub kind: String,
    pub case_id: Option<i64>,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub channel: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub template: Option<TemplateRef>,
    pub text_sha256: Option<String>,
    pub platform_ids: BTreeMap<String, String>,
    pub raw: Vec<NewRaw>,
    pub source: Option<String>,
    pub detail: Value,
}

impl NewLeaf {
    pub fn new(kind: &str) -> NewLeaf {
        NewLeaf {
            kind: kind.to_owned(),
            case_id: None,
            subject: None,
            actor: None,
            channel: None,
            occurred_at: None,
            template: None,
            text_sha256: None,
            platform_ids: BTreeMap::new(),
            raw: Vec::new(),
            source: None,
            detail: Value::Null,
        }
    }

    pub fn case(mut self, case_id: Option<i64>) -> Self {
        self.case_id = case_id;
        self
    }

    pub fn subject(mut self, user: Option<&str>) -> Self {
        self.subject = user.map(str::to_owned);
        self
    }

    pub fn actor(mut self, user: Option<&str>) -> Self {
        self.actor = user.map(str::to_owned);
        self
    }

    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_owned());
        self
    }

    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(at);
        self
    }

    /// The template a message was rendered from, and its source's SHA-256.
    pub fn template(mut self, id: &str, sha256: &str) -> Self {
        self.template = Some(TemplateRef {
            id: id.to_owned(),
            sha256: sha256.to_owned(),
        });
        self
    }

    /// The SHA-256 of the text concerned (a rendered message, a document).
    pub fn text(mut self, text: &str) -> Self {
        self.text_sha256 = Some(sha256_hex(text.as_bytes()));
        self
    }

    /// A platform's id for this event (WeCom MsgId, msgid, BizId, …).
    pub fn id(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.platform_ids.insert(name.to_owned(), value);
        }
        self
    }

    pub fn raw(mut self, role: &str, media_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.raw.push(NewRaw {
            role: role.to_owned(),
            media_type: media_type.to_owned(),
            bytes: bytes.into(),
        });
        self
    }

    /// The operational row this leaf records, `table/id`.
    pub fn source(mut self, table: &str, id: i64) -> Self {
        self.source = Some(format!("{table}/{id}"));
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A template and the SHA-256 of its source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub id: String,
    pub sha256: String,
}

/// A raw payload as a leaf names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRef {
    pub role: String,
    pub sha256: String,
    pub size: u64,
    pub media_type: String,
}

/// When the server recorded it: UTC, and the tenant's local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAt {
    pub utc: String,
    pub local: String,
    pub zone: String,
}

/// The leaf data: serialised as RFC 8785 (JCS) JSON, this is exactly what
/// is hashed as the leaf (`SHA-256(0x00 ‖ data)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeafData {
    /// The format's version.
    pub v: u32,
    pub kind: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The platform's time, where it gave one (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    pub recorded_at: RecordedAt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platform_ids: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw: Vec<RawRef>,
    /// The operational row it records, `table/id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// 16 random bytes, hex: without it a leaf's hash reveals nothing of a
    /// guessable content, and deleting it (crypto-shredding) erases it.
    pub salt: String,
}

impl LeafData {
    /// The RFC 8785 canonical form: the bytes that are hashed.
    pub fn canonical(&self) -> Result<String, serde_json::Error> {
        canonical_json(self)
    }
}

/// RFC 8785 (JCS) serialisation of `value`. serde_json's compact output of
/// a `Value` (whose maps are sorted) is already JCS when every number is an
/// integer JavaScript represents exactly and no key holds a character
/// outside the BMP (JCS sorts keys by UTF-16 units, serde_json by UTF-8
/// bytes; they differ only there). That is the usual leaf, and it is ten
/// times faster; anything else goes through the full canonicaliser.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    if plain(&value) {
        serde_json::to_string(&value)
    } else {
        serde_json_canonicalizer::to_string(&value)
    }
}

fn plain(value: &Value) -> bool {
    const SAFE: u64 = 1 << 53;
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(|u| u <= SAFE)
            .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= SAFE))
            .unwrap_or(false),
        Value::Array(items) => items.iter().all(plain),
        Value::Object(map) => map
            .iter()
            .all(|(k, v)| k.chars().all(|c| (c as u32) < 0x10000) && plain(v)),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// Formats `at` as RFC 3339 in UTC with a `Z`, to the second.
pub fn utc_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The head of a log as read for an append or a checkpoint.
#[derive(Debug, Clone)]
pub struct Head {
    pub origin: String,
    pub zone: String,
    pub frontier: Frontier,
}

/// Decodes a stored frontier; an unreadable one is corruption.
pub fn parse_frontier(size: i64, text: &str) -> Result<Frontier, DbErr> {
    let corrupt = || {
        DbErr::Custom(format!(
            "the stored evidence frontier (size {size}) is corrupt"
        ))
    };
    let size = u64::try_from(size).map_err(|_| corrupt())?;
    let bytes = hex::decode(text).map_err(|_| corrupt())?;
    let hashes: Vec<Hash> = bytes
        .chunks(32)
        .map(|c| <Hash>::try_from(c).map_err(|_| corrupt()))
        .collect::<Result<_, _>>()?;
    Frontier::from_peaks(size, &hashes).ok_or_else(corrupt)
}

fn frontier_text(f: &Frontier) -> String {
    let mut out = String::with_capacity(64 * 8);
    for h in f.peak_hashes() {
        out.push_str(&hex(h));
    }
    out
}

/// Creates the log of `tenant` if it has none, and keeps its zone current
/// (each leaf carries the zone it was recorded in).
pub async fn ensure_log<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    origin: &str,
    zone: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    evidence_log::Entity::insert(evidence_log::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        origin: Set(origin.to_owned()),
        zone: Set(zone.to_owned()),
        size: Set(0),
        frontier: Set(String::new()),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(evidence_log::Column::TenantId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    evidence_log::Entity::update_many()
        .col_expr(evidence_log::Column::Zone, Expr::value(zone.to_owned()))
        .filter(evidence_log::Column::TenantId.eq(tenant))
        .filter(evidence_log::Column::Zone.ne(zone))
        .exec(conn)
        .await?;
    Ok(())
}

/// Reads a log's head without reserving anything.
pub async fn head<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<Option<Head>, DbErr> {
    let Some(row) = evidence_log::Entity::find_by_id(tenant.to_owned())
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Head {
        frontier: parse_frontier(row.size, &row.frontier)?,
        origin: row.origin,
        zone: row.zone,
    }))
}

/// Reserves `n` indexes on the log's head: the first statement is a write,
/// so it takes the row (PostgreSQL) or the database (SQLite) for this
/// transaction before anything is read. Returns the head as it was.
async fn reserve<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Result<Head, DbErr> {
    let n = i64::try_from(n).map_err(|_| DbErr::Custom("too many leaves at once".into()))?;
    for _ in 0..2 {
        let rows = evidence_log::Entity::update_many()
            .col_expr(
                evidence_log::Column::Size,
                Expr::col(evidence_log::Column::Size).add(n),
            )
            .col_expr(evidence_log::Column::UpdatedAt, Expr::value(now))
            .filter(evidence_log::Column::TenantId.eq(tenant))
            .exec_with_returning(conn)
            .await?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(Head {
                frontier: parse_frontier(row.size - n, &row.frontier)?,
                origin: row.origin,
                zone: row.zone,
            });
        }
        // A tenant that start-up did not know (a test, a removed tenant).
        ensure_log(
            conn,
            tenant,
            &format!("rollcall/{tenant}"),
            DEFAULT_ZONE,
            now,
        )
        .await?;
    }
    Err(DbErr::Custom(format!(
        "the evidence log of `{tenant}` could not be created"
    )))
}

/// One appended leaf.
#[derive(Debug, Clone)]
pub struct Appended {
    pub index: u64,
    pub hash: Hash,
}

/// Appends `leaves` to `tenant`'s log in the caller's transaction, with
/// their raw payloads. Returns their indexes and hashes, in order. Only in a
/// transaction: the size is reserved first and the frontier written last,
/// so two appends outside transactions would interleave and corrupt it.
pub async fn append<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    now: DateTime<Utc>,
    leaves: Vec<NewLeaf>,
) -> Result<Vec<Appended>, DbErr> {
    if leaves.is_empty() {
        return Ok(Vec::new());
    }
    let head = reserve(conn, tenant, leaves.len(), now).await?;
    let zone: Tz = head.zone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    let recorded_at = RecordedAt {
        utc: utc_text(now),
        local: now
            .with_timezone(&zone)
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        zone: head.zone.clone(),
    };
    let mut frontier = head.frontier;
    // By SHA-256: a payload appears once however many leaves name it.
    let mut raws: BTreeMap<String, NewRaw> = BTreeMap::new();
    let mut rows = Vec::with_capacity(leaves.len());
    let mut appended = Vec::with_capacity(leaves.len());
    for leaf in leaves {
        let mut refs = Vec::with_capacity(leaf.raw.len());
        for r in leaf.raw {
            let sha = sha256_hex(&r.bytes);
            refs.push(RawRef {
                role: r.role.clone(),
                sha256: sha.clone(),
                size: r.bytes.len() as u64,
                media_type: r.media_type.clone(),
            });
            raws.entry(sha).or_insert(r);
        }
        let data = LeafData {
            v: 1,
            kind: leaf.kind,
            tenant: tenant.to_owned(),
            case: leaf.case_id,
            subject: leaf.subject,
            actor: leaf.actor,
            channel: leaf.channel,
            occurred_at: leaf.occurred_at.map(utc_text),
            recorded_at: recorded_at.clone(),
            template: leaf.template,
            text_sha256: leaf.text_sha256,
            platform_ids: leaf.platform_ids,
            raw: refs,
            source: leaf.source,
            detail: leaf.detail,
            salt: hex(&rand::random::<[u8; 16]>()),
        };
        let content = data
            .canonical()
            .map_err(|e| DbErr::Custom(format!("a leaf does not serialise: {e}")))?;
        let hash = leaf_hash(content.as_bytes());
        let index = frontier.size();
        frontier.push(hash);
        appended.push(Appended { index, hash });
        rows.push(json!([
            index,
            data.kind,
            data.case,
            data.subject,
            data.source,
            hex(&hash),
            content
        ]));
    }
    let raws: Vec<_> = raws.into_iter().collect();
    bulk_insert(conn, tenant, now, &raws, &rows).await?;
    evidence_log::Entity::update_many()
        .col_expr(
            evidence_log::Column::Frontier,
            Expr::value(frontier_text(&frontier)),
        )
        .filter(evidence_log::Column::TenantId.eq(tenant))
        .exec(conn)
        .await?;
    Ok(appended)
}

/// Inserts a batch's raw payloads (a payload already kept stays as it is)
/// and its leaves, each in one statement over a JSON array: one round trip
/// to the database for any number of rows, and no bound-parameter limit.
async fn bulk_insert<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    now: DateTime<Utc>,
    raws: &[(String, NewRaw)],
    leaves: &[Value],
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let postgres = backend == sea_orm::DbBackend::Postgres;
    // Payloads are bound as blobs (hex inside JSON costs more than it saves).
    for chunk in raws.chunks(500) {
        let rows = chunk.iter().map(|(sha, r)| evidence_raw::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            sha256: Set(sha.clone()),
            media_type: Set(r.media_type.clone()),
            size: Set(r.bytes.len() as i64),
            bytes: Set(Some(r.bytes.clone())),
            created_at: Set(now),
            erased_at: Set(None),
        });
        evidence_raw::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([evidence_raw::Column::TenantId, evidence_raw::Column::Sha256])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    let sql = if postgres {
        "INSERT INTO evidence_leaves (tenant_id, idx, kind, case_id, subject, source, leaf_hash, content, recorded_at) \
         SELECT $1, (x->>0)::bigint, x->>1, (x->>2)::bigint, x->>3, x->>4, x->>5, x->>6, $2 \
         FROM jsonb_array_elements($3::text::jsonb) AS x"
    } else {
        "INSERT INTO evidence_leaves (tenant_id, idx, kind, case_id, subject, source, leaf_hash, content, recorded_at) \
         SELECT ?1, j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5, j.value->>6, ?2 \
         FROM json_each(?3) AS j"
    };
    let leaves = serde_json::to_string(leaves).map_err(|e| DbErr::Custom(e.to_string()))?;
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [tenant.into(), now.into(), leaves.into()],
    ))
    .await?;
    Ok(())
}

/// Appends one leaf (in the caller's transaction, see [`append`]).
pub async fn append_one<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    now: DateTime<Utc>,
    leaf: NewLeaf,
) -> Result<Appended, DbErr> {
    let mut out = append(conn, tenant, now, vec![leaf]).await?;
    out.pop()
        .ok_or_else(|| DbErr::Custom("an append returned no leaf".into()))
}

tokio::task_local! {
    /// The leaves [`append_later`] keeps inside [`deferring`], with their
    /// tenants, in order.
    static DEFERRED: std::cell::RefCell<Vec<(String, NewLeaf)>>;
}

/// Runs `work` with the appends of [`append_later`] kept in memory instead
/// of written, until [`flush_deferred`] appends them all (one reservation
/// of the head and one insert per tenant). A batch of inbound events runs
/// in this, so that its many leaves cost a few statements, and on
/// PostgreSQL the tenant's head row (which serialises appenders) is locked
/// only from the flush to the commit, not for the whole batch. Leaves
/// appended directly meanwhile (rare paths) take their indexes first; each
/// deferred leaf keeps its place among the deferred ones.
pub async fn deferring<F: std::future::Future>(work: F) -> F::Output {
    DEFERRED
        .scope(std::cell::RefCell::new(Vec::new()), work)
        .await
}

/// Appends `leaf` to `tenant`'s log in the caller's transaction, or, inside
/// [`deferring`], keeps it for [`flush_deferred`] in the same transaction.
pub async fn append_later<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    now: DateTime<Utc>,
    leaf: NewLeaf,
) -> Result<(), DbErr> {
    let mut leaf = Some(leaf);
    let kept = DEFERRED.try_with(|d| {
        if let Some(leaf) = leaf.take() {
            d.borrow_mut().push((tenant.to_owned(), leaf));
        }
    });
    match (kept, leaf) {
        (Err(_), Some(leaf)) => append_one(conn, tenant, now, leaf).await.map(|_| ()),
        _ => Ok(()),
    }
}

/// How many leaves [`deferring`] keeps: a mark for [`discard_deferred`].
pub fn deferred_len() -> usize {
    DEFERRED.try_with(|d| d.borrow().len()).unwrap_or(0)
}

/// Drops the leaves kept after `mark` (what a rolled-back event had kept).
pub fn discard_deferred(mark: usize) {
    let _ = DEFERRED.try_with(|d| d.borrow_mut().truncate(mark));
}

/// Appends every leaf [`deferring`] keeps, in `conn`'s transaction: one
/// [`append`] per tenant, tenants in one order (so that two flushes lock
/// the heads alike). Returns how many were appended.
pub async fn flush_deferred<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let kept = DEFERRED
        .try_with(|d| std::mem::take(&mut *d.borrow_mut()))
        .unwrap_or_default();
    let n = kept.len();
    let mut by_tenant: BTreeMap<String, Vec<NewLeaf>> = BTreeMap::new();
    for (tenant, leaf) in kept {
        by_tenant.entry(tenant).or_default().push(leaf);
    }
    for (tenant, leaves) in by_tenant {
        append(conn, &tenant, now, leaves).await?;
    }
    Ok(n)
}

/// The stored bytes of a raw payload, if kept (and not forgotten).
pub async fn raw_bytes<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    sha256: &str,
) -> Result<Option<Vec<u8>>, DbErr> {
    Ok(
        evidence_raw::Entity::find_by_id((tenant.to_owned(), sha256.to_owned()))
            .one(conn)
            .await?
            .and_then(|r| r.bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::plain(serde_json::json!({"b": 1, "a": ["x\u{1}\n\"", -3, null, true], "王": {"z": "五", "y": 9007199254740992u64}}))]
    #[case::floats(serde_json::json!({"lat": 31.2304, "big": 1e21, "tiny": 5e-7, "neg": -0.0}))]
    #[case::huge_integer(serde_json::json!({"n": 9007199254740993u64, "m": -9007199254740993i64}))]
    #[case::astral_keys(serde_json::json!({"\u{1F600}": 1, "\u{FB33}": 2, "a": 3}))]
    #[case::controls(serde_json::json!({"s": "\u{7f}\u{1f}\u{2028}\t\\/"}))]
    fn the_fast_form_is_rfc_8785(#[case] value: Value) {
        assert_eq!(
            canonical_json(&value).unwrap(),
            serde_json_canonicalizer::to_string(&value).unwrap()
        );
    }

    #[test]
    fn leaf_data_is_canonical_json_without_empty_fields() {
        let data = LeafData {
            v: 1,
            kind: "case.opened".into(),
            tenant: "acme".into(),
            case: Some(7),
            subject: Some("zhangsan".into()),
            actor: None,
            channel: None,
            occurred_at: None,
            recorded_at: RecordedAt {
                utc: "2026-11-26T02:00:00Z".into(),
                local: "2026-11-26T10:00:00+08:00".into(),
                zone: "Asia/Shanghai".into(),
            },
            template: None,
            text_sha256: None,
            platform_ids: BTreeMap::new(),
            raw: vec![],
            source: None,
            detail: serde_json::json!({"王": "五", "b": 1.5, "a": [2, 1e21]}),
            salt: "00".into(),
        };
        assert_eq!(
            data.canonical().unwrap(),
            r#"{"case":7,"detail":{"a":[2,1e+21],"b":1.5,"王":"五"},"kind":"case.opened","recorded_at":{"local":"2026-11-26T10:00:00+08:00","utc":"2026-11-26T02:00:00Z","zone":"Asia/Shanghai"},"salt":"00","subject":"zhangsan","tenant":"acme","v":1}"#
        );
    }
}
