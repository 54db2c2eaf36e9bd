//! `khachapuri token`: a payer token for the `X-Khachapuri-Payer-Token` header.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use anyhow::{Context, bail};
use khachapuri_chain::{Chain, PayerToken, SignedPayerToken, Usdc};
use khachapuri_protocol::eip712::ANY_PROVIDER;

use crate::args::{ChainArgs, at, parse_duration, parse_usdc, resolve_payee, unix_now};

/// `khachapuri token` options.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The provider label the token is for (its payee is read from chain).
    #[arg(long, required_unless_present = "any_provider")]
    provider: Option<String>,
    /// For any provider instead of one: for calls the gateway routes (`{gateway}/{cid}`). Only providers
    /// you reserved with (or that granted you credits) can charge it, within those terms.
    #[arg(long, conflicts_with = "provider")]
    any_provider: bool,
    /// The spec CID the token is limited to [default: any spec].
    #[arg(long)]
    spec: Option<String>,
    /// Most the provider may charge per request, in USDC (e.g. 0.05).
    #[arg(long, default_value = "0.05")]
    max_price: String,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    expires_in: String,
    #[command(flatten)]
    chain: ChainArgs,
}

/// A payer token signed by `chain`'s signer, letting provider `label` charge up to `max_price` per request
/// (for spec `spec`, or any when empty) until `lifetime` from now; with the payee it names.
pub(crate) async fn sign_token(
    chain: &Chain,
    label: &str,
    spec: String,
    max_price: Usdc,
    lifetime: Duration,
) -> anyhow::Result<(SignedPayerToken, Address)> {
    let payee = resolve_payee(chain, label).await?;
    let signed = sign_for(chain, payee, spec, max_price, lifetime).await?;
    Ok((signed, payee))
}

/// A payer token signed by `chain`'s signer for the provider paid at `payee` ([`ANY_PROVIDER`]: any).
pub(crate) async fn sign_for(
    chain: &Chain,
    payee: Address,
    spec: String,
    max_price: Usdc,
    lifetime: Duration,
) -> anyhow::Result<SignedPayerToken> {
    let token = PayerToken {
        provider: payee,
        spec,
        maxPrice: U256::from(max_price.units()),
        expiry: unix_now() + lifetime.as_secs(),
        session: B256::random(),
    };
    let signer = chain.signer().context("no signer")?;
    token
        .sign(signer, &chain.domain())
        .await
        .context("signing the payer token")
}

/// Prints a payer token.
pub async fn token(args: TokenArgs, json: bool) -> anyhow::Result<()> {
    let max_price = parse_usdc("--max-price", &args.max_price)?;
    let lifetime = parse_duration("--expires-in", &args.expires_in)?;
    if lifetime.as_secs() == 0 {
        bail!(
            "--expires-in `{}`: that token would be expired when made; give it at least a second, e.g. 1h",
            args.expires_in
        );
    }
    let chain = args.chain.connect(true).await?;
    let spec = args.spec.clone().unwrap_or_default();
    let (signed, payee) = match &args.provider {
        Some(label) => sign_token(&chain, label, spec, max_price, lifetime).await?,
        None => (
            sign_for(&chain, ANY_PROVIDER, spec, max_price, lifetime).await?,
            ANY_PROVIDER,
        ),
    };
    let provider = args.provider.as_deref().map_or_else(
        || "any provider you reserved with".to_owned(),
        |label| format!("`{label}`"),
    );
    let signer = chain.signer().context("no signer")?;
    let expiry = signed.token.expiry;
    let encoded = signed.encode();
    if json {
        let value = serde_json::json!({
            "token": encoded,
            "payer": signer.address().to_string(),
            "provider": args.provider,
            "anyProvider": args.provider.is_none(),
            "payee": payee.to_string(),
            "spec": args.spec,
            "maxPrice": max_price.to_string(),
            "expiry": expiry,
            "header": format!("X-Khachapuri-Payer-Token: {encoded}"),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{encoded}");
        eprintln!(
            "payer {} lets {provider} charge up to {max_price} per request{} until {} (unix {expiry}); use it as:\n  curl -H 'X-Khachapuri-Payer-Token: {encoded}' ...",
            signer.address(),
            args.spec
                .as_deref()
                .map(|s| format!(" for spec {s}"))
                .unwrap_or_default(),
            at(expiry),
        );
    }
    Ok(())
}
