//! The outbox is the queue of outbound work: no job row per message. Each
//! process runs one sender ([`run`]):
//!
//! 1. **Claim**, in one transaction: the oldest due rows (`pending` with
//!    `not_before` passed, or `sending` with an attempt so old it counts as
//!    cut off), locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL so that
//!    instances take disjoint batches. Rows that must end unsent (their
//!    case moved on, their tenant is gone, an SMS was cut off) are ended
//!    one by one; chat rows are held to each member's
//!    budget (the platform drops what is over it), counting what is in
//!    flight and what this batch takes, under a lock per member on
//!    PostgreSQL; the taken rows are marked `sending` (the attempt on
//!    record) by one statement.
//! 2. **Send** each taken row as soon as one of `delivery.sends_at_once`
//!    slots is free; the next claim comes as soon as there is room, without
//!    waiting for a batch's slowest request.
//! 3. **Record** receipts as they come (rows marked sent, their evidence
//!    leaves, read checks): all those waiting in one transaction, a group
//!    commit. Failures, retries and give-ups are rare and each is recorded
//!    as it happens.
//!
//! A crash at any point loses nothing: an unclaimed row is still due, and a
//! claimed one is sent again once its attempt counts as cut off, under the
//! platform's own guard (an SMS never is: see [`super::Verdict::SmsCutOff`]).
//!
//! `not_before` is the system's time (not the runtime's clock, which a demo
//! or a test may move by days), like a job's run time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{outbox, outbox::Column};
use sea_orm::sea_query::{Expr, ExprTrait as _, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::{Attempt, OnGiveUp, OutboxStatus, Payload, Verdict, due_after};
use crate::db::Engine;
use crate::runtime::{Runtime, Tenant};

/// Rows claimed at most per batch.
pub const BATCH: u64 = 256;
/// How often an idle sender looks for due rows (retries come due, other
/// instances and commands enqueue without waking it).
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The wait after a batch failed (the database is away, say).
const AFTER_ERROR: Duration = Duration::from_secs(1);
/// How far a row that the claim found needs ending without a send (its
/// case moved, its tenant is gone …) is put off, so that no other instance
/// takes it while this one ends it.
const SETTLING: Duration = Duration::from_secs(60);

/// Rows claimed but not yet recorded at most, across batches: the sender
/// claims again as soon as there is room, without waiting for a batch's
/// slowest request.
const UNFINISHED_AT_MOST: usize = 2 * BATCH as usize;
/// Receipts recorded at most per transaction.
const RECORD_AT_MOST: usize = 512;
/// How long a stopping sender waits for its requests in flight; a row
/// whose request is dropped stays `sending` and is sent again once cut off.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the sender's parts share: how many claimed rows are unfinished
/// (being sent, or sent and waiting to be recorded), and a wake-up when
/// one finishes.
#[derive(Default)]
struct Progress {
    unfinished: AtomicUsize,
    finished: Notify,
}

impl Progress {
    fn finish(&self, n: usize) {
        self.unfinished.fetch_sub(n, Ordering::Relaxed);
        self.finished.notify_one();
    }
}

/// Runs the sender until `stop` holds true. It claims due rows in batches
/// whenever fewer than [`UNFINISHED_AT_MOST`] are unfinished, sends each
/// claimed row as soon as one of `delivery.sends_at_once` slots is free,
/// and records receipts as they come, all those waiting in one transaction
/// (a group commit). When nothing is due it waits for `wake` (an inbound
/// batch committed replies) or [`POLL_EVERY`].
pub async fn run(
    rt: Runtime,
    on_give_up: &'static (dyn OnGiveUp + Send + Sync),
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let progress = Arc::new(Progress::default());
    let slots = Arc::new(Semaphore::new(
        usize::try_from(rt.delivery.sends_at_once)
            .unwrap_or(1)
            .max(1),
    ));
    let (receipts, received) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(rt.clone(), received, progress.clone()));
    let mut sends = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while sends.try_join_next().is_some() {}
        let room = UNFINISHED_AT_MOST.saturating_sub(progress.unfinished.load(Ordering::Relaxed));
        if room == 0 {
            tokio::select! {
                _ = progress.finished.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let claimed = match claim(&rt, Ord::min(room, BATCH as usize) as u64).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "claiming a batch of the outbox failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(AFTER_ERROR) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if claimed.found > 0 {
            tracing::debug!(
                found = claimed.found,
                to_send = claimed.to_send.len(),
                to_end = claimed.to_end.len(),
                put_off = claimed.put_off,
                "outbox batch"
            );
        }
        progress
            .unfinished
            .fetch_add(claimed.to_send.len(), Ordering::Relaxed);
        for (row, tenant, payload) in claimed.to_send {
            let (rt, slots, receipts, progress) = (
                rt.clone(),
                slots.clone(),
                receipts.clone(),
                progress.clone(),
            );
            sends.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let id = row.id;
                match super::attempt(&rt, on_give_up, &tenant, row, &payload).await {
                    // The recorder finishes it.
                    Ok(Attempt::Sent(sent)) => {
                        if receipts.send(*sent).is_err() {
                            progress.finish(1);
                        }
                        return;
                    }
                    Ok(Attempt::Over(how)) => tracing::debug!(id, ?how, "outbox row not sent"),
                    // Its row stays `sending` and is taken again once cut off.
                    Err(e) => tracing::error!(id, error = %e, "recording an attempt failed"),
                }
                progress.finish(1);
            });
        }
        for (row, verdict) in claimed.to_end {
            if let Err(e) = super::settle(&rt, on_give_up, &row, verdict).await {
                tracing::error!(id = row.id, error = %e, "ending an outbox row failed");
            }
        }
        if claimed.found > 0 {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    let in_flight = async { while sends.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, in_flight).await.is_err() {
        tracing::warn!(grace = ?STOP_GRACE, "outbox requests still in flight at stop; their rows are sent again once cut off");
        sends.abort_all();
    }
    drop(receipts);
    let _ = recorder.await;
}

/// Records the receipts that come from the sends, all those waiting in one
/// transaction, until every sender of receipts is gone. A transaction that
/// fails leaves its rows `sending`: they are sent again once cut off, under
/// the platform's guard, as after a crash.
async fn record(
    rt: Runtime,
    mut received: mpsc::UnboundedReceiver<super::Sent>,
    progress: Arc<Progress>,
) {
    let mut waiting = Vec::new();
    while received.recv_many(&mut waiting, RECORD_AT_MOST).await > 0 {
        let n = waiting.len();
        if let Err(e) = super::record_sent(&rt, std::mem::take(&mut waiting)).await {
            tracing::error!(receipts = n, error = %e, "recording receipts failed; their rows are sent again once cut off");
        }
        progress.finish(n);
    }
}

/// What a claim found.
struct Claimed {
    found: usize,
    /// Marked `sending`: to send now.
    to_send: Vec<(outbox::Model, Arc<Tenant>, Payload)>,
    /// To end without sending (put off by [`SETTLING`] meanwhile).
    to_end: Vec<(outbox::Model, Verdict)>,
    put_off: usize,
}

/// Claims at most `limit` due rows (see the module's documentation).
async fn claim(rt: &Runtime, limit: u64) -> Result<Claimed, DbErr> {
    let now = rt.clock.now();
    let due = Utc::now();
    let stale = now - super::cut_off_after(rt);
    let txn = rt.db.write().await?;
    let lock = |q: sea_orm::Select<outbox::Entity>| match rt.db.engine {
        Engine::Sqlite => q,
        Engine::Postgres => q.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked),
    };
    // Two queries, each served by the index on (status, not_before): the
    // cut-off attempts first (rare), then the due rows.
    let mut rows = lock(
        outbox::Entity::find()
            .filter(Column::Status.eq(OutboxStatus::Sending.as_str()))
            .filter(Column::NotBefore.lte(due))
            .filter(
                sea_orm::Condition::any()
                    .add(Column::ClaimedAt.is_null())
                    .add(Column::ClaimedAt.lt(stale)),
            )
            .order_by_asc(Column::Id)
            .limit(limit),
    )
    .all(&txn)
    .await?;
    let more = limit.saturating_sub(rows.len() as u64);
    if more > 0 {
        let pending = lock(
            outbox::Entity::find()
                .filter(Column::Status.eq(OutboxStatus::Pending.as_str()))
                .filter(Column::NotBefore.lte(due))
                .order_by_asc(Column::NotBefore)
                .order_by_asc(Column::Id)
                .limit(more),
        )
        .all(&txn)
        .await?;
        rows.extend(pending);
    }
    let found = rows.len();
    let mut go = Vec::new();
    let mut to_end = Vec::new();
    for row in rows {
        match super::judge(rt, &txn, &row, now).await? {
            Verdict::Go(tenant, payload) => go.push((row, tenant, payload)),
            verdict => to_end.push((row, verdict)),
        }
    }
    let budgets = budgets(rt, &txn, &go, now).await?;
    let mut left: HashMap<(String, String), u64> = HashMap::new();
    let mut to_send = Vec::new();
    let mut put_off: Vec<(i64, DateTime<Utc>)> = Vec::new();
    for (row, tenant, payload) in go {
        if payload.channel() == crate::cases::Channel::Chat {
            let member = (row.tenant_id.clone(), row.recipient.clone());
            let budget = budgets.get(&member).copied().unwrap_or_default();
            let left = left.entry(member).or_insert(budget.left);
            if *left == 0 {
                put_off.push((row.id, due_after(budget.wait)));
                continue;
            }
            *left -= 1;
        }
        to_send.push((row, tenant, payload));
    }
    let ids: Vec<i64> = to_send.iter().map(|(r, ..)| r.id).collect();
    for ids in ids.chunks(500) {
        outbox::Entity::update_many()
            .col_expr(Column::Status, Expr::value(OutboxStatus::Sending.as_str()))
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .col_expr(Column::ClaimedAt, Expr::value(now))
            .filter(Column::Id.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
    }
    let settling = due_after(SETTLING);
    for (id, until) in put_off
        .iter()
        .copied()
        .chain(to_end.iter().map(|(r, _)| (r.id, settling)))
    {
        outbox::Entity::update_many()
            .col_expr(Column::NotBefore, Expr::value(until))
            .filter(Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(Claimed {
        found,
        to_send,
        to_end,
        put_off: put_off.len(),
    })
}

/// A member's chat budget now: how many more messages may go, and how long
/// until one more may once none may.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    left: u64,
    wait: Duration,
}

/// The budget of each member that a chat row of `go` is for: the limit
/// less what was sent to them in the window and what is in flight (rows
/// of `go` excepted: a cut-off row of theirs is `sending`). On PostgreSQL
/// each member is locked first, in one order, until the claim commits, so
/// that two instances never both spend one member's last message.
async fn budgets<C: ConnectionTrait>(
    rt: &Runtime,
    conn: &C,
    go: &[(outbox::Model, Arc<Tenant>, Payload)],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, String), Budget>, DbErr> {
    let chat: Vec<&outbox::Model> = go
        .iter()
        .filter(|(_, _, p)| p.channel() == crate::cases::Channel::Chat)
        .map(|(r, ..)| r)
        .collect();
    let members: BTreeSet<(String, String)> = chat
        .iter()
        .map(|r| (r.tenant_id.clone(), r.recipient.clone()))
        .collect();
    if members.is_empty() {
        return Ok(HashMap::new());
    }
    if rt.db.engine == Engine::Postgres {
        let keys: Vec<String> = members.iter().map(|(t, r)| format!("{t}:{r}")).collect();
        for keys in keys.chunks(1000) {
            let values: Vec<String> = (1..=keys.len()).map(|n| format!("(${n})")).collect();
            // The keys in order (OFFSET 0 keeps the sort below the locks).
            let sql = format!(
                "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM \
                 (SELECT k FROM (VALUES {}) AS t(k) ORDER BY k OFFSET 0) s",
                values.join(", ")
            );
            conn.execute_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                keys.iter().map(|k| k.clone().into()),
            ))
            .await?;
        }
    }
    let window =
        chrono::Duration::seconds(i64::try_from(rt.delivery.member_window_secs).unwrap_or(60));
    let mine: std::collections::HashSet<i64> = go.iter().map(|(r, ..)| r.id).collect();
    let mut recent: HashMap<(String, String), Vec<Option<DateTime<Utc>>>> = HashMap::new();
    let mut count = |rows: Vec<(i64, String, String, Option<DateTime<Utc>>)>| {
        for (id, tenant, recipient, sent_at) in rows {
            let member = (tenant, recipient);
            if !mine.contains(&id) && members.contains(&member) {
                recent.entry(member).or_default().push(sent_at);
            }
        }
    };
    let columns = |q: sea_orm::Select<outbox::Entity>| {
        q.select_only()
            .column(Column::Id)
            .column(Column::TenantId)
            .column(Column::Recipient)
            .column(Column::SentAt)
            .filter(Column::Channel.eq("chat"))
    };
    // Sent in the window or in flight, per tenant (the index on tenant,
    // recipient and channel), in one statement: one snapshot, so that a
    // receipt committed meanwhile (`sending` becoming `sent`) is not missed
    // between two reads on PostgreSQL.
    let tenants: BTreeSet<&str> = members.iter().map(|(t, _)| t.as_str()).collect();
    for tenant in tenants {
        let recipients: Vec<&str> = members
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, r)| r.as_str())
            .collect();
        for part in recipients.chunks(500) {
            let rows = columns(outbox::Entity::find())
                .filter(Column::TenantId.eq(tenant))
                .filter(Column::Recipient.is_in(part.iter().copied()))
                .filter(
                    sea_orm::Condition::any()
                        .add(Column::SentAt.gt(now - window))
                        .add(Column::Status.eq(OutboxStatus::Sending.as_str())),
                )
                .into_tuple()
                .all(conn)
                .await?;
            count(rows);
        }
    }
    let limit = rt.delivery.member_limit;
    let cap = Duration::from_secs(rt.delivery.max_backoff_secs);
    Ok(members
        .into_iter()
        .map(|member| {
            let sent = recent.remove(&member).unwrap_or_default();
            // Once the oldest in the window leaves it, one more may go.
            let wait = match sent.iter().flatten().min() {
                Some(oldest) => (*oldest + window + chrono::Duration::milliseconds(100) - now)
                    .to_std()
                    .unwrap_or(Duration::from_millis(100)),
                None => window.to_std().unwrap_or(Duration::from_secs(60)),
            };
            let budget = Budget {
                left: limit.saturating_sub(sent.len() as u64),
                wait: Ord::min(wait, cap),
            };
            (member, budget)
        })
        .collect())
}
