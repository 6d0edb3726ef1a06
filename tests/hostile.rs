//! Hostile requests (issue 16): what an attacker, a neighbouring tenant or
//! an employee without the role sends, through the real app. Each is
//! refused, with a 4xx or a polite reply, and changes nothing; no command
//! reads another tenant's data. (Forged and stale signatures, oversize
//! bodies and slow clients on WeCom: `tests/callback.rs`; on DingTalk and
//! Feishu: their own files, which also take the hostile bodies below.)

mod common;

use chrono::TimeZone;
use common::*;
use entity::{absence_case, card_action, case_event, export_download, onboarding};
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Sandboxed, Stage, TENANT, stage};
use rollcall::ingress::Outcome;
use rollcall::platform::wecom::WecomCrypto;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

/// A second tenant beside the one under test: its own WeCom app and
/// credentials, and people whose data must never show elsewhere. Its
/// `zhangsan` shares a user id with the sandbox tenant's.
const BETA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const BETA_TOKEN: &str = "betatoken";
const BETA_CORP: &str = "wwbeta000000000";

fn beta_toml() -> String {
    format!(
        r#"[[tenants]]
id = "beta"
name = "别家公司"
[tenants.wecom]
corp_id = "{BETA_CORP}"
agent_id = {VECTOR_AGENT_ID}
secret = "beta-secret"
token = "{BETA_TOKEN}"
encoding_aes_key = "{BETA_KEY}"
api_base = "http://127.0.0.1:9"
"#
    )
}

/// Beta's people: what only beta has ("秘密", its phones) marks a leak.
const BETA_ROSTER: &str = "user_id,name,department,manager_user_id,role,phone,postal_address\n\
    zhangsan,钱多多,秘密工地,qianhr,employee,13700000009,秘密路9号\n\
    qianhr,钱经理,秘密人事部,,hr,13700000008,\n\
    wangmin,钱小敏,秘密人事部,,hr,13700000007,\n";
const LEAKS: [&str; 4] = ["秘密", "1370000000", "钱经理", "钱小敏"];

async fn with_beta(db: &TestDb, platform: DemoPlatform) -> Box<dyn Stage> {
    let s = stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
            .unwrap()
            .to_utc(),
        &beta_toml(),
    )
    .await
    .unwrap();
    rollcall::employees::import_csv(
        &s.rt().db,
        &s.rt().key,
        "beta",
        BETA_ROSTER.as_bytes(),
        false,
    )
    .await
    .unwrap();
    s
}

/// What a command may leave behind: exports, onboardings, cases, leaves
/// and the case events that are not the record of a command and its
/// answer, in every tenant.
async fn footprint(s: &dyn Stage) -> [u64; 5] {
    let db = &s.rt().db.orm;
    [
        export_download::Entity::find().count(db).await.unwrap(),
        onboarding::Entity::find().count(db).await.unwrap(),
        absence_case::Entity::find().count(db).await.unwrap(),
        entity::leave::Entity::find().count(db).await.unwrap(),
        case_event::Entity::find()
            .filter(case_event::Column::Kind.ne("command"))
            .count(db)
            .await
            .unwrap(),
    ]
}

/// HR's commands, sent by an employee (about someone else) and by a
/// manager: each is refused with the polite reply, and leaves nothing.
#[rstest]
#[case::wecom_sqlite(DemoPlatform::Wecom, Engine::Sqlite)]
#[case::wecom_postgres(DemoPlatform::Wecom, Engine::Postgres)]
#[case::dingtalk_sqlite(DemoPlatform::Dingtalk, Engine::Sqlite)]
#[case::dingtalk_postgres(DemoPlatform::Dingtalk, Engine::Postgres)]
#[case::feishu_sqlite(DemoPlatform::Feishu, Engine::Sqlite)]
#[case::feishu_postgres(DemoPlatform::Feishu, Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_need_their_role_and_a_refusal_changes_nothing(
    #[case] platform: DemoPlatform,
    #[case] engine: Engine,
) {
    let db = TestDb::new(engine).await;
    let s = with_beta(&db, platform).await;
    let before = footprint(&*s).await;
    // An employee about a colleague; a manager about someone who is not
    // their report (HR's 王敏).
    for (who, about) in [("zhangsan", "lisi"), ("zhaogang", "wangmin")] {
        let hr_only = [
            format!("/导出 {about}"),
            format!("/履历 {about}"),
            format!("/档案 {about}"),
            format!("/入职 {about}"),
            format!("/自离 {about}"),
            format!("/请假 {about} 2026-12-01 2026-12-02 病假"),
            format!("/公告 {about} 2026-12-01 工地公告栏"),
            format!("/邮政 邮寄 {about} SF123"),
            format!("/工会 {about} 已通知"),
            format!("/export {about}"),
            format!("/history {about}"),
            "/风险".to_owned(),
            "/离职原因".to_owned(),
            "/报表 考勤".to_owned(),
            "/结案 RC-000001 误报".to_owned(),
        ];
        for command in hr_only {
            s.say(who, &command).await.unwrap();
            let reply = s.received(who).pop().unwrap_or_default();
            assert!(
                reply.contains("没有权限"),
                "{who} sent {command}: a polite refusal, got {reply:?}"
            );
        }
    }
    assert_eq!(
        footprint(&*s).await,
        before,
        "a refused command leaves nothing"
    );
    // Each is on record as what it was: a command, and its refusal.
    let commands = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("command"))
        .all(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(commands.len(), 30);
    for c in commands {
        let detail: serde_json::Value = serde_json::from_str(&c.detail).unwrap();
        assert_eq!(detail["answer"], "refused", "{detail}");
        assert_eq!(c.case_id, None);
    }
    s.stop().await;
    db.cleanup().await;
}

/// HR of one tenant asks about another tenant's people, by name and by a
/// user id both tenants have: every command answers from its own tenant
/// only, and nothing is made for the other.
#[rstest]
#[case::wecom_sqlite(DemoPlatform::Wecom, Engine::Sqlite)]
#[case::wecom_postgres(DemoPlatform::Wecom, Engine::Postgres)]
#[case::dingtalk_sqlite(DemoPlatform::Dingtalk, Engine::Sqlite)]
#[case::feishu_sqlite(DemoPlatform::Feishu, Engine::Sqlite)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_reads_another_tenant(#[case] platform: DemoPlatform, #[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = with_beta(&db, platform).await;
    let commands = [
        "/状态 钱多多",
        "/状态 zhangsan",
        "/状态 qianhr",
        "/履历 钱多多",
        "/履历 zhangsan",
        "/履历 qianhr",
        "/档案 钱多多",
        "/档案 zhangsan",
        "/导出 钱多多",
        "/导出 qianhr",
        "/案件",
        "/风险",
        "/离职原因",
        "/入职 qianhr",
        "/自离 钱多多",
        "/帮助",
    ];
    for command in commands {
        s.say("wangmin", command).await.unwrap();
    }
    s.settle().await.unwrap();
    let texts = s.received("wangmin");
    assert!(
        texts.len() >= commands.len(),
        "every command answered: {texts:#?}"
    );
    for text in &texts {
        for leak in LEAKS {
            assert!(!text.contains(leak), "{leak} of tenant beta shown:\n{text}");
        }
    }
    // The same user id is this tenant's own person.
    assert!(
        texts.iter().any(|t| t.contains("张三")),
        "zhangsan is the sandbox tenant's 张三: {texts:#?}"
    );
    let db_ = &s.rt().db.orm;
    for (table, n) in [
        (
            "export_downloads",
            export_download::Entity::find()
                .filter(export_download::Column::TenantId.eq("beta"))
                .count(db_)
                .await
                .unwrap(),
        ),
        (
            "onboardings",
            onboarding::Entity::find()
                .filter(onboarding::Column::TenantId.eq("beta"))
                .count(db_)
                .await
                .unwrap(),
        ),
        (
            "absence_cases",
            absence_case::Entity::find()
                .filter(absence_case::Column::TenantId.eq("beta"))
                .count(db_)
                .await
                .unwrap(),
        ),
    ] {
        assert_eq!(n, 0, "nothing made in tenant beta's {table}");
    }
    let onboarded = onboarding::Entity::find()
        .filter(onboarding::Column::UserId.eq("qianhr"))
        .count(db_)
        .await
        .unwrap();
    assert_eq!(onboarded, 0, "beta's qianhr is nobody here");
    s.stop().await;
    db.cleanup().await;
}

/// A button key of another tenant, pressed in this tenant's chat by a
/// person with the same user id: unknown here, and the other tenant's
/// button stays unpressed.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_button_does_nothing_here(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        chrono::Utc::now(),
        &beta_toml(),
    )
    .await
    .unwrap();
    let conn = &s.rt.db.orm;
    let foreign = card_action::ActiveModel {
        tenant_id: Set("beta".into()),
        token: Set("beta-button-token-0001".into()),
        case_id: Set(Some(1)),
        outbox_id: Set(1),
        action: Set("start_departure".into()),
        for_user: Set("wangmin".into()),
        pressed_at: Set(None),
        ..Default::default()
    };
    let foreign = card_action::Entity::insert(foreign)
        .exec(conn)
        .await
        .unwrap()
        .last_insert_id;
    let events = case_event::Entity::find()
        .all(conn)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .max()
        .unwrap_or(0);
    let code = s.sandbox.issue_response_code();
    let d = s
        .phone
        .card_button(
            "wangmin",
            "task-1",
            "beta-button-token-0001",
            &code,
            chrono::Utc::now().timestamp(),
        )
        .await;
    assert!(d.delivered, "the press itself is a valid callback: {d:?}");
    s.settle().await.unwrap();
    let row = card_action::Entity::find_by_id(foreign)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.pressed_at, None, "beta's button is not pressed");
    // Recorded as what it was, and nothing else: a press of a key this
    // tenant never issued.
    let recorded: Vec<(String, String)> = case_event::Entity::find()
        .filter(case_event::Column::Id.gt(events))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.tenant_id, e.kind))
        .collect();
    assert_eq!(
        recorded,
        [(TENANT.to_owned(), "card_press_unknown".to_owned())]
    );
    s.stop().await;
    db.cleanup().await;
}

/// Hostile bodies on a WeCom tenant's URL: another tenant's credentials,
/// XML entities and a DOCTYPE, deep nesting, invalid UTF-8, outside the
/// envelope and sealed validly inside it. Each is refused with a 4xx, is
/// counted, and stores nothing; the tenant still takes a good callback.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn hostile_wecom_bodies_are_refused_and_store_nothing(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot_with(&db, 600, &beta_toml()).await;
    let tenant = vector_tenant();
    let crypto = tenant.crypto();
    let beta = WecomCrypto::new(BETA_TOKEN, BETA_KEY, BETA_CORP).unwrap();
    let now = chrono::Utc::now().timestamp();
    let plain = |content: &str| {
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>u</FromUserName><CreateTime>{now}</CreateTime><MsgType>text</MsgType><Content>{content}</Content><MsgId>77</MsgId><AgentID>{VECTOR_AGENT_ID}</AgentID></xml>",
            tenant.corp_id
        )
    };
    let sealed = |plaintext: &[u8]| {
        let encrypt = crypto.encrypt_bytes(rand::random(), plaintext);
        let sig = crypto.sign(&now.to_string(), "7", &encrypt);
        rollcall::loadgen::SignedCallback {
            query: format!("msg_signature={sig}&timestamp={now}&nonce=7"),
            body: format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
                tenant.corp_id
            ),
            headers: Vec::new(),
        }
    };
    let good = sealed(plain("打卡").as_bytes());
    let laughs = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY a \"haha\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>{}",
        plain("&c;")
    );
    let external = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        plain("&x;")
    );
    let deep = format!(
        "<xml>{}{}</xml>",
        "<a>".repeat(20_000),
        "</a>".repeat(20_000)
    );
    let mut invalid_utf8 = plain("打卡").into_bytes();
    let at = invalid_utf8.len() - 30;
    invalid_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);

    let other_tenant =
        rollcall::loadgen::seal(&beta, BETA_CORP, VECTOR_AGENT_ID, &plain("打卡"), now, 9);
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "beta's credentials",
            other_tenant.query.clone(),
            other_tenant.body.clone().into_bytes(),
        ),
        (
            "an entity in the envelope",
            good.query.clone(),
            format!(
                "<!DOCTYPE xml [<!ENTITY e \"{}\">]><xml><Encrypt>&e;</Encrypt></xml>",
                good.body
                    .split("<![CDATA[")
                    .nth(1)
                    .unwrap()
                    .split("]]>")
                    .next()
                    .unwrap()
            )
            .into_bytes(),
        ),
        (
            "entities sealed inside",
            sealed(laughs.as_bytes()).query,
            sealed(laughs.as_bytes()).body.into_bytes(),
        ),
        (
            "an external entity sealed inside",
            sealed(external.as_bytes()).query,
            sealed(external.as_bytes()).body.into_bytes(),
        ),
        (
            "deep nesting sealed inside",
            sealed(deep.as_bytes()).query,
            sealed(deep.as_bytes()).body.into_bytes(),
        ),
        (
            "deep nesting outside",
            good.query.clone(),
            format!("<xml>{}</xml>", "<a>".repeat(50_000)).into_bytes(),
        ),
        (
            "invalid UTF-8 sealed inside",
            sealed(&invalid_utf8).query,
            sealed(&invalid_utf8).body.into_bytes(),
        ),
        (
            "invalid UTF-8 outside",
            good.query.clone(),
            [
                &good.body.as_bytes()[..20],
                &[0xff, 0xfe],
                &good.body.as_bytes()[20..],
            ]
            .concat(),
        ),
    ];
    let refused = || {
        [
            Outcome::BadRequest,
            Outcome::BadSignature,
            Outcome::Undecryptable,
            Outcome::WrongReceiveId,
            Outcome::Malformed,
        ]
        .iter()
        .map(|o| app.metrics.get(*o))
        .sum::<u64>()
    };
    for (name, query, body) in cases {
        let before = refused();
        let (status, reason) = post(&app, "acme", &query, body).await;
        assert!(
            (400..500).contains(&status),
            "{name}: refused with a 4xx, got {status} {reason}"
        );
        assert!(
            !reason.contains("haha") && !reason.contains("root:"),
            "{name}: {reason}"
        );
        assert_eq!(refused(), before + 1, "{name} is counted as refused");
        assert!(rows(&app.db).await.is_empty(), "{name}: nothing stored");
    }
    // beta's own URL takes beta's callback, and acme's is still refused there.
    assert_eq!(
        post(&app, "beta", &other_tenant.query, other_tenant.body.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        post(&app, "beta", &good.query, good.body.clone()).await.0,
        401
    );
    assert_eq!(
        post(&app, "acme", &good.query, good.body.clone()).await,
        (200, "success".into())
    );
    assert_eq!(rows(&app.db).await.len(), 1);
    let beta_rows = rollcall::inbox::list(&app.db, "beta").await.unwrap();
    assert_eq!(beta_rows.len(), 1, "beta's own callback, stored as beta's");
    app.stop().await;
    db.cleanup().await;
}
