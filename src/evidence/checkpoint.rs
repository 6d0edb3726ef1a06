//! Signed checkpoints of a tenant's log (C2SP tlog-checkpoint signed notes)
//! and the Ed25519 key that signs them, kept in a file created with mode
//! 0600 on first start.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use entity::{evidence_checkpoint, evidence_log};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};

use super::log::head;
use super::note::{NoteError, NoteSigner, checkpoint_text};
use crate::outbox::render::hex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("evidence key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("evidence key file {path}: {source}")]
    Key { path: String, source: NoteError },
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

/// Signs a checkpoint of `tenant`'s log as it is now, unless one of that
/// size exists already (then returns it). `None` for an empty log.
pub async fn checkpoint<C: ConnectionTrait>(
    conn: &C,
    signer: &NoteSigner,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<Option<evidence_checkpoint::Model>, DbErr> {
    let Some(head) = head(conn, tenant).await? else {
        return Ok(None);
    };
    let size = head.frontier.size();
    if size == 0 {
        return Ok(None);
    }
    let size_i = i64::try_from(size).map_err(|_| DbErr::Custom("log too large".into()))?;
    if let Some(existing) = at_size(conn, tenant, size_i).await? {
        return Ok(Some(existing));
    }
    let root = head.frontier.root();
    let note = signer
        .sign(&checkpoint_text(&head.origin, size, &root))
        .map_err(|e| DbErr::Custom(format!("signing a checkpoint: {e}")))?;
    // Two instances may sign the same size: the same key signs the same
    // text to the same note (Ed25519 is deterministic), and one row stays.
    evidence_checkpoint::Entity::insert(evidence_checkpoint::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        size: Set(size_i),
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
    at_size(conn, tenant, size_i).await
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
/// one is at least `every` old (or there is none). Returns how many.
pub async fn sign_due<C: ConnectionTrait>(
    conn: &C,
    signer: &NoteSigner,
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
        if due
            && checkpoint(conn, signer, &log.tenant_id, now)
                .await?
                .is_some()
        {
            signed += 1;
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
