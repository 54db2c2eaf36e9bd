//! What a provider offers (docs/PROTOCOL.md §8, `GET /_provider`): its price, its caps, and the chain it
//! settles on. The agent refuses a spec whose terms do not fit its offer ([`Offer::check`]); `deploy`
//! asks the same question before anything is uploaded, with the same function.

use alloy::primitives::Address;
use khachapuri_protocol::Usdc;
use serde::{Deserialize, Serialize};

use crate::Limits;

/// A provider's offer, as its agent answers `GET /_provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// Its label.
    pub label: String,
    /// Its payee: who signs receipts, charges, and whom payer tokens and logs grants name.
    pub payee: Address,
    /// Its price per request, in USDC base units (as a decimal string: `"10000"` is 0.01 USDC).
    #[serde(with = "khachapuri_protocol::usdc::units")]
    pub price: Usdc,
    /// The chain it settles on.
    pub chain_id: u64,
    /// The escrow it settles with.
    pub escrow: Address,
    /// The most a spec may ask for.
    pub caps: Caps,
    /// The largest request body it reads, bytes.
    pub max_body_bytes: u64,
    /// Whether it runs specs in the clear (open deployments); an agent that does not say runs them.
    #[serde(default = "runs_open_specs")]
    pub open_specs: bool,
    /// Its key proof ([`crate::ProviderKey::prove`]): signed by the RSA key its resolver publishes, over its
    /// label, payee and chain. A gateway routes sealed specs only to labels whose offer proves their key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<alloy::primitives::Bytes>,
}

fn runs_open_specs() -> bool {
    true
}

/// A provider's caps on a spec's [`Limits`]. Unlike the spec's limits, unknown fields are ignored: a cap
/// added later must not make older clients unable to read an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caps {
    /// Most linear memory, bytes.
    pub memory_bytes: u64,
    /// Longest run, milliseconds.
    pub timeout_ms: u64,
    /// Largest response, bytes.
    pub output_bytes: u64,
}

/// Why a spec does not fit a provider's offer: every call to it would be refused (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The spec is signed for another chain or escrow.
    #[error(
        "the spec is signed for chain {chain_id} escrow {escrow}; this provider settles on chain {offer_chain_id} escrow {offer_escrow}"
    )]
    WrongChain {
        /// The spec's chain.
        chain_id: u64,
        /// The spec's escrow.
        escrow: Address,
        /// The provider's chain.
        offer_chain_id: u64,
        /// The provider's escrow.
        offer_escrow: Address,
    },
    /// The provider charges more than the spec pays.
    #[error("this provider charges {price} per request; the spec pays at most {max_price}")]
    PriceAboveSpec {
        /// The provider's price.
        price: Usdc,
        /// The spec's most.
        max_price: Usdc,
    },
    /// A limit is above the provider's cap.
    #[error("the spec asks for {asked} of {what}; this provider offers at most {offered}")]
    LimitAboveCap {
        /// `memory`, `time` or `output`.
        what: &'static str,
        /// The spec's limit, with its unit.
        asked: String,
        /// The provider's cap, with its unit.
        offered: String,
    },
}

impl Offer {
    /// Whether a spec signed for `chain_id`/`escrow`, paying at most `max_price` per request under
    /// `limits`, would run here.
    pub fn check(
        &self,
        chain_id: u64,
        escrow: Address,
        max_price: Usdc,
        limits: &Limits,
    ) -> Result<(), OfferError> {
        if (chain_id, escrow) != (self.chain_id, self.escrow) {
            return Err(OfferError::WrongChain {
                chain_id,
                escrow,
                offer_chain_id: self.chain_id,
                offer_escrow: self.escrow,
            });
        }
        if self.price > max_price {
            return Err(OfferError::PriceAboveSpec {
                price: self.price,
                max_price,
            });
        }
        let caps = &self.caps;
        let above = |what, asked: u64, offered: u64, show: fn(u64) -> String| {
            (asked > offered).then(|| OfferError::LimitAboveCap {
                what,
                asked: show(asked),
                offered: show(offered),
            })
        };
        let size = khachapuri_protocol::measure::format_size;
        let ms = |ms: u64| format!("{ms} ms");
        let refusal = above("memory", limits.memory_bytes, caps.memory_bytes, size)
            .or_else(|| above("time", limits.timeout_ms, caps.timeout_ms, ms))
            .or_else(|| above("output", limits.output_bytes, caps.output_bytes, size));
        refusal.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            label: "alice".into(),
            payee: Address::repeat_byte(2),
            price: Usdc::from_units(10_000),
            chain_id: 31337,
            escrow: Address::repeat_byte(1),
            caps: Caps {
                memory_bytes: 128 << 20,
                timeout_ms: 10_000,
                output_bytes: 16 << 20,
            },
            max_body_bytes: 1 << 20,
            open_specs: true,
            key_proof: None,
        }
    }

    #[test]
    fn a_spec_fits_an_offer_or_says_why_not() {
        let o = offer();
        let (chain, escrow, max) = (31337, Address::repeat_byte(1), Usdc::from_units(10_000));
        assert_eq!(o.check(chain, escrow, max, &Limits::default()), Ok(()));
        assert!(matches!(
            o.check(1, escrow, max, &Limits::default()),
            Err(OfferError::WrongChain { .. })
        ));
        assert!(matches!(
            o.check(chain, escrow, Usdc::from_units(9_999), &Limits::default()),
            Err(OfferError::PriceAboveSpec { .. })
        ));
        let big = Limits {
            memory_bytes: 4 << 30,
            ..Limits::default()
        };
        assert_eq!(
            o.check(chain, escrow, max, &big).unwrap_err().to_string(),
            "the spec asks for 4 GiB of memory; this provider offers at most 128 MiB"
        );
        let slow = Limits {
            timeout_ms: 10_001,
            ..Limits::default()
        };
        assert!(
            o.check(chain, escrow, max, &slow)
                .unwrap_err()
                .to_string()
                .contains("of time")
        );
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["price"], "10000");
        assert_eq!(json["caps"]["memoryBytes"], 134217728);
        assert_eq!(serde_json::from_value::<Offer>(json.clone()).unwrap(), o);
        let mut later = json;
        later["caps"]["gpuSeconds"] = 1.into();
        assert_eq!(
            serde_json::from_value::<Offer>(later).unwrap(),
            o,
            "a cap added later is ignored"
        );
    }
}
