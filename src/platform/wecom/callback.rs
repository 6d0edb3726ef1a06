//! WeCom callback XML: the encrypted envelope and the decrypted message, parsed
//! with quick-xml into a typed [`InboundEvent`].

use serde::Deserialize;

use crate::platform::{InboundEvent, InboundKind};

/// Why a callback body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("required element <{0}> is missing")]
    Missing(&'static str),
    #[error("element <{0}> is not a number")]
    NotANumber(&'static str),
    #[error("the location is not a place on Earth")]
    NotOnEarth,
    #[error("the message is for app {got}, not this one ({want})")]
    OtherAgent { got: String, want: i64 },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
}

/// Extracts the `Encrypt` element of a POSTed callback envelope.
pub fn parse_envelope(body: &str) -> Result<String, ParseError> {
    let env: Envelope =
        quick_xml::de::from_str(body).map_err(|e| ParseError::Xml(e.to_string()))?;
    env.encrypt
        .filter(|e| !e.is_empty())
        .ok_or(ParseError::Missing("Encrypt"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMessage {
    #[serde(rename = "FromUserName")]
    from_user: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: Option<String>,
    #[serde(rename = "Content")]
    content: Option<String>,
    #[serde(rename = "MsgId")]
    msg_id: Option<String>,
    #[serde(rename = "Location_X")]
    location_x: Option<String>,
    #[serde(rename = "Location_Y")]
    location_y: Option<String>,
    #[serde(rename = "Scale")]
    scale: Option<String>,
    #[serde(rename = "Label")]
    label: Option<String>,
    #[serde(rename = "PicUrl")]
    pic_url: Option<String>,
    #[serde(rename = "MediaId")]
    media_id: Option<String>,
    #[serde(rename = "Format")]
    format: Option<String>,
    #[serde(rename = "ThumbMediaId")]
    thumb_media_id: Option<String>,
    #[serde(rename = "FileName")]
    file_name: Option<String>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "EventKey")]
    event_key: Option<String>,
    #[serde(rename = "TaskId")]
    task_id: Option<String>,
    #[serde(rename = "CardType")]
    card_type: Option<String>,
    #[serde(rename = "ResponseCode")]
    response_code: Option<String>,
    #[serde(rename = "AgentID")]
    agent_id: Option<String>,
}

fn required(v: Option<String>, name: &'static str) -> Result<String, ParseError> {
    v.ok_or(ParseError::Missing(name))
}

fn number<T: std::str::FromStr>(v: Option<String>, name: &'static str) -> Result<T, ParseError> {
    required(v, name)?
        .trim()
        .parse()
        .map_err(|_| ParseError::NotANumber(name))
}

/// Parses a decrypted WeCom message into an [`InboundEvent`]. Unknown message
/// and event types are kept as [`InboundKind::Other`], not refused.
pub fn parse_message(plaintext: &str) -> Result<InboundEvent, ParseError> {
    event(parse_raw(plaintext)?)
}

/// [`parse_message`] for app `agent_id`'s callback URL: a message that
/// names another app (`AgentID`) is refused. Messages without one (the
/// address book's events) are taken.
pub fn parse_app_message(plaintext: &str, agent_id: i64) -> Result<InboundEvent, ParseError> {
    let raw = parse_raw(plaintext)?;
    if let Some(got) = raw
        .agent_id
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        && got.parse::<i64>().ok() != Some(agent_id)
    {
        return Err(ParseError::OtherAgent {
            got: got.to_owned(),
            want: agent_id,
        });
    }
    event(raw)
}

fn parse_raw(plaintext: &str) -> Result<RawMessage, ParseError> {
    quick_xml::de::from_str(plaintext).map_err(|e| ParseError::Xml(e.to_string()))
}

fn event(raw: RawMessage) -> Result<InboundEvent, ParseError> {
    let msg_type = required(raw.msg_type, "MsgType")?;
    let from_user = required(raw.from_user, "FromUserName")?;
    let create_time: i64 = number(raw.create_time, "CreateTime")?;
    let kind = match msg_type.as_str() {
        "text" => InboundKind::Text {
            msg_id: required(raw.msg_id, "MsgId")?,
            content: raw.content.unwrap_or_default(),
        },
        "location" => {
            let latitude: f64 = number(raw.location_x, "Location_X")?;
            let longitude: f64 = number(raw.location_y, "Location_Y")?;
            if !crate::platform::on_earth(latitude, longitude) {
                return Err(ParseError::NotOnEarth);
            }
            InboundKind::Location {
                msg_id: required(raw.msg_id, "MsgId")?,
                latitude,
                longitude,
                scale: raw.scale.and_then(|s| s.trim().parse().ok()),
                label: raw.label,
            }
        }
        "image" => InboundKind::Image {
            msg_id: required(raw.msg_id, "MsgId")?,
            pic_url: raw.pic_url,
            media_id: required(raw.media_id, "MediaId")?,
        },
        // WeCom documents voice (MediaId, Format) and video (MediaId,
        // ThumbMediaId) for self-built apps; file messages carry MediaId and,
        // in what clients send, FileName, which is optional here.
        "voice" => InboundKind::Voice {
            msg_id: required(raw.msg_id, "MsgId")?,
            media_id: required(raw.media_id, "MediaId")?,
            format: raw.format.filter(|f| !f.is_empty()),
        },
        "video" => InboundKind::Video {
            msg_id: required(raw.msg_id, "MsgId")?,
            media_id: required(raw.media_id, "MediaId")?,
            thumb_media_id: raw.thumb_media_id.filter(|t| !t.is_empty()),
        },
        "file" => InboundKind::File {
            msg_id: required(raw.msg_id, "MsgId")?,
            media_id: required(raw.media_id, "MediaId")?,
            file_name: raw.file_name.filter(|n| !n.trim().is_empty()),
        },
        "event" => match raw.event.as_deref() {
            Some("template_card_event") => InboundKind::CardButton {
                key: raw.event_key.unwrap_or_default(),
                card_id: required(raw.task_id, "TaskId")?,
                card_ref: raw.response_code.filter(|c| !c.is_empty()),
            },
            other => InboundKind::Other {
                msg_type,
                event: other.map(str::to_owned),
                event_key: raw.event_key.filter(|k| !k.is_empty()),
                msg_id: raw.msg_id,
            },
        },
        _ => InboundKind::Other {
            msg_type,
            event: raw.event,
            event_key: raw.event_key.filter(|k| !k.is_empty()),
            msg_id: raw.msg_id,
        },
    };
    Ok(InboundEvent {
        own_part: None,
        dedup_key: dedup_key(&from_user, create_time, &kind),
        sender: from_user,
        sent_at: create_time,
        media_type: "application/xml".to_owned(),
        kind,
    })
}

/// What identifies one delivery, so that WeCom's retry of it is recognised:
/// the MsgId for messages; for events FromUserName + CreateTime + Event +
/// EventKey (+ TaskId for card presses).
pub fn dedup_key(from_user: &str, create_time: i64, kind: &InboundKind) -> String {
    let event = |event: &str, key: &str, task: &str| {
        format!("event:{from_user}:{create_time}:{event}:{key}:{task}")
    };
    match kind {
        InboundKind::Text { msg_id, .. }
        | InboundKind::Location { msg_id, .. }
        | InboundKind::Image { msg_id, .. }
        | InboundKind::Voice { msg_id, .. }
        | InboundKind::Video { msg_id, .. }
        | InboundKind::File { msg_id, .. } => format!("msg:{msg_id}"),
        InboundKind::CardButton { key, card_id, .. } => event("template_card_event", key, card_id),
        // WeCom's parser makes none (its punches are not events, and it
        // pushes no reads).
        InboundKind::Punch { .. } => event("punch", "", ""),
        InboundKind::Read { .. } => event("read", "", ""),
        InboundKind::Other {
            msg_id: Some(id), ..
        } => format!("msg:{id}"),
        InboundKind::Other {
            msg_type,
            event: ev,
            event_key,
            ..
        } => event(
            ev.as_deref().unwrap_or(msg_type),
            event_key.as_deref().unwrap_or(""),
            "",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::nan("NaN", "121.4")]
    #[case::infinite("31.2", "inf")]
    #[case::out_of_range("91", "121.4")]
    fn a_location_off_earth_is_refused(#[case] x: &str, #[case] y: &str) {
        let xml = format!(
            "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>location</MsgType><Location_X>{x}</Location_X><Location_Y>{y}</Location_Y><MsgId>10</MsgId></xml>"
        );
        assert!(matches!(parse_message(&xml), Err(ParseError::NotOnEarth)));
    }

    #[rstest]
    #[case::text(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content><![CDATA[打卡]]></Content><MsgId>9</MsgId></xml>",
        "text",
        "msg:9"
    )]
    #[case::location(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>location</MsgType><Location_X>31.2</Location_X><Location_Y>121.4</Location_Y><MsgId>10</MsgId></xml>",
        "location",
        "msg:10"
    )]
    #[case::image(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>image</MsgType><MediaId>m</MediaId><MsgId>11</MsgId></xml>",
        "image",
        "msg:11"
    )]
    #[case::card(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>template_card_event</Event><EventKey>ack</EventKey><TaskId>t1</TaskId></xml>",
        "card_button",
        "event:u:5:template_card_event:ack:t1"
    )]
    #[case::enter(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>enter_agent</Event><EventKey></EventKey></xml>",
        "other",
        "event:u:5:enter_agent::"
    )]
    #[case::unknown_event(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>change_contact</Event></xml>",
        "other",
        "event:u:5:change_contact::"
    )]
    #[case::voice(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>voice</MsgType><MediaId>v</MediaId><Format>amr</Format><MsgId>13</MsgId></xml>",
        "voice",
        "msg:13"
    )]
    #[case::video(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>video</MsgType><MediaId>v</MediaId><ThumbMediaId>t</ThumbMediaId><MsgId>14</MsgId></xml>",
        "video",
        "msg:14"
    )]
    #[case::file(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>file</MsgType><MediaId>f</MediaId><FileName><![CDATA[现场说明.pdf]]></FileName><MsgId>15</MsgId></xml>",
        "file",
        "msg:15"
    )]
    #[case::unknown_type(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>link</MsgType><Title>t</Title><MsgId>12</MsgId></xml>",
        "other",
        "msg:12"
    )]
    fn parses_kinds_and_keys(#[case] xml: &str, #[case] kind: &str, #[case] key: &str) {
        let ev = parse_message(xml).unwrap();
        assert_eq!(ev.kind.name(), kind);
        assert_eq!(ev.dedup_key, key);
    }

    #[rstest]
    #[case::not_xml("hello")]
    #[case::unclosed("<xml><MsgType>text")]
    #[case::no_type("<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime></xml>")]
    #[case::bad_time(
        "<xml><FromUserName>u</FromUserName><CreateTime>x</CreateTime><MsgType>text</MsgType><MsgId>1</MsgId></xml>"
    )]
    #[case::text_without_id(
        "<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType></xml>"
    )]
    fn refuses_malformed(#[case] xml: &str) {
        assert!(parse_message(xml).is_err());
    }

    #[test]
    fn media_messages_keep_their_fields() {
        let file = parse_message("<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>file</MsgType><MediaId>f1</MediaId><FileName><![CDATA[现场说明.pdf]]></FileName><MsgId>15</MsgId></xml>").unwrap();
        assert_eq!(
            file.kind,
            InboundKind::File {
                msg_id: "15".into(),
                media_id: "f1".into(),
                file_name: Some("现场说明.pdf".into())
            }
        );
        assert_eq!(file.attachment(), Some("f1"));
        let voice = parse_message("<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>voice</MsgType><MediaId>v1</MediaId><Format>amr</Format><MsgId>13</MsgId></xml>").unwrap();
        assert_eq!(
            voice.kind,
            InboundKind::Voice {
                msg_id: "13".into(),
                media_id: "v1".into(),
                format: Some("amr".into())
            }
        );
        // A file message without a MediaId cannot be fetched: refused.
        assert!(parse_message("<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>file</MsgType><MsgId>16</MsgId></xml>").is_err());
    }

    #[test]
    fn envelope_needs_encrypt() {
        assert_eq!(
            parse_envelope("<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>").unwrap(),
            "abc"
        );
        assert!(parse_envelope("<xml><ToUserName>x</ToUserName></xml>").is_err());
        assert!(parse_envelope("<xml><Encrypt><![CDATA[abc").is_err());
    }
}
