//! Merkle tree hashing, proofs and their verification as RFC 6962 (and RFC
//! 9162 §2.1 for verification): leaf `SHA256(0x00 ‖ data)`, node
//! `SHA256(0x01 ‖ left ‖ right)`, the empty tree `SHA256("")`.
//!
//! [`Frontier`] appends in O(log n) by keeping only the roots of the
//! perfect subtrees on the tree's right edge.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The hash of a leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH over leaf hashes (RFC 6962 §2.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `m` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(
        m < leaves.len(),
        "leaf {m} is not in a tree of {}",
        leaves.len()
    );
    let n = leaves.len();
    if n == 1 {
        return Vec::new();
    }
    let k = split(n as u64) as usize;
    if m < k {
        let mut path = inclusion_proof(m, &leaves[..k]);
        path.push(root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_proof(m - k, &leaves[k..]);
        path.push(root(&leaves[..k]));
        path
    }
}

/// The consistency proof from the tree's first `m` leaves to all of them
/// (RFC 6962 §2.1.2). Empty when `m` is 0 or the whole tree.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    assert!(m <= leaves.len());
    if m == 0 || m == leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n as u64) as usize;
    if m <= k {
        let mut proof = subproof(m, &leaves[..k], whole);
        proof.push(root(&leaves[k..]));
        proof
    } else {
        let mut proof = subproof(m - k, &leaves[k..], false);
        proof.push(root(&leaves[..k]));
        proof
    }
}

/// Checks that `leaf` is leaf `index` of a tree of `size` with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Checks that the tree of `size2` with `root2` extends the tree of
/// `size1` with `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> bool {
    if size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    // A size1 that is a power of two: its root starts the walk.
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *root1 && sr == *root2 && sn == 0
}

/// A whole tree held as its levels (leaves, then each level of parents up
/// to the root), built once in O(n): audit paths then cost O(log n) each,
/// where [`inclusion_proof`] rehashes the tree for every one.
///
/// A level of odd length passes its last node up unhashed, which gives the
/// same tree as RFC 6962's split at the largest power of two.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair.get(1) {
                    Some(right) => node_hash(&pair[0], right),
                    None => pair[0],
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn leaves(&self) -> &[Hash] {
        &self.levels[0]
    }

    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|top| top.first()) {
            Some(root) if self.size() > 0 => *root,
            _ => empty_root(),
        }
    }

    /// The audit path of leaf `m`, as [`inclusion_proof`] gives it;
    /// `None` when there is no such leaf.
    pub fn inclusion_proof(&self, m: u64) -> Option<Vec<Hash>> {
        let mut i = usize::try_from(m)
            .ok()
            .filter(|&i| i < self.levels[0].len())?;
        let mut path = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            // A node without a sibling was passed up as it is: no step.
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i >>= 1;
        }
        Some(path)
    }
}

/// The right edge of an append-only tree: the roots of its perfect
/// subtrees, largest first. Appending touches O(log n) of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (subtree size, subtree root), sizes strictly decreasing powers of two.
    peaks: Vec<(u64, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Rebuilds a frontier from its size and its peaks' hashes (largest
    /// first), as stored; `None` if their number does not fit the size.
    pub fn from_peaks(size: u64, hashes: &[Hash]) -> Option<Frontier> {
        if hashes.len() != size.count_ones() as usize {
            return None;
        }
        let sizes = (0..64u32)
            .rev()
            .map(|bit| 1u64 << bit)
            .filter(|b| size & b != 0);
        Some(Frontier {
            size,
            peaks: sizes.zip(hashes.iter().copied()).collect(),
        })
    }

    /// The peaks' hashes, largest subtree first (what `from_peaks` takes).
    pub fn peak_hashes(&self) -> impl Iterator<Item = &Hash> {
        self.peaks.iter().map(|(_, h)| h)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = (1u64, leaf);
        while let Some(&(size, hash)) = self.peaks.last() {
            if size != carry.0 {
                break;
            }
            self.peaks.pop();
            carry = (size * 2, node_hash(&hash, &carry.1));
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// The tree's root (RFC 6962's MTH): the peaks folded right to left.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => empty_root(),
            Some(&(_, last)) => peaks.fold(last, |acc, (_, h)| node_hash(h, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn a_frontier_round_trips_through_its_peaks() {
        let all = leaves(77);
        let mut f = Frontier::default();
        for (i, l) in all.iter().enumerate() {
            let stored: Vec<Hash> = f.peak_hashes().copied().collect();
            let mut back = Frontier::from_peaks(i as u64, &stored).unwrap();
            assert_eq!(back, f);
            back.push(*l);
            f.push(*l);
            assert_eq!(back.root(), root(&all[..=i]));
        }
        assert!(Frontier::from_peaks(3, &[[0; 32]]).is_none());
    }

    fn hex(h: &Hash) -> String {
        crate::outbox::render::hex(h)
    }

    #[test]
    fn known_roots_from_rfc_6962_test_data() {
        // The empty tree, and the leaf hash of the empty string, as in
        // certificate-transparency-go's test vectors.
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn the_frontier_matches_the_recursive_root_at_every_size() {
        let all = leaves(300);
        let mut f = Frontier::default();
        assert_eq!(f.root(), root(&[]));
        for (i, l) in all.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root(&all[..=i]), "size {}", i + 1);
            assert!(f.peaks.len() <= 64 - (f.size().leading_zeros() as usize));
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        for n in 1..=40usize {
            let all = leaves(n);
            let r = root(&all);
            for m in 0..n {
                let p = inclusion_proof(m, &all);
                assert!(
                    verify_inclusion(m as u64, n as u64, &all[m], &p, &r),
                    "{m} of {n}"
                );
                let other = leaf_hash(b"not in the tree");
                assert!(!verify_inclusion(m as u64, n as u64, &other, &p, &r));
                if n > 1 {
                    assert!(
                        !verify_inclusion(((m + 1) % n) as u64, n as u64, &all[m], &p, &r)
                            || all[m] == all[(m + 1) % n]
                    );
                }
            }
        }
    }

    #[test]
    fn a_tree_of_levels_gives_the_recursive_root_and_paths() {
        assert_eq!(Tree::new(Vec::new()).root(), empty_root());
        assert_eq!(Tree::new(Vec::new()).inclusion_proof(0), None);
        for n in 1..=70usize {
            let all = leaves(n);
            let tree = Tree::new(all.clone());
            assert_eq!(tree.root(), root(&all), "root of {n}");
            for m in 0..n {
                assert_eq!(
                    tree.inclusion_proof(m as u64),
                    Some(inclusion_proof(m, &all)),
                    "path of {m} in {n}"
                );
            }
            assert_eq!(tree.inclusion_proof(n as u64), None);
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_wrong_root_does_not() {
        for n in 1..=40usize {
            let all = leaves(n);
            let r2 = root(&all);
            for m in 0..=n {
                let r1 = root(&all[..m]);
                let p = consistency_proof(m, &all);
                assert!(
                    verify_consistency(m as u64, n as u64, &r1, &r2, &p),
                    "{m} → {n}"
                );
                if m > 0 && m < n {
                    let bad = leaf_hash(b"tampered");
                    assert!(!verify_consistency(m as u64, n as u64, &bad, &r2, &p));
                    assert!(!verify_consistency(m as u64, n as u64, &r1, &bad, &p));
                }
            }
        }
    }
}
