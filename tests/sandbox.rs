//! The sandbox's callback side against the real app (SQLite and PostgreSQL):
//! each kind of callback WeCom pushes, built, encrypted, signed and POSTed by
//! `CallbackSender`, is stored once; WeCom's retries (no answer within the
//! timeout, or a wrong answer) are made with the same message and still make
//! one row.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use rollcall::db::Engine;
use rollcall::ingress::Outcome;
use rollcall::platform::InboundKind;
use rollcall::platform::sandbox::{CallbackSender, SandboxApi};
use rollcall::platform::wecom::{parse_envelope, parse_message};
use rstest::rstest;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// The agent id of the test tenant (tests/common).
const AGENT_ID: i64 = 1000019;

/// A sender that waits as long as a loaded machine may need; the tests of
/// WeCom's retries set their own short timeouts.
fn sender(url: &str) -> CallbackSender {
    let t = vector_tenant();
    CallbackSender::new(url, &t.token, &t.key, &t.corp_id, AGENT_ID)
        .unwrap()
        .with_timeout(rollcall::demo::PHONE_PATIENCE)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn each_kind_is_stored_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let api = SandboxApi::start("unused", "unused").await.unwrap();
    let sender = sender(&url(&app, "/callback/wecom/acme"));
    let t = now();
    let photo = api.add_media(b"\xff\xd8photo\xff\xd9".to_vec(), "image/jpeg");
    let code = api.issue_response_code();
    let deliveries = [
        sender.text("zhangsan", "打卡", t).await,
        sender
            .location("zhangsan", 31.2304, 121.4737, "上海市黄浦区工地", t)
            .await,
        sender.image("zhangsan", &photo, t).await,
        sender
            .card_button("zhangsan", "case-1-step-1", "ack", &code, t)
            .await,
    ];
    for d in &deliveries {
        assert_eq!(
            (d.attempts, d.status, d.body.as_str(), d.delivered),
            (1, Some(200), "success", true),
            "{}",
            d.msg_key
        );
    }
    let rows = rows(&app.db).await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["text", "location", "image", "card_button"]);
    for (row, d) in rows.iter().zip(&deliveries) {
        assert_eq!(row.msg_key, d.msg_key);
        assert_eq!(row.plaintext, d.plaintext);
        assert_eq!(row.from_user, "zhangsan");
        assert_eq!(row.platform_time, t);
    }
    assert_eq!(rows[0].content.as_deref(), Some("打卡"));
    let fields: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.fields).unwrap())
        .collect();
    assert_eq!(fields[1]["latitude"], 31.2304);
    assert_eq!(fields[1]["longitude"], 121.4737);
    assert_eq!(fields[1]["label"], "上海市黄浦区工地");
    assert_eq!(fields[2]["media_id"], photo.as_str());
    assert_eq!(fields[3]["card_id"], "case-1-step-1");
    assert_eq!(fields[3]["card_ref"], code.as_str());
    assert_eq!(fields[3]["key"], "ack");
    assert_eq!(fields[0]["media_type"], "application/xml");
    assert_eq!(app.metrics.get(Outcome::Accepted), 4);
    wait_all_processed(&app.db).await;
    app.stop().await;
    db.cleanup().await;
}

/// Forwards TCP to `upstream`, holding back the first connection's answer
/// for `hold` (rollcall committed, but WeCom gave up waiting).
async fn slow_first_answer_proxy(
    upstream: SocketAddr,
    hold: Duration,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                if n == 0 {
                    tokio::time::sleep(hold).await;
                }
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                up.abort();
            });
        }
    });
    (addr, connections)
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_late_answer_is_retried_and_stored_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let (proxy, connections) = slow_first_answer_proxy(app.addr, Duration::from_secs(30)).await;
    // The first answer is held far past the sender's patience; the retry's
    // answer (a committed row, on a loaded machine) well within it.
    let sender =
        sender(&format!("http://{proxy}/callback/wecom/acme")).with_timeout(Duration::from_secs(5));
    let d = sender.text("lisi", "签到", now()).await;
    assert_eq!(
        (d.attempts, d.status, d.body.as_str(), d.delivered),
        (2, Some(200), "success", true)
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let rows = rows(&app.db).await;
    assert_eq!(rows.len(), 1, "the retry is recognised by its MsgId");
    assert_eq!(rows[0].msg_key, d.msg_key);
    assert_eq!(app.metrics.get(Outcome::Accepted), 1);
    assert_eq!(app.metrics.get(Outcome::Duplicate), 1);
    app.stop().await;
    db.cleanup().await;
}

/// What a fake callback endpoint does with the n-th request (0-based).
#[derive(Clone, Copy)]
enum Answer {
    Silence,
    Status(u16, &'static str),
}

#[derive(Clone)]
struct Recorder {
    requests: Arc<Mutex<Vec<(String, String)>>>,
    script: fn(usize) -> Answer,
}

async fn record(State(r): State<Recorder>, RawQuery(q): RawQuery, body: String) -> Response {
    let n = {
        let mut requests = r.requests.lock().unwrap();
        requests.push((q.unwrap_or_default(), body));
        requests.len() - 1
    };
    match (r.script)(n) {
        Answer::Silence => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "success".into_response()
        }
        Answer::Status(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
    }
}

async fn fake_endpoint(script: fn(usize) -> Answer) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let recorder = Recorder {
        requests: Arc::default(),
        script,
    };
    let requests = recorder.requests.clone();
    let router = axum::Router::new()
        .route("/cb", axum::routing::post(record))
        .with_state(recorder);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/cb"), requests)
}

/// Opens each recorded request as rollcall would and returns the MsgIds.
fn opened_msg_ids(requests: &[(String, String)]) -> Vec<String> {
    let crypto = vector_tenant().crypto();
    requests
        .iter()
        .map(|(query, body)| {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
            let plain = crypto
                .open(
                    &q["msg_signature"],
                    &q["timestamp"],
                    &q["nonce"],
                    &parse_envelope(body).unwrap(),
                )
                .unwrap();
            match parse_message(&plain).unwrap().kind {
                InboundKind::Text { msg_id, .. } => msg_id,
                other => panic!("not a text: {other:?}"),
            }
        })
        .collect()
}

#[tokio::test]
async fn silence_gets_three_retries_of_the_same_message() {
    let (url, requests) = fake_endpoint(|_| Answer::Silence).await;
    let sender = sender(&url).with_timeout(Duration::from_millis(200));
    let d = sender.text("wangwu", "打卡", now()).await;
    assert_eq!((d.attempts, d.status, d.delivered), (4, None, false));
    let ids = opened_msg_ids(&requests.lock().unwrap());
    assert_eq!(ids.len(), 4, "one try and three retries");
    assert!(
        ids.iter().all(|id| Some(id) == d.msg_id.as_ref()),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_wrong_answer_is_retried_until_success() {
    let (url, requests) = fake_endpoint(|n| match n {
        0 => Answer::Status(503, ""),
        1 => Answer::Status(200, "error"),
        _ => Answer::Status(200, "success"),
    })
    .await;
    let sender = sender(&url).with_timeout(Duration::from_secs(10));
    let d = sender.text("wangwu", "打卡", now()).await;
    assert_eq!(
        (d.attempts, d.status, d.body.as_str(), d.delivered),
        (3, Some(200), "success", true)
    );
    assert_eq!(opened_msg_ids(&requests.lock().unwrap()).len(), 3);

    let (url, requests) = fake_endpoint(|_| Answer::Status(500, "boom")).await;
    let d = sender_with_retries(&url, 1)
        .text("wangwu", "x", now())
        .await;
    assert_eq!((d.attempts, d.status, d.delivered), (2, Some(500), false));
    assert_eq!(requests.lock().unwrap().len(), 2);
}

fn sender_with_retries(url: &str, retries: u32) -> CallbackSender {
    sender(url)
        .with_timeout(Duration::from_secs(10))
        .with_retries(retries)
}

#[tokio::test]
async fn message_ids_differ_between_messages() {
    let (url, requests) = fake_endpoint(|_| Answer::Status(200, "")).await;
    let sender = sender(&url);
    let a = sender.text("u", "1", now()).await;
    let b = sender.text("u", "2", now()).await;
    assert!(
        a.delivered && b.delivered,
        "an empty 200 is an acknowledgement"
    );
    assert_ne!(a.msg_id, b.msg_id);
    assert_eq!(opened_msg_ids(&requests.lock().unwrap()).len(), 2);
}
