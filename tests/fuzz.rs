//! Hostile input, property-based (proptest; issue 16, first part): every
//! parser a message, a caption or a callback reaches, fed arbitrary text,
//! arbitrary bytes, and the third-party vectors with random damage. Each
//! must return (a value or a typed error), never panic; the parsers of
//! values must keep what they promise of what they accept.
//!
//! The suite runs proptest's 256 cases per property (`PROPTEST_CASES`
//! overrides);
//! the longer run is `PROPTEST_CASES=2000000 cargo test --release --test fuzz`.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use proptest::prelude::*;
use serde_json::Value;

use rollcall::attendance::sheet::Month;
use rollcall::attendance::shift::{Direction, Shift};
use rollcall::commands::{COMMANDS, parse, parse_archive_caption, parse_caption};
use rollcall::hr::onboarding::{STEPS, check, phone};

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every `field` of every case of a vector file (and of its `robot` part).
fn seeds(name: &str, field: &str) -> Vec<String> {
    let v = vectors(name);
    let mut out = Vec::new();
    for cases in [&v["cases"], &v["robot"]["cases"]] {
        for c in cases.as_array().into_iter().flatten() {
            if let Some(s) = c[field].as_str() {
                out.push(s.to_owned());
            }
        }
    }
    assert!(!out.is_empty(), "{name} has {field}s");
    out
}

/// `seed` with a few bytes replaced, removed or inserted (as text, lossy).
fn damaged(seeds: Vec<String>) -> impl Strategy<Value = String> {
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..6),
    )
        .prop_map(|(seed, edits)| {
            let mut bytes = seed.into_bytes();
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

/// A command line: a known name (English or Chinese, with / or ／) and
/// random words, dates and numbers after it.
fn command_line() -> impl Strategy<Value = String> {
    let names: Vec<String> = COMMANDS
        .iter()
        .flat_map(|(en, zh)| [format!("/{en}"), format!("/{zh}"), format!("／{zh}")])
        .collect();
    let word = prop_oneof![
        "[a-z0-9_#]{0,12}",
        "\\PC{0,6}",
        "20[0-9]{2}[-/.][0-9]{1,2}([-/.][0-9]{1,2})?",
        Just("考勤".to_owned()),
        Just("邮寄".to_owned()),
        Just("签收".to_owned()),
        Just("已通知".to_owned()),
        Just("RC-000001".to_owned()),
    ];
    (
        proptest::sample::select(names),
        proptest::collection::vec(word, 0..6),
        "[ \t　]{1,3}",
    )
        .prop_map(|(name, words, gap)| {
            let mut line = name;
            for w in words {
                line.push_str(&gap);
                line.push_str(&w);
            }
            line
        })
}

proptest! {
    #[test]
    fn any_text_parses_as_a_command_or_a_typed_error(text in "\\PC{0,80}") {
        let _ = parse(&text);
        let _ = parse_caption(&text);
        let _ = parse_archive_caption(&text);
    }

    #[test]
    fn command_lines_parse_or_are_refused_with_a_reason(line in command_line()) {
        match parse(&line) {
            Ok(_) => {}
            // Every refusal of a known command says what was wrong.
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn a_caption_keeps_its_person(who in "[\\p{Han}a-z]{1,8}", note in "[\\p{Han}a-z ]{0,20}") {
        let text = format!("#合同 {who} {note}");
        let c = parse_archive_caption(&text).expect("a caption").expect("with a person");
        prop_assert_eq!(c.tag, "合同");
        prop_assert_eq!(&c.who, &who);
        let text = format!("#证据 {who} {note}");
        let c = parse_caption(&text).expect("a caption").expect("with a person");
        prop_assert_eq!(c.who, who);
    }

    #[test]
    fn a_month_parses_only_as_a_real_month(text in "\\PC{0,12}", y in 1000i32..9999, m in 0u32..15) {
        let _ = Month::parse(&text);
        let parsed = Month::parse(&format!("{y}-{m:02}"));
        prop_assert_eq!(parsed.is_some(), (1..=12).contains(&m));
        if let Some(month) = parsed {
            let days = month.days();
            prop_assert!((28..=31).contains(&days.len()));
            prop_assert_eq!(month.to_string(), format!("{y}-{m:02}"));
        }
    }

    #[test]
    fn onboarding_answers_are_checked_never_trusted(text in "\\PC{0,60}", step in proptest::sample::select(STEPS.to_vec())) {
        let _ = check(step, &text);
        // A phone that is taken is digits only, of a length China uses.
        if let Some(kept) = phone(&text) {
            prop_assert!(kept.chars().all(|c| c.is_ascii_digit()));
            prop_assert!((10..=12).contains(&kept.len()));
        }
    }

    #[test]
    fn a_punch_is_judged_for_its_own_day_or_the_one_before(
        start in 0u32..1440, end in 0u32..1440, grace in 0i64..240,
        day in 0i64..3650, minute in 0u32..1440, out in any::<bool>(),
    ) {
        prop_assume!(start != end);
        let t = |m: u32| NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap();
        let shift = Shift { name: "s".into(), start: t(start), end: t(end), grace: chrono::Duration::minutes(grace) };
        let date = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Duration::days(day);
        let local = NaiveDateTime::new(date, t(minute));
        let direction = if out { Direction::Out } else { Direction::In };
        let judged = shift.judge(local, direction);
        prop_assert!(judged.day == date || judged.day == date.pred_opt().unwrap());
        prop_assert!(judged.minutes_off.is_none_or(|m| m > 0));
        // Never more off than a whole day.
        prop_assert!(judged.minutes_off.is_none_or(|m| m <= 24 * 60));
    }

    #[test]
    fn wecom_envelopes_and_messages_never_panic(body in damaged(seeds("wecom", "body")), plain in damaged(seeds("wecom", "plaintext")), junk in "\\PC{0,200}") {
        use rollcall::platform::wecom::callback::{parse_envelope, parse_message, parse_app_message};
        for text in [&body, &junk] {
            let _ = parse_envelope(text);
        }
        for text in [&plain, &junk] {
            let _ = parse_message(text);
            let _ = parse_app_message(text, 1000002);
        }
    }

    #[test]
    fn wecom_ciphertexts_are_refused_not_panicked_on(encrypt in "[A-Za-z0-9+/=]{0,400}", sig in "[0-9a-f]{0,40}") {
        let v = vectors("wecom");
        let crypto = rollcall::platform::wecom::crypto::WecomCrypto::new(
            v["token"].as_str().unwrap(),
            v["encoding_aes_key"].as_str().unwrap(),
            v["corp_id"].as_str().unwrap(),
        ).unwrap();
        let _ = crypto.decrypt(&encrypt);
        prop_assert!(crypto.verify(&sig, "1", "n", &encrypt).is_err() || sig.len() == 40);
    }

    #[test]
    fn dingtalk_messages_cards_and_frames_never_panic(
        robot in damaged(seeds("dingtalk", "body")),
        frame in damaged(stream_frames()),
        junk in "\\PC{0,200}",
        now in 0i64..4_000_000_000,
    ) {
        use rollcall::platform::dingtalk::callbacks::{parse_card_callback, parse_robot_message};
        use rollcall::platform::dingtalk::stream::StreamFrame;
        for text in [&robot, &junk] {
            let _ = parse_robot_message(text);
            let _ = parse_card_callback(text, now);
        }
        for text in [&frame, &junk] {
            if let Ok(f) = StreamFrame::parse(text) {
                let _ = rollcall::platform::dingtalk::listener::frame_events(&f, now);
                let _ = rollcall::platform::dingtalk::stream::system_ack(&f);
            }
        }
    }

    #[test]
    fn feishu_ciphertexts_and_events_never_panic(encrypt in "[A-Za-z0-9+/=]{0,400}", body in damaged(seeds("feishu", "plaintext")), now in 0i64..4_000_000_000) {
        use rollcall::platform::{CallbackMethod, CallbackRequest, CallbackSide};
        use rollcall::platform::feishu::callbacks::FeishuCallbacks;
        let v = vectors("feishu");
        let crypto = rollcall::platform::feishu::crypto::FeishuCrypto::new(v["encrypt_key"].as_str().unwrap());
        let _ = crypto.decrypt(&encrypt);
        // Plaintext mode with the right token: a damaged event reaches the parser.
        let side = FeishuCallbacks::new(None, v["verification_token"].as_str().unwrap(), rollcall::config::FeishuIdType::UserId, None);
        let headers = reqwest::header::HeaderMap::new();
        let request = CallbackRequest {
            method: CallbackMethod::Post,
            query: "",
            headers: &headers,
            body: body.as_bytes(),
            now,
            replay_window_secs: 300,
        };
        let _ = side.handle(&request);
    }
}

/// The DingTalk Stream frames of the vectors.
fn stream_frames() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/dingtalk_stream");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}
