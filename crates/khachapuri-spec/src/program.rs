//! The private program: a program package encrypted before it goes to IPFS, so that only the providers a
//! sealed spec is encrypted to can read it. The key travels inside the sealed spec (`programKey`); the
//! spec's `program` names the ciphertext's CID.
//!
//! The format is chunked AES-256-GCM (the STREAM construction), so a large program can be encrypted and
//! decrypted as it streams and each chunk is authenticated on its own. Layout:
//!
//! ```text
//! magic "KPPE" | version u8 = 1 | alg u8 = 1 (AES-256-GCM STREAM) | chunk size log2 u8 (10..=24)
//! | nonce prefix [7] | chunk 0 | chunk 1 | ... | last chunk
//! ```
//!
//! Every chunk holds `2^log2` bytes of the package (the last one from 0 to that many) followed by its
//! 16-byte tag. Chunk `i` is encrypted under the nonce `prefix ‖ i (u32, big-endian) ‖ last (1 for the
//! last chunk, else 0)` with the 14-byte header as associated data. So a swapped chunk fails (its index
//! is in the nonce), a cut-off ciphertext fails (its new last chunk was not sealed as last), an altered
//! header fails (it is authenticated), and a wrong key fails at chunk 0.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, Generate, KeyInit, Payload},
};
use rsa::sha2::{Digest, Sha256};

/// AES-GCM's 96-bit nonce.
type GcmNonce = Nonce<aes_gcm::aead::consts::U12>;

/// The sealed program's first bytes.
pub const MAGIC: &[u8; 4] = b"KPPE";
/// The only format version this build reads and writes.
pub const VERSION: u8 = 1;
/// AES-256-GCM in the STREAM construction.
pub const ALG_A256GCM_STREAM: u8 = 1;
/// The chunk size this build writes: 64 KiB.
pub const CHUNK_LOG2: u8 = 16;
const HEADER_LEN: usize = 4 + 1 + 1 + 1 + PREFIX_LEN;
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;

/// A program's content key: 32 random bytes, written in a spec as `0x` + 64 hex digits. Its `Debug`
/// shows only [`ProgramKey::id`].
#[derive(Clone, PartialEq, Eq)]
pub struct ProgramKey([u8; 32]);

impl ProgramKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(Key::<Aes256Gcm>::generate().into())
    }

    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's public name: hex of `SHA-256("khachapuri program key id" ‖ key)`, all 32 bytes (no
    /// other key can be found with the same one). Tells keys apart, in a cache key or a log line, without
    /// revealing them.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"khachapuri program key id");
        hash.update(self.0);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ProgramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProgramKey(id {}…)", &self.id()[..16])
    }
}

impl serde::Serialize for ProgramKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&alloy::primitives::B256::from(self.0).to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ProgramKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<alloy::primitives::B256>()
            .map(|b| Self(b.0))
            .map_err(|_| {
                serde::de::Error::custom("programKey: expected 0x and 64 hex digits (32 bytes)")
            })
    }
}

/// Why a sealed program could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramSealError {
    /// The bytes do not start with the magic: a plain package, not a sealed one.
    #[error("the program is not encrypted (no KPPE header)")]
    NotSealed,
    /// A newer or unknown format.
    #[error("sealed program version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// An unknown algorithm.
    #[error("sealed program algorithm {0} is not supported")]
    UnsupportedAlgorithm(u8),
    /// A chunk size outside 1 KiB..16 MiB.
    #[error("sealed program chunk size 2^{0} is outside 2^10..2^24")]
    BadChunkSize(u8),
    /// Shorter than a header and one tag.
    #[error("the sealed program is cut short ({0} bytes)")]
    Truncated(usize),
    /// A chunk that does not authenticate: a wrong key, or altered, swapped or cut-off bytes.
    #[error(
        "chunk {0} of the sealed program does not authenticate: a wrong key, or altered, swapped or cut-off bytes"
    )]
    Undecryptable(usize),
    /// The package would be larger than the caller accepts (or than the format holds: 2^32 chunks).
    #[error("the sealed program opens to more than {0} bytes")]
    TooLarge(usize),
}

/// Whether `bytes` start like a sealed program.
pub fn is_sealed_program(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn nonce(prefix: &[u8], index: u32, last: bool) -> GcmNonce {
    let mut bytes = [0u8; 12];
    bytes[..PREFIX_LEN].copy_from_slice(prefix);
    bytes[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    GcmNonce::from(bytes)
}

/// Encrypts a program package under `key`, in chunks of 2^[`CHUNK_LOG2`] bytes.
pub fn seal_program(key: &ProgramKey, package: &[u8]) -> Result<Vec<u8>, ProgramSealError> {
    seal_program_in_chunks(key, package, CHUNK_LOG2)
}

/// Encrypts a program package under `key`, in chunks of 2^`chunk_log2` bytes (10..=24; every reader
/// accepts any of them, [`seal_program`] writes [`CHUNK_LOG2`]).
pub fn seal_program_in_chunks(
    key: &ProgramKey,
    package: &[u8],
    chunk_log2: u8,
) -> Result<Vec<u8>, ProgramSealError> {
    if !(10..=24).contains(&chunk_log2) {
        return Err(ProgramSealError::BadChunkSize(chunk_log2));
    }
    let chunk = 1usize << chunk_log2;
    let prefix: [u8; PREFIX_LEN] = {
        let random = GcmNonce::generate();
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(&random.as_slice()[..PREFIX_LEN]);
        p
    };
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[VERSION, ALG_A256GCM_STREAM, chunk_log2]);
    header.extend_from_slice(&prefix);
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key.0));
    let chunks = package.len().div_ceil(chunk).max(1);
    let mut out = Vec::with_capacity(HEADER_LEN + package.len() + chunks * TAG_LEN);
    out.extend_from_slice(&header);
    for i in 0..chunks {
        let part = &package[(i * chunk).min(package.len())..((i + 1) * chunk).min(package.len())];
        let index = u32::try_from(i).map_err(|_| ProgramSealError::TooLarge(package.len()))?;
        let sealed = cipher
            .encrypt(
                &nonce(&prefix, index, i + 1 == chunks),
                Payload {
                    msg: part,
                    aad: &header,
                },
            )
            .map_err(|_| ProgramSealError::TooLarge(package.len()))?;
        out.extend_from_slice(&sealed);
    }
    Ok(out)
}

/// Decrypts a sealed program with `key`, refusing to produce more than `max_len` bytes.
pub fn open_program(
    key: &ProgramKey,
    sealed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, ProgramSealError> {
    if !is_sealed_program(sealed) {
        return Err(ProgramSealError::NotSealed);
    }
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(ProgramSealError::Truncated(sealed.len()));
    }
    let (header, body) = sealed.split_at(HEADER_LEN);
    if header[4] != VERSION {
        return Err(ProgramSealError::UnsupportedVersion(header[4]));
    }
    if header[5] != ALG_A256GCM_STREAM {
        return Err(ProgramSealError::UnsupportedAlgorithm(header[5]));
    }
    let log2 = header[6];
    if !(10..=24).contains(&log2) {
        return Err(ProgramSealError::BadChunkSize(log2));
    }
    let sealed_chunk = (1usize << log2) + TAG_LEN;
    let chunks = body.len().div_ceil(sealed_chunk);
    if body.len() - (chunks - 1) * sealed_chunk < TAG_LEN {
        return Err(ProgramSealError::Truncated(sealed.len()));
    }
    let plain_len = body.len() - chunks * TAG_LEN;
    if plain_len > max_len {
        return Err(ProgramSealError::TooLarge(max_len));
    }
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key.0));
    let prefix = &header[7..];
    let mut out = Vec::with_capacity(plain_len);
    for (i, part) in body.chunks(sealed_chunk).enumerate() {
        let index = u32::try_from(i).map_err(|_| ProgramSealError::Undecryptable(i))?;
        let plain = cipher
            .decrypt(
                &nonce(prefix, index, i + 1 == chunks),
                Payload {
                    msg: part,
                    aad: header,
                },
            )
            .map_err(|_| ProgramSealError::Undecryptable(i))?;
        out.extend_from_slice(&plain);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHUNK: usize = 1 << CHUNK_LOG2;
    const MAX: usize = 64 << 20;

    fn package(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        let key = ProgramKey::generate();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let plain = package(len);
            let sealed = seal_program(&key, &plain).unwrap();
            assert!(is_sealed_program(&sealed));
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG_LEN, "{len}");
            assert_eq!(open_program(&key, &sealed, MAX).unwrap(), plain, "{len}");
        }
        // Sealing twice gives other bytes (a fresh nonce prefix).
        assert_ne!(
            seal_program(&key, b"x").unwrap(),
            seal_program(&key, b"x").unwrap()
        );
    }

    #[test]
    fn a_wrong_key_and_every_tampering_fail_cleanly() {
        let key = ProgramKey::generate();
        let plain = package(3 * CHUNK + 100);
        let sealed = seal_program(&key, &plain).unwrap();
        let undecryptable = |bytes: &[u8]| open_program(&key, bytes, MAX);
        assert_eq!(
            open_program(&ProgramKey::generate(), &sealed, MAX),
            Err(ProgramSealError::Undecryptable(0))
        );
        // Cut after a whole chunk: the new last chunk was not sealed as last.
        let cut = &sealed[..HEADER_LEN + 2 * (CHUNK + TAG_LEN)];
        assert_eq!(undecryptable(cut), Err(ProgramSealError::Undecryptable(1)));
        // Cut inside the last chunk.
        assert!(undecryptable(&sealed[..sealed.len() - 1]).is_err());
        // Chunks 0 and 1 swapped.
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + CHUNK + TAG_LEN);
        let first = sealed[a..b].to_vec();
        swapped.copy_within(b..b + (b - a), a);
        swapped[b..b + (b - a)].copy_from_slice(&first);
        assert_eq!(
            undecryptable(&swapped),
            Err(ProgramSealError::Undecryptable(0))
        );
        // Any flipped byte of the header or the body.
        for at in [0, 4, 5, 6, 8, HEADER_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(undecryptable(&bad).is_err(), "byte {at}");
        }
        assert_eq!(undecryptable(b"KPPE"), Err(ProgramSealError::Truncated(4)));
        assert_eq!(undecryptable(b"\0asm"), Err(ProgramSealError::NotSealed));
        assert_eq!(
            open_program(&key, &sealed, 1000),
            Err(ProgramSealError::TooLarge(1000))
        );
    }

    #[test]
    fn the_key_reads_as_hex_and_never_shows() {
        let key = ProgramKey::from_bytes([7; 32]);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"0x{}\"", "07".repeat(32)));
        assert_eq!(serde_json::from_str::<ProgramKey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<ProgramKey>("\"0x07\"").is_err());
        assert!(!format!("{key:?}").contains("0707"));
        assert_eq!(key.id().len(), 64);
    }
}
