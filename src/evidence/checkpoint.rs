//! Signed checkpoints of a tenant's log (C2SP tlog-checkpoint signed notes)
//! and the Ed25519 key that signs them, kept in a file created with mode
//! 0600 on first start.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use entity::{evidence_checkpoint, evidence_leaf, evidence_log};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};

use super::log::head;
use super::merkle::{Frontier, leaf_hash, parse_hash};
use super::note::{NoteError, NoteSigner, checkpoint_text, verify};
use super::witness::{Witness, WitnessError, Witnessed};
use crate::outbox::render::hex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("evidence key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("evidence key file {path}: {source}")]
    Key { path: String, source: NoteError },
    #[error("ROLLCALL_EVIDENCE_KEY must hold a private key (PRIVATE+KEY+<name>+<id>+<key>): {0}")]
    Env(NoteError),
}

/// Reads the signing key from `path`, or creates it there (mode 0600) with
/// a fresh key named `name`. A key file others can read is refused.
pub fn load_or_create_key(path: &Path, name: &str) -> Result<NoteSigner, KeyError> {
    let file_err = |reason: String| KeyError::File {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| file_err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(file_err(format!(
                        "is readable by others (mode {:o}): run chmod 600 on it",
                        mode & 0o777
                    )));
                }
            }
            NoteSigner::from_private_key(text.trim()).map_err(|source| KeyError::Key {
                path: path.display().to_string(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = NoteSigner::generate(name).map_err(|source| KeyError::Key {
                path: path.display().to_string(),
                source,
            })?;
            // Written aside, then linked into place: a process starting at
            // the same moment either links first or reads the whole file.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let mut tmp = tempfile::Builder::new()
                .prefix(".evidence-key")
                .permissions(std::fs::Permissions::from_mode(0o600))
                .tempfile_in(dir.unwrap_or(Path::new(".")))
                .map_err(|e| file_err(e.to_string()))?;
            writeln!(tmp, "{}", signer.private_key())
                .and_then(|_| tmp.as_file().sync_all())
                .map_err(|e| file_err(e.to_string()))?;
            match std::fs::hard_link(tmp.path(), path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), key = %signer.verifier_key(), "created the evidence signing key");
                    Ok(signer)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_key(path, name)
                }
                Err(e) => Err(file_err(e.to_string())),
            }
        }
        Err(e) => Err(file_err(e.to_string())),
    }
}

/// The fingerprint to publish with the key: SHA-256 of the raw public key,
/// hex in groups of four.
pub fn fingerprint(signer: &NoteSigner) -> String {
    let digest = hex(&Sha256::digest(signer.public_key()));
    digest
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The database does not extend what this server signed before: the
    /// checkpoint is not signed, and an operator must look.
    #[error(
        "refusing to sign a checkpoint of `{tenant}`: {reason} (the witness file {witness} holds what was signed before; see README, \"Witnessed checkpoints\")"
    )]
    Refused {
        tenant: String,
        witness: String,
        reason: String,
    },
    #[error(transparent)]
    Witness(#[from] WitnessError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Leaves read at a time while extending the witnessed tree.
const PAGE: u64 = 5_000;

/// Signs a checkpoint of `tenant`'s log as it is now, unless one of that
/// size exists already (then returns it). `None` for an empty log.
///
/// The tree signed is the witness's (see [`super::witness`]) extended by
/// the leaves appended since, each re-hashed from its content; it must give
/// the root of the database's head, and every checkpoint the database holds
/// beyond the witnessed one (signed by another instance) must be a checkpoint
/// of it. Otherwise nothing is signed.
pub async fn checkpoint<C: ConnectionTrait>(
    conn: &C,
    signer: &NoteSigner,
    witness: &Witness,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<Option<evidence_checkpoint::Model>, CheckpointError> {
    let Some(head) = head(conn, tenant).await? else {
        return Ok(None);
    };
    let size = head.frontier.size();
    if size == 0 {
        return Ok(None);
    }
    let refuse = |reason: String| CheckpointError::Refused {
        tenant: tenant.to_owned(),
        witness: witness.dir().display().to_string(),
        reason,
    };
    // The note names the log by the key's name and the tenant: a log row
    // claiming another tenant's origin (or another key's) is not signed.
    let origin = format!("{}/{tenant}", signer.name());
    if head.origin != origin {
        return Err(refuse(format!(
            "the log's stored origin is `{}`, not `{origin}`",
            head.origin
        )));
    }
    // A process started before `keys rotate --evidence` still holds the
    // retired key: it signs nothing more (the database names the key).
    if let Some(bound) = entity::key_check::Entity::find_by_id("evidence".to_owned())
        .one(conn)
        .await?
        && bound.check_value != signer.verifier_key()
    {
        return Err(refuse(format!(
            "this process signs with key {:08x}, but the database is bound to key {} (the key was rotated): restart it with the new key",
            signer.id(),
            bound.key_id
        )));
    }
    // After a key rotation, what was signed before was signed by an older
    // key: believed only through the chain of hand-overs to this one.
    let chain = super::handover::chain(conn, &signer.verifier_key()).await?;
    let keys: Vec<&str> = chain.keys().collect();
    let witnessed = witness.read(tenant)?;
    let mut tree = match &witnessed {
        None => Frontier::default(),
        Some(w) => {
            if w.origin != head.origin {
                return Err(refuse(format!(
                    "the log's origin is `{}` but the witness's is `{}`",
                    head.origin, w.origin
                )));
            }
            if w.size > size {
                return Err(refuse(format!(
                    "the log holds {size} leaves but a checkpoint of {} was signed: leaves were removed",
                    w.size
                )));
            }
            let stored = at_size(conn, tenant, to_i64(w.size)?).await?;
            if stored.as_ref().map(|c| c.note.as_str()) != Some(w.note.as_str()) {
                return Err(refuse(format!(
                    "the checkpoint of {} leaves signed before is missing from the database or altered",
                    w.size
                )));
            }
            let frontier = w
                .frontier()
                .ok_or_else(|| refuse("the witness's frontier does not give its root".into()))?;
            if !keys.iter().any(|k| {
                verify(&w.note, k)
                    .is_ok_and(|t| t == checkpoint_text(&w.origin, w.size, &frontier.root()))
            }) {
                return Err(refuse(format!(
                    "the witnessed checkpoint of {} leaves is not signed by this key or one it took over from",
                    w.size
                )));
            }
            frontier
        }
    };
    // Checkpoints signed beyond the witnessed one (another instance, or
    // before this server kept a witness), each checked on the way.
    let mut signed_since = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .filter(evidence_checkpoint::Column::Size.gt(to_i64(tree.size())?))
        .order_by_asc(evidence_checkpoint::Column::Size)
        .all(conn)
        .await?
        .into_iter()
        .peekable();
    // A checkpoint signed of a longer log than the head says: the log was
    // cut back (unless it grew meanwhile, which a second read tells).
    if let Some(beyond) = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .filter(evidence_checkpoint::Column::Size.gt(to_i64(size)?))
        .order_by_desc(evidence_checkpoint::Column::Size)
        .one(conn)
        .await?
    {
        let now_size = head_size(conn, tenant).await?;
        if now_size < beyond.size {
            return Err(refuse(format!(
                "the log holds {now_size} leaves but a checkpoint of {} was signed: leaves were removed",
                beyond.size
            )));
        }
    }
    let mut known: Option<evidence_checkpoint::Model> = None;
    while tree.size() < size {
        let from = tree.size();
        let to = (from + PAGE).min(size);
        let leaves = evidence_leaf::Entity::find()
            .filter(evidence_leaf::Column::TenantId.eq(tenant))
            .filter(evidence_leaf::Column::Idx.gte(to_i64(from)?))
            .filter(evidence_leaf::Column::Idx.lt(to_i64(to)?))
            .order_by_asc(evidence_leaf::Column::Idx)
            .all(conn)
            .await?;
        for leaf in leaves {
            let index = tree.size();
            if u64::try_from(leaf.idx).ok() != Some(index) {
                return Err(refuse(format!("leaf {index} is missing")));
            }
            let hash = match &leaf.content {
                Some(content) => {
                    let hash = leaf_hash(content.as_bytes());
                    if hex(&hash) != leaf.leaf_hash {
                        return Err(refuse(format!(
                            "leaf {index}'s content does not give its stored hash"
                        )));
                    }
                    hash
                }
                // Erased by privacy forget: only the hash is left.
                None => parse_hash(&leaf.leaf_hash).ok_or_else(|| {
                    refuse(format!("leaf {index}'s stored hash is not a SHA-256"))
                })?,
            };
            tree.push(hash);
            while let Some(c) = signed_since.next_if(|c| c.size <= to_i64(tree.size()).unwrap_or(0))
            {
                if c.size != to_i64(tree.size())? || !signs(&c, &head.origin, &tree, &keys) {
                    return Err(refuse(format!(
                        "the checkpoint of {} leaves in the database is not one of the log's leaves",
                        c.size
                    )));
                }
                known = Some(c);
            }
        }
        if tree.size() < to {
            return Err(refuse(format!("leaf {} is missing", tree.size())));
        }
    }
    if tree.root() != head.frontier.root() {
        return Err(refuse(
            "the log's stored head does not match its leaves".into(),
        ));
    }
    let made = match known.filter(|c| c.size == to_i64(size).unwrap_or(-1)) {
        Some(c) => c,
        None => match &witnessed {
            Some(w) if w.size == size => {
                // Checked above: the database holds the witness's note.
                at_size(conn, tenant, to_i64(size)?)
                    .await?
                    .ok_or_else(|| refuse("the witnessed checkpoint vanished".into()))?
            }
            _ => sign(conn, signer, tenant, &head.origin, &tree, now).await?,
        },
    };
    if !signs(&made, &head.origin, &tree, &keys) {
        return Err(refuse(format!(
            "the checkpoint of {size} leaves in the database is not the one signed now"
        )));
    }
    witness.write(
        tenant,
        &Witnessed::new(&head.origin, &tree, &made.note, now),
    )?;
    Ok(Some(made))
}

async fn head_size<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<i64, DbErr> {
    Ok(evidence_log::Entity::find_by_id(tenant.to_owned())
        .one(conn)
        .await?
        .map_or(0, |l| l.size))
}

fn to_i64(n: u64) -> Result<i64, DbErr> {
    i64::try_from(n).map_err(|_| DbErr::Custom("log too large".into()))
}

/// Whether `c` is a checkpoint, under one of `keys` (the signing key and
/// those it took over from), of `tree` as it is.
fn signs(c: &evidence_checkpoint::Model, origin: &str, tree: &Frontier, keys: &[&str]) -> bool {
    let text = checkpoint_text(origin, tree.size(), &tree.root());
    c.root == hex(&tree.root())
        && keys
            .iter()
            .any(|k| verify(&c.note, k).is_ok_and(|t| t == text))
}

async fn sign<C: ConnectionTrait>(
    conn: &C,
    signer: &NoteSigner,
    tenant: &str,
    origin: &str,
    tree: &Frontier,
    now: DateTime<Utc>,
) -> Result<evidence_checkpoint::Model, CheckpointError> {
    let root = tree.root();
    let size = to_i64(tree.size())?;
    let note = signer
        .sign(&checkpoint_text(origin, tree.size(), &root))
        .map_err(|e| DbErr::Custom(format!("signing a checkpoint: {e}")))?;
    // Two instances may sign the same size: the same key signs the same
    // text to the same note (Ed25519 is deterministic), and one row stays.
    evidence_checkpoint::Entity::insert(evidence_checkpoint::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        size: Set(size),
        root: Set(hex(&root)),
        note: Set(note),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([
            evidence_checkpoint::Column::TenantId,
            evidence_checkpoint::Column::Size,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(at_size(conn, tenant, size)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("the checkpoint of {size} just signed")))?)
}

async fn at_size<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    size: i64,
) -> Result<Option<evidence_checkpoint::Model>, DbErr> {
    evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .filter(evidence_checkpoint::Column::Size.eq(size))
        .one(conn)
        .await
}

/// Every checkpoint of `tenant`, oldest first.
pub async fn all<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
) -> Result<Vec<evidence_checkpoint::Model>, DbErr> {
    evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .order_by_asc(evidence_checkpoint::Column::Size)
        .all(conn)
        .await
}

/// Signs a checkpoint for every log that grew since its last one, if that
/// one is at least `every` old (or there is none). Returns how many; a log
/// that cannot be signed is logged as an error and the others go on.
pub async fn sign_due<C: ConnectionTrait>(
    conn: &C,
    signer: &NoteSigner,
    witness: &Witness,
    every: Duration,
    now: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let logs = evidence_log::Entity::find()
        .filter(evidence_log::Column::Size.gt(0))
        .all(conn)
        .await?;
    let mut signed = 0;
    for log in logs {
        let last = evidence_checkpoint::Entity::find()
            .filter(evidence_checkpoint::Column::TenantId.eq(&log.tenant_id))
            .order_by_desc(evidence_checkpoint::Column::Size)
            .one(conn)
            .await?;
        let due = match &last {
            None => true,
            Some(c) => c.size < log.size && c.created_at + every <= now,
        };
        if !due {
            continue;
        }
        match checkpoint(conn, signer, witness, &log.tenant_id, now).await {
            Ok(Some(_)) => signed += 1,
            Ok(None) => {}
            Err(CheckpointError::Db(e)) => return Err(e),
            Err(e) => {
                tracing::error!(tenant = %log.tenant_id, error = %e, "evidence checkpoint not signed")
            }
        }
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.key");
        let made = load_or_create_key(&path, "rollcall").unwrap();
        let again = load_or_create_key(&path, "ignored").unwrap();
        assert_eq!(made.verifier_key(), again.verifier_key());
        assert_eq!(again.name(), "rollcall");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_or_create_key(&path, "rollcall").unwrap_err();
            assert!(err.to_string().contains("readable by others"), "{err}");
        }
        assert_eq!(fingerprint(&made).len(), 64 + 15);
    }
}
