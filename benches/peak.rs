//! The morning peak, end to end: a directory of `PEAK_EMPLOYEES` people
//! (100,000) is imported with `rollcall employees import` (timed), then
//! `rollcall serve` runs as its own process on the sandbox tenant and every
//! employee checks in once over HTTP: distinct, encrypted and signed WeCom
//! callbacks with fresh timestamps from 64 connections, 80 % "打卡" texts,
//! 15 % locations at the site and 5 % card presses (of a card the server
//! does not know: recorded, no reply). Replies go to the sandbox WeCom API in
//! this process, which accepts them and enforces its per-member limit.
//!
//!     cargo bench --bench peak                    # SQLite, then PostgreSQL
//!     cargo bench --bench peak -- sqlite          # one database
//!     PEAK_RATE=5000 cargo bench --bench peak     # a steady rate: latency at 5,000/s
//!
//! Reported: acknowledged/s with p50/p99 of the acknowledgement; processed/s
//! (from the first callback until the last event is handled: check-in
//! recorded, reply queued, leaves appended); delivered/s (until the last
//! reply is sent); the server's peak RSS (`VmHWM` of its process, which
//! also runs the SMS and mail sandboxes but not the WeCom one). Size and
//! shape: `PEAK_EMPLOYEES` (100000), `PEAK_CONNECTIONS` (64), `PEAK_RATE`
//! (none: as fast as it goes); `PEAK_LOG` (the server's `RUST_LOG`, its log
//! then kept as `peak-serve-<database>.log`). PostgreSQL: `ROLLCALL_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database
//! is made and dropped. Never a test: timing is reported, not asserted.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rollcall::demo::SandboxPlatform;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn user(i: usize) -> String {
    format!("p{i:06}")
}

/// The directory: `n` employees in 50 departments, each with a manager
/// (the first of the department), and 10 HR people.
fn write_directory(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "user_id,name,department,manager_user_id,role")?;
    for i in 0..n {
        let dept = i % 50;
        let (role, manager) = if i < 50 {
            ("manager", String::new())
        } else if i < 60 {
            ("hr", String::new())
        } else {
            ("employee", user(dept))
        };
        writeln!(f, "{},员工{i},部门{dept},{manager},{role}", user(i))?;
    }
    f.flush()?;
    Ok(())
}

fn rollcall(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    let log = std::env::var("PEAK_LOG").unwrap_or_else(|_| "warn".into());
    cmd.arg("--config").arg(config).env("RUST_LOG", log);
    cmd
}

/// The server's peak resident set, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scalar(db: &rollcall::db::Database, sql: &str) -> anyhow::Result<i64> {
    use sea_orm::ConnectionTrait as _;
    let row = db
        .orm
        .query_one_raw(sea_orm::Statement::from_string(
            db.orm.get_database_backend(),
            sql,
        ))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index(0)?)
}

async fn run(db_name: &str, url: &str) -> anyhow::Result<()> {
    let n: usize = env_or("PEAK_EMPLOYEES", 100_000);
    let connections: usize = env_or("PEAK_CONNECTIONS", 64);
    let rate: Option<f64> = std::env::var("PEAK_RATE").ok().and_then(|v| v.parse().ok());
    let sandbox = SandboxPlatform::start().await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("rollcall.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
data_key_file = "{dir}/data.key"
templates_dir = "{templates}"
[evidence]
key_file = "{dir}/evidence.key"
witness_dir = "{dir}/witness"
[database]
url = "{url}"
{tenant}"#,
            dir = dir.path().display(),
            templates = concat!(env!("CARGO_MANIFEST_DIR"), "/bot-templates"),
            tenant = sandbox.tenant_toml(),
        ),
    )?;
    let csv = dir.path().join("employees.csv");
    write_directory(&csv, n)?;

    let began = Instant::now();
    let import = rollcall(&config)
        .args(["employees", "import", "--tenant", rollcall::demo::TENANT])
        .arg(&csv)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(import.success(), "the import failed");
    let imported = began.elapsed();

    let log = std::fs::File::create(dir.path().join("serve.log"))?;
    let server = Server(
        rollcall(&config)
            .arg("serve")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let phone = Arc::new(
        sandbox
            .callback_sender(&format!("{base}/callback/wecom/{}", rollcall::demo::TENANT))?
            .with_retries(0),
    );
    let db = rollcall::db::Database::connect(url).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (phone, next) = (phone.clone(), next.clone());
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let scheduled = match rate {
                    Some(r) => {
                        let at = start + Duration::from_secs_f64(i as f64 / r);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let now = chrono::Utc::now().timestamp();
                let who = user(i);
                let delivery = match i % 20 {
                    0..=2 => {
                        phone
                            .location(&who, 31.2305, 121.4738, "一号工地", now)
                            .await
                    }
                    3 => {
                        phone
                            .card_button(&who, &format!("task{i}"), "checkin", "rc", now)
                            .await
                    }
                    _ => phone.text(&who, "打卡", now).await,
                };
                if !delivery.delivered {
                    failed += 1;
                }
                hist.saturating_record(scheduled.elapsed().as_micros().max(1) as u64);
            }
            (hist, failed)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (h, f) = done?;
        hist.add(&h)?;
        failed += f;
    }
    let acked = start.elapsed();

    // Processed and delivered: polled until nothing is left, at most 20 min
    // (an EXISTS each, so that the polling costs the server next to nothing).
    let mut processed_at = None;
    let mut delivered_at = None;
    while delivered_at.is_none() && start.elapsed() < Duration::from_secs(1200) {
        if processed_at.is_none()
            && scalar(
                &db,
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM inbound_events WHERE processed_at IS NULL) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END",
            )
            .await?
                == 0
        {
            processed_at = Some(start.elapsed());
        }
        if processed_at.is_some()
            && scalar(
                &db,
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM outbox WHERE status IN ('pending', 'sending')) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END",
            )
            .await?
                == 0
        {
            delivered_at = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = scalar(&db, "SELECT COUNT(*) FROM inbound_events").await?;
    let checkins = scalar(&db, "SELECT COUNT(*) FROM check_ins").await?;
    let sent = scalar(&db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await?;
    let rss = peak_rss_mib(server.0.id());
    drop(server);
    if std::env::var_os("PEAK_LOG").is_some() {
        let kept = format!("peak-serve-{db_name}.log");
        std::fs::copy(dir.path().join("serve.log"), &kept)?;
        println!("  server log    {kept}");
    }
    db.close().await;

    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let per_s = |count: f64, t: Option<Duration>| {
        t.map_or("not finished in 20 min".to_owned(), |t| {
            format!(
                "{:.0}/s ({:.2} s)",
                count / t.as_secs_f64(),
                t.as_secs_f64()
            )
        })
    };
    println!("{db_name}: {n} employees, {connections} connections, rate {rate:?}");
    println!(
        "  import        {:.2} s ({:.0} rows/s)",
        imported.as_secs_f64(),
        n as f64 / imported.as_secs_f64()
    );
    println!(
        "  acknowledged  {:.0}/s ({:.2} s, {failed} failed); p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        n as f64 / acked.as_secs_f64(),
        acked.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    println!("  processed     {}", per_s(n as f64, processed_at));
    println!(
        "  delivered     {} ({sent} replies)",
        per_s(sent as f64, delivered_at)
    );
    println!(
        "  stored        {events} events, {checkins} check-ins; sandbox counted {} sends, {} duplicates",
        sandbox.api.sent().len(),
        sandbox.api.duplicates()
    );
    match rss {
        Some(mib) => println!("  server RSS    {mib:.0} MiB at peak"),
        None => println!("  server RSS    unknown"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if wanted("sqlite") {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("peak.db").display());
            run("sqlite", &url).await?;
        }
        if wanted("postgres") {
            let admin = std::env::var("ROLLCALL_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("rollcall_peak_bench_{}", std::process::id());
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let url = format!("{}/{name}", admin.rsplit_once('/').context("admin url")?.0);
            let result = run("postgres", &url).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
            result?;
        }
        Ok(())
    })
}
