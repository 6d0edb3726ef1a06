//! A DingTalk tenant through the real app, on SQLite and PostgreSQL: in
//! Stream mode (the default) against the sandbox gateway and API, robot
//! messages check employees in, the ladder's cards go out as interactive
//! cards and their presses come back over the stream; in HTTP mode the
//! published vectors pass through `/callback/dingtalk/{tenant}`, and what
//! is refused is a 4xx with nothing stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use entity::{absence_case, case_event, check_in, inbound_event};
use rollcall::app::RunningApp;
use rollcall::clock::{Clock, SimulatedClock};
use rollcall::config::{Config, ProcessEnv};
use rollcall::db::Engine;
use rollcall::demo::{TENANT, seed_roster, settle};
use rollcall::outbox::render::Templates;
use rollcall::platform::dingtalk::stream::{TOPIC_BOT_MESSAGE, TOPIC_CARD_CALLBACK};
use rollcall::platform::sandbox::dingtalk_api::{
    DingtalkDepartment, DingtalkUser, SandboxDingtalkApi,
};
use rollcall::platform::sandbox::dingtalk_stream::SandboxStreamGateway;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

const APP_KEY: &str = "dingsandboxdemo";
const APP_SECRET: &str = "sandbox-dingtalk-secret";
const TEMPLATE: &str = "rollcall-sandbox.schema";

/// rollcall with the demo roster on a DingTalk tenant in Stream mode.
struct Stream {
    app: RunningApp,
    api: SandboxDingtalkApi,
    gateway: SandboxStreamGateway,
    clock: Arc<SimulatedClock>,
    config: std::path::PathBuf,
}

impl Stream {
    async fn start(db: &TestDb, start: DateTime<Utc>) -> Stream {
        Stream::start_with(db, start, "").await
    }

    /// With `extra` TOML put before the tenant (e.g. a `[delivery]` table).
    async fn start_with(db: &TestDb, start: DateTime<Utc>, extra: &str) -> Stream {
        let api = SandboxDingtalkApi::start(APP_KEY, APP_SECRET)
            .await
            .unwrap();
        let gateway = SandboxStreamGateway::start(APP_KEY, APP_SECRET)
            .await
            .unwrap();
        // One api.dingtalk.com serves both the API and the connection opens.
        api.set_gateway(&gateway.api_base());
        let key = db.dir.path().join("data.key");
        let toml = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_key_file = "{key}"
[evidence]
key_file = "{evidence}"
[database]
url = "{url}"
{extra}
[[tenants]]
id = "{TENANT}"
name = "示例建筑有限公司（钉钉沙箱）"
[tenants.dingtalk]
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
agent_id = 3000001
card_template_id = "{TEMPLATE}"
api_base = "{base}"
api_base_v1 = "{base}"
[tenants.attendance]
scan_at = "23:59"
"#,
            key = key.display(),
            evidence = rollcall::config::evidence_key_beside(&key).display(),
            url = db.url,
            base = api.api_base_v1(),
        );
        let path = db.dir.path().join("rollcall.toml");
        std::fs::write(&path, &toml).unwrap();
        let config = Config::parse(&toml, &ProcessEnv).unwrap();
        let clock = Arc::new(SimulatedClock::new(start));
        let app = rollcall::app::start_with_clock(&config, clock.clone())
            .await
            .unwrap();
        seed_roster(&app.runtime).await.unwrap();
        assert!(
            gateway.wait_connections(1, PATIENCE).await,
            "rollcall did not open a Stream connection"
        );
        Stream {
            app,
            api,
            gateway,
            clock,
            config: path,
        }
    }

    fn at(&self, date: &str, time: &str) {
        self.clock.set(shanghai(date, time));
    }

    /// `user` sends `text` to the robot now; the frame's messageId.
    fn say(&self, user: &str, text: &str) -> String {
        let now = self.clock.now().timestamp_millis();
        let data = json!({
            "msgId": format!("msg{}", ulid::Ulid::new()),
            "msgtype": "text",
            "text": { "content": text },
            "senderStaffId": user,
            "senderNick": user,
            "conversationType": "1",
            "conversationId": format!("cid-{user}"),
            "createAt": now,
            "robotCode": APP_KEY,
        });
        self.gateway
            .push_callback(TOPIC_BOT_MESSAGE, &data.to_string())
    }

    /// Presses the button labelled like `block` of `template` on the latest
    /// card `user` got; the frame's messageId and the card's outTrackId.
    fn press(&self, user: &str, template: &str, block: &str) -> (String, String) {
        let label = Templates::load(None)
            .unwrap()
            .render(template, json!({}), &[block])
            .unwrap()
            .block(block)
            .to_owned();
        let (card, key) = self
            .api
            .cards()
            .into_iter()
            .rev()
            .filter(|c| c.user_id == user)
            .find_map(|c| {
                let buttons: Vec<Value> =
                    serde_json::from_str(c.params["buttons"].as_str()?).ok()?;
                let key = buttons.iter().find(|b| b["label"] == label.as_str())?["key"]
                    .as_str()?
                    .to_owned();
                Some((c, key))
            })
            .unwrap_or_else(|| panic!("{user} has no card with a button {label}"));
        let content =
            json!({ "cardPrivateData": { "actionIds": ["press"], "params": { "key": key } } });
        let data = json!({
            "type": "actionCallback",
            "outTrackId": card.out_track_id,
            "corpId": self.gateway.corp_id(),
            "userId": user,
            "content": content.to_string(),
        });
        let id = self
            .gateway
            .push_callback(TOPIC_CARD_CALLBACK, &data.to_string());
        (id, card.out_track_id)
    }

    async fn acked(&self, message_id: &str) -> Value {
        self.gateway
            .wait_ack(message_id, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("frame {message_id} was never acknowledged"))
    }

    async fn settle(&self) {
        settle(&self.app.runtime).await.unwrap();
    }
}

async fn case_of(s: &Stream, user: &str) -> absence_case::Model {
    absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq(user))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.app.db.orm)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{user} has no case"))
}

/// Check-ins by robot message, a reminder card for the one who stayed
/// away, and his press of 我已到岗 on it: each frame acknowledged only once
/// stored, the card updated through the API, the events listed as
/// DingTalk's.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_stream_tenant_checks_in_gets_cards_and_presses_them(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = Stream::start(&db, shanghai("2026-11-30", "07:00")).await;
    let everyone = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];

    // Monday: everyone checks in by chatting with the robot.
    s.at("2026-11-30", "08:10");
    for user in everyone {
        let id = s.say(user, "打卡");
        // A callback frame is acknowledged with `{"response": null}` once
        // its row is committed.
        let ack = s.acked(&id).await;
        assert_eq!(ack["code"], 200, "{ack}");
    }
    s.settle().await;
    let ins = check_in::Entity::find().all(&s.app.db.orm).await.unwrap();
    assert_eq!(ins.len(), 5, "{ins:?}");
    // Each got the check-in's answer through the robot.
    for user in everyone {
        assert!(
            s.api.sent().iter().any(|m| m.user_ids == [user]),
            "{user} got no answer: {:?}",
            s.api.sent()
        );
    }

    // Tuesday: 张三 stays away; Wednesday's scan sends him a reminder card.
    s.at("2026-12-01", "08:05");
    for user in ["wangmin", "zhaogang", "lisi", "wangwu"] {
        s.say(user, "打卡");
    }
    s.settle().await;
    s.at("2026-12-02", "10:00");
    rollcall::cases::scan::scan(&s.app.runtime, TENANT, None)
        .await
        .unwrap();
    s.settle().await;
    let cards: Vec<_> = s
        .api
        .cards()
        .into_iter()
        .filter(|c| c.user_id == "zhangsan")
        .collect();
    assert!(!cards.is_empty(), "no card for zhangsan");
    assert!(
        cards
            .iter()
            .all(|c| c.template_id == TEMPLATE && c.callback_type == "STREAM")
    );

    // He presses 我已到岗 on it.
    s.at("2026-12-02", "10:40");
    let (id, card) = s.press("zhangsan", "first_reminder.employee", "button_arrived");
    let ack = s.acked(&id).await;
    assert_eq!(ack["code"], 200, "{ack}");
    s.settle().await;
    let case = case_of(&s, "zhangsan").await;
    let events: Vec<String> = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .all(&s.app.db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // 我已到岗 closes his case (he answered the reminder).
    assert!(
        events.contains(&"card_pressed".to_owned()) && events.contains(&"case_resolved".to_owned()),
        "the press is not on the case: {events:?}"
    );
    assert_eq!(case.status, "resolved");
    let updates = s.api.card_updates();
    assert!(
        updates.iter().any(|u| u.out_track_id == card),
        "the pressed card was not updated: {updates:?}"
    );

    // Every row is DingTalk's, with the frame kept verbatim.
    let rows = rollcall::inbox::list(&s.app.db, TENANT).await.unwrap();
    assert!(rows.iter().all(|r| r.platform == "dingtalk"));
    assert!(
        rows.iter()
            .all(|r| serde_json::from_str::<Value>(&r.raw_body).unwrap()["type"] == "CALLBACK")
    );
    let press = rows.iter().find(|r| r.kind == "card_button").unwrap();
    assert!(press.msg_key.starts_with(&format!("card:{card}:zhangsan:")));

    let config = s.config.clone();
    s.app.stop().await;
    // The address book: `employees sync` reads DingTalk's.
    s.api.set_directory(
        vec![DingtalkDepartment {
            dept_id: 2,
            name: "二号工地".into(),
            parent_id: 1,
        }],
        vec![DingtalkUser {
            userid: "zhaoliu".into(),
            name: "赵六".into(),
            dept_id_list: vec![2],
            mobile: None,
            email: None,
            manager_userid: Some("zhaogang".into()),
            active: true,
        }],
    );
    // Off the test's thread: the sandbox API it calls runs on this one.
    let cli = |args: &[&str]| {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let dir = db.dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
                .args(all)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    cli(&["employees", "sync", "--tenant", TENANT])
        .await
        .unwrap();
    let db_after = rollcall::db::Database::open(&db.url).await.unwrap();
    let synced = entity::employee::Entity::find()
        .filter(entity::employee::Column::UserId.eq("zhaoliu"))
        .one(&db_after.orm)
        .await
        .unwrap()
        .expect("赵六 was not synced from the DingTalk address book");
    assert_eq!(synced.name, "赵六");
    db_after.close().await;
    let lines: Vec<Value> = cli(&["events", "--tenant", TENANT, "--json"])
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len());
    assert!(lines.iter().all(|l| l["platform"] == "dingtalk"));
    db.cleanup().await;
}

async fn leaves(s: &Stream, kind: &str) -> Vec<entity::evidence_leaf::Model> {
    entity::evidence_leaf::Entity::find()
        .filter(entity::evidence_leaf::Column::Kind.eq(kind))
        .all(&s.app.db.orm)
        .await
        .unwrap()
}

/// Waits until the `kind` leaves about the rows `sources` (`table/id`)
/// number at least `n`; returns those.
async fn wait_leaves(
    s: &Stream,
    kind: &str,
    sources: &[String],
    n: usize,
) -> Vec<entity::evidence_leaf::Model> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut found = leaves(s, kind).await;
            found.retain(|l| l.source.as_ref().is_some_and(|src| sources.contains(src)));
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} {kind} leaves after {PATIENCE:?}"))
}

/// Read status is evidence: a notice's robot message that its recipient
/// read becomes a `message_read` leaf with DingTalk's answer and the row's
/// `read_at`, recorded once however often the check runs; a card, whose
/// carrier id DingTalk's read query does not take, is not asked about.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_read_notice_is_recorded_with_the_platforms_answer(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    // Checks 1, 5, 15, … seconds after sending.
    let s = Stream::start_with(
        &db,
        shanghai("2026-11-30", "07:00"),
        "[delivery]\nread_check_unit_secs = 1",
    )
    .await;
    s.at("2026-11-30", "08:10");
    for user in ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"] {
        s.say(user, "打卡");
    }
    s.settle().await;
    s.at("2026-12-01", "08:05");
    for user in ["wangmin", "zhaogang", "lisi", "wangwu"] {
        s.say(user, "打卡");
    }
    s.settle().await;
    // Wednesday, Thursday, Friday: the day-1 and day-2 reminders, then the
    // formal notice (its full text, then a card to acknowledge it).
    for (day, scan_day) in [
        ("2026-12-02", "2026-12-02"),
        ("2026-12-03", "2026-12-03"),
        ("2026-12-04", "2026-12-04"),
    ] {
        s.at(day, "08:05");
        for user in ["wangmin", "zhaogang", "lisi", "wangwu"] {
            s.say(user, "打卡");
        }
        s.settle().await;
        s.at(scan_day, "10:00");
        rollcall::cases::scan::scan(&s.app.runtime, TENANT, None)
            .await
            .unwrap();
        s.settle().await;
    }
    let notices: Vec<entity::outbox::Model> = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::CaseId.is_not_null())
        .filter(entity::outbox::Column::Channel.eq("chat"))
        .filter(entity::outbox::Column::Recipient.eq("zhangsan"))
        .all(&s.app.db.orm)
        .await
        .unwrap();
    assert!(!notices.is_empty());
    let keys: Vec<String> = s
        .api
        .sent()
        .into_iter()
        .map(|m| m.process_query_key)
        .collect();
    let (texts, cards): (Vec<_>, Vec<_>) = notices
        .iter()
        .partition(|n| keys.contains(n.receipt_id.as_ref().unwrap()));
    assert!(
        !texts.is_empty() && !cards.is_empty(),
        "the formal notice is a text and a card: {notices:?}"
    );
    // He reads the texts at 10:03.
    let read_ms = shanghai("2026-12-02", "10:03").timestamp_millis();
    for n in &texts {
        s.api
            .mark_read(n.receipt_id.as_ref().unwrap(), "zhangsan", read_ms);
    }
    // Leaves about his notices (other recipients' are asked about too).
    let his: Vec<String> = notices.iter().map(|n| format!("outbox/{}", n.id)).collect();
    let read = wait_leaves(&s, "message_read", &his, texts.len()).await;
    assert_eq!(
        read.len(),
        texts.len(),
        "{:?} {texts:?}",
        read.iter().map(|l| &l.content).collect::<Vec<_>>()
    );
    for n in &texts {
        let row = entity::outbox::Entity::find_by_id(n.id)
            .one(&s.app.db.orm)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.read_at.map(|t| t.timestamp_millis()),
            Some(read_ms),
            "read_at is DingTalk's time of the read"
        );
    }
    for leaf in &read {
        let content = leaf.content.as_deref().unwrap();
        assert!(content.contains("zhangsan"), "{content}");
        assert_eq!(leaf.subject.as_deref(), Some("zhangsan"));
    }
    // A check that runs again (a job runs at least once) records nothing more.
    for n in &texts {
        for round in [0, 1] {
            let again = rollcall::outbox::check_read(
                &s.app.runtime,
                n.id,
                round,
                &rollcall::cases::notify::TellHr,
            )
            .await
            .unwrap();
            assert_eq!(
                again,
                rollcall::outbox::reads::Checked::Done("asked already")
            );
        }
    }
    assert_eq!(
        wait_leaves(&s, "message_read", &his, 0).await.len(),
        texts.len()
    );
    // Cards were not asked about.
    for kind in [
        "message_read",
        "message_not_read",
        "read_status_unavailable",
    ] {
        let about_cards: Vec<String> = cards.iter().map(|c| format!("outbox/{}", c.id)).collect();
        assert!(
            wait_leaves(&s, kind, &about_cards, 0).await.is_empty(),
            "{kind} about a card"
        );
    }
    for c in &cards {
        let jobs = rollcall::workers::jobs_like(
            &s.app.db,
            rollcall::jobs::READ_QUEUE,
            &format!("read:{}:%", c.id),
        )
        .await
        .unwrap();
        assert!(jobs.is_empty(), "a card's read is asked about: {jobs:?}");
    }
    s.app.stop().await;
    db.cleanup().await;
}

/// A punch in DingTalk's attendance app is a check-in (no chat needed),
/// without an answer to the employee; an event listing two people's punches
/// is a row and a check-in each; delivered twice (a lost ack) it is still
/// two, and both deliveries are acknowledged as consumed.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_redelivered_event_frame_is_stored_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = Stream::start(&db, shanghai("2026-11-30", "07:00")).await;
    s.at("2026-11-30", "08:03");
    let punched = s.clock.now();
    // One event with two people's punches (DingTalk may batch them).
    let data = json!({"dataList": [{"userId": "zhangsan", "checkTime": punched.timestamp_millis(),
                                    "address": "上海市黄浦区", "locationMethod": "MAP"},
                                   {"userId": "lisi", "checkTime": punched.timestamp_millis()}]});
    let id = s
        .gateway
        .push_event("attendance_check_record", &data.to_string());
    s.acked(&id).await;
    assert!(s.gateway.resend(&id));
    tokio::time::timeout(PATIENCE, async {
        while s.gateway.deliveries(&id) < 2 || !s.gateway.unconsumed().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the resent event was not acknowledged");
    s.settle().await;
    let rows = rollcall::inbox::list(&s.app.db, TENANT).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].from_user, "zhangsan");
    assert_eq!(rows[1].from_user, "lisi");
    assert!(rows.iter().all(|r| r.kind == "punch"));
    // Each keeps its own entry of the frame, not the other person's.
    let stored = inbound_event::Entity::find()
        .order_by_asc(inbound_event::Column::Id)
        .all(&s.app.db.orm)
        .await
        .unwrap();
    for (row, (own, other)) in stored
        .iter()
        .zip([("zhangsan", "lisi"), ("lisi", "zhangsan")])
    {
        for text in [&row.raw_body, &row.plaintext] {
            assert!(text.contains(own) && !text.contains(other), "{text}");
        }
    }
    let mut ins = check_in::Entity::find().all(&s.app.db.orm).await.unwrap();
    ins.sort_by(|a, b| b.user_id.cmp(&a.user_id));
    assert_eq!(ins.len(), 2, "{ins:?}");
    assert_eq!(ins[0].user_id, "zhangsan");
    assert_eq!(ins[1].user_id, "lisi");
    for i in &ins {
        assert_eq!(i.source, "punch");
        assert_eq!(i.checked_at.timestamp(), punched.timestamp());
        assert_eq!(i.work_date.to_string(), "2026-11-30");
    }
    assert!(
        s.api.sent().iter().all(|m| m.user_ids != ["zhangsan"]),
        "a punch is not answered"
    );
    s.app.stop().await;
    db.cleanup().await;
}

/// The tenant of the DingTalk vectors, in HTTP mode.
fn http_config(db: &TestDb) -> Config {
    let v = vectors("dingtalk.json");
    http_config_with(
        db,
        v["app_key_or_corp_id"].as_str().unwrap(),
        v["robot"]["app_secret"].as_str().unwrap(),
        v["token"].as_str().unwrap(),
        v["aes_key"].as_str().unwrap(),
    )
}

/// A DingTalk tenant `acme` in HTTP mode with these credentials.
fn http_config_with(db: &TestDb, app_key: &str, secret: &str, token: &str, aes: &str) -> Config {
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
[database]
url = "{}"
[[tenants]]
id = "acme"
[tenants.dingtalk]
mode = "http"
app_key = "{}"
app_secret = "{}"
agent_id = 1
token = "{}"
aes_key = "{}"
api_base = "http://127.0.0.1:9"
api_base_v1 = "http://127.0.0.1:9"
[evidence]
key_file = "{}"
"#,
        db.url,
        app_key,
        secret,
        token,
        aes,
        db.dir.path().join("evidence.key").display(),
    );
    let mut config = Config::parse(&toml, &ProcessEnv).unwrap();
    // The vectors' old timestamps need a window no operator may configure.
    config.server.replay_window_secs = VECTOR_WINDOW;
    config
}

/// DingTalk's own published sample (DingCallbackCrypto3.py, a URL check)
/// through HTTP: answered with an encrypted, signed `success`, nothing stored.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn the_published_dingtalk_sample_is_answered_over_http(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let published = vectors("published.json");
    let case = published["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "dingtalk_event")
        .unwrap();
    let text = |k: &str| case[k].as_str().unwrap();
    let config = http_config_with(
        &db,
        text("receive_id"),
        "unused",
        text("token"),
        text("encoding_aes_key"),
    );
    let app = rollcall::app::start(&config).await.unwrap();
    let request = json!({
        "query": { "signature": text("msg_signature"), "timestamp": text("timestamp"), "nonce": text("nonce") },
        "body": json!({ "encrypt": text("encrypt") }).to_string(),
    });
    let (status, body) = post_case(&app, &request).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    // The answer decrypts, with the tenant's key, to `success`.
    let crypto = rollcall::platform::wecom::WecomCrypto::new(
        text("token"),
        text("encoding_aes_key"),
        text("receive_id"),
    )
    .unwrap();
    let plain = crypto.decrypt(answer["encrypt"].as_str().unwrap()).unwrap();
    assert_eq!(plain, "success");
    assert_eq!(
        answer["msg_signature"].as_str().unwrap(),
        crypto.sign(
            answer["timeStamp"].as_str().unwrap(),
            answer["nonce"].as_str().unwrap(),
            answer["encrypt"].as_str().unwrap()
        )
    );
    assert!(
        rollcall::inbox::list(&app.db, "acme")
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
    db.cleanup().await;
}

async fn post_case(app: &RunningApp, case: &Value) -> (u16, String) {
    let mut request = http()
        .post(url(
            app,
            &format!("/callback/dingtalk/acme?{}", query_string(&case["query"])),
        ))
        .body(case["body"].as_str().unwrap().to_owned());
    if let Some(headers) = case["headers"].as_object() {
        for (k, v) in headers {
            request = request.header(k, v.as_str().unwrap());
        }
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every DingTalk vector through HTTP: the URL check is answered and not
/// stored, events and robot messages are stored as DingTalk's; a robot
/// message with a wrong sign, an event with a wrong signature and a tenant
/// asked on WeCom's URL are refused with nothing stored.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn an_http_tenant_takes_the_vectors_and_refuses_forgeries(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = rollcall::app::start(&http_config(&db)).await.unwrap();
    let v = vectors("dingtalk.json");
    let mut stored = 0;
    for case in v["cases"].as_array().unwrap() {
        let (status, body) = post_case(&app, case).await;
        assert_eq!(
            status,
            case["expect_status"].as_u64().unwrap() as u16,
            "{case}: {body}"
        );
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert!(answer["encrypt"].is_string(), "{body}");
        if case["name"] != "check_url" {
            stored += 1;
        }
    }
    for case in v["robot"]["cases"].as_array().unwrap() {
        let case = json!({ "query": {}, "headers": case["headers"], "body": case["body"] });
        let (status, body) = post_case(&app, &case).await;
        assert_eq!(status, 200, "{body}");
        stored += 1;
    }
    // Refusals.
    let robot = &v["robot"]["cases"][0];
    let mut forged =
        json!({ "query": {}, "headers": robot["headers"].clone(), "body": robot["body"] });
    forged["headers"]["sign"] = json!("AAAA".repeat(11));
    let event = v["cases"][1].clone();
    let mut bad_event = event.clone();
    bad_event["query"]["signature"] = json!("0".repeat(40));
    for (case, expected) in [(forged, 401), (bad_event, 401)] {
        let (status, body) = post_case(&app, &case).await;
        assert!((400..500).contains(&status), "{case}: {status} {body}");
        assert_eq!(status, expected, "{body}");
    }
    // Hostile bodies (issue 16) under the robot's valid sign, which covers
    // the timestamp and not the body: they reach the parser.
    let deep = format!(
        "{{\"msgtype\":{}1{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let mut invalid_utf8 = robot["body"].as_str().unwrap().as_bytes().to_vec();
    invalid_utf8.splice(10..10, [0xff, 0xfe]);
    for (name, body) in [
        ("deep nesting", deep.into_bytes()),
        ("invalid UTF-8", invalid_utf8),
    ] {
        let mut request = http().post(url(&app, "/callback/dingtalk/acme")).body(body);
        for (k, v) in robot["headers"].as_object().unwrap() {
            request = request.header(k, v.as_str().unwrap());
        }
        let status = request.send().await.unwrap().status();
        assert!(status.is_client_error(), "{name}: {status}");
    }
    let (status, _) = post(
        &app,
        "acme",
        &query_string(&event["query"]),
        event["body"].as_str().unwrap().to_owned(),
    )
    .await;
    assert_eq!(status, 404, "a DingTalk tenant answers on its own URL only");

    let rows = wait_all_processed(&app.db).await;
    assert_eq!(rows.len(), stored);
    assert!(rows.iter().all(|r| r.platform == "dingtalk"));
    let robot_row = rows.iter().find(|r| r.kind == "text").unwrap();
    assert_eq!(robot_row.content.as_deref(), Some("打卡"));
    app.stop().await;
    db.cleanup().await;
}

/// `rollcall demo --platform dingtalk`: the whole story on DingTalk, on
/// both databases: check-ins by robot text, attendance punch and photo,
/// the ladder's cards pressed over the stream, the formal notice on every
/// channel and read by 张三, and HR's card when the deadline passed.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn the_demo_story_runs_on_dingtalk(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let run = rollcall::demo::run_story_on(
        rollcall::demo::DemoPlatform::Dingtalk,
        &db.url,
        &db.dir.path().join("data.key"),
    )
    .await
    .unwrap();
    let line = |step: &str, recipient: &str| {
        run.lines
            .iter()
            .filter(|l| l["step"] == step && l["recipient"] == recipient)
            .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // The formal notice's text reached 张三 and he read it at 20:25.
    assert!(
        line("formal_notice", "张三")
            .iter()
            .any(|o| o.starts_with("sent") && o.ends_with("read 12-04 20:25")),
        "{:?}",
        line("formal_notice", "张三")
    );
    assert!(
        !line("deadline_passed", "王敏").is_empty(),
        "HR got no card"
    );
    assert_eq!(run.texts.len(), 1, "one SMS: the formal notice");
    let kinds: Vec<&str> = run
        .lines
        .iter()
        .filter_map(|l| l["step"].as_str())
        .collect();
    for kind in ["manager_contacted", "notice_acknowledged", "case_resolved"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let db_after = rollcall::db::Database::open(&db.url).await.unwrap();
    let sources: Vec<(String, String)> = check_in::Entity::find()
        .all(&db_after.orm)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.work_date.to_string() == "2026-11-30")
        .map(|c| (c.user_id, c.source))
        .collect();
    for (user, source) in [
        ("wangmin", "text"),
        ("zhaogang", "punch"),
        ("zhangsan", "image"),
    ] {
        assert!(
            sources.contains(&(user.to_owned(), source.to_owned())),
            "{user} {source}: {sources:?}"
        );
    }
    db_after.close().await;
    db.cleanup().await;
}

/// `rollcall loadgen` on a DingTalk tenant in HTTP mode sends signed robot
/// messages that the app takes (every one answered `{}` and stored).
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_speaks_dingtalk(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let config = http_config(&db);
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
            .all(|r| r.platform == "dingtalk" && r.kind == "text")
    );
    app.stop().await;
    db.cleanup().await;
}

/// The text (not the card) of the formal notice to `user`.
async fn text_row(rt: &rollcall::runtime::Runtime, user: &str) -> entity::outbox::Model {
    entity::outbox::Entity::find()
        .filter(entity::outbox::Column::Recipient.eq(user))
        .filter(entity::outbox::Column::Step.eq("formal_notice"))
        .filter(entity::outbox::Column::Channel.eq("chat"))
        .all(&rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.payload.contains("\"kind\":\"text\""))
        .unwrap_or_else(|| panic!("no formal notice text to {user}"))
}

/// A tenant whose texts go out as work notices (`texts = "work_notice"`):
/// the formal notice's text is a work notice; its read (getsendresult)
/// becomes the row's read and a `message_read` leaf; a notice DingTalk
/// accepted but never delivered (an unknown user, listed invalid) is
/// found out by the same asking: the row becomes undeliverable and HR is
/// told.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_notices_are_asked_about_and_a_dropped_one_is_undeliverable(#[case] engine: Engine) {
    use rollcall::demo::Stage;
    use rollcall::demo::dingtalk::SandboxedDingtalk;
    let db = TestDb::new(engine).await;
    let s = SandboxedDingtalk::start_with(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "texts = \"work_notice\"",
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    let present = ["wangmin", "zhaogang", "wangwu"];
    s.at("2026-12-01", "08:00");
    s.check_in(&present).await.unwrap();
    for day in ["2026-12-02", "2026-12-03", "2026-12-04"] {
        if day == "2026-12-04" {
            // 李四's account is gone by the formal notice.
            s.api.mark_invalid("lisi");
        }
        s.at(day, "10:00");
        s.scan().await.unwrap();
        s.at(day, "11:00");
        s.check_in(&present).await.unwrap();
    }
    let zhangsan = text_row(&s.rt, "zhangsan").await;
    assert_eq!(zhangsan.status, "sent");
    assert!(
        zhangsan
            .receipt_id
            .as_deref()
            .is_some_and(|r| r.starts_with("work_notice:")),
        "{zhangsan:?}"
    );
    s.at("2026-12-04", "20:25");
    s.read_latest("zhangsan").await.unwrap();
    let zhangsan = text_row(&s.rt, "zhangsan").await;
    assert!(zhangsan.read_at.is_some(), "{zhangsan:?}");
    let leaves = entity::evidence_leaf::Entity::find()
        .filter(
            entity::evidence_leaf::Column::Kind.is_in(["message_read", "message_undeliverable"]),
        )
        .all(&s.rt.db.orm)
        .await
        .unwrap();
    assert!(
        leaves
            .iter()
            .any(|l| l.kind == "message_read" && l.subject.as_deref() == Some("zhangsan")),
        "{leaves:?}"
    );
    // 李四's notice was accepted, then found never delivered.
    let lisi = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let row = text_row(&s.rt, "lisi").await;
            if row.status == "undeliverable" {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("李四's work notice was not found undeliverable");
    assert!(
        lisi.error
            .as_deref()
            .is_some_and(|e| e.contains("invalid_user_id_list")),
        "{lisi:?}"
    );
    // The leaf keeps DingTalk's answer that says so.
    let undelivered = entity::evidence_leaf::Entity::find()
        .filter(entity::evidence_leaf::Column::Kind.eq("message_undeliverable"))
        .filter(entity::evidence_leaf::Column::Subject.eq("lisi"))
        .all(&s.rt.db.orm)
        .await
        .unwrap();
    assert!(
        undelivered
            .iter()
            .any(|l| l.content.as_deref().is_some_and(
                |c| c.contains("invalid_user_id_list") && c.contains("\"role\":\"response\"")
            )),
        "{undelivered:?}"
    );
    s.settle().await.unwrap();
    let told = entity::outbox::Entity::find()
        .filter(entity::outbox::Column::IdemKey.eq(format!("undeliverable:{}:wangmin", lisi.id)))
        .one(&s.rt.db.orm)
        .await
        .unwrap();
    assert_eq!(
        told.map(|t| t.status).as_deref(),
        Some("sent"),
        "HR is told"
    );
    Box::new(s).stop().await;
    db.cleanup().await;
}
