//! The evidence log at scale: appending leaves (SQLite and PostgreSQL).
//!
//!     cargo bench --bench evidence                    # everything
//!     cargo bench --bench evidence -- append          # appends only
//!
//! Sizes: `EVIDENCE_LEAVES` (200000 leaves per append run). PostgreSQL:
//! `ROLLCALL_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! a fresh database is made and dropped.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use rollcall::db::{Database, Engine};
use rollcall::evidence::{NewLeaf, append};
use sea_orm::TransactionTrait;
use serde_json::json;

const TENANT: &str = "bench";

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn postgres_admin_url() -> String {
    std::env::var("ROLLCALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for one run: a SQLite file in a temp dir, or a fresh
/// PostgreSQL database dropped afterwards.
struct BenchDb {
    url: String,
    _dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl BenchDb {
    async fn new(engine: Engine) -> anyhow::Result<BenchDb> {
        let dir = tempfile::tempdir()?;
        match engine {
            Engine::Sqlite => Ok(BenchDb {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                ),
                _dir: dir,
                pg_name: None,
            }),
            Engine::Postgres => {
                let name = format!("rollcall_bench_{:08x}", rand::random::<u32>());
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin.rsplit_once('/').context("admin url")?.0;
                Ok(BenchDb {
                    url: format!("{base}/{name}"),
                    _dir: dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    async fn drop_pg(&self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) =
                <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url()).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// A leaf like a queued notice: a template, a text hash, a small detail,
/// and (with `raw`) a 1 KB rendered payload of its own, stored with it.
fn leaf(i: usize, raw: bool) -> NewLeaf {
    let payload = format!(
        "{{\"kind\":\"text\",\"content\":\"{i} {}\"}}",
        "您已连续旷工，请于规定期限内返岗。".repeat(18)
    );
    let leaf = NewLeaf::new("message_queued")
        .case(Some((i / 50) as i64))
        .subject(Some(&format!("user{:06}", i / 50)))
        .channel("chat")
        .template("formal_notice.employee", &"ab".repeat(32))
        .text(&payload)
        .id(
            "idem_key",
            format!("notice:{}:formal:user:chat:{i}", i / 50),
        )
        .source("outbox", i as i64)
        .detail(json!({ "recipient": format!("user{:06}", i / 50), "step": "formal_notice" }));
    if raw {
        leaf.raw("rendered", "application/json", payload.into_bytes())
    } else {
        leaf
    }
}

/// Appends `n` leaves in transactions of `batch`, one after another.
async fn append_run(engine: Engine, n: usize, batch: usize, raw: bool) -> anyhow::Result<f64> {
    let db = BenchDb::new(engine).await?;
    let store = Database::open(&db.url).await?;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let txn = store.orm.begin().await?;
        let leaves = (i..(i + batch).min(n)).map(|i| leaf(i, raw)).collect();
        append(&txn, TENANT, Utc::now(), leaves).await?;
        txn.commit().await?;
        i += batch;
    }
    let secs = start.elapsed().as_secs_f64();
    store.close().await;
    db.drop_pg().await;
    Ok(n as f64 / secs)
}

/// Appends `n` leaves one per transaction from `tasks` concurrent tasks
/// (how the app appends: one fact, one transaction).
async fn append_concurrent(engine: Engine, n: usize, tasks: usize) -> anyhow::Result<f64> {
    let db = BenchDb::new(engine).await?;
    let store = Database::open(&db.url).await?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let orm = store.orm.clone();
        set.spawn(async move {
            let mut i = t;
            while i < n {
                let txn = orm.begin().await?;
                append(&txn, TENANT, Utc::now(), vec![leaf(i, true)]).await?;
                txn.commit().await?;
                i += tasks;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    store.close().await;
    db.drop_pg().await;
    Ok(n as f64 / secs)
}

fn main() -> anyhow::Result<()> {
    rollcall::tls::install_crypto_provider();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let n = size("EVIDENCE_LEAVES", 200_000);
        for (engine, name) in [(Engine::Sqlite, "sqlite"), (Engine::Postgres, "postgres")] {
            if wanted(&format!("append-{name}")) {
                for raw in [false, true] {
                    for batch in [1_000, 100] {
                        let rate = append_run(engine, n, batch, raw).await?;
                        let shape = if raw { "with a 1 KB raw payload each" } else { "leaf only" };
                        println!(
                            "append-{name}: {n} leaves ({shape}), {batch} per transaction: {rate:.0} leaves/s"
                        );
                    }
                }
                let one = n / 20;
                let rate = append_concurrent(engine, one, 16).await?;
                println!(
                    "append-{name}: {one} leaves (with a 1 KB raw payload each), one per transaction, 16 tasks: {rate:.0} leaves/s"
                );
            }
        }
        anyhow::Ok(())
    })
}
