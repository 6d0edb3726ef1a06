//! Database connection: the embedded SQLite file (WAL, `synchronous=FULL` on
//! every connection) or PostgreSQL; one pool shared by sea-orm and apalis.

use std::str::FromStr;
use std::time::Duration;

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

/// The one database: sea-orm on top of the same sqlx pool apalis uses.
#[derive(Debug, Clone)]
pub struct Database {
    pub orm: DatabaseConnection,
    pub engine: Engine,
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
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                // 64 MiB of page cache per connection: index pages of a busy
                // inbox stay in memory instead of being read back for each batch.
                .pragma("cache_size", "-65536");
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .map_err(DbError::Connect)?;
            Ok(Database {
                orm: SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
                engine: Engine::Sqlite,
            })
        } else {
            let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
            let pool = PgPoolOptions::new()
                .max_connections(24)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(DbError::Connect)?;
            Ok(Database {
                orm: SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                engine: Engine::Postgres,
            })
        }
    }

    /// Applies rollcall's migrations and the job queue's own.
    pub async fn migrate(&self) -> Result<(), DbError> {
        Migrator::up(&self.orm, None).await?;
        crate::workers::migrate(self)
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
    pub async fn ping(&self) -> bool {
        self.orm.execute_unprepared("SELECT 1").await.is_ok()
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(self) {
        match self.engine {
            Engine::Sqlite => self.sqlite().close().await,
            Engine::Postgres => self.postgres().close().await,
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
