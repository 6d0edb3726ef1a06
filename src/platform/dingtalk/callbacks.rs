//! DingTalk's HTTP callbacks, both kinds an app can point at one URL:
//!
//! - **Event subscription** (事件订阅, HTTP mode): `POST ?signature|msg_signature=
//!   &timestamp|timeStamp=&nonce=` with `{"encrypt": …}`, the WeCom scheme
//!   (SHA-1 over the sorted token, timestamp, nonce and ciphertext; AES-256-CBC
//!   with a 32-byte pad) with the app key as the trailing id and timestamps
//!   in milliseconds. Every accepted event, `check_url` included, is answered
//!   `{"msg_signature","timeStamp","nonce","encrypt"}` with `success`
//!   encrypted, within 1.5 s.
//! - **Robot messages** (机器人消息接收, HTTP mode): plain JSON, authenticated
//!   by the headers `timestamp` (ms) and `sign` =
//!   base64(HMAC-SHA256(app secret, timestamp + "\n" + app secret)); DingTalk
//!   itself refuses a timestamp more than an hour off, this side the
//!   configured replay window.
//!
//! Stream mode delivers the same robot messages and events over a WebSocket
//! (`stream.rs`) and needs no URL at all.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::platform::wecom::{CryptoError, WecomCrypto};
use crate::platform::{
    Answer, Callback, CallbackMethod, CallbackRequest, CallbackSide, InboundEvent, InboundKind,
    Refusal, punch_key,
};

/// The media type of what DingTalk sends and of its decrypted text.
const JSON: &str = "application/json";

/// One DingTalk app's callback verification.
pub struct DingtalkCallbacks {
    crypto: WecomCrypto,
    app_secret: String,
}

impl std::fmt::Debug for DingtalkCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkCallbacks").finish_non_exhaustive()
    }
}

impl DingtalkCallbacks {
    /// `token` and `aes_key` from the event subscription page, `app_key`
    /// (the trailing id of every encrypted message) and `app_secret` (the
    /// key of robot message signatures).
    pub fn new(
        token: &str,
        aes_key: &str,
        app_key: &str,
        app_secret: &str,
    ) -> Result<DingtalkCallbacks, CryptoError> {
        Ok(DingtalkCallbacks {
            crypto: WecomCrypto::new(token, aes_key, app_key)?,
            app_secret: app_secret.to_owned(),
        })
    }

    /// The encrypted `success` answer to an accepted event.
    fn success(&self, now_secs: i64) -> Answer {
        let timestamp = (now_secs * 1000).to_string();
        let nonce: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..8)
                .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
                .collect()
        };
        let encrypt = self.crypto.encrypt("success");
        let signature = self.crypto.sign(&timestamp, &nonce, &encrypt);
        Answer {
            content_type: JSON,
            body: json!({
                "msg_signature": signature,
                "timeStamp": timestamp,
                "nonce": nonce,
                "encrypt": encrypt,
            })
            .to_string(),
        }
    }

    fn event(&self, request: &CallbackRequest<'_>, body: &str) -> Result<Callback, Refusal> {
        let query: HashMap<String, String> = form_urlencoded::parse(request.query.as_bytes())
            .into_owned()
            .collect();
        // The docs and SDKs spell both parameters two ways.
        let either = |a: &str, b: &str| {
            query
                .get(a)
                .or_else(|| query.get(b))
                .cloned()
                .ok_or_else(|| Refusal::BadRequest(format!("missing query parameter {a}")))
        };
        let signature = either("msg_signature", "signature")?;
        let timestamp = either("timestamp", "timeStamp")?;
        let nonce = either("nonce", "nonce")?;
        #[derive(Deserialize)]
        struct Envelope {
            encrypt: String,
        }
        let envelope: Envelope = serde_json::from_str(body)
            .map_err(|e| Refusal::Malformed(format!("not an encrypted event: {e}")))?;
        if !fresh_ms(request, &timestamp) {
            return Err(Refusal::StaleTimestamp);
        }
        let plaintext = self
            .crypto
            .open(&signature, &timestamp, &nonce, &envelope.encrypt)
            .map_err(crate::platform::wecom::callbacks::refusal)?;
        let value: Value = serde_json::from_str(&plaintext)
            .map_err(|e| Refusal::Malformed(format!("decrypted event is not JSON: {e}")))?;
        let event_type = value
            .get("EventType")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Malformed("decrypted event has no EventType".into()))?
            .to_owned();
        let answer = self.success(request.now);
        if event_type == "check_url" {
            return Ok(Callback::Verified(answer));
        }
        Ok(Callback::Event {
            events: parse_event(&event_type, &value, &plaintext, request.now),
            plaintext,
            answer,
            body: None,
        })
    }

    fn robot(
        &self,
        request: &CallbackRequest<'_>,
        body: &str,
        timestamp: &str,
        sign: &str,
    ) -> Result<Callback, Refusal> {
        if !fresh_ms(request, timestamp) {
            return Err(Refusal::StaleTimestamp);
        }
        let expected = robot_sign(&self.app_secret, timestamp);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            sign.as_bytes(),
        )) {
            return Err(Refusal::BadSignature(
                "robot message signature does not match".into(),
            ));
        }
        let event = parse_robot_message(body)?;
        Ok(Callback::Event {
            events: vec![event],
            plaintext: body.to_owned(),
            // The robot's HTTP callback may answer with a message; an empty
            // JSON object answers nothing (replies go through the API).
            answer: Answer {
                content_type: JSON,
                body: "{}".into(),
            },
            body: None,
        })
    }
}

/// `base64(HMAC-SHA256(app_secret, timestamp + "\n" + app_secret))`.
pub fn robot_sign(app_secret: &str, timestamp: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}\n{app_secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether a millisecond timestamp is within the replay window of now.
fn fresh_ms(request: &CallbackRequest<'_>, timestamp: &str) -> bool {
    timestamp.parse::<i64>().is_ok_and(|ms| {
        (request.now.saturating_mul(1000)).abs_diff(ms) <= request.replay_window_secs * 1000
    })
}

fn header<'a>(request: &'a CallbackRequest<'_>, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

impl CallbackSide for DingtalkCallbacks {
    fn platform(&self) -> &'static str {
        "dingtalk"
    }

    fn handle(&self, request: &CallbackRequest<'_>) -> Result<Callback, Refusal> {
        if request.method != CallbackMethod::Post {
            return Err(Refusal::BadRequest("DingTalk callbacks are POSTed".into()));
        }
        let body = std::str::from_utf8(request.body)
            .map_err(|_| Refusal::Malformed("body is not UTF-8".into()))?;
        match (header(request, "timestamp"), header(request, "sign")) {
            (Some(timestamp), Some(sign)) => self.robot(request, body, timestamp, sign),
            _ => self.event(request, body),
        }
    }
}

/// A robot message (`msgtype` text, picture, file, …) as DingTalk sends it
/// over HTTP or in a Stream frame's data. The sender is their staff id.
pub fn parse_robot_message(body: &str) -> Result<InboundEvent, Refusal> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| Refusal::Malformed(format!("robot message is not JSON: {e}")))?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let msg_id = text(&value, "msgId")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Refusal::Malformed("robot message has no msgId".into()))?;
    let sender = text(&value, "senderStaffId")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Refusal::Malformed("robot message has no senderStaffId".into()))?;
    let sent_at = value
        .get("createAt")
        .and_then(Value::as_i64)
        .ok_or_else(|| Refusal::Malformed("robot message has no createAt".into()))?
        / 1000;
    let msg_type = text(&value, "msgtype").unwrap_or_default();
    let content = value.get("content").cloned().unwrap_or(Value::Null);
    let download_code = || {
        text(&content, "downloadCode")
            .or_else(|| text(&content, "pictureDownloadCode"))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Refusal::Malformed(format!("{msg_type} message has no downloadCode")))
    };
    let kind = match msg_type.as_str() {
        "text" => InboundKind::Text {
            content: value
                .pointer("/text/content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            msg_id: msg_id.clone(),
        },
        "picture" => InboundKind::Image {
            msg_id: msg_id.clone(),
            pic_url: None,
            media_id: download_code()?,
        },
        "file" => InboundKind::File {
            msg_id: msg_id.clone(),
            media_id: download_code()?,
            file_name: text(&content, "fileName"),
        },
        "audio" => InboundKind::Voice {
            msg_id: msg_id.clone(),
            media_id: download_code()?,
            format: None,
        },
        "video" => InboundKind::Video {
            msg_id: msg_id.clone(),
            media_id: download_code()?,
            thumb_media_id: None,
        },
        other => InboundKind::Other {
            msg_type: other.to_owned(),
            event: None,
            event_key: None,
            msg_id: Some(msg_id.clone()),
        },
    };
    Ok(InboundEvent {
        own_part: None,
        sender,
        sent_at,
        dedup_key: format!("msg:{msg_id}"),
        media_type: JSON.to_owned(),
        kind,
    })
}

/// An event other than `check_url`. HTTP events carry no id of their own,
/// so a redelivery is recognised by its type and the SHA-256 of its text.
fn parse_event(event_type: &str, value: &Value, plaintext: &str, now: i64) -> Vec<InboundEvent> {
    let digest = Sha256::digest(plaintext.as_bytes());
    let short: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    events_of(
        event_type,
        value,
        format!("event:{event_type}:{short}"),
        now,
    )
}

/// The events one DingTalk event carries: an attendance event lists
/// punches, possibly of several people, and each is a
/// [`InboundKind::Punch`] of its own, known by its person and time
/// ([`punch_key`]: a redelivery, or the same punch read from the
/// attendance records, maps onto the same row), with its own entry as its
/// [`InboundEvent::own_part`] when there are several; any other event is
/// one [`InboundKind::Other`] known by `dedup_key`.
pub(crate) fn events_of(
    event_type: &str,
    value: &Value,
    dedup_key: String,
    now: i64,
) -> Vec<InboundEvent> {
    if event_type == "attendance_check_record" {
        let entries: &[Value] = value
            .get("dataList")
            .or_else(|| value.get("DataList"))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let punches: Vec<InboundEvent> = entries
            .iter()
            .filter_map(|entry| {
                let mut punch = punch_of(entry, "checkTime", "address")?;
                // Several people's punches: each keeps only its own entry.
                if entries.len() > 1 {
                    punch.own_part = Some(entry.to_string());
                }
                Some(punch)
            })
            .collect();
        if !punches.is_empty() {
            return punches;
        }
    }
    vec![event_of(event_type, value, dedup_key, now)]
}

/// An event of type `event_type` whose decrypted JSON is `value`, known by
/// `dedup_key`, kept as [`InboundKind::Other`] until rollcall acts on it.
fn event_of(event_type: &str, value: &Value, dedup_key: String, now: i64) -> InboundEvent {
    // Who the event is about, when it names one person.
    let sender = value
        .get("UserId")
        .and_then(|u| u.get(0).or(Some(u)))
        .and_then(Value::as_str)
        .or_else(|| value.pointer("/DataList/0/userId").and_then(Value::as_str))
        .or_else(|| value.get("userId").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let sent_at = value
        .get("TimeStamp")
        .and_then(|t| {
            t.as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or(t.as_i64())
        })
        .map(|ms| ms / 1000)
        .unwrap_or(now);
    InboundEvent {
        own_part: None,
        sender,
        sent_at,
        dedup_key,
        media_type: JSON.to_owned(),
        kind: InboundKind::Other {
            msg_type: "event".into(),
            event: Some(event_type.to_owned()),
            event_key: None,
            msg_id: None,
        },
    }
}

/// One punch: an entry of an `attendance_check_record` event's `dataList`
/// (PROTOCOL.md §2.7; `DataList` in the SDK's vectors: `{userId, checkTime`
/// (ms)`, address, latitude, longitude, …}`), or a record of
/// `attendance/listRecord` (`{userId, userCheckTime` (ms)`, userAddress,
/// userLatitude, userLongitude, …}`) — `time` and `address` name the
/// fields that differ. `None` when it names no one or no time. Numbers
/// may come as strings.
pub(crate) fn punch_of(entry: &Value, time: &str, address: &str) -> Option<InboundEvent> {
    let sender = entry.get("userId")?.as_str()?.to_owned();
    let ms = entry.get(time).and_then(|t| {
        t.as_i64()
            .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
    })?;
    let number = |key: &str| {
        entry.get(key).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let (lat, lon) = if time == "checkTime" {
        ("latitude", "longitude")
    } else {
        ("userLatitude", "userLongitude")
    };
    // A place that is none (NaN, out of range) is no place: the punch is
    // kept without one.
    let (lat, lon) = match (number(lat), number(lon)) {
        (Some(a), Some(o)) if crate::platform::on_earth(a, o) => (Some(a), Some(o)),
        _ => (None, None),
    };
    Some(InboundEvent {
        own_part: None,
        dedup_key: punch_key(&sender, ms),
        sender,
        sent_at: ms.div_euclid(1000),
        media_type: JSON.to_owned(),
        kind: InboundKind::Punch {
            latitude: lat,
            longitude: lon,
            label: entry
                .get(address)
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        },
    })
}

/// A button pressed on one of our interactive cards, as DingTalk sends it
/// (PROTOCOL.md §5.4): `{"type":"actionCallback","outTrackId","userId",
/// "content":"{\"cardPrivateData\":{\"actionIds\":[…],\"params\":{…}}}"}`.
/// The button's key is its call-back param `key` (see
/// `DingtalkApi::send`), else its action id; the card is its outTrackId,
/// which is also what updating it takes. A press carries no id of its own:
/// the same button pressed again on the same card by the same user is the
/// same decision, and is stored once. `now` dates it (seconds).
pub fn parse_card_callback(body: &str, now: i64) -> Result<InboundEvent, Refusal> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| Refusal::Malformed(format!("card callback is not JSON: {e}")))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Refusal::Malformed(format!("card callback has no {key}")))
    };
    let card = text("outTrackId")?;
    let user = text("userId")?;
    let content: Value = serde_json::from_str(&text("content")?)
        .map_err(|e| Refusal::Malformed(format!("card callback content is not JSON: {e}")))?;
    let data = content.get("cardPrivateData").unwrap_or(&Value::Null);
    let key = data
        .pointer("/params/key")
        .and_then(Value::as_str)
        .or_else(|| data.pointer("/actionIds/0").and_then(Value::as_str))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Refusal::Malformed("card callback names no button".into()))?
        .to_owned();
    Ok(InboundEvent {
        own_part: None,
        dedup_key: format!("card:{card}:{user}:{key}"),
        sender: user,
        sent_at: now,
        media_type: JSON.to_owned(),
        kind: InboundKind::CardButton {
            key,
            card_ref: Some(card.clone()),
            card_id: card,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_punch_off_earth_keeps_no_place() {
        for (lat, lon) in [(json!("NaN"), json!(121.4)), (json!(95.0), json!(121.4))] {
            let entry = json!({ "userId": "u1", "checkTime": 1_764_900_000_000_i64,
                "latitude": lat, "longitude": lon, "address": "一号工地" });
            let event = punch_of(&entry, "checkTime", "address").unwrap();
            assert!(
                matches!(
                    event.kind,
                    InboundKind::Punch {
                        latitude: None,
                        longitude: None,
                        ..
                    }
                ),
                "{:?}",
                event.kind
            );
        }
        let entry = json!({ "userId": "u1", "checkTime": 1_764_900_000_000_i64,
            "latitude": 31.2, "longitude": 121.4 });
        let event = punch_of(&entry, "checkTime", "address").unwrap();
        assert!(matches!(
            event.kind,
            InboundKind::Punch {
                latitude: Some(_),
                ..
            }
        ));
    }

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/dingtalk.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn side(v: &Value) -> DingtalkCallbacks {
        DingtalkCallbacks::new(
            v["token"].as_str().unwrap(),
            v["aes_key"].as_str().unwrap(),
            v["app_key_or_corp_id"].as_str().unwrap(),
            v["robot"]["app_secret"].as_str().unwrap(),
        )
        .unwrap()
    }

    fn none() -> &'static reqwest::header::HeaderMap {
        static NONE: std::sync::OnceLock<reqwest::header::HeaderMap> = std::sync::OnceLock::new();
        NONE.get_or_init(reqwest::header::HeaderMap::new)
    }

    /// Ten years either way: the vectors' timestamps are fixed in the past.
    const WINDOW: u64 = 10 * 365 * 24 * 3600;

    fn request<'a>(
        query: &'a str,
        headers: &'a reqwest::header::HeaderMap,
        body: &'a str,
        now: i64,
        window: u64,
    ) -> CallbackRequest<'a> {
        CallbackRequest {
            method: CallbackMethod::Post,
            query,
            headers,
            body: body.as_bytes(),
            now,
            replay_window_secs: window,
        }
    }

    fn query_of(case: &Value) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in case["query"].as_object().unwrap() {
            s.append_pair(k, v.as_str().unwrap());
        }
        s.finish()
    }

    fn now_of(case: &Value) -> i64 {
        case["query"]["timestamp"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            / 1000
    }

    /// The answer decrypts to `success` with the same key and id, and its
    /// signature verifies.
    fn assert_success(side: &DingtalkCallbacks, answer: &Answer) {
        let a: Value = serde_json::from_str(&answer.body).unwrap();
        let plain = side
            .crypto
            .open(
                a["msg_signature"].as_str().unwrap(),
                a["timeStamp"].as_str().unwrap(),
                a["nonce"].as_str().unwrap(),
                a["encrypt"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(plain, "success");
        assert_eq!(answer.content_type, "application/json");
    }

    #[test]
    fn every_event_vector_is_accepted_and_answered_success() {
        let v = vectors();
        let side = side(&v);
        for case in v["cases"].as_array().unwrap() {
            let query = query_of(case);
            let body = case["body"].as_str().unwrap();
            let r = request(&query, none(), body, now_of(case), WINDOW);
            let result = side.handle(&r);
            let name = case["name"].as_str().unwrap();
            if case["expect_status"] != 200 {
                assert!(result.is_err(), "{name}: {result:?}");
                continue;
            }
            match result.unwrap_or_else(|e| panic!("{name}: {e}")) {
                Callback::Verified(answer) => {
                    assert_eq!(name, "check_url");
                    assert_success(&side, &answer);
                }
                Callback::Event {
                    events,
                    plaintext,
                    answer,
                    ..
                } => {
                    let event = &events[0];
                    assert_eq!(plaintext, case["plaintext"].as_str().unwrap(), "{name}");
                    assert_success(&side, &answer);
                    // A punch is known by who and when; any other event by its id.
                    let prefix = match event.kind {
                        InboundKind::Punch { .. } => "punch:",
                        _ => "event:",
                    };
                    assert!(event.dedup_key.starts_with(prefix), "{name}");
                    assert_eq!(event.media_type, "application/json");
                }
            }
        }
    }

    #[test]
    fn the_other_spelling_of_the_parameters_is_accepted() {
        let v = vectors();
        let side = side(&v);
        let case = &v["cases"][1];
        let q = &case["query"];
        let query = format!(
            "msg_signature={}&timeStamp={}&nonce={}",
            q["signature"].as_str().unwrap(),
            q["timestamp"].as_str().unwrap(),
            q["nonce"].as_str().unwrap()
        );
        let r = request(
            &query,
            none(),
            case["body"].as_str().unwrap(),
            now_of(case),
            WINDOW,
        );
        assert!(matches!(side.handle(&r), Ok(Callback::Event { .. })));
    }

    #[test]
    fn an_event_is_recognised_when_delivered_again() {
        let v = vectors();
        let side = side(&v);
        let case = &v["cases"][2];
        let query = query_of(case);
        let body = case["body"].as_str().unwrap();
        let key = |now| match side.handle(&request(&query, none(), body, now, WINDOW)) {
            Ok(Callback::Event { events, .. }) => events[0].dedup_key.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key(now_of(case)), key(now_of(case) + 60));
    }

    #[test]
    fn refusals_name_their_cause() {
        let v = vectors();
        let side = side(&v);
        let case = &v["cases"][1];
        let body = case["body"].as_str().unwrap();
        let now = now_of(case);
        let query = query_of(case);
        // Outside the window.
        assert_eq!(
            side.handle(&request(&query, none(), body, now + 3600, 600)),
            Err(Refusal::StaleTimestamp)
        );
        // Another signature.
        let forged = query.replace(
            case["query"]["signature"].as_str().unwrap(),
            &"0".repeat(40),
        );
        assert!(matches!(
            side.handle(&request(&forged, none(), body, now, WINDOW)),
            Err(Refusal::BadSignature(_))
        ));
        // Another app's key as the trailing id.
        let other = DingtalkCallbacks::new(
            v["token"].as_str().unwrap(),
            v["aes_key"].as_str().unwrap(),
            "dingotherapp",
            "s",
        )
        .unwrap();
        assert!(matches!(
            other.handle(&request(&query, none(), body, now, WINDOW)),
            Err(Refusal::WrongReceiveId(_))
        ));
        // Missing parameters, not JSON, a GET.
        assert!(matches!(
            side.handle(&request("nonce=1", none(), body, now, WINDOW)),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            side.handle(&request(&query, none(), "<xml/>", now, WINDOW)),
            Err(Refusal::Malformed(_))
        ));
        let mut get = request(&query, none(), body, now, WINDOW);
        get.method = CallbackMethod::Get;
        assert!(matches!(side.handle(&get), Err(Refusal::BadRequest(_))));
    }

    /// DingTalk's own sample (DingCallbackCrypto3.py), as a URL check.
    #[test]
    fn the_official_sample_verifies_as_a_url_check() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/published.json");
        let published: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let case = published["cases"]
            .as_array()
            .or(published.as_array())
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "dingtalk_event")
            .unwrap();
        let side = DingtalkCallbacks::new(
            case["token"].as_str().unwrap(),
            case["encoding_aes_key"].as_str().unwrap(),
            case["receive_id"].as_str().unwrap(),
            "unused",
        )
        .unwrap();
        let query = format!(
            "signature={}&timestamp={}&nonce={}",
            case["msg_signature"].as_str().unwrap(),
            case["timestamp"].as_str().unwrap(),
            case["nonce"].as_str().unwrap()
        );
        let body = json!({ "encrypt": case["encrypt"] }).to_string();
        let now = case["timestamp"].as_str().unwrap().parse::<i64>().unwrap() / 1000;
        match side.handle(&request(&query, none(), &body, now, WINDOW)) {
            Ok(Callback::Verified(answer)) => assert_success(&side, &answer),
            other => panic!("{other:?}"),
        }
    }

    fn robot_headers(case: &Value) -> reqwest::header::HeaderMap {
        case["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn robot_messages_are_checked_by_their_sign_and_parsed() {
        let v = vectors();
        let side = side(&v);
        for case in v["robot"]["cases"].as_array().unwrap() {
            let headers = robot_headers(case);
            let body = case["body"].as_str().unwrap();
            let ts: i64 = case["headers"]["timestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let Ok(Callback::Event {
                events, plaintext, ..
            }) = side.handle(&request("", &headers, body, ts / 1000, 3600))
            else {
                panic!("{} refused", case["name"]);
            };
            let event = &events[0];
            let sent: Value = serde_json::from_str(body).unwrap();
            assert_eq!(plaintext, body);
            assert_eq!(event.sender, sent["senderStaffId"].as_str().unwrap());
            assert_eq!(event.sent_at, ts / 1000);
            assert_eq!(
                event.dedup_key,
                format!("msg:{}", sent["msgId"].as_str().unwrap())
            );
            assert_eq!(event.text(), sent["text"]["content"].as_str());
            // The same message an hour and a minute later, or signed with
            // another secret, is refused.
            assert_eq!(
                side.handle(&request("", &headers, body, ts / 1000 + 3660, 3600)),
                Err(Refusal::StaleTimestamp)
            );
            let mut forged = headers.clone();
            forged.insert(
                "sign",
                robot_sign("another secret", &ts.to_string())
                    .parse()
                    .unwrap(),
            );
            assert!(matches!(
                side.handle(&request("", &forged, body, ts / 1000, 3600)),
                Err(Refusal::BadSignature(_))
            ));
        }
    }

    #[test]
    fn robot_media_messages_carry_their_download_code() {
        let body = r#"{"msgtype":"picture","content":{"downloadCode":"dc-1","pictureDownloadCode":"p-1"},"msgId":"m1","createAt":1764193070000,"senderStaffId":"zhangsan"}"#;
        let ev = parse_robot_message(body).unwrap();
        assert_eq!(ev.kind.name(), "image");
        assert!(matches!(ev.kind, InboundKind::Image { ref media_id, .. } if media_id == "dc-1"));
        let body = r#"{"msgtype":"file","content":{"downloadCode":"dc-2","fileName":"请假条.pdf"},"msgId":"m2","createAt":1764193070000,"senderStaffId":"zhangsan"}"#;
        let ev = parse_robot_message(body).unwrap();
        assert_eq!(ev.attachment(), Some("dc-2"));
        for bad in [
            r#"{"msgtype":"text","text":{"content":"x"},"createAt":1,"senderStaffId":"a"}"#,
            r#"{"msgtype":"text","text":{"content":"x"},"msgId":"m","createAt":1}"#,
            r#"{"msgtype":"picture","content":{},"msgId":"m","createAt":1,"senderStaffId":"a"}"#,
            "[]",
        ] {
            assert!(
                matches!(parse_robot_message(bad), Err(Refusal::Malformed(_))),
                "{bad}"
            );
        }
    }
}
