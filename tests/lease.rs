//! Leases in the database (`rollcall::lease`), on SQLite and PostgreSQL,
//! each holder on its own pool as another process would be: one holder at
//! a time, a lease that ran out is taken over (and its old holder can
//! neither renew nor release it), a held lease is renewed past its term and
//! released to a waiter, and the absence scan of a tenant waits while
//! another instance holds that tenant's lease.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rollcall::clock::SystemClock;
use rollcall::config::Config;
use rollcall::db::{Database, Engine};
use rollcall::lease::{self, LEASE, Lease, LeaseError, Terms};
use rstest::rstest;

const NAME: &str = "scan:acme";

/// Short terms, so a test sees leases run out and be renewed in seconds.
const QUICK: Terms = Terms {
    lease: Duration::from_millis(1500),
    renew_every: Duration::from_millis(200),
    poll_every: Duration::from_millis(50),
};

/// Two pools on one database: `a` migrated, `b` as another process.
async fn two_processes(db: &TestDb) -> (Database, Database) {
    let a = Database::open(&db.url).await.unwrap();
    let b = Database::connect(&db.url).await.unwrap();
    (a, b)
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_lease_that_ran_out_is_taken_over(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (a, b) = two_processes(&db).await;
    let short = Duration::from_millis(800);

    assert!(lease::try_take(&a, NAME, "a", short).await.unwrap());
    assert!(!lease::try_take(&b, NAME, "b", short).await.unwrap());
    assert!(!lease::try_take(&a, NAME, "a2", LEASE).await.unwrap());
    assert_eq!(lease::holder(&b, NAME).await.unwrap().as_deref(), Some("a"));
    // Another tenant's lease is another lease.
    assert!(
        lease::try_take(&b, "scan:globex", "b", short)
            .await
            .unwrap()
    );

    // `a` stops renewing (it died): once its lease ran out, `b` takes over.
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    assert_eq!(lease::holder(&b, NAME).await.unwrap(), None);
    assert!(lease::try_take(&b, NAME, "b", LEASE).await.unwrap());
    assert_eq!(lease::holder(&a, NAME).await.unwrap().as_deref(), Some("b"));
    // `a`, back, can neither renew nor release what is now `b`'s.
    assert!(!lease::renew(&a, NAME, "a", LEASE).await.unwrap());
    assert!(!lease::release(&a, NAME, "a").await.unwrap());
    assert!(!lease::try_take(&a, NAME, "a", LEASE).await.unwrap());
    assert!(lease::renew(&b, NAME, "b", LEASE).await.unwrap());
    // Released: free at once.
    assert!(lease::release(&b, NAME, "b").await.unwrap());
    assert_eq!(lease::holder(&a, NAME).await.unwrap(), None);
    assert!(lease::try_take(&a, NAME, "a", short).await.unwrap());

    a.close().await;
    b.close().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_renewed_and_released_to_a_waiter(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (a, b) = two_processes(&db).await;

    let held = Lease::acquire_with(&a, NAME, Duration::ZERO, QUICK)
        .await
        .unwrap();
    // Renewed in the background, it outlives its term: a waiter gives up.
    let started = Instant::now();
    let err = Lease::acquire_with(&b, NAME, QUICK.lease * 2, QUICK)
        .await
        .unwrap_err();
    assert!(started.elapsed() >= QUICK.lease * 2);
    match err {
        LeaseError::Busy { name, holder, .. } => {
            assert_eq!((name.as_str(), holder.as_str()), (NAME, held.holder()));
        }
        other => panic!("{other}"),
    }
    held.check().unwrap();

    // A waiter gets it as soon as it is released.
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { Lease::acquire_with(&b, NAME, PATIENCE, QUICK).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter waits");
    held.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter got the lease after its release")
        .unwrap()
        .unwrap();
    assert_eq!(
        lease::holder(&a, NAME).await.unwrap().as_deref(),
        Some(got.holder())
    );

    // Dropped (the work under it failed): released too.
    let holder = got.holder().to_owned();
    drop(got);
    let started = Instant::now();
    while lease::holder(&a, NAME).await.unwrap().is_some() {
        assert!(started.elapsed() < PATIENCE, "a dropped lease is released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A holder whose lease was taken from it (it went unrenewed for a whole
    // lease, say) finds out at its next renewal, and its work stops.
    let held = Lease::acquire_with(&a, NAME, Duration::ZERO, QUICK)
        .await
        .unwrap();
    assert_ne!(held.holder(), holder);
    assert!(lease::release(&b, NAME, held.holder()).await.unwrap());
    assert!(lease::try_take(&b, NAME, "b", LEASE).await.unwrap());
    tokio::time::sleep(QUICK.renew_every * 3).await;
    assert!(matches!(held.check(), Err(LeaseError::Lost { .. })));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        lease::holder(&a, NAME).await.unwrap().as_deref(),
        Some("b"),
        "dropping a lost lease leaves the new holder's alone"
    );

    a.close().await;
    b.close().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_of_a_tenant_waits_for_another_instances_scan(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let dir = db.dir.path();
    let toml = format!(
        "[server]\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{}\"\n[[tenants]]\nid = \"acme\"\n",
        dir.join("data.key").display(),
        dir.join("evidence.key").display(),
        db.url
    );
    let config = Config::parse(&toml, &no_env()).unwrap();
    let rt = rollcall::app::runtime(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    // Another instance, on its own pool, is scanning acme.
    let other = Database::connect(&db.url).await.unwrap();
    let name = rollcall::cases::scan::lease_name("acme");
    assert_eq!(name, NAME);
    let theirs = Lease::acquire(&other, &name, Duration::ZERO).await.unwrap();

    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
    let scan = {
        let rt = rt.clone();
        tokio::spawn(async move { rollcall::cases::scan::scan(&rt, "acme", Some(day)).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!scan.is_finished(), "the scan waits for the other one");
    theirs.release().await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), scan)
        .await
        .expect("the scan ran once the other one finished")
        .unwrap()
        .unwrap();
    assert_eq!(report.day, Some(day));
    assert_eq!(
        lease::holder(&other, &name).await.unwrap(),
        None,
        "the scan released its lease"
    );

    other.close().await;
    rt.db.close().await;
    db.cleanup().await;
}
