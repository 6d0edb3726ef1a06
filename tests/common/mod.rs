//! Boots the real app on a temp database (SQLite in a temp dir, or a fresh
//! PostgreSQL database) with the tenant of the shared crypto vectors.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rollcall::app::RunningApp;
use rollcall::config::{Config, Env};
use rollcall::db::{Database, Engine};
use rollcall::loadgen::{SignedCallback, text_callback};
use rollcall::platform::wecom::WecomCrypto;
use serde_json::Value;

#[allow(unused_imports)]
pub use rollcall::demo::shanghai;

/// The PostgreSQL server the suite uses (a fresh database is made per test).
pub fn postgres_admin_url() -> String {
    std::env::var("ROLLCALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that lives as long as the test.
pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

/// Warnings and errors of the app and its job queue (apalis) reach the test
/// output, so a test that fails on work that never finished shows why (a
/// fetch that failed, a worker that stopped). `RUST_LOG` overrides the filter.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "warn,sqlx=error".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        match engine {
            Engine::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("rollcall.db").display()
                );
                TestDb {
                    engine,
                    url,
                    dir,
                    pg_name: None,
                }
            }
            Engine::Postgres => {
                let name = format!(
                    "rollcall_test_{}_{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {admin} is needed for this test: {e}")
                    });
                let sql = format!("CREATE DATABASE {name}");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').unwrap().0;
                TestDb {
                    engine,
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Drops the PostgreSQL database (the SQLite file goes with the temp dir).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name {
            let admin = postgres_admin_url();
            if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// A port for a `rollcall serve` child process to listen on. Picked below
/// Linux's ephemeral range (32768–60999), where neither another test's
/// `bind(0)` nor an outgoing connection's source port can take it between
/// this check and the child's bind, nor while the child is restarted.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tenant of `tests/vectors/wecom.json`.
pub struct Tenant {
    pub corp_id: String,
    pub token: String,
    pub key: String,
}

pub fn vector_tenant() -> Tenant {
    let v = vectors("wecom.json");
    Tenant {
        corp_id: v["corp_id"].as_str().unwrap().into(),
        token: v["token"].as_str().unwrap().into(),
        key: v["encoding_aes_key"].as_str().unwrap().into(),
    }
}

impl Tenant {
    pub fn crypto(&self) -> WecomCrypto {
        WecomCrypto::new(&self.token, &self.key, &self.corp_id).unwrap()
    }

    /// A fresh, correctly signed text callback.
    pub fn text(&self, msg_id: u64, content: &str) -> SignedCallback {
        text_callback(
            &self.crypto(),
            &self.corp_id,
            VECTOR_AGENT_ID,
            msg_id,
            "zhangsan",
            content,
            chrono::Utc::now().timestamp(),
        )
    }
}

/// The app the vectors' messages are addressed to (their `AgentID`).
pub const VECTOR_AGENT_ID: i64 = 1000019;

/// A config TOML for the vector tenant `acme` on `db_url`.
pub fn config_toml(db_url: &str, listen: &str, replay_window_secs: u64) -> String {
    let t = vector_tenant();
    format!(
        r#"[server]
listen = "{listen}"
replay_window_secs = {replay_window_secs}
[database]
url = "{db_url}"
[[tenants]]
id = "acme"
name = "示例建筑有限公司"
[tenants.wecom]
corp_id = "{}"
agent_id = {VECTOR_AGENT_ID}
secret = "test-secret"
token = "{}"
encoding_aes_key = "{}"
api_base = "http://127.0.0.1:9"
"#,
        t.corp_id, t.token, t.key
    )
}

/// Vectors carry timestamps from the past: their app accepts ten years of skew.
pub const VECTOR_WINDOW: u64 = 10 * 365 * 24 * 3600;

pub async fn boot(db: &TestDb, replay_window_secs: u64) -> RunningApp {
    boot_with(db, replay_window_secs, "").await
}

/// [`boot`], with `extra` (TOML: more tenants) in the configuration.
pub async fn boot_with(db: &TestDb, replay_window_secs: u64, extra: &str) -> RunningApp {
    // The evidence key (and the witness beside it) of this test's own.
    let toml = format!(
        "{}{extra}[evidence]\nkey_file = \"{}\"\n",
        config_toml(&db.url, "127.0.0.1:0", 600),
        db.dir.path().join("rollcall-evidence.key").display()
    );
    let mut config = Config::parse(&toml, &[] as &[(&str, &str); 0]).unwrap();
    // The vectors' old timestamps need a window no operator may configure
    // (the parser keeps `server.replay_window_secs` within an hour): set here.
    config.server.replay_window_secs = replay_window_secs;
    rollcall::app::start(&config).await.unwrap()
}

pub fn no_env() -> impl Env {
    [] as [(&str, &str); 0]
}

/// How long a test waits for something the app does in the background
/// before it fails. Generous on purpose: a wait returns as soon as its
/// condition holds, and a loaded 2-core machine (a build beside the suite)
/// can take many times the usual second. Never a measure of speed: that is
/// what the benchmarks are for.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Rows in the inbox of tenant `acme`.
pub async fn rows(db: &Database) -> Vec<entity::inbound_event::Model> {
    rollcall::inbox::list(db, "acme").await.unwrap()
}

/// Waits until every stored row is processed (the jobs ran), at most
/// [`PATIENCE`].
pub async fn wait_all_processed(db: &Database) -> Vec<entity::inbound_event::Model> {
    let timeout = PATIENCE;
    let start = Instant::now();
    loop {
        let rows = rows(db).await;
        if rows.iter().all(|r| r.processed_at.is_some()) {
            return rows;
        }
        assert!(
            start.elapsed() < timeout,
            "{} of {} rows still unprocessed after {timeout:?}",
            rows.iter().filter(|r| r.processed_at.is_none()).count(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn url(app: &RunningApp, path: &str) -> String {
    format!("http://{}{path}", app.addr)
}

pub async fn post(
    app: &RunningApp,
    tenant: &str,
    query: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let r = http()
        .post(url(app, &format!("/callback/wecom/{tenant}?{query}")))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub fn query_string(q: &Value) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.as_object().unwrap() {
        s.append_pair(k, v.as_str().unwrap());
    }
    s.finish()
}

/// An HTTP client (reqwest needs the process's rustls provider first).
pub fn http() -> reqwest::Client {
    rollcall::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// A `rollcall serve` process, killed (SIGKILL) when dropped: a test that
/// fails leaves no server behind holding the database's connections.
pub struct Served(pub std::process::Child);

impl std::ops::Deref for Served {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Killed and reaped already, when the test did it: both fail, harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `rollcall serve` binary on `config`, in `dir`.
pub fn spawn_serve(config: &std::path::Path, dir: &std::path::Path) -> Served {
    Served(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Waits until the server at `base` answers `/readyz` with 200.
pub async fn wait_ready(base: &str) {
    let start = Instant::now();
    let client = http();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
