//! The DingTalk API client against the sandbox, which speaks the real wire
//! format of both hosts: tokens, robot messages made unique, cards with and
//! without a template, read status, media, the address book, and every fault
//! the sandbox can produce.

use std::sync::Arc;
use std::time::Duration;

use rollcall::config::{Config, Secret};
use rollcall::platform::dingtalk::api::{DingtalkApi, DingtalkApiConfig, ReadReceipt};
use rollcall::platform::sandbox::dingtalk_api::WORK_NOTICE_KEY;
use rollcall::platform::sandbox::{
    DingtalkDepartment, DingtalkFault, DingtalkUser, SandboxDingtalkApi,
};
use rollcall::platform::{Card, CardButton, ChatApi, OutboundMessage, PlatformError};
use serde_json::{Value, json};

const APP_KEY: &str = "dingsandboxkey";
const APP_SECRET: &str = "sandbox-app-secret";
const TEMPLATE: &str = "rollcall-sandbox.schema";

/// A [`Secret`] as the config parser makes it (the only way to make one;
/// the DingTalk config section is wired on the main branch).
fn secret(value: &str) -> Secret {
    let toml = format!(
        "[[tenants]]\nid = \"x\"\n[tenants.wecom]\ncorp_id = \"c\"\nagent_id = 1\nsecret = \"{value}\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n"
    );
    Config::parse(&toml, &[] as &[(&str, &str); 0])
        .unwrap()
        .tenants[0]
        .wecom
        .clone()
        .unwrap()
        .secret
}

fn config(sandbox: &SandboxDingtalkApi, template: Option<&str>) -> DingtalkApiConfig {
    config_for(sandbox, template, false)
}

fn config_for(
    sandbox: &SandboxDingtalkApi,
    template: Option<&str>,
    work_notices: bool,
) -> DingtalkApiConfig {
    DingtalkApiConfig {
        api_base: sandbox.api_base(),
        api_base_v1: sandbox.api_base_v1(),
        app_key: APP_KEY.into(),
        app_secret: secret(APP_SECRET),
        agent_id: 3_000_001,
        robot_code: sandbox.robot_code(),
        card_template_id: template.map(str::to_owned),
        work_notices,
    }
}

/// Requests against the local sandbox answer in milliseconds; 30 s only
/// bounds a loaded machine.
async fn setup_with(
    template: Option<&str>,
    timeout: Duration,
) -> (SandboxDingtalkApi, DingtalkApi) {
    let sandbox = SandboxDingtalkApi::start(APP_KEY, APP_SECRET)
        .await
        .unwrap();
    let api = DingtalkApi::new(config(&sandbox, template), timeout);
    (sandbox, api)
}

async fn setup(template: Option<&str>) -> (SandboxDingtalkApi, DingtalkApi) {
    setup_with(template, Duration::from_secs(30)).await
}

fn text(s: &str) -> OutboundMessage {
    OutboundMessage::Text { content: s.into() }
}

fn card(card_id: &str) -> OutboundMessage {
    OutboundMessage::Card(Card {
        source: "ACME 建筑".into(),
        title: "返岗提醒".into(),
        body: "今天未打卡".into(),
        card_id: card_id.into(),
        buttons: vec![
            CardButton {
                key: "tok-arrived".into(),
                label: "我已到岗".into(),
            },
            CardButton {
                key: "tok-leave".into(),
                label: "我在请假".into(),
            },
        ],
    })
}

/// `content` with the reference line the adapter appends: `"\n#"` and eight
/// hex digits.
fn assert_referenced(wire: &str, content: &str) {
    let reference = wire
        .strip_prefix(content)
        .and_then(|rest| rest.strip_prefix("\n#"))
        .unwrap_or_else(|| panic!("{wire:?} is not {content:?} with a reference"));
    assert_eq!(reference.len(), 8, "{wire:?}");
    assert!(reference.chars().all(|c| c.is_ascii_hexdigit()), "{wire:?}");
}

fn class(result: Result<impl std::fmt::Debug, PlatformError>) -> String {
    match result {
        Err(PlatformError::Retryable(_)) => "retryable".into(),
        Err(PlatformError::RateLimited { after_secs, .. }) if after_secs > 0 => {
            "rate_limited".into()
        }
        Err(PlatformError::Undeliverable { user, .. }) => format!("undeliverable {user}"),
        Err(PlatformError::Permanent(_)) => "permanent".into(),
        other => format!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_text_is_a_robot_message_with_the_wire_format() {
    let (sandbox, api) = setup(None).await;
    assert_eq!(api.platform(), "dingtalk");
    let receipt = api
        .send("zhangsan", &text("打卡成功"), false)
        .await
        .unwrap();

    let sent = sandbox.sent();
    assert_eq!(sent.len(), 1);
    let body = &sent[0].body;
    assert_eq!(body["robotCode"], APP_KEY);
    assert_eq!(body["userIds"], json!(["zhangsan"]));
    assert_eq!(body["msgKey"], "sampleText");
    assert!(
        body["msgParam"].is_string(),
        "msgParam travels as a JSON string"
    );
    assert_referenced(sent[0].msg_param["content"].as_str().unwrap(), "打卡成功");

    assert_eq!(
        receipt.message_id.as_deref(),
        Some(sent[0].process_query_key.as_str())
    );
    assert_eq!(receipt.card_ref, None);
    let request: Value = serde_json::from_slice(&receipt.request.unwrap().bytes).unwrap();
    assert_eq!(&request, body, "the request as sent");
    let response = String::from_utf8(receipt.response.bytes).unwrap();
    assert!(response.contains("processQueryKey"), "{response}");
    assert!(!response.contains("sandbox-v1-token") && !request.to_string().contains("token"));
    assert_eq!(sandbox.delivered_to("zhangsan").len(), 1);
    assert_eq!(sandbox.calls("/v1.0/oauth2/accessToken"), 1);
    assert_eq!(
        sandbox.calls("/gettoken"),
        0,
        "robot calls use the new token only"
    );
}

#[tokio::test]
async fn tokens_are_cached_and_a_cold_cache_fetches_one_for_many_senders() {
    let (sandbox, api) = setup(None).await;
    let api = Arc::new(api);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.spawn(async move { api.send(&format!("user{i}"), &text("x"), false).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    api.send("user0", &text("y"), false).await.unwrap();
    assert_eq!(
        sandbox.calls("/v1.0/oauth2/accessToken"),
        1,
        "single-flight, cached"
    );
    assert_eq!(sandbox.sent().len(), 21);

    api.directory().await.unwrap();
    api.directory().await.unwrap();
    assert_eq!(
        sandbox.calls("/gettoken"),
        1,
        "the legacy token is cached too"
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_message_sent_once() {
    let (sandbox, api) = setup(None).await;
    api.send("a", &text("1"), false).await.unwrap();
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    api.send("a", &text("2"), false).await.unwrap();
    assert_eq!(sandbox.calls("/v1.0/oauth2/accessToken"), 2);
    assert_eq!(sandbox.calls("/v1.0/robot/oToMessages/batchSend"), 3);
    assert_eq!(
        sandbox.sent().len(),
        2,
        "sent once after the refresh, not twice"
    );
    assert_eq!(sandbox.delivered_to("a").len(), 2);

    // Two expiries in a row: refreshed once only, then retried later (a
    // refused fresh token is DingTalk's hiccup, not a reason to give up).
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    assert_eq!(class(api.send("a", &text("3"), false).await), "retryable");
    assert_eq!(sandbox.calls("/v1.0/oauth2/accessToken"), 3);
    assert_eq!(sandbox.sent().len(), 2);

    // The oapi token (the address book) the same way.
    api.directory().await.unwrap();
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    api.directory().await.unwrap();
    assert_eq!(sandbox.calls("/gettoken"), 2);
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    sandbox.push_fault(DingtalkFault::ExpiredToken);
    assert!(matches!(
        api.directory().await,
        Err(rollcall::platform::PlatformError::Retryable(_))
    ));
    assert_eq!(sandbox.calls("/gettoken"), 3);
}

#[tokio::test]
async fn identical_texts_both_arrive_where_a_raw_duplicate_is_dropped() {
    let (sandbox, api) = setup(None).await;
    // Answers that may rightly repeat: each send is its own on the wire.
    let first = api.send("lisi", &text("不在权限内"), false).await.unwrap();
    let second = api.send("lisi", &text("不在权限内"), false).await.unwrap();
    assert_ne!(first.message_id, second.message_id);
    let sent = sandbox.sent();
    assert_ne!(sent[0].msg_param, sent[1].msg_param);
    assert_eq!(sandbox.delivered_to("lisi").len(), 2);
    assert!(sandbox.dropped().is_empty());

    // The same content sent raw twice: accepted twice, delivered once.
    let token: Value = reqwest::Client::new()
        .post(format!("{}/v1.0/oauth2/accessToken", sandbox.api_base_v1()))
        .json(&json!({ "appKey": APP_KEY, "appSecret": APP_SECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let raw = json!({
        "robotCode": APP_KEY,
        "userIds": ["lisi"],
        "msgKey": "sampleText",
        "msgParam": json!({ "content": "不在权限内" }).to_string(),
    });
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .post(format!(
                "{}/v1.0/robot/oToMessages/batchSend",
                sandbox.api_base_v1()
            ))
            .header(
                "x-acs-dingtalk-access-token",
                token["accessToken"].as_str().unwrap(),
            )
            .json(&raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "DingTalk says nothing");
    }
    assert_eq!(sandbox.delivered_to("lisi").len(), 3);
    let dropped = sandbox.dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].user_id, "lisi");
    assert_eq!(
        dropped[0].process_query_key,
        sandbox.sent()[3].process_query_key
    );
}

#[tokio::test]
async fn a_unique_text_resent_after_a_crash_is_identical_and_not_delivered_twice() {
    let (sandbox, api) = setup(None).await;
    let notice = "返岗通知书 C-7";
    api.send("wangwu", &text(notice), true).await.unwrap();
    // The outbox did not see the receipt and sends it again.
    api.send("wangwu", &text(notice), true).await.unwrap();
    let sent = sandbox.sent();
    assert_referenced(sent[0].msg_param["content"].as_str().unwrap(), notice);
    assert_eq!(
        sent[0].msg_param, sent[1].msg_param,
        "recognisable: the same reference"
    );
    assert_eq!(sandbox.delivered_to("wangwu").len(), 1);
    assert_eq!(sandbox.dropped().len(), 1);

    // Another recipient of the same notice gets it.
    api.send("zhaoliu", &text(notice), true).await.unwrap();
    assert_eq!(sandbox.delivered_to("zhaoliu").len(), 1);
}

#[tokio::test]
async fn a_card_with_a_template_is_created_with_its_params_and_updated_by_its_ref() {
    let (sandbox, api) = setup(Some(TEMPLATE)).await;
    let receipt = api
        .send("zhangsan", &card("case-1-step-1"), true)
        .await
        .unwrap();
    assert_eq!(receipt.card_ref.as_deref(), Some("case-1-step-1"));
    assert!(receipt.message_id.is_some(), "the carrierId");

    let cards = sandbox.cards();
    assert_eq!(cards.len(), 1);
    let created = &cards[0];
    assert_eq!(created.out_track_id, "case-1-step-1");
    assert_eq!(created.template_id, TEMPLATE);
    assert_eq!(created.user_id, "zhangsan");
    assert_eq!(created.callback_type, "STREAM");
    assert_eq!(created.body["openSpaceId"], "dtv1.card//IM_ROBOT.zhangsan");
    assert_eq!(
        created.body["imRobotOpenDeliverModel"],
        json!({ "spaceType": "IM_ROBOT", "robotCode": APP_KEY })
    );
    assert_eq!(created.params["title"], "返岗提醒");
    assert_eq!(created.params["body"], "今天未打卡");
    assert_eq!(created.params["source"], "ACME 建筑");
    assert_eq!(created.params["pressed"], "");
    let buttons: Value = serde_json::from_str(created.params["buttons"].as_str().unwrap()).unwrap();
    assert_eq!(
        buttons,
        json!([
            { "key": "tok-arrived", "label": "我已到岗" },
            { "key": "tok-leave", "label": "我在请假" },
        ])
    );
    assert!(
        sandbox.sent().is_empty(),
        "no robot message besides the card"
    );

    let update = api
        .update_card("zhangsan", "case-1-step-1", "已到岗")
        .await
        .unwrap();
    assert_eq!(update.card_ref.as_deref(), Some("case-1-step-1"));
    let request: Value = serde_json::from_slice(&update.request.unwrap().bytes).unwrap();
    assert_eq!(request["cardUpdateOptions"]["updateCardDataByKey"], true);
    let updates = sandbox.card_updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].out_track_id, "case-1-step-1");
    assert_eq!(updates[0].params["pressed"], "已到岗");
    let now = &sandbox.cards()[0];
    assert_eq!(now.params["pressed"], "已到岗");
    assert_eq!(
        now.params["title"], "返岗提醒",
        "updated by key, not replaced"
    );

    // A resend after a crash meets the card it created: sent, not twice.
    let again = api
        .send("zhangsan", &card("case-1-step-1"), true)
        .await
        .unwrap();
    assert_eq!(again.card_ref.as_deref(), Some("case-1-step-1"));
    assert!(
        String::from_utf8(again.response.bytes)
            .unwrap()
            .contains("param.cardAlreadyExist")
    );
    assert_eq!(sandbox.cards().len(), 1);

    match api.update_card("zhangsan", "never-sent", "x").await {
        Err(PlatformError::Permanent(m)) => assert!(m.contains("param.cardNotExist"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn without_a_template_a_card_is_a_markdown_message_without_a_card_ref() {
    let (sandbox, api) = setup(None).await;
    let receipt = api
        .send("zhangsan", &card("case-2-step-1"), true)
        .await
        .unwrap();
    assert_eq!(receipt.card_ref, None);
    assert!(sandbox.cards().is_empty());
    let sent = sandbox.sent();
    assert_eq!(sent[0].msg_key, "sampleMarkdown");
    assert_eq!(sent[0].msg_param["title"], "返岗提醒");
    let markdown = sent[0].msg_param["text"].as_str().unwrap();
    assert!(markdown.contains("今天未打卡"), "{markdown}");
    let lines: Vec<&str> = markdown.lines().collect();
    assert!(
        lines.contains(&"我已到岗") && lines.contains(&"我在请假"),
        "{markdown}"
    );
    assert!(
        !markdown.contains("tok-"),
        "keys stay opaque, off the message"
    );
    let last = lines.last().unwrap();
    assert!(last.starts_with('#') && last.len() == 9, "{markdown}");

    // The same card again is recognisable (and dropped); another card with
    // the same words is not.
    api.send("zhangsan", &card("case-2-step-1"), true)
        .await
        .unwrap();
    api.send("zhangsan", &card("case-3-step-1"), true)
        .await
        .unwrap();
    assert_eq!(sandbox.delivered_to("zhangsan").len(), 2);
    assert_eq!(sandbox.dropped().len(), 1);
    assert_eq!(
        sandbox.dropped()[0].process_query_key,
        sandbox.sent()[1].process_query_key
    );
}

#[tokio::test]
async fn read_status_round_trip() {
    let (sandbox, api) = setup(None).await;
    let receipt = api.send("zhangsan", &text("提醒"), true).await.unwrap();
    let key = receipt.message_id.unwrap();
    assert!(
        key.contains('+') && key.contains('/'),
        "needs URL encoding: {key}"
    );
    let unread = api.read_status(&key).await.unwrap();
    assert_eq!(unread.response.media_type, "application/json");
    assert!(
        String::from_utf8(unread.response.bytes)
            .unwrap()
            .contains("messageReadInfoList"),
        "the answer is kept as received"
    );
    assert_eq!(
        unread.receipts,
        [ReadReceipt {
            user_id: "zhangsan".into(),
            read: false,
            read_at: None
        }]
    );
    sandbox.mark_read(&key, "zhangsan", 1_767_000_000_123);
    assert_eq!(
        api.read_status(&key).await.unwrap().receipts,
        [ReadReceipt {
            user_id: "zhangsan".into(),
            read: true,
            read_at: Some(1_767_000_000_123)
        }]
    );
    match api.read_status("no-such-key").await {
        Err(PlatformError::Permanent(m)) => assert!(m.contains("invalid.processQueryKey"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

/// With `texts = "work_notice"`, a text is a work notice (asyncsend_v2);
/// getsendresult says who read it (not when), and whom DingTalk accepted it
/// for and never delivered it to (an unknown user: invalid). A duplicate of
/// the day (forbidden, 143106) is a resend of a copy that arrived: its read
/// status is unavailable, not a failed delivery.
#[tokio::test]
async fn a_work_notice_is_sent_and_asked_about_by_its_task() {
    let sandbox = SandboxDingtalkApi::start(APP_KEY, APP_SECRET)
        .await
        .unwrap();
    let api = DingtalkApi::new(config_for(&sandbox, None, true), Duration::from_secs(30));
    let receipt = api.send("zhangsan", &text("返岗通知"), true).await.unwrap();
    let id = receipt.message_id.unwrap();
    let task = id
        .strip_prefix("work_notice:")
        .expect("a task id")
        .to_owned();
    let sent = sandbox.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg_key, WORK_NOTICE_KEY);
    assert_eq!(sent[0].body["agent_id"], 3_000_001);
    assert_eq!(sent[0].body["userid_list"], "zhangsan");
    assert_referenced(
        sent[0].body["msg"]["text"]["content"].as_str().unwrap(),
        "返岗通知",
    );
    let unread = api.read_status(&id).await.unwrap();
    assert!(
        String::from_utf8(unread.response.bytes)
            .unwrap()
            .contains("unread_user_id_list"),
        "the answer is kept as received"
    );
    assert_eq!(
        unread.receipts,
        [ReadReceipt {
            user_id: "zhangsan".into(),
            read: false,
            read_at: None
        }]
    );
    sandbox.mark_read(&task, "zhangsan", 1_767_000_000_123);
    assert_eq!(
        api.read_status(&id).await.unwrap().receipts,
        [ReadReceipt {
            user_id: "zhangsan".into(),
            read: true,
            read_at: None
        }]
    );

    // The same words again (a reply that may repeat): DingTalk would drop
    // a raw duplicate, but each send carries its own reference.
    let again = api
        .send("zhangsan", &text("返岗通知"), false)
        .await
        .unwrap();
    let again = again.message_id.unwrap();
    assert!(api.read_status(&again).await.is_ok());
    // A raw duplicate (the same msg as the first) is accepted and dropped.
    let first = sent[0].body.clone();
    let token = reqwest::get(format!(
        "{}/gettoken?appkey={APP_KEY}&appsecret={APP_SECRET}",
        sandbox.api_base()
    ))
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/topapi/message/corpconversation/asyncsend_v2?access_token={token}",
            sandbox.api_base()
        ))
        .json(&first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["errcode"], 0, "accepted: {raw}");
    // That is what a resend after a lost answer looks like: the first copy
    // arrived, and this task cannot tell its read.
    match api
        .read_status(&format!("work_notice:{}", raw["task_id"]))
        .await
    {
        Err(PlatformError::Permanent(reason)) => {
            assert!(
                reason.contains("zhangsan") && reason.contains("143106"),
                "{reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // An unknown user: accepted, never delivered, with DingTalk's answer.
    sandbox.mark_invalid("nobody");
    let lost = api.send("nobody", &text("通知"), true).await.unwrap();
    let status = api.read_status(&lost.message_id.unwrap()).await.unwrap();
    assert!(status.receipts.is_empty(), "{status:?}");
    assert_eq!(status.undelivered.len(), 1, "{status:?}");
    assert_eq!(status.undelivered[0].0, "nobody");
    assert!(status.undelivered[0].1.contains("invalid_user_id_list"));
    assert!(
        String::from_utf8(status.response.bytes)
            .unwrap()
            .contains("\"invalid_user_id_list\":[\"nobody\"]")
    );
}

#[tokio::test]
async fn media_is_downloaded_through_the_temporary_link() {
    let (sandbox, api) = setup(None).await;
    let jpeg = b"\xff\xd8\xff\xe0sandbox-site-photo\xff\xd9".to_vec();
    let code = sandbox.add_media(jpeg.clone(), "image/jpeg");
    let media = api.fetch_media(&code).await.unwrap();
    assert_eq!(media.bytes, jpeg);
    assert_eq!(media.content_type, "image/jpeg");
    assert_eq!(media.file_name, None, "DingTalk's links name nothing");

    match api.fetch_media("no-such-code").await {
        Err(PlatformError::Permanent(m)) => {
            assert!(m.contains("invalidParameter.robotCode.downloadCode"), "{m}")
        }
        other => panic!("unexpected {other:?}"),
    }

    sandbox.expire_download_links();
    match api.fetch_media(&code).await {
        Err(PlatformError::Permanent(m)) => {
            assert!(m.contains("403"), "{m}");
            assert!(
                !m.contains("sandbox-files") && !m.contains("Signature"),
                "no URL: {m}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn user(userid: &str, name: &str, depts: &[i64]) -> DingtalkUser {
    DingtalkUser {
        userid: userid.into(),
        name: name.into(),
        dept_id_list: depts.to_vec(),
        mobile: None,
        email: None,
        manager_userid: None,
        active: true,
    }
}

fn dept(dept_id: i64, name: &str, parent_id: i64) -> DingtalkDepartment {
    DingtalkDepartment {
        dept_id,
        name: name.into(),
        parent_id,
    }
}

#[tokio::test]
async fn the_directory_walks_departments_pages_users_and_lists_each_once() {
    let (sandbox, api) = setup(None).await;
    let mut users: Vec<DingtalkUser> = (0..130)
        .map(|i| user(&format!("worker{i:03}"), &format!("工人{i}"), &[2]))
        .collect();
    users.push(DingtalkUser {
        mobile: Some("13800000001".into()),
        email: Some("foreman@example.com".into()),
        manager_userid: Some("boss".into()),
        // Not yet activated, still employed.
        active: false,
        ..user("foreman", "工长", &[4, 3])
    });
    users.push(user("boss", "老板", &[1]));
    sandbox.set_directory(
        vec![
            dept(2, "一号工地", 1),
            dept(3, "二号工地", 1),
            dept(4, "钢筋班组", 2),
        ],
        users,
    );
    let members = api.directory().await.unwrap();
    assert_eq!(members.len(), 132, "each user once");
    let foreman = members.iter().find(|m| m.user_id == "foreman").unwrap();
    assert_eq!(foreman.name, "工长");
    assert_eq!(
        foreman.department.as_deref(),
        Some("钢筋班组"),
        "the first department"
    );
    assert_eq!(foreman.manager.as_deref(), Some("boss"), "from user/get");
    assert_eq!(foreman.mobile.as_deref(), Some("13800000001"));
    assert_eq!(foreman.email.as_deref(), Some("foreman@example.com"));
    assert!(foreman.active);
    let worker = members.iter().find(|m| m.user_id == "worker129").unwrap();
    assert_eq!(worker.department.as_deref(), Some("一号工地"));
    assert_eq!(worker.manager, None);
    assert_eq!(worker.mobile, None);
    let boss = members.iter().find(|m| m.user_id == "boss").unwrap();
    assert_eq!(boss.department, None, "the root's name is not listed");

    // Departments 1, 2, 3, 4 once each; two pages for the 130 of department 2.
    assert_eq!(sandbox.calls("/topapi/v2/department/listsub"), 4);
    assert_eq!(sandbox.calls("/topapi/v2/user/list"), 5);
    assert_eq!(sandbox.calls("/topapi/v2/user/get"), 132);
}

#[tokio::test]
async fn faults_are_classified() {
    let (sandbox, api) = setup(Some(TEMPLATE)).await;
    let cases = [
        (DingtalkFault::ServerError, "retryable"),
        (DingtalkFault::Busy, "retryable"),
        (DingtalkFault::RateLimited, "rate_limited"),
        (DingtalkFault::FlowControlled, "rate_limited"),
        (DingtalkFault::IpLimited, "rate_limited"),
    ];
    for (fault, expected) in cases {
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.send("a", &text("x"), false).await),
            expected,
            "send {fault:?}"
        );
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.directory().await),
            expected,
            "directory {fault:?}"
        );
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.update_card("a", "none", "x").await),
            expected,
            "update_card {fault:?}"
        );
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.fetch_media("none").await),
            expected,
            "fetch_media {fault:?}"
        );
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.send("a", &card(&format!("{fault:?}")), true).await),
            expected,
            "card {fault:?}"
        );
        sandbox.push_fault(fault);
        assert_eq!(
            class(api.read_status("none").await),
            expected,
            "read_status {fault:?}"
        );
    }
    assert!(
        sandbox.delivered_to("a").is_empty(),
        "nothing went through while faulted"
    );
    assert!(sandbox.cards().is_empty());
    api.send("a", &text("x"), false).await.unwrap();
    assert_eq!(sandbox.delivered_to("a").len(), 1);
}

#[tokio::test]
async fn a_timeout_is_retryable_on_both_hosts() {
    // The fault holds far longer than the client waits.
    let (sandbox, api) = setup_with(None, Duration::from_secs(10)).await;
    sandbox.push_fault(DingtalkFault::Timeout(Duration::from_secs(600)));
    assert_eq!(class(api.send("a", &text("x"), false).await), "retryable");
    sandbox.push_fault(DingtalkFault::Timeout(Duration::from_secs(600)));
    assert_eq!(class(api.directory().await), "retryable");
}

#[tokio::test]
async fn an_unknown_user_is_undeliverable() {
    for template in [None, Some(TEMPLATE)] {
        let (sandbox, api) = setup(template).await;
        sandbox.mark_invalid("left-the-company");
        for message in [text("x"), card("case-9-step-1")] {
            match api.send("left-the-company", &message, true).await {
                Err(PlatformError::Undeliverable { user, reason }) => {
                    assert_eq!(user, "left-the-company");
                    assert!(
                        reason.contains("invalidStaffIdList")
                            || reason.contains("param.userIdNotExist"),
                        "{reason}"
                    );
                }
                other => panic!("{template:?} {message:?}: unexpected {other:?}"),
            }
        }
        assert!(sandbox.delivered_to("left-the-company").is_empty());
    }
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_never_echoed() {
    let sandbox = SandboxDingtalkApi::start(APP_KEY, "the-right-secret")
        .await
        .unwrap();
    let api = DingtalkApi::new(config(&sandbox, None), Duration::from_secs(30));
    match api.send("a", &text("x"), false).await {
        Err(PlatformError::Permanent(m)) => {
            assert!(m.contains("invalidClientIdOrSecret"), "{m}");
            assert!(!m.contains(APP_SECRET), "{m}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match api.directory().await {
        Err(PlatformError::Permanent(m)) => {
            assert!(m.contains("40089"), "{m}");
            assert!(!m.contains(APP_SECRET), "{m}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_is_retryable_and_names_no_secret() {
    // A bound socket that never listens refuses connections, and no other
    // process can take its port meanwhile.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let api = DingtalkApi::new(
        DingtalkApiConfig {
            api_base: format!("http://{addr}"),
            api_base_v1: format!("http://{addr}"),
            app_key: APP_KEY.into(),
            app_secret: secret(APP_SECRET),
            agent_id: 1,
            robot_code: APP_KEY.into(),
            card_template_id: None,
            work_notices: false,
        },
        Duration::from_secs(30),
    );
    for result in [
        api.directory().await.map(|_| ()),
        api.send("a", &text("x"), false).await.map(|_| ()),
    ] {
        match result {
            Err(PlatformError::Retryable(m)) => {
                assert!(!m.contains(APP_SECRET) && !m.contains("appsecret"), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(socket);
}
