//! The command line as an operator uses it: config errors, `migrate`, `events`.

mod common;

use std::process::Command;

use common::*;
use rollcall::db::Engine;

fn rollcall(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .env_remove("ROLLCALL_LISTEN")
        .output()
        .unwrap()
}

#[test]
fn a_bad_config_is_refused_with_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_toml("sqlite://x.db?mode=rwc", "127.0.0.1:0", 600);
    let key = vector_tenant().key;
    for (broken, expected) in [
        (
            good.replace(&key, "not-a-key"),
            "tenants[0].wecom.encoding_aes_key",
        ),
        (good.replace("id = \"acme\"", "name2 = \"x\""), "name2"),
        (
            good.replace("name = \"示例建筑有限公司\"", "timezone = \"Asia/Beijing\""),
            "tenants[0].timezone",
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), broken).unwrap();
        let out = rollcall(dir.path(), &["--config", "bad.toml", "migrate"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(expected), "expected {expected} in: {err}");
        assert!(
            !err.contains(&vector_tenant().token),
            "secrets never printed"
        );
    }
    let out = rollcall(dir.path(), &["--config", "missing.toml", "serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[rstest::rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn events_lists_what_was_received(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, VECTOR_WINDOW).await;
    let v = vectors("wecom.json");
    for name in ["text_checkin", "location"] {
        let case = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        let (status, _) = post(
            &app,
            "acme",
            &query_string(&case["query"]),
            case["body"].as_str().unwrap().to_owned(),
        )
        .await;
        assert_eq!(status, 200);
    }
    wait_all_processed(&app.db).await;
    app.stop().await;

    let config = db.dir.path().join("rollcall.toml");
    std::fs::write(&config, config_toml(&db.url, "127.0.0.1:0", 600)).unwrap();
    let out = rollcall(
        db.dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "events",
            "--tenant",
            "acme",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["platform"], "wecom");
    assert_eq!(lines[0]["msg_key"], "msg:7440677009879248857");
    assert_eq!(lines[0]["from_user"], "zhangsan");
    assert_eq!(lines[0]["kind"], "text");
    assert_eq!(lines[0]["content"], "打卡");
    assert_eq!(lines[0]["processed"], true);
    assert!(
        chrono::DateTime::parse_from_rfc3339(lines[0]["received_at"].as_str().unwrap()).is_ok()
    );
    assert_eq!(lines[1]["kind"], "location");
    assert_eq!(lines[1]["content"], serde_json::Value::Null);

    let out = rollcall(
        db.dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "events",
            "--tenant",
            "nobody",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    db.cleanup().await;
}

/// The README's first command: `serve` with no configuration file starts on
/// an embedded SQLite file, says so, and answers health checks.
#[tokio::test]
async fn serve_without_a_config_file_runs_on_embedded_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("serve")
        .current_dir(dir.path())
        .env("ROLLCALL_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("ROLLCALL_DATABASE_URL")
        .env_remove("ROLLCALL_CONFIG")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = common::http();
    let start = std::time::Instant::now();
    let ready = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            break r.status().as_u16();
        }
        assert!(start.elapsed() < common::PATIENCE, "serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ready, 200);
    assert!(
        dir.path().join("rollcall.db").exists(),
        "the embedded database is created in the working directory"
    );
    // The sandbox tenant's roster is there to try things with.
    let db = rollcall::db::Database::connect(&format!(
        "sqlite://{}",
        dir.path().join("rollcall.db").display()
    ))
    .await
    .unwrap();
    let start = std::time::Instant::now();
    loop {
        use sea_orm::{EntityTrait, PaginatorTrait};
        let n = entity::employee::Entity::find()
            .count(&db.orm)
            .await
            .unwrap_or(0);
        if n == 5 {
            break;
        }
        assert!(
            start.elapsed() < common::PATIENCE,
            "roster not imported ({n})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    db.close().await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("WITHOUT a configuration file") && log.contains("SANDBOX tenant `demo`"),
        "a clear banner: {log}"
    );
}
