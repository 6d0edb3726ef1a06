//! The keys a database is bound to. The database records each key's check
//! value (`key_checks`): the data key that seals personal data (an HMAC
//! check value, which reveals nothing of it) and the evidence key that
//! signs checkpoints (its public verifier key). A start with another key is
//! refused, and a key file that went missing is never silently made anew
//! while the database names the old one. The first start records the keys,
//! after checking that they open what is already sealed and verify what is
//! already signed (a database from before this check).
//!
//! `rollcall keys show` prints both; `rollcall keys rotate` re-seals every
//! sealed value under a new data key in one transaction, and `rollcall keys
//! rotate --evidence` starts a new signing key with a hand-over signed by
//! the old key and the new (see [`crate::evidence::handover`]).

pub mod cli;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use entity::{employee, evidence_checkpoint, evidence_log, key_check};
use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, TransactionTrait,
};

use crate::config::Env;
use crate::employees::SealedColumn;
use crate::evidence::checkpoint::{KeyError, load_or_create_key};
use crate::evidence::handover::{self, Covered, Handover};
use crate::evidence::note::{self, NoteSigner};
use crate::evidence::witness::Witness;
use crate::evidence::{NewLeaf, append_one};
use crate::sealed::{DataKey, DataKeyError, KeySource};

const DATA: &str = "data";
const EVIDENCE: &str = "evidence";

#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error(
        "no data key at {path}, but this database was sealed with data key {id}: restore that key file from its backup (a new key would not open the sealed phone numbers and contacts)"
    )]
    DataMissing { path: String, id: String },
    #[error(
        "the data key {source_name} (key {found}) is not the one this database was sealed with (key {expected}, check value {check}): {hint}"
    )]
    DataMismatch {
        source_name: String,
        found: String,
        expected: String,
        check: String,
        hint: String,
    },
    #[error(
        "no evidence key at {path}, but this database's checkpoints are signed by {key}: restore that key file from its backup, or give the key in ROLLCALL_EVIDENCE_KEY (a new key would break the chain of signed checkpoints)"
    )]
    EvidenceMissing { path: String, key: String },
    #[error(
        "the evidence key {path} ({found}) is not the one this database's checkpoints are signed by ({expected}): restore that key file"
    )]
    EvidenceMismatch {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "the evidence key from ROLLCALL_EVIDENCE_KEY ({found}) is not the one this database's checkpoints are signed by ({expected}){retired}: give every instance that key"
    )]
    EvidenceEnvMismatch {
        found: String,
        expected: String,
        /// Empty, or when a rotation retired the key found.
        retired: String,
    },
    #[error(
        "the evidence key {path} ({found}) was retired by a key rotation at {at}: this database's checkpoints are now signed by {expected}; put that key back in {path} (the rotation left the old one beside it as .retired-<id>)"
    )]
    EvidenceRetired {
        path: String,
        found: String,
        at: String,
        expected: String,
    },
    #[error(transparent)]
    DataKey(#[from] DataKeyError),
    #[error(transparent)]
    EvidenceKey(#[from] KeyError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

async fn recorded<C: ConnectionTrait>(
    conn: &C,
    purpose: &str,
) -> Result<Option<key_check::Model>, DbErr> {
    key_check::Entity::find_by_id(purpose.to_owned())
        .one(conn)
        .await
}

/// Records `check` for `purpose` unless one is recorded already (another
/// instance's, at the same moment); returns what is recorded.
async fn record<C: ConnectionTrait>(
    conn: &C,
    purpose: &str,
    key_id: &str,
    check: &str,
    now: DateTime<Utc>,
) -> Result<key_check::Model, DbErr> {
    key_check::Entity::insert(key_check::ActiveModel {
        purpose: Set(purpose.to_owned()),
        key_id: Set(key_id.to_owned()),
        check_value: Set(check.to_owned()),
        recorded_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(key_check::Column::Purpose)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    recorded(conn, purpose)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("the {purpose} key check just recorded")))
}

/// Where a rotation writes the new data key before it is committed.
pub fn pending_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Where a rotation keeps the old data key (backups sealed with it need it).
pub fn retired_path(key_file: &Path, key_id: &str) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(format!(".retired-{key_id}"));
    PathBuf::from(name)
}

/// The data key, checked against the database (and recorded there on the
/// first start). Finishes a rotation whose transaction committed but whose
/// files were not yet swapped.
pub async fn data_key<C: ConnectionTrait>(
    conn: &C,
    env: &(dyn Env + Sync),
    key_file: &Path,
    now: DateTime<Utc>,
) -> Result<DataKey, KeyCheckError> {
    let expected = recorded(conn, DATA).await?;
    let (key, source) = match DataKey::read(env, key_file)? {
        Some(found) => found,
        None => match &expected {
            // A rotation stopped between moving the old key aside and the
            // new one into place: the pending key is the recorded one.
            Some(r) if pending_matches(key_file, &r.check_value)? => {
                let pending = pending_path(key_file);
                std::fs::rename(&pending, key_file).map_err(|e| DataKeyError::File {
                    path: key_file.display().to_string(),
                    reason: e.to_string(),
                })?;
                tracing::warn!("finished a data key rotation that stopped between its two renames");
                (
                    DataKey::read(&NoEnv, key_file)?.expect("just renamed").0,
                    KeySource::File,
                )
            }
            Some(r) => {
                return Err(KeyCheckError::DataMissing {
                    path: key_file.display().to_string(),
                    id: r.key_id.clone(),
                });
            }
            // Values sealed already (a database from before this check):
            // a new key would not open them.
            None if first_sealed(conn).await?.is_some() => {
                return Err(KeyCheckError::DataMissing {
                    path: key_file.display().to_string(),
                    id: "(not recorded: sealed values exist)".to_owned(),
                });
            }
            None => (DataKey::create(key_file)?, KeySource::File),
        },
    };
    let expected = match expected {
        Some(r) => r,
        None => {
            if let Some((column, context, sealed)) = first_sealed(conn).await?
                && key.open(&sealed, &context).is_err()
            {
                return Err(mismatch(
                    &key,
                    source,
                    key_file,
                    "(not yet recorded)",
                    "",
                    &format!(
                        "it does not open the sealed {} already stored; restore the key they were sealed with",
                        column.name()
                    ),
                ));
            }
            record(conn, DATA, key.key_id(), key.check_value(), now).await?
        }
    };
    if expected.check_value == key.check_value() {
        return Ok(key);
    }
    // A rotation committed, and stopped before the files were swapped.
    let pending = pending_path(key_file);
    if source == KeySource::File
        && let Some((new, _)) = DataKey::read(&NoEnv, &pending)?
        && new.check_value() == expected.check_value
    {
        finish_swap(key_file, &key, &pending)?;
        tracing::warn!(key = %new.key_id(), "finished a data key rotation that stopped before its files were swapped");
        return Ok(new);
    }
    Err(mismatch(
        &key,
        source,
        key_file,
        &expected.key_id,
        &expected.check_value,
        "restore the key it was sealed with (starting with another would leave the sealed phone numbers and contacts unreadable)",
    ))
}

/// Whether a rotation's pending key file holds the key `check` names.
fn pending_matches(key_file: &Path, check: &str) -> Result<bool, DataKeyError> {
    Ok(DataKey::read(&NoEnv, &pending_path(key_file))?
        .is_some_and(|(k, _)| k.check_value() == check))
}

fn mismatch(
    key: &DataKey,
    source: KeySource,
    key_file: &Path,
    expected: &str,
    check: &str,
    hint: &str,
) -> KeyCheckError {
    KeyCheckError::DataMismatch {
        source_name: match source {
            KeySource::Env => "from ROLLCALL_DATA_KEY".to_owned(),
            KeySource::File => format!("in {}", key_file.display()),
        },
        found: key.key_id().to_owned(),
        expected: expected.to_owned(),
        check: check.to_owned(),
        hint: hint.to_owned(),
    }
}

/// Some value already sealed, with its column and context.
async fn first_sealed<C: ConnectionTrait>(
    conn: &C,
) -> Result<Option<(SealedColumn, String, String)>, DbErr> {
    let Some(row) = employee::Entity::find()
        .filter(
            employee::Column::PhoneSealed
                .is_not_null()
                .or(employee::Column::EmergencyContactNameSealed.is_not_null())
                .or(employee::Column::EmergencyContactPhoneSealed.is_not_null())
                .or(employee::Column::PostalAddressSealed.is_not_null()),
        )
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(sealed_values(&row).into_iter().next().map(|(c, v)| {
        let context = c.context(&row.tenant_id, &row.user_id);
        (c, context, v)
    }))
}

fn sealed_values(row: &employee::Model) -> Vec<(SealedColumn, String)> {
    [
        (SealedColumn::Phone, &row.phone_sealed),
        (
            SealedColumn::EmergencyContactName,
            &row.emergency_contact_name_sealed,
        ),
        (
            SealedColumn::EmergencyContactPhone,
            &row.emergency_contact_phone_sealed,
        ),
        (SealedColumn::PostalAddress, &row.postal_address_sealed),
    ]
    .into_iter()
    .filter_map(|(c, v)| v.clone().map(|v| (c, v)))
    .collect()
}

/// The variable that gives the evidence key instead of `evidence.key_file`.
pub const EVIDENCE_KEY_ENV: &str = "ROLLCALL_EVIDENCE_KEY";

/// The evidence signing key given in `ROLLCALL_EVIDENCE_KEY` (the private
/// key text a key file holds), if any: several hosts then share one key
/// without copying files.
pub fn evidence_key_from_env(env: &(dyn Env + Sync)) -> Result<Option<NoteSigner>, KeyError> {
    env.var(EVIDENCE_KEY_ENV)
        .map(|text| NoteSigner::from_private_key(text.trim()).map_err(KeyError::Env))
        .transpose()
}

/// Both keys of `config` (data and evidence), each checked against the
/// database as [`data_key`] and [`evidence_key`] do: what a start, `rollcall
/// keys show` and a restore check.
pub async fn configured<C: ConnectionTrait>(
    conn: &C,
    config: &crate::config::Config,
    env: &(dyn Env + Sync),
    now: DateTime<Utc>,
) -> Result<(DataKey, NoteSigner), KeyCheckError> {
    let data = data_key(conn, env, &config.server.data_key_file, now).await?;
    let signer = evidence_key(
        conn,
        env,
        &config.evidence.key_file,
        &config.evidence.name,
        now,
    )
    .await?;
    Ok((data, signer))
}

/// The evidence signing key, `ROLLCALL_EVIDENCE_KEY` if set (no file is
/// then read or created), else the key file; checked against the database
/// (and recorded there on the first start, after checking that it verifies
/// the checkpoints already signed).
pub async fn evidence_key<C: ConnectionTrait>(
    conn: &C,
    env: &(dyn Env + Sync),
    key_file: &Path,
    name: &str,
    now: DateTime<Utc>,
) -> Result<NoteSigner, KeyCheckError> {
    if let Some(signer) = evidence_key_from_env(env)? {
        return checked_env_evidence_key(conn, signer, now).await;
    }
    let expected = recorded(conn, EVIDENCE).await?;
    if let Some(r) = &expected
        && !key_file.exists()
    {
        // A rotation stopped between moving the old key aside and the new
        // one into place: the pending key is the recorded one.
        let pending = pending_path(key_file);
        if pending.exists() && load_or_create_key(&pending, name)?.verifier_key() == r.check_value {
            std::fs::rename(&pending, key_file)
                .and_then(|()| sync_dir(key_file))
                .map_err(|e| KeyError::File {
                    path: key_file.display().to_string(),
                    reason: e.to_string(),
                })?;
            tracing::warn!(
                "finished an evidence key rotation that stopped between its two renames"
            );
            return Ok(load_or_create_key(key_file, name)?);
        }
        return Err(KeyCheckError::EvidenceMissing {
            path: key_file.display().to_string(),
            key: r.check_value.clone(),
        });
    }
    let signer = load_or_create_key(key_file, name)?;
    let found = signer.verifier_key();
    let mismatch = |expected: String| KeyCheckError::EvidenceMismatch {
        path: key_file.display().to_string(),
        found: found.clone(),
        expected,
    };
    let expected = match expected {
        Some(r) => r,
        None => {
            let last = evidence_checkpoint::Entity::find()
                .order_by_desc(evidence_checkpoint::Column::CreatedAt)
                .one(conn)
                .await?;
            if let Some(c) = last
                && note::verify(&c.note, &found).is_err()
            {
                return Err(mismatch(format!(
                    "the key of the checkpoint of {} leaves of `{}`",
                    c.size, c.tenant_id
                )));
            }
            let id = format!("{:08x}", signer.id());
            record(conn, EVIDENCE, &id, &found, now).await?
        }
    };
    if expected.check_value == found {
        return Ok(signer);
    }
    // A rotation committed, and stopped before the files were swapped.
    let pending = pending_path(key_file);
    if pending.exists() {
        let new = load_or_create_key(&pending, name)?;
        if new.verifier_key() == expected.check_value {
            swap_files(
                key_file,
                &evidence_retired_path(key_file, &signer),
                &pending,
            )
            .map_err(|e| KeyError::File {
                path: key_file.display().to_string(),
                reason: e.to_string(),
            })?;
            tracing::warn!(key = %format!("{:08x}", new.id()), "finished an evidence key rotation that stopped before its files were swapped");
            return Ok(new);
        }
    }
    let chain = handover::chain(conn, &expected.check_value).await?;
    if let Some(h) = chain.retiring(&found) {
        return Err(KeyCheckError::EvidenceRetired {
            path: key_file.display().to_string(),
            found: found.clone(),
            at: h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expected: expected.check_value,
        });
    }
    Err(mismatch(expected.check_value))
}

/// The evidence key from the environment, checked like a key file's (a
/// rotation's files play no part: an environment key is not rotated here).
async fn checked_env_evidence_key<C: ConnectionTrait>(
    conn: &C,
    signer: NoteSigner,
    now: DateTime<Utc>,
) -> Result<NoteSigner, KeyCheckError> {
    let found = signer.verifier_key();
    let expected = match recorded(conn, EVIDENCE).await? {
        Some(r) => r,
        None => {
            let last = evidence_checkpoint::Entity::find()
                .order_by_desc(evidence_checkpoint::Column::CreatedAt)
                .one(conn)
                .await?;
            if let Some(c) = last
                && note::verify(&c.note, &found).is_err()
            {
                return Err(KeyCheckError::EvidenceEnvMismatch {
                    found,
                    expected: format!(
                        "the key of the checkpoint of {} leaves of `{}`",
                        c.size, c.tenant_id
                    ),
                    retired: String::new(),
                });
            }
            let id = format!("{:08x}", signer.id());
            record(conn, EVIDENCE, &id, &found, now).await?
        }
    };
    if expected.check_value == found {
        return Ok(signer);
    }
    let chain = handover::chain(conn, &expected.check_value).await?;
    let retired = chain
        .retiring(&found)
        .map(|h| {
            format!(
                " (it was retired by a key rotation at {})",
                h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    Err(KeyCheckError::EvidenceEnvMismatch {
        found,
        expected: expected.check_value,
        retired,
    })
}

/// Where a rotation keeps the old evidence key.
pub fn evidence_retired_path(key_file: &Path, old: &NoteSigner) -> PathBuf {
    retired_path(key_file, &format!("{:08x}", old.id()))
}

/// Where a rotation writes its hand-over, beside the key file.
pub fn handover_path(key_file: &Path, old: &NoteSigner, new: &NoteSigner) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(format!(".handover-{:08x}-{:08x}", old.id(), new.id()));
    PathBuf::from(name)
}

/// No environment: a rotation's pending key is only ever a file.
struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Moves the old key aside (kept: backups sealed with it need it) and the
/// new key into place, then makes the renames durable.
fn finish_swap(key_file: &Path, old: &DataKey, pending: &Path) -> Result<(), DataKeyError> {
    swap_files(key_file, &retired_path(key_file, old.key_id()), pending).map_err(|e| {
        DataKeyError::File {
            path: key_file.display().to_string(),
            reason: e.to_string(),
        }
    })
}

/// Renames `key_file` to `retired` and `pending` to `key_file`, then makes
/// the renames durable.
fn swap_files(key_file: &Path, retired: &Path, pending: &Path) -> std::io::Result<()> {
    std::fs::rename(key_file, retired)?;
    std::fs::rename(pending, key_file)?;
    sync_dir(key_file)
}

/// Makes renames and new files beside `file` durable.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub old_id: String,
    pub new_id: String,
    pub values: usize,
    pub retired: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "the data key comes from ROLLCALL_DATA_KEY: rotating it needs a key file (unset the variable and give server.data_key_file)"
    )]
    EnvKey,
    #[error("{0}: a sealed value does not open with the current key; nothing was changed")]
    Unreadable(String),
    #[error(transparent)]
    Check(#[from] KeyCheckError),
    #[error(transparent)]
    DataKey(#[from] DataKeyError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Re-seals every sealed value under a new data key, in one transaction
/// that also records the new key's check value and a `data_key_rotated`
/// leaf in each tenant's log; then swaps the key files (the old one is
/// kept as `{key_file}.retired-{id}`). A rotation stopped after its
/// transaction is finished by the next start (see [`data_key`]); one
/// stopped before it left `{key_file}.new`, which the next rotation reuses.
pub async fn rotate_data_key(
    conn: &DatabaseConnection,
    env: &(dyn Env + Sync),
    key_file: &Path,
    now: DateTime<Utc>,
) -> Result<Rotated, RotateError> {
    if env.var("ROLLCALL_DATA_KEY").is_some() {
        return Err(RotateError::EnvKey);
    }
    let old = data_key(conn, env, key_file, now).await?;
    let pending = pending_path(key_file);
    let new = match DataKey::read(&NoEnv, &pending)? {
        Some((key, _)) => key,
        None => DataKey::create(&pending)?,
    };
    let txn = conn.begin().await?;
    let rows = employee::Entity::find()
        .order_by_asc(employee::Column::Id)
        .all(&txn)
        .await?;
    let mut values = 0;
    for row in rows {
        let sealed = sealed_values(&row);
        if sealed.is_empty() {
            continue;
        }
        let mut update = employee::ActiveModel {
            id: Set(row.id),
            ..Default::default()
        };
        for (column, value) in sealed {
            let context = column.context(&row.tenant_id, &row.user_id);
            let plain = old.open(&value, &context).map_err(|_| {
                RotateError::Unreadable(format!(
                    "employee {} of {}, {}",
                    row.user_id,
                    row.tenant_id,
                    column.name()
                ))
            })?;
            let resealed = Some(new.seal(&plain, &context));
            match column {
                SealedColumn::Phone => update.phone_sealed = Set(resealed),
                SealedColumn::EmergencyContactName => {
                    update.emergency_contact_name_sealed = Set(resealed)
                }
                SealedColumn::EmergencyContactPhone => {
                    update.emergency_contact_phone_sealed = Set(resealed)
                }
                SealedColumn::PostalAddress => update.postal_address_sealed = Set(resealed),
            }
            values += 1;
        }
        employee::Entity::update(update).exec(&txn).await?;
    }
    // Secrets of messages not sent yet (one-time download tokens).
    let waiting = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::SecretSealed.is_not_null())
        .all(&txn)
        .await?;
    for row in waiting {
        let Some(sealed) = &row.secret_sealed else {
            continue;
        };
        let context = crate::outbox::secret_context(&row.tenant_id, &row.idem_key);
        let plain = old
            .open(sealed, &context)
            .map_err(|_| RotateError::Unreadable(format!("the secret of outbox/{}", row.id)))?;
        entity::outbox::Entity::update(entity::outbox::ActiveModel {
            id: Set(row.id),
            secret_sealed: Set(Some(new.seal(&plain, &context))),
            ..Default::default()
        })
        .exec(&txn)
        .await?;
        values += 1;
    }
    key_check::Entity::update(key_check::ActiveModel {
        purpose: Set(DATA.to_owned()),
        key_id: Set(new.key_id().to_owned()),
        check_value: Set(new.check_value().to_owned()),
        recorded_at: Set(now),
    })
    .exec(&txn)
    .await?;
    let tenants: Vec<String> = evidence_log::Entity::find()
        .all(&txn)
        .await?
        .into_iter()
        .map(|l| l.tenant_id)
        .collect();
    for tenant in tenants {
        append_one(
            &txn,
            &tenant,
            now,
            NewLeaf::new("data_key_rotated").detail(serde_json::json!({
                "old_key_id": old.key_id(),
                "new_key_id": new.key_id(),
                "new_check_value": new.check_value(),
                "values_resealed": values,
            })),
        )
        .await?;
    }
    txn.commit().await?;
    finish_swap(key_file, &old, &pending)?;
    Ok(Rotated {
        old_id: old.key_id().to_owned(),
        new_id: new.key_id().to_owned(),
        values,
        retired: retired_path(key_file, old.key_id()),
    })
}

/// What an evidence key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRotated {
    pub old_key: String,
    pub new_key: String,
    /// The signed hand-over, as stored and written beside the key file.
    pub handover: String,
    pub handover_file: PathBuf,
    pub retired: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceRotateError {
    #[error(
        "the evidence key comes from ROLLCALL_EVIDENCE_KEY: rotating it needs a key file (unset the variable and give evidence.key_file, then give every instance the new key)"
    )]
    EnvKey,
    #[error(
        "the pending evidence key {path} is named `{found}`, not `{expected}`: the logs are named after the key (remove it and rotate again)"
    )]
    PendingName {
        path: String,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Check(#[from] KeyCheckError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Checkpoint(#[from] crate::evidence::checkpoint::CheckpointError),
    #[error("signing the hand-over: {0}")]
    Sign(#[from] crate::evidence::note::NoteError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Starts a new evidence signing key. Every tenant's log first gets an
/// `evidence_key_rotated` leaf naming both keys and a checkpoint signed by
/// the old key (checked against the witness like any other), so that the
/// old key's last checkpoints cover the whole log; then both keys sign a
/// hand-over naming those checkpoints ([`handover`]), which is stored in
/// the same transaction that moves `key_checks` to the new key, and written
/// beside the key file. The old key is kept as `{key_file}.retired-{id}`.
/// Stop the service first: a running one holds the old key. Refused when
/// the key comes from `ROLLCALL_EVIDENCE_KEY`: the new key could only be
/// written to a file, which the instances given the variable never read.
pub async fn rotate_evidence_key(
    conn: &DatabaseConnection,
    env: &(dyn Env + Sync),
    key_file: &Path,
    name: &str,
    witness: &Witness,
    now: DateTime<Utc>,
) -> Result<EvidenceRotated, EvidenceRotateError> {
    if env.var(EVIDENCE_KEY_ENV).is_some() {
        return Err(EvidenceRotateError::EnvKey);
    }
    let old = evidence_key(conn, env, key_file, name, now).await?;
    let pending = pending_path(key_file);
    // The key's name is in every log's origin: the new key keeps it.
    let new = load_or_create_key(&pending, old.name())?;
    if new.name() != old.name() {
        return Err(EvidenceRotateError::PendingName {
            path: pending.display().to_string(),
            found: new.name().to_owned(),
            expected: old.name().to_owned(),
        });
    }
    let tenants: Vec<String> = evidence_log::Entity::find()
        .order_by_asc(evidence_log::Column::TenantId)
        .all(conn)
        .await?
        .into_iter()
        .map(|l| l.tenant_id)
        .collect();
    let mut checkpoints = Vec::new();
    for tenant in &tenants {
        append_one(
            conn,
            tenant,
            now,
            NewLeaf::new("evidence_key_rotated").detail(serde_json::json!({
                "old_key": old.verifier_key(),
                "new_key": new.verifier_key(),
            })),
        )
        .await?;
        let signed = crate::evidence::checkpoint::checkpoint(conn, &old, witness, tenant, now)
            .await?
            .ok_or_else(|| DbErr::Custom(format!("the log of {tenant} is empty")))?;
        let root = crate::evidence::merkle::parse_hash(&signed.root)
            .ok_or_else(|| DbErr::Custom(format!("the checkpoint of {tenant} has no root")))?;
        checkpoints.push(Covered {
            origin: signed.note.lines().next().unwrap_or_default().to_owned(),
            size: u64::try_from(signed.size).unwrap_or(0),
            root,
        });
    }
    let handover = Handover {
        old_key: old.verifier_key(),
        new_key: new.verifier_key(),
        at: now,
        checkpoints,
    };
    let signed = handover.sign(&old, &new)?;
    let handover_file = handover_path(key_file, &old, &new);
    let file_err = |path: &Path, e: std::io::Error| EvidenceRotateError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::write(&handover_file, &signed)
        .and_then(|()| std::fs::File::open(&handover_file)?.sync_all())
        .map_err(|e| file_err(&handover_file, e))?;
    let txn = conn.begin().await?;
    entity::key_handover::Entity::insert(entity::key_handover::ActiveModel {
        old_key: Set(handover.old_key.clone()),
        new_key: Set(handover.new_key.clone()),
        note: Set(signed.clone()),
        created_at: Set(now),
        ..Default::default()
    })
    .exec_without_returning(&txn)
    .await?;
    key_check::Entity::update(key_check::ActiveModel {
        purpose: Set(EVIDENCE.to_owned()),
        key_id: Set(format!("{:08x}", new.id())),
        check_value: Set(new.verifier_key()),
        recorded_at: Set(now),
    })
    .exec(&txn)
    .await?;
    txn.commit().await?;
    let retired = evidence_retired_path(key_file, &old);
    swap_files(key_file, &retired, &pending).map_err(|e| file_err(key_file, e))?;
    Ok(EvidenceRotated {
        old_key: handover.old_key,
        new_key: handover.new_key,
        handover: signed,
        handover_file,
        retired,
    })
}
