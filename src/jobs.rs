//! The job queue as the rest of rollcall writes to it: each job's queue name
//! and serde payload, and the functions that add a job row inside the
//! caller's transaction (so a job is committed with the rows that called for
//! it). Running the jobs is `workers`' business; the queue's tables are
//! created by `db`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::Engine;

/// The queue that held one job per inbound event before the inbox became
/// the queue (`conversation::queue`); its leftover jobs are deleted at start.
/// Queues are named explicitly: apalis defaults to the Rust type path, and a
/// rename would orphan stored jobs.
pub const OLD_INBOUND_QUEUE: &str = "rollcall.handle_inbound";

/// The queue that held one job per outbox row before the outbox became its
/// own queue (`outbox::queue`); its leftover jobs are deleted at start.
pub const OLD_DELIVER_QUEUE: &str = "rollcall.deliver";

/// Attempts before a job is given up.
const MAX_ATTEMPTS: i64 = 25;

/// The queue of [`Scan`] jobs.
pub const SCAN_QUEUE: &str = "rollcall.scan";
/// The queue of [`ExportPackage`] jobs.
pub const EXPORT_QUEUE: &str = "rollcall.export";
/// The queue of [`CheckRead`] jobs.
pub const READ_QUEUE: &str = "rollcall.read_status";

/// Ask the platform whether a sent notice was read (check `round`, see
/// `outbox::reads`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRead {
    pub outbox_id: i64,
    pub round: u32,
}

/// Enqueues check `round` of outbox row `outbox_id`'s read status, `delay`
/// from now, once.
pub async fn enqueue_read_check<C: sea_orm::ConnectionTrait>(
    conn: &C,
    engine: Engine,
    outbox_id: i64,
    round: u32,
    delay: Duration,
) -> Result<(), sea_orm::DbErr> {
    let args = serde_json::to_vec(&CheckRead { outbox_id, round }).expect("plain struct");
    insert_job(
        conn,
        engine,
        READ_QUEUE,
        args,
        format!("read:{outbox_id}:{round}"),
        delay,
    )
    .await
}

/// Build a case package asked for in chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportPackage {
    pub download_id: i64,
}

/// Run the absence scan of one tenant for one day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scan {
    pub tenant_id: String,
    pub day: chrono::NaiveDate,
}

/// Inserts one job row through any sea-orm connection or transaction, so a
/// job is committed with the rows that called for it. The columns are those
/// of apalis' own sinks; a job whose key exists is not added again.
pub(crate) async fn insert_job<C: sea_orm::ConnectionTrait>(
    conn: &C,
    engine: Engine,
    queue: &str,
    args: Vec<u8>,
    key: String,
    delay: Duration,
) -> Result<(), sea_orm::DbErr> {
    use sea_orm::{Statement, Value};
    let run_at =
        chrono::Utc::now().timestamp() + i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2);
    let values: Vec<Value> = vec![
        ulid::Ulid::new().to_string().into(),
        queue.into(),
        args.into(),
        MAX_ATTEMPTS.into(),
        run_at.into(),
        key.into(),
    ];
    let statement = match engine {
        Engine::Sqlite => Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "INSERT INTO Jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata, idempotency_key) \
             VALUES (?, ?, ?, 'Pending', 0, ?, ?, 0, '{}', ?) ON CONFLICT(job_type, idempotency_key) DO NOTHING",
            values,
        ),
        Engine::Postgres => Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata, idempotency_key) \
             VALUES ($1, $2, $3, 'Pending', 0, $4, to_timestamp($5), 0, ''::hstore, $6) ON CONFLICT (job_type, idempotency_key) DO NOTHING",
            values,
        ),
    };
    conn.execute_raw(statement).await?;
    Ok(())
}

/// Enqueues the scan of `tenant_id` for `day`, once: the key is the tenant
/// and the day, so several instances (or a scan asked for twice) add one job.
pub async fn enqueue_scan<C: sea_orm::ConnectionTrait>(
    conn: &C,
    engine: Engine,
    tenant_id: &str,
    day: chrono::NaiveDate,
    again: Option<&str>,
) -> Result<(), sea_orm::DbErr> {
    let args = serde_json::to_vec(&Scan {
        tenant_id: tenant_id.to_owned(),
        day,
    })
    .expect("plain struct");
    let key = match again {
        None => format!("scan:{tenant_id}:{day}"),
        Some(tag) => format!("scan:{tenant_id}:{day}:{tag}"),
    };
    insert_job(conn, engine, SCAN_QUEUE, args, key, Duration::ZERO).await
}

/// Enqueues the building of requested package `download_id`, once.
pub async fn enqueue_export<C: sea_orm::ConnectionTrait>(
    conn: &C,
    engine: Engine,
    download_id: i64,
) -> Result<(), sea_orm::DbErr> {
    let args = serde_json::to_vec(&ExportPackage { download_id }).expect("plain struct");
    insert_job(
        conn,
        engine,
        EXPORT_QUEUE,
        args,
        format!("export:{download_id}"),
        Duration::ZERO,
    )
    .await
}
