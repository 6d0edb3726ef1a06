//! rollcall's RFC 6962 Merkle tree against an independent reference written
//! in Python from the RFC (tests/merkle_reference.py), on random trees of 1
//! to 1,000 leaves (random leaf data, seeded): roots, audit paths at random
//! indexes and consistency proofs between random sizes must be equal, byte
//! for byte. The package's stand-alone verifier (verify.py) is run on the
//! same proofs: it must accept each and refuse each one changed.

use std::io::Write;
use std::process::{Command, Stdio};

use rollcall::evidence::merkle::{
    Frontier, Tree, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use rollcall::outbox::render::hex;
use serde_json::{Value, json};

/// xorshift64*: a fixed seed gives the same trees on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi` for test data.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

const MAX_LEAVES: usize = 1000;

#[test]
fn random_trees_match_an_independent_reference() {
    let mut rng = Random(0x005e_ed0f_6962);
    // Leaf data of random lengths (empty included), random bytes.
    let data: Vec<Vec<u8>> = (0..MAX_LEAVES)
        .map(|_| {
            let len = rng.range(0, 80);
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect();

    // Every size up to 17, the edges around powers of two, and 60 random sizes.
    let mut sizes: Vec<usize> = (1..=17).collect();
    sizes.extend([31, 32, 33, 255, 256, 257, 511, 512, 513, 999, 1000]);
    sizes.extend((0..60).map(|_| rng.range(1, MAX_LEAVES)));

    let mut cases = Vec::new();
    for &n in &sizes {
        let mut inclusion = vec![0, n - 1];
        inclusion.extend((0..4).map(|_| rng.range(0, n - 1)));
        let mut consistency = vec![0, n, 1];
        consistency.extend((0..4).map(|_| rng.range(1, n)));
        cases.push(json!({ "n": n, "inclusion": inclusion, "consistency": consistency }));
    }

    let verifier = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/evidence/package/verify.py"
    );
    let spec = json!({
        "leaves": data.iter().map(|d| hex(d)).collect::<Vec<_>>(),
        "cases": cases,
        "verifier": verifier,
    });
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
    let reference: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reference.len(), cases.len());

    let all: Vec<_> = data.iter().map(|d| leaf_hash(d)).collect();
    let hexes = |hs: &[[u8; 32]]| json!(hs.iter().map(|h| hex(h)).collect::<Vec<_>>());
    let mut paths = 0;
    let mut proofs = 0;
    for (r, case) in reference.iter().zip(&cases) {
        let n = case["n"].as_u64().unwrap() as usize;
        let leaves = &all[..n];
        let ours = root(leaves);
        assert_eq!(r["root"], hex(&ours), "root of {n}");
        let mut frontier = Frontier::default();
        leaves.iter().for_each(|l| frontier.push(*l));
        assert_eq!(frontier.root(), ours, "frontier root of {n}");
        let tree = Tree::new(leaves.to_vec());
        assert_eq!(tree.root(), ours, "tree root of {n}");

        for (i, m) in case["inclusion"].as_array().unwrap().iter().enumerate() {
            let m = m.as_u64().unwrap() as usize;
            let path = inclusion_proof(m, leaves);
            assert_eq!(r["paths"][i], hexes(&path), "audit path of {m} in {n}");
            assert_eq!(tree.inclusion_proof(m as u64).as_ref(), Some(&path));
            assert!(verify_inclusion(
                m as u64, n as u64, &leaves[m], &path, &ours
            ));
            paths += 1;
        }
        for (i, m) in case["consistency"].as_array().unwrap().iter().enumerate() {
            let m = m.as_u64().unwrap() as usize;
            let proof = consistency_proof(m, leaves);
            let expected = &r["consistency"][i];
            assert_eq!(expected["m"], m);
            assert_eq!(expected["root"], hex(&root(&leaves[..m])), "root of {m}");
            assert_eq!(expected["proof"], hexes(&proof), "consistency {m} → {n}");
            assert!(verify_consistency(
                m as u64,
                n as u64,
                &root(&leaves[..m]),
                &ours,
                &proof
            ));
            proofs += 1;
        }
        assert_eq!(
            r["verifier"],
            json!([]),
            "verify.py on the tree of {n} leaves"
        );
    }
    assert!(
        paths > 500 && proofs > 500,
        "{paths} paths, {proofs} proofs"
    );
}
