//! Fault test: the real `rollcall serve` binary is killed with SIGKILL while
//! callbacks are arriving, then restarted. Every callback that was answered
//! "success" must be stored exactly once, and every stored row processed.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rollcall::db::{Database, Engine};
use rstest::rstest;

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_callback(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = db.dir.path().join("rollcall.toml");
    std::fs::write(
        &config,
        config_toml(&db.url, &format!("127.0.0.1:{port}"), 600),
    )
    .unwrap();

    let mut server = spawn_serve(&config, db.dir.path());
    wait_ready(&base).await;

    // Eight clients post distinct callbacks until the server dies under them.
    let tenant = Arc::new(vector_tenant());
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    rollcall::tls::install_crypto_provider();
    // A client stops at its first error, which must be the kill, not a
    // slow answer on a loaded machine.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8u64 {
        let (tenant, acked, client, base) =
            (tenant.clone(), acked.clone(), client.clone(), base.clone());
        clients.spawn(async move {
            for i in 0..100_000u64 {
                let msg_id = 5_000_000 + c * 100_000 + i;
                let cb = tenant.text(msg_id, "打卡");
                let url = format!("{base}/callback/wecom/acme?{}", cb.query);
                match client.post(url).body(cb.body).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.text().await.is_ok_and(|t| t == "success") {
                            acked.lock().unwrap().insert(format!("msg:{msg_id}"));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        });
    }
    // Kill it mid-stream, after a good number of acknowledgements.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 400 {
        assert!(
            start.elapsed() < PATIENCE,
            "too slow to acknowledge 400 callbacks"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    while clients.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();

    // Restart: the recovery sweep and the workers must finish the backlog.
    let mut server = spawn_serve(&config, db.dir.path());
    wait_ready(&base).await;
    let store = Database::connect(&db.url).await.unwrap();
    let rows = wait_all_processed(&store).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let stored: Vec<&str> = rows.iter().map(|r| r.msg_key.as_str()).collect();
    let unique: HashSet<&str> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no callback stored twice");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| !unique.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged callbacks lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(stored.len() >= acked.len());
    eprintln!(
        "acknowledged {}, stored {} (the rest were committed but the answer was cut off)",
        acked.len(),
        stored.len()
    );
    store.close().await;
    db.cleanup().await;
}

/// A notice whose request reached the platform but whose answer never came
/// back (the process was killed in between) is sent again after the restart,
/// and WeCom's duplicate check keeps the employee from getting it twice.
/// With `moved`, the employee checks in after the restart, before the
/// attempt counts as cut off: the notice is not sent again, and it is
/// recorded `cancelled` with the reason that it may have arrived.
#[rstest]
#[case::sqlite(Engine::Sqlite, false)]
#[case::postgres(Engine::Postgres, false)]
#[case::sqlite_case_moved(Engine::Sqlite, true)]
#[case::postgres_case_moved(Engine::Postgres, true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_cut_off_between_send_and_receipt_arrives_once(
    #[case] engine: Engine,
    #[case] moved: bool,
) {
    use chrono::TimeZone;
    use entity::outbox;
    use rollcall::demo::{SandboxPlatform, TENANT};
    use rollcall::platform::sandbox::Fault;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let db = TestDb::new(engine).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let platform = SandboxPlatform::start().await.unwrap();
    let config_path = db.dir.path().join("rollcall.toml");
    // Before the kill, a request timeout far beyond the time the other four
    // receipts take on a loaded machine, so the hung request is still in
    // flight when the process dies; after the restart a shorter one, so the
    // cut-off attempt (three timeouts and 5 s) is taken up again in 20 s.
    // The cases are opened on a simulated 2 December; `serve` runs on the
    // real clock, and its own daily scan (of a real day) would add messages,
    // so it is off.
    let toml_with_timeout = |secs: u64| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{}\"\n[delivery]\nmax_backoff_secs = 1\ntimeout_secs = {secs}\n{}[tenants.attendance]\nscan_at = \"off\"\n",
            db.dir.path().join("data.key").display(),
            db.dir.path().join("evidence.key").display(),
            db.url,
            platform.tenant_toml()
        )
    };
    let toml = toml_with_timeout(90);
    std::fs::write(&config_path, &toml).unwrap();

    // Five first reminders are waiting in the outbox (nobody checked in on 1 December).
    let config = rollcall::config::Config::parse(&toml, &no_env()).unwrap();
    let judged_at = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 12, 2, 10, 0, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = std::sync::Arc::new(rollcall::clock::SimulatedClock::new(judged_at));
    let rt = rollcall::app::runtime(&config, clock).await.unwrap();
    rollcall::demo::seed_roster(&rt).await.unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let report = rollcall::cases::scan::scan(&rt, TENANT, Some(day))
        .await
        .unwrap();
    assert_eq!(report.opened, 5);
    rt.db.clone().close().await;

    // The platform takes the first message, then never answers.
    platform
        .api
        .push_fault(Fault::AcceptThenHang(Duration::from_secs(600)));
    let mut server = spawn_serve(&config_path, db.dir.path());
    wait_ready(&base).await;
    let store = Database::connect(&db.url).await.unwrap();
    let start = Instant::now();
    loop {
        let sent = outbox::Entity::find()
            .filter(outbox::Column::Status.eq("sent"))
            .all(&store.orm)
            .await
            .unwrap()
            .len();
        if platform.api.sent().len() == 5 && sent == 4 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the notices did not go out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap(); // SIGKILL, one answer still outstanding
    server.wait().unwrap();
    let cut_off = outbox::Entity::find()
        .filter(outbox::Column::Status.eq("sending"))
        .all(&store.orm)
        .await
        .unwrap();
    assert_eq!(cut_off.len(), 1, "one notice was sent without a receipt");

    std::fs::write(&config_path, toml_with_timeout(5)).unwrap();
    let mut server = spawn_serve(&config_path, db.dir.path());
    wait_ready(&base).await;
    if moved {
        let who = &cut_off[0].recipient;
        let phone = platform
            .callback_sender(&format!("{base}/callback/wecom/{TENANT}"))
            .unwrap();
        assert!(
            phone
                .text(who, "打卡", chrono::Utc::now().timestamp())
                .await
                .delivered
        );
        let start = Instant::now();
        let row = loop {
            let row = outbox::Entity::find_by_id(cut_off[0].id)
                .one(&store.orm)
                .await
                .unwrap()
                .unwrap();
            if row.status != "sending" {
                break row;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the cut-off notice stayed sending"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(row.status, "cancelled", "{row:#?}");
        assert_eq!(
            row.error.as_deref(),
            Some(rollcall::outbox::CANCELLED_AFTER_CUT_OFF)
        );
        let leaf = entity::evidence_leaf::Entity::find()
            .filter(entity::evidence_leaf::Column::Kind.eq("message_cancelled"))
            .one(&store.orm)
            .await
            .unwrap()
            .expect("the cancellation is on record");
        assert!(
            leaf.content
                .unwrap_or_default()
                .contains("may have taken it"),
            "the record says it may have arrived"
        );
        server.kill().unwrap();
        server.wait().unwrap();
        // The five notices, each once (the sixth message is the check-in's
        // reply).
        let cards = platform
            .api
            .sent()
            .into_iter()
            .filter(|m| m.msgtype == "template_card")
            .count();
        assert_eq!(cards, 5, "nothing sent again");
        store.close().await;
        db.cleanup().await;
        return;
    }
    let start = Instant::now();
    loop {
        let rows = outbox::Entity::find().all(&store.orm).await.unwrap();
        if rows.iter().all(|r| r.status == "sent") {
            assert!(rows.iter().all(|r| r.receipt_id.is_some()));
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "not all delivered: {:?}",
            rows.iter()
                .map(|r| (&r.idem_key, &r.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(
        platform.api.sent().len(),
        5,
        "each notice reached the employee once"
    );
    assert_eq!(
        platform.api.duplicates(),
        1,
        "the resend was recognised as a duplicate"
    );
    store.close().await;
    db.cleanup().await;
}

/// Two instances on one PostgreSQL database, both under load; one is killed
/// with SIGKILL mid-load (mid-batch, most likely: its handlers are always
/// in one) and started again. Every acknowledged callback is stored once,
/// every stored one is handled exactly once (one callback leaf and one
/// reply each), and the evidence log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_mid_load_lose_nothing_and_handle_nothing_twice() {
    use entity::{evidence_leaf, outbox};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

    let db = TestDb::new(Engine::Postgres).await;
    let ports = [free_port(), free_port()];
    let configs: Vec<std::path::PathBuf> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let path = db.dir.path().join(format!("instance{i}.toml"));
            std::fs::write(
                &path,
                config_toml(&db.url, &format!("127.0.0.1:{port}"), 600),
            )
            .unwrap();
            path
        })
        .collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    // The first start makes the keys (files beside the database, shared as
    // a secret volume would be); the second finds them.
    let mut first = spawn_serve(&configs[0], db.dir.path());
    wait_ready(&bases[0]).await;
    let mut second = spawn_serve(&configs[1], db.dir.path());
    wait_ready(&bases[1]).await;

    let tenant = Arc::new(vector_tenant());
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    rollcall::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8u64 {
        let (tenant, acked, client) = (tenant.clone(), acked.clone(), client.clone());
        let base = bases[(c % 2) as usize].clone();
        clients.spawn(async move {
            for i in 0..400u64 {
                let msg_id = 7_000_000 + c * 100_000 + i;
                let cb = tenant.text(msg_id, "打卡");
                let url = format!("{base}/callback/wecom/acme?{}", cb.query);
                match client.post(url).body(cb.body).send().await {
                    Ok(r) if r.status().is_success() => {
                        if r.text().await.is_ok_and(|t| t == "success") {
                            acked.lock().unwrap().insert(format!("msg:{msg_id}"));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return, // this client's instance is gone
                }
            }
        });
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 600 {
        assert!(
            start.elapsed() < PATIENCE,
            "too slow to acknowledge 600 callbacks"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // The other instance goes on under its clients' load; then the killed
    // one comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = spawn_serve(&configs[0], db.dir.path());
    wait_ready(&bases[0]).await;
    while clients.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();

    let store = Database::connect(&db.url).await.unwrap();
    let rows = wait_all_processed(&store).await;
    let stored: HashSet<&str> = rows.iter().map(|r| r.msg_key.as_str()).collect();
    assert_eq!(stored.len(), rows.len(), "no callback stored twice");
    let missing = acked
        .iter()
        .filter(|k| !stored.contains(k.as_str()))
        .count();
    assert_eq!(missing, 0, "acknowledged callbacks lost");
    // Handled exactly once: one callback leaf and one reply per event.
    let leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("callback"))
        .count(&store.orm)
        .await
        .unwrap();
    assert_eq!(leaves as usize, rows.len(), "one callback leaf per event");
    let replies = outbox::Entity::find().count(&store.orm).await.unwrap();
    assert_eq!(replies as usize, rows.len(), "one reply per event");
    for server in [&mut first, &mut second] {
        server.kill().unwrap();
        server.wait().unwrap();
    }
    let verified = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["--config", configs[0].to_str().unwrap()])
        .args(["evidence", "verify", "--tenant", "acme"])
        .current_dir(db.dir.path())
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    eprintln!(
        "acknowledged {}, stored and handled {}",
        acked.len(),
        rows.len()
    );
    store.close().await;
    db.cleanup().await;
}
