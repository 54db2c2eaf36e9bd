//! CIDs, codecs and block verification.

use cid::Cid;
use cid::multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of raw blocks.
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb blocks.
pub const DAG_PB: u64 = 0x70;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// Why a block or CID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The CID string or bytes do not parse.
    #[error("malformed CID {input:?}: {reason}")]
    MalformedCid {
        /// What was given.
        input: String,
        /// What the parser said.
        reason: String,
    },
    /// The CID names a codec this crate does not read (only raw and dag-pb).
    #[error("unsupported codec 0x{codec:x} in CID {cid} (only raw 0x55 and dag-pb 0x70)")]
    UnsupportedCodec {
        /// The CID.
        cid: Cid,
        /// Its codec.
        codec: u64,
    },
    /// The CID names a hash function this crate does not verify (only sha2-256).
    #[error("unsupported multihash 0x{code:x} in CID {cid} (only sha2-256 0x12)")]
    UnsupportedHash {
        /// The CID.
        cid: Cid,
        /// Its multihash code.
        code: u64,
    },
    /// The bytes do not hash to the CID.
    #[error("block does not match CID {cid}: content hashes to {actual}")]
    HashMismatch {
        /// The CID asked for.
        cid: Cid,
        /// The hex sha2-256 of what was received.
        actual: String,
    },
}

/// Parses a CID string (CIDv1 multibase or CIDv0 `Qm…`), also accepting a `/ipfs/` prefix.
pub fn parse_cid(input: &str) -> Result<Cid, BlockError> {
    let trimmed = input.trim().trim_start_matches("/ipfs/");
    let trimmed = trimmed.split('/').next().unwrap_or_default();
    trimmed
        .parse::<Cid>()
        .map_err(|e| BlockError::MalformedCid {
            input: input.to_string(),
            reason: e.to_string(),
        })
}

/// Checks that the CID uses a codec and hash this crate can verify and walk.
pub fn check_supported(cid: &Cid) -> Result<(), BlockError> {
    let code = cid.hash().code();
    if code != SHA2_256 || cid.hash().size() != 32 {
        return Err(BlockError::UnsupportedHash { cid: *cid, code });
    }
    match cid.codec() {
        RAW | DAG_PB => Ok(()),
        codec => Err(BlockError::UnsupportedCodec { cid: *cid, codec }),
    }
}

/// The sha2-256 multihash of `data`.
pub fn sha256_multihash(data: &[u8]) -> Multihash<64> {
    let digest = Sha256::digest(data);
    // A 32-byte digest always fits a 64-byte multihash.
    Multihash::wrap(SHA2_256, &digest).unwrap_or_default()
}

/// The CIDv1 of `data` under `codec`, hashed with sha2-256.
pub fn cid_of(codec: u64, data: &[u8]) -> Cid {
    Cid::new_v1(codec, sha256_multihash(data))
}

/// Verifies that `data` is the block named by `cid` (supported codec, sha2-256, same digest).
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    check_supported(cid)?;
    let digest = Sha256::digest(data);
    if digest[..] == *cid.hash().digest() {
        Ok(())
    } else {
        Err(BlockError::HashMismatch {
            cid: *cid,
            actual: hex(&digest),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_raw_block_cid() {
        assert_eq!(
            cid_of(RAW, b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn verify_and_errors() {
        let cid = cid_of(RAW, b"hello");
        verify(&cid, b"hello").expect("matches");
        assert!(matches!(
            verify(&cid, b"hellO"),
            Err(BlockError::HashMismatch { .. })
        ));
        let cbor = Cid::new_v1(0x71, sha256_multihash(b"x"));
        assert!(matches!(
            verify(&cbor, b"x"),
            Err(BlockError::UnsupportedCodec { codec: 0x71, .. })
        ));
        let err = parse_cid("not-a-cid").expect_err("malformed");
        assert!(err.to_string().contains("malformed CID"));
        assert_eq!(parse_cid(&format!("/ipfs/{cid}")).expect("prefix ok"), cid);
    }
}
