//! x402's `exact` payment against the real token on anvil: an authorization that `khachapuri_protocol::x402`
//! accepts is one the token settles, exactly once; what the format refuses, the token refuses too.

use alloy::primitives::U256;
use khachapuri_chain::testing::{Devnet, anvil_signer};
use khachapuri_chain::{Address, Usdc};
use khachapuri_protocol::x402::{PaymentPayload, PaymentRequirements, X402Error};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PAYER: u32 = 3;
const PROVIDER: u32 = 2;

async fn authorized(
    net: &Devnet,
    offer: &PaymentRequirements,
    value: u64,
    valid_before: u64,
) -> Result<PaymentPayload> {
    let domain = net.chain(PAYER).token_domain().await?;
    let value = U256::from(value);
    Ok(PaymentPayload::pay(&anvil_signer(PAYER), &domain, offer, value, valid_before).await?)
}

#[tokio::test]
async fn an_accepted_authorization_settles_once_and_a_refused_one_never() -> Result {
    let net = Devnet::start().await?;
    net.fund(PAYER, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let domain = provider.token_domain().await?;
    let offer = PaymentRequirements::exact(&domain, net.address(PROVIDER), U256::from(10_000), 60);
    assert_eq!(
        (offer.extra.name.as_str(), offer.extra.version.as_str()),
        ("USD Coin", "1")
    );
    let now = khachapuri_protocol::unix_now();
    let payment = authorized(&net, &offer, 10_000, now + 300).await?;
    let auth = &payment.payload.authorization;
    assert_eq!(
        payment.check(&offer, &domain, now, 30),
        Ok(net.address(PAYER))
    );
    assert!(!provider.authorization_state(auth.from, auth.nonce).await?);

    let before = |who: Address| provider.token_balance(who);
    let (payer_before, payee_before) = (before(auth.from).await?, before(auth.to).await?);
    provider
        .transfer_with_authorization(auth, &payment.payload.signature)
        .await?;
    assert_eq!(
        provider.token_balance(auth.from).await?,
        payer_before
            .checked_sub(Usdc::from_units(10_000))
            .unwrap_or_default()
    );
    assert_eq!(
        provider.token_balance(auth.to).await?,
        payee_before.saturating_add(Usdc::from_units(10_000))
    );
    assert!(provider.authorization_state(auth.from, auth.nonce).await?);

    // A replay: the token refuses it, and says why.
    let err = provider
        .transfer_with_authorization(auth, &payment.payload.signature)
        .await
        .expect_err("a used nonce");
    assert!(err.to_string().contains("already used"), "{err}");

    // A value raised after signing: the format refuses it (not the exact price), and so does the token
    // (the signature no longer matches); a window stretched after signing fails the signature check.
    let mut raised = authorized(&net, &offer, 10_000, now + 300).await?;
    raised.payload.authorization.value = U256::from(500_000);
    assert!(matches!(
        raised.check(&offer, &domain, now, 30),
        Err(X402Error::WrongAmount { .. })
    ));
    let mut stretched = authorized(&net, &offer, 10_000, now + 300).await?;
    stretched.payload.authorization.valid_before += U256::from(3_600);
    assert!(matches!(
        stretched.check(&offer, &domain, now, 30),
        Err(X402Error::BadSignature { .. })
    ));
    let err = provider
        .transfer_with_authorization(&raised.payload.authorization, &raised.payload.signature)
        .await
        .expect_err("a forged value");
    assert!(
        err.to_string().contains("not signed by the account"),
        "{err}"
    );
    Ok(())
}

/// The settlement task with one bad entry among its transfers: an authorization already used is refused
/// with the token's reason, and the good ones around it land, each exactly once, on one nonce sequence.
#[tokio::test]
async fn a_bad_transfer_among_good_ones_fails_alone() -> Result {
    use khachapuri_chain::{Settler, SettlerConfig};
    let net = Devnet::start().await?;
    net.fund(PAYER, Usdc::from_whole(1)).await?;
    let provider = net.chain(PROVIDER);
    let domain = provider.token_domain().await?;
    let offer = PaymentRequirements::exact(&domain, net.address(PROVIDER), U256::from(10_000), 60);
    let now = khachapuri_protocol::unix_now();
    let used = authorized(&net, &offer, 10_000, now + 300).await?;
    let a = &used.payload.authorization;
    provider
        .transfer_with_authorization(a, &used.payload.signature)
        .await?;
    let before = provider.token_balance(net.address(PAYER)).await?;

    let settler = Settler::spawn(provider.clone(), SettlerConfig::default())?;
    let first = authorized(&net, &offer, 10_000, now + 300).await?;
    let second = authorized(&net, &offer, 10_000, now + 300).await?;
    let handles: Vec<_> = [&first, &used, &second]
        .into_iter()
        .map(|p| {
            settler.submit_transfer(p.payload.authorization.clone(), p.payload.signature.clone())
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await);
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = results[1].as_ref().expect_err("a used authorization");
    assert!(err.to_string().contains("already used"), "{err}");
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert_eq!(
        provider.token_balance(net.address(PAYER)).await?,
        before
            .checked_sub(Usdc::from_units(20_000))
            .unwrap_or_default(),
        "the two good ones moved the price once each"
    );
    Ok(())
}
