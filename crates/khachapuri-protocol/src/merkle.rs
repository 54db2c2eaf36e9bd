//! Merkle trees over 32-byte leaves, as OpenZeppelin's `MerkleProof.processProof` verifies them.
//!
//! A pair hashes as `keccak256(min(a, b) ‖ max(a, b))` (commutative), so a proof is the list of siblings
//! from the leaf up, with no left/right flags. A level's last node without a sibling moves up unchanged and
//! adds nothing to its proof. A tree of one leaf has that leaf as its root and an empty proof.
//!
//! The leaves used here are EIP-712 struct hashes (`keccak256` of a type hash and at least one more
//! word), so no leaf can be passed off as an inner node's 64-byte preimage or the reverse.

use alloy::primitives::{B256, keccak256};

/// `keccak256` of the two nodes, the smaller first.
pub fn hash_pair(a: B256, b: B256) -> B256 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(low.as_slice());
    both[32..].copy_from_slice(high.as_slice());
    keccak256(both)
}

/// The root that `leaf` and its `proof` lead to.
pub fn process_proof(leaf: B256, proof: &[B256]) -> B256 {
    proof
        .iter()
        .fold(leaf, |node, sibling| hash_pair(node, *sibling))
}

/// The root of `leaves` and each leaf's proof, in the leaves' order (no leaves: a zero root).
pub fn tree(leaves: &[B256]) -> (B256, Vec<Vec<B256>>) {
    let mut proofs = vec![Vec::new(); leaves.len()];
    let mut level = leaves.to_vec();
    // The leaves under each node of `level`: a contiguous range, since pairs are adjacent.
    let mut under: Vec<std::ops::Range<usize>> = (0..leaves.len()).map(|i| i..i + 1).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut next_under = Vec::with_capacity(next.capacity());
        for (nodes, ranges) in level.chunks(2).zip(under.chunks(2)) {
            match (nodes, ranges) {
                ([left, right], [l, r]) => {
                    l.clone().for_each(|leaf| proofs[leaf].push(*right));
                    r.clone().for_each(|leaf| proofs[leaf].push(*left));
                    next.push(hash_pair(*left, *right));
                    next_under.push(l.start..r.end);
                }
                _ => {
                    next.push(nodes[0]);
                    next_under.push(ranges[0].clone());
                }
            }
        }
        level = next;
        under = next_under;
    }
    (level.first().copied().unwrap_or_default(), proofs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_the_root_and_only_its_own_place() {
        for n in 1..=33 {
            let leaves: Vec<B256> = (0..n).map(|_| B256::random()).collect();
            let (root, proofs) = tree(&leaves);
            for (leaf, proof) in leaves.iter().zip(&proofs) {
                assert_eq!(process_proof(*leaf, proof), root, "{n} leaves");
                assert!(proof.len() <= (n as f64).log2().ceil() as usize);
            }
            if n > 1 {
                assert_ne!(
                    process_proof(leaves[0], &proofs[1]),
                    root,
                    "another's proof"
                );
                assert_ne!(
                    process_proof(B256::random(), &proofs[0]),
                    root,
                    "a stranger"
                );
            }
        }
        assert_eq!(tree(&[B256::repeat_byte(7)]).0, B256::repeat_byte(7));
    }

    #[test]
    fn a_pair_hashes_as_openzeppelin_commutative_keccak256() {
        let (a, b) = (B256::repeat_byte(2), B256::repeat_byte(1));
        let mut both = [1u8; 64];
        both[32..].fill(2);
        assert_eq!(hash_pair(a, b), keccak256(both));
        assert_eq!(hash_pair(a, b), hash_pair(b, a));
    }
}
