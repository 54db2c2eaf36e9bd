//! Errors of the chain client: an RPC that is down is told apart from a revert, and the contracts' custom
//! errors are decoded into sentences a person understands, with amounts in USDC.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolInterface;
use alloy::transports::{RpcError, TransportErrorKind};
use khachapuri_bindings::{Escrow, Registry, Resolver, ResolverFactory, TestUSDC};

use crate::Usdc;

/// Everything that can go wrong talking to the chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The RPC endpoint cannot be reached (connection refused, timeout, HTTP failure). Nothing was decided
    /// on chain: retry later (a provider answers 503).
    #[error("chain RPC unavailable: {message}")]
    Unavailable {
        /// What the transport said.
        message: String,
    },
    /// A contract refused the call or transaction (a provider answers 402 for escrow refusals).
    #[error("{reason}")]
    Reverted {
        /// A sentence a person understands.
        reason: String,
        /// The decoded custom error, if the revert carried one this crate knows.
        error: Option<Box<ContractError>>,
    },
    /// The node answered with an error that is not a revert (nonce too low, underpriced, ...).
    #[error("chain RPC error: {message}")]
    Rpc {
        /// What the node said.
        message: String,
    },
    /// No provider is registered under this label.
    #[error("unknown label `{0}`: no provider is registered under it")]
    UnknownLabel(String),
    /// The label is not a lower-case DNS label.
    #[error("invalid label `{label}`: {reason}")]
    InvalidLabel {
        /// The label given.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `deployments/<chainId>.json` is missing or malformed, or does not match the chain.
    #[error("deployment: {0}")]
    Deployment(String),
    /// The signer could not be loaded (missing variable, bad key, wrong keystore password).
    #[error("signer: {0}")]
    Signer(String),
    /// A write was asked of a client connected without a signer.
    #[error(
        "this chain client has no signer: connect with a private key or keystore to send transactions"
    )]
    NoSigner,
    /// A value the contracts do not accept, caught before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A response could not be decoded.
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ChainError {
    /// The same error with `note` after its sentence (what was done about it, what is left).
    pub fn with_note(self, note: &str) -> Self {
        match self {
            Self::Reverted { reason, error } => Self::Reverted {
                reason: format!("{reason}; {note}"),
                error,
            },
            Self::Unavailable { message } => Self::Unavailable {
                message: format!("{message}; {note}"),
            },
            Self::Rpc { message } => Self::Rpc {
                message: format!("{message}; {note}"),
            },
            Self::Decode(message) => Self::Decode(format!("{message}; {note}")),
            Self::InvalidArgument(message) => Self::InvalidArgument(format!("{message}; {note}")),
            Self::Signer(message) => Self::Signer(format!("{message}; {note}")),
            Self::Deployment(message) => Self::Deployment(format!("{message}; {note}")),
            other => other,
        }
    }

    /// True when the RPC was unreachable (as opposed to a contract or node refusal).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The decoded contract error, if this is a revert with one.
    pub fn contract_error(&self) -> Option<&ContractError> {
        match self {
            Self::Reverted { error: Some(e), .. } => Some(e),
            _ => None,
        }
    }

    /// The payer an escrow refusal names (not approved, price, budget, funds), if any.
    pub fn payer(&self) -> Option<Address> {
        self.contract_error().and_then(ContractError::payer)
    }

    /// A revert from raw revert data.
    pub fn from_revert_data(data: &[u8]) -> Self {
        match ContractError::decode(data) {
            Some(e) => Self::Reverted {
                reason: e.to_string(),
                error: Some(Box::new(e)),
            },
            None if data.is_empty() => Self::Reverted {
                reason: "the contract reverted without a reason".into(),
                error: None,
            },
            None => match string_reason(data) {
                Some(reason) => Self::Reverted {
                    reason,
                    error: None,
                },
                None => Self::Reverted {
                    reason: format!(
                        "the contract reverted with unknown data {}",
                        Bytes::copy_from_slice(data)
                    ),
                    error: None,
                },
            },
        }
    }
}

/// A standard `Error(string)` or `Panic(uint256)` revert as a sentence, with what to do where it is known.
/// The Khachapuri contracts revert only with custom errors, so a string comes from the token (USDC's
/// `Blacklistable: account is blacklisted`, `Pausable: paused`, ...).
fn string_reason(data: &[u8]) -> Option<String> {
    use alloy::sol_types::{Panic, Revert, SolError};
    if let Ok(revert) = Revert::abi_decode(data) {
        let reason = revert.reason;
        let lower = reason.to_lowercase();
        let hint = if lower.contains("blacklist") {
            ": the token's issuer has frozen an account in this transfer; nothing can move its funds until \
             the issuer lifts the freeze"
        } else if lower.contains("paused") {
            ": the token's issuer has paused all transfers; retry once it resumes"
        } else {
            ""
        };
        return Some(format!("the token refused: {reason}{hint}"));
    }
    Panic::abi_decode(data)
        .ok()
        .map(|panic| format!("the contract panicked ({panic})"))
}

/// Classifies an RPC-level error: transport failures are [`ChainError::Unavailable`]; error responses with
/// revert data are [`ChainError::Reverted`]; other error responses are [`ChainError::Rpc`].
pub(crate) fn from_rpc(err: RpcError<TransportErrorKind>) -> ChainError {
    match &err {
        RpcError::Transport(kind) => ChainError::Unavailable {
            // With its causes: a TLS failure's reason is only in a cause.
            message: khachapuri_tls::error_chain(kind),
        },
        RpcError::ErrorResp(payload) => match payload.as_revert_data() {
            Some(data) => ChainError::from_revert_data(&data),
            None if payload.message.contains("revert") => ChainError::Reverted {
                reason: format!("the transaction reverted: {}", payload.message),
                error: None,
            },
            None => ChainError::Rpc {
                message: payload.to_string(),
            },
        },
        _ => ChainError::Rpc {
            message: err.to_string(),
        },
    }
}

/// The transport error with its source chain (reqwest hides "connection refused" in its sources).
impl From<alloy::contract::Error> for ChainError {
    fn from(err: alloy::contract::Error) -> Self {
        use alloy::contract::Error as E;
        use alloy::providers::PendingTransactionError as P;
        match err {
            E::TransportError(e) => from_rpc(e),
            E::PendingTransactionError(P::TransportError(e)) => from_rpc(e),
            E::PendingTransactionError(P::TxWatcher(e)) => ChainError::Unavailable {
                message: e.to_string(),
            },
            E::ZeroData(name, _) => ChainError::Decode(format!(
                "`{name}` returned no data: is the deployment file for this chain?"
            )),
            other => ChainError::Decode(other.to_string()),
        }
    }
}

impl From<khachapuri_protocol::InvalidLabel> for ChainError {
    fn from(err: khachapuri_protocol::InvalidLabel) -> Self {
        Self::InvalidLabel {
            label: err.label,
            reason: err.reason,
        }
    }
}

impl From<alloy::signers::Error> for ChainError {
    fn from(err: alloy::signers::Error) -> Self {
        Self::Signer(err.to_string())
    }
}

impl From<RpcError<TransportErrorKind>> for ChainError {
    fn from(err: RpcError<TransportErrorKind>) -> Self {
        from_rpc(err)
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(err: alloy::providers::PendingTransactionError) -> Self {
        alloy::contract::Error::PendingTransactionError(err).into()
    }
}

/// A custom error of one of the Khachapuri contracts (or of the token), decoded from revert data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractError {
    /// The escrow refused.
    Escrow(Escrow::EscrowErrors),
    /// The registry refused.
    Registry(Registry::RegistryErrors),
    /// A resolver refused.
    Resolver(Resolver::ResolverErrors),
    /// The resolver factory refused.
    ResolverFactory(ResolverFactory::ResolverFactoryErrors),
    /// The token refused (allowance, balance, permit).
    Token(TestUSDC::TestUSDCErrors),
}

impl ContractError {
    /// Decodes revert data against every contract's errors (escrow first: selectors shared between
    /// contracts, like `ZeroAddress`, mean the same everywhere).
    pub fn decode(data: &[u8]) -> Option<Self> {
        Escrow::EscrowErrors::abi_decode(data)
            .map(Self::Escrow)
            .or_else(|_| Registry::RegistryErrors::abi_decode(data).map(Self::Registry))
            .or_else(|_| Resolver::ResolverErrors::abi_decode(data).map(Self::Resolver))
            .or_else(|_| TestUSDC::TestUSDCErrors::abi_decode(data).map(Self::Token))
            .or_else(|_| {
                ResolverFactory::ResolverFactoryErrors::abi_decode(data).map(Self::ResolverFactory)
            })
            .ok()
    }

    /// The payer an escrow charge refusal names.
    pub fn payer(&self) -> Option<Address> {
        use Escrow::EscrowErrors as E;
        match self {
            Self::Escrow(E::NotApproved(e)) => Some(e.payer),
            Self::Escrow(E::PriceAboveTerms(e)) => Some(e.payer),
            Self::Escrow(E::InsufficientReserve(e)) => Some(e.payer),
            _ => None,
        }
    }
}

fn usdc(v: U256) -> Usdc {
    Usdc::from_u256(v)
}

impl std::fmt::Display for ContractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Escrow::EscrowErrors as E;
        use Registry::RegistryErrors as R;
        use Resolver::ResolverErrors as V;
        use TestUSDC::TestUSDCErrors as T;
        match self {
            Self::Escrow(e) => match e {
                E::ZeroAmount(_) => write!(f, "the amount, price or count is zero"),
                E::ZeroAddress(_) => write!(
                    f,
                    "the zero address was given as a payer, provider or recipient"
                ),
                E::AmountOverflow(e) => {
                    write!(f, "amount {} is too large for the escrow", usdc(e.amount))
                }
                E::EscrowAsRecipient(_) => write!(
                    f,
                    "the escrow itself cannot receive: tokens sent there could never leave"
                ),
                E::NotApproved(e) => write!(
                    f,
                    "payer {} has no terms with provider {} (no price, nothing reserved), and its trial credits with it do not cover the charge",
                    e.payer, e.provider
                ),
                E::PriceAboveTerms(e) => write!(
                    f,
                    "price {} is above the {} per request payer {} allows provider {}",
                    usdc(e.price),
                    usdc(e.maxPrice),
                    e.payer,
                    e.provider
                ),
                E::InsufficientReserve(e) => write!(
                    f,
                    "payer {} has {} reserved for provider {}, {} needed",
                    e.payer,
                    usdc(e.reserve),
                    e.provider,
                    usdc(e.needed)
                ),
                E::InsufficientBalance(e) => write!(
                    f,
                    "insufficient free balance: {} free in the escrow, {} requested",
                    usdc(e.available),
                    usdc(e.requested)
                ),
                E::InsufficientEarnings(e) => write!(
                    f,
                    "insufficient earnings: {} earned, {} requested",
                    usdc(e.available),
                    usdc(e.requested)
                ),
                E::NothingPending(e) => {
                    write!(f, "nothing is pending with provider {}", e.provider)
                }
                E::InvalidDelay(e) => write!(
                    f,
                    "a withdrawal delay of {} s is refused: it must be at least 1 s and at most a year",
                    e.delay
                ),
                E::Reentrancy(_) => write!(f, "reentrant call refused"),
                E::PermitFailed(_) => write!(
                    f,
                    "the permit was refused and the token allowance does not cover the deposit"
                ),
                E::Frozen(e) => write!(
                    f,
                    "{} is frozen by the token's issuer (blacklisted): the escrow moves none of its money, in or \
                     out, until the issuer lifts the freeze; nothing is lost meanwhile",
                    e.account
                ),
                E::AlreadyRevoked(_) => write!(
                    f,
                    "this deployment is already revoked (a revocation is for good): deploy again for a new URL"
                ),
                E::SafeERC20FailedOperation(e) => {
                    write!(f, "the token {} refused the transfer", e.token)
                }
                other => write!(f, "escrow error {other:?}"),
            },
            Self::Registry(e) => match e {
                R::InvalidLabel(e) => write!(f, "invalid label `{}`", e.label),
                R::ReservedLabel(e) => write!(
                    f,
                    "`{}` is reserved for infrastructure; choose another label",
                    e.label
                ),
                R::CommitmentExists(e) => write!(
                    f,
                    "this commitment is already recorded and runs until {}: register with it, or commit again after that",
                    format_time(e.expiresAt)
                ),
                R::NotPendingOwner(e) => write!(
                    f,
                    "{} is not the pending owner of this label: the owner must `transfer` it to you first",
                    e.caller
                ),
                R::LabelTaken(e) => write!(f, "the label is already registered (node {})", e.node),
                R::CommitmentNotFound(_) => {
                    write!(f, "no commitment matches this registration: commit first")
                }
                R::CommitmentTooNew(e) => write!(
                    f,
                    "the commitment is too new: register after {}",
                    format_time(e.readyAt)
                ),
                R::CommitmentExpired(_) => write!(f, "the commitment expired: commit again"),
                R::NotLabelOwner(e) => write!(f, "{} does not own this label", e.caller),
                R::ZeroOwner(_) => write!(f, "the zero address cannot own a label"),
                R::InvalidCommitmentAges(e) => {
                    write!(
                        f,
                        "invalid commitment ages: min {} s, max {} s",
                        e.minAge, e.maxAge
                    )
                }
            },
            Self::Resolver(e) => match e {
                V::NotResolverOwner(e) => write!(f, "{} does not own this resolver", e.caller),
                V::NotPendingOwner(e) => write!(
                    f,
                    "{} is not the pending owner of this resolver: its owner must transfer it to you first",
                    e.caller
                ),
                V::AlreadyInitialized(_) => write!(f, "the resolver is already initialized"),
                V::ZeroAddress(_) => write!(f, "the zero address was given as owner or payee"),
                V::EmptyKey(_) => write!(f, "the RSA public key is empty"),
            },
            Self::ResolverFactory(e) => match e {
                ResolverFactory::ResolverFactoryErrors::ResolverExists(e) => write!(
                    f,
                    "you already deployed a resolver under this salt, at {}: use it, or pick another salt",
                    e.resolver
                ),
                other => write!(f, "resolver factory error {other:?}"),
            },
            Self::Token(e) => match e {
                T::ERC20InsufficientAllowance(e) => write!(
                    f,
                    "token allowance too low: {} allowed to {}, {} needed",
                    usdc(e.allowance),
                    e.spender,
                    usdc(e.needed)
                ),
                T::ERC20InsufficientBalance(e) => write!(
                    f,
                    "not enough USDC in the wallet: {} has {}, {} needed; get USDC into this wallet first",
                    e.sender,
                    usdc(e.balance),
                    usdc(e.needed)
                ),
                T::ERC2612ExpiredSignature(e) => {
                    write!(f, "the permit expired at {}", format_time(e.deadline))
                }
                T::ERC2612InvalidSigner(e) => write!(
                    f,
                    "the permit was signed by {}, not by the owner {}",
                    e.signer, e.owner
                ),
                T::ERC3009UsedAuthorization(e) => write!(
                    f,
                    "the transfer authorization {} of {} was already used or cancelled",
                    e.nonce, e.authorizer
                ),
                T::ERC3009InvalidAuthorizationTime(e) => write!(
                    f,
                    "the transfer authorization is valid only after {} and before {}",
                    format_time(e.validAfter),
                    format_time(e.validBefore)
                ),
                T::ERC3009InvalidSignature(_) => write!(
                    f,
                    "the transfer authorization is not signed by the account it moves money from"
                ),
                other => write!(f, "token error {other:?}"),
            },
        }
    }
}

/// A unix timestamp as `YYYY-MM-DD HH:MM:SS UTC (unix N)`.
pub fn format_time(unix: U256) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return format!("unix time {unix}");
    };
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC (unix {secs})",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(
            format_time(U256::from(0)),
            "1970-01-01 00:00:00 UTC (unix 0)"
        );
        assert_eq!(
            format_time(U256::from(1_700_000_000u64)),
            "2023-11-14 22:13:20 UTC (unix 1700000000)"
        );
        assert_eq!(
            format_time(U256::from(951_782_400u64)),
            "2000-02-29 00:00:00 UTC (unix 951782400)"
        );
    }

    #[test]
    fn reserve_sentence() {
        let data = Escrow::InsufficientReserve {
            payer: Address::repeat_byte(1),
            provider: Address::repeat_byte(2),
            reserve: U256::from(300_000),
            needed: U256::from(500_000),
        }
        .abi_encode();
        let err = ChainError::from_revert_data(&data);
        assert!(
            err.to_string().starts_with(&format!(
                "payer {} has 0.30 USDC reserved for provider {}, 0.50 USDC needed",
                Address::repeat_byte(1),
                Address::repeat_byte(2)
            )),
            "{err}"
        );
        assert_eq!(err.payer(), Some(Address::repeat_byte(1)));
        assert!(!err.is_unavailable());
    }

    #[test]
    fn string_and_panic_reverts_read_as_sentences() {
        use alloy::sol_types::{Panic, Revert};
        let data = Revert::from("Blacklistable: account is blacklisted").abi_encode();
        let err = ChainError::from_revert_data(&data);
        assert!(
            err.to_string()
                .starts_with("the token refused: Blacklistable: account is blacklisted: the token's issuer has frozen"),
            "{err}"
        );
        let data = Revert::from("Pausable: paused").abi_encode();
        assert!(
            ChainError::from_revert_data(&data)
                .to_string()
                .contains("retry once it resumes")
        );
        let data = Panic::from(U256::from(0x11)).abi_encode();
        let err = ChainError::from_revert_data(&data);
        assert!(
            err.to_string().starts_with("the contract panicked"),
            "{err}"
        );
        assert!(!err.to_string().contains("0x4e487b71"), "no hex: {err}");
    }

    #[test]
    fn unknown_revert_data_is_still_a_revert() {
        let err = ChainError::from_revert_data(&[1, 2, 3, 4]);
        assert!(matches!(err, ChainError::Reverted { error: None, .. }));
        assert!(err.to_string().contains("0x01020304"));
    }
}
