//! The encrypted spec: a hybrid envelope, since RSA alone cannot hold a spec.
//!
//! A random AES-256-GCM key encrypts the payload; RSA-OAEP-SHA256 wraps that key for each recipient's
//! public key: one provider (version 1), or several that may all run the spec (version 2). Layouts (all
//! integers big-endian):
//!
//! ```text
//! v1: magic "KPSE" | version u8 = 1 | alg u8 = 1 (RSA-OAEP-SHA256 + AES-256-GCM) | key id [32] (sha256 of SPKI DER)
//!     | wrapped key length u16 | wrapped key | nonce [12] | ciphertext with its 16-byte tag
//! v2: magic "KPSE" | version u8 = 2 | alg u8 = 1 | recipients u8 (2..=16)
//!     | recipients × (key id [32] | wrapped key length u16 | wrapped key)
//!     | key commitment [32] = sha256("khachapuri envelope key" ‖ content key) | nonce [12] | ciphertext with its tag
//! ```
//!
//! The commitment binds every recipient to one content key: AES-GCM alone is not key-committing, so
//! without it a deployer could wrap a different key for each recipient and craft one ciphertext that opens
//! to a different spec for each under the same CID.
//!
//! Everything before the ciphertext is the header, authenticated as AES-GCM associated data, so no header
//! byte can be changed without the open failing (nor a recipient added, dropped or swapped). Unknown
//! versions and algorithms are refused before any decryption, and so is an envelope that names no key this
//! provider holds ([`EnvelopeError::AnotherKey`]: the ids are in the clear). Every failure after that looks
//! the same ([`EnvelopeError::Undecryptable`]): a caller learns nothing from which step failed (the `rsa`
//! crate's 0.10 release fixes the Marvin timing attack, RUSTSEC-2023-0071).

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, Generate, KeyInit, Payload},
};
use rsa::{
    PublicKey,
    sha2::{Digest, Sha256},
};

use crate::keys::{KeyError, ProviderKey, key_id, public_key_from_der};

/// The envelope's first bytes.
pub const MAGIC: &[u8; 4] = b"KPSE";
/// The envelope version with one recipient.
pub const VERSION: u8 = 1;
/// The envelope version with several recipients.
pub const VERSION_MANY: u8 = 2;
/// The most recipients one envelope names.
pub const MAX_RECIPIENTS: usize = 16;
/// RSA-OAEP-SHA256 key wrap with AES-256-GCM content encryption.
pub const ALG_RSA_OAEP_SHA256_A256GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const ID_LEN: usize = 32;
const COMMITMENT_LEN: usize = 32;

/// What a version-2 header commits to: the content key, under its own domain.
fn commitment(content_key: &[u8]) -> [u8; COMMITMENT_LEN] {
    Sha256::new()
        .chain_update(b"khachapuri envelope key")
        .chain_update(content_key)
        .finalize()
        .into()
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The bytes do not start with the envelope magic: not an encrypted spec (maybe an open one).
    #[error("not an encrypted spec envelope")]
    NotEnvelope,
    /// A newer or unknown envelope format.
    #[error(
        "envelope version {0} is not supported (this build reads versions {VERSION} and {VERSION_MANY}); \
         upgrade the agent"
    )]
    UnsupportedVersion(u8),
    /// An unknown algorithm identifier.
    #[error("envelope algorithm {0} is not supported")]
    UnsupportedAlgorithm(u8),
    /// Sealed to RSA keys this provider does not hold: its key rotated since, or the spec was meant for
    /// other providers. The key ids are in the clear header, so saying so reveals nothing.
    #[error(
        "the spec is sealed to another RSA key (key id {key_id}), not this provider's current one: sealed \
         before the provider rotated its key, or for another provider"
    )]
    AnotherKey {
        /// The envelope's key ids, hex, comma-separated.
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
    seal_to(&[public_key_der], plaintext)
}

/// Encrypts `plaintext` once for every holder of `recipients` (SPKI DER): version 1 for one recipient,
/// version 2 for several (at most [`MAX_RECIPIENTS`], each once). Any of them can open it.
pub fn seal_to(recipients: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(EnvelopeError::Seal(format!(
            "an envelope has 1 to {MAX_RECIPIENTS} recipients, not {}",
            recipients.len()
        )));
    }
    let key = Key::<Aes256Gcm>::generate();
    let mut out = Vec::with_capacity(8 + recipients.len() * 450 + NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    match recipients.len() {
        1 => out.extend_from_slice(&[VERSION, ALG_RSA_OAEP_SHA256_A256GCM]),
        n => out.extend_from_slice(&[VERSION_MANY, ALG_RSA_OAEP_SHA256_A256GCM, n as u8]),
    }
    let mut ids = Vec::with_capacity(recipients.len());
    for der in recipients {
        let public: PublicKey = public_key_from_der(der)?;
        let id = key_id(der);
        if ids.contains(&id) {
            return Err(EnvelopeError::Seal("a recipient is named twice".into()));
        }
        ids.push(id);
        let wrapped = public
            .oaep_encrypt::<Sha256>(key.as_slice())
            .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
        let wrapped_len = u16::try_from(wrapped.len())
            .map_err(|_| EnvelopeError::Seal("RSA key too large".into()))?;
        out.extend_from_slice(&id);
        out.extend_from_slice(&wrapped_len.to_be_bytes());
        out.extend_from_slice(&wrapped);
    }
    if recipients.len() > 1 {
        out.extend_from_slice(&commitment(key.as_slice()));
    }
    let nonce = Nonce::generate();
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
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// Who can open it, in the order the envelope lists them.
    pub recipients: Vec<Recipient<'a>>,
    /// Version 2: the commitment to the content key every recipient must unwrap.
    commitment: Option<&'a [u8]>,
    nonce: &'a [u8],
    header_len: usize,
}

/// One recipient of an envelope.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// sha256 of the recipient's public key DER.
    pub key_id: &'a [u8; 32],
    wrapped: &'a [u8],
}

/// Parses the header, refusing unknown versions and algorithms before any cryptography.
pub fn header(envelope: &[u8]) -> Result<Header<'_>, EnvelopeError> {
    if !is_envelope(envelope) {
        return Err(EnvelopeError::NotEnvelope);
    }
    let version = *envelope.get(4).ok_or(EnvelopeError::Undecryptable)?;
    if version != VERSION && version != VERSION_MANY {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let alg = *envelope.get(5).ok_or(EnvelopeError::Undecryptable)?;
    if alg != ALG_RSA_OAEP_SHA256_A256GCM {
        return Err(EnvelopeError::UnsupportedAlgorithm(alg));
    }
    let (count, mut at) = match version {
        VERSION => (1, 6),
        _ => {
            let n = usize::from(*envelope.get(6).ok_or(EnvelopeError::Undecryptable)?);
            if !(2..=MAX_RECIPIENTS).contains(&n) {
                return Err(EnvelopeError::Undecryptable);
            }
            (n, 7)
        }
    };
    let mut recipients = Vec::with_capacity(count);
    for _ in 0..count {
        let id_end = at + ID_LEN;
        let key_id: &[u8; 32] = envelope
            .get(at..id_end)
            .and_then(|id| id.try_into().ok())
            .ok_or(EnvelopeError::Undecryptable)?;
        let len = envelope
            .get(id_end..id_end + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .ok_or(EnvelopeError::Undecryptable)?;
        let wrapped = envelope
            .get(id_end + 2..id_end + 2 + len)
            .ok_or(EnvelopeError::Undecryptable)?;
        recipients.push(Recipient { key_id, wrapped });
        at = id_end + 2 + len;
    }
    let commitment = match version {
        VERSION => None,
        _ => {
            let end = at + COMMITMENT_LEN;
            let c = envelope.get(at..end).ok_or(EnvelopeError::Undecryptable)?;
            at = end;
            Some(c)
        }
    };
    let header_len = at + NONCE_LEN;
    if envelope.len() < header_len + 16 {
        return Err(EnvelopeError::Undecryptable);
    }
    Ok(Header {
        recipients,
        commitment,
        nonce: &envelope[at..header_len],
        header_len,
    })
}

/// Decrypts an envelope with one of the provider's keys (several during a rotation), chosen by key id.
pub fn open(keys: &[ProviderKey], envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let header = header(envelope)?;
    let (key, recipient) = header
        .recipients
        .iter()
        .find_map(|r| keys.iter().find(|k| k.id() == r.key_id).map(|k| (k, r)))
        .ok_or_else(|| EnvelopeError::AnotherKey {
            key_id: header
                .recipients
                .iter()
                .map(|r| {
                    r.key_id
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let content_key = key
        .private()
        .oaep_decrypt::<Sha256>(recipient.wrapped)
        .map_err(|_| EnvelopeError::Undecryptable)?;
    if content_key.len() != 32 {
        return Err(EnvelopeError::Undecryptable);
    }
    // Every recipient must hold the key the header commits to (compared in constant time).
    if let Some(expected) = header.commitment {
        let actual = commitment(&content_key);
        let differ = expected
            .iter()
            .zip(actual)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return Err(EnvelopeError::Undecryptable);
        }
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
