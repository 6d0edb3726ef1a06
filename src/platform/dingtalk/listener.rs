//! A DingTalk tenant in Stream mode: the [`Listener`] that keeps the Stream
//! connection (`stream.rs`) and turns each frame into an [`InboundEvent`]
//! stored through the [`EventSink`] before the frame is acknowledged.
//!
//! - robot messages (CALLBACK `/v1.0/im/bot/messages/get`) are parsed as over
//!   HTTP, so the same message is one row whichever way it came (`msg:<id>`);
//! - card callbacks (CALLBACK `/v1.0/card/instances/callback`) become card
//!   button presses, answered with an empty response (the card is updated
//!   through the API once the press is handled);
//! - events (EVENT) are kept by their `eventId` (`event:<id>`), which the
//!   gateway keeps when it delivers one again;
//! - anything else, or a frame whose data does not parse, is kept as
//!   [`InboundKind::Other`] under its `messageId`: nothing that arrived is
//!   dropped unrecorded.
//!
//! The frame's exact text is the stored raw payload; its `data` the
//! plaintext.

use std::sync::Arc;

use serde_json::{Value, json};

use super::callbacks::{events_of, parse_card_callback, parse_robot_message};
use super::stream::{
    FrameHandler, FrameType, HandlerError, StreamConfig, StreamFrame, TOPIC_BOT_MESSAGE,
    TOPIC_CARD_CALLBACK,
};
use crate::platform::{EventSink, InboundEvent, InboundKind, Listener};

/// One DingTalk app's Stream connection.
#[derive(Debug)]
pub struct DingtalkListener {
    config: StreamConfig,
}

impl DingtalkListener {
    pub fn new(config: StreamConfig) -> DingtalkListener {
        DingtalkListener { config }
    }
}

#[async_trait::async_trait]
impl Listener for DingtalkListener {
    fn platform(&self) -> &'static str {
        "dingtalk"
    }

    async fn run(
        &self,
        sink: Arc<dyn EventSink>,
        shutdown: futures::future::BoxFuture<'static, ()>,
    ) -> Result<(), String> {
        super::stream::run(self.config.clone(), Arc::new(Frames { sink }), shutdown)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Stores each frame, then lets the stream client acknowledge it.
struct Frames {
    sink: Arc<dyn EventSink>,
}

#[async_trait::async_trait]
impl FrameHandler for Frames {
    async fn handle(&self, frame: &StreamFrame) -> Result<Option<Value>, HandlerError> {
        let now = chrono::Utc::now().timestamp();
        let events = frame_events(frame, now);
        let card = events
            .iter()
            .any(|e| matches!(e.kind, InboundKind::CardButton { .. }));
        // All before the ack; a redelivery after a partial failure finds the
        // stored ones by their keys.
        for event in &events {
            self.sink
                .store(event, &frame.raw, &frame.data)
                .await
                .map_err(HandlerError::new)?;
        }
        // A card callback's response may change the card; `{}` leaves it
        // as it is (rollcall updates it once the press is handled).
        Ok(card.then(|| json!({})))
    }
}

/// The events a frame carries (see the module's documentation): one, or a
/// punch each for an attendance event that lists several. `now` (seconds)
/// dates frames that carry no time of their own.
pub fn frame_events(frame: &StreamFrame, now: i64) -> Vec<InboundEvent> {
    let topic = frame.headers.topic.as_deref().unwrap_or_default();
    let sent_at = frame.headers.time_ms().map_or(now, |ms| ms / 1000);
    let parsed = match frame.frame_type {
        FrameType::Callback if topic == TOPIC_BOT_MESSAGE => parse_robot_message(&frame.data)
            .map(|e| vec![e])
            .map_err(|e| e.to_string()),
        FrameType::Callback if topic == TOPIC_CARD_CALLBACK => {
            parse_card_callback(&frame.data, sent_at)
                .map(|e| vec![e])
                .map_err(|e| e.to_string())
        }
        FrameType::Event => {
            let event_type = frame.headers.event_type.clone().unwrap_or_default();
            let id = frame
                .headers
                .event_id
                .clone()
                .or_else(|| frame.headers.message_id.clone());
            match (frame.data_json(), id) {
                (Ok(value), Some(id)) => {
                    let born = frame
                        .headers
                        .event_born_time_ms()
                        .map_or(sent_at, |ms| ms / 1000);
                    Ok(events_of(&event_type, &value, format!("event:{id}"), born))
                }
                (Err(e), _) => Err(e.to_string()),
                (_, None) => Err("event frame has no eventId".to_owned()),
            }
        }
        _ => Err(format!(
            "no parser for {} frames of topic {topic:?}",
            frame.frame_type.as_str()
        )),
    };
    parsed.unwrap_or_else(|reason| {
        tracing::warn!(topic, %reason, "DingTalk frame kept as it came");
        vec![InboundEvent {
            own_part: None,
            sender: String::new(),
            sent_at,
            dedup_key: format!(
                "frame:{}",
                frame.message_id().map_or_else(
                    || {
                        use sha2::Digest as _;
                        let d = sha2::Sha256::digest(frame.raw.as_bytes());
                        d[..12].iter().map(|b| format!("{b:02x}")).collect()
                    },
                    str::to_owned
                )
            ),
            media_type: "application/json".to_owned(),
            kind: InboundKind::Other {
                msg_type: frame.frame_type.as_str().to_ascii_lowercase(),
                event: Some(topic.to_owned()),
                event_key: None,
                msg_id: frame.message_id().map(str::to_owned),
            },
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, headers: Value, data: Value) -> StreamFrame {
        let raw = json!({
            "specVersion": "1.0",
            "type": kind,
            "headers": headers,
            "data": data.to_string(),
        })
        .to_string();
        StreamFrame::parse(&raw).unwrap()
    }

    #[test]
    fn a_robot_message_frame_is_the_message() {
        let f = frame(
            "CALLBACK",
            json!({"topic": TOPIC_BOT_MESSAGE, "messageId": "m1", "time": "1700000000000"}),
            json!({"msgId": "msgA", "msgtype": "text", "text": {"content": " 打卡 "},
                   "senderStaffId": "zhangsan", "createAt": 1700000001000_i64}),
        );
        let e = frame_events(&f, 0).remove(0);
        assert_eq!(e.sender, "zhangsan");
        assert_eq!(e.sent_at, 1_700_000_001);
        assert_eq!(e.dedup_key, "msg:msgA");
        assert_eq!(e.text(), Some("打卡"));
    }

    #[test]
    fn a_card_callback_frame_is_a_button_press() {
        let content =
            json!({"cardPrivateData": {"actionIds": ["a1"], "params": {"key": "ack:42"}}});
        let f = frame(
            "CALLBACK",
            json!({"topic": TOPIC_CARD_CALLBACK, "messageId": "m2", "time": "1700000000000"}),
            json!({"type": "actionCallback", "outTrackId": "card-7", "userId": "lisi",
                   "content": content.to_string()}),
        );
        let e = frame_events(&f, 0).remove(0);
        assert_eq!(e.sender, "lisi");
        assert_eq!(e.sent_at, 1_700_000_000);
        assert_eq!(e.dedup_key, "card:card-7:lisi:ack:42");
        assert_eq!(
            e.kind,
            InboundKind::CardButton {
                key: "ack:42".into(),
                card_id: "card-7".into(),
                card_ref: Some("card-7".into()),
            }
        );
    }

    #[test]
    fn a_card_press_without_a_key_param_names_its_action() {
        let content = json!({"cardPrivateData": {"actionIds": ["contacted"], "params": {}}});
        let f = frame(
            "CALLBACK",
            json!({"topic": TOPIC_CARD_CALLBACK, "messageId": "m3"}),
            json!({"outTrackId": "card-8", "userId": "lisi", "content": content.to_string()}),
        );
        let e = frame_events(&f, 1_700_000_000).remove(0);
        assert_eq!(e.sent_at, 1_700_000_000);
        assert!(matches!(e.kind, InboundKind::CardButton { ref key, .. } if key == "contacted"));
    }

    #[test]
    fn an_event_frame_is_kept_by_its_event_id() {
        let f = frame(
            "EVENT",
            json!({"topic": "*", "messageId": "m4", "eventId": "ev-9", "eventType": "user_modify_org",
                   "eventBornTime": "1700000002000"}),
            json!({"UserId": ["wangwu"]}),
        );
        let e = frame_events(&f, 0).remove(0);
        assert_eq!(e.dedup_key, "event:ev-9");
        assert_eq!(e.sender, "wangwu");
        assert_eq!(e.sent_at, 1_700_000_002);
        assert!(
            matches!(e.kind, InboundKind::Other { ref event, .. } if event.as_deref() == Some("user_modify_org"))
        );
    }

    /// The attendance app's punch: who, when (the punch's own time, not the
    /// event's), where; `dataList` as DingTalk documents it, `DataList` as
    /// the SDK's vectors spell it.
    #[rstest::rstest]
    #[case("dataList")]
    #[case("DataList")]
    fn an_attendance_event_is_a_punch(#[case] list: &str) {
        let f = frame(
            "EVENT",
            json!({"topic": "*", "messageId": "m7", "eventId": "ev-10", "eventType": "attendance_check_record",
                   "eventBornTime": "1700000099000"}),
            json!({list: [{"userId": "wangwu", "checkTime": 1700000002000_i64, "address": "一号工地",
                           "latitude": "31.2304", "longitude": 121.4737}]}),
        );
        let e = frame_events(&f, 0).remove(0);
        // Known by who and when, as the same punch read from the records is.
        assert_eq!(e.dedup_key, "punch:wangwu:1700000002000");
        assert_eq!(e.sender, "wangwu");
        assert_eq!(e.sent_at, 1_700_000_002);
        assert_eq!(
            e.kind,
            InboundKind::Punch {
                latitude: Some(31.2304),
                longitude: Some(121.4737),
                label: Some("一号工地".into()),
            }
        );
        // Several people's punches in one event: a punch each.
        let f = frame(
            "EVENT",
            json!({"topic": "*", "messageId": "m9", "eventId": "ev-12", "eventType": "attendance_check_record"}),
            json!({list: [{"userId": "wangwu", "checkTime": 1700000002000_i64},
                          {"userId": "zhaoliu", "checkTime": 1700000003000_i64},
                          {"checkTime": 1700000004000_i64}]}),
        );
        let events = frame_events(&f, 0);
        let who: Vec<(&str, &str, i64)> = events
            .iter()
            .map(|e| (e.sender.as_str(), e.dedup_key.as_str(), e.sent_at))
            .collect();
        assert_eq!(
            who,
            [
                ("wangwu", "punch:wangwu:1700000002000", 1_700_000_002),
                ("zhaoliu", "punch:zhaoliu:1700000003000", 1_700_000_003)
            ]
        );
        // A punch that names nobody is kept as the event it is.
        let f = frame(
            "EVENT",
            json!({"topic": "*", "messageId": "m8", "eventId": "ev-11", "eventType": "attendance_check_record"}),
            json!({list: []}),
        );
        assert!(matches!(
            frame_events(&f, 0).remove(0).kind,
            InboundKind::Other { .. }
        ));
    }

    #[test]
    fn a_frame_that_does_not_parse_is_kept_as_it_came() {
        let f = frame(
            "CALLBACK",
            json!({"topic": TOPIC_BOT_MESSAGE, "messageId": "m5"}),
            json!({"msgtype": "text"}),
        );
        let e = frame_events(&f, 1_700_000_000).remove(0);
        assert_eq!(e.dedup_key, "frame:m5");
        assert!(
            matches!(e.kind, InboundKind::Other { ref msg_id, .. } if msg_id.as_deref() == Some("m5"))
        );
        let f = frame(
            "CALLBACK",
            json!({"topic": "/v1.0/some/other", "messageId": "m6"}),
            json!({}),
        );
        assert_eq!(frame_events(&f, 0).remove(0).dedup_key, "frame:m6");
    }
}
