//! The encrypted spec: a hybrid envelope, since RSA alone cannot hold a spec.
//!
//! A random AES-256-GCM key encrypts the payload; RSA-OAEP-SHA256 wraps that key for the provider's public
//! key. Layout (all integers big-endian):
//!
//! ```text
//! magic "KPSE" | version u8 = 1 | alg u8 = 1 (RSA-OAEP-SHA256 + AES-256-GCM) | key id [32] (sha256 of SPKI DER)
//! | wrapped key length u16 | wrapped key | nonce [12] | ciphertext with its 16-byte tag
//! ```
//!
//! Everything before the ciphertext is the header, authenticated as AES-GCM associated data, so no header
//! byte can be changed without the open failing. Unknown versions and algorithms are refused before any
//! decryption, and so is a key id this provider does not hold ([`EnvelopeError::AnotherKey`]: the id is in
//! the clear). Every failure after that looks the same ([`EnvelopeError::Undecryptable`]): a caller learns
//! nothing from which step failed (the `rsa` crate's 0.10 release fixes the Marvin timing attack,
//! RUSTSEC-2023-0071).

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, Generate, KeyInit, Payload},
};
use rsa::{PublicKey, sha2::Sha256};

use crate::keys::{KeyError, ProviderKey, key_id, public_key_from_der};

/// The envelope's first bytes.
pub const MAGIC: &[u8; 4] = b"KPSE";
/// The only envelope version this build reads and writes.
pub const VERSION: u8 = 1;
/// RSA-OAEP-SHA256 key wrap with AES-256-GCM content encryption.
pub const ALG_RSA_OAEP_SHA256_A256GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const FIXED_HEADER: usize = 4 + 1 + 1 + 32 + 2;

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes do not start with the envelope magic: not an encrypted spec (maybe an open one).
    #[error("not an encrypted spec envelope")]
    NotEnvelope,
    /// A newer or unknown envelope format.
    #[error(
        "envelope version {0} is not supported (this build reads version {VERSION}); upgrade the agent"
    )]
    UnsupportedVersion(u8),
    /// An unknown algorithm identifier.
    #[error("envelope algorithm {0} is not supported")]
    UnsupportedAlgorithm(u8),
    /// Sealed to an RSA key this provider does not hold: its key rotated since, or the spec was meant for
    /// another provider. The key id is in the clear header, so saying so reveals nothing.
    #[error(
        "the spec is sealed to another RSA key (key id {key_id}), not this provider's current one: sealed \
         before the provider rotated its key, or for another provider"
    )]
    AnotherKey {
        /// The envelope's key id, hex.
        key_id: String,
    },
    /// Any failure to decrypt: wrong key, tampered bytes, truncated envelope. Deliberately uninformative.
    #[error("the spec could not be decrypted with this provider's key")]
    Undecryptable,
    /// The recipient's public key is not usable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The payload is too large for one envelope, or encryption failed.
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// Whether `bytes` look like an envelope (start with the magic), as opposed to an open JSON spec.
pub fn is_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Encrypts `plaintext` for the holder of `public_key_der` (a resolver's SPKI DER record).
pub fn seal(public_key_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let public: PublicKey = public_key_from_der(public_key_der)?;
    let key = Key::<Aes256Gcm>::generate();
    let nonce = Nonce::generate();
    let wrapped = public
        .oaep_encrypt::<Sha256>(key.as_slice())
        .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
    let wrapped_len = u16::try_from(wrapped.len())
        .map_err(|_| EnvelopeError::Seal("RSA key too large".into()))?;

    let mut out =
        Vec::with_capacity(FIXED_HEADER + wrapped.len() + NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(ALG_RSA_OAEP_SHA256_A256GCM);
    out.extend_from_slice(&key_id(public_key_der));
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(nonce.as_slice());
    let ciphertext = Aes256Gcm::new(&key)
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &out,
            },
        )
        .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// The parsed, not yet authenticated, header of an envelope.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// sha256 of the recipient's public key DER.
    pub key_id: &'a [u8; 32],
    wrapped: &'a [u8],
    nonce: &'a [u8],
    header_len: usize,
}

/// Parses the header, refusing unknown versions and algorithms before any cryptography.
pub fn header(envelope: &[u8]) -> Result<Header<'_>, EnvelopeError> {
    if !is_envelope(envelope) {
        return Err(EnvelopeError::NotEnvelope);
    }
    let version = *envelope.get(4).ok_or(EnvelopeError::Undecryptable)?;
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let alg = *envelope.get(5).ok_or(EnvelopeError::Undecryptable)?;
    if alg != ALG_RSA_OAEP_SHA256_A256GCM {
        return Err(EnvelopeError::UnsupportedAlgorithm(alg));
    }
    let fixed = envelope
        .get(..FIXED_HEADER)
        .ok_or(EnvelopeError::Undecryptable)?;
    let key_id: &[u8; 32] = fixed[6..38]
        .try_into()
        .map_err(|_| EnvelopeError::Undecryptable)?;
    let wrapped_len = usize::from(u16::from_be_bytes([fixed[38], fixed[39]]));
    let wrapped_end = FIXED_HEADER + wrapped_len;
    let header_len = wrapped_end + NONCE_LEN;
    if envelope.len() < header_len + 16 {
        return Err(EnvelopeError::Undecryptable);
    }
    Ok(Header {
        key_id,
        wrapped: &envelope[FIXED_HEADER..wrapped_end],
        nonce: &envelope[wrapped_end..header_len],
        header_len,
    })
}

/// Decrypts an envelope with one of the provider's keys (several during a rotation), chosen by key id.
pub fn open(keys: &[ProviderKey], envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let header = header(envelope)?;
    let key = keys
        .iter()
        .find(|k| k.id() == header.key_id)
        .ok_or_else(|| EnvelopeError::AnotherKey {
            key_id: header.key_id.iter().map(|b| format!("{b:02x}")).collect(),
        })?;
    let content_key = key
        .private()
        .oaep_decrypt::<Sha256>(header.wrapped)
        .map_err(|_| EnvelopeError::Undecryptable)?;
    if content_key.len() != 32 {
        return Err(EnvelopeError::Undecryptable);
    }
    let nonce = Nonce::try_from(header.nonce).map_err(|_| EnvelopeError::Undecryptable)?;
    let cipher =
        Aes256Gcm::new_from_slice(&content_key).map_err(|_| EnvelopeError::Undecryptable)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &envelope[header.header_len..],
                aad: &envelope[..header.header_len],
            },
        )
        .map_err(|_| EnvelopeError::Undecryptable)
}
