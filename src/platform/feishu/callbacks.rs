//! Feishu's HTTP callbacks (`POST /callback/feishu/{tenant}`): the event
//! subscription and the card callback, which a Feishu app may point at the
//! same URL (both are schema 2.0 events).
//!
//! With an Encrypt Key, a request is `{"encrypt": …}` signed with
//! `X-Lark-Signature` over the raw bytes (see `crypto.rs`), and a plain one
//! is refused. Without one, a plain event is taken on its verification
//! token alone. Every event's `header.token` must be the app's Verification
//! Token. The URL check (`type: url_verification`) is answered with its
//! challenge once its token matches; Feishu does not sign that request the
//! way it signs events (lark-oapi skips the check for it), so a signature
//! is checked only when one is sent.
//!
//! What is stored has the Verification Token replaced by
//! [`REDACTED`]: in the decrypted text, and in a plain event's body (an
//! encrypted body is kept as received).
//!
//! Every event is known by `header.event_id`, which Feishu keeps across its
//! retries (for hours): that is the dedup key, except for a message, known
//! by its `message_id` (which Feishu's docs advise, as the same message may
//! come again under another event id).

use serde_json::{Value, json};

use super::api::seconds;
use super::crypto::{CryptoError, FeishuCrypto};
use crate::config::FeishuIdType;
use crate::platform::{
    Answer, Callback, CallbackMethod, CallbackRequest, CallbackSide, InboundEvent, InboundKind,
    Refusal,
};

const JSON: &str = "application/json";
const TIMESTAMP: &str = "x-lark-request-timestamp";
const NONCE: &str = "x-lark-request-nonce";
const SIGNATURE: &str = "x-lark-signature";
/// What the Verification Token is stored as.
pub const REDACTED: &str = "[verification token]";

/// The callback side of one Feishu app.
pub struct FeishuCallbacks {
    crypto: Option<FeishuCrypto>,
    verification_token: String,
    id_type: FeishuIdType,
    /// What a card press is answered with as a toast (bot text, from the
    /// templates); `None`: no toast.
    toast: Option<String>,
}

impl std::fmt::Debug for FeishuCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuCallbacks")
            .field("encrypted", &self.crypto.is_some())
            .field("id_type", &self.id_type)
            .finish_non_exhaustive()
    }
}

fn header<'a>(request: &'a CallbackRequest<'_>, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

fn undecryptable(e: CryptoError) -> Refusal {
    Refusal::Undecryptable(e.to_string())
}

/// A string field that Feishu may send as a string or a number.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn float_of(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

impl FeishuCallbacks {
    /// The callback side of an app with `encrypt_key` (if the subscription
    /// has one) and `verification_token`; a card press is answered with
    /// `toast`, if any.
    pub fn new(
        encrypt_key: Option<&str>,
        verification_token: &str,
        id_type: FeishuIdType,
        toast: Option<String>,
    ) -> FeishuCallbacks {
        FeishuCallbacks {
            crypto: encrypt_key.map(FeishuCrypto::new),
            verification_token: verification_token.to_owned(),
            id_type,
            toast: toast.filter(|t| !t.trim().is_empty()),
        }
    }

    /// Checks the request's signature and its timestamp's age, when it has
    /// one: `Ok(false)` when it has none.
    fn check_signature(
        &self,
        crypto: &FeishuCrypto,
        request: &CallbackRequest<'_>,
    ) -> Result<bool, Refusal> {
        let (Some(timestamp), Some(nonce), Some(signature)) = (
            header(request, TIMESTAMP),
            header(request, NONCE),
            header(request, SIGNATURE),
        ) else {
            return Ok(false);
        };
        crypto
            .verify(signature, timestamp, nonce, request.body)
            .map_err(|e| Refusal::BadSignature(e.to_string()))?;
        let at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| Refusal::BadRequest("X-Lark-Request-Timestamp is not a number".into()))?;
        let window = i64::try_from(request.replay_window_secs).unwrap_or(i64::MAX);
        if (request.now - at).abs() > window {
            return Err(Refusal::StaleTimestamp);
        }
        Ok(true)
    }

    /// `text` with the Verification Token (as a JSON string) replaced by
    /// [`REDACTED`].
    fn redact(&self, text: &[u8]) -> String {
        let text = String::from_utf8_lossy(text);
        let quoted = Value::String(self.verification_token.clone()).to_string();
        text.replace(&quoted, &Value::String(REDACTED.into()).to_string())
    }

    fn check_token(&self, token: Option<&str>) -> Result<(), Refusal> {
        use subtle::ConstantTimeEq;
        let token = token.unwrap_or_default();
        match bool::from(token.as_bytes().ct_eq(self.verification_token.as_bytes())) {
            true => Ok(()),
            false => Err(Refusal::BadSignature(
                "the verification token does not match".into(),
            )),
        }
    }

    /// The id of a person in a `{user_id, open_id, union_id}` object.
    fn person(&self, ids: &Value, what: &str) -> Result<String, Refusal> {
        let name = self.id_type.as_str();
        text_of(&ids[name]).ok_or_else(|| {
            Refusal::Malformed(format!(
                "{what} has no {name} (with id_type = \"user_id\" the app needs the permission to read user ids; or set id_type = \"open_id\")"
            ))
        })
    }

    fn answer(&self, event_type: &str) -> Answer {
        let body = match (event_type, &self.toast) {
            ("card.action.trigger", Some(toast)) => {
                json!({ "toast": { "type": "success", "content": toast } })
            }
            _ => json!({}),
        };
        Answer {
            content_type: "application/json; charset=utf-8",
            body: body.to_string(),
        }
    }

    /// The events of a schema 2.0 delivery.
    fn parse(&self, value: &Value, event_type: &str, now: i64) -> Result<InboundEvent, Refusal> {
        let header = &value["header"];
        let event_id = text_of(&header["event_id"])
            .ok_or_else(|| Refusal::Malformed("the event has no header.event_id".into()))?;
        let sent_at = seconds(&header["create_time"]).unwrap_or(now);
        let event = &value["event"];
        // A message is known by its id (Feishu's advice: the same message
        // may come again under another event id), anything else by its
        // event id.
        let of = |sender: String, sent_at: i64, kind: InboundKind| InboundEvent {
            dedup_key: match &kind {
                InboundKind::Text { msg_id, .. }
                | InboundKind::Location { msg_id, .. }
                | InboundKind::Image { msg_id, .. }
                | InboundKind::Voice { msg_id, .. }
                | InboundKind::Video { msg_id, .. }
                | InboundKind::File { msg_id, .. } => format!("msg:{msg_id}"),
                _ => format!("event:{event_id}"),
            },
            sender,
            sent_at,
            media_type: JSON.to_owned(),
            kind,
            own_part: None,
        };
        match event_type {
            "im.message.receive_v1" => {
                let sender = self.person(&event["sender"]["sender_id"], "the sender")?;
                let message = &event["message"];
                let msg_id = text_of(&message["message_id"])
                    .ok_or_else(|| Refusal::Malformed("the message has no message_id".into()))?;
                let sent_at = seconds(&message["create_time"]).unwrap_or(sent_at);
                let msg_type = message["message_type"].as_str().unwrap_or_default();
                // The content is a JSON string inside the JSON.
                let content: Value = message["content"]
                    .as_str()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or(Value::Null);
                // A message's resources are downloaded by message, type
                // (`image` for an image key, `file` for the others) and key.
                let media = |key: &str| {
                    let kind = if key == "image_key" { "image" } else { "file" };
                    text_of(&content[key])
                        .map(|k| format!("{msg_id}/{kind}/{k}"))
                        .ok_or_else(|| Refusal::Malformed(format!("the {msg_type} has no {key}")))
                };
                let kind = match msg_type {
                    "text" => InboundKind::Text {
                        content: content["text"].as_str().unwrap_or_default().to_owned(),
                        msg_id,
                    },
                    "image" => InboundKind::Image {
                        media_id: media("image_key")?,
                        msg_id,
                        pic_url: None,
                    },
                    "file" => InboundKind::File {
                        media_id: media("file_key")?,
                        file_name: text_of(&content["file_name"]),
                        msg_id,
                    },
                    "audio" => InboundKind::Voice {
                        media_id: media("file_key")?,
                        format: None,
                        msg_id,
                    },
                    "media" => InboundKind::Video {
                        media_id: media("file_key")?,
                        thumb_media_id: media("image_key").ok(),
                        msg_id,
                    },
                    "location" => match (
                        float_of(&content["latitude"]),
                        float_of(&content["longitude"]),
                    ) {
                        (Some(latitude), Some(longitude))
                            if crate::platform::on_earth(latitude, longitude) =>
                        {
                            InboundKind::Location {
                                latitude,
                                longitude,
                                scale: None,
                                label: text_of(&content["name"]),
                                msg_id,
                            }
                        }
                        _ => {
                            return Err(Refusal::Malformed(
                                "the location has no latitude and longitude on Earth".into(),
                            ));
                        }
                    },
                    other => InboundKind::Other {
                        msg_type: other.to_owned(),
                        event: Some(event_type.to_owned()),
                        event_key: None,
                        msg_id: Some(msg_id),
                    },
                };
                Ok(of(sender, sent_at, kind))
            }
            "card.action.trigger" => {
                let sender = self.person(&event["operator"], "the operator")?;
                let value = &event["action"]["value"];
                let kind = match (text_of(&value["key"]), text_of(&value["card"])) {
                    (Some(key), Some(card_id)) => InboundKind::CardButton {
                        key,
                        card_id,
                        card_ref: text_of(&event["context"]["open_message_id"]),
                    },
                    // Not one of rollcall's buttons: kept, not acted on.
                    _ => InboundKind::Other {
                        msg_type: "event".into(),
                        event: Some(event_type.to_owned()),
                        event_key: Some(value.to_string()),
                        msg_id: None,
                    },
                };
                Ok(of(sender, sent_at, kind))
            }
            "im.message.message_read_v1" => {
                let reader = &event["reader"];
                let sender = self.person(&reader["reader_id"], "the reader")?;
                let message_ids: Vec<String> = event["message_id_list"]
                    .as_array()
                    .map(|ids| ids.iter().filter_map(text_of).collect())
                    .unwrap_or_default();
                if message_ids.is_empty() {
                    return Err(Refusal::Malformed("the read event lists no message".into()));
                }
                let read_at = text_of(&reader["read_time"]).and_then(|t| t.parse().ok());
                let sent_at = read_at.map(|ms: i64| ms / 1000).unwrap_or(sent_at);
                Ok(of(
                    sender,
                    sent_at,
                    InboundKind::Read {
                        message_ids,
                        read_at,
                    },
                ))
            }
            other => {
                // Anything else the app is subscribed to: kept as it came,
                // by whoever the event names, if anyone.
                let sender = [&event["sender"]["sender_id"], &event["operator"]]
                    .into_iter()
                    .find_map(|ids| text_of(&ids[self.id_type.as_str()]))
                    .unwrap_or_default();
                Ok(of(
                    sender,
                    sent_at,
                    InboundKind::Other {
                        msg_type: "event".into(),
                        event: Some(other.to_owned()),
                        event_key: None,
                        msg_id: None,
                    },
                ))
            }
        }
    }
}

impl CallbackSide for FeishuCallbacks {
    fn platform(&self) -> &'static str {
        "feishu"
    }

    fn handle(&self, request: &CallbackRequest<'_>) -> Result<Callback, Refusal> {
        if request.method != CallbackMethod::Post {
            return Err(Refusal::BadRequest("Feishu callbacks are POSTs".into()));
        }
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|e| Refusal::Malformed(format!("the body is not JSON: {e}")))?;
        let encrypted = body.get("encrypt");
        // A signature is checked before anything is decrypted. Only the URL
        // check may come without one, and an unsigned request that is not a
        // valid one is refused the same way whatever failed (decryption,
        // JSON, type, token): its refusal must not tell a padding error from
        // any other (a padding oracle).
        let unsigned = || {
            Refusal::BadSignature(
                "X-Lark-Request-Timestamp, X-Lark-Request-Nonce or X-Lark-Signature is missing"
                    .into(),
            )
        };
        let (value, plaintext, signed) = match (&self.crypto, encrypted) {
            (Some(crypto), Some(encrypt)) => {
                let signed = self.check_signature(crypto, request)?;
                let encrypt = encrypt
                    .as_str()
                    .ok_or_else(|| Refusal::Malformed("`encrypt` is not a string".into()))?;
                let plaintext = match crypto.decrypt(encrypt) {
                    Ok(plaintext) => plaintext,
                    Err(_) if !signed => return Err(unsigned()),
                    Err(e) => return Err(undecryptable(e)),
                };
                let value = match serde_json::from_str::<Value>(&plaintext) {
                    Ok(value) => value,
                    Err(_) if !signed => return Err(unsigned()),
                    Err(e) => {
                        return Err(Refusal::Malformed(format!(
                            "the decrypted event is not JSON: {e}"
                        )));
                    }
                };
                (value, plaintext, signed)
            }
            (Some(_), None) => {
                return Err(Refusal::BadRequest(
                    "a plain event, but the app has an Encrypt Key: events must come encrypted"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Refusal::Undecryptable(
                    "an encrypted event, but the tenant has no encrypt_key".into(),
                ));
            }
            // Plain: the verification token is the only check.
            (None, None) => (
                body,
                String::from_utf8_lossy(request.body).into_owned(),
                true,
            ),
        };
        if value["type"] == "url_verification" {
            self.check_token(value["token"].as_str())
                .map_err(|e| if signed { e } else { unsigned() })?;
            let challenge = value["challenge"]
                .as_str()
                .ok_or_else(|| Refusal::Malformed("url_verification without a challenge".into()))?;
            return Ok(Callback::Verified(Answer {
                content_type: "application/json; charset=utf-8",
                body: json!({ "challenge": challenge }).to_string(),
            }));
        }
        if !signed {
            return Err(unsigned());
        }
        if value["schema"] != "2.0" {
            // Schema 1.0 events (`uuid`, `event.type`) are what an app
            // subscribed before 2021 gets: rollcall asks for 2.0.
            self.check_token(value["token"].as_str())?;
            return Err(Refusal::Malformed(
                "only schema 2.0 events are taken (subscribe to the v2 events)".into(),
            ));
        }
        self.check_token(value["header"]["token"].as_str())?;
        let event_type = value["header"]["event_type"]
            .as_str()
            .ok_or_else(|| Refusal::Malformed("the event has no header.event_type".into()))?
            .to_owned();
        let event = self.parse(&value, &event_type, request.now)?;
        // Every event carries the Verification Token, which alone
        // authenticates a plain event: it is not kept (nor exported in a
        // package). An encrypted body is kept as received.
        let plain_body = self.crypto.is_none().then(|| self.redact(request.body));
        Ok(Callback::Event {
            events: vec![event],
            plaintext: self.redact(plaintext.as_bytes()),
            answer: self.answer(&event_type),
            body: plain_body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/feishu.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn headers_of(case: &Value) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in case["headers"].as_object().unwrap() {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value.as_str().unwrap()).unwrap(),
            );
        }
        headers
    }

    fn side(v: &Value) -> FeishuCallbacks {
        FeishuCallbacks::new(
            v["encrypt_key"].as_str(),
            v["verification_token"].as_str().unwrap(),
            FeishuIdType::UserId,
            Some("已收到".into()),
        )
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8], now: i64) -> CallbackRequest<'a> {
        CallbackRequest {
            method: CallbackMethod::Post,
            query: "",
            headers,
            body,
            now,
            replay_window_secs: 300,
        }
    }

    fn now_of(case: &Value) -> i64 {
        case["headers"]["X-Lark-Request-Timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn every_vector_is_answered_as_it_expects() {
        let v = vectors();
        let side = side(&v);
        for case in v["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let headers = headers_of(case);
            let body = case["body"].as_str().unwrap().as_bytes();
            let result = side.handle(&request(&headers, body, now_of(case)));
            match (name, result) {
                ("url_verification", Ok(Callback::Verified(answer))) => {
                    let json: Value = serde_json::from_str(&answer.body).unwrap();
                    assert_eq!(json, case["expect_json"], "{name}");
                }
                (
                    "message_receive",
                    Ok(Callback::Event {
                        events,
                        plaintext,
                        body,
                        ..
                    }),
                ) => {
                    // Kept without the verification token; the encrypted
                    // body as received.
                    let token = v["verification_token"].as_str().unwrap();
                    let kept = case["plaintext"].as_str().unwrap().replace(token, REDACTED);
                    assert_eq!(plaintext, kept);
                    assert!(!plaintext.contains(token));
                    assert_eq!(body, None);
                    let e = &events[0];
                    assert_eq!(e.sender, "zhangsan");
                    assert_eq!(e.text(), Some("打卡"));
                    assert_eq!(e.sent_at, 1764193070);
                    assert_eq!(e.dedup_key, "msg:om_bp3aeHe2C2MIMUBiDwHoBhu4UxJYCmHv");
                    assert_eq!(e.media_type, "application/json");
                }
                ("card_action", Ok(Callback::Event { events, answer, .. })) => {
                    // Not one of rollcall's buttons (its value has no key):
                    // kept, by its operator.
                    assert_eq!(events[0].sender, "LiSi");
                    assert_eq!(events[0].kind.name(), "other");
                    let json: Value = serde_json::from_str(&answer.body).unwrap();
                    assert_eq!(json["toast"]["content"], "已收到");
                }
                (name, other) => panic!("{name}: {other:?}"),
            }
        }
    }

    /// A signed, encrypted delivery of `plaintext` at `at`.
    fn sealed(crypto: &FeishuCrypto, plaintext: &Value, at: i64) -> (HeaderMap, Vec<u8>) {
        let body = json!({ "encrypt": crypto.encrypt(&plaintext.to_string()) })
            .to_string()
            .into_bytes();
        let mut headers = HeaderMap::new();
        let ts = at.to_string();
        headers.insert(TIMESTAMP, HeaderValue::from_str(&ts).unwrap());
        headers.insert(NONCE, HeaderValue::from_static("n0nce"));
        let sig = crypto.sign(&ts, "n0nce", &body);
        headers.insert(SIGNATURE, HeaderValue::from_str(&sig).unwrap());
        (headers, body)
    }

    fn v2(event_type: &str, event: Value, token: &str) -> Value {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": "e1", "event_type": event_type, "create_time": "1764193070000",
                "token": token, "app_id": "cli_x", "tenant_key": "t",
            },
            "event": event,
        })
    }

    #[test]
    fn refusals() {
        let v = vectors();
        let side = side(&v);
        let token = v["verification_token"].as_str().unwrap();
        let crypto = FeishuCrypto::new(v["encrypt_key"].as_str().unwrap());
        let text = json!({
            "sender": { "sender_id": { "user_id": "zhangsan", "open_id": "ou_1" } },
            "message": { "message_id": "om_1", "message_type": "text", "content": "{\"text\":\"打卡\"}" },
        });
        let at = 1_764_193_070;
        let ok = v2("im.message.receive_v1", text.clone(), token);
        let (headers, body) = sealed(&crypto, &ok, at);
        assert!(matches!(
            side.handle(&request(&headers, &body, at)),
            Ok(Callback::Event { .. })
        ));
        // Outside the window.
        assert_eq!(
            side.handle(&request(&headers, &body, at + 3600))
                .unwrap_err(),
            Refusal::StaleTimestamp
        );
        // One byte changed.
        let mut forged = body.clone();
        let n = forged.len() - 3;
        forged[n] ^= 1;
        assert!(matches!(
            side.handle(&request(&headers, &forged, at)),
            Err(Refusal::BadSignature(_))
        ));
        // No signature on an event: refused, and refused the same way as
        // an unsigned body that does not even decrypt (no padding oracle).
        let bare = HeaderMap::new();
        let unsigned = side.handle(&request(&bare, &body, at)).unwrap_err();
        assert!(matches!(unsigned, Refusal::BadSignature(_)));
        let mut garbled = crypto.encrypt("{}").into_bytes();
        let n = garbled.len() - 5;
        garbled[n] = if garbled[n] == b'A' { b'B' } else { b'A' };
        let garbled = json!({ "encrypt": String::from_utf8(garbled).unwrap() }).to_string();
        let not_json = json!({ "encrypt": crypto.encrypt("not json") }).to_string();
        for body in [garbled, not_json] {
            assert_eq!(
                side.handle(&request(&bare, body.as_bytes(), at))
                    .unwrap_err(),
                unsigned
            );
        }
        // Plain, though the app encrypts.
        let plain = ok.to_string().into_bytes();
        assert!(matches!(
            side.handle(&request(&bare, &plain, at)),
            Err(Refusal::BadRequest(_))
        ));
        // Another token.
        let (h, b) = sealed(&crypto, &v2("im.message.receive_v1", text.clone(), "x"), at);
        assert!(matches!(
            side.handle(&request(&h, &b, at)),
            Err(Refusal::BadSignature(_))
        ));
        // Another key.
        let (h, b) = sealed(&FeishuCrypto::new("another"), &ok, at);
        assert!(matches!(
            side.handle(&request(&h, &b, at)),
            Err(Refusal::BadSignature(_))
        ));
        // Not JSON, and a GET.
        assert!(matches!(
            side.handle(&request(&bare, b"<xml/>", at)),
            Err(Refusal::Malformed(_))
        ));
        let mut get = request(&headers, &body, at);
        get.method = CallbackMethod::Get;
        assert!(matches!(side.handle(&get), Err(Refusal::BadRequest(_))));
        // No user id (the permission is missing).
        let no_user = json!({
            "sender": { "sender_id": { "open_id": "ou_1" } },
            "message": { "message_id": "om_1", "message_type": "text", "content": "{\"text\":\"打卡\"}" },
        });
        let (h, b) = sealed(&crypto, &v2("im.message.receive_v1", no_user, token), at);
        assert!(matches!(
            side.handle(&request(&h, &b, at)),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn plain_events_need_the_token_and_no_key() {
        let side = FeishuCallbacks::new(None, "tok", FeishuIdType::OpenId, None);
        let event = json!({
            "reader": { "reader_id": { "open_id": "ou_1" }, "read_time": "1764193080123" },
            "message_id_list": ["om_1", "om_2"],
        });
        let body = v2("im.message.message_read_v1", event.clone(), "tok").to_string();
        let bare = HeaderMap::new();
        match side.handle(&request(&bare, body.as_bytes(), 0)) {
            Ok(Callback::Event {
                events,
                answer,
                body: kept,
                plaintext,
            }) => {
                // The token is not kept, in the body nor in the text.
                let kept = kept.unwrap();
                assert_eq!(kept, body.replace("\"tok\"", "\"[verification token]\""));
                assert_eq!(plaintext, kept);
                assert_eq!(events[0].sender, "ou_1");
                assert_eq!(
                    events[0].kind,
                    InboundKind::Read {
                        message_ids: vec!["om_1".into(), "om_2".into()],
                        read_at: Some(1_764_193_080_123),
                    }
                );
                assert_eq!(answer.body, "{}");
            }
            other => panic!("{other:?}"),
        }
        let wrong = v2("im.message.message_read_v1", event, "nope").to_string();
        assert!(matches!(
            side.handle(&request(&bare, wrong.as_bytes(), 0)),
            Err(Refusal::BadSignature(_))
        ));
        let challenge = json!({ "type": "url_verification", "token": "tok", "challenge": "c1" });
        match side.handle(&request(&bare, challenge.to_string().as_bytes(), 0)) {
            Ok(Callback::Verified(a)) => assert_eq!(a.body, r#"{"challenge":"c1"}"#),
            other => panic!("{other:?}"),
        }
        let challenge = json!({ "type": "url_verification", "token": "x", "challenge": "c1" });
        assert!(
            side.handle(&request(&bare, challenge.to_string().as_bytes(), 0))
                .is_err()
        );
        let sealed = json!({ "encrypt": "abc" }).to_string();
        assert!(matches!(
            side.handle(&request(&bare, sealed.as_bytes(), 0)),
            Err(Refusal::Undecryptable(_))
        ));
    }

    #[rstest::rstest]
    #[case::image(r#"{"image_key":"img_1"}"#, "image", "om_9/image/img_1")]
    #[case::file(
        r#"{"file_key":"file_1","file_name":"a.pdf"}"#,
        "file",
        "om_9/file/file_1"
    )]
    #[case::audio(r#"{"file_key":"file_2","duration":3}"#, "voice", "om_9/file/file_2")]
    #[case::media(
        r#"{"file_key":"file_3","image_key":"img_3"}"#,
        "video",
        "om_9/file/file_3"
    )]
    fn media_messages_name_their_message_and_key(
        #[case] content: &str,
        #[case] kind: &str,
        #[case] media_id: &str,
    ) {
        let side = FeishuCallbacks::new(None, "tok", FeishuIdType::UserId, None);
        let msg_type = match kind {
            "voice" => "audio",
            "video" => "media",
            k => k,
        };
        let event = json!({
            "sender": { "sender_id": { "user_id": "u1" } },
            "message": { "message_id": "om_9", "message_type": msg_type, "content": content, "create_time": "1764193070000" },
        });
        let body = v2("im.message.receive_v1", event, "tok").to_string();
        let bare = HeaderMap::new();
        let Ok(Callback::Event { events, .. }) = side.handle(&request(&bare, body.as_bytes(), 0))
        else {
            panic!("refused");
        };
        assert_eq!(events[0].kind.name(), kind);
        let id = match &events[0].kind {
            InboundKind::Image { media_id, .. } => media_id.clone(),
            _ => events[0].attachment().unwrap().to_owned(),
        };
        assert_eq!(id, media_id);
        assert_eq!(events[0].sent_at, 1764193070);
        assert_eq!(events[0].dedup_key, "msg:om_9");
    }

    #[test]
    fn a_location_and_a_press_of_our_card() {
        let side = FeishuCallbacks::new(None, "tok", FeishuIdType::UserId, None);
        let bare = HeaderMap::new();
        let location = json!({
            "sender": { "sender_id": { "user_id": "u1" } },
            "message": { "message_id": "om_1", "message_type": "location",
                "content": "{\"name\":\"一号工地\",\"longitude\":\"121.4737\",\"latitude\":\"31.2304\"}" },
        });
        let body = v2("im.message.receive_v1", location, "tok").to_string();
        let Ok(Callback::Event { events, .. }) = side.handle(&request(&bare, body.as_bytes(), 0))
        else {
            panic!("refused");
        };
        assert_eq!(
            events[0].kind,
            InboundKind::Location {
                msg_id: "om_1".into(),
                latitude: 31.2304,
                longitude: 121.4737,
                scale: None,
                label: Some("一号工地".into()),
            }
        );
        for (lat, lon) in [("NaN", "121.4"), ("31.2", "inf"), ("95", "121.4")] {
            let content = json!({ "name": "x", "latitude": lat, "longitude": lon }).to_string();
            let location = json!({
                "sender": { "sender_id": { "user_id": "u1" } },
                "message": { "message_id": "om_2", "message_type": "location", "content": content },
            });
            let body = v2("im.message.receive_v1", location, "tok").to_string();
            assert!(
                matches!(
                    side.handle(&request(&bare, body.as_bytes(), 0)),
                    Err(Refusal::Malformed(_))
                ),
                "{lat} {lon}"
            );
        }
        let press = json!({
            "operator": { "user_id": "u1", "open_id": "ou_1" },
            "action": { "tag": "button", "value": { "key": "k1", "card": "c1" } },
            "context": { "open_message_id": "om_7" },
        });
        let body = v2("card.action.trigger", press, "tok").to_string();
        let Ok(Callback::Event { events, answer, .. }) =
            side.handle(&request(&bare, body.as_bytes(), 0))
        else {
            panic!("refused");
        };
        assert_eq!(
            events[0].kind,
            InboundKind::CardButton {
                key: "k1".into(),
                card_id: "c1".into(),
                card_ref: Some("om_7".into()),
            }
        );
        // Without a toast text: an empty answer.
        assert_eq!(answer.body, "{}");
    }
}
