//! Bindings for the Khachapuri contracts, generated at compile time by alloy's `sol!` from the ABI and
//! bytecode in `bindings/artifacts/` (copied from forge's `out/` by `script/bindings.sh`; `make test` fails
//! when they are stale). Nothing here is written by hand: the contracts are the source of truth.
//!
//! Each module exposes the contract's calls, events, errors and a `new(address, provider)` instance with
//! `deploy` from its bytecode.
#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Registry,
    "artifacts/Registry.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Resolver,
    "artifacts/Resolver.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    ResolverFactory,
    "artifacts/ResolverFactory.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Escrow,
    "artifacts/Escrow.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestUSDC,
    "artifacts/TestUSDC.json"
);
