//! `khachapuri logs`: what a provider kept of a function's recent runs (status, failure reason, the
//! program's stderr), read with a grant the spec's owner signs (`kl1.`, docs/PROTOCOL.md "13. Logs").
//! Callers never see a program's stderr; its owner sees it here.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use khachapuri_chain::Chain;
use khachapuri_protocol::logs::{LOGS_ACCESS_HEADER, LogEntry, Logs, SignedLogsAccess};

use crate::args::{ChainArgs, resolve_payee, unix_now};
use crate::call::target;

/// How long a grant made here is valid; `--follow` signs a new one before it runs out.
const GRANT_LIFETIME: u64 = 600;
/// How often `--follow` asks for new entries.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// `khachapuri logs` options.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The function's URL as `deploy` printed it (or an agent's own `{url}/{cid}`, with --provider).
    url: String,
    /// The provider's label, when the URL does not carry it.
    #[arg(long)]
    provider: Option<String>,
    /// Keep printing new runs as they come (Ctrl-C stops).
    #[arg(short = 'f', long)]
    follow: bool,
    #[command(flatten)]
    chain: ChainArgs,
}

/// Where a function's logs are: its provider and the `/_logs/{cid}` endpoint beside its URL.
pub(crate) struct LogsEndpoint {
    /// The provider's label.
    pub label: String,
    /// The spec's CID.
    pub cid: String,
    provider: khachapuri_chain::Address,
    endpoint: String,
    grant: Option<SignedLogsAccess>,
}

impl LogsEndpoint {
    /// Finds the endpoint of the function at `url` (its provider named by the URL or by `provider`).
    pub(crate) async fn find(
        chain: &Chain,
        url: &str,
        provider: Option<String>,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).map_err(|e| {
            anyhow!("`{url}` is not a URL ({e}); pass the URL `khachapuri deploy` printed")
        })?;
        let target = target(&url)?;
        let Some(label) = provider.or(target.label) else {
            bail!("{url} does not name its provider; pass --provider LABEL");
        };
        Ok(Self {
            provider: resolve_payee(chain, &label).await?,
            endpoint: format!("{}/_logs/{}", target.base, target.cid),
            label,
            cid: target.cid,
            grant: None,
        })
    }

    /// The runs after `after`, with a grant signed by `chain`'s key (a new one when the last is about to
    /// run out).
    pub(crate) async fn fetch(&mut self, chain: &Chain, after: u64) -> anyhow::Result<Logs> {
        let grant = match self.grant.take() {
            Some(grant) if grant.expiry > unix_now() + 60 => grant,
            _ => {
                let signer = chain.signer().context("no signer")?;
                let expiry = unix_now() + GRANT_LIFETIME;
                SignedLogsAccess::sign(signer, &chain.domain(), self.provider, &self.cid, expiry)
                    .await
                    .context("signing the logs grant")?
            }
        };
        let encoded = grant.encode();
        self.grant = Some(grant);
        let endpoint = &self.endpoint;
        let response = khachapuri_tls::http()
            .get(format!("{endpoint}?after={after}"))
            .header(LOGS_ACCESS_HEADER, encoded)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach {endpoint}: {}; is the gateway (or the agent) running?",
                    khachapuri_tls::error_chain(&e)
                )
            })?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading the logs")?;
        if !status.is_success() {
            let (_, message, hint) = crate::request::failure(&bytes);
            let hint = hint.map(|h| format!("; {h}")).unwrap_or_default();
            bail!("HTTP {status}: {message}{hint}");
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("{endpoint} answered no logs ({e}); is it a Khachapuri provider?"))
    }
}

/// Prints the function's logs, as its owner.
pub async fn logs(args: LogsArgs, json: bool) -> anyhow::Result<()> {
    let chain = args.chain.connect(true).await?;
    let mut endpoint = LogsEndpoint::find(&chain, &args.url, args.provider.clone()).await?;
    let mut after = 0;
    loop {
        let logs = endpoint.fetch(&chain, after).await?;
        after = logs.next;
        if json && !args.follow {
            println!("{}", serde_json::to_string_pretty(&logs)?);
        } else if json {
            for entry in &logs.entries {
                println!("{}", serde_json::to_string(entry)?);
            }
        } else {
            if logs.entries.is_empty() && !args.follow {
                eprintln!(
                    "`{}` kept no runs of {} (it keeps the latest 64, in memory)",
                    endpoint.label, endpoint.cid
                );
            }
            for entry in &logs.entries {
                print!("{}", show(entry));
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            () = khachapuri_process::shutdown_signal() => return Ok(()),
        }
    }
}

/// One run for people: time, request, status (and why it failed), duration, payer; then its stderr,
/// indented.
fn show(entry: &LogEntry) -> String {
    let time = crate::args::at(entry.time_ms / 1000);
    let why = match (&entry.error, &entry.message) {
        (Some(code), Some(message)) => format!(" {code}: {message}"),
        (Some(code), None) => format!(" {code}"),
        _ => String::new(),
    };
    let path = if entry.path.is_empty() {
        "/"
    } else {
        &entry.path
    };
    let mut out = format!(
        "{time}  {} {path} → {}{why} ({} ms, paid by {})\n",
        entry.method, entry.status, entry.duration_ms, entry.payer
    );
    for line in entry.stderr.lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}
