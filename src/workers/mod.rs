//! apalis wiring, and only that: each job is a serde struct and a handler that
//! calls the modules that do the work. No other module names apalis.

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, SqliteConnection};

use crate::db::{Database, Engine};

/// The queue of [`HandleInbound`] jobs. Named explicitly: apalis defaults to
/// the Rust type path, and a rename would orphan stored jobs.
pub const INBOUND_QUEUE: &str = "rollcall.handle_inbound";

/// How often a worker proves it is alive; a job held by a worker silent for
/// `HEARTBEAT * MISSED_HEARTBEATS` goes back to the queue.
const HEARTBEAT: Duration = Duration::from_secs(5);
const MISSED_HEARTBEATS: usize = 3;
/// Jobs taken per poll, and jobs run at once by one process.
const BATCH: usize = 50;
const CONCURRENCY: usize = 16;

/// Handle one stored inbound event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleInbound {
    pub inbound_id: i64,
}

fn inbound_tasks(ids: &[i64], suffix: &str) -> Vec<Task<Vec<u8>>> {
    ids.iter()
        .map(|&inbound_id| {
            let args = serde_json::to_vec(&HandleInbound { inbound_id }).expect("plain struct");
            TaskBuilder::new(args)
                .idempotency_key(format!("inbound:{inbound_id}{suffix}"))
                .build()
        })
        .collect()
}

fn job_error(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Protocol(format!("job queue: {e}"))
}

/// Enqueues `handle_inbound` for new rows, inside the caller's transaction.
pub async fn enqueue_inbound_sqlite(
    conn: &mut SqliteConnection,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    apalis_sqlite::queries::push_tasks(conn, INBOUND_QUEUE, &inbound_tasks(ids, ""))
        .await
        .map_err(job_error)
}

/// Enqueues `handle_inbound` for new rows, inside the caller's transaction.
pub async fn enqueue_inbound_postgres(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    apalis_postgres::queries::push_tasks(conn, INBOUND_QUEUE, inbound_tasks(ids, ""))
        .await
        .map_err(job_error)
}

/// Creates the job tables (apalis' own migrations; not its `setup()`, which
/// turns SQLite's `synchronous` off).
pub async fn migrate(db: &Database) -> Result<(), sqlx::migrate::MigrateError> {
    match db.engine {
        Engine::Sqlite => SqliteStorage::<()>::migrations().run(db.sqlite()).await,
        Engine::Postgres => PostgresStorage::<()>::migrations().run(db.postgres()).await,
    }
}

/// Start-up recovery: every committed row that is not processed and has no
/// job that can still run gets a new job, so nothing committed is lost.
///
/// On SQLite one process owns the file, so jobs left `Running` by a killed
/// process are orphans and go back to `Pending` at once. On PostgreSQL other
/// instances may be alive; their orphans return through apalis' heartbeats.
pub async fn recover(db: &Database) -> Result<usize, sqlx::Error> {
    let boot = format!(":recovered:{}", ulid_like());
    match db.engine {
        Engine::Sqlite => {
            let pool = db.sqlite();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL WHERE job_type = ?1 AND status IN ('Running', 'Queued')")
                .bind(INBOUND_QUEUE)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT e.id FROM inbound_events e WHERE e.processed_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM Jobs j WHERE j.job_type = ?1 AND j.idempotency_key = 'inbound:' || e.id \
                  AND j.status IN ('Pending', 'Running', 'Queued'))",
            )
            .bind(INBOUND_QUEUE)
            .fetch_all(&mut *tx)
            .await?;
            apalis_sqlite::queries::push_tasks(
                &mut *tx,
                INBOUND_QUEUE,
                &inbound_tasks(&ids, &boot),
            )
            .await
            .map_err(job_error)?;
            tx.commit().await?;
            Ok(ids.len())
        }
        Engine::Postgres => {
            let mut tx = db.postgres().begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT e.id FROM inbound_events e WHERE e.processed_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM apalis.jobs j WHERE j.job_type = $1 AND j.idempotency_key = 'inbound:' || e.id \
                  AND j.status IN ('Pending', 'Running', 'Queued'))",
            )
            .bind(INBOUND_QUEUE)
            .fetch_all(&mut *tx)
            .await?;
            if !ids.is_empty() {
                apalis_postgres::queries::push_tasks(
                    &mut *tx,
                    INBOUND_QUEUE,
                    inbound_tasks(&ids, &boot),
                )
                .await
                .map_err(job_error)?;
            }
            tx.commit().await?;
            Ok(ids.len())
        }
    }
}

fn ulid_like() -> String {
    format!(
        "{}-{:08x}",
        chrono::Utc::now().timestamp_millis(),
        rand::random::<u32>()
    )
}

async fn handle_inbound(job: HandleInbound, db: Data<Database>) -> Result<(), BoxDynError> {
    match crate::inbox::process(&db, job.inbound_id).await? {
        Some(class) => tracing::debug!(id = job.inbound_id, class, "inbound event processed"),
        None => tracing::warn!(
            id = job.inbound_id,
            "job for an inbound event that does not exist"
        ),
    }
    Ok(())
}

/// Runs the workers until `shutdown` resolves.
pub async fn run(
    db: Database,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxDynError> {
    // Unique per process: apalis refuses a worker name seen alive recently.
    let name = format!("inbound-{}-{}", std::process::id(), ulid_like());
    let signal = async move {
        shutdown.await;
        Ok(())
    };
    let monitor = match db.engine {
        Engine::Sqlite => {
            let config = apalis_sqlite::Config::default()
                .queue(INBOUND_QUEUE)
                .batch_size(BATCH)
                .heartbeat_interval(HEARTBEAT)
                .missed_heartbeats(MISSED_HEARTBEATS);
            let storage = SqliteStorage::<HandleInbound>::new(db.sqlite())
                .with_config(config)
                .poll_with_interval(Duration::from_millis(100));
            let db = db.clone();
            Monitor::new().register(move |_| {
                WorkerBuilder::new(name.as_str())
                    .backend(storage.clone())
                    .concurrency(CONCURRENCY)
                    .data(db.clone())
                    .build(handle_inbound)
            })
        }
        Engine::Postgres => {
            let config = apalis_postgres::Config::default()
                .queue(INBOUND_QUEUE)
                .batch_size(BATCH)
                .heartbeat_interval(HEARTBEAT)
                .missed_heartbeats(MISSED_HEARTBEATS);
            let storage = PostgresStorage::<HandleInbound>::new(db.postgres())
                .with_config(config)
                .poll_with_interval(Duration::from_millis(100));
            let db = db.clone();
            Monitor::new().register(move |_| {
                WorkerBuilder::new(name.as_str())
                    .backend(storage.clone())
                    .concurrency(CONCURRENCY)
                    .data(db.clone())
                    .build(handle_inbound)
            })
        }
    };
    monitor
        .shutdown_timeout(Duration::from_secs(10))
        .run_with_signal(signal)
        .await?;
    Ok(())
}
