//! Merkle tree hashing, proofs and their verification as RFC 6962 (and RFC
//! 9162 §2.1 for verification): leaf `SHA256(0x00 ‖ data)`, node
//! `SHA256(0x01 ‖ left ‖ right)`, the empty tree `SHA256("")`.
//!
//! [`Frontier`] appends in O(log n) by keeping only the roots of the
//! perfect subtrees on the tree's right edge.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A hash as stored: 64 lowercase hex digits (an uppercase one was not
/// written by rollcall).
pub fn parse_hash(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    (text.bytes().all(|b| !b.is_ascii_uppercase())).then_some(out)
}

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

/// A whole tree with every complete subtree's root kept, level by level:
/// the root at any size, and consistency proofs between any two sizes, in
/// O(log² n) hashes each instead of the O(n) of [`root`] and
/// [`consistency_proof`] (a verifier checks thousands of checkpoints).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[k][i]`: the root of leaves `i·2^k .. (i+1)·2^k`; only whole
    /// subtrees are kept, so level k has `size >> k` entries.
    levels: Vec<Vec<Hash>>,
}

/// Below this many nodes a level is hashed on one thread.
const PARALLEL_LEVEL: usize = 1 << 14;

impl Tree {
    /// Builds the levels over `leaves` (hashing large levels on rayon's
    /// threads).
    pub fn new(leaves: Vec<Hash>) -> Tree {
        use rayon::prelude::*;
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() >= 2) {
            let level: Vec<Hash> = if below.len() < 2 * PARALLEL_LEVEL {
                below
                    .chunks_exact(2)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect()
            } else {
                below
                    .par_chunks_exact(2)
                    .with_min_len(PARALLEL_LEVEL / 4)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect()
            };
            levels.push(level);
        }
        Tree { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The whole tree's root.
    pub fn root(&self) -> Hash {
        self.range_root(0, self.size())
    }

    /// The audit path of leaf `m` in the whole tree (RFC 6962 §2.1.1), as
    /// [`inclusion_proof`] gives it; `None` when there is no such leaf.
    pub fn inclusion_proof(&self, m: u64) -> Option<Vec<Hash>> {
        if m >= self.size() {
            return None;
        }
        let mut path = Vec::new();
        self.path(m, 0, self.size(), &mut path);
        Some(path)
    }

    /// PATH(m, D[start:end]), appending in the RFC's order (leaf side first).
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_root(start, start + k));
        }
    }

    /// MTH of leaves `start..end` (RFC 6962 §2.1).
    fn range_root(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(start >> k) as usize];
        }
        let k = split(n);
        node_hash(
            &self.range_root(start, start + k),
            &self.range_root(start + k, end),
        )
    }

    /// The root of the tree's first `size` leaves.
    pub fn root_at(&self, size: u64) -> Hash {
        assert!(
            size <= self.size(),
            "no size {size} in a tree of {}",
            self.size()
        );
        self.range_root(0, size)
    }

    /// The frontier of the tree's first `size` leaves.
    pub fn frontier_at(&self, size: u64) -> Frontier {
        assert!(
            size <= self.size(),
            "no size {size} in a tree of {}",
            self.size()
        );
        let mut peaks = Vec::new();
        let mut start = 0;
        for bit in (0..64u32).rev() {
            let width = 1u64 << bit;
            if size & width != 0 {
                peaks.push(self.levels[bit as usize][(start >> bit) as usize]);
                start += width;
            }
        }
        Frontier::from_peaks(size, &peaks).expect("one peak per set bit")
    }

    /// The consistency proof from the first `m` leaves to the first `n`
    /// (RFC 6962 §2.1.2), equal to [`consistency_proof`]`(m, &leaves[..n])`.
    pub fn consistency_proof(&self, m: u64, n: u64) -> Vec<Hash> {
        assert!(m <= n && n <= self.size());
        if m == 0 || m == n {
            return Vec::new();
        }
        let mut proof = Vec::new();
        self.subproof(m, 0, n, true, &mut proof);
        proof
    }

    /// SUBPROOF(m, D[start:end], whole), appending to `out` in the RFC's order.
    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range_root(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range_root(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_root(start, start + k));
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

    #[test]
    fn the_level_tree_gives_the_recursive_roots_frontiers_and_proofs() {
        for n in 0..=70usize {
            let all = leaves(n);
            let tree = Tree::new(all.clone());
            assert_eq!(tree.size(), n as u64);
            let mut f = Frontier::default();
            for size in 0..=n {
                assert_eq!(tree.root_at(size as u64), root(&all[..size]), "root {size}");
                assert_eq!(tree.frontier_at(size as u64), f, "frontier {size}");
                if size < n {
                    f.push(all[size]);
                }
                for m in 0..=size {
                    assert_eq!(
                        tree.consistency_proof(m as u64, size as u64),
                        consistency_proof(m, &all[..size]),
                        "{m} → {size}"
                    );
                }
            }
        }
        // Large enough for the levels to be hashed on two threads.
        let all = leaves(3 * PARALLEL_LEVEL + 5);
        let tree = Tree::new(all.clone());
        assert_eq!(tree.root_at(all.len() as u64), root(&all));
        let (m, n) = (PARALLEL_LEVEL as u64 + 3, all.len() as u64 - 1);
        assert_eq!(
            tree.consistency_proof(m, n),
            consistency_proof(m as usize, &all[..n as usize])
        );
    }
}
