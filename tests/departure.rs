//! The self-departure (自离) process through the real app and the sandbox
//! platform, on SQLite and PostgreSQL × WeCom and DingTalk (Stream mode): an employee misses days, gets the
//! formal notice, the deadline passes; HR starts the process (the card's
//! button, or `/depart`), HR and the manager file evidence, both confirm the
//! drafted notice, the union item is recorded, and the termination notice
//! goes out on chat, SMS and email with receipts. Refusals, repeated
//! presses, and an employee who comes back.

mod common;

use common::*;
use entity::{absence_case, case_event, departure, evidence_leaf, exhibit, outbox};
use rollcall::cases::store::case_no;
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Stage, stage};
use rollcall::evidence::log::{LeafData, sha256_hex};
use rollcall::outbox::render::Templates;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

const EVERYONE: [&str; 5] = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];

fn but(absent: &[&str]) -> Vec<&'static str> {
    EVERYONE
        .iter()
        .copied()
        .filter(|u| !absent.contains(u))
        .collect()
}

/// `block` of `template` rendered with `context`, as the bot would send it.
fn render(template: &str, block: &str, context: Value) -> String {
    Templates::load(None)
        .unwrap()
        .render(template, context, &[block])
        .unwrap()
        .block(block)
        .to_owned()
}

/// The text of the last chat message `user` received from the platform.
fn last_text(s: &dyn Stage, user: &str) -> String {
    texts(s, user)
        .pop()
        .unwrap_or_else(|| panic!("{user} got nothing"))
}

/// Every chat message `user` received, oldest first (cards as title + body).
fn texts(s: &dyn Stage, user: &str) -> Vec<String> {
    s.received(user)
}

async fn case_of(s: &dyn Stage, user: &str) -> absence_case::Model {
    absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq(user))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{user} has no case"))
}

async fn departure_of(s: &dyn Stage, case_id: i64) -> Option<departure::Model> {
    departure::Entity::find()
        .filter(departure::Column::CaseId.eq(case_id))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
}

async fn rows(s: &dyn Stage, case_id: i64) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case_id))
        .order_by_asc(outbox::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
}

/// The leaves of a case, as their data.
async fn leaves(s: &dyn Stage, case_id: i64) -> Vec<LeafData> {
    evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::CaseId.eq(case_id))
        .order_by_asc(evidence_leaf::Column::Idx)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|l| serde_json::from_str(&l.content.unwrap()).unwrap())
        .collect()
}

fn kinds(leaves: &[LeafData]) -> Vec<&str> {
    leaves.iter().map(|l| l.kind.as_str()).collect()
}

/// The app with 张三 absent from Tuesday 1 December: reminders, the formal
/// notice on Friday 10:00, read or acknowledged at once (deadline Monday
/// 10:00; not before: a notice only sent starts no deadline), and on Monday 10:05 the
/// deadline card to HR. On Friday, before the deadline, HR's `/自离` is refused.
async fn to_the_deadline(db: &TestDb, platform: DemoPlatform) -> Box<dyn Stage> {
    to_the_deadline_with(db, platform, "").await
}

/// [`to_the_deadline`] with `extra` configuration for the tenant (TOML).
async fn to_the_deadline_with(db: &TestDb, platform: DemoPlatform, extra: &str) -> Box<dyn Stage> {
    let s = stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        &format!("[tenants.attendance]\nscan_at = \"23:59\"\n{extra}"),
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
    // Friday 10:00: the formal notice goes out on every channel.
    s.at("2026-12-04", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert!(c.formal_notice_at.is_some());
    assert!(
        c.deadline_at.is_none() && c.receipt_at.is_none(),
        "sent is not received: no deadline yet"
    );

    // Nothing proves he received it yet: no 自离, and /status says the
    // deadline has not started.
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "command",
            "depart_not_received",
            json!({ "name": "张三", "case_no": case_no(c.id) })
        )
    );
    assert!(departure_of(&*s, c.id).await.is_none());
    // /status shows how the notice reached him, and on a platform that
    // tells, whether he read it.
    let notice_line = |status: &str| -> String {
        status
            .lines()
            .find(|l| l.starts_with("返岗通知书："))
            .unwrap_or_else(|| panic!("no notice line in {status}"))
            .to_owned()
    };
    s.say("wangmin", "/状态 张三").await.unwrap();
    let status = last_text(&*s, "wangmin");
    let chat = match platform {
        DemoPlatform::Wecom => "聊天已发送（2026-12-04 10:00）（平台不提供已读状态）",
        DemoPlatform::Dingtalk | DemoPlatform::Feishu => "聊天已发送（2026-12-04 10:00），暂未读",
    };
    assert_eq!(
        notice_line(&status),
        format!(
            "返岗通知书：{chat}；短信已发送（2026-12-04 10:00）；邮件已发送（2026-12-04 10:00）"
        )
    );
    assert!(status.contains("返岗期限：未起算"), "{status}");

    // He reads it where the platform tells (DingTalk, Feishu), or
    // acknowledges it (WeCom), still at 10:00: the deadline runs from then.
    match platform {
        DemoPlatform::Wecom => s.press("zhangsan", "received").await.unwrap(),
        _ => s.read_latest("zhangsan").await.unwrap(),
    }
    s.settle().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    let via = match platform {
        DemoPlatform::Wecom => "acknowledged",
        _ => "read:chat",
    };
    assert_eq!(c.receipt_via.as_deref(), Some(via));
    // (The simulated clock runs on from when it was set: within the minute.)
    let within_the_minute = |t: Option<chrono::DateTime<chrono::Utc>>, date: &str| {
        let after = (t.expect("set") - shanghai(date, "10:00")).num_seconds();
        assert!((0..60).contains(&after), "{t:?}");
    };
    within_the_minute(c.receipt_at, "2026-12-04");
    within_the_minute(c.deadline_at, "2026-12-07");
    s.at("2026-12-04", "11:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();

    // Before the deadline: still no 自离.
    s.at("2026-12-04", "11:30");
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "command",
            "depart_not_due",
            json!({ "name": "张三", "case_no": case_no(c.id), "deadline": "2026-12-07 10:00" })
        )
    );
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "open");
    assert!(departure_of(&*s, c.id).await.is_none());
    s.say("wangmin", "/状态 张三").await.unwrap();
    let status = last_text(&*s, "wangmin");
    assert!(status.contains("返岗期限：2026-12-07 10:00"), "{status}");
    if platform != DemoPlatform::Wecom {
        assert!(
            notice_line(&status)
                .starts_with("返岗通知书：聊天已发送（2026-12-04 10:00），已读 2026-12-04 10:00；"),
            "{status}"
        );
    }

    s.at("2026-12-07", "10:05");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert!(
        rows(&*s, c.id)
            .await
            .iter()
            .any(|r| r.step.as_deref() == Some("deadline_passed") && r.status == "sent"),
        "HR has the deadline card"
    );
    // The card says whether the platform saw him read the notice.
    let card = s
        .received("wangmin")
        .into_iter()
        .rev()
        .find(|t| t.starts_with("返岗期限已过"))
        .expect("the deadline card reached HR");
    let read = "平台显示本人已于 2026-12-04 10:00 阅读返岗通知书（已读）。";
    if platform == DemoPlatform::Wecom {
        assert!(
            card.contains("本人已于 2026-12-04 10:00 确认收到返岗通知书"),
            "{card}"
        );
    }
    match platform {
        DemoPlatform::Wecom => assert!(!card.contains("阅读返岗通知书"), "{card}"),
        _ => assert!(card.contains(read), "{card}"),
    }
    s
}

/// Every channel of the formal notice fails (the chat account gone, the
/// number refused, the mailbox rejecting): nothing proves he received it,
/// so however long he stays away no deadline starts, HR gets no deadline
/// card, and `/自离` is refused saying why.
#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_termination_can_start_when_no_channel_delivered_the_notice(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = stage(
        platform,
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
    let c = case_of(&*s, "zhangsan").await;
    let notice: Vec<(String, String)> = rows(&*s, c.id)
        .await
        .into_iter()
        .filter(|r| r.step.as_deref() == Some("formal_notice") && r.recipient == "zhangsan")
        .map(|r| (r.channel, r.status))
        .collect();
    assert!(!notice.is_empty());
    assert!(
        notice.iter().all(|(_, status)| status == "undeliverable"),
        "{notice:?}"
    );
    // Ten days on, every day scanned: no deadline, no card, no 自离.
    for day in ["2026-12-07", "2026-12-08", "2026-12-14"] {
        s.at(day, "10:00");
        s.scan().await.unwrap();
    }
    let c = case_of(&*s, "zhangsan").await;
    assert!(c.receipt_at.is_none() && c.deadline_at.is_none(), "{c:?}");
    assert!(
        !rows(&*s, c.id)
            .await
            .iter()
            .any(|r| r.step.as_deref() == Some("deadline_passed")),
        "no deadline card"
    );
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "command",
            "depart_not_received",
            json!({ "name": "张三", "case_no": case_no(c.id) })
        )
    );
    s.say("wangmin", "/状态 张三").await.unwrap();
    let status = last_text(&*s, "wangmin");
    assert!(status.contains("返岗期限：未起算"), "{status}");
    assert!(status.contains("未送达"), "{status}");
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "open");
    assert!(departure_of(&*s, c.id).await.is_none());

    // Every channel failed: HR publishes the notice (公告送达) and records
    // it; it counts as delivered 30 days after publication, not before.
    s.at("2026-12-15", "09:00");
    s.say("wangmin", "/公告 张三 2026-12-15 《新民晚报》第 8 版")
        .await
        .unwrap();
    let context = json!({
        "name": "张三",
        "case_no": case_no(c.id),
        "published_on": "2026-12-15",
        "place": "《新民晚报》第 8 版",
        "deemed_at": "2027-01-15 00:00",
    });
    assert_eq!(
        last_text(&*s, "wangmin"),
        render("command", "announce_ok", context.clone())
    );
    s.say("wangmin", "/公告 张三 2026-12-15 公告栏")
        .await
        .unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render("command", "announce_already", context)
    );
    // A date before the notice, or one to come, is refused.
    for date in ["2026-12-03", "2026-12-16"] {
        s.say("wangmin", &format!("/公告 张三 {date} 公告栏"))
            .await
            .unwrap();
        let answer = last_text(&*s, "wangmin");
        assert!(answer.contains("公告日期"), "{date}: {answer}");
    }
    // The day of publication does not count: 30 full days after it.
    s.at("2027-01-14", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert!(c.receipt_at.is_none(), "not before the 30 days: {c:?}");
    s.at("2027-01-15", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.receipt_via.as_deref(), Some("announced"));
    assert_eq!(c.receipt_at, Some(shanghai("2027-01-15", "00:00")));
    assert_eq!(c.deadline_at, Some(shanghai("2027-01-18", "00:00")));
    s.stop().await;
    db.cleanup().await;
}

/// What a non-HR sender gets for `/自离`, and that it changes nothing.
async fn only_hr_may_start(s: &dyn Stage) {
    let refused = render("command", "refused", json!({}));
    for (who, text) in [
        ("lisi", "/自离 张三"),
        ("zhaogang", "/depart 张三"),
        ("zhangsan", "/自离 张三"),
    ] {
        s.say(who, text).await.unwrap();
        assert_eq!(last_text(s, who), refused, "{who} {text}");
    }
    assert_eq!(case_of(s, "zhangsan").await.status, "open");
}

/// HR and the manager file a photo and a file on 张三's case with `#证据`;
/// `/证据 张三` lists them with their hashes. Returns the two hashes.
async fn file_evidence(s: &dyn Stage, case_id: i64) -> (String, String) {
    let photo_bytes = b"\xff\xd8\xff\xe0dormitory-emptied".to_vec();
    let pdf_bytes = b"%PDF-1.4 clock-in machine log".to_vec();
    let (photo_sha, pdf_sha) = (sha256_hex(&photo_bytes), sha256_hex(&pdf_bytes));

    // Without a caption first, a file is not evidence: the sender is told how.
    s.at("2026-12-07", "11:00");
    s.media(
        "wangmin",
        pdf_bytes.clone(),
        "application/pdf",
        Some("打卡机记录.pdf"),
    )
    .await
    .unwrap();
    s.settle().await.unwrap();
    assert_eq!(
        last_text(s, "wangmin"),
        render(
            "command",
            "file_without_window",
            json!({ "kind": "file", "window_minutes": 10 })
        )
    );
    // An employee may not file evidence on a colleague's case.
    s.say("lisi", "#证据 张三 我看见他走了").await.unwrap();
    assert_eq!(
        last_text(s, "lisi"),
        render("command", "refused", json!({}))
    );

    // HR: a caption (which mentions 打卡: still a caption, not a check-in), then a photo.
    s.say("wangmin", "#证据 张三 宿舍已搬空，未打卡")
        .await
        .unwrap();
    assert!(last_text(s, "wangmin").contains(&case_no(case_id)));
    s.at("2026-12-07", "11:05");
    s.media("wangmin", photo_bytes, "image/jpeg", None)
        .await
        .unwrap();
    s.settle().await.unwrap();
    let filed = last_text(s, "wangmin");
    assert!(filed.contains(&photo_sha), "{filed}");
    assert!(filed.contains("宿舍已搬空"), "{filed}");

    // The manager, for his report: a caption, then a file.
    s.say("zhaogang", "#证据 张三 工地打卡机记录")
        .await
        .unwrap();
    s.at("2026-12-07", "11:08");
    s.media(
        "zhaogang",
        pdf_bytes,
        "application/pdf",
        Some("打卡机记录.pdf"),
    )
    .await
    .unwrap();
    s.settle().await.unwrap();
    assert!(last_text(s, "zhaogang").contains(&pdf_sha));

    // After the window (10 minutes) a photo is a check-in again, not evidence.
    s.at("2026-12-07", "11:20");
    s.media(
        "wangmin",
        b"\xff\xd8\xffhr-own-site-photo".to_vec(),
        "image/jpeg",
        None,
    )
    .await
    .unwrap();
    s.settle().await.unwrap();

    let stored = exhibit::Entity::find()
        .filter(exhibit::Column::CaseId.eq(case_id))
        .order_by_asc(exhibit::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap();
    let got: Vec<(&str, &str, &str, &str)> = stored
        .iter()
        .map(|e| {
            (
                e.sender.as_str(),
                e.media_kind.as_str(),
                e.sha256.as_str(),
                e.caption.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("wangmin", "image", photo_sha.as_str(), "宿舍已搬空，未打卡"),
            ("zhaogang", "file", pdf_sha.as_str(), "工地打卡机记录"),
        ]
    );
    assert_eq!(stored[1].file_name.as_deref(), Some("打卡机记录.pdf"));
    assert_eq!(
        entity::check_in::Entity::find()
            .filter(entity::check_in::Column::UserId.eq("wangmin"))
            .filter(entity::check_in::Column::Source.eq("image"))
            .count(&s.rt().db.orm)
            .await
            .unwrap(),
        1,
        "only the photo after the window was a check-in"
    );

    // The list, for HR and for the manager.
    for who in ["wangmin", "zhaogang"] {
        s.say(who, "/证据 张三").await.unwrap();
        let list = last_text(s, who);
        for fragment in [
            photo_sha.as_str(),
            pdf_sha.as_str(),
            "打卡机记录.pdf",
            "宿舍已搬空，未打卡",
            "工地打卡机记录",
            "王敏",
            "赵刚",
            "2026-12-07 11:05",
        ] {
            assert!(list.contains(fragment), "{fragment} not in {list}");
        }
    }
    (photo_sha, pdf_sha)
}

/// What the finished process left: the case closed as terminated, the
/// notice sent once on each channel with receipts, exactly as confirmed,
/// and a leaf for every step.
async fn assert_terminated(s: &dyn Stage, case_id: i64, files: (String, String)) {
    let c = case_of(s, "zhangsan").await;
    assert_eq!(c.id, case_id);
    assert_eq!(
        (c.status.as_str(), c.resolution.as_deref()),
        ("resolved", Some("terminated"))
    );
    let d = departure_of(s, case_id).await.unwrap();
    assert_eq!(d.state, "terminated");
    let document: Value = serde_json::from_str(&d.document).unwrap();
    let body = document["blocks"]["body"].as_str().unwrap();
    assert_eq!(sha256_hex(body.as_bytes()), d.document_sha256);
    // The facts: missed days and dates, the formal notice with its receipts, the deadline, the rule.
    for fact in [
        "2026-12-01、2026-12-02、2026-12-03",
        "2026-12-04 10:00",
        "2026-12-07 10:00",
        "《员工手册》第五章第十二条",
        "2026-01",
        "default-1",
        "第三十九条",
    ] {
        assert!(body.contains(fact), "{fact} not in {body}");
    }
    let all = rows(s, case_id).await;
    let z = case_id;
    for key in [
        format!("notice:{z}:termination_notice:zhangsan:chat"),
        format!("notice:{z}:termination_notice:zhangsan:chat-ack"),
        format!("notice:{z}:termination_notice:zhangsan:sms"),
        format!("notice:{z}:termination_notice:zhangsan:email"),
        format!("notice:{z}:termination_notice:zhaogang:chat"),
        format!("notice:{z}:termination_notice:wangmin:chat"),
    ] {
        let row = all
            .iter()
            .find(|r| r.idem_key == key)
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(row.status, "sent", "{row:#?}");
        assert!(row.receipt_id.is_some(), "{key} has no receipt");
        assert_eq!(
            row.fence,
            Some(c.fence),
            "sent under the closed case's token"
        );
    }
    let email = all
        .iter()
        .find(|r| r.idem_key.ends_with(":termination_notice:zhangsan:email"))
        .unwrap();
    let payload: Value = serde_json::from_str(&email.payload).unwrap();
    assert_eq!(payload["text"], body, "the email is the confirmed text");
    let chat = all
        .iter()
        .find(|r| r.idem_key.ends_with(":termination_notice:zhangsan:chat"))
        .unwrap();
    assert!(chat.payload.contains(&body.replace('\n', "\\n")));
    // SMS and email reached the gateway and the mail server, with the receipts stored.
    let sms = s
        .sms()
        .texts()
        .into_iter()
        .filter(|t| t.out_id.contains(":termination_notice:"))
        .collect::<Vec<_>>();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, "13800000003");
    assert!(sms[0].text.contains(&case_no(z)));
    let sms_row = all
        .iter()
        .find(|r| r.idem_key.ends_with(":termination_notice:zhangsan:sms"))
        .unwrap();
    assert_eq!(sms_row.receipt_id.as_deref(), Some(sms[0].id.as_str()));
    let mails: Vec<_> = s
        .mail()
        .messages()
        .into_iter()
        .filter(|m| m.message_id == email.receipt_id)
        .collect();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["zhangsan@example.com"]);
    // The employee read the full notice, once; HR and the manager got the copy.
    assert_eq!(
        texts(s, "zhangsan")
            .iter()
            .filter(|t| t.contains(body))
            .count(),
        1
    );
    let copy_title = render(
        "termination_notice.copy",
        "title",
        json!({ "case_no": case_no(z) }),
    );
    for who in ["wangmin", "zhaogang"] {
        let copies: Vec<String> = texts(s, who)
            .into_iter()
            .filter(|t| t.starts_with(&copy_title))
            .collect();
        assert_eq!(copies.len(), 1, "{who}: {copies:?}");
        assert!(copies[0].contains(&d.document_sha256));
    }

    // The evidence log has a leaf for each step.
    let leaves = leaves(s, case_id).await;
    let k = kinds(&leaves);
    for kind in [
        "departure_started",
        "departure_drafted",
        "exhibit_window_opened",
        "union_recorded",
        "termination_notice_issued",
        "case_resolved",
        "message_queued",
        "message_sent",
    ] {
        assert!(k.contains(&kind), "no {kind} leaf in {k:?}");
    }
    let confirmed: Vec<&LeafData> = leaves
        .iter()
        .filter(|l| l.kind == "departure_confirmed")
        .collect();
    assert_eq!(confirmed.len(), 2, "manager and HR, once each");
    let mut by: Vec<&str> = confirmed
        .iter()
        .map(|l| l.actor.as_deref().unwrap())
        .collect();
    by.sort();
    assert_eq!(by, ["wangmin", "zhaogang"]);
    for l in &confirmed {
        assert_eq!(l.text_sha256.as_deref(), Some(d.document_sha256.as_str()));
        assert_eq!(l.detail["document_sha256"], d.document_sha256.as_str());
    }
    let drafted = leaves
        .iter()
        .find(|l| l.kind == "departure_drafted")
        .unwrap();
    assert_eq!(
        drafted.text_sha256.as_deref(),
        Some(d.document_sha256.as_str())
    );
    assert_eq!(drafted.raw[0].sha256, d.document_sha256);
    // Each file is a leaf carrying it, with its caption.
    let filed: Vec<&LeafData> = leaves
        .iter()
        .filter(|l| l.kind == "exhibit_filed")
        .collect();
    assert_eq!(filed.len(), 2);
    let (photo_sha, pdf_sha) = files;
    for (leaf, (sha, caption)) in filed.iter().zip([
        (photo_sha, "宿舍已搬空，未打卡"),
        (pdf_sha, "工地打卡机记录"),
    ]) {
        assert_eq!(leaf.raw[0].role, "file");
        assert_eq!(leaf.raw[0].sha256, sha);
        assert_eq!(leaf.detail["caption"], caption);
        let stored =
            rollcall::evidence::log::raw_bytes(&s.rt().db.orm, rollcall::demo::TENANT, &sha)
                .await
                .unwrap()
                .expect("the file is kept with the log");
        assert_eq!(sha256_hex(&stored), sha);
    }
    let resolved = leaves.iter().find(|l| l.kind == "case_resolved").unwrap();
    assert_eq!(resolved.detail["resolution"], "terminated");

    // /status shows the outcome.
    s.say("wangmin", "/状态 张三").await.unwrap();
    let status = last_text(s, "wangmin");
    assert!(
        status.contains(&case_no(z)) && status.contains("解除劳动合同"),
        "{status}"
    );
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_starts_from_the_deadline_card_and_the_notice_goes_out(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = to_the_deadline(&db, platform).await;
    only_hr_may_start(&*s).await;
    let before = case_of(&*s, "zhangsan").await;

    s.at("2026-12-07", "10:30");
    s.press("wangmin", "start_departure").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "departing");
    assert_ne!(c.fence, before.fence, "the ladder's token changed");
    let d = departure_of(&*s, c.id).await.expect("the process started");
    assert_eq!(
        (
            d.state.as_str(),
            d.started_by.as_str(),
            d.started_via.as_str()
        ),
        ("collecting", "wangmin", "card")
    );
    assert_eq!(d.manager_user_id.as_deref(), Some("zhaogang"));
    // The draft reached the manager and HR, with its hash, and a card each.
    for who in ["wangmin", "zhaogang"] {
        assert!(
            texts(&*s, who)
                .iter()
                .any(|t| t.contains(&d.document_sha256)),
            "{who} has no draft"
        );
    }
    // Pressing again counts once; /自离 now is refused politely.
    s.press("wangmin", "start_departure").await.unwrap();
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "command",
            "depart_already",
            json!({ "name": "张三", "case_no": case_no(c.id) })
        )
    );
    assert_eq!(
        departure::Entity::find()
            .count(&s.rt().db.orm)
            .await
            .unwrap(),
        1
    );
    let files = file_evidence(&*s, c.id).await;
    s.at("2026-12-07", "12:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();

    // The manager confirms (twice: it counts once).
    s.at("2026-12-07", "14:00");
    s.press("zhaogang", "confirm_manager").await.unwrap();
    let reply = last_text(&*s, "zhaogang");
    assert!(reply.contains(&d.document_sha256), "{reply}");
    s.press("zhaogang", "confirm_manager").await.unwrap();
    s.say("wangmin", "/status 张三").await.unwrap();
    let status = last_text(&*s, "wangmin");
    assert!(
        status.contains(&case_no(c.id)) && status.contains("2026-12-07 14:00"),
        "the manager's confirmation shows: {status}"
    );
    // The next scan counts the day but sends no more ladder notices.
    let sent_before = rows(&*s, c.id).await.len();
    s.at("2026-12-08", "10:00");
    let r = s.scan().await.unwrap();
    assert_eq!((r.opened, r.escalated), (0, 0));
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!((c.status.as_str(), c.missed_workdays), ("departing", 5));
    assert_eq!(rows(&*s, c.id).await.len(), sent_before);
    // HR confirms.
    s.at("2026-12-08", "10:10");
    s.press("wangmin", "confirm_hr").await.unwrap();
    assert_eq!(case_of(&*s, "zhangsan").await.status, "departing");
    assert!(
        rows(&*s, c.id)
            .await
            .iter()
            .all(|r| r.step.as_deref() != Some("termination_notice")),
        "nothing goes out before the union item"
    );
    // The union item, from HR's card.
    s.at("2026-12-08", "10:20");
    s.press("wangmin", "union_notified").await.unwrap();
    let d = departure_of(&*s, c.id).await.unwrap();
    assert_eq!(d.union_status.as_deref(), Some("notified"));

    assert_terminated(&*s, c.id, files).await;
    // The employee acknowledges the termination notice.
    s.at("2026-12-08", "20:00");
    s.press("zhangsan", "termination_received").await.unwrap();
    let acks = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.eq("termination_acknowledged"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(acks, 1);
    exported_and_verified(&*s, platform.name(), c.id).await;
    s.stop().await;
    db.cleanup().await;
}

/// The case's package, written to a folder and checked there by its own
/// verify.py, as the other party's lawyer would; it carries the termination
/// notice, the employee's acknowledgment and the callbacks behind them in
/// the platform's own format.
async fn exported_and_verified(s: &dyn Stage, platform: &str, case_id: i64) {
    let p = rollcall::evidence::export::package(
        s.rt(),
        rollcall::demo::TENANT,
        "zhangsan",
        Some(case_id),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    p.write_dir(dir.path()).unwrap();
    // With the fingerprint the employer published (the package's own key
    // proves nothing by itself), from a script: no terminal to confirm at.
    let out = std::process::Command::new("python3")
        .args(["verify.py", "--fingerprint", &p.summary.fingerprint])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RESULT: all") && !text.contains("[FAIL]"),
        "verify.py failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leaves: Vec<Value> = std::str::from_utf8(p.file("leaves.jsonl").unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let data = |l: &Value| -> Value {
        l["data"]
            .as_str()
            .map(|d| serde_json::from_str(d).unwrap())
            .unwrap_or(Value::Null)
    };
    for kind in ["termination_notice_issued", "case_resolved"] {
        assert!(
            leaves.iter().any(|l| data(l)["kind"] == kind),
            "no {kind} in the package"
        );
    }
    // The employee's own messages and presses, as the platform sent them.
    let callbacks: Vec<Value> = leaves
        .iter()
        .filter(|l| l["included_as"] == "callback")
        .map(data)
        .collect();
    assert!(
        callbacks.iter().any(|c| c["subject"] == "zhangsan"),
        "no callback of the employee in the package"
    );
    for c in &callbacks {
        assert_eq!(c["platform_ids"]["platform"], platform, "{c}");
    }
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_starts_with_depart_and_records_no_union(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = to_the_deadline(&db, platform).await;
    s.at("2026-12-07", "10:30");
    s.say("wangmin", "/depart 张三").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "departing");
    let d = departure_of(&*s, c.id).await.unwrap();
    assert_eq!(d.started_via, "command");
    // The answer comes with the draft and the cards, in no fixed order.
    let answer = render(
        "command",
        "depart_ok",
        json!({
            "name": "张三",
            "case_no": case_no(c.id),
            "document_sha256": d.document_sha256,
            "manager_name": "赵刚",
            "window_minutes": 10,
        }),
    );
    assert!(texts(&*s, "wangmin").contains(&answer), "{answer}");
    // A second /depart, and the deadline card's button, are refused politely.
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "command",
            "depart_already",
            json!({ "name": "张三", "case_no": case_no(c.id) })
        )
    );
    s.press("wangmin", "start_departure").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render(
            "card_pressed",
            "reply_departure_refused",
            json!({ "name": "张三", "case_no": case_no(c.id), "refusal": "already" })
        )
    );
    let started = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("departure_started"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(started, 1);
    // /cases shows where it stands.
    s.say("wangmin", "/案件").await.unwrap();
    let cases = last_text(&*s, "wangmin");
    assert!(
        cases.contains(&case_no(c.id)) && cases.contains("王敏"),
        "{cases}"
    );

    let files = file_evidence(&*s, c.id).await;

    // HR first, the union item by command (no union), the manager last.
    s.at("2026-12-07", "14:00");
    s.press("wangmin", "confirm_hr").await.unwrap();
    s.say("wangmin", "/工会 张三 无工会 本公司未成立工会")
        .await
        .unwrap();
    let d = departure_of(&*s, c.id).await.unwrap();
    assert_eq!(
        (d.union_status.as_deref(), d.union_note.as_deref()),
        (Some("no_union"), Some("本公司未成立工会"))
    );
    // Recorded once: a second /工会 changes nothing.
    s.say("wangmin", "/工会 张三 已通知").await.unwrap();
    assert_eq!(
        departure_of(&*s, c.id)
            .await
            .unwrap()
            .union_status
            .as_deref(),
        Some("no_union")
    );
    assert_eq!(case_of(&*s, "zhangsan").await.status, "departing");
    s.at("2026-12-07", "15:00");
    s.press("zhaogang", "confirm_manager").await.unwrap();

    assert_terminated(&*s, c.id, files).await;
    let copy = texts(&*s, "wangmin")
        .into_iter()
        .find(|t| t.contains("本公司未成立工会"))
        .expect("HR's copy names the union item");
    assert!(copy.contains(&case_no(c.id)));
    // After the case closed, /depart finds no case.
    s.say("wangmin", "/自离 张三").await.unwrap();
    assert_eq!(
        last_text(&*s, "wangmin"),
        render("command", "depart_no_case", json!({ "name": "张三" }))
    );
    // The termination notice also goes by post: its letter carries the
    // notice as sent, and is kept with the tracking number.
    s.say("wangmin", "/邮政 邮寄 张三 EA555666777CN 解除")
        .await
        .unwrap();
    let answer = last_text(&*s, "wangmin");
    let mailed = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.eq("letter_mailed"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the letter is recorded: {answer}"));
    let detail: Value = serde_json::from_str(&mailed.detail).unwrap();
    assert_eq!(detail["kind"], "termination_notice");
    assert_eq!(
        answer,
        render(
            "command",
            "post_mailed",
            json!({
                "name": "张三",
                "case_no": case_no(c.id),
                "kind": "termination_notice",
                "tracking_no": "EA555666777CN",
                "pdf_sha256": detail["pdf_sha256"],
                "html_sha256": detail["html_sha256"],
            })
        )
    );
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_who_comes_back_halts_the_process_until_hr_decides(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = to_the_deadline(&db, platform).await;
    s.at("2026-12-07", "10:30");
    s.say("wangmin", "/自离 张三").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    s.at("2026-12-07", "12:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    // 张三 answers first: his answer goes to HR and the process halts.
    s.say("zhangsan", "我家里出了事，这周回来").await.unwrap();
    let d = departure_of(&*s, c.id).await.unwrap();
    assert_eq!(d.state, "halted");
    assert!(last_text(&*s, "wangmin").contains("我家里出了事"));
    // HR reads it and goes on.
    s.say("wangmin", &format!("/继续 {}", case_no(c.id)))
        .await
        .unwrap();
    assert_eq!(departure_of(&*s, c.id).await.unwrap().state, "collecting");
    // 张三 comes back and checks in: recorded, the process halts, HR is told.
    s.at("2026-12-07", "13:00");
    s.check_in(&["zhangsan"]).await.unwrap();
    let c2 = case_of(&*s, "zhangsan").await;
    assert_eq!((c2.id, c2.status.as_str()), (c.id, "departing"));
    let d = departure_of(&*s, c.id).await.unwrap();
    assert_eq!(d.state, "halted");
    assert_eq!(d.returned_at, Some(shanghai("2026-12-07", "13:00")));
    let told = texts(&*s, "wangmin")
        .into_iter()
        .find(|t| t.contains(&case_no(c.id)) && t.contains("2026-12-07 13:00"))
        .expect("HR is told");
    // A text 打卡 proves nothing of presence: HR is told to check.
    assert!(told.contains("文字打卡未经核实"), "{told}");
    let detail: Value = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.eq("departure_halted"))
        .all(&s.rt().db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .find(|d| d["reason"] == "checked_in")
        .expect("the check-in halted it");
    assert_eq!(detail["source"], "text");
    assert_eq!(detail["verified"], false);
    assert!(last_text(&*s, "zhangsan").contains(&case_no(c.id)));
    // Confirmations and the union item are recorded, but nothing goes out.
    s.at("2026-12-07", "14:00");
    s.press("zhaogang", "confirm_manager").await.unwrap();
    s.press("wangmin", "confirm_hr").await.unwrap();
    s.press("wangmin", "no_union").await.unwrap();
    let d = departure_of(&*s, c.id).await.unwrap();
    assert!(d.manager_confirmed_at.is_some() && d.hr_confirmed_at.is_some());
    assert_eq!(d.state, "halted");
    assert!(
        rows(&*s, c.id)
            .await
            .iter()
            .all(|r| r.step.as_deref() != Some("termination_notice"))
    );
    // The next morning's scan sees him present on Monday: it does not close
    // the case by itself either.
    s.at("2026-12-08", "10:00");
    s.scan().await.unwrap();
    assert_eq!(case_of(&*s, "zhangsan").await.status, "departing");
    // A manager may not decide for HR.
    s.say("zhaogang", &format!("/继续 {}", case_no(c.id)))
        .await
        .unwrap();
    assert_eq!(
        last_text(&*s, "zhaogang"),
        render("command", "refused", json!({}))
    );
    // HR decides to go on: everything is in, the notice goes out now.
    s.say("wangmin", &format!("/继续 {}", case_no(c.id)))
        .await
        .unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(
        (c.status.as_str(), c.resolution.as_deref()),
        ("resolved", Some("terminated"))
    );
    let kinds: Vec<String> = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .order_by_asc(case_event::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert_eq!(kinds.iter().filter(|k| *k == "departure_halted").count(), 2);
    assert!(at("departure_halted") < at("departure_resumed"));
    assert!(at("departure_resumed") < at("termination_notice_issued"));
    assert!(
        rows(&*s, c.id).await.iter().any(|r| r
            .idem_key
            .ends_with(":termination_notice:zhangsan:email")
            && r.status == "sent")
    );
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_may_close_the_case_of_someone_who_came_back(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    // This tenant's policy also sends the deadline card to the manager.
    let policy = r#"[tenants.policy]
version = "deadline-to-managers-too"
expected_receipt_days = 0
deadline_days = 3
rungs = [
  { step = "first_reminder", trigger = { when = "missed_workdays", days = 1 }, send = [["employee", "chat"]] },
  { step = "second_reminder", trigger = { when = "missed_workdays", days = 2 }, send = [["employee", "chat"], ["manager", "chat"]] },
  { step = "formal_notice", trigger = { when = "missed_workdays", days = 3 }, send = [["employee", "chat"], ["employee", "sms"], ["employee", "email"], ["manager", "chat"], ["hr", "chat"]] },
  { step = "deadline_passed", trigger = { when = "notice_deadline" }, send = [["hr", "chat"], ["manager", "chat"]] },
]
"#;
    let s = to_the_deadline_with(&db, platform, policy).await;
    // Still, only HR starts the process.
    s.at("2026-12-07", "10:20");
    s.press("zhaogang", "start_departure").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "open");
    assert_eq!(
        last_text(&*s, "zhaogang"),
        render(
            "card_pressed",
            "reply_departure_refused",
            json!({ "case_no": case_no(c.id), "refusal": "not_hr" })
        )
    );
    s.at("2026-12-07", "10:30");
    s.press("wangmin", "start_departure").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "departing");
    s.at("2026-12-07", "13:00");
    s.check_in(&["zhangsan"]).await.unwrap();
    // A manager's leave entry does not close it either: that is HR's.
    s.say("zhaogang", "/请假 张三 2026-12-01 2026-12-04 事假")
        .await
        .unwrap();
    assert_eq!(case_of(&*s, "zhangsan").await.status, "departing");
    s.say("wangmin", &format!("/结案 {} 已返岗", case_no(c.id)))
        .await
        .unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(
        (c.status.as_str(), c.resolution.as_deref()),
        ("resolved", Some("closed: 已返岗"))
    );
    assert_eq!(departure_of(&*s, c.id).await.unwrap().state, "cancelled");
    // A confirmation pressed afterwards is stale: nothing is recorded or sent.
    s.press("zhaogang", "confirm_manager").await.unwrap();
    assert_eq!(
        last_text(&*s, "zhaogang"),
        render(
            "card_pressed",
            "reply_stale",
            json!({ "case_no": case_no(c.id) })
        )
    );
    let d = departure_of(&*s, c.id).await.unwrap();
    assert!(d.manager_confirmed_at.is_none());
    assert!(
        rows(&*s, c.id)
            .await
            .iter()
            .all(|r| r.step.as_deref() != Some("termination_notice"))
    );
    s.stop().await;
    db.cleanup().await;
}

/// A card stays in a chat after the presser's role changed: HR's union and
/// confirmation buttons need someone who is HR now, the manager's
/// confirmation the subject's manager now; otherwise nothing is recorded.
#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_needs_the_role_the_card_was_sent_for(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = to_the_deadline(&db, platform).await;
    s.at("2026-12-07", "10:30");
    s.press("wangmin", "start_departure").await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert_eq!(c.status, "departing");
    // 王敏 moves out of HR; 张三 gets another manager.
    let orm = &s.rt().db.orm;
    entity::employee::Entity::update_many()
        .col_expr(
            entity::employee::Column::Role,
            sea_orm::sea_query::Expr::value("employee"),
        )
        .filter(entity::employee::Column::UserId.eq("wangmin"))
        .exec(orm)
        .await
        .unwrap();
    entity::employee::Entity::update_many()
        .col_expr(
            entity::employee::Column::ManagerUserId,
            sea_orm::sea_query::Expr::value("wangwu"),
        )
        .filter(entity::employee::Column::UserId.eq("zhangsan"))
        .exec(orm)
        .await
        .unwrap();
    s.at("2026-12-07", "10:40");
    for (who, action) in [
        ("wangmin", "union_notified"),
        ("wangmin", "confirm_hr"),
        ("zhaogang", "confirm_manager"),
    ] {
        s.press(who, action).await.unwrap();
        let answer = last_text(&*s, who);
        assert!(
            answer.contains("此次点击未被记录"),
            "{who} {action}: {answer}"
        );
    }
    let d = departure_of(&*s, c.id).await.unwrap();
    assert!(
        d.union_status.is_none() && d.union_recorded_at.is_none(),
        "{d:?}"
    );
    assert!(
        d.hr_confirmed_at.is_none() && d.manager_confirmed_at.is_none(),
        "{d:?}"
    );
    let refused = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.eq("card_press_refused"))
        .count(orm)
        .await
        .unwrap();
    assert_eq!(refused, 3);
    s.stop().await;
    db.cleanup().await;
}

/// An employee whose record holds consent to electronic delivery, with the
/// contract clause and date it was agreed, and the rules acknowledged: the
/// formal notice says so, and its copy sent to an agreed address counts as
/// delivered when sent (the deadline runs from then, without a read or an
/// acknowledgment). Without consent nothing changes (the tests above).
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreed_electronic_delivery_counts_from_sending(#[case] engine: Engine) {
    use sea_orm::sea_query::Expr;
    let db = TestDb::new(engine).await;
    let s = stage(
        DemoPlatform::Wecom,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    let day = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    entity::employee::Entity::update_many()
        .col_expr(
            entity::employee::Column::DeliveryClause,
            Expr::value("《劳动合同》第十二条（2024版）"),
        )
        .col_expr(
            entity::employee::Column::DeliveryAgreedOn,
            Expr::value(day("2024-01-15")),
        )
        .col_expr(
            entity::employee::Column::ElectronicConsent,
            Expr::value(true),
        )
        .col_expr(
            entity::employee::Column::RulesVersion,
            Expr::value("2026-01"),
        )
        .col_expr(
            entity::employee::Column::RulesAcknowledgedOn,
            Expr::value(day("2026-01-05")),
        )
        .filter(entity::employee::Column::UserId.eq("zhangsan"))
        .exec(&s.rt().db.orm)
        .await
        .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    for d in ["2026-12-02", "2026-12-03", "2026-12-04"] {
        s.at(d, "10:00");
        s.scan().await.unwrap();
        s.at(d, "11:00");
        s.check_in(&but(&["zhangsan"])).await.unwrap();
    }
    s.settle().await.unwrap();
    let notice = texts(&*s, "zhangsan")
        .into_iter()
        .find(|t| t.contains("返岗通知书") && t.contains("依据"))
        .expect("the formal notice");
    assert!(
        notice.contains("您已于 2026-01-05 确认知悉公司考勤规章制度（版本 2026-01）")
            && notice.contains(
                "本通知发送至您在《劳动合同》第十二条（2024版）中约定的送达地址（约定于 2024-01-15）"
            ),
        "{notice}"
    );
    // A copy was sent and may have arrived: no public announcement.
    s.say("wangmin", "/公告 张三 2026-12-04 公告栏")
        .await
        .unwrap();
    let answer = last_text(&*s, "wangmin");
    assert!(
        answer.starts_with("张三 的返岗通知书") && answer.contains("尚有渠道未确认失败"),
        "{answer}"
    );
    // Not at once: a sent copy stands a day first (a read check or a
    // gateway may yet say it never arrived).
    s.at("2026-12-04", "12:00");
    s.scan().await.unwrap();
    assert!(case_of(&*s, "zhangsan").await.receipt_at.is_none());
    // The next day's look at the case finds the delivery, dated when sent.
    s.at("2026-12-05", "10:30");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await;
    assert!(
        c.receipt_via
            .as_deref()
            .is_some_and(|v| v.starts_with("deemed:")),
        "{c:?}"
    );
    let sent_at = (c.receipt_at.unwrap() - shanghai("2026-12-04", "10:00")).num_seconds();
    assert!((0..60).contains(&sent_at), "{c:?}");
    assert_eq!(
        c.deadline_at.unwrap() - c.receipt_at.unwrap(),
        chrono::Duration::days(3)
    );
    s.stop().await;
    db.cleanup().await;
}
