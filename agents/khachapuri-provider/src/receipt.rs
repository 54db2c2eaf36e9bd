//! The receipt of a paid response, signed by the provider's payee key: the raw material for reputation.

use alloy::{
    primitives::{Address, B256, U256, keccak256},
    signers::{SignerSync, local::PrivateKeySigner},
    sol_types::{Eip712Domain, SolStruct, SolValue},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

alloy::sol! {
    /// What the provider attests: for `payer`, request `requestDigest` to spec `spec` was answered with
    /// `responseDigest` at `price`; `sequence` numbers the provider's claims.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// `keccak256(abi.encode(method, pathAndQuery, keccak256(body)))`.
pub fn request_digest(method: &str, path_and_query: &str, body: &[u8]) -> B256 {
    keccak256((method.to_owned(), path_and_query.to_owned(), keccak256(body)).abi_encode())
}

/// `keccak256(abi.encode(status, keccak256(body)))`.
pub fn response_digest(status: u16, body: &[u8]) -> B256 {
    keccak256((U256::from(status), keccak256(body)).abi_encode())
}

/// A receipt with the provider's signature, as sent in `X-Khachapuri-Receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The attested fields.
    pub receipt: Receipt,
    /// EIP-712 signature in the escrow's domain, hex.
    pub signature: alloy::primitives::Bytes,
}

impl SignedReceipt {
    /// Signs `receipt` with the payee key.
    pub fn sign(receipt: Receipt, signer: &PrivateKeySigner, domain: &Eip712Domain) -> Result<Self, String> {
        let sig = signer.sign_hash_sync(&receipt.eip712_signing_hash(domain)).map_err(|e| e.to_string())?;
        Ok(Self { receipt, signature: sig.as_bytes().to_vec().into() })
    }

    /// The header value: base64url of the JSON.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a header value.
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
    }

    /// Who signed it (to compare with the provider's payee).
    pub fn signer(&self, domain: &Eip712Domain) -> Option<Address> {
        let sig = alloy::primitives::Signature::try_from(self.signature.as_ref()).ok()?;
        sig.recover_address_from_prehash(&self.receipt.eip712_signing_hash(domain)).ok()
    }
}
