//! EIP-712 typed data shared by the agents: payer tokens (signed by a payer, sent as
//! `X-Khachapuri-Payer-Token: kp2.…`) and spec terms (signed by a deployment's owner). The domain is the
//! escrow's: name "Khachapuri", version "1", the chain id and the escrow's address.

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::Signer;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::Usdc;

/// The EIP-712 domain name of the escrow.
pub const DOMAIN_NAME: &str = "Khachapuri";
/// The EIP-712 domain version of the escrow.
pub const DOMAIN_VERSION: &str = "1";
/// The prefix of an encoded payer token (its format version): `kp2.` names its payer.
pub const TOKEN_PREFIX: &str = "kp2.";
/// The first format, which did not name its payer: still read, never written.
pub const LEGACY_TOKEN_PREFIX: &str = "kp1.";

alloy::sol! {
    /// A payer's consent: `provider` (a payee address, or zero for any provider) may charge it at most
    /// `maxPrice` per request for `spec` (a spec CID, or "" for any spec) until `expiry` (unix seconds).
    /// `session` tells tokens apart.
    #[derive(Debug, PartialEq, Eq)]
    struct PayerToken {
        address provider;
        string spec;
        uint256 maxPrice;
        uint64 expiry;
        bytes32 session;
    }

    /// A deployment's terms, signed by its `owner`: the program and entry, the environment's digest, the
    /// provider label it is meant for ("" for an open deployment), the most it pays per request, resource
    /// limits, the digest of the terms text, and the most a provider may charge the owner per period
    /// (`spendCap` in `spendPeriod` seconds; both 0 for no cap).
    #[derive(Debug, PartialEq, Eq)]
    struct SpecTerms {
        string program;
        string entry;
        bytes32 envDigest;
        string provider;
        address owner;
        uint256 maxPrice;
        uint64 memoryBytes;
        uint64 timeoutMs;
        uint64 outputBytes;
        bytes32 termsDigest;
        uint256 spendCap;
        uint64 spendPeriod;
    }

    /// EIP-2612 permit (signed against the token's own domain).
    #[derive(Debug)]
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// A token's `provider` that lets any provider charge: routed calls (docs/PROTOCOL.md §10 "Routing by CID")
/// go to whichever provider the gateway picks. What it can cost stays bounded on chain: only a provider the
/// payer reserved with (or that granted it credits) can charge, and only within those terms.
pub const ANY_PROVIDER: Address = Address::ZERO;

impl PayerToken {
    /// Whether the provider paid at `payee` may charge under this token: it names `payee`, or
    /// [`ANY_PROVIDER`].
    pub fn is_for(&self, payee: Address) -> bool {
        self.provider == payee || self.provider == ANY_PROVIDER
    }
}

/// The escrow's EIP-712 domain on `chain_id` at `escrow`.
pub fn domain(chain_id: u64, escrow: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(DOMAIN_NAME.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(escrow),
        None,
    )
}

/// Why a payer token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this crate wrote (prefix, base64, length, text or signature).
    #[error("malformed payer token: {0}")]
    Malformed(&'static str),
    /// Past its expiry.
    #[error("payer token expired at unix {expiry} (now {now})")]
    Expired {
        /// Its expiry.
        expiry: u64,
        /// The time of the check.
        now: u64,
    },
    /// Made out to another provider.
    #[error("payer token is for provider {token}, not {expected}")]
    WrongProvider {
        /// The provider in the token.
        token: Address,
        /// This provider.
        expected: Address,
    },
    /// Made out to another spec.
    #[error("payer token is for spec `{token}`, not `{requested}`")]
    SpecMismatch {
        /// The spec in the token.
        token: String,
        /// The spec requested.
        requested: String,
    },
    /// The price is above what the payer allowed.
    #[error("price {price} is above the payer token's maximum {max}")]
    PriceAboveMax {
        /// The price asked.
        price: Usdc,
        /// The token's maximum.
        max: Usdc,
    },
    /// The signature does not recover to an address.
    #[error("payer token signature is invalid")]
    BadSignature,
    /// The signature recovers to someone other than the payer the token names: it was altered, signed by
    /// another key, or signed in another domain.
    #[error(
        "the payer token names payer {payer}, but its signature is not {payer}'s here: altered, signed by another key, or signed for another chain or escrow"
    )]
    NotSignedByPayer {
        /// The payer the token names.
        payer: Address,
    },
}

/// A payer token with its signature and the payer it names: what travels in the
/// `X-Khachapuri-Payer-Token` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPayerToken {
    /// The signed terms.
    pub token: PayerToken,
    /// The payer's signature over them.
    pub signature: Signature,
    /// The payer the token names (`None` for a `kp1.` token, which named nobody).
    pub payer: Option<Address>,
}

/// Fixed-size head of an encoded token: provider 20, maxPrice 32, expiry 8, session 32, signature 65.
const TOKEN_HEAD: usize = 20 + 32 + 8 + 32 + 65;

impl PayerToken {
    /// Signs the token as the payer.
    pub async fn sign(
        self,
        signer: &impl Signer,
        domain: &Eip712Domain,
    ) -> Result<SignedPayerToken, alloy::signers::Error> {
        let signature = signer.sign_hash(&self.eip712_signing_hash(domain)).await?;
        Ok(SignedPayerToken {
            token: self,
            signature,
            payer: Some(signer.address()),
        })
    }
}

impl SignedPayerToken {
    /// `kp2.` + base64url of payer ‖ provider ‖ maxPrice ‖ expiry ‖ session ‖ signature ‖ spec (UTF-8).
    /// A token that names no payer (read from `kp1.`) is written back as it came, `kp1.` without payer.
    pub fn encode(&self) -> String {
        let t = &self.token;
        let mut bytes = Vec::with_capacity(20 + TOKEN_HEAD + t.spec.len());
        if let Some(payer) = self.payer {
            bytes.extend_from_slice(payer.as_slice());
        }
        bytes.extend_from_slice(t.provider.as_slice());
        bytes.extend_from_slice(&t.maxPrice.to_be_bytes::<32>());
        bytes.extend_from_slice(&t.expiry.to_be_bytes());
        bytes.extend_from_slice(t.session.as_slice());
        bytes.extend_from_slice(&self.signature.as_bytes());
        bytes.extend_from_slice(t.spec.as_bytes());
        let prefix = match self.payer {
            Some(_) => TOKEN_PREFIX,
            None => LEGACY_TOKEN_PREFIX,
        };
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses [`SignedPayerToken::encode`]'s output, or a `kp1.` token (also accepts a leading `Bearer`
    /// scheme, in any case).
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let text = match text.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => text,
        };
        let (body, names_payer) = match text.strip_prefix(TOKEN_PREFIX) {
            Some(body) => (body, true),
            None => (
                text.strip_prefix(LEGACY_TOKEN_PREFIX)
                    .ok_or(TokenError::Malformed("missing the kp2. prefix"))?,
                false,
            ),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed("not base64url"))?;
        let (payer, bytes) = match names_payer {
            true if bytes.len() >= 20 => {
                let (payer, rest) = bytes.split_at(20);
                (Some(Address::from_slice(payer)), rest)
            }
            true => return Err(TokenError::Malformed("too short")),
            false => (None, bytes.as_slice()),
        };
        if bytes.len() < TOKEN_HEAD {
            return Err(TokenError::Malformed("too short"));
        }
        let (head, spec) = bytes.split_at(TOKEN_HEAD);
        let spec =
            std::str::from_utf8(spec).map_err(|_| TokenError::Malformed("spec is not UTF-8"))?;
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&head[52..60]);
        let signature = Signature::from_raw(&head[92..157])
            .map_err(|_| TokenError::Malformed("bad signature bytes"))?;
        Ok(Self {
            token: PayerToken {
                provider: Address::from_slice(&head[..20]),
                maxPrice: U256::from_be_slice(&head[20..52]),
                expiry: u64::from_be_bytes(expiry),
                session: B256::from_slice(&head[60..92]),
                spec: spec.to_owned(),
            },
            signature,
            payer,
        })
    }

    /// The payer: the address that signed the token, which must be the payer it names (if it names one).
    pub fn recover(&self, domain: &Eip712Domain) -> Result<Address, TokenError> {
        let hash = self.token.eip712_signing_hash(domain);
        let signer = self
            .signature
            .recover_address_from_prehash(&hash)
            .map_err(|_| TokenError::BadSignature)?;
        match self.payer {
            Some(payer) if payer != signer => Err(TokenError::NotSignedByPayer { payer }),
            _ => Ok(signer),
        }
    }

    /// The token's maximum price per request.
    pub fn max_price(&self) -> Usdc {
        Usdc::from_u256(self.token.maxPrice)
    }

    /// Checks the token for a request to `provider` running `spec` at `price` at time `now` (unix seconds);
    /// returns the payer.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        provider: Address,
        spec: &str,
        price: Usdc,
        now: u64,
    ) -> Result<Address, TokenError> {
        self.check(provider, spec, price, now)?;
        self.recover(domain)
    }

    /// [`SignedPayerToken::verify`] without the signature: the checks that depend on the request.
    /// A server that sees the same token many times can run these each time and cache
    /// [`SignedPayerToken::recover`], which costs far more.
    pub fn check(
        &self,
        provider: Address,
        spec: &str,
        price: Usdc,
        now: u64,
    ) -> Result<(), TokenError> {
        let t = &self.token;
        if t.expiry <= now {
            return Err(TokenError::Expired {
                expiry: t.expiry,
                now,
            });
        }
        if !t.is_for(provider) {
            return Err(TokenError::WrongProvider {
                token: t.provider,
                expected: provider,
            });
        }
        if !t.spec.is_empty() && t.spec != spec {
            return Err(TokenError::SpecMismatch {
                token: t.spec.clone(),
                requested: spec.to_owned(),
            });
        }
        if price > self.max_price() {
            return Err(TokenError::PriceAboveMax {
                price,
                max: self.max_price(),
            });
        }
        Ok(())
    }
}

impl SpecTerms {
    /// Signs the terms as the owner.
    pub async fn sign(
        &self,
        signer: &impl Signer,
        domain: &Eip712Domain,
    ) -> Result<Signature, alloy::signers::Error> {
        signer.sign_hash(&self.eip712_signing_hash(domain)).await
    }

    /// The address that signed these terms.
    pub fn recover(
        &self,
        domain: &Eip712Domain,
        signature: &Signature,
    ) -> Result<Address, TokenError> {
        signature
            .recover_address_from_prehash(&self.eip712_signing_hash(domain))
            .map_err(|_| TokenError::BadSignature)
    }

    /// True when `signature` is by the terms' `owner`.
    pub fn verify(&self, domain: &Eip712Domain, signature: &Signature) -> bool {
        self.recover(domain, signature)
            .is_ok_and(|a| a == self.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn token(spec: &str) -> PayerToken {
        PayerToken {
            provider: Address::repeat_byte(7),
            spec: spec.into(),
            maxPrice: U256::from(300_000),
            expiry: 2_000,
            session: B256::repeat_byte(9),
        }
    }

    #[tokio::test]
    async fn payer_token_round_trips_and_recovers() -> Result<(), Box<dyn std::error::Error>> {
        let payer = PrivateKeySigner::random();
        let d = domain(31337, Address::repeat_byte(1));
        let signed = token("bafyspec").sign(&payer, &d).await?;
        let text = signed.encode();
        assert!(text.starts_with("kp2."));
        let back = SignedPayerToken::decode(&format!("Bearer {text}"))?;
        assert_eq!(back, signed);
        assert_eq!(back.recover(&d)?, payer.address());
        let p = Address::repeat_byte(7);
        assert_eq!(
            back.verify(&d, p, "bafyspec", Usdc::from_units(300_000), 1_000)?,
            payer.address()
        );
        // In another domain (chain or escrow) the signature is someone else's: not the payer it names.
        assert!(matches!(
            back.recover(&domain(1, Address::repeat_byte(1))),
            Err(TokenError::NotSignedByPayer { .. })
        ));
        Ok(())
    }

    #[tokio::test]
    async fn payer_token_refusals_are_distinct() -> Result<(), Box<dyn std::error::Error>> {
        let payer = PrivateKeySigner::random();
        let d = domain(31337, Address::repeat_byte(1));
        let p = Address::repeat_byte(7);
        let price = Usdc::from_units(100);
        let signed = token("bafyspec").sign(&payer, &d).await?;
        assert!(matches!(
            signed.verify(&d, p, "bafyspec", price, 2_000),
            Err(TokenError::Expired { .. })
        ));
        assert!(matches!(
            signed.verify(&d, Address::repeat_byte(8), "bafyspec", price, 1),
            Err(TokenError::WrongProvider { .. })
        ));
        // A token for any provider passes at every payee; the payer is still its signer.
        let mut anyone = token("bafyspec");
        anyone.provider = ANY_PROVIDER;
        let anyone = anyone.sign(&payer, &d).await?;
        for provider in [p, Address::repeat_byte(8)] {
            assert_eq!(
                anyone.verify(&d, provider, "bafyspec", price, 1)?,
                payer.address()
            );
        }
        assert!(matches!(
            signed.verify(&d, p, "bafyother", price, 1),
            Err(TokenError::SpecMismatch { .. })
        ));
        assert!(matches!(
            signed.verify(&d, p, "bafyspec", Usdc::from_units(300_001), 1),
            Err(TokenError::PriceAboveMax { .. })
        ));
        let any = token("").sign(&payer, &d).await?;
        assert_eq!(
            any.verify(&d, p, "bafywhatever", price, 1)?,
            payer.address()
        );
        for bad in ["", "kp3.AAAA", "kp1.!!!", "kp1.AAAA", "kp2.AAAA", "kp2.!!!"] {
            assert!(
                matches!(SignedPayerToken::decode(bad), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
        // A tampered price no longer recovers the payer, and the token says so: it names its payer.
        let mut tampered = signed.clone();
        tampered.token.maxPrice = U256::from(10_000_000);
        assert_eq!(
            tampered.recover(&d),
            Err(TokenError::NotSignedByPayer {
                payer: payer.address()
            })
        );
        let corrupted = SignedPayerToken::decode(&tampered.encode())?;
        assert_eq!(corrupted.payer, Some(payer.address()));
        assert!(matches!(
            corrupted.recover(&d),
            Err(TokenError::NotSignedByPayer { .. })
        ));
        Ok(())
    }

    /// A `kp1.` token (it named no payer) is still read: the one in the vectors of the first format.
    #[test]
    fn a_kp1_token_is_still_read() -> Result<(), Box<dyn std::error::Error>> {
        let kp1 = "kp1.PETN3bapAPorWF3SmeA9EvpCk7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABOIAAAAAB3NZQAERERERERERERERERERERERERERERERERERERERERERFYn1qITQjkwEmaheBroymJ5Py5AfQovxyIgjkGZugbtHzRyGG0eCjri1ii_X1pJER9g7kvmww6-jh4VLEdkby8G2JhZmtyZWloZHdkY2VmZ2g0ZHFranY2N3V6Y213N29qZWU2eGVkemRldG9qdXpqZXZ0ZW54cXV2eWt1";
        let token = SignedPayerToken::decode(kp1)?;
        assert_eq!(token.payer, None);
        let escrow: Address = "0x0165878A594ca255338adfa4d48449f69242Eb8F".parse()?;
        let payer: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse()?;
        assert_eq!(token.recover(&domain(31337, escrow))?, payer);
        assert_eq!(
            token.encode(),
            kp1,
            "a token that names nobody is written back as it came"
        );
        let lower = SignedPayerToken::decode(&format!("bearer\t{kp1}"))?;
        assert_eq!(lower, token, "the scheme is case-insensitive");
        Ok(())
    }

    #[tokio::test]
    async fn spec_terms_sign_and_verify() -> Result<(), Box<dyn std::error::Error>> {
        let owner = PrivateKeySigner::random();
        let d = domain(31337, Address::repeat_byte(1));
        let mut terms = SpecTerms {
            program: "bafyprogram".into(),
            entry: "main.wasm".into(),
            envDigest: B256::repeat_byte(1),
            provider: "alice".into(),
            owner: owner.address(),
            maxPrice: U256::from(1000),
            memoryBytes: 64 << 20,
            timeoutMs: 5_000,
            outputBytes: 1 << 20,
            termsDigest: B256::ZERO,
            spendCap: U256::from(50_000),
            spendPeriod: 86_400,
        };
        let sig = terms.sign(&owner, &d).await?;
        assert!(terms.verify(&d, &sig));
        assert_eq!(terms.recover(&d, &sig)?, owner.address());
        let mut uncapped = terms.clone();
        uncapped.spendCap = U256::ZERO;
        uncapped.spendPeriod = 0;
        assert!(
            !uncapped.verify(&d, &sig),
            "the cap is signed: dropping it breaks the signature"
        );
        terms.provider = String::new();
        assert!(!terms.verify(&d, &sig));
        Ok(())
    }
}
