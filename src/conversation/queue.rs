//! The inbox is the queue: no job row per callback. Each process runs
//! handlers that claim the oldest unprocessed `inbound_events` in batches
//! and write everything a batch causes (check-ins, case events, outbox rows,
//! evidence leaves and raw payloads) in one transaction that
//! also marks the batch's events processed. A crash loses nothing: a batch
//! that did not commit left its events unprocessed, and they are claimed
//! again.
//!
//! **Order per sender.** An event is claimed only when every earlier
//! unprocessed event of its sender is in the same batch (none in another
//! batch, another instance, or waiting after a failure), so one person's
//! messages are handled in the order they arrived; different people's are
//! handled side by side. When one fails, its sender's later events in the
//! batch wait too.
//!
//! **Several instances (PostgreSQL).** The claim locks its rows (`FOR
//! UPDATE SKIP LOCKED`), so handlers of every instance take disjoint
//! batches; the sender rule sees another batch's events as unprocessed until
//! it commits.
//!
//! **Short transactions.** The batch's events are read and their files
//! downloaded before the transaction opens (on PostgreSQL, after the claim
//! locked them). On SQLite a batch holds the one write lock: it ends at the
//! next event once the inbox's group commit (the acknowledgements) waits
//! for the lock, and after [`SQLITE_BUDGET`] in any case (the outbox's
//! sender waits too). On PostgreSQL it ends after [`POSTGRES_BUDGET`]. A
//! batch's evidence leaves are appended together at its end
//! (`evidence::log::deferring`), so it holds the tenant's evidence-log head,
//! which other batches and the outbox's receipts wait for, only from then to
//! its commit. Each batch handles at least one event, and taking the lock
//! once for many events is what lets the one handler keep its share of it
//! beside the sender.
//!
//! **Failures.** A batch first handles its events without savepoints
//! (each would cost two statements and copies of the pages it changes):
//! if one fails, the whole batch is rolled back and handled again at once,
//! each event in its own savepoint. There an event whose handling fails is
//! rolled back alone, counted on its row, and tried again after a back-off
//! that doubles; its sender's later events wait for it. After
//! [`MAX_ATTEMPTS`] it is given up: marked processed as `failed`, with its
//! last error kept on the row and logged, so that one broken event does not
//! hold its sender's messages for ever.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::inbound_event::{self, Column};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use tokio::sync::watch;

use super::turn::HandleError;
use super::{Claim, apply, prepare};
use crate::db::Engine;
use crate::inbox::Arrivals;
use crate::runtime::Runtime;

/// Events claimed at most per batch.
pub const BATCH: u64 = 256;
/// Events claimed at least per batch by [`run`], which claims about twice
/// what its last batch handled: reading and preparing rows a batch then has
/// no time for is work done again by the next one.
const BATCH_AT_LEAST: u64 = 16;
/// How long a batch may hold its transaction before it stops taking events
/// (the rest stay for the next batch). On SQLite the transaction holds the
/// one write lock, which the outbox's sender waits for (a waiting commit of
/// callbacks ends the batch after [`SQLITE_TURN_AT_LEAST`], see
/// [`Arrivals::commit_waiting`]); on
/// PostgreSQL it holds its events' rows, and the longer it runs the more
/// leaves it appends at its end, under the tenant's evidence-log head.
pub const SQLITE_BUDGET: Duration = Duration::from_millis(250);
pub const POSTGRES_BUDGET: Duration = Duration::from_millis(50);
/// How long a batch on SQLite keeps the write lock before a waiting commit
/// of callbacks ends it. Without it, a steady stream of callbacks (a commit
/// nearly always waiting) left the handler one event per turn: about 30
/// events/s handled at 2,000 callbacks/s, and fewer than arrived even at
/// 300/s, the queue growing for as long as the stream lasted (the soak in
/// `BENCHMARKS.md`). With it, the
/// acknowledgement may wait this much longer.
pub const SQLITE_TURN_AT_LEAST: Duration = Duration::from_millis(10);
/// How often an idle handler looks for work it was not woken for (another
/// instance's callbacks, a back-off that ended).
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often a handler's claim reads the queue from its start again rather
/// than from its [`Horizon`].
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How long a handler waits after the database failed before it tries again.
const AFTER_ERROR: Duration = Duration::from_secs(1);
/// Failed attempts before an event is given up.
pub const MAX_ATTEMPTS: i32 = 10;
/// The first back-off after a failure; it doubles up to [`BACKOFF_AT_MOST`].
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_AT_MOST: Duration = Duration::from_secs(600);

/// Handlers per process: one on SQLite (one writer anyway), several on
/// PostgreSQL so that batches overlap.
pub fn handlers(engine: Engine) -> usize {
    match engine {
        Engine::Sqlite => 1,
        Engine::Postgres => 4,
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: i32) -> Duration {
    let doublings = std::cmp::min(u32::try_from(attempts.saturating_sub(1)).unwrap_or(0), 16);
    std::cmp::min(BACKOFF_FIRST * 2u32.pow(doublings), BACKOFF_AT_MOST)
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Events claimed (whether handled, failed or left for the next batch).
    pub claimed: usize,
    /// Events handled and marked processed.
    pub handled: usize,
    /// Events whose handling failed (rolled back and counted).
    pub failed: usize,
}

/// Runs one handler until `stop` holds true: batches back to back while
/// there is work, then a wait for `arrivals` (a commit of new callbacks) or
/// [`POLL_EVERY`]. The batch under way when `stop` comes is finished.
pub async fn run(rt: Runtime, arrivals: Arc<Arrivals>, mut stop: watch::Receiver<bool>) {
    let mut limit = BATCH;
    let mut horizon = Horizon::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let began = Instant::now();
        let result = batch_of(&rt, limit, Some(&arrivals), &mut horizon).await;
        if let Ok(b) = &result {
            tracing::debug!(limit, claimed = b.claimed, handled = b.handled, failed = b.failed, took = ?began.elapsed(), "inbound batch");
            limit = next_limit(b);
        }
        match result {
            Ok(b) if b.claimed > 0 => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "handling a batch of inbound events failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(AFTER_ERROR) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        }
        tokio::select! {
            _ = arrivals.committed.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Handles every event waiting, batch after batch (what a test or a command
/// that must see the events handled calls). Returns how many were handled.
pub async fn drain(rt: &Runtime) -> Result<usize, HandleError> {
    let mut handled = 0;
    loop {
        let b = batch(rt).await?;
        handled += b.handled;
        if b.claimed == 0 {
            return Ok(handled);
        }
    }
}

/// How many events the batch after `b` claims: about twice what `b`
/// handled, within [`BATCH_AT_LEAST`]..=[`BATCH`].
pub fn next_limit(b: &Batch) -> u64 {
    (2 * (b.handled + b.failed) as u64).clamp(BATCH_AT_LEAST, BATCH)
}

/// Claims and handles one whole batch (up to [`BATCH`] events) in one
/// transaction, however long it takes: for tests and commands that need the
/// events handled now. The handlers of [`run`] keep to the budgets.
pub async fn batch(rt: &Runtime) -> Result<Batch, HandleError> {
    batch_of(rt, BATCH, None, &mut Horizon::default()).await
}

/// Where a handler's claim starts reading the queue: the first id its last
/// claim found. Every unprocessed event was at or after it then, except
/// those the claim leaves out on purpose (a sender backing off, rows another
/// batch holds, which return if that batch rolls back) and, on PostgreSQL,
/// a callback whose commit came after a later id's. Those wait at most
/// [`RESCAN_EVERY`], when the claim reads from the start again (as it does
/// when it finds nothing from the horizon).
///
/// Without it, on PostgreSQL, the claim walked every entry of the queue's
/// partial index that a handled event left behind until autovacuum came by:
/// 42 ms a claim after 31,000 events in the morning peak (`BENCHMARKS.md`).
/// Order per sender does not depend on it: the sender rule reads each
/// sender's unprocessed events through its own index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Horizon {
    from: i64,
    read_at: Option<Instant>,
}

impl Horizon {
    /// The id to read from now: 0 when the last full read is too old.
    fn start(&mut self) -> i64 {
        match self.read_at {
            Some(at) if at.elapsed() < RESCAN_EVERY => self.from,
            _ => {
                self.from = 0;
                self.read_at = Some(Instant::now());
                0
            }
        }
    }

    /// Forgets the horizon: the next claim reads from the start.
    fn reset(&mut self) {
        self.read_at = None;
    }
}

async fn batch_of(
    rt: &Runtime,
    limit: u64,
    arrivals: Option<&Arrivals>,
    horizon: &mut Horizon,
) -> Result<Batch, HandleError> {
    // Without savepoints first; if an event failed, again with them.
    for isolation in [Isolation::Batch, Isolation::Event] {
        if let Some(b) = try_batch(rt, limit, arrivals, horizon, isolation).await? {
            wake_sender(rt, &b);
            return Ok(b);
        }
    }
    unreachable!("a batch with savepoints is never rolled back whole for one event")
}

/// One batch in one transaction: `None` if it was rolled back because an
/// event failed under [`Isolation::Batch`].
async fn try_batch(
    rt: &Runtime,
    limit: u64,
    arrivals: Option<&Arrivals>,
    horizon: &mut Horizon,
    isolation: Isolation,
) -> Result<Option<Batch>, HandleError> {
    let db = &rt.db.orm;
    match rt.db.engine {
        Engine::Sqlite => {
            // One process owns the file: read without a lock, download, and
            // only then take the write lock. Where the time went (reading the
            // queue, downloads, the wait for the turn to write, handling, the
            // commit) is logged at debug level (`BENCHMARKS.md`, the soak).
            let began = Instant::now();
            let rows = claim(db, false, limit, horizon).await?;
            if rows.is_empty() {
                return Ok(Some(Batch::default()));
            }
            let claimed = Instant::now();
            let prepared = prepare_all(rt, rows).await;
            let ready = Instant::now();
            let txn = rt.db.write().await?;
            let turn = Instant::now();
            let yield_to = || arrivals.is_some_and(Arrivals::commit_waiting);
            let budget = arrivals.map_or(Duration::MAX, |_| SQLITE_BUDGET);
            let Some(b) = handle_all(rt, &txn, prepared, budget, &yield_to, isolation).await?
            else {
                txn.rollback().await?;
                return Ok(None);
            };
            let handled = Instant::now();
            txn.commit().await?;
            tracing::debug!(
                handled = b.handled,
                claim = ?(claimed - began),
                prepare = ?(ready - claimed),
                turn = ?(turn - ready),
                handle = ?(handled - turn),
                commit = ?handled.elapsed(),
                "where a batch's time went"
            );
            Ok(Some(b))
        }
        Engine::Postgres => {
            let txn = db.begin().await?;
            let rows = claim(&txn, true, limit, horizon).await?;
            if rows.is_empty() {
                txn.rollback().await?;
                return Ok(Some(Batch::default()));
            }
            let prepared = prepare_all(rt, rows).await;
            let budget = arrivals.map_or(Duration::MAX, |_| POSTGRES_BUDGET);
            let Some(b) = handle_all(rt, &txn, prepared, budget, &|| false, isolation).await?
            else {
                txn.rollback().await?;
                return Ok(None);
            };
            txn.commit().await?;
            Ok(Some(b))
        }
    }
}

/// How a batch keeps one event's failure from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: a failure rolls the whole batch back. Each event's
    /// row is found unprocessed once for the batch, and marked processed
    /// with its classification ([`Claim::Made`]).
    Batch,
    /// Each event in its own savepoint, claimed first ([`Claim::First`]): a
    /// failure rolls back that event alone.
    Event,
}

/// Wakes the outbox's sender after a batch that handled events committed
/// (most events queue a reply).
fn wake_sender(rt: &Runtime, b: &Batch) {
    if b.handled > 0 {
        rt.outbox_wake.notify_one();
    }
}

type Sender = (String, String);

/// The batch: the oldest unprocessed, due events (locked, skipping rows
/// another batch holds, when `lock`), less those whose sender has an
/// earlier event outside the batch still unprocessed (waiting after a
/// failure, or in another batch), in id order, read from `horizon` on.
async fn claim<C: sea_orm::ConnectionTrait>(
    conn: &C,
    lock: bool,
    limit: u64,
    horizon: &mut Horizon,
) -> Result<Vec<inbound_event::Model>, sea_orm::DbErr> {
    let from = horizon.start();
    let mut rows = claim_from(conn, lock, limit, from).await?;
    if rows.is_empty() && from > 0 {
        horizon.reset();
        rows = claim_from(conn, lock, limit, horizon.start()).await?;
    }
    if let Some(first) = rows.first() {
        horizon.from = first.id;
    }
    sender_order(conn, rows).await
}

/// The oldest unprocessed, due events from id `from` on, as [`claim`] takes
/// them before the sender rule.
async fn claim_from<C: sea_orm::ConnectionTrait>(
    conn: &C,
    lock: bool,
    limit: u64,
    from: i64,
) -> Result<Vec<inbound_event::Model>, sea_orm::DbErr> {
    let now = Utc::now();
    // People with an event waiting after a failure: rare, and left out of
    // the query so that their later events do not fill every batch.
    let backing_off: Vec<Sender> = match conn.get_database_backend() {
        // SQLite's planner, left to itself, reads this through the index of
        // `processed_at`: every unprocessed row, then each one's not_before,
        // so that each claim cost time in proportion to the backlog, and a
        // steady load the queue could not absorb at once slowed the handling
        // further (the soak in BENCHMARKS.md). The partial index holds only
        // the rows backing off.
        sea_orm::DbBackend::Sqlite => conn
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Sqlite,
                "SELECT DISTINCT tenant_id, from_user FROM inbound_events \
                 INDEXED BY ix_inbound_events_backing_off \
                 WHERE processed_at IS NULL AND not_before > ?",
                [now.into()],
            ))
            .await?
            .iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect::<Result<_, sea_orm::DbErr>>()?,
        _ => {
            inbound_event::Entity::find()
                .select_only()
                .column(Column::TenantId)
                .column(Column::FromUser)
                .distinct()
                .filter(Column::ProcessedAt.is_null())
                .filter(Column::NotBefore.gt(now))
                .into_tuple()
                .all(conn)
                .await?
        }
    };
    let mut query = inbound_event::Entity::find()
        .filter(Column::ProcessedAt.is_null())
        .filter(Column::Id.gte(from))
        .filter(
            Condition::any()
                .add(Column::NotBefore.is_null())
                .add(Column::NotBefore.lte(now)),
        );
    for (tenant, user) in &backing_off {
        query = query.filter(
            Condition::any()
                .add(Column::TenantId.ne(tenant.as_str()))
                .add(Column::FromUser.ne(user.as_str())),
        );
    }
    let mut query = query.order_by_asc(Column::Id).limit(limit);
    if lock {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    query.all(conn).await
}

/// `rows` less the events whose sender has an earlier unprocessed event
/// outside them.
async fn sender_order<C: sea_orm::ConnectionTrait>(
    conn: &C,
    rows: Vec<inbound_event::Model>,
) -> Result<Vec<inbound_event::Model>, sea_orm::DbErr> {
    let Some(last) = rows.last().map(|r| r.id) else {
        return Ok(rows);
    };
    // Every unprocessed event of these senders up to the last one taken
    // (another batch's included: they read as unprocessed until it commits).
    let users: HashSet<&str> = rows.iter().map(|r| r.from_user.as_str()).collect();
    let tenants: HashSet<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let mut waiting: Vec<(String, String, i64)> = Vec::new();
    for users in users.into_iter().collect::<Vec<_>>().chunks(500) {
        let part: Vec<(String, String, i64)> = inbound_event::Entity::find()
            .select_only()
            .column(Column::TenantId)
            .column(Column::FromUser)
            .column(Column::Id)
            .filter(Column::ProcessedAt.is_null())
            .filter(Column::TenantId.is_in(tenants.iter().copied()))
            .filter(Column::FromUser.is_in(users.iter().copied()))
            .filter(Column::Id.lte(last))
            .into_tuple()
            .all(conn)
            .await?;
        waiting.extend(part);
    }
    Ok(in_order(rows, waiting))
}

/// The events of `rows` whose sender has nothing unprocessed before them
/// outside `rows`: per sender, `rows`' events are taken in id order up to
/// the first of `waiting` (the sender's unprocessed ids) that `rows` lacks.
pub(crate) fn in_order(
    rows: Vec<inbound_event::Model>,
    waiting: Vec<(String, String, i64)>,
) -> Vec<inbound_event::Model> {
    let taken: HashSet<i64> = rows.iter().map(|r| r.id).collect();
    // Per sender, the first unprocessed id that is not in the batch.
    let mut first_gap: HashMap<Sender, i64> = HashMap::new();
    for (tenant, user, id) in waiting {
        if !taken.contains(&id) {
            let gap = first_gap.entry((tenant, user)).or_insert(id);
            *gap = (*gap).min(id);
        }
    }
    rows.into_iter()
        .filter(|r| {
            first_gap
                .get(&(r.tenant_id.clone(), r.from_user.clone()))
                .is_none_or(|gap| r.id < *gap)
        })
        .collect()
}

type Ready = (i64, Sender, Result<super::Prepared, HandleError>);

/// Reads and downloads for each event, a few at a time.
async fn prepare_all(rt: &Runtime, rows: Vec<inbound_event::Model>) -> Vec<Ready> {
    use futures::StreamExt as _;
    futures::stream::iter(rows)
        .map(|row| async move {
            let sender = (row.tenant_id.clone(), row.from_user.clone());
            (row.id, sender, prepare(rt, row).await)
        })
        .buffered(8)
        .collect()
        .await
}

/// Handles the prepared events in `txn` (`None`: one failed under
/// [`Isolation::Batch`], and `txn` must be rolled back); their evidence
/// leaves are appended together at the end (`evidence::log::deferring`).
async fn handle_all(
    rt: &Runtime,
    txn: &DatabaseTransaction,
    prepared: Vec<Ready>,
    budget: Duration,
    yield_to: &(dyn Fn() -> bool + Sync),
    isolation: Isolation,
) -> Result<Option<Batch>, HandleError> {
    // The batch's leaves are appended together at its end.
    crate::evidence::log::deferring(async {
        let Some(b) = handle_each(rt, txn, prepared, budget, yield_to, isolation).await? else {
            return Ok(None);
        };
        crate::evidence::log::flush_deferred(txn, rt.clock.now()).await?;
        Ok(Some(b))
    })
    .await
}

/// The ids of `prepared`'s events that are processed already (handled
/// since SQLite's unlocked read of the queue, by a punch import or a
/// command).
async fn processed_already(
    txn: &DatabaseTransaction,
    prepared: &[Ready],
) -> Result<HashSet<i64>, sea_orm::DbErr> {
    let ids: Vec<i64> = prepared.iter().map(|(id, _, _)| *id).collect();
    let done: Vec<i64> = inbound_event::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::Id.is_in(ids))
        .filter(Column::ProcessedAt.is_not_null())
        .into_tuple()
        .all(txn)
        .await?;
    Ok(done.into_iter().collect())
}

/// [`handle_all`]'s events, one by one, within the budget.
async fn handle_each(
    rt: &Runtime,
    txn: &DatabaseTransaction,
    prepared: Vec<Ready>,
    budget: Duration,
    yield_to: &(dyn Fn() -> bool + Sync),
    isolation: Isolation,
) -> Result<Option<Batch>, HandleError> {
    let began = Instant::now();
    let mut b = Batch {
        claimed: prepared.len(),
        ..Batch::default()
    };
    // On PostgreSQL the claim locked the rows it found unprocessed; on
    // SQLite it read them without a lock, before this transaction.
    let done = match (isolation, rt.db.engine) {
        (Isolation::Batch, Engine::Sqlite) => processed_already(txn, &prepared).await?,
        _ => HashSet::new(),
    };
    // Senders whose event failed in this batch: their later ones wait.
    let mut stopped: HashSet<Sender> = HashSet::new();
    for (id, sender, ready) in prepared {
        // At least one event per batch, however slow.
        if b.handled + b.failed > 0
            && (began.elapsed() >= budget
                || (began.elapsed() >= SQLITE_TURN_AT_LEAST && yield_to()))
        {
            break;
        }
        if stopped.contains(&sender) || done.contains(&id) {
            continue;
        }
        let outcome = match ready {
            Ok(p) => {
                // One call of `apply` either way (each call site would add
                // its whole state to this future's).
                let savepoint = match isolation {
                    Isolation::Batch => None,
                    Isolation::Event => Some(txn.begin().await?),
                };
                let (conn, claim) = match &savepoint {
                    Some(s) => (s, Claim::First),
                    None => (txn, Claim::Made),
                };
                let mark = crate::evidence::log::deferred_len();
                match (apply(rt, conn, p, claim).await, savepoint) {
                    (Ok(Some(_)), Some(savepoint)) => {
                        savepoint.commit().await?;
                        b.handled += 1;
                        continue;
                    }
                    (Ok(Some(_)), None) => {
                        b.handled += 1;
                        continue;
                    }
                    // Handled meanwhile (a punch import, a second run).
                    (Ok(None), savepoint) => {
                        if let Some(savepoint) = savepoint {
                            savepoint.rollback().await?;
                        }
                        crate::evidence::log::discard_deferred(mark);
                        continue;
                    }
                    (Err(e), Some(savepoint)) => {
                        savepoint.rollback().await?;
                        crate::evidence::log::discard_deferred(mark);
                        e
                    }
                    // The transaction holds part of what the event wrote.
                    (Err(e), None) => {
                        tracing::debug!(id, error = %e, "an event failed in a batch without savepoints: the batch is rolled back and handled again, each event in a savepoint");
                        return Ok(None);
                    }
                }
            }
            Err(e) => e,
        };
        // A database that stopped answering is not the event's fault: the
        // whole batch is rolled back and tried again.
        if let HandleError::Db(sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_)) =
            outcome
        {
            return Err(outcome);
        }
        failed(txn, id, &outcome).await?;
        b.failed += 1;
        stopped.insert(sender);
    }
    Ok(Some(b))
}

/// Counts a failed attempt on event `id`: tried again after a back-off, or
/// given up after [`MAX_ATTEMPTS`].
async fn failed(
    txn: &DatabaseTransaction,
    id: i64,
    error: &HandleError,
) -> Result<(), sea_orm::DbErr> {
    let Some(row) = inbound_event::Entity::find_by_id(id).one(txn).await? else {
        return Ok(());
    };
    let attempts = row.attempts + 1;
    let now = Utc::now();
    let mut update = inbound_event::Entity::update_many()
        .col_expr(Column::Attempts, Expr::value(attempts))
        .col_expr(Column::LastError, Expr::value(error.to_string()))
        .filter(Column::Id.eq(id));
    if attempts >= MAX_ATTEMPTS {
        tracing::error!(id, attempts, %error, "gave up an inbound event: it failed every attempt; it is marked failed and its sender's later messages go on");
        update = update
            .col_expr(Column::ProcessedAt, Expr::value(now))
            .col_expr(Column::Classification, Expr::value("failed"));
    } else {
        let wait = backoff(attempts);
        tracing::warn!(id, attempts, %error, ?wait, "handling an inbound event failed; it is tried again later");
        let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        update = update.col_expr(Column::NotBefore, Expr::value(next));
    }
    update.exec(txn).await?;
    Ok(())
}

/// Events not handled yet: the queue's depth.
pub async fn waiting(rt: &Runtime) -> Result<u64, sea_orm::DbErr> {
    use sea_orm::PaginatorTrait as _;
    inbound_event::Entity::find()
        .filter(Column::ProcessedAt.is_null())
        .count(&rt.db.orm)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_reads_from_the_start_when_new_reset_or_old() {
        let mut h = Horizon::default();
        assert_eq!(h.start(), 0, "a new horizon reads from the start");
        h.from = 120;
        assert_eq!(h.start(), 120, "then from the first id the claim found");
        h.reset();
        assert_eq!(h.start(), 0, "after a reset, from the start again");
        h.from = 120;
        h.read_at = Instant::now().checked_sub(RESCAN_EVERY);
        assert_eq!(h.start(), 0, "and once the last full read is old");
        assert_eq!(h.from, 0);
    }

    #[rstest::rstest]
    #[case(1, 2)]
    #[case(2, 4)]
    #[case(3, 8)]
    #[case(9, 512)]
    #[case(10, 600)]
    #[case(40, 600)]
    fn backoff_doubles_up_to_ten_minutes(#[case] attempts: i32, #[case] secs: u64) {
        assert_eq!(backoff(attempts), Duration::from_secs(secs));
    }

    #[rstest::rstest]
    #[case(0, 0, 16)]
    #[case(3, 1, 16)]
    #[case(20, 0, 40)]
    #[case(100, 0, 200)]
    #[case(200, 56, 256)]
    fn a_batch_claims_about_twice_what_the_last_one_handled(
        #[case] handled: usize,
        #[case] failed: usize,
        #[case] next: u64,
    ) {
        let b = Batch {
            claimed: 256,
            handled,
            failed,
        };
        assert_eq!(next_limit(&b), next);
    }
}
