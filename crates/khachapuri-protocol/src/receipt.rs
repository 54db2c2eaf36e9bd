//! The receipt of a paid response, signed by the provider's payee key: the raw material for reputation.
//!
//! Two versions, one [`SignedReceipt`]: `kr1.` is signed alone (an EIP-712 signature over the
//! [`Receipt`]); `kr2.` is signed in a group, by group commit: one signature over a [`ReceiptGroup`], the
//! Merkle root ([`crate::merkle`]) of the receipts that became ready together, and each receipt carries
//! its inclusion proof. Agents send `kr2.`; [`SignedReceipt::decode`] reads both, and
//! [`SignedReceipt::verify`] checks either.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    signers::local::PrivateKeySigner,
    sol_types::{Eip712Domain, SolStruct, SolValue},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

alloy::sol! {
    /// What the provider attests: for `payer`, request `requestDigest` to spec `spec` was answered with
    /// `responseDigest` at `price`; `sequence` numbers the provider's claims.
    #[derive(Debug, PartialEq, Eq)]
    struct Receipt {
        address provider;
        address payer;
        string spec;
        uint256 price;
        uint64 sequence;
        bytes32 requestDigest;
        bytes32 responseDigest;
    }

    /// What one `kr2.` signature covers: the Merkle root of the EIP-712 struct hashes of a group of
    /// [`Receipt`]s.
    #[derive(Debug, PartialEq, Eq)]
    struct ReceiptGroup {
        bytes32 root;
    }
}

impl Receipt {
    /// `hashStruct(receipt)`: [`SolStruct::eip712_hash_struct`] with the type hash computed once, where
    /// alloy hashes the type string again on every call (two of a paid response's keccaks).
    pub fn struct_hash(&self) -> B256 {
        static TYPE_HASH: std::sync::LazyLock<B256> =
            std::sync::LazyLock::new(|| keccak256(Receipt::eip712_encode_type().as_bytes()));
        let mut preimage = Vec::with_capacity(32 * 8);
        preimage.extend_from_slice(TYPE_HASH.as_slice());
        preimage.extend_from_slice(&self.eip712_encode_data());
        keccak256(preimage)
    }
}

impl ReceiptGroup {
    /// `hashStruct(group)`, with the type hash computed once (as [`Receipt::struct_hash`]).
    pub fn struct_hash(&self) -> B256 {
        static TYPE_HASH: std::sync::LazyLock<B256> =
            std::sync::LazyLock::new(|| keccak256(ReceiptGroup::eip712_encode_type().as_bytes()));
        let mut preimage = [0u8; 64];
        preimage[..32].copy_from_slice(TYPE_HASH.as_slice());
        preimage[32..].copy_from_slice(self.root.as_slice());
        keccak256(preimage)
    }
}

/// `keccak256(abi.encode(method, pathAndQuery, keccak256(body)))`, as Solidity's `abi.encode` of the three
/// values (no outer tuple offset): test/Vectors.t.sol computes it in Solidity.
pub fn request_digest(method: &str, path_and_query: &str, body: &[u8]) -> B256 {
    keccak256(
        (
            method.to_owned(),
            path_and_query.to_owned(),
            keccak256(body),
        )
            .abi_encode_params(),
    )
}

/// `keccak256(abi.encode(status, keccak256(body)))`.
pub fn response_digest(status: u16, body: &[u8]) -> B256 {
    keccak256((U256::from(status), keccak256(body)).abi_encode_params())
}

/// Prefix of a receipt signed alone (version 1).
pub const RECEIPT_PREFIX_V1: &str = "kr1.";
/// Prefix of a receipt signed in a group (version 2): what agents send.
pub const RECEIPT_PREFIX: &str = "kr2.";
/// Fixed-size head of an encoded receipt: provider 20, payer 20, price 32, sequence 8, two digests 64,
/// signature 65.
const RECEIPT_HEAD: usize = 20 + 20 + 32 + 8 + 64 + 65;
/// The longest inclusion proof a `kr2.` receipt may carry: groups of up to 65,536 receipts.
pub const MAX_PROOF: usize = 16;

/// A receipt with the provider's signature, as sent in `X-Khachapuri-Receipt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The attested fields.
    pub receipt: Receipt,
    /// EIP-712 signature in the escrow's domain, `r ‖ s ‖ v`.
    pub signature: alloy::primitives::Bytes,
    /// `None`: `kr1.`, the signature is over the receipt itself. `Some`: `kr2.`, the signature is over the
    /// [`ReceiptGroup`] whose root this proof leads to from the receipt's struct hash (empty: a group of
    /// one, whose root is that hash).
    pub proof: Option<Vec<B256>>,
}

/// Signs receipts with the payee key, a group at a time ([`ReceiptSigner::sign_group`]). It uses
/// libsecp256k1 (22 µs a signature here, where k256 takes 32); RFC 6979 makes the signature the same
/// bytes alloy's signer makes.
pub struct ReceiptSigner {
    address: Address,
    key: secp256k1::SecretKey,
    context: secp256k1::Secp256k1<secp256k1::SignOnly>,
    /// The escrow domain's EIP-712 separator, hashed once rather than per receipt.
    separator: B256,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    /// A signer for receipts in the escrow's EIP-712 `domain`.
    pub fn new(signer: &PrivateKeySigner, domain: Eip712Domain) -> Self {
        let key = secp256k1::SecretKey::from_byte_array(signer.to_bytes().0)
            .unwrap_or_else(|_| unreachable!("a PrivateKeySigner holds a valid secp256k1 scalar"));
        let separator = domain.separator();
        Self {
            address: signer.address(),
            key,
            context: secp256k1::Secp256k1::signing_only(),
            separator,
        }
    }

    /// The payee address receipts are signed by.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `receipt` alone (`kr2.`, a group of one).
    pub fn sign(&self, receipt: Receipt) -> SignedReceipt {
        let root = receipt.struct_hash();
        SignedReceipt {
            signature: self.sign_struct(ReceiptGroup { root }.struct_hash()),
            receipt,
            proof: Some(Vec::new()),
        }
    }

    /// Signs `receipts` with one signature over their [`ReceiptGroup`] (`kr2.`), in their order.
    ///
    /// # Panics
    ///
    /// With more than 2^[`MAX_PROOF`] receipts: their proofs would be longer than a receipt may carry.
    pub fn sign_group(&self, receipts: Vec<Receipt>) -> Vec<SignedReceipt> {
        assert!(
            receipts.len() <= 1 << MAX_PROOF,
            "a group holds at most 2^{MAX_PROOF} receipts"
        );
        let leaves: Vec<B256> = receipts.iter().map(Receipt::struct_hash).collect();
        let (root, proofs) = crate::merkle::tree(&leaves);
        let signature = self.sign_struct(ReceiptGroup { root }.struct_hash());
        receipts
            .into_iter()
            .zip(proofs)
            .map(|(receipt, proof)| SignedReceipt {
                receipt,
                signature: signature.clone(),
                proof: Some(proof),
            })
            .collect()
    }

    /// Signs an EIP-712 struct hash in the escrow's domain (`eip712_signing_hash`, with the separator
    /// computed once).
    fn sign_struct(&self, hash_struct: B256) -> alloy::primitives::Bytes {
        let mut preimage = [0u8; 66];
        preimage[..2].copy_from_slice(&[0x19, 0x01]);
        preimage[2..34].copy_from_slice(self.separator.as_slice());
        preimage[34..].copy_from_slice(hash_struct.as_slice());
        let digest = secp256k1::Message::from_digest(keccak256(preimage).0);
        let (id, rs) = self
            .context
            .sign_ecdsa_recoverable(digest, &self.key)
            .serialize_compact();
        let mut signature = rs.to_vec();
        signature.push(27 + u8::from(i32::from(id) == 1));
        signature.into()
    }
}

impl SignedReceipt {
    /// The header value: `kr2.` + base64url of provider ‖ payer ‖ price (32) ‖ sequence (8) ‖
    /// requestDigest ‖ responseDigest ‖ signature (65) ‖ proof length (1) ‖ proof (32 each) ‖ spec
    /// (UTF-8); `kr1.` has no proof length nor proof. About 360 characters alone, 43 more per level of
    /// proof, where JSON took over 600: it rides on every paid response, and HTTP/2 (the tunnel)
    /// Huffman-codes it each time.
    pub fn encode(&self) -> String {
        let r = &self.receipt;
        let proof = self.proof.as_deref().unwrap_or_default();
        let mut bytes = Vec::with_capacity(RECEIPT_HEAD + 1 + 32 * proof.len() + r.spec.len());
        bytes.extend_from_slice(r.provider.as_slice());
        bytes.extend_from_slice(r.payer.as_slice());
        bytes.extend_from_slice(&r.price.to_be_bytes::<32>());
        bytes.extend_from_slice(&r.sequence.to_be_bytes());
        bytes.extend_from_slice(r.requestDigest.as_slice());
        bytes.extend_from_slice(r.responseDigest.as_slice());
        bytes.extend_from_slice(&self.signature);
        if let Some(proof) = &self.proof {
            bytes.push(u8::try_from(proof.len()).unwrap_or(u8::MAX));
            proof
                .iter()
                .for_each(|p| bytes.extend_from_slice(p.as_slice()));
        }
        bytes.extend_from_slice(r.spec.as_bytes());
        let prefix = match self.proof {
            Some(_) => RECEIPT_PREFIX,
            None => RECEIPT_PREFIX_V1,
        };
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses [`SignedReceipt::encode`]'s output, `kr2.` or `kr1.`.
    pub fn decode(text: &str) -> Option<Self> {
        let text = text.trim();
        let (grouped, body) = match text.strip_prefix(RECEIPT_PREFIX) {
            Some(body) => (true, body),
            None => (false, text.strip_prefix(RECEIPT_PREFIX_V1)?),
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < RECEIPT_HEAD {
            return None;
        }
        let (head, mut spec) = bytes.split_at(RECEIPT_HEAD);
        let proof = match grouped {
            false => None,
            true => {
                let (&levels, rest) = spec.split_first()?;
                let levels = usize::from(levels);
                if levels > MAX_PROOF || rest.len() < 32 * levels {
                    return None;
                }
                let (proof, rest) = rest.split_at(32 * levels);
                spec = rest;
                Some(proof.chunks(32).map(B256::from_slice).collect())
            }
        };
        let b256 = |at: usize| B256::from_slice(&head[at..at + 32]);
        let receipt = Receipt {
            provider: Address::from_slice(&head[..20]),
            payer: Address::from_slice(&head[20..40]),
            price: U256::from_be_slice(&head[40..72]),
            sequence: u64::from_be_bytes(head[72..80].try_into().ok()?),
            requestDigest: b256(80),
            responseDigest: b256(112),
            spec: std::str::from_utf8(spec).ok()?.to_owned(),
        };
        Some(Self {
            receipt,
            signature: head[144..].to_vec().into(),
            proof,
        })
    }

    /// The EIP-712 digest its signature is over: the receipt's own (`kr1.`), or its group's, whose root
    /// the proof leads to (`kr2.`).
    pub fn signing_hash(&self, domain: &Eip712Domain) -> B256 {
        match &self.proof {
            None => self.receipt.eip712_signing_hash(domain),
            Some(proof) => ReceiptGroup {
                root: crate::merkle::process_proof(self.receipt.struct_hash(), proof),
            }
            .eip712_signing_hash(domain),
        }
    }

    /// Who signed it (to compare with the provider's payee).
    pub fn signer(&self, domain: &Eip712Domain) -> Option<Address> {
        let sig = alloy::primitives::Signature::try_from(self.signature.as_ref()).ok()?;
        sig.recover_address_from_prehash(&self.signing_hash(domain))
            .ok()
    }

    /// Checks it against what the checker knows of the call: signed in `domain` by `expected.provider`,
    /// and every field it names that the checker knows ([`Expected`]); the first mismatch found.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        expected: &Expected<'_>,
    ) -> Result<(), &'static str> {
        let r = &self.receipt;
        if self.signer(domain) != Some(expected.provider) {
            return Err("not signed by the provider's payee");
        }
        if r.provider != expected.provider {
            return Err("names another provider");
        }
        if expected.payer.is_some_and(|p| p != r.payer) {
            return Err("names another payer than the answer");
        }
        if r.spec != expected.spec {
            return Err("names another spec");
        }
        if expected.price.is_some_and(|p| p != r.price) {
            return Err("names another price than the answer");
        }
        if expected
            .request_digest
            .is_some_and(|d| d != r.requestDigest)
        {
            return Err("is for another request");
        }
        Ok(())
    }
}

/// What a checker knows of a call, to verify its receipt against ([`SignedReceipt::verify`]).
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The provider's payee.
    pub provider: Address,
    /// The spec's CID, canonical.
    pub spec: &'a str,
    /// The payer the answer named (`X-Khachapuri-Payer`), if known.
    pub payer: Option<Address>,
    /// The price the answer named (`X-Khachapuri-Price`), base units, if known.
    pub price: Option<U256>,
    /// [`request_digest`] of the request sent, if known.
    pub request_digest: Option<B256>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use alloy::signers::SignerSync;

    use super::*;

    #[test]
    fn libsecp256k1_signs_the_bytes_alloy_signs_and_the_header_round_trips() {
        let domain = crate::eip712::domain(31337, Address::repeat_byte(0xe5));
        for _ in 0..32 {
            let key = PrivateKeySigner::random();
            let receipt = Receipt {
                provider: key.address(),
                payer: Address::repeat_byte(7),
                spec: "bafy".into(),
                price: U256::from(10_000),
                sequence: u64::from_be_bytes(B256::random()[..8].try_into().unwrap()),
                requestDigest: B256::random(),
                responseDigest: B256::random(),
            };
            let signed = ReceiptSigner::new(&key, domain.clone()).sign(receipt.clone());
            let group = ReceiptGroup {
                root: receipt.eip712_hash_struct(),
            };
            assert_eq!(receipt.struct_hash(), group.root, "the cached type hash");
            assert_eq!(group.struct_hash(), group.eip712_hash_struct());
            let alloy = key
                .sign_hash_sync(&group.eip712_signing_hash(&domain))
                .unwrap();
            assert_eq!(signed.signature.as_ref(), alloy.as_bytes().as_slice());
            assert_eq!(signed.signer(&domain), Some(key.address()));
            let header = signed.encode();
            assert!(
                header.starts_with(RECEIPT_PREFIX) && header.len() < 400,
                "{header}"
            );
            assert_eq!(SignedReceipt::decode(&header), Some(signed));
            assert_eq!(SignedReceipt::decode(&header[..120]), None, "truncated");
            assert_eq!(SignedReceipt::decode(&header[4..]), None, "no prefix");

            // A receipt signed alone, as version 1 did, still decodes and verifies.
            let alone = SignedReceipt {
                signature: key
                    .sign_hash_sync(&receipt.eip712_signing_hash(&domain))
                    .unwrap()
                    .as_bytes()
                    .to_vec()
                    .into(),
                receipt,
                proof: None,
            };
            let header = alone.encode();
            assert!(header.starts_with(RECEIPT_PREFIX_V1), "{header}");
            let decoded = SignedReceipt::decode(&header).unwrap();
            assert_eq!(decoded.signer(&domain), Some(key.address()));
            assert_eq!(decoded, alone);
        }
    }

    fn receipt(provider: Address, sequence: u64) -> Receipt {
        Receipt {
            provider,
            payer: Address::repeat_byte(7),
            spec: "bafy".into(),
            price: U256::from(10_000),
            sequence,
            requestDigest: request_digest("POST", "/bafy", &sequence.to_be_bytes()),
            responseDigest: B256::ZERO,
        }
    }

    #[test]
    fn one_signature_covers_a_group_and_each_receipt_verifies_alone() {
        let domain = crate::eip712::domain(31337, Address::repeat_byte(0xe5));
        let key = PrivateKeySigner::random();
        let signer = ReceiptSigner::new(&key, domain.clone());
        for n in [1, 2, 3, 7, 64] {
            let group = signer.sign_group((0..n).map(|i| receipt(key.address(), i)).collect());
            assert_eq!(group.len(), n as usize);
            assert!(group.iter().all(|g| g.signature == group[0].signature));
            for signed in &group {
                let decoded = SignedReceipt::decode(&signed.encode()).unwrap();
                assert_eq!(&decoded, signed);
                assert_eq!(decoded.signer(&domain), Some(key.address()), "{n}");
                let expected = Expected {
                    provider: key.address(),
                    spec: "bafy",
                    payer: Some(Address::repeat_byte(7)),
                    price: Some(U256::from(10_000)),
                    request_digest: Some(signed.receipt.requestDigest),
                };
                assert_eq!(decoded.verify(&domain, &expected), Ok(()));
            }
            if n > 1 {
                // A receipt moved to another's proof, or a forged one with a real proof, recovers a
                // stranger.
                let mut swapped = group[0].clone();
                swapped.proof = group[1].proof.clone();
                assert_ne!(swapped.signer(&domain), Some(key.address()));
                let mut forged = group[0].clone();
                forged.receipt.price = U256::from(1);
                assert_ne!(forged.signer(&domain), Some(key.address()));
                let mut cut = group[0].clone();
                cut.proof.as_mut().unwrap().pop();
                assert_ne!(cut.signer(&domain), Some(key.address()));
            }
        }
        // A proof longer than any group is refused at decoding.
        let mut long = signer.sign(receipt(key.address(), 1));
        long.proof = Some(vec![B256::ZERO; MAX_PROOF + 1]);
        assert_eq!(SignedReceipt::decode(&long.encode()), None);
        long.proof = Some(vec![B256::ZERO; MAX_PROOF]);
        assert!(SignedReceipt::decode(&long.encode()).is_some());
    }

    #[test]
    fn a_receipt_verifies_only_against_its_own_call() {
        let domain = crate::eip712::domain(31337, Address::repeat_byte(0xe5));
        let key = PrivateKeySigner::random();
        let digest = request_digest("POST", "/bafy", b"hi");
        let receipt = Receipt {
            provider: key.address(),
            payer: Address::repeat_byte(7),
            spec: "bafy".into(),
            price: U256::from(10_000),
            sequence: 1,
            requestDigest: digest,
            responseDigest: B256::ZERO,
        };
        let signed = ReceiptSigner::new(&key, domain.clone()).sign(receipt);
        let expected = Expected {
            provider: key.address(),
            spec: "bafy",
            payer: Some(Address::repeat_byte(7)),
            price: Some(U256::from(10_000)),
            request_digest: Some(digest),
        };
        assert_eq!(signed.verify(&domain, &expected), Ok(()));
        let other = crate::eip712::domain(1, Address::repeat_byte(0xe5));
        assert!(signed.verify(&other, &expected).is_err(), "another domain");
        for wrong in [
            Expected {
                provider: Address::repeat_byte(1),
                ..expected.clone()
            },
            Expected {
                payer: Some(Address::repeat_byte(8)),
                ..expected.clone()
            },
            Expected {
                spec: "bafyother",
                ..expected.clone()
            },
            Expected {
                price: Some(U256::from(1)),
                ..expected.clone()
            },
            Expected {
                request_digest: Some(request_digest("POST", "/bafy", b"ho")),
                ..expected.clone()
            },
        ] {
            assert!(signed.verify(&domain, &wrong).is_err(), "{wrong:?}");
        }
    }
}
