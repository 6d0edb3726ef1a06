//! What one statement costs on SQLite, the way the handler of inbound events
//! pays for it: through sea-orm in a write transaction ([`Database::write`]),
//! against sqlx on a connection of its own, and a savepoint with its
//! release (each event of a batch has one). Each figure is the mean over
//! `STATEMENTS_N` (2,000) statements, one after the other.
//!
//!     cargo bench --bench statements
//!
//! sqlx runs every statement on the connection's own thread: the task hands
//! it over and waits for the answer, so a figure is that round trip as well
//! as SQLite's work. The figures vary from run to run (the range over runs
//! is in `BENCHMARKS.md`).

use std::time::{Duration, Instant};

use rollcall::db::Database;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, took: Duration, n: u32) {
    println!(
        "  {what:<48} {:>8.1} µs",
        took.as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

fn main() -> anyhow::Result<()> {
    let n = env_or("STATEMENTS_N", 2_000);
    // The server's shape: tokio's multi-threaded runtime, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let db = Database::open(&url).await?;
        db.orm
            .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT, mark TEXT)")
            .await?;
        // Rows of an inbound event's size (its raw body and plaintext).
        let txn = db.write().await?;
        for i in 0..n {
            txn.execute_raw(stmt(
                "INSERT INTO t (id, body) VALUES (?, ?)",
                vec![i.into(), "x".repeat(2_500).into()],
            ))
            .await?;
        }
        txn.commit().await?;

        println!("one statement on SQLite, mean of {n}:");
        let txn = db.write().await?;
        let began = Instant::now();
        for _ in 0..n {
            txn.query_one_raw(stmt("SELECT 1", vec![])).await?;
        }
        report("sea-orm, write transaction: SELECT 1", began.elapsed(), n);
        let began = Instant::now();
        for i in 0..n {
            txn.query_one_raw(stmt("SELECT body FROM t WHERE id = ?", vec![i.into()]))
                .await?;
        }
        report(
            "sea-orm, write transaction: a row by id",
            began.elapsed(),
            n,
        );
        let began = Instant::now();
        for i in 0..n {
            txn.execute_raw(stmt("UPDATE t SET mark = 'y' WHERE id = ?", vec![i.into()]))
                .await?;
        }
        report(
            "sea-orm, write transaction: UPDATE a row by id",
            began.elapsed(),
            n,
        );
        let began = Instant::now();
        for _ in 0..n {
            txn.begin().await?.commit().await?;
        }
        report(
            "sea-orm, write transaction: SAVEPOINT + RELEASE",
            began.elapsed(),
            n,
        );
        txn.rollback().await?;

        let mut conn = db.sqlite().acquire().await?;
        let began = Instant::now();
        for _ in 0..n {
            sqlx::query("SELECT 1").fetch_one(&mut *conn).await?;
        }
        report(
            "sqlx, a connection of its own: SELECT 1",
            began.elapsed(),
            n,
        );
        drop(conn);
        db.close().await;
        Ok(())
    })
}
