//! The keys a database is bound to, on SQLite and PostgreSQL: the first
//! start records both keys' check values; a missing key is never made anew
//! while the database names the old one, another key is refused, a
//! database from before the check is checked against what it holds, and
//! `rollcall keys rotate` re-seals everything under a new data key (a
//! rotation stopped before its files were swapped is finished at start).
//! An evidence key given in `ROLLCALL_EVIDENCE_KEY` is checked the same
//! way, and never written to a file nor rotated.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use entity::{evidence_leaf, key_check};
use rollcall::clock::SystemClock;
use rollcall::config::Config;
use rollcall::db::{Database, Engine};
use rollcall::employees;
use rollcall::evidence::note::NoteSigner;
use rollcall::runtime::Runtime;
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

const PEOPLE: &str = "user_id,name,department,manager_user_id,role,phone,email,emergency_contact_name,emergency_contact_phone,postal_address,hire_date,contract_end_date,rest_days,site\n\
    wangfang,王芳,人事部,,hr,13900001111,,,,,,,,\n\
    zhangsan,张三,工程部,,employee,13812345678,,张母,13700003333,上海市浦东新区某路1号,,,,\n";

struct Setup {
    db: TestDb,
    config: Config,
    config_path: PathBuf,
}

impl Setup {
    fn dir(&self) -> &Path {
        self.db.dir.path()
    }

    fn data_key(&self) -> PathBuf {
        self.dir().join("data.key")
    }

    fn evidence_key(&self) -> PathBuf {
        self.dir().join("evidence.key")
    }

    async fn start(&self) -> Result<Runtime, String> {
        rollcall::app::runtime(&self.config, Arc::new(SystemClock))
            .await
            .map_err(|e| e.to_string())
    }

    fn rollcall(&self, args: &[&str]) -> (bool, String) {
        self.rollcall_with(args, &[])
    }

    /// `rollcall` with `env` set (and no key or database from the test's own).
    fn rollcall_with(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir())
            .env("RUST_LOG", "error")
            .env_remove("ROLLCALL_DATABASE_URL")
            .env_remove("ROLLCALL_DATA_KEY")
            .env_remove("ROLLCALL_EVIDENCE_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

async fn setup(engine: Engine) -> Setup {
    let db = TestDb::new(engine).await;
    let dir = db.dir.path();
    let toml = format!(
        "[server]\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{}\"\n[[tenants]]\nid = \"acme\"\n",
        dir.join("data.key").display(),
        dir.join("evidence.key").display(),
        db.url
    );
    let config_path = dir.join("rollcall.toml");
    std::fs::write(&config_path, &toml).unwrap();
    Setup {
        config: Config::parse(&toml, &no_env()).unwrap(),
        config_path,
        db,
    }
}

/// Puts `bytes` at `path`, mode 0600, as a key file would be.
fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn zhangsan(rt: &Runtime) -> employees::Employee {
    employees::load(&rt.db, &rt.key, "acme", "zhangsan")
        .await
        .unwrap()
        .unwrap()
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refuses_other_keys_and_rotates_its_data_key(#[case] engine: Engine) {
    let s = setup(engine).await;
    let rt = s.start().await.unwrap();
    employees::import_csv(&rt.db, &rt.key, "acme", PEOPLE.as_bytes(), false)
        .await
        .unwrap();
    let before = zhangsan(&rt).await;
    assert_eq!(before.phone.as_deref(), Some("13812345678"));
    let checks = key_check::Entity::find().all(&rt.db.orm).await.unwrap();
    let data = checks.iter().find(|c| c.purpose == "data").unwrap();
    assert_eq!(data.check_value, rt.key.check_value());
    let evidence = checks.iter().find(|c| c.purpose == "evidence").unwrap();
    assert_eq!(evidence.check_value, rt.signer.verifier_key());
    let (old_data, old_evidence) = (
        std::fs::read(s.data_key()).unwrap(),
        std::fs::read(s.evidence_key()).unwrap(),
    );
    rt.db.close().await;
    s.start().await.unwrap().db.close().await;

    // A lost data key is not made anew.
    std::fs::remove_file(s.data_key()).unwrap();
    let err = s.start().await.unwrap_err();
    assert!(
        err.starts_with(&format!(
            "no data key at {}, but this database was sealed with data key {}",
            s.data_key().display(),
            data.key_id
        )),
        "{err}"
    );
    assert!(!s.data_key().exists(), "no new key was written");
    // Another data key is refused.
    write_private(
        &s.data_key(),
        b"CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=\n",
    );
    let err = s.start().await.unwrap_err();
    assert!(
        err.contains("is not the one this database was sealed with")
            && err.contains(&data.check_value),
        "{err}"
    );
    write_private(&s.data_key(), &old_data);
    // The same for the evidence key.
    std::fs::remove_file(s.evidence_key()).unwrap();
    let err = s.start().await.unwrap_err();
    assert!(err.starts_with("no evidence key at"), "{err}");
    assert!(!s.evidence_key().exists(), "no new key was written");
    let stranger = rollcall::evidence::note::NoteSigner::generate("rollcall").unwrap();
    write_private(
        &s.evidence_key(),
        format!("{}\n", stranger.private_key()).as_bytes(),
    );
    let err = s.start().await.unwrap_err();
    assert!(
        err.contains("is not the one this database's checkpoints are signed by"),
        "{err}"
    );
    write_private(&s.evidence_key(), &old_evidence);

    // A database from before the check (nothing recorded) with another
    // data key: it does not open what is sealed, so it is refused.
    let conn = Database::open(&s.db.url).await.unwrap();
    key_check::Entity::delete_many()
        .exec(&conn.orm)
        .await
        .unwrap();
    write_private(
        &s.data_key(),
        b"CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=\n",
    );
    let err = s.start().await.unwrap_err();
    assert!(
        err.contains("it does not open the sealed phone_sealed"),
        "{err}"
    );
    assert_eq!(
        key_check::Entity::find()
            .filter(key_check::Column::Purpose.eq("data"))
            .one(&conn.orm)
            .await
            .unwrap(),
        None,
        "nothing recorded for a key that was refused"
    );
    write_private(&s.data_key(), &old_data);
    s.start().await.unwrap().db.close().await;

    // `keys show`, then `keys rotate`.
    let (ok, out) = s.rollcall(&["keys", "show"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "data key: id {}, check value {}",
            data.key_id, data.check_value
        )),
        "{out}"
    );
    let (ok, out) = s.rollcall(&["keys", "rotate"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("data key rotated: 5 values re-sealed"),
        "{out}"
    );
    let retired = PathBuf::from(format!(
        "{}.retired-{}",
        s.data_key().display(),
        data.key_id
    ));
    assert_eq!(
        std::fs::read(&retired).unwrap(),
        old_data,
        "the old key is kept"
    );
    assert_ne!(std::fs::read(s.data_key()).unwrap(), old_data);
    let rt = s.start().await.unwrap();
    assert_ne!(rt.key.check_value(), data.check_value);
    let after = zhangsan(&rt).await;
    assert_eq!(
        (
            after.phone,
            after.emergency_contact_name,
            after.emergency_contact_phone,
            after.postal_address
        ),
        (
            before.phone,
            before.emergency_contact_name,
            before.emergency_contact_phone,
            before.postal_address
        )
    );
    let leaf = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("data_key_rotated"))
        .one(&rt.db.orm)
        .await
        .unwrap()
        .expect("the rotation is in the log");
    let content = leaf.content.unwrap();
    assert!(
        content.contains(&format!("\"new_key_id\":\"{}\"", rt.key.key_id()))
            && content.contains(&format!("\"old_key_id\":\"{}\"", data.key_id)),
        "{content}"
    );
    let report =
        rollcall::evidence::verify::verify_log(&rt.db.orm, "acme", &rt.signer.verifier_key(), None)
            .await
            .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let new_data = std::fs::read(s.data_key()).unwrap();
    rt.db.close().await;

    // A rotation whose transaction committed but whose files were not
    // swapped yet: the next start finishes it.
    std::fs::rename(s.data_key(), format!("{}.new", s.data_key().display())).unwrap();
    std::fs::rename(&retired, s.data_key()).unwrap();
    let rt = s.start().await.unwrap();
    assert_eq!(std::fs::read(s.data_key()).unwrap(), new_data);
    assert_eq!(std::fs::read(&retired).unwrap(), old_data);
    assert!(!PathBuf::from(format!("{}.new", s.data_key().display())).exists());
    assert_eq!(zhangsan(&rt).await.phone.as_deref(), Some("13812345678"));
    rt.db.close().await;
    // …or stopped between its two renames: no key file, the new key
    // pending.
    std::fs::rename(s.data_key(), format!("{}.new", s.data_key().display())).unwrap();
    let rt = s.start().await.unwrap();
    assert_eq!(std::fs::read(s.data_key()).unwrap(), new_data);
    rt.db.close().await;
    conn.close().await;
    s.db.cleanup().await;
}

/// `rollcall keys rotate --evidence`: a new signing key, a hand-over signed
/// by both stored and written beside the key file, the old key kept; a
/// start with the old key file is refused and says why; a rotation stopped
/// before its files were swapped is finished at the next start; the log
/// verifies across the rotation.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_key_rotates_with_a_signed_handover(#[case] engine: Engine) {
    let s = setup(engine).await;
    let rt = s.start().await.unwrap();
    employees::import_csv(&rt.db, &rt.key, "acme", PEOPLE.as_bytes(), false)
        .await
        .unwrap();
    rollcall::evidence::append_one(
        &rt.db.orm,
        "acme",
        chrono::Utc::now(),
        rollcall::evidence::NewLeaf::new("check_in").subject(Some("zhangsan")),
    )
    .await
    .unwrap();
    let old = rt.signer.verifier_key();
    let old_id = format!("{:08x}", rt.signer.id());
    let old_file = std::fs::read(s.evidence_key()).unwrap();
    rt.db.close().await;

    let (ok, out) = s.rollcall(&["keys", "rotate", "--data", "--evidence"]);
    assert!(!ok && out.contains("cannot be used with"), "{out}");
    let (ok, out) = s.rollcall(&["keys", "rotate", "--evidence"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("evidence key rotated"), "{out}");
    let retired = PathBuf::from(format!("{}.retired-{old_id}", s.evidence_key().display()));
    assert_eq!(
        std::fs::read(&retired).unwrap(),
        old_file,
        "the old key is kept"
    );

    let rt = s.start().await.unwrap();
    let new = rt.signer.verifier_key();
    assert_ne!(new, old);
    let check = key_check::Entity::find_by_id("evidence".to_owned())
        .one(&rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check.check_value, new);
    let stored = entity::key_handover::Entity::find()
        .all(&rt.db.orm)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let handover = rollcall::evidence::handover::Handover::verify(&stored[0].note).unwrap();
    assert_eq!(
        (handover.old_key.as_str(), handover.new_key.as_str()),
        (old.as_str(), new.as_str())
    );
    let beside = format!(
        "{}.handover-{old_id}-{:08x}",
        s.evidence_key().display(),
        rt.signer.id()
    );
    assert_eq!(std::fs::read_to_string(beside).unwrap(), stored[0].note);
    // The old key's last checkpoint covers the whole log, the rotation leaf
    // included.
    let log = entity::evidence_log::Entity::find_by_id("acme".to_owned())
        .one(&rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handover.checkpoints.len(), 1);
    assert_eq!(handover.checkpoints[0].size, log.size as u64);
    let leaf = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Kind.eq("evidence_key_rotated"))
        .one(&rt.db.orm)
        .await
        .unwrap()
        .expect("the rotation is in the log");
    assert!(leaf.content.unwrap().contains(&new));

    // More leaves, signed by the new key past the old key's witnessed
    // checkpoint; the whole log verifies.
    rollcall::evidence::append_one(
        &rt.db.orm,
        "acme",
        chrono::Utc::now(),
        rollcall::evidence::NewLeaf::new("check_in").subject(Some("zhangsan")),
    )
    .await
    .unwrap();
    let signed = rollcall::evidence::checkpoint::checkpoint(
        &rt.db.orm,
        &rt.signer,
        &rt.witness,
        "acme",
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(signed.size, log.size + 1);
    let witnessed = rt.witness.read("acme").unwrap();
    assert_eq!(witnessed.as_ref().map(|w| w.size), Some(signed.size as u64));
    let report =
        rollcall::evidence::verify::verify_log(&rt.db.orm, "acme", &new, witnessed.as_ref())
            .await
            .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let (ok, out) = s.rollcall(&["evidence", "verify", "--tenant", "acme"]);
    assert!(ok, "{out}");
    // The retired key signing past its hand-over is caught.
    let retired_key = rollcall::evidence::note::NoteSigner::from_private_key(
        std::str::from_utf8(&old_file).unwrap().trim(),
    )
    .unwrap();
    // A process still holding the retired key (started before the
    // rotation) signs nothing more: the database names the new key.
    let err = rollcall::evidence::checkpoint::checkpoint(
        &rt.db.orm,
        &retired_key,
        &rt.witness,
        "acme",
        rt.clock.now(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("the key was rotated"), "{err}");
    let text = rollcall::evidence::note::verify(&signed.note, &new).unwrap();
    entity::evidence_checkpoint::Entity::update_many()
        .col_expr(
            entity::evidence_checkpoint::Column::Note,
            sea_orm::sea_query::Expr::value(retired_key.sign(&text).unwrap()),
        )
        .filter(entity::evidence_checkpoint::Column::Id.eq(signed.id))
        .exec(&rt.db.orm)
        .await
        .unwrap();
    let report = rollcall::evidence::verify::verify_log(&rt.db.orm, "acme", &new, None)
        .await
        .unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        vec![format!(
            "checkpoint size {}: is signed by key {old_id}, which handed over at the checkpoint of {} leaves",
            signed.size, log.size
        )]
    );
    // A witnessed checkpoint signed by a key off the chain (the database's
    // row changed to match): nothing more is signed.
    let stranger = rollcall::evidence::note::NoteSigner::generate("rollcall").unwrap();
    let forged = stranger.sign(&text).unwrap();
    entity::evidence_checkpoint::Entity::update_many()
        .col_expr(
            entity::evidence_checkpoint::Column::Note,
            sea_orm::sea_query::Expr::value(forged.clone()),
        )
        .filter(entity::evidence_checkpoint::Column::Id.eq(signed.id))
        .exec(&rt.db.orm)
        .await
        .unwrap();
    let mut record = witnessed.unwrap();
    record.note = forged;
    rt.witness.write("acme", &record).unwrap();
    rollcall::evidence::append_one(
        &rt.db.orm,
        "acme",
        chrono::Utc::now(),
        rollcall::evidence::NewLeaf::new("check_in").subject(Some("zhangsan")),
    )
    .await
    .unwrap();
    let err = rollcall::evidence::checkpoint::checkpoint(
        &rt.db.orm,
        &rt.signer,
        &rt.witness,
        "acme",
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not signed by this key or one it took over from"),
        "{err}"
    );
    let new_file = std::fs::read(s.evidence_key()).unwrap();
    rt.db.close().await;

    // The old key file put back: refused, naming the rotation.
    write_private(&s.evidence_key(), &old_file);
    let err = s.start().await.unwrap_err();
    assert!(
        err.contains("was retired by a key rotation") && err.contains(&new),
        "{err}"
    );
    // A rotation stopped before its files were swapped: finished at start.
    std::fs::remove_file(&retired).unwrap();
    write_private(
        &PathBuf::from(format!("{}.new", s.evidence_key().display())),
        &new_file,
    );
    let rt = s.start().await.unwrap();
    assert_eq!(rt.signer.verifier_key(), new);
    assert_eq!(std::fs::read(&retired).unwrap(), old_file);
    rt.db.close().await;
    s.db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_key_from_the_environment_is_checked_and_never_written(#[case] engine: Engine) {
    let s = setup(engine).await;
    let shared = NoteSigner::generate("rollcall").unwrap();
    let other = NoteSigner::generate("rollcall").unwrap();
    let (shared_text, other_text) = (shared.private_key(), other.private_key());
    let with_shared = [("ROLLCALL_EVIDENCE_KEY", shared_text.as_str())];

    // The first start with the key in the environment records it, and
    // writes no key file.
    let (ok, out) = s.rollcall_with(&["keys", "show"], &with_shared);
    assert!(ok, "{out}");
    assert!(out.contains(&shared.verifier_key()), "{out}");
    assert!(!s.evidence_key().exists(), "no key file was written");
    let db = Database::open(&s.db.url).await.unwrap();
    let recorded = key_check::Entity::find_by_id("evidence".to_owned())
        .one(&db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.check_value, shared.verifier_key());

    // Another host with the same key starts; one with another key does not.
    let now = chrono::Utc::now();
    let again = rollcall::keys::evidence_key(&db.orm, &with_shared, &s.evidence_key(), "x", now)
        .await
        .unwrap();
    assert_eq!(again.verifier_key(), shared.verifier_key());
    let (ok, out) = s.rollcall_with(
        &["keys", "show"],
        &[("ROLLCALL_EVIDENCE_KEY", other_text.as_str())],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("from ROLLCALL_EVIDENCE_KEY")
            && out.contains(&other.verifier_key())
            && out.contains(&shared.verifier_key()),
        "{out}"
    );
    // Nor does one without it, whose key file would be made anew.
    let (ok, out) = s.rollcall(&["keys", "show"]);
    assert!(!ok && out.contains("no evidence key at"), "{out}");
    assert!(!s.evidence_key().exists(), "no key file was written");
    // Not a private key: refused, without echoing it.
    let (ok, out) = s.rollcall_with(
        &["keys", "show"],
        &[("ROLLCALL_EVIDENCE_KEY", "not-a-key-42")],
    );
    assert!(
        !ok && out.contains("ROLLCALL_EVIDENCE_KEY must hold a private key"),
        "{out}"
    );
    assert!(!out.contains("not-a-key-42"), "{out}");

    // A key from the environment is not rotated by rollcall.
    let (ok, out) = s.rollcall_with(&["keys", "rotate", "--evidence"], &with_shared);
    assert!(!ok, "{out}");
    assert!(out.contains("comes from ROLLCALL_EVIDENCE_KEY"), "{out}");
    assert!(!s.evidence_key().exists(), "no key file was written");
    assert!(!PathBuf::from(format!("{}.new", s.evidence_key().display())).exists());
    // The key as a file: the same key, so it starts.
    write_private(&s.evidence_key(), format!("{shared_text}\n").as_bytes());
    let rt = s.start().await.unwrap();
    assert_eq!(rt.signer.verifier_key(), shared.verifier_key());
    rt.db.close().await;
    db.close().await;
    s.db.cleanup().await;
}
