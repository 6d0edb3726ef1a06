//! The outbox's queue (`outbox::queue`) on both databases: several senders
//! side by side send every row once and record each receipt once (the
//! budget per member is `tests/ladder.rs::the_per_member_limit_is_honoured`,
//! a cut-off attempt `tests/crash.rs` and `tests/sms_email.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use entity::outbox;
use rollcall::cases::notify::TellHr;
use rollcall::clock::Clock as _;
use rollcall::db::Engine;
use rollcall::demo::{Sandboxed, TENANT, shanghai};
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

async fn start(db: &TestDb, extra: &str) -> Sandboxed {
    Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai("2026-12-01", "08:00"),
        extra,
    )
    .await
    .unwrap()
}

/// The message leaves of each outbox row, by kind.
async fn sent_leaves(s: &Sandboxed) -> std::collections::HashMap<String, usize> {
    let mut count = std::collections::HashMap::new();
    for leaf in entity::evidence_leaf::Entity::find()
        .filter(entity::evidence_leaf::Column::Kind.eq("message_sent"))
        .all(&s.rt.db.orm)
        .await
        .unwrap()
    {
        *count.entry(leaf.source.unwrap_or_default()).or_default() += 1;
    }
    count
}

/// Three senders (the app's and two more) on one database, 300 replies:
/// each is claimed by one of them, sent once, and its receipt and leaf
/// recorded once; the log verifies.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_senders_send_every_row_once(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = start(&db, "[delivery]\nmember_limit = 1000\n").await;
    s.sandbox.set_member_limit(1000, Duration::from_secs(60));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let extra: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(rollcall::outbox::queue::run(
                s.rt.clone(),
                &TellHr,
                Arc::new(tokio::sync::Notify::new()),
                stopped.clone(),
            ))
        })
        .collect();
    let users = ["zhangsan", "lisi", "wangwu", "zhaogang", "wangmin"];
    let t = s.clock.now().timestamp();
    for i in 0..300 {
        let d = s.phone.text(users[i % users.len()], "打卡", t).await;
        assert!(d.delivered, "{d:?}");
    }
    s.settle().await.unwrap();
    let _ = stop.send(true);
    for sender in extra {
        sender.await.unwrap();
    }
    let rows = outbox::Entity::find()
        .filter(outbox::Column::IdemKey.starts_with("reply:"))
        .all(&s.rt.db.orm)
        .await
        .unwrap();
    assert_eq!(rows.len(), 300, "a reply to each check-in");
    for r in &rows {
        assert_eq!(
            (r.status.as_str(), r.attempts),
            ("sent", 1),
            "{}",
            r.idem_key
        );
    }
    let all_sent = outbox::Entity::find()
        .filter(outbox::Column::Status.eq("sent"))
        .all(&s.rt.db.orm)
        .await
        .unwrap();
    assert_eq!(s.sandbox.sent().len(), all_sent.len(), "one request each");
    assert_eq!(s.sandbox.duplicates(), 0);
    let leaves = sent_leaves(&s).await;
    for r in &all_sent {
        assert_eq!(
            leaves.get(&format!("outbox/{}", r.id)),
            Some(&1),
            "one message_sent leaf for {}",
            r.idem_key
        );
    }
    let report = rollcall::evidence::verify::verify_log(
        &s.rt.db.orm,
        TENANT,
        &s.rt.signer.verifier_key(),
        None,
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    s.stop().await;
    db.cleanup().await;
}
