//! `khachapuri providers`: every registered provider with its reputation and the parts it is made of
//! (docs/PROTOCOL.md §10 "Reputation"). What the chain says is computed here, from the escrow's and the
//! Registry's events (the code the gateway runs too); what a gateway saw of each provider (answers,
//! latency, receipts that failed) comes from its `/_providers`.

use anyhow::Context;
use khachapuri_chain::reputation::{Record, Scan, Seen, score};

use crate::{args::ChainArgs, progress};

/// `khachapuri providers` options.
#[derive(clap::Args, Debug)]
pub struct ProvidersArgs {
    /// The gateway whose observations to show [default: the dev network's gateway, else none].
    #[arg(long)]
    gateway: Option<String>,
    #[command(flatten)]
    chain: ChainArgs,
}

/// One provider, as printed.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    label: String,
    payee: String,
    /// Its price, from the gateway's reading of its offer.
    price: Option<String>,
    reachable: Option<bool>,
    /// Computed here from the chain.
    record: Record,
    /// What the gateway saw (`answered`, `unreachable`, `refused`, `latencyMs`, `badReceipts`).
    observed: Option<serde_json::Value>,
    reputation: khachapuri_chain::reputation::Score,
}

/// Prints the providers and their reputation.
pub async fn providers(args: ProvidersArgs, json: bool) -> anyhow::Result<()> {
    let chain = args.chain.connect(false).await?;
    let gateway = args.gateway.clone().or_else(|| {
        let dir = std::env::current_dir().ok()?;
        crate::net::read_dev_info(&dir).ok().map(|d| d.gateway)
    });
    let seen = match &gateway {
        Some(gateway) => {
            let url = format!("{}/_providers", gateway.trim_end_matches('/'));
            let read = async {
                khachapuri_tls::http()
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<serde_json::Value>()
                    .await
            };
            match progress::wait(format!("reading {url}"), read).await {
                Ok(table) => table["providers"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    eprintln!(
                        "warning: {url}: {}; showing what the chain says only (is the gateway routing? it needs --ipfs)",
                        khachapuri_tls::error_chain(&e)
                    );
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };
    let mut scan = Scan::new(&chain);
    progress::wait(
        "reading the escrow's and the Registry's events",
        scan.update(&chain),
    )
    .await
    .context(
        "reading the chain's events (check --rpc-url; a public RPC may limit eth_getLogs ranges)",
    )?;
    let now = khachapuri_protocol::unix_now();
    let mut rows = Vec::new();
    for label in scan.labels() {
        let record = match chain.resolve_label(&label).await {
            Ok(record) => record,
            Err(e) => {
                eprintln!("note: `{label}` is left out: {e}");
                continue;
            }
        };
        let mine = scan.record(&chain, record.payee, &label).await;
        let at_gateway = seen.iter().find(|p| p["label"] == label.as_str());
        let observed = at_gateway.map(|p| p["observed"].clone());
        let count = |field: &str| {
            observed
                .as_ref()
                .and_then(|o| o[field].as_u64())
                .unwrap_or(0)
        };
        let seen = Seen {
            answered: count("answered"),
            unreachable: count("unreachable"),
            receipts: count("receipts"),
            bad_receipts: count("badReceipts"),
        };
        rows.push(Row {
            payee: record.payee.to_string(),
            price: at_gateway.and_then(|p| p["price"].as_str().map(str::to_owned)),
            reachable: at_gateway.and_then(|p| p["reachable"].as_bool()),
            reputation: score(&mine, now, &seen),
            record: mine,
            observed,
            label,
        });
    }
    if json {
        let value = serde_json::json!({ "gateway": gateway, "providers": rows });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>12} {:>6} {:>7} {:>12} {:>8} {:>9} {:>5} {:>5}",
        "LABEL",
        "PRICE",
        "REACHABLE",
        "SETTLED",
        "VOLUME",
        "PAYERS",
        "AGE",
        "LAST PAID",
        "SEEN OK",
        "LATENCY",
        "BAD",
        "SCORE"
    );
    for r in &rows {
        let o = r.observed.as_ref();
        let latency = o
            .and_then(|o| o["latencyMs"].as_f64())
            .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let seen_ok = match o.map(|o| (o["answered"].as_u64(), o["unreachable"].as_u64())) {
            Some((Some(a), Some(u))) if a + u > 0 => {
                format!("{:.0}%", 100.0 * a as f64 / (a + u) as f64)
            }
            _ => "-".into(),
        };
        println!(
            "{:<16} {:>10} {:>9} {:>9} {:>12} {:>6} {:>7} {:>12} {:>8} {:>9} {:>5} {:>5.2}",
            r.label,
            r.price.as_deref().unwrap_or("-"),
            r.reachable.map_or("-", |y| if y { "yes" } else { "no" }),
            r.record.settled_requests,
            r.record.volume.to_string(),
            r.record.payers,
            r.record
                .registered_at
                .map_or("-".into(), |at| ago(now, at, false)),
            r.record
                .last_settled_at
                .map_or("never".into(), |at| ago(now, at, true)),
            seen_ok,
            latency,
            o.and_then(|o| o["badReceipts"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            r.reputation.total,
        );
    }
    match &gateway {
        Some(g) => eprintln!(
            "SETTLED, VOLUME, PAYERS, AGE, LAST PAID: from the chain's events, computed here; REACHABLE, SEEN OK, \
             LATENCY, BAD (receipts that failed): what the gateway {g} saw. SCORE weighs them (docs/PROTOCOL.md §10)."
        ),
        None => eprintln!(
            "from the chain's events only: pass --gateway URL for what a gateway saw of each provider"
        ),
    }
    Ok(())
}

/// `3 d`, `5 h`, `12 min`, `40 s`, and ` ago` when `suffix`.
fn ago(now: u64, at: u64, suffix: bool) -> String {
    let s = now.saturating_sub(at);
    let text = match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => format!("{} h", s / 3_600),
        _ => format!("{} d", s / 86_400),
    };
    match suffix {
        true => format!("{text} ago"),
        false => text,
    }
}
