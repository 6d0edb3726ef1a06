//! The inbox: every accepted callback becomes one `inbound_events` row.
//!
//! Writes go through a group committer: a callback's row is acknowledged only
//! after the transaction holding it has committed, and all callbacks that
//! arrived while the previous commit was flushing share the next transaction
//! (one fsync for many callbacks). The rows themselves are the queue of
//! inbound work (`conversation::queue`): a commit of new rows wakes a
//! handler, and no job row is written per callback.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::inbound_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::db::{Database, Engine};
use crate::platform::InboundEvent;

/// Most rows written in one statement (SQLite allows 32,766 bound values).
const MAX_BATCH: usize = 1000;
/// Writes waiting for a commit before new ones are pushed back.
const QUEUE_DEPTH: usize = 8192;

/// A callback about to be stored.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub tenant_id: String,
    pub platform: &'static str,
    pub msg_key: String,
    pub kind: &'static str,
    pub from_user: String,
    pub content: Option<String>,
    /// The parsed event as JSON.
    pub fields: String,
    pub platform_time: i64,
    pub raw_query: String,
    pub raw_body: String,
    pub plaintext: String,
    pub received_at: DateTime<Utc>,
}

impl NewInbound {
    /// The row for a parsed event and the request it came in.
    pub fn new(
        tenant_id: &str,
        platform: &'static str,
        event: &InboundEvent,
        raw_query: String,
        raw_body: String,
        plaintext: String,
        received_at: DateTime<Utc>,
    ) -> NewInbound {
        NewInbound {
            tenant_id: tenant_id.to_owned(),
            platform,
            msg_key: event.dedup_key.clone(),
            kind: event.kind.name(),
            from_user: event.sender.clone(),
            content: event.text().map(str::to_owned),
            fields: serde_json::to_string(event).unwrap_or_default(),
            platform_time: event.sent_at,
            raw_query,
            raw_body,
            plaintext,
            received_at,
        }
    }
}

/// What happened to a callback handed to [`Inbox::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new row, committed.
    New,
    /// The same delivery was already stored (a platform retry).
    Duplicate,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum InboxError {
    #[error("the inbox is shutting down")]
    Closed,
    #[error("could not commit: {0}")]
    Commit(String),
    #[error("not committed within {0:?}")]
    TimedOut(std::time::Duration),
}

/// A new callback row waiting for the next group commit.
struct Work {
    row: Box<NewInbound>,
    done: oneshot::Sender<Result<Stored, InboxError>>,
}

/// Hands writes to the group committer(s). All of the inbox's writes go
/// through here, so that on SQLite one connection writes and many callbacks
/// share one fsync instead of queueing for the lock one by one.
#[derive(Clone)]
pub struct Inbox {
    tx: mpsc::Sender<Work>,
    arrivals: Arc<Arrivals>,
}

/// What the inbox tells the handlers of `conversation::queue`: that new
/// rows were committed, and whether a commit of callbacks is waiting for
/// SQLite's write lock (a handler then ends its batch, so that the
/// acknowledgements do not wait behind it).
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Notified after each commit that stored new rows.
    pub committed: Notify,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Arrivals {
    /// Whether a commit of callbacks waits for the write lock.
    pub fn commit_waiting(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Acquire) > 0
    }
}

impl Inbox {
    /// Starts the committers: one on SQLite (one writer at a time anyway),
    /// several on PostgreSQL so that commits overlap. They stop when every
    /// `Inbox` clone is dropped and the queue is drained.
    pub fn start(db: Database) -> (Inbox, tokio::task::JoinSet<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        let committers = match db.engine {
            Engine::Sqlite => 1,
            Engine::Postgres => 4,
        };
        let arrivals = Arc::new(Arrivals::default());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..committers {
            set.spawn(commit_loop(db.clone(), rx.clone(), arrivals.clone()));
        }
        (Inbox { tx, arrivals }, set)
    }

    /// What the handlers of `conversation::queue` wait on and watch.
    pub fn arrivals(&self) -> Arc<Arrivals> {
        self.arrivals.clone()
    }

    /// Stores one callback; returns once it is durably committed.
    pub async fn store(&self, row: NewInbound) -> Result<Stored, InboxError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Work {
                row: Box::new(row),
                done,
            })
            .await
            .map_err(|_| InboxError::Closed)?;
        wait.await.map_err(|_| InboxError::Closed)?
    }
}

/// One tenant's events from a [`crate::platform::Listener`], stored like
/// callbacks (the raw frame as the body, no query).
pub struct TenantSink {
    pub inbox: Inbox,
    pub tenant_id: String,
    pub platform: &'static str,
}

#[async_trait::async_trait]
impl crate::platform::EventSink for TenantSink {
    async fn store(&self, event: &InboundEvent, raw: &str, plaintext: &str) -> Result<(), String> {
        let (raw, plaintext) = match &event.own_part {
            Some(own) => (own.as_str(), own.as_str()),
            None => (raw, plaintext),
        };
        let row = NewInbound::new(
            &self.tenant_id,
            self.platform,
            event,
            String::new(),
            raw.to_owned(),
            plaintext.to_owned(),
            Utc::now(),
        );
        self.inbox
            .store(row)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

type DeliveryKey = (String, String, String);

async fn commit_loop(db: Database, rx: Arc<Mutex<mpsc::Receiver<Work>>>, arrivals: Arc<Arrivals>) {
    let mut batch: Vec<Work> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // Take everything that queued up while the last commit flushed.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let mut rows: Vec<&NewInbound> = batch.iter().map(|w| &*w.row).collect();
        // One order for every batch: two instances inserting the same
        // deliveries (a platform retry sent to both) then wait for each
        // other instead of deadlocking on the unique index.
        rows.sort_by(|a, b| {
            (&a.tenant_id, a.platform, &a.msg_key).cmp(&(&b.tenant_id, b.platform, &b.msg_key))
        });
        let result = match db.engine {
            Engine::Sqlite => commit_sqlite(&db, &rows, &arrivals).await,
            Engine::Postgres => commit_postgres(&db, &rows).await,
        };
        match result {
            Ok(mut inserted) => {
                if !inserted.is_empty() {
                    arrivals.committed.notify_one();
                }
                for Work { row, done } in batch.drain(..) {
                    let key = (row.tenant_id, row.platform.to_owned(), row.msg_key);
                    // Within one batch only the first copy of a delivery is new.
                    let outcome = if inserted.remove(&key) {
                        Stored::New
                    } else {
                        Stored::Duplicate
                    };
                    let _ = done.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "inbox commit failed");
                let err = InboxError::Commit(e.to_string());
                for Work { done, .. } in batch.drain(..) {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }
}

const INSERT: &str = "INSERT INTO inbound_events (tenant_id, platform, msg_key, kind, from_user, content, fields, platform_time, raw_query, raw_body, plaintext, received_at) ";
const ON_CONFLICT: &str =
    " ON CONFLICT (tenant_id, platform, msg_key) DO NOTHING RETURNING tenant_id, platform, msg_key";

fn insert_rows<DB>(rows: &[&NewInbound]) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> DateTime<Utc>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = QueryBuilder::new(INSERT);
    qb.push_values(rows, |mut b, r| {
        b.push_bind(r.tenant_id.as_str())
            .push_bind(r.platform)
            .push_bind(r.msg_key.as_str())
            .push_bind(r.kind)
            .push_bind(r.from_user.as_str())
            .push_bind(r.content.as_deref())
            .push_bind(r.fields.as_str())
            .push_bind(r.platform_time)
            .push_bind(r.raw_query.as_str())
            .push_bind(r.raw_body.as_str())
            .push_bind(r.plaintext.as_str())
            .push_bind(r.received_at);
    });
    qb.push(ON_CONFLICT);
    qb
}

fn keys_of(inserted: Vec<(String, String, String)>) -> HashSet<DeliveryKey> {
    inserted.into_iter().collect()
}

async fn commit_sqlite(
    db: &Database,
    rows: &[&NewInbound],
    arrivals: &Arrivals,
) -> Result<HashSet<DeliveryKey>, sqlx::Error> {
    use std::sync::atomic::Ordering;
    // The first turn of the one writer, then IMMEDIATE: the write lock up
    // front instead of failing on upgrade. While it waits, a handler's batch
    // ends at its next event.
    arrivals.waiting.fetch_add(1, Ordering::AcqRel);
    let turn = db.first_turn().await;
    let began = db.sqlite().begin_with("BEGIN IMMEDIATE").await;
    arrivals.waiting.fetch_sub(1, Ordering::AcqRel);
    let mut tx = began?;
    let mut keys = HashSet::new();
    if !rows.is_empty() {
        let inserted = insert_rows::<Sqlite>(rows)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await?;
        keys = keys_of(inserted);
    }
    tx.commit().await?;
    drop(turn);
    Ok(keys)
}

async fn commit_postgres(
    db: &Database,
    rows: &[&NewInbound],
) -> Result<HashSet<DeliveryKey>, sqlx::Error> {
    let mut tx = db.postgres().begin().await?;
    let mut keys = HashSet::new();
    if !rows.is_empty() {
        let inserted = insert_rows::<Postgres>(rows)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await?;
        keys = keys_of(inserted);
    }
    tx.commit().await?;
    Ok(keys)
}

/// A tenant's events, oldest first.
pub async fn list(
    db: &Database,
    tenant_id: &str,
) -> Result<Vec<inbound_event::Model>, sea_orm::DbErr> {
    inbound_event::Entity::find()
        .filter(inbound_event::Column::TenantId.eq(tenant_id))
        .order_by_asc(inbound_event::Column::Id)
        .all(&db.orm)
        .await
}
