//! The provider's RSA key pair: generated once, stored as PKCS#8 PEM with mode 0600, published on its
//! resolver as DER SubjectPublicKeyInfo.

use std::{fs, io::Write, path::Path};

use rsa::{
    Generate, PrivateKey, PublicKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding},
    sha2::{Digest, Sha256},
};

/// Errors of key generation, storage and parsing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is readable by others: it must be mode 0600.
    #[error(
        "key file {path} has mode {mode:o}; run `chmod 600 {path}` (it holds the provider's private key)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The bytes are not a PKCS#8 RSA private key, or not a SubjectPublicKeyInfo RSA public key.
    #[error(
        "not an RSA key in the expected encoding ({0}); expected PKCS#8 PEM (private) or SPKI DER (public)"
    )]
    Encoding(String),
    /// Key generation failed.
    #[error("RSA key generation failed: {0}")]
    Generate(String),
}

/// The text a key proof signs: the label, its payee and the chain. A proof shows that whoever holds the
/// RSA key speaks for this label on this chain (docs/PROTOCOL.md §10 "Routing by CID"): a label that copies
/// another provider's public key cannot make one.
fn proof_message(label: &str, payee: alloy::primitives::Address, chain_id: u64) -> String {
    format!("khachapuri key proof\nlabel: {label}\npayee: {payee}\nchain: {chain_id}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proof_tests {
    use super::*;
    use alloy::primitives::Address;

    #[test]
    fn a_key_proof_holds_for_its_label_payee_chain_and_key_only() {
        let key = ProviderKey::generate().unwrap();
        let other = ProviderKey::generate().unwrap();
        let payee = Address::repeat_byte(7);
        let proof = key.prove("alice", payee, 31337).unwrap();
        let der = key.public_key_der();
        assert!(verify_proof(der, "alice", payee, 31337, &proof));
        assert!(
            !verify_proof(der, "mallory", payee, 31337, &proof),
            "another label"
        );
        assert!(
            !verify_proof(der, "alice", Address::repeat_byte(8), 31337, &proof),
            "another payee"
        );
        assert!(
            !verify_proof(der, "alice", payee, 1, &proof),
            "another chain"
        );
        assert!(
            !verify_proof(other.public_key_der(), "alice", payee, 31337, &proof),
            "another key"
        );
        assert!(
            !verify_proof(der, "alice", payee, 31337, &proof[1..]),
            "cut"
        );
        assert!(!verify_proof(b"not a key", "alice", payee, 31337, &proof));
    }
}

/// Whether `proof` is the key proof of the RSA key `public_key_der` for `label`, paid at `payee`, on
/// `chain_id` (RSASSA-PKCS1-v1_5 with SHA-256, [`ProviderKey::prove`]).
pub fn verify_proof(
    public_key_der: &[u8],
    label: &str,
    payee: alloy::primitives::Address,
    chain_id: u64,
    proof: &[u8],
) -> bool {
    use rsa::signature::Verifier as _;
    let (Ok(public), Ok(signature)) = (
        public_key_from_der(public_key_der),
        rsa::pkcs1v15::Signature::try_from(proof),
    ) else {
        return false;
    };
    let message = proof_message(label, payee, chain_id);
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
        .verify(message.as_bytes(), &signature)
        .is_ok()
}

/// `sha256(SPKI DER)`: names the key an envelope was sealed to.
pub type KeyId = [u8; 32];

/// The key id of a DER SubjectPublicKeyInfo.
pub fn key_id(public_key_der: &[u8]) -> KeyId {
    Sha256::digest(public_key_der).into()
}

/// A provider's decryption key with its public half's DER and id.
#[derive(Clone)]
pub struct ProviderKey {
    private: PrivateKey,
    public_der: Vec<u8>,
    id: KeyId,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey")
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl ProviderKey {
    /// Generates a new RSA key (the `rsa` crate's default size, 2048 bits or more).
    pub fn generate() -> Result<Self, KeyError> {
        Self::from_private(PrivateKey::generate())
    }

    fn from_private(private: PrivateKey) -> Result<Self, KeyError> {
        let public_der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::Encoding(e.to_string()))?
            .into_vec();
        let id = key_id(&public_der);
        Ok(Self {
            private,
            public_der,
            id,
        })
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let private =
            PrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Encoding(e.to_string()))?;
        Self::from_private(private)
    }

    /// The PKCS#8 PEM encoding of the private key.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        Ok(self
            .private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encoding(e.to_string()))?
            .to_string())
    }

    /// Loads the key at `path`, refusing a file that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        Self::from_pem(&fs::read_to_string(path).map_err(io)?)
    }

    /// Writes the key to `path` (created with mode 0600, never overwriting an existing file).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_pem()?.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads the key at `path`, or generates and saves one if there is no file.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate()?;
        key.save(path)?;
        Ok(key)
    }

    /// The public key as DER SubjectPublicKeyInfo: what the resolver publishes.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// `sha256` of the public key DER.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Signs the key proof for `label`, paid at `payee`, on `chain_id` ([`verify_proof`]): what the agent's
    /// offer carries, so that a gateway routes sealed specs only to labels that hold their key.
    pub fn prove(
        &self,
        label: &str,
        payee: alloy::primitives::Address,
        chain_id: u64,
    ) -> Result<Vec<u8>, KeyError> {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let message = proof_message(label, payee, chain_id);
        rsa::pkcs1v15::SigningKey::<Sha256>::new(self.private.clone())
            .try_sign(message.as_bytes())
            .map(|signature| signature.to_vec())
            .map_err(|e| KeyError::Generate(format!("signing the key proof: {e}")))
    }

    pub(crate) fn private(&self) -> &PrivateKey {
        &self.private
    }
}

/// Parses a DER SubjectPublicKeyInfo RSA public key (a resolver's `rsaKey` record).
pub fn public_key_from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
    PublicKey::from_public_key_der(der).map_err(|e| KeyError::Encoding(e.to_string()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
