//! A real local network for tests and benches of the agent (feature `testing`): anvil with the
//! contracts, a registered provider with its RSA key, the embedded IPFS store, specs sealed to it, funded
//! payers. Helpers panic with a reason instead of returning errors: they are for tests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use crate::{Config, Durability, RunningAgent, SettlementMode};
use alloy::primitives::U256;
use khachapuri_chain::{
    Address, Chain, PrivateKeySigner, SignerSource, Usdc,
    testing::{Devnet, DevnetOptions, anvil_signer},
};
use khachapuri_ipfs::FsBlockstore;
use khachapuri_spec::{Limits, ProviderKey, SPEC_VERSION, Spec, seal};

pub const LABEL: &str = "alice";
pub const PROVIDER: u32 = 1;
pub const OWNER: u32 = 2;
pub const PRICE: Usdc = Usdc::from_units(10_000); // 0.01 USDC

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn example(name: &str) -> Vec<u8> {
    let path = workspace().join(format!("examples/target/wasm32-wasip1/release/{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make examples` first", path.display()))
}

pub struct Net {
    pub devnet: Devnet,
    pub dir: tempfile::TempDir,
    pub key: ProviderKey,
    pub store: FsBlockstore,
}

impl Net {
    /// anvil + contracts; the provider's resolver and label registered with a fresh RSA key.
    pub async fn start() -> Self {
        let devnet = Devnet::start_with(DevnetOptions {
            withdrawal_delay: 300,
            min_commitment_age: 1,
            max_commitment_age: 3600,
        })
        .await
        .expect("devnet");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("deployments")).unwrap();
        devnet
            .deployment
            .write(&dir.path().join("deployments"))
            .expect("deployment file");
        let key = ProviderKey::load_or_generate(&dir.path().join("data/rsa.pem")).expect("rsa key");
        let provider = devnet.chain(PROVIDER);
        let resolver = provider
            .deploy_resolver(
                devnet.address(PROVIDER),
                &khachapuri_chain::Server::Url("http://127.0.0.1:0".into()),
                key.public_key_der().to_vec().into(),
            )
            .await
            .expect("resolver");
        provider
            .register_label(LABEL, resolver, |_| {})
            .await
            .expect("register");
        let store = FsBlockstore::open(dir.path().join("data/ipfs")).expect("store");
        Self {
            devnet,
            dir,
            key,
            store,
        }
    }

    pub fn chain(&self, index: u32) -> Chain {
        self.devnet.chain(index)
    }

    pub fn config(&self, settlement: SettlementMode) -> Config {
        Config {
            label: LABEL.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            rpc_url: self.devnet.anvil.url(),
            deployments: self.dir.path().join("deployments"),
            data_dir: self.dir.path().join("data"),
            signer: SignerSource::Env("UNUSED_IN_TESTS".into()),
            price: PRICE,
            ipfs: vec!["local".into()],
            tunnel: None,
            cors: Default::default(),
            module_cache: Default::default(),
            open_specs: Default::default(),
            settlement,
            batch_max: 5000,
            batch_linger: Duration::from_millis(50),
            wal_durability: Durability::Interval,
            max_body_bytes: 64 << 10,
            max_memory_bytes: 64 << 20,
            max_timeout: Duration::from_secs(2),
            max_output_bytes: 1 << 20,
        }
    }

    /// Registers another provider, `label`, paid to anvil account `index`, with an RSA key of its own in
    /// `{dir}/data-{label}` (which reads the same IPFS store); its agent starts with [`Net::start_other`].
    pub async fn register_other(&self, label: &str, index: u32) -> Other {
        let data_dir = self.dir.path().join(format!("data-{label}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        std::os::unix::fs::symlink(self.dir.path().join("data/ipfs"), data_dir.join("ipfs"))
            .unwrap();
        let key = ProviderKey::load_or_generate(&data_dir.join("rsa.pem")).expect("rsa key");
        let chain = self.devnet.chain(index);
        let resolver = chain
            .deploy_resolver(
                self.devnet.address(index),
                &khachapuri_chain::Server::Url("http://127.0.0.1:0".into()),
                key.public_key_der().to_vec().into(),
            )
            .await
            .expect("resolver");
        chain
            .register_label(label, resolver, |_| {})
            .await
            .expect("register");
        Other {
            label: label.into(),
            index,
            key,
            data_dir,
        }
    }

    /// Starts the agent of a provider made by [`Net::register_other`], settings as `config` changes them.
    pub async fn start_other(
        &self,
        other: &Other,
        config: impl FnOnce(&mut Config),
    ) -> RunningAgent {
        let mut c = self.config(SettlementMode::Batch);
        c.label = other.label.clone();
        c.data_dir = other.data_dir.clone();
        config(&mut c);
        crate::start(c, anvil_signer(other.index))
            .await
            .expect("agent")
    }

    /// Encrypts `spec` to every key of `recipients` (one envelope) and stores it.
    pub fn publish_to(&self, spec: &Spec, recipients: &[&ProviderKey]) -> String {
        let keys: Vec<&[u8]> = recipients.iter().map(|k| k.public_key_der()).collect();
        let sealed = khachapuri_spec::seal_to(&keys, &spec.to_json()).expect("seal");
        self.store.put(&sealed).expect("put spec").cid.to_string()
    }

    pub async fn agent(&self, settlement: SettlementMode) -> RunningAgent {
        crate::start(self.config(settlement), anvil_signer(PROVIDER))
            .await
            .expect("agent")
    }

    /// A signed spec for `program_bytes`, owned by account `owner`.
    pub async fn spec(
        &self,
        program: &[u8],
        entry: &str,
        env: &[(&str, &str)],
        owner: u32,
    ) -> Spec {
        let program_cid = self.store.put(program).expect("put program").cid;
        let d = &self.devnet.deployment;
        let mut spec = Spec {
            version: SPEC_VERSION,
            program: program_cid.to_string(),
            entry: entry.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            owner: self.devnet.address(owner),
            provider: Some(LABEL.into()),
            max_price: U256::from(50_000),
            limits: Limits {
                memory_bytes: 16 << 20,
                timeout_ms: 1_000,
                output_bytes: 64 << 10,
            },
            terms: "test terms".into(),
            chain_id: d.chain_id,
            escrow: d.escrow,
            spend_cap: None,
            program_key: None,
            signature: Default::default(),
        };
        spec.sign(&anvil_signer(owner)).await.expect("sign");
        spec
    }

    /// Encrypts `spec` to the provider and stores it: its CID is the callable id.
    pub fn publish(&self, spec: &Spec) -> String {
        let sealed = seal(self.key.public_key_der(), &spec.to_json()).expect("seal");
        self.store.put(&sealed).expect("put spec").cid.to_string()
    }

    /// Stores `spec` unencrypted (an open spec).
    pub fn publish_open(&self, spec: &Spec) -> String {
        self.store
            .put(&spec.to_json())
            .expect("put spec")
            .cid
            .to_string()
    }

    /// Mints and deposits `deposit`, then reserves `reserve` of it for the provider at up to `price`, as
    /// account `index`.
    pub async fn fund(&self, index: u32, deposit: Usdc, price: Usdc, reserve: Usdc) {
        self.devnet.fund(index, deposit).await.expect("mint");
        let c = self.chain(index);
        c.deposit(self.devnet.address(index), deposit)
            .await
            .expect("deposit");
        c.reserve(self.devnet.address(PROVIDER), price, reserve)
            .await
            .expect("reserve");
    }

    /// Account `index`'s free balance plus its reserve with the provider.
    pub async fn escrowed(&self, index: u32) -> Usdc {
        let c = self.chain(0);
        let who = self.devnet.address(index);
        let free = c.free_balance(who).await.expect("free balance");
        let terms = c.terms(who, self.provider_address()).await.expect("terms");
        free.saturating_add(terms.reserve)
            .saturating_add(terms.releasable)
    }

    pub fn provider_address(&self) -> Address {
        self.devnet.address(PROVIDER)
    }

    /// A payer token signed by account `index` for `spec` at this provider: at most [`PRICE`] a call, valid
    /// for five minutes, a session of its own.
    pub async fn payer_token(&self, index: u32, spec: &str) -> khachapuri_chain::SignedPayerToken {
        self.payer_token_for(index, self.provider_address(), spec)
            .await
    }

    /// [`Net::payer_token`] for any provider (routed calls) and any spec; encoded.
    pub async fn any_provider_token(&self, index: u32) -> String {
        self.payer_token_for(index, khachapuri_protocol::eip712::ANY_PROVIDER, "")
            .await
            .encode()
    }

    async fn payer_token_for(
        &self,
        index: u32,
        provider: Address,
        spec: &str,
    ) -> khachapuri_chain::SignedPayerToken {
        let d = &self.devnet.deployment;
        khachapuri_chain::PayerToken {
            provider,
            spec: spec.into(),
            maxPrice: U256::from(PRICE.units()),
            expiry: khachapuri_protocol::unix_now() + 300,
            session: alloy::primitives::B256::random(),
        }
        .sign(
            &signer(index),
            &khachapuri_chain::eip712::domain(d.chain_id, d.escrow),
        )
        .await
        .expect("sign a payer token")
    }

    /// Points `label`'s resolver (owned by anvil account `index`) at `server`.
    pub async fn point(&self, label: &str, index: u32, server: khachapuri_chain::Server) {
        let chain = self.chain(index);
        let resolver = chain.resolve_label(label).await.expect("resolve").resolver;
        chain
            .set_server(resolver, &server)
            .await
            .expect("set server");
    }
}

/// Another provider of a [`Net`]: its label, its payee's anvil account, its RSA key and data directory.
pub struct Other {
    pub label: String,
    pub index: u32,
    pub key: ProviderKey,
    pub data_dir: PathBuf,
}

/// The agent's `/metrics` text.
pub async fn metrics(agent: &RunningAgent) -> String {
    khachapuri_tls::http()
        .get(format!("http://{}/metrics", agent.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled counter or gauge `name` in [`metrics`]' text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the agent's metrics:\n{text}"))
}

pub fn signer(index: u32) -> PrivateKeySigner {
    anvil_signer(index)
}

/// A provider agent running as its own process (the `khachapuri-provider` binary), so that a test can
/// SIGKILL it.
pub struct ProcessAgent {
    pub child: std::process::Child,
    /// Its base URL, from the line it prints when it listens.
    pub url: String,
}

impl ProcessAgent {
    /// Runs `bin` (a test's `env!("CARGO_BIN_EXE_khachapuri-provider")`) as provider `label` of `net`,
    /// paid to anvil account `index`, its data in `data_dir`, on a free port, settling `linger_ms` after a
    /// claim; returns once it listens.
    pub fn spawn(
        net: &Net,
        bin: &str,
        label: &str,
        index: u32,
        data_dir: &std::path::Path,
        linger_ms: u64,
    ) -> Self {
        use std::io::BufRead as _;
        let key = signer(index).to_bytes();
        let mut child = std::process::Command::new(bin)
            .env(khachapuri_protocol::http::PRIVATE_KEY_ENV, key.to_string())
            .env("RUST_LOG", "warn")
            .args([
                "--label",
                label,
                "--listen",
                "127.0.0.1:0",
                "--price",
                "0.01",
            ])
            .args(["--ipfs", "local", "--rpc-url", &net.devnet.anvil.url()])
            .arg("--deployments")
            .arg(net.dir.path().join("deployments"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--batch-linger-ms", &linger_ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("provider agent listening on ")
            .unwrap_or_else(|| panic!("the agent printed {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// SIGKILL: no shutdown, no settlement.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as an operator stops it: it settles what it claimed, then exits.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        khachapuri_process::terminate(&mut self.child, Duration::from_secs(60)).unwrap()
    }
}

impl Drop for ProcessAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
