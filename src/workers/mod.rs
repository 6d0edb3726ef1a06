//! apalis wiring, and only that: a handler for each job of [`crate::jobs`]
//! that calls the modules that do the work, the relay that hands the jobs
//! asked for in `job_requests` to apalis ([`relay`]), the cron tick,
//! start-up recovery of the queue, and reports on it. Besides `db` (which
//! creates the queue's tables), no other module names apalis: `jobs` asks
//! for a job with a row of our own table, in the caller's transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;

use crate::db::{Database, Engine};
use crate::jobs::{
    CheckRead, EXPORT_QUEUE, ExportPackage, OLD_DELIVER_QUEUE, OLD_INBOUND_QUEUE, READ_QUEUE,
    SCAN_QUEUE, Scan, enqueue_read_check, enqueue_scan,
};
use crate::runtime::Runtime;

mod relay;

/// How often a worker proves it is alive; a job held by a worker silent for
/// `HEARTBEAT * MISSED_HEARTBEATS` goes back to the queue.
const HEARTBEAT: Duration = Duration::from_secs(5);
const MISSED_HEARTBEATS: usize = 3;
/// How often an idle worker looks for jobs; with BATCH this bounds a
/// worker to BATCH / POLL_EVERY jobs a second.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Jobs taken per poll, and jobs run at once by one process.
const BATCH: usize = 500;
/// Jobs run at once per queue: at most the pool's connections on SQLite
/// (8), and well below them on PostgreSQL (24), so that jobs waiting on a
/// lock (a read check appends to the tenant's evidence log while an inbound
/// batch holds its head) never hold every connection while the inbound
/// handlers and the outbox's sender wait for one.
fn concurrency(engine: Engine) -> usize {
    match engine {
        Engine::Sqlite => 8,
        Engine::Postgres => 16,
    }
}
/// How often finished jobs are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The jobs of `queue` whose key is LIKE `key_pattern`, a line each (key,
/// status, attempts, when it may run, which worker holds it), in the order
/// they may run: what a report of work that does not finish shows.
pub async fn jobs_like(
    db: &Database,
    queue: &str,
    key_pattern: &str,
) -> Result<Vec<String>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let (sql, backend) = match db.engine {
        Engine::Sqlite => (
            "SELECT idempotency_key || ' ' || status || ' attempts=' || attempts || ' run_at=' || run_at \
             || ' lock_by=' || coalesce(lock_by, '-') FROM Jobs WHERE job_type = ?1 AND idempotency_key LIKE ?2 \
             ORDER BY run_at, idempotency_key",
            sea_orm::DbBackend::Sqlite,
        ),
        Engine::Postgres => (
            "SELECT idempotency_key || ' ' || status || ' attempts=' || attempts || ' run_at=' || run_at::text \
             || ' lock_by=' || coalesce(lock_by, '-') FROM apalis.jobs WHERE job_type = $1 AND idempotency_key LIKE $2 \
             ORDER BY run_at, idempotency_key",
            sea_orm::DbBackend::Postgres,
        ),
    };
    let rows = db
        .orm
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [queue.into(), key_pattern.into()],
        ))
        .await?;
    rows.iter().map(|r| r.try_get_by_index(0)).collect()
}

/// Start-up recovery of the job queue. On SQLite one process owns the file,
/// so jobs left `Running` (or `Queued`) by a killed process are orphans and
/// go back to `Pending` at once, through apalis' own re-enqueue of a dead
/// worker's jobs (every worker in the table is dead before this process
/// starts its own); on PostgreSQL other instances may be alive, and their
/// orphans return through apalis' heartbeats. Jobs of the old per-event
/// and per-message queues are deleted (apalis has no query for that):
/// their events are unprocessed rows and their messages rows not final,
/// which the inbox's and the outbox's own queues take. Neither needs
/// recovery of its own: an unprocessed or unsent row is the work. Job
/// requests need none either: a request not yet relayed is still in
/// `job_requests`. Returns how many jobs were set back or deleted.
pub async fn recover(db: &Database) -> Result<u64, sqlx::Error> {
    match db.engine {
        Engine::Sqlite => {
            use apalis_core::backend::WorkerFilter;
            let pool = db.sqlite();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut reset = 0;
            // Every queue: one left out (the export queue was) waits for
            // the heartbeats to find its dead worker's jobs (15 s).
            for queue in crate::jobs::QUEUES {
                // Dead for 0 s or more: every worker.
                reset += apalis_sqlite::queries::reenqueue_orphaned(
                    &mut *tx,
                    0,
                    queue,
                    &WorkerFilter::None,
                )
                .await?;
            }
            let old = sqlx::query("DELETE FROM Jobs WHERE job_type IN (?1, ?2)")
                .bind(OLD_INBOUND_QUEUE)
                .bind(OLD_DELIVER_QUEUE)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(reset + old)
        }
        Engine::Postgres => Ok(
            sqlx::query("DELETE FROM apalis.jobs WHERE job_type IN ($1, $2)")
                .bind(OLD_INBOUND_QUEUE)
                .bind(OLD_DELIVER_QUEUE)
                .execute(db.postgres())
                .await?
                .rows_affected(),
        ),
    }
}

async fn check_read(job: CheckRead, rt: Data<Runtime>) -> Result<(), BoxDynError> {
    let on_give_up = &crate::cases::notify::TellHr;
    match crate::outbox::check_read(&rt, job.outbox_id, job.round, on_give_up).await? {
        crate::outbox::reads::Checked::Again { next, after } => {
            enqueue_read_check(&rt.db.orm, job.outbox_id, next, after).await?;
        }
        // check_read has given the row up already (this arm is for the
        // bare reads::check).
        crate::outbox::reads::Checked::NeverDelivered { reason, .. } => {
            tracing::info!(id = job.outbox_id, %reason, "never delivered");
        }
        crate::outbox::reads::Checked::Done(how) => {
            tracing::debug!(
                id = job.outbox_id,
                round = job.round,
                how,
                "read status checked"
            );
        }
    }
    Ok(())
}

async fn export_package(job: ExportPackage, rt: Data<Runtime>) -> Result<(), BoxDynError> {
    crate::evidence::download::build(&rt, job.download_id).await?;
    Ok(())
}

async fn scan(job: Scan, rt: Data<Runtime>) -> Result<(), BoxDynError> {
    if let Some(tenant) = rt.tenant(&job.tenant_id) {
        crate::hr::daily(&rt, tenant).await;
    }
    let report = crate::attendance::punches::scan(&rt, &job.tenant_id, Some(job.day)).await;
    return_freed_memory();
    let report = report?;
    tracing::info!(tenant = %report.tenant, day = %job.day, opened = report.opened, advanced = report.advanced, resolved = report.resolved, escalated = report.escalated, "absence scan");
    Ok(())
}

/// Gives back to the system what a scan freed. glibc keeps freed memory in
/// its arenas: the daily scan of 100,000 employees (the soak in
/// `BENCHMARKS.md`) left the server about 90 MiB larger for good.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When each process looks whether a tenant's scan is due (apalis-cron,
/// every 30 s). The scan itself is a job keyed by tenant and day in the job
/// store, so it runs once however many processes look.
const SCHEDULE: &str = "0/30 * * * * *";

async fn tick(_tick: apalis_cron::Tick, rt: Data<Runtime>) -> Result<(), BoxDynError> {
    if let Err(e) = schedule_scans(&rt).await {
        tracing::warn!(error = %e, "scheduling absence scans failed");
    }
    // Each row is asked about at most every few minutes, so every process
    // may look; recording a report is idempotent.
    match crate::outbox::reports::poll_due(&rt, &crate::cases::notify::TellHr).await {
        Ok(0) => {}
        Ok(asked) => tracing::debug!(asked, "asked for SMS delivery reports"),
        Err(e) => tracing::warn!(error = %e, "asking for SMS delivery reports failed"),
    }
    // Signing is idempotent per tree size, so every process may look.
    let every =
        chrono::Duration::seconds(i64::try_from(rt.evidence.checkpoint_every_secs).unwrap_or(600));
    match crate::evidence::checkpoint::sign_due(
        &rt.db.orm,
        &rt.signer,
        &rt.witness,
        every,
        rt.clock.now(),
    )
    .await
    {
        Ok(0) => {}
        Ok(signed) => tracing::info!(signed, "signed evidence checkpoints"),
        Err(e) => tracing::warn!(error = %e, "signing evidence checkpoints failed"),
    }
    if let Some(url) = rt.evidence.tsa_url.as_deref() {
        for tenant in rt.tenants() {
            let http = crate::evidence::tsa::client();
            match crate::evidence::tsa::stamp_latest(&rt.db.orm, http, url, &tenant.config.id).await
            {
                Ok(None) => {}
                Ok(Some(size)) => {
                    tracing::info!(tenant = %tenant.config.id, size, "time-stamped the last checkpoint")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.config.id, error = %e, "time-stamping the last checkpoint failed")
                }
            }
        }
    }
    match crate::evidence::witness_mail::mail_witnesses(&rt, rt.clock.now()).await {
        Ok(0) => {}
        Ok(queued) => tracing::info!(queued, "queued the day's checkpoint for the witnesses"),
        Err(e) => tracing::warn!(error = %e, "queueing the witnesses' checkpoint failed"),
    }
    Ok(())
}

/// Enqueues each tenant's scan once its `scan_at` has passed (local time):
/// the scan of the last ended workday, and once an hour a scan of that same
/// day again, which only checks deadlines (counting is idempotent). A tenant
/// whose `scan_at` is off is scanned only by `rollcall scan`.
async fn schedule_scans(rt: &Runtime) -> Result<(), sea_orm::DbErr> {
    let now = rt.clock.now();
    for tenant in rt.tenants() {
        let local = now.with_timezone(&tenant.config.timezone);
        let Some(scan_at) = tenant.config.attendance.scan_at else {
            continue;
        };
        if local.time() < scan_at {
            continue;
        }
        // Every ended day, not only the tenant's workdays: whether a day was
        // a workday is each employee's own calendar (some work Saturdays).
        let Some(day) = crate::cases::scan::last_closed_day(tenant, now) else {
            continue;
        };
        enqueue_scan(&rt.db.orm, &tenant.config.id, day, None).await?;
        // Then once an hour, for deadlines (counting is idempotent).
        if local.time() >= scan_at + chrono::Duration::hours(1) {
            let hour = local.format("%Y-%m-%dT%H").to_string();
            enqueue_scan(&rt.db.orm, &tenant.config.id, day, Some(&hour)).await?;
        }
    }
    Ok(())
}

/// How long a stopping process waits for running jobs before it drops them
/// (their rows are not final, so the start-up sweep or another instance
/// picks them up).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The first wait before a stopped worker is started again; it doubles on
/// each stop in a row, up to `RESTART_AT_MOST`. A worker that ran for
/// `RESTART_AT_MOST` before it stopped starts again after the first wait.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_AT_MOST: Duration = Duration::from_secs(30);

type WorkerRun = futures::future::BoxFuture<'static, Result<(), WorkerError>>;
type StopSignal = futures::future::BoxFuture<'static, Result<(), WorkerError>>;

/// Resolves once `stop` holds true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn stop_signal(stop: tokio::sync::watch::Receiver<bool>) -> StopSignal {
    Box::pin(async move {
        stopped(stop).await;
        Ok(())
    })
}

/// Runs one worker until `stop`, and starts it again whenever it ends
/// before that. apalis ends a worker for good on any error of its backend
/// (a failed heartbeat, fetch or acknowledgement: a dropped connection, a
/// pool that timed out under load) and its `Monitor` does not restart it
/// unless told to, so one database hiccup stopped a queue for the life of
/// the process. `start(run, signal)` builds and runs the worker's `run`th
/// life under a fresh name (apalis refuses a name still registered alive).
async fn supervise(
    queue: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
    restarts: Arc<AtomicU64>,
    start: impl Fn(usize, StopSignal) -> WorkerRun,
) {
    let mut run = 0;
    let mut wait = RESTART_FIRST;
    loop {
        let began = std::time::Instant::now();
        // A handler that panics unwinds through the worker's future (apalis
        // polls handlers inside it): caught, it is a stop like any other.
        let ended = {
            use futures::FutureExt as _;
            std::panic::AssertUnwindSafe(start(run, stop_signal(stop.clone())))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    Err(WorkerError::PanicError(what))
                })
        };
        if *stop.borrow() {
            return;
        }
        if began.elapsed() >= RESTART_AT_MOST {
            wait = RESTART_FIRST;
        }
        match ended {
            Ok(()) => tracing::error!(queue, run, ?wait, "job worker ended; starting it again"),
            Err(e) => {
                tracing::error!(queue, run, error = %e, ?wait, "job worker stopped on an error; starting it again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(stop.clone()) => return,
        }
        wait = (wait * 2).min(RESTART_AT_MOST);
        run += 1;
        restarts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the workers until `shutdown` resolves: one per queue, the relay of
/// job requests to them, the schedule, and the pruning of finished jobs.
pub async fn run(rt: Runtime, shutdown: impl Future<Output = ()> + Send + 'static) {
    // Unique per process: apalis refuses a worker name seen alive recently.
    let name = format!("{}-{}", std::process::id(), ulid::Ulid::new());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let db = rt.db.clone();
    let prune_db = db.clone();
    let pruning_stopped = stopped(stop.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tokio::pin!(pruning_stopped);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = prune_done(&prune_db).await {
                        tracing::warn!(error = %e, "pruning finished jobs failed");
                    }
                }
                _ = &mut pruning_stopped => return,
            }
        }
    });
    let mut sinks = relay::Sinks::default();
    macro_rules! queue {
        ($storage:ident, $config:path, $pool:expr, $job:ty, $queue:expr, $handler:expr) => {{
            let config = <$config>::default()
                .queue($queue)
                .batch_size(BATCH)
                .heartbeat_interval(HEARTBEAT)
                .missed_heartbeats(MISSED_HEARTBEATS);
            let storage = $storage::<$job>::new($pool).with_config(config);
            sinks.add($queue, storage.clone());
            let storage = storage.poll_with_interval(POLL_EVERY);
            let name = name.clone();
            let rt = rt.clone();
            tasks.spawn(supervise(
                $queue,
                stop.clone(),
                rt.worker_restarts.clone(),
                move |run, signal| {
                    let worker = WorkerBuilder::new(format!("{}-{name}-{run}", $queue))
                        .backend(storage.clone())
                        .concurrency(concurrency(rt.db.engine))
                        .data(rt.clone())
                        .build($handler);
                    Box::pin(worker.run_until(signal))
                },
            ));
        }};
    }
    let schedule: cron::Schedule = SCHEDULE.parse().expect("a valid cron expression");
    let cron_rt = rt.clone();
    let cron_name = name.clone();
    tasks.spawn(supervise(
        "schedule",
        stop.clone(),
        rt.worker_restarts.clone(),
        move |run, signal| {
            let worker = WorkerBuilder::new(format!("schedule-{cron_name}-{run}"))
                .backend(apalis_cron::CronScheduler::new(schedule.clone()))
                .data(cron_rt.clone())
                .build(tick);
            Box::pin(worker.run_until(signal))
        },
    ));
    match db.engine {
        Engine::Sqlite => {
            use apalis_sqlite::Config;
            queue!(SqliteStorage, Config, db.sqlite(), Scan, SCAN_QUEUE, scan);
            queue!(
                SqliteStorage,
                Config,
                db.sqlite(),
                CheckRead,
                READ_QUEUE,
                check_read
            );
            queue!(
                SqliteStorage,
                Config,
                db.sqlite(),
                ExportPackage,
                EXPORT_QUEUE,
                export_package
            );
        }
        Engine::Postgres => {
            use apalis_postgres::Config;
            queue!(
                PostgresStorage,
                Config,
                db.postgres(),
                Scan,
                SCAN_QUEUE,
                scan
            );
            queue!(
                PostgresStorage,
                Config,
                db.postgres(),
                CheckRead,
                READ_QUEUE,
                check_read
            );
            queue!(
                PostgresStorage,
                Config,
                db.postgres(),
                ExportPackage,
                EXPORT_QUEUE,
                export_package
            );
        }
    }
    tasks.spawn(relay::run(db.clone(), sinks, stop.clone()));
    shutdown.await;
    let _ = stop_tx.send(true);
    let all_ended = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_ended)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "job workers did not stop in time; dropping their running jobs");
        tasks.abort_all();
    }
}

/// Deletes finished read-status jobs. The outbox row's status is the
/// lasting record; a growing table of done jobs only slows the queue
/// (apalis' SQLite acknowledgement scans every job its worker ever locked).
async fn prune_done(db: &Database) -> Result<u64, sqlx::Error> {
    let done = match db.engine {
        Engine::Sqlite => sqlx::query("DELETE FROM Jobs WHERE job_type = ?1 AND status = 'Done'")
            .bind(READ_QUEUE)
            .execute(db.sqlite())
            .await?
            .rows_affected(),
        Engine::Postgres => {
            sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
                .bind(READ_QUEUE)
                .execute(db.postgres())
                .await?
                .rows_affected()
        }
    };
    Ok(done)
}
