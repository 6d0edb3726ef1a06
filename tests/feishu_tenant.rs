//! A Feishu tenant through the real app, on SQLite and PostgreSQL: the
//! Feishu vectors through `/callback/feishu/{tenant}` (and what is refused
//! is a 4xx with nothing stored), the sandbox's Feishu API behind the
//! tenant (one message per uuid, cards updated whole, reads pushed and
//! asked, media, the directory), the demo story, `rollcall events --json`
//! and the load generator.

mod common;

use std::time::Duration;

use common::*;
use rollcall::app::RunningApp;
use rollcall::config::{Config, ProcessEnv};
use rollcall::db::Engine;
use rollcall::demo::feishu::SandboxedFeishu;
use rollcall::demo::{DemoPlatform, Stage, TENANT, shanghai};
use rollcall::platform::feishu::api::{FeishuApi, FeishuApiConfig};
use rollcall::platform::feishu::crypto::FeishuCrypto;
use rollcall::platform::sandbox::{FeishuDepartment, FeishuUser, SandboxFeishuApi};
use rollcall::platform::{Card, CardButton, ChatApi, OutboundMessage, PlatformError};
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

/// The tenant `acme` of the Feishu vectors (its API nowhere).
fn vector_config(db: &TestDb) -> (Config, std::path::PathBuf) {
    let v = vectors("feishu.json");
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
[database]
url = "{}"
[[tenants]]
id = "acme"
[tenants.feishu]
app_id = "cli_61e0808759b99653"
app_secret = "unused"
encrypt_key = "{}"
verification_token = "{}"
api_base = "http://127.0.0.1:9"
[evidence]
key_file = "{}"
"#,
        db.url,
        v["encrypt_key"].as_str().unwrap(),
        v["verification_token"].as_str().unwrap(),
        db.dir.path().join("evidence.key").display(),
    );
    let path = db.dir.path().join("rollcall.toml");
    std::fs::write(&path, &toml).unwrap();
    let mut config = Config::parse(&toml, &ProcessEnv).unwrap();
    // The vectors' old timestamps need a window no operator may configure.
    config.server.replay_window_secs = VECTOR_WINDOW;
    (config, path)
}

/// Headers of a request, as (name, value).
type Headers = Vec<(String, String)>;

async fn post_feishu(
    app: &RunningApp,
    headers: &[(String, String)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut request = http()
        .post(url(app, "/callback/feishu/acme"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let r = request.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn headers_of(case: &Value) -> Vec<(String, String)> {
    case["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// `plaintext` sealed as Feishu sends it, signed at `at`.
fn sealed(crypto: &FeishuCrypto, plaintext: &str, at: i64) -> (Vec<(String, String)>, String) {
    let body = json!({ "encrypt": crypto.encrypt(plaintext) }).to_string();
    let ts = at.to_string();
    let sig = crypto.sign(&ts, "nonce1", body.as_bytes());
    (
        vec![
            ("X-Lark-Request-Timestamp".into(), ts),
            ("X-Lark-Request-Nonce".into(), "nonce1".into()),
            ("X-Lark-Signature".into(), sig),
        ],
        body,
    )
}

/// Every case of the Feishu vectors through HTTP: the URL check answered
/// with its challenge and not stored; the message and the card press stored
/// as Feishu's (a retry of the message once); then forged, replayed,
/// oversize, plain, malformed, mistokened and misaddressed requests, each a
/// 4xx with nothing stored; and `rollcall events --json` says `feishu`.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vectors_pass_and_forgeries_are_refused(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (config, config_path) = vector_config(&db);
    let app = rollcall::app::start(&config).await.unwrap();
    let v = vectors("feishu.json");
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (status, body) = post_feishu(
            &app,
            &headers_of(case),
            case["body"].as_str().unwrap().to_owned(),
        )
        .await;
        assert_eq!(
            status,
            case["expect_status"].as_u64().unwrap() as u16,
            "{name}: {body}"
        );
        let answer: Value = serde_json::from_str(&body).unwrap();
        if !case["expect_json"].is_null() {
            assert_eq!(answer, case["expect_json"], "{name}");
        }
        if name == "card_action" {
            assert_eq!(answer["toast"]["type"], "success", "{body}");
            assert!(
                answer["toast"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            );
        }
    }
    // Feishu's retry of the message: the same row.
    let message = &v["cases"][1];
    let (status, _) = post_feishu(
        &app,
        &headers_of(message),
        message["body"].as_str().unwrap().to_owned(),
    )
    .await;
    assert_eq!(status, 200);
    let rows = wait_all_processed(&app.db).await;
    assert_eq!(rows.len(), 2, "the message and the press, once each");
    assert!(rows.iter().all(|r| r.platform == "feishu"));
    assert_eq!(rows[0].kind, "text");
    assert_eq!(rows[0].from_user, "zhangsan");
    assert_eq!(rows[0].content.as_deref(), Some("打卡"));
    assert_eq!(rows[0].msg_key, "msg:om_bp3aeHe2C2MIMUBiDwHoBhu4UxJYCmHv");
    assert_eq!(rows[0].raw_body, message["body"].as_str().unwrap());
    // The text as decrypted, but for the verification token, which is not
    // kept.
    let token = v["verification_token"].as_str().unwrap();
    assert_eq!(
        rows[0].plaintext,
        message["plaintext"]
            .as_str()
            .unwrap()
            .replace(token, "[verification token]")
    );
    assert!(
        rows.iter()
            .all(|r| !r.plaintext.contains(token) && !r.raw_body.contains(token))
    );
    assert_eq!(rows[1].from_user, "LiSi");

    // Refusals: nothing more is stored.
    let crypto = FeishuCrypto::new(v["encrypt_key"].as_str().unwrap());
    let token = v["verification_token"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    let event = |token: &str, id: &str| {
        json!({
            "schema": "2.0",
            "header": { "event_id": id, "event_type": "im.message.receive_v1",
                "create_time": (now * 1000).to_string(), "token": token, "app_id": "cli_x", "tenant_key": "t" },
            "event": {
                "sender": { "sender_id": { "user_id": "zhangsan" }, "sender_type": "user" },
                "message": { "message_id": format!("om_{id}"), "message_type": "text", "chat_type": "p2p",
                    "create_time": (now * 1000).to_string(), "content": "{\"text\":\"打卡\"}" },
            },
        })
        .to_string()
    };
    let (good_headers, good_body) = sealed(&crypto, &event(token, "fresh"), now);
    let mut forged = good_headers.clone();
    forged[2].1 = "0".repeat(64);
    let (replayed_headers, replayed_body) = sealed(
        &crypto,
        &event(token, "old"),
        now - VECTOR_WINDOW as i64 - 60,
    );
    let (mistokened_headers, mistokened_body) = sealed(&crypto, &event("nope", "tok"), now);
    let not_json = "{\"encrypt\": ".to_owned();
    let not_json_headers = {
        let ts = now.to_string();
        let sig = crypto.sign(&ts, "n", not_json.as_bytes());
        vec![
            ("X-Lark-Request-Timestamp".to_owned(), ts),
            ("X-Lark-Request-Nonce".to_owned(), "n".to_owned()),
            ("X-Lark-Signature".to_owned(), sig),
        ]
    };
    let oversize = json!({ "encrypt": "A".repeat(300 * 1024) }).to_string();
    // Hostile bodies (issue 16), signed so that they reach the parsers: deep
    // nesting sealed inside and bare outside, invalid UTF-8.
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let (deep_inside_headers, deep_inside) = sealed(&crypto, &deep, now);
    let signed = |body: &[u8]| {
        let ts = now.to_string();
        let sig = crypto.sign(&ts, "n", body);
        vec![
            ("X-Lark-Request-Timestamp".to_owned(), ts),
            ("X-Lark-Request-Nonce".to_owned(), "n".to_owned()),
            ("X-Lark-Signature".to_owned(), sig),
        ]
    };
    let deep_outside = deep.clone();
    let invalid_utf8 = [
        &good_body.as_bytes()[..12],
        &[0xff, 0xfe],
        &good_body.as_bytes()[12..],
    ]
    .concat();
    let hostile: Vec<(&str, Headers, Vec<u8>)> = vec![
        (
            "deep nesting sealed inside",
            deep_inside_headers,
            deep_inside.into_bytes(),
        ),
        (
            "deep nesting outside",
            signed(deep_outside.as_bytes()),
            deep_outside.into_bytes(),
        ),
        ("invalid UTF-8", signed(&invalid_utf8), invalid_utf8),
    ];
    for (name, headers, body) in hostile {
        let (status, answer) = post_feishu(&app, &headers, body).await;
        assert!((400..500).contains(&status), "{name}: {status} {answer}");
    }
    let cases: Vec<(&str, Headers, String)> = vec![
        ("forged", forged, good_body.clone()),
        ("unsigned", Vec::new(), good_body.clone()),
        ("replayed", replayed_headers, replayed_body),
        ("another token", mistokened_headers, mistokened_body),
        ("plain", Vec::new(), event(token, "plain")),
        ("not JSON", not_json_headers, not_json),
        ("oversize", good_headers.clone(), oversize),
    ];
    for (name, headers, body) in cases {
        let (status, answer) = post_feishu(&app, &headers, body).await;
        assert!((400..500).contains(&status), "{name}: {status} {answer}");
    }
    // A GET, and the tenant's event on WeCom's URL.
    let r = http()
        .get(url(&app, "/callback/feishu/acme"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let (status, _) = post(&app, "acme", "", good_body.clone()).await;
    assert_eq!(status, 404, "a Feishu tenant answers on its own URL only");
    assert_eq!(
        rollcall::inbox::list(&app.db, "acme").await.unwrap().len(),
        2
    );
    // The signed, fresh one is taken.
    let (status, _) = post_feishu(&app, &good_headers, good_body).await;
    assert_eq!(status, 200);
    assert_eq!(
        rollcall::inbox::list(&app.db, "acme").await.unwrap().len(),
        3
    );
    app.stop().await;

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["--config", &config_path.display().to_string()])
            .args(["events", "--tenant", "acme", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["platform"] == "feishu"), "{lines:?}");
    db.cleanup().await;
}

/// The Feishu API of a tenant configured with `app_secret` (a secret is
/// made by the config parser only).
fn api_of(sandbox: &SandboxFeishuApi, app_secret: &str) -> FeishuApi {
    let toml = format!(
        "[[tenants]]\nid = \"x\"\n[tenants.feishu]\napp_id = \"cli_test\"\napp_secret = \"{app_secret}\"\nverification_token = \"v\"\n"
    );
    let config = Config::parse(&toml, &ProcessEnv).unwrap();
    let feishu = config.tenants[0].feishu.clone().unwrap();
    FeishuApi::new(
        FeishuApiConfig {
            api_base: sandbox.api_base(),
            app_id: feishu.app_id,
            app_secret: feishu.app_secret,
            id_type: rollcall::config::FeishuIdType::UserId,
        },
        Duration::from_secs(5),
    )
}

fn card() -> Card {
    Card {
        source: "示例公司".into(),
        title: "到岗提醒".into(),
        body: "您今天未打卡。".into(),
        card_id: "card-1".into(),
        buttons: vec![
            CardButton {
                key: "k-arrived".into(),
                label: "我已到岗".into(),
            },
            CardButton {
                key: "k-leave".into(),
                label: "我在请假".into(),
            },
        ],
    }
}

/// The API client against the sandbox: a resend under the same key is one
/// message; a card is updated whole with its label; reads, media and the
/// directory come back as Feishu gives them; faults are classified.
#[tokio::test]
async fn the_api_speaks_feishu() {
    let sandbox = SandboxFeishuApi::start("cli_test", "secret").await.unwrap();
    let api = api_of(&sandbox, "secret");
    let text = OutboundMessage::Text {
        content: "返岗通知书……".into(),
    };
    let first = api
        .send_keyed("zhangsan", &text, true, "acme:notice-1")
        .await
        .unwrap();
    let again = api
        .send_keyed("zhangsan", &text, true, "acme:notice-1")
        .await
        .unwrap();
    assert_eq!(
        first.message_id, again.message_id,
        "a resend is the same message"
    );
    assert_eq!(sandbox.sent().len(), 1);
    let other = api
        .send_keyed("zhangsan", &text, true, "acme:notice-2")
        .await
        .unwrap();
    assert_ne!(other.message_id, first.message_id);
    // Repeatable answers without a key both arrive.
    let reply = OutboundMessage::Text {
        content: "收到".into(),
    };
    api.send("lisi", &reply, false).await.unwrap();
    api.send("lisi", &reply, false).await.unwrap();
    assert_eq!(
        sandbox
            .sent()
            .iter()
            .filter(|m| m.receive_id == "lisi")
            .count(),
        2
    );

    // A card, pressed: replaced whole, its buttons by the label.
    let sent = api
        .send_keyed(
            "zhangsan",
            &OutboundMessage::Card(card()),
            false,
            "acme:card-1",
        )
        .await
        .unwrap();
    let message_id = sent.card_ref.clone().unwrap();
    assert_eq!(sent.message_id.as_ref(), Some(&message_id));
    let m = sandbox
        .sent()
        .into_iter()
        .find(|m| m.message_id == message_id)
        .unwrap();
    assert_eq!(m.msg_type, "interactive");
    assert_eq!(m.button_key("我在请假").as_deref(), Some("k-leave"));
    assert_eq!(m.card_id().as_deref(), Some("card-1"));
    api.update_card_of("zhangsan", &message_id, "已确认到岗", Some(&card()))
        .await
        .unwrap();
    let update = &sandbox.card_updates()[0];
    assert_eq!(update.message_id, message_id);
    assert_eq!(update.content["header"]["title"]["content"], "到岗提醒");
    assert!(update.content.to_string().contains("已确认到岗"));
    assert!(!update.content.to_string().contains("k-arrived"));

    // Reads: nobody yet, then 张三 with the time Feishu gives.
    let id = first.message_id.unwrap();
    assert!(api.read_status(&id).await.unwrap().receipts.is_empty());
    sandbox.mark_read(&id, "zhangsan", 1_764_900_000_123);
    let status = api.read_status(&id).await.unwrap();
    assert_eq!(status.receipts[0].user_id, "zhangsan");
    assert_eq!(status.receipts[0].read_at, Some(1_764_900_000_123));
    assert_eq!(api.read_window(), Some(Duration::from_secs(7 * 24 * 3600)));

    // Media: by message, type and key, with the file's name.
    let key = sandbox.add_media(
        "om_x",
        "file",
        b"%PDF".to_vec(),
        "application/pdf",
        Some("病假条.pdf"),
    );
    let media = api.fetch_media(&format!("om_x/file/{key}")).await.unwrap();
    assert_eq!(media.bytes, b"%PDF");
    assert_eq!(media.content_type, "application/pdf");
    assert_eq!(media.file_name.as_deref(), Some("病假条.pdf"));
    assert!(
        api.fetch_media(&format!("om_other/file/{key}"))
            .await
            .is_err()
    );

    // The directory: departments by name, paged users, each once, leavers
    // inactive.
    let mut users: Vec<FeishuUser> = (0..60)
        .map(|i| FeishuUser {
            user: json!({
                "user_id": format!("w{i:02}"), "open_id": format!("ou_w{i:02}"), "name": format!("工人{i}"),
                "department_ids": ["od-site2"], "leader_user_id": "zhaogang",
                "status": { "is_resigned": i == 59, "is_frozen": false, "is_exited": false },
            }),
            departments: vec!["od-site2".into()],
        })
        .collect();
    users.push(FeishuUser {
        user: json!({ "user_id": "wangmin", "name": "王敏", "mobile": "+8613800000001",
            "department_ids": ["0", "od-site2"], "status": {} }),
        departments: vec!["0".into(), "od-site2".into()],
    });
    sandbox.set_directory(
        vec![FeishuDepartment {
            open_department_id: "od-site2".into(),
            name: "二号工地".into(),
        }],
        users,
    );
    let members = api.directory().await.unwrap();
    assert_eq!(members.len(), 61);
    let w0 = members.iter().find(|m| m.user_id == "w00").unwrap();
    assert_eq!(w0.department.as_deref(), Some("二号工地"));
    assert_eq!(w0.manager.as_deref(), Some("zhaogang"));
    assert!(w0.active);
    assert!(!members.iter().find(|m| m.user_id == "w59").unwrap().active);
    let hr = members.iter().find(|m| m.user_id == "wangmin").unwrap();
    assert_eq!(hr.mobile.as_deref(), Some("+8613800000001"));

    // Faults as Feishu answers them.
    use rollcall::platform::sandbox::FeishuFault;
    sandbox.mark_invalid("gone");
    assert!(matches!(
        api.send("gone", &reply, false).await,
        Err(PlatformError::Undeliverable { .. })
    ));
    sandbox.push_fault(FeishuFault::RateLimited);
    assert!(matches!(
        api.send("lisi", &reply, false).await,
        Err(PlatformError::RateLimited { after_secs: 1, .. })
    ));
    sandbox.push_fault(FeishuFault::ServerError);
    assert!(matches!(
        api.send("lisi", &reply, false).await,
        Err(PlatformError::Retryable(_))
    ));
    sandbox.push_fault(FeishuFault::Busy);
    assert!(matches!(
        api.send("lisi", &reply, false).await,
        Err(PlatformError::Retryable(_))
    ));
    // An expired token is fetched again once, and the call goes through.
    sandbox.push_fault(FeishuFault::ExpiredToken);
    api.send("lisi", &reply, false).await.unwrap();
    assert_eq!(
        sandbox.calls("/open-apis/auth/v3/tenant_access_token/internal"),
        2
    );
    // Wrong credentials are permanent.
    let wrong = api_of(&sandbox, "wrong");
    assert!(matches!(
        wrong.send("lisi", &reply, false).await,
        Err(PlatformError::Permanent(_))
    ));
}

/// A press on a Feishu card: the card is replaced with the card as sent,
/// its buttons by the label; a read event marks the notice read with its
/// event named; a read of a message that is not ours changes nothing.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_update_the_card_and_reads_are_pushed(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = SandboxedFeishu::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&["wangmin", "zhaogang", "lisi", "wangwu"])
        .await
        .unwrap();
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    let reminder = s
        .api
        .sent()
        .into_iter()
        .find(|m| m.receive_id == "zhangsan" && m.msg_type == "interactive")
        .expect("张三 got a card");
    s.at("2026-12-02", "10:30");
    s.press("zhangsan", "on_leave").await.unwrap();
    let updates = s.api.card_updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].message_id, reminder.message_id);
    assert_eq!(
        updates[0].content["header"], reminder.content["header"],
        "the card as sent"
    );
    assert_eq!(
        updates[0].content["elements"][0],
        reminder.content["elements"][0]
    );
    assert!(updates[0].content.to_string().contains("已告知请假"));
    assert!(updates[0].content["elements"][2]["actions"].is_null());

    // A read of a message rollcall did not send, or of someone else's,
    // is recorded as such only.
    let reply = s
        .api
        .sent()
        .into_iter()
        .rev()
        .find(|m| m.receive_id == "zhangsan" && m.msg_type == "text")
        .unwrap();
    for (reader, message) in [
        ("zhangsan", "om_not_ours".to_owned()),
        ("lisi", reply.message_id.clone()),
    ] {
        let d = s.phone.read(reader, &[message], 1_764_640_000_000).await;
        assert!(d.delivered);
        s.settle().await.unwrap();
        let rows = rollcall::inbox::list(&s.rt.db, TENANT).await.unwrap();
        let read = rows.iter().rev().find(|r| r.kind == "read").unwrap();
        assert_eq!(
            read.classification.as_deref(),
            Some("read_unknown"),
            "{reader}"
        );
    }
    // The asking about 张三's reply ends unread (as after its last round).
    let row = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::ReceiptId.eq(&reply.message_id))
        .one(&s.rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    assert!(row.read_at.is_none());
    entity::outbox::Entity::update_many()
        .col_expr(
            entity::outbox::Column::ReadCheckedAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now()),
        )
        .filter(entity::outbox::Column::Id.eq(row.id))
        .exec(&s.rt.db.orm)
        .await
        .unwrap();

    // Then he reads it: a message_read leaf naming the event, although the
    // asking had ended.
    s.at("2026-12-02", "10:40");
    let at = shanghai("2026-12-02", "10:40").timestamp_millis();
    let d = s
        .phone
        .read("zhangsan", std::slice::from_ref(&reply.message_id), at)
        .await;
    assert!(d.delivered);
    s.settle().await.unwrap();
    let row = entity::outbox::Entity::find_by_id(row.id)
        .one(&s.rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.read_at.map(|t| t.timestamp_millis()), Some(at));
    let leaves = entity::evidence_leaf::Entity::find()
        .filter(entity::evidence_leaf::Column::Kind.eq("message_read"))
        .all(&s.rt.db.orm)
        .await
        .unwrap();
    assert_eq!(leaves.len(), 1);
    let content: Value = serde_json::from_str(leaves[0].content.as_deref().unwrap()).unwrap();
    assert!(
        content
            .to_string()
            .contains("\"pushed_by\":\"inbound_events/"),
        "{content}"
    );
    Box::new(s).stop().await;
    db.cleanup().await;
}

/// `rollcall demo --platform feishu`: the whole story, on both databases.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn the_demo_story_runs_on_feishu(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let run = rollcall::demo::run_story_on(
        DemoPlatform::Feishu,
        &db.url,
        &db.dir.path().join("data.key"),
    )
    .await
    .unwrap();
    let outcomes = |step: &str, recipient: &str| {
        run.lines
            .iter()
            .filter(|l| l["step"] == step && l["recipient"] == recipient)
            .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        outcomes("formal_notice", "张三")
            .iter()
            .any(|o| o.starts_with("sent") && o.ends_with("read 12-04 20:25")),
        "{:?}",
        outcomes("formal_notice", "张三")
    );
    assert!(!outcomes("deadline_passed", "王敏").is_empty());
    let db_after = rollcall::db::Database::open(&db.url).await.unwrap();
    let sources: Vec<(String, String)> = entity::check_in::Entity::find()
        .all(&db_after.orm)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.work_date.to_string() == "2026-11-30")
        .map(|c| (c.user_id, c.source))
        .collect();
    for (user, source) in [
        ("wangmin", "text"),
        ("zhaogang", "location"),
        ("zhangsan", "image"),
    ] {
        assert!(
            sources.contains(&(user.to_owned(), source.to_owned())),
            "{user} {source}: {sources:?}"
        );
    }
    // The photo was downloaded from the message's resource.
    let photos = entity::media::Entity::find()
        .all(&db_after.orm)
        .await
        .unwrap();
    assert!(!photos.is_empty(), "no photo was stored");
    db_after.close().await;
    db.cleanup().await;
}

/// `rollcall loadgen` on a Feishu tenant sends encrypted, signed events
/// that the app takes (every one answered `{}` and stored).
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_speaks_feishu(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (config, _) = vector_config(&db);
    let app = rollcall::app::start(&config).await.unwrap();
    rollcall::loadgen::run(
        &config,
        rollcall::loadgen::LoadgenArgs {
            tenant: "acme".into(),
            url: Some(format!("http://{}", app.addr)),
            requests: 200,
            connections: 8,
            rate: None,
        },
    )
    .await
    .unwrap();
    let rows = wait_all_processed(&app.db).await;
    assert_eq!(rows.len(), 200);
    assert!(
        rows.iter()
            .all(|r| r.platform == "feishu" && r.kind == "text")
    );
    app.stop().await;
    db.cleanup().await;
}

/// A read of the formal notice's acknowledgment card proves nothing: the
/// card says only "please confirm"; the notice is the text. Reading the
/// card leaves the deadline unstarted; reading the text starts it.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_the_card_is_no_proof_of_receipt(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = SandboxedFeishu::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    let others = ["wangmin", "zhaogang", "lisi", "wangwu"];
    Stage::at(&s, "2026-12-01", "08:00");
    Stage::check_in(&s, &others).await.unwrap();
    for day in ["2026-12-02", "2026-12-03", "2026-12-04"] {
        Stage::at(&s, day, "10:00");
        Stage::scan(&s).await.unwrap();
        Stage::at(&s, day, "11:00");
        Stage::check_in(&s, &others).await.unwrap();
    }
    let case = || async {
        entity::absence_case::Entity::find()
            .filter(entity::absence_case::Column::UserId.eq("zhangsan"))
            .one(&s.rt.db.orm)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(case().await.formal_notice_at.is_some());
    let sent = s.api.sent();
    let to_him = |kind: &str| {
        sent.iter()
            .rev()
            .find(|m| m.receive_id == "zhangsan" && m.msg_type == kind)
            .map(|m| m.message_id.clone())
            .unwrap_or_else(|| panic!("no {kind} to zhangsan"))
    };
    let (card, text) = (to_him("interactive"), to_him("text"));
    // Both of the formal notice: its text, and the card asking him to
    // confirm he received it.
    let step_of = |receipt: String| {
        let orm = s.rt.db.orm.clone();
        async move {
            entity::outbox::Entity::find()
                .filter(entity::outbox::Column::ReceiptId.eq(&receipt))
                .one(&orm)
                .await
                .unwrap()
                .unwrap()
                .step
        }
    };
    let step = step_of(text.clone()).await;
    assert!(step.is_some());
    assert_eq!(step_of(card.clone()).await, step);
    let at = shanghai("2026-12-04", "12:00").timestamp_millis();
    let wait_read = |message_id: String| {
        let orm = s.rt.db.orm.clone();
        async move {
            let start = std::time::Instant::now();
            loop {
                let row = entity::outbox::Entity::find()
                    .filter(entity::outbox::Column::ReceiptId.eq(&message_id))
                    .one(&orm)
                    .await
                    .unwrap()
                    .unwrap();
                if row.read_at.is_some() {
                    return;
                }
                assert!(start.elapsed() < PATIENCE, "outbox/{} never read", row.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    s.api.mark_read(&card, "zhangsan", at);
    s.phone
        .read("zhangsan", std::slice::from_ref(&card), at)
        .await;
    wait_read(card).await;
    Stage::settle(&s).await.unwrap();
    let c = case().await;
    assert!(
        c.receipt_at.is_none() && c.deadline_at.is_none(),
        "the card's read started the deadline: {c:?}"
    );
    s.api.mark_read(&text, "zhangsan", at);
    s.phone
        .read("zhangsan", std::slice::from_ref(&text), at)
        .await;
    wait_read(text).await;
    Stage::settle(&s).await.unwrap();
    let c = case().await;
    assert_eq!(c.receipt_via.as_deref(), Some("read:chat"));
    assert!(c.deadline_at.is_some());
    Stage::stop(Box::new(s)).await;
    db.cleanup().await;
}
