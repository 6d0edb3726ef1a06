//! The relay from `job_requests` to the job queue. `jobs` asks for a job by
//! writing a request row in the caller's transaction; the relay takes the
//! committed requests in order, pushes each to its queue's apalis storage
//! through the storage's own sink (apalis' public API, which writes the
//! job row), and deletes the requests it pushed. A request of a rolled-back
//! transaction never existed, so its job never runs.
//!
//! One job per queue and key: apalis keeps a unique index on them, and a
//! job whose key is already stored is not added again. That also covers a
//! request pushed twice: after a crash between the push and the delete, or
//! (on SQLite) by two relays that read the same rows. On PostgreSQL each
//! relay claims its requests with `FOR UPDATE SKIP LOCKED`, so relays of
//! several instances take disjoint requests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use apalis::prelude::{Task, TaskBuilder};
use entity::job_request;
use futures::future::BoxFuture;
use futures::{Sink, SinkExt};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::db::{Database, Engine};

/// How often the relay looks for requests. The jobs are coarse (scans,
/// exports, read checks): this adds at most as much delay as apalis' own
/// poll.
const RELAY_EVERY: Duration = Duration::from_millis(100);
/// Requests taken per pass; a full pass is followed by the next at once.
const BATCH: u64 = 500;
/// Attempts before a job is given up.
const MAX_ATTEMPTS: usize = 25;

/// A job as the queue stores it: its payload encoded (JSON), with its key
/// and the time it may run.
type EncodedTask = Task<Vec<u8>>;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum PushError {
    /// A job of that queue and key exists already (PostgreSQL's push has no
    /// `ON CONFLICT DO NOTHING`; SQLite's does).
    #[error("a job with that key exists")]
    Duplicate,
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The database error under a storage's error, to tell a duplicate key.
pub(super) trait StorageError: std::error::Error + Send + Sync + 'static {
    fn database(&self) -> Option<&sqlx::Error>;
}

impl StorageError for apalis_sqlite::Error {
    fn database(&self) -> Option<&sqlx::Error> {
        match self {
            apalis_sqlite::Error::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl StorageError for apalis_postgres::Error {
    fn database(&self) -> Option<&sqlx::Error> {
        match self {
            apalis_postgres::Error::Database(e) => Some(e),
            _ => None,
        }
    }
}

fn classify<E: StorageError>(e: E) -> PushError {
    match e.database() {
        Some(sqlx::Error::Database(d)) if d.is_unique_violation() => PushError::Duplicate,
        _ => PushError::Failed(Box::new(e)),
    }
}

type Push =
    Box<dyn Fn(Vec<EncodedTask>) -> BoxFuture<'static, Result<(), PushError>> + Send + Sync>;

/// Each queue's storage, as a sink of encoded jobs: the relay pushes the
/// payload as the request carries it, so it needs no job's type.
#[derive(Default)]
pub(super) struct Sinks {
    by_queue: HashMap<&'static str, Push>,
}

impl Sinks {
    /// Relays requests of `queue` to `storage` (configured for that queue).
    pub(super) fn add<S>(&mut self, queue: &'static str, storage: S)
    where
        S: Sink<EncodedTask> + Clone + Send + Sync + 'static,
        S::Error: StorageError,
    {
        self.by_queue.insert(
            queue,
            Box::new(move |tasks| {
                let mut sink = Box::pin(storage.clone());
                Box::pin(async move {
                    // One flush: the storage writes the batch in one
                    // transaction.
                    let mut tasks = futures::stream::iter(tasks.into_iter().map(Ok));
                    sink.send_all(&mut tasks).await.map_err(classify)
                })
            }),
        );
    }

    fn queues(&self) -> Vec<&'static str> {
        self.by_queue.keys().copied().collect()
    }
}

/// Relays until `stop` holds true. A pass is never cut short: what it
/// pushed, it deletes.
pub(super) async fn run(db: Database, sinks: Sinks, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RELAY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        loop {
            match relay_once(&db, &sinks).await {
                Ok(Pass {
                    failed: Some((queue, e)),
                    ..
                }) => {
                    tracing::warn!(queue, error = %e, "pushing job requests failed; they wait for the next pass");
                    break;
                }
                Ok(Pass { taken, .. }) if taken >= BATCH as usize => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "relaying job requests failed");
                    break;
                }
            }
        }
    }
}

/// What a pass did.
pub(super) struct Pass {
    /// Requests taken.
    pub(super) taken: usize,
    /// A queue whose push failed: its requests stay for a later pass (the
    /// other queues' are relayed and deleted).
    pub(super) failed: Option<(&'static str, PushError)>,
}

/// One pass: takes up to [`BATCH`] requests, pushes them, deletes what was
/// pushed.
pub(super) async fn relay_once(db: &Database, sinks: &Sinks) -> Result<Pass, sea_orm::DbErr> {
    match db.engine {
        // The claim's row locks hold until the pushed requests are deleted.
        Engine::Postgres => {
            use sea_orm::TransactionTrait;
            let txn = db.orm.begin().await?;
            let pass = relay_in(&txn, db, sinks).await?;
            txn.commit().await?;
            Ok(pass)
        }
        // One process owns the file, and a request pushed by two relays is
        // one job all the same. No transaction: the pushes write on other
        // connections, which an open transaction here would block.
        Engine::Sqlite => relay_in(&db.orm, db, sinks).await,
    }
}

/// Claims, pushes and deletes through `conn`.
async fn relay_in<C: ConnectionTrait>(
    conn: &C,
    db: &Database,
    sinks: &Sinks,
) -> Result<Pass, sea_orm::DbErr> {
    let requests = job_request::Entity::find()
        // A queue this process does not run (a newer instance's, during an
        // upgrade) is left to the processes that do.
        .filter(job_request::Column::Queue.is_in(sinks.queues()))
        .order_by_asc(job_request::Column::Id)
        .limit(BATCH)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(conn)
        .await?;
    let taken = requests.len();
    let mut by_queue: BTreeMap<&'static str, Vec<job_request::Model>> = BTreeMap::new();
    for r in requests {
        if let Some((queue, _)) = sinks.by_queue.get_key_value(r.queue.as_str()) {
            by_queue.entry(*queue).or_default().push(r);
        }
    }
    let mut done: Vec<i64> = Vec::with_capacity(taken);
    let mut failed = None;
    for (queue, requests) in by_queue {
        match push_queue(db, &sinks.by_queue[queue], queue, &requests).await {
            Ok(()) => done.extend(requests.iter().map(|r| r.id)),
            Err(e) => failed = Some((queue, e)),
        }
    }
    if !done.is_empty() {
        job_request::Entity::delete_many()
            .filter(job_request::Column::Id.is_in(done))
            .exec(conn)
            .await?;
    }
    Ok(Pass { taken, failed })
}

/// Pushes `requests` (in order) to `queue`'s storage, but for those whose
/// key is a job already. On PostgreSQL a duplicate key fails the whole
/// batch, so the keys already stored are left out first (else a daily
/// scan, asked for every 30 s, would log an error each time); a key stored
/// meanwhile by another instance then fails the batch, which is pushed
/// again one job at a time.
async fn push_queue(
    db: &Database,
    push: &Push,
    queue: &str,
    requests: &[job_request::Model],
) -> Result<(), PushError> {
    let stored = match db.engine {
        Engine::Sqlite => HashSet::new(),
        Engine::Postgres => stored_keys(db, queue, requests)
            .await
            .map_err(|e| PushError::Failed(Box::new(e)))?,
    };
    let new: Vec<&job_request::Model> = requests
        .iter()
        .filter(|r| !stored.contains(&r.idempotency_key))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    match push(new.iter().copied().map(task).collect()).await {
        Err(PushError::Duplicate) => {}
        other => return other,
    }
    for r in new {
        match push(vec![task(r)]).await {
            Ok(()) | Err(PushError::Duplicate) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The job a request asks for.
fn task(r: &job_request::Model) -> EncodedTask {
    TaskBuilder::new(r.args.clone())
        .idempotency_key(&r.idempotency_key)
        .run_at_timestamp(u64::try_from(r.run_at.timestamp()).unwrap_or(0))
        .max_attempts(MAX_ATTEMPTS)
        .build()
}

/// Which of the requests' keys are jobs of `queue` already (PostgreSQL).
async fn stored_keys(
    db: &Database,
    queue: &str,
    requests: &[job_request::Model],
) -> Result<HashSet<String>, sqlx::Error> {
    let keys: Vec<&str> = requests
        .iter()
        .map(|r| r.idempotency_key.as_str())
        .collect();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT idempotency_key FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = ANY($2)",
    )
    .bind(queue)
    .bind(&keys)
    .fetch_all(db.postgres())
    .await?;
    Ok(rows.into_iter().map(|(k,)| k).collect())
}
