//! The settlement sender against a real anvil: exactly-once under concurrency, the lines the escrow refuses
//! failing alone in a batch that settles the rest in one transaction, nonce recovery, an unreachable RPC.

use std::collections::HashSet;
use std::time::Duration;

use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use khachapuri_bindings::Escrow;
use khachapuri_chain::testing::{Devnet, anvil_signer};
use khachapuri_chain::{
    Address, B256, Chain, ChainError, Charge, ConnectOptions, Settler, SettlerConfig, Usdc,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PROVIDER: u32 = 0;

/// Funds and deposits `payers`, each reserving all of it for the provider at up to 1 USDC a request.
async fn payers_ready(net: &Devnet, payers: std::ops::Range<u32>, each: Usdc) -> Result {
    let provider = net.address(PROVIDER);
    for i in payers {
        net.fund(i, each).await?;
        let payer = net.chain(i);
        payer.deposit(net.address(i), each).await?;
        payer.reserve(provider, Usdc::from_whole(1), each).await?;
    }
    Ok(())
}

/// Every `ChargeRefused` event of the escrow: (transaction, payer, line index).
async fn refused(chain: &Chain) -> Result<Vec<(Option<B256>, Address, u64)>> {
    let filter = Filter::new()
        .address(chain.deployment().escrow)
        .event_signature(Escrow::ChargeRefused::SIGNATURE_HASH)
        .from_block(0);
    let mut out = Vec::new();
    for log in chain.provider().get_logs(&filter).await? {
        let e = Escrow::ChargeRefused::decode_log_data(log.data())?;
        out.push((log.transaction_hash, e.payer, u64::try_from(e.index)?));
    }
    Ok(out)
}

/// Every `Consumed` event of the escrow: (payer, price, count).
async fn consumed(chain: &Chain) -> Result<Vec<(Address, u128, u64)>> {
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
async fn refused_lines_fail_alone_and_the_rest_settles_in_one_transaction() -> Result {
    let net = Devnet::start().await?;
    payers_ready(&net, 1..4, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let v = net.address(PROVIDER);
    let (good, short, released, stranger) = (
        net.address(1),
        net.address(2),
        net.address(3),
        net.address(4),
    );
    // One payer released its whole reserve, and the delay is over: nothing is left to charge.
    net.chain(3).release(v, Usdc::MAX).await?;
    let at = provider
        .terms(released, v)
        .await?
        .release
        .ok_or("no release pending")?
        .at;
    net.set_next_block_timestamp(at).await?;
    net.mine().await?;
    assert_eq!(
        provider.terms(released, v).await?.releasable,
        Usdc::from_whole(1)
    );

    let settler = Settler::spawn(provider.clone(), SettlerConfig::default())?;
    let nonce = provider.provider().get_transaction_count(v).await?;
    let price = Usdc::from_units(100_000);
    let handles = settler.submit_all([
        Charge::one(good, price),
        // 1 USDC reserved: 1.1 asked.
        Charge {
            payer: short,
            price,
            count: 11,
        },
        Charge::one(released, price),
        // Never reserved anything.
        Charge::one(stranger, price),
        Charge::one(good, price),
    ]);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await);
    }
    let first = results[0].as_ref().map_err(|e| e.to_string())?;
    let last = results[4].as_ref().map_err(|e| e.to_string())?;
    assert_eq!(first, last, "both of the good payer's charges in one batch");
    let refusal = |i: usize| {
        results[i]
            .as_ref()
            .err()
            .ok_or(format!("charge {i} settled"))
    };
    assert_eq!(
        refusal(1)?.to_string(),
        format!("payer {short} has 1.00 USDC reserved for provider {v}, 1.10 USDC needed")
    );
    assert_eq!(
        refusal(2)?.to_string(),
        format!("payer {released} has 0.00 USDC reserved for provider {v}, 0.10 USDC needed")
    );
    assert_eq!(
        refusal(3)?.to_string(),
        format!(
            "payer {stranger} has no terms with provider {v} (no price, nothing reserved), and its trial credits with it do not cover the charge"
        )
    );
    for (i, payer) in [(1, short), (2, released), (3, stranger)] {
        assert_eq!(refusal(i)?.payer(), Some(payer));
        assert!(matches!(refusal(i)?, ChainError::Reverted { .. }));
    }

    // One transaction: the provider's nonce moved by one, and the refusals are that transaction's.
    assert_eq!(
        provider.provider().get_transaction_count(v).await?,
        nonce + 1
    );
    let tx = first.receipt.tx_hash;
    let mut lines: Vec<(Address, u64)> = refused(&provider)
        .await?
        .into_iter()
        .map(|(hash, payer, index)| {
            assert_eq!(hash, Some(tx));
            (payer, index)
        })
        .collect();
    lines.sort();
    let mut expected = vec![(short, 1), (released, 2), (stranger, 3)];
    expected.sort();
    assert_eq!(lines, expected);

    // Only the good payer was charged; the refused ones kept everything.
    assert_eq!(provider.earnings(v).await?, Usdc::from_units(200_000));
    assert_eq!(
        provider.terms(good, v).await?.reserve,
        Usdc::from_units(800_000)
    );
    assert_eq!(provider.terms(short, v).await?.reserve, Usdc::from_whole(1));
    // The refused line still applied the due release: the money is back in the free balance.
    let t = provider.terms(released, v).await?;
    assert_eq!((t.reserve, t.releasable), (Usdc::ZERO, Usdc::ZERO));
    assert_eq!(provider.free_balance(released).await?, Usdc::from_whole(1));
    Ok(())
}

/// A release scheduled after the provider claimed does not stop the claim from settling within the delay.
#[tokio::test]
async fn a_release_during_the_delay_does_not_stop_a_claimed_charge() -> Result {
    let net = Devnet::start().await?;
    payers_ready(&net, 1..2, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let (payer, v) = (net.address(1), net.address(PROVIDER));
    let claimable = provider.terms(payer, v).await?.claimable_reserve();
    assert_eq!(claimable, Usdc::from_whole(1));
    // The payer releases everything (its free balance is already empty: all of it is reserved).
    net.chain(1).release(v, Usdc::MAX).await?;
    net.increase_time(net.deployment.withdrawal_delay - 30)
        .await?;
    let settler = Settler::spawn(provider.clone(), SettlerConfig::default())?;
    let handles = settler.submit_all((0..4).map(|_| Charge::one(payer, Usdc::from_units(250_000))));
    for h in handles {
        h.await?;
    }
    assert_eq!(provider.earnings(v).await?, Usdc::from_whole(1));
    assert_eq!(provider.terms(payer, v).await?.reserve, Usdc::ZERO);
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
