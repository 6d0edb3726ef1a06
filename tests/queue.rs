//! The inbox as the queue (`conversation::queue`), on the real database:
//! batches claim the oldest events whose sender has nothing earlier
//! waiting outside the batch; a failing event is rolled back alone (even
//! after it wrote), waits its back-off, holds
//! only its own sender's later messages, and is given up after the last
//! attempt; handlers side by side handle every event exactly once, each
//! sender's in order.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use common::*;
use entity::{evidence_leaf, inbound_event};
use rollcall::config::Config;
use rollcall::conversation::queue::{self, MAX_ATTEMPTS};
use rollcall::db::Engine;
use rollcall::inbox::{Inbox, NewInbound};
use rollcall::platform::{InboundEvent, InboundKind};
use rollcall::runtime::Runtime;
use rstest::rstest;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

/// The vector tenant's runtime on `db`, without the server (so no handler
/// runs but the ones the test calls).
async fn runtime(db: &TestDb) -> Runtime {
    let toml = format!(
        "{}[evidence]\nkey_file = \"{}\"\n",
        config_toml(&db.url, "127.0.0.1:0", 600),
        db.dir.path().join("rollcall-evidence.key").display()
    );
    let config = Config::parse(&toml, &no_env()).unwrap();
    rollcall::app::runtime(&config, Arc::new(rollcall::clock::SystemClock))
        .await
        .unwrap()
}

/// A text from `sender`; `fields` replaces the parsed event when given (a
/// row that no longer parses).
fn text(sender: &str, key: &str, fields: Option<&str>) -> NewInbound {
    let event = InboundEvent {
        sender: sender.to_owned(),
        sent_at: Utc::now().timestamp(),
        dedup_key: key.to_owned(),
        media_type: "application/xml".to_owned(),
        kind: InboundKind::Text {
            msg_id: key.to_owned(),
            content: "打卡".to_owned(),
        },
        own_part: None,
    };
    let mut row = NewInbound::new(
        "acme",
        "wecom",
        &event,
        String::new(),
        "<xml/>".to_owned(),
        "<xml/>".to_owned(),
        Utc::now(),
    );
    if let Some(f) = fields {
        row.fields = f.to_owned();
    }
    row
}

async fn store(rt: &Runtime, rows: Vec<NewInbound>) {
    let (inbox, mut committers) = Inbox::start(rt.db.clone());
    for row in rows {
        inbox.store(row).await.unwrap();
    }
    drop(inbox);
    while committers.join_next().await.is_some() {}
}

async fn event(rt: &Runtime, key: &str) -> inbound_event::Model {
    inbound_event::Entity::find()
        .filter(inbound_event::Column::MsgKey.eq(key))
        .one(&rt.db.orm)
        .await
        .unwrap()
        .unwrap()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn a_failing_event_waits_alone_and_holds_only_its_senders_later_messages(
    #[case] engine: Engine,
) {
    let db = TestDb::new(engine).await;
    let rt = runtime(&db).await;
    store(
        &rt,
        vec![
            text("xiaoli", "a", Some("{not json")),
            text("xiaoli", "b", None),
            text("laozhang", "c", None),
        ],
    )
    .await;

    // All three are taken; a fails, and b, after it, waits with it.
    let first = queue::batch(&rt).await.unwrap();
    assert_eq!((first.claimed, first.handled, first.failed), (3, 1, 1));
    let a = event(&rt, "a").await;
    assert_eq!(a.attempts, 1);
    assert!(a.processed_at.is_none());
    assert!(a.not_before.unwrap() > Utc::now());
    assert!(
        a.last_error.as_deref().unwrap().contains("does not parse"),
        "{:?}",
        a.last_error
    );
    assert!(
        event(&rt, "b").await.processed_at.is_none(),
        "b waits for a"
    );
    assert!(event(&rt, "c").await.processed_at.is_some());

    // a is not due, and b waits for it: nothing to claim.
    assert_eq!(queue::batch(&rt).await.unwrap().claimed, 0);

    // The last attempt, due now: a is given up, then b goes on.
    inbound_event::Entity::update_many()
        .col_expr(
            inbound_event::Column::Attempts,
            Expr::value(MAX_ATTEMPTS - 1),
        )
        .col_expr(
            inbound_event::Column::NotBefore,
            Expr::value(Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(inbound_event::Column::Id.eq(a.id))
        .exec(&rt.db.orm)
        .await
        .unwrap();
    let last = queue::batch(&rt).await.unwrap();
    assert_eq!((last.claimed, last.handled, last.failed), (2, 0, 1));
    let a = event(&rt, "a").await;
    assert_eq!(a.classification.as_deref(), Some("failed"));
    assert_eq!(a.attempts, MAX_ATTEMPTS);
    assert!(a.processed_at.is_some());
    assert_eq!(queue::drain(&rt).await.unwrap(), 1);
    assert!(event(&rt, "b").await.processed_at.is_some());
    assert_eq!(queue::waiting(&rt).await.unwrap(), 0);
    rt.db.close().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_side_by_side_handle_each_event_once_in_each_senders_order(
    #[case] engine: Engine,
) {
    let db = TestDb::new(engine).await;
    let rt = runtime(&db).await;
    // 120 people, three messages each, interleaved as they would arrive.
    let mut rows = Vec::new();
    for round in 0..3 {
        for person in 0..120 {
            rows.push(text(
                &format!("worker{person:03}"),
                &format!("m{round}-{person}"),
                None,
            ));
        }
    }
    store(&rt, rows).await;

    let mut handlers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let rt = rt.clone();
        handlers.spawn(async move { queue::drain(&rt).await.unwrap() });
    }
    let mut handled = 0;
    while let Some(n) = handlers.join_next().await {
        handled += n.unwrap();
    }
    assert_eq!(handled, 360, "each event handled by exactly one handler");
    assert_eq!(queue::waiting(&rt).await.unwrap(), 0);

    // One callback leaf per event, and each sender's in arrival order.
    let events: HashMap<String, inbound_event::Model> = inbound_event::Entity::find()
        .all(&rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (format!("inbound_events/{}", e.id), e))
        .collect();
    let leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("callback"))
        .order_by_asc(evidence_leaf::Column::Idx)
        .all(&rt.db.orm)
        .await
        .unwrap();
    assert_eq!(leaves.len(), 360);
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    for leaf in &leaves {
        let e = &events[leaf.source.as_deref().unwrap()];
        if let Some(before) = last_seen.insert(e.from_user.clone(), e.id) {
            assert!(
                before < e.id,
                "{}'s event {} handled after {}",
                e.from_user,
                before,
                e.id
            );
        }
    }
    rt.db.close().await;
    db.cleanup().await;
}

/// A trigger that refuses to classify event `key` (the last write its
/// handling makes, after its reply is queued and its leaves kept).
async fn refuse_to_classify(rt: &Runtime, engine: Engine, key: &str) {
    use sea_orm::ConnectionTrait as _;
    let sql = match engine {
        Engine::Sqlite => format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON inbound_events \
             WHEN NEW.classification IS NOT NULL AND NEW.msg_key = '{key}' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ),
        Engine::Postgres => format!(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
             IF NEW.classification IS NOT NULL AND NEW.msg_key = '{key}' THEN \
             RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE UPDATE ON inbound_events \
             FOR EACH ROW EXECUTE FUNCTION refuse();"
        ),
    };
    rt.db.orm.execute_unprepared(&sql).await.unwrap();
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test]
async fn an_event_failing_at_its_last_write_leaves_nothing_and_the_others_commit(
    #[case] engine: Engine,
) {
    let db = TestDb::new(engine).await;
    let rt = runtime(&db).await;
    store(
        &rt,
        vec![
            text("laozhang", "c", None),
            text("xiaoli", "a", None),
            text("xiaoli", "b", None),
            text("dawei", "d", None),
        ],
    )
    .await;
    refuse_to_classify(&rt, engine, "a").await;

    let b = queue::batch(&rt).await.unwrap();
    assert_eq!((b.claimed, b.handled, b.failed), (4, 2, 1));
    let a = event(&rt, "a").await;
    assert_eq!(a.attempts, 1);
    assert!(a.processed_at.is_none());
    assert!(a.classification.is_none());
    assert!(
        a.last_error
            .as_deref()
            .unwrap()
            .contains("refused by the test"),
        "{:?}",
        a.last_error
    );
    assert!(
        event(&rt, "b").await.processed_at.is_none(),
        "b waits for a"
    );
    for key in ["c", "d"] {
        let e = event(&rt, key).await;
        assert!(e.processed_at.is_some(), "{key}");
        assert_eq!(e.classification.as_deref(), Some("unknown_sender"), "{key}");
    }
    // What a wrote before its last write is gone: no reply to xiaoli, no
    // leaf of hers; each of the others has its reply and its callback leaf.
    let replies: Vec<String> = entity::outbox::Entity::find()
        .all(&rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.recipient)
        .collect();
    let mut replies_sorted = replies.clone();
    replies_sorted.sort();
    assert_eq!(replies_sorted, ["dawei", "laozhang"], "{replies:?}");
    let callbacks: Vec<String> = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("callback"))
        .all(&rt.db.orm)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| l.source)
        .collect();
    let c = event(&rt, "c").await;
    let d = event(&rt, "d").await;
    assert_eq!(
        callbacks,
        [
            format!("inbound_events/{}", c.id),
            format!("inbound_events/{}", d.id)
        ]
    );
    rt.db.close().await;
    db.cleanup().await;
}
