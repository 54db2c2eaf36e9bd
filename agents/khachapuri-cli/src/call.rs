//! `khachapuri call`: like curl, adding a payer token made on the spot (limited to the function's spec,
//! its provider, a price cap and a few minutes), so that the signer pays instead of the spec's owner; or,
//! with `--x402`, an x402 payment from the signer's wallet (no deposit, no reserve).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use khachapuri_protocol::http::PAYER_TOKEN_HEADER;
use khachapuri_protocol::x402::{
    PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER, PaymentPayload, PaymentRequirements,
    SettlementResponse,
};
use khachapuri_provider::{PAYER_HEADER, PRICE_HEADER, RECEIPT_HEADER};
use serde_json::json;

use crate::args::{ChainArgs, parse_usdc};
use crate::progress;
use crate::request::{Answer, RequestArgs};
use crate::token::sign_token;

/// How long a token made for one call stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// How long an x402 payment made for one call stays valid.
const X402_LIFETIME: Duration = Duration::from_secs(120);

/// `khachapuri call` options.
#[derive(clap::Args, Debug)]
pub struct CallArgs {
    /// The function's URL as `deploy` printed it: `{gateway}/{label}/{cid}[/path][?query]`,
    /// `https://{label}.{domain}/{cid}...`, `{gateway}/{cid}` (routed: any provider), or an agent's own
    /// `{url}/{cid}`.
    url: String,
    #[command(flatten)]
    request: RequestArgs,
    /// The provider's label, when the URL does not carry it.
    #[arg(long)]
    provider: Option<String>,
    /// Pay whichever provider answers (a token for any provider, for this spec only), whatever the URL's
    /// host looks like: for a routed URL on a gateway whose host has a subdomain.
    #[arg(long, conflicts_with_all = ["provider", "x402"])]
    any_provider: bool,
    /// The most this call may cost, USDC.
    #[arg(long, default_value = "0.05")]
    max_price: String,
    /// Send no payer token: the spec's owner pays, as with plain curl.
    #[arg(long)]
    owner_pays: bool,
    /// Pay this one call with x402 from the signer's wallet USDC (an EIP-3009 authorization to the
    /// provider's payee, settled before the program runs): no deposit or reserve needed.
    #[arg(long, conflicts_with = "owner_pays")]
    x402: bool,
    /// Give up after this long.
    #[arg(long, default_value = "60s")]
    timeout: String,
    #[command(flatten)]
    chain: ChainArgs,
}

/// Where a function URL names its provider and spec.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The provider's label, when the URL names it.
    pub label: Option<String>,
    /// The spec's CID.
    pub cid: String,
    /// The URL up to the CID (`{gateway}/{label}`, `https://{label}.{domain}`, an agent's URL), with
    /// no trailing slash: where the provider's own paths (`/_logs/{cid}`) are.
    pub base: String,
}

/// Finds the spec CID (the first path segment that is one) and the provider label (the path segment
/// before it, or else the first name of a host like `alice.khachapuri.xyz`).
pub(crate) fn target(url: &reqwest::Url) -> anyhow::Result<Target> {
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    let is_cid = |s: &str| !s.is_empty() && khachapuri_ipfs::parse_cid(s).is_ok();
    let position = segments.iter().take(2).position(|s| is_cid(s)).ok_or_else(|| {
        anyhow!(
            "{url} names no spec CID: write {{gateway}}/{{label}}/{{cid}} or https://{{label}}.{{domain}}/{{cid}}, as \
             `khachapuri deploy` printed it"
        )
    })?;
    // Canonical (base32 CIDv1, base58 CIDv0): the form providers sign and check grants and tokens for.
    let cid = khachapuri_ipfs::parse_cid(segments[position])?.to_string();
    let label = if position == 1 {
        Some(segments[0].to_owned())
    } else {
        url.host_str()
            .filter(|host| !host.starts_with('[') && host.parse::<std::net::IpAddr>().is_err())
            .and_then(|host| host.split_once('.'))
            // `alice.khachapuri.xyz` or `alice.localhost` names `alice`; `khachapuri.xyz` itself names no
            // provider (a routed call).
            .filter(|(_, rest)| rest.contains('.') || *rest == "localhost")
            .map(|(first, _)| first.to_owned())
    };
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(&segments[..position].join("/"));
    let base = base.as_str().trim_end_matches('/').to_owned();
    Ok(Target { label, cid, base })
}

/// An x402 payment for one call at `label`'s price (read from its offer at `{base}/_provider`): an EIP-3009
/// authorization from the signer's wallet to the provider's payee, signed in the token's domain. Refused
/// here when the price is above `max_price` or the wallet cannot cover it.
async fn x402_payment(
    chain: &khachapuri_chain::Chain,
    base: &str,
    label: &str,
    max_price: khachapuri_chain::Usdc,
) -> anyhow::Result<PaymentPayload> {
    let offer = progress::wait(
        format!("reading `{label}`'s price"),
        crate::deploy::fetch_offer(base),
    )
    .await
    .map_err(|e| {
        anyhow!("cannot read `{label}`'s price at {base}/_provider ({e}); is the gateway running?")
    })?;
    if offer.price > max_price {
        bail!(
            "`{label}` charges {} per call, above --max-price {max_price}; raise --max-price to pay it",
            offer.price
        );
    }
    let me = chain.address().map_err(|e| anyhow!("{e}"))?;
    let held = chain
        .token_balance(me)
        .await
        .context("reading your wallet's USDC")?;
    if held < offer.price {
        bail!(
            "your wallet {me} holds {held}; this call costs {}: x402 pays from the wallet, not the escrow (get USDC \
             into it, or pay from a reserve without --x402)",
            offer.price
        );
    }
    let domain = chain
        .token_domain()
        .await
        .context("reading the token's EIP-712 domain")?;
    let price = offer.price.to_u256();
    let requirements =
        PaymentRequirements::exact(&domain, offer.payee, price, X402_LIFETIME.as_secs());
    let signer = chain.signer().context("no signer")?;
    let valid_before = crate::args::unix_now() + X402_LIFETIME.as_secs();
    PaymentPayload::pay(signer, &domain, &requirements, price, valid_before)
        .await
        .context("signing the x402 payment")
}

/// Calls a function and writes its answer to stdout.
pub async fn call(args: CallArgs, json: bool) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| {
        anyhow!(
            "`{}` is not a URL ({e}); pass the URL `khachapuri deploy` printed",
            args.url
        )
    })?;
    let max_price = parse_usdc("--max-price", &args.max_price)?;
    let timeout = crate::args::parse_duration("--timeout", &args.timeout)?;
    let body = args.request.body()?;
    let method = args.request.method(body.is_some())?;
    let mut request = khachapuri_tls::http()
        .request(method, url.clone())
        .timeout(timeout);
    for (name, value) in args.request.headers()? {
        request = request.header(name, value);
    }
    let mut payer = None;
    if !args.owner_pays {
        let target = target(&url)?;
        let chain = args.chain.connect(true).await?;
        let signer = chain.signer().context("no signer")?;
        let label = match args.any_provider {
            true => None,
            false => args.provider.clone().or(target.label),
        };
        if let (None, true) = (&label, args.x402) {
            bail!(
                "{url} names no provider, and an x402 payment pays one: pass --provider LABEL, or pay from a \
                 reserve without --x402"
            );
        }
        if let Some(label) = label.as_ref().filter(|_| args.x402) {
            let payment = x402_payment(&chain, &target.base, label, max_price).await?;
            request = request.header(PAYMENT_SIGNATURE_HEADER, payment.encode());
        } else if let Some(label) = label {
            let (signed, _) =
                sign_token(&chain, &label, target.cid, max_price, TOKEN_LIFETIME).await?;
            request = request.header(PAYER_TOKEN_HEADER, signed.encode());
        } else {
            // A routed call: whichever provider the gateway picks, for this spec only, for minutes.
            let signed = crate::token::sign_for(
                &chain,
                khachapuri_protocol::eip712::ANY_PROVIDER,
                target.cid,
                max_price,
                TOKEN_LIFETIME,
            )
            .await?;
            request = request.header(PAYER_TOKEN_HEADER, signed.encode());
        }
        payer = Some(signer.address());
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = progress::wait(format!("calling {url}"), request.send())
        .await
        .map_err(|e| match khachapuri_tls::certificate_hint(&e) {
            Some(hint) => anyhow!("cannot call {url}: {hint}"),
            None => anyhow!(
                "cannot reach {url}: {}; is the gateway (or the agent) running?",
                khachapuri_tls::error_chain(&e)
            ),
        })?;
    let version = format!("{:?}", response.version());
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response.bytes().await.context("reading the answer")?;
    let answer = Answer {
        version,
        response: khachapuri_runtime::Response {
            status: status.as_u16(),
            headers,
            body: body.to_vec(),
        },
    };
    let (price, charged, receipt) = (
        answer.header(PRICE_HEADER).map(str::to_owned),
        answer.header(PAYER_HEADER).map(str::to_owned),
        answer.header(RECEIPT_HEADER).map(str::to_owned),
    );
    let settled = answer
        .header(PAYMENT_RESPONSE_HEADER)
        .and_then(|h| SettlementResponse::decode(h).ok());
    // The same object for scripts, whether the call succeeded or not.
    let mut value = answer.to_json();
    value["x402"] = json!(settled);
    value["price"] = json!(price);
    value["payer"] = json!(charged);
    value["receipt"] = json!(receipt);
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if args.request.include {
        answer.print(true)?;
    }
    if !status.is_success() {
        // Providers and gateways answer the protocol's error body; anything else is shown as it came.
        let (code, message, hint) = answer.failure();
        let hint = match (hint, status.as_u16()) {
            // The token was made here, for this call: the fix is this command's flag.
            (_, 402) if code == "price_above_token" => {
                "; raise this call's --max-price (the provider charges more)".into()
            }
            (Some(h), _) => format!("; {h}"),
            (None, 402) => {
                "; set money aside for the provider with `khachapuri escrow reserve`".into()
            }
            _ => String::new(),
        };
        // A failure after the claim (a trap, a timeout) is charged: say what it cost, and by whom.
        let charged = match (&price, &charged) {
            (Some(price), Some(payer)) => format!(" (charged {price} to {payer})"),
            _ => String::new(),
        };
        bail!("HTTP {status}: {message}{charged}{hint}");
    }
    // An agent that does not read X-Khachapuri-Payer-Token (older than kp2.) charges the owner instead.
    if let (Some(me), Some(charged)) = (payer, charged.as_deref())
        && !charged.eq_ignore_ascii_case(&me.to_string())
    {
        eprintln!(
            "warning: the provider charged {charged}, not you ({me}): it did not read the payer token (an agent \
             older than kp2. tokens?)"
        );
    }
    if !json {
        if !args.request.include {
            answer.print(false)?;
        }
        eprintln!(
            "HTTP {status} · {} charged to {}{}",
            price.as_deref().unwrap_or("nothing"),
            charged
                .or(payer.map(|p| p.to_string()))
                .unwrap_or_else(|| "the spec's owner".into()),
            settled.map_or(String::new(), |s| format!(
                " by x402 (transaction {})",
                s.transaction
            ))
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

    fn t(url: &str) -> anyhow::Result<Target> {
        target(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn urls_name_their_provider_and_spec() {
        let path = t(&format!("http://127.0.0.1:8080/dev/{CID}/a/b?x=1")).unwrap();
        assert_eq!(
            path,
            Target {
                label: Some("dev".into()),
                cid: CID.into(),
                base: "http://127.0.0.1:8080/dev".into(),
            }
        );
        let host = t(&format!("https://alice.khachapuri.xyz/{CID}")).unwrap();
        assert_eq!(
            host,
            Target {
                label: Some("alice".into()),
                cid: CID.into(),
                base: "https://alice.khachapuri.xyz".into(),
            }
        );
        let direct = t(&format!("http://127.0.0.1:9000/{CID}")).unwrap();
        assert_eq!(
            direct,
            Target {
                label: None,
                cid: CID.into(),
                base: "http://127.0.0.1:9000".into(),
            }
        );
        // The base domain itself names no provider: a routed call (an any-provider token pays it).
        assert_eq!(
            t(&format!("https://khachapuri.xyz/{CID}")).unwrap().label,
            None
        );
        let local = t(&format!("http://alice.localhost:8080/{CID}")).unwrap();
        assert_eq!(local.label.as_deref(), Some("alice"));
        assert!(t("http://127.0.0.1:8080/dev/not-a-cid").is_err());
    }
}
