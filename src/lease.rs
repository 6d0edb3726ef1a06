//! Leases: named locks kept in the database (`locks`), so that work only
//! one process may do at a time stays exclusive when several `rollcall
//! serve` processes share one PostgreSQL database, or several processes one
//! SQLite file. A lease is held until a time; its holder renews it in the
//! background and deletes it when done, and a holder that died (crash,
//! kill -9, lost network) blocks the others only until its lease runs out.
//!
//! Expiry is judged by the database's clock, never by the runtime's
//! [`Clock`](crate::clock::Clock) (simulated in tests and `rollcall demo`)
//! nor by each host's own: on PostgreSQL that is the server's
//! `clock_timestamp()`, so hosts whose clocks drift still agree; on SQLite
//! the processes sharing the file share the host's clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use crate::db::{Database, Engine};

/// How long a lease lasts unless renewed: how long a holder that died
/// blocks the others.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a holder renews its lease: a quarter of [`LEASE`], so that
/// three renewals in a row may fail (a database restart, a pool busy for a
/// while) before the lease runs out.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How often a process waiting for a lease asks again.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// How long a lease lasts and how often it is renewed and asked for
/// ([`LEASE`], [`RENEW_EVERY`], [`POLL_EVERY`] unless a test shortens them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub lease: Duration,
    pub renew_every: Duration,
    pub poll_every: Duration,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            lease: LEASE,
            renew_every: RENEW_EVERY,
            poll_every: POLL_EVERY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("`{name}` is held by {holder}: waited {waited:?} for it")]
    Busy {
        name: String,
        holder: String,
        waited: Duration,
    },
    #[error(
        "the lease on `{name}` was not renewed in time: another process may hold it now, so the work under it stopped"
    )]
    Lost { name: String },
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Now as Unix milliseconds, by the database's clock.
fn now_ms(engine: Engine) -> &'static str {
    match engine {
        // clock_timestamp(), not now(): the time of the statement, not of
        // the transaction it may be part of.
        Engine::Postgres => "(extract(epoch from clock_timestamp()) * 1000)::bigint",
        Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// `sql` with PostgreSQL's `$n` placeholders, for `engine`.
fn statement(engine: Engine, sql: &str, values: Vec<Value>) -> Statement {
    let (backend, sql) = match engine {
        Engine::Postgres => (DbBackend::Postgres, sql.to_owned()),
        // SQLite numbers parameters as `?n`.
        Engine::Sqlite => (DbBackend::Sqlite, sql.replace('$', "?")),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Takes lease `name` for `holder` for `lease`, if nobody holds it or its
/// lease ran out: one statement, so two processes asking at once cannot
/// both get it. Whether `holder` got it.
pub async fn try_take(
    db: &Database,
    name: &str,
    holder: &str,
    lease: Duration,
) -> Result<bool, DbErr> {
    let now = now_ms(db.engine);
    let sql = format!(
        "INSERT INTO locks (name, holder, until_ms) VALUES ($1, $2, {now} + $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
         WHERE locks.until_ms < {now}"
    );
    let done = db
        .orm
        .execute_raw(statement(
            db.engine,
            &sql,
            vec![name.into(), holder.into(), millis(lease).into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Extends `holder`'s lease on `name` to `lease` from now. False when
/// `holder` no longer holds it (it ran out and another took it).
pub async fn renew(
    db: &Database,
    name: &str,
    holder: &str,
    lease: Duration,
) -> Result<bool, DbErr> {
    let now = now_ms(db.engine);
    let sql = format!("UPDATE locks SET until_ms = {now} + $3 WHERE name = $1 AND holder = $2");
    let done = db
        .orm
        .execute_raw(statement(
            db.engine,
            &sql,
            vec![name.into(), holder.into(), millis(lease).into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up `holder`'s lease on `name` (never another holder's).
pub async fn release(db: &Database, name: &str, holder: &str) -> Result<bool, DbErr> {
    let done = db
        .orm
        .execute_raw(statement(
            db.engine,
            "DELETE FROM locks WHERE name = $1 AND holder = $2",
            vec![name.into(), holder.into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Who holds `name` now, if anyone (a lease that ran out is nobody's).
pub async fn holder(db: &Database, name: &str) -> Result<Option<String>, DbErr> {
    let now = now_ms(db.engine);
    let sql = format!("SELECT holder FROM locks WHERE name = $1 AND until_ms >= {now}");
    let row = db
        .orm
        .query_one_raw(statement(db.engine, &sql, vec![name.into()]))
        .await?;
    row.map(|r| r.try_get::<String>("", "holder")).transpose()
}

/// A holder token, unique to one acquisition: host, process, and a ULID.
fn new_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!("{host}:{}:{}", std::process::id(), ulid::Ulid::new())
}

/// A lease this process holds, renewed in the background until it is
/// released or dropped. Dropping it releases it too (in a spawned task);
/// if even that cannot run, the lease runs out after [`LEASE`].
#[derive(Debug)]
pub struct Lease {
    db: Database,
    name: String,
    holder: String,
    lease: Duration,
    /// When the lease was last taken or renewed (by this process's
    /// monotonic clock, read before the statement); `None` once lost.
    renewed: Arc<Mutex<Option<Instant>>>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    /// Takes lease `name` with the default [`Terms`], waiting up to `wait`
    /// while another holds it.
    pub async fn acquire(db: &Database, name: &str, wait: Duration) -> Result<Lease, LeaseError> {
        Lease::acquire_with(db, name, wait, Terms::default()).await
    }

    /// Takes lease `name`, asking every `terms.poll_every` for up to `wait`
    /// while another holds it; then [`LeaseError::Busy`].
    pub async fn acquire_with(
        db: &Database,
        name: &str,
        wait: Duration,
        terms: Terms,
    ) -> Result<Lease, LeaseError> {
        let holder = new_holder();
        let started = Instant::now();
        let taken = loop {
            let asked = Instant::now();
            if try_take(db, name, &holder, terms.lease).await? {
                break asked;
            }
            if started.elapsed() >= wait {
                return Err(LeaseError::Busy {
                    name: name.to_owned(),
                    holder: self::holder(db, name)
                        .await?
                        .unwrap_or_else(|| "(nobody any more)".to_owned()),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(terms.poll_every).await;
        };
        let renewed = Arc::new(Mutex::new(Some(taken)));
        let renewer = tokio::spawn(keep(
            db.clone(),
            name.to_owned(),
            holder.clone(),
            terms,
            taken,
            renewed.clone(),
        ));
        Ok(Lease {
            db: db.clone(),
            name: name.to_owned(),
            holder,
            lease: terms.lease,
            renewed,
            renewer,
            released: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This acquisition's token, as stored in `locks.holder`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Ok while the lease is surely still this process's: renewed less
    /// than a lease ago. Work under a lease checks this between steps, so
    /// that a holder cut off from the database for longer than a lease
    /// stops instead of working beside the process that took over.
    pub fn check(&self) -> Result<(), LeaseError> {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        match renewed {
            Some(at) if at.elapsed() < self.lease => Ok(()),
            _ => Err(LeaseError::Lost {
                name: self.name.clone(),
            }),
        }
    }

    /// Stops renewing and deletes the lease, so a waiter gets it at once.
    pub async fn release(mut self) -> Result<(), DbErr> {
        self.renewer.abort();
        self.released = true;
        release(&self.db, &self.name, &self.holder).await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // An early return (an error) under the lease: release it anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (db, name, holder) = (self.db.clone(), self.name.clone(), self.holder.clone());
            handle.spawn(async move {
                if let Err(e) = release(&db, &name, &holder).await {
                    tracing::warn!(lease = %name, error = %e, "releasing a lease failed: it runs out by itself");
                }
            });
        }
    }
}

/// Renews the lease every `terms.renew_every` until it is lost (another
/// holder has it) or has gone unrenewed for a whole lease; errors in
/// between are retried, since the lease still stands.
async fn keep(
    db: Database,
    name: String,
    holder: String,
    terms: Terms,
    taken: Instant,
    renewed: Arc<Mutex<Option<Instant>>>,
) {
    let set = |v: Option<Instant>| *renewed.lock().unwrap_or_else(|e| e.into_inner()) = v;
    let mut last = taken;
    loop {
        tokio::time::sleep(terms.renew_every).await;
        let asked = Instant::now();
        match renew(&db, &name, &holder, terms.lease).await {
            Ok(true) => {
                last = asked;
                set(Some(asked));
            }
            Ok(false) => {
                tracing::warn!(lease = %name, holder = %holder, "lost a lease: it ran out and another process took it");
                set(None);
                return;
            }
            Err(e) if last.elapsed() >= terms.lease => {
                tracing::warn!(lease = %name, error = %e, "could not renew a lease for a whole lease: giving it up");
                set(None);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "renewing a lease failed: trying again");
            }
        }
    }
}
