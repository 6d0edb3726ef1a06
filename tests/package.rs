//! The evidence package of the demo story's 张三, on SQLite and PostgreSQL:
//! exported, copied alone into a folder (or zipped and unzipped) and
//! checked there by its own verify.py, with the `cryptography` package and
//! with openssl, given the fingerprint the employer published; changed
//! files are caught and named; nothing about the other employees is inside.
//! verify.py trusts nothing in the package by itself: a key not given or
//! confirmed, a checkpoint of another log, an erasure without its record,
//! an absent payload, a leaf index out of range or repeated all fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::*;
use entity::{
    absence_case, case_event, employee, evidence_leaf, evidence_log, evidence_raw, outbox,
};
use rollcall::clock::SimulatedClock;
use rollcall::config::Config;
use rollcall::db::Engine;
use rollcall::demo::{SandboxPlatform, TENANT, run_story};
use rollcall::evidence::checkpoint::{self, fingerprint, load_or_create_key};
use rollcall::evidence::export::{Package, package, pubkey_text};
use rollcall::evidence::note::{NoteSigner, checkpoint_text};
use rollcall::evidence::{NewLeaf, append};
use rollcall::outbox::Payload;
use rollcall::runtime::Runtime;
use rstest::rstest;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The demo tenant's configuration on `db`, with the story's key files.
async fn demo_config(db: &TestDb) -> String {
    let key_file = db.dir.path().join("data.key");
    // Only for its tenant table: the export talks to no platform.
    let platform = SandboxPlatform::start().await.unwrap();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_key_file = \"{}\"\n[evidence]\nkey_file = \"{}\"\n[database]\nurl = \"{}\"\n{}",
        key_file.display(),
        rollcall::config::evidence_key_beside(&key_file).display(),
        db.url,
        platform.tenant_toml()
    )
}

async fn demo_runtime(db: &TestDb, now: DateTime<Utc>) -> Runtime {
    let config = Config::parse(&demo_config(db).await, &no_env()).unwrap();
    rollcall::app::runtime(&config, Arc::new(SimulatedClock::new(now)))
        .await
        .unwrap()
}

fn signer_of(db: &TestDb) -> NoteSigner {
    load_or_create_key(
        &rollcall::config::evidence_key_beside(&db.dir.path().join("data.key")),
        "rollcall",
    )
    .unwrap()
}

/// Runs `python3 verify.py` inside `dir`, as a recipient would from a
/// script: no terminal to confirm the key at.
fn verify(dir: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new("python3")
        .arg("verify.py")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// Runs `python3 verify.py` inside `dir` at a terminal where `answer` is
/// typed (the terminal is a pseudo-terminal that Python opens).
fn verify_at_terminal(dir: &Path, answer: &str) -> (Output, String) {
    const AT_TERMINAL: &str = r#"
import os, subprocess, sys
master, slave = os.openpty()
child = subprocess.Popen([sys.executable, "verify.py"], stdin=slave,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
os.close(slave)
os.write(master, sys.argv[1].encode() + b"\n")
out, err = child.communicate()
os.close(master)
sys.stdout.buffer.write(out)
sys.stderr.buffer.write(err)
sys.exit(child.returncode)
"#;
    let out = Command::new("python3")
        .args(["-c", AT_TERMINAL, answer])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// verify.py passes, given the published `fingerprint`.
fn assert_verifies(dir: &Path, fingerprint: &str, args: &[&str], backend: &str) -> String {
    let mut all = vec!["--fingerprint", fingerprint];
    all.extend(args);
    let (out, text) = verify(dir, &all);
    assert!(
        out.status.success(),
        "verify.py {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("RESULT: all"), "{text}");
    assert!(!text.contains("[FAIL]"), "{text}");
    // Never a silent fallback: the Ed25519 implementation asked for is the one used.
    assert!(
        text.contains(backend),
        "verify.py did not use {backend} (for `cryptography`: pip install cryptography):\n{text}"
    );
    text
}

/// verify.py, given the published `fingerprint`, must fail, with a
/// [FAIL] line naming `names`.
fn assert_caught(dir: &Path, fingerprint: &str, what: &str, names: &str) {
    assert_fails(verify(dir, &["--fingerprint", fingerprint]), what, &[names]);
}

/// verify.py exited 1 with a [FAIL] line that holds every one of `needles`
/// (what failed, and why); returns its output.
fn assert_fails((out, text): (Output, String), what: &str, needles: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: verify.py should fail:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RESULT:") && text.contains("FAILED"),
        "{what}:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("[FAIL]") && needles.iter().all(|n| l.contains(n))),
        "{what}: no [FAIL] line holds {needles:?}:\n{text}"
    );
    text
}

/// The [FAIL] lines of a run.
fn failures(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("[FAIL]")).collect()
}

/// What `rollcall evidence pubkey` prints with the configuration `config`.
fn pubkey_lines(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--config")
        .arg(config)
        .args(["evidence", "pubkey"])
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The fingerprint in the lines of `pubkey.txt`.
fn fingerprint_in(pubkey: &str) -> String {
    pubkey
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint (SHA-256): "))
        .expect("a fingerprint line")
        .to_owned()
}

/// Writes the package into a new folder that holds nothing else.
fn fresh_copy(p: &Package) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    p.write_dir(dir.path()).unwrap();
    // A person's file: readable by its owner only.
    #[cfg(unix)]
    for entry in walk(dir.path()) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        let expected = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{}", entry.display());
    }
    dir
}

/// Every file and folder below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// What someone holding the signing key (but not able to rewrite the log)
/// could do: re-list every file in the manifest and sign it again.
fn resign(dir: &Path, signer: &NoteSigner) {
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "manifest.json" || rel == "manifest.sig" {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files.push(json!({ "path": rel, "size": bytes.len(), "sha256": sha256_hex(&bytes) }));
        }
    }
    manifest["files"] = Value::Array(files);
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(dir.join("manifest.json"), &bytes).unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode(signer.sign_bytes(&bytes));
    std::fs::write(dir.join("manifest.sig"), sig).unwrap();
}

/// Rewrites `leaves.jsonl` in `dir`, its lines as JSON values.
fn edit_leaves(dir: &Path, edit: impl FnOnce(&mut Vec<Value>)) {
    let path = dir.join("leaves.jsonl");
    let mut lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    edit(&mut lines);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Signs the checkpoint in `file` again as a checkpoint of the log
/// `origin` (same size and root): what the key's holder could do.
fn resign_checkpoint(dir: &Path, file: &str, signer: &NoteSigner, origin: &str) {
    let note = std::fs::read_to_string(dir.join(file)).unwrap();
    let lines: Vec<&str> = note.lines().collect();
    let size: u64 = lines[1].parse().unwrap();
    let root: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(lines[2])
        .unwrap()
        .try_into()
        .unwrap();
    let signed = signer.sign(&checkpoint_text(origin, size, &root)).unwrap();
    std::fs::write(dir.join(file), signed).unwrap();
}

fn lines(p: &Package) -> Vec<Value> {
    std::str::from_utf8(p.file("leaves.jsonl").unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Does `needle` occur in `hay` as a whole token (not inside a longer run
/// of letters and digits, as in base64 or hex)?
fn holds_token(hay: &[u8], needle: &[u8]) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric();
    hay.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && (i == 0 || !word(hay[i - 1]))
            && hay.get(i + needle.len()).is_none_or(|b| !word(*b))
    })
}

/// The demo story's log after `story_then_more`.
struct Story {
    rt: Runtime,
    /// 张三's case.
    case: absence_case::Model,
    /// The log's size at the checkpoint signed after the story.
    story_size: u64,
    /// The leaf whose content was erased (周七's callback).
    erased: u64,
    /// The `forgotten` leaf that recorded its erasure.
    erasure: u64,
    /// 张三's check-in with a photo, and his check-in without one.
    photo_check_in: u64,
    plain_check_in: u64,
    /// The first checkpoint that held the case's first leaf.
    earliest: u64,
}

/// The demo story's log, then: a checkpoint, and later leaves (one about
/// another employee; about 张三: two check-ins, one with a photo, a chat
/// command about 李四 and its answer, a message with markup, and a check-in
/// that points to a callback of 周七, who is then forgotten), so the export
/// has a consistency proof to give and an erasure to show with its record.
/// The app's scheduler may have signed checkpoints during the story too
/// (its tick runs on the wall clock): expectations come from the database.
async fn story_then_more(db: &TestDb) -> Story {
    run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let rt = demo_runtime(db, shanghai("2026-12-07", "12:00")).await;
    let conn = &rt.db.orm;
    let at = shanghai("2026-12-07", "11:00");
    let before = checkpoint::checkpoint(conn, &rt.signer, &rt.witness, TENANT, at)
        .await
        .unwrap()
        .unwrap();

    let txn = conn.begin().await.unwrap();
    let added = append(
        &txn,
        TENANT,
        at,
        vec![
            NewLeaf::new("check_in")
                .subject(Some("lisi"))
                .actor(Some("lisi"))
                .raw("file", "text/plain", "lisi 李四 checked in".as_bytes()),
            NewLeaf::new("check_in")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan"))
                .raw("file", "image/jpeg", b"\xff\xd8 his photo".to_vec()),
            NewLeaf::new("check_in")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan")),
            // A command about someone else, with its answer: left out.
            NewLeaf::new("callback")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan"))
                .detail(json!({ "kind": "text", "content": "/status 李四" }))
                .raw(
                    "decrypted",
                    "application/xml",
                    "<xml><Content>/status 李四</Content></xml>",
                )
                .source("inbound_events", 999_999),
            NewLeaf::new("command")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan"))
                .id("inbound_event", "999999")
                .detail(json!({ "text": "/status 李四", "answer": "refused" })),
            NewLeaf::new("message_queued")
                .subject(Some("zhangsan"))
                .channel("chat")
                .id("idem_key", "reply:999999")
                .text("李四 lisi: 无权查看")
                .raw(
                    "rendered",
                    "application/json",
                    json!({ "kind": "text", "content": "李四 lisi: 无权查看" }).to_string(),
                )
                .detail(json!({ "recipient": "zhangsan", "step": null })),
            // What an employee types reaches the report as text, never as markup.
            NewLeaf::new("callback")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan"))
                .detail(json!({ "kind": "text", "content": "<script>alert(1)</script>我病了" })),
            // A colleague's photo of him at the gate, which a check-in of his points to.
            NewLeaf::new("callback")
                .subject(Some("zhouqi"))
                .actor(Some("zhouqi"))
                .detail(json!({ "kind": "image" }))
                .raw(
                    "file",
                    "image/jpeg",
                    b"\xff\xd8 photo to be forgotten".to_vec(),
                )
                .source("inbound_events", 888_888),
            NewLeaf::new("check_in")
                .subject(Some("zhangsan"))
                .actor(Some("zhouqi"))
                .id("inbound_event", "888888"),
        ],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(added[0].index, before.size as u64);

    // 周七 is forgotten (privacy): his callback's content, salt and photo
    // go, its hash stays, and a `forgotten` leaf records the erasure.
    let forgotten = rollcall::privacy::forget(conn, TENANT, "zhouqi", 0, at, false)
        .await
        .unwrap();
    assert_eq!(
        forgotten.leaves,
        vec![(added[7].index, "callback".to_owned())]
    );
    assert_eq!(
        forgotten.raw,
        vec![sha256_hex(b"\xff\xd8 photo to be forgotten")]
    );

    let case = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    let first_case_leaf = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::CaseId.eq(case.id))
        .order_by_asc(evidence_leaf::Column::Idx)
        .one(conn)
        .await
        .unwrap()
        .unwrap()
        .idx;
    let earliest = checkpoint::all(conn, TENANT)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.size > first_case_leaf)
        .unwrap()
        .size as u64;
    assert!(earliest <= before.size as u64);
    Story {
        rt,
        case,
        story_size: before.size as u64,
        erased: added[7].index,
        erasure: forgotten.recorded_as.unwrap(),
        photo_check_in: added[1].index,
        plain_check_in: added[2].index,
        earliest,
    }
}

/// 张三's check-in of Monday, before his case.
async fn monday_check_in(rt: &Runtime) -> u64 {
    evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Subject.eq("zhangsan"))
        .filter(evidence_leaf::Column::Kind.eq("check_in"))
        .order_by_asc(evidence_leaf::Column::Idx)
        .one(&rt.db.orm)
        .await
        .unwrap()
        .unwrap()
        .idx as u64
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_of_a_case_verifies_offline_and_catches_changes(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let Story {
        rt,
        case,
        story_size,
        erased,
        erasure,
        earliest,
        ..
    } = story_then_more(&db).await;
    let conn = &rt.db.orm;
    let p = package(&rt, TENANT, "zhangsan", Some(case.id))
        .await
        .unwrap();
    let key = p.summary.fingerprint.as_str();

    // Proved against a checkpoint signed now, consistent with the earlier one.
    let size = p.summary.checkpoint_size;
    assert_eq!(
        size,
        story_size + 10,
        "the story's leaves, 9 more and the record of 周七's erasure"
    );
    assert_eq!(p.summary.earliest_checkpoint, Some(earliest));
    assert_eq!(p.summary.case, Some(case.id));
    let all = checkpoint::all(conn, TENANT).await.unwrap();
    assert_eq!(all.last().unwrap().size as u64, size);
    assert_eq!(
        p.file("checkpoint.txt").unwrap(),
        all.last().unwrap().note.as_bytes()
    );
    let consistency: Value = serde_json::from_slice(p.file("consistency.json").unwrap()).unwrap();
    assert_eq!(consistency["from"]["size"], earliest);
    assert!(!consistency["proof"].as_array().unwrap().is_empty());

    // Every leaf of the case, 张三's other leaves of its period, the
    // callbacks its events point to; nothing else.
    let lines = lines(&p);
    assert_eq!(lines.len(), p.summary.leaves);
    let case_leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::CaseId.eq(case.id))
        .all(conn)
        .await
        .unwrap();
    let by_index: BTreeMap<u64, &Value> = lines
        .iter()
        .map(|l| (l["index"].as_u64().unwrap(), l))
        .collect();
    for leaf in &case_leaves {
        let line = by_index
            .get(&(leaf.idx as u64))
            .unwrap_or_else(|| panic!("leaf {} of the case is missing", leaf.idx));
        assert_eq!(line["data"].as_str(), leaf.content.as_deref());
        assert_eq!(line["leaf_hash"], leaf.leaf_hash);
    }
    let contacted = case_event::Entity::find()
        .filter(case_event::Column::Kind.eq("manager_contacted"))
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    let source = format!("inbound_events/{}", contacted.inbound_event_id.unwrap());
    let callback = lines
        .iter()
        .find(|l| {
            l["included_as"] == "callback"
                && serde_json::from_str::<Value>(l["data"].as_str().unwrap()).unwrap()["source"]
                    == source.as_str()
        })
        .expect("the manager's button press is in the package");
    assert!(
        callback["data"]
            .as_str()
            .unwrap()
            .contains("\"subject\":\"zhaogang\"")
    );
    let mut subjects = BTreeSet::new();
    for l in &lines {
        if l["erased"] == true {
            assert!(l["data"].is_null());
            assert_eq!(l["index"], erased, "the forgotten leaf");
            assert_eq!(l["included_as"], "callback");
            continue;
        }
        let data: Value = serde_json::from_str(l["data"].as_str().unwrap()).unwrap();
        assert!(l["index"].as_u64().unwrap() < size);
        // Nothing absent: an erased payload went with its erased leaf.
        for r in l["raw"].as_array().into_iter().flatten() {
            assert!(r["path"].is_string() && r.get("absent").is_none(), "{l}");
        }
        match l["included_as"].as_str().unwrap() {
            "employee" => assert_eq!(data["subject"], "zhangsan"),
            "callback" => assert_eq!(data["kind"], "callback"),
            "erasure" => {
                // The record of the erasure, which names the erased leaf and no one.
                assert_eq!(l["index"], erasure);
                assert_eq!(data["kind"], "forgotten");
                assert_eq!(data["detail"]["leaves"], erased.to_string());
                assert!(data.get("subject").is_none(), "{data}");
                continue;
            }
            other => panic!("included as {other}"),
        }
        if data["case"].is_null() && data["kind"] != "callback" {
            let at =
                DateTime::parse_from_rfc3339(data["recorded_at"]["utc"].as_str().unwrap()).unwrap();
            assert!(
                at >= shanghai("2026-12-01", "00:00"),
                "before the case: {data}"
            );
        }
        subjects.insert(data["subject"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        subjects,
        BTreeSet::from(["zhangsan".to_owned(), "zhaogang".to_owned()])
    );
    assert!(
        !by_index.contains_key(&monday_check_in(&rt).await),
        "the check-in of Monday is before the case"
    );
    assert!(
        lines.iter().any(|l| l["index"] == erasure),
        "the erasure's record is in the package"
    );
    assert!(
        !p.files()
            .values()
            .any(|b| b.as_slice() == b"\xff\xd8 photo to be forgotten"),
        "the erased photo is not"
    );

    // Notices as rendered: the text whose SHA-256 the queued leaf holds.
    let queued = outbox::Entity::find()
        .filter(outbox::Column::CaseId.eq(case.id))
        .order_by_asc(outbox::Column::Id)
        .all(conn)
        .await
        .unwrap();
    let notices: Vec<&String> = p
        .files()
        .keys()
        .filter(|k| k.starts_with("notices/"))
        .collect();
    assert!(notices.len() >= queued.len(), "{notices:?}");
    for l in lines.iter().filter(|l| l["kind"] == "message_queued") {
        let data: Value = serde_json::from_str(l["data"].as_str().unwrap()).unwrap();
        let file = p
            .file(
                l["notice"]
                    .as_str()
                    .expect("a queued message names its notice"),
            )
            .unwrap();
        assert_eq!(data["text_sha256"], sha256_hex(file));
    }
    for row in &queued {
        let text = serde_json::from_str::<Payload>(&row.payload)
            .unwrap()
            .text();
        assert!(
            p.files()
                .iter()
                .any(|(k, v)| k.starts_with("notices/") && v == text.as_bytes()),
            "the notice of outbox row {} is missing",
            row.id
        );
    }

    // The report: one page, no outside assets or scripts, the facts a lawyer needs.
    let report = std::str::from_utf8(p.file("report.html").unwrap()).unwrap();
    for needed in [
        "<html lang=\"zh-CN\">",
        "@media print",
        "示例建筑有限公司（沙箱）",
        "张三",
        "zh*****n",
        "RC-000002",
        "default-1",
        // The deadline ran from his acknowledgment, which the report says.
        "2026-12-07 20:30",
        "2026-12-04 20:30",
        "员工点击“已收到”确认",
        "赵刚",
        "sandbox-sms-1",
        &p.summary.fingerprint,
    ] {
        assert!(report.contains(needed), "the report lacks {needed}");
    }
    for outside in ["<script", "<link", "src=", "href=", "url(", "@import"] {
        assert!(!report.contains(outside), "the report loads {outside}");
    }
    assert!(
        report.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;我病了"),
        "escaped"
    );

    // Nothing about other employees: the roster minus 张三 and the people
    // who acted in or received a message of his case.
    let involved: BTreeSet<String> = case_event::Entity::find()
        .filter(case_event::Column::CaseId.eq(case.id))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.actor)
        .chain(queued.iter().map(|o| o.recipient.clone()))
        .chain(["zhangsan".to_owned()])
        .collect();
    let others: Vec<employee::Model> = employee::Entity::find()
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !involved.contains(&e.user_id))
        .collect();
    let other_ids: BTreeSet<&str> = others.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(other_ids, BTreeSet::from(["lisi", "wangwu"]));
    for (path, bytes) in p.files() {
        for other in &others {
            assert!(
                !holds_token(bytes, other.user_id.as_bytes()),
                "{path} holds {}",
                other.user_id
            );
            assert!(
                !bytes
                    .windows(other.name.len())
                    .any(|w| w == other.name.as_bytes()),
                "{path} holds {}",
                other.name
            );
        }
    }

    // Alone in a folder: verify.py passes, with `cryptography` and with openssl.
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), key, &[], "the Python package cryptography");
    assert!(
        text.contains(&format!(
            "extends the signed checkpoint of {earliest} leaves"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("[PASS] leaf {erased} "))
            && text.contains(&format!("recorded by leaf {erasure} ")),
        "{text}"
    );
    assert_verifies(dir.path(), key, &["--openssl"], "the openssl command");

    // As a zip, unzipped by someone else's tool.
    let zipped = tempfile::tempdir().unwrap();
    let zip = zipped.path().join("package.zip");
    std::fs::write(&zip, p.to_zip()).unwrap();
    let unzipped = zipped.path().join("unzipped");
    let out = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(&unzipped)
        .output()
        .unwrap();
    assert!(out.status.success());
    for (path, bytes) in p.files() {
        assert_eq!(
            &std::fs::read(unzipped.join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }
    assert_verifies(&unzipped, key, &[], "cryptography");

    // One byte changed, anywhere: caught and named.
    let raw = p
        .files()
        .keys()
        .find(|k| k.starts_with("raw/") && k.ends_with(".txt"))
        .unwrap()
        .clone();
    let d = fresh_copy(&p);
    flip_byte(&d.path().join(&raw), 10);
    assert_caught(d.path(), key, "a raw payload", &raw);

    let d = fresh_copy(&p);
    let jsonl = std::fs::read_to_string(d.path().join("leaves.jsonl")).unwrap();
    let ack = lines
        .iter()
        .find(|l| l["kind"] == "notice_acknowledged")
        .unwrap()["index"]
        .as_u64()
        .unwrap();
    let line_start = jsonl
        .find(&format!("{{\"index\":{ack},"))
        .expect("the acknowledgement's line");
    let salt = line_start + jsonl[line_start..].find("salt").unwrap() + 10;
    flip_byte(&d.path().join("leaves.jsonl"), salt);
    assert_caught(d.path(), key, "a leaf line", "leaves.jsonl");
    assert_caught(d.path(), key, "a leaf line", &format!("leaf {ack} "));

    let d = fresh_copy(&p);
    let note = std::fs::read_to_string(d.path().join("checkpoint.txt")).unwrap();
    let root_line = note.find('\n').unwrap() + 1 + note.lines().nth(1).unwrap().len() + 1;
    flip_byte(&d.path().join("checkpoint.txt"), root_line + 5);
    assert_caught(d.path(), key, "the checkpoint", "checkpoint.txt");

    let d = fresh_copy(&p);
    let manifest = std::fs::read_to_string(d.path().join("manifest.json")).unwrap();
    flip_byte(
        &d.path().join("manifest.json"),
        manifest.find("\"created_at\"").unwrap() + 20,
    );
    assert_caught(d.path(), key, "the manifest", "manifest.json");

    // With the manifest signed again (the key alone does not rewrite the
    // log): the leaves' hashes still catch every change.
    let signer = signer_of(&db);
    let d = fresh_copy(&p);
    flip_byte(&d.path().join(&raw), 10);
    resign(d.path(), &signer);
    assert_caught(d.path(), key, "a re-signed raw payload", &raw);

    let d = fresh_copy(&p);
    let notice = notices[0].clone();
    std::fs::write(d.path().join(&notice), "张三：请忽略此前的通知。").unwrap();
    resign(d.path(), &signer);
    assert_caught(d.path(), key, "a re-signed notice", &notice);

    let d = fresh_copy(&p);
    let mut consistency = consistency.clone();
    consistency["proof"][0] = json!("00".repeat(32));
    std::fs::write(
        d.path().join("consistency.json"),
        serde_json::to_vec(&consistency).unwrap(),
    )
    .unwrap();
    resign(d.path(), &signer);
    assert_caught(
        d.path(),
        key,
        "a re-signed consistency proof",
        "consistency.json",
    );

    let d = fresh_copy(&p);
    std::fs::write(d.path().join("raw/extra.txt"), "planted").unwrap();
    assert_caught(d.path(), key, "an extra file", "raw/extra.txt");
    resign(d.path(), &signer);
    assert_caught(d.path(), key, "a re-signed extra file", "raw/extra.txt");

    let d = fresh_copy(&p);
    std::fs::remove_file(d.path().join(&raw)).unwrap();
    assert_caught(d.path(), key, "a missing file", &raw);

    rt.db.orm.clone().close().await.unwrap();
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_of_an_employee_holds_all_their_records(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let Story {
        rt, case, earliest, ..
    } = story_then_more(&db).await;
    let p = package(&rt, TENANT, "zhangsan", None).await.unwrap();
    let lines = lines(&p);
    let theirs = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::Subject.eq("zhangsan"))
        .all(&rt.db.orm)
        .await
        .unwrap();
    let employee_lines = lines
        .iter()
        .filter(|l| l["included_as"] == "employee")
        .count();
    // All of his, but the chat command about 李四: its callback, itself, its answer.
    let exchange = theirs
        .iter()
        .filter(|l| {
            l.kind == "command"
                || l.source.as_deref() == Some("inbound_events/999999")
                || l.content
                    .as_deref()
                    .is_some_and(|c| c.contains("reply:999999"))
        })
        .count();
    assert_eq!(exchange, 3);
    assert_eq!(employee_lines, theirs.len() - exchange);
    for (path, bytes) in p.files() {
        assert!(
            !bytes.windows("李四".len()).any(|w| w == "李四".as_bytes()),
            "{path}"
        );
    }
    let monday = monday_check_in(&rt).await;
    assert!(
        lines.iter().any(|l| l["index"] == monday),
        "Monday's check-in"
    );
    assert_eq!(p.summary.case, None);
    // The anchor is still his (only) case's first leaf.
    assert_eq!(p.summary.earliest_checkpoint, Some(earliest));
    let dir = fresh_copy(&p);
    assert_verifies(dir.path(), &p.summary.fingerprint, &[], "cryptography");

    // Another employee's case, an unknown tenant: refused.
    let lisi = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("lisi"))
        .one(&rt.db.orm)
        .await
        .unwrap()
        .unwrap();
    let err = package(&rt, TENANT, "zhangsan", Some(lisi.id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no case"), "{err}");
    assert!(
        package(&rt, "nobody", "zhangsan", Some(case.id))
            .await
            .is_err()
    );
    let err = package(&rt, TENANT, "nobody", None).await.unwrap_err();
    assert!(err.to_string().contains("nothing about"), "{err}");

    rt.db.orm.clone().close().await.unwrap();
    db.cleanup().await;
}

/// A case whose first leaf no checkpoint held before the export: no
/// consistency proof, said so, and the package still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_earlier_checkpoint_the_package_says_so() {
    let db = TestDb::new(Engine::Sqlite).await;
    run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let rt = demo_runtime(&db, shanghai("2026-12-07", "12:00")).await;
    // As if the scheduler had never signed one during the story (then it
    // had witnessed none either: deleting signed checkpoints is otherwise
    // refused, see tests/evidence.rs).
    entity::evidence_checkpoint::Entity::delete_many()
        .exec(&rt.db.orm)
        .await
        .unwrap();
    if rt.witness.dir().exists() {
        std::fs::remove_dir_all(rt.witness.dir()).unwrap();
    }
    let p = package(&rt, TENANT, "zhangsan", None).await.unwrap();
    assert_eq!(p.summary.earliest_checkpoint, None);
    let consistency: Value = serde_json::from_slice(p.file("consistency.json").unwrap()).unwrap();
    assert!(consistency["from"].is_null());
    assert!(p.file("checkpoint-earliest.txt").is_none());
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), &p.summary.fingerprint, &[], "cryptography");
    assert!(text.contains("no checkpoint covered the case"), "{text}");
    rt.db.orm.clone().close().await.unwrap();
}

/// `rollcall evidence export` as an operator runs it: a zip, a folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_exports_a_zip_or_a_folder() {
    let db = TestDb::new(Engine::Sqlite).await;
    run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let config = db.dir.path().join("rollcall.toml");
    std::fs::write(&config, demo_config(&db).await).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--config")
            .arg(&config)
            .args([
                "evidence",
                "export",
                "--tenant",
                TENANT,
                "--employee",
                "zhangsan",
            ])
            .args(args)
            .current_dir(db.dir.path())
            .env("RUST_LOG", "error")
            .env_remove("ROLLCALL_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["--case", "RC-000002", "--out", "case.zip"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("case RC-000002") && said.contains("fingerprint"),
        "{said}"
    );
    let unzipped = db.dir.path().join("unzipped");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e", "case.zip"])
        .arg(&unzipped)
        .current_dir(db.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The fingerprint the employer published, from `rollcall evidence pubkey`.
    let published = pubkey_lines(&config);
    assert_eq!(
        published.as_bytes(),
        std::fs::read(unzipped.join("pubkey.txt")).unwrap(),
        "`rollcall evidence pubkey` prints the lines of pubkey.txt"
    );
    let key = fingerprint_in(&published);
    assert_verifies(&unzipped, &key, &[], "cryptography");

    let out = run(&["--out", "folder"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_verifies(
        &db.dir.path().join("folder"),
        &key,
        &["--openssl"],
        "openssl",
    );

    // Not over an existing file or a folder that is not empty; not a bad case number.
    for args in [
        &["--out", "case.zip"][..],
        &["--out", "folder"],
        &["--case", "RC-x", "--out", "other"],
        &["--case", "1", "--out", "other"],
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!db.dir.path().join("other").exists());
    }
}

/// A case of 200 leaves in a log of 20,000 exports only its leaves, proved
/// against a checkpoint of the whole log, and verifies. (Its speed is
/// measured by `cargo bench --bench evidence -- export`, not here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_of_200_leaves_in_a_large_log_exports_and_verifies() {
    let db = TestDb::new(Engine::Sqlite).await;
    run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let rt = demo_runtime(&db, shanghai("2026-12-08", "12:00")).await;
    let conn = &rt.db.orm;
    let case = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("zhangsan"))
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    let at = shanghai("2026-12-08", "09:00");
    let payload = Payload::Text {
        content: format!("张三：{}", "请尽快返岗。".repeat(60)),
    };
    let rendered = serde_json::to_string(&payload).unwrap();
    let mut case_leaves = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::CaseId.eq(case.id))
        .all(conn)
        .await
        .unwrap()
        .len();
    for batch in 0..20 {
        let mut leaves = Vec::new();
        for i in 0..1000 {
            let n = batch * 1000 + i;
            if n % 50 == 0 && case_leaves < 200 {
                case_leaves += 2;
                let outbox_id = 1_000_000 + n as i64;
                leaves.push(
                    NewLeaf::new("message_queued")
                        .case(Some(case.id))
                        .subject(Some("zhangsan"))
                        .channel("chat")
                        .template("first_reminder.employee", &"ab".repeat(32))
                        .text(&payload.text())
                        .raw("rendered", "application/json", rendered.clone())
                        .source("outbox", outbox_id)
                        .detail(json!({ "recipient": "zhangsan", "step": "first_reminder" })),
                );
                leaves.push(
                    NewLeaf::new("message_sent")
                        .case(Some(case.id))
                        .subject(Some("zhangsan"))
                        .channel("chat")
                        .text(&payload.text())
                        .id("receipt", format!("msg-{n}"))
                        .raw(
                            "request",
                            "application/json",
                            format!("{{\"n\":{n},\"p\":{rendered}}}"),
                        )
                        .raw(
                            "response",
                            "application/json",
                            format!("{{\"msgid\":\"msg-{n}\"}}"),
                        )
                        .source("outbox", outbox_id)
                        .detail(json!({ "recipient": "zhangsan", "attempt": 1 })),
                );
            } else {
                leaves.push(
                    NewLeaf::new("check_in")
                        .subject(Some(&format!("worker{}", n % 500)))
                        .raw(
                            "callback",
                            "application/xml",
                            format!("<xml><n>{n}</n></xml>"),
                        ),
                );
            }
        }
        let txn = conn.begin().await.unwrap();
        append(&txn, TENANT, at, leaves).await.unwrap();
        txn.commit().await.unwrap();
    }
    let p = package(&rt, TENANT, "zhangsan", Some(case.id))
        .await
        .unwrap();
    let in_case = lines(&p)
        .iter()
        .filter(|l| {
            l["data"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("\"case\":{},", case.id)))
        })
        .count();
    assert!(in_case >= 200, "{in_case} leaves of the case");
    assert!(p.summary.checkpoint_size > 20_000);
    let jsonl = String::from_utf8_lossy(p.file("leaves.jsonl").unwrap()).into_owned();
    assert!(
        !jsonl.contains("worker"),
        "nothing of the other 500 people is in leaves.jsonl"
    );
    let dir = fresh_copy(&p);
    assert_verifies(dir.path(), &p.summary.fingerprint, &[], "cryptography");
    rt.db.orm.clone().close().await.unwrap();
}

/// 张三's case package after `story_then_more`, with its database.
async fn story_package(engine: Engine) -> (TestDb, Story, Package) {
    let db = TestDb::new(engine).await;
    let story = story_then_more(&db).await;
    let p = package(&story.rt, TENANT, "zhangsan", Some(story.case.id))
        .await
        .unwrap();
    (db, story, p)
}

/// Hostile input for verify.py (issue 16): `tests/verify_fuzz.py` feeds
/// its parsers any text and damages every file of a real package at random
/// (Hypothesis; `FUZZ_EXAMPLES`, `FUZZ_MINUTES` for a longer run). Every
/// parser returns or refuses, and no damaged package passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_py_refuses_every_damage_without_crashing() {
    let (db, story, p) = story_package(Engine::Sqlite).await;
    let dir = fresh_copy(&p);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_fuzz.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .arg(&p.summary.fingerprint)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "verify_fuzz.py failed (it needs `pip install hypothesis`, which .ci/run does):\n{text}"
    );
    assert!(text.contains("damage_never_passes"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("verify_fuzz:")) {
        eprintln!("{line}");
    }
    close(db, story).await;
}

async fn close(db: TestDb, story: Story) {
    story.rt.db.orm.clone().close().await.unwrap();
    db.cleanup().await;
}

/// Sets the value at `pointer` (a JSON pointer) in `manifest.json` in `dir`
/// (the test signs it again afterwards).
fn set_in_manifest(dir: &Path, pointer: &str, value: Value) {
    let path = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    *manifest.pointer_mut(pointer).unwrap() = value;
    std::fs::write(path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// The key must be the employer's: its fingerprint given with
/// `--fingerprint` (as `rollcall evidence pubkey` prints it), or confirmed
/// at a terminal. Otherwise the check fails and says what to pass; a
/// package re-signed throughout with another key passes only with that
/// key's fingerprint.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_must_be_given_or_confirmed(#[case] engine: Engine) {
    let (db, story, p) = story_package(engine).await;
    let key = p.summary.fingerprint.clone();
    let dir = fresh_copy(&p);

    // What `rollcall evidence pubkey` prints is the package's pubkey.txt,
    // and its fingerprint passes, with colons or without, in any case.
    let config = db.dir.path().join("rollcall.toml");
    std::fs::write(&config, demo_config(&db).await).unwrap();
    let published = pubkey_lines(&config);
    assert_eq!(published.as_bytes(), p.file("pubkey.txt").unwrap());
    assert_eq!(fingerprint_in(&published), key);
    let text = assert_verifies(dir.path(), &key, &[], "cryptography");
    assert!(
        text.contains("[PASS] pubkey.txt: the key is the one whose fingerprint was given"),
        "{text}"
    );
    assert_verifies(dir.path(), &key, &["--openssl"], "openssl");
    assert_verifies(
        dir.path(),
        &key.replace(':', "").to_uppercase(),
        &[],
        "cryptography",
    );

    // Neither the flag nor a terminal: the key's check fails, and only it,
    // saying what to pass; with either Ed25519 implementation.
    for args in [&[][..], &["--openssl"]] {
        let text = assert_fails(
            verify(dir.path(), args),
            "no fingerprint and no terminal",
            &["pubkey.txt", "--fingerprint", "rollcall evidence pubkey"],
        );
        assert_eq!(failures(&text).len(), 1, "{text}");
    }

    // Another key's fingerprint, or no fingerprint at all: fails.
    let other = fingerprint(&NoteSigner::generate("rollcall").unwrap());
    let text = assert_fails(
        verify(dir.path(), &["--fingerprint", &other]),
        "another key's fingerprint",
        &["pubkey.txt", "NOT the one given with --fingerprint"],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");
    assert_fails(
        verify(dir.path(), &["--fingerprint", "1a2b:3c4d"]),
        "not a fingerprint",
        &["pubkey.txt", "not a SHA-256 fingerprint"],
    );

    // Everything signed again with a forger's key (its own pubkey.txt, the
    // checkpoints, the manifest): it holds together, and passes only with
    // the forger's fingerprint, never with the employer's or with none.
    let forger = NoteSigner::generate("rollcall").unwrap();
    let d = fresh_copy(&p);
    std::fs::write(d.path().join("pubkey.txt"), pubkey_text(&forger)).unwrap();
    let origin = format!("rollcall/{TENANT}");
    resign_checkpoint(d.path(), "checkpoint.txt", &forger, &origin);
    resign_checkpoint(d.path(), "checkpoint-earliest.txt", &forger, &origin);
    resign(d.path(), &forger);
    assert_verifies(d.path(), &fingerprint(&forger), &[], "cryptography");
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", &key]),
        "a forger's key",
        &["pubkey.txt", "NOT the one given with --fingerprint"],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");
    assert_fails(
        verify(d.path(), &[]),
        "a forger's key, no fingerprint",
        &["pubkey.txt", "--fingerprint"],
    );

    // At a terminal the fingerprint is shown: `yes` passes, anything else fails.
    let (out, text) = verify_at_terminal(dir.path(), "yes");
    let asked = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && text.contains("RESULT: all"),
        "{text}\n{asked}"
    );
    assert!(
        asked.contains(&key) && asked.contains("Type yes"),
        "{asked}"
    );
    assert!(
        text.contains("[PASS] pubkey.txt: the fingerprint was confirmed at the terminal"),
        "{text}"
    );
    let text = assert_fails(
        verify_at_terminal(dir.path(), "no"),
        "not confirmed at the terminal",
        &["pubkey.txt", "not confirmed"],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");
    close(db, story).await;
}

/// The checkpoint must be of the log of the manifest's tenant, as rollcall
/// names it (`<key name>/<tenant>`); so must the earlier checkpoint of the
/// consistency proof. The same tree signed as another log fails, and
/// rollcall makes no package whose checkpoint names another log.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_log_fails(#[case] engine: Engine) {
    let (db, story, p) = story_package(engine).await;
    let key = p.summary.fingerprint.as_str();
    let signer = signer_of(&db);
    let origin = format!("rollcall/{TENANT}");
    let note = std::str::from_utf8(p.file("checkpoint.txt").unwrap()).unwrap();
    assert!(note.starts_with(&format!("{origin}\n")), "{note}");
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), key, &[], "cryptography");
    assert!(text.contains(&format!("log {origin}, ")), "{text}");

    // The same tree signed as another tenant's log, or as another service's
    // log of this tenant, the manifest made to agree and signed again.
    for other in ["rollcall/other", "elsewhere/demo"] {
        let d = fresh_copy(&p);
        resign_checkpoint(d.path(), "checkpoint.txt", &signer, other);
        set_in_manifest(d.path(), "/checkpoint/origin", json!(other));
        resign(d.path(), &signer);
        let text = assert_fails(
            verify(d.path(), &["--fingerprint", key]),
            other,
            &[
                "checkpoint.txt",
                &format!("its origin '{other}' is not the log of tenant 'demo' ('{origin}')"),
            ],
        );
        // Its earlier checkpoint is now of another log too.
        assert!(
            failures(&text)
                .iter()
                .any(|l| l.contains("consistency.json") && l.contains("of log")),
            "{text}"
        );
    }

    // The manifest naming another tenant than the checkpoint's.
    let d = fresh_copy(&p);
    set_in_manifest(d.path(), "/tenant", json!("other"));
    resign(d.path(), &signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "another tenant in the manifest",
        &["checkpoint.txt", "is not the log of tenant 'other'"],
    );

    // Only the earlier checkpoint of another log: the consistency proof fails.
    let d = fresh_copy(&p);
    resign_checkpoint(
        d.path(),
        "checkpoint-earliest.txt",
        &signer,
        "rollcall/other",
    );
    resign(d.path(), &signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "an earlier checkpoint of another log",
        &["consistency.json", "is of log 'rollcall/other'"],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");

    // The log's origin in the database is not the one the verifier
    // expects: the export refuses rather than make a package that fails.
    let conn = &story.rt.db.orm;
    evidence_log::Entity::update_many()
        .col_expr(evidence_log::Column::Origin, Expr::value("elsewhere/demo"))
        .filter(evidence_log::Column::TenantId.eq(TENANT))
        .exec(conn)
        .await
        .unwrap();
    let txn = conn.begin().await.unwrap();
    append(
        &txn,
        TENANT,
        shanghai("2026-12-07", "11:40"),
        vec![NewLeaf::new("check_in").subject(Some("zhangsan"))],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let err = package(&story.rt, TENANT, "zhangsan", Some(story.case.id))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`elsewhere/demo`") && err.to_string().contains(&origin),
        "{err}"
    );
    close(db, story).await;
}

/// A payload marked absent, or a leaf marked erased, passes only as a
/// recorded erasure: an erased leaf must be named by the `forgotten` leaf
/// that `privacy forget` appended, which the export adds to the package; a
/// leaf that kept its content keeps its payloads (forget erases a payload
/// only with the leaves that name it). Content taken out of a package, or
/// deleted from the database by hand, fails and is named.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_payload_fails_unless_its_erasure_is_recorded(#[case] engine: Engine) {
    let (db, story, p) = story_package(engine).await;
    let key = p.summary.fingerprint.as_str();
    let signer = signer_of(&db);
    let (erased, erasure) = (story.erased, story.erasure);
    let (photo_check_in, plain_check_in) = (story.photo_check_in, story.plain_check_in);

    // As exported: 周七's callback, erased by `privacy forget`, with its record.
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), key, &[], "cryptography");
    assert!(
        text.contains(&format!(
            "[PASS] leaf {erased} (leaves.jsonl line {}): erased (content deleted for privacy, recorded by leaf {erasure} ",
            lines(&p).iter().position(|l| l["index"] == erased).unwrap() + 1
        )),
        "{text}"
    );

    // A payload taken out and marked absent as if erased, the manifest
    // signed again: fails, naming the leaf and the payload.
    let line = lines(&p)
        .into_iter()
        .find(|l| l["index"] == photo_check_in)
        .unwrap();
    let photo = line["raw"][0]["path"].as_str().unwrap().to_owned();
    let sha = line["raw"][0]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha, sha256_hex(b"\xff\xd8 his photo"));
    let d = fresh_copy(&p);
    std::fs::remove_file(d.path().join(&photo)).unwrap();
    edit_leaves(d.path(), |lines| {
        for l in lines.iter_mut().filter(|l| l["index"] == photo_check_in) {
            l["raw"][0]["path"] = Value::Null;
            l["raw"][0]["absent"] = json!("erased");
        }
    });
    resign(d.path(), &signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "a payload taken out as if erased",
        &[
            &format!("[FAIL] leaf {photo_check_in} "),
            &sha,
            "is absent",
            "no erasure record covers it",
        ],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");

    // A leaf's content taken out and marked erased: fails; the package's
    // erasure record names another leaf.
    let d = fresh_copy(&p);
    edit_leaves(d.path(), |lines| {
        for l in lines.iter_mut().filter(|l| l["index"] == plain_check_in) {
            l["data"] = Value::Null;
            l["erased"] = json!(true);
        }
    });
    resign(d.path(), &signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "a leaf's content taken out as if erased",
        &[
            &format!("[FAIL] leaf {plain_check_in} "),
            "no erasure record in the package names it",
        ],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");

    // The erasure's record left out: the erased leaf fails.
    let d = fresh_copy(&p);
    edit_leaves(d.path(), |lines| lines.retain(|l| l["index"] != erasure));
    resign(d.path(), &signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "the erasure's record left out",
        &[
            &format!("[FAIL] leaf {erased} "),
            "no erasure record in the package names it",
        ],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");

    // In the database, his photo and his other check-in's content deleted
    // by hand, not by `privacy forget`: the export shows them as they are,
    // and verify.py fails both.
    let conn = &story.rt.db.orm;
    let at = shanghai("2026-12-07", "11:45");
    evidence_raw::Entity::update_many()
        .col_expr(evidence_raw::Column::Bytes, Expr::value(None::<Vec<u8>>))
        .col_expr(evidence_raw::Column::ErasedAt, Expr::value(at))
        .filter(evidence_raw::Column::Sha256.eq(&sha))
        .exec(conn)
        .await
        .unwrap();
    evidence_leaf::Entity::update_many()
        .col_expr(evidence_leaf::Column::Content, Expr::value(None::<String>))
        .col_expr(evidence_leaf::Column::ErasedAt, Expr::value(at))
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.eq(plain_check_in as i64))
        .exec(conn)
        .await
        .unwrap();
    let by_hand = package(&story.rt, TENANT, "zhangsan", Some(story.case.id))
        .await
        .unwrap();
    let marked = lines(&by_hand)
        .into_iter()
        .find(|l| l["index"] == photo_check_in)
        .unwrap();
    assert!(marked["raw"][0]["path"].is_null(), "{marked}");
    assert_eq!(marked["raw"][0]["absent"], "erased");
    let d = fresh_copy(&by_hand);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "a payload deleted by hand",
        &[&format!("[FAIL] leaf {photo_check_in} "), &sha, "is absent"],
    );
    let fails = failures(&text);
    assert_eq!(fails.len(), 2, "{text}");
    assert!(
        fails
            .iter()
            .any(|l| l.starts_with(&format!("[FAIL] leaf {plain_check_in} "))
                && l.contains("no erasure record in the package names it")),
        "a leaf's content deleted by hand:\n{text}"
    );
    close(db, story).await;
}

/// Each leaf index is below the checkpoint's size and appears once in the
/// package: a line given twice, an index at or past the size, or one that
/// is not a whole number fails, naming the index and why.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_index_out_of_range_or_repeated_fails(#[case] engine: Engine) {
    let (db, story, p) = story_package(engine).await;
    let key = p.summary.fingerprint.as_str();
    let signer = signer_of(&db);
    let size = p.summary.checkpoint_size;
    let dir = fresh_copy(&p);
    assert_verifies(dir.path(), key, &[], "cryptography");

    // A line given twice (an acknowledgment shown as two): the second fails.
    let all = lines(&p);
    let ack = all
        .iter()
        .position(|l| l["kind"] == "notice_acknowledged")
        .unwrap();
    let ack_index = all[ack]["index"].as_u64().unwrap();
    let d = fresh_copy(&p);
    edit_leaves(d.path(), |lines| {
        let copy = lines[ack].clone();
        lines.push(copy);
    });
    resign(d.path(), &signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", key]),
        "a repeated index",
        &[
            &format!(
                "[FAIL] leaf {ack_index} (leaves.jsonl line {})",
                all.len() + 1
            ),
            &format!(
                "the index {ack_index} is repeated: line {} holds it too",
                ack + 1
            ),
        ],
    );
    assert_eq!(failures(&text).len(), 1, "{text}");

    // A leaf without files moved to an index the checkpoint does not hold.
    let plain = all
        .iter()
        .position(|l| l["data"].is_string() && l.get("raw").is_none() && l.get("notice").is_none())
        .unwrap();
    for bad in [size, size + 1000] {
        let d = fresh_copy(&p);
        edit_leaves(d.path(), |lines| lines[plain]["index"] = json!(bad));
        resign(d.path(), &signer);
        let text = assert_fails(
            verify(d.path(), &["--fingerprint", key]),
            "an index out of range",
            &[
                &format!("[FAIL] leaf {bad} "),
                &format!(
                    "the index {bad} is out of range: the checkpoint holds leaves 0 to {}",
                    size - 1
                ),
            ],
        );
        assert_eq!(failures(&text).len(), 1, "{text}");
    }
    for bad in [json!(-1), json!(true), json!("3")] {
        let d = fresh_copy(&p);
        edit_leaves(d.path(), |lines| lines[plain]["index"] = bad.clone());
        resign(d.path(), &signer);
        let why = if bad == json!(-1) {
            "the index -1 is out of range"
        } else {
            "is not a whole number"
        };
        let text = assert_fails(
            verify(d.path(), &["--fingerprint", key]),
            "a bad index",
            &[&format!("leaves.jsonl line {}", plain + 1), why],
        );
        assert_eq!(failures(&text).len(), 1, "{text}");
    }
    close(db, story).await;
}

/// A time-stamping authority made with `openssl ts` (a CA, a TSA
/// certificate for timeStamping), answering RFC 3161 requests over HTTP.
struct LocalTsa {
    dir: tempfile::TempDir,
    url: String,
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

async fn local_tsa() -> LocalTsa {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Test TSA CA", "-days", "30"]);
        openssl(&d, &ca);
        let mut tsa = vec!["req"];
        tsa.extend(ec);
        tsa.extend(["-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=Test TSA"]);
        openssl(&d, &tsa);
        std::fs::write(d.join("ext.cnf"), "extendedKeyUsage=critical,timeStamping\n").unwrap();
        openssl(
            &d,
            &[
                "x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "tsa.crt", "-days", "30", "-extfile", "ext.cnf",
            ],
        );
        std::fs::write(
            d.join("ts.cnf"),
            "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\nserial = ./tsaserial\nsigner_cert = ./tsa.crt\ncerts = ./tsa.crt\nsigner_key = ./tsa.key\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\ness_cert_id_alg = sha256\n",
        )
        .unwrap();
        std::fs::write(d.join("tsaserial"), "01\n").unwrap();
    })
    .await
    .unwrap();
    let d = dir.path().to_owned();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |query: axum::body::Bytes| {
            let d = d.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    std::fs::write(d.join("q.tsq"), &query).unwrap();
                    openssl(
                        &d,
                        &[
                            "ts",
                            "-reply",
                            "-config",
                            "ts.cnf",
                            "-queryfile",
                            "q.tsq",
                            "-out",
                            "r.tsr",
                        ],
                    );
                    std::fs::read(d.join("r.tsr")).unwrap()
                })
                .await
                .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    LocalTsa { dir, url }
}

impl LocalTsa {
    /// What `openssl ts -verify` says of `tsr` over `data`, against the CA.
    fn verify(&self, tsr: &[u8], data: &[u8]) -> String {
        let d = self.dir.path();
        std::fs::write(d.join("check.tsr"), tsr).unwrap();
        std::fs::write(d.join("check.txt"), data).unwrap();
        let out = Command::new("openssl")
            .args([
                "ts",
                "-verify",
                "-in",
                "check.tsr",
                "-data",
                "check.txt",
                "-CAfile",
                "ca.crt",
                "-untrusted",
                "tsa.crt",
            ])
            .current_dir(d)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// With `evidence.tsa_url`, each checkpoint is time-stamped by an RFC 3161
/// authority (here one made with `openssl ts`): the last one by the
/// scheduler's step, and the export's own, whose `.tsr` goes into the
/// package and verifies with `openssl ts -verify` against the note as
/// packaged; an answer about other data, or to another request, is refused.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_time_stamped_by_an_authority(#[case] engine: Engine) {
    use rollcall::evidence::tsa;
    let db = TestDb::new(engine).await;
    run_story(&db.url, &db.dir.path().join("data.key"))
        .await
        .unwrap();
    let tsa_server = local_tsa().await;

    // The answer is checked against the request.
    let http = tsa::client();
    let nonce = [1u8, 2, 3, 4];
    let answer = http
        .post(&tsa_server.url)
        .header("content-type", "application/timestamp-query")
        .body(tsa::request(b"some note\n", &nonce).unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    tsa::check(&answer, b"some note\n", &nonce).unwrap();
    assert!(matches!(
        tsa::check(&answer, b"another note\n", &nonce),
        Err(tsa::TsaError::Mismatch("another message imprint"))
    ));
    assert!(matches!(
        tsa::check(&answer, b"some note\n", &[9]),
        Err(tsa::TsaError::Mismatch("another nonce"))
    ));

    // The scheduler's step: the last checkpoint, once.
    let config = Config::parse(
        &demo_config(&db).await.replacen(
            "[evidence]\n",
            &format!("[evidence]\ntsa_url = \"{}\"\n", tsa_server.url),
            1,
        ),
        &no_env(),
    )
    .unwrap();
    let rt = rollcall::app::runtime(
        &config,
        Arc::new(SimulatedClock::new(shanghai("2026-12-07", "12:00"))),
    )
    .await
    .unwrap();
    let conn = &rt.db.orm;
    let signed = checkpoint::checkpoint(
        conn,
        &rt.signer,
        &rt.witness,
        TENANT,
        shanghai("2026-12-07", "11:00"),
    )
    .await
    .unwrap()
    .unwrap();
    let stamped = tsa::stamp_latest(conn, http, &tsa_server.url, TENANT)
        .await
        .unwrap();
    assert_eq!(stamped, Some(signed.size));
    assert_eq!(
        tsa::stamp_latest(conn, http, &tsa_server.url, TENANT)
            .await
            .unwrap(),
        None,
        "stamped once"
    );
    let row = entity::evidence_checkpoint::Entity::find_by_id(signed.id)
        .one(conn)
        .await
        .unwrap()
        .unwrap();
    let text = tsa_server.verify(row.tsr.as_deref().unwrap(), row.note.as_bytes());
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(row.stamped_at.is_some());

    // An export signs a new checkpoint (the log grew) and stamps it.
    let txn = conn.begin().await.unwrap();
    append(
        &txn,
        TENANT,
        shanghai("2026-12-07", "11:30"),
        vec![NewLeaf::new("note").subject(Some("zhangsan")).text("later")],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let p = package(&rt, TENANT, "zhangsan", None).await.unwrap();
    let tsr = p
        .file("checkpoint.tsr")
        .expect("the package has the time-stamp");
    let note = p.file("checkpoint.txt").unwrap();
    assert!(
        String::from_utf8_lossy(note)
            .lines()
            .nth(1)
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > signed.size
    );
    let text = tsa_server.verify(tsr, note);
    assert!(text.contains("Verification: OK"), "{text}");
    // Not of another checkpoint.
    let text = tsa_server.verify(tsr, row.note.as_bytes());
    assert!(!text.contains("Verification: OK"), "{text}");
    let dir = fresh_copy(&p);
    assert_verifies(dir.path(), &p.summary.fingerprint, &[], "cryptography");
    rt.db.orm.clone().close().await.unwrap();
}

/// After `rollcall keys rotate --evidence`: the old key signed a last
/// checkpoint and, with the new key, a hand-over; later checkpoints are the
/// new key's, checked against the witnessed one of the old key. The
/// package carries the hand-over and verifies with the old fingerprint
/// (published before) and with the new one; a hand-over missing a
/// signature or changed, or a checkpoint signed by a key off the chain,
/// fails; `rollcall evidence verify`'s check passes across the rotation
/// and names a changed hand-over.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_verifies_across_an_evidence_key_rotation(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let story = story_then_more(&db).await;
    let old = signer_of(&db);
    let old_print = fingerprint(&old);
    let key_file = rollcall::config::evidence_key_beside(&db.dir.path().join("data.key"));
    let witness = (*story.rt.witness).clone();
    let rotated = rollcall::keys::rotate_evidence_key(
        &story.rt.db.orm,
        &common::no_env(),
        &key_file,
        "rollcall",
        &witness,
        shanghai("2026-12-07", "12:30"),
    )
    .await
    .unwrap();
    let case = story.case.clone();
    close_runtime(story).await;
    assert_eq!(rotated.old_key, old.verifier_key());
    assert!(
        rotated
            .handover
            .starts_with("rollcall evidence key hand-over\n")
    );
    assert_eq!(
        std::fs::read_to_string(&rotated.handover_file).unwrap(),
        rotated.handover
    );
    assert_eq!(
        std::fs::read_to_string(&rotated.retired).unwrap().trim(),
        old.private_key()
    );
    let covered = rollcall::evidence::handover::Handover::verify(&rotated.handover).unwrap();
    assert_eq!(covered.checkpoints.len(), 1);
    assert_eq!(covered.checkpoints[0].origin, format!("rollcall/{TENANT}"));

    // The service again, with the new key: more about 张三, then the export
    // (its checkpoint extends the old key's witnessed one).
    let rt = demo_runtime(&db, shanghai("2026-12-07", "13:00")).await;
    assert_eq!(rt.signer.verifier_key(), rotated.new_key);
    let new_print = fingerprint(&rt.signer);
    assert_ne!(new_print, old_print);
    // Right after the rotation the log's last checkpoint is the old key's:
    // the package carries it, and the hand-over.
    let p = package(&rt, TENANT, "zhangsan", Some(case.id))
        .await
        .unwrap();
    assert_eq!(p.summary.checkpoint_size, covered.checkpoints[0].size);
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), &new_print, &[], "cryptography");
    assert!(
        text.contains(&format!("(key {:08x})", old.id())),
        "checkpoint.txt is the old key's:\n{text}"
    );
    assert_verifies(dir.path(), &old_print, &[], "cryptography");
    let txn = rt.db.orm.begin().await.unwrap();
    append(
        &txn,
        TENANT,
        shanghai("2026-12-07", "12:45"),
        vec![
            NewLeaf::new("check_in")
                .subject(Some("zhangsan"))
                .actor(Some("zhangsan")),
        ],
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let p = package(&rt, TENANT, "zhangsan", Some(case.id))
        .await
        .unwrap();
    assert_eq!(
        p.file("handovers.txt").unwrap(),
        rotated.handover.as_bytes()
    );
    assert!(
        covered.checkpoints[0].size < p.summary.checkpoint_size,
        "the export's checkpoint is the new key's"
    );
    let earliest = std::str::from_utf8(p.file("checkpoint-earliest.txt").unwrap()).unwrap();
    assert!(
        rollcall::evidence::note::verify(earliest, &old.verifier_key()).is_ok(),
        "the earlier checkpoint is the old key's"
    );
    let dir = fresh_copy(&p);
    let text = assert_verifies(dir.path(), &old_print, &[], "cryptography");
    assert!(
        text.contains("joined by hand-overs signed by both keys"),
        "{text}"
    );
    assert_verifies(dir.path(), &old_print, &["--openssl"], "openssl");
    assert_verifies(dir.path(), &new_print, &[], "cryptography");
    let stranger = NoteSigner::generate("rollcall").unwrap();
    assert_fails(
        verify(dir.path(), &["--fingerprint", &fingerprint(&stranger)]),
        "a key off the chain",
        &["pubkey.txt", "NOT the one given with --fingerprint"],
    );

    // A hand-over with one signature only, or changed (the manifest signed
    // again by the new key, which alone cannot make a hand-over).
    let handover_sigs: Vec<&str> = rotated
        .handover
        .lines()
        .filter(|l| l.starts_with('\u{2014}'))
        .collect();
    assert_eq!(handover_sigs.len(), 2);
    let d = fresh_copy(&p);
    std::fs::write(
        d.path().join("handovers.txt"),
        rotated
            .handover
            .replace(&format!("{}\n", handover_sigs[0]), ""),
    )
    .unwrap();
    resign(d.path(), &rt.signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", &old_print]),
        "a hand-over without the old key's signature",
        &["handovers.txt", "old key"],
    );
    let d = fresh_copy(&p);
    let at = rotated.handover.find("\ntime ").unwrap() + 8;
    let mut changed = rotated.handover.clone().into_bytes();
    changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(d.path().join("handovers.txt"), &changed).unwrap();
    resign(d.path(), &rt.signer);
    let text = assert_fails(
        verify(d.path(), &["--fingerprint", &old_print]),
        "a changed hand-over",
        &["handovers.txt", "does not verify"],
    );
    assert!(
        text.contains("[FAIL] pubkey.txt"),
        "without the hand-over, the old fingerprint is not the key's:\n{text}"
    );
    // The retired key signing past its hand-over: checkpoint.txt (the new
    // key's, beyond the hand-over) signed again by the old key.
    let d = fresh_copy(&p);
    resign_checkpoint(
        d.path(),
        "checkpoint.txt",
        &old,
        &format!("rollcall/{TENANT}"),
    );
    resign(d.path(), &rt.signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", &new_print]),
        "a retired key's checkpoint past its hand-over",
        &["checkpoint.txt", "which handed over at the checkpoint of"],
    );
    // A package made with the retired key (its pubkey.txt and manifest),
    // carrying the real hand-over to reach the new fingerprint.
    let d = fresh_copy(&p);
    std::fs::write(
        d.path().join("pubkey.txt"),
        rollcall::evidence::export::pubkey_text(&old),
    )
    .unwrap();
    resign(d.path(), &old);
    assert_fails(
        verify(d.path(), &["--fingerprint", &new_print]),
        "a package signed by the retired key",
        &["pubkey.txt", "made with a retired key"],
    );
    // The retired key signing another checkpoint of the size it handed over at.
    let d = fresh_copy(&p);
    let forged = old
        .sign(&checkpoint_text(
            &format!("rollcall/{TENANT}"),
            covered.checkpoints[0].size,
            &[7u8; 32],
        ))
        .unwrap();
    std::fs::write(d.path().join("checkpoint.txt"), forged).unwrap();
    resign(d.path(), &rt.signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", &new_print]),
        "a retired key's other checkpoint of the same size",
        &[
            "checkpoint.txt",
            "a retired key's checkpoint must be that one",
        ],
    );
    // A fork: the retired key handed over again, to a key its holder owns.
    let d = fresh_copy(&p);
    let mine = NoteSigner::generate("rollcall").unwrap();
    let fork = rollcall::evidence::handover::Handover {
        new_key: mine.verifier_key(),
        ..covered.clone()
    }
    .sign(&old, &mine)
    .unwrap();
    std::fs::write(
        d.path().join("handovers.txt"),
        format!("{}{fork}", rotated.handover),
    )
    .unwrap();
    resign(d.path(), &rt.signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", &new_print]),
        "a fork of hand-overs",
        &["handovers.txt", "handed over twice"],
    );
    // The earlier checkpoint signed by a key off the chain.
    let d = fresh_copy(&p);
    resign_checkpoint(
        d.path(),
        "checkpoint-earliest.txt",
        &stranger,
        &format!("rollcall/{TENANT}"),
    );
    resign(d.path(), &rt.signer);
    assert_fails(
        verify(d.path(), &["--fingerprint", &new_print]),
        "a checkpoint by a key off the chain",
        &["consistency.json", "no key of the chain"],
    );

    // The whole log, checked by rollcall, across the rotation; then with
    // the stored hand-over changed.
    let witnessed = rt.witness.read(TENANT).unwrap();
    let report = rollcall::evidence::verify::verify_log(
        &rt.db.orm,
        TENANT,
        &rt.signer.verifier_key(),
        witnessed.as_ref(),
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    entity::key_handover::Entity::update_many()
        .col_expr(
            entity::key_handover::Column::Note,
            Expr::value(String::from_utf8(changed).unwrap()),
        )
        .exec(&rt.db.orm)
        .await
        .unwrap();
    let report = rollcall::evidence::verify::verify_log(
        &rt.db.orm,
        TENANT,
        &rt.signer.verifier_key(),
        witnessed.as_ref(),
    )
    .await
    .unwrap();
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("key hand-over") && p.contains("does not verify")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("checkpoint size") && p.contains("signature does not verify")),
        "the old key's checkpoints are no longer believed: {problems:?}"
    );
    rt.db.orm.clone().close().await.unwrap();
    db.cleanup().await;
}

async fn close_runtime(story: Story) {
    story.rt.db.orm.clone().close().await.unwrap();
}
