//! `rollcall backup` and `rollcall restore`, through the binary, on the
//! story's database: a copy taken while the service writes, restored beside
//! the same keys, serves and verifies; what would be overwritten or does not
//! match its keys is refused.

use std::path::Path;
use std::process::{Command, Output};

use rollcall::demo::{Sandboxed, TENANT, run_story, shanghai};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

fn rollcall(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "0")
        .env_remove("ROLLCALL_DATABASE_URL")
        .env_remove("ROLLCALL_CONFIG")
        .env_remove("ROLLCALL_DATA_KEY")
        .env_remove("ROLLCALL_EVIDENCE_KEY")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` in `dir` and checks it is refused with `reason`.
fn refused_with(dir: &Path, args: &[&str], reason: &str) {
    let err = refused(&rollcall(dir, args));
    assert!(err.contains(reason), "{args:?}: {err}");
}

/// `rollcall --db DB evidence checkpoint` of the story's tenant.
fn checkpoint(dir: &Path, db: &str) {
    ok(&rollcall(
        dir,
        &["--db", db, "evidence", "checkpoint", "--tenant", TENANT],
    ));
}

/// `rollcall --db DB evidence verify` of the story's tenant passes.
fn verifies(dir: &Path, db: &str) {
    let out = ok(&rollcall(
        dir,
        &["--db", db, "evidence", "verify", "--tenant", TENANT],
    ));
    assert!(out.contains(": OK"), "{out}");
}

fn url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

async fn check_ins(app: &Sandboxed, users: &[&str]) {
    use rollcall::clock::Clock;
    for u in users {
        let d = app.phone.text(u, "打卡", app.clock.now().timestamp()).await;
        assert!(d.delivered, "{d:?}");
    }
}

async fn count_check_ins(app: &Sandboxed) -> u64 {
    entity::check_in::Entity::find()
        .filter(entity::check_in::Column::TenantId.eq(TENANT))
        .count(&app.rt.db.orm)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_serves_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The story's database, its keys beside it as `--db` names them.
    run_story(&url(d, "story.db"), &d.join("story.key"))
        .await
        .unwrap();
    checkpoint(d, "story.db");

    // The service runs on it and takes check-ins while the backup is made.
    let app = Sandboxed::start(
        &url(d, "story.db"),
        &d.join("story.key"),
        shanghai("2026-12-09", "08:00"),
        "",
    )
    .await
    .unwrap();
    let backup = {
        let dir = d.to_path_buf();
        std::thread::spawn(move || {
            rollcall(&dir, &["--db", "story.db", "backup", "--out", "copy.db"])
        })
    };
    let mut rounds = 0;
    while !backup.is_finished() {
        check_ins(&app, &["wangwu", "lisi"]).await;
        rounds += 1;
    }
    assert!(rounds > 0, "check-ins went on while the backup ran");
    let printed = ok(&backup.join().unwrap());
    assert!(
        printed.contains("copy.db") && printed.contains("SHA-256"),
        "{printed}"
    );
    assert!(
        printed.contains("story.key") && printed.contains("story-evidence.key"),
        "{printed}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.join("copy.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Work after the backup: lost to a restore, which the witness shows.
    check_ins(&app, &["wangwu"]).await;
    app.settle().await.unwrap();
    let served = count_check_ins(&app).await;
    app.stop().await;
    checkpoint(d, "story.db");

    // Nothing to copy from is said plainly, and creates nothing.
    refused_with(
        d,
        &["--db", "none.db", "backup", "--out", "x.db"],
        "no database file",
    );
    refused_with(
        d,
        &["--db", "x.db", "restore", "--from", "none.db"],
        "no database file",
    );
    assert!(!d.join("none.db").exists() && !d.join("x.db").exists());
    refused_with(
        d,
        &["--db", "none.db", "events", "--tenant", TENANT],
        "no database file",
    );
    assert!(
        !d.join("none.db").exists(),
        "a mistyped --db makes no database"
    );
    // A backup never overwrites, a restore never overwrites.
    refused_with(
        d,
        &["--db", "story.db", "backup", "--out", "copy.db"],
        "exists already",
    );
    refused_with(
        d,
        &["--db", "story.db", "restore", "--from", "copy.db"],
        "move it aside",
    );
    // Without the keys it is bound to, nothing is left behind.
    let wrong = refused(&rollcall(
        d,
        &["--db", "elsewhere.db", "restore", "--from", "copy.db"],
    ));
    assert!(
        wrong.contains("not the ones the backup is bound to"),
        "{wrong}"
    );
    assert!(!d.join("elsewhere.db").exists());

    // On the host's keys (copied to the names `--db restored.db` uses).
    std::fs::copy(d.join("story.key"), d.join("restored.key")).unwrap();
    std::fs::copy(
        d.join("story-evidence.key"),
        d.join("restored-evidence.key"),
    )
    .unwrap();
    let witness = d.join("restored-evidence.key.witness");
    std::fs::create_dir(&witness).unwrap();
    std::fs::copy(
        d.join("story-evidence.key.witness")
            .join(format!("{TENANT}.json")),
        witness.join(format!("{TENANT}.json")),
    )
    .unwrap();
    let restored = ok(&rollcall(
        d,
        &["--db", "restored.db", "restore", "--from", "copy.db"],
    ));
    assert!(
        restored.contains(&format!("tenant {TENANT}: the witness holds a checkpoint")),
        "the checkpoint signed after the backup is reported: {restored}"
    );
    assert!(!witness.join(format!("{TENANT}.json")).exists());
    assert_eq!(
        std::fs::read_dir(&witness).unwrap().count(),
        1,
        "the witness is kept, set aside"
    );
    verifies(d, "restored.db");

    // The restored copy serves: it takes a check-in and signs a checkpoint.
    let app = Sandboxed::start(
        &url(d, "restored.db"),
        &d.join("restored.key"),
        shanghai("2026-12-09", "09:00"),
        "",
    )
    .await
    .unwrap();
    let before = count_check_ins(&app).await;
    assert!(
        before < served,
        "the check-in after the backup is not in it"
    );
    check_ins(&app, &["zhaogang"]).await;
    app.settle().await.unwrap();
    assert_eq!(count_check_ins(&app).await, before + 1);
    app.stop().await;
    checkpoint(d, "restored.db");
    verifies(d, "restored.db");

    // A backup reads the database and writes nothing to it.
    let sum = |p: &Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    let before = sum(&d.join("restored.db"));
    ok(&rollcall(
        d,
        &["--db", "restored.db", "backup", "--out", "again.db"],
    ));
    assert_eq!(sum(&d.join("restored.db")), before);
}

#[test]
fn postgres_is_backed_up_with_its_own_tools() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["backup", "--out", "x.db"])
        .current_dir(dir.path())
        .env(
            "ROLLCALL_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!dir.path().join("x.db").exists());
}
