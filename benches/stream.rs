//! DingTalk Stream mode end to end: the sandbox gateway pushes N distinct
//! robot text messages (about 1 KB each) over the WebSocket to the real app
//! on a DingTalk tenant; a frame counts once rollcall acknowledged it, which
//! it does only after the frame's row is durably committed. Reports frames/s
//! and the time from push to ack. The job workers run meanwhile, as in the
//! HTTP load test.
//!
//!     cargo bench --bench stream                 # SQLite and PostgreSQL
//!     cargo bench --bench stream -- sqlite       # one database
//!
//! Size: `STREAM_FRAMES` (20000). PostgreSQL: `ROLLCALL_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database
//! is made and dropped.

use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall::config::{Config, ProcessEnv};
use rollcall::platform::dingtalk::stream::TOPIC_BOT_MESSAGE;
use rollcall::platform::sandbox::{SandboxDingtalkApi, SandboxStreamGateway};
use serde_json::json;

const APP_KEY: &str = "dingbench";
const APP_SECRET: &str = "bench-secret";

fn frames() -> usize {
    std::env::var("STREAM_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

async fn run(db_name: &str, url: &str, n: usize) -> anyhow::Result<()> {
    let api = SandboxDingtalkApi::start(APP_KEY, APP_SECRET).await?;
    let gateway = SandboxStreamGateway::start(APP_KEY, APP_SECRET).await?;
    api.set_gateway(&gateway.api_base());
    let dir = tempfile::tempdir()?;
    let base = api.api_base_v1();
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
data_key_file = "{}"
[evidence]
key_file = "{}"
[database]
url = "{url}"
[[tenants]]
id = "bench"
[tenants.dingtalk]
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
agent_id = 1
api_base = "{base}"
api_base_v1 = "{base}"
"#,
        dir.path().join("data.key").display(),
        dir.path().join("evidence.key").display(),
    );
    let config = Config::parse(&toml, &ProcessEnv)?;
    let app = rollcall::app::start(&config).await?;
    anyhow::ensure!(
        gateway.wait_connections(1, Duration::from_secs(60)).await,
        "no Stream connection"
    );
    let padding = "工地签到 ".repeat(40);
    let now = chrono::Utc::now().timestamp_millis();
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            json!({
                "msgId": format!("msgbench{i:08}"),
                "msgtype": "text",
                "text": { "content": format!("打卡 {padding}") },
                "senderStaffId": format!("user{:05}", i % 5000),
                "conversationType": "1",
                "createAt": now,
                "robotCode": APP_KEY,
            })
            .to_string()
        })
        .collect();
    let start = Instant::now();
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| gateway.push_callback(TOPIC_BOT_MESSAGE, b))
        .collect();
    let pushed = start.elapsed();
    let last = ids.last().context("no frames")?;
    gateway
        .wait_ack(last, Duration::from_secs(600))
        .await
        .context("the last frame was not acknowledged in 10 minutes")?;
    // Frames are handled up to 64 at once and may finish out of order: wait
    // for every one.
    for id in &ids {
        gateway
            .wait_ack(id, Duration::from_secs(600))
            .await
            .with_context(|| format!("frame {id} was not acknowledged"))?;
    }
    let elapsed = start.elapsed();
    let stored = rollcall::inbox::list(&app.db, "bench").await?.len();
    anyhow::ensure!(stored == n, "{stored} of {n} frames stored");
    println!(
        "{db_name:<10} {n} frames: pushed in {:.2} s, all acknowledged after {:.2} s: {:.0} frames/s",
        pushed.as_secs_f64(),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    app.stop().await;
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
        let n = frames();
        if wanted("sqlite") {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            );
            run("sqlite", &url, n).await?;
        }
        if wanted("postgres") {
            let admin = std::env::var("ROLLCALL_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("rollcall_stream_bench_{}", std::process::id());
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let url = format!("{}/{name}", admin.rsplit_once('/').context("admin url")?.0);
            let result = run("postgres", &url, n).await;
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
