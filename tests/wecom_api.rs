//! The WeCom API client against the sandbox platform, which speaks the real
//! wire format: tokens, sending, and every fault the sandbox can produce.

use std::sync::Arc;
use std::time::Duration;

use rollcall::config::Config;
use rollcall::platform::PlatformError;
use rollcall::platform::sandbox::{Fault, SandboxApi};
use rollcall::platform::wecom::api::{Outbound, WecomApi};
use serde_json::json;

async fn setup(timeout: Duration) -> (SandboxApi, WecomApi) {
    let sandbox = SandboxApi::start("wwsandbox", "sandbox-secret")
        .await
        .unwrap();
    // The secret travels through the real config path.
    let toml = format!(
        "[[tenants]]\nid = \"acme\"\n[tenants.wecom]\ncorp_id = \"wwsandbox\"\nagent_id = 1000002\nsecret = \"sandbox-secret\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        sandbox.api_base()
    );
    let config = Config::parse(&toml, &[] as &[(&str, &str); 0]).unwrap();
    let w = config.tenants[0].wecom.clone().unwrap();
    let api = WecomApi::new(&w.api_base, &w.corp_id, w.secret, w.agent_id, timeout);
    (sandbox, api)
}

fn text(s: &str) -> Outbound {
    Outbound::Text { content: s.into() }
}

#[tokio::test]
async fn sends_each_kind_with_the_wire_format() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let card = json!({
        "card_type": "button_interaction",
        "main_title": { "title": "case C-1" },
        "task_id": "case-1-step-1",
        "button_list": [{ "text": "我已到岗", "key": "k1" }]
    });
    let kinds = [
        text("提醒"),
        Outbound::Markdown {
            content: "**提醒**".into(),
        },
        Outbound::TextCard {
            title: "t".into(),
            description: "d".into(),
            url: "https://example.invalid/c/1".into(),
            button: "详情".into(),
        },
        Outbound::TemplateCard(card.clone()),
    ];
    for kind in &kinds {
        let receipt = api.send("ZhangSan", kind, true).await.unwrap();
        assert!(receipt.msgid.is_some_and(|m| m.starts_with("sandbox-msg-")));
        assert!(receipt.raw.contains("\"errcode\":0"));
    }
    let sent = sandbox.sent();
    let types: Vec<&str> = sent.iter().map(|m| m.msgtype.as_str()).collect();
    assert_eq!(types, ["text", "markdown", "textcard", "template_card"]);
    assert_eq!(sent[0].body["text"]["content"], "提醒");
    assert_eq!(sent[0].body["agentid"], 1000002);
    assert_eq!(sent[0].body["enable_duplicate_check"], 1);
    assert_eq!(sent[2].body["textcard"]["btntxt"], "详情");
    assert_eq!(sent[3].body["template_card"], card);
    assert_eq!(sandbox.gettoken_calls(), 1, "the token is cached");
}

#[tokio::test]
async fn a_cold_cache_fetches_one_token_for_many_senders() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let api = Arc::new(api);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.spawn(async move { api.send(&format!("user{i}"), &text("x"), false).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(sandbox.gettoken_calls(), 1, "single-flight refresh");
    assert_eq!(sandbox.sent().len(), 20);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_message_sent() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    api.send("a", &text("1"), false).await.unwrap();
    sandbox.push_fault(Fault::ExpiredToken);
    api.send("a", &text("2"), false).await.unwrap();
    assert_eq!(sandbox.gettoken_calls(), 2);
    assert_eq!(
        sandbox.sent().len(),
        2,
        "sent once after the refresh, not twice"
    );
}

/// A token refused again right after its refresh is retried later (within
/// the delivery's bounded retries), not given up; a gateway's HTTP 429 waits
/// what it says.
#[tokio::test]
async fn a_second_token_error_and_a_429_are_retried_later() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    api.send("a", &text("1"), false).await.unwrap();
    sandbox.push_fault(Fault::ExpiredToken);
    sandbox.push_fault(Fault::ExpiredToken);
    match api.send("a", &text("2"), false).await {
        Err(PlatformError::Retryable(reason)) => assert!(reason.contains("42001"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    sandbox.push_fault(Fault::TooManyRequests);
    match api.send("a", &text("3"), false).await {
        Err(PlatformError::RateLimited { after_secs, .. }) => assert_eq!(after_secs, 2),
        other => panic!("unexpected {other:?}"),
    }
    api.send("a", &text("4"), false).await.unwrap();
    assert_eq!(sandbox.sent().len(), 2);
}

#[tokio::test]
async fn faults_are_classified() {
    let (sandbox, api) = setup(Duration::from_secs(3)).await;
    let cases = [
        (Fault::ServerError, "retryable"),
        (Fault::Busy, "retryable"),
        (Fault::Timeout(Duration::from_secs(60)), "retryable"),
        (Fault::RateLimited, "rate_limited"),
    ];
    for (fault, expected) in cases {
        sandbox.push_fault(fault);
        let got = match api.send("a", &text("x"), false).await {
            Err(PlatformError::Retryable(_)) => "retryable",
            Err(PlatformError::RateLimited { after_secs, .. }) if after_secs > 0 => "rate_limited",
            other => panic!("{fault:?}: unexpected {other:?}"),
        };
        assert_eq!(got, expected, "{fault:?}");
    }
    assert!(
        sandbox.sent().is_empty(),
        "nothing went through while faulted"
    );
    api.send("a", &text("x"), false).await.unwrap();
}

#[tokio::test]
async fn an_unknown_recipient_is_undeliverable() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    sandbox.mark_invalid("LeftTheCompany");
    match api.send("LeftTheCompany", &text("x"), false).await {
        Err(PlatformError::Undeliverable { user, reason }) => {
            assert_eq!(user, "LeftTheCompany");
            assert!(reason.contains("81013"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_secret_is_permanent() {
    let sandbox = SandboxApi::start("wwsandbox", "right").await.unwrap();
    let api = WecomApi::new(
        &sandbox.api_base(),
        "wwsandbox",
        wrong_secret(),
        1,
        Duration::from_secs(5),
    );
    assert!(
        matches!(api.send("a", &text("x"), false).await, Err(PlatformError::Permanent(m)) if m.contains("40001"))
    );
}

fn wrong_secret() -> rollcall::config::Secret {
    let toml = "[[tenants]]\nid = \"x\"\n[tenants.wecom]\ncorp_id = \"c\"\nagent_id = 1\nsecret = \"wrong\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n";
    Config::parse(toml, &[] as &[(&str, &str); 0])
        .unwrap()
        .tenants[0]
        .wecom
        .clone()
        .unwrap()
        .secret
}

fn button_card(task_id: &str) -> Outbound {
    Outbound::TemplateCard(json!({
        "card_type": "button_interaction",
        "main_title": { "title": "返岗通知" },
        "task_id": task_id,
        "button_list": [{ "text": "我已到岗", "key": "ack" }]
    }))
}

#[tokio::test]
async fn a_response_code_updates_a_card_once() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let receipt = api
        .send("ZhangSan", &button_card("case-1-step-1"), false)
        .await
        .unwrap();
    let code = receipt
        .response_code
        .expect("button cards get a response code");
    let raw = api
        .update_template_card(&["ZhangSan"], &code, "已确认")
        .await
        .unwrap();
    assert!(raw.contains("\"errcode\":0"), "{raw}");
    let updates = sandbox.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].userids, ["ZhangSan"]);
    assert_eq!(updates[0].replace_name.as_deref(), Some("已确认"));
    assert_eq!(updates[0].body["agentid"], 1000002);
    assert_eq!(updates[0].body["button"]["replace_name"], "已确认");

    for (code, why) in [(code.as_str(), "used twice"), ("never-issued", "unknown")] {
        match api.update_template_card(&["ZhangSan"], code, "x").await {
            Err(PlatformError::Permanent(m)) => assert!(m.contains("60140"), "{why}: {m}"),
            other => panic!("{why}: unexpected {other:?}"),
        }
    }
    assert_eq!(sandbox.updates().len(), 1, "refusals record nothing");
}

#[tokio::test]
async fn a_code_from_a_click_callback_is_single_use_too() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let code = sandbox.issue_response_code();
    api.update_template_card(&["a"], &code, "已处理")
        .await
        .unwrap();
    assert!(matches!(
        api.update_template_card(&["a"], &code, "已处理").await,
        Err(PlatformError::Permanent(_))
    ));
}

#[tokio::test]
async fn update_template_card_meets_faults_and_refreshes_the_token() {
    let (sandbox, api) = setup(Duration::from_secs(3)).await;
    sandbox.push_fault(Fault::ServerError);
    let code = sandbox.issue_response_code();
    assert!(matches!(
        api.update_template_card(&["a"], &code, "x").await,
        Err(PlatformError::Retryable(_))
    ));
    sandbox.push_fault(Fault::RateLimited);
    assert!(matches!(
        api.update_template_card(&["a"], &code, "x").await,
        Err(PlatformError::RateLimited { .. })
    ));
    sandbox.push_fault(Fault::ExpiredToken);
    api.update_template_card(&["a"], &code, "x").await.unwrap();
    assert_eq!(sandbox.gettoken_calls(), 2);
    assert_eq!(
        sandbox.updates().len(),
        1,
        "a faulted call consumed nothing"
    );

    sandbox.mark_invalid("Left");
    let code = sandbox.issue_response_code();
    assert!(matches!(
        api.update_template_card(&["Left"], &code, "x").await,
        Err(PlatformError::Undeliverable { user, .. }) if user == "Left"
    ));
}

#[tokio::test]
async fn media_get_returns_bytes_type_and_name() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let jpeg = b"\xff\xd8\xff\xe0sandbox-site-photo\xff\xd9".to_vec();
    let media_id = sandbox.add_media(jpeg.clone(), "image/jpeg");
    let media = api.media_get(&media_id).await.unwrap();
    assert_eq!(media.bytes, jpeg);
    assert_eq!(media.content_type, "image/jpeg");
    assert_eq!(media.file_name, Some(format!("{media_id}.jpg")));

    // The raw answer looks like WeCom's download.
    let token = api.access_token().await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/cgi-bin/media/get", sandbox.api_base()))
        .query(&[("access_token", token.as_str()), ("media_id", &media_id)])
        .send()
        .await
        .unwrap();
    let disposition = r.headers()["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"{media_id}.jpg\"")
    );
}

#[tokio::test]
async fn media_get_refuses_an_unknown_id_permanently() {
    let (_sandbox, api) = setup(Duration::from_secs(5)).await;
    match api.media_get("no-such-media").await {
        Err(PlatformError::Permanent(m)) => assert!(m.contains("40007"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn media_get_refreshes_an_expired_token_once() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    let id = sandbox.add_media(b"voice".to_vec(), "audio/amr");
    api.access_token().await.unwrap();
    sandbox.push_fault(Fault::ExpiredToken);
    let media = api.media_get(&id).await.unwrap();
    assert_eq!(media.bytes, b"voice");
    assert_eq!(media.file_name, Some(format!("{id}.amr")));
    assert_eq!(sandbox.gettoken_calls(), 2);
}

#[tokio::test]
async fn media_get_faults_are_classified() {
    let (sandbox, api) = setup(Duration::from_secs(3)).await;
    let id = sandbox.add_media(vec![1, 2, 3], "image/png");
    let cases = [
        (Fault::ServerError, "retryable"),
        (Fault::Busy, "retryable"),
        (Fault::Timeout(Duration::from_secs(60)), "retryable"),
        (Fault::RateLimited, "rate_limited"),
        (Fault::MediaTooLarge, "permanent"),
    ];
    for (fault, expected) in cases {
        sandbox.push_fault(fault);
        let got = match api.media_get(&id).await {
            Err(PlatformError::Retryable(_)) => "retryable",
            Err(PlatformError::RateLimited { .. }) => "rate_limited",
            Err(PlatformError::Permanent(_)) => "permanent",
            other => panic!("{fault:?}: unexpected {other:?}"),
        };
        assert_eq!(got, expected, "{fault:?}");
    }
    assert_eq!(api.media_get(&id).await.unwrap().bytes, [1, 2, 3]);
}

#[tokio::test]
async fn beyond_thirty_a_minute_a_member_gets_nothing_but_the_api_says_ok() {
    let (sandbox, api) = setup(Duration::from_secs(5)).await;
    for i in 0..32 {
        let receipt = api.send("WangWu", &text(&format!("{i}")), false).await;
        assert!(receipt.is_ok(), "message {i} is accepted");
    }
    api.send("ZhaoLiu", &text("x"), false).await.unwrap();
    assert_eq!(sandbox.sent().len(), 33, "every call was accepted");
    assert_eq!(sandbox.sent_to("wangwu"), 30);
    assert_eq!(sandbox.sent_to("ZhaoLiu"), 1);
    let dropped = sandbox.dropped();
    assert_eq!(dropped.len(), 2);
    assert!(dropped.iter().all(|d| d.touser == "wangwu"));
    assert_eq!(dropped[1].msgid, sandbox.sent()[31].msgid);
}
