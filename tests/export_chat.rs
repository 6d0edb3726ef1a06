//! `/export 导出` in chat, through the real app and the sandbox platform on
//! SQLite and PostgreSQL: HR asks for an employee's package, a job builds
//! it, HR gets a one-time link, the link serves the zip once and is gone
//! after (a transfer cut off halfway may be fetched again); the link's
//! token is nowhere in the database in clear; a manager may not ask; every
//! step is an evidence leaf.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use entity::evidence_leaf;
use rollcall::db::Engine;
use rollcall::demo::Sandboxed;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// Chat texts `user` received, oldest first.
fn texts(s: &Sandboxed, user: &str) -> Vec<String> {
    s.sandbox
        .sent()
        .into_iter()
        .filter(|m| m.touser == user && m.msgtype == "text")
        .filter_map(|m| m.body["text"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for a text to `user` containing `needle` (the package is built by
/// its own job, after the command's answer).
async fn wait_for(s: &Sandboxed, user: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(t) = texts(s, user).into_iter().find(|t| t.contains(needle)) {
            return t;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{user} never got a message with {needle:?}: {:?}",
            texts(s, user)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the download's status is `status`.
async fn wait_status(s: &Sandboxed, status: &str) {
    let start = Instant::now();
    loop {
        let rows = entity::export_download::Entity::find()
            .all(&s.rt.db.orm)
            .await
            .unwrap();
        if rows.iter().any(|r| r.status == status) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no download became {status}: {:?}",
            rows.iter().map(|r| &r.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kinds(s: &Sandboxed) -> Vec<String> {
    evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Subject.eq("zhangsan"))
        .all(&s.rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.kind)
        .collect()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hr_gets_a_package_through_a_one_time_link(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&["wangmin", "zhaogang", "lisi", "wangwu"])
        .await
        .unwrap();
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();

    // A manager may not hand out a person's file.
    s.say("zhaogang", "/导出 张三").await.unwrap();
    assert!(!kinds(&s).await.contains(&"package_exported".to_owned()));

    // A large record about him (8 MiB that do not compress), so that a
    // transfer can be cut off halfway.
    let mut photo = vec![0u8; 8 << 20];
    rand::Rng::fill(&mut rand::rng(), &mut photo[..]);
    let txn = sea_orm::TransactionTrait::begin(&s.rt.db.orm)
        .await
        .unwrap();
    rollcall::evidence::append_one(
        &txn,
        rollcall::demo::TENANT,
        shanghai("2026-12-02", "10:05"),
        rollcall::evidence::NewLeaf::new("note")
            .subject(Some("zhangsan"))
            .raw("photo", "image/jpeg", photo),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();

    s.say("wangmin", "/导出 张三").await.unwrap();
    let ready = wait_for(&s, "wangmin", "/export/").await;
    let token = ready
        .split("/export/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 64, "{ready}");

    // The token is nowhere in clear: not in the message as stored, its
    // receipt, a leaf or a raw payload; its sealed copy went with sending.
    wait_status(&s, "ready").await;
    let orm = &s.rt.db.orm;
    for row in entity::outbox::Entity::find().all(orm).await.unwrap() {
        assert!(
            !row.payload.contains(&token) && !row.receipt.unwrap_or_default().contains(&token),
            "outbox/{}",
            row.id
        );
        if row.status == "sent" {
            assert_eq!(row.secret_sealed, None, "outbox/{}", row.id);
        }
    }
    for leaf in evidence_leaf::Entity::find().all(orm).await.unwrap() {
        assert!(!leaf.content.unwrap_or_default().contains(&token));
    }
    for raw in entity::evidence_raw::Entity::find().all(orm).await.unwrap() {
        let bytes = raw.bytes.unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "raw {}",
            raw.sha256
        );
    }

    // A transfer cut off halfway: the link works again.
    let url = format!("http://{}/export/{token}", s.app.addr);
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let mut conn = socket.connect(s.app.addr).await.unwrap();
        conn.write_all(format!("GET /export/{token} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = vec![0u8; 64 * 1024];
        let n = conn.read(&mut got).await.unwrap();
        assert!(
            got[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &got[..n.min(64)]
        );
    }
    wait_status(&s, "ready").await;
    let first = http().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["content-type"].to_str().unwrap(),
        "application/zip"
    );
    let bytes = first.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut leaves = String::new();
    zip.by_name("leaves.jsonl")
        .unwrap()
        .read_to_string(&mut leaves)
        .unwrap();
    assert!(leaves.contains("zhangsan") && leaves.contains("first_reminder"));
    for name in ["manifest.json", "manifest.sig", "verify.py", "report.html"] {
        assert!(zip.by_name(name).is_ok(), "{name} is in the package");
    }

    // Once only, and an unknown token is not found.
    wait_status(&s, "downloaded").await;
    let again = http().get(&url).send().await.unwrap();
    assert_eq!(again.status(), 410);
    let unknown = http()
        .get(format!("http://{}/export/{}", s.app.addr, "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let kinds = kinds(&s).await;
    assert!(kinds.contains(&"package_exported".to_owned()), "{kinds:?}");
    assert!(
        kinds.contains(&"package_downloaded".to_owned()),
        "{kinds:?}"
    );
    s.stop().await;
    db.cleanup().await;
}

/// The link of one case opens that case's package only: two people's cases
/// exported side by side, each token gives its own person's record and
/// nothing of the other's, using one does not use up the other, and a token
/// one character off is not found.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_link_opens_its_own_case_only(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    s.at("2026-12-01", "08:00");
    s.check_in(&["wangmin", "zhaogang", "wangwu"])
        .await
        .unwrap();
    s.at("2026-12-02", "10:00");
    s.scan().await.unwrap();
    let mut tokens = Vec::new();
    for name in ["张三", "李四"] {
        s.say("wangmin", &format!("/导出 {name}")).await.unwrap();
        let start = Instant::now();
        let link = loop {
            let links: Vec<String> = texts(&s, "wangmin")
                .into_iter()
                .filter(|t| t.contains("/export/"))
                .collect();
            if links.len() > tokens.len() {
                break links[tokens.len()].clone();
            }
            assert!(start.elapsed() < PATIENCE, "no link for {name}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let token = link
            .split("/export/")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
    let start = Instant::now();
    while entity::export_download::Entity::find()
        .all(&s.rt.db.orm)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.status == "ready")
        .count()
        < 2
    {
        assert!(start.elapsed() < PATIENCE, "both packages ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One character off: not found, and neither real link is used up.
    let mut forged = tokens[0].clone().into_bytes();
    forged[10] = if forged[10] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let off = http()
        .get(format!("http://{}/export/{forged}", s.app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 404);
    for (token, own, other) in [
        (&tokens[1], "lisi", "zhangsan"),
        (&tokens[0], "zhangsan", "lisi"),
    ] {
        let got = http()
            .get(format!("http://{}/export/{token}", s.app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{own}'s link");
        let bytes = got.bytes().await.unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        let mut leaves = String::new();
        zip.by_name("leaves.jsonl")
            .unwrap()
            .read_to_string(&mut leaves)
            .unwrap();
        assert!(leaves.contains(own), "{own}'s package holds {own}'s record");
        assert!(
            !leaves.contains(other),
            "{own}'s package holds nothing of {other}'s"
        );
    }
    s.stop().await;
    db.cleanup().await;
}
