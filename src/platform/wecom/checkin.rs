//! WeCom's own attendance records (打卡): `checkin/getcheckindata`, read so
//! that employees who clock in with WeCom's 打卡 app need not also chat.
//!
//! The app must be allowed to read them: in the admin console, 打卡 → 管理
//! → API (可调用接口的应用) lists the self-built apps that may; without it
//! WeCom answers 48002, which is reported as such.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{WecomApi, refusal};
use crate::platform::{
    InboundEvent, InboundKind, PlatformError, PunchRecord, periods, punch_key, punch_request,
};

const PATH: &str = "/cgi-bin/checkin/getcheckindata";
/// Most users one call takes.
const USERS_PER_CALL: usize = 100;
/// The longest period one call may ask about.
const LONGEST_DAYS: i64 = 30;
/// `opencheckindatatype`: 1 上下班打卡, 2 外出打卡, 3 both.
const ALL_PUNCHES: i64 = 3;
/// The app is not among those allowed to read 打卡 data.
const NO_PERMISSION: i64 = 48002;

impl WecomApi {
    /// Every punch of `users` from `from` to `to`, in as many calls as
    /// WeCom's limits need. Rows WeCom fills in for a scheduled punch
    /// nobody made (`exception_type` 未打卡, at the scheduled time) are
    /// left out. `lat`/`lng` come as millionths of a degree; 0 is none.
    pub async fn checkin_data(
        &self,
        users: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PunchRecord>, PlatformError> {
        #[derive(Deserialize)]
        struct Records {
            #[serde(default)]
            checkindata: Vec<Box<serde_json::value::RawValue>>,
        }
        let mut punches = Vec::new();
        for (start, end) in periods(from, to, chrono::Duration::days(LONGEST_DAYS)) {
            for chunk in users.chunks(USERS_PER_CALL) {
                let body = json!({
                    "opencheckindatatype": ALL_PUNCHES,
                    "starttime": start.timestamp(),
                    "endtime": end.timestamp(),
                    "useridlist": chunk,
                });
                let (reply, raw) = self.post_json(PATH, &body).await?;
                match reply.errcode {
                    0 => {}
                    NO_PERMISSION => {
                        return Err(PlatformError::Permanent(format!(
                            "{PATH}: {} {}: the app may not read 打卡 data (打卡 → 管理 → API: add it to 可调用接口的应用)",
                            reply.errcode, reply.errmsg
                        )));
                    }
                    _ => return Err(refusal(PATH, &reply)),
                }
                let records: Records = serde_json::from_str(&raw).map_err(|e| {
                    PlatformError::Permanent(format!("{PATH}: unreadable answer ({e})"))
                })?;
                for record in records.checkindata {
                    let value: Value = serde_json::from_str(record.get()).map_err(|e| {
                        PlatformError::Permanent(format!("{PATH}: unreadable record ({e})"))
                    })?;
                    let Some(event) = punch_of(&value) else {
                        continue;
                    };
                    if event.sent_at < from.timestamp() || event.sent_at > to.timestamp() {
                        continue;
                    }
                    punches.push(PunchRecord {
                        event,
                        raw: record.get().to_owned(),
                        request: punch_request(
                            PATH,
                            &[
                                ("starttime", &start.timestamp().to_string()),
                                ("endtime", &end.timestamp().to_string()),
                            ],
                        ),
                    });
                }
            }
        }
        Ok(punches)
    }
}

/// One record of `checkindata` as a punch, or `None` for a row that is no
/// punch (未打卡) or names no one or no time.
fn punch_of(record: &Value) -> Option<InboundEvent> {
    let missed = record["exception_type"]
        .as_str()
        .is_some_and(|e| e.contains("未打卡"));
    let user = record["userid"].as_str().filter(|u| !u.is_empty())?;
    let at = record["checkin_time"].as_i64().filter(|t| *t > 0)?;
    if missed {
        return None;
    }
    let degrees = |key: &str| {
        record[key]
            .as_i64()
            .filter(|v| *v != 0)
            .map(|v| v as f64 / 1_000_000.0)
    };
    let label = ["location_title", "location_detail"]
        .iter()
        .filter_map(|k| record[*k].as_str())
        .find(|s| !s.is_empty())
        .map(str::to_owned);
    let (latitude, longitude) = match (degrees("lat"), degrees("lng")) {
        (Some(lat), Some(lng)) => (Some(lat), Some(lng)),
        _ => (None, None),
    };
    Some(InboundEvent {
        own_part: None,
        sender: user.to_owned(),
        sent_at: at,
        dedup_key: punch_key(user, at * 1000),
        media_type: "application/json".to_owned(),
        kind: InboundKind::Punch {
            latitude,
            longitude,
            label,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Who, when (s), where (degrees), and the place's name.
    type Expected<'a> = Option<(&'a str, i64, Option<(f64, f64)>, Option<&'a str>)>;

    #[rstest]
    #[case::a_punch_with_a_place(
        json!({"userid": "zhangsan", "checkin_type": "上班打卡", "exception_type": "", "checkin_time": 1764464580,
               "location_title": "一号工地", "location_detail": "上海市黄浦区", "lat": 31230400, "lng": 121473700}),
        Some(("zhangsan", 1764464580, Some((31.2304, 121.4737)), Some("一号工地")))
    )]
    #[case::a_late_punch_counts(
        json!({"userid": "lisi", "exception_type": "时间异常", "checkin_time": 1764468000, "lat": 0, "lng": 0}),
        Some(("lisi", 1764468000, None, None))
    )]
    #[case::a_missed_punch_is_none(
        json!({"userid": "lisi", "exception_type": "未打卡", "checkin_time": 1764464400, "lat": 0, "lng": 0}),
        None
    )]
    #[case::missed_among_others(
        json!({"userid": "lisi", "exception_type": "地点异常;未打卡", "checkin_time": 1764464400}),
        None
    )]
    #[case::no_time(json!({"userid": "lisi", "exception_type": ""}), None)]
    #[case::no_one(json!({"userid": "", "checkin_time": 1764464400}), None)]
    fn records_become_punches(#[case] record: Value, #[case] expected: Expected<'_>) {
        let got = punch_of(&record).map(|e| {
            let InboundKind::Punch {
                latitude,
                longitude,
                label,
            } = e.kind
            else {
                panic!("not a punch: {e:?}");
            };
            assert_eq!(e.dedup_key, punch_key(&e.sender, e.sent_at * 1000));
            (e.sender, e.sent_at, latitude.zip(longitude), label)
        });
        let expected =
            expected.map(|(u, t, place, label)| (u.to_owned(), t, place, label.map(str::to_owned)));
        assert_eq!(got, expected);
    }
}
