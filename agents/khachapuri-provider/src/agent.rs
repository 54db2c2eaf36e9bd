//! The agent: start-up checks, the HTTP server and the request pipeline
//! (spec → payer → program → claim → run → receipt).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use alloy::sol_types::Eip712Domain;
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use khachapuri_chain::{
    Address, Chain, ChainError, PrivateKeySigner, Settler, SettlerConfig, SignedPayerToken,
    TokenError, Usdc, eip712,
};
use khachapuri_ipfs::{Fetcher, Source};
use khachapuri_protocol::http::Cors;
use khachapuri_protocol::logs::{LOGS_ACCESS_HEADER, LogEntry, LogsAccessError, SignedLogsAccess};
use khachapuri_runtime::{Runtime, RuntimeConfig};
use khachapuri_spec::{Offer, OfferError, ProviderKey};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    caps::{Reached, SpendCaps},
    config::{Config, ModuleCache, OpenSpecs, SettlementMode},
    error::ApiError,
    ledger::{ClaimError, Ledger, LedgerConfig},
    logs::SpecLogs,
    lru::Lru,
    metrics::Metrics,
    receipt::{Receipt, ReceiptSigner, request_digest, response_digest},
    recover::reconcile,
    revocations::Revocations,
    specs::{SpecStore, VerifiedSpec},
    wal::Wal,
    x402::X402,
};

pub use khachapuri_protocol::http::{PAYER_HEADER, PRICE_HEADER, RECEIPT_HEADER};
/// Payer tokens whose signer the agent remembers.
const TOKEN_CACHE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4096).unwrap();
/// The largest program (zip or module) the agent fetches.
const MAX_PROGRAM_BYTES: u64 = 64 << 20;

/// Why the agent could not start, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The chain could not be reached or read.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The label is not registered to this agent's keys.
    #[error("{0}")]
    Registration(String),
    /// Files in the data directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The RSA key.
    #[error(transparent)]
    Key(#[from] khachapuri_spec::KeyError),
    /// The runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] khachapuri_runtime::Error),
    /// A setting.
    #[error("{0}")]
    Config(String),
}

struct Agent {
    config: Config,
    receipts: crate::receipts::Receipts,
    domain: Eip712Domain,
    /// Set when the shutdown begins.
    closing: watch::Receiver<bool>,
    /// Payer tokens seen, by their text: the payer their signature recovers to.
    tokens: std::sync::Mutex<Lru<Address>>,
    specs: SpecStore,
    fetcher: Arc<Fetcher>,
    runtime: Arc<Runtime>,
    ledger: Arc<Ledger>,
    metrics: Metrics,
    /// Recent runs of each spec, for its owner.
    logs: SpecLogs,
    /// Which specs their owners revoked.
    revocations: Revocations,
    /// What each capped spec charged its owner this period.
    caps: SpendCaps,
    /// What this agent takes as an x402 payment (`None`: the token's domain could not be read).
    x402: Option<X402>,
    /// The chain, for x402's reads.
    chain: Chain,
    /// Price, caps and chain, as `GET /_provider` tells them.
    offer: Offer,
}

/// A running agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The gateway tunnel, when the agent serves through one.
    pub tunnel: Option<khachapuri_tunnel::client::TunnelHandle>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Stops accepting, finishes in-flight requests, settles every claim, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }

    /// Waits until the agent stops (after a shutdown signal).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// A sender that triggers the graceful shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Starts the agent: connects to the chain, checks the label's records against this agent's keys, opens
/// the claims log (settling claims a previous run left), and serves.
/// `signer` is the payee key (see [`Config::signer`] for where the binary loads it from).
pub async fn start(config: Config, signer: PrivateKeySigner) -> Result<RunningAgent, StartError> {
    let chain = Chain::connect(&config.rpc_url, Some(signer.clone()), &config.deployments).await?;
    std::fs::create_dir_all(&config.data_dir).map_err(io("create the data directory"))?;
    let key = ProviderKey::load_or_generate(&config.data_dir.join("rsa.pem"))?;
    let record = check_registration(&chain, &config, &signer, &key).await?;
    let fetcher = Arc::new(Fetcher::new(sources(&config)?));
    let runtime = runtime(&config)?;
    let ledger = open_ledger(&chain, &config).await?;
    let x402 = X402::discover(&chain, signer.address(), config.price).await;

    let tunnel_label: khachapuri_protocol::Label = config
        .label
        .parse()
        .map_err(|e| StartError::Config(format!("label `{}`: {e}", config.label)))?;
    if config.tunnel.is_some() != (record.server == khachapuri_chain::Server::Tunnel) {
        tracing::warn!(
            server = %record.server.record(),
            tunnel = ?config.tunnel,
            "the resolver's server record and --tunnel disagree: callers will not reach this agent through the gateway"
        );
    }

    let deployment = chain.deployment();
    let domain = eip712::domain(deployment.chain_id, deployment.escrow);
    let (shutdown, rx) = watch::channel(false);
    let agent = Arc::new(Agent {
        closing: rx.clone(),
        receipts: crate::receipts::Receipts::new(ReceiptSigner::new(&signer, domain.clone())),
        domain,
        tokens: std::sync::Mutex::new(Lru::new(TOKEN_CACHE)),
        specs: SpecStore::new(fetcher.clone(), vec![key.clone()], 1024),
        fetcher,
        runtime: Arc::new(runtime),
        ledger,
        metrics: Metrics::default(),
        logs: SpecLogs::default(),
        revocations: Revocations::new(chain.clone()),
        caps: SpendCaps::default(),
        x402,
        chain: chain.clone(),
        offer: offer(&config, &signer, deployment, &key),
        config,
    });

    let listener = TcpListener::bind(agent.config.listen)
        .await
        .map_err(io(&format!("listen on {}", agent.config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(io("read the bound address"))?;
    let (router, tunneled, done) = serve(agent.clone(), listener, rx);
    tracing::info!(%addr, label = %agent.config.label, price = %agent.config.price, "provider agent listening");
    let tunnel = agent.config.tunnel.clone().map(|url| {
        use khachapuri_tunnel::client::{TunnelConfig, run_tunnel};
        tracing::info!(gateway = %url, "serving through the gateway tunnel");
        // Requests that come through the tunnel are served in-process (no second HTTP hop over
        // loopback); the tracker lets the shutdown wait for them as `axum::serve` waits for its
        // connections.
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                tunneled.track_future(tower::ServiceExt::oneshot(router.clone(), request))
            });
        run_tunnel(
            TunnelConfig::new(url, tunnel_label),
            Arc::new(signer),
            service,
        )
    });
    Ok(RunningAgent {
        addr,
        tunnel,
        shutdown,
        done,
    })
}

/// A start-up I/O error saying what the agent was doing.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.to_owned();
    move |source| StartError::Io { what, source }
}

/// The label must be registered, pay this agent's key, and publish this agent's RSA key.
async fn check_registration(
    chain: &Chain,
    config: &Config,
    signer: &PrivateKeySigner,
    key: &ProviderKey,
) -> Result<khachapuri_chain::ProviderRecord, StartError> {
    let record = chain
        .resolve_label(&config.label)
        .await
        .map_err(|e| match e {
            ChainError::UnknownLabel { .. } => StartError::Registration(format!(
                "label `{}` is not registered; run `khachapuri provider init --label {}` first",
                config.label, config.label
            )),
            other => StartError::Chain(other),
        })?;
    if record.payee != signer.address() {
        return Err(StartError::Registration(format!(
            "label `{}` pays {}, but this agent's key is {}; use the payee's key or update the resolver",
            config.label,
            record.payee,
            signer.address()
        )));
    }
    if record.rsa_public_key_der.as_ref() != key.public_key_der() {
        return Err(StartError::Registration(format!(
            "the resolver of `{}` publishes another RSA key (version {}) than {}; update it with \
             `khachapuri provider init` so that specs are encrypted to this agent",
            config.label,
            record.key_version,
            config.data_dir.join("rsa.pem").display()
        )));
    }

    Ok(record)
}

/// The wasm runtime, within this provider's maxima, its compiled modules cached (encrypted) under the data
/// directory unless the operator keeps them in memory only.
fn runtime(config: &Config) -> Result<Runtime, StartError> {
    Ok(Runtime::new(RuntimeConfig {
        limits: khachapuri_runtime::Limits {
            memory_bytes: config.max_memory_bytes,
            deadline: config.max_timeout,
            output_bytes: config.max_output_bytes,
            ..Default::default()
        },
        cache_dir: match config.module_cache {
            ModuleCache::Disk => Some(config.data_dir.join("modules")),
            ModuleCache::Memory => None,
        },
        ..Default::default()
    })?)
}

/// The claims log replayed and reconciled with the chain, the settlement sender, and the ledger over both.
async fn open_ledger(chain: &Chain, config: &Config) -> Result<Arc<Ledger>, StartError> {
    let wal_path = config.data_dir.join("claims.wal");
    let replay = Wal::replay(&wal_path).map_err(io("read the claims log"))?;
    let next_id = replay.next_id;
    let reconciled = reconcile(chain, replay, std::time::Duration::from_secs(120)).await?;
    if reconciled.found_landed > 0 {
        tracing::info!(
            claims = reconciled.found_landed,
            "claims found settled on chain although the log missed it"
        );
    }
    let open = reconciled.open;
    let wal = Wal::create(
        &wal_path,
        config.wal_durability,
        &open,
        next_id,
        reconciled.from_block,
    )
    .map_err(io("write the claims log"))?;
    let wal = Arc::new(wal);
    wal.spawn_flusher(std::time::Duration::from_millis(20));
    let linger = match config.settlement {
        SettlementMode::Batch => config.batch_linger,
        SettlementMode::Sync => std::time::Duration::ZERO,
    };
    let settler = Settler::spawn(
        chain.clone(),
        SettlerConfig {
            max_batch: config.batch_max,
            linger,
            ..SettlerConfig::default()
        },
    )?;
    Ok(Ledger::new(
        chain.clone(),
        settler,
        wal,
        next_id,
        open,
        LedgerConfig {
            reconciled_block: reconciled.from_block.saturating_sub(1),
            ..LedgerConfig::default()
        },
    )?)
}

/// Serves `agent` on `listener` until `closing` turns true, then waits for tunneled requests and settles
/// every claim. Returns the router (the tunnel serves it too), the tracker of tunneled requests, and the
/// task that ends when all is done.
fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    mut closing: watch::Receiver<bool>,
) -> (
    Router,
    tokio_util::task::TaskTracker,
    tokio::task::JoinHandle<()>,
) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/_logs/{cid}", get(logs).options(preflight))
        .route("/_provider", get(offer_json))
        .fallback(call)
        .with_state(agent.clone());
    let tunneled = tokio_util::task::TaskTracker::new();
    let server_router = router.clone();
    let tunneled_done = tunneled.clone();
    let done = tokio::spawn(async move {
        let signal = async move {
            let _ = closing.wait_for(|stop| *stop).await;
        };
        if let Err(err) = axum::serve(listener, server_router)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(%err, "server stopped");
        }
        tunneled_done.close();
        tunneled_done.wait().await;
        let outstanding = agent.ledger.outstanding();
        if outstanding > 0 {
            tracing::info!(outstanding, "settling every claim before exit");
        }
        agent.ledger.drain().await;
        tracing::info!("provider agent stopped");
    });
    (router, tunneled, done)
}

fn sources(config: &Config) -> Result<Vec<Source>, StartError> {
    let local = config.data_dir.join("ipfs");
    config
        .ipfs
        .iter()
        .map(|s| Source::parse(s, &local).map_err(StartError::Config))
        .collect()
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        agent
            .metrics
            .render(agent.ledger.outstanding(), agent.receipts.counts()),
    )
}

/// `?after=` of `GET /_logs/{cid}`.
#[derive(serde::Deserialize)]
struct LogsQuery {
    after: Option<u64>,
}

/// `GET /_logs/{cid}[?after=N]`: what this agent kept of the spec's runs, for the spec's owner only.
async fn logs(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
    Query(query): Query<LogsQuery>,
    headers: HeaderMap,
) -> Response {
    let mut response = match agent
        .read_logs(&cid, query.after.unwrap_or(0), &headers)
        .await
    {
        Ok(logs) => Json(logs).into_response(),
        Err(err) => err.into_response(),
    };
    agent.config.cors.decorate(response.headers_mut());
    response
}

/// This provider's offer (price, caps, chain), as the agent enforces it.
fn offer(
    config: &Config,
    signer: &PrivateKeySigner,
    deployment: &khachapuri_chain::Deployment,
    key: &ProviderKey,
) -> Offer {
    let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Offer {
        label: config.label.clone(),
        payee: signer.address(),
        price: config.price,
        chain_id: deployment.chain_id,
        escrow: deployment.escrow,
        caps: khachapuri_spec::Caps {
            memory_bytes: bytes(config.max_memory_bytes),
            timeout_ms: u64::try_from(config.max_timeout.as_millis()).unwrap_or(u64::MAX),
            output_bytes: bytes(config.max_output_bytes),
        },
        max_body_bytes: bytes(config.max_body_bytes),
        open_specs: config.open_specs == OpenSpecs::Run,
        // Without it, gateways route it no sealed spec: a signing failure is worth a warning, not a stop.
        key_proof: match key.prove(&config.label, signer.address(), deployment.chain_id) {
            Ok(proof) => Some(proof.into()),
            Err(e) => {
                tracing::warn!(%e, "no key proof in the offer: gateways will not route sealed specs here");
                None
            }
        },
    }
}

/// `GET /_provider`: what a deployment must fit (`khachapuri deploy` checks it; a gateway may route by it).
async fn offer_json(State(agent): State<Arc<Agent>>) -> Response {
    let mut response = Json(&agent.offer).into_response();
    agent.config.cors.decorate(response.headers_mut());
    response
}

/// A CORS preflight of `/_logs/{cid}` (a browser console reading its owner's logs).
async fn preflight(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    agent
        .config
        .cors
        .preflight(&headers)
        .map(|()| Body::empty())
}

async fn call(State(agent): State<Arc<Agent>>, request: Request) -> Response {
    let cors = &agent.config.cors;
    // A CORS preflight is the browser asking, not the caller calling: answered here, nothing runs, nothing
    // is claimed.
    if Cors::is_preflight(request.method(), request.headers()) {
        agent.metrics.request(StatusCode::NO_CONTENT.as_u16());
        return cors.preflight(request.headers()).map(|()| Body::empty());
    }
    let resource = agent
        .x402
        .as_ref()
        .map(|_| crate::x402::resource_url(request.headers(), request.uri()));
    // Only tunneled requests can still arrive once the shutdown began: refuse them before any claim.
    let closing = *agent.closing.borrow();
    let served = match closing {
        true => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this provider agent is stopping",
        )
        .hint("retry in a few seconds")),
        false => agent.serve(request).await,
    };
    let mut charged = false;
    let mut response = match served {
        Ok(response) => response,
        Err(err) => {
            charged = err.charged;
            agent.metrics.refusal(err.code);
            if err.status.is_server_error() {
                tracing::warn!(status = %err.status, code = err.code, message = %err.message, "request failed");
            }
            // Every 402 is an x402 answer too: one call at this price, payable with no reserve.
            let required = match (&agent.x402, resource) {
                (Some(x402), Some(resource)) if err.status == StatusCode::PAYMENT_REQUIRED => {
                    x402.required(resource, Some(err.message.clone()))
                }
                _ => None,
            };
            let mut response = err.into_response();
            if let Some(required) = required {
                response.headers_mut().insert(
                    HeaderName::from_static(khachapuri_protocol::x402::PAYMENT_REQUIRED_HEADER),
                    required,
                );
            }
            response
        }
    };
    // Every answer says whether it may have been charged: those past the claim (they carry a price, §8,
    // §9, or failed after it); a gateway fails over to another provider only on `no`.
    let charged = match charged || response.headers().contains_key(PRICE_HEADER) {
        true => "yes",
        false => "no",
    };
    response.headers_mut().insert(
        HeaderName::from_static(khachapuri_protocol::http::CHARGED_HEADER),
        HeaderValue::from_static(charged),
    );
    cors.decorate(response.headers_mut());
    agent.metrics.request(response.status().as_u16());
    response
}

impl Agent {
    async fn serve(&self, request: Request) -> Result<Response, ApiError> {
        let (parts, body) = request.into_parts();
        let (cid_text, path_info) = split_path(parts.uri.path());
        let cid = khachapuri_ipfs::parse_cid(cid_text).map_err(|e| {
            ApiError::bad_request("malformed_cid", e.to_string())
                .hint("call /{cid}[/path], with the spec's CID")
        })?;
        let body = axum::body::to_bytes(body, self.config.max_body_bytes)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is over this provider's {} bytes",
                        self.config.max_body_bytes
                    ),
                )
            })?;

        let verified = self.specs.get(&cid).await?;
        // The CID as text, made once: the token check, the receipt and the log all name the spec by it.
        let spec_id = cid.to_string();
        let spec = &verified.spec;
        self.check_spec(&verified)?;
        let price = self.config.price;
        // An x402 payment names its payer; otherwise the owner pays, or a payer token's signer.
        let x402 = match &self.x402 {
            Some(x402) => x402.payment(&parts.headers)?,
            None => None,
        };
        let payer = match &x402 {
            Some(_)
                if khachapuri_protocol::http::payer_token(&parts.headers)
                    .ok()
                    .flatten()
                    .is_some() =>
            {
                return Err(ApiError::bad_request(
                    "two_payments",
                    "the request brings both a payer token and an x402 payment",
                )
                .hint("send one of them"));
            }
            Some((_, payer)) => *payer,
            None => self.payer(&parts.headers, &spec_id, spec.owner, price)?,
        };

        // Fetch and compile before claiming: nobody pays for a program that cannot run.
        let entry = Some(spec.entry.as_str());
        let program = match self.runtime.cached(&verified.program_id, entry) {
            Some(program) => program,
            None => {
                let fetched = self
                    .fetcher
                    .get(&verified.program, MAX_PROGRAM_BYTES)
                    .await?;
                // A private program is opened in memory, after the verified fetch; only its ciphertext
                // was ever on IPFS, and its plaintext never touches this agent's disk.
                let bytes = match &spec.program_key {
                    Some(key) => open_private_program(key, &fetched)?.into(),
                    None if khachapuri_spec::is_sealed_program(&fetched) => {
                        return Err(ApiError::unprocessable(
                            "undecryptable_program",
                            "the program is encrypted, and the spec carries no programKey to open it",
                        )
                        .hint("redeploy it with `khachapuri deploy`, which puts the key in the sealed spec"));
                    }
                    None => fetched,
                };
                let runtime = self.runtime.clone();
                let (program_id, entry) = (verified.program_id.clone(), spec.entry.clone());
                tokio::task::spawn_blocking(move || runtime.load(&program_id, &bytes, Some(&entry)))
                    .await
                    .map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    })??
            }
        };

        // A revoked deployment runs for nobody: its owner stopped it (the URL is a bearer instrument).
        // Asked last before the claim, so a revocation landing during a slow fetch still counts.
        let revoked = self
            .revocations
            .revoked_at(spec.owner, verified.terms_hash)
            .await
            .map_err(|e| ApiError::chain_unavailable(e.to_string()))?;
        if let Some(at) = revoked {
            return Err(ApiError::new(
                StatusCode::GONE,
                "spec_revoked",
                format!(
                    "the owner revoked this deployment at {}",
                    khachapuri_chain::format_time(alloy::primitives::U256::from(at))
                ),
            )
            .hint("nothing was charged; ask the function's owner for its new URL"));
        }
        // The owner's cap per period bounds what calls the owner pays may cost it (an x402 payment is
        // signed for each call, so it needs no cap).
        let capped = match &spec.spend_cap {
            Some(cap) if payer == spec.owner && x402.is_none() => {
                let now = khachapuri_protocol::unix_now();
                let taken = self
                    .caps
                    .take(verified.terms_hash, cap, price, now)
                    .map_err(|reached| cap_reached(reached, cap, price, now))?;
                Some(taken)
            }
            _ => None,
        };
        let claimed = match (&x402, self.config.settlement) {
            (Some((payment, _)), _) => {
                if let Some(x402) = &self.x402 {
                    x402.precheck(&self.chain, payment).await?;
                }
                let value = Usdc::from_u256(payment.payload.authorization.value);
                self.ledger
                    .pay_x402(payment, value)
                    .await
                    .map(|(claimed, settlement)| (claimed, Some(settlement)))
            }
            (None, SettlementMode::Batch) => {
                self.ledger.claim(payer, price).await.map(|c| (c, None))
            }
            (None, SettlementMode::Sync) => self
                .ledger
                .claim_settled(payer, price)
                .await
                .map(|c| (c, None)),
        };
        let (claimed, x402_settled) = match claimed {
            Ok(claimed) => claimed,
            Err(err) => {
                if let Some(taken) = capped {
                    self.caps.give_back(taken);
                }
                return Err(claim_error(err, &self.config.label, price));
            }
        };
        // What the caller reads of its payment: the price charged, and for x402 the settlement.
        let charged = claimed.price;
        let payment_response = match (&self.x402, &x402_settled) {
            (Some(x402), Some(settlement)) => x402.response(settlement, claimed.payer),
            _ => None,
        };
        self.metrics.claim();
        let owner_charged = if claimed.payer == spec.owner {
            charged
        } else {
            Usdc::ZERO
        };

        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let run_request = khachapuri_runtime::Request {
            method: parts.method.as_str().to_owned(),
            path_info: path_info.to_owned(),
            query_string: parts.uri.query().unwrap_or_default().to_owned(),
            headers: program_headers(&parts.headers),
            body: body.to_vec(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        // The owner's limits, never above this provider's caps (checked in `check_spec`).
        let limits = khachapuri_runtime::RunLimits {
            memory_bytes: usize::try_from(spec.limits.memory_bytes).unwrap_or(usize::MAX),
            deadline: std::time::Duration::from_millis(spec.limits.timeout_ms),
            output_bytes: usize::try_from(spec.limits.output_bytes).unwrap_or(usize::MAX),
        };
        let started = Instant::now();
        // On this task: wasmtime runs it on a fiber that yields to the executor every epoch tick.
        let output = program.run_async(run_request, limits).await;
        let took = started.elapsed();
        self.metrics.run(took);
        let log = |status: u16, stderr: &[u8], failed: Option<&ApiError>| LogEntry {
            seq: 0,
            time_ms: khachapuri_protocol::unix_millis(),
            method: parts.method.to_string(),
            path: path_info.to_owned(),
            status,
            error: failed.map(|e| e.code.to_owned()),
            message: failed.map(|e| e.message.clone()),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            payer: claimed.payer,
        };
        let output = match output {
            Ok(output) => output,
            Err(failure) => {
                tracing::info!(%cid, error = %failure, "program failed");
                // The claim stands: the failure is charged, and says so like any charged response,
                // with the price, the payer and a receipt of what was answered.
                let err = ApiError::from(failure.error);
                let entry = log(err.status.as_u16(), &failure.stderr, Some(&err));
                self.logs.record(&spec_id, entry, owner_charged);
                self.metrics.refusal(err.code);
                let status = err.status;
                let answer = err.body();
                let request = (&parts.method, path_and_query.as_str(), &body[..]);
                let receipt = self
                    .receipt(&claimed, &spec_id, request, (&answer, status.as_u16()))
                    .await;
                let mut failed = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(PRICE_HEADER, charged.to_string())
                    .header(PAYER_HEADER, claimed.payer.to_string())
                    .header(RECEIPT_HEADER, receipt.encode());
                if let Some(value) = payment_response {
                    failed =
                        failed.header(khachapuri_protocol::x402::PAYMENT_RESPONSE_HEADER, value);
                }
                return failed.body(Body::from(answer)).map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                        .charged()
                });
            }
        };
        if !output.stderr.is_empty() {
            tracing::debug!(%cid, stderr = %String::from_utf8_lossy(&output.stderr), "program stderr");
        }
        let entry = log(output.response.status, &output.stderr, None);
        self.logs.record(&spec_id, entry, owner_charged);

        let response = output.response;
        let request = (&parts.method, path_and_query.as_str(), &body[..]);
        let receipt = self
            .receipt(
                &claimed,
                &spec_id,
                request,
                (&response.body, response.status),
            )
            .await;

        let mut out = Response::builder()
            .status(StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK));
        for (name, value) in &response.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) else {
                continue;
            };
            if !is_reserved(&name) {
                out = out.header(name, value);
            }
        }
        out = out
            .header(PRICE_HEADER, charged.to_string())
            .header(PAYER_HEADER, claimed.payer.to_string())
            .header(RECEIPT_HEADER, receipt.encode());
        if let Some(value) = payment_response {
            out = out.header(khachapuri_protocol::x402::PAYMENT_RESPONSE_HEADER, value);
        }
        out.body(Body::from(Bytes::from(response.body)))
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    .charged()
            })
    }

    /// The runs of spec `cid` after `after`, if `headers` carry a `kl1.` grant its owner signed for this
    /// provider.
    async fn read_logs(
        &self,
        cid: &str,
        after: u64,
        headers: &HeaderMap,
    ) -> Result<khachapuri_protocol::logs::Logs, ApiError> {
        let cid = khachapuri_ipfs::parse_cid(cid).map_err(|e| {
            ApiError::bad_request("malformed_cid", e.to_string())
                .hint("ask for /_logs/{cid} with the spec's CID")
        })?;
        let hint = "sign a new grant with `khachapuri logs` as the spec's owner";
        let grant = headers
            .get(LOGS_ACCESS_HEADER)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "logs_access_required",
                    format!("logs are for the spec's owner: send its signed grant in {LOGS_ACCESS_HEADER}"),
                )
                .hint(hint)
            })?
            .to_str()
            .map_err(|_| LogsAccessError::Malformed("not text"))
            .and_then(SignedLogsAccess::decode)
            .map_err(|e| ApiError::bad_request("malformed_logs_access", e.to_string()).hint(hint))?;
        let verified = self.specs.get(&cid).await?;
        let spec = cid.to_string();
        let now = khachapuri_protocol::unix_now();
        grant
            .verify(
                &self.domain,
                self.receipts.address(),
                &spec,
                verified.spec.owner,
                now,
            )
            .map_err(|e| match e {
                LogsAccessError::NotOwner { .. } => {
                    ApiError::new(StatusCode::FORBIDDEN, "not_the_owner", e.to_string())
                        .hint("only the key that signed the deployment can read its logs")
                }
                _ => ApiError::unauthorized("bad_logs_access", e.to_string()).hint(hint),
            })?;
        let mut logs = self.logs.read(&spec, verified.terms_hash, after);
        if let Some(cap) = &verified.spec.spend_cap {
            logs.cap_spent = Some(self.caps.spent(verified.terms_hash, cap, now));
        }
        Ok(logs)
    }

    /// The signed receipt of a charged answer: `status` and `answer` as sent, for the request (method,
    /// path and query, body) as received.
    async fn receipt(
        &self,
        claimed: &crate::ledger::Claimed,
        spec: &str,
        (method, path_and_query, request_body): (&http::Method, &str, &[u8]),
        (answer, status): (&[u8], u16),
    ) -> khachapuri_protocol::SignedReceipt {
        self.receipts
            .sign(Receipt {
                provider: self.receipts.address(),
                payer: claimed.payer,
                spec: spec.to_owned(),
                price: alloy::primitives::U256::from(claimed.price.units()),
                sequence: claimed.id,
                requestDigest: request_digest(method.as_str(), path_and_query, request_body),
                responseDigest: response_digest(status, answer),
            })
            .await
    }

    /// Checks that depend on this provider: domain, label, price, limits.
    fn check_spec(&self, verified: &VerifiedSpec) -> Result<(), ApiError> {
        let spec = &verified.spec;
        match &spec.provider {
            Some(labels) if !spec.is_for(&self.config.label) => {
                let first = spec.providers().next().unwrap_or_default();
                let meant = match labels.contains(',') {
                    true => format!("providers `{}`", labels.replace(',', "`, `")),
                    false => format!("provider `{labels}`"),
                };
                return Err(ApiError::unprocessable(
                    "not_for_this_provider",
                    format!(
                        "the spec is meant for {meant}, this is `{}`",
                        self.config.label
                    ),
                )
                .hint(format!("call https://{first}.khachapuri.xyz/<cid> instead")));
            }
            None if verified.encrypted => {
                return Err(ApiError::unprocessable(
                    "invalid_spec",
                    "an encrypted spec must name the provider it was encrypted for",
                ));
            }
            _ if !verified.encrypted && self.config.open_specs == OpenSpecs::Refuse => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "open_specs_refused",
                    format!(
                        "provider `{}` runs only specs sealed to it, and this one is in the clear",
                        self.config.label
                    ),
                )
                .hint(format!(
                    "deploy it sealed: khachapuri deploy ... --provider {}",
                    self.config.label
                )));
            }
            _ => {}
        }
        if spec.program_key.is_some() && !verified.encrypted {
            return Err(ApiError::unprocessable(
                "invalid_spec",
                "an open spec carries its programKey in the clear: the program is not private",
            )
            .hint("deploy it sealed to a provider (without --open), which encrypts the key with the spec"));
        }
        // The same question `khachapuri deploy` asks of this provider's offer before it uploads.
        let max_price = Usdc::from_u256(spec.max_price);
        self.offer
            .check(spec.chain_id, spec.escrow, max_price, &spec.limits)
            .map_err(|e| {
                let code = match e {
                    OfferError::WrongChain { .. } => "wrong_chain",
                    OfferError::PriceAboveSpec { .. } => "price_above_spec",
                    OfferError::LimitAboveCap { .. } => "limits_above_provider",
                };
                ApiError::unprocessable(code, e.to_string())
            })
    }

    /// The owner, or the signer of a valid payer token.
    fn payer(
        &self,
        headers: &HeaderMap,
        spec: &str,
        owner: Address,
        price: Usdc,
    ) -> Result<Address, ApiError> {
        let token = khachapuri_protocol::http::payer_token(headers).map_err(|e| {
            ApiError::bad_request("malformed_token", e.to_string())
                .hint("send one payer token, in X-Khachapuri-Payer-Token")
        })?;
        let Some(value) = token else {
            return Ok(owner);
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("malformed_token", "the payer token is not text"))?;
        let token = SignedPayerToken::decode(text).map_err(token_error)?;
        let now = khachapuri_protocol::unix_now();
        token
            .check(self.receipts.address(), spec, price, now)
            .map_err(token_error)?;
        // Recovering the signer costs more than running hello; a caller sends the same token many times.
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(text);
        let payer = match cached {
            Some(payer) => payer,
            None => {
                let payer = token.recover(&self.domain).map_err(token_error)?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .put(text.to_owned(), payer);
                payer
            }
        };
        Ok(payer)
    }
}

fn token_error(err: TokenError) -> ApiError {
    let hint = "make a new token with `khachapuri token`";
    match err {
        TokenError::Malformed(_) => {
            ApiError::bad_request("malformed_token", err.to_string()).hint(hint)
        }
        TokenError::PriceAboveMax { .. } => {
            ApiError::payment_required("price_above_token", err.to_string()).hint(hint)
        }
        TokenError::Expired { .. } => {
            ApiError::unauthorized("expired_token", err.to_string()).hint(hint)
        }
        TokenError::WrongProvider { .. } | TokenError::SpecMismatch { .. } => {
            ApiError::unauthorized("token_not_for_this_request", err.to_string()).hint(hint)
        }
        TokenError::BadSignature | TokenError::NotSignedByPayer { .. } => {
            ApiError::unauthorized("bad_token_signature", err.to_string()).hint(hint)
        }
    }
}

/// Opens a private program's ciphertext: 422 `undecryptable_program` (before any claim) when it does not
/// open, whatever the cause.
fn open_private_program(
    key: &khachapuri_spec::ProgramKey,
    sealed: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let max = usize::try_from(MAX_PROGRAM_BYTES).unwrap_or(usize::MAX);
    khachapuri_spec::open_program(key, sealed, max).map_err(|e| {
        ApiError::unprocessable("undecryptable_program", format!("the private program: {e}")).hint(
            "nothing was charged; the spec's programKey must be the one its program was encrypted with \
             (redeploy it with `khachapuri deploy`)",
        )
    })
}

/// 429 for a call the owner pays that would take its spending past its cap for the period.
fn cap_reached(
    reached: Reached,
    cap: &khachapuri_spec::SpendCap,
    price: Usdc,
    now: u64,
) -> ApiError {
    if price > reached.cap {
        // No call ever fits: waiting does not help, so no Retry-After.
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "spend_cap_reached",
            format!(
                "this deployment's owner caps its spending at {cap}, below this provider's price of {price}: \
                 no call it pays fits"
            ),
        )
        .hint("nothing was charged; pay with your own payer token (`khachapuri token`), or the owner redeploys \
               with a --spend-cap of at least the price");
    }
    let resets = khachapuri_chain::format_time(alloy::primitives::U256::from(reached.resets_at));
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "spend_cap_reached",
        format!(
            "this deployment's owner caps its spending at {cap}, and {} of it is spent until {resets}",
            reached.spent
        ),
    )
    .hint(format!(
        "nothing was charged; retry after {resets}, or pay for the call yourself with a payer token \
         (`khachapuri token`)"
    ))
    .retry_after(reached.resets_at.saturating_sub(now))
}

/// The 402 (or 503) for a refused claim, with the command that fixes it for this provider.
fn claim_error(err: ClaimError, label: &str, price: Usdc) -> ApiError {
    // Amounts in the commands are bare numbers, so that the command can be pasted as it is.
    let shown = price.to_string();
    let price = shown.trim_end_matches(" USDC");
    let reserve = |amount: &str| {
        format!(
            "reserve for `{label}`: `khachapuri escrow reserve --provider {label} --price {price} --amount {amount}`"
        )
    };
    match &err {
        ClaimError::Chain(_) => ApiError::chain_unavailable(err.to_string()),
        ClaimError::Log(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string()),
        ClaimError::Unsettled(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string()).charged()
        }
        ClaimError::NotApproved { .. } => {
            ApiError::payment_required(err.code(), err.to_string()).hint(reserve(price))
        }
        ClaimError::PriceAboveTerms { cut_at: Some(_), .. } => ApiError::payment_required(err.code(), err.to_string())
            .hint(format!(
                "the payer's own pending price cut blocks this call: drop it with `khachapuri escrow cancel --provider {label}`, or allow {shown}: `khachapuri escrow reserve --provider {label} --price {price}`"
            )),
        ClaimError::PriceAboveTerms { .. } => ApiError::payment_required(err.code(), err.to_string())
            .hint(format!("allow {shown} per request: `khachapuri escrow reserve --provider {label} --price {price}`")),
        ClaimError::InsufficientReserve { releasing: Some(releasing), .. } => {
            ApiError::payment_required(err.code(), err.to_string()).hint(format!(
                "the payer's own pending release of {releasing} blocks this call: drop it with `khachapuri escrow cancel --provider {label}`, or {}",
                reserve(price)
            ))
        }
        ClaimError::InsufficientReserve { .. } => {
            ApiError::payment_required(err.code(), err.to_string()).hint(reserve(price))
        }
        ClaimError::Frozen { .. } => ApiError::payment_required(err.code(), err.to_string()).hint(
            "pay from another account: a frozen account can neither pay nor be paid until the token's issuer lifts the freeze",
        ),
        ClaimError::Refused(_) => ApiError::payment_required(err.code(), err.to_string()),
        ClaimError::X402Refused(_) => ApiError::payment_required(err.code(), err.to_string()).hint(
            "nothing ran; sign a new payment for the offer in PAYMENT-REQUIRED (a fresh nonce, funds in the wallet)",
        ),
    }
}

/// `/{cid}/rest` → (`cid`, `/rest`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    match path.find('/') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    }
}

/// Request headers a program sees: never the payer token, never hop-by-hop headers. An `Authorization`
/// that is not a payer token is the program's (its own bearer or basic auth).
fn program_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    use khachapuri_protocol::http::{PAYER_TOKEN_HEADER, is_payer_token_authorization};
    headers
        .iter()
        .filter(|(name, value)| {
            // The caller's payment is the agent's business, never the program's: a token, or an x402
            // authorization (which anyone holding it could redeem).
            !(*name == PAYER_TOKEN_HEADER
                || name.as_str() == khachapuri_protocol::x402::PAYMENT_SIGNATURE_HEADER
                || (*name == axum::http::header::AUTHORIZATION
                    && is_payer_token_authorization(value.as_bytes())))
        })
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te"
            )
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Response headers a program may not set.
fn is_reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-khachapuri-")
        || matches!(
            n,
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "upgrade"
                | "te"
                | "payment-required"
                | "payment-response"
        )
}
