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
//!     PEAK_SECS=600 cargo bench --bench peak -- sqlite   # the soak (below)
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
//!
//! The soak (`PEAK_SECS` set): a steady `PEAK_RATE` (2,000/s unless given)
//! for `PEAK_SECS`, the employees taking turns. Before the server starts,
//! `PEAK_ABSENT` people (1,000) have missed yesterday's work (the others
//! have every day off, so the scan leaves them alone), and the scan has
//! opened their cases: their reminders and their managers' escalations go
//! out while the load runs, beside the replies, the evidence log's leaves
//! and its checkpoints (`PEAK_CHECKPOINT_SECS`, 10). The absent send
//! nothing. Every `PEAK_SAMPLE_SECS` (60) a line: the window's
//! acknowledgements and their p50/p99/max, failures, the server's RSS
//! (`VmRSS`), the callbacks stored but not yet handled and the messages
//! waiting to be sent. The backlog left at the end is reported, not
//! waited for.

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

/// The first index that is neither a manager nor HR.
const FIRST_EMPLOYEE: usize = 60;

fn user(i: usize) -> String {
    format!("p{i:06}")
}

/// The directory: `n` employees in 50 departments, each with a manager
/// (the first of the department), and 10 HR people.
/// With `absent` (the soak), each row also has its rest days: the first
/// `absent` employees after the managers and HR work Monday to Friday, the
/// others have every day off.
fn write_directory(path: &Path, n: usize, absent: Option<usize>) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    match absent {
        None => writeln!(f, "user_id,name,department,manager_user_id,role")?,
        Some(_) => writeln!(f, "user_id,name,department,manager_user_id,role,rest_days")?,
    }
    for i in 0..n {
        let dept = i % 50;
        let (role, manager) = if i < 50 {
            ("manager", String::new())
        } else if i < 60 {
            ("hr", String::new())
        } else {
            ("employee", user(dept))
        };
        match absent {
            None => writeln!(f, "{},员工{i},部门{dept},{manager},{role}", user(i))?,
            Some(absent) => {
                let rest = if (FIRST_EMPLOYEE..FIRST_EMPLOYEE + absent).contains(&i) {
                    "\"sat,sun\""
                } else {
                    "\"mon,tue,wed,thu,fri,sat,sun\""
                };
                writeln!(f, "{},员工{i},部门{dept},{manager},{role},{rest}", user(i))?
            }
        }
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

/// Check-in number `i`, by `who`, with a fresh timestamp: 80 % "打卡"
/// texts, 15 % locations at the site, 5 % presses of a card the server does
/// not know (recorded, no reply).
async fn check_in(
    phone: &rollcall::platform::sandbox::CallbackSender,
    i: usize,
    who: &str,
) -> rollcall::platform::sandbox::Delivery {
    let now = chrono::Utc::now().timestamp();
    match i % 20 {
        0..=2 => {
            phone
                .location(who, 31.2305, 121.4738, "一号工地", now)
                .await
        }
        3 => {
            phone
                .card_button(who, &format!("task{i}"), "checkin", "rc", now)
                .await
        }
        _ => phone.text(who, "打卡", now).await,
    }
}

/// The server's peak resident set, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// A size line of the process's `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`),
/// in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
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

/// A server on a fresh directory, up and answering.
struct Started {
    sandbox: SandboxPlatform,
    dir: tempfile::TempDir,
    server: Server,
    phone: Arc<rollcall::platform::sandbox::CallbackSender>,
    db: rollcall::db::Database,
    imported: Duration,
}

/// Imports a directory of `n` people (see [`write_directory`] for
/// `absent`), opens the cases of the absent (the soak), starts the server
/// with `extra` in its configuration and waits until it answers.
async fn start(url: &str, n: usize, absent: Option<usize>, extra: &str) -> anyhow::Result<Started> {
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
{extra}
[database]
url = "{url}"
{tenant}"#,
            dir = dir.path().display(),
            templates = concat!(env!("CARGO_MANIFEST_DIR"), "/bot-templates"),
            tenant = sandbox.tenant_toml(),
        ),
    )?;
    let csv = dir.path().join("employees.csv");
    write_directory(&csv, n, absent)?;

    let began = Instant::now();
    let import = rollcall(&config)
        .args(["employees", "import", "--tenant", rollcall::demo::TENANT])
        .arg(&csv)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(import.success(), "the import failed");
    let imported = began.elapsed();
    if let Some(absent) = absent {
        let opened = open_cases(&config).await?;
        println!("  the scan opened {opened} cases ({absent} absent)");
    }

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
    Ok(Started {
        sandbox,
        dir,
        server,
        phone,
        db,
        imported,
    })
}

/// Scans the last workday before today (in Shanghai) that opens cases, as
/// the scheduler would have; returns how many it opened.
async fn open_cases(config: &Path) -> anyhow::Result<u64> {
    let config = rollcall::config::Config::load(Some(config), &rollcall::config::ProcessEnv)?;
    let clock = Arc::new(rollcall::clock::SystemClock);
    let rt = rollcall::app::runtime(&config, clock).await?;
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let mut opened = 0;
    for back in 1..=10 {
        // Yesterday may not be closed yet (its grace runs past midnight).
        if let Ok(report) = rollcall::cases::scan::scan(
            &rt,
            rollcall::demo::TENANT,
            Some(today - chrono::Duration::days(back)),
        )
        .await
        {
            opened = report.opened;
        }
        if opened > 0 {
            break;
        }
    }
    rt.db.clone().close().await;
    Ok(opened as u64)
}

async fn run(db_name: &str, url: &str) -> anyhow::Result<()> {
    let n: usize = env_or("PEAK_EMPLOYEES", 100_000);
    let connections: usize = env_or("PEAK_CONNECTIONS", 64);
    let rate: Option<f64> = std::env::var("PEAK_RATE").ok().and_then(|v| v.parse().ok());
    let Started {
        sandbox,
        dir,
        server,
        phone,
        db,
        imported,
    } = start(url, n, None, "").await?;

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
                let delivery = check_in(&phone, i, &user(i)).await;
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

/// One window of the soak: its acknowledgements' latency and failures.
type Window = (Histogram<u64>, usize);

/// One sample of the server, taken at the end of a window.
struct Sample {
    rss_mib: Option<f64>,
    /// Callbacks stored, not yet handled.
    inbox: i64,
    /// Messages pending or being sent.
    outbox: i64,
    /// Ladder notices (reminders, escalations) sent so far.
    notices: i64,
    checkpoints: i64,
}

async fn sample(db: &rollcall::db::Database, pid: u32) -> anyhow::Result<Sample> {
    Ok(Sample {
        rss_mib: status_mib(pid, "VmRSS:"),
        inbox: scalar(
            db,
            "SELECT COUNT(*) FROM inbound_events WHERE processed_at IS NULL",
        )
        .await?,
        outbox: scalar(
            db,
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending')",
        )
        .await?,
        notices: scalar(
            db,
            "SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND idem_key LIKE 'notice:%'",
        )
        .await?,
        checkpoints: scalar(db, "SELECT COUNT(*) FROM evidence_checkpoints").await?,
    })
}

/// The soak (see the module's documentation): `secs` at a steady rate.
async fn soak(db_name: &str, url: &str, secs: u64) -> anyhow::Result<()> {
    let n: usize = env_or("PEAK_EMPLOYEES", 100_000);
    let absent: usize = env_or("PEAK_ABSENT", 1_000);
    let connections: usize = env_or("PEAK_CONNECTIONS", 64);
    let rate: f64 = env_or("PEAK_RATE", 2_000.0);
    let window = Duration::from_secs(env_or("PEAK_SAMPLE_SECS", 60u64).max(1));
    let checkpoint: u64 = env_or("PEAK_CHECKPOINT_SECS", 10);
    anyhow::ensure!(
        n > FIRST_EMPLOYEE + absent,
        "PEAK_EMPLOYEES must be more than 60 + PEAK_ABSENT"
    );
    println!(
        "{db_name} soak: {n} employees ({absent} absent), {rate}/s for {secs} s, {connections} connections, a checkpoint every {checkpoint} s"
    );
    let Started {
        sandbox,
        dir,
        server,
        phone,
        db,
        imported: _,
    } = start(
        url,
        n,
        Some(absent),
        &format!("checkpoint_every_secs = {checkpoint}"),
    )
    .await?;
    let pid = server.0.id();
    let before = sample(&db, pid).await?;
    let present = n - FIRST_EMPLOYEE - absent;
    let total = (rate * secs as f64) as usize;
    let windows = secs.div_ceil(window.as_secs()) as usize;
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let per_window: Arc<std::sync::Mutex<Vec<Window>>> = Arc::new(std::sync::Mutex::new(
        (0..windows).map(|_| (new_hist(), 0)).collect(),
    ));

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (phone, next, per_window) = (phone.clone(), next.clone(), per_window.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                let who = user(FIRST_EMPLOYEE + absent + i % present);
                let delivery = check_in(&phone, i, &who).await;
                let took = at.elapsed().as_micros().max(1) as u64;
                let w = ((at - start).as_secs_f64() / window.as_secs_f64()) as usize;
                let mut windows = per_window.lock().unwrap_or_else(|p| p.into_inner());
                let last = windows.len() - 1;
                let slot = &mut windows[w.min(last)];
                slot.0.saturating_record(took);
                if !delivery.delivered {
                    slot.1 += 1;
                }
            }
        });
    }
    // A sample at the end of each window, printed as it is taken.
    let mut samples = Vec::new();
    for k in 1..=windows {
        tokio::time::sleep_until((start + window * k as u32).into()).await;
        let s = sample(&db, pid).await?;
        println!(
            "  {:>5} s  RSS {:>4.0} MiB  unhandled {:>7}  waiting to be sent {:>7}  notices sent {:>5}  checkpoints {:>4}",
            (window * k as u32).as_secs(),
            s.rss_mib.unwrap_or(f64::NAN),
            s.inbox,
            s.outbox,
            s.notices,
            s.checkpoints
        );
        samples.push(s);
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let took = start.elapsed();
    let hwm = peak_rss_mib(pid);
    let events = scalar(&db, "SELECT COUNT(*) FROM inbound_events").await?;
    let cases = scalar(&db, "SELECT COUNT(*) FROM absence_cases").await?;
    drop(server);
    if std::env::var_os("PEAK_LOG").is_some() {
        let kept = format!("soak-serve-{db_name}.log");
        std::fs::copy(dir.path().join("serve.log"), &kept)?;
        println!("  server log    {kept}");
    }
    db.close().await;

    let windows = per_window.lock().unwrap_or_else(|p| p.into_inner());
    let mut all = new_hist();
    println!(
        "  | to | acknowledged | p50 ms | p99 ms | max ms | failed | RSS MiB | unhandled | waiting to be sent | notices sent |"
    );
    println!("  | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (k, ((hist, failed), s)) in windows.iter().zip(&samples).enumerate() {
        all.add(hist)?;
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  | {} s | {} | {:.1} | {:.1} | {:.1} | {failed} | {:.0} | {} | {} | {} |",
            window.as_secs() * (k as u64 + 1),
            hist.len(),
            ms(0.5),
            ms(0.99),
            hist.max() as f64 / 1000.0,
            s.rss_mib.unwrap_or(f64::NAN),
            s.inbox,
            s.outbox,
            s.notices
        );
    }
    let failed: usize = windows.iter().map(|w| w.1).sum();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  all           {} acknowledged in {:.1} s ({:.0}/s), {failed} failed; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        took.as_secs_f64(),
        all.len() as f64 / took.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        all.max() as f64 / 1000.0
    );
    println!(
        "  before        RSS {:.0} MiB, {} cases, {} messages waiting",
        before.rss_mib.unwrap_or(f64::NAN),
        cases,
        before.outbox
    );
    if let Some(hwm) = hwm {
        println!("  server RSS    {hwm:.0} MiB at peak");
    }
    println!(
        "  stored        {events} events; the sandbox counted {} sends, {} duplicates, {} over the member limit",
        sandbox.api.sent().len(),
        sandbox.api.duplicates(),
        sandbox.api.dropped().len()
    );
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
        let soak_secs: Option<u64> = std::env::var("PEAK_SECS").ok().and_then(|v| v.parse().ok());
        let go = |name: &'static str, url: String| async move {
            match soak_secs {
                Some(secs) => soak(name, &url, secs).await,
                None => run(name, &url).await,
            }
        };
        if wanted("sqlite") {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("peak.db").display());
            go("sqlite", url).await?;
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
            let result = go("postgres", url).await;
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
