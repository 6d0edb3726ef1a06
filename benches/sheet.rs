//! The monthly attendance sheet (`rollcall report attendance`) of a tenant
//! of `SHEET_EMPLOYEES` people (default 100,000) on SQLite: every workday of
//! December 2026 a check-in and a check-out each, one in ten late, one in
//! twenty leaving early (4.6 million check-ins), written by `INSERT …
//! SELECT`; then the sheet is built (the queries and the day marks) and
//! written as `.xlsx` through the library calls the command makes.
//!
//!     cargo bench --bench sheet

use std::time::Instant;

use chrono::{Datelike, TimeZone};
use rollcall::attendance::sheet;
use rollcall::config::{Config, ProcessEnv};

fn main() -> anyhow::Result<()> {
    rollcall::tls::install_crypto_provider();
    let people: i64 = std::env::var("SHEET_EMPLOYEES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::Builder::new()
        .prefix("rollcall-sheet-bench-")
        .tempdir_in(".")?;
    let d = dir.path();
    let config = Config::parse(
        "[[tenants]]\nid = \"bench\"\nname = \"压测公司\"\n[[tenants.shifts]]\nname = \"白班\"\nstart = \"08:00\"\nend = \"17:00\"\n",
        &ProcessEnv,
    )?
    .with_database_file(&d.join("sheet.db"));
    let month = sheet::Month {
        year: 2026,
        month: 12,
    };
    let workdays: Vec<String> = month
        .days()
        .into_iter()
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .map(|d| d.to_string())
        .collect();
    tokio::runtime::Runtime::new()?.block_on(async {
        // After the month: every day is closed.
        let now = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2027, 1, 2, 9, 0, 0)
            .unwrap()
            .with_timezone(&chrono::Utc);
        let rt = rollcall::app::runtime(
            &config,
            std::sync::Arc::new(rollcall::clock::SimulatedClock::new(now)),
        )
        .await?;
        let started = Instant::now();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO employees (tenant_id, user_id, name, department, role, active, source, updated_at, shift)
             SELECT 'bench', printf('u%06d', i), '员工' || i, '部门' || (i % 40), 'employee', 1, 'csv',
                 '2026-12-01T00:00:00Z', '白班'
             FROM n",
        )
        .bind(people)
        .execute(rt.db.sqlite())
        .await?;
        let days = workdays
            .iter()
            .enumerate()
            .map(|(j, d)| format!("SELECT {j} AS j, '{d}' AS day"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1),
                 d AS ({days}),
                 dir(k, direction) AS (SELECT 0, 'in' UNION ALL SELECT 1, 'out')
             INSERT INTO check_ins (tenant_id, user_id, work_date, checked_at, recorded_at, source,
                 inbound_event_id, flagged, direction, shift, minutes_off)
             SELECT 'bench', printf('u%06d', i), d.day, d.day || 'T00:00:00Z', d.day || 'T00:00:00Z', 'text',
                 (i * 64 + d.j) * 2 + dir.k, 0, dir.direction, '白班',
                 CASE WHEN dir.k = 0 AND (i + d.j) % 10 = 0 THEN 1 + (i % 90)
                      WHEN dir.k = 1 AND (i + d.j) % 20 = 0 THEN 1 + (i % 45) END
             FROM n, d, dir"
        );
        let filled = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(people)
            .execute(rt.db.sqlite())
            .await?
            .rows_affected();
        println!(
            "filled {people} employees and {filled} check-ins in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let tenant = rt.tenant("bench").expect("the bench tenant");
        for run in 1..=3 {
            let started = Instant::now();
            let made = sheet::build(&rt.db.orm, tenant, month, now).await?;
            let built = started.elapsed().as_secs_f64();
            let bytes = sheet::to_xlsx(&made)?;
            let total = started.elapsed().as_secs_f64();
            println!(
                "run {run}: {} rows; built {built:.2} s, .xlsx {:.2} s ({:.1} MiB); total {total:.2} s",
                made.rows.len(),
                total - built,
                bytes.len() as f64 / f64::from(1u32 << 20),
            );
        }
        rt.db.close().await;
        anyhow::Ok(())
    })
}
