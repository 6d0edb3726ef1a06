//! The ladder at scale: the absence scan of 100,000 employees with 60
//! workdays of check-ins (SQLite), and delivery of 20,000 chat messages to
//! the sandbox platform through the real app (SQLite and PostgreSQL).
//!
//!     cargo bench --bench ladder                      # everything
//!     cargo bench --bench ladder -- scan              # one part: scan,
//!     cargo bench --bench ladder -- delivery          #   delivery (both databases),
//!     cargo bench --bench ladder -- delivery-sqlite   #   delivery-sqlite, delivery-postgres
//!
//! Sizes: `LADDER_EMPLOYEES` (100000), `LADDER_DAYS` (60), `LADDER_MESSAGES`
//! (20000), `LADDER_SCAN_ROUNDS` (3). PostgreSQL: `ROLLCALL_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database
//! is made and dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use entity::outbox;
use rollcall::attendance::calendar::{DayStatus, day_status};
use rollcall::clock::{Clock, SimulatedClock};
use rollcall::config::Config;
use rollcall::db::Engine;
use rollcall::outbox::{NewMessage, Payload, enqueue};
use rollcall::platform::sandbox::SandboxApi;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait};

const TENANT: &str = "bench";
const CORP_ID: &str = "wwbench000000000";
const SECRET: &str = "bench-secret";
/// The scanned day: a Tuesday, an ordinary workday.
const SCAN_DAY: &str = "2026-12-01";
/// Employees per check-in statement (one row each).
const CHECK_IN_BATCH: i64 = 10_000;
/// Outbox rows per enqueue transaction.
const ENQUEUE_BATCH: usize = 1_000;

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shanghai(date: &str, time: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M")
        .expect("valid bench time");
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .expect("no DST in Shanghai")
        .with_timezone(&Utc)
}

/// How sqlx (and so sea-orm) stores a `DateTime<Utc>` in SQLite.
fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One line of the result table.
struct Line {
    what: String,
    result: String,
    target: String,
}

fn main() -> anyhow::Result<()> {
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| {
        picked.is_empty()
            || picked
                .iter()
                .any(|p| name == p || name.starts_with(&format!("{p}-")))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut lines = Vec::new();
    runtime.block_on(async {
        if wants("scan") {
            lines.extend(scan_bench().await.context("scan")?);
        }
        if wants("delivery-sqlite") {
            lines.extend(
                delivery_bench(Engine::Sqlite)
                    .await
                    .context("delivery, SQLite")?,
            );
        }
        if wants("delivery-postgres") {
            lines.extend(
                delivery_bench(Engine::Postgres)
                    .await
                    .context("delivery, PostgreSQL")?,
            );
        }
        anyhow::Ok(())
    })?;
    println!();
    println!("| what | result | target |");
    println!("| --- | --- | --- |");
    for l in &lines {
        println!("| {} | {} | {} |", l.what, l.result, l.target);
    }
    Ok(())
}

// ---------------------------------------------------------------- the scan

fn scan_config(dir: &std::path::Path) -> anyhow::Result<Config> {
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
data_key_file = "{}"
[evidence]
key_file = "{}"
[database]
url = "sqlite://{}?mode=rwc"
[[tenants]]
id = "{TENANT}"
name = "基准建筑有限公司"
timezone = "Asia/Shanghai"
"#,
        dir.join("data.key").display(),
        dir.join("evidence.key").display(),
        dir.join("scan.db").display(),
    );
    Ok(Config::parse(&toml, &[] as &[(&str, &str); 0])?)
}

/// The `days` workdays up to and including `last`, by the tenant's calendar.
fn workdays(config: &Config, last: NaiveDate, days: usize) -> Vec<NaiveDate> {
    let a = &config.tenants[0].attendance;
    let mut out = Vec::new();
    let mut d = last;
    while out.len() < days {
        if day_status(&a.calendar, a.rest_days, &[], d) == DayStatus::Workday {
            out.push(d);
        }
        d = d.pred_opt().expect("a date");
    }
    out.reverse();
    out
}

async fn scalar(pool: &sqlx::SqlitePool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

async fn scan_bench() -> anyhow::Result<Vec<Line>> {
    let employees = size("LADDER_EMPLOYEES", 100_000) as i64;
    let days = size("LADDER_DAYS", 60);
    let rounds = size("LADDER_SCAN_ROUNDS", 3);
    let absent = employees / 100;
    let dir = tempfile::tempdir()?;
    let config = scan_config(dir.path())?;
    let day = NaiveDate::parse_from_str(SCAN_DAY, "%Y-%m-%d")?;
    let clock = Arc::new(SimulatedClock::new(shanghai("2026-12-02", "10:00")));
    let rt = rollcall::app::runtime(&config, clock.clone()).await?;
    let pool = rt.db.sqlite().clone();

    // The roster: 10 HR people, 1,000 managers, the rest employees, each
    // with one of the managers. One INSERT … SELECT over a counter (faster
    // than the CSV import, which seals each personal field one by one; the
    // sealed columns stay empty here).
    let setup = Instant::now();
    let sql = format!(
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < {employees}) \
         INSERT INTO employees (tenant_id, user_id, name, department, manager_user_id, role, email, \
           hire_date, active, source, updated_at) \
         SELECT '{TENANT}', printf('u%06d', i), printf('员工%06d', i), printf('工地%03d', i % 500), \
           CASE WHEN i < 1010 THEN NULL ELSE printf('u%06d', 10 + i % 1000) END, \
           CASE WHEN i < 10 THEN 'hr' WHEN i < 1010 THEN 'manager' ELSE 'employee' END, \
           printf('u%06d@example.com', i), '2025-01-01', 1, 'bench', '{}' FROM seq",
        sqlite_time(shanghai("2026-11-01", "09:00"))
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await?;
    let roster_time = setup.elapsed();

    // Check-ins: everyone on each of the workdays, except 1 % on the
    // scanned day (employees with id % 100 = 50). Multi-row INSERT … SELECT
    // statements of CHECK_IN_BATCH rows, one transaction per workday; each row
    // gets a unique inbound_event_id (workday index × 10^7 + employee id).
    let dates = workdays(&config, day, days);
    let inserting = Instant::now();
    for (k, d) in dates.iter().enumerate() {
        let at = sqlite_time(shanghai(&d.to_string(), "08:30"));
        let skip = if *d == day { "AND id % 100 <> 50" } else { "" };
        let mut tx = pool.begin().await?;
        let mut from = 0;
        while from < employees {
            let sql = format!(
                "INSERT INTO check_ins (tenant_id, user_id, work_date, checked_at, recorded_at, \
                   source, inbound_event_id, flagged) \
                 SELECT tenant_id, user_id, '{d}', '{at}', '{at}', 'text', {} + id, 0 \
                 FROM employees WHERE tenant_id = '{TENANT}' AND id > {from} AND id <= {} {skip}",
                (k as i64 + 1) * 10_000_000,
                from + CHECK_IN_BATCH
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
            from += CHECK_IN_BATCH;
        }
        tx.commit().await?;
    }
    let check_in_time = inserting.elapsed();
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await?;
    let check_ins = scalar(&pool, "SELECT COUNT(*) FROM check_ins").await?;
    let roster = scalar(&pool, "SELECT COUNT(*) FROM employees").await?;
    ensure!(roster == employees, "{roster} employees inserted");
    let db_size = std::fs::metadata(dir.path().join("scan.db"))?.len();
    println!(
        "scan setup: {roster} employees in {}, {check_ins} check-ins over {} workdays ({} … {}) in {} ({:.0} rows/s), database {:.0} MiB",
        secs(roster_time),
        dates.len(),
        dates[0],
        dates[dates.len() - 1],
        secs(check_in_time),
        check_ins as f64 / check_in_time.as_secs_f64(),
        db_size as f64 / (1024.0 * 1024.0)
    );

    let mut lines = vec![Line {
        what: format!(
            "scan setup (SQLite): {roster} employees, {check_ins} check-ins, INSERT … SELECT"
        ),
        result: format!("{} + {}", secs(roster_time), secs(check_in_time)),
        target: "-".into(),
    }];
    let mut firsts = Vec::new();
    let mut seconds = Vec::new();
    for round in 1..=rounds {
        if round > 1 {
            // Back to the state before the first scan of the day.
            sqlx::raw_sql(
                "DELETE FROM card_actions; DELETE FROM outbox; DELETE FROM case_events; \
                 DELETE FROM absence_cases; \
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .execute(&pool)
            .await?;
        }
        let t = Instant::now();
        let first = rollcall::cases::scan::scan(&rt, TENANT, Some(day)).await?;
        let first_time = t.elapsed();
        let outbox_rows = scalar(&pool, "SELECT COUNT(*) FROM outbox").await?;
        ensure!(
            first.opened == absent as usize && first.escalated == absent as usize,
            "first scan: {first:?}"
        );
        ensure!(
            outbox_rows == absent,
            "first scan: {outbox_rows} outbox rows"
        );

        let t = Instant::now();
        let second = rollcall::cases::scan::scan(&rt, TENANT, Some(day)).await?;
        let second_time = t.elapsed();
        let outbox_after = scalar(&pool, "SELECT COUNT(*) FROM outbox").await?;
        ensure!(
            second.opened == 0
                && second.advanced == 0
                && second.escalated == 0
                && second.resolved == 0
                && outbox_after == outbox_rows,
            "second scan was not a no-op: {second:?}, {outbox_after} outbox rows"
        );
        println!(
            "scan round {round}: first {} (opened {}, {} outbox rows), second {} (no-op)",
            secs(first_time),
            first.opened,
            outbox_rows,
            secs(second_time)
        );
        firsts.push(first_time);
        seconds.push(second_time);
    }
    let list = |v: &[Duration]| v.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ");
    let met = |v: &[Duration]| {
        if v.iter().all(|d| *d <= Duration::from_secs(2)) {
            "≤ 2 s: met"
        } else {
            "≤ 2 s: NOT met"
        }
    };
    lines.push(Line {
        what: format!(
            "scan, first of the day: {roster} employees, {absent} absent → {absent} cases + first reminders{}",
            ""
        ),
        result: list(&firsts),
        target: met(&firsts).into(),
    });
    lines.push(Line {
        what: format!("scan, same day again (no-op){}", ""),
        result: list(&seconds),
        target: met(&seconds).into(),
    });
    lines.extend(scan_phases(&rt, day).await?);
    rt.db.close().await;
    Ok(lines)
}

/// Times the scan's reads one by one (the queries of `scan` and, per case,
/// of `notify::issue`), on the data the scans left behind.
async fn scan_phases(rt: &rollcall::runtime::Runtime, day: NaiveDate) -> anyhow::Result<Vec<Line>> {
    use entity::{absence_case, check_in, employee, leave};
    use sea_orm::QuerySelect;
    let db = &rt.db.orm;
    let mut lines = Vec::new();
    let mut time = |what: &str, d: Duration| {
        println!("  phase: {what}: {}", millis(d));
        lines.push(Line {
            what: format!("  phase: {what}"),
            result: millis(d),
            target: "-".into(),
        });
    };

    let t = Instant::now();
    let rows: Vec<(String, Option<String>)> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .column(employee::Column::RestDays)
        .filter(employee::Column::TenantId.eq(TENANT))
        .filter(employee::Column::Active.eq(true))
        .into_tuple()
        .all(db)
        .await?;
    time(
        &format!("active employees ({} rows)", rows.len()),
        t.elapsed(),
    );

    let t = Instant::now();
    let checked: Vec<String> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::UserId)
        .distinct()
        .filter(check_in::Column::TenantId.eq(TENANT))
        .filter(check_in::Column::WorkDate.eq(day))
        .into_tuple()
        .all(db)
        .await?;
    time(
        &format!("checked in on the day ({} rows)", checked.len()),
        t.elapsed(),
    );

    let t = Instant::now();
    let leaves = leave::Entity::find()
        .filter(leave::Column::TenantId.eq(TENANT))
        .filter(leave::Column::FromDate.lte(day))
        .filter(leave::Column::ToDate.gte(day))
        .all(db)
        .await?;
    time(&format!("leaves ({} rows)", leaves.len()), t.elapsed());

    let t = Instant::now();
    let cases = absence_case::Entity::find()
        .filter(absence_case::Column::TenantId.eq(TENANT))
        .filter(absence_case::Column::Status.ne("resolved"))
        .all(db)
        .await?;
    time(&format!("open cases ({} rows)", cases.len()), t.elapsed());

    // Per case, what `issue` reads before it renders: 100 cases, averaged.
    let sample: Vec<_> = cases.iter().take(100).collect();
    let n = sample.len().max(1) as u32;
    let t = Instant::now();
    for c in &sample {
        rollcall::employees::directory::person(rt, db, TENANT, &c.user_id, Default::default())
            .await?;
    }
    time("per case: the employee's row (avg)", t.elapsed() / n);
    let t = Instant::now();
    for _ in &sample {
        rollcall::employees::directory::hr_people(db, TENANT).await?;
    }
    time("per case: HR people (avg)", t.elapsed() / n);
    let t = Instant::now();
    for c in &sample {
        outbox::Entity::find()
            .filter(outbox::Column::CaseId.eq(c.id))
            .filter(outbox::Column::Status.eq("sent"))
            .all(db)
            .await?;
        entity::case_event::Entity::find()
            .filter(entity::case_event::Column::CaseId.eq(c.id))
            .all(db)
            .await?;
    }
    time(
        "per case: earlier attempts (outbox + case events, avg)",
        t.elapsed() / n,
    );
    Ok(lines)
}

// ------------------------------------------------------------ the delivery

fn postgres_admin_url() -> String {
    std::env::var("ROLLCALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database for one delivery run: a SQLite file in a temp dir, or a fresh
/// PostgreSQL database (dropped by [`BenchDb::drop_database`]).
struct BenchDb {
    url: String,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl BenchDb {
    async fn new(engine: Engine) -> anyhow::Result<BenchDb> {
        let dir = tempfile::tempdir()?;
        match engine {
            Engine::Sqlite => Ok(BenchDb {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("delivery.db").display()
                ),
                dir,
                pg_name: None,
            }),
            Engine::Postgres => {
                let name = format!(
                    "rollcall_bench_{}_{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .with_context(|| format!("PostgreSQL at {admin}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin.rsplit_once('/').context("database url")?.0;
                Ok(BenchDb {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    async fn drop_database(&self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) =
                <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_admin_url()).await
        {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    }
}

async fn delivery_bench(engine: Engine) -> anyhow::Result<Vec<Line>> {
    let db = BenchDb::new(engine).await?;
    let result = delivery_run(engine, &db).await;
    db.drop_database().await;
    result
}

async fn delivery_run(engine: Engine, db: &BenchDb) -> anyhow::Result<Vec<Line>> {
    let messages = size("LADDER_MESSAGES", 20_000);
    let members = messages.div_ceil(2);
    let label = match engine {
        Engine::Sqlite => "SQLite",
        Engine::Postgres => "PostgreSQL",
    };
    let sandbox = SandboxApi::start(CORP_ID, SECRET).await?;
    let (token, aes_key) = rollcall::demo::fresh_secrets();
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
data_key_file = "{}"
[evidence]
key_file = "{}"
[database]
url = "{}"
[[tenants]]
id = "{TENANT}"
name = "基准建筑有限公司"
timezone = "Asia/Shanghai"
[tenants.wecom]
corp_id = "{CORP_ID}"
agent_id = 1000002
secret = "{SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{}"
"#,
        db.dir.path().join("data.key").display(),
        db.dir.path().join("evidence.key").display(),
        db.url,
        sandbox.api_base()
    );
    let config = Config::parse(&toml, &[] as &[(&str, &str); 0])?;
    // Before the day's scan time, so the scheduler enqueues no scan meanwhile.
    let clock = Arc::new(SimulatedClock::new(shanghai("2026-12-02", "07:00")));
    let app = rollcall::app::start_with_clock(&config, clock.clone()).await?;
    let orm = app.db.orm.clone();
    let now = clock.now();

    // Member i % members gets message i: two each, never near 30 a minute.
    let start = Instant::now();
    let mut i = 0;
    while i < messages {
        let txn = orm.begin().await?;
        for j in i..(i + ENQUEUE_BATCH).min(messages) {
            let member = format!("m{:06}", j % members);
            let message = NewMessage {
                secret: None,
                tenant_id: TENANT.into(),
                idem_key: format!("bench:{j}"),
                case_id: None,
                fence: None,
                step: None,
                recipient: member.clone(),
                template: "bench".into(),
                template_hash: "bench".into(),
                payload: Payload::Text {
                    content: format!("基准消息 {j} 给 {member}"),
                },
            };
            ensure!(
                enqueue(&txn, message, now).await?.is_some(),
                "message {j} not enqueued"
            );
        }
        txn.commit().await?;
        i += ENQUEUE_BATCH;
    }
    let enqueued = start.elapsed();
    let sent_while_enqueueing = outbox::Entity::find()
        .filter(outbox::Column::Status.eq("sent"))
        .count(&orm)
        .await? as usize;

    let deadline = Duration::from_secs(600);
    let final_states = ["failed", "undeliverable", "cancelled"];
    let mut last_report = Instant::now();
    let sent = loop {
        let sent = outbox::Entity::find()
            .filter(outbox::Column::Status.eq("sent"))
            .count(&orm)
            .await? as usize;
        if sent >= messages {
            break sent;
        }
        let bad = outbox::Entity::find()
            .filter(outbox::Column::Status.is_in(final_states))
            .count(&orm)
            .await?;
        ensure!(
            bad == 0,
            "{bad} messages ended failed/undeliverable/cancelled"
        );
        if start.elapsed() > deadline {
            break sent;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {label}: {sent} of {messages} sent after {}",
                secs(start.elapsed())
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let total = start.elapsed();
    let accepted = sandbox.sent();
    let dropped = sandbox.dropped();
    let duplicates = sandbox.duplicates();
    app.stop().await;
    ensure!(
        sent >= messages,
        "only {sent} of {messages} sent in {}",
        secs(total)
    );
    ensure!(
        dropped.is_empty(),
        "the sandbox dropped {} messages over the per-member limit",
        dropped.len()
    );
    let per_member_max = {
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for m in &accepted {
            *counts.entry(m.touser.as_str()).or_default() += 1;
        }
        counts.values().copied().max().unwrap_or(0)
    };
    let rate = messages as f64 / total.as_secs_f64();
    // After the last commit the workers only drain the backlog.
    let drain_rate =
        (messages - sent_while_enqueueing) as f64 / (total - enqueued).as_secs_f64().max(1e-9);
    println!(
        "delivery {label}: {messages} messages to {members} members; enqueued in {} ({sent_while_enqueueing} sent meanwhile), all sent after {} → {rate:.0} messages/s ({drain_rate:.0}/s after the last commit); sandbox accepted {}, dropped {}, duplicates {duplicates}, at most {per_member_max} per member",
        secs(enqueued),
        secs(total),
        accepted.len(),
        dropped.len(),
    );
    Ok(vec![Line {
        what: format!(
            "delivery ({label}{}): {messages} messages, {members} members, enqueue → all `sent`",
            ""
        ),
        result: format!(
            "{rate:.0} msg/s ({} total; enqueue {}, {sent_while_enqueueing} sent meanwhile, then {drain_rate:.0}/s; dropped {}, ≤ {per_member_max}/member)",
            secs(total),
            secs(enqueued),
            dropped.len()
        ),
        target: if rate >= 2000.0 {
            "≥ 2,000/s: met".into()
        } else {
            "≥ 2,000/s: NOT met".into()
        },
    }])
}
