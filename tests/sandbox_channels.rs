//! The sandbox's SMS gateway and mail server, driven by the real senders
//! (`WebhookSms` from a `[tenants.sms]` table, `Mailer` from a
//! `[tenants.email]` table), as `rollcall demo` wires them.

use std::sync::Arc;
use std::time::Duration;

use rollcall::config::{RawEmailConfig, RawSmsConfig, resolve_email, resolve_sms};
use rollcall::outbox::email::{EmailMessage, Mailer};
use rollcall::outbox::sms::{
    SmsMessage, SmsProvider, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, sms_provider,
    webhook_signature,
};
use rollcall::platform::PlatformError;
use rollcall::platform::sandbox::{SandboxMail, SandboxSms, SmsFault};
use rstest::rstest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PHONE: &str = "13812345678";
const SECRET: &str = "whsec-sandbox-1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    RateLimited(u64),
    Undeliverable(String),
    Retryable,
    Permanent,
    Unknown,
}

fn outcome<T>(r: &Result<T, PlatformError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Sent,
        Err(PlatformError::RateLimited { after_secs, .. }) => Outcome::RateLimited(*after_secs),
        Err(PlatformError::Undeliverable { user, .. }) => Outcome::Undeliverable(user.clone()),
        Err(PlatformError::Retryable(_)) => Outcome::Retryable,
        Err(PlatformError::Permanent(_)) => Outcome::Permanent,
        Err(PlatformError::OutcomeUnknown(_)) => Outcome::Unknown,
    }
}

// ---------------------------------------------------------------------------
// SMS
// ---------------------------------------------------------------------------

fn webhook(url: &str, secret: &str) -> Arc<dyn SmsProvider> {
    rollcall::tls::install_crypto_provider();
    let raw: RawSmsConfig = toml::from_str(&format!(
        "provider = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n"
    ))
    .unwrap();
    let config = resolve_sms("tenants[0].sms", raw, &[]).unwrap();
    sms_provider(&config, Duration::from_secs(3))
}

fn sms(out_id: &str) -> SmsMessage {
    let mut params = serde_json::Map::new();
    params.insert("name".into(), "张三".into());
    SmsMessage {
        phone: PHONE.into(),
        text: "张三，您好：请于 2026-12-01 09:00 返岗。".into(),
        template_param: params,
        out_id: out_id.into(),
    }
}

#[tokio::test]
async fn webhook_sms_reaches_the_sandbox_and_the_receipt_carries_its_id() {
    let gateway = SandboxSms::start(SECRET).await.unwrap();
    let sender = webhook(&gateway.url(), SECRET);
    let receipt = sender.send(&sms("case-42-step-1")).await.unwrap();

    let texts = gateway.texts();
    assert_eq!(texts.len(), 1);
    let t = &texts[0];
    assert_eq!(t.to, PHONE);
    assert_eq!(t.text, "张三，您好：请于 2026-12-01 09:00 返岗。");
    assert_eq!(t.out_id, "case-42-step-1");
    assert_eq!(t.id, "sandbox-sms-1");
    assert_eq!(receipt.provider_id, t.id);

    // At-least-once delivery: the same out_id again is answered with the
    // first id and not texted twice; another out_id is a new text.
    let again = sender.send(&sms("case-42-step-1")).await.unwrap();
    assert_eq!(again.provider_id, "sandbox-sms-1");
    assert_eq!(gateway.texts().len(), 1);
    let next = sender.send(&sms("case-42-step-2")).await.unwrap();
    assert_eq!(next.provider_id, "sandbox-sms-2");
    assert_eq!(gateway.texts().len(), 2);
}

#[tokio::test]
async fn the_sandbox_refuses_a_webhook_signed_with_the_wrong_secret() {
    let gateway = SandboxSms::start(SECRET).await.unwrap();
    let result = webhook(&gateway.url(), "not-the-secret")
        .send(&sms("case-42-step-1"))
        .await;
    assert_eq!(outcome(&result), Outcome::Permanent, "{result:?}");
    assert!(format!("{result:?}").contains("401"), "{result:?}");
    assert!(gateway.texts().is_empty());
}

/// Posts `body` with the given headers; returns the status and the JSON error.
async fn post_raw(url: &str, headers: &[(&str, String)], body: &str) -> (u16, serde_json::Value) {
    rollcall::tls::install_crypto_provider();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let answer = req.send().await.unwrap();
    let status = answer.status().as_u16();
    let json = answer.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn the_sandbox_checks_signatures_and_timestamps_like_a_real_receiver() {
    let gateway = SandboxSms::start(SECRET).await.unwrap();
    let url = gateway.url();
    let body_at = |ts: i64| {
        serde_json::json!({"to": PHONE, "text": "t", "params": {}, "out_id": format!("o-{ts}"), "timestamp": ts})
            .to_string()
    };
    let signed = |ts: i64, body: &str| {
        vec![
            (WEBHOOK_TIMESTAMP_HEADER, ts.to_string()),
            (
                WEBHOOK_SIGNATURE_HEADER,
                webhook_signature(SECRET, &ts.to_string(), body.as_bytes()),
            ),
        ]
    };
    let now = chrono::Utc::now().timestamp();

    let body = body_at(now);
    assert_eq!(
        post_raw(&url, &[], &body).await,
        (401, serde_json::json!({"error": "missing_timestamp"}))
    );
    let only_ts = [(WEBHOOK_TIMESTAMP_HEADER, now.to_string())];
    assert_eq!(
        post_raw(&url, &only_ts, &body).await,
        (401, serde_json::json!({"error": "missing_signature"}))
    );
    let tampered = body.replace(PHONE, "13900000000");
    assert_eq!(
        post_raw(&url, &signed(now, &body), &tampered).await,
        (401, serde_json::json!({"error": "invalid_signature"}))
    );
    let mut not_hex = signed(now, &body);
    not_hex[1].1 = "zz".into();
    assert_eq!(post_raw(&url, &not_hex, &body).await.0, 401);
    // Correctly signed, but more than 5 minutes off, either way.
    for ts in [now - 400, now + 400] {
        let stale = body_at(ts);
        assert_eq!(
            post_raw(&url, &signed(ts, &stale), &stale).await,
            (401, serde_json::json!({"error": "stale_timestamp"}))
        );
    }
    assert!(gateway.texts().is_empty());

    // Within the window it is taken.
    let recent = body_at(now - 60);
    let (status, json) = post_raw(&url, &signed(now - 60, &recent), &recent).await;
    assert_eq!((status, json["id"].as_str()), (200, Some("sandbox-sms-1")));
    assert_eq!(gateway.texts().len(), 1);
}

#[rstest]
#[case::server_error(SmsFault::ServerError, Outcome::Retryable)]
#[case::rate_limited(SmsFault::RateLimited, Outcome::RateLimited(1))]
#[case::invalid_number(SmsFault::InvalidNumber, Outcome::Undeliverable("138****5678".into()))]
#[tokio::test]
async fn sandbox_sms_faults_are_classified(#[case] fault: SmsFault, #[case] expected: Outcome) {
    let gateway = SandboxSms::start(SECRET).await.unwrap();
    let sender = webhook(&gateway.url(), SECRET);
    gateway.push_fault(fault);
    let result = sender.send(&sms("case-42-step-1")).await;
    assert_eq!(outcome(&result), expected, "{result:?}");
    assert!(gateway.texts().is_empty(), "a refused text is not recorded");
    // The fault is used up: the retry goes through.
    let receipt = sender.send(&sms("case-42-step-1")).await.unwrap();
    assert_eq!(gateway.texts()[0].id, receipt.provider_id);
}

// ---------------------------------------------------------------------------
// Email
// ---------------------------------------------------------------------------

fn mailer(port: u16) -> Mailer {
    let raw: RawEmailConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"人事部 <hr@corp.example>\"\ntimeout_secs = 5\n"
    ))
    .unwrap();
    Mailer::new(resolve_email("tenants[0].email", raw, &[]).unwrap())
}

fn notice(to: &str) -> EmailMessage {
    EmailMessage {
        to: to.into(),
        subject: "返岗通知：请于 12 月 1 日到岗".into(),
        text: "张三，您好：\n\n请于 2026-12-01 09:00 返岗，或回复说明情况。\n\n.此行以点开头\n..两个点\n人事部"
            .into(),
        out_id: "case-42/step-1".into(),
    }
}

#[tokio::test]
async fn mailer_reaches_the_sandbox_with_the_receipts_message_id_and_chinese_text() {
    let server = SandboxMail::start().await.unwrap();
    let receipt = mailer(server.port())
        .send(&notice("zhang.san@corp.example"))
        .await
        .unwrap();
    assert_eq!(receipt.server_reply, "250 2.0.0 Ok: queued as sandbox-1");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.from, "hr@corp.example");
    assert_eq!(m.to, ["zhang.san@corp.example"]);
    assert_eq!(m.queue_id, "sandbox-1");
    assert_eq!(m.message_id.as_deref(), Some(receipt.message_id.as_str()));
    // What the server kept is what the receipt says was sent.
    assert_eq!(
        m.data.strip_suffix(b"\r\n").unwrap_or(&m.data),
        receipt
            .message
            .strip_suffix(b"\r\n")
            .unwrap_or(&receipt.message)
    );

    let parsed = mailparse::parse_mail(&m.data).unwrap();
    let header = |name: &str| {
        mailparse::MailHeaderMap::get_first_value(parsed.headers.as_slice(), name)
            .unwrap_or_else(|| panic!("no {name} header"))
    };
    assert_eq!(header("Message-ID"), receipt.message_id);
    assert_eq!(header("Subject"), "返岗通知：请于 12 月 1 日到岗");
    assert_eq!(
        parsed.get_body().unwrap().replace("\r\n", "\n"),
        notice("").text
    );

    // A retry of the same notice carries the same Message-ID.
    let retry = mailer(server.port())
        .send(&notice("zhang.san@corp.example"))
        .await
        .unwrap();
    assert_eq!(retry.message_id, receipt.message_id);
    assert_eq!(server.messages()[1].message_id, m.message_id);
}

#[tokio::test]
async fn a_recipient_the_sandbox_rejects_is_undeliverable() {
    let server = SandboxMail::start().await.unwrap();
    server.reject_recipient("Left.Company@corp.example");
    let result = mailer(server.port())
        .send(&notice("left.company@corp.example"))
        .await;
    assert_eq!(
        outcome(&result),
        Outcome::Undeliverable("left.company@corp.example".into()),
        "{result:?}"
    );
    assert!(format!("{result:?}").contains("5.1.1"), "{result:?}");
    assert!(server.messages().is_empty());
    // Others still get mail.
    mailer(server.port())
        .send(&notice("zhang.san@corp.example"))
        .await
        .unwrap();
    assert_eq!(server.messages().len(), 1);
}

/// Sends `line`, returns the reply's first line.
async fn exchange(io: &mut BufReader<TcpStream>, line: &[u8]) -> String {
    io.get_mut().write_all(line).await.unwrap();
    let mut reply = String::new();
    io.read_line(&mut reply).await.unwrap();
    reply.trim_end().to_owned()
}

#[tokio::test]
async fn the_sandbox_mail_server_survives_bad_input_and_serves_many_at_once() {
    let server = SandboxMail::start().await.unwrap();

    let socket = TcpStream::connect(server.addr).await.unwrap();
    let mut io = BufReader::new(socket);
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(
        exchange(&mut io, b"\xff\xfe\x00garbage\r\n")
            .await
            .starts_with("500 ")
    );
    assert!(
        exchange(&mut io, b"MAIL FROM:<a@b>\r\n")
            .await
            .starts_with("503 ")
    );
    assert!(exchange(&mut io, b"HELO x\r\n").await.starts_with("250 "));
    assert!(exchange(&mut io, b"DATA\r\n").await.starts_with("503 "));
    assert!(
        exchange(&mut io, b"RCPT TO:<a@b>\r\n")
            .await
            .starts_with("503 ")
    );
    assert!(
        exchange(&mut io, b"MAIL FROM:a@b\r\n")
            .await
            .starts_with("501 ")
    );
    assert!(
        exchange(&mut io, b"MAIL FROM:<a@b>\r\n")
            .await
            .starts_with("250 ")
    );
    assert!(exchange(&mut io, b"RSET\r\n").await.starts_with("250 "));
    assert!(
        exchange(&mut io, b"RCPT TO:<c@d>\r\n")
            .await
            .starts_with("503 ")
    );
    assert!(exchange(&mut io, b"NOOP\r\n").await.starts_with("250 "));
    // A line with no end: the server hangs up instead of buffering forever.
    io.get_mut().write_all(&vec![b'A'; 64 * 1024]).await.ok();
    let mut rest = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), io.read_line(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "{closed:?} {rest}"
    );
    // Half a message, then a hang-up: nothing is recorded.
    let socket = TcpStream::connect(server.addr).await.unwrap();
    let mut io = BufReader::new(socket);
    io.read_line(&mut String::new()).await.unwrap();
    for line in ["EHLO x\r\n", "MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n"] {
        let mut reply = exchange(&mut io, line.as_bytes()).await;
        while reply.starts_with("250-") {
            reply.clear();
            io.read_line(&mut reply).await.unwrap();
        }
        assert!(reply.starts_with("250 "), "{line}: {reply}");
    }
    assert!(exchange(&mut io, b"DATA\r\n").await.starts_with("354 "));
    io.get_mut()
        .write_all(b"Subject: cut\r\n\r\nhalf")
        .await
        .unwrap();
    drop(io);
    assert!(server.messages().is_empty());

    // Still serving, and in parallel.
    let port = server.port();
    let sends = (0..8).map(|i| async move {
        let mut msg = notice(&format!("user{i}@corp.example"));
        msg.out_id = format!("case-{i}");
        mailer(port).send(&msg).await
    });
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    let mut to: Vec<String> = server.messages().into_iter().flat_map(|m| m.to).collect();
    to.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("user{i}@corp.example")).collect();
    assert_eq!(to, expected);
}

#[tokio::test]
async fn raw_smtp_is_unstuffed_and_its_message_id_read() {
    let server = SandboxMail::start().await.unwrap();
    let socket = TcpStream::connect(server.addr).await.unwrap();
    let mut io = BufReader::new(socket);
    io.read_line(&mut String::new()).await.unwrap();
    assert!(exchange(&mut io, b"HELO x\r\n").await.starts_with("250 "));
    for line in [
        "mail from:<hr@corp.example> BODY=8BITMIME\r\n",
        "RCPT TO:<a@corp.example>\r\n",
        "RCPT TO:<b@corp.example>\r\n",
    ] {
        assert!(exchange(&mut io, line.as_bytes()).await.starts_with("250 "));
    }
    assert!(exchange(&mut io, b"DATA\r\n").await.starts_with("354 "));
    let reply = exchange(
        &mut io,
        b"Subject: s\r\nMessage-Id:\r\n <n-1.abc@corp.example>\r\n\r\n..leading dot\r\n...\r\nend\r\n.\r\n",
    )
    .await;
    assert_eq!(reply, "250 2.0.0 Ok: queued as sandbox-1");
    assert_eq!(exchange(&mut io, b"QUIT\r\n").await, "221 2.0.0 Bye");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.from, "hr@corp.example");
    assert_eq!(m.to, ["a@corp.example", "b@corp.example"]);
    assert_eq!(m.message_id.as_deref(), Some("<n-1.abc@corp.example>"));
    assert_eq!(
        String::from_utf8_lossy(&m.data),
        "Subject: s\r\nMessage-Id:\r\n <n-1.abc@corp.example>\r\n\r\n.leading dot\r\n..\r\nend\r\n"
    );
}
