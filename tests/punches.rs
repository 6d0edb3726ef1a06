//! The platform's own attendance records (DingTalk's attendance app, WeCom's
//! 打卡), imported as check-ins, on SQLite and PostgreSQL × WeCom and
//! DingTalk: the scan reads them first, so that someone who punched there
//! is not counted absent; the rows a platform fills in for a missed punch
//! are not punches; a punch is stored once however often it is read (and
//! on DingTalk, whether it came as an event or from the records); a scan
//! whose punches cannot be read does not judge the day.

mod common;

use common::*;
use entity::{absence_case, check_in, inbound_event};
use rollcall::attendance::punches::{import, period};
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Stage, TENANT, stage};
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

async fn start(db: &TestDb, platform: DemoPlatform) -> Box<dyn Stage> {
    stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\nplatform_punches = true\n",
    )
    .await
    .unwrap()
}

async fn cases(s: &dyn Stage) -> Vec<String> {
    absence_case::Entity::find()
        .order_by_asc(absence_case::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.user_id)
        .collect()
}

async fn check_ins(s: &dyn Stage, user: &str) -> Vec<check_in::Model> {
    check_in::Entity::find()
        .filter(check_in::Column::UserId.eq(user))
        .order_by_asc(check_in::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
}

async fn punch_rows(s: &dyn Stage, user: &str) -> u64 {
    inbound_event::Entity::find()
        .filter(inbound_event::Column::FromUser.eq(user))
        .filter(inbound_event::Column::Kind.eq("punch"))
        .count(&s.rt().db.orm)
        .await
        .unwrap()
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_punch_in_the_platforms_app_is_a_check_in_the_scan_counts(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start(&db, platform).await;
    // Tuesday: three chat; 张三 punches in the platform's app only; 李四
    // does neither, and the platform fills in a missed-punch row for him.
    s.at("2026-12-01", "08:02");
    s.recorded_punch("zhangsan", 31.2305, 121.4738, false);
    s.recorded_punch("lisi", 0.0, 0.0, true);
    s.check_in(&["wangmin", "zhaogang", "wangwu"])
        .await
        .unwrap();
    assert!(check_ins(&*s, "zhangsan").await.is_empty(), "no event yet");

    // Wednesday 10:00: the scan reads the records first.
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    assert_eq!(cases(&*s).await, ["lisi"], "张三 punched; 李四 did not");
    let ins = check_ins(&*s, "zhangsan").await;
    assert_eq!(ins.len(), 1, "{ins:?}");
    assert_eq!(ins[0].source, "punch");
    assert_eq!(ins[0].checked_at, shanghai("2026-12-01", "08:02"));
    assert_eq!(ins[0].work_date.to_string(), "2026-12-01");
    assert!(check_ins(&*s, "lisi").await.is_empty());
    // The record is kept as the platform answered it, and is evidence.
    let row = inbound_event::Entity::find()
        .filter(inbound_event::Column::FromUser.eq("zhangsan"))
        .filter(inbound_event::Column::Kind.eq("punch"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.platform, platform.name());
    assert_eq!(
        row.msg_key,
        format!(
            "punch:zhangsan:{}",
            shanghai("2026-12-01", "08:02").timestamp_millis()
        )
    );
    assert!(row.raw_body.contains("zhangsan") && !row.raw_body.contains("lisi"));
    // What was asked is kept where a callback keeps its query: the API and
    // the period, no one else's user id.
    let asked: std::collections::HashMap<String, String> =
        form_urlencoded::parse(row.raw_query.as_bytes())
            .into_owned()
            .collect();
    let api = match platform {
        DemoPlatform::Wecom => "/cgi-bin/checkin/getcheckindata",
        DemoPlatform::Dingtalk => "/attendance/listRecord",
        DemoPlatform::Feishu => "/open-apis/attendance/v1/user_flows/query",
    };
    assert_eq!(asked.get("api").map(String::as_str), Some(api), "{asked:?}");
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(!row.raw_query.contains("lisi"));
    let leaf = entity::evidence_leaf::Entity::find()
        .filter(entity::evidence_leaf::Column::Source.eq(format!("inbound_events/{}", row.id)))
        .one(&s.rt().db.orm)
        .await
        .unwrap();
    assert!(leaf.is_some(), "the punch is a leaf");
    assert!(
        !s.received("zhangsan").iter().any(|t| t.contains("打卡")),
        "a punch is not answered"
    );

    // Read again (the hourly scan, and on demand): stored once.
    s.at("2026-12-02", "11:00");
    s.scan().await.unwrap();
    let (from, to) = period(s.rt(), TENANT, None, None).unwrap();
    assert_eq!(from, shanghai("2026-12-01", "00:00"));
    // To now (the simulated clock runs on from the time it was set to).
    let since = (to - shanghai("2026-12-02", "11:00")).num_seconds();
    assert!((0..60).contains(&since), "{to}");
    let again = import(s.rt(), TENANT, from, to).await.unwrap();
    assert_eq!((again.listed, again.new), (1, 0), "{again:?}");
    assert_eq!(punch_rows(&*s, "zhangsan").await, 1);
    assert_eq!(check_ins(&*s, "zhangsan").await.len(), 1);

    // Wednesday: 李四 comes back and punches in the app only; the next
    // hourly scan reads today's punches too, and his case closes.
    s.at("2026-12-02", "11:30");
    s.recorded_punch("lisi", 31.2305, 121.4738, false);
    s.at("2026-12-02", "12:00");
    s.scan().await.unwrap();
    let lisi = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("lisi"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lisi.status, "resolved", "{lisi:?}");
    assert_eq!(check_ins(&*s, "lisi").await[0].source, "punch");
    s.stop().await;
    db.cleanup().await;
}

/// On DingTalk the same punch may come twice: as an attendance event, and
/// in the records read before the scan. It is one row and one check-in.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_punch_that_came_as_an_event_is_not_imported_again(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = rollcall::demo::dingtalk::SandboxedDingtalk::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\nplatform_punches = true\n",
    )
    .await
    .unwrap();
    let at = shanghai("2026-12-01", "08:02").timestamp_millis() + 417;
    let event = serde_json::json!({"dataList": [{"userId": "zhangsan", "checkTime": at,
        "latitude": 31.2305, "longitude": 121.4738, "address": "一号工地", "locationMethod": "MAP"}]});
    let frame = s
        .gateway
        .push_event("attendance_check_record", &event.to_string());
    s.gateway
        .wait_ack(&frame, rollcall::demo::PHONE_PATIENCE)
        .await
        .unwrap();
    s.api.add_punch_records(vec![serde_json::json!({
        "id": 1, "userId": "zhangsan", "userCheckTime": at, "checkType": "OnDuty",
        "timeResult": "Normal", "locationResult": "Normal", "sourceType": "USER",
        "userLatitude": 31.2305, "userLongitude": 121.4738, "userAddress": "一号工地",
    })]);
    s.settle().await.unwrap();
    assert_eq!(check_ins(&s, "zhangsan").await.len(), 1);
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    assert_eq!(punch_rows(&s, "zhangsan").await, 1);
    assert_eq!(check_ins(&s, "zhangsan").await.len(), 1);
    assert!(!cases(&s).await.contains(&"zhangsan".to_owned()));
    assert_eq!(s.api.list_record_calls(), 1, "the records were read");
    Box::new(s).stop().await;
    db.cleanup().await;
}

/// When the platform will not give its punches (WeCom's 48002: the app is
/// not allowed to read 打卡 data), the scan does not judge the day: it
/// says why, and nobody is counted absent who may have punched.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_whose_punches_cannot_be_read_judges_nothing(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = rollcall::demo::Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\nplatform_punches = true\n",
    )
    .await
    .unwrap();
    s.at("2026-12-01", "08:02");
    s.check_in(&["wangmin", "zhaogang", "wangwu"])
        .await
        .unwrap();
    s.sandbox.deny_checkins();
    s.at("2026-12-02", "10:00");
    let err = s.scan().await.unwrap_err().to_string();
    assert!(err.contains("48002") && err.contains("打卡"), "{err}");
    assert!(cases(&s).await.is_empty(), "no one judged");
    s.stop().await;
    db.cleanup().await;
}

/// `rollcall punches`, as an operator runs it after the platform was down:
/// the period's punches are imported and said how many; run again, nothing
/// new; an unknown tenant is named.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_imports_punches_on_demand(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let sandbox = rollcall::platform::sandbox::SandboxApi::start("wwsandbox", "sandbox-secret")
        .await
        .unwrap();
    let dir = db.dir.path().to_owned();
    std::fs::write(
        dir.join("rollcall.toml"),
        format!(
            "[server]\ndata_key_file = \"data.key\"\n[database]\nurl = \"{}\"\n[[tenants]]\nid = \"acme\"\n[tenants.wecom]\ncorp_id = \"wwsandbox\"\nagent_id = 1\nsecret = \"sandbox-secret\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
            db.url,
            sandbox.api_base()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("staff.csv"),
        "user_id,name\nzhangsan,张三\nlisi,李四\n",
    )
    .unwrap();
    let punched = shanghai("2026-12-01", "08:02").timestamp();
    sandbox.add_checkins(vec![
        serde_json::json!({"userid": "zhangsan", "checkin_type": "上班打卡", "exception_type": "",
                           "checkin_time": punched, "location_title": "一号工地", "lat": 31230500, "lng": 121473800}),
        serde_json::json!({"userid": "lisi", "checkin_type": "上班打卡", "exception_type": "未打卡",
                           "checkin_time": punched, "lat": 0, "lng": 0}),
    ]);
    // The binary calls the sandbox, which runs on this test's runtime.
    let run = |args: &'static [&'static str]| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
                .args(args)
                .current_dir(&dir)
                .env("RUST_LOG", "error")
                .env_remove("ROLLCALL_DATABASE_URL")
                .env_remove("ROLLCALL_CONFIG")
                .env_remove("ROLLCALL_DATA_KEY")
                .output()
                .unwrap()
        })
    };
    let out = run(&["employees", "import", "staff.csv", "--tenant", "acme"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let import: &'static [&'static str] = &[
        "punches",
        "--tenant",
        "acme",
        "--from",
        "2026-12-01",
        "--to",
        "2026-12-01",
    ];
    // 李四's punch was stored before (by an import that stopped half-way,
    // or as an event still waiting for its handler) and never handled:
    // this import is what handles it.
    sandbox.add_checkins(vec![
        serde_json::json!({"userid": "lisi", "checkin_type": "上班打卡",
        "exception_type": "", "checkin_time": punched + 60, "lat": 0, "lng": 0}),
    ]);
    let conn = rollcall::db::Database::open(&db.url).await.unwrap();
    let (inbox, mut committers) = rollcall::inbox::Inbox::start(conn.clone());
    let waiting = rollcall::platform::InboundEvent {
        own_part: None,
        sender: "lisi".into(),
        sent_at: punched + 60,
        dedup_key: rollcall::platform::punch_key("lisi", (punched + 60) * 1000),
        media_type: "application/json".into(),
        kind: rollcall::platform::InboundKind::Punch {
            latitude: None,
            longitude: None,
            label: None,
        },
    };
    let row = rollcall::inbox::NewInbound::new(
        "acme",
        "wecom",
        &waiting,
        String::new(),
        "{}".into(),
        "{}".into(),
        chrono::Utc::now(),
    );
    inbox.store(row).await.unwrap();
    drop(inbox);
    while committers.join_next().await.is_some() {}
    for new in [1, 0] {
        let out = run(import).await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report,
            serde_json::json!({ "tenant": "acme", "listed": 2, "new": new })
        );
    }
    assert_eq!(sandbox.checkin_calls(), 2);
    let mut ins = check_in::Entity::find().all(&conn.orm).await.unwrap();
    ins.sort_by_key(|i| i.checked_at);
    let got: Vec<(&str, &str, i64)> = ins
        .iter()
        .map(|i| {
            (
                i.user_id.as_str(),
                i.source.as_str(),
                i.checked_at.timestamp(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("zhangsan", "punch", punched),
            ("lisi", "punch", punched + 60)
        ]
    );
    let out = run(&["punches", "--tenant", "nobody"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    conn.close().await;
    db.cleanup().await;
}
