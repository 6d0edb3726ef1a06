//! The job queue as the rest of rollcall writes to it: each job's queue name
//! and serde payload, and the functions that ask for a job inside the
//! caller's transaction. A request is a row of our own table
//! (`job_requests`), so the job is committed with the rows that called for
//! it, or not at all; the relay in `workers` hands each request to the job
//! queue through its API and deletes it. Running the jobs is `workers`'
//! business too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The queue that held one job per inbound event before the inbox became
/// the queue (`conversation::queue`); its leftover jobs are deleted at start.
/// Queues are named explicitly: apalis defaults to the Rust type path, and a
/// rename would orphan stored jobs.
pub const OLD_INBOUND_QUEUE: &str = "rollcall.handle_inbound";

/// The queue that held one job per outbox row before the outbox became its
/// own queue (`outbox::queue`); its leftover jobs are deleted at start.
pub const OLD_DELIVER_QUEUE: &str = "rollcall.deliver";

/// The queue of [`Scan`] jobs.
pub const SCAN_QUEUE: &str = "rollcall.scan";
/// The queue of [`ExportPackage`] jobs.
pub const EXPORT_QUEUE: &str = "rollcall.export";
/// The queue of [`CheckRead`] jobs.
pub const READ_QUEUE: &str = "rollcall.read_status";
/// Every queue rollcall's workers run (start-up recovery sets back the
/// jobs a killed process held in each).
pub const QUEUES: [&str; 3] = [SCAN_QUEUE, EXPORT_QUEUE, READ_QUEUE];

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
    outbox_id: i64,
    round: u32,
    delay: Duration,
) -> Result<(), sea_orm::DbErr> {
    let args = serde_json::to_vec(&CheckRead { outbox_id, round }).expect("plain struct");
    insert_job(
        conn,
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

/// Asks for one job through any sea-orm connection or transaction, so the
/// request is committed with the rows that called for it. A request whose
/// queue and key are still waiting is not added again; once relayed, the
/// job queue keeps one job per queue and key (see `workers::relay`).
pub(crate) async fn insert_job<C: sea_orm::ConnectionTrait>(
    conn: &C,
    queue: &str,
    args: Vec<u8>,
    key: String,
    delay: Duration,
) -> Result<(), sea_orm::DbErr> {
    use entity::job_request;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    // The queue's time is the system's, as a simulated clock may jump.
    let now = chrono::Utc::now();
    let run_at = chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let row = job_request::ActiveModel {
        queue: Set(queue.to_owned()),
        idempotency_key: Set(key),
        args: Set(args),
        run_at: Set(run_at),
        created_at: Set(now),
        ..Default::default()
    };
    job_request::Entity::insert(row)
        .on_conflict_do_nothing_on([
            job_request::Column::Queue,
            job_request::Column::IdempotencyKey,
        ])
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Enqueues the scan of `tenant_id` for `day`, once: the key is the tenant
/// and the day, so several instances (or a scan asked for twice) add one job.
pub async fn enqueue_scan<C: sea_orm::ConnectionTrait>(
    conn: &C,
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
    insert_job(conn, SCAN_QUEUE, args, key, Duration::ZERO).await
}

/// Enqueues the building of requested package `download_id`, once.
pub async fn enqueue_export<C: sea_orm::ConnectionTrait>(
    conn: &C,
    download_id: i64,
) -> Result<(), sea_orm::DbErr> {
    let args = serde_json::to_vec(&ExportPackage { download_id }).expect("plain struct");
    insert_job(
        conn,
        EXPORT_QUEUE,
        args,
        format!("export:{download_id}"),
        Duration::ZERO,
    )
    .await
}
