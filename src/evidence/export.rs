//! The case package: what an employer hands to an arbitrator or a lawyer
//! about one employee (or one of their cases), provable offline.
//!
//! A fresh checkpoint is signed at export and every leaf in the package is
//! proved against it; the log's earlier checkpoint that first covered the
//! case is tied to it by a consistency proof. Proofs disclose hashes only,
//! so nothing about other employees is in the package.
//!
//! Which leaves: those whose subject is the employee, and the `callback`
//! leaves their case events and check-ins point to (`platform_ids.
//! inbound_event`: a manager's button press is the manager's callback).
//! With a case: only that case's leaves and the employee's leaves without a
//! case recorded in the case's period: from the first missed day (00:00,
//! tenant time) to its resolution, or on while it is unresolved. Chat
//! commands the employee sent, and their answers, are left out: a command's
//! subject is its sender, but it may be about someone else. An erased
//! leaf comes with the `forgotten` leaf that recorded its erasure, so the
//! verifier can tell an erasure from content left out of the package.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use entity::{absence_case, employee, evidence_checkpoint, evidence_leaf, evidence_raw};
use sea_orm::{ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use serde_json::Value;

use super::checkpoint::{self, CheckpointError, fingerprint};
use super::log::{LeafData, TemplateRef, sha256_hex};
use super::merkle::{Hash, Tree, leaf_hash};
use super::note::{self, NoteSigner};
use super::verify::parse_ranges;
use crate::cases::ladder::Policy;
use crate::cases::store::{self, case_no};
use crate::outbox::Payload;
use crate::outbox::render::{TemplateError, hex};
use crate::runtime::Runtime;

/// The package format, named in its manifest.
pub const FORMAT: &str = "rollcall-evidence-package/1";
/// The stand-alone verifier and its instructions, shipped in every package.
const VERIFY_PY: &str = include_str!("package/verify.py");
const VERIFY_MD: &str = include_str!("package/VERIFY.md");
/// The earlier checkpoint of the consistency proof, when there is one.
const EARLIEST_NOTE: &str = "checkpoint-earliest.txt";
/// The evidence key hand-overs, oldest first, when the log was signed by
/// more than one key.
const HANDOVERS: &str = "handovers.txt";
/// Bound parameters per `IN (…)` list (SQLite allows 32,766 in all).
const IN_CHUNK: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no tenant `{0}` in the configuration")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` has no case {case} of `{employee}`")]
    NoSuchCase {
        tenant: String,
        employee: String,
        case: i64,
    },
    #[error("the evidence log of `{0}` is empty: nothing to export")]
    EmptyLog(String),
    #[error("the evidence log of `{tenant}` holds nothing about `{employee}`")]
    NothingAbout { tenant: String, employee: String },
    #[error(
        "the checkpoint of {size} leaves does not verify with this server's key: was the key file replaced?"
    )]
    ForeignCheckpoint { size: i64 },
    #[error(
        "the checkpoint of `{tenant}` names the log `{origin}`, but its verifier expects `{expected}` (the signing key's name, then the tenant): was the key made under another `evidence.name`?"
    )]
    ForeignOrigin {
        tenant: String,
        origin: String,
        expected: String,
    },
    #[error("the evidence log of `{tenant}` is inconsistent: {reason}")]
    Corrupt { tenant: String, reason: String },
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("writing the package's JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What a package holds, in numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub tenant: String,
    pub employee: String,
    pub case: Option<i64>,
    /// Lines of `leaves.jsonl` (erased leaves included).
    pub leaves: usize,
    pub erased: usize,
    /// The checkpoint signed at export, which every proof leads to.
    pub checkpoint_size: u64,
    pub checkpoint_root: String,
    /// The earliest checkpoint that covered the case, if one came before.
    pub earliest_checkpoint: Option<u64>,
    /// SHA-256 of the signing key, to compare with the published one.
    pub fingerprint: String,
}

/// An exported package: its files by path (`/`-separated), and a summary.
#[derive(Debug, Clone)]
pub struct Package {
    files: BTreeMap<String, Vec<u8>>,
    pub summary: Summary,
}

impl Package {
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Writes the package into `dir`, which must be new or empty (a file
    /// already there would be an extra file to the verifier). A package is
    /// a person's file: its files are readable by their owner only (0600,
    /// folders 0700).
    pub fn write_dir(&self, dir: &Path) -> Result<(), ExportError> {
        let fail = |path: &Path, reason: String| ExportError::Write {
            path: path.to_owned(),
            reason,
        };
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(fail(dir, "is not empty".into()));
        }
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                private_dirs(parent).map_err(|e| fail(parent, e.to_string()))?;
            }
            let mut file = private_file(&path).map_err(|e| fail(&path, e.to_string()))?;
            std::io::Write::write_all(&mut file, bytes).map_err(|e| fail(&path, e.to_string()))?;
        }
        Ok(())
    }

    /// The package as a zip archive (deflate), its files at the top level
    /// (0600 inside the archive too).
    pub fn to_zip(&self) -> Vec<u8> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o600);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        // Writing to memory fails only on a repeated or oversized entry: the
        // paths are a map's keys, and large_file is set where needed.
        for (name, bytes) in &self.files {
            let large = bytes.len() as u64 >= u64::from(u32::MAX);
            zip.start_file(name.as_str(), options.large_file(large))
                .and_then(|()| zip.write_all(bytes).map_err(Into::into))
                .expect("a zip entry is written to memory");
        }
        zip.finish()
            .expect("a zip archive is finished in memory")
            .into_inner()
    }
}

/// Exports what the log of `tenant` holds about `employee` (or about one
/// of their cases), proved against a checkpoint signed now.
pub async fn package(
    rt: &Runtime,
    tenant: &str,
    employee: &str,
    case: Option<i64>,
) -> Result<Package, ExportError> {
    let config = &rt
        .tenant(tenant)
        .ok_or_else(|| ExportError::UnknownTenant(tenant.to_owned()))?
        .config;
    let conn = &rt.db.orm;
    let now = rt.clock.now();
    let zone = config.timezone;
    let corrupt = |reason: String| ExportError::Corrupt {
        tenant: tenant.to_owned(),
        reason,
    };

    let case_row = match case {
        Some(id) => Some(
            absence_case::Entity::find_by_id(id)
                .one(conn)
                .await?
                .filter(|c| c.tenant_id == tenant && c.user_id == employee)
                .ok_or_else(|| ExportError::NoSuchCase {
                    tenant: tenant.to_owned(),
                    employee: employee.to_owned(),
                    case: id,
                })?,
        ),
        None => None,
    };

    let signed = checkpoint::checkpoint(conn, &rt.signer, &rt.witness, tenant, now)
        .await?
        .ok_or_else(|| ExportError::EmptyLog(tenant.to_owned()))?;
    let verifier_key = rt.signer.verifier_key();
    // Checkpoints signed before a key rotation (right after one, the
    // export's own) are believed through the hand-overs, which the package
    // then carries.
    let chain = super::handover::chain(conn, &verifier_key).await?;
    let keys: Vec<&str> = chain.keys().collect();
    if !keys.iter().any(|k| note::verify(&signed.note, k).is_ok()) {
        return Err(ExportError::ForeignCheckpoint { size: signed.size });
    }
    // A package that verify.py would refuse is not made.
    let origin = signed.note.lines().next().unwrap_or_default().to_owned();
    let expected = log_origin(rt.signer.name(), tenant);
    if origin != expected {
        return Err(ExportError::ForeignOrigin {
            tenant: tenant.to_owned(),
            origin,
            expected,
        });
    }
    let size = u64::try_from(signed.size).map_err(|_| corrupt("a negative size".into()))?;
    let tree = load_tree(conn, tenant, size).await?;
    if hex(&tree.root()) != signed.root {
        return Err(corrupt(format!(
            "the leaves do not hash to the root of the checkpoint of {size}"
        )));
    }

    let period = case_row.as_ref().map(|c| {
        let start = c
            .first_missed
            .and_time(NaiveTime::MIN)
            .and_local_timezone(zone)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(c.opened_at);
        (start, c.resolved_at)
    });
    let mut chosen = choose(conn, tenant, employee, case, period, size, &tree).await?;
    if chosen.is_empty() {
        return Err(ExportError::NothingAbout {
            tenant: tenant.to_owned(),
            employee: employee.to_owned(),
        });
    }
    add_erasure_records(conn, tenant, size, &tree, &mut chosen).await?;

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    // Raw payloads, by SHA-256, and the notices rendered from them.
    let wanted: BTreeSet<String> = chosen
        .values()
        .filter_map(|c| c.data.as_ref())
        .flat_map(|d| d.raw.iter().map(|r| r.sha256.clone()))
        .collect();
    let stored = raws(conn, tenant, &wanted).await?;
    let mut raw_paths: HashMap<String, String> = HashMap::new();
    for (sha, row) in &stored {
        if let Some(bytes) = &row.bytes {
            let path = format!("raw/{sha}.{}", extension(&row.media_type));
            files.insert(path.clone(), bytes.clone());
            raw_paths.insert(sha.clone(), path);
        }
    }
    // A notice's file by the outbox row it was queued as (the row's later
    // leaves share its source), else by its text's hash.
    let mut notices: HashMap<String, String> = HashMap::new();
    for c in chosen.values().filter(|c| c.row.kind == "message_queued") {
        let Some(data) = &c.data else { continue };
        let Some(expected) = &data.text_sha256 else {
            continue;
        };
        let rendered = data
            .raw
            .iter()
            .find(|r| r.role == "rendered")
            .and_then(|r| stored.get(&r.sha256))
            .and_then(|r| r.bytes.as_deref());
        let Some(rendered) = rendered else { continue };
        let payload: Payload = serde_json::from_slice(rendered).map_err(|e| {
            corrupt(format!(
                "the rendered message of leaf {} is not a payload: {e}",
                c.row.idx
            ))
        })?;
        let text = payload.text();
        if &sha256_hex(text.as_bytes()) != expected {
            return Err(corrupt(format!(
                "the text of leaf {} does not hash to its text_sha256",
                c.row.idx
            )));
        }
        let path = format!(
            "notices/{:06}-{}-{}.txt",
            c.row.idx,
            data.template.as_ref().map_or("message", |t| t.id.as_str()),
            data.channel.as_deref().unwrap_or("unknown"),
        );
        files.insert(path.clone(), text.into_bytes());
        if let Some(source) = &c.row.source {
            notices.insert(source.clone(), path.clone());
        }
        notices.entry(expected.clone()).or_insert(path);
    }

    // leaves.jsonl: each leaf with its proof against the export checkpoint.
    let mut jsonl = String::new();
    for (&index, c) in &chosen {
        let proof = tree
            .inclusion_proof(index)
            .ok_or_else(|| corrupt(format!("leaf {index} is not in the tree")))?;
        let raw = c
            .data
            .iter()
            .flat_map(|d| &d.raw)
            .map(|r| LineRaw {
                role: r.role.clone(),
                sha256: r.sha256.clone(),
                path: raw_paths.get(&r.sha256).cloned(),
                absent: match stored.get(&r.sha256) {
                    Some(row) if row.bytes.is_some() => None,
                    Some(row) if row.erased_at.is_some() => Some("erased"),
                    _ => Some("not_kept"),
                },
            })
            .collect();
        let line = Line {
            index,
            kind: &c.row.kind,
            leaf_hash: &c.row.leaf_hash,
            data: c.row.content.as_deref(),
            erased: c.row.content.is_none(),
            included_as: c.included_as,
            inclusion_proof: proof.iter().map(|h| hex(h)).collect(),
            raw,
            notice: notice_of(c, &notices),
        };
        jsonl.push_str(&serde_json::to_string(&line)?);
        jsonl.push('\n');
    }
    files.insert("leaves.jsonl".into(), jsonl.into_bytes());

    // The earliest checkpoint that covered the case, and the proof that the
    // log at export extends it.
    let anchor = chosen
        .values()
        .find(|c| match case {
            Some(id) => c.row.case_id == Some(id),
            None => c.row.case_id.is_some(),
        })
        .or_else(|| chosen.values().next())
        .map_or(0, |c| c.row.idx);
    let earliest = earliest_covering(conn, tenant, anchor, &signed, &keys).await?;
    if !chain.links.is_empty() {
        files.insert(HANDOVERS.into(), chain.notes().into_bytes());
    }
    let consistency = match &earliest {
        Some(first) => {
            let m = first.size as u64;
            if hex(&tree.root_at(m)) != first.root {
                return Err(corrupt(format!(
                    "the log's first {m} leaves do not hash to the root signed for them"
                )));
            }
            files.insert(EARLIEST_NOTE.into(), first.note.clone().into_bytes());
            serde_json::json!({
                "from": { "size": first.size, "root": first.root, "note": EARLIEST_NOTE },
                "to": { "size": size, "root": signed.root },
                "proof": tree.consistency_proof(m, tree.size()).iter().map(|h| hex(h)).collect::<Vec<_>>(),
            })
        }
        None => serde_json::json!({
            "from": null,
            "to": { "size": size, "root": signed.root },
            "proof": [],
            "reason": "no_earlier_checkpoint",
        }),
    };
    files.insert("consistency.json".into(), pretty(&consistency)?);

    files.insert("checkpoint.txt".into(), signed.note.clone().into_bytes());
    if let Some(tsr) = time_stamp(rt, conn, &signed).await {
        files.insert("checkpoint.tsr".into(), tsr);
    }
    let print = fingerprint(&rt.signer);
    files.insert("pubkey.txt".into(), pubkey_text(&rt.signer).into_bytes());
    files.insert("verify.py".into(), VERIFY_PY.as_bytes().to_vec());
    files.insert("VERIFY.md".into(), VERIFY_MD.as_bytes().to_vec());

    let summary = Summary {
        tenant: tenant.to_owned(),
        employee: employee.to_owned(),
        case,
        leaves: chosen.len(),
        erased: chosen.values().filter(|c| c.data.is_none()).count(),
        checkpoint_size: size,
        checkpoint_root: signed.root.clone(),
        earliest_checkpoint: earliest.as_ref().map(|c| c.size as u64),
        fingerprint: print,
    };

    let report = report::build(
        rt,
        config,
        report::Sources {
            employee,
            case: case_row.as_ref(),
            chosen: &chosen,
            notices: &notices,
            raw_paths: &raw_paths,
            checkpoint: &signed,
            earliest: earliest.as_ref(),
            summary: &summary,
            now,
        },
    )
    .await?;
    files.insert("report.html".into(), report.into_bytes());

    // The manifest lists every file above; it and its signature close the package.
    let manifest = serde_json::json!({
        "format": FORMAT,
        "tenant": tenant,
        "employer": config.name,
        "employee": employee,
        "case": case,
        "case_no": case.map(case_no),
        "created_at": now.to_rfc3339_opts(SecondsFormat::Secs, true),
        "checkpoint": { "origin": origin, "size": size, "root": signed.root },
        "earliest_checkpoint": earliest.as_ref().map(|c| c.size),
        "key": { "verifier_key": verifier_key, "fingerprint": summary.fingerprint },
        "leaves": summary.leaves,
        "files": files.iter().map(|(path, bytes)| serde_json::json!({
            "path": path,
            "size": bytes.len(),
            "sha256": sha256_hex(bytes),
        })).collect::<Vec<_>>(),
    });
    let manifest = pretty(&manifest)?;
    let signature = rt.signer.sign_bytes(&manifest);
    files.insert("manifest.json".into(), manifest);
    files.insert(
        "manifest.sig".into(),
        format!("{}\n", STANDARD.encode(signature)).into_bytes(),
    );
    Ok(Package { files, summary })
}

/// `pubkey.txt`: the verifier key, the raw Ed25519 key in base64 and its
/// fingerprint, one a line. `rollcall evidence pubkey` prints the same lines,
/// for the employer to publish.
pub fn pubkey_text(signer: &NoteSigner) -> String {
    format!(
        "verifier key: {}\nEd25519 public key (base64): {}\nfingerprint (SHA-256): {}\n",
        signer.verifier_key(),
        STANDARD.encode(signer.public_key()),
        fingerprint(signer)
    )
}

/// The origin of `tenant`'s log as the verifier expects it: the key's name
/// (`evidence.name`, which names the logs too), then the tenant.
pub fn log_origin(key_name: &str, tenant: &str) -> String {
    format!("{key_name}/{tenant}")
}

/// The notice file whose text a leaf names (`text_sha256`), if any.
fn notice_of(c: &Chosen, notices: &HashMap<String, String>) -> Option<String> {
    let text = c.data.as_ref()?.text_sha256.as_ref()?;
    c.row
        .source
        .as_ref()
        .and_then(|s| notices.get(s))
        .or_else(|| notices.get(text))
        .cloned()
}

fn pretty(value: &Value) -> Result<Vec<u8>, ExportError> {
    let mut out = serde_json::to_vec_pretty(value)?;
    out.push(b'\n');
    Ok(out)
}

/// One line of `leaves.jsonl`.
#[derive(Serialize)]
struct Line<'a> {
    index: u64,
    kind: &'a str,
    leaf_hash: &'a str,
    /// The leaf data exactly as hashed; `None` once erased.
    data: Option<&'a str>,
    erased: bool,
    /// `employee` (its subject), `callback` (what a case event points to)
    /// or `erasure` (the `forgotten` leaf that recorded the erasure of one
    /// of the others).
    included_as: &'static str,
    inclusion_proof: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    raw: Vec<LineRaw>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notice: Option<String>,
}

/// Where a leaf's raw payload is in the package, or why it is not.
#[derive(Serialize)]
struct LineRaw {
    role: String,
    sha256: String,
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    absent: Option<&'static str>,
}

/// A leaf chosen for the package.
#[derive(Debug)]
struct Chosen {
    row: evidence_leaf::Model,
    /// The parsed content (`None`: erased).
    data: Option<LeafData>,
    included_as: &'static str,
}

/// The leaf hashes of the first `size` leaves (only the hashes: 32 bytes a
/// leaf, whatever the contents weigh), as a tree.
async fn load_tree(
    conn: &sea_orm::DatabaseConnection,
    tenant: &str,
    size: u64,
) -> Result<Tree, ExportError> {
    let corrupt = |reason: String| ExportError::Corrupt {
        tenant: tenant.to_owned(),
        reason,
    };
    let rows: Vec<(i64, String)> = evidence_leaf::Entity::find()
        .select_only()
        .column(evidence_leaf::Column::Idx)
        .column(evidence_leaf::Column::LeafHash)
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Idx.lt(size as i64))
        .order_by_asc(evidence_leaf::Column::Idx)
        .into_tuple()
        .all(conn)
        .await?;
    if rows.len() as u64 != size {
        return Err(corrupt(format!(
            "{} leaves stored below index {size}",
            rows.len()
        )));
    }
    let mut leaves = Vec::with_capacity(rows.len());
    for (i, (idx, text)) in rows.into_iter().enumerate() {
        let mut hash: Hash = [0; 32];
        if idx != i as i64 || hex::decode_to_slice(&text, &mut hash).is_err() {
            return Err(corrupt(format!(
                "leaf {i} is missing or its hash unreadable"
            )));
        }
        leaves.push(hash);
    }
    Ok(Tree::new(leaves))
}

/// The leaves about `employee` below `size` (see the module's doc), with
/// the callbacks they point to, by index.
async fn choose(
    conn: &sea_orm::DatabaseConnection,
    tenant: &str,
    employee: &str,
    case: Option<i64>,
    period: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    size: u64,
    tree: &Tree,
) -> Result<BTreeMap<u64, Chosen>, ExportError> {
    let mut query = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Subject.eq(employee))
        .filter(evidence_leaf::Column::Idx.lt(size as i64));
    if let (Some(id), Some((start, end))) = (case, period) {
        let mut in_period = Condition::all()
            .add(evidence_leaf::Column::CaseId.is_null())
            .add(evidence_leaf::Column::RecordedAt.gte(start));
        if let Some(end) = end {
            in_period = in_period.add(evidence_leaf::Column::RecordedAt.lte(end));
        }
        query = query.filter(
            Condition::any()
                .add(evidence_leaf::Column::CaseId.eq(id))
                .add(in_period),
        );
    }
    let mut chosen = BTreeMap::new();
    for row in query
        .order_by_asc(evidence_leaf::Column::Idx)
        .all(conn)
        .await?
    {
        let data = checked(tenant, &row, tree)?;
        chosen.insert(
            row.idx as u64,
            Chosen {
                row,
                data,
                included_as: "employee",
            },
        );
    }
    leave_out_commands(&mut chosen);
    let sources: BTreeSet<String> = chosen
        .values()
        .filter_map(|c| c.data.as_ref()?.platform_ids.get("inbound_event"))
        .map(|id| format!("inbound_events/{id}"))
        .collect();
    let sources: Vec<String> = sources.into_iter().collect();
    for part in sources.chunks(IN_CHUNK) {
        let rows = evidence_leaf::Entity::find()
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Kind.eq("callback"))
            .filter(evidence_leaf::Column::Source.is_in(part.iter().cloned()))
            .filter(evidence_leaf::Column::Idx.lt(size as i64))
            .all(conn)
            .await?;
        for row in rows {
            if chosen.contains_key(&(row.idx as u64)) {
                continue;
            }
            let data = checked(tenant, &row, tree)?;
            chosen.insert(
                row.idx as u64,
                Chosen {
                    row,
                    data,
                    included_as: "callback",
                },
            );
        }
    }
    Ok(chosen)
}

/// Adds, for the erased leaves of `chosen`, the `forgotten` leaves that
/// recorded their erasure (by index, after them): the verifier fails an
/// erased leaf that no erasure record names.
async fn add_erasure_records(
    conn: &sea_orm::DatabaseConnection,
    tenant: &str,
    size: u64,
    tree: &Tree,
    chosen: &mut BTreeMap<u64, Chosen>,
) -> Result<(), ExportError> {
    let erased: Vec<u64> = chosen
        .iter()
        .filter(|(_, c)| c.data.is_none())
        .map(|(i, _)| *i)
        .collect();
    if erased.is_empty() {
        return Ok(());
    }
    // One a `privacy forget`: few, whatever the size of the log.
    let records = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::TenantId.eq(tenant))
        .filter(evidence_leaf::Column::Kind.eq("forgotten"))
        .filter(evidence_leaf::Column::Idx.lt(size as i64))
        .filter(evidence_leaf::Column::Idx.gt(erased[0] as i64))
        .order_by_asc(evidence_leaf::Column::Idx)
        .all(conn)
        .await?;
    for row in records {
        let index = row.idx as u64;
        if chosen.contains_key(&index) {
            continue;
        }
        let Some(data) = checked(tenant, &row, tree)? else {
            continue;
        };
        let ranges = data
            .detail
            .get("leaves")
            .and_then(Value::as_str)
            .and_then(parse_ranges)
            .ok_or_else(|| ExportError::Corrupt {
                tenant: tenant.to_owned(),
                reason: format!(
                    "the erasure record at leaf {index} does not list the leaves it erased"
                ),
            })?;
        let names = |e: &u64| *e < index && ranges.iter().any(|(lo, hi)| lo <= e && e <= hi);
        if erased.iter().any(names) {
            chosen.insert(
                index,
                Chosen {
                    row,
                    data: Some(data),
                    included_as: "erasure",
                },
            );
        }
    }
    Ok(())
}

/// Removes chat command exchanges: the `command` leaf, the callback that
/// carried it and the bot's answer (`reply:{event}`). Their subject is who
/// sent the command, but `/status 李四` is about someone else. A callback a
/// remaining leaf points to (a case event) stays.
fn leave_out_commands(chosen: &mut BTreeMap<u64, Chosen>) {
    let event_of = |c: &Chosen| {
        c.data
            .as_ref()
            .and_then(|d| d.platform_ids.get("inbound_event").cloned())
    };
    let commands: BTreeSet<String> = chosen
        .values()
        .filter(|c| c.row.kind == "command")
        .filter_map(event_of)
        .collect();
    chosen.retain(|_, c| c.row.kind != "command");
    if commands.is_empty() {
        return;
    }
    let still_pointed_to: BTreeSet<String> = chosen
        .values()
        .filter(|c| c.row.kind != "callback")
        .filter_map(event_of)
        .collect();
    chosen.retain(|_, c| {
        let answer = c
            .data
            .as_ref()
            .and_then(|d| d.platform_ids.get("idem_key"))
            .and_then(|k| k.strip_prefix("reply:"))
            .is_some_and(|e| commands.contains(e));
        let carried = c.row.kind == "callback"
            && c.row
                .source
                .as_deref()
                .and_then(|s| s.strip_prefix("inbound_events/"))
                .is_some_and(|e| commands.contains(e) && !still_pointed_to.contains(e));
        !(answer || carried)
    });
}

/// Parses a leaf's content after checking that it hashes to the stored
/// hash and to the tree's: a package that would not verify is not made.
fn checked(
    tenant: &str,
    row: &evidence_leaf::Model,
    tree: &Tree,
) -> Result<Option<LeafData>, ExportError> {
    let corrupt = |reason: String| ExportError::Corrupt {
        tenant: tenant.to_owned(),
        reason,
    };
    let in_tree = tree.leaves().get(row.idx as usize).map(|h| hex(h));
    if in_tree.as_deref() != Some(row.leaf_hash.as_str()) {
        return Err(corrupt(format!("leaf {} is not the tree's", row.idx)));
    }
    let Some(content) = &row.content else {
        return Ok(None);
    };
    if hex(&leaf_hash(content.as_bytes())) != row.leaf_hash {
        return Err(corrupt(format!(
            "the content of leaf {} does not hash to its leaf hash",
            row.idx
        )));
    }
    serde_json::from_str(content)
        .map(Some)
        .map_err(|e| corrupt(format!("leaf {} does not read: {e}", row.idx)))
}

async fn raws(
    conn: &sea_orm::DatabaseConnection,
    tenant: &str,
    wanted: &BTreeSet<String>,
) -> Result<BTreeMap<String, evidence_raw::Model>, DbErr> {
    let wanted: Vec<&String> = wanted.iter().collect();
    let mut out = BTreeMap::new();
    for part in wanted.chunks(IN_CHUNK) {
        for row in evidence_raw::Entity::find()
            .filter(evidence_raw::Column::TenantId.eq(tenant))
            .filter(evidence_raw::Column::Sha256.is_in(part.iter().map(|s| s.as_str())))
            .all(conn)
            .await?
        {
            out.insert(row.sha256.clone(), row);
        }
    }
    Ok(out)
}

/// The first checkpoint (signed by this key, or one it took over from)
/// that holds leaf `anchor`, if it came before the export's.
async fn earliest_covering(
    conn: &sea_orm::DatabaseConnection,
    tenant: &str,
    anchor: i64,
    export: &evidence_checkpoint::Model,
    keys: &[&str],
) -> Result<Option<evidence_checkpoint::Model>, DbErr> {
    Ok(checkpoint::all(conn, tenant)
        .await?
        .into_iter()
        .filter(|c| c.size > anchor && c.size <= export.size)
        .find(|c| keys.iter().any(|k| note::verify(&c.note, k).is_ok()))
        .filter(|c| c.size < export.size))
}

/// A file name extension for a media type.
fn extension(media_type: &str) -> &'static str {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    match essence.to_ascii_lowercase().as_str() {
        "application/json" => "json",
        "application/xml" | "text/xml" => "xml",
        "application/x-www-form-urlencoded" => "form.txt",
        "text/plain" => "txt",
        "text/html" => "html",
        "message/rfc822" => "eml",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "audio/amr" => "amr",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

/// A user id shown with its middle hidden: `zh*****n`.
pub fn mask_user_id(user_id: &str) -> String {
    let chars: Vec<char> = user_id.chars().collect();
    match chars.len() {
        0 => String::new(),
        1..=2 => "*".repeat(chars.len()),
        n => {
            let keep = if n > 4 { 2 } else { 1 };
            let mut out: String = chars[..keep].iter().collect();
            out.push_str(&"*".repeat(n - keep - 1));
            out.push(chars[n - 1]);
            out
        }
    }
}

/// The human report (`report.html`): facts gathered here, words in
/// `bot-templates/report.html.j2`.
mod report {
    use super::*;

    pub(super) struct Sources<'a> {
        pub employee: &'a str,
        pub case: Option<&'a absence_case::Model>,
        pub chosen: &'a BTreeMap<u64, Chosen>,
        pub notices: &'a HashMap<String, String>,
        pub raw_paths: &'a HashMap<String, String>,
        pub checkpoint: &'a evidence_checkpoint::Model,
        pub earliest: Option<&'a evidence_checkpoint::Model>,
        pub summary: &'a Summary,
        pub now: DateTime<Utc>,
    }

    #[derive(Serialize, Clone)]
    struct Person {
        name: String,
        /// employee, manager or hr (from the directory); `None` if unknown.
        role: Option<String>,
        is_employee: bool,
    }

    #[derive(Serialize, Clone)]
    struct Event {
        index: u64,
        at: String,
        kind: String,
        case_no: Option<String>,
        actor: Option<Person>,
        recipient: Option<Person>,
        channel: Option<String>,
        step: Option<String>,
        receipt: Option<String>,
        attempt: Option<i64>,
        reason: Option<String>,
        template: Option<TemplateRef>,
        notice: Option<String>,
        raw: Vec<String>,
        detail: Value,
        erased: bool,
        included_as: &'static str,
        #[serde(skip)]
        recorded_at: DateTime<Utc>,
    }

    #[derive(Serialize)]
    struct CaseFacts {
        case_no: String,
        status: String,
        resolution: Option<String>,
        first_missed: String,
        last_missed: String,
        missed_workdays: i32,
        opened_at: String,
        formal_notice_at: Option<String>,
        deadline_at: Option<String>,
        /// When the notice was first proven received, and how
        /// (`acknowledged`, `read:chat`): the deadline runs from it.
        receipt_at: Option<String>,
        receipt_via: Option<String>,
        acknowledged_at: Option<String>,
        resolved_at: Option<String>,
        policy: Policy,
        /// The leaf that snapshotted the policy, when it is in the package.
        policy_leaf: Option<u64>,
        /// Messages that reached the platform, for anyone.
        sent: Vec<Event>,
        /// Those of them for the employee.
        sent_to_employee: Vec<Event>,
        /// Attempts that failed, undeliverable or cancelled messages.
        failures: Vec<Event>,
        manager_contacts: Vec<Event>,
        acknowledgements: Vec<Event>,
        /// Both of the above, in order.
        attestations: Vec<Event>,
        /// For the summary, in order: what reached the employee, the
        /// manager's attestations and what did not go out.
        key_events: Vec<Event>,
        after_deadline: Vec<Event>,
    }

    fn local(zone: Tz, at: DateTime<Utc>) -> String {
        at.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    pub(super) async fn build(
        rt: &Runtime,
        config: &crate::config::TenantConfig,
        s: Sources<'_>,
    ) -> Result<String, ExportError> {
        let conn = &rt.db.orm;
        let zone = config.timezone;

        // The people the package speaks of: the employee and whoever acted
        // in or received a message of the chosen leaves; nobody else.
        let mut ids: BTreeSet<String> = BTreeSet::from([s.employee.to_owned()]);
        for c in s.chosen.values() {
            if let Some(d) = &c.data {
                ids.extend(d.actor.clone());
                ids.extend(recipient_of(d));
            }
        }
        let directory: HashMap<String, employee::Model> = employee::Entity::find()
            .filter(employee::Column::TenantId.eq(&config.id))
            .filter(employee::Column::UserId.is_in(ids.iter().cloned()))
            .all(conn)
            .await?
            .into_iter()
            .map(|e| (e.user_id.clone(), e))
            .collect();
        let person = |user: &str| Person {
            name: directory
                .get(user)
                .map_or_else(|| user.to_owned(), |e| e.name.clone()),
            role: directory.get(user).map(|e| e.role.clone()),
            is_employee: user == s.employee,
        };

        // A message's step is on its queued leaf; its later leaves share the source.
        let steps: HashMap<&str, String> = s
            .chosen
            .values()
            .filter(|c| c.row.kind == "message_queued")
            .filter_map(|c| {
                let d = c.data.as_ref()?;
                Some((
                    c.row.source.as_deref()?,
                    d.detail.get("step")?.as_str()?.to_owned(),
                ))
            })
            .collect();

        let events: Vec<Event> = s
            .chosen
            .values()
            .map(|c| {
                let d = c.data.as_ref();
                let detail = d.map(|d| d.detail.clone()).unwrap_or(Value::Null);
                Event {
                    index: c.row.idx as u64,
                    at: local(zone, c.row.recorded_at),
                    kind: c.row.kind.clone(),
                    case_no: c.row.case_id.map(case_no),
                    actor: d.and_then(|d| d.actor.as_deref()).map(&person),
                    recipient: d.and_then(recipient_of).as_deref().map(&person),
                    channel: d.and_then(|d| d.channel.clone()),
                    step: c
                        .row
                        .source
                        .as_deref()
                        .and_then(|src| steps.get(src).cloned())
                        .or_else(|| {
                            detail
                                .get("step")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        }),
                    receipt: d.and_then(|d| d.platform_ids.get("receipt").cloned()),
                    attempt: detail.get("attempt").and_then(Value::as_i64),
                    reason: detail
                        .get("reason")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    template: d.and_then(|d| d.template.clone()),
                    notice: notice_of(c, s.notices),
                    raw: d
                        .iter()
                        .flat_map(|d| &d.raw)
                        .filter_map(|r| s.raw_paths.get(&r.sha256).cloned())
                        .collect(),
                    detail,
                    erased: d.is_none(),
                    included_as: c.included_as,
                    recorded_at: c.row.recorded_at,
                }
            })
            .collect();

        let cases: Vec<absence_case::Model> = match s.case {
            Some(c) => vec![c.clone()],
            None => {
                absence_case::Entity::find()
                    .filter(absence_case::Column::TenantId.eq(&config.id))
                    .filter(absence_case::Column::UserId.eq(s.employee))
                    .order_by_asc(absence_case::Column::Id)
                    .all(conn)
                    .await?
            }
        };
        let facts: Vec<CaseFacts> = cases
            .iter()
            .map(|c| case_facts(zone, c, s.chosen, &events))
            .collect();

        let mut templates: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e.kind == "message_queued") {
            if let Some(t) = &e.template {
                *templates
                    .entry((t.id.clone(), t.sha256.clone()))
                    .or_default() += 1;
            }
        }
        let templates: Vec<Value> = templates
            .into_iter()
            .map(|((id, sha256), count)| serde_json::json!({ "id": id, "sha256": sha256, "count": count }))
            .collect();

        let me = directory.get(s.employee);
        let context = serde_json::json!({
            "employer": config.name,
            "tenant": config.id,
            "zone": zone.name(),
            "generated_at": local(zone, s.now),
            "employee": {
                "name": me.map(|e| e.name.clone()),
                "department": me.map(|e| e.department.clone()),
                "user_id_masked": mask_user_id(s.employee),
            },
            "scope_case": s.case.map(|c| case_no(c.id)),
            "rule": config.notice.rule,
            "rule_version": config.notice.rule_version,
            "cases": facts,
            "templates": templates,
            "events": events,
            "summary": s.summary,
            "checkpoint": {
                "origin": s.checkpoint.note.lines().next().unwrap_or_default(),
                "size": s.checkpoint.size,
                "root": s.checkpoint.root,
                "signed_at": local(zone, s.checkpoint.created_at),
                "key": rt.signer.verifier_key(),
            },
            "earliest": s.earliest.map(|c| serde_json::json!({
                "size": c.size,
                "root": c.root,
                "signed_at": local(zone, c.created_at),
            })),
        });
        let rendered =
            rt.templates
                .render_for(config.platform(), "report.html", context, &["html"])?;
        Ok(format!("{}\n", rendered.block("html")))
    }

    /// Who a message leaf was for (`detail.recipient`).
    fn recipient_of(d: &LeafData) -> Option<String> {
        d.kind
            .starts_with("message_")
            .then(|| d.detail.get("recipient")?.as_str().map(str::to_owned))
            .flatten()
    }

    /// Leaves of messages (or notices) that did not go out.
    const FAILED: &[&str] = &[
        "message_attempt_failed",
        "message_undeliverable",
        "message_failed",
        "message_cancelled",
        "notice_skipped",
    ];

    fn case_facts(
        zone: Tz,
        c: &absence_case::Model,
        chosen: &BTreeMap<u64, Chosen>,
        events: &[Event],
    ) -> CaseFacts {
        let no = case_no(c.id);
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| e.case_no.as_deref() == Some(no.as_str()))
            .collect();
        let snapshot = chosen
            .values()
            .filter(|l| l.row.case_id == Some(c.id) && l.row.kind == "case_opened")
            .find_map(|l| {
                let policy = l.data.as_ref()?.detail.get("policy")?.clone();
                Some((
                    serde_json::from_value::<Policy>(policy).ok()?,
                    l.row.idx as u64,
                ))
            });
        let of = |kinds: &[&str]| -> Vec<Event> {
            mine.iter()
                .filter(|e| kinds.contains(&e.kind.as_str()))
                .map(|e| (*e).clone())
                .collect()
        };
        let sent: Vec<Event> = of(&["message_sent"]);
        CaseFacts {
            case_no: no.clone(),
            status: c.status.clone(),
            resolution: c.resolution.clone(),
            first_missed: c.first_missed.to_string(),
            last_missed: c.last_missed.to_string(),
            missed_workdays: c.missed_workdays,
            opened_at: local(zone, c.opened_at),
            formal_notice_at: c.formal_notice_at.map(|t| local(zone, t)),
            deadline_at: c.deadline_at.map(|t| local(zone, t)),
            receipt_at: c.receipt_at.map(|t| local(zone, t)),
            receipt_via: c.receipt_via.clone(),
            acknowledged_at: c.acknowledged_at.map(|t| local(zone, t)),
            resolved_at: c.resolved_at.map(|t| local(zone, t)),
            policy_leaf: snapshot.as_ref().map(|(_, i)| *i),
            policy: snapshot.map_or_else(|| store::policy(c), |(p, _)| p),
            sent_to_employee: sent
                .iter()
                .filter(|e| e.recipient.as_ref().is_some_and(|p| p.is_employee))
                .cloned()
                .collect(),
            sent,
            failures: of(FAILED),
            manager_contacts: of(&["manager_contacted"]),
            acknowledgements: of(&["notice_acknowledged"]),
            attestations: of(&["manager_contacted", "notice_acknowledged"]),
            key_events: mine
                .iter()
                .filter(|e| match e.kind.as_str() {
                    "message_sent" => e.recipient.as_ref().is_some_and(|p| p.is_employee),
                    kind => FAILED.contains(&kind) || kind == "manager_contacted",
                })
                .map(|e| (*e).clone())
                .collect(),
            after_deadline: match c.deadline_at {
                Some(deadline) => mine
                    .iter()
                    .filter(|e| e.recorded_at > deadline)
                    .map(|e| (*e).clone())
                    .collect(),
                None => Vec::new(),
            },
        }
    }
}

/// A new file readable and writable by its owner only (0600 on Unix).
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// `dir` and its missing parents, new ones open to their owner only (0700
/// on Unix).
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The checkpoint's RFC 3161 time-stamp, asked for now if it has none and
/// `evidence.tsa_url` is set. A package goes out without one when the
/// authority cannot be reached (the log says so); the checkpoint stays
/// signed either way.
async fn time_stamp<C: sea_orm::ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    signed: &evidence_checkpoint::Model,
) -> Option<Vec<u8>> {
    if let Some(tsr) = &signed.tsr {
        return Some(tsr.clone());
    }
    let url = rt.evidence.tsa_url.as_deref()?;
    match super::tsa::stamp(super::tsa::client(), url, signed.note.as_bytes()).await {
        Ok((tsr, at)) => {
            let stored = evidence_checkpoint::Entity::update_many()
                .col_expr(
                    evidence_checkpoint::Column::Tsr,
                    sea_orm::sea_query::Expr::value(tsr.clone()),
                )
                .col_expr(
                    evidence_checkpoint::Column::StampedAt,
                    sea_orm::sea_query::Expr::value(at),
                )
                .filter(evidence_checkpoint::Column::Id.eq(signed.id))
                .filter(evidence_checkpoint::Column::Tsr.is_null())
                .exec(conn)
                .await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, "keeping a checkpoint's time-stamp failed");
            }
            Some(tsr)
        }
        Err(e) => {
            tracing::warn!(error = %e, size = signed.size, "the package's checkpoint has no time-stamp");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_masked_but_recognisable() {
        assert_eq!(mask_user_id("zhangsan"), "zh*****n");
        assert_eq!(mask_user_id("lisi"), "l**i");
        assert_eq!(mask_user_id("ab"), "**");
        assert_eq!(mask_user_id("张三丰"), "张*丰");
        assert_eq!(mask_user_id(""), "");
    }

    #[test]
    fn media_types_name_their_files() {
        assert_eq!(extension("text/plain; charset=utf-8"), "txt");
        assert_eq!(extension("application/XML"), "xml");
        assert_eq!(extension("message/rfc822"), "eml");
        assert_eq!(extension("application/x-unknown"), "bin");
    }

    fn sample() -> Package {
        let mut files = BTreeMap::new();
        files.insert("a.txt".to_owned(), b"alpha".to_vec());
        files.insert("raw/b.json".to_owned(), b"{}".to_vec());
        Package {
            files,
            summary: Summary {
                tenant: "t".into(),
                employee: "u".into(),
                case: None,
                leaves: 0,
                erased: 0,
                checkpoint_size: 1,
                checkpoint_root: String::new(),
                earliest_checkpoint: None,
                fingerprint: String::new(),
            },
        }
    }

    #[test]
    fn a_package_writes_to_an_empty_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pkg");
        sample().write_dir(&out).unwrap();
        assert_eq!(std::fs::read(out.join("raw/b.json")).unwrap(), b"{}");
        let again = sample().write_dir(&out).unwrap_err();
        assert!(again.to_string().contains("not empty"), "{again}");
    }

    #[test]
    fn a_zip_holds_the_same_files() {
        let zip = sample().to_zip();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 2);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("a.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "alpha");
    }
}
