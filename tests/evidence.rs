//! The evidence log of the demo story, through the real app, on SQLite and
//! PostgreSQL: `evidence verify` passes on the log as written and names the
//! record (and the field) of each alteration; `privacy forget` erases one
//! person once their retention period has passed and leaves every other
//! proof valid.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use entity::{
    absence_case, check_in, employee, evidence_checkpoint, evidence_leaf, evidence_log,
    evidence_raw, inbound_event,
};
use rollcall::db::{Database, Engine};
use rollcall::demo::{DemoPlatform, TENANT, run_story_on, stage};
use rollcall::evidence::checkpoint::{CheckpointError, checkpoint, load_or_create_key};
use rollcall::evidence::log::LeafData;
use rollcall::evidence::merkle::Frontier;
use rollcall::evidence::note::NoteSigner;
use rollcall::evidence::verify::{
    Field, Problem, Record, VerifyReport, field_differences, verify_log,
};
use rollcall::evidence::witness::Witness;
use rollcall::evidence::{NewLeaf, append_one};
use rollcall::outbox::render::hex;
use rollcall::privacy::{Basis, DirectoryEntry, ForgetError, forget};
use rstest::rstest;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Value,
};

/// The demo's data key; the evidence key is kept beside it.
fn data_key(db: &TestDb) -> PathBuf {
    db.dir.path().join("data.key")
}

fn evidence_key(db: &TestDb) -> PathBuf {
    rollcall::config::evidence_key_beside(&data_key(db))
}

/// The witness the demo's app keeps beside its evidence key.
fn witness(db: &TestDb) -> Witness {
    Witness::new(format!("{}.witness", evidence_key(db).display()))
}

/// The demo story on `platform`, a checkpoint, a day more of check-ins
/// through the app started again on the same database, and a second
/// checkpoint.
async fn story(db: &TestDb, platform: DemoPlatform) -> (Database, NoteSigner) {
    run_story_on(platform, &db.url, &data_key(db))
        .await
        .unwrap();
    let conn = Database::open(&db.url).await.unwrap();
    let signer = load_or_create_key(&evidence_key(db), "rollcall").unwrap();
    checkpoint(
        &conn.orm,
        &signer,
        &witness(db),
        TENANT,
        shanghai("2026-12-07", "10:10"),
    )
    .await
    .unwrap()
    .unwrap();
    let s = stage(
        platform,
        &db.url,
        &data_key(db),
        shanghai("2026-12-08", "08:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n",
    )
    .await
    .unwrap();
    s.check_in(&["wangmin", "zhaogang", "lisi", "wangwu"])
        .await
        .unwrap();
    s.stop().await;
    checkpoint(
        &conn.orm,
        &signer,
        &witness(db),
        TENANT,
        shanghai("2026-12-08", "08:10"),
    )
    .await
    .unwrap()
    .unwrap();
    (conn, signer)
}

async fn verify(conn: &Database, signer: &NoteSigner) -> VerifyReport {
    verify_log(&conn.orm, TENANT, &signer.verifier_key(), None)
        .await
        .unwrap()
}

fn lines(report: &VerifyReport) -> String {
    report
        .problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn leaves(conn: &Database) -> Vec<evidence_leaf::Model> {
    evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .order_by_asc(evidence_leaf::Column::Idx)
        .all(&conn.orm)
        .await
        .unwrap()
}

/// The first leaf of `kind` whose content contains `marker`.
async fn leaf_with(conn: &Database, kind: &str, marker: &str) -> evidence_leaf::Model {
    leaves(conn)
        .await
        .into_iter()
        .find(|l| l.kind == kind && l.content.as_deref().is_some_and(|c| c.contains(marker)))
        .unwrap_or_else(|| panic!("no {kind} leaf with {marker}"))
}

/// `text` with the byte just after the first `marker` changed to another
/// of its kind (a digit to a digit, a letter to a letter), so that the JSON
/// stays valid and only that value changes.
fn flip_after(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {text}"))
        + marker.len();
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = match bytes[at] {
        b'0' => b'1',
        b'1'..=b'9' => b'0',
        b'a' => b'b',
        _ => b'a',
    };
    String::from_utf8(bytes).unwrap()
}

async fn set_content(conn: &Database, index: i64, content: Option<String>) {
    evidence_leaf::Entity::update_many()
        .col_expr(evidence_leaf::Column::Content, Expr::value(content))
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.eq(index))
        .exec(&conn.orm)
        .await
        .unwrap();
}

fn leaf_record(p: &Problem) -> Option<i64> {
    match &p.record {
        Record::Leaf { index, .. } => Some(*index as i64),
        _ => None,
    }
}

#[rstest]
#[case::sqlite_wecom(Engine::Sqlite, DemoPlatform::Wecom)]
#[case::postgres_wecom(Engine::Postgres, DemoPlatform::Wecom)]
#[case::sqlite_dingtalk(Engine::Sqlite, DemoPlatform::Dingtalk)]
#[case::postgres_dingtalk(Engine::Postgres, DemoPlatform::Dingtalk)]
#[case::sqlite_feishu(Engine::Sqlite, DemoPlatform::Feishu)]
#[case::postgres_feishu(Engine::Postgres, DemoPlatform::Feishu)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_log_verifies_and_each_alteration_is_named(
    #[case] engine: Engine,
    #[case] platform: DemoPlatform,
) {
    let db = TestDb::new(engine).await;
    let (conn, signer) = story(&db, platform).await;

    let clean = verify(&conn, &signer).await;
    assert!(clean.ok(), "{}", lines(&clean));
    let all = leaves(&conn).await;
    assert_eq!(clean.leaves, all.len() as u64);
    assert_eq!(clean.size, all.len() as u64);
    assert!(clean.checkpoints >= 2, "{}", clean.summary());
    assert!(clean.raw > 100 && clean.erased.is_empty());
    assert!(clean.summary().ends_with(": OK"), "{}", clean.summary());
    // What names a changed field finds nothing to name on the log as written.
    for leaf in &all {
        let data: LeafData = serde_json::from_str(leaf.content.as_deref().unwrap()).unwrap();
        let diffs = field_differences(&conn.orm, TENANT, leaf, &data)
            .await
            .unwrap();
        assert!(
            diffs.is_empty(),
            "leaf {} ({}): {diffs:?}",
            leaf.idx,
            leaf.kind
        );
    }

    // One byte of a leaf's content, in a field stored elsewhere too: the
    // leaf and the field are named.
    for (kind, marker, field) in [
        ("message_sent", "\"text_sha256\":\"", "text_sha256"),
        (
            "message_queued",
            "\"role\":\"rendered\",\"sha256\":\"",
            "raw[0].sha256",
        ),
        ("callback", "\"msg_key\":\"msg:", "platform_ids.msg_key"),
        ("case_opened", "\"first_missed\":\"", "detail"),
        ("check_in", "\"work_date\":\"", "detail.work_date"),
        (
            "message_queued",
            "\"template\":{\"id\":\"first_reminder",
            "template.id",
        ),
    ] {
        let leaf = leaf_with(&conn, kind, marker).await;
        let original = leaf.content.clone().unwrap();
        set_content(&conn, leaf.idx, Some(flip_after(&original, marker))).await;
        let report = verify(&conn, &signer).await;
        let named: Vec<&Problem> = report
            .problems
            .iter()
            .filter(|p| leaf_record(p) == Some(leaf.idx))
            .collect();
        assert!(
            named
                .iter()
                .any(|p| p.field == Some(Field::Field(field.into()))),
            "{kind}: {field} not named in\n{}",
            lines(&report)
        );
        let line = named[0].to_string();
        assert!(
            line.starts_with(&format!("leaf {} ({kind}", leaf.idx)) && line.contains("was altered"),
            "{line}"
        );
        assert!(!report.ok() && report.summary().contains("problem"));
        set_content(&conn, leaf.idx, Some(original)).await;
    }

    // A change nothing else records (the salt): the leaf, no field.
    let leaf = leaf_with(&conn, "check_in", "\"salt\":\"").await;
    let original = leaf.content.clone().unwrap();
    set_content(&conn, leaf.idx, Some(flip_after(&original, "\"salt\":\""))).await;
    let report = verify(&conn, &signer).await;
    assert_eq!(report.problems.len(), 1, "{}", lines(&report));
    assert_eq!(leaf_record(&report.problems[0]), Some(leaf.idx));
    assert_eq!(report.problems[0].field, None);
    assert!(report.problems[0].message.contains("no field differs"));
    // Content that is no longer JSON.
    set_content(&conn, leaf.idx, Some(original.replacen('{', "[", 1))).await;
    let report = verify(&conn, &signer).await;
    assert!(
        report.problems[0].message.contains("not valid leaf data"),
        "{}",
        lines(&report)
    );
    // Content deleted without the erasure being recorded.
    set_content(&conn, leaf.idx, None).await;
    let report = verify(&conn, &signer).await;
    assert_eq!(
        report.problems[0].field,
        Some(Field::Column("content".into())),
        "{}",
        lines(&report)
    );
    // …and marked erased as privacy forget would, but with no forgotten
    // record listing it.
    evidence_leaf::Entity::update_many()
        .col_expr(
            evidence_leaf::Column::ErasedAt,
            Expr::value(shanghai("2026-12-08", "09:00")),
        )
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.eq(leaf.idx))
        .exec(&conn.orm)
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(
        lines(&report),
        format!(
            "leaf {}: column content is erased, but no later forgotten record lists it (deleted outside privacy forget)",
            leaf.idx
        )
    );
    evidence_leaf::Entity::update_many()
        .col_expr(
            evidence_leaf::Column::ErasedAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.eq(leaf.idx))
        .exec(&conn.orm)
        .await
        .unwrap();
    set_content(&conn, leaf.idx, Some(original)).await;

    // A column beside the content.
    let leaf = leaf_with(&conn, "check_in", "\"subject\":\"wangwu\"").await;
    let set_subject = |subject: &str| {
        evidence_leaf::Entity::update_many()
            .col_expr(evidence_leaf::Column::Subject, Expr::value(subject))
            .filter(evidence_leaf::Column::TenantId.eq(TENANT))
            .filter(evidence_leaf::Column::Idx.eq(leaf.idx))
            .exec(&conn.orm)
    };
    set_subject("lisi").await.unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(report.problems.len(), 1, "{}", lines(&report));
    assert_eq!(
        report.problems[0].to_string(),
        format!(
            "leaf {} (check_in): column subject is \"lisi\" but the leaf says \"wangwu\"",
            leaf.idx
        )
    );
    set_subject("wangwu").await.unwrap();

    // One byte of a raw payload: the payload, the leaf and its role. (The
    // sandbox started twice numbers its messages twice from 1, so some
    // responses are byte for byte the same payload: take one of a kind.)
    let (sent, position, response) = all
        .iter()
        .filter(|l| l.kind == "message_sent")
        .find_map(|l| {
            let data: LeafData = serde_json::from_str(l.content.as_deref().unwrap()).unwrap();
            let (position, r) = data
                .raw
                .iter()
                .enumerate()
                .find(|(_, r)| r.role == "response")?;
            let uses = all
                .iter()
                .filter(|o| o.content.as_deref().unwrap().contains(&r.sha256))
                .count();
            (uses == 1).then(|| (l.clone(), position, r.clone()))
        })
        .unwrap();
    let raw = evidence_raw::Entity::find_by_id((TENANT.to_owned(), response.sha256.clone()))
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    let mut flipped = raw.bytes.clone().unwrap();
    flipped[3] ^= 0x01;
    let set_bytes = |bytes: Vec<u8>| {
        evidence_raw::Entity::update_many()
            .col_expr(evidence_raw::Column::Bytes, Expr::value(bytes))
            .filter(evidence_raw::Column::TenantId.eq(TENANT))
            .filter(evidence_raw::Column::Sha256.eq(&raw.sha256))
            .exec(&conn.orm)
    };
    set_bytes(flipped).await.unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(report.problems.len(), 1, "{}", lines(&report));
    assert_eq!(
        report.problems[0].record,
        Record::Raw {
            sha256: raw.sha256.clone(),
            leaf: Some(sent.idx as u64),
            position: Some(position),
            role: Some("response".into()),
        }
    );
    let line = report.problems[0].to_string();
    assert!(
        line.starts_with(&format!(
            "raw {}… (leaf {}, raw[{position}] response): stored bytes hash to ",
            &raw.sha256[..16],
            sent.idx
        )),
        "{line}"
    );
    set_bytes(raw.bytes.clone().unwrap()).await.unwrap();
    // A payload deleted outright.
    evidence_raw::Entity::delete_by_id((TENANT.to_owned(), raw.sha256.clone()))
        .exec(&conn.orm)
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(report.problems.len(), 1, "{}", lines(&report));
    assert!(report.problems[0].message.starts_with("is missing"));
    assert_eq!(report.problems[0].leaf(), Some(sent.idx as u64));
    raw.clone()
        .into_active_model()
        .insert(&conn.orm)
        .await
        .unwrap();

    // Checkpoints: the signed note, its root column, another key.
    let first = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(TENANT))
        .order_by_asc(evidence_checkpoint::Column::Size)
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    let size = first.size as u64;
    let set_checkpoint = |note: String, root: String| {
        evidence_checkpoint::Entity::update_many()
            .col_expr(evidence_checkpoint::Column::Note, Expr::value(note))
            .col_expr(evidence_checkpoint::Column::Root, Expr::value(root))
            .filter(evidence_checkpoint::Column::Id.eq(first.id))
            .exec(&conn.orm)
    };
    let (lines_of, sig_at) = (
        first.note.lines().collect::<Vec<_>>(),
        first.note.find("\u{2014} ").unwrap(),
    );
    // A signature byte: one bit of the decoded signature (past the 4-byte
    // key id), encoded again, so the note stays well formed whatever the key.
    let (signed, signature_b64) = {
        let sig_line = &first.note[sig_at..];
        let b64 = sig_line["\u{2014} rollcall ".len()..].trim_end();
        assert!(!b64.contains('\n'), "one signature: {sig_line}");
        (&first.note[..sig_at], b64)
    };
    let altered = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut blob = engine.decode(signature_b64).unwrap();
        assert_eq!(blob.len(), 68, "key id and Ed25519 signature");
        blob[4 + 10] ^= 0x02;
        engine.encode(blob)
    };
    set_checkpoint(
        format!("{signed}\u{2014} rollcall {altered}\n"),
        first.root.clone(),
    )
    .await
    .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(
        lines(&report),
        format!(
            "checkpoint size {size}: signature does not verify (no signature by rollcall verifies)"
        )
    );
    // A signature that is not base64 at all ('*' is outside the alphabet).
    set_checkpoint(
        format!("{signed}\u{2014} rollcall *{}\n", &signature_b64[1..]),
        first.root.clone(),
    )
    .await
    .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(
        lines(&report),
        format!(
            "checkpoint size {size}: signature does not verify (malformed note: signature not base64)"
        )
    );
    // The root inside the note (whose signature then fails too).
    let other_root = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    set_checkpoint(
        first.note.replace(lines_of[2], &other_root),
        first.root.clone(),
    )
    .await
    .unwrap();
    let report = verify(&conn, &signer).await;
    let text = lines(&report);
    assert!(
        text.contains(&format!(
            "checkpoint size {size}: signature does not verify"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "checkpoint size {size}: field root of the note is {} but the stored leaves give {}",
            "07".repeat(32),
            first.root
        )),
        "{text}"
    );
    // Its root column.
    set_checkpoint(first.note.clone(), "ab".repeat(32))
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(
        lines(&report),
        format!(
            "checkpoint size {size}: column root is {} but the stored leaves give {}",
            "ab".repeat(32),
            first.root
        )
    );
    set_checkpoint(first.note.clone(), first.root.clone())
        .await
        .unwrap();
    // Another key: nothing verifies.
    let stranger = NoteSigner::from_seed("rollcall", &[3; 32]).unwrap();
    let report = verify_log(&conn.orm, TENANT, &stranger.verifier_key(), None)
        .await
        .unwrap();
    assert_eq!(report.problems.len() as u64, report.checkpoints);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.message.starts_with("signature does not verify"))
    );

    // A deleted leaf row: named by its index; the tree cannot be
    // recomputed past it.
    let gone = all[all.len() / 3].clone();
    evidence_leaf::Entity::delete_by_id((TENANT.to_owned(), gone.idx))
        .exec(&conn.orm)
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    let text = lines(&report);
    assert_eq!(
        report.problems[0].to_string(),
        format!(
            "leaf {}: is missing (the log has {} leaves)",
            gone.idx,
            all.len()
        ),
        "{text}"
    );
    assert!(
        report.problems[1..]
            .iter()
            .all(|p| matches!(p.record, Record::Checkpoint { .. } | Record::Raw { .. })),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cannot be recomputed: leaf {} is missing",
            gone.idx
        )),
        "{text}"
    );
    gone.into_active_model().insert(&conn.orm).await.unwrap();

    // A leaf's hash and content replaced together: its own check passes,
    // the tree does not.
    let leaf = leaf_with(&conn, "check_in", "\"work_date\":\"").await;
    let forged = flip_after(leaf.content.as_deref().unwrap(), "\"work_date\":\"");
    let forged_hash =
        rollcall::outbox::render::hex(&rollcall::evidence::merkle::leaf_hash(forged.as_bytes()));
    evidence_leaf::Entity::update_many()
        .col_expr(evidence_leaf::Column::Content, Expr::value(forged))
        .col_expr(evidence_leaf::Column::LeafHash, Expr::value(forged_hash))
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.eq(leaf.idx))
        .exec(&conn.orm)
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    let text = lines(&report);
    assert!(
        text.contains("log head: column frontier does not match the stored leaves"),
        "{text}"
    );
    assert!(text.contains("column root is"), "{text}");
    assert!(text.contains("field root of the note is"), "{text}");
    leaf.into_active_model()
        .reset_all()
        .update(&conn.orm)
        .await
        .unwrap();

    let again = verify(&conn, &signer).await;
    assert!(again.ok(), "restored: {}", lines(&again));
    conn.close().await;
    db.cleanup().await;
}

/// Rewrites the log's head so that it matches its leaf rows as they are
/// now (what an attacker with write access to the database would do after
/// changing a leaf), without touching the checkpoints.
async fn rehead(conn: &Database) {
    let mut tree = Frontier::default();
    for leaf in leaves(conn).await {
        tree.push(rollcall::evidence::merkle::leaf_hash(
            leaf.content.unwrap().as_bytes(),
        ));
    }
    let text: String = tree.peak_hashes().map(|h| hex(h)).collect();
    evidence_log::Entity::update_many()
        .col_expr(evidence_log::Column::Frontier, Expr::value(text))
        .col_expr(evidence_log::Column::Size, Expr::value(tree.size() as i64))
        .filter(evidence_log::Column::TenantId.eq(TENANT))
        .exec(&conn.orm)
        .await
        .unwrap();
}

async fn one_more_leaf(conn: &Database, at: chrono::DateTime<chrono::Utc>) {
    let txn = sea_orm::TransactionTrait::begin(&conn.orm).await.unwrap();
    append_one(&txn, TENANT, at, NewLeaf::new("note").text("one more"))
        .await
        .unwrap();
    txn.commit().await.unwrap();
}

fn refusal(result: Result<Option<evidence_checkpoint::Model>, CheckpointError>) -> String {
    match result {
        Err(e @ CheckpointError::Refused { .. }) => e.to_string(),
        other => panic!("not refused: {other:?}"),
    }
}

/// Whoever can write to the database cannot get a rewritten history
/// signed: the signer extends only the tree it signed before (the witness
/// file, outside the database), so a changed leaf, deleted checkpoints,
/// a truncated log or a forged checkpoint row are each refused, and
/// `evidence verify` names a witnessed checkpoint gone from the database.
/// A checkpoint another instance signed, or a missing witness file, is
/// checked from the leaves and accepted.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_is_never_signed(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (conn, signer) = story(&db, DemoPlatform::Wecom).await;
    let w = witness(&db);
    let at = shanghai("2026-12-08", "09:00");
    let witnessed = w
        .read(TENANT)
        .unwrap()
        .expect("the story's checkpoints are witnessed");
    let all = leaves(&conn).await;
    assert_eq!(witnessed.size, all.len() as u64);
    let report = verify_log(&conn.orm, TENANT, &signer.verifier_key(), Some(&witnessed))
        .await
        .unwrap();
    assert!(report.ok(), "{}", lines(&report));
    assert_eq!(report.witnessed, Some(witnessed.size));
    assert_eq!(report.unsigned_tail, 0);

    // A leaf in the signed part changed, the head recomputed to match, one
    // leaf appended on top: the tree is no extension of the signed one.
    let leaf = leaf_with(&conn, "check_in", "\"work_date\":\"").await;
    let forged = flip_after(leaf.content.as_deref().unwrap(), "\"work_date\":\"");
    let forged_hash = hex(&rollcall::evidence::merkle::leaf_hash(forged.as_bytes()));
    let set_leaf = |content: String, hash: String| {
        evidence_leaf::Entity::update_many()
            .col_expr(evidence_leaf::Column::Content, Expr::value(content))
            .col_expr(evidence_leaf::Column::LeafHash, Expr::value(hash))
            .filter(evidence_leaf::Column::TenantId.eq(TENANT))
            .filter(evidence_leaf::Column::Idx.eq(leaf.idx))
            .exec(&conn.orm)
    };
    set_leaf(forged, forged_hash).await.unwrap();
    rehead(&conn).await;
    one_more_leaf(&conn, at).await;
    let text = refusal(checkpoint(&conn.orm, &signer, &w, TENANT, at).await);
    assert!(
        text.contains("the log's stored head does not match its leaves"),
        "{text}"
    );

    // …and with every checkpoint deleted too, so that nothing in the
    // database remembers the old root.
    let checkpoints = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(TENANT))
        .all(&conn.orm)
        .await
        .unwrap();
    evidence_checkpoint::Entity::delete_many()
        .filter(evidence_checkpoint::Column::TenantId.eq(TENANT))
        .exec(&conn.orm)
        .await
        .unwrap();
    let text = refusal(checkpoint(&conn.orm, &signer, &w, TENANT, at).await);
    assert!(
        text.contains(&format!(
            "the checkpoint of {} leaves signed before is missing from the database or altered",
            witnessed.size
        )),
        "{text}"
    );
    assert_eq!(
        evidence_checkpoint::Entity::find()
            .filter(evidence_checkpoint::Column::TenantId.eq(TENANT))
            .all(&conn.orm)
            .await
            .unwrap(),
        vec![],
        "nothing was signed"
    );
    let report = verify_log(&conn.orm, TENANT, &signer.verifier_key(), Some(&witnessed))
        .await
        .unwrap();
    assert_eq!(
        lines(&report),
        format!(
            "witnessed checkpoint size {}: was signed at {} but is missing from the database",
            witnessed.size,
            rollcall::evidence::log::utc_text(witnessed.witnessed_at)
        )
    );
    // Put back: the history as signed, one leaf more, signed on top.
    for c in &checkpoints {
        c.clone()
            .into_active_model()
            .insert(&conn.orm)
            .await
            .unwrap();
    }
    set_leaf(leaf.content.clone().unwrap(), leaf.leaf_hash.clone())
        .await
        .unwrap();
    rehead(&conn).await;
    let signed = checkpoint(&conn.orm, &signer, &w, TENANT, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signed.size, witnessed.size as i64 + 1);
    assert_eq!(w.read(TENANT).unwrap().unwrap().note, signed.note);

    // The log cut back to before the last checkpoint, with the checkpoints
    // past the cut deleted: leaves were removed.
    let cut = all.len() as i64 / 2;
    let removed = evidence_leaf::Entity::find()
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.gte(cut))
        .all(&conn.orm)
        .await
        .unwrap();
    evidence_leaf::Entity::delete_many()
        .filter(evidence_leaf::Column::TenantId.eq(TENANT))
        .filter(evidence_leaf::Column::Idx.gte(cut))
        .exec(&conn.orm)
        .await
        .unwrap();
    rehead(&conn).await;
    let text = refusal(checkpoint(&conn.orm, &signer, &w, TENANT, at).await);
    assert!(text.contains("leaves were removed"), "{text}");
    for l in removed {
        l.into_active_model().insert(&conn.orm).await.unwrap();
    }
    rehead(&conn).await;

    // Another instance (its own witness file) signed a checkpoint further
    // on: checked from the leaves, accepted, and now witnessed here too.
    one_more_leaf(&conn, at).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let other = checkpoint(
        &conn.orm,
        &signer,
        &Witness::new(elsewhere.path()),
        TENANT,
        at,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(other.size, signed.size + 1);
    let again = checkpoint(&conn.orm, &signer, &w, TENANT, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, other);
    assert_eq!(w.read(TENANT).unwrap().unwrap().size, other.size as u64);

    // A checkpoint row signed with the key but over another root (a key
    // misused, or a row copied from another log): refused.
    one_more_leaf(&conn, at).await;
    let size = other.size as u64 + 1;
    let root = [9u8; 32];
    let note = signer
        .sign(&rollcall::evidence::note::checkpoint_text(
            &format!("rollcall/{TENANT}"),
            size,
            &root,
        ))
        .unwrap();
    evidence_checkpoint::ActiveModel {
        tenant_id: sea_orm::Set(TENANT.to_owned()),
        size: sea_orm::Set(size as i64),
        root: sea_orm::Set(hex(&root)),
        note: sea_orm::Set(note),
        created_at: sea_orm::Set(at),
        ..Default::default()
    }
    .insert(&conn.orm)
    .await
    .unwrap();
    let text = refusal(checkpoint(&conn.orm, &signer, &w, TENANT, at).await);
    assert!(
        text.contains(&format!(
            "the checkpoint of {size} leaves in the database is not one of the log's leaves"
        )),
        "{text}"
    );
    evidence_checkpoint::Entity::delete_many()
        .filter(evidence_checkpoint::Column::TenantId.eq(TENANT))
        .filter(evidence_checkpoint::Column::Size.eq(size as i64))
        .exec(&conn.orm)
        .await
        .unwrap();

    // A log row claiming another log's origin is not signed.
    let set_origin = |origin: &'static str| {
        evidence_log::Entity::update_many()
            .col_expr(evidence_log::Column::Origin, Expr::value(origin))
            .filter(evidence_log::Column::TenantId.eq(TENANT))
            .exec(&conn.orm)
    };
    set_origin("rollcall/acme").await.unwrap();
    let text = refusal(checkpoint(&conn.orm, &signer, &w, TENANT, at).await);
    assert!(
        text.contains("the log's stored origin is `rollcall/acme`, not `rollcall/demo`"),
        "{text}"
    );
    set_origin("rollcall/demo").await.unwrap();

    // No witness file (a new host, or an upgrade): the whole log is checked
    // against every stored checkpoint, then signed and witnessed.
    std::fs::remove_dir_all(w.dir()).unwrap();
    let fresh = checkpoint(&conn.orm, &signer, &w, TENANT, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.size as u64, size);
    let report = verify_log(
        &conn.orm,
        TENANT,
        &signer.verifier_key(),
        w.read(TENANT).unwrap().as_ref(),
    )
    .await
    .unwrap();
    assert!(report.ok(), "{}", lines(&report));
    assert_eq!(report.witnessed, Some(size));
    conn.close().await;
    db.cleanup().await;
}

#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_person_erases_only_theirs_once_retention_passed(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let (conn, signer) = story(&db, DemoPlatform::Wecom).await;
    let now = shanghai("2026-12-09", "09:00");
    let lisi_case = absence_case::Entity::find()
        .filter(absence_case::Column::UserId.eq("lisi"))
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    let closed = lisi_case.resolved_at.unwrap();

    // Before the retention period has passed, or with a case open: refused,
    // naming the date it becomes possible.
    let err = forget(&conn.orm, TENANT, "lisi", 1095, now, false)
        .await
        .unwrap_err();
    let possible = closed + chrono::Duration::days(1095);
    match &err {
        ForgetError::TooEarly {
            possible: p, basis, ..
        } => {
            assert_eq!(*p, possible);
            assert_eq!(*basis, Basis::LastCaseClosed(closed));
        }
        other => panic!("{other}"),
    }
    let date = possible
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d")
        .to_string();
    assert!(err.to_string().contains(&date), "{err}");
    let err = forget(&conn.orm, TENANT, "zhangsan", 0, now, false)
        .await
        .unwrap_err();
    assert!(matches!(err, ForgetError::CaseOpen { .. }), "{err}");
    // 王五 never had a case: his retention counts from his last leaf (today's check-in).
    let err = forget(&conn.orm, TENANT, "wangwu", 30, now, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForgetError::TooEarly {
                basis: Basis::LastLeaf(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        forget(&conn.orm, TENANT, "nobody", 0, now, false).await,
        Err(ForgetError::Unknown { .. })
    ));
    assert!(verify(&conn, &signer).await.erased.is_empty());

    let before = leaves(&conn).await;
    let theirs: Vec<u64> = before
        .iter()
        .filter(|l| l.subject.as_deref() == Some("lisi"))
        .map(|l| l.idx as u64)
        .collect();
    assert!(theirs.len() > 10, "{theirs:?}");
    // 李四's first callback, forwarded as evidence in 王五's record: that
    // payload must stay.
    let callback = inbound_event::Entity::find()
        .filter(inbound_event::Column::FromUser.eq("lisi"))
        .order_by_asc(inbound_event::Column::Id)
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    let shared = rollcall::evidence::log::sha256_hex(callback.raw_body.as_bytes());
    append_one(
        &conn.orm,
        TENANT,
        now,
        NewLeaf::new("note").subject(Some("wangwu")).raw(
            "callback",
            "application/xml",
            callback.raw_body.clone(),
        ),
    )
    .await
    .unwrap();

    // A dry run changes nothing.
    let dry = forget(&conn.orm, TENANT, "lisi", 0, now, true)
        .await
        .unwrap();
    assert_eq!(dry.leaves.iter().map(|l| l.0).collect::<Vec<_>>(), theirs);
    assert!(dry.raw_kept.contains(&shared), "{dry:?}");
    assert_eq!(dry.recorded_as, None);
    assert!(verify(&conn, &signer).await.erased.is_empty());

    let done = forget(&conn.orm, TENANT, "lisi", 0, now, false)
        .await
        .unwrap();
    assert_eq!(done.leaves.iter().map(|l| l.0).collect::<Vec<_>>(), theirs);
    assert_eq!(done.raw_kept, dry.raw_kept);
    assert!(done.raw.len() > theirs.len() / 2, "{done:?}");
    assert_eq!(done.directory, DirectoryEntry::ContactsCleared);
    assert!(
        done.inbound_events > 0 && done.check_ins > 0 && done.case_events > 0 && done.messages > 0
    );

    // The log verifies; 李四's leaves are reported erased, nothing else.
    checkpoint(&conn.orm, &signer, &witness(&db), TENANT, now)
        .await
        .unwrap()
        .unwrap();
    let report = verify(&conn, &signer).await;
    assert!(report.ok(), "{}", lines(&report));
    assert_eq!(report.erased, theirs);
    // Erased payloads are deleted, not kept under their unsalted hash.
    assert_eq!(report.raw_erased, 0);
    assert!(
        report
            .summary()
            .contains(&format!("({} erased)", theirs.len()))
    );
    // Every leaf hash is as it was: every other proof still holds.
    let after = leaves(&conn).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.leaf_hash, b.leaf_hash);
        let mine = b.subject.as_deref() == Some("lisi");
        assert_eq!(a.content.is_none(), mine, "leaf {}", a.idx);
        assert_eq!(a.erased_at.is_some(), mine, "leaf {}", a.idx);
        if !mine {
            assert_eq!(a.content, b.content, "leaf {}", a.idx);
        }
    }
    // The erasure is a leaf of its own, without the person in it.
    let recorded = after.last().unwrap();
    assert_eq!(Some(recorded.idx as u64), done.recorded_as);
    assert_eq!(recorded.kind, "forgotten");
    let content = recorded.content.as_deref().unwrap();
    assert!(
        !content.contains("lisi") && !content.contains("李四"),
        "{content}"
    );
    assert!(content.contains(&format!("\"erased_leaves\":{}", theirs.len())));
    // The shared payload kept its bytes; one of 李四's alone is gone, row
    // and all.
    let raw = |sha: String| {
        let conn = conn.orm.clone();
        async move {
            evidence_raw::Entity::find_by_id((TENANT.to_owned(), sha))
                .one(&conn)
                .await
                .unwrap()
        }
    };
    for sha in &done.raw_kept {
        assert!(raw(sha.clone()).await.unwrap().bytes.is_some());
    }
    for sha in &done.raw {
        assert!(raw(sha.clone()).await.is_none(), "raw {sha}");
    }

    // The operational rows keep ids, dates and statuses, not content.
    let events = inbound_event::Entity::find()
        .filter(inbound_event::Column::FromUser.eq("lisi"))
        .all(&conn.orm)
        .await
        .unwrap();
    assert!(!events.is_empty());
    for e in &events {
        assert!(e.raw_body.is_empty() && e.plaintext.is_empty() && e.content.is_none());
        assert_eq!(e.fields, "{}");
    }
    let others = inbound_event::Entity::find()
        .filter(inbound_event::Column::FromUser.eq("wangwu"))
        .all(&conn.orm)
        .await
        .unwrap();
    assert!(others.iter().all(|e| !e.raw_body.is_empty()));
    for c in check_in::Entity::find()
        .filter(check_in::Column::UserId.eq("lisi"))
        .all(&conn.orm)
        .await
        .unwrap()
    {
        assert!(c.latitude.is_none() && c.label.is_none() && c.media_sha256.is_none());
    }
    let person = employee::Entity::find()
        .filter(employee::Column::UserId.eq("lisi"))
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    assert!(person.phone_sealed.is_none() && person.emergency_contact_name_sealed.is_none());
    let case = absence_case::Entity::find_by_id(lisi_case.id)
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (case.status, case.first_missed, case.missed_workdays),
        (
            lisi_case.status,
            lisi_case.first_missed,
            lisi_case.missed_workdays
        )
    );

    // Once forgotten, forgetting again erases nothing more.
    let again = forget(&conn.orm, TENANT, "lisi", 0, now, false)
        .await
        .unwrap();
    assert!(again.leaves.is_empty() && again.raw.is_empty(), "{again:?}");
    let report = verify(&conn, &signer).await;
    assert!(report.ok(), "{}", lines(&report));
    assert_eq!(report.erased, theirs);
    // Erasing a payload that a live leaf still references is named.
    evidence_raw::Entity::update_many()
        .col_expr(evidence_raw::Column::Bytes, Expr::value(Value::Bytes(None)))
        .col_expr(evidence_raw::Column::ErasedAt, Expr::value(now))
        .filter(evidence_raw::Column::Sha256.eq(&shared))
        .exec(&conn.orm)
        .await
        .unwrap();
    let report = verify(&conn, &signer).await;
    assert_eq!(report.problems.len(), 1, "{}", lines(&report));
    assert!(
        report.problems[0]
            .message
            .starts_with("was erased, but leaf")
    );
    conn.close().await;
    db.cleanup().await;
}

fn rollcall(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env_remove("ROLLCALL_DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_reports_and_exits_non_zero_on_a_problem() {
    let db = TestDb::new(Engine::Sqlite).await;
    let (conn, signer) = story(&db, DemoPlatform::Wecom).await;
    let dir = db.dir.path();
    // The story's clock is simulated; `verify` judges an unsigned tail stale
    // by the real one. A century between checkpoints keeps it fresh
    // whatever today's date is; one second (below) makes it stale.
    let config = |checkpoint_every_secs: u64| {
        std::fs::write(
            dir.join("rollcall.toml"),
            format!(
                "[database]\nurl = \"{}\"\n[evidence]\nkey_file = \"{}\"\ncheckpoint_every_secs = {checkpoint_every_secs}\n",
                db.url,
                evidence_key(&db).display()
            ),
        )
        .unwrap();
    };
    config(100 * 365 * 86_400);
    let out = rollcall(dir, &["evidence", "verify", "--tenant", TENANT]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("checkpoints: OK"), "{stdout}");
    let size = leaves(&conn).await.len();
    assert!(
        stdout.contains(&format!(
            "witness file: the checkpoint of {size} leaves signed before is in the database"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("unsigned tail"), "{stdout}");
    // A leaf no checkpoint covers yet.
    one_more_leaf(&conn, shanghai("2026-12-08", "08:20")).await;
    let out = rollcall(dir, &["evidence", "verify", "--tenant", TENANT]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "unsigned tail: 1 leaves appended since the checkpoint of {size} leaves, signed at 2026-12-08T00:10:00Z\n"
        )),
        "{stdout}"
    );
    let signed = chrono::DateTime::parse_from_rfc3339("2026-12-08T00:10:00Z").unwrap();
    if chrono::Utc::now() > signed + chrono::Duration::minutes(2) {
        config(1);
        let out = rollcall(dir, &["evidence", "verify", "--tenant", TENANT]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a stale tail is a warning: {stdout}");
        assert!(
            stdout.contains(
                "signed at 2026-12-08T00:10:00Z; STALE: the service has not signed them in twice evidence.checkpoint_every_secs\n"
            ),
            "{stdout}"
        );
        config(100 * 365 * 86_400);
    }

    let leaf = leaf_with(&conn, "message_sent", "\"text_sha256\":\"").await;
    let original = leaf.content.clone().unwrap();
    set_content(
        &conn,
        leaf.idx,
        Some(flip_after(&original, "\"text_sha256\":\"")),
    )
    .await;
    let out = rollcall(dir, &["evidence", "verify", "--tenant", TENANT]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "leaf {} (message_sent, {}): field text_sha256 was altered",
            leaf.idx,
            leaf.source.as_deref().unwrap()
        )),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("1 problem"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));
    // The same as JSON, with the published key given explicitly.
    let key = signer.verifier_key();
    let out = rollcall(
        dir,
        &[
            "evidence",
            "verify",
            "--tenant",
            TENANT,
            "--json",
            "--verifier-key",
            &key,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"][0]["record"]["index"], leaf.idx);
    assert_eq!(json["problems"][0]["field"], "text_sha256");
    set_content(&conn, leaf.idx, Some(original)).await;

    // Forgetting before the retention period (3 years by default) is refused.
    let out = rollcall(
        dir,
        &[
            "privacy",
            "forget",
            "--tenant",
            TENANT,
            "--employee",
            "lisi",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`lisi` cannot be forgotten before 2029-"),
        "{stderr}"
    );
    let out = rollcall(dir, &["evidence", "verify", "--tenant", TENANT]);
    assert!(out.status.success());
    conn.close().await;
    db.cleanup().await;
}

/// `GET /evidence/{tenant}/checkpoint` publishes the last checkpoint the
/// server signed (from its witness file): 404 before the first, the signed
/// note after, and 404 for a tenant it does not serve.
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_checkpoint_is_published(#[case] engine: Engine) {
    let db = TestDb::new(engine).await;
    let app = boot(&db, 600).await;
    let get = |path: &str| {
        let url = url(&app, path);
        async move {
            let r = http().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // An empty log is never signed.
    let (status, body) = get("/evidence/acme/checkpoint").await;
    assert_eq!((status, body.as_str()), (404, "no checkpoint signed yet\n"));
    let cb = vector_tenant().text(7_000_001, "打卡");
    assert_eq!(post(&app, "acme", &cb.query, cb.body).await.0, 200);
    wait_all_processed(&app.db).await;
    let rt = &app.runtime;
    let signed = checkpoint(
        &app.db.orm,
        &rt.signer,
        &rt.witness,
        "acme",
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .unwrap();
    // The app's own tick may sign a later one meanwhile (the reply's
    // failed attempts keep appending): the one published is at least as
    // large, and stored.
    let (status, body) = get("/evidence/acme/checkpoint").await;
    assert_eq!(status, 200);
    let text = rollcall::evidence::note::verify(&body, &rt.signer.verifier_key()).unwrap();
    let size: i64 = text.lines().nth(1).unwrap().parse().unwrap();
    assert!(
        text.starts_with("rollcall/acme\n") && size >= signed.size,
        "{text}"
    );
    let stored = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::Size.eq(size))
        .one(&app.db.orm)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.note, body);
    assert_eq!(get("/evidence/other/checkpoint").await.0, 404);
    app.stop().await;
    db.cleanup().await;
}

/// The witnesses a tenant names get its last signed checkpoint by email,
/// once a day each, through the outbox (so each send is a leaf too).
#[rstest]
#[case::sqlite(Engine::Sqlite)]
#[case::postgres(Engine::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_get_the_checkpoint_once_a_day(#[case] engine: Engine) {
    use rollcall::evidence::witness_mail::mail_witnesses;
    let db = TestDb::new(engine).await;
    let s = stage(
        DemoPlatform::Wecom,
        &db.url,
        &data_key(&db),
        shanghai("2026-12-07", "08:00"),
        "[tenants.attendance]\nscan_at = \"23:59\"\n[tenants.evidence]\nwitness_emails = [\"notary@example.cn\", \"union@example.cn\"]\n",
    )
    .await
    .unwrap();
    s.check_in(&["wangmin", "zhaogang", "lisi"]).await.unwrap();
    let rt = s.rt();
    let signed = checkpoint(
        &rt.db.orm,
        &rt.signer,
        &rt.witness,
        TENANT,
        shanghai("2026-12-07", "08:30"),
    )
    .await
    .unwrap()
    .unwrap();
    let witness_rows = || async {
        rollcall_outbox(&rt.db)
            .await
            .into_iter()
            .filter(|r| r.idem_key.starts_with("witness:"))
            .count()
    };
    // The app's own tick may queue them too: count rows, not calls.
    mail_witnesses(rt, shanghai("2026-12-07", "09:00"))
        .await
        .unwrap();
    assert_eq!(witness_rows().await, 2);
    mail_witnesses(rt, shanghai("2026-12-07", "21:00"))
        .await
        .unwrap();
    assert_eq!(witness_rows().await, 2, "once a day");
    let start = std::time::Instant::now();
    let mails = loop {
        let mails = s.mail().messages();
        if mails.len() >= 2 {
            break mails;
        }
        assert!(start.elapsed() < PATIENCE, "not delivered: {mails:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["notary@example.cn", "union@example.cn"]);
    let parsed = mailparse::parse_mail(&mails[0].data).unwrap();
    let body = parsed
        .subparts
        .first()
        .unwrap_or(&parsed)
        .get_body()
        .unwrap()
        .replace("\r\n", "\n");
    let size_line = format!("记录数：{}", signed.size);
    assert!(
        body.contains(signed.note.trim_end()) && body.contains(&size_line),
        "{body}"
    );
    // The next day, again.
    mail_witnesses(rt, shanghai("2026-12-08", "09:00"))
        .await
        .unwrap();
    assert_eq!(witness_rows().await, 4);
    s.stop().await;
    db.cleanup().await;
}

async fn rollcall_outbox(db: &Database) -> Vec<entity::outbox::Model> {
    entity::outbox::Entity::find().all(&db.orm).await.unwrap()
}

/// On SQLite, `evidence verify` reads the leaves on a connection of its own
/// (`evidence::leaf_read`), and only when that connection sees the head of
/// the verifier's own transaction: a log appended to all the while still
/// verifies, each time in one snapshot.
#[tokio::test]
async fn the_sqlite_fast_read_sees_the_snapshot_verify_began_with() {
    use rollcall::evidence::leaf_read::SqliteLeaves;
    let db = TestDb::new(Engine::Sqlite).await;
    let conn = Database::open(&db.url).await.unwrap();
    let at = shanghai("2026-12-07", "09:00");
    for _ in 0..40 {
        one_more_leaf(&conn, at).await;
    }
    let head = evidence_log::Entity::find_by_id(TENANT)
        .one(&conn.orm)
        .await
        .unwrap()
        .unwrap();
    let file = db.dir.path().join("rollcall.db");
    for (size, frontier) in [(head.size - 1, head.frontier.as_str()), (head.size, "")] {
        assert!(
            SqliteLeaves::open(&file, TENANT, size, frontier)
                .unwrap()
                .is_none(),
            "another head ({size}) is refused"
        );
    }
    let fast = SqliteLeaves::open(&file, TENANT, head.size, &head.frontier)
        .unwrap()
        .expect("the same head is taken");
    one_more_leaf(&conn, at).await;
    let mut read = Vec::new();
    fast.pages(0, i64::MAX, 16, |rows| {
        assert!(rows.len() <= 16);
        read.extend(rows.into_iter().map(|r| r.idx));
        true
    })
    .unwrap();
    assert_eq!(
        read,
        (0..head.size).collect::<Vec<_>>(),
        "the leaf appended after it opened is not in its snapshot"
    );
    drop(fast);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (conn, stop) = (conn.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                one_more_leaf(&conn, at).await;
                n += 1;
            }
            n
        })
    };
    let signer = NoteSigner::generate("rollcall").unwrap();
    let mut sizes = Vec::new();
    for _ in 0..5 {
        let report = verify(&conn, &signer).await;
        assert!(report.ok(), "{}", lines(&report));
        assert_eq!(report.leaves, report.size);
        sizes.push(report.size);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = appender.await.unwrap();
    assert!(appended > 0);
    assert!(sizes[0] > head.size as u64, "{sizes:?}");
    conn.close().await;
    db.cleanup().await;
}
