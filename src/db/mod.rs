//! Database connection: the embedded SQLite file (WAL, `synchronous=FULL` on
//! every connection) or PostgreSQL; one pool shared by sea-orm and apalis.
//! On SQLite, write transactions take turns of the one writer ([`writer`],
//! [`Database::write`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Which engine a [`Database`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub mod writer;

pub use writer::Turn;

/// The one database: sea-orm on top of the same sqlx pool apalis uses.
#[derive(Debug, Clone)]
pub struct Database {
    pub orm: DatabaseConnection,
    pub engine: Engine,
    /// The turns to write, on SQLite (see [`writer`]).
    pub writer: Arc<writer::Writer>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url `{url}` is not valid: {source}")]
    Url { url: String, source: sqlx::Error },
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error(transparent)]
    Orm(#[from] sea_orm::DbErr),
}

impl Database {
    /// Connects; for SQLite every pooled connection gets WAL and
    /// `synchronous=FULL`, so an acknowledged callback survives power loss.
    pub async fn connect(url: &str) -> Result<Database, DbError> {
        let bad_url = |source| DbError::Url {
            url: redact_url(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(bad_url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true)
                // 8 MiB of page cache per connection (8 connections): the
                // hot index pages of the inbox and outbox stay in memory; the
                // rest is the kernel's page cache, a read away. At 64 MiB the
                // caches of the pool alone took 512 MiB under the morning
                // peak's load.
                .pragma("cache_size", "-8192")
                // Deleted and overwritten content is zeroed, not left in free
                // space: after `privacy forget` no old copy of a row lingers
                // in the file (every connection, since any update frees the
                // row's previous version).
                .pragma("secure_delete", "ON")
                // Prepared statements kept per connection (sqlx's default is
                // 100). Batch writes make a statement per row count, and a
                // statement of hundreds of rows holds a large program: at
                // 100, the pool's statements held 70-100 MiB of SQLite's
                // memory in the morning peak; at 16, 8 MiB, at the same
                // speed (BENCHMARKS.md).
                .statement_cache_capacity(16);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let mut handle = conn.lock_handle().await?;
                        set_busy_handler(handle.as_raw_handle());
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map_err(DbError::Connect)?;
            Ok(Database {
                orm: SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
                engine: Engine::Sqlite,
                writer: Arc::default(),
            })
        } else {
            let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
            // sqlx sets TCP_NODELAY on its sockets again since 0.9.1 (0.9.0
            // did not: every multi-row INSERT waited 40 ms for a delayed ACK).
            // Workers wait for a connection as long as it takes a busy pool;
            // a callback does not (`ingress::STORE_WAIT`).
            let pool = PgPoolOptions::new()
                .max_connections(24)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(DbError::Connect)?;
            Ok(Database {
                orm: SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                engine: Engine::Postgres,
                writer: Arc::default(),
            })
        }
    }

    /// Applies rollcall's migrations and the job queue's own.
    pub async fn migrate(&self) -> Result<(), DbError> {
        Migrator::up(&self.orm, None).await?;
        migrate_jobs(self)
            .await
            .map_err(|e| DbError::Migrate(e.to_string()))
    }

    /// Connects and migrates. On SQLite the pool is then opened anew, so that
    /// every connection starts with the final schema and planner statistics.
    pub async fn open(url: &str) -> Result<Database, DbError> {
        let db = Database::connect(url).await?;
        db.migrate().await?;
        match db.engine {
            Engine::Postgres => Ok(db),
            Engine::Sqlite => {
                db.close().await;
                Database::connect(url).await
            }
        }
    }

    /// The SQLite pool (only on [`Engine::Sqlite`]).
    pub fn sqlite(&self) -> &sqlx::SqlitePool {
        self.orm.get_sqlite_connection_pool()
    }

    /// The PostgreSQL pool (only on [`Engine::Postgres`]).
    pub fn postgres(&self) -> &sqlx::PgPool {
        self.orm.get_postgres_connection_pool()
    }

    /// Whether the database answers.
    /// Whether the database answers within 2 s (`/readyz` must answer a
    /// balancer quickly, whatever the database does).
    pub async fn ping(&self) -> bool {
        let select = self.orm.execute_unprepared("SELECT 1");
        matches!(
            tokio::time::timeout(Duration::from_secs(2), select).await,
            Ok(Ok(_))
        )
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(self) {
        match self.engine {
            Engine::Sqlite => self.sqlite().close().await,
            Engine::Postgres => self.postgres().close().await,
        }
    }
}

/// How long a writer waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it sleeps between tries.
const BUSY_RETRY: Duration = Duration::from_micros(250);

/// SQLite's own busy handler (behind `busy_timeout`) backs off in steps up to
/// 100 ms, so the group committer, waiting behind a job queue transaction of
/// a few milliseconds, would sleep far longer than the lock is held. This one
/// retries every 250 µs for up to 30 s. It runs on sqlx's connection thread.
extern "C" fn retry_busy(_: *mut std::ffi::c_void, attempts: std::ffi::c_int) -> std::ffi::c_int {
    let limit = (BUSY_TIMEOUT.as_micros() / BUSY_RETRY.as_micros()) as std::ffi::c_int;
    if attempts >= limit {
        return 0;
    }
    std::thread::sleep(BUSY_RETRY);
    1
}

fn set_busy_handler(db: std::ptr::NonNull<libsqlite3_sys::sqlite3>) {
    // SAFETY: `db` is the open connection sqlx handed us while it holds the
    // connection's lock; the handler is a plain function without state.
    unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db.as_ptr(), Some(retry_busy), std::ptr::null_mut());
    }
}

/// A write transaction: sea-orm's, holding its turn of the [`writer`] on
/// SQLite until it commits or is dropped. It derefs to the transaction.
pub struct WriteTxn {
    /// `None` once committed or rolled back.
    txn: Option<sea_orm::DatabaseTransaction>,
    turn: Option<writer::Permit>,
}

impl std::ops::Deref for WriteTxn {
    type Target = sea_orm::DatabaseTransaction;
    fn deref(&self) -> &Self::Target {
        self.txn
            .as_ref()
            .expect("a WriteTxn is used only before it ends")
    }
}

/// Dropped without commit or rollback (an error returned early, a task
/// cancelled): sea-orm would only queue the rollback on the connection, and
/// the next writer would find the lock still held. The rollback runs first,
/// then the turn goes on.
impl Drop for WriteTxn {
    fn drop(&mut self) {
        let (Some(txn), turn) = (self.txn.take(), self.turn.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = txn.rollback().await;
                    drop(turn);
                });
            }
            Err(_) => drop((txn, turn)),
        }
    }
}

/// So that `.exec(&txn)` and the functions taking any connection take it.
#[async_trait::async_trait]
impl ConnectionTrait for WriteTxn {
    fn get_database_backend(&self) -> sea_orm::DbBackend {
        (**self).get_database_backend()
    }

    async fn execute_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        (**self).execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, sea_orm::DbErr> {
        (**self).execute_unprepared(sql).await
    }

    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, sea_orm::DbErr> {
        (**self).query_one_raw(stmt).await
    }

    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
        (**self).query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        (**self).support_returning()
    }
}

impl WriteTxn {
    /// Commits; the turn goes on once the commit has ended.
    pub async fn commit(mut self) -> Result<(), sea_orm::DbErr> {
        let txn = self.txn.take().expect("a WriteTxn ends once");
        let done = txn.commit().await;
        drop(self.turn.take());
        done
    }

    pub async fn rollback(mut self) -> Result<(), sea_orm::DbErr> {
        let txn = self.txn.take().expect("a WriteTxn ends once");
        let done = txn.rollback().await;
        drop(self.turn.take());
        done
    }
}

impl Database {
    /// Begins a transaction that writes. On SQLite it first waits for its
    /// turn of the one writer (in order of arrival), then takes the write
    /// lock at once (`BEGIN IMMEDIATE`), since a read transaction cannot
    /// become a writer once another connection has committed (WAL). On
    /// PostgreSQL it is a plain transaction.
    pub async fn write(&self) -> Result<WriteTxn, sea_orm::DbErr> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        match self.engine {
            Engine::Sqlite => {
                let turn = self.writer.turn(Turn::InOrder).await;
                let txn = self
                    .orm
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?;
                Ok(WriteTxn {
                    txn: Some(txn),
                    turn: Some(turn),
                })
            }
            Engine::Postgres => Ok(WriteTxn {
                txn: Some(self.orm.begin().await?),
                turn: None,
            }),
        }
    }

    /// The group commit's turn on SQLite (before every other waiter); `None`
    /// on PostgreSQL, where writers do not take turns.
    pub async fn first_turn(&self) -> Option<writer::Permit> {
        match self.engine {
            Engine::Sqlite => Some(self.writer.turn(Turn::First).await),
            Engine::Postgres => None,
        }
    }
}

/// The URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Creates the job tables (apalis' own migrations; not its `setup()`, which
/// turns SQLite's `synchronous` off).
async fn migrate_jobs(db: &Database) -> Result<(), sqlx::Error> {
    match db.engine {
        Engine::Sqlite => {
            SqliteStorage::<()>::migrations().run(db.sqlite()).await?;
            tune_sqlite_planner(db.sqlite()).await
        }
        Engine::Postgres => Ok(PostgresStorage::<()>::migrations()
            .run(db.postgres())
            .await?),
    }
}

/// Planner statistics for apalis' `Jobs` table. Without them SQLite runs the
/// acknowledgement (`UPDATE Jobs … FROM json_each(?) … AND lock_by = ?`)
/// by walking every job the worker has locked and re-parsing the JSON batch
/// for each: quadratic in the backlog. With them it looks each id up by its
/// unique index. Connections load these when they open.
async fn tune_sqlite_planner(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // ANALYZE of a table creates sqlite_stat1 if it does not exist yet.
    sqlx::query("ANALYZE Workers").execute(&mut *tx).await?;
    sqlx::query("DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs'")
        .execute(&mut *tx)
        .await?;
    for (index, stat) in [
        ("sqlite_autoindex_Jobs_1", "1000000 1"),
        ("LIdx", "1000000 100000"),
        ("idx_jobs_idempotency_key", "1000000 100000 1"),
    ] {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('Jobs', ?1, ?2)")
            .bind(index)
            .bind(stat)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
