//! The chain client of Khachapuri, shared by the provider agent, the gateway and the CLI.
//!
//! - [`Chain`]: connect to an RPC with a signer ([`SignerSource`]) and the chain's [`Deployment`].
//! - Labels: [`Chain::resolve_label`] → [`ProviderRecord`]; registration ([`Chain::register_provider`]:
//!   commit naming the resolver's predicted address, deploy it while the commitment ages, register; or
//!   [`Chain::deploy_resolver`] then [`Chain::register_label`]).
//! - Escrow reads ([`Chain::terms`], [`Chain::free_balance`], ...) and writes ([`Chain::deposit`],
//!   [`Chain::deposit_with_permit`], [`Chain::reserve`], [`Chain::release`], [`Chain::consume`], ...),
//!   amounts in [`Usdc`].
//! - EIP-712: [`PayerToken`] / [`SignedPayerToken`] (the `X-Khachapuri-Payer-Token: kp2.…` token) and
//!   [`SpecTerms`], in the escrow's domain ([`eip712::domain`]).
//! - [`Settler`]: the settlement sender that owns the signer's nonce and batches charges.
//! - [`ChainError`]: an unreachable RPC ([`ChainError::Unavailable`]) apart from a revert
//!   ([`ChainError::Reverted`], with the contract error as a sentence).
//! - `testing` (feature `testing`): anvil with every contract deployed, for tests and `khachapuri dev`.
//!
//! The contracts are reached only through the generated bindings of `khachapuri-bindings`.

mod client;
mod deployment;
mod error;
mod escrow;
mod registry;
pub mod reputation;
mod settle;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Chain, ConnectOptions, Receipt, SignerSource, parse_private_key};
pub use deployment::Deployment;
pub use error::{ChainError, ContractError, format_time};
pub use escrow::{Charge, Scheduled, Terms};
pub use registry::{ProviderRecord, RegistrationStep};
pub use settle::{Settlement, SettlementHandle, Settler, SettlerConfig};
// The protocol's types, re-exported: every user of the chain client speaks them.
pub use khachapuri_protocol::{
    InvalidLabel, PayerToken, Server, SignedPayerToken, SpecTerms, TUNNEL_MARKER, TokenError, Usdc,
    UsdcParseError, eip712, label_node, validate_label,
};

pub use alloy::primitives::{Address, B256, Bytes, U256};
pub use alloy::signers::local::PrivateKeySigner;
