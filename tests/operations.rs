//! `/metrics` (issue 16): what an operator pages on, read off the running
//! app as Prometheus reads it, on every platform: callbacks, sends by
//! channel and outcome, token fetches, inbox and outbox depth, evidence
//! size and the age of the last checkpoint, and whether the database
//! answers. `docs/operations.md` says which alerts to set on them.

mod common;

use std::collections::BTreeMap;

use common::*;
use rollcall::db::Engine;
use rollcall::demo::{DemoPlatform, Stage, StageFault, TENANT, stage};
use rstest::rstest;

/// `/metrics` as (series, value): `name{labels}` → the number (`+Inf` as
/// infinity).
async fn scrape(s: &dyn Stage) -> BTreeMap<String, f64> {
    let r = http()
        .get(format!("http://{}/metrics", s.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = r.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a number: {l}")),
            };
            (series.to_owned(), value)
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} is not in /metrics: {m:#?}"))
}

#[rstest]
#[case::wecom_sqlite(DemoPlatform::Wecom, Engine::Sqlite)]
#[case::wecom_postgres(DemoPlatform::Wecom, Engine::Postgres)]
#[case::dingtalk_sqlite(DemoPlatform::Dingtalk, Engine::Sqlite)]
#[case::feishu_sqlite(DemoPlatform::Feishu, Engine::Sqlite)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_what_an_operator_pages_on(
    #[case] platform: DemoPlatform,
    #[case] engine: Engine,
) {
    let db = TestDb::new(engine).await;
    let s = stage(
        platform,
        &db.url,
        &db.dir.path().join("data.key"),
        chrono::Utc::now(),
        "",
    )
    .await
    .unwrap();
    let name = match platform {
        DemoPlatform::Wecom => "wecom",
        DemoPlatform::Dingtalk => "dingtalk",
        DemoPlatform::Feishu => "feishu",
    };
    let sent = "rollcall_sends_total{channel=\"chat\",outcome=\"sent\"}";
    let retried = "rollcall_sends_total{channel=\"chat\",outcome=\"retry\"}";
    let tokens = format!("rollcall_token_fetches_total{{platform=\"{name}\",outcome=\"ok\"}}");
    let before = scrape(&*s).await;
    assert_eq!(value(&before, "rollcall_database_up"), 1.0);

    // A check-in and its reply: accepted, handled, sent, logged.
    s.say("zhangsan", "打卡").await.unwrap();
    let after = scrape(&*s).await;
    // Counters are the process's; other tests of this file run beside.
    let counted = |m: &BTreeMap<String, f64>, series: &str| m.get(series).copied().unwrap_or(0.0);
    assert!(
        counted(&after, sent) >= counted(&before, sent) + 1.0,
        "{after:#?}"
    );
    assert!(
        counted(&after, &tokens) >= 1.0,
        "the platform's token was fetched: {after:#?}"
    );
    if platform != DemoPlatform::Dingtalk {
        // DingTalk's sandbox tenant takes its events over the Stream, not HTTP.
        assert!(value(&after, "rollcall_callbacks_total{outcome=\"accepted\"}") >= 1.0);
    }
    assert_eq!(value(&after, "rollcall_inbox_depth"), 0.0, "handled");
    assert_eq!(value(&after, "rollcall_job_requests_depth"), 0.0);
    for channel in ["chat", "sms", "email"] {
        value(
            &after,
            &format!("rollcall_outbox_depth{{channel=\"{channel}\"}}"),
        );
    }
    let leaves = format!("rollcall_evidence_leaves{{tenant=\"{TENANT}\"}}");
    assert!(value(&after, &leaves) >= 2.0, "the callback and the reply");
    // No checkpoint yet: overdue.
    let age = format!("rollcall_evidence_checkpoint_age_seconds{{tenant=\"{TENANT}\"}}");
    assert_eq!(value(&after, &age), f64::INFINITY);
    let rt = s.rt();
    rollcall::evidence::checkpoint::checkpoint(
        &rt.db.orm,
        &rt.signer,
        &rt.witness,
        TENANT,
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .expect("a checkpoint");
    assert!(value(&scrape(&*s).await, &age) < 60.0);

    // The platform fails the next send: a retry is counted, the row waits.
    s.push_faults(&[StageFault::ServerError]);
    s.text("zhangsan", "打卡").await.unwrap();
    let mut m = scrape(&*s).await;
    for _ in 0..100 {
        if counted(&m, retried) >= counted(&after, retried) + 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        m = scrape(&*s).await;
    }
    assert!(
        counted(&m, retried) >= counted(&after, retried) + 1.0,
        "{m:#?}"
    );
    assert!(
        value(&m, "rollcall_outbox_depth{channel=\"chat\"}") >= 1.0,
        "{m:#?}"
    );
    let database = s.rt().db.clone();
    s.stop().await;

    // A database that does not answer: said so, and nothing else read.
    database.orm.clone().close().await.ok();
    let mut out = String::new();
    rollcall::metrics::render_gauges(&database, chrono::Utc::now(), &mut out).await;
    assert_eq!(
        out,
        "# TYPE rollcall_database_up gauge\nrollcall_database_up 0\n"
    );
    db.cleanup().await;
}
