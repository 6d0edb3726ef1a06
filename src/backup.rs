//! `rollcall backup` and `rollcall restore` of the embedded SQLite database.
//!
//! A backup is a consistent copy taken while the service runs: SQLite's
//! `VACUUM INTO` reads one snapshot (a read transaction: writers go on) and
//! writes it as a new, compact database file, which is then flushed to disk
//! and checked (`PRAGMA integrity_check`). The file holds the check values
//! of the keys it is bound to (`key_check`), never the keys: personal data
//! in it stays sealed, and the key files are backed up apart from it.
//!
//! A restore never overwrites: it copies a checked backup to the configured
//! path, which must not exist, opens it (migrating a backup made by an
//! older version) and checks the configured keys against it. The witness of
//! each tenant's last signed checkpoint (outside the database) may hold a
//! checkpoint the backup does not have: it proves what was lost since the
//! backup, so it is set aside (kept), and the next checkpoint starts a new
//! witness from the restored log.
//!
//! PostgreSQL is backed up with its own tools (`pg_dump`; README, Backups).

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::Utc;
use entity::{evidence_checkpoint, evidence_log};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};

use crate::config::{Config, ProcessEnv};
use crate::db::Database;
use crate::evidence::witness::Witness;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the database is PostgreSQL: back it up with pg_dump (README, \"Backups\"); `rollcall backup` copies the embedded SQLite file"
    )]
    NotSqlite,
    #[error("there is no database file {0}")]
    NoDatabase(PathBuf),
    #[error("{0} exists already: give a new file (a backup never overwrites)")]
    Exists(PathBuf),
    #[error(
        "the database {0} exists: move it aside first, with its -wal and -shm files (a restore never overwrites)"
    )]
    TargetExists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a sound SQLite database: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "the configured keys are not the ones the backup is bound to ({0}); the restored copy was removed, the backup is untouched"
    )]
    Keys(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Orm(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyCheckError),
    #[error(transparent)]
    Witness(#[from] crate::evidence::witness::WitnessError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The keys a database is bound to, as `rollcall keys show` prints them.
#[derive(Debug, Clone)]
pub struct BoundKeys {
    pub data_key_id: String,
    pub data_check_value: String,
    pub evidence_key: String,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub keys: BoundKeys,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub path: PathBuf,
    pub keys: BoundKeys,
    /// Per tenant whose witness held a checkpoint the backup lacks: the
    /// witnessed size, the restored log's size, and where the witness was
    /// set aside.
    pub set_aside: Vec<(String, u64, u64, PathBuf)>,
}

/// The SQLite file of `url`, or [`BackupError::NotSqlite`].
fn sqlite_file(url: &str) -> Result<PathBuf, BackupError> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return Err(BackupError::NotSqlite);
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(options.get_filename().to_path_buf())
}

/// Checks the configured keys against `db` (recording them there if the
/// database has none yet, as every start does).
async fn bound_keys(
    config: &Config,
    db: &Database,
) -> Result<BoundKeys, crate::keys::KeyCheckError> {
    let now = Utc::now();
    let data =
        crate::keys::data_key(&db.orm, &ProcessEnv, &config.server.data_key_file, now).await?;
    let signer = crate::keys::evidence_key(
        &db.orm,
        &ProcessEnv,
        &config.evidence.key_file,
        &config.evidence.name,
        now,
    )
    .await?;
    Ok(BoundKeys {
        data_key_id: data.key_id().to_string(),
        data_check_value: data.check_value().to_string(),
        evidence_key: signer.verifier_key(),
    })
}

/// `PRAGMA integrity_check` of the file at `path`, opened read-only.
fn integrity(path: &Path) -> Result<(), BackupError> {
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| damaged(e.to_string()))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    match verdict.as_str() {
        "ok" => Ok(()),
        other => Err(damaged(other.to_owned())),
    }
}

/// Flushes `path` and the folder that lists it to disk.
fn sync(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

fn sha256_of(path: &Path) -> Result<(u64, String), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// Writes a consistent copy of the configured SQLite database to `out` (a
/// new file, mode 0600), while the service may run.
pub async fn backup(config: &Config, out: &Path) -> Result<Backup, BackupError> {
    let source = sqlite_file(&config.database.url)?;
    if !source.exists() {
        return Err(BackupError::NoDatabase(source));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let db = Database::open(&config.database.url).await?;
    let keys = bound_keys(config, &db).await?;
    // VACUUM INTO writes into an empty file: made first, readable by its
    // owner only (the copy holds what the database holds).
    crate::evidence::export::private_file(out).map_err(io(out))?;
    let written = sqlx::query("VACUUM INTO ?1")
        .bind(out.to_string_lossy().into_owned())
        .execute(db.sqlite())
        .await;
    db.close().await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(out);
        return Err(e.into());
    }
    sync(out)?;
    integrity(out)?;
    let (bytes, sha256) = sha256_of(out)?;
    Ok(Backup {
        path: out.to_path_buf(),
        bytes,
        sha256,
        keys,
    })
}

/// Restores the backup `from` to the configured SQLite path, which must not
/// exist; checks the configured keys against it and sets aside each witness
/// that holds a checkpoint the backup lacks.
pub async fn restore(config: &Config, from: &Path) -> Result<Restored, BackupError> {
    let target = sqlite_file(&config.database.url)?;
    for path in [
        target.clone(),
        with_suffix(&target, "-wal"),
        with_suffix(&target, "-shm"),
    ] {
        if path.exists() {
            return Err(BackupError::TargetExists(target));
        }
    }
    if !from.is_file() {
        return Err(BackupError::NoDatabase(from.to_path_buf()));
    }
    integrity(from)?;
    // Copied beside the target, flushed, then renamed into place: a restore
    // cut off leaves no half-written database under the configured name.
    let partial = with_suffix(&target, ".restoring");
    let _ = std::fs::remove_file(&partial);
    {
        let mut dest = crate::evidence::export::private_file(&partial).map_err(io(&partial))?;
        let mut src = std::fs::File::open(from).map_err(io(from))?;
        std::io::copy(&mut src, &mut dest).map_err(io(&partial))?;
    }
    sync(&partial)?;
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    sync(&target)?;
    let db = Database::open(&config.database.url).await?;
    let keys = match bound_keys(config, &db).await {
        Ok(keys) => keys,
        Err(e) => {
            db.close().await;
            for path in [
                target.clone(),
                with_suffix(&target, "-wal"),
                with_suffix(&target, "-shm"),
            ] {
                let _ = std::fs::remove_file(path);
            }
            return Err(BackupError::Keys(e.to_string()));
        }
    };
    let set_aside = set_aside_lost_witnesses(config, &db).await;
    db.close().await;
    Ok(Restored {
        path: target,
        keys,
        set_aside: set_aside?,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Each tenant's witness whose checkpoint is not in the restored database
/// (signed after the backup) is renamed `….before-restore-<unix time>`.
async fn set_aside_lost_witnesses(
    config: &Config,
    db: &Database,
) -> Result<Vec<(String, u64, u64, PathBuf)>, BackupError> {
    let witness = Witness::new(&config.evidence.witness_dir);
    let mut moved = Vec::new();
    for log in evidence_log::Entity::find().all(&db.orm).await? {
        let Some(witnessed) = witness.read(&log.tenant_id)? else {
            continue;
        };
        let held = evidence_checkpoint::Entity::find()
            .filter(evidence_checkpoint::Column::TenantId.eq(&log.tenant_id))
            .filter(evidence_checkpoint::Column::Size.eq(witnessed.size as i64))
            .filter(evidence_checkpoint::Column::Note.eq(&witnessed.note))
            .one(&db.orm)
            .await?
            .is_some();
        if !held {
            let to = witness.set_aside(
                &log.tenant_id,
                &format!("before-restore-{}", Utc::now().timestamp()),
            )?;
            moved.push((log.tenant_id.clone(), witnessed.size, log.size as u64, to));
        }
    }
    Ok(moved)
}
