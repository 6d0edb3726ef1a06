//! `privacy forget` leaves nothing of the person behind, on SQLite and
//! PostgreSQL: after a 自离 story (a case, an exhibit photo, the draft and
//! the union note, an export, HR's commands naming him) he is forgotten,
//! and no table of the database (every text and binary column, found from
//! the catalog) nor, on SQLite, the database and WAL files hold his name,
//! his phone number, the photo or its SHA-256, its caption or the union
//! note.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entity::{absence_case, employee, export_download};
use rollcall::db::{Database, Engine};
use rollcall::demo::{DemoPlatform, Stage, TENANT, stage};
use rollcall::evidence::checkpoint::load_or_create_key;
use rollcall::evidence::log::sha256_hex;
use rollcall::evidence::verify::{Problem, verify_log};
use rollcall::privacy::forget;
use rstest::rstest;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement,
};

const EVERYONE_BUT_HIM: [&str; 4] = ["wangmin", "zhaogang", "lisi", "wangwu"];
const PHOTO: &[u8] = b"\xff\xd8\xff\xe0dormitory-emptied-photo-of-zhangsan";
const CAPTION: &str = "宿舍已搬空，未打卡";
const UNION_NOTE: &str = "本公司未成立工会";

/// What must be gone: his name, his phone number, the photo and the
/// free texts about him.
fn needles() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("name", "张三".as_bytes().to_vec()),
        ("phone", b"13800000003".to_vec()),
        ("photo", PHOTO.to_vec()),
        // Its unsalted SHA-256 would confirm a guess of it.
        ("photo's SHA-256", sha256_hex(PHOTO).into_bytes()),
        ("caption", CAPTION.as_bytes().to_vec()),
        ("union note", UNION_NOTE.as_bytes().to_vec()),
        // In the letter sent by post (its HTML; the PDF holds it UTF-16).
        (
            "postal address",
            "上海市浦东新区示例路1号".as_bytes().to_vec(),
        ),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// 张三 absent from 1 December, the formal notice acknowledged, the
/// deadline passed; HR starts the 自离 process, files a photo, confirms,
/// records the union item, the manager confirms (the case closes), and
/// HR asks for his status, his exhibits and his package.
async fn the_story(s: &dyn Stage) {
    s.at("2026-12-01", "08:00");
    s.check_in(&EVERYONE_BUT_HIM).await.unwrap();
    for day in ["2026-12-02", "2026-12-03"] {
        s.at(day, "10:00");
        s.scan().await.unwrap();
        s.at(day, "11:00");
        s.check_in(&EVERYONE_BUT_HIM).await.unwrap();
    }
    s.at("2026-12-04", "10:00");
    s.scan().await.unwrap();
    s.press("zhangsan", "received").await.unwrap();
    s.settle().await.unwrap();
    s.at("2026-12-07", "10:05");
    s.scan().await.unwrap();

    s.at("2026-12-07", "10:30");
    s.say("wangmin", "/depart 张三").await.unwrap();
    s.say("wangmin", &format!("#证据 张三 {CAPTION}"))
        .await
        .unwrap();
    s.at("2026-12-07", "10:35");
    s.media("wangmin", PHOTO.to_vec(), "image/jpeg", None)
        .await
        .unwrap();
    s.settle().await.unwrap();
    s.at("2026-12-07", "14:00");
    s.press("wangmin", "confirm_hr").await.unwrap();
    s.say("wangmin", &format!("/工会 张三 无工会 {UNION_NOTE}"))
        .await
        .unwrap();
    s.at("2026-12-07", "15:00");
    s.press("zhaogang", "confirm_manager").await.unwrap();
    s.settle().await.unwrap();
    let case = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .one(&s.rt().db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(case.resolution.as_deref(), Some("terminated"));
    // The termination notice also goes by post: the letter, with his
    // address, is kept with its leaf.
    s.say("wangmin", "/邮政 邮寄 张三 EA555666777CN 解除")
        .await
        .unwrap();

    s.at("2026-12-07", "16:00");
    s.say("wangmin", "/status 张三").await.unwrap();
    s.say("wangmin", "/证据 张三").await.unwrap();
    s.say("wangmin", "/export 张三").await.unwrap();
    let start = Instant::now();
    loop {
        let ready = export_download::Entity::find()
            .filter(export_download::Column::Employee.eq("zhangsan"))
            .filter(export_download::Column::Status.eq("ready"))
            .one(&s.rt().db.orm)
            .await
            .unwrap();
        if ready.is_some_and(|r| r.bytes.is_some()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the package was never built"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.settle().await.unwrap();
}

/// Every text or binary value of every table, as bytes, with where it is.
async fn every_value(conn: &DatabaseConnection) -> Vec<(String, Vec<u8>)> {
    let backend = conn.get_database_backend();
    let query = |sql: String| conn.query_all_raw(Statement::from_string(backend, sql));
    // (table as written in SQL, column, SELECT expression)
    let mut columns: Vec<(String, String, String)> = Vec::new();
    match backend {
        DbBackend::Sqlite => {
            let tables = query("SELECT name FROM sqlite_master WHERE type = 'table'".into())
                .await
                .unwrap();
            for t in tables {
                let table: String = t.try_get_by_index(0).unwrap();
                let cols = query(format!("SELECT name FROM pragma_table_info('{table}')"))
                    .await
                    .unwrap();
                for c in cols {
                    let column: String = c.try_get_by_index(0).unwrap();
                    columns.push((
                        format!("\"{table}\""),
                        column.clone(),
                        format!("CAST(\"{column}\" AS BLOB)"),
                    ));
                }
            }
        }
        DbBackend::Postgres => {
            let cols = query(
                "SELECT c.table_schema, c.table_name, c.column_name, c.data_type \
                 FROM information_schema.columns c JOIN information_schema.tables t \
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
                 WHERE t.table_type = 'BASE TABLE' \
                 AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
                    .into(),
            )
            .await
            .unwrap();
            for c in cols {
                let schema: String = c.try_get_by_index(0).unwrap();
                let table: String = c.try_get_by_index(1).unwrap();
                let column: String = c.try_get_by_index(2).unwrap();
                let kind: String = c.try_get_by_index(3).unwrap();
                let expr = if kind == "bytea" {
                    format!("\"{column}\"")
                } else {
                    format!("convert_to(\"{column}\"::text, 'UTF8')")
                };
                columns.push((format!("\"{schema}\".\"{table}\""), column, expr));
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(columns.len() > 100, "{columns:?}");
    let mut values = Vec::new();
    for (table, column, expr) in columns {
        for row in query(format!("SELECT {expr} FROM {table}")).await.unwrap() {
            if let Some(bytes) = row.try_get_by_index::<Option<Vec<u8>>>(0).unwrap() {
                values.push((format!("{table}.{column}"), bytes));
            }
        }
    }
    values
}

/// Where each needle is found: in the database's values and, on SQLite,
/// in the bytes of the database and WAL files.
async fn found(db: &TestDb, conn: &DatabaseConnection) -> Vec<String> {
    let values = every_value(conn).await;
    let mut found = Vec::new();
    for (what, needle) in needles() {
        for (place, bytes) in &values {
            if contains(bytes, &needle) {
                found.push(format!("{what} in {place}"));
            }
        }
        if db.engine == Engine::Sqlite {
            for file in ["rollcall.db", "rollcall.db-wal"] {
                let bytes = std::fs::read(db.dir.path().join(file)).unwrap_or_default();
                if contains(&bytes, &needle) {
                    found.push(format!("{what} in the file {file}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forgetting_leaves_nothing_of_the_person_anywhere(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let key = db.dir.path().join("data.key");
    let s = stage(
        DemoPlatform::Wecom,
        &db.url,
        &key,
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    the_story(&*s).await;
    s.stop().await;

    let conn = Database::open(&db.url).await.unwrap();
    // Before: he is everywhere the story put him (the test can fail).
    let before = found(&db, &conn.orm).await;
    for what in [
        "name",
        "photo",
        "photo's SHA-256",
        "caption",
        "union note",
        "postal address",
    ] {
        assert!(
            before.iter().any(|f| f.starts_with(what)),
            "{what} not found before: {before:?}"
        );
    }

    // The directory has him as left since his termination.
    employee::Entity::update_many()
        .col_expr(employee::Column::Active, Expr::value(false))
        .filter(employee::Column::UserId.eq("zhangsan"))
        .exec(&conn.orm)
        .await
        .unwrap();
    let forget_now = |dry_run| {
        forget(
            &conn.orm,
            TENANT,
            "zhangsan",
            0,
            shanghai("2026-12-08", "09:00"),
            dry_run,
        )
    };
    let dry = forget_now(true).await.unwrap();
    let report = forget_now(false).await.unwrap();
    assert!(report.recorded_as.is_some());
    // The photo, the 自离 draft and the package are counted, in the dry
    // run as in the erasure.
    for r in [&dry, &report] {
        assert_eq!(
            (r.exhibits, r.departures, r.exports, r.photos),
            (1, 1, 1, 1),
            "{r:?}"
        );
    }
    assert_eq!(
        (dry.leaves.len(), dry.inbound_events, dry.messages),
        (report.leaves.len(), report.inbound_events, report.messages)
    );
    let wal = match engine {
        Engine::Sqlite => Some(true),
        Engine::Postgres => None,
    };
    assert_eq!(report.wal_truncated, wal);

    let after = found(&db, &conn.orm).await;
    assert!(after.is_empty(), "left behind: {after:#?}");

    // The log still verifies, his leaves reported as erased.
    let signer =
        load_or_create_key(&rollcall::config::evidence_key_beside(&key), "rollcall").unwrap();
    let verified = verify_log(&conn.orm, TENANT, &signer.verifier_key(), None)
        .await
        .unwrap();
    assert!(
        verified.ok(),
        "{}",
        verified
            .problems
            .iter()
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!verified.erased.is_empty());
    conn.close().await;
    db.cleanup().await;
}
