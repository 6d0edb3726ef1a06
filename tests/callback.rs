//! Request tests: the real app on a temp database (SQLite and PostgreSQL),
//! driven with signed callbacks over HTTP.

mod common;

use common::*;
use rollcall::db::Engine;
use rollcall::ingress::Outcome;
use rstest::rstest;
use std::time::Duration;

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn vectors_through_the_endpoint(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, VECTOR_WINDOW).await;
    let v = vectors("wecom.json");
    let client = common::http();
    let mut accepted = Vec::new();
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let q = query_string(&case["query"]);
        let (status, body) = if case["method"] == "GET" {
            let r = client
                .get(url(&app, &format!("/callback/wecom/acme?{q}")))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        } else {
            post(&app, "acme", &q, case["body"].as_str().unwrap().to_owned()).await
        };
        if case["expect_status"] == 200 {
            assert_eq!(status, 200, "{name}: {body}");
            if case["method"] == "GET" {
                assert_eq!(
                    body,
                    case["expect_body"].as_str().unwrap(),
                    "{name}: body is the echostr only"
                );
            } else {
                assert_eq!(body, "success", "{name}");
                accepted.push(case["plaintext"].as_str().unwrap().to_owned());
            }
        } else {
            assert!(
                (400..500).contains(&status),
                "{name}: refused with 4xx, got {status}"
            );
        }
    }
    let rows = rows(&app.db).await;
    let stored: Vec<&str> = rows.iter().map(|r| r.plaintext.as_str()).collect();
    assert_eq!(
        stored,
        accepted.iter().map(String::as_str).collect::<Vec<_>>(),
        "exactly the accepted cases are stored, in order"
    );
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "text",
            "text",
            "location",
            "image",
            "card_button",
            "other",
            "text"
        ]
    );
    assert_eq!(rows[0].content.as_deref(), Some("打卡"));
    assert_eq!(rows[0].from_user, "zhangsan");
    assert_eq!(rows[0].msg_key, "msg:7440677009879248857");
    assert_eq!(
        rows[4].msg_key,
        "event:LiSi:1764193314:template_card_event:ack:case-42-notice-3"
    );
    assert!(
        rows[0]
            .raw_query
            .contains("msg_signature=f7b94ad892356ebe61a8dd30c2e3c2486ef4e870")
    );
    assert!(rows[0].raw_body.contains("<Encrypt>"));
    let processed = wait_all_processed(&app.db).await;
    let classes: Vec<&str> = processed
        .iter()
        .map(|r| r.classification.as_deref().unwrap())
        .collect();
    assert_eq!(
        classes,
        // The vector tenant has no employees: messages from strangers get the
        // polite answer, events from them are ignored (tests/ladder.rs covers
        // what known people's events do).
        [
            "unknown_sender",
            "unknown_sender",
            "unknown_sender",
            "unknown_sender",
            "ignored",
            "ignored",
            "unknown_sender"
        ]
    );
    app.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_retried_delivery_is_stored_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, VECTOR_WINDOW).await;
    let v = vectors("wecom.json");
    for case in v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "text_checkin" || c["name"] == "card_ack")
    {
        let q = query_string(&case["query"]);
        for _ in 0..3 {
            let (status, body) =
                post(&app, "acme", &q, case["body"].as_str().unwrap().to_owned()).await;
            assert_eq!((status, body.as_str()), (200, "success"));
        }
    }
    assert_eq!(
        rows(&app.db).await.len(),
        2,
        "one row per delivery, events included"
    );
    assert_eq!(app.metrics.get(Outcome::Accepted), 2);
    assert_eq!(app.metrics.get(Outcome::Duplicate), 4);
    app.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callbacks_make_a_thousand_rows(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    let client = common::http();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let cb = tenant.text(1_000_000 + i, &format!("打卡 {i}"));
        let url = url(&app, &format!("/callback/wecom/acme?{}", cb.query));
        let client = client.clone();
        tasks.spawn(async move {
            let r = client.post(url).body(cb.body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), (200, "success".to_owned()));
    }
    let rows = rows(&app.db).await;
    assert_eq!(rows.len(), 1000);
    let mut keys: Vec<&str> = rows.iter().map(|r| r.msg_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 1000);
    wait_all_processed(&app.db).await;
    app.stop().await;
    db.cleanup().await;
}

/// Each refusal: its status, a one-line reason, a counter, and nothing stored.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn refusals_store_nothing(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    let crypto = tenant.crypto();
    let now = chrono::Utc::now().timestamp();
    let good = tenant.text(42, "打卡");

    // Re-sign a plaintext with an arbitrary timestamp.
    let signed_at = |ts: i64, plain: &str| {
        rollcall::loadgen::seal(&crypto, &tenant.corp_id, VECTOR_AGENT_ID, plain, ts, 7)
    };
    let plain = |id: u64| {
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>u</FromUserName><CreateTime>{now}</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>{id}</MsgId></xml>",
            tenant.corp_id
        )
    };
    let stale = signed_at(now - 3600, &plain(1));
    let future = signed_at(now + 3600, &plain(2));
    let not_xml_inside = signed_at(now, "this is not xml");
    let other_corp = WecomCrypto::new(&tenant.token, &tenant.key, "ww-someone-else").unwrap();
    let wrong_receiver =
        rollcall::loadgen::seal(&other_corp, "x", VECTOR_AGENT_ID, &plain(3), now, 8);
    // Another app of the same company, signed with this app's credentials.
    let other_app = signed_at(
        now,
        &plain(4).replace("</xml>", "<AgentID>1000002</AgentID></xml>"),
    );
    let encrypt = good
        .body
        .split("<Encrypt><![CDATA[")
        .nth(1)
        .unwrap()
        .split("]]>")
        .next()
        .unwrap()
        .to_owned();
    let mut tampered_cipher = encrypt.clone();
    tampered_cipher.replace_range(0..4, "AAAA");
    let tampered_sig = crypto.sign(&now.to_string(), "9", &tampered_cipher);
    let tampered = (
        format!("msg_signature={tampered_sig}&timestamp={now}&nonce=9"),
        format!("<xml><Encrypt><![CDATA[{tampered_cipher}]]></Encrypt></xml>"),
    );
    let bad_sig_query = good.query.replacen("msg_signature=", "msg_signature=0", 1);
    let huge = format!(
        "<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>",
        "A".repeat(300 * 1024)
    );

    use rollcall::platform::wecom::WecomCrypto;
    let cases: Vec<(&str, &str, String, String, u16, Outcome)> = vec![
        (
            "unknown tenant",
            "nobody",
            good.query.clone(),
            good.body.clone(),
            404,
            Outcome::UnknownTenant,
        ),
        (
            "bad signature",
            "acme",
            bad_sig_query,
            good.body.clone(),
            401,
            Outcome::BadSignature,
        ),
        (
            "missing signature",
            "acme",
            "timestamp=1&nonce=2".into(),
            good.body.clone(),
            400,
            Outcome::BadRequest,
        ),
        (
            "undecryptable",
            "acme",
            tampered.0,
            tampered.1,
            401,
            Outcome::Undecryptable,
        ),
        (
            "wrong receive id",
            "acme",
            wrong_receiver.query,
            wrong_receiver.body,
            401,
            Outcome::WrongReceiveId,
        ),
        (
            "another app's AgentID",
            "acme",
            other_app.query,
            other_app.body,
            401,
            Outcome::WrongReceiveId,
        ),
        (
            "malformed envelope",
            "acme",
            good.query.clone(),
            "<xml><Encrypt><![CDATA[abc".into(),
            400,
            Outcome::Malformed,
        ),
        (
            "malformed plaintext",
            "acme",
            not_xml_inside.query,
            not_xml_inside.body,
            400,
            Outcome::Malformed,
        ),
        (
            "too large",
            "acme",
            good.query.clone(),
            huge,
            413,
            Outcome::TooLarge,
        ),
        (
            "stale timestamp",
            "acme",
            stale.query,
            stale.body,
            401,
            Outcome::StaleTimestamp,
        ),
        (
            "future timestamp",
            "acme",
            future.query,
            future.body,
            401,
            Outcome::StaleTimestamp,
        ),
    ];
    for (name, tenant_id, query, body, status, outcome) in cases {
        let before = app.metrics.get(outcome);
        let (got, reason) = post(&app, tenant_id, &query, body).await;
        assert_eq!(got, status, "{name}: {reason}");
        assert!(
            !reason.is_empty() && !reason.contains('\n'),
            "{name}: a one-line reason, got {reason:?}"
        );
        assert_eq!(app.metrics.get(outcome), before + 1, "{name} is counted");
        assert!(rows(&app.db).await.is_empty(), "{name}: nothing stored");
    }
    // The same app still accepts the good one.
    assert_eq!(
        post(&app, "acme", &good.query, good.body.clone()).await,
        (200, "success".into())
    );
    assert_eq!(rows(&app.db).await.len(), 1);
    app.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn url_verification_refusals(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    let crypto = tenant.crypto();
    let now = chrono::Utc::now().timestamp();
    let echostr = crypto.encrypt("1234567890");
    let sig = crypto.sign(&now.to_string(), "5", &echostr);
    let client = common::http();
    let get = |q: String| {
        let client = client.clone();
        let u = url(&app, &format!("/callback/wecom/acme?{q}"));
        async move {
            let r = client.get(u).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let q = |sig: &str, ts: i64| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("msg_signature", sig)
            .append_pair("timestamp", &ts.to_string())
            .append_pair("nonce", "5")
            .append_pair("echostr", &echostr)
            .finish()
    };
    assert_eq!(get(q(&sig, now)).await, (200, "1234567890".into()));
    assert_eq!(get(q(&"0".repeat(40), now)).await.0, 401);
    let old_sig = crypto.sign(&(now - 3600).to_string(), "5", &echostr);
    assert_eq!(get(q(&old_sig, now - 3600)).await.0, 401);
    assert_eq!(
        get("msg_signature=a&timestamp=1&nonce=2".into()).await.0,
        400
    );
    let r = client
        .get(url(&app, "/callback/wecom/nobody?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // A tenant answers only on its own platform's URL, even when signed.
    for platform in ["dingtalk", "feishu", "nonsense"] {
        let path = format!("/callback/{platform}/acme?{}", q(&sig, now));
        let r = client.get(url(&app, &path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{platform}");
    }
    assert!(rows(&app.db).await.is_empty());
    app.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn health_and_readiness(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let client = common::http();
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = client.get(url(&app, path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.unwrap(), body);
    }
    let metrics = client
        .get(url(&app, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rollcall_callbacks_total{outcome=\"accepted\"} 0"));
    app.stop().await;
    db.cleanup().await;
}

/// Durability: every pooled SQLite connection runs WAL with synchronous=FULL,
/// after the job queue has set itself up and run.
#[tokio::test]
async fn sqlite_connections_are_durable() {
    let db = TestDb::new(Engine::Sqlite).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    let cb = tenant.text(77, "打卡");
    assert_eq!(post(&app, "acme", &cb.query, cb.body).await.0, 200);
    wait_all_processed(&app.db).await;
    let pool = app.db.sqlite();
    let mut conns = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        conns.push(pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(
            (sync, journal.as_str()),
            (2, "wal"),
            "synchronous=FULL (2) and WAL on every connection"
        );
    }
    drop(conns);
    app.stop().await;
}

/// A row committed whose job can no longer run (killed, or lost) is
/// re-enqueued by the start-up sweep and processed.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn the_start_up_sweep_finishes_rows_without_a_runnable_job(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    for i in 0..3 {
        let cb = tenant.text(900 + i, "打卡");
        assert_eq!(post(&app, "acme", &cb.query, cb.body).await.0, 200);
    }
    wait_all_processed(&app.db).await;
    // Undo the processing and make the jobs unrunnable, as a crash or an
    // exhausted retry budget would leave them.
    let (reset, kill) = match engine {
        Engine::Sqlite => (
            "UPDATE inbound_events SET processed_at = NULL, classification = NULL",
            "UPDATE Jobs SET status = 'Killed'",
        ),
        Engine::Postgres => (
            "UPDATE inbound_events SET processed_at = NULL, classification = NULL",
            "UPDATE apalis.jobs SET status = 'Killed'",
        ),
    };
    use sea_orm::ConnectionTrait;
    app.db.orm.execute_unprepared(reset).await.unwrap();
    app.db.orm.execute_unprepared(kill).await.unwrap();
    app.stop().await;

    let app = boot(&db, 600).await;
    let rows = wait_all_processed(&app.db).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.classification.as_deref() == Some("unknown_sender"))
    );
    app.stop().await;
    db.cleanup().await;
}

/// A job worker whose database fails under it (here: its heartbeat's table
/// is gone for a while, as a dropped connection or a full pool would fail
/// it) is started again once the database answers, so work committed after
/// the fault still runs. Before, apalis ended such a worker for good and
/// the queue stopped without a word.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_worker_whose_database_failed_is_started_again(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let tenant = vector_tenant();
    let cb = tenant.text(950, "打卡");
    assert_eq!(post(&app, "acme", &cb.query, cb.body).await.0, 200);
    wait_all_processed(&app.db).await;

    let (break_it, mend_it) = match engine {
        Engine::Sqlite => (
            "ALTER TABLE Workers RENAME TO Workers_gone",
            "ALTER TABLE Workers_gone RENAME TO Workers",
        ),
        Engine::Postgres => (
            "ALTER TABLE apalis.workers RENAME TO workers_gone",
            "ALTER TABLE apalis.workers_gone RENAME TO workers",
        ),
    };
    use sea_orm::ConnectionTrait;
    app.db.orm.execute_unprepared(break_it).await.unwrap();
    // Every worker beats its heart every 5 s, fails, stops, and is started
    // again (and fails again while the table is gone): wait for restarts.
    let restarts = &app.runtime.worker_restarts;
    let waited = tokio::time::timeout(PATIENCE, async {
        while restarts.load(std::sync::atomic::Ordering::Relaxed) < 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    app.db.orm.execute_unprepared(mend_it).await.unwrap();
    assert!(waited.is_ok(), "the workers were not started again");

    let cb = tenant.text(951, "打卡");
    assert_eq!(post(&app, "acme", &cb.query, cb.body).await.0, 200);
    let rows = wait_all_processed(&app.db).await;
    assert_eq!(rows.len(), 2);
    app.stop().await;
    db.cleanup().await;
}

/// Scale-out: two instances on one PostgreSQL database. A platform retry that
/// lands on the other instance is still one row, and each row is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgres_database() {
    let db = TestDb::new(Engine::Postgres).await;
    let first = boot(&db, 600).await;
    let second = boot(&db, 600).await;
    let tenant = vector_tenant();
    let client = common::http();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let cb = tenant.text(3_000_000 + i, "打卡");
        // Every callback goes to both instances at once, as a retry might.
        for app in [&first, &second] {
            let url = url(app, &format!("/callback/wecom/acme?{}", cb.query));
            let (client, body) = (client.clone(), cb.body.clone());
            tasks.spawn(async move {
                let r = client.post(url).body(body).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), (200, "success".to_owned()));
    }
    let accepted = first.metrics.get(Outcome::Accepted) + second.metrics.get(Outcome::Accepted);
    let duplicates = first.metrics.get(Outcome::Duplicate) + second.metrics.get(Outcome::Duplicate);
    assert_eq!((accepted, duplicates), (200, 200));
    let rows = wait_all_processed(&first.db).await;
    assert_eq!(rows.len(), 200);
    first.stop().await;
    second.stop().await;
    db.cleanup().await;
}

/// When the database cannot store a callback, the platform gets a 503 (and
/// retries), with no word of the database's error in the answer.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_store_failure_is_a_bare_503(#[case] engine: Engine) {
    use sea_orm::ConnectionTrait;
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    app.db
        .orm
        .execute_unprepared("ALTER TABLE inbound_events RENAME TO inbound_events_away")
        .await
        .unwrap();
    let c = vector_tenant().text(424242, "打卡");
    let (status, body) = post(&app, "acme", &c.query, c.body).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "temporarily unavailable, try again");
    app.db
        .orm
        .execute_unprepared("ALTER TABLE inbound_events_away RENAME TO inbound_events")
        .await
        .unwrap();
    app.stop().await;
    db.cleanup().await;
}

/// A client that sends half a request head, or half a body, cannot hold
/// a connection: the head gets `server.header_timeout_secs`, the body
/// `server.body_timeout_secs` (408, nothing stored), and with every
/// connection slot taken by slow clients a good callback still gets in
/// once they are closed.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_server(#[case] engine: Engine) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new(engine).await;
    let toml = format!(
        "{}[evidence]\nkey_file = \"{}\"\n",
        config_toml(&db.url, "127.0.0.1:0", 600).replace(
            "[server]\n",
            "[server]\nheader_timeout_secs = 1\nbody_timeout_secs = 1\nmax_connections = 2\n"
        ),
        db.dir.path().join("evidence.key").display()
    );
    let config = rollcall::config::Config::parse(&toml, &no_env()).unwrap();
    let app = rollcall::app::start(&config).await.unwrap();
    // Both slots taken by clients that never finish their request head.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"POST /callback/wecom/acme HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let good = vector_tenant().text(8_000_001, "打卡");
    assert_eq!(
        tokio::time::timeout(PATIENCE, post(&app, "acme", &good.query, good.body))
            .await
            .expect("the good callback got a slot"),
        (200, "success".to_owned())
    );
    // The slow ones were closed, with nothing for them.
    for mut s in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
            .await
            .expect("closed by the server");
        assert!(
            read.is_err() || !String::from_utf8_lossy(&rest).contains("200 OK"),
            "{rest:?}"
        );
    }
    // Half a body: 408 once the body timeout passed, nothing stored.
    let cb = vector_tenant().text(8_000_002, "打卡");
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /callback/wecom/acme?{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        cb.query,
        cb.body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&cb.body.as_bytes()[..10]).await.unwrap();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.metrics.get(Outcome::SlowBody), 1);
    assert_eq!(rows(&app.db).await.len(), 1, "only the good callback");
    app.stop().await;
    db.cleanup().await;
}
