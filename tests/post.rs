//! Postal delivery (EMS, registered mail) through the real app and the
//! sandbox, on SQLite and PostgreSQL: every electronic channel fails, HR
//! prints the letter, records its tracking number (`/邮政 邮寄`), and later
//! that it was signed for (`/邮政 签收`), which starts the deadline; a letter
//! still in the post keeps 公告 from being recorded; the letter as mailed
//! is kept with its leaf and goes into the package. The PDF's text is read
//! back by an independent reader (pypdf).

mod common;

use std::process::Command;

use chrono_tz::Asia::Shanghai;
use common::*;
use entity::{absence_case, case_event, evidence_raw};
use rollcall::cases::post::{self, LetterKind};
use rollcall::cases::store::case_no;
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Stage, shanghai, stage};
use rollcall::evidence::log::sha256_hex;
use rollcall::outbox::render::Templates;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};
use serde_json::{Value, json};

const EVERYONE: [&str; 5] = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];

fn but(absent: &[&str]) -> Vec<&'static str> {
    EVERYONE
        .iter()
        .copied()
        .filter(|u| !absent.contains(u))
        .collect()
}

fn render(block: &str, context: Value) -> String {
    Templates::load(None)
        .unwrap()
        .render("command", context, &[block])
        .unwrap()
        .block(block)
        .to_owned()
}

fn last_text(s: &dyn Stage, user: &str) -> String {
    s.received(user)
        .pop()
        .unwrap_or_else(|| panic!("{user} got nothing"))
}

async fn case_of(s: &dyn Stage) -> absence_case::Model {
    absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .expect("张三 has a case")
}

fn local(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// The text of a PDF as pypdf reads it.
fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("letter.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, pypdf\nr = pypdf.PdfReader(sys.argv[1])\nprint(len(r.pages))\nprint(''.join(p.extract_text() for p in r.pages))",
        ])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pypdf (installed by .ci/run) reads the letter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `rollcall letter` for 张三 against the test's database and keys;
/// returns what it printed.
fn rollcall_letter(db: &TestDb, out: &std::path::Path) -> String {
    let t = vector_tenant();
    let dir = db.dir.path();
    let config = dir.join("letter.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
data_key_file = "{}"
[database]
url = "{}"
[evidence]
key_file = "{}"
[[tenants]]
id = "demo"
name = "示例建筑有限公司（沙箱）"
[tenants.wecom]
corp_id = "{}"
agent_id = 1000002
secret = "test-secret"
token = "{}"
encoding_aes_key = "{}"
api_base = "http://127.0.0.1:9"
"#,
            dir.join("data.key").display(),
            db.url,
            rollcall::config::evidence_key_beside(&dir.join("data.key")).display(),
            t.corp_id,
            t.token,
            t.key
        ),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(&config)
        .args([
            "letter",
            "--tenant",
            "demo",
            "--employee",
            "zhangsan",
            "--out",
        ])
        .arg(out)
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

/// 张三 absent from Tuesday 1 December; on Friday 10:00 the formal notice
/// goes out and fails on every channel (chat, SMS, email).
async fn notice_failed_everywhere(db: &TestDb) -> Box<dyn Stage> {
    let s = stage(
        DemoPlatform::Wecom,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    for day in ["2026-12-02", "2026-12-03"] {
        s.at(day, "10:00");
        s.scan().await.unwrap();
        s.at(day, "11:00");
        s.check_in(&but(&["zhangsan"])).await.unwrap();
    }
    s.mark_invalid("zhangsan");
    s.sms()
        .push_fault(rollcall::platform::sandbox::SmsFault::InvalidNumber);
    s.mail().reject_recipient("zhangsan@example.com");
    s.at("2026-12-04", "10:00");
    s.scan().await.unwrap();
    s
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_signed_for_starts_the_deadline(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = notice_failed_everywhere(&db).await;
    let c = case_of(&*s).await;
    assert!(c.formal_notice_at.is_some() && c.receipt_at.is_none());
    let rt = s.rt();
    let tenant = rt.tenant("demo").unwrap();

    // The letter HR prints (what `rollcall letter` writes): the notice as it
    // went out, to the postal address on record.
    let printed = post::letter(
        &rt.db.orm,
        &rt.templates,
        &rt.key,
        tenant,
        &c,
        LetterKind::FormalNotice,
    )
    .await
    .unwrap();
    let text = pdf_text(&printed.pdf);
    for expected in [
        "返岗通知书",
        "收件人：张三",
        "上海市浦东新区示例路1号",
        "连续 3 个工作日",
        "示例建筑有限公司（沙箱）",
        &case_no(c.id),
        &printed.notice_sha256,
    ] {
        assert!(
            text.replace([' ', '\n'], "")
                .contains(&expected.replace(' ', "")),
            "{expected} in the PDF:\n{text}"
        );
    }
    assert!(printed.html.contains("上海市浦东新区示例路1号"));
    assert!(printed.html.starts_with("<!DOCTYPE html>"));
    // `rollcall letter` writes the same bytes, readable by its owner only.
    let out = db.dir.path().join("letters");
    let written = rollcall_letter(&db, &out);
    assert_eq!(
        written,
        format!(
            "{0}  SHA-256 {1}\n{2}  SHA-256 {3}\n",
            out.join(format!("{}-formal_notice.pdf", case_no(c.id)))
                .display(),
            printed.pdf_sha256,
            out.join(format!("{}-formal_notice.html", case_no(c.id)))
                .display(),
            printed.html_sha256,
        )
    );
    let pdf_path = out.join(format!("{}-formal_notice.pdf", case_no(c.id)));
    assert_eq!(std::fs::read(&pdf_path).unwrap(), printed.pdf);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pdf_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Only HR records the post.
    s.say("zhaogang", "/post 邮寄 张三 EA123456789CN")
        .await
        .unwrap();
    assert_eq!(last_text(&*s, "zhaogang"), render("refused", json!({})));

    s.at("2026-12-04", "15:00");
    s.say("wangmin", "/邮政 邮寄 张三 ea123456789cn")
        .await
        .unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "post_mailed",
            json!({
                "name": "张三",
                "case_no": case_no(c.id),
                "kind": "formal_notice",
                "tracking_no": "EA123456789CN",
                "pdf_sha256": printed.pdf_sha256,
                "html_sha256": printed.html_sha256,
            })
        )
    );
    // The letter as mailed is kept with its leaf, byte for byte the printed one.
    for (sha, bytes) in [
        (&printed.pdf_sha256, printed.pdf.clone()),
        (&printed.html_sha256, printed.html.clone().into_bytes()),
    ] {
        let raw = evidence_raw::Entity::find()
            .filter(evidence_raw::Column::Sha256.eq(sha.as_str()))
            .one(&rt.db.orm)
            .await
            .unwrap()
            .expect("the letter is kept");
        assert_eq!(raw.bytes.as_deref(), Some(bytes.as_slice()));
        assert_eq!(sha256_hex(&bytes), *sha);
    }
    s.say("wangmin", "/邮政 邮寄 张三 EA123456789CN")
        .await
        .unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "post_duplicate",
            json!({ "tracking_no": "EA123456789CN", "same": true })
        )
    );
    // A second letter, which comes back.
    s.say("wangmin", "/邮政 邮寄 张三 EA000000002CN")
        .await
        .unwrap();
    s.at("2026-12-07", "09:00");
    s.say("wangmin", "/邮政 退回 EA000000002CN 2026-12-06 查无此人")
        .await
        .unwrap();
    let returned = json!({
        "name": "张三",
        "case_no": case_no(c.id),
        "kind": "formal_notice",
        "tracking_no": "EA000000002CN",
        "on": "2026-12-06",
    });
    let mut with_note = returned.clone();
    with_note["note"] = json!("查无此人");
    assert_eq!(
        last_text(&*s, "wangmin"),
        render("post_returned", with_note)
    );

    // A letter in the post may still arrive: no 公告.
    s.say("wangmin", "/公告 张三 2026-12-07 公告栏")
        .await
        .unwrap();
    let answer = last_text(&*s, "wangmin");
    assert!(
        answer.contains("邮寄 EA123456789CN 未签收也未退回"),
        "{answer}"
    );
    assert!(!answer.contains("EA000000002CN"), "{answer}");

    // Dates before the mailing or to come, and unknown numbers, are refused.
    for (command, block) in [
        ("/邮政 签收 EA123456789CN 2026-12-03", "post_bad_date"),
        ("/邮政 签收 EA123456789CN 2026-12-08", "post_bad_date"),
        ("/邮政 签收 XX99999999CN 2026-12-06", "post_unknown"),
    ] {
        s.say("wangmin", command).await.unwrap();
        let answer = last_text(&*s, "wangmin");
        let context = if block == "post_unknown" {
            json!({ "tracking_no": "XX99999999CN" })
        } else {
            json!({
                "name": "张三", "case_no": case_no(c.id), "kind": "formal_notice",
                "tracking_no": "EA123456789CN", "on": command.rsplit(' ').next().unwrap(),
                "mailed_on": "2026-12-04", "today": "2026-12-07",
            })
        };
        assert_eq!(answer, render(block, context), "{command}");
    }
    let c = case_of(&*s).await;
    assert!(c.receipt_at.is_none(), "nothing proved yet: {c:?}");

    // Signed for on Sunday: received as of Monday 00:00, but HR's word
    // alone starts nothing.
    s.say("wangmin", "/邮政 签收 EA123456789CN 2026-12-06")
        .await
        .unwrap();
    let c = case_of(&*s).await;
    assert!(c.receipt_at.is_none(), "no slip filed yet: {c:?}");
    let mut signed = json!({
        "name": "张三",
        "case_no": case_no(c.id),
        "kind": "formal_notice",
        "tracking_no": "EA123456789CN",
        "on": "2026-12-06",
        "received_at": "2026-12-07 00:00",
        "receipt_via": null,
        "deadline": null,
    });
    assert_eq!(
        last_text(&*s, "wangmin"),
        render("post_signed", signed.clone())
    );
    // The slip, filed with #证据: the deadline runs from Monday 00:00.
    s.say("wangmin", "#证据 张三 EMS 签收回执").await.unwrap();
    s.at("2026-12-07", "09:05");
    s.media(
        "wangmin",
        b"\xff\xd8\xff\xe0ems-slip".to_vec(),
        "image/jpeg",
        None,
    )
    .await
    .unwrap();
    s.settle().await.unwrap();
    let c = case_of(&*s).await;
    assert_eq!(c.receipt_via.as_deref(), Some("signed:post"));
    assert_eq!(c.receipt_at, Some(shanghai("2026-12-07", "00:00")));
    let deadline = c.deadline_at.expect("the deadline runs");
    assert_eq!(
        deadline,
        rollcall::cases::store::policy(&c).deadline(shanghai("2026-12-07", "00:00"))
    );
    // The same record once the slip is in says so.
    signed["receipt_via"] = json!("signed:post");
    signed["deadline"] = json!(local(deadline));
    assert!(
        render("post_signed", signed).contains(&format!("返岗期限自此起算：{}", local(deadline)))
    );
    s.say("wangmin", "/邮政 签收 EA123456789CN 2026-12-06")
        .await
        .unwrap();
    assert!(last_text(&*s, "wangmin").contains("已登记为于 2026-12-06 签收"));

    // Two records of one letter at once: they take turns, one is refused.
    s.say("wangmin", "/邮政 邮寄 张三 EA000000003CN")
        .await
        .unwrap();
    let third = post::find_mailed(&rt.db.orm, "demo", "EA000000003CN")
        .await
        .unwrap()
        .expect("mailed");
    let first = rt.db.orm.begin().await.unwrap();
    let on = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
    let now = rt.clock.now();
    post::record_outcome(
        &first, tenant, &third, false, on, None, "wangmin", None, now,
    )
    .await
    .unwrap()
    .unwrap();
    let second = {
        let (rt, tenant, third) = (rt.clone(), tenant.clone(), third.clone());
        tokio::spawn(async move {
            let txn = rt.db.orm.begin().await.unwrap();
            let r = post::record_outcome(&txn, &tenant, &third, false, on, None, "lisi", None, now)
                .await
                .unwrap();
            txn.commit().await.unwrap();
            r
        })
    };
    // Gives the second a chance to reach the lock before the first commits;
    // the outcome does not depend on it (after the commit it sees the record).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    let refused = second.await.unwrap().unwrap_err();
    assert_eq!(
        refused,
        post::Refusal::Settled(post::Outcome::Returned(on)),
        "the second record waited for the first"
    );

    // The postal record is in the log, and the letter in the package.
    let kinds: Vec<String> = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.starts_with("letter_"))
        .order_by_asc(case_event::Column::Id)
        .all(&rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "letter_mailed",
            "letter_mailed",
            "letter_returned",
            "letter_signed",
            "letter_mailed",
            "letter_returned"
        ]
    );
    let package = rollcall::evidence::export::package(rt, "demo", "zhangsan", Some(c.id))
        .await
        .unwrap();
    let in_package = package
        .files()
        .get(&format!("raw/{}.pdf", printed.pdf_sha256))
        .expect("the letter is in the package");
    assert_eq!(in_package, &printed.pdf);
    assert!(
        package
            .files()
            .contains_key(&format!("raw/{}.html", printed.html_sha256))
    );
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_letter_without_an_address_or_a_notice(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = notice_failed_everywhere(&db).await;
    // 李四 has no postal address on record and no case; nobody has a
    // termination notice yet.
    for (command, block, context) in [
        (
            "/邮政 邮寄 李四 EA123456789CN",
            "post_no_notice",
            json!({ "name": "李四", "kind": "formal_notice", "tracking_no": "EA123456789CN" }),
        ),
        (
            "/邮政 邮寄 张三 EA123456789CN 解除",
            "post_no_notice",
            json!({ "name": "张三", "kind": "termination_notice", "tracking_no": "EA123456789CN" }),
        ),
    ] {
        s.say("wangmin", command).await.unwrap();
        assert_eq!(
            last_text(&*s, "wangmin"),
            render(block, context),
            "{command}"
        );
    }
    // 张三's address removed: the letter cannot be addressed.
    entity::employee::Entity::update_many()
        .col_expr(
            entity::employee::Column::PostalAddressSealed,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(entity::employee::Column::UserId.eq("zhangsan"))
        .exec(&s.rt().db.orm)
        .await
        .unwrap();
    s.say("wangmin", "/邮政 邮寄 张三 EA123456789CN")
        .await
        .unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "post_no_address",
            json!({ "name": "张三", "kind": "formal_notice", "tracking_no": "EA123456789CN" })
        )
    );
    assert!(
        case_event::Entity::find()
            .filter(case_event::Column::Kind.eq("letter_mailed"))
            .all(&s.rt().db.orm)
            .await
            .unwrap()
            .is_empty()
    );
    s.stop().await;
    db.cleanup().await;
}
