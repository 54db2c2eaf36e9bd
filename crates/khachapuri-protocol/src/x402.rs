//! x402 v2, the HTTP 402 payment standard that wallets, agents and SDKs speak (`@x402/fetch` and others):
//! the `exact` scheme on EVM chains, paid with an EIP-3009 `TransferWithAuthorization` of the chain's USDC.
//!
//! - A 402 carries [`PAYMENT_REQUIRED_HEADER`]: base64 (standard, padded) of the JSON [`PaymentRequired`],
//!   whose `accepts` lists what the server takes ([`PaymentRequirements`]).
//! - The client retries with [`PAYMENT_SIGNATURE_HEADER`]: base64 of [`PaymentPayload`], the requirement it
//!   accepted and an [`Authorization`] signed in the token's EIP-712 domain (`extra.name`, `extra.version`,
//!   the chain id, the token's address).
//! - The server answers with [`PAYMENT_RESPONSE_HEADER`]: base64 of [`SettlementResponse`].
//!
//! This module is the format and the signature; deciding whether a payment is good enough (payee, amount,
//! window, nonce, balance) is [`Authorization::check`] plus the chain reads the caller makes.

use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::signers::Signer;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The payment requirements of a 402, base64 JSON [`PaymentRequired`].
pub const PAYMENT_REQUIRED_HEADER: &str = "payment-required";
/// The client's payment, base64 JSON [`PaymentPayload`].
pub const PAYMENT_SIGNATURE_HEADER: &str = "payment-signature";
/// The server's settlement answer, base64 JSON [`SettlementResponse`].
pub const PAYMENT_RESPONSE_HEADER: &str = "payment-response";
/// The protocol version this module speaks.
pub const X402_VERSION: u32 = 2;
/// The only scheme: pay exactly the amount asked.
pub const SCHEME_EXACT: &str = "exact";

alloy::sol! {
    /// EIP-3009's signed transfer, in the token's own EIP-712 domain.
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The CAIP-2 network name of an EVM chain: `eip155:<chainId>`.
pub fn network(chain_id: u64) -> String {
    format!("eip155:{chain_id}")
}

/// What a resource is, as a 402 describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The URL paid for.
    pub url: String,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
    /// The media type of the answer, if known.
    #[serde(default)]
    pub mime_type: String,
}

/// The token's EIP-712 domain name and version, which an `exact` EVM client signs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExtra {
    /// The domain's `name` (`USD Coin` for Circle's USDC and the test USDC).
    pub name: String,
    /// The domain's `version`.
    pub version: String,
}

/// One way to pay that a server accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// [`SCHEME_EXACT`].
    pub scheme: String,
    /// [`network`] of the chain.
    pub network: String,
    /// Token base units, as a decimal string.
    pub amount: String,
    /// The token's address.
    pub asset: Address,
    /// Who is paid.
    pub pay_to: Address,
    /// How long the server may take to settle after it accepts.
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 name and version.
    pub extra: TokenExtra,
}

impl PaymentRequirements {
    /// The `exact` offer of `amount` base units of the token whose EIP-712 `domain` this is (its chain,
    /// address, name and version) to `pay_to`, to be settled within `max_timeout_seconds`.
    pub fn exact(
        domain: &Eip712Domain,
        pay_to: Address,
        amount: U256,
        max_timeout_seconds: u64,
    ) -> Self {
        let chain_id = domain.chain_id.map_or(0, |id| id.saturating_to::<u64>());
        Self {
            scheme: SCHEME_EXACT.into(),
            network: network(chain_id),
            amount: amount.to_string(),
            asset: domain.verifying_contract.unwrap_or_default(),
            pay_to,
            max_timeout_seconds,
            extra: TokenExtra {
                name: domain.name.clone().unwrap_or_default().into_owned(),
                version: domain.version.clone().unwrap_or_default().into_owned(),
            },
        }
    }
}

/// The `PAYMENT-REQUIRED` header of a 402.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// [`X402_VERSION`].
    pub x402_version: u32,
    /// Why payment is required (or why the last one was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is paid for.
    pub resource: Resource,
    /// The ways to pay.
    pub accepts: Vec<PaymentRequirements>,
}

/// EIP-3009's authorization as x402 carries it: integers as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// The payer.
    pub from: Address,
    /// The payee.
    pub to: Address,
    /// Token base units.
    #[serde(with = "decimal")]
    pub value: U256,
    /// Valid strictly after this unix time.
    #[serde(with = "decimal")]
    pub valid_after: U256,
    /// Valid strictly before this unix time.
    #[serde(with = "decimal")]
    pub valid_before: U256,
    /// A random nonce (EIP-3009 nonces are not sequential).
    pub nonce: B256,
}

/// The `exact` EVM payload: an authorization and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactPayload {
    /// The payer's signature (65 bytes for an EOA; a contract wallet's may be longer).
    pub signature: Bytes,
    /// What it authorizes.
    pub authorization: Authorization,
}

/// The `PAYMENT-SIGNATURE` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// [`X402_VERSION`].
    pub x402_version: u32,
    /// The resource paid for, as the client saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// The requirement the client chose from `accepts`.
    pub accepted: PaymentRequirements,
    /// The signed authorization.
    pub payload: ExactPayload,
}

/// The `PAYMENT-RESPONSE` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    /// Whether the payment was (or will be) settled.
    pub success: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The settlement transaction, when it is known (empty while it is queued).
    pub transaction: String,
    /// [`network`] of the chain.
    pub network: String,
    /// Who paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Address>,
}

/// Why an x402 header or payment is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X402Error {
    /// Not base64 of the expected JSON.
    #[error("malformed x402 header: {0}")]
    Malformed(String),
    /// A protocol version other than [`X402_VERSION`].
    #[error("x402 version {0} is not supported (this server speaks version {X402_VERSION})")]
    UnsupportedVersion(u32),
    /// Not what this server offered: another scheme, network, token or payee.
    #[error("the payment is not one this server accepts: {0}")]
    NotOffered(String),
    /// The authorization moves another amount than asked (the `exact` scheme pays exactly the amount).
    #[error("the authorization moves {}; this call costs exactly {}", crate::Usdc::from_u256(*.paid), crate::Usdc::from_u256(*.asked))]
    WrongAmount {
        /// What it moves.
        paid: U256,
        /// What was asked.
        asked: U256,
    },
    /// Outside its validity window, or too close to its end to be settled.
    #[error("the authorization is valid after {valid_after} and before {valid_before} (unix); it is now {now}{}", if *.too_short { ", too close to its end to settle" } else { "" })]
    OutsideWindow {
        /// Its `validAfter`.
        valid_after: U256,
        /// Its `validBefore`.
        valid_before: U256,
        /// The server's clock.
        now: u64,
        /// Valid now, but not for long enough to settle.
        too_short: bool,
    },
    /// The signature is not `from`'s.
    #[error("the authorization is not signed by its payer {from}")]
    BadSignature {
        /// Who it names as payer.
        from: Address,
    },
}

fn encode_header<T: Serialize>(value: &T) -> String {
    STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_header<T: DeserializeOwned>(text: &str) -> Result<T, X402Error> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| X402Error::Malformed(format!("not base64: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| X402Error::Malformed(e.to_string()))
}

impl PaymentRequired {
    /// The header's value.
    pub fn encode(&self) -> String {
        encode_header(self)
    }

    /// Reads a header's value.
    pub fn decode(text: &str) -> Result<Self, X402Error> {
        decode_header(text)
    }
}

impl SettlementResponse {
    /// The header's value.
    pub fn encode(&self) -> String {
        encode_header(self)
    }

    /// Reads a header's value.
    pub fn decode(text: &str) -> Result<Self, X402Error> {
        decode_header(text)
    }
}

impl PaymentPayload {
    /// The header's value.
    pub fn encode(&self) -> String {
        encode_header(self)
    }

    /// Reads a header's value, refusing other protocol versions.
    pub fn decode(text: &str) -> Result<Self, X402Error> {
        let payload: Self = decode_header(text)?;
        if payload.x402_version != X402_VERSION {
            return Err(X402Error::UnsupportedVersion(payload.x402_version));
        }
        Ok(payload)
    }

    /// Pays `offer` as an x402 client does: an EIP-3009 authorization from `signer` of `value` to the
    /// offer's payee, valid from now until `valid_before` (unix seconds), with a random nonce, signed in
    /// the token's `domain`.
    pub async fn pay(
        signer: &impl Signer,
        domain: &Eip712Domain,
        offer: &PaymentRequirements,
        value: U256,
        valid_before: u64,
    ) -> Result<Self, alloy::signers::Error> {
        let authorization = Authorization {
            from: signer.address(),
            to: offer.pay_to,
            value,
            valid_after: U256::ZERO,
            valid_before: U256::from(valid_before),
            nonce: B256::random(),
        };
        let signature = authorization.sign(signer, domain).await?;
        Ok(Self {
            x402_version: X402_VERSION,
            resource: None,
            accepted: offer.clone(),
            payload: ExactPayload {
                signature: Bytes::from(signature.as_bytes().to_vec()),
                authorization,
            },
        })
    }

    /// Checks the payment against what this server offers (`offer`), at `now`, needing `settle_within`
    /// seconds of validity left to settle it, and recovers its payer from the signature in `domain` (the
    /// token's; a contract wallet's signature, not 65 bytes, is left to the token). The nonce's freshness
    /// and the payer's balance are chain state: the caller reads them.
    pub fn check(
        &self,
        offer: &PaymentRequirements,
        domain: &Eip712Domain,
        now: u64,
        settle_within: u64,
    ) -> Result<Address, X402Error> {
        let accepted = &self.accepted;
        let auth = &self.payload.authorization;
        if accepted.scheme != offer.scheme || accepted.network != offer.network {
            return Err(X402Error::NotOffered(format!(
                "scheme `{}` on `{}`; this server takes `{}` on `{}`",
                accepted.scheme, accepted.network, offer.scheme, offer.network
            )));
        }
        if accepted.asset != offer.asset {
            return Err(X402Error::NotOffered(format!(
                "token {}; this server takes {}",
                accepted.asset, offer.asset
            )));
        }
        if auth.to != offer.pay_to {
            return Err(X402Error::NotOffered(format!(
                "it pays {}; this server's payee is {}",
                auth.to, offer.pay_to
            )));
        }
        let asked = offer
            .amount
            .parse::<U256>()
            .map_err(|e| X402Error::Malformed(format!("the offer's amount: {e}")))?;
        if auth.value != asked {
            return Err(X402Error::WrongAmount {
                paid: auth.value,
                asked,
            });
        }
        let now_u = U256::from(now);
        let too_short = auth.valid_before <= U256::from(now.saturating_add(settle_within));
        if auth.valid_after >= now_u || auth.valid_before <= now_u || too_short {
            return Err(X402Error::OutsideWindow {
                valid_after: auth.valid_after,
                valid_before: auth.valid_before,
                now,
                too_short: auth.valid_before > now_u && too_short,
            });
        }
        // An EOA's signature is 65 bytes and recovers here. Any other length is a contract wallet's
        // (ERC-1271): only the token can judge it, when the transfer is simulated before it is sent.
        if self.payload.signature.len() != 65 {
            return Ok(auth.from);
        }
        let signature = Signature::try_from(self.payload.signature.as_ref())
            .map_err(|_| X402Error::BadSignature { from: auth.from })?;
        match auth.recover(domain, &signature) {
            Some(signer) if signer == auth.from => Ok(signer),
            _ => Err(X402Error::BadSignature { from: auth.from }),
        }
    }
}

impl Authorization {
    /// The EIP-712 message.
    pub fn typed(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: self.valid_after,
            validBefore: self.valid_before,
            nonce: self.nonce,
        }
    }

    /// Signs it as `from` in the token's `domain` (what an x402 client does).
    pub async fn sign(
        &self,
        signer: &impl Signer,
        domain: &Eip712Domain,
    ) -> Result<Signature, alloy::signers::Error> {
        signer
            .sign_hash(&self.typed().eip712_signing_hash(domain))
            .await
    }

    /// The address that signed it with `signature` (an EOA's; a contract wallet's is the chain's to judge).
    pub fn recover(&self, domain: &Eip712Domain, signature: &Signature) -> Option<Address> {
        signature
            .recover_address_from_prehash(&self.typed().eip712_signing_hash(domain))
            .ok()
    }
}

/// Serde for a `U256` as a decimal string.
mod decimal {
    use alloy::primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(u64),
        }
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(U256::from(n)),
            Written::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                U256::from_str_radix(&t, 10).map_err(D::Error::custom)
            }
            Written::Text(t) => Err(D::Error::custom(format!(
                "`{t}`: expected a decimal integer"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn usdc_domain(usdc: Address, chain_id: u64) -> Eip712Domain {
        alloy::sol_types::eip712_domain! {
            name: "USD Coin", version: "1", chain_id: chain_id, verifying_contract: usdc,
        }
    }

    fn offer(pay_to: Address, asset: Address) -> PaymentRequirements {
        PaymentRequirements::exact(&usdc_domain(asset, 31337), pay_to, U256::from(10_000), 60)
    }

    async fn paid(
        payer: &PrivateKeySigner,
        offer: &PaymentRequirements,
        domain: &Eip712Domain,
        value: u64,
        valid_before: u64,
    ) -> PaymentPayload {
        PaymentPayload::pay(payer, domain, offer, U256::from(value), valid_before)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_payment_round_trips_and_checks_as_a_server_would() {
        let (payer, payee, usdc) = (
            PrivateKeySigner::random(),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let domain = usdc_domain(usdc, 31337);
        let offer = offer(payee, usdc);
        assert_eq!(
            (offer.network.as_str(), offer.amount.as_str(), offer.asset),
            ("eip155:31337", "10000", usdc)
        );
        assert_eq!(
            (offer.extra.name.as_str(), offer.extra.version.as_str()),
            ("USD Coin", "1")
        );
        let now = 1_000_000;
        let payment = paid(&payer, &offer, &domain, 10_000, now + 300).await;
        let header = payment.encode();
        let decoded = PaymentPayload::decode(&header).unwrap();
        assert_eq!(decoded, payment);
        assert_eq!(decoded.check(&offer, &domain, now, 30), Ok(payer.address()));

        // Underpaid, expired, too short to settle, another payee, another chain's domain.
        let cheap = paid(&payer, &offer, &domain, 9_999, now + 300).await;
        let err = cheap.check(&offer, &domain, now, 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the authorization moves 0.009999 USDC; this call costs exactly 0.01 USDC"
        );
        let dear = paid(&payer, &offer, &domain, 10_001, now + 300).await;
        assert!(matches!(
            dear.check(&offer, &domain, now, 30),
            Err(X402Error::WrongAmount { .. })
        ));
        let late = paid(&payer, &offer, &domain, 10_000, now).await;
        assert!(matches!(
            late.check(&offer, &domain, now, 30),
            Err(X402Error::OutsideWindow {
                too_short: false,
                ..
            })
        ));
        let short = paid(&payer, &offer, &domain, 10_000, now + 10).await;
        let err = short.check(&offer, &domain, now, 30).unwrap_err();
        assert!(err.to_string().contains("too close to its end"), "{err}");
        let mut elsewhere = payment.clone();
        elsewhere.payload.authorization.to = Address::repeat_byte(9);
        assert!(matches!(
            elsewhere.check(&offer, &domain, now, 30),
            Err(X402Error::NotOffered(_))
        ));
        let other_chain = usdc_domain(usdc, 1);
        assert_eq!(
            payment.check(&offer, &other_chain, now, 30),
            Err(X402Error::BadSignature {
                from: payer.address()
            })
        );
        // A nonce changed after signing: the signature is no longer the payer's.
        let mut altered = payment.clone();
        altered.payload.authorization.nonce = B256::random();
        assert!(matches!(
            altered.check(&offer, &domain, now, 30),
            Err(X402Error::BadSignature { .. })
        ));
        // A contract wallet's signature (not 65 bytes) is left to the token.
        let mut wallet = payment.clone();
        wallet.payload.signature = Bytes::from(vec![7u8; 96]);
        assert_eq!(wallet.check(&offer, &domain, now, 30), Ok(payer.address()));
        assert!(matches!(
            PaymentPayload::decode("not base64!"),
            Err(X402Error::Malformed(_))
        ));
    }

    #[test]
    fn headers_are_standard_padded_base64_of_camel_case_json() {
        let required = PaymentRequired {
            x402_version: X402_VERSION,
            error: Some("payment required".into()),
            resource: Resource {
                url: "http://127.0.0.1/alice/bafy".into(),
                description: String::new(),
                mime_type: String::new(),
            },
            accepts: vec![offer(Address::repeat_byte(2), Address::repeat_byte(3))],
        };
        let header = required.encode();
        let json: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(&header).unwrap()).unwrap();
        assert_eq!(json["x402Version"], 2);
        assert_eq!(
            json["accepts"][0]["payTo"],
            format!("{}", Address::repeat_byte(2))
        );
        assert_eq!(json["accepts"][0]["maxTimeoutSeconds"], 60);
        assert_eq!(json["accepts"][0]["network"], "eip155:31337");
        assert_eq!(PaymentRequired::decode(&header).unwrap(), required);
    }
}
