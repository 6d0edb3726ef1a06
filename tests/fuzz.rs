//! Hostile input, property-based (proptest; issue 16): every parser a
//! message, a caption, a callback, an employee file or an evidence package
//! reaches, fed arbitrary text, arbitrary bytes, and the third-party vectors
//! with random damage. Each must return (a value or a typed error), never
//! panic; the parsers of values must keep what they promise of what they
//! accept.
//!
//! The suite runs proptest's 256 cases per target (`PROPTEST_CASES`
//! overrides). The longer run gives every target a time instead, running
//! batches of `PROPTEST_CASES` cases, each from a new random seed, until it
//! is spent, and prints how many cases each target ran:
//!
//! ```text
//! FUZZ_MINUTES=10 PROPTEST_CASES=100000 cargo test --release --test fuzz -- --nocapture
//! ```

use std::collections::HashSet;
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use rollcall::attendance::sheet::Month;
use rollcall::attendance::shift::{Direction, Shift};
use rollcall::commands::{COMMANDS, parse, parse_archive_caption, parse_caption};
use rollcall::hr::onboarding::{STEPS, check, phone};

/// Runs `test` on cases drawn from `strategy`: one batch of
/// `PROPTEST_CASES` (256 by default), or batches until `FUZZ_MINUTES` have
/// passed. A failing case is shrunk and the test fails with it.
fn fuzz<S>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let minutes: f64 = std::env::var("FUZZ_MINUTES")
        .ok()
        .map(|m| m.parse().expect("FUZZ_MINUTES is a number of minutes"))
        .unwrap_or(0.0);
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let config = Config {
            failure_persistence: None,
            ..Config::default()
        };
        let batch = u64::from(config.cases);
        if let Err(e) = TestRunner::new(config).run(&strategy, &test) {
            panic!("{e}");
        }
        cases += batch;
        if started.elapsed().as_secs_f64() >= minutes * 60.0 {
            break;
        }
    }
    if minutes > 0.0 {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        eprintln!(
            "fuzz: {name}: {cases} cases in {:.0} s, no finding",
            started.elapsed().as_secs_f64()
        );
    }
}

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
    damaged_bytes(seeds).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// `seed` with a few bytes replaced, removed or inserted.
fn damaged_bytes(seeds: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
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
            bytes
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

#[test]
fn any_text_parses_as_a_command_or_a_typed_error() {
    fuzz("\\PC{0,80}", |text| {
        let _ = parse(&text);
        let _ = parse_caption(&text);
        let _ = parse_archive_caption(&text);
        Ok(())
    });
}

#[test]
fn command_lines_parse_or_are_refused_with_a_reason() {
    fuzz(command_line(), |line| {
        match parse(&line) {
            Ok(_) => {}
            // Every refusal of a known command says what was wrong.
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}

#[test]
fn a_caption_keeps_its_person() {
    fuzz(
        ("[\\p{Han}a-z]{1,8}", "[\\p{Han}a-z ]{0,20}"),
        |(who, note)| {
            let text = format!("#合同 {who} {note}");
            let c = parse_archive_caption(&text)
                .expect("a caption")
                .expect("with a person");
            prop_assert_eq!(c.tag, "合同");
            prop_assert_eq!(&c.who, &who);
            let text = format!("#证据 {who} {note}");
            let c = parse_caption(&text)
                .expect("a caption")
                .expect("with a person");
            prop_assert_eq!(c.who, who);
            Ok(())
        },
    );
}

#[test]
fn a_month_parses_only_as_a_real_month() {
    fuzz(("\\PC{0,12}", 1000i32..9999, 0u32..15), |(text, y, m)| {
        let _ = Month::parse(&text);
        let parsed = Month::parse(&format!("{y}-{m:02}"));
        prop_assert_eq!(parsed.is_some(), (1..=12).contains(&m));
        if let Some(month) = parsed {
            let days = month.days();
            prop_assert!((28..=31).contains(&days.len()));
            prop_assert_eq!(month.to_string(), format!("{y}-{m:02}"));
        }
        Ok(())
    });
}

#[test]
fn onboarding_answers_are_checked_never_trusted() {
    fuzz(
        ("\\PC{0,60}", proptest::sample::select(STEPS.to_vec())),
        |(text, step)| {
            let _ = check(step, &text);
            // A phone that is taken is digits only, of a length China uses.
            if let Some(kept) = phone(&text) {
                prop_assert!(kept.chars().all(|c| c.is_ascii_digit()));
                prop_assert!((10..=12).contains(&kept.len()));
            }
            Ok(())
        },
    );
}

#[test]
fn a_punch_is_judged_for_its_own_day_or_the_one_before() {
    fuzz(
        (
            0u32..1440,
            0u32..1440,
            0i64..240,
            0i64..3650,
            0u32..1440,
            any::<bool>(),
        ),
        |(start, end, grace, day, minute, out)| {
            prop_assume!(start != end);
            let t = |m: u32| NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap();
            let shift = Shift {
                name: "s".into(),
                start: t(start),
                end: t(end),
                grace: chrono::Duration::minutes(grace),
            };
            let date = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Duration::days(day);
            let local = NaiveDateTime::new(date, t(minute));
            let direction = if out { Direction::Out } else { Direction::In };
            let judged = shift.judge(local, direction);
            prop_assert!(judged.day == date || judged.day == date.pred_opt().unwrap());
            prop_assert!(judged.minutes_off.is_none_or(|m| m > 0));
            // Never more off than a whole day.
            prop_assert!(judged.minutes_off.is_none_or(|m| m <= 24 * 60));
            Ok(())
        },
    );
}

#[test]
fn wecom_envelopes_and_messages_never_panic() {
    fuzz(
        (
            damaged(seeds("wecom", "body")),
            damaged(seeds("wecom", "plaintext")),
            "\\PC{0,200}",
        ),
        |(body, plain, junk)| {
            use rollcall::platform::wecom::callback::{
                parse_app_message, parse_envelope, parse_message,
            };
            for text in [&body, &junk] {
                let _ = parse_envelope(text);
            }
            for text in [&plain, &junk] {
                let _ = parse_message(text);
                let _ = parse_app_message(text, 1000002);
            }
            Ok(())
        },
    );
}

#[test]
fn wecom_ciphertexts_are_refused_not_panicked_on() {
    fuzz(
        ("[A-Za-z0-9+/=]{0,400}", "[0-9a-f]{0,40}"),
        |(encrypt, sig)| {
            let v = vectors("wecom");
            let crypto = rollcall::platform::wecom::crypto::WecomCrypto::new(
                v["token"].as_str().unwrap(),
                v["encoding_aes_key"].as_str().unwrap(),
                v["corp_id"].as_str().unwrap(),
            )
            .unwrap();
            let _ = crypto.decrypt(&encrypt);
            prop_assert!(crypto.verify(&sig, "1", "n", &encrypt).is_err() || sig.len() == 40);
            Ok(())
        },
    );
}

#[test]
fn dingtalk_messages_cards_and_frames_never_panic() {
    fuzz(
        (
            damaged(seeds("dingtalk", "body")),
            damaged(stream_frames()),
            "\\PC{0,200}",
            0i64..4_000_000_000,
        ),
        |(robot, frame, junk, now)| {
            use rollcall::platform::dingtalk::callbacks::{
                parse_card_callback, parse_robot_message,
            };
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
            Ok(())
        },
    );
}

#[test]
fn feishu_ciphertexts_and_events_never_panic() {
    fuzz(
        (
            "[A-Za-z0-9+/=]{0,400}",
            damaged(seeds("feishu", "plaintext")),
            0i64..4_000_000_000,
        ),
        |(encrypt, body, now)| {
            use rollcall::platform::feishu::callbacks::FeishuCallbacks;
            use rollcall::platform::{CallbackMethod, CallbackRequest, CallbackSide};
            let v = vectors("feishu");
            let crypto = rollcall::platform::feishu::crypto::FeishuCrypto::new(
                v["encrypt_key"].as_str().unwrap(),
            );
            let _ = crypto.decrypt(&encrypt);
            // Plaintext mode with the right token: a damaged event reaches the parser.
            let side = FeishuCallbacks::new(
                None,
                v["verification_token"].as_str().unwrap(),
                rollcall::config::FeishuIdType::UserId,
                None,
            );
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
            Ok(())
        },
    );
}

/// Employee files (`rollcall employees import`): good ones with every
/// column, damaged.
fn employee_files() -> Vec<String> {
    let header = "user_id,name,department,manager_user_id,role,phone,email,emergency_contact_name,\
                  emergency_contact_phone,postal_address,hire_date,contract_end_date,rest_days,site,\
                  shift,delivery_clause,delivery_agreed_on,electronic_consent,rules_version,\
                  rules_acknowledged_on";
    let rows = [
        "wangfang,王芳,人事部,,hr,13800000001,wf@example.cn,王父,13800000002,\"北京市朝阳区 1 号\",\
         2024-01-02,2027-01-01,sat sun,north,白班,第十二条,2024-01-02,yes,v3,2024-01-03",
        "lisi,李四,工程部,wangfang,manager,,,,,,2023-05-06,,sun,,,,,否,,",
        "zhangsan,张三,工程部,lisi,employee,010-12345678,,张母,13900000003,上海,,,,,夜班,,,,,",
    ];
    vec![
        format!("{header}\n{}\n", rows.join("\n")),
        format!("\u{feff}{header}\r\n{}\r\n", rows.join("\r\n")),
        "user_id,name\nlisi,李四\n".to_owned(),
    ]
}

#[test]
fn employee_files_are_imported_or_refused_with_their_problems() {
    fuzz(
        (
            damaged_bytes(employee_files()),
            proptest::collection::vec(any::<u8>(), 0..300),
        ),
        |(file, junk)| {
            use rollcall::employees::import::{ImportError, check_csv};
            let existing: HashSet<String> = ["boss".to_owned()].into();
            for bytes in [&file, &junk] {
                // A record ends at \n, \r or \r\n.
                let lines = 1 + bytes.iter().filter(|b| matches!(b, b'\n' | b'\r')).count();
                match check_csv(bytes.as_slice(), &existing) {
                    // Never more people than lines after the header, and no
                    // control character but line breaks and tabs kept.
                    Ok(people) => prop_assert!(people < lines),
                    Err(ImportError::Invalid { errors, .. }) => {
                        prop_assert!(!errors.is_empty());
                        prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
                    }
                    Err(ImportError::Read(why)) => prop_assert!(!why.is_empty()),
                    Err(ImportError::Db(e)) => {
                        prop_assert!(false, "a check touched no database: {e}")
                    }
                }
            }
            Ok(())
        },
    );
}

/// A signed checkpoint and a signed key hand-over, as a package holds them.
fn signed_notes() -> (String, Vec<String>) {
    use rollcall::evidence::handover::{Covered, Handover};
    use rollcall::evidence::note::NoteSigner;
    let old = NoteSigner::from_seed("rollcall.example", &[7; 32]).unwrap();
    let new = NoteSigner::from_seed("rollcall.example", &[9; 32]).unwrap();
    let root = [3u8; 32];
    let checkpoint = old
        .sign("rollcall.example/acme\n42\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n")
        .unwrap();
    let handover = Handover {
        old_key: old.verifier_key(),
        new_key: new.verifier_key(),
        at: "2026-12-06T22:00:00Z".parse().unwrap(),
        checkpoints: vec![Covered {
            origin: "rollcall.example/acme".into(),
            size: 42,
            root,
        }],
    }
    .sign(&old, &new)
    .unwrap();
    (
        old.verifier_key(),
        vec![checkpoint, handover, old.private_key(), old.verifier_key()],
    )
}

#[test]
fn evidence_notes_keys_and_hand_overs_verify_or_are_refused() {
    use rollcall::evidence::handover::Handover;
    use rollcall::evidence::note::{self, NoteSigner};
    let (key, seeds) = signed_notes();
    // The undamaged seeds verify: the damage below starts from valid notes.
    note::verify(&seeds[0], &key).expect("the checkpoint verifies");
    Handover::verify(&seeds[1]).expect("the hand-over verifies");
    fuzz((damaged(seeds), "\\PC{0,200}"), |(text, junk)| {
        for t in [&text, &junk] {
            if let Ok(signed) = note::verify(t, &key) {
                // What verifies is a prefix of the note, ending in a newline.
                prop_assert!(t.starts_with(&signed) && signed.ends_with('\n'));
            }
            let _ = Handover::parse(t);
            let _ = Handover::verify(t);
            let _ = NoteSigner::from_private_key(t);
            let _ = note::check_verifier_key(t);
        }
        Ok(())
    });
}

#[test]
fn log_ranges_hashes_and_frontiers_round_trip_or_are_refused() {
    use rollcall::evidence::merkle::parse_hash;
    use rollcall::evidence::verify::{parse_ranges, ranges};
    fuzz(
        (
            "[0-9, -]{0,40}",
            proptest::collection::btree_set(0u64..u64::MAX, 0..20),
            "[0-9a-f]{0,70}",
            any::<i64>(),
            "[0-9a-fA-F]{0,300}",
        ),
        |(text, set, hash, size, frontier)| {
            let _ = parse_ranges(&text);
            // What `ranges` writes reads back as the same leaves.
            let indexes: Vec<u64> = set.into_iter().collect();
            let read = parse_ranges(&ranges(&indexes)).expect("ranges reads back");
            let back: Vec<u64> = read.iter().flat_map(|&(a, b)| a..=b).collect();
            prop_assert_eq!(back, indexes);
            if let Some(h) = parse_hash(&hash) {
                prop_assert_eq!(hex::encode(h), hash);
            }
            let _ = rollcall::evidence::log::parse_frontier(size, &frontier);
            Ok(())
        },
    );
}

#[test]
fn merkle_proofs_of_any_shape_are_refused_not_panicked_on() {
    use rollcall::evidence::merkle::{Hash, verify_consistency, verify_inclusion};
    let hashes = || proptest::collection::vec(any::<[u8; 32]>(), 0..70);
    fuzz(
        (
            prop_oneof![0u64..100, any::<u64>()],
            prop_oneof![0u64..100, any::<u64>()],
            hashes(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        ),
        |(a, b, proof, x, y)| {
            let proof: Vec<Hash> = proof;
            // Random proofs of random trees: a match would be a forged proof.
            prop_assert!(x == y || !verify_inclusion(a, b, &x, &proof, &y));
            let _ = verify_consistency(a, b, &x, &y, &proof);
            Ok(())
        },
    );
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
