//! Jobs asked for in a transaction (`jobs::enqueue_*` write a request row)
//! and the relay that hands them to the job queue, through the real app on
//! SQLite and PostgreSQL.

mod common;

use common::*;
use entity::{absence_case, job_request};
use rollcall::db::Engine;
use rollcall::demo::{Sandboxed, TENANT};
use rstest::rstest;
use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};

/// The app on the sandbox tenant, with the clock at 07:00 on `date` and the
/// daily scan's schedule at 23:59, so that the tests' own scans are the only
/// ones.
async fn start(db: &TestDb, date: &str) -> Sandboxed {
    Sandboxed::start(
        &db.url,
        &db.dir.path().join("data.key"),
        shanghai(date, "07:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap()
}

fn day(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

/// The scan jobs of the tenant, a line each (see `workers::jobs_like`).
async fn scans(s: &Sandboxed) -> Vec<String> {
    rollcall::workers::jobs_like(
        &s.rt.db,
        rollcall::jobs::SCAN_QUEUE,
        &format!("scan:{TENANT}:%"),
    )
    .await
    .unwrap()
}

async fn requests_waiting(s: &Sandboxed) -> u64 {
    job_request::Entity::find()
        .count(&s.rt.db.orm)
        .await
        .unwrap()
}

/// Waits until no request waits and `done` scan jobs are done.
async fn wait_scans_done(s: &Sandboxed, done: usize) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let jobs = scans(s).await;
        let finished = jobs.iter().filter(|j| j.contains(" Done ")).count();
        if finished >= done && requests_waiting(s).await == 0 {
            return jobs;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{finished} of {done} scans done, {} requests waiting: {jobs:?}",
            requests_waiting(s).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A scan asked for twice in one committed transaction (and once more
/// while that request waits) is one job, which runs; a scan asked for in a
/// transaction that rolled back never runs; and a request whose job exists
/// already (the next tick of the schedule, or a request pushed before a
/// crash and not yet deleted) adds no second job.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asked_for_in_a_transaction_runs_once_and_a_rolled_back_one_never(
    #[case] engine: Engine,
) {
    use rollcall::jobs::enqueue_scan;
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-12-01").await;
    s.at("2026-12-01", "08:00");
    s.check_in(&["wangmin", "zhaogang", "lisi", "wangwu"])
        .await
        .unwrap();
    s.at("2026-12-02", "10:00");
    let orm = &s.rt.db.orm;

    let rolled_back = orm.begin().await.unwrap();
    enqueue_scan(&rolled_back, TENANT, day("2026-11-30"), None)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();

    let txn = orm.begin().await.unwrap();
    for _ in 0..2 {
        enqueue_scan(&txn, TENANT, day("2026-12-01"), None)
            .await
            .unwrap();
    }
    // Not relayed before the commit.
    assert_eq!(requests_waiting(&s).await, 0);
    txn.commit().await.unwrap();
    enqueue_scan(orm, TENANT, day("2026-12-01"), None)
        .await
        .unwrap();

    // The relay takes requests in order: once the later one ran, the
    // rolled-back one would have been relayed too, had it been committed.
    let jobs = wait_scans_done(&s, 1).await;
    let keys: Vec<&str> = jobs.iter().map(|j| j.split(' ').next().unwrap()).collect();
    assert_eq!(keys, [format!("scan:{TENANT}:2026-12-01")], "{jobs:?}");
    s.settle().await.unwrap();
    let cases = absence_case::Entity::find().all(orm).await.unwrap();
    assert_eq!(
        cases.iter().map(|c| c.user_id.as_str()).collect::<Vec<_>>(),
        ["zhangsan"],
        "the scan of the 1st ran"
    );
    assert_eq!(cases[0].missed_workdays, 1, "and once");

    // Asked for again once the job is stored: relayed, and still one job,
    // not run again.
    enqueue_scan(orm, TENANT, day("2026-12-01"), None)
        .await
        .unwrap();
    assert_eq!(wait_scans_done(&s, 1).await, jobs);
    s.stop().await;
    db.cleanup().await;
}

/// Two relays on one database (as two instances on PostgreSQL; on SQLite
/// they read the same requests) turn each request into one job: each key
/// is stored once, runs once, and no request is left behind.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_make_one_job_per_request(#[case] engine: Engine) {
    const REQUESTS: usize = 20;
    let db = TestDb::new(engine).await;
    let s = start(&db, "2026-12-01").await;
    s.at("2026-12-02", "10:00");
    // A second set of workers, with its own relay, on the same database.
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(rollcall::workers::run(s.rt.clone(), async {
        let _ = stopped.await;
    }));
    let orm = &s.rt.db.orm;
    // Several commits, so that both relays find requests waiting.
    for batch in 0..4 {
        let txn = orm.begin().await.unwrap();
        for i in 0..REQUESTS / 4 {
            let tag = format!("again-{}", batch * (REQUESTS / 4) + i);
            rollcall::jobs::enqueue_scan(&txn, TENANT, day("2026-12-01"), Some(&tag))
                .await
                .unwrap();
        }
        txn.commit().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let jobs = wait_scans_done(&s, REQUESTS).await;
    let mut keys: Vec<&str> = jobs.iter().map(|j| j.split(' ').next().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), REQUESTS, "{jobs:?}");
    assert_eq!(jobs.len(), REQUESTS, "{jobs:?}");
    assert!(
        jobs.iter().all(|j| j.contains(" Done attempts=1 ")),
        "each ran once: {jobs:?}"
    );
    let _ = stop_second.send(());
    second.await.unwrap();
    s.stop().await;
    db.cleanup().await;
}

/// On SQLite the start-up sweep sets a job left running by a killed process
/// back to waiting (apalis' re-enqueue of a dead worker's jobs), counting
/// the cut-off run as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_sweep_sets_a_job_left_running_back_to_waiting() {
    use sea_orm::ConnectionTrait;
    let db = TestDb::new(Engine::Sqlite).await;
    let s = start(&db, "2026-12-01").await;
    s.at("2026-12-02", "10:00");
    rollcall::jobs::enqueue_scan(&s.rt.db.orm, TENANT, day("2026-12-01"), None)
        .await
        .unwrap();
    let done = wait_scans_done(&s, 1).await;
    assert!(done[0].contains(" Done attempts=1 "), "{done:?}");
    s.stop().await;
    // As a kill during the run leaves it (held by a worker now dead).
    let conn = rollcall::db::Database::open(&db.url).await.unwrap();
    conn.orm
        .execute_unprepared("UPDATE Jobs SET status = 'Running' WHERE status = 'Done'")
        .await
        .unwrap();
    assert_eq!(rollcall::workers::recover(&conn).await.unwrap(), 1);
    let jobs = rollcall::workers::jobs_like(
        &conn,
        rollcall::jobs::SCAN_QUEUE,
        &format!("scan:{TENANT}:%"),
    )
    .await
    .unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        jobs[0].contains(" Pending attempts=2 ") && jobs[0].ends_with(" lock_by=-"),
        "{jobs:?}"
    );
    conn.close().await;
    db.cleanup().await;
}
