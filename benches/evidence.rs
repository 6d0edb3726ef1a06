//! The evidence log at scale: appending leaves (SQLite and PostgreSQL),
//! verifying a log of 1,000,000 leaves, and exporting the package of a
//! 200-leaf case from a log of 20,000 (SQLite).
//!
//!     cargo bench --bench evidence                    # everything
//!     cargo bench --bench evidence -- append          # appends only (append-sqlite, append-postgres)
//!     cargo bench --bench evidence -- verify          # the verification only
//!     cargo bench --bench evidence -- export          # the export only
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
    // What the outbox stores: the rendered payload, whose text is hashed.
    let text = format!("{i} {}", "您已连续旷工，请于规定期限内返岗。".repeat(18));
    let payload = json!({ "kind": "text", "content": text }).to_string();
    let leaf = NewLeaf::new("message_queued")
        .case(Some((i / 50) as i64))
        .subject(Some(&format!("user{:06}", i / 50)))
        .channel("chat")
        .template("formal_notice.employee", &"ab".repeat(32))
        .text(&text)
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

/// A case of 200 leaves (100 notices queued and sent, with their payloads)
/// among 20,000 leaves of 500 other people, on the sandbox tenant; then
/// `export::package` of that case, three times (each signs a checkpoint
/// first, as every export does).
async fn export_bench() -> anyhow::Result<()> {
    use rollcall::demo::{Sandboxed, TENANT};
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let s = Sandboxed::start(&url, &dir.path().join("data.key"), Utc::now(), "").await?;
    let rt = s.rt.clone();
    let tenant = rt.tenant(TENANT).context("sandbox tenant")?.clone();
    let day = Utc::now().date_naive();
    let txn = rt.db.orm.begin().await?;
    let case = rollcall::cases::store::open(
        &txn,
        TENANT,
        "zhangsan",
        day,
        &tenant.config.policy,
        Utc::now(),
    )
    .await?
    .context("a new case")?;
    txn.commit().await?;
    let mut in_case = 0;
    for batch in 0..20 {
        let leaves = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                if n % 100 < 2 && in_case < 200 {
                    in_case += 1;
                    leaf(n, true).case(Some(case.id)).subject(Some("zhangsan"))
                } else {
                    leaf(n, true)
                        .case(None)
                        .subject(Some(&format!("worker{}", n % 500)))
                }
            })
            .collect();
        let txn = rt.db.orm.begin().await?;
        append(&txn, TENANT, Utc::now(), leaves).await?;
        txn.commit().await?;
    }
    for run in 1..=3 {
        let start = Instant::now();
        let p = rollcall::evidence::export::package(&rt, TENANT, "zhangsan", Some(case.id)).await?;
        let took = start.elapsed();
        println!(
            "export-sqlite: run {run}: {} leaves of a case from a log of {}: {:.0} ms",
            p.summary.leaves,
            p.summary.checkpoint_size,
            took.as_secs_f64() * 1000.0
        );
    }
    s.stop().await;
    Ok(())
}

/// A log of `VERIFY_LEAVES` (1,000,000) leaves without raw payloads, with
/// a checkpoint every 100,000; then `evidence verify` of it, three times.
async fn verify_bench() -> anyhow::Result<()> {
    let n = size("VERIFY_LEAVES", 1_000_000);
    let db = BenchDb::new(Engine::Sqlite).await?;
    let store = Database::open(&db.url).await?;
    let signer = rollcall::evidence::note::NoteSigner::generate("rollcall")?;
    let witness_dir = tempfile::tempdir()?;
    let witness = rollcall::evidence::witness::Witness::new(witness_dir.path());
    let mut i = 0;
    while i < n {
        let txn = store.orm.begin().await?;
        let leaves = (i..(i + 10_000).min(n)).map(|i| leaf(i, false)).collect();
        append(&txn, TENANT, Utc::now(), leaves).await?;
        txn.commit().await?;
        i += 10_000;
        if i % 100_000 == 0 {
            rollcall::evidence::checkpoint::checkpoint(
                &store.orm,
                &signer,
                &witness,
                TENANT,
                Utc::now(),
            )
            .await?;
        }
    }
    for run in 1..=3 {
        let start = Instant::now();
        let witnessed = witness.read(TENANT)?;
        let report = rollcall::evidence::verify::verify_log(
            &store.orm,
            TENANT,
            &signer.verifier_key(),
            witnessed.as_ref(),
        )
        .await?;
        let took = start.elapsed();
        anyhow::ensure!(report.ok(), "the bench log does not verify");
        println!(
            "verify-sqlite: run {run}: {} leaves, {} checkpoints: {:.2} s",
            report.leaves,
            n / 100_000,
            took.as_secs_f64()
        );
    }
    store.close().await;
    Ok(())
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
        if wanted("verify-sqlite") {
            verify_bench().await?;
        }
        if wanted("export-sqlite") {
            export_bench().await?;
        }
        anyhow::Ok(())
    })
}
