//! The receipt of a paid response, signed by the provider's payee key: the raw material for reputation.

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

/// Prefix of an encoded receipt (version 1).
pub const RECEIPT_PREFIX: &str = "kr1.";
/// Fixed-size head of an encoded receipt: provider 20, payer 20, price 32, sequence 8, two digests 64,
/// signature 65.
const RECEIPT_HEAD: usize = 20 + 20 + 32 + 8 + 64 + 65;

/// A receipt with the provider's signature, as sent in `X-Khachapuri-Receipt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The attested fields.
    pub receipt: Receipt,
    /// EIP-712 signature in the escrow's domain, hex.
    pub signature: alloy::primitives::Bytes,
}

/// Signs receipts with the payee key. One signature per paid response, so it uses libsecp256k1 (22 µs
/// here, where k256 takes 32); RFC 6979 makes the signature the same bytes alloy's signer makes.
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

    /// Signs `receipt`.
    pub fn sign(&self, receipt: Receipt) -> SignedReceipt {
        // `eip712_signing_hash`, with the separator computed once.
        let mut preimage = [0u8; 66];
        preimage[..2].copy_from_slice(&[0x19, 0x01]);
        preimage[2..34].copy_from_slice(self.separator.as_slice());
        preimage[34..].copy_from_slice(receipt.eip712_hash_struct().as_slice());
        let digest = secp256k1::Message::from_digest(keccak256(preimage).0);
        let (id, rs) = self
            .context
            .sign_ecdsa_recoverable(digest, &self.key)
            .serialize_compact();
        let mut signature = rs.to_vec();
        signature.push(27 + u8::from(i32::from(id) == 1));
        SignedReceipt {
            receipt,
            signature: signature.into(),
        }
    }
}

impl SignedReceipt {
    /// The header value: `kr1.` + base64url of provider ‖ payer ‖ price (32) ‖ sequence (8) ‖
    /// requestDigest ‖ responseDigest ‖ signature (65) ‖ spec (UTF-8), the layout of the `kp1.` payer
    /// token. About 360 characters, where JSON took over 600: it rides on every paid response, and
    /// HTTP/2 (the tunnel) Huffman-codes it each time.
    pub fn encode(&self) -> String {
        let r = &self.receipt;
        let mut bytes = Vec::with_capacity(RECEIPT_HEAD + r.spec.len());
        bytes.extend_from_slice(r.provider.as_slice());
        bytes.extend_from_slice(r.payer.as_slice());
        bytes.extend_from_slice(&r.price.to_be_bytes::<32>());
        bytes.extend_from_slice(&r.sequence.to_be_bytes());
        bytes.extend_from_slice(r.requestDigest.as_slice());
        bytes.extend_from_slice(r.responseDigest.as_slice());
        bytes.extend_from_slice(&self.signature);
        bytes.extend_from_slice(r.spec.as_bytes());
        format!("{RECEIPT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses [`SignedReceipt::encode`]'s output.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().strip_prefix(RECEIPT_PREFIX)?)
            .ok()?;
        if bytes.len() < RECEIPT_HEAD {
            return None;
        }
        let (head, spec) = bytes.split_at(RECEIPT_HEAD);
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
        })
    }

    /// Who signed it (to compare with the provider's payee).
    pub fn signer(&self, domain: &Eip712Domain) -> Option<Address> {
        let sig = alloy::primitives::Signature::try_from(self.signature.as_ref()).ok()?;
        sig.recover_address_from_prehash(&self.receipt.eip712_signing_hash(domain))
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
            let alloy = key
                .sign_hash_sync(&receipt.eip712_signing_hash(&domain))
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
        }
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
