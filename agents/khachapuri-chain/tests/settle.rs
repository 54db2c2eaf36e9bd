//! The settlement sender against a real anvil: exactly-once under concurrency, a refused payer dropped
//! from its batch, nonce recovery, an unreachable RPC.

use std::collections::HashSet;
use std::time::Duration;

use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use khachapuri_bindings::Escrow;
use khachapuri_chain::testing::{Devnet, anvil_signer};
use khachapuri_chain::{Chain, ChainError, Charge, ConnectOptions, Settler, SettlerConfig, Usdc};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PROVIDER: u32 = 0;

/// Funds, deposits and approves `payers` for the provider.
async fn payers_ready(net: &Devnet, payers: std::ops::Range<u32>, each: Usdc) -> Result {
    let provider = net.address(PROVIDER);
    for i in payers {
        net.fund(i, each).await?;
        let payer = net.chain(i);
        payer.deposit(net.address(i), each).await?;
        payer.approve(provider, Usdc::from_whole(1), each).await?;
    }
    Ok(())
}

/// Every `Consumed` event of `provider`: (payer, price, count).
async fn consumed(chain: &Chain) -> Result<Vec<(khachapuri_chain::Address, u128, u64)>> {
    let filter = Filter::new()
        .address(chain.deployment().escrow)
        .event_signature(Escrow::Consumed::SIGNATURE_HASH)
        .from_block(0);
    let mut out = Vec::new();
    for log in chain.provider().get_logs(&filter).await? {
        let e = Escrow::Consumed::decode_log_data(log.data())?;
        out.push((e.payer, u128::try_from(e.price)?, u64::try_from(e.count)?));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_settlements_land_exactly_once() -> Result {
    let net = Devnet::start().await?;
    payers_ready(&net, 1..11, Usdc::from_whole(10)).await?;
    let provider = net.chain(PROVIDER);
    let settler = Settler::spawn(
        provider.clone(),
        SettlerConfig {
            max_batch: 64,
            ..Default::default()
        },
    )?;
    let earnings_before = provider.earnings(net.address(PROVIDER)).await?;

    let mut tasks = Vec::new();
    let mut expected = 0u128;
    for n in 0..500u32 {
        let payer = net.address(1 + n % 10);
        let price = Usdc::from_units(1_000 + u128::from(n % 7));
        expected += price.units();
        let settler = settler.clone();
        tasks.push(tokio::spawn(async move {
            settler.settle(Charge::one(payer, price)).await
        }));
    }
    let mut batches = HashSet::new();
    for task in tasks {
        let settlement = task.await??;
        assert!(settlement.receipt.gas_used > 0);
        batches.insert((settlement.batch_id, settlement.receipt.tx_hash));
    }
    let earned = provider.earnings(net.address(PROVIDER)).await?.units() - earnings_before.units();
    assert_eq!(earned, expected);
    let events = consumed(&provider).await?;
    let requests: u64 = events.iter().map(|e| e.2).sum();
    let total: u128 = events.iter().map(|e| e.1 * u128::from(e.2)).sum();
    assert_eq!((requests, total), (500, expected));
    // Batched: far fewer transactions than requests, one hash per batch.
    let ids: HashSet<u64> = batches.iter().map(|b| b.0).collect();
    assert_eq!(ids.len(), batches.len());
    assert!(
        batches.len() < 100,
        "{} batches for 500 charges",
        batches.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_payer_fails_alone_and_the_rest_settles() -> Result {
    let net = Devnet::start().await?;
    payers_ready(&net, 1..3, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let settler = Settler::spawn(provider.clone(), SettlerConfig::default())?;
    let (good, broke, stranger) = (net.address(1), net.address(2), net.address(3));
    let price = Usdc::from_units(100_000);
    let handles = settler.submit_all([
        Charge::one(good, price),
        Charge {
            payer: broke,
            price,
            count: 11,
        }, // budget 1 USDC: 1.1 asked
        Charge::one(stranger, price), // never approved
        Charge::one(good, price),
    ]);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await);
    }
    let first = results[0].as_ref().map_err(|e| e.to_string())?;
    let last = results[3].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(
        first.receipt.tx_hash, last.receipt.tx_hash,
        "both of the good payer's charges in one batch"
    );
    let broke_err = results[1]
        .as_ref()
        .err()
        .ok_or("over-budget payer settled")?;
    assert!(
        broke_err
            .to_string()
            .starts_with("budget exhausted: 1.00 USDC left, 1.10 USDC asked"),
        "{broke_err}"
    );
    let stranger_err = results[2]
        .as_ref()
        .err()
        .ok_or("unapproved payer settled")?;
    assert_eq!(stranger_err.payer(), Some(stranger));
    assert_eq!(
        provider.earnings(net.address(PROVIDER)).await?,
        Usdc::from_units(200_000)
    );
    assert_eq!(provider.balance(broke).await?, Usdc::from_whole(1));
    Ok(())
}

#[tokio::test]
async fn recovers_when_someone_else_used_the_nonce() -> Result {
    let net = Devnet::start().await?;
    payers_ready(&net, 1..2, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let settler = Settler::spawn(
        provider.clone(),
        SettlerConfig {
            retry_delay: Duration::from_millis(10),
            ..Default::default()
        },
    )?;
    let payer = net.address(1);
    let price = Usdc::from_units(1_000);
    settler.settle(Charge::one(payer, price)).await?;
    // The same key sends two transactions behind the sender's back: its cached nonce is now stale.
    provider.grant_credits(net.address(5), price).await?;
    provider.grant_credits(net.address(6), price).await?;
    let s = settler.settle(Charge::one(payer, price)).await?;
    assert!(s.batch_id >= 2);
    assert_eq!(
        provider.earnings(net.address(PROVIDER)).await?,
        Usdc::from_units(2_000)
    );
    assert_eq!(
        consumed(&provider).await?.len(),
        2,
        "each charge landed once"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_rpc_fails_charges_as_unavailable() -> Result {
    let net = Devnet::start().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let options = ConnectOptions {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let down = Chain::new(
        &format!("http://127.0.0.1:{port}"),
        Some(anvil_signer(0)),
        net.deployment.clone(),
        options,
    )?;
    let config = SettlerConfig {
        max_attempts: 2,
        retry_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let settler = Settler::spawn(down, config)?;
    let err = settler
        .settle(Charge::one(net.address(1), Usdc::from_units(1)))
        .await
        .err()
        .ok_or("settled offline")?;
    assert!(matches!(err, ChainError::Unavailable { .. }), "{err:?}");
    // Zero prices are refused before anything is sent.
    let zero = settler
        .settle(Charge::one(net.address(1), Usdc::ZERO))
        .await
        .err()
        .ok_or("zero price")?;
    assert!(matches!(zero, ChainError::InvalidArgument(_)));
    Ok(())
}
