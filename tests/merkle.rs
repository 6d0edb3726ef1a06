//! rollcall's RFC 6962 Merkle tree against an independent reference written
//! in Python from the RFC (tests/merkle_reference.py), on trees of 1 to
//! 1,000 leaves: roots, audit paths and consistency proofs must be equal,
//! byte for byte.

use std::io::Write;
use std::process::{Command, Stdio};

use rollcall::evidence::merkle::{
    Frontier, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use rollcall::outbox::render::hex;

#[test]
fn roots_and_proofs_match_an_independent_reference() {
    // Sizes 1..=64 exhaustively for one m each, then a deterministic spread up to 1,000.
    let mut cases: Vec<(usize, usize)> = (1..=64).map(|n| (n, (n * 7 + 3) % n)).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % 1000) as usize + 1;
        let m = ((x >> 20) % n as u64) as usize;
        cases.push((n, m));
    }
    cases.push((1000, 999));
    cases.push((1000, 512));
    cases.push((1024, 1023));

    let spec = serde_json::json!({ "cases": cases });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/merkle_reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the reference");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference failed");
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reference.len(), cases.len());

    let all: Vec<_> = (0..1024)
        .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
        .collect();
    for (r, &(n, m)) in reference.iter().zip(&cases) {
        let leaves = &all[..n];
        let ours = root(leaves);
        assert_eq!(r["root"], hex(&ours), "root of {n}");
        let mut frontier = Frontier::default();
        leaves.iter().for_each(|l| frontier.push(*l));
        assert_eq!(frontier.root(), ours, "frontier root of {n}");

        let path = inclusion_proof(m, leaves);
        let hexes: Vec<String> = path.iter().map(|h| hex(h)).collect();
        assert_eq!(
            r["path"],
            serde_json::json!(hexes),
            "audit path of {m} in {n}"
        );
        assert!(verify_inclusion(
            m as u64, n as u64, &leaves[m], &path, &ours
        ));

        let proof = consistency_proof(m, leaves);
        let hexes: Vec<String> = proof.iter().map(|h| hex(h)).collect();
        assert_eq!(
            r["consistency"],
            serde_json::json!(hexes),
            "consistency {m} → {n}"
        );
        assert!(verify_consistency(
            m as u64,
            n as u64,
            &root(&leaves[..m]),
            &ours,
            &proof
        ));
    }
}
