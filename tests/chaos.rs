//! Faults (issue 16): the real `rollcall serve` process, killed with
//! SIGKILL twenty times under load at random moments, and its PostgreSQL
//! restarted under load. Whatever fails: every acknowledged callback is
//! stored exactly once, every stored one is answered exactly once, no
//! message reaches the platform twice, and the evidence log verifies.
//! A kill while a package is built ends in one package and one link.
//! (Platform faults during a whole ladder on each platform:
//! `tests/ladder.rs::every_fault_ends_sent_once_or_undeliverable_with_hr_told`
//! and `a_whole_ladder_through_outages_and_a_hanging_sms_gateway`;
//! a send cut off between request and receipt: `tests/crash.rs`.)

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use entity::{inbound_event, outbox};
use rollcall::db::{Database, Engine};
use rollcall::demo::{SandboxPlatform, TENANT};
use rstest::rstest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

const USERS: [&str; 3] = ["zhangsan", "lisi", "wangwu"];

/// `rollcall evidence verify` on the live database: the log verifies.
fn assert_evidence_verifies(config: &std::path::Path, dir: &std::path::Path, when: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["--config", config.to_str().unwrap()])
        .args(["evidence", "verify", "--tenant", TENANT])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{when}: the evidence log does not verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sandbox tenant's configuration on the database at `url`, listening
/// on `port`, its files in `dir`, signing a checkpoint every second (so
/// that faults land mid-checkpoint too), without the per-member limit
/// (three people get hundreds of replies here, beyond WeCom's 30 a minute).
fn chaos_config(
    dir: &std::path::Path,
    url: &str,
    platform: &SandboxPlatform,
    port: u16,
) -> std::path::PathBuf {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\ncheckpoint_every_secs = 1\n[database]\nurl = \"{url}\"\n[delivery]\nmax_backoff_secs = 1\ntimeout_secs = 2\nmember_limit = 100000\n{}",
        dir.join("data.key").display(),
        dir.join("evidence.key").display(),
        platform.tenant_toml()
    );
    let path = dir.join("rollcall.toml");
    std::fs::write(&path, &toml).unwrap();
    path
}

/// The roster, written before the first start; with `notices`, nobody
/// checked in yesterday either, so the scan has opened a case for each and
/// their notices wait to be sent (the ladder runs under the faults).
async fn seed(path: &std::path::Path, notices: bool) {
    let toml = std::fs::read_to_string(path).unwrap();
    let config = rollcall::config::Config::parse(&toml, &no_env()).unwrap();
    let clock = Arc::new(rollcall::clock::SystemClock);
    let rt = rollcall::app::runtime(&config, clock).await.unwrap();
    rollcall::demo::seed_roster(&rt).await.unwrap();
    if notices {
        // The last workday before today (in Shanghai) opens the cases.
        let today = chrono::Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive();
        let opened = (1..=10).map(|back| today - chrono::Duration::days(back));
        let mut cases = 0;
        for day in opened {
            // Yesterday may not be closed yet (its grace runs past midnight).
            if let Ok(report) = rollcall::cases::scan::scan(&rt, TENANT, Some(day)).await {
                cases = report.opened;
            }
            if cases > 0 {
                break;
            }
        }
        assert!(cases > 0, "a workday in the last ten days opened cases");
    }
    rt.db.clone().close().await;
}

/// A database of `engine`, the sandbox platform, and rollcall's address
/// and configuration on them, seeded with notices waiting (see [`seed`]).
async fn with_notices_waiting(
    engine: Engine,
) -> (TestDb, SandboxPlatform, String, std::path::PathBuf) {
    let db = TestDb::new(engine).await;
    let platform = SandboxPlatform::start().await.unwrap();
    let port = free_port();
    let config = chaos_config(db.dir.path(), &db.url, &platform, port);
    seed(&config, true).await;
    (db, platform, format!("http://127.0.0.1:{port}"), config)
}

/// Four phones send check-ins until `stop` or the server dies under them;
/// returns the keys of the callbacks answered `success`.
async fn load(platform: &SandboxPlatform, base: &str, stop: Duration) -> HashSet<String> {
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let url = format!("{base}/callback/wecom/{TENANT}");
    let mut phones = tokio::task::JoinSet::new();
    for p in 0..4 {
        let phone = platform
            .callback_sender(&url)
            .unwrap()
            .with_retries(0)
            .with_timeout(Duration::from_secs(30));
        let acked = acked.clone();
        phones.spawn(async move {
            let started = Instant::now();
            for i in 0.. {
                if started.elapsed() >= stop {
                    return;
                }
                let user = USERS[(p + i) % USERS.len()];
                let d = phone
                    .text(user, "打卡", chrono::Utc::now().timestamp())
                    .await;
                if !d.delivered {
                    return; // the server is gone
                }
                acked.lock().unwrap().insert(d.msg_key);
            }
        });
    }
    while phones.join_next().await.is_some() {}
    acked.lock().unwrap().clone()
}

/// Waits until every stored callback is handled and every message is
/// final; returns (callbacks, messages).
async fn drained(store: &Database) -> (Vec<inbound_event::Model>, Vec<outbox::Model>) {
    let start = Instant::now();
    loop {
        let events = inbound_event::Entity::find().all(&store.orm).await.unwrap();
        let messages = outbox::Entity::find().all(&store.orm).await.unwrap();
        if events.iter().all(|e| e.processed_at.is_some())
            && messages
                .iter()
                .all(|m| m.status != "pending" && m.status != "sending")
        {
            return (events, messages);
        }
        if start.elapsed() > PATIENCE {
            let waiting: Vec<_> = events.iter().filter(|e| e.processed_at.is_none()).collect();
            let unsent: Vec<_> = messages
                .iter()
                .filter(|m| m.status == "pending" || m.status == "sending")
                .map(|m| (&m.idem_key, &m.status, m.attempts, &m.error, m.not_before))
                .collect();
            panic!(
                "the backlog was not finished: {} callbacks unhandled ({:?}), messages waiting: {unsent:#?}",
                waiting.len(),
                waiting
                    .iter()
                    .map(|e| (&e.msg_key, e.attempts, &e.last_error, e.not_before))
                    .take(5)
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Twenty SIGKILLs of the serving process under load, each at a random
/// moment (mid-batch, mid-send and mid-checkpoint are where it spends its
/// time), each restart checked: the evidence log verifies. Then the
/// whole: nothing acknowledged lost, nothing stored or answered twice, no
/// message twice on the platform.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_under_load_lose_nothing_and_send_nothing_twice(#[case] engine: Engine) {
    let (db, platform, base, config) = with_notices_waiting(engine).await;

    let mut acked = HashSet::new();
    for cycle in 0..20 {
        let mut server = spawn_serve(&config, db.dir.path());
        wait_ready(&base).await;
        if cycle > 0 {
            assert_evidence_verifies(&config, db.dir.path(), &format!("after kill {cycle}"));
        }
        let run_for = Duration::from_millis(rand::random_range(100..800));
        let kill_after = Duration::from_millis(rand::random_range(50..900));
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            server.kill().unwrap(); // SIGKILL
            server.wait().unwrap();
        });
        acked.extend(load(&platform, &base, run_for).await);
        killer.await.unwrap();
    }

    // The last start finishes everything.
    let mut server = spawn_serve(&config, db.dir.path());
    wait_ready(&base).await;
    let store = Database::connect(&db.url).await.unwrap();
    let (events, messages) = assert_nothing_lost(&store, &acked, &config, db.dir.path()).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        acked.len() > 20,
        "the load ran: {} acknowledged",
        acked.len()
    );
    // No notice twice on the platform: a notice cut off by a kill is sent
    // again under WeCom's duplicate check, which drops the copy.
    let notices: Vec<&outbox::Model> = messages.iter().filter(|m| m.step.is_some()).collect();
    assert!(!notices.is_empty(), "the ladder ran");
    let taken = platform.api.sent();
    let card_of = |m: &outbox::Model| {
        let payload: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        payload["card_id"].as_str().map(str::to_owned)
    };
    let copies_of = |card: &str| {
        taken
            .iter()
            .filter(|m| m.body["template_card"]["task_id"] == card)
            .count()
    };
    let mut cut_off_then_cancelled = 0;
    for n in &notices {
        let copies = match card_of(n) {
            Some(card) => copies_of(&card),
            None => taken
                .iter()
                .filter(|m| Some(m.msgid.as_str()) == n.receipt_id.as_deref())
                .count(),
        };
        match n.status.as_str() {
            "sent" => assert_eq!(
                copies, 1,
                "notice {} reached the platform {copies} times",
                n.idem_key
            ),
            _ => {
                // Cut off by a kill after the platform took it, then not
                // sent again: its case moved on (the person checked in).
                assert!(
                    copies <= 1,
                    "notice {} reached the platform {copies} times",
                    n.idem_key
                );
                cut_off_then_cancelled += copies;
            }
        }
    }
    // Beyond the messages on record, the platform took only those notices,
    // and check-in replies in flight at a kill and sent again: a reply's
    // text may rightly repeat, so WeCom's duplicate check cannot guard it
    // (src/outbox/mod.rs, `chat`); at most as many as sends in flight at
    // the kills (`delivery.sends_at_once`, 32).
    let sent = messages.iter().filter(|m| m.status == "sent").count();
    let receipts: HashSet<&str> = messages
        .iter()
        .filter_map(|m| m.receipt_id.as_deref())
        .collect();
    let strays: Vec<_> = taken
        .iter()
        .filter(|m| !receipts.contains(m.msgid.as_str()))
        .collect();
    assert_eq!(taken.len(), sent + strays.len());
    let replies_twice = strays
        .iter()
        .filter(|m| {
            m.msgtype == "text"
                && m.body["text"]["content"]
                    .as_str()
                    .is_some_and(|t| t.contains("已记录您的到岗"))
        })
        .count();
    assert_eq!(
        replies_twice + cut_off_then_cancelled,
        strays.len(),
        "only check-in replies and cut-off notices are off the record: {strays:#?}"
    );
    assert!(
        replies_twice <= 20 * 32,
        "{replies_twice} replies sent twice"
    );
    eprintln!(
        "20 kills: {} acknowledged, {} stored, {} sent ({} notices), {} notice resends caught as duplicates, {} replies sent twice, {} notices cut off and then cancelled",
        acked.len(),
        events.len(),
        sent,
        notices.len(),
        platform.api.duplicates(),
        replies_twice,
        cut_off_then_cancelled
    );
    store.close().await;
    db.cleanup().await;
}

/// What each callback of a load was answered: `success`, a status, or no
/// answer.
#[derive(Debug, Default)]
struct Answers {
    acked: HashSet<String>,
    /// Statuses other than 200 `success`, and how many of each.
    refused: std::collections::BTreeMap<u16, usize>,
    unanswered: usize,
}

/// Two phones send check-ins until `stop` is set, whatever the answers.
fn steady_load(
    platform: &SandboxPlatform,
    base: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Answers> {
    let url = format!("{base}/callback/wecom/{TENANT}");
    let phones: Vec<_> = (0..2)
        .map(|_| {
            platform
                .callback_sender(&url)
                .unwrap()
                .with_retries(0)
                .with_timeout(Duration::from_secs(30))
        })
        .collect();
    tokio::spawn(async move {
        let answers = Arc::new(Mutex::new(Answers::default()));
        let mut tasks = tokio::task::JoinSet::new();
        for (p, phone) in phones.into_iter().enumerate() {
            let (answers, stop) = (answers.clone(), stop.clone());
            tasks.spawn(async move {
                let mut i = p;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = phone
                        .text(
                            USERS[i % USERS.len()],
                            "打卡",
                            chrono::Utc::now().timestamp(),
                        )
                        .await;
                    i += 1;
                    {
                        let mut a = answers.lock().unwrap();
                        match (d.delivered, d.status) {
                            (true, _) => {
                                a.acked.insert(d.msg_key);
                            }
                            (false, Some(status)) => *a.refused.entry(status).or_default() += 1,
                            (false, None) => a.unanswered += 1,
                        }
                    }
                    // A steady trickle, not a flood: the point is the fault.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
    })
}

/// `/readyz`'s status now.
async fn readyz(base: &str) -> u16 {
    http()
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Every acknowledged callback stored once, every stored one handled and
/// answered once (its reply sent), and the log verifies; returns what the
/// database holds once the backlog is done.
async fn assert_nothing_lost(
    store: &Database,
    acked: &HashSet<String>,
    config: &std::path::Path,
    dir: &std::path::Path,
) -> (Vec<inbound_event::Model>, Vec<outbox::Model>) {
    let (events, messages) = drained(store).await;
    let keys: HashSet<&str> = events.iter().map(|e| e.msg_key.as_str()).collect();
    assert_eq!(keys.len(), events.len(), "no callback stored twice");
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !keys.contains(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged callbacks lost: {lost:?}",
        lost.len()
    );
    let replies: Vec<&outbox::Model> = messages
        .iter()
        .filter(|m| m.idem_key.starts_with("reply:"))
        .collect();
    assert_eq!(replies.len(), events.len(), "one reply per callback");
    assert!(
        replies.iter().all(|m| m.status == "sent"),
        "every reply sent"
    );
    assert_evidence_verifies(config, dir, "after the faults");
    (events, messages)
}

/// A PostgreSQL server of the test's own (the machine's binaries, a data
/// folder in a temp dir, its own port), which the test stops and starts.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql (apt install postgresql)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let pg = OwnPostgres {
            dir,
            bin,
            port: free_port(),
        };
        // initdb refuses to run as root: the folder becomes postgres'.
        if pg.as_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn as_root(&self) -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let out = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the server and waits until it takes connections.
    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops it as a crash would: no shutdown checkpoint.
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(path)
                .args(args)
                .output()
        } else {
            Command::new(path).args(args).output()
        };
    }
}

/// PostgreSQL crashes under load and comes back: while it is down,
/// callbacks are answered 503 at once (the platform retries) and
/// `/readyz` says so; nothing acknowledged is lost, and the service takes
/// callbacks again by itself, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_503_and_loses_nothing() {
    let pg = OwnPostgres::start();
    let files = tempfile::tempdir().unwrap();
    let platform = SandboxPlatform::start().await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = chaos_config(files.path(), &pg.url(), &platform, port);
    seed(&config, false).await;
    let mut server = spawn_serve(&config, files.path());
    wait_ready(&base).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(&platform, &base, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.crash();
    // Down: refused, and said so, until it returns.
    let start = Instant::now();
    while readyz(&base).await != 503 {
        assert!(start.elapsed() < PATIENCE, "/readyz did not notice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.up();
    let start = Instant::now();
    while readyz(&base).await != 200 {
        assert!(start.elapsed() < PATIENCE, "did not recover by itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Callbacks are taken again.
    let before = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.await.unwrap();
    eprintln!("{answers:?} (load after recovery from {before:?})");
    assert!(
        answers.refused.get(&503).is_some_and(|n| *n > 0),
        "refused with 503 while down: {:?}",
        answers.refused
    );
    assert!(
        answers.refused.keys().all(|s| *s == 503),
        "503, nothing else: {:?}",
        answers.refused
    );
    assert_eq!(answers.unanswered, 0, "no request hung or was cut off");
    let store = Database::connect(&pg.url()).await.unwrap();
    let recovered_acks = inbound_event::Entity::find()
        .filter(
            inbound_event::Column::ReceivedAt.gt(chrono::Utc::now() - chrono::Duration::seconds(2)),
        )
        .all(&store.orm)
        .await
        .unwrap();
    assert!(
        !recovered_acks.is_empty(),
        "callbacks were stored after the recovery"
    );
    assert_nothing_lost(&store, &answers.acked, &config, files.path()).await;
    server.kill().unwrap();
    server.wait().unwrap();
    store.close().await;
}

/// A tmpfs of `size` mounted on a folder of the test's own, unmounted when
/// dropped; `None` where this process may not mount (not root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        out.status.success().then_some(SmallDisk { dir })
    }

    fn grow(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// The SQLite file's disk fills up under load: callbacks are refused with
/// 503 (the platform retries), nothing acknowledged is lost, the file is
/// not corrupted, and once there is space again callbacks are taken
/// without a restart. Needs root (it mounts a small tmpfs); CI runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_callbacks_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("3m") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must be able to mount a tmpfs (it runs as root)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root)");
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        disk.dir.path().join("rollcall.db").display()
    );
    let platform = SandboxPlatform::start().await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = chaos_config(files.path(), &url, &platform, port);
    seed(&config, false).await;
    let mut server = spawn_serve(&config, files.path());
    wait_ready(&base).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(&platform, &base, stop.clone());
    // Fill the disk: until callbacks are refused.
    let metrics = || async {
        http()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let start = Instant::now();
    while !metrics().await.lines().any(|l| {
        l.starts_with("rollcall_callbacks_total{outcome=\"store_failed\"}") && !l.ends_with(" 0")
    }) {
        assert!(start.elapsed() < PATIENCE, "the disk did not fill up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    disk.grow("64m");
    let refused_at_growth = metrics().await;
    let stored_before = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("rollcall_callbacks_total{outcome=\"accepted\"}"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap()
    };
    let accepted_then = stored_before(&refused_at_growth);
    let start = Instant::now();
    while stored_before(&metrics().await) < accepted_then + 20 {
        assert!(
            start.elapsed() < PATIENCE,
            "callbacks not taken again once there was space"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.await.unwrap();
    eprintln!("{:?}", answers.refused);
    assert!(
        answers.refused.get(&503).is_some_and(|n| *n > 0),
        "refused with 503 while full: {:?}",
        answers.refused
    );
    assert!(
        answers.refused.keys().all(|s| *s == 503),
        "{:?}",
        answers.refused
    );
    let store = Database::connect(&url).await.unwrap();
    assert_nothing_lost(&store, &answers.acked, &config, files.path()).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let check: (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(store.sqlite())
        .await
        .unwrap();
    assert_eq!(check.0, "ok", "the file is not corrupted");
    store.close().await;
}

/// A large record about 张三 (16 MiB that do not compress), appended before
/// the first start, so that building his package takes long enough to be
/// killed halfway.
async fn large_record(path: &std::path::Path) {
    let toml = std::fs::read_to_string(path).unwrap();
    let config = rollcall::config::Config::parse(&toml, &no_env()).unwrap();
    let rt = rollcall::app::runtime(&config, Arc::new(rollcall::clock::SystemClock))
        .await
        .unwrap();
    let mut photo = vec![0u8; 16 << 20];
    rand::Rng::fill(&mut rand::rng(), &mut photo[..]);
    let txn = sea_orm::TransactionTrait::begin(&rt.db.orm).await.unwrap();
    rollcall::evidence::append_one(
        &txn,
        TENANT,
        chrono::Utc::now(),
        rollcall::evidence::NewLeaf::new("note")
            .subject(Some("zhangsan"))
            .raw("photo", "image/jpeg", photo),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    rt.db.clone().close().await;
}

/// The links to packages HR received so far (the platform's copies).
fn links(platform: &SandboxPlatform) -> Vec<String> {
    platform
        .api
        .sent()
        .iter()
        .filter(|m| m.touser.split('|').any(|u| u == "wangmin"))
        .filter_map(|m| {
            let text = m.body.to_string();
            let at = text.find("/export/")? + "/export/".len();
            Some(
                text[at..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>(),
            )
        })
        .filter(|token| token.len() == 64)
        .collect()
}

/// Killed while it builds a package, twice (each time as soon as the new
/// process's export worker holds the job), rollcall still ends with one
/// package and one link: after a restart the job runs again (on SQLite at
/// once, on PostgreSQL once the dead worker misses its heartbeats), the
/// link downloads a whole package about 张三, and the log verifies.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_export_still_ends_in_one_link(#[case] engine: Engine) {
    let (db, platform, base, config) = with_notices_waiting(engine).await;
    large_record(&config).await;
    let store = Database::connect(&db.url).await.unwrap();
    let mut server = spawn_serve(&config, db.dir.path());
    wait_ready(&base).await;
    let phone = platform
        .callback_sender(&format!("{base}/callback/wecom/{TENANT}"))
        .unwrap();
    let asked = phone
        .text("wangmin", "/导出 张三", chrono::Utc::now().timestamp())
        .await;
    assert!(asked.delivered);

    let queue = rollcall::jobs::EXPORT_QUEUE;
    let mut kills = 0;
    let started = Instant::now();
    while kills < 2 {
        let jobs = rollcall::workers::jobs_like(&store, queue, "export:%")
            .await
            .unwrap();
        let ours = format!("lock_by={queue}-{}-", server.id());
        if jobs
            .iter()
            .any(|j| j.contains(" Running ") && j.contains(&ours))
        {
            server.kill().unwrap(); // SIGKILL, mid-build
            server.wait().unwrap();
            kills += 1;
            assert!(
                links(&platform).is_empty(),
                "no link before the package is built"
            );
            assert_evidence_verifies(&config, db.dir.path(), &format!("after kill {kills}"));
            server = spawn_serve(&config, db.dir.path());
            wait_ready(&base).await;
            continue;
        }
        assert!(
            started.elapsed() < PATIENCE && links(&platform).is_empty(),
            "the build was not caught running: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The last start builds it: one link.
    while links(&platform).is_empty() {
        assert!(started.elapsed() < 2 * PATIENCE, "HR never got the link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let downloads = entity::export_download::Entity::find()
        .all(&store.orm)
        .await
        .unwrap();
    assert_eq!(downloads.len(), 1, "one request, one package");
    assert_eq!(downloads[0].status, "ready");
    let got = links(&platform);
    assert_eq!(got.len(), 1, "one link: {got:?}");
    let package = http()
        .get(format!("{base}/export/{}", got[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(package.status(), 200);
    let bytes = package.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut leaves = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("leaves.jsonl").unwrap(), &mut leaves).unwrap();
    assert!(leaves.contains("zhangsan"), "the package is about 张三");
    for name in ["manifest.json", "manifest.sig", "verify.py"] {
        assert!(zip.by_name(name).is_ok(), "{name} is in the package");
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert_evidence_verifies(&config, db.dir.path(), "at the end");
    assert_eq!(links(&platform).len(), 1, "still one link");
    store.close().await;
    db.cleanup().await;
}
