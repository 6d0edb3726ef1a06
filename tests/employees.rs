//! The employee directory: CSV import, WeCom sync, sealed personal data, and
//! the `employees` commands through the real binary, on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use entity::employee;
use rollcall::config::Config;
use rollcall::db::{Database, Engine};
use rollcall::employees::Role;
use rollcall::employees::{self, ImportError, ImportReport, SealedColumn};
use rollcall::platform::sandbox::SandboxApi;
use rollcall::platform::wecom::api::WecomApi;
use rollcall::platform::wecom::directory::{Department, DirectoryUser};
use rollcall::sealed::DataKey;
use rstest::rstest;
use sea_orm::{EntityTrait, PaginatorTrait};

const HEADER: &str = "user_id,name,department,manager_user_id,role,phone,email,emergency_contact_name,emergency_contact_phone,postal_address,hire_date,contract_end_date,rest_days,site";

/// Three people: an HR officer, a foreman, and a worker reporting to him.
fn good_file() -> String {
    format!(
        "{HEADER}\n\
         wangfang,王芳,人事部,,hr,13900001111,wangfang@acme.cn,,,,2020-03-01,,,\n\
         lisi,李四,工程部,,manager,13900002222,,,,,2021-05-10,2027-05-09,sun,一号工地\n\
         zhangsan,张三,工程部,lisi,employee,138 1234 5678,zhangsan@acme.cn,张母,13700003333,上海市浦东新区某路1号,2024-01-15,2026-12-31,\"sat,sun\",一号工地\n"
    )
}

const DATA_KEY: [u8; 32] = [7; 32];

fn data_key_b64(bytes: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn key_from(bytes: [u8; 32]) -> DataKey {
    let dir = tempfile::tempdir().unwrap();
    let b64 = data_key_b64(bytes);
    DataKey::load(
        &[("ROLLCALL_DATA_KEY", b64.as_str())],
        &dir.path().join("unused.key"),
    )
    .unwrap()
}

fn key() -> DataKey {
    key_from(DATA_KEY)
}

async fn open(engine: Engine) -> (TestDb, Database) {
    let test_db = TestDb::new(engine).await;
    let db = Database::open(&test_db.url).await.unwrap();
    (test_db, db)
}

async fn import(db: &Database, text: &str) -> Result<ImportReport, ImportError> {
    employees::import_csv(db, &key(), "acme", text.as_bytes(), false).await
}

async fn count(db: &Database) -> u64 {
    employee::Entity::find().count(&db.orm).await.unwrap()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_good_file_imports_and_a_reimport_updates(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    let report = import(&db, &good_file()).await.unwrap();
    assert_eq!(
        report,
        ImportReport {
            added: 3,
            updated: 0,
            not_in_import: 0
        }
    );
    let z = employees::load(&db, &key(), "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(z.name, "张三");
    assert_eq!(z.department, "工程部");
    assert_eq!(z.manager_user_id.as_deref(), Some("lisi"));
    assert_eq!(z.role, Role::Employee);
    assert_eq!(z.phone.as_deref(), Some("138 1234 5678"));
    assert_eq!(z.email.as_deref(), Some("zhangsan@acme.cn"));
    assert_eq!(
        z.manager_user_id.as_deref(),
        Some("lisi"),
        "no leader keeps the CSV's"
    );
    assert_eq!(z.emergency_contact_name.as_deref(), Some("张母"));
    assert_eq!(z.emergency_contact_phone.as_deref(), Some("13700003333"));
    assert_eq!(z.postal_address.as_deref(), Some("上海市浦东新区某路1号"));
    assert_eq!(z.hire_date, "2024-01-15".parse().ok());
    assert_eq!(z.contract_end_date, "2026-12-31".parse().ok());
    assert_eq!(z.rest_days.as_deref(), Some("sat,sun"));
    assert_eq!(z.site.as_deref(), Some("一号工地"));
    assert!(z.active);
    assert_eq!(z.source, "csv");
    let debug = format!("{z:?}");
    assert!(
        !debug.contains("13700003333") && !debug.contains("张母") && !debug.contains("1234 5678"),
        "Debug masks personal data: {debug}"
    );
    let w = employees::load(&db, &key(), "acme", "wangfang")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.role, Role::Hr);
    assert_eq!(w.emergency_contact_name, None);
    assert_eq!(w.site, None);

    // Columns in another order, one person left out, one new, one changed;
    // the file has no site column, so sites stay as they are.
    let again = "name,user_id,role,manager_user_id,phone,hire_date\n\
                 张三丰,zhangsan,employee,zhaoliu,13812345678,2024-02-01\n\
                 赵六,zhaoliu,manager,,,\n";
    let report = import(&db, again).await.unwrap();
    assert_eq!(
        report,
        ImportReport {
            added: 1,
            updated: 1,
            not_in_import: 2
        }
    );
    let z = employees::load(&db, &key(), "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(z.name, "张三丰");
    assert_eq!(z.manager_user_id.as_deref(), Some("zhaoliu"));
    assert_eq!(z.phone.as_deref(), Some("13812345678"));
    assert_eq!(z.hire_date, "2024-02-01".parse().ok());
    assert_eq!(z.site.as_deref(), Some("一号工地"), "absent column kept");
    assert_eq!(
        z.emergency_contact_name.as_deref(),
        Some("张母"),
        "absent column kept"
    );
    assert_eq!(count(&db).await, 4, "nobody deleted");
    let active: Vec<String> = employees::active(&db, "acme")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(active, ["lisi", "wangfang", "zhangsan", "zhaoliu"]);
    assert!(
        employees::find(&db, "other", "zhangsan")
            .await
            .unwrap()
            .is_none(),
        "tenants are apart"
    );
    db.close().await;
    test_db.cleanup().await;
}

/// Replaces line `line` (header = 1) of the good file.
fn with_line(line: usize, text: &str) -> String {
    let mut lines: Vec<String> = good_file().lines().map(str::to_owned).collect();
    lines[line - 1] = text.to_owned();
    lines.join("\n") + "\n"
}

fn bad_files() -> Vec<(&'static str, String, &'static str)> {
    let z = "zhangsan,张三,工程部,lisi,employee,13812345678,,,,,2024-01-15,,,";
    vec![
        (
            "date",
            with_line(4, &z.replace("2024-01-15", "2025-13-01")),
            r#"line 4, column hire_date: "2025-13-01" is not a date (YYYY-MM-DD)"#,
        ),
        (
            "short date",
            with_line(4, &z.replace("2024-01-15", "2024-1-15")),
            "line 4, column hire_date:",
        ),
        (
            "contract ends before hire",
            with_line(
                4,
                "zhangsan,张三,工程部,lisi,employee,13812345678,,,,,2024-01-15,2023-01-01,,",
            ),
            "line 4, column contract_end_date:",
        ),
        (
            "role",
            with_line(4, &z.replace("employee", "boss")),
            r#"line 4, column role: "boss" is not employee, manager or hr"#,
        ),
        (
            "phone",
            with_line(4, &z.replace("13812345678", "1381234567x")),
            r#"line 4, column phone: "138****567x" is not a phone number"#,
        ),
        (
            "emergency phone",
            with_line(4, &z.replace(",,,,,", ",,,13712345678ab,,")),
            "line 4, column emergency_contact_phone: \"137****78ab\"",
        ),
        (
            "email",
            with_line(
                4,
                &z.replace("13812345678,", "13812345678,zhangsan.acme.cn"),
            ),
            "line 4, column email:",
        ),
        (
            "rest days",
            with_line(
                4,
                "zhangsan,张三,工程部,lisi,employee,13812345678,,,,,2024-01-15,,\"sat,funday\",",
            ),
            "line 4, column rest_days:",
        ),
        (
            "unknown manager",
            with_line(4, &z.replace("lisi", "nobody")),
            r#"line 4, column manager_user_id: "nobody" is neither in the file nor an existing employee"#,
        ),
        (
            "own manager",
            with_line(4, &z.replace("lisi", "zhangsan")),
            "line 4, column manager_user_id: an employee cannot be their own manager",
        ),
        (
            "duplicate user",
            with_line(4, &z.replace("zhangsan,张三", "lisi,李四二")),
            r#"line 4, column user_id: "lisi" is also on line 3"#,
        ),
        (
            "empty name",
            with_line(4, &z.replace("张三", "")),
            "line 4, column name: must not be empty",
        ),
        (
            "field count",
            with_line(4, "zhangsan,张三"),
            "line 4: has 2 fields, the header has 14",
        ),
        (
            "unknown column",
            with_line(1, &HEADER.replace("site", "shoe_size")),
            "line 1, column shoe_size: unknown column",
        ),
        (
            "no user_id column",
            "name\n张三\n".to_owned(),
            "line 1, column user_id: the column is required",
        ),
    ]
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_bad_row_imports_nothing_and_names_line_and_column(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    for (name, file, expected) in bad_files() {
        let err = import(&db, &file).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ImportError::Invalid { .. }),
            "{name}: {err:?}"
        );
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in:\n{text}"
        );
        for phone in ["13812345678", "1381234567x", "13712345678ab", "13900002222"] {
            assert!(!text.contains(phone), "{name}: a phone number in: {text}");
        }
        assert_eq!(count(&db).await, 0, "{name}: nothing imported");
    }

    // With people in the table, a bad re-import changes none of them, and a
    // manager already in the table is a valid reference.
    import(&db, &good_file()).await.unwrap();
    let before = employees::active(&db, "acme").await.unwrap();
    let file = "user_id,name,manager_user_id,hire_date\n\
                lisi,李四改,,\n\
                zhaoliu,赵六,lisi,\n\
                sunqi,孙七,wangfang,2024-02-30\n";
    let err = import(&db, file).await.unwrap_err().to_string();
    assert!(err.contains("line 4, column hire_date"), "{err}");
    assert_eq!(employees::active(&db, "acme").await.unwrap(), before);
    import(&db, &file.replace("2024-02-30", "2024-02-29"))
        .await
        .unwrap();
    assert_eq!(count(&db).await, 5);
    db.close().await;
    test_db.cleanup().await;
}

#[tokio::test]
async fn all_problems_are_reported_up_to_a_limit() {
    let (test_db, db) = open(Engine::Sqlite).await;
    let mut file = format!("{HEADER}\n");
    for i in 0..25 {
        file.push_str(&format!("u{i},名{i},,,,,,,,,2024-02-3{i},,,\n"));
    }
    let err = import(&db, &file).await.unwrap_err();
    let ImportError::Invalid { errors, more } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), employees::import::MAX_ERRORS);
    assert_eq!(*more, 5);
    assert_eq!(errors[0].line, 2);
    assert_eq!(errors[19].line, 21);
    assert_eq!(errors[0].column.as_deref(), Some("hire_date"));
    assert!(err.to_string().contains("and 5 more"), "{err}");
    let empty = import(&db, "").await.unwrap_err();
    assert!(
        matches!(&empty, ImportError::Read(m) if m.contains("header")),
        "{empty:?}"
    );
    assert_eq!(count(&db).await, 0);
    db.close().await;
    test_db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_byte_order_mark_is_accepted(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    let file = format!("\u{feff}{}", good_file());
    assert!(file.as_bytes().starts_with(&[0xEF, 0xBB, 0xBF]));
    let report = import(&db, &file).await.unwrap();
    assert_eq!(report.added, 3);
    assert!(
        employees::find(&db, "acme", "wangfang")
            .await
            .unwrap()
            .is_some()
    );
    // Invalid UTF-8 is named by line.
    let mut bytes = format!("{HEADER}\n").into_bytes();
    bytes.extend_from_slice(b"x1,\xff\xfe,,,,,,,,,,,,\n");
    let err = employees::import_csv(&db, &key(), "acme", bytes.as_slice(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2: is not UTF-8 text"), "{err}");
    // A control character is refused where it stands, before PostgreSQL
    // (which takes no NUL in text) sees it; a line break in a quoted
    // address is kept. (Found by tests/fuzz.rs.)
    let file = "user_id,name,postal_address\nlisi,李四\0,\nwangwu,王五,\"北京市\n朝阳区\"\n";
    let err = import(&db, file).await.unwrap_err().to_string();
    assert!(
        err.contains("line 2, column name: holds a control character (U+0000)"),
        "{err}"
    );
    assert!(!err.contains("line 3"), "{err}");
    db.close().await;
    test_db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn sealed_columns_hold_no_plain_text_and_open_only_in_place(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    import(&db, &good_file()).await.unwrap();
    let z = employees::find(&db, "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap();
    let sealed = [
        (SealedColumn::Phone, z.phone_sealed.clone(), "138 1234 5678"),
        (
            SealedColumn::EmergencyContactName,
            z.emergency_contact_name_sealed.clone(),
            "张母",
        ),
        (
            SealedColumn::EmergencyContactPhone,
            z.emergency_contact_phone_sealed.clone(),
            "13700003333",
        ),
        (
            SealedColumn::PostalAddress,
            z.postal_address_sealed.clone(),
            "上海市浦东新区某路1号",
        ),
    ];
    let key = key();
    for (column, stored, plain) in sealed {
        let stored = stored.unwrap();
        assert!(!stored.contains(plain), "{column:?} stored in the clear");
        assert!(!stored.contains("1234"), "{column:?}");
        let context = format!("employees.{}:acme:zhangsan", column.name());
        assert_eq!(column.context("acme", "zhangsan"), context);
        assert_eq!(key.open(&stored, &context).unwrap(), plain);
        assert!(
            key.open(&stored, &column.context("acme", "lisi")).is_err(),
            "{column:?} opens in another row"
        );
        assert!(
            key.open(&stored, &column.context("other", "zhangsan"))
                .is_err(),
            "{column:?} opens for another tenant"
        );
        assert!(key_from([8; 32]).open(&stored, &context).is_err());
    }
    // Another column's value copied into the phone column does not open.
    let mut moved: employee::ActiveModel = z.clone().into();
    moved.phone_sealed = sea_orm::ActiveValue::Set(z.emergency_contact_phone_sealed.clone());
    sea_orm::ActiveModelTrait::update(moved, &db.orm)
        .await
        .unwrap();
    let err = employees::load(&db, &key, "acme", "zhangsan")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("phone_sealed"), "{err}");
    assert!(!err.contains("13700003333"), "{err}");
    db.close().await;
    test_db.cleanup().await;
}

fn dept(id: i64, name: &str, parentid: Option<i64>) -> Department {
    Department {
        id,
        name: name.into(),
        parentid,
    }
}

fn user(
    userid: &str,
    name: &str,
    department: i64,
    mobile: Option<&str>,
    leader: Option<&str>,
    status: i64,
) -> DirectoryUser {
    DirectoryUser {
        userid: userid.into(),
        name: name.into(),
        department: vec![department],
        main_department: Some(department),
        position: None,
        mobile: mobile.map(str::to_owned),
        email: None,
        direct_leader: leader.map(str::to_owned).into_iter().collect(),
        status: Some(status),
    }
}

/// The sandbox tenant's WeCom section, for a config file.
fn wecom_toml(api_base: &str) -> String {
    format!(
        "[tenants.wecom]\ncorp_id = \"wwsandbox\"\nagent_id = 1\nsecret = \"sandbox-secret\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{api_base}\"\n"
    )
}

/// A client of the sandbox, its secret read through the real config path.
fn sandbox_api(sandbox: &SandboxApi) -> WecomApi {
    let toml = format!(
        "[[tenants]]\nid = \"acme\"\n{}",
        wecom_toml(&sandbox.api_base())
    );
    let config = Config::parse(&toml, &no_env()).unwrap();
    let w = config.tenants[0].wecom.clone().unwrap();
    WecomApi::new(
        &w.api_base,
        &w.corp_id,
        w.secret,
        w.agent_id,
        Duration::from_secs(5),
    )
}

async fn sandbox_directory() -> SandboxApi {
    let sandbox = SandboxApi::start("wwsandbox", "sandbox-secret")
        .await
        .unwrap();
    sandbox.set_directory(
        vec![
            dept(1, "示例建筑", None),
            dept(2, "工程部", Some(1)),
            dept(3, "人事部", Some(1)),
            dept(4, "二号工地", Some(2)),
        ],
        vec![
            user("wangfang", "王芳", 3, Some("13900001111"), None, 1),
            user("lisi", "李四", 2, Some("13900002222"), Some("wangfang"), 1),
            // Mobile hidden from the app and no 直属上级: the CSV's phone
            // and manager stay.
            user("zhangsan", "张三", 4, None, None, 1),
            user("zhaoliu", "赵六", 4, Some("13600006666"), Some("lisi"), 5),
            user("sunqi", "孙七", 4, Some("13500005555"), Some("lisi"), 2),
            user("zhouba", "周八", 4, Some("13400004444"), Some("lisi"), 4),
        ],
    );
    sandbox
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn sync_from_the_wecom_directory(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    let sandbox = sandbox_directory().await;
    let api = sandbox_api(&sandbox);
    assert_eq!(api.departments().await.unwrap().len(), 4);
    assert_eq!(api.users(4, false).await.unwrap().len(), 4);
    assert_eq!(api.users(2, false).await.unwrap().len(), 1);
    assert_eq!(api.users(1, true).await.unwrap().len(), 6);

    import(&db, &good_file()).await.unwrap();
    let report = employees::sync_directory(&db, &key(), "acme", &api)
        .await
        .unwrap();
    assert_eq!(
        report,
        ImportReport {
            added: 3,
            updated: 3,
            not_in_import: 0
        }
    );
    let load = |user: &'static str| {
        let db = db.clone();
        async move {
            employees::load(&db, &key(), "acme", user)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let z = load("zhangsan").await;
    assert_eq!(z.department, "二号工地");
    assert_eq!(z.source, "directory");
    assert_eq!(
        z.phone.as_deref(),
        Some("138 1234 5678"),
        "hidden mobile keeps the CSV phone"
    );
    assert_eq!(z.email.as_deref(), Some("zhangsan@acme.cn"));
    assert_eq!(
        z.manager_user_id.as_deref(),
        Some("lisi"),
        "no leader keeps the CSV's"
    );
    assert_eq!(z.emergency_contact_name.as_deref(), Some("张母"));
    assert_eq!(z.emergency_contact_phone.as_deref(), Some("13700003333"));
    assert_eq!(z.postal_address.as_deref(), Some("上海市浦东新区某路1号"));
    assert_eq!(z.hire_date, "2024-01-15".parse().ok());
    assert_eq!(z.contract_end_date, "2026-12-31".parse().ok());
    assert_eq!(z.rest_days.as_deref(), Some("sat,sun"));
    assert_eq!(z.site.as_deref(), Some("一号工地"));
    assert!(z.active);
    let lisi = load("lisi").await;
    assert_eq!(lisi.role, Role::Manager);
    assert_eq!(lisi.manager_user_id.as_deref(), Some("wangfang"));
    assert_eq!(lisi.site.as_deref(), Some("一号工地"));
    assert_eq!(
        load("wangfang").await.role,
        Role::Hr,
        "hr stays hr though a leader"
    );
    let zhaoliu = load("zhaoliu").await;
    assert!(!zhaoliu.active, "left");
    assert_eq!(zhaoliu.manager_user_id.as_deref(), Some("lisi"));
    assert_eq!(zhaoliu.role, Role::Employee);
    assert_eq!(zhaoliu.phone.as_deref(), Some("13600006666"));
    assert_eq!(zhaoliu.site, None);
    assert!(!load("sunqi").await.active, "disabled");
    assert!(
        load("zhouba").await.active,
        "not yet activated is still employed"
    );
    let active: Vec<String> = employees::active(&db, "acme")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(active, ["lisi", "wangfang", "zhangsan", "zhouba"]);

    // A second sync changes nothing that matters and adds nobody.
    let again = employees::sync_directory(&db, &key(), "acme", &api)
        .await
        .unwrap();
    assert_eq!(again.added, 0);
    assert_eq!(again.updated, 6);
    assert_eq!(load("zhangsan").await.site.as_deref(), Some("一号工地"));
    db.close().await;
    test_db.cleanup().await;
}

fn rollcall(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env("ROLLCALL_DATA_KEY", data_key_b64(DATA_KEY))
        .env_remove("ROLLCALL_DATA_KEY_FILE")
        .env_remove("ROLLCALL_DATABASE_URL")
        .env_remove("ROLLCALL_CONFIG")
        .output()
        .unwrap()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
// The binary runs while this test waits for it: the sandbox serves from another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_employees_commands_end_to_end(#[case] engine: Engine) {
    let test_db = TestDb::new(engine).await;
    let sandbox = sandbox_directory().await;
    let dir = test_db.dir.path();
    std::fs::write(
        dir.join("rollcall.toml"),
        format!(
            "[database]\nurl = \"{}\"\n[[tenants]]\nid = \"acme\"\n{}[[tenants]]\nid = \"nowecom\"\n",
            test_db.url,
            wecom_toml(&sandbox.api_base())
        ),
    )
    .unwrap();
    std::fs::write(dir.join("people.csv"), good_file()).unwrap();
    std::fs::write(
        dir.join("bad.csv"),
        with_line(
            4,
            "zhangsan,张三,工程部,lisi,employee,1381234567x,,,,,2025-13-01,,,",
        ),
    )
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let out = rollcall(dir, &["employees", "import", "bad.csv", "--tenant", "acme"]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("bad.csv"), "{err}");
    assert!(err.contains("line 4, column phone"), "{err}");
    assert!(
        err.contains(r#"line 4, column hire_date: "2025-13-01" is not a date (YYYY-MM-DD)"#),
        "{err}"
    );
    assert!(!err.contains("1381234567x"), "{err}");

    let out = rollcall(
        dir,
        &["employees", "import", "people.csv", "--tenant", "nobody"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no tenant `nobody` in the configuration"),
        "{}",
        text(&out)
    );

    let out = rollcall(
        dir,
        &["employees", "import", "people.csv", "--tenant", "acme"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported: 3 added, 0 updated\n"
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar into a pipe: {}",
        text(&out)
    );

    let out = rollcall(dir, &["employees", "sync", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "synced: 3 added, 3 updated\n"
    );

    std::fs::write(dir.join("one.csv"), "user_id,name\nlisi,李四\n").unwrap();
    let out = rollcall(dir, &["employees", "import", "one.csv", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("imported: 0 added, 1 updated\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 employees in the table are not in the file"),
        "{stdout}"
    );

    let out = rollcall(dir, &["employees", "sync", "--tenant", "nowecom"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has no chat platform configured"),
        "{}",
        text(&out)
    );

    let db = Database::open(&test_db.url).await.unwrap();
    let z = employees::load(&db, &key(), "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(z.emergency_contact_phone.as_deref(), Some("13700003333"));
    assert_eq!(z.department, "二号工地");
    assert!(
        !employees::load(&db, &key(), "acme", "zhaoliu")
            .await
            .unwrap()
            .unwrap()
            .active
    );
    db.close().await;
    test_db.cleanup().await;
}

/// 100,000 rows on SQLite, timed:
/// `cargo test --release --test employees -- --ignored --nocapture hundred_thousand`
#[tokio::test]
#[ignore = "timing; run by hand"]
async fn hundred_thousand_rows_on_sqlite() {
    let (test_db, db) = open(Engine::Sqlite).await;
    let mut file = format!("{HEADER}\n");
    for i in 0..100_000 {
        let manager = if i % 20 == 0 {
            String::new()
        } else {
            format!("u{}", i - i % 20)
        };
        file.push_str(&format!(
            "u{i},员工{i},工程部,{manager},employee,138{i:08},u{i}@acme.cn,家属{i},137{i:08},上海市某路{i}号,2024-01-15,2026-12-31,sun,一号工地\n"
        ));
    }
    let start = std::time::Instant::now();
    let report = import(&db, &file).await.unwrap();
    let first = start.elapsed();
    assert_eq!(report.added, 100_000);
    let start = std::time::Instant::now();
    let report = import(&db, &file).await.unwrap();
    let second = start.elapsed();
    assert_eq!(report.updated, 100_000);
    println!("100k rows: import {first:?}, re-import {second:?}");
    db.close().await;
    test_db.cleanup().await;
}

/// The agreed delivery addresses' clause and date, consent to electronic
/// delivery, and the rules acknowledged come in as columns; consent without
/// where and when it was agreed, a date that is not one, or a consent that
/// is neither yes nor no, is refused with the line and column.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn delivery_agreement_and_rules_acknowledgment_columns(#[case] engine: Engine) {
    let (test_db, db) = open(engine).await;
    let header = "user_id,name,delivery_clause,delivery_agreed_on,electronic_consent,rules_version,rules_acknowledged_on";
    let good = format!(
        "{header}\nzhangsan,张三,《劳动合同》第十二条（2024版）,2024-01-15,是,2026-01,2026-01-05\nlisi,李四,,,否,,\n"
    );
    import(&db, &good).await.unwrap();
    let z = employees::find(&db, "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            z.delivery_clause.as_deref(),
            z.delivery_agreed_on,
            z.electronic_consent,
            z.rules_version.as_deref(),
            z.rules_acknowledged_on
        ),
        (
            Some("《劳动合同》第十二条（2024版）"),
            "2024-01-15".parse().ok(),
            Some(true),
            Some("2026-01"),
            "2026-01-05".parse().ok()
        )
    );
    let l = employees::find(&db, "acme", "lisi").await.unwrap().unwrap();
    assert_eq!(l.electronic_consent, Some(false));
    for (row, expected) in [
        (
            "wangwu,王五,,,yes,,",
            "line 2, column electronic_consent: needs delivery_clause and delivery_agreed_on",
        ),
        (
            "wangwu,王五,第十二条,2024-13-01,no,,",
            r#"line 2, column delivery_agreed_on: "2024-13-01" is not a date"#,
        ),
        (
            "wangwu,王五,第十二条,2024-01-15,maybe,,",
            r#"line 2, column electronic_consent: "maybe" is not yes or no"#,
        ),
        (
            "wangwu,王五,,,,,2026-01-05",
            "line 2, column rules_version: rules_acknowledged_on needs the version",
        ),
    ] {
        let err = import(&db, &format!("{header}\n{row}\n"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{row}: {err}");
    }
    db.close().await;
    test_db.cleanup().await;
}
