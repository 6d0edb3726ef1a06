//! SMS and email senders against real servers on 127.0.0.1: an axum endpoint
//! that plays Aliyun (checking the signature with its own code, written from
//! Aliyun's spec), a webhook receiver that verifies the HMAC, and a small
//! SMTP sink (plain and STARTTLS).
//!
//! Then SMS delivery reports through the real app on SQLite and PostgreSQL:
//! the fake Aliyun answers `QuerySendDetails` from what it accepted, the
//! sandbox gateway posts signed reports, and both can take a text and never
//! answer.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rollcall::config::ConfigError;
use rollcall::config::{RawEmailConfig, RawSmsConfig, resolve_email, resolve_sms};
use rollcall::outbox::email::{EmailMessage, EmailReceipt, Mailer};
use rollcall::outbox::sms::{SmsMessage, SmsProvider, SmsReceipt, sms_provider};
use rollcall::platform::PlatformError;
use rstest::rstest;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const PHONE: &str = "13812345678";
const ALIYUN_SECRET: &str = "testSecret";
const WEBHOOK_SECRET: &str = "whsec-7f3a";

/// What a result was, for table-driven checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    RateLimited(u64),
    Undeliverable(String),
    Retryable,
    Permanent,
    /// Sent, no answer: never resent blindly.
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

/// A socket bound to a loopback port that never listens: a connection to
/// it is refused (nothing answers), and no other socket can take the port
/// while it is held, as one released after binding could be.
fn refusing_port() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket
}

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/")
}

fn sms_message() -> SmsMessage {
    let mut params = serde_json::Map::new();
    params.insert("name".into(), "张三".into());
    params.insert("date".into(), "2026-12-01".into());
    SmsMessage {
        phone: PHONE.into(),
        text: "张三，您好：请于 2026-12-01 09:00 返岗。".into(),
        template_param: params,
        out_id: "case-42-step-1".into(),
    }
}

fn sms_config(toml_text: &str) -> Result<Arc<dyn SmsProvider>, ConfigError> {
    let raw: RawSmsConfig = toml::from_str(toml_text).unwrap();
    let config = resolve_sms("tenants[0].sms", raw, &[])?;
    Ok(sms_provider(&config, Duration::from_secs(2)))
}

// ---------------------------------------------------------------------------
// A fake Aliyun dysmsapi
// ---------------------------------------------------------------------------

/// Aliyun's percentEncode, written from the spec the way Aliyun's own Java
/// sample does it: form-encode, then fix `+`, `*` and `%7E`.
fn spec_percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        .replace('*', "%2A")
        .replace("%7E", "~")
}

fn spec_signature(params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut sorted: Vec<(&String, &String)> =
        params.iter().filter(|(k, _)| *k != "Signature").collect();
    sorted.sort();
    let query = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", spec_percent_encode(k), spec_percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!(
        "POST&{}&{}",
        spec_percent_encode("/"),
        spec_percent_encode(&query)
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Default)]
struct FakeAliyun {
    /// `(HTTP status, body)` to answer instead of OK, once the request is valid.
    answer: Mutex<Option<(u16, String)>>,
    nonces: Mutex<HashSet<String>>,
    received: Mutex<Vec<BTreeMap<String, String>>>,
    /// What QuerySendDetails says of every text it accepted: `(SendStatus,
    /// ReceiveDate, ErrCode)`, 2 failed or 3 delivered; `None`: 1, waiting.
    report: Mutex<Option<(u8, String, String)>>,
    /// Each QuerySendDetails request, as received.
    queries: Mutex<Vec<BTreeMap<String, String>>>,
    /// The next SendSms gets no answer at all: `Some(true)` after taking
    /// the text (it is sent), `Some(false)` without (it was lost).
    hang: Mutex<Option<bool>>,
}

/// QuerySendDetails, from what the fake accepted: the texts to the number
/// (narrowed by BizId when given), each with its OutId and the switched
/// report. Checked like SendSms: parameters, timestamp, signature, nonce.
fn query_send_details(fake: &FakeAliyun, params: BTreeMap<String, String>) -> Response {
    for required in [
        "Version",
        "Format",
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Signature",
        "PhoneNumber",
        "SendDate",
        "PageSize",
        "CurrentPage",
    ] {
        if params.get(required).is_none_or(|v| v.is_empty()) {
            return aliyun_error(
                StatusCode::BAD_REQUEST,
                "MissingParameter",
                &format!("{required} is mandatory for this action."),
            );
        }
    }
    let date = &params["SendDate"];
    if date.len() != 8 || chrono::NaiveDate::parse_from_str(date, "%Y%m%d").is_err() {
        return aliyun_error(StatusCode::OK, "isv.INVALID_PARAMETERS", "SendDate");
    }
    if !params["PageSize"]
        .parse::<u32>()
        .is_ok_and(|n| (1..=50).contains(&n))
    {
        return aliyun_error(StatusCode::OK, "isv.INVALID_PARAMETERS", "PageSize");
    }
    if spec_signature(&params, ALIYUN_SECRET) != params["Signature"] {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        );
    }
    if !fake
        .nonces
        .lock()
        .unwrap()
        .insert(params["SignatureNonce"].clone())
    {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    fake.queries.lock().unwrap().push(params.clone());
    let report = fake.report.lock().unwrap().clone();
    let details: Vec<serde_json::Value> = fake
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p["PhoneNumbers"] == params["PhoneNumber"])
        .filter(|_| params.get("BizId").is_none_or(|b| b == BIZ_ID))
        .map(|p| {
            let (status, received, code) =
                report.clone().unwrap_or((1, String::new(), String::new()));
            serde_json::json!({
                "SendDate": "2026-12-04 10:00:01",
                "SendStatus": status,
                "ReceiveDate": received,
                "ErrCode": code,
                "TemplateCode": p["TemplateCode"],
                "Content": "【人事部】返岗通知",
                "PhoneNum": p["PhoneNumbers"],
                "OutId": p.get("OutId").cloned().unwrap_or_default(),
            })
        })
        .collect();
    (
        [("content-type", "application/json")],
        serde_json::json!({
            "TotalCount": details.len(),
            "Message": "OK",
            "RequestId": "819BE656-D2E0-4858-8B21-B2E477085",
            "Code": "OK",
            "SmsSendDetailDTOs": { "SmsSendDetailDTO": details },
        })
        .to_string(),
    )
        .into_response()
}

/// The BizId the fake answers every SendSms with.
const BIZ_ID: &str = "197703245997295588^0";

fn aliyun_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"RequestId": "F655A8D5-B967-440B", "Code": code, "Message": message, "Recommend": "https://api.aliyun.com/troubleshoot"})
            .to_string(),
    )
        .into_response()
}

async fn aliyun_endpoint(State(fake): State<Arc<FakeAliyun>>, body: Bytes) -> Response {
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if params.get("Action").map(String::as_str) == Some("QuerySendDetails") {
        return query_send_details(&fake, params);
    }
    for required in [
        "Action",
        "Version",
        "Format",
        "RegionId",
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Signature",
        "PhoneNumbers",
        "SignName",
        "TemplateCode",
    ] {
        if params.get(required).is_none_or(|v| v.is_empty()) {
            return aliyun_error(
                StatusCode::BAD_REQUEST,
                "MissingParameter",
                &format!("{required} is mandatory for this action."),
            );
        }
    }
    let fixed = [
        ("Action", "SendSms"),
        ("Version", "2017-05-25"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("AccessKeyId", "testId"),
    ];
    for (k, v) in fixed {
        if params[k] != v {
            return aliyun_error(StatusCode::BAD_REQUEST, "InvalidParameter", k);
        }
    }
    let Ok(ts) = chrono::NaiveDateTime::parse_from_str(&params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    else {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Timestamp",
        );
    };
    if (chrono::Utc::now().naive_utc() - ts).num_seconds().abs() > 900 {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Timestamp",
        );
    }
    if spec_signature(&params, ALIYUN_SECRET) != params["Signature"] {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        );
    }
    if !fake
        .nonces
        .lock()
        .unwrap()
        .insert(params["SignatureNonce"].clone())
    {
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        );
    }
    if params.get("TemplateParam").is_some_and(|p| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p).is_err()
    }) {
        return aliyun_error(StatusCode::OK, "isv.INVALID_JSON_PARAM", "JSON参数不合法");
    }
    let hang = fake.hang.lock().unwrap().take();
    if hang == Some(true) {
        fake.received.lock().unwrap().push(params.clone());
    }
    if hang.is_some() {
        return std::future::pending::<Response>().await;
    }
    fake.received.lock().unwrap().push(params);
    if let Some((status, body)) = fake.answer.lock().unwrap().clone() {
        return (StatusCode::from_u16(status).unwrap(), body).into_response();
    }
    (
        [("content-type", "application/json")],
        r#"{"Message":"OK","RequestId":"2184201F-BFB3-446B-B1F2-C746B7BF0657","Code":"OK","BizId":"197703245997295588^0"}"#,
    )
        .into_response()
}

async fn fake_aliyun() -> (Arc<FakeAliyun>, String) {
    let fake = Arc::new(FakeAliyun::default());
    let url = serve(
        Router::new()
            .route("/", post(aliyun_endpoint))
            .with_state(fake.clone()),
    )
    .await;
    (fake, url)
}

fn aliyun_toml(endpoint: &str, secret: &str) -> String {
    format!(
        "provider = \"aliyun\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testId\"\naccess_key_secret = \"{secret}\"\nsign_name = \"人事部\"\ntemplate_code = \"SMS_71390007\"\n"
    )
}

#[tokio::test]
async fn aliyun_send_returns_the_biz_id_and_keeps_the_evidence() {
    let (fake, url) = fake_aliyun().await;
    let sms = sms_config(&aliyun_toml(&url, ALIYUN_SECRET)).unwrap();
    assert_eq!(sms.name(), "aliyun");
    let SmsReceipt {
        provider_id,
        request,
        response,
    } = sms.send(&sms_message()).await.unwrap();
    assert_eq!(provider_id, "197703245997295588^0");
    assert!(
        response.contains("\"BizId\":\"197703245997295588^0\""),
        "{response}"
    );
    assert!(!request.contains(ALIYUN_SECRET), "{request}");
    assert!(!request.contains("Signature="), "{request}");

    let received = fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let p = &received[0];
    assert_eq!(p["PhoneNumbers"], PHONE);
    assert_eq!(p["SignName"], "人事部");
    assert_eq!(p["TemplateCode"], "SMS_71390007");
    assert_eq!(p["OutId"], "case-42-step-1");
    assert_eq!(p["RegionId"], "cn-hangzhou");
    let param: serde_json::Value = serde_json::from_str(&p["TemplateParam"]).unwrap();
    assert_eq!(param["name"], "张三");
    // The evidence copy is the request as sent, minus the signature.
    let evidence: BTreeMap<String, String> = form_urlencoded::parse(request.as_bytes())
        .into_owned()
        .collect();
    let mut sent = p.clone();
    sent.remove("Signature");
    assert_eq!(evidence, sent);

    // A second send uses a fresh nonce (the fake refuses a reused one).
    sms.send(&sms_message()).await.unwrap();
    assert_eq!(fake.nonces.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn aliyun_refuses_a_wrong_secret_and_that_is_permanent() {
    let (fake, url) = fake_aliyun().await;
    let sms = sms_config(&aliyun_toml(&url, "notTheSecret")).unwrap();
    let err = sms.send(&sms_message()).await.unwrap_err();
    assert!(
        matches!(&err, PlatformError::Permanent(m) if m.contains("SignatureDoesNotMatch")),
        "{err:?}"
    );
    assert!(fake.received.lock().unwrap().is_empty());
}

#[rstest]
#[case::minute_flow_control(
    200,
    "isv.BUSINESS_LIMIT_CONTROL",
    "触发分钟级流控Permits:1",
    Outcome::RateLimited(60)
)]
#[case::hour_flow_control(
    200,
    "isv.BUSINESS_LIMIT_CONTROL",
    "触发小时级流控Permits:5",
    Outcome::RateLimited(3600)
)]
#[case::day_flow_control(
    200,
    "isv.BUSINESS_LIMIT_CONTROL",
    "触发天级流控Permits:10",
    Outcome::RateLimited(86400)
)]
#[case::api_throttling(
    400,
    "Throttling.User",
    "Request was denied due to user flow control.",
    Outcome::RateLimited(1)
)]
#[case::bad_number(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", Outcome::Undeliverable("138****5678".into()))]
#[case::too_many_numbers(200, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制", Outcome::Undeliverable("138****5678".into()))]
#[case::system_error(200, "isp.SYSTEM_ERROR", "isp.SYSTEM_ERROR", Outcome::Retryable)]
#[case::unavailable(
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
    Outcome::Retryable
)]
#[case::unknown_code_on_5xx(500, "InternalError", "boom", Outcome::Retryable)]
#[case::bad_key(
    404,
    "InvalidAccessKeyId.NotFound",
    "Specified access key is not found.",
    Outcome::Permanent
)]
#[case::bad_template(200, "isv.SMS_TEMPLATE_ILLEGAL", "模板不合法", Outcome::Permanent)]
#[case::no_balance(200, "isv.AMOUNT_NOT_ENOUGH", "账户余额不足", Outcome::Permanent)]
#[tokio::test]
async fn aliyun_answers_are_classified(
    #[case] status: u16,
    #[case] code: &str,
    #[case] message: &str,
    #[case] expected: Outcome,
) {
    let (fake, url) = fake_aliyun().await;
    *fake.answer.lock().unwrap() = Some((
        status,
        serde_json::json!({"Code": code, "Message": message, "RequestId": "R"}).to_string(),
    ));
    let sms = sms_config(&aliyun_toml(&url, ALIYUN_SECRET)).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), expected, "{result:?}");
    let text = format!("{result:?}");
    assert!(text.contains(code), "the code is kept: {text}");
    assert!(!text.contains(PHONE), "no full phone number: {text}");
}

#[rstest]
#[case::gateway_html(502, "<html>Bad Gateway</html>", Outcome::Retryable)]
#[case::not_json(200, "<html>portal</html>", Outcome::Permanent)]
#[case::ok_without_biz_id(200, r#"{"Code":"OK","Message":"OK"}"#, Outcome::Permanent)]
#[tokio::test]
async fn aliyun_odd_answers_are_classified(
    #[case] status: u16,
    #[case] body: &str,
    #[case] expected: Outcome,
) {
    let (fake, url) = fake_aliyun().await;
    *fake.answer.lock().unwrap() = Some((status, body.to_owned()));
    let sms = sms_config(&aliyun_toml(&url, ALIYUN_SECRET)).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), expected, "{result:?}");
}

#[tokio::test]
async fn unreachable_and_silent_endpoints_are_retryable() {
    // A port held but not listening: connections to it are refused, and
    // nothing else can take it while the test runs.
    let held = refusing_port();
    let closed = format!("http://{}/", held.local_addr().unwrap());
    let sms = sms_config(&aliyun_toml(&closed, ALIYUN_SECRET)).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), Outcome::Retryable, "{result:?}");
    // A token in the URL stays out of the error.
    let sms = sms_config(&webhook_toml(&format!("{closed}send?token=tok-9931"), "k")).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), Outcome::Retryable, "{result:?}");
    assert!(!format!("{result:?}").contains("tok-9931"), "{result:?}");

    // A server that accepts and never answers: the 2 s timeout fires.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let sms = sms_config(&aliyun_toml(&url, ALIYUN_SECRET)).unwrap();
    // A bound for a hang, not a measure of speed: the timeout must fire at all.
    let result = tokio::time::timeout(Duration::from_secs(120), sms.send(&sms_message()))
        .await
        .expect("the request timeout fires");
    assert_eq!(outcome(&result), Outcome::Unknown, "{result:?}");
}

// ---------------------------------------------------------------------------
// The signed webhook
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Receiver {
    /// `(status, body, Retry-After)` to answer instead of an id.
    answer: Mutex<Option<(u16, String, Option<String>)>>,
    /// Verified requests: headers and raw body.
    received: Mutex<Vec<(HeaderMap, Bytes)>>,
}

/// What a receiver implementer writes from the doc comment on `WebhookSms`.
fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let ts = headers
        .get("X-Rollcall-Timestamp")
        .and_then(|v| v.to_str().ok())
        .ok_or("no timestamp")?;
    let secs: i64 = ts.parse().map_err(|_| "timestamp not a number")?;
    if (chrono::Utc::now().timestamp() - secs).abs() > 300 {
        return Err("stale timestamp");
    }
    let given = headers
        .get("X-Rollcall-Signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v).ok())
        .ok_or("no signature")?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| "bad signature")
}

async fn receiver_endpoint(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = verify(&headers, &body) {
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    let header_ts = headers["X-Rollcall-Timestamp"].to_str().ok();
    if json["timestamp"].as_i64().map(|t| t.to_string()).as_deref() != header_ts {
        return (StatusCode::BAD_REQUEST, "timestamp differs").into_response();
    }
    r.received.lock().unwrap().push((headers, body.clone()));
    if let Some((status, body, retry_after)) = r.answer.lock().unwrap().clone() {
        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
        if let Some(v) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", v.parse().unwrap());
        }
        return response;
    }
    let id = format!("wh-{}", json["out_id"].as_str().unwrap_or_default());
    axum::Json(serde_json::json!({ "id": id })).into_response()
}

async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let url = serve(
        Router::new()
            .route("/sms", post(receiver_endpoint))
            .with_state(r.clone()),
    )
    .await;
    (r, format!("{url}sms"))
}

fn webhook_toml(url: &str, secret: &str) -> String {
    format!("provider = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n")
}

#[tokio::test]
async fn webhook_send_is_verifiable_and_returns_the_id() {
    let (r, url) = receiver().await;
    let sms = sms_config(&webhook_toml(&url, WEBHOOK_SECRET)).unwrap();
    assert_eq!(sms.name(), "webhook");
    let receipt = sms.send(&sms_message()).await.unwrap();
    assert_eq!(receipt.provider_id, "wh-case-42-step-1");
    assert_eq!(receipt.response, r#"{"id":"wh-case-42-step-1"}"#);
    assert!(!receipt.request.contains(WEBHOOK_SECRET));

    let (headers, body) = r.received.lock().unwrap()[0].clone();
    assert_eq!(
        receipt.request.as_bytes(),
        &body[..],
        "the evidence is the body as sent"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["to"], PHONE);
    assert_eq!(json["text"], "张三，您好：请于 2026-12-01 09:00 返岗。");
    assert_eq!(json["params"]["name"], "张三");
    assert_eq!(json["out_id"], "case-42-step-1");
    assert!(json["timestamp"].is_i64());

    // Replaying the captured request verifies; a tampered body does not.
    let client = reqwest::Client::new();
    let replay = |body: Vec<u8>| {
        let mut req = client.post(&url).body(body);
        for name in ["X-Rollcall-Timestamp", "X-Rollcall-Signature"] {
            req = req.header(name, headers[name].clone());
        }
        req.send()
    };
    assert_eq!(replay(body.to_vec()).await.unwrap().status(), 200);
    let tampered = String::from_utf8(body.to_vec())
        .unwrap()
        .replace(PHONE, "13900000000");
    let answer = replay(tampered.into_bytes()).await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.text().await.unwrap(), "bad signature");
}

#[tokio::test]
async fn webhook_with_the_wrong_secret_is_refused_for_good() {
    let (r, url) = receiver().await;
    let sms = sms_config(&webhook_toml(&url, "not-the-secret")).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), Outcome::Permanent, "{result:?}");
    assert!(r.received.lock().unwrap().is_empty());
}

#[rstest]
#[case::retry_after(429, "slow down", Some("17"), Outcome::RateLimited(17))]
#[case::default_wait(429, "slow down", None, Outcome::RateLimited(60))]
#[case::http_date_wait(
    429,
    "",
    Some("Wed, 21 Oct 2026 07:28:00 GMT"),
    Outcome::RateLimited(60)
)]
#[case::server_error(500, "oops", None, Outcome::Retryable)]
#[case::unavailable(503, "", None, Outcome::Retryable)]
#[case::bad_request(400, "bad phone", None, Outcome::Permanent)]
#[case::forbidden(403, "", None, Outcome::Permanent)]
#[case::redirect(302, "", None, Outcome::Permanent)]
#[case::ok_without_id(200, r#"{"status":"queued"}"#, None, Outcome::Permanent)]
#[case::ok_not_json(200, "queued", None, Outcome::Permanent)]
#[case::accepted_with_id(202, r#"{"id":"m-1"}"#, None, Outcome::Sent)]
#[tokio::test]
async fn webhook_answers_are_classified(
    #[case] status: u16,
    #[case] body: &str,
    #[case] retry_after: Option<&str>,
    #[case] expected: Outcome,
) {
    let (r, url) = receiver().await;
    *r.answer.lock().unwrap() = Some((status, body.to_owned(), retry_after.map(str::to_owned)));
    let sms = sms_config(&webhook_toml(&url, WEBHOOK_SECRET)).unwrap();
    let result = sms.send(&sms_message()).await;
    assert_eq!(outcome(&result), expected, "{result:?}");
    if let (Err(PlatformError::Permanent(m)), 200) = (&result, status) {
        assert!(m.contains("`id`"), "says what is missing: {m}");
    }
}

// ---------------------------------------------------------------------------
// A small SMTP sink
// ---------------------------------------------------------------------------

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Default, Clone)]
struct SinkScript {
    greeting: Option<&'static str>,
    mail: Option<&'static str>,
    rcpt: Option<&'static str>,
    data_end: Option<&'static str>,
    /// Offer STARTTLS with this acceptor (and AUTH only after it).
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// With `tls`: TLS from the first byte (SMTPS) instead of STARTTLS.
    implicit_tls: bool,
}

#[derive(Default, Debug, Clone)]
struct Delivery {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    auth: Option<String>,
    encrypted: bool,
}

struct Sink {
    port: u16,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

const QUEUED: &str = "250 2.0.0 Ok: queued as 4F2A1C";

async fn smtp_sink(script: SinkScript) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let d = deliveries.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (script, d) = (script.clone(), d.clone());
            tokio::spawn(async move {
                if script.implicit_tls
                    && let Some(acceptor) = script.tls.clone()
                {
                    if let Ok(tls) = acceptor.accept(socket).await {
                        let _ = smtp_session(Box::new(tls), script, d).await;
                    }
                } else {
                    let _ = smtp_session(Box::new(socket), script, d).await;
                }
            });
        }
    });
    Sink { port, deliveries }
}

async fn smtp_session(
    socket: Box<dyn Stream>,
    script: SinkScript,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
) -> std::io::Result<()> {
    let mut io = BufReader::new(socket);
    async fn say(io: &mut BufReader<Box<dyn Stream>>, line: &str) -> std::io::Result<()> {
        io.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        io.get_mut().flush().await
    }
    let greeting = script.greeting.unwrap_or("220 sink.test ESMTP");
    say(&mut io, greeting).await?;
    if !greeting.starts_with("220") {
        return Ok(());
    }
    let mut current = Delivery {
        encrypted: script.implicit_tls,
        ..Delivery::default()
    };
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["250-sink.test", "250-8BITMIME", "250-SMTPUTF8"];
                if script.tls.is_some() && !current.encrypted {
                    lines.push("250-STARTTLS");
                }
                if script.tls.is_some() && current.encrypted {
                    lines.push("250-AUTH PLAIN LOGIN");
                }
                lines.push("250 SIZE 10240000");
                say(&mut io, &lines.join("\r\n")).await?;
            }
            "STARTTLS" => {
                let Some(acceptor) = script.tls.clone() else {
                    say(&mut io, "502 5.5.1 not here").await?;
                    continue;
                };
                say(&mut io, "220 2.0.0 Ready to start TLS").await?;
                let plain = io.into_inner();
                let tls = acceptor.accept(plain).await?;
                io = BufReader::new(Box::new(tls));
                current = Delivery {
                    encrypted: true,
                    ..Delivery::default()
                };
            }
            "AUTH" => {
                let b64 = command.split(' ').nth(2).unwrap_or_default();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                current.auth = Some(String::from_utf8_lossy(&decoded).replace('\0', "|"));
                say(&mut io, "235 2.7.0 Authentication successful").await?;
            }
            "MAIL" => {
                current.mail_from = command.clone();
                say(&mut io, script.mail.unwrap_or("250 2.1.0 Ok")).await?;
            }
            "RCPT" => {
                current.rcpt_to.push(command.clone());
                say(&mut io, script.rcpt.unwrap_or("250 2.1.5 Ok")).await?;
            }
            "DATA" => {
                say(&mut io, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if io.read_until(b'\n', &mut raw).await? == 0 {
                        return Ok(());
                    }
                    if raw == b".\r\n" {
                        break;
                    }
                    // Undo dot-stuffing.
                    let unstuffed = if raw.starts_with(b"..") {
                        &raw[1..]
                    } else {
                        &raw[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                current.data = data;
                let reply = script.data_end.unwrap_or(QUEUED);
                if reply.starts_with('2') {
                    deliveries.lock().unwrap().push(current.clone());
                }
                say(&mut io, reply).await?;
            }
            "RSET" | "NOOP" => say(&mut io, "250 2.0.0 Ok").await?,
            "QUIT" => {
                say(&mut io, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => say(&mut io, "500 5.5.2 what?").await?,
        }
    }
}

fn mailer(extra: &str) -> Result<Mailer, ConfigError> {
    let raw: RawEmailConfig = toml::from_str(&format!(
        "from = \"人事部 <hr@corp.example>\"\ntimeout_secs = 3\n{extra}"
    ))
    .unwrap();
    Ok(Mailer::new(resolve_email("tenants[0].email", raw, &[])?))
}

fn plain_mailer(port: u16) -> Mailer {
    mailer(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n"
    ))
    .unwrap()
}

fn notice() -> EmailMessage {
    EmailMessage {
        to: "zhang.san@corp.example".into(),
        subject: "返岗通知：请于 12 月 1 日到岗".into(),
        text: "张三，您好：\n\n您自 11 月 20 日起未到岗。请于 2026-12-01 09:00 返岗，或回复说明情况。\n\n.此行以点开头\n人事部"
            .into(),
        out_id: "case-42/step-1".into(),
    }
}

#[tokio::test]
async fn email_is_delivered_with_our_message_id_and_chinese_text() {
    let sink = smtp_sink(SinkScript::default()).await;
    let EmailReceipt {
        message_id,
        server_reply,
        message,
    } = plain_mailer(sink.port).send(&notice()).await.unwrap();
    assert_eq!(server_reply, QUEUED);
    assert!(message_id.starts_with("<case-42-step-1."), "{message_id}");
    assert!(message_id.ends_with("@corp.example>"), "{message_id}");

    let deliveries = sink.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(d.mail_from, "MAIL FROM:<hr@corp.example>");
    assert_eq!(d.rcpt_to, ["RCPT TO:<zhang.san@corp.example>"]);
    // What the server got is byte for byte what the receipt says was sent.
    let sent = String::from_utf8(message.clone()).unwrap();
    let got = String::from_utf8(d.data.clone()).unwrap();
    assert_eq!(got.trim_end_matches("\r\n"), sent.trim_end_matches("\r\n"));

    let parsed = mailparse::parse_mail(&d.data).unwrap();
    let header = |name: &str| {
        mailparse::MailHeaderMap::get_first_value(parsed.headers.as_slice(), name)
            .unwrap_or_else(|| panic!("no {name} header"))
    };
    assert_eq!(header("Message-ID"), message_id);
    assert_eq!(header("Subject"), "返岗通知：请于 12 月 1 日到岗");
    let from = header("From");
    assert!(
        from.contains("人事部") && from.contains("<hr@corp.example>"),
        "{from}"
    );
    assert_eq!(
        parsed.get_body().unwrap().replace("\r\n", "\n"),
        notice().text
    );
}

fn script(step: &str, reply: &'static str) -> SinkScript {
    let mut s = SinkScript::default();
    match step {
        "greeting" => s.greeting = Some(reply),
        "mail" => s.mail = Some(reply),
        "rcpt" => s.rcpt = Some(reply),
        "data" => s.data_end = Some(reply),
        _ => {}
    }
    s
}

const BOB: &str = "zhang.san@corp.example";

#[rstest]
#[case::no_such_mailbox("none", "rcpt", "550 5.1.1 <zhang.san@corp.example>: User unknown", Outcome::Undeliverable(BOB.into()))]
#[case::user_not_local("none", "rcpt", "551 5.1.6 User not local", Outcome::Undeliverable(BOB.into()))]
#[case::mailbox_name_invalid("none", "rcpt", "553 5.1.3 Bad recipient address syntax", Outcome::Undeliverable(BOB.into()))]
#[case::rcpt_greylisted(
    "none",
    "rcpt",
    "451 4.7.1 Greylisted, try again later",
    Outcome::Retryable
)]
#[case::rcpt_policy("none", "rcpt", "554 5.7.1 Relay access denied", Outcome::Permanent)]
#[case::sender_refused("none", "mail", "550 5.7.1 Sender not allowed", Outcome::Permanent)]
#[case::data_transient("none", "data", "451 4.3.0 Queue full, try later", Outcome::Retryable)]
#[case::data_refused("none", "data", "554 5.6.0 Message rejected", Outcome::Permanent)]
#[case::busy_greeting("none", "greeting", "421 4.3.2 Too busy", Outcome::Retryable)]
#[case::starttls_not_offered("starttls", "", "", Outcome::Permanent)]
#[tokio::test]
async fn smtp_answers_are_classified(
    #[case] security: &str,
    #[case] step: &str,
    #[case] reply: &'static str,
    #[case] expected: Outcome,
) {
    let sink = smtp_sink(script(step, reply)).await;
    let mailer = mailer(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"{security}\"\n",
        sink.port
    ))
    .unwrap();
    let result = mailer.send(&notice()).await;
    assert_eq!(outcome(&result), expected, "{result:?}");
    assert!(sink.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn smtp_unreachable_or_silent_is_retryable() {
    let held = refusing_port();
    let port = held.local_addr().unwrap().port();
    let result = plain_mailer(port).send(&notice()).await;
    assert_eq!(outcome(&result), Outcome::Retryable, "{result:?}");

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // A bound for a hang, not a measure of speed: the timeout must fire at all.
    let result = tokio::time::timeout(Duration::from_secs(120), plain_mailer(port).send(&notice()))
        .await
        .expect("the SMTP timeout fires");
    assert_eq!(outcome(&result), Outcome::Retryable, "{result:?}");
}

#[tokio::test]
async fn a_bad_recipient_address_is_undeliverable_without_connecting() {
    let sink = smtp_sink(SinkScript::default()).await;
    let mut msg = notice();
    msg.to = "张三 at corp".into();
    let result = plain_mailer(sink.port).send(&msg).await;
    assert_eq!(
        outcome(&result),
        Outcome::Undeliverable("张三 at corp".into())
    );
}

// ---------------------------------------------------------------------------
// STARTTLS with a private CA
// ---------------------------------------------------------------------------

struct TestPki {
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

fn test_pki() -> TestPki {
    rollcall::tls::install_crypto_provider();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rollcall test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
    TestPki {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
    }
}

#[tokio::test]
async fn starttls_with_a_trusted_private_ca_delivers_and_authenticates() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let sink = smtp_sink(SinkScript {
        tls: Some(pki.acceptor.clone()),
        ..SinkScript::default()
    })
    .await;
    let mailer = mailer(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nusername = \"hr\"\npassword = \"s3cret\"\nca_file = \"{}\"\n",
        sink.port,
        ca_file.display()
    ))
    .unwrap();
    let receipt = mailer.send(&notice()).await.unwrap();
    assert_eq!(receipt.server_reply, QUEUED);
    let deliveries = sink.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].encrypted, "the message went over TLS");
    assert_eq!(deliveries[0].auth.as_deref(), Some("|hr|s3cret"));
}

#[tokio::test]
async fn starttls_refuses_a_certificate_it_does_not_trust() {
    let pki = test_pki();
    let sink = smtp_sink(SinkScript {
        tls: Some(pki.acceptor.clone()),
        ..SinkScript::default()
    })
    .await;
    // No ca_file: the private CA is unknown, so the handshake must fail.
    let mailer = mailer(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nusername = \"hr\"\npassword = \"s3cret\"\n",
        sink.port
    ))
    .unwrap();
    let result = mailer.send(&notice()).await;
    assert_eq!(outcome(&result), Outcome::Permanent, "{result:?}");
    assert!(format!("{result:?}").contains("certificate"), "{result:?}");
    assert!(sink.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let sink = smtp_sink(SinkScript {
        tls: Some(pki.acceptor.clone()),
        implicit_tls: true,
        ..SinkScript::default()
    })
    .await;
    let mailer = mailer(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\nca_file = \"{}\"\n",
        sink.port,
        ca_file.display()
    ))
    .unwrap();
    let receipt = mailer.send(&notice()).await.unwrap();
    assert_eq!(receipt.server_reply, QUEUED);
    let deliveries = sink.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].encrypted);
    assert_eq!(deliveries[0].auth, None);
}

// ---------------------------------------------------------------------------
// Delivery reports through the real app, on SQLite and PostgreSQL
// ---------------------------------------------------------------------------

mod common;

use entity::{absence_case, outbox};
use rollcall::cases::notify::TellHr;
use rollcall::db::Engine;
use rollcall::demo::{Sandboxed, Stage, TENANT, shanghai};
use rollcall::outbox::reports::poll_due;
use rollcall::platform::sandbox::SmsFault;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

const EVERYONE: [&str; 5] = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];
/// 张三's phone in the demo roster.
const ZHANGSAN_PHONE: &str = "13800000003";

/// The app on the sandbox tenant from 2026-12-01 07:00, the daily scan left
/// to the test, with `extra` configuration.
async fn app(db: &common::TestDb, extra: &str) -> Sandboxed {
    Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        &format!("[tenants.attendance]\nscan_at = \"23:59\"\n{extra}"),
    )
    .await
    .unwrap()
}

/// 张三 misses 1–3 December: the formal notice goes out on Friday the
/// 4th at 10:00 (chat, SMS, email), where the clock is left.
async fn to_the_formal_notice(s: &Sandboxed) {
    let others: Vec<&str> = EVERYONE
        .iter()
        .copied()
        .filter(|u| *u != "zhangsan")
        .collect();
    s.at("2026-12-01", "08:00");
    s.check_in(&others).await.unwrap();
    for day in ["2026-12-02", "2026-12-03"] {
        s.at(day, "10:00");
        s.scan().await.unwrap();
        s.at(day, "11:00");
        s.check_in(&others).await.unwrap();
    }
    // The clock stays at the notice's time: the app's own tick (every 30 s
    // of real time) may ask for reports too, and must see no later clock
    // than the test means.
    s.at("2026-12-04", "10:00");
    s.scan().await.unwrap();
}

async fn case_of_zhangsan(s: &Sandboxed) -> absence_case::Model {
    absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.rt.db.orm)
        .await
        .unwrap()
        .unwrap()
}

async fn all_rows(s: &Sandboxed) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .order_by_asc(outbox::Column::Id)
        .all(&s.rt.db.orm)
        .await
        .unwrap()
}

/// What HR's `/status 张三` answers now.
async fn status_of_zhangsan(s: &Sandboxed) -> String {
    s.say("wangmin", "/status 张三").await.unwrap();
    Stage::received(s, "wangmin").pop().unwrap()
}

/// The SMS copy of the formal notice to 张三.
async fn sms_copy(s: &Sandboxed) -> outbox::Model {
    all_rows(s)
        .await
        .into_iter()
        .find(|r| {
            r.recipient == "zhangsan"
                && r.channel == "sms"
                && r.step.as_deref() == Some("formal_notice")
        })
        .expect("the formal notice's SMS")
}

async fn aliyun_app(db: &common::TestDb, fake_url: &str) -> Sandboxed {
    app(
        db,
        &format!("[tenants.sms]\n{}", aliyun_toml(fake_url, ALIYUN_SECRET)),
    )
    .await
}

/// Aliyun says the handset received the formal notice's text: that is the
/// proof of receipt (`delivered:sms`) and the deadline runs from the
/// handset's time; the report is on the row, in the log and in the package.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_report_from_aliyun_starts_the_deadline(#[case] engine: Engine) {
    let db = common::TestDb::new(engine).await;
    let (fake, url) = fake_aliyun().await;
    *fake.report.lock().unwrap() = Some((3, "2026-12-04 10:00:07".into(), "DELIVERED".into()));
    let s = aliyun_app(&db, &url).await;
    to_the_formal_notice(&s).await;
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.status.as_str(), row.receipt_id.as_deref()),
        ("sent", Some(BIZ_ID))
    );

    s.at("2026-12-04", "10:06");
    poll_due(&s.rt, &TellHr).await.unwrap();
    s.settle().await.unwrap();

    let row = sms_copy(&s).await;
    let received = shanghai("2026-12-04", "10:00") + chrono::Duration::seconds(7);
    assert_eq!(row.delivery_status.as_deref(), Some("delivered"));
    assert_eq!(row.delivered_at, Some(received));
    assert!(row.report_checked_at.is_some());
    let report = row.delivery_report.clone().unwrap();
    assert!(report.contains("\"OutId\""), "{report}");
    assert!(
        !report.contains(ZHANGSAN_PHONE),
        "the number is masked: {report}"
    );
    // Asked by number, China date and BizId.
    let q = fake.queries.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (
            q["PhoneNumber"].as_str(),
            q["SendDate"].as_str(),
            q["BizId"].as_str()
        ),
        (ZHANGSAN_PHONE, "20261204", BIZ_ID)
    );
    let case = case_of_zhangsan(&s).await;
    assert_eq!(case.receipt_via.as_deref(), Some("delivered:sms"));
    assert_eq!(case.receipt_at, Some(received));
    assert_eq!(case.deadline_at, Some(received + chrono::Duration::days(3)));
    // A final report is not asked for again.
    s.at("2026-12-04", "11:00");
    let before = fake.queries.lock().unwrap().len();
    poll_due(&s.rt, &TellHr).await.unwrap();
    assert_eq!(fake.queries.lock().unwrap().len(), before);
    // The case's package holds the report.
    let package = rollcall::evidence::export::package(&s.rt, TENANT, "zhangsan", Some(case.id))
        .await
        .unwrap();
    let leaves = std::str::from_utf8(package.file("leaves.jsonl").unwrap()).unwrap();
    let leaf = leaves
        .lines()
        .find(|l| l.contains("\"sms_delivery_report\""))
        .unwrap_or_else(|| panic!("no report leaf in {leaves}"));
    assert!(leaf.contains("delivered"), "{leaf}");
    let report = String::from_utf8_lossy(package.file("report.html").unwrap()).into_owned();
    assert!(
        report.contains("短信状态报告显示已送达员工手机"),
        "receipt via SMS report"
    );
    s.stop().await;
    db.cleanup().await;
}

/// Aliyun says the carrier could not deliver the text: the copy is
/// undeliverable, HR is told as for a refused number, nothing is proven.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_report_from_aliyun_makes_the_copy_undeliverable(#[case] engine: Engine) {
    let db = common::TestDb::new(engine).await;
    let (fake, url) = fake_aliyun().await;
    let s = aliyun_app(&db, &url).await;
    to_the_formal_notice(&s).await;
    // Still waiting: asked, nothing recorded.
    s.at("2026-12-04", "10:01");
    poll_due(&s.rt, &TellHr).await.unwrap();
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.status.as_str(), row.delivery_status.as_deref()),
        ("sent", None)
    );
    assert!(row.report_checked_at.is_some());
    // Not asked again within five minutes.
    let asked = fake.queries.lock().unwrap().len();
    s.at("2026-12-04", "10:03");
    poll_due(&s.rt, &TellHr).await.unwrap();
    assert_eq!(fake.queries.lock().unwrap().len(), asked);

    *fake.report.lock().unwrap() = Some((2, "2026-12-04 10:02:00".into(), "MK:0001".into()));
    // Five minutes after any ask the tick may have made at 10:03.
    s.at("2026-12-04", "10:10");
    poll_due(&s.rt, &TellHr).await.unwrap();
    s.settle().await.unwrap();
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.status.as_str(), row.delivery_status.as_deref()),
        ("undeliverable", Some("failed"))
    );
    let told = all_rows(&s)
        .await
        .into_iter()
        .find(|r| r.idem_key == format!("undeliverable:{}:wangmin", row.id))
        .expect("HR is told");
    assert_eq!(told.status, "sent");
    assert!(told.payload.contains("MK:0001"), "{}", told.payload);
    let case = case_of_zhangsan(&s).await;
    assert_eq!((case.receipt_at, case.receipt_via), (None, None));
    s.stop().await;
    db.cleanup().await;
}

/// The sandbox gateway posts reports the way the contract says: a genuine
/// one is recorded and proves receipt; a forged one and one for an id
/// rollcall never sent are refused and change nothing.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_reports_are_recorded_and_forged_ones_refused(#[case] engine: Engine) {
    let db = common::TestDb::new(engine).await;
    let s = app(&db, "").await;
    s.sms
        .report_to(&format!("http://{}/sms/report/{TENANT}", s.app.addr), None);
    to_the_formal_notice(&s).await;
    let row = sms_copy(&s).await;
    let id = row.receipt_id.clone().unwrap();
    let at = shanghai("2026-12-04", "10:00") + chrono::Duration::seconds(3);
    let early = shanghai("2026-12-04", "09:00");

    assert_eq!(s.sms.post_report(&id, "delivered", at, true).await, Ok(401));
    assert_eq!(
        s.sms
            .post_report("sandbox-sms-999", "delivered", at, false)
            .await,
        Ok(404)
    );
    let unchanged = sms_copy(&s).await;
    assert_eq!(unchanged, row, "a refused report records nothing");
    assert_eq!(case_of_zhangsan(&s).await.receipt_at, None);

    assert_eq!(
        s.sms.post_report(&id, "delivered", early, false).await,
        Ok(200)
    );
    // Dated before the text left (the gateway's clock): it counts from the
    // sending, never earlier.
    let sent = row.sent_at.unwrap();
    assert!(early < sent);
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.delivery_status.as_deref(), row.delivered_at),
        (Some("delivered"), Some(sent))
    );
    assert!(row.delivery_report.unwrap().contains("DELIVRD"));
    let case = case_of_zhangsan(&s).await;
    assert_eq!(
        (case.receipt_via.as_deref(), case.receipt_at),
        (Some("delivered:sms"), Some(sent))
    );
    // A gateway's retry of the same report: accepted, nothing new.
    assert_eq!(s.sms.post_report(&id, "failed", at, false).await, Ok(200));
    assert_eq!(sms_copy(&s).await.status, "sent");
    let status = status_of_zhangsan(&s).await;
    assert!(
        status.contains("短信已发送") && status.contains("已送达手机"),
        "{status}"
    );
    s.stop().await;
    db.cleanup().await;
}

/// The gateway takes the text and never answers: the copy is `unknown`,
/// never sent again, and HR is told to check.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_that_timed_out_is_unknown_sent_once_and_hr_told(#[case] engine: Engine) {
    let db = common::TestDb::new(engine).await;
    let s = app(&db, "[delivery]\ntimeout_secs = 1\nmax_backoff_secs = 1\n").await;
    s.sms.push_fault(SmsFault::AcceptThenHang);
    to_the_formal_notice(&s).await;
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.status.as_str(), row.delivery_status.as_deref()),
        ("unknown", Some("unknown"))
    );
    let out_id = format!("{TENANT}:{}", row.idem_key);
    // Well past a retry's backoff and the cut-off of a lost attempt.
    s.at("2026-12-04", "12:00");
    tokio::time::sleep(Duration::from_secs(3)).await;
    poll_due(&s.rt, &TellHr).await.unwrap();
    s.settle().await.unwrap();
    let requests = s.sms.requests();
    assert_eq!(
        requests.iter().filter(|r| **r == out_id).count(),
        1,
        "{requests:?}"
    );
    assert_eq!(s.sms.texts().len(), 1);
    assert_eq!(sms_copy(&s).await.status, "unknown");
    let told = all_rows(&s)
        .await
        .into_iter()
        .find(|r| r.idem_key == format!("sms_unknown:{}:wangmin", row.id))
        .expect("HR is told");
    assert_eq!(told.status, "sent");
    assert!(told.payload.contains("不会自动重发"), "{}", told.payload);
    let status = status_of_zhangsan(&s).await;
    assert!(status.contains("短信结果不明"), "{status}");
    assert_eq!(case_of_zhangsan(&s).await.receipt_at, None);
    s.stop().await;
    db.cleanup().await;
}

/// Aliyun takes the text (or not) and never answers: the copy is
/// `unknown` and not sent again. Asked by number, day and OutId: a text
/// Aliyun holds is sent after all (and its report counts); one it does not
/// hold is left to HR after 30 minutes, once.
#[rstest]
#[case::sqlite_taken(Engine::Sqlite, true)]
#[case::postgres_taken(Engine::Postgres, true)]
#[case::sqlite_lost(Engine::Sqlite, false)]
#[case::postgres_lost(Engine::Postgres, false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_aliyun_text_is_looked_up_by_its_out_id(
    #[case] engine: Engine,
    #[case] taken: bool,
) {
    let db = common::TestDb::new(engine).await;
    let (fake, url) = fake_aliyun().await;
    *fake.hang.lock().unwrap() = Some(taken);
    *fake.report.lock().unwrap() = Some((3, "2026-12-04 10:00:05".into(), "DELIVERED".into()));
    let s = app(
        &db,
        &format!(
            "[tenants.sms]\n{}[delivery]\ntimeout_secs = 1\nmax_backoff_secs = 1\n",
            aliyun_toml(&url, ALIYUN_SECRET)
        ),
    )
    .await;
    to_the_formal_notice(&s).await;
    let row = sms_copy(&s).await;
    assert_eq!(
        (row.status.as_str(), row.delivery_status.as_deref()),
        ("unknown", Some("unknown"))
    );
    let hr_told = |rows: &[outbox::Model]| {
        rows.iter()
            .any(|r| r.idem_key == format!("sms_unknown:{}:wangmin", row.id))
    };
    s.at("2026-12-04", "10:06");
    poll_due(&s.rt, &TellHr).await.unwrap();
    s.settle().await.unwrap();
    let q = fake.queries.lock().unwrap().last().cloned().unwrap();
    assert!(!q.contains_key("BizId"), "no BizId is known: {q:?}");
    let sends = || {
        fake.received
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.get("Action").map(String::as_str) == Some("SendSms"))
            .count()
    };
    if taken {
        let row = sms_copy(&s).await;
        assert_eq!(
            (row.status.as_str(), row.delivery_status.as_deref()),
            ("sent", Some("delivered"))
        );
        let case = case_of_zhangsan(&s).await;
        assert_eq!(case.receipt_via.as_deref(), Some("delivered:sms"));
        assert!(!hr_told(&all_rows(&s).await));
        assert_eq!(sends(), 1);
    } else {
        // Looked for a while, then HR is told, once.
        assert!(!hr_told(&all_rows(&s).await));
        s.at("2026-12-04", "10:40");
        poll_due(&s.rt, &TellHr).await.unwrap();
        s.at("2026-12-04", "10:50");
        poll_due(&s.rt, &TellHr).await.unwrap();
        s.settle().await.unwrap();
        let rows = all_rows(&s).await;
        let told: Vec<&outbox::Model> = rows
            .iter()
            .filter(|r| r.idem_key.starts_with(&format!("sms_unknown:{}:", row.id)))
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert!(
            told[0].payload.contains("未找到这条短信的记录"),
            "{}",
            told[0].payload
        );
        assert_eq!(sms_copy(&s).await.status, "unknown");
        assert_eq!(sends(), 0, "never sent again");
        assert_eq!(case_of_zhangsan(&s).await.receipt_at, None);
    }
    s.stop().await;
    db.cleanup().await;
}

/// A crash between an SMS request and its answer (the row left `sending`
/// past the cut-off): the text is not sent again; its outcome is unknown
/// and HR is told (the webhook gateway cannot be asked).
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_cut_off_by_a_crash_is_unknown_not_resent(#[case] engine: Engine) {
    use sea_orm::sea_query::Expr;
    let db = common::TestDb::new(engine).await;
    let s = app(&db, "").await;
    to_the_formal_notice(&s).await;
    let row = sms_copy(&s).await;
    // As a process that died mid-request leaves it.
    outbox::Entity::update_many()
        .col_expr(outbox::Column::Status, Expr::value("sending"))
        .col_expr(
            outbox::Column::SentAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .col_expr(
            outbox::Column::ClaimedAt,
            Expr::value(Some(shanghai("2026-12-04", "10:00"))),
        )
        .filter(outbox::Column::Id.eq(row.id))
        .exec(&s.rt.db.orm)
        .await
        .unwrap();
    // The outbox's sender takes it up once its attempt counts as cut off.
    s.at("2026-12-04", "12:00");
    s.settle().await.unwrap();
    let after = sms_copy(&s).await;
    assert_eq!(
        (after.status.as_str(), after.delivery_status.as_deref()),
        ("unknown", Some("unknown"))
    );
    assert_eq!(s.sms.requests().len(), 1, "not sent again");
    assert!(
        all_rows(&s)
            .await
            .iter()
            .any(|r| r.idem_key == format!("sms_unknown:{}:wangmin", row.id) && r.status == "sent"),
        "HR is told"
    );
    s.stop().await;
    db.cleanup().await;
}
