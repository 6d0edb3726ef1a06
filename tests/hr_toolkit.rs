//! HR's toolkit through the real app and the sandbox, on SQLite and
//! PostgreSQL and on every platform: shifts (lateness, early leave,
//! check-outs, an overnight shift), contract expiry reminders with their
//! card, and the monthly attendance sheet, asked for in chat and written by
//! the command line, read back with an independent reader (calamine).

mod common;

use std::io::Cursor;
use std::process::Command;

use calamine::{Reader, Xlsx, open_workbook_from_rs};
use common::*;
use entity::{case_event, check_in, contract_reminder, evidence_leaf};
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Stage, TENANT, downloads_built, stage};
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

/// Two shifts; nobody has one unless the roster says so. The daily scan's
/// schedule is moved out of the way: the tests scan and remind themselves.
const SHIFTS: &str = r#"[[tenants.shifts]]
name = "白班"
start = "08:00"
end = "17:00"
grace_minutes = 10
[[tenants.shifts]]
name = "夜班"
start = "22:00"
end = "06:00"
[tenants.attendance]
scan_at = "23:59"
"#;

async fn start_on(db: &TestDb, platform: DemoPlatform, date: &str) -> Box<dyn Stage> {
    stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai(date, "07:00"),
        SHIFTS,
    )
    .await
    .unwrap()
}

async fn import(s: &dyn Stage, csv: &str) {
    rollcall::employees::import_csv(&s.rt().db, &s.rt().key, TENANT, csv.as_bytes(), false)
        .await
        .unwrap();
}

fn last_text(s: &dyn Stage, user: &str) -> String {
    s.received(user)
        .pop()
        .unwrap_or_else(|| panic!("{user} got nothing"))
}

/// (user, direction, work date, shift, minutes off) of every check-in.
async fn punches(s: &dyn Stage) -> Vec<(String, String, String, Option<String>, Option<i32>)> {
    check_in::Entity::find()
        .order_by_asc(check_in::Column::Id)
        .all(&s.rt().db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.user_id,
                c.direction,
                c.work_date.to_string(),
                c.shift,
                c.minutes_off,
            )
        })
        .collect()
}

fn p(
    user: &str,
    direction: &str,
    day: &str,
    shift: Option<&str>,
    off: Option<i32>,
) -> (String, String, String, Option<String>, Option<i32>) {
    (
        user.into(),
        direction.into(),
        day.into(),
        shift.map(str::to_owned),
        off,
    )
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_judge_lateness_early_leave_and_check_outs(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    // 王敏 (HR) has no shift: her day is judged as before.
    import(
        &*s,
        "user_id,name,shift\nzhaogang,赵刚,白班\nlisi,李四,白班\nwangwu,王五,白班\nzhangsan,张三,夜班\n",
    )
    .await;
    s.at("2026-12-01", "07:55");
    s.say("zhaogang", "打卡").await.unwrap();
    s.at("2026-12-01", "08:25");
    s.say("lisi", "打卡").await.unwrap();
    let reply = last_text(&*s, "lisi");
    assert!(reply.contains("迟到 25 分钟"), "{reply}");
    assert!(reply.contains("白班"), "{reply}");
    s.at("2026-12-01", "09:30");
    s.say("wangmin", "打卡").await.unwrap();
    assert!(!last_text(&*s, "wangmin").contains("迟到"));
    // A place after half the shift, once checked in: the end of the day.
    s.at("2026-12-01", "16:00");
    s.place("zhaogang", 31.2306, 121.4739, "一号工地北门")
        .await
        .unwrap();
    s.settle().await.unwrap();
    s.at("2026-12-01", "16:30");
    s.say("wangwu", "下班打卡").await.unwrap();
    let reply = last_text(&*s, "wangwu");
    assert!(reply.contains("已记录您的下班"), "{reply}");
    assert!(reply.contains("早退 30 分钟"), "{reply}");
    s.at("2026-12-01", "17:20");
    s.say("wangmin", "下班").await.unwrap();
    // The night shift: in at 22:05 (no grace), out the next morning.
    s.at("2026-12-01", "22:05");
    s.say("zhangsan", "打卡").await.unwrap();
    assert!(last_text(&*s, "zhangsan").contains("迟到 5 分钟"));
    s.at("2026-12-02", "06:03");
    s.say("zhangsan", "下班").await.unwrap();
    let reply = last_text(&*s, "zhangsan");
    assert!(
        reply.contains("已记录您的下班") && !reply.contains("早退"),
        "{reply}"
    );
    assert_eq!(
        punches(&*s).await,
        vec![
            p("zhaogang", "in", "2026-12-01", Some("白班"), None),
            p("lisi", "in", "2026-12-01", Some("白班"), Some(25)),
            p("wangmin", "in", "2026-12-01", None, None),
            p("zhaogang", "out", "2026-12-01", Some("白班"), Some(60)),
            p("wangwu", "out", "2026-12-01", Some("白班"), Some(30)),
            p("wangmin", "out", "2026-12-01", None, None),
            p("zhangsan", "in", "2026-12-01", Some("夜班"), Some(5)),
            p("zhangsan", "out", "2026-12-01", Some("夜班"), None),
        ]
    );
    // Every punch is a leaf with its judgement.
    let leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("check_in"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(leaves, 8);
    // Absence is judged as before: everyone came on the 1st (a check-out
    // alone, or a night that ends the next day, counts for the day).
    s.at("2026-12-02", "10:00");
    let report = s.scan().await.unwrap();
    assert_eq!(report.opened, 0, "{report:?}");
    s.stop().await;
    db.cleanup().await;
}

async fn reminder_of(s: &dyn Stage, user: &str) -> contract_reminder::Model {
    contract_reminder::Entity::find()
        .filter(contract_reminder::Column::UserId.eq(user))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no reminder for {user}"))
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_ending_reminds_hr_once_and_records_the_choice(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    // 李四's contract ends in 30 days, 王五's in 90: only 李四's is due.
    import(
        &*s,
        "user_id,name,contract_end_date\nlisi,李四,2026-12-31\nwangwu,王五,2027-03-01\n",
    )
    .await;
    s.at("2026-12-01", "10:00");
    let first = s.hr_reminders().await.unwrap();
    assert_eq!((first.new, first.again), (1, 0));
    let card = last_text(&*s, "wangmin");
    assert!(card.contains("劳动合同即将到期：李四"), "{card}");
    assert!(
        card.contains("2026-12-31") && card.contains("30 天"),
        "{card}"
    );
    // The hourly scans remind nobody twice.
    let sent = s.sent().len();
    s.at("2026-12-01", "11:00");
    assert_eq!(s.hr_reminders().await.unwrap().new, 0);
    assert_eq!(s.sent().len(), sent);
    // 稍后提醒: the card comes back a week later, not before.
    s.at("2026-12-01", "11:30");
    s.press("wangmin", "contract_later").await.unwrap();
    s.settle().await.unwrap();
    let reply = last_text(&*s, "wangmin");
    assert!(reply.contains("2026-12-08"), "{reply}");
    assert_eq!(
        reminder_of(&*s, "lisi").await.remind_again_on,
        Some("2026-12-08".parse().unwrap())
    );
    s.at("2026-12-07", "10:00");
    assert_eq!(s.hr_reminders().await.unwrap().again, 0);
    s.at("2026-12-08", "10:00");
    assert_eq!(s.hr_reminders().await.unwrap().again, 1);
    let card = last_text(&*s, "wangmin");
    assert!(
        card.contains("第 2 次提醒") && card.contains("23 天"),
        "{card}"
    );
    // 不续签: recorded, with the rules on notice and compensation.
    s.at("2026-12-08", "10:30");
    s.press("wangmin", "contract_not_renew").await.unwrap();
    s.settle().await.unwrap();
    let reply = last_text(&*s, "wangmin");
    assert!(
        reply.contains("不与 李四 续签") && reply.contains("经济补偿"),
        "{reply}"
    );
    let r = reminder_of(&*s, "lisi").await;
    assert_eq!(r.decision.as_deref(), Some("not_renew"));
    assert_eq!(r.decided_by.as_deref(), Some("wangmin"));
    assert_eq!((r.rounds, r.remind_again_on), (2, None));
    // A later button of the same card changes nothing.
    s.at("2026-12-08", "10:40");
    s.press("wangmin", "contract_renew").await.unwrap();
    s.settle().await.unwrap();
    let reply = last_text(&*s, "wangmin");
    assert!(reply.contains("已由 王敏 选择“不续签”"), "{reply}");
    assert_eq!(
        reminder_of(&*s, "lisi").await.decision.as_deref(),
        Some("not_renew")
    );
    // Decided: no more cards, not even after another snooze's time.
    s.at("2026-12-20", "10:00");
    let later = s.hr_reminders().await.unwrap();
    assert_eq!((later.new, later.again), (0, 0));
    // A renewed contract (a new end date) is a new reminder.
    import(
        &*s,
        "user_id,name,contract_end_date\nlisi,李四,2027-01-15\n",
    )
    .await;
    assert_eq!(s.hr_reminders().await.unwrap().new, 1);
    // All of it is evidence.
    let db_ = &s.rt().db.orm;
    let kinds: Vec<String> = case_event::Entity::find()
        .filter(case_event::Column::Kind.starts_with("contract_"))
        .order_by_asc(case_event::Column::Id)
        .all(db_)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["contract_later", "contract_not_renew"]);
    let reminders = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("contract_reminder"))
        .count(db_)
        .await
        .unwrap();
    assert_eq!(reminders, 3);
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
async fn hr_is_asked_why_someone_left_and_sees_the_counts(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    // 李四's contract ends on the 10th and HR does not renew it.
    import(
        &*s,
        "user_id,name,contract_end_date\nlisi,李四,2026-12-10\n",
    )
    .await;
    s.at("2026-12-01", "10:00");
    s.hr_reminders().await.unwrap();
    s.press("wangmin", "contract_not_renew").await.unwrap();
    s.settle().await.unwrap();
    // Still employed on the 10th; gone on the 11th, and noted.
    s.at("2026-12-10", "10:00");
    assert_eq!(s.follow_ups().await.unwrap().noted, 0);
    s.at("2026-12-11", "10:00");
    let noted = s.follow_ups().await.unwrap();
    assert_eq!((noted.noted, noted.reminded), (1, 0));
    // A month (30 days) later, HR gets the card, once.
    s.at("2027-01-08", "10:00");
    assert_eq!(s.follow_ups().await.unwrap().reminded, 0);
    s.at("2027-01-09", "10:00");
    assert_eq!(s.follow_ups().await.unwrap().reminded, 1);
    let card = last_text(&*s, "wangmin");
    assert!(
        card.contains("离职回访：李四")
            && card.contains("2026-12-10")
            && card.contains("劳动合同到期不续签"),
        "{card}"
    );
    assert_eq!(s.follow_ups().await.unwrap(), Default::default());
    // The first reason pressed stands.
    s.at("2027-01-09", "10:30");
    s.press("wangmin", "leaver_pay").await.unwrap();
    s.settle().await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("离职原因为“薪酬”"));
    s.at("2027-01-09", "10:31");
    s.press("wangmin", "leaver_family").await.unwrap();
    s.settle().await.unwrap();
    let reply = last_text(&*s, "wangmin");
    assert!(reply.contains("已由 王敏 登记为“薪酬”"), "{reply}");
    // The counts, for HR only.
    s.say("wangmin", "/离职原因").await.unwrap();
    let counts = last_text(&*s, "wangmin");
    for part in ["离职 1 人：薪酬 1", "一号工地：薪酬 1", "2026-12：薪酬 1"] {
        assert!(counts.contains(part), "{part} in {counts}");
    }
    s.say("zhaogang", "/离职原因").await.unwrap();
    assert!(!last_text(&*s, "zhaogang").contains("离职 1 人"));
    let kinds = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("leaver_reason"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(kinds, 1);
    s.stop().await;
    db.cleanup().await;
}

async fn start_with(db: &TestDb, platform: DemoPlatform, extra: &str) -> Box<dyn Stage> {
    stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        &format!("{SHIFTS}{extra}"),
    )
    .await
    .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    rollcall::outbox::render::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_archives_files_and_reads_a_persons_history(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    import(&*s, "user_id,name,shift\nlisi,李四,白班\n").await;
    s.at("2026-12-01", "08:30");
    s.say("lisi", "打卡").await.unwrap();
    // A contract, then a warning, each with its caption.
    let contract = b"%PDF-1.4 lisi contract 2026".to_vec();
    let warning = b"\xff\xd8\xff\xe0 warning slip".to_vec();
    s.at("2026-12-02", "09:00");
    s.say("wangmin", "#合同 李四 2026版 三年期").await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("将归入 李四 的档案（#合同）"));
    s.media(
        "wangmin",
        contract.clone(),
        "application/pdf",
        Some("李四合同.pdf"),
    )
    .await
    .unwrap();
    s.settle().await.unwrap();
    let filed = last_text(&*s, "wangmin");
    assert!(
        filed.contains("已归档（李四，#合同）") && filed.contains(&sha256(&contract)),
        "{filed}"
    );
    s.at("2026-12-02", "09:20");
    s.say("wangmin", "#奖惩 李四 警告 迟到三次").await.unwrap();
    s.media("wangmin", warning.clone(), "image/jpeg", None)
        .await
        .unwrap();
    s.settle().await.unwrap();
    assert!(last_text(&*s, "wangmin").contains(&sha256(&warning)));
    // Only HR archives; a photo outside a window is a check-in as before.
    s.say("zhaogang", "#合同 李四").await.unwrap();
    assert!(last_text(&*s, "zhaogang").contains("没有权限"));
    // The archive, whole or by tag; a manager sees a report's, an employee none.
    s.say("wangmin", "/档案 李四").await.unwrap();
    let docs = last_text(&*s, "wangmin");
    assert!(
        docs.contains("共 2 份") && docs.contains("李四合同.pdf"),
        "{docs}"
    );
    s.say("wangmin", "/档案 李四 合同").await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("共 1 份"));
    s.say("zhaogang", "/档案 李四").await.unwrap();
    assert!(last_text(&*s, "zhaogang").contains("共 2 份"));
    s.say("lisi", "/档案 李四").await.unwrap();
    assert!(last_text(&*s, "lisi").contains("没有权限"));
    // The history, in chat and as a printable page.
    s.at("2026-12-03", "09:00");
    s.say("wangmin", "/履历 李四").await.unwrap();
    let history = last_text(&*s, "wangmin");
    for part in [
        "2026-12：迟到 1 天（30 分钟）",
        "未签退 1 天",
        "处分“警告 迟到三次”",
        "#合同 李四合同.pdf",
    ] {
        assert!(history.contains(part), "{part} in {history}");
    }
    downloads_built(s.rt()).await.unwrap();
    let page = String::from_utf8(s.download_latest_link("wangmin").await.unwrap()).unwrap();
    assert!(page.contains("<h1>李四 履历</h1>"), "{page}");
    assert!(page.contains(&sha256(&contract)) && page.contains("处分"));
    // Each file is evidence carrying the file itself.
    let leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("document_filed"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(leaves, 2);
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
async fn a_risk_score_crossing_the_threshold_tells_hr_once(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_with(&db, platform, "[tenants.risk]\nthreshold = 8\n").await;
    import(
        &*s,
        "user_id,name,shift\nlisi,李四,白班\nwangwu,王五,白班\n",
    )
    .await;
    // 李四: late three days and a punishment (3 × 1 + 5 = 8); 王五 late once.
    for day in ["2026-12-01", "2026-12-02", "2026-12-03"] {
        s.at(day, "08:20");
        s.say("lisi", "打卡").await.unwrap();
    }
    s.at("2026-12-01", "08:15");
    s.say("wangwu", "打卡").await.unwrap();
    s.at("2026-12-02", "12:00");
    s.say("wangmin", "#奖惩 李四 处分 连续迟到").await.unwrap();
    s.media("wangmin", b"\xff\xd8 slip".to_vec(), "image/jpeg", None)
        .await
        .unwrap();
    s.settle().await.unwrap();
    s.at("2026-12-03", "10:00");
    let first = s.risk_alerts().await.unwrap();
    assert_eq!((first.crossed, first.cleared), (1, 0));
    let card = last_text(&*s, "wangmin");
    assert!(card.contains("风险提醒：李四 8 分"), "{card}");
    assert!(
        card.contains("迟到 3 天 × 1") && card.contains("处分 1 次 × 5"),
        "{card}"
    );
    // Once per crossing.
    s.at("2026-12-03", "11:00");
    assert_eq!(s.risk_alerts().await.unwrap(), Default::default());
    s.press("wangmin", "risk_seen").await.unwrap();
    s.settle().await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("知悉 李四 的风险分（8 分）"));
    // The list shows every factor, highest first; HR's only.
    s.say("wangmin", "/风险").await.unwrap();
    let list = last_text(&*s, "wangmin");
    assert!(
        list.contains("1. 李四（一号工地）8 分 ⚠：迟到 3，早退 0，缺勤 0，未结案件 0，处分 1"),
        "{list}"
    );
    assert!(list.contains("2. 王五（一号工地）1 分："), "{list}");
    s.say("zhaogang", "/风险").await.unwrap();
    assert!(last_text(&*s, "zhaogang").contains("没有权限"));
    // A month later it has all fallen out of the window: the crossing
    // closes, and a new one tells HR again.
    s.at("2027-01-05", "10:00");
    assert_eq!(s.risk_alerts().await.unwrap().cleared, 1);
    for (t, what) in [("10:10", "处分 旷工"), ("10:20", "警告 旷工")] {
        s.at("2027-01-05", t);
        s.say("wangmin", &format!("#奖惩 李四 {what}"))
            .await
            .unwrap();
        s.media("wangmin", what.as_bytes().to_vec(), "image/jpeg", None)
            .await
            .unwrap();
        // Filed before the clock moves on (the window lasts 10 minutes).
        s.settle().await.unwrap();
    }
    s.at("2027-01-05", "11:00");
    assert_eq!(s.risk_alerts().await.unwrap().crossed, 1);
    assert!(last_text(&*s, "wangmin").contains("风险提醒：李四 10 分"));
    let alerts = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("risk_alert"))
        .count(&s.rt().db.orm)
        .await
        .unwrap();
    assert_eq!(alerts, 2);
    s.stop().await;
    db.cleanup().await;
}

/// The sheet's cells as text, row by row (calamine's reading).
fn read_sheet(bytes: &[u8], month: &str) -> Vec<Vec<String>> {
    let mut book: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes.to_vec())).unwrap();
    assert_eq!(book.sheet_names(), [format!("考勤表 {month}")]);
    let range = book.worksheet_range(&format!("考勤表 {month}")).unwrap();
    assert_eq!(range.start(), Some((0, 0)));
    range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

/// The row of `user` (by the 工号 column).
fn row_of<'a>(rows: &'a [Vec<String>], user: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r.first().map(String::as_str) == Some(user))
        .unwrap_or_else(|| panic!("no row for {user}"))
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_gets_the_monthly_sheet_through_a_one_time_link(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    import(
        &*s,
        "user_id,name,shift,hire_date\nlisi,李四,白班,\nwangwu,王五,白班,\nnewbie,新人,,2026-12-03\n",
    )
    .await;
    // Tue 1st: 李四 late and no check-out, 王五 early; 张三 absent.
    s.at("2026-12-01", "07:50");
    s.check_in(&["wangmin", "zhaogang", "wangwu"])
        .await
        .unwrap();
    s.at("2026-12-01", "08:40");
    s.say("lisi", "打卡").await.unwrap();
    s.at("2026-12-01", "15:00");
    s.say("wangwu", "下班").await.unwrap();
    // Wed 2nd: 王五 on time both ways; 张三 on leave; 李四 absent.
    s.at("2026-12-02", "07:50");
    s.check_in(&["wangmin", "zhaogang", "wangwu"])
        .await
        .unwrap();
    s.say("wangmin", "/请假 张三 2026-12-02 2026-12-02 病假")
        .await
        .unwrap();
    s.at("2026-12-02", "17:01");
    s.say("wangwu", "下班").await.unwrap();
    // An employee may not have the sheet.
    s.at("2026-12-03", "09:00");
    s.say("lisi", "/报表 考勤 2026-12").await.unwrap();
    assert!(!last_text(&*s, "lisi").contains("/export/"));
    s.say("wangmin", "/报表 考勤 2026-13").await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("不是月份"));
    s.say("wangmin", "/报表 考勤 2026-12").await.unwrap();
    downloads_built(s.rt()).await.unwrap();
    let text = last_text(&*s, "wangmin");
    assert!(
        text.contains("2026-12 考勤表已生成") && text.contains("共 6 名员工"),
        "{text}"
    );
    let bytes = s.download_latest_link("wangmin").await.unwrap();
    // The link works once.
    assert!(s.download_latest_link("wangmin").await.is_err());
    let rows = read_sheet(&bytes, "2026-12");
    assert!(rows[0][0].contains("考勤表 2026-12"), "{:?}", rows[0]);
    assert_eq!(&rows[1][..5], ["工号", "姓名", "部门", "1\n二", "2\n三"]);
    assert_eq!(rows[1][3 + 31], "应出勤");
    // Day 1 and 2 of each, then the first totals (应出勤, 出勤, 迟到次数,
    // 迟到分钟, 早退次数, 早退分钟, 未签退, 缺勤, 请假).
    let days = |user: &str| row_of(&rows, user)[3..5].to_vec();
    let totals = |user: &str| row_of(&rows, user)[34..43].to_vec();
    assert_eq!(days("lisi"), ["迟未", "缺"]);
    assert_eq!(days("wangwu"), ["早", "√"]);
    assert_eq!(days("zhangsan"), ["缺", "假"]);
    assert_eq!(days("wangmin"), ["√", "√"]);
    assert_eq!(days("newbie"), ["—", "—"]);
    // Saturday the 5th is a rest day; the 3rd (today) is not judged yet.
    assert_eq!(row_of(&rows, "lisi")[3 + 4], "休");
    assert_eq!(row_of(&rows, "lisi")[3 + 2], "");
    assert_eq!(
        totals("lisi"),
        ["23", "1", "1", "40", "0", "0", "1", "1", "0"]
    );
    assert_eq!(
        totals("wangwu"),
        ["23", "2", "0", "0", "1", "120", "0", "0", "0"]
    );
    assert_eq!(
        totals("zhangsan"),
        ["23", "0", "0", "0", "0", "0", "0", "1", "1"]
    );
    // The sheet handed out is evidence, with its hash.
    let leaf = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("attendance_sheet"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .expect("a leaf for the sheet");
    let sha = rollcall::outbox::render::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert!(leaf.content.unwrap_or_default().contains(&sha));
    s.stop().await;
    db.cleanup().await;
}

fn rollcall(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .output()
        .unwrap()
}

/// The command line writes the same sheet as the chat link (on the demo's
/// database, the days closed by now), and refuses what it cannot do.
#[test]
fn the_command_line_writes_the_sheet_the_demo_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = rollcall(d, &["demo", "--db", "demo.db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in ["late", "left_early", "contract_reminder", "contract_renew"] {
        assert!(stdout.contains(step), "the demo shows {step}: {stdout}");
    }
    let downloaded = std::fs::read(d.join("demo-attendance-2026-12.xlsx")).unwrap();
    let args = [
        "--db",
        "demo.db",
        "report",
        "attendance",
        "--tenant",
        TENANT,
        "--month",
        "2026-12",
        "--out",
        "cli.xlsx",
    ];
    let out = rollcall(d, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 employees"));
    let written = std::fs::read(d.join("cli.xlsx")).unwrap();
    let (chat, cli) = (
        read_sheet(&downloaded, "2026-12"),
        read_sheet(&written, "2026-12"),
    );
    assert_eq!(chat.len(), cli.len());
    for (a, b) in chat.iter().zip(&cli).skip(1) {
        // Up to the 6th: the demo's clock stopped on the 10th, and a day
        // after the 6th may not have ended yet by this machine's clock.
        assert_eq!(a[..3 + 6], b[..3 + 6]);
    }
    let lisi = row_of(&chat, "lisi");
    assert_eq!(&lisi[3 + 8], "迟未", "{lisi:?}");
    assert_eq!(&row_of(&chat, "wangwu")[3 + 8], "早");
    // An existing file is never overwritten; a month must be one.
    let out = rollcall(d, &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exist"));
    let mut bad = args;
    bad[7] = "2026-13";
    bad[9] = "other.xlsx";
    let out = rollcall(d, &bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a month"));
    assert!(!d.join("other.xlsx").exists());
}

/// A check-in stored again for the same inbound event is not stored (and
/// says so, so that no second leaf is written): sea-orm reports such a
/// conflict as zero rows inserted.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_check_in_is_stored_once_per_event(#[case] engine: Engine) {
    use rollcall::attendance::checkin::{NewCheckIn, store};
    use rollcall::attendance::shift::Direction;
    let db = TestDb::new(engine).await;
    let d = rollcall::db::Database::open(&db.url).await.unwrap();
    let at = shanghai("2026-12-01", "08:00");
    let new = NewCheckIn {
        tenant_id: TENANT.into(),
        user_id: "lisi".into(),
        work_date: "2026-12-01".parse().unwrap(),
        checked_at: at,
        source: "text",
        inbound_event_id: 42,
        site: None,
        flagged: false,
        latitude: None,
        longitude: None,
        label: None,
        distance_m: None,
        media_sha256: None,
        direction: Direction::In,
        shift: None,
        minutes_off: None,
    };
    assert!(store(&d.orm, new.clone(), at).await.unwrap());
    assert!(!store(&d.orm, new, at).await.unwrap());
    d.close().await;
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
async fn a_new_employee_is_onboarded_in_chat_across_a_restart(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    use rollcall::employees::SealedColumn;
    let db = TestDb::new(engine).await;
    let s = start_on(&db, platform, "2026-12-01").await;
    // Someone not yet asked cannot be started by a manager.
    s.say("zhaogang", "/入职 王五").await.unwrap();
    assert!(last_text(&*s, "zhaogang").contains("没有权限"));
    s.at("2026-12-01", "09:00");
    s.say("wangmin", "/入职 王五").await.unwrap();
    assert!(last_text(&*s, "wangmin").contains("已请 王五 开始入职登记"));
    let first = last_text(&*s, "wangwu");
    assert!(
        first.contains("个人信息处理告知") && first.contains("1. 紧急联系人的姓名？"),
        "{first}"
    );
    s.say("wangwu", "王妻").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("2. 紧急联系人的电话"));
    s.say("wangwu", "明天给").await.unwrap();
    let again = last_text(&*s, "wangwu");
    assert!(
        again.contains("这不是有效的电话号码") && again.contains("2. 紧急联系人的电话"),
        "{again}"
    );
    s.say("wangwu", "139-0000-5555").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("3. 您的邮寄地址"));
    // The service restarts mid-dialog: nothing is lost.
    s.stop().await;
    let s = start_on(&db, platform, "2026-12-01").await;
    s.at("2026-12-01", "09:10");
    s.say("wangwu", "上海市浦东新区示例路5号").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("4. 您是否同意"));
    s.say("wangwu", "同意").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("5. 请阅读《员工手册》中的考勤制度（版本 2026-01）"));
    s.say("wangwu", "确认").await.unwrap();
    let summary = last_text(&*s, "wangwu");
    assert!(
        summary.contains("2. 紧急联系人电话：13900005555") && summary.contains("4. 电子送达：同意"),
        "{summary}"
    );
    // A correction comes back to the summary.
    s.say("wangwu", "修改 2").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("2. 紧急联系人的电话"));
    s.say("wangwu", "13800138000").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("2. 紧急联系人电话：13800138000"));
    s.say("wangwu", "确认").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("已完成入职登记"));
    // The record holds the answers, sealed; the log holds their hashes.
    let rt = s.rt();
    let me = rollcall::employees::directory::employee_row(&rt.db.orm, TENANT, "wangwu")
        .await
        .unwrap()
        .unwrap();
    let phone = rt
        .key
        .open(
            me.emergency_contact_phone_sealed.as_deref().unwrap(),
            &SealedColumn::EmergencyContactPhone.context(TENANT, "wangwu"),
        )
        .unwrap();
    assert_eq!(phone, "13800138000");
    assert_eq!(me.electronic_consent, Some(true));
    assert_eq!(me.rules_version.as_deref(), Some("2026-01"));
    assert_eq!(
        me.rules_acknowledged_on,
        Some("2026-12-01".parse().unwrap())
    );
    let answers = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("onboarding_answer"))
        .count(&rt.db.orm)
        .await
        .unwrap();
    assert_eq!(answers, 6);
    // (The message itself is in its callback leaf, as every message is.)
    let leaked = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.is_in(["onboarding_answer", "onboarding_completed"]))
        .filter(evidence_leaf::Column::Content.contains("13800138000"))
        .count(&rt.db.orm)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "the answer leaves hold hashes, not answers");
    // Done: 打卡 is a check-in again.
    s.at("2026-12-01", "09:30");
    s.say("wangwu", "打卡").await.unwrap();
    assert!(last_text(&*s, "wangwu").contains("已记录您的到岗"));
    s.stop().await;
    db.cleanup().await;
}
