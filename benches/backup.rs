//! `rollcall backup` and `rollcall restore` of a database of about
//! `BACKUP_GIB` GiB (default 1): the real schema, filled with inbound events
//! (the largest table in use) by one `INSERT … SELECT`, then backed up and
//! restored through the library calls the commands make.
//!
//!     cargo bench --bench backup

use std::time::Instant;

use rollcall::config::{Config, ProcessEnv};

/// An event row with its raw payloads is about this many bytes here.
const ROW_BYTES: f64 = 1_100.0;

fn main() -> anyhow::Result<()> {
    rollcall::tls::install_crypto_provider();
    let gib: f64 = std::env::var("BACKUP_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let rows = (gib * f64::from(1u32 << 30) / ROW_BYTES) as i64;
    let dir = tempfile::Builder::new()
        .prefix("rollcall-backup-bench-")
        .tempdir_in(".")?;
    let d = dir.path();
    let config = |name: &str| -> anyhow::Result<Config> {
        Ok(Config::parse("", &ProcessEnv)?.with_database_file(&d.join(name)))
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let source = config("source.db")?;
        let db = rollcall::db::Database::open(&source.database.url).await?;
        let started = Instant::now();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO inbound_events (tenant_id, platform, msg_key, kind, from_user, content, fields,
                 platform_time, raw_query, raw_body, plaintext, received_at, processed_at)
             SELECT 'bench', 'wecom', 'msg:' || i, 'text', 'user' || (i % 100000), '打卡', '{}',
                 1765000000 + i, 'msg_signature=' || hex(randomblob(20)), hex(randomblob(300)),
                 hex(randomblob(120)), '2026-12-07T08:00:00Z', '2026-12-07T08:00:01Z'
             FROM n",
        )
        .bind(rows)
        .execute(db.sqlite())
        .await?;
        db.close().await;
        let size = std::fs::metadata(d.join("source.db"))?.len()
            + std::fs::metadata(d.join("source.db-wal")).map_or(0, |m| m.len());
        println!(
            "filled {rows} events in {:.1} s: {:.2} GiB on disk",
            started.elapsed().as_secs_f64(),
            size as f64 / f64::from(1u32 << 30)
        );
        let started = Instant::now();
        let b = rollcall::backup::backup(&source, &d.join("copy.db")).await?;
        let took = started.elapsed().as_secs_f64();
        println!(
            "backup   {:.1} s ({:.2} GiB written, {:.0} MiB/s; VACUUM INTO, flush, integrity check, SHA-256)",
            took,
            b.bytes as f64 / f64::from(1u32 << 30),
            b.bytes as f64 / f64::from(1u32 << 20) / took
        );
        // The source never started, so no keys are recorded in it: the
        // restore records the ones it makes, as a first start would.
        let started = Instant::now();
        rollcall::backup::restore(&config("restored.db")?, &d.join("copy.db")).await?;
        println!(
            "restore  {:.1} s (copy, flush, integrity check, link, open, key check)",
            started.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    })
}
