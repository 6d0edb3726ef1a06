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
    #[error("{0}: give a path in UTF-8")]
    NotUtf8(PathBuf),
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

/// The keys a database is bound to: its `key_checks` rows, purpose → (key
/// id, check value), as `rollcall keys show` prints them.
#[derive(Debug, Clone, Default)]
pub struct BoundKeys(pub Vec<(String, String, String)>);

impl std::fmt::Display for BoundKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no keys recorded yet");
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(purpose, id, check)| format!("{purpose} key {id} (check value {check})"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// The `key_checks` of the SQLite file at `path`, read without writing.
fn recorded_keys(path: &Path) -> Result<BoundKeys, BackupError> {
    let damaged = |e: rusqlite::Error| BackupError::Damaged {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(damaged)?;
    let mut stmt = conn
        .prepare("SELECT purpose, key_id, check_value FROM key_checks ORDER BY purpose")
        .map_err(damaged)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(damaged)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(damaged)?;
    Ok(BoundKeys(rows))
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
    // An empty file passes the check: a database has pages.
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if pages == 0 {
        return Err(damaged("it is empty".into()));
    }
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
/// new file, mode 0600), while the service may run. The database is read,
/// never written (no migration, no key recorded).
pub async fn backup(config: &Config, out: &Path) -> Result<Backup, BackupError> {
    let source = sqlite_file(&config.database.url)?;
    if !source.exists() {
        return Err(BackupError::NoDatabase(source));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let out_text = out
        .to_str()
        .ok_or_else(|| BackupError::NotUtf8(out.to_path_buf()))?
        .to_owned();
    let db = Database::connect(&config.database.url).await?;
    // VACUUM INTO writes into an empty file: made first, readable by its
    // owner only (the copy holds what the database holds).
    crate::evidence::export::private_file(out).map_err(io(out))?;
    let written = sqlx::query("VACUUM INTO ?1")
        .bind(out_text)
        .execute(db.sqlite())
        .await;
    db.close().await;
    let checked = match written {
        Err(e) => Err(e.into()),
        Ok(_) => sync(out)
            .and_then(|()| integrity(out))
            .and_then(|()| recorded_keys(out))
            .and_then(|keys| sha256_of(out).map(|sum| (keys, sum))),
    };
    match checked {
        Ok((keys, (bytes, sha256))) => Ok(Backup {
            path: out.to_path_buf(),
            bytes,
            sha256,
            keys,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}

/// Restores the backup `from` to the configured SQLite path, which must not
/// exist; checks the configured keys against it and sets aside each witness
/// that holds a checkpoint the backup lacks. On any failure nothing is left
/// under the configured name.
pub async fn restore(config: &Config, from: &Path) -> Result<Restored, BackupError> {
    let target = sqlite_file(&config.database.url)?;
    let family = |p: &Path| {
        [
            p.to_path_buf(),
            with_suffix(p, "-wal"),
            with_suffix(p, "-shm"),
        ]
    };
    if family(&target).iter().any(|p| p.exists()) {
        return Err(BackupError::TargetExists(target));
    }
    if !from.is_file() {
        return Err(BackupError::NoDatabase(from.to_path_buf()));
    }
    // A copy of a live database whose last commits are still in its -wal
    // file would lose them.
    if std::fs::metadata(with_suffix(from, "-wal")).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError::Damaged {
            path: from.to_path_buf(),
            reason: "it has a -wal file beside it with commits not in it: make backups with `rollcall backup`".into(),
        });
    }
    // Copied beside the target, flushed and checked, then linked into place
    // (never over a file that appeared meanwhile).
    let partial = with_suffix(&target, ".restoring");
    let _ = std::fs::remove_file(&partial);
    let copied = (|| {
        let mut dest = crate::evidence::export::private_file(&partial).map_err(io(&partial))?;
        let mut src = std::fs::File::open(from).map_err(io(from))?;
        std::io::copy(&mut src, &mut dest).map_err(io(&partial))?;
        drop(dest);
        sync(&partial)?;
        integrity(&partial)?;
        std::fs::hard_link(&partial, &target).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::TargetExists(target.clone()),
            _ => BackupError::Io {
                path: target.clone(),
                source: e,
            },
        })
    })();
    let _ = std::fs::remove_file(&partial);
    copied?;
    match opened(config, &target).await {
        Ok(restored) => Ok(restored),
        Err(e) => {
            for path in family(&target) {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// Opens the restored file (migrating a backup of an older version), checks
/// the configured keys and sets aside the witnesses it contradicts.
async fn opened(config: &Config, target: &Path) -> Result<Restored, BackupError> {
    sync(target)?;
    let db = Database::open(&config.database.url).await?;
    if let Err(e) = crate::keys::configured(&db.orm, config, &ProcessEnv, Utc::now()).await {
        db.close().await;
        return Err(BackupError::Keys(e.to_string()));
    }
    let set_aside = set_aside_lost_witnesses(config, &db).await;
    db.close().await;
    Ok(Restored {
        path: target.to_path_buf(),
        keys: recorded_keys(target)?,
        set_aside: set_aside?,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Each tenant's witness whose checkpoint is not in the restored database
/// (signed after the backup, or of a log the backup does not have) is
/// renamed `….before-restore-<time>`.
async fn set_aside_lost_witnesses(
    config: &Config,
    db: &Database,
) -> Result<Vec<(String, u64, u64, PathBuf)>, BackupError> {
    let witness = Witness::new(&config.evidence.witness_dir);
    let mut moved = Vec::new();
    for tenant in witness.tenants()? {
        let Some(witnessed) = witness.read(&tenant)? else {
            continue;
        };
        let held = evidence_checkpoint::Entity::find()
            .filter(evidence_checkpoint::Column::TenantId.eq(&tenant))
            .filter(evidence_checkpoint::Column::Size.eq(witnessed.size as i64))
            .filter(evidence_checkpoint::Column::Note.eq(&witnessed.note))
            .one(&db.orm)
            .await?
            .is_some();
        if !held {
            let size = evidence_log::Entity::find_by_id(tenant.clone())
                .one(&db.orm)
                .await?
                .map_or(0, |l| l.size as u64);
            let suffix = format!("before-restore-{}", Utc::now().format("%Y%m%dT%H%M%S%.6fZ"));
            let to = witness.set_aside(&tenant, &suffix)?;
            moved.push((tenant, witnessed.size, size, to));
        }
    }
    Ok(moved)
}
