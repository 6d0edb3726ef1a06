//! Simulated days through the real app, on SQLite and PostgreSQL: check-ins,
//! cases, the ladder's notices through the sandbox platform, resolution by
//! check-in and by leave, replies, commands and their permissions, faults.

mod common;

use std::collections::HashMap;

use common::*;
use entity::{absence_case, case_event, check_in, media, outbox};
use rollcall::cases::store::case_no;
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Sandboxed, Stage, StageFault, TENANT, run_story, stage};
use rollcall::outbox::render::Templates;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

/// The app on the sandbox tenant, with the clock at 07:00 on `date`. The
/// daily scan's own schedule is moved to 23:59, so that the tests' explicit
/// scans are the only ones (see `the_daily_scan_runs_by_itself_once`).
async fn start(db: &TestDb, date: &str, extra: &str) -> Sandboxed {
    start_scheduled(
        db,
        date,
        &format!("[tenants.attendance]\nscan_at = \"23:59\"\n{extra}"),
    )
    .await
}

async fn start_scheduled(db: &TestDb, date: &str, extra: &str) -> Sandboxed {
    Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai(date, "07:00"),
        extra,
    )
    .await
    .unwrap()
}

/// [`start`] on `platform`.
async fn start_on(db: &TestDb, platform: DemoPlatform, date: &str) -> Box<dyn Stage> {
    stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai(date, "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap()
}

async fn case_of(s: &dyn Stage, user: &str) -> Option<absence_case::Model> {
    absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq(user))
        .order_by_desc(absence_case::Column::Id)
        .one(&s.rt().db.orm)
        .await
        .unwrap()
}

async fn rows(s: &dyn Stage) -> Vec<outbox::Model> {
    outbox::Entity::find()
        .order_by_asc(outbox::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
}

/// The text of the last chat message `user` received from the platform.
fn last_text(s: &dyn Stage, user: &str) -> String {
    s.received(user)
        .pop()
        .unwrap_or_else(|| panic!("{user} got nothing"))
}

fn block(template: &str, name: &str) -> String {
    Templates::load(None)
        .unwrap()
        .render(template, serde_json::json!({}), &[name])
        .unwrap()
        .block(name)
        .to_owned()
}

const EVERYONE: [&str; 5] = ["wangmin", "zhaogang", "zhangsan", "lisi", "wangwu"];

fn but(absent: &[&str]) -> Vec<&'static str> {
    EVERYONE
        .iter()
        .copied()
        .filter(|u| !absent.contains(u))
        .collect()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_story(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let run = run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let conn = rollcall::db::Database::open(&db.url).await.unwrap();
    let cases = absence_case::Entity::find()
        .order_by_asc(absence_case::Column::Id)
        .all(&conn.orm)
        .await
        .unwrap();
    let by_user: HashMap<&str, &absence_case::Model> =
        cases.iter().map(|c| (c.user_id.as_str(), c)).collect();
    assert_eq!(
        cases.len(),
        2,
        "only 张三 and 李四 missed a day: {cases:#?}"
    );

    let lisi = by_user["lisi"];
    assert_eq!(lisi.status, "resolved");
    assert_eq!(lisi.resolution.as_deref(), Some("checked_in 2026-12-02"));

    let zhangsan = by_user["zhangsan"];
    assert_eq!(zhangsan.status, "open", "acknowledged is not resolved");
    assert_eq!(zhangsan.missed_workdays, 4);
    assert!(zhangsan.acknowledged_at.is_some());
    // Three days after he acknowledged it (Friday 20:30; WeCom shows no
    // read), not after it went out (Friday 10:00).
    assert_eq!(zhangsan.receipt_via.as_deref(), Some("acknowledged"));
    assert_eq!(zhangsan.receipt_at, zhangsan.acknowledged_at);
    let deadline = zhangsan.deadline_at.unwrap();
    assert!(
        deadline >= shanghai("2026-12-07", "20:30") && deadline < shanghai("2026-12-07", "20:31"),
        "{deadline}"
    );
    let steps: Vec<String> = serde_json::from_str(&zhangsan.steps_done).unwrap();
    assert_eq!(
        steps,
        [
            "first_reminder",
            "second_reminder",
            "formal_notice",
            "deadline_passed"
        ]
    );

    let rows = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(zhangsan.id))
        .all(&conn.orm)
        .await
        .unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.idem_key.as_str()).collect();
    let z = zhangsan.id;
    for expected in [
        format!("notice:{z}:first_reminder:zhangsan:chat"),
        format!("notice:{z}:second_reminder:zhangsan:chat"),
        format!("notice:{z}:second_reminder:zhaogang:chat"),
        format!("notice:{z}:formal_notice:zhangsan:chat"),
        format!("notice:{z}:formal_notice:zhangsan:chat-ack"),
        format!("notice:{z}:formal_notice:zhangsan:sms"),
        format!("notice:{z}:formal_notice:zhangsan:email"),
        format!("notice:{z}:formal_notice:zhaogang:chat"),
        format!("notice:{z}:formal_notice:wangmin:chat"),
        format!("notice:{z}:deadline_passed:wangmin:chat"),
    ] {
        assert!(
            keys.contains(&expected.as_str()),
            "{expected} missing from {keys:#?}"
        );
    }
    // SMS and email reached the gateway and the mail server, once, with receipts.
    assert_eq!(run.texts.len(), 1);
    assert_eq!(run.texts[0].to, "13800000003");
    assert!(run.texts[0].text.contains(&case_no(z)));
    assert_eq!(run.mails.len(), 1);
    assert_eq!(run.mails[0].to, ["zhangsan@example.com"]);
    let sms_row = rows.iter().find(|r| r.channel == "sms").unwrap();
    assert_eq!(
        sms_row.receipt_id.as_deref(),
        Some(run.texts[0].id.as_str())
    );
    let mail_row = rows.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(mail_row.receipt_id, run.mails[0].message_id);
    // The manager's card carries the emergency contact, opened from its seal.
    let manager_card = rows
        .iter()
        .find(|r| r.idem_key == format!("notice:{z}:second_reminder:zhaogang:chat"))
        .unwrap();
    assert!(manager_card.payload.contains("张父") && manager_card.payload.contains("13900000003"));
    for r in &rows {
        assert_eq!(r.status, "sent", "{r:#?}");
        assert!(r.receipt_id.is_some() && r.template_hash.len() == 64);
    }
    // Every chat message reached the platform once.
    let mut seen = HashMap::new();
    for body in &run.sent {
        *seen.entry(body.clone()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a message was sent twice");
    // The formal notice states the facts.
    let formal = rows
        .iter()
        .find(|r| r.idem_key == format!("notice:{z}:formal_notice:zhangsan:chat"))
        .unwrap();
    for fact in [
        "2026-12-01、2026-12-02、2026-12-03",
        // The term runs from its receipt: no date it cannot know.
        "自收到本通知之时起 72 小时内",
        "2026-01",
        &case_no(z),
        "主管联系",
    ] {
        assert!(
            formal.payload.contains(fact),
            "{fact} not in {}",
            formal.payload
        );
    }
    // The manager attested; the employee acknowledged; the timeline says so.
    let kinds: Vec<String> = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(z))
        .all(&conn.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"manager_contacted".into())
            && kinds.contains(&"notice_acknowledged".into())
            && kinds.contains(&"notice_received".into()),
        "{kinds:?}"
    );
    assert!(
        run.lines
            .iter()
            .any(|l| l["step"] == "deadline_passed" && l["recipient"] == "王敏")
    );
    // Every message of the story, replies and card updates included, went out.
    let all = outbox::Entity::find().all(&conn.orm).await.unwrap();
    let unsent: Vec<_> = all
        .iter()
        .filter(|r| r.status != "sent")
        .map(|r| &r.idem_key)
        .collect();
    assert!(unsent.is_empty(), "{unsent:?}");
    // Three presses (李四 arrived, 赵刚 contacted, 张三 received), each turned
    // its button into a label with the press's single-use code.
    assert_eq!(
        all.iter()
            .filter(|r| r.idem_key.starts_with("card_update:"))
            .count(),
        3
    );
    conn.close().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holidays_and_adjusted_workdays_count_right(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-09-30", "").await;
    // 王五 misses Wednesday 30 September; 1–7 October is the National Day
    // holiday; he misses Thursday 8 and Friday 9 and Saturday 10 October, an
    // adjusted workday (调休上班). Sunday 11 is a rest day.
    s.at("2026-09-30", "08:00");
    s.check_in(&but(&["wangwu"])).await.unwrap();
    s.at("2026-10-01", "10:00");
    let r = s.scan().await.unwrap();
    assert_eq!(
        (r.day.unwrap().to_string().as_str(), r.opened),
        ("2026-09-30", 1)
    );
    // During the holiday the last ended workday stays 30 September: nothing changes.
    s.at("2026-10-08", "10:00");
    let r = s.scan().await.unwrap();
    assert_eq!(
        (
            r.day.unwrap().to_string().as_str(),
            r.opened,
            r.advanced,
            r.escalated
        ),
        ("2026-09-30", 0, 0, 0)
    );
    s.at("2026-10-08", "11:00");
    s.check_in(&but(&["wangwu"])).await.unwrap();
    s.at("2026-10-09", "10:00");
    s.scan().await.unwrap();
    assert_eq!(case_of(&s, "wangwu").await.unwrap().missed_workdays, 2);
    s.at("2026-10-09", "11:00");
    s.check_in(&but(&["wangwu"])).await.unwrap();
    s.at("2026-10-10", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&s, "wangwu").await.unwrap();
    assert_eq!(c.missed_workdays, 3);
    assert!(c.formal_notice_at.is_some());
    let notice = rows(&s)
        .await
        .into_iter()
        .find(|r| r.idem_key == format!("notice:{}:formal_notice:wangwu:chat", c.id))
        .expect("the formal notice's text")
        .payload;
    assert!(
        notice.contains("2026-09-30、2026-10-08、2026-10-09"),
        "{notice}"
    );
    s.at("2026-10-10", "11:00");
    s.check_in(&but(&["wangwu"])).await.unwrap();
    // Sunday judges Saturday, an adjusted workday: missed.
    s.at("2026-10-11", "10:00");
    let r = s.scan().await.unwrap();
    assert_eq!(r.day.unwrap().to_string(), "2026-10-10");
    assert_eq!(case_of(&s, "wangwu").await.unwrap().missed_workdays, 4);
    // Monday morning judges Saturday again (Sunday is rest): no change.
    s.at("2026-10-12", "10:00");
    let r = s.scan().await.unwrap();
    assert_eq!(
        (r.day.unwrap().to_string().as_str(), r.advanced),
        ("2026-10-10", 0)
    );
    assert_eq!(case_of(&s, "wangwu").await.unwrap().missed_workdays, 4);
    // Nobody who came to work has a case.
    assert_eq!(
        absence_case::Entity::find()
            .count(&s.rt.db.orm)
            .await
            .unwrap(),
        1
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
async fn the_scan_run_twice_changes_nothing_the_second_time(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    // Someone hired on the 2nd is not absent on the 1st.
    let csv = "user_id,name,department,role,hire_date\nnewbie,新人,一号工地,employee,2026-12-02\n";
    rollcall::employees::import_csv(&s.rt().db, &s.rt().key, TENANT, csv.as_bytes(), false)
        .await
        .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    s.at("2026-12-02", "10:00");
    let first = s.scan().await.unwrap();
    assert!(
        case_of(&*s, "newbie").await.is_none(),
        "no case before the hire date"
    );
    let after_first = (rows(&*s).await.len(), s.sent().len());
    let second = s.scan().await.unwrap();
    assert_eq!((first.opened, first.escalated), (1, 1));
    assert_eq!(
        (second.opened, second.advanced, second.escalated),
        (0, 0, 0)
    );
    assert_eq!((rows(&*s).await.len(), s.sent().len()), after_first);
    // The same through the CLI's path: the job queue keys a day's scan once.
    rollcall::jobs::enqueue_scan(&s.rt().db.orm, TENANT, first.day.unwrap(), None)
        .await
        .unwrap();
    rollcall::jobs::enqueue_scan(&s.rt().db.orm, TENANT, first.day.unwrap(), None)
        .await
        .unwrap();
    s.settle().await.unwrap();
    assert_eq!(rows(&*s).await.len(), after_first.0);
    assert_eq!(case_of(&*s, "zhangsan").await.unwrap().missed_workdays, 1);
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
async fn approved_leave_resolves_the_case_and_stops_the_ladder(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await.unwrap();
    assert_eq!(c.status, "open");
    // HR enters the leave the next morning, for the day already judged.
    s.at("2026-12-02", "10:30");
    s.say("wangmin", "/请假 张三 2026-12-01 2026-12-03 病假")
        .await
        .unwrap();
    let c = case_of(&*s, "zhangsan").await.unwrap();
    assert_eq!(c.status, "resolved");
    assert_eq!(
        c.resolution.as_deref(),
        Some("leave 2026-12-01..2026-12-03")
    );
    assert!(last_text(&*s, "wangmin").contains(&case_no(c.id)));
    // The next scans judge leave days: no new case, no reminder.
    for (date, _) in [("2026-12-03", ()), ("2026-12-04", ())] {
        s.at(date, "10:00");
        s.scan().await.unwrap();
    }
    let zhangsan_cases = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(zhangsan_cases, 1);
    assert!(
        !rows(&*s)
            .await
            .iter()
            .any(|r| r.step.as_deref() == Some("second_reminder") && r.recipient == "zhangsan")
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
async fn a_reply_pauses_the_case_and_tells_hr(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    s.at("2026-12-02", "10:20");
    s.say("zhangsan", "家里老人住院，我下周一回来")
        .await
        .unwrap();
    let c = case_of(&*s, "zhangsan").await.unwrap();
    assert_eq!(c.status, "paused");
    assert!(
        last_text(&*s, "wangmin").contains("家里老人住院"),
        "HR sees the reply"
    );
    // Paused: the next missed day is counted, no reminder goes out; HR decides.
    s.at("2026-12-02", "11:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    s.at("2026-12-03", "10:00");
    s.scan().await.unwrap();
    let c = case_of(&*s, "zhangsan").await.unwrap();
    assert_eq!((c.status.as_str(), c.missed_workdays), ("paused", 2));
    assert!(
        !rows(&*s)
            .await
            .iter()
            .any(|r| r.step.as_deref() == Some("second_reminder"))
    );
    s.at("2026-12-03", "10:30");
    s.say(
        "wangmin",
        &format!("/结案 {} 已核实家中有事，批准事假", case_no(c.id)),
    )
    .await
    .unwrap();
    assert_eq!(case_of(&*s, "zhangsan").await.unwrap().status, "resolved");
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
async fn commands_answer_by_role(#[case] engine: Engine, #[case] platform: DemoPlatform) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap(); // everyone has a case for 12-01: nobody checked in
    let refused = block("command", "refused");
    let help = block("command", "help");
    let hr_case = case_no(case_of(&*s, "wangmin").await.unwrap().id);
    let own_case = case_no(case_of(&*s, "zhangsan").await.unwrap().id);
    let resolve_hr = format!("/resolve {hr_case} 好了");
    let resolve_own = format!("/resolve {own_case} 好了");
    let manager_case = case_no(case_of(&*s, "zhaogang").await.unwrap().id);
    let resolve_manager_own = format!("/结案 {manager_case} 我自己的");
    // (sender, command, what the answer holds; None = the refusal)
    let table: &[(&str, &str, Option<&str>)] = &[
        ("wangmin", "/cases", Some("RC-")),
        ("wangmin", "/状态 张三", Some("张三")),
        ("zhaogang", "/status zhangsan", Some("张三")),
        ("zhaogang", "/status 王敏", None),
        ("zhaogang", "/案件", Some("李四")),
        ("zhangsan", "/status", Some("张三")),
        ("zhangsan", "/status 李四", None),
        ("zhangsan", "/cases", None),
        ("zhangsan", "/leave 张三 2026-12-01 2026-12-01 病假", None),
        ("zhangsan", &resolve_own, None),
        ("zhaogang", &resolve_hr, None),
        (
            "zhaogang",
            "/leave 李四 2026-12-01 2026-12-01 事假",
            Some("李四"),
        ),
        ("zhaogang", &resolve_manager_own, None),
        // Whether someone exists is not told to who may not ask about them:
        // the same refusal for a colleague and for no one.
        ("zhangsan", "/status 不存在的人", None),
        ("zhangsan", "/status nobody", None),
        ("zhaogang", "/status 不存在的人", None),
        ("zhaogang", "/结案 RC-999999 没有这个案件", None),
        // HR decides nothing about their own case.
        ("wangmin", "/leave 王敏 2026-12-01 2026-12-01 病假", None),
        ("wangmin", &resolve_hr, None),
        ("wangmin", &format!("/继续 {hr_case}"), None),
        // Another HR person's case is HR's to decide: someone who is not
        // found is said so to HR.
        ("wangmin", "/status 不存在的人", Some("不存在的人")),
    ];
    for (sender, text, expect) in table {
        s.say(sender, text).await.unwrap();
        let answer = last_text(&*s, sender);
        match expect {
            Some(fragment) => assert!(
                answer.contains(fragment) && answer != refused,
                "{sender} {text}: {answer}"
            ),
            None => assert_eq!(answer, refused, "{sender} {text}"),
        }
    }
    s.say("wangwu", "/help").await.unwrap();
    assert_eq!(last_text(&*s, "wangwu"), help);
    s.say("wangwu", "/请假 张三 明天 后天 病假").await.unwrap();
    assert!(
        last_text(&*s, "wangwu").contains("明天"),
        "a bad date is named"
    );
    // Someone not in the directory gets the polite answer, and it is recorded.
    s.say("stranger", "/cases").await.unwrap();
    assert_eq!(last_text(&*s, "stranger"), block("command", "unknown_user"));
    let commands = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("command"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(
        commands as usize,
        table.len() + 2,
        "each command and its answer is recorded"
    );
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_keep_what_was_sent(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-12-01", "").await;
    let t = s.at("2026-12-01", "07:55");
    let photo = s
        .sandbox
        .add_media(b"\xff\xd8\xffsite-photo-bytes".to_vec(), "image/jpeg");
    assert!(s.phone.image("zhangsan", &photo, t).await.delivered);
    assert!(
        s.phone
            .location("lisi", 31.2600, 121.4737, "别处", t)
            .await
            .delivered
    );
    assert!(
        s.phone
            .location("wangwu", 31.2305, 121.4738, "一号工地", t)
            .await
            .delivered
    );
    s.settle().await.unwrap();
    let all = check_in::Entity::find().all(&s.rt.db.orm).await.unwrap();
    let get = |u: &str| all.iter().find(|c| c.user_id == u).unwrap().clone();
    let z = get("zhangsan");
    let stored = media::Entity::find()
        .one(&s.rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    use sha2::Digest;
    assert_eq!(stored.bytes, b"\xff\xd8\xffsite-photo-bytes");
    assert_eq!(
        z.media_sha256.as_deref(),
        Some(rollcall::outbox::render::hex(&sha2::Sha256::digest(&stored.bytes)).as_str())
    );
    let l = get("lisi");
    assert!(
        l.flagged && l.site.is_none() && l.distance_m.unwrap() > 3000.0,
        "{l:?}"
    );
    assert!(
        last_text(&s, "lisi").contains("⚠"),
        "the reply says it is off site"
    );
    let w = get("wangwu");
    assert_eq!((w.flagged, w.site.as_deref()), (false, Some("一号工地")));
    assert_eq!(w.work_date.to_string(), "2026-12-01");
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
async fn every_fault_ends_sent_once_or_undeliverable_with_hr_told(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n[delivery]\nmax_backoff_secs = 1\ntimeout_secs = 1\n",
    )
    .await
    .unwrap();
    s.mark_invalid("lisi");
    s.push_faults(&[
        StageFault::ServerError,
        StageFault::Busy,
        StageFault::Timeout(std::time::Duration::from_millis(1500)),
        StageFault::RateLimited,
        StageFault::ExpiredToken,
        StageFault::ServerError,
    ]);
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap(); // five first reminders
    let all = rows(&*s).await;
    let notices: Vec<&outbox::Model> = all
        .iter()
        .filter(|r| r.idem_key.starts_with("notice:"))
        .collect();
    assert_eq!(notices.len(), 5);
    for n in &notices {
        let expected = if n.recipient == "lisi" {
            "undeliverable"
        } else {
            "sent"
        };
        assert_eq!(n.status, expected, "{n:#?}");
    }
    // Each delivered notice reached the platform exactly once.
    for n in notices.iter().filter(|n| n.status == "sent") {
        let card: serde_json::Value = serde_json::from_str(&n.payload).unwrap();
        let copies = s.card_copies(card["card_id"].as_str().unwrap());
        assert_eq!(copies, 1, "{}", n.idem_key);
    }
    assert!(
        notices.iter().any(|n| n.attempts > 1),
        "the faults were met"
    );
    // HR heard about 李四.
    let told = all
        .iter()
        .find(|r| r.idem_key.starts_with("undeliverable:"))
        .expect("HR is told");
    assert_eq!(
        (told.recipient.as_str(), told.status.as_str()),
        ("wangmin", "sent")
    );
    assert!(told.payload.contains("李四"));
    s.stop().await;
    db.cleanup().await;
}

/// Moves the clock minute by minute from `from` to `to` (HH:MM on `date`),
/// a quarter of a second of real time each, so that the outbox's retries
/// (at most a second apart here) meet the platform along the way.
async fn minutes_pass(s: &dyn Stage, date: &str, from: u32, to: u32) {
    for minute in from..=to {
        s.at(date, &format!("{:02}:{:02}", minute / 60, minute % 60));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The outbox rows of one ladder step of 张三's case.
fn step_rows<'a>(all: &'a [outbox::Model], case: i64, step: &str) -> Vec<&'a outbox::Model> {
    let prefix = format!("notice:{case}:{step}:");
    all.iter()
        .filter(|r| r.idem_key.starts_with(&prefix))
        .collect()
}

/// How many times the card of a chat `row` reached the platform.
fn copies(s: &dyn Stage, row: &outbox::Model) -> usize {
    let card: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
    s.card_copies(card["card_id"].as_str().expect("a chat notice is a card"))
}

/// A whole ladder (張三 misses 1–3 December) on each platform through its
/// faults, the retry window cut to 30 minutes:
/// - the first reminder meets the platform down for 20 minutes: it waits,
///   retried, and arrives once when the platform is back; the check-ins
///   made meanwhile are taken and answered afterwards;
/// - the second reminder (张三 and his manager) meets it down for 45
///   minutes, past the window: both copies are given up as failed, never
///   sent, and HR is told of each once the platform answers again;
/// - the formal notice meets a 5xx, "busy", a timeout, the frequency limit
///   and an expired token on the chat, and an SMS gateway that takes the
///   text and never answers: each chat copy arrives exactly once, the
///   email is sent, the text is `unknown`, asked for once only, and HR is
///   told to check it.
#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_ladder_through_outages_and_a_hanging_sms_gateway(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    use rollcall::platform::sandbox::SmsFault;
    let db = TestDb::new(engine).await;
    let staged = stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n[delivery]\nmax_backoff_secs = 1\ntimeout_secs = 1\nretry_for_secs = 1800\n",
    )
    .await
    .unwrap();
    let s = &*staged;
    let others = but(&["zhangsan"]);
    s.at("2026-12-01", "08:00");
    s.check_in(&others).await.unwrap();

    // 2 December: down for 20 minutes from 10:00.
    s.at("2026-12-02", "10:00");
    s.outage().set_down(true);
    let report = rollcall::attendance::punches::scan(s.rt(), TENANT, None)
        .await
        .unwrap();
    assert_eq!(report.opened, 1);
    let z = case_of(s, "zhangsan").await.unwrap().id;
    let answered: HashMap<&str, usize> = others.iter().map(|u| (*u, s.received(u).len())).collect();
    for user in &others {
        s.text(user, "打卡").await.unwrap();
    }
    minutes_pass(s, "2026-12-02", 10 * 60 + 1, 10 * 60 + 20).await;
    let all = rows(s).await;
    let first = step_rows(&all, z, "first_reminder");
    assert_eq!(first.len(), 1, "{all:#?}");
    assert_eq!(first[0].status, "pending", "{:#?}", first[0]);
    assert!(first[0].attempts >= 2, "retried: {:#?}", first[0]);
    assert_eq!(copies(s, first[0]), 0);
    let refused = s.outage().refused();
    assert!(refused >= 2, "{refused} calls met the outage");
    s.outage().set_down(false);
    s.settle().await.unwrap();
    let all = rows(s).await;
    let first = step_rows(&all, z, "first_reminder");
    assert_eq!(first[0].status, "sent");
    assert_eq!(copies(s, first[0]), 1, "the first reminder arrived once");
    for user in &others {
        assert_eq!(
            s.received(user).len(),
            answered[user] + 1,
            "{user}'s check-in during the outage was answered once it ended"
        );
    }
    s.at("2026-12-02", "11:00");
    s.check_in(&others).await.unwrap();

    // 3 December: down for 45 minutes, past the 30-minute window.
    s.at("2026-12-03", "10:00");
    s.outage().set_down(true);
    rollcall::attendance::punches::scan(s.rt(), TENANT, None)
        .await
        .unwrap();
    minutes_pass(s, "2026-12-03", 10 * 60 + 1, 10 * 60 + 45).await;
    until_rows(s, "the second reminders are given up", |all| {
        let second = step_rows(all, z, "second_reminder");
        second.len() == 2 && second.iter().all(|r| r.status == "failed")
    })
    .await;
    s.outage().set_down(false);
    s.settle().await.unwrap();
    let all = rows(s).await;
    for row in step_rows(&all, z, "second_reminder") {
        assert_eq!(copies(s, row), 0, "a failed copy never arrived: {row:#?}");
        let told: Vec<&outbox::Model> = all
            .iter()
            .filter(|r| {
                r.idem_key
                    .starts_with(&format!("undeliverable:{}:", row.id))
            })
            .collect();
        assert_eq!(told.len(), 1, "HR is told once of {}", row.idem_key);
        assert_eq!(
            (told[0].recipient.as_str(), told[0].status.as_str()),
            ("wangmin", "sent")
        );
    }
    s.at("2026-12-03", "11:00");
    s.check_in(&others).await.unwrap();

    // 4 December: the formal notice through every transient fault, and a
    // gateway that takes the text and hangs.
    s.push_faults(&[
        StageFault::ServerError,
        StageFault::Busy,
        StageFault::Timeout(std::time::Duration::from_millis(1500)),
        StageFault::RateLimited,
        StageFault::ExpiredToken,
    ]);
    s.sms().push_fault(SmsFault::AcceptThenHang);
    s.at("2026-12-04", "10:00");
    s.scan().await.unwrap();
    let all = rows(s).await;
    let formal = step_rows(&all, z, "formal_notice");
    let chat: Vec<&&outbox::Model> = formal.iter().filter(|r| r.channel == "chat").collect();
    assert!(chat.len() >= 3, "张三, his manager and HR: {formal:#?}");
    for row in &chat {
        assert_eq!(row.status, "sent", "{row:#?}");
        if row.payload.contains("card_id") {
            assert_eq!(copies(s, row), 1, "{} arrived once", row.idem_key);
        }
    }
    assert!(
        chat.iter().any(|r| r.attempts > 1),
        "the faults were met: {chat:#?}"
    );
    let email = formal.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(email.status, "sent");
    let sms = formal.iter().find(|r| r.channel == "sms").unwrap();
    assert_eq!(sms.status, "unknown", "{sms:#?}");
    let out_id = format!("{TENANT}:{}", sms.idem_key);
    let asked = s.sms().requests();
    assert_eq!(
        asked.iter().filter(|r| **r == out_id).count(),
        1,
        "{asked:?}"
    );
    assert_eq!(s.sms().texts().len(), 1);
    let told = all
        .iter()
        .find(|r| r.idem_key == format!("sms_unknown:{}:wangmin", sms.id))
        .expect("HR is told to check the text");
    assert_eq!(told.status, "sent");
    staged.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_member_limit_is_honoured(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    // WeCom's limit is 30 a minute; the same rule at 5 per 2 s runs in seconds.
    let s = start(
        &db,
        "2026-12-01",
        "[delivery]\nmember_limit = 5\nmember_window_secs = 2\nmax_backoff_secs = 1\n",
    )
    .await;
    s.sandbox
        .set_member_limit(5, std::time::Duration::from_secs(2));
    let t = s.at("2026-12-01", "09:00");
    let started = std::time::Instant::now();
    for _ in 0..12 {
        assert!(s.phone.text("wangmin", "/帮助", t).await.delivered);
    }
    s.settle().await.unwrap();
    assert!(
        s.sandbox.dropped().is_empty(),
        "nothing over the limit: {:?}",
        s.sandbox.dropped()
    );
    assert_eq!(s.sandbox.sent_to("wangmin"), 12, "every answer arrived");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "12 messages at 5 per 2 s need two waits"
    );
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_scan_runs_by_itself_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start_scheduled(&db, "2026-12-01", "").await;
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    // After 10:00 the scheduler (every 30 s) enqueues the scan of the 1st.
    s.at("2026-12-02", "10:05");
    let started = std::time::Instant::now();
    while case_of(&s, "zhangsan").await.is_none() {
        assert!(started.elapsed() < PATIENCE, "the scan did not run");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s.settle().await.unwrap();
    // An hour later a tick (every 30 s) enqueues the same day's scan again,
    // which its key keeps to the one job, and the hourly deadline scan of
    // that day, which must count nothing twice. Wait until that one ran.
    s.at("2026-12-02", "11:05");
    let scans = || async {
        rollcall::workers::jobs_like(
            &s.rt.db,
            rollcall::jobs::SCAN_QUEUE,
            &format!("scan:{TENANT}:%"),
        )
        .await
        .unwrap()
    };
    let started = std::time::Instant::now();
    loop {
        let jobs = scans().await;
        if jobs.iter().any(|j| j.contains(":2026-12-02T11 Done")) {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "no hourly scan ran: {jobs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s.settle().await.unwrap();
    let jobs = scans().await;
    assert_eq!(
        jobs.iter()
            .map(|j| j.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        [
            format!("scan:{TENANT}:2026-12-01"),
            format!("scan:{TENANT}:2026-12-01:2026-12-02T11")
        ],
        "{jobs:?}"
    );
    assert_eq!(
        absence_case::Entity::find()
            .count(&s.rt.db.orm)
            .await
            .unwrap(),
        1
    );
    let reminders = rows(&s)
        .await
        .into_iter()
        .filter(|r| r.step.as_deref() == Some("first_reminder"))
        .count();
    assert_eq!(reminders, 1);
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judged_day_is_never_reopened(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-12-01", "").await;
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan", "lisi"])).await.unwrap();
    // 李四 is back on the 2nd before the scan of the 1st: his missed day is
    // recorded as a case closed by his return, with no reminder.
    s.at("2026-12-02", "08:00");
    s.check_in(&["lisi"]).await.unwrap();
    s.at("2026-12-02", "10:00");
    // Two scans of the same day at once (the scheduler's daily and hourly
    // jobs): both succeed, one case each.
    let (a, b) = tokio::join!(
        rollcall::cases::scan::scan(&s.rt, TENANT, None),
        rollcall::cases::scan::scan(&s.rt, TENANT, None)
    );
    a.unwrap();
    b.unwrap();
    s.settle().await.unwrap();
    let lisi = case_of(&s, "lisi").await.unwrap();
    assert_eq!(
        (lisi.status.as_str(), lisi.resolution.as_deref()),
        ("resolved", Some("checked_in 2026-12-02"))
    );
    assert_eq!(
        absence_case::Entity::find()
            .count(&s.rt.db.orm)
            .await
            .unwrap(),
        2
    );
    // 张三 presses 我已到岗: resolved. The hourly scans of the 1st change nothing.
    s.at("2026-12-02", "10:30");
    s.press("zhangsan", "arrived").await.unwrap();
    s.press("zhangsan", "arrived").await.unwrap(); // a second press counts once
    assert_eq!(case_of(&s, "zhangsan").await.unwrap().status, "resolved");
    for hour in ["11:00", "12:00"] {
        s.at("2026-12-02", hour);
        let r = s.scan().await.unwrap();
        assert_eq!((r.opened, r.escalated), (0, 0), "{hour}");
    }
    assert_eq!(
        absence_case::Entity::find()
            .count(&s.rt.db.orm)
            .await
            .unwrap(),
        2
    );
    let reminders = rows(&s)
        .await
        .into_iter()
        .filter(|r| r.step.as_deref() == Some("first_reminder"))
        .count();
    assert_eq!(reminders, 1, "only 张三 was reminded, once");
    let presses = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("card_pressed"))
        .count(&s.rt.db.orm)
        .await
        .unwrap();
    assert_eq!(presses, 1);
    s.stop().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_rest_days_partial_leave_and_resume(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-12-05", "").await;
    // 老陈 works Saturdays (his own rest day is Sunday only).
    let csv = "user_id,name,department,manager_user_id,role,rest_days\nlaochen,老陈,一号工地,zhaogang,employee,sun\n";
    rollcall::employees::import_csv(&s.rt.db, &s.rt.key, TENANT, csv.as_bytes(), false)
        .await
        .unwrap();
    s.at("2026-12-06", "10:00");
    let sat = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
    let r = rollcall::cases::scan::scan(&s.rt, TENANT, Some(sat))
        .await
        .unwrap();
    s.settle().await.unwrap();
    assert_eq!(
        (r.workday_for, r.opened),
        (1, 1),
        "Saturday is a workday for him alone"
    );
    // He misses Monday too; leave for Monday only leaves Saturday unexcused.
    s.at("2026-12-08", "10:00");
    s.scan().await.unwrap();
    assert_eq!(case_of(&s, "laochen").await.unwrap().missed_workdays, 2);
    s.say("wangmin", "/请假 老陈 2026-12-07 2026-12-07 病假")
        .await
        .unwrap();
    let c = case_of(&s, "laochen").await.unwrap();
    assert_eq!(
        c.status, "open",
        "leave for one of two missed days does not close the case"
    );
    // His reply pauses it; HR reads it and resumes: the ladder goes on.
    s.say("laochen", "我周六家里有事").await.unwrap();
    assert_eq!(case_of(&s, "laochen").await.unwrap().status, "paused");
    s.say("wangmin", &format!("/继续 {}", case_no(c.id)))
        .await
        .unwrap();
    let c = case_of(&s, "laochen").await.unwrap();
    assert_eq!(c.status, "open");
    let sent: Vec<String> = rows(&s)
        .await
        .into_iter()
        .filter(|r| r.case_id == Some(c.id) && r.status == "sent")
        .filter_map(|r| r.step)
        .collect();
    assert!(
        sent.contains(&"second_reminder".to_owned()),
        "due on resume: {sent:?}"
    );
    s.stop().await;
    db.cleanup().await;
}

/// The copy of the formal notice to the manager and HR names the channels
/// the notice really went out on: with no email address on file for 张三,
/// chat and SMS only.
#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_names_the_channels_really_used(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    entity::employee::Entity::update_many()
        .col_expr(
            entity::employee::Column::Email,
            sea_orm::sea_query::Expr::value(Option::<String>::None),
        )
        .filter(entity::employee::Column::UserId.eq("zhangsan"))
        .exec(&s.rt().db.orm)
        .await
        .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    for day in ["2026-12-02", "2026-12-03", "2026-12-04"] {
        s.at(day, "10:00");
        s.scan().await.unwrap();
        s.at(day, "11:00");
        s.check_in(&but(&["zhangsan"])).await.unwrap();
    }
    let chat = match platform {
        DemoPlatform::Feishu => "飞书",
        DemoPlatform::Dingtalk => "钉钉",
        DemoPlatform::Wecom => "企业微信",
    };
    for who in ["wangmin", "zhaogang"] {
        let copy = s
            .received(who)
            .into_iter()
            .find(|t| t.starts_with("抄送：返岗通知书已发出"))
            .unwrap_or_else(|| panic!("{who} got no copy"));
        assert!(
            copy.contains(&format!("发送渠道：{chat}、短信。")),
            "{who}: {copy}"
        );
    }
    assert!(
        rows(&*s)
            .await
            .iter()
            .all(|r| !(r.recipient == "zhangsan" && r.channel == "email")),
        "no email was queued"
    );
    s.stop().await;
    db.cleanup().await;
}

/// Waits (up to PATIENCE) until `check` holds for the outbox rows.
async fn until_rows(s: &dyn Stage, what: &str, check: impl Fn(&[outbox::Model]) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let all = rows(s).await;
        if check(&all) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {all:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A reminder still waiting for its retry when the employee answers (the
/// case pauses: the queued notice will not go out), then HR resumes the
/// case: the step goes out again, under a new key, instead of staying
/// marked done with nothing sent.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_stopped_by_a_pause_goes_out_after_the_resume(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, DemoPlatform::Wecom, "2026-12-01").await;
    s.at("2026-12-01", "08:00");
    s.check_in(&but(&["zhangsan"])).await.unwrap();
    // The first send meets WeCom's frequency limit: retried a minute later.
    s.push_faults(&[StageFault::RateLimited]);
    s.at("2026-12-02", "10:00");
    rollcall::attendance::punches::scan(s.rt(), TENANT, None)
        .await
        .unwrap();
    let first = |r: &outbox::Model| {
        r.recipient == "zhangsan" && r.step.as_deref() == Some("first_reminder")
    };
    until_rows(&*s, "the reminder's first attempt", |all| {
        all.iter()
            .any(|r| first(r) && r.status == "pending" && r.attempts >= 1)
    })
    .await;
    // He answers before the retry: the case pauses.
    s.text("zhangsan", "我生病了，在医院").await.unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let c = loop {
        let c = case_of(&*s, "zhangsan").await.unwrap();
        if c.status == "paused" {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // HR goes on: the reminder goes out now, once, under a new key.
    s.text("wangmin", &format!("/继续 {}", case_no(c.id)))
        .await
        .unwrap();
    let again = format!("notice:{}:first_reminder:zhangsan:chat:f3", c.id);
    until_rows(&*s, "the reminder again", |all| {
        all.iter()
            .any(|r| r.idem_key == again && r.status == "sent")
    })
    .await;
    let all = rows(&*s).await;
    let sent: Vec<&outbox::Model> = all
        .iter()
        .filter(|r| first(r) && r.status == "sent")
        .collect();
    assert_eq!(sent.len(), 1, "{all:#?}");
    let resumed = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(c.id))
        .filter(case_event::Column::Kind.eq("case_resumed"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap();
    assert!(
        resumed.detail.contains("first_reminder"),
        "{}",
        resumed.detail
    );
    s.stop().await;
    db.cleanup().await;
}
