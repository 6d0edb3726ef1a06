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

#[tokio::test]
async fn faults_are_classified() {
    let (sandbox, api) = setup(Duration::from_millis(300)).await;
    let cases = [
        (Fault::ServerError, "retryable"),
        (Fault::Busy, "retryable"),
        (Fault::Timeout(Duration::from_secs(2)), "retryable"),
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
