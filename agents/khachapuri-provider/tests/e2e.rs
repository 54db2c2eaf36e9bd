//! End to end: anvil, the contracts, the embedded IPFS store and the agent, called over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{B256, U256};
use khachapuri_chain::{PayerToken, SignedPayerToken, Usdc, eip712};
use khachapuri_provider::testing::*;
use khachapuri_provider::{
    PAYER_HEADER, PRICE_HEADER, RECEIPT_HEADER, SettlementMode, SignedReceipt,
};

fn url(agent: &khachapuri_provider::RunningAgent, cid: &str) -> String {
    format!("http://{}/{cid}", agent.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_hello_is_paid_by_the_owner_until_the_reserve_runs_out() {
    let net = Net::start().await;
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hola")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    net.fund(
        OWNER,
        Usdc::from_whole(1),
        PRICE,
        Usdc::from_units(3 * PRICE.units()),
    )
    .await;
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();

    for i in 0..3 {
        let res = http
            .post(url(&agent, &cid))
            .body(format!("caller {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "call {i}: {:?}", res.text().await);
        assert_eq!(res.headers()[PRICE_HEADER], "0.01 USDC");
        assert_eq!(
            res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
            net.devnet.address(OWNER).to_string().to_lowercase()
        );
        let receipt = SignedReceipt::decode(res.headers()[RECEIPT_HEADER].to_str().unwrap())
            .expect("receipt");
        let d = &net.devnet.deployment;
        assert_eq!(
            receipt.signer(&eip712::domain(d.chain_id, d.escrow)),
            Some(net.provider_address())
        );
        assert_eq!(receipt.receipt.price, U256::from(PRICE.units()));
        assert_eq!(
            res.text().await.unwrap(),
            format!("Hola, caller {i}!\n"),
            "the encrypted env var reached the program"
        );
    }
    // The reserve is spent: 402, and the program does not run; the body names the fix for this provider.
    let res = http
        .post(url(&agent, &cid))
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_reserve", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("has 0.00 USDC reserved"),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("`khachapuri escrow reserve --provider alice --price 0.01 --amount 0.01`"),
        "a command that pastes as it is: {body}"
    );

    agent.shutdown().await; // settles everything claimed
    let chain = net.chain(0);
    assert_eq!(
        chain.earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(3 * PRICE.units())
    );
    assert_eq!(
        net.escrowed(OWNER).await,
        Usdc::from_units(1_000_000 - 3 * PRICE.units())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_token_moves_the_charge_to_its_signer_and_credits_need_no_deposit() {
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    const PAYER: u32 = 3;
    net.fund(PAYER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    const TRIAL: u32 = 4;
    net.chain(PROVIDER)
        .grant_credits(
            net.devnet.address(TRIAL),
            Usdc::from_units(2 * PRICE.units()),
        )
        .await
        .unwrap();
    let agent = net.agent(SettlementMode::Batch).await;
    let d = net.devnet.deployment.clone();
    let domain = eip712::domain(d.chain_id, d.escrow);
    let token = |spec: &str, expiry: u64| PayerToken {
        provider: net.provider_address(),
        spec: spec.into(),
        maxPrice: U256::from(PRICE.units()),
        expiry,
        session: B256::random(),
    };
    let far = 4_000_000_000;
    let http = khachapuri_tls::http();

    let paid = token(&cid, far)
        .sign(&signer(PAYER), &domain)
        .await
        .unwrap()
        .encode();
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&paid)
        .body("payer")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    assert_eq!(
        res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        net.devnet.address(PAYER).to_string().to_lowercase()
    );
    // Again: the signer now comes from the agent's cache of tokens.
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&paid)
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    assert_eq!(
        res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        net.devnet.address(PAYER).to_string().to_lowercase()
    );
    // The same token with its signature altered is another token: it does not hit that cache.
    let mut forged = SignedPayerToken::decode(&paid).unwrap();
    let sig = forged.signature;
    forged.signature = alloy::primitives::Signature::new(sig.r(), sig.s() ^ U256::from(1), sig.v());
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(forged.encode())
        .body("forged")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 401 | 402),
        "a forged token must not be charged to the payer: {}",
        res.status()
    );
    assert!(res.headers().get(PAYER_HEADER).is_none());

    let trial = token("", far)
        .sign(&signer(TRIAL), &domain)
        .await
        .unwrap()
        .encode();
    for _ in 0..2 {
        let res = http
            .post(url(&agent, &cid))
            .bearer_auth(&trial)
            .body("trial")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&trial)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        402,
        "credits are spent and the trial user never approved"
    );
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "not_approved"
    );

    // A payer the token's issuer froze (USDC's blacklist) is refused before the program runs: the escrow would
    // charge it nothing.
    const FROZEN: u32 = 6;
    net.fund(FROZEN, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    net.devnet
        .freeze(net.devnet.address(FROZEN), true)
        .await
        .unwrap();
    let frozen = token(&cid, far)
        .sign(&signer(FROZEN), &domain)
        .await
        .unwrap()
        .encode();
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&frozen)
        .body("frozen")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "payer_frozen", "{body}");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("pay from another account"),
        "{body}"
    );

    // Refused tokens.
    let expired = token(&cid, 1)
        .sign(&signer(PAYER), &domain)
        .await
        .unwrap()
        .encode();
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "expired_token"
    );
    let other_spec = token(
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        far,
    )
    .sign(&signer(PAYER), &domain)
    .await
    .unwrap()
    .encode();
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(&other_spec)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth("kp1.garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "malformed_token"
    );

    agent.shutdown().await;
    let chain = net.chain(0);
    assert_eq!(
        net.escrowed(PAYER).await,
        Usdc::from_units(1_000_000 - 2 * PRICE.units())
    );
    assert_eq!(
        net.escrowed(OWNER).await,
        Usdc::from_whole(1),
        "the owner paid nothing"
    );
    assert_eq!(
        chain.earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(2 * PRICE.units()),
        "credits earn nothing"
    );
    let t = chain
        .terms(net.devnet.address(TRIAL), net.provider_address())
        .await
        .unwrap();
    assert_eq!(t.credits, Usdc::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_settles_before_running() {
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let agent = net.agent(SettlementMode::Sync).await;
    let res = khachapuri_tls::http()
        .post(url(&agent, &cid))
        .body("sync")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Before shutdown: the consume is already on chain.
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        PRICE
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_get_the_right_status_and_a_reason() {
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let hello = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let hello_cid = net.publish(&hello);
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();
    let status = |res: reqwest::Response| async move {
        let s = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        (s, body["error"].as_str().unwrap_or_default().to_owned())
    };

    // 400 malformed CID
    let r = http
        .get(format!("http://{}/not-a-cid", agent.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (400, "malformed_cid".into()));
    // 404 unknown CID
    let absent = khachapuri_ipfs::cid_for(b"nobody stored this");
    let r = http
        .get(url(&agent, &absent.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (404, "not_found".into()));
    // 413 body too large
    let r = http
        .post(url(&agent, &hello_cid))
        .body(vec![b'x'; 65 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (413, "body_too_large".into()));
    // 422 spec for another provider
    let mut bob = hello.clone();
    bob.provider = Some("bob".into());
    bob.sign(&signer(OWNER)).await.unwrap();
    let r = http
        .post(url(&agent, &net.publish(&bob)))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (422, "not_for_this_provider".into()));
    // 422 not decryptable by this provider
    let other_key = khachapuri_spec::ProviderKey::generate().unwrap();
    let foreign = net
        .store
        .put(&khachapuri_spec::seal(other_key.public_key_der(), &hello.to_json()).unwrap())
        .unwrap();
    let r = http
        .post(url(&agent, &foreign.cid.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (422, "undecryptable_spec".into()));
    // 401 tampered terms
    let mut forged = hello.clone();
    forged.max_price = U256::from(1_000_000);
    let r = http
        .post(url(&agent, &net.publish(&forged)))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (401, "bad_spec_signature".into()));
    // 422 price: the spec pays less than this provider charges
    let mut cheap = hello.clone();
    cheap.max_price = U256::from(PRICE.units() - 1);
    cheap.sign(&signer(OWNER)).await.unwrap();
    let r = http
        .post(url(&agent, &net.publish(&cheap)))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (422, "price_above_spec".into()));
    // 402 the owner never approved
    let unfunded = net.spec(&example("hello"), "hello.wasm", &[], 5).await;
    let r = http
        .post(url(&agent, &net.publish(&unfunded)))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get(PRICE_HEADER).is_none() && r.headers().get(RECEIPT_HEADER).is_none(),
        "a refusal charges nothing and claims nothing"
    );
    assert_eq!(status(r).await, (402, "not_approved".into()));
    // 422 a program's CID where the spec's belongs: said as such
    let r = http.post(url(&agent, &hello.program)).send().await.unwrap();
    assert_eq!(status(r).await, (422, "program_not_spec".into()));
    // 422 not wasm
    let junk = net.spec(b"this is not wasm", "x.wasm", &[], OWNER).await;
    let r = http
        .post(url(&agent, &net.publish(&junk)))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (422, "bad_program".into()));
    // 504 timeout and 500 trap, charged: the program ran
    let spin = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
    )
    .unwrap();
    let spin = net.spec(&spin, "spin.wasm", &[], OWNER).await;
    let r = http
        .post(url(&agent, &net.publish(&spin)))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r).await, (504, "program_timeout".into()));
    let trap = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .unwrap();
    let trap = net.spec(&trap, "trap.wasm", &[], OWNER).await;
    let trap_cid = net.publish(&trap);
    let r = http
        .post(url(&agent, &trap_cid))
        .body("boom")
        .send()
        .await
        .unwrap();
    // A charged failure says so like any charged response: price, payer and a receipt of the very
    // answer (the error body), signed by the provider.
    let headers = r.headers().clone();
    assert_eq!(
        headers[PRICE_HEADER], "0.01 USDC",
        "a trap is charged and says so"
    );
    assert_eq!(
        headers[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        net.devnet.address(OWNER).to_string().to_lowercase()
    );
    let receipt = SignedReceipt::decode(headers[RECEIPT_HEADER].to_str().unwrap()).unwrap();
    let answer = r.bytes().await.unwrap();
    let d = &net.devnet.deployment;
    assert_eq!(
        receipt.signer(&eip712::domain(d.chain_id, d.escrow)),
        Some(net.provider_address())
    );
    assert_eq!(
        receipt.receipt.responseDigest,
        khachapuri_protocol::receipt::response_digest(500, &answer)
    );
    assert_eq!(
        receipt.receipt.requestDigest,
        khachapuri_protocol::receipt::request_digest("POST", &format!("/{trap_cid}"), b"boom")
    );
    let body: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(body["error"], "program_trap");
    // Still healthy, metrics count what happened.
    let metrics = metrics(&agent).await;
    assert!(
        metrics.contains("khachapuri_requests_total{status=\"504\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("khachapuri_claims_total 2"), "{metrics}");
    assert_eq!(
        http.get(format!("http://{}/healthz", agent.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // 503: the chain RPC is down. Fail closed: nothing runs for free.
    let cid = hello_cid.clone();
    agent.shutdown().await;
    let agent = net.agent(SettlementMode::Batch).await;
    let Net {
        devnet, dir: _dir, ..
    } = net;
    drop(devnet); // kills anvil
    let r = http.post(url(&agent, &cid)).send().await.unwrap();
    assert_eq!(status(r).await, (503, "chain_unavailable".into()));
}

/// The escrow's promise, end to end: what the agent claimed settles whatever the payer does meanwhile. The
/// payer empties its free balance, reserves for an address it controls and pays itself out of that, and
/// asks for its reserve back: every claim of the agent still lands, and from the release on the agent
/// refuses new calls with a 402 that names the payer's own pending release and how to drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_emptying_its_balance_cannot_touch_what_the_agent_claimed() {
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(
        OWNER,
        Usdc::from_whole(1),
        PRICE,
        Usdc::from_units(4 * PRICE.units()),
    )
    .await;
    let mut config = net.config(SettlementMode::Batch);
    config.batch_linger = std::time::Duration::from_secs(2); // the claims stay unsettled while the payer acts
    let agent = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .unwrap();
    let http = khachapuri_tls::http();
    for i in 0..3 {
        let res = http
            .post(url(&agent, &cid))
            .body(format!("{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }

    // The payer, at once: everything free out; a self-reserve it charges as its own "provider"; a release.
    let owner = net.chain(OWNER);
    let me = net.devnet.address(OWNER);
    let free = owner.free_balance(me).await.unwrap();
    owner
        .reserve(me, PRICE, Usdc::from_units(PRICE.units()))
        .await
        .unwrap();
    owner.consume(me, PRICE).await.unwrap();
    owner.withdraw_earnings(me, PRICE).await.unwrap();
    owner
        .withdraw(me, free.saturating_sub(PRICE))
        .await
        .unwrap();
    assert_eq!(owner.free_balance(me).await.unwrap(), Usdc::ZERO);
    owner
        .release(net.provider_address(), Usdc::MAX)
        .await
        .unwrap();

    // New calls see the pending release: 402, naming the payer's own release and the command that drops it.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // the agent's view of the terms expires
    let res = http
        .post(url(&agent, &cid))
        .body("more")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_reserve", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("pending release"),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("khachapuri escrow cancel --provider alice"),
        "{body}"
    );

    // Every claim made before settles: 3 requests, in full.
    agent.shutdown().await;
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(3 * PRICE.units())
    );
    let terms = net
        .chain(0)
        .terms(me, net.provider_address())
        .await
        .unwrap();
    assert_eq!(
        terms.reserve, PRICE,
        "4 reserved, 3 charged; the 4th goes back after the delay"
    );

    // Dropping the release makes the payer good again.
    owner.cancel_pending(net.provider_address()).await.unwrap();
    let agent = net.agent(SettlementMode::Batch).await;
    let res = http
        .post(url(&agent, &cid))
        .body("back")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    agent.shutdown().await;
}

/// A browser's CORS preflight is answered by the agent: 204 with the operator's policy, no program run,
/// no claim. Real calls carry the headers that let a browser script read the price and the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_run_nothing_and_charge_nothing() {
    let net = Net::start().await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();
    let claims = || async { metric(&metrics(&agent).await, "khachapuri_claims_total") };

    let res = http
        .request(reqwest::Method::OPTIONS, url(&agent, &cid))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        res.headers()["access-control-allow-headers"],
        "authorization"
    );
    assert!(res.headers().get(PRICE_HEADER).is_none(), "nothing charged");
    assert_eq!(claims().await, 0, "nothing claimed");

    let res = http
        .post(url(&agent, &cid))
        .header("origin", "https://app.example")
        .body("browser")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-khachapuri-receipt")
    );
    assert_eq!(claims().await, 1);
    agent.shutdown().await;
}

/// `khachapuri logs` at the agent: a program's panic message (its stderr) never reaches the caller, but
/// its owner reads it with a grant it signed; a stranger's grant, an expired one and none are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_the_owner_a_panic_and_refuse_everyone_else() {
    use khachapuri_protocol::logs::{LOGS_ACCESS_HEADER, Logs, SignedLogsAccess};
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let panic = "thread 'main' panicked at src/main.rs:3:5:\nboom";
    let wat = format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\10\00\00\00\{len:02x}\00\00\00")
            (data (i32.const 16) "{text}")
            (func (export "_start")
                (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                unreachable))"#,
        len = panic.len(),
        text = panic.replace('\n', "\\0a").replace('\'', "\\27"),
    );
    let program = wat::parse_str(&wat).unwrap();
    let spec = net.spec(&program, "panics.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();

    let res = http
        .post(format!("{}/items/7?x=1", url(&agent, &cid)))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let answer = res.text().await.unwrap();
    assert!(
        !answer.contains("boom"),
        "the caller never sees stderr: {answer}"
    );

    let d = &net.devnet.deployment;
    let domain = eip712::domain(d.chain_id, d.escrow);
    let now = khachapuri_protocol::unix_now();
    let grant = |index: u32, expiry: u64| {
        let domain = domain.clone();
        let cid = cid.clone();
        let provider = net.provider_address();
        async move {
            SignedLogsAccess::sign(&signer(index), &domain, provider, &cid, expiry)
                .await
                .unwrap()
                .encode()
        }
    };
    let logs_url = format!("http://{}/_logs/{cid}", agent.addr);
    let read = |grant: Option<String>, after: u64| {
        let mut req = http.get(format!("{logs_url}?after={after}"));
        if let Some(grant) = grant {
            req = req.header(LOGS_ACCESS_HEADER, grant);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };

    let (status, body) = read(Some(grant(OWNER, now + 300).await), 0).await;
    assert_eq!(status, 200, "{body}");
    let logs: Logs = serde_json::from_value(body).unwrap();
    assert_eq!(logs.spec, cid);
    let [entry] = logs.entries.as_slice() else {
        panic!("one run: {logs:?}")
    };
    assert_eq!(entry.stderr, panic, "the owner reads the panic message");
    assert_eq!(
        (entry.status, entry.error.as_deref()),
        (500, Some("program_trap"))
    );
    assert_eq!(
        (entry.method.as_str(), entry.path.as_str()),
        ("POST", "/items/7")
    );
    assert_eq!(entry.payer, net.devnet.address(OWNER));
    let (_, newer) = read(Some(grant(OWNER, now + 300).await), logs.next).await;
    assert_eq!(
        newer["entries"],
        serde_json::json!([]),
        "nothing after the cursor"
    );

    let (status, body) = read(Some(grant(5, now + 300).await), 0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_the_owner"))
    );
    let (status, body) = read(None, 0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("logs_access_required"))
    );
    let (status, body) = read(Some(grant(OWNER, now - 1).await), 0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_logs_access"))
    );
    let (status, body) = read(Some(grant(OWNER, now + 86_400).await), 0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_logs_access")),
        "a day is too long"
    );
    let (status, body) = read(Some("kl1.garbage".into()), 0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("malformed_logs_access"))
    );
    agent.shutdown().await;
}

/// Revocation: once the owner revokes its spec on chain, the agent refuses every call to it (410, nothing
/// claimed), whoever pays and under whichever CID, within the revocation TTL; the calls it charged before
/// settle. The attack first: the same open spec re-serialized is another CID of the same signed terms, and
/// must not escape. A stranger recording the same terms hash under its own address revokes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_spec_runs_for_nobody_under_any_cid_and_its_claimed_charges_settle() {
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let mut spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    spec.provider = None;
    spec.sign(&signer(OWNER)).await.unwrap();
    let cid = net.publish_open(&spec);
    // The same terms, another encoding: another CID.
    let pretty: serde_json::Value = serde_json::from_slice(&spec.to_json()).unwrap();
    let alias = net
        .store
        .put(&serde_json::to_vec_pretty(&pretty).unwrap())
        .unwrap()
        .cid
        .to_string();
    assert_ne!(alias, cid);
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();
    let before = net.escrowed(OWNER).await;
    let call = |cid: &str| http.post(url(&agent, cid)).body("hi").send();

    assert_eq!(call(&cid).await.unwrap().status(), 200);
    let res = call(&alias).await.unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);

    // A stranger's record is keyed by the stranger: the owner's spec still runs.
    net.chain(5).revoke_spec(spec.terms_hash()).await.unwrap();
    tokio::time::sleep(khachapuri_provider::REVOCATION_TTL).await;
    assert_eq!(
        call(&cid).await.unwrap().status(),
        200,
        "a stranger cannot revoke the owner's spec"
    );

    net.chain(OWNER)
        .revoke_spec(spec.terms_hash())
        .await
        .unwrap();
    tokio::time::sleep(khachapuri_provider::REVOCATION_TTL).await;
    for cid in [&cid, &alias] {
        let res = call(cid).await.unwrap();
        assert_eq!(res.status(), 410, "{cid}");
        assert!(res.headers().get(PRICE_HEADER).is_none(), "nothing charged");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "spec_revoked");
    }
    // A payer token does not bring it back either.
    net.fund(5, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let token = net.payer_token(5, &cid).await;
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(token.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let err = net
        .chain(OWNER)
        .revoke_spec(spec.terms_hash())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already revoked"), "{err}");

    // The three calls charged before the revocation settle, and nothing else.
    agent.shutdown().await;
    let three = Usdc::from_units(3 * PRICE.units());
    assert_eq!(
        net.escrowed(OWNER).await,
        before.checked_sub(three).unwrap()
    );
}

/// The attack a cap answers: an owner-pays URL leaks and a stranger calls it as fast as it can, at once
/// and under another CID of the same terms. The owner loses at most the cap for the period; callers who
/// pay with their own token are not held back by it; and a copy of the spec with the cap cut out does not
/// run, since the cap is part of the signed terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_url_costs_its_owner_at_most_the_spend_cap_per_period() {
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let mut spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    spec.provider = None;
    spec.spend_cap = Some(khachapuri_spec::SpendCap {
        amount: U256::from(3 * PRICE.units()),
        period_seconds: 86_400,
    });
    spec.sign(&signer(OWNER)).await.unwrap();
    let cid = net.publish_open(&spec);
    let pretty: serde_json::Value = serde_json::from_slice(&spec.to_json()).unwrap();
    let alias = net
        .store
        .put(&serde_json::to_vec_pretty(&pretty).unwrap())
        .unwrap()
        .cid
        .to_string();
    let agent = net.agent(SettlementMode::Batch).await;
    let before = net.escrowed(OWNER).await;

    // Ten calls at once, half of them under the alias: exactly three fit in the cap.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let target = url(&agent, if i % 2 == 0 { &cid } else { &alias });
        calls.spawn(async move {
            let res = khachapuri_tls::http()
                .post(target)
                .body("hi")
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").cloned();
            let charged = res.headers().get(PRICE_HEADER).is_some();
            let body = res.text().await.unwrap();
            (status, retry_after, charged, body)
        });
    }
    let mut served = 0;
    while let Some(done) = calls.join_next().await {
        let (status, retry_after, charged, body) = done.unwrap();
        match status {
            200 => served += 1,
            429 => {
                assert!(!charged, "a refused call is not charged");
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["error"], "spend_cap_reached", "{body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("0.03 USDC per day"),
                    "{body}"
                );
                assert!(
                    body["hint"].as_str().unwrap().contains("payer token"),
                    "{body}"
                );
                let seconds: u64 = retry_after
                    .expect("429 says when to retry")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=86_400).contains(&seconds), "{seconds}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(served, 3, "the cap admits exactly three calls at 0.01");

    // A caller with its own token pays its own way past the owner's cap.
    net.fund(5, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let d = &net.devnet.deployment;
    let token = net.payer_token(5, &cid).await;
    let res = khachapuri_tls::http()
        .post(url(&agent, &cid))
        .header(
            khachapuri_protocol::http::PAYER_TOKEN_HEADER,
            token.encode(),
        )
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);

    // The same spec with its cap cut out keeps the owner's signature, which no longer matches.
    let mut uncapped: serde_json::Value = serde_json::from_slice(&spec.to_json()).unwrap();
    uncapped.as_object_mut().unwrap().remove("spendCap");
    let stripped = net
        .store
        .put(&serde_json::to_vec(&uncapped).unwrap())
        .unwrap()
        .cid
        .to_string();
    let res = khachapuri_tls::http()
        .post(url(&agent, &stripped))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "bad_spec_signature", "{body}");

    // The owner's logs count every claimed call and what the owner paid, per CID (the three fell on
    // either), and what the owner paid in the period, per terms (shared).
    let mut calls = 0;
    let mut owner_charged = Usdc::ZERO;
    for id in [&cid, &alias] {
        let grant = khachapuri_protocol::logs::SignedLogsAccess::sign(
            &signer(OWNER),
            &eip712::domain(d.chain_id, d.escrow),
            net.provider_address(),
            id,
            khachapuri_protocol::unix_now() + 60,
        )
        .await
        .unwrap();
        let logs: khachapuri_protocol::logs::Logs = khachapuri_tls::http()
            .get(format!("http://{}/_logs/{id}", agent.addr))
            .header(
                khachapuri_protocol::logs::LOGS_ACCESS_HEADER,
                grant.encode(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(totals) = logs.totals {
            calls += totals.calls;
            owner_charged = owner_charged.saturating_add(totals.owner_charged);
        }
        let cap_spent = logs.cap_spent.expect("a capped spec shows its period");
        assert_eq!(cap_spent.spent, Usdc::from_units(3 * PRICE.units()));
        assert_eq!(cap_spent.resets_at % 86_400, 0);
    }
    assert_eq!(
        (calls, owner_charged),
        (4, Usdc::from_units(3 * PRICE.units())),
        "three calls charged to the owner, one to the token's signer"
    );

    agent.shutdown().await;
    assert_eq!(
        net.escrowed(OWNER).await,
        before
            .checked_sub(Usdc::from_units(3 * PRICE.units()))
            .unwrap(),
        "the owner paid for exactly the three calls in its cap"
    );
}

/// The payer token rides in its own header, so a function keeps `Authorization` for its own bearer or basic
/// auth; a token altered after signing reads as what it is (401 bad signature, naming its payer), not as a
/// stranger's missing approval; the first transport (`Authorization: Bearer kp…`) still pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payer_token_has_its_own_header_and_names_its_payer() {
    use khachapuri_protocol::http::PAYER_TOKEN_HEADER;
    const PAYER: u32 = 3;
    let net = Net::start().await;
    net.fund(PAYER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let spec = net.spec(&example("echo"), "echo.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();
    let token = net.payer_token(PAYER, &cid).await;
    let payer = net.devnet.address(PAYER).to_string().to_lowercase();

    let res = http
        .post(url(&agent, &cid))
        .header(PAYER_TOKEN_HEADER, token.encode())
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        payer
    );
    let echoed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        echoed["headers"]["authorization"], "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "the program gets its own Authorization"
    );
    assert!(
        echoed["headers"].get(PAYER_TOKEN_HEADER).is_none(),
        "never the token: {echoed}"
    );

    // Altered after signing (one bit of the price): refused as a bad signature that names the payer.
    let mut altered = token.clone();
    altered.token.maxPrice = U256::from(PRICE.units() + 1);
    let res = http
        .post(url(&agent, &cid))
        .header(PAYER_TOKEN_HEADER, altered.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get(PAYER_HEADER).is_none(), "nothing charged");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "bad_token_signature");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains(&payer),
        "{body}"
    );

    // Two different tokens: which one pays would be a guess, so neither does (nor the owner).
    let res = http
        .post(url(&agent, &cid))
        .header(PAYER_TOKEN_HEADER, token.encode())
        .header("authorization", format!("bearer {}", altered.encode()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get(PAYER_HEADER).is_none(), "nothing charged");

    // The first transport still pays, and is not shown to the program.
    let res = http
        .post(url(&agent, &cid))
        .bearer_auth(token.encode())
        .body("old")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        payer
    );
    let echoed: serde_json::Value = res.json().await.unwrap();
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    agent.shutdown().await;
}

/// Everything under `dir`, file by file, that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A private program: only its ciphertext is on IPFS, and no file the agent writes (blocks, claims log,
/// the compiled-module cache) holds its code or data, before or after a restart. A wrong key, a cut
/// ciphertext, or a key in an open spec are 422s that charge nothing; and a spec with another key cannot
/// borrow the program another key opened, although it is compiled and cached under the same CID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_program_leaves_nothing_readable_on_ipfs_or_disk() {
    const MARKER: &str = "KHACHAPURI-PRIVATE-MARKER-93b1";
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let wat = format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\10\00\00\00\{len:02x}\00\00\00")
            (data (i32.const 16) "{MARKER}")
            (func (export "_start")
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = MARKER.len(),
    );
    let program = wat::parse_str(&wat).unwrap();
    let key = khachapuri_spec::ProgramKey::generate();
    let sealed = khachapuri_spec::seal_program(&key, &program).unwrap();
    let mut spec = net.spec(&sealed, "private.wasm", &[], OWNER).await;
    spec.program_key = Some(key.clone());
    let cid = net.publish(&spec);
    let data = net.dir.path().join("data");
    let before = net.escrowed(OWNER).await;
    let call = |agent: &khachapuri_provider::RunningAgent, cid: &str| {
        khachapuri_tls::http()
            .post(url(agent, cid))
            .body("hi")
            .send()
    };

    let agent = net.agent(SettlementMode::Batch).await;
    let res = call(&agent, &cid).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        MARKER,
        "the provider opened and ran it"
    );

    // Another key for the same ciphertext: the program is compiled under its CID, yet not lent out.
    let mut borrowed = spec.clone();
    borrowed.program_key = Some(khachapuri_spec::ProgramKey::generate());
    let res = call(&agent, &net.publish(&borrowed)).await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.headers().get(PRICE_HEADER).is_none(), "nothing charged");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "undecryptable_program", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not authenticate"),
        "{body}"
    );
    // A spec naming the cache entry's text as its program (no key, so nothing to open): not a CID.
    let mut spoof = spec.clone();
    spoof.program = format!("{}~{}", spec.program, key.id());
    spoof.program_key = None;
    spoof.sign(&signer(OWNER)).await.unwrap();
    let res = call(&agent, &net.publish(&spoof)).await.unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_spec", "{body}");
    // The ciphertext cut short, under its own CID.
    let cut = net.store.put(&sealed[..sealed.len() - 20]).unwrap().cid;
    let mut truncated = spec.clone();
    truncated.program = cut.to_string();
    truncated.sign(&signer(OWNER)).await.unwrap();
    let res = call(&agent, &net.publish(&truncated)).await.unwrap();
    assert_eq!(res.status(), 422);
    // A key in an open spec is no secret: refused.
    let mut open = spec.clone();
    open.provider = None;
    open.sign(&signer(OWNER)).await.unwrap();
    let res = call(&agent, &net.publish_open(&open)).await.unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_spec", "{body}");
    // Calling the program's CID instead of the spec's: named for what it is.
    let res = call(&agent, &spec.program).await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "program_not_spec", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("an encrypted program"),
        "{body}"
    );
    // The ciphertext without a key: a clear 422, not "not wasm".
    let mut keyless = spec.clone();
    keyless.program_key = None;
    let res = call(&agent, &net.publish(&keyless)).await.unwrap();
    assert_eq!(res.status(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "undecryptable_program", "{body}");

    // The optimized artifact lands in the disk cache in the background; wait for it.
    let modules = data.join("modules");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&modules)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "bin"))
        })
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no artifact in {}",
            modules.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    agent.shutdown().await;

    // A restarted agent serves it from its (encrypted) cache.
    let agent = net.agent(SettlementMode::Batch).await;
    let res = call(&agent, &cid).await.unwrap();
    assert_eq!(res.text().await.unwrap(), MARKER);
    agent.shutdown().await;

    // `module-cache = memory`: not even the encrypted artifact is written.
    let artifacts = || std::fs::read_dir(&modules).unwrap().count();
    let before_memory = artifacts();
    let mut config = net.config(SettlementMode::Batch);
    config.module_cache = khachapuri_provider::ModuleCache::Memory;
    let agent = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .unwrap();
    let key = khachapuri_spec::ProgramKey::generate();
    let sealed = khachapuri_spec::seal_program(&key, &program).unwrap();
    let mut fresh = net.spec(&sealed, "private.wasm", &[], OWNER).await;
    fresh.program_key = Some(key);
    let res = call(&agent, &net.publish(&fresh)).await.unwrap();
    assert_eq!(res.text().await.unwrap(), MARKER);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // past a tier-up
    agent.shutdown().await;
    assert_eq!(artifacts(), before_memory, "nothing compiled was written");

    let exposed = files_holding(net.dir.path(), MARKER.as_bytes());
    assert!(exposed.is_empty(), "the marker is readable in {exposed:?}");
    // The scan can see: the plain program, stored, is found.
    net.store.put(&program).unwrap();
    assert_eq!(files_holding(net.dir.path(), MARKER.as_bytes()).len(), 1);

    let three = Usdc::from_units(3 * PRICE.units());
    assert_eq!(
        net.escrowed(OWNER).await,
        before.checked_sub(three).unwrap(),
        "the three calls that ran, and nothing for the refusals"
    );
}

/// An x402 payment by anvil account `index` of `value` to `offer`'s payee, valid for `valid_for` seconds.
async fn x402_payment(
    net: &Net,
    index: u32,
    offer: &khachapuri_protocol::x402::PaymentRequirements,
    value: u64,
    valid_for: u64,
) -> khachapuri_protocol::x402::PaymentPayload {
    let domain = net.chain(index).token_domain().await.unwrap();
    let valid_before = khachapuri_protocol::unix_now() + valid_for;
    let value = U256::from(value);
    khachapuri_protocol::x402::PaymentPayload::pay(
        &signer(index),
        &domain,
        offer,
        value,
        valid_before,
    )
    .await
    .unwrap()
}

/// x402 end to end: a 402 offers one call at the price, payable with no reserve; a payment settles with the
/// token before the program runs, exactly once; a replay, an underpayment, an authorization about to expire,
/// one to another payee and a forged value are each a 402 that runs nothing and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x402_client_pays_one_call_without_a_reserve() {
    use khachapuri_protocol::x402::{
        PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER,
        PaymentRequired, SettlementResponse,
    };
    const PAYER: u32 = 5;
    let net = Net::start().await;
    net.devnet.fund(PAYER, Usdc::from_whole(1)).await.unwrap();
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hola")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let http = khachapuri_tls::http();
    let chain = net.chain(0);
    let wallet = |who: khachapuri_chain::Address| {
        let chain = chain.clone();
        async move { chain.token_balance(who).await.unwrap() }
    };
    let (payer, payee) = (net.devnet.address(PAYER), net.provider_address());

    // No reserve anywhere: a 402 whose PAYMENT-REQUIRED any x402 client reads.
    let res = http.post(url(&agent, &cid)).body("x").send().await.unwrap();
    assert_eq!(res.status(), 402);
    let required =
        PaymentRequired::decode(res.headers()[PAYMENT_REQUIRED_HEADER].to_str().unwrap()).unwrap();
    let offer = required.accepts[0].clone();
    assert_eq!(required.x402_version, 2);
    assert!(
        required.resource.url.ends_with(&cid),
        "{}",
        required.resource.url
    );
    assert_eq!(
        (
            offer.scheme.as_str(),
            offer.network.as_str(),
            offer.amount.as_str()
        ),
        ("exact", "eip155:31337", "10000")
    );
    assert_eq!(
        (offer.pay_to, offer.asset),
        (payee, net.devnet.deployment.usdc)
    );
    assert_eq!(
        (offer.extra.name.as_str(), offer.extra.version.as_str()),
        ("USD Coin", "1")
    );

    let (payer_before, payee_before) = (wallet(payer).await, wallet(payee).await);
    let payment = x402_payment(&net, PAYER, &offer, 10_000, 120).await;
    let header = payment.encode();
    let res = http
        .post(url(&agent, &cid))
        .header(PAYMENT_SIGNATURE_HEADER, &header)
        .body("x402")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[PRICE_HEADER], "0.01 USDC");
    assert_eq!(
        res.headers()[PAYER_HEADER].to_str().unwrap().to_lowercase(),
        payer.to_string().to_lowercase()
    );
    let settled =
        SettlementResponse::decode(res.headers()[PAYMENT_RESPONSE_HEADER].to_str().unwrap())
            .unwrap();
    assert!(
        settled.success && settled.transaction.starts_with("0x"),
        "{settled:?}"
    );
    assert_eq!(settled.payer, Some(payer));
    assert_eq!(res.text().await.unwrap(), "Hola, x402!\n");
    let ten_thousand = Usdc::from_units(10_000);
    assert_eq!(
        wallet(payer).await,
        payer_before.checked_sub(ten_thousand).unwrap()
    );
    assert_eq!(
        wallet(payee).await,
        payee_before.saturating_add(ten_thousand)
    );

    // Each refused, nothing run, nothing moved.
    let refused = |header: String, code: &'static str| {
        let http = http.clone();
        let target = url(&agent, &cid);
        async move {
            let res = http
                .post(target)
                .header(PAYMENT_SIGNATURE_HEADER, header)
                .body("again")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 402);
            assert!(res.headers().contains_key(PAYMENT_REQUIRED_HEADER));
            assert!(res.headers().get(PRICE_HEADER).is_none());
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"], code, "{body}");
            body["message"].as_str().unwrap().to_owned()
        }
    };
    let replay = refused(header, "x402_payment_refused").await;
    assert!(replay.contains("already used"), "{replay}");
    let under = x402_payment(&net, PAYER, &offer, 9_999, 120).await;
    refused(under.encode(), "x402_payment_invalid").await;
    let over = x402_payment(&net, PAYER, &offer, 20_000, 120).await;
    let message = refused(over.encode(), "x402_payment_invalid").await;
    assert!(message.contains("costs exactly 0.01 USDC"), "{message}");
    let expiring = x402_payment(&net, PAYER, &offer, 10_000, 5).await;
    let message = refused(expiring.encode(), "x402_payment_invalid").await;
    assert!(message.contains("too close to its end"), "{message}");
    let mut elsewhere = offer.clone();
    elsewhere.pay_to = net.devnet.address(OWNER);
    let elsewhere = x402_payment(&net, PAYER, &elsewhere, 10_000, 120).await;
    refused(elsewhere.encode(), "x402_payment_invalid").await;
    let mut forged = x402_payment(&net, PAYER, &offer, 10_000, 120).await;
    forged.payload.authorization.valid_before += U256::from(3_600);
    let message = refused(forged.encode(), "x402_payment_invalid").await;
    assert!(message.contains("not signed by its payer"), "{message}");
    refused("garbage".into(), "x402_payment_invalid").await;
    // An empty wallet's authorization is refused before anything is sent.
    let empty = x402_payment(&net, 7, &offer, 10_000, 120).await;
    let message = refused(empty.encode(), "x402_payment_refused").await;
    assert!(message.contains("holds 0.00 USDC"), "{message}");
    assert_eq!(
        wallet(payer).await,
        payer_before.checked_sub(ten_thousand).unwrap()
    );
    assert_eq!(
        wallet(payee).await,
        payee_before.saturating_add(ten_thousand)
    );
    // A front-run: someone who saw the header submits the authorization first. The payee is paid once by
    // it; the agent finds the nonce used, runs nothing and sends nothing.
    let seen = x402_payment(&net, PAYER, &offer, 10_000, 120).await;
    let auth = &seen.payload.authorization;
    net.chain(8)
        .transfer_with_authorization(auth, &seen.payload.signature)
        .await
        .unwrap();
    let message = refused(seen.encode(), "x402_payment_refused").await;
    assert!(message.contains("already used"), "{message}");
    let twenty_thousand = Usdc::from_units(20_000);
    assert_eq!(
        wallet(payer).await,
        payer_before.checked_sub(twenty_thousand).unwrap()
    );
    assert_eq!(
        wallet(payee).await,
        payee_before.saturating_add(twenty_thousand)
    );
    agent.shutdown().await;
}

/// The real x402 client (`@x402/fetch` and `@x402/evm`, pinned in package.json, with a viem account) pays
/// a call: it reads the 402's offer, signs, retries, and gets the answer and the settlement; the payer's
/// wallet moves by exactly the price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x402_sdk_pays_a_function() {
    const PAYER: u32 = 6;
    let net = Net::start().await;
    net.devnet.fund(PAYER, Usdc::from_whole(1)).await.unwrap();
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let chain = net.chain(0);
    let payer = net.devnet.address(PAYER);
    let before = chain.token_balance(payer).await.unwrap();

    let d = &net.devnet.deployment;
    let key = alloy::primitives::hex::encode_prefixed(signer(PAYER).to_bytes());
    let out = tokio::process::Command::new("node")
        .arg(workspace().join("test/x402/pay.mjs"))
        .env("X402_URL", url(&agent, &cid))
        .env("X402_KEY", key)
        .env("X402_USDC", d.usdc.to_string())
        .env("X402_NETWORK", format!("eip155:{}", d.chain_id))
        .output()
        .await
        .expect("node (the npm toolchain installs the x402 SDK)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paid: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(paid["status"], 200, "{paid}");
    assert_eq!(paid["body"], "Hello, x402 client!\n", "{paid}");
    assert_eq!(paid["paymentResponse"]["success"], true, "{paid}");
    assert_eq!(
        paid["paymentResponse"]["payer"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        payer.to_string().to_lowercase()
    );
    assert_eq!(
        chain.token_balance(payer).await.unwrap(),
        before.checked_sub(PRICE).unwrap(),
        "the wallet paid exactly the price, once"
    );
    agent.shutdown().await;
}

/// The TypeScript SDK (sdk/, built by `make sdk`) calls a live agent: it resolves the provider's label on
/// chain, a payer token it signs pays the call, the receipt verifies against the resolved payee (and not
/// against another answer), and a token capped below the price reads as the typed reason
/// `price_above_token`, with x402's offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_pays_a_call_and_verifies_its_receipt() {
    const PAYER: u32 = 3;
    let script = workspace().join("sdk/live/call.mjs");
    assert!(
        workspace().join("sdk/dist/src/index.js").exists(),
        "the SDK is not built: run `make test-sdk` (make test does, before the Rust tests)"
    );
    let net = Net::start().await;
    net.fund(PAYER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    let cid = net.publish(&spec);
    let agent = net.agent(SettlementMode::Batch).await;
    let d = &net.devnet.deployment;
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("SDK_URL", url(&agent, &cid))
        .env(
            "SDK_KEY",
            alloy::primitives::hex::encode_prefixed(signer(PAYER).to_bytes()),
        )
        .env("SDK_RPC", net.devnet.anvil.url())
        .env(
            "SDK_DEPLOYMENT",
            net.dir
                .path()
                .join(format!("deployments/{}.json", d.chain_id)),
        )
        .env("SDK_LABEL", LABEL)
        .output()
        .await
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let payer = net.devnet.address(PAYER).to_string();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "Hello, sdk!\n", "{v}");
    assert_eq!(v["price"], "10000", "{v}");
    assert_eq!(v["payer"], payer.as_str(), "{v}");
    assert_eq!(v["receiptPayer"], payer.as_str(), "{v}");
    assert_eq!(v["forged"], "the receipt covers another answer", "{v}");
    assert_eq!(v["refused"]["status"], 402, "{v}");
    assert_eq!(v["refused"]["code"], "price_above_token", "{v}");
    assert_eq!(v["refused"]["x402"], true, "{v}");
    // The payee it verified against came from the Registry and the label's resolver.
    assert_eq!(
        v["record"]["payee"],
        net.provider_address().to_string().as_str(),
        "{v}"
    );
    assert_eq!(
        v["record"]["keyId"],
        alloy::primitives::hex::encode(net.key.id()),
        "the resolver's RSA key is the agent's"
    );
    assert_eq!(
        v["unknown"],
        format!(
            "provider `nobody-here` is not registered on chain {}",
            d.chain_id
        )
    );
    agent.shutdown().await;
}

/// Claims that a batch settles go back to the claims log as one line for its transaction, written once,
/// not a line (and a task) per claim.
#[tokio::test]
async fn a_settled_batch_closes_its_claims_in_one_log_line() {
    let net = Net::start().await;
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hi")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    net.fund(OWNER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
        .await;
    let mut config = net.config(SettlementMode::Batch);
    config.batch_linger = std::time::Duration::from_millis(500);
    let wal = config.data_dir.join("claims.wal");
    let agent = khachapuri_provider::start(config, signer(PROVIDER))
        .await
        .expect("agent");
    let calls = (0..5).map(|i| {
        khachapuri_tls::http()
            .post(url(&agent, &cid))
            .body(format!("caller {i}"))
            .send()
    });
    for res in futures::future::join_all(calls).await {
        assert_eq!(res.unwrap().status(), 200);
    }
    agent.shutdown().await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&wal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let claims = lines.iter().filter(|l| l.get("claim").is_some()).count();
    let landed: Vec<_> = lines.iter().filter_map(|l| l.get("landed")).collect();
    assert_eq!(claims, 5, "{lines:?}");
    assert_eq!(landed.len(), 1, "one line for the batch: {lines:?}");
    assert_eq!(landed[0]["ids"].as_array().unwrap().len(), 5, "{lines:?}");
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        Usdc::from_units(5 * PRICE.units())
    );
}

/// A claim that fails to settle (its payer was frozen after the agent read its terms) makes the next claim
/// read the chain again, however fresh the cached terms: otherwise that payer's calls would run for free
/// until the cache expired.
#[tokio::test]
async fn a_claim_that_fails_to_settle_makes_the_next_one_read_the_chain_again() {
    let frozen = FrozenPayer::start(None).await;
    assert!(
        frozen.read_at.elapsed() < std::time::Duration::from_secs(2),
        "the cached terms expired before the second call: this test proves nothing on a machine this slow"
    );
    let res = frozen.call().await;
    assert_eq!(
        res.status(),
        402,
        "the cached terms were used: the call ran unpaid"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "payer_frozen", "{body}");
    frozen.earned_nothing().await;
}

/// The setup of the attacks on a payer's cached terms: an agent batching every 100 ms (through `rpc` when
/// given) read PAYER's terms in one paid call, then PAYER was frozen, and its batch has been settled or
/// refused.
struct FrozenPayer {
    net: Net,
    agent: khachapuri_provider::RunningAgent,
    cid: String,
    token: String,
    wal: std::path::PathBuf,
    /// When the terms were read (they stay cached for 2 s).
    read_at: std::time::Instant,
}

impl FrozenPayer {
    const PAYER: u32 = 5;

    async fn start(rpc: Option<std::sync::Arc<RpcFault>>) -> Self {
        let net = Net::start().await;
        let spec = net
            .spec(
                &example("hello"),
                "hello.wasm",
                &[("GREETING", "Hi")],
                OWNER,
            )
            .await;
        let cid = net.publish(&spec);
        net.fund(Self::PAYER, Usdc::from_whole(1), PRICE, Usdc::from_whole(1))
            .await;
        let mut config = net.config(SettlementMode::Batch);
        config.batch_linger = std::time::Duration::from_millis(100);
        if let Some(fault) = rpc {
            config.rpc_url = faulty_rpc(config.rpc_url.clone(), fault).await;
        }
        let wal = config.data_dir.join("claims.wal");
        let agent = khachapuri_provider::start(config, signer(PROVIDER))
            .await
            .expect("agent");
        let token = net.payer_token(Self::PAYER, &cid).await.encode();
        let frozen = Self {
            net,
            agent,
            cid,
            token,
            wal,
            read_at: std::time::Instant::now(),
        };
        assert_eq!(frozen.call().await.status(), 200);
        let payer = frozen.net.devnet.address(Self::PAYER);
        frozen.net.devnet.freeze(payer, true).await.unwrap();
        // The batch is refused; wait until the agent has recorded it.
        while metric(
            &metrics(&frozen.agent).await,
            "khachapuri_claims_outstanding",
        ) > 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        frozen
    }

    async fn call(&self) -> reqwest::Response {
        khachapuri_tls::http()
            .post(url(&self.agent, &self.cid))
            .bearer_auth(&self.token)
            .body("hi")
            .send()
            .await
            .unwrap()
    }

    /// Stops the agent (settling what it claimed) and checks that the provider earned nothing.
    async fn earned_nothing(self) {
        self.agent.shutdown().await;
        assert_eq!(
            self.net
                .chain(0)
                .earnings(self.net.provider_address())
                .await
                .unwrap(),
            Usdc::ZERO
        );
    }
}

/// A lagging RPC node (a replica behind a load balancer, or one an attacker serves): PAYER's reserve covers
/// 3 calls, and 2 were charged in a batch. The node the agent reads next is stuck at the block before that
/// batch, so its terms still show the whole reserve; counted against the 2 charges the agent saw land,
/// they would let 3 more calls run, 2 of them unpaid. The agent must read no terms older than its last
/// landed charge: it refuses (503) until the node catches up, then runs the one call left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_from_a_node_behind_the_last_landed_charge_are_not_used() {
    const PAYER: u32 = 5;
    let net = Net::start().await;
    let spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hi")],
            OWNER,
        )
        .await;
    let cid = net.publish(&spec);
    let reserve = PRICE.checked_mul(3).unwrap();
    net.fund(PAYER, Usdc::from_whole(1), PRICE, reserve).await;
    let fault = std::sync::Arc::new(RpcFault::default());
    let rpc = faulty_rpc(net.devnet.anvil.url(), fault.clone()).await;
    let start = || async {
        let mut config = net.config(SettlementMode::Batch);
        config.batch_linger = std::time::Duration::from_millis(100);
        config.rpc_url = rpc.clone();
        khachapuri_provider::start(config, signer(PROVIDER))
            .await
            .expect("agent")
    };
    let agent = start().await;
    let token = net.payer_token(PAYER, &cid).await.encode();
    let call = |agent: &khachapuri_provider::RunningAgent| {
        let (url, token) = (url(agent, &cid), token.clone());
        async move {
            let res = khachapuri_tls::http()
                .post(url)
                .bearer_auth(&token)
                .body("hi")
                .send()
                .await
                .unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };
    for _ in 0..2 {
        assert_eq!(call(&agent).await.0, 200);
    }
    while metric(&metrics(&agent).await, "khachapuri_claims_outstanding") > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The replica is stuck just before the block the batch landed in.
    let log = std::fs::read_to_string(
        net.config(SettlementMode::Batch)
            .data_dir
            .join("claims.wal"),
    )
    .unwrap();
    let tx: B256 = log
        .lines()
        .find_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).ok()?;
            record["landed"]["tx"].as_str()?.parse().ok()
        })
        .expect("the batch's line in the claims log");
    let landed = {
        use alloy::providers::Provider;
        let receipt = net
            .chain(0)
            .provider()
            .get_transaction_receipt(tx)
            .await
            .unwrap();
        receipt.expect("the batch is mined").block_number.unwrap()
    };
    fault
        .stuck_at
        .store(landed - 1, std::sync::atomic::Ordering::SeqCst);
    fault
        .stuck_head
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // the agent's view of the terms expires

    for attempt in ["the first call", "the second call"] {
        let (status, body) = call(&agent).await;
        assert_eq!(
            status, 503,
            "{attempt} ran on terms without the landed charges: {body}"
        );
        assert!(body.contains("behind block"), "{attempt}: {body}");
    }
    // Behind a load balancer: an up-to-date node names the head, the stuck one answers the read.
    fault
        .stuck_head
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = call(&agent).await;
    assert_eq!(
        status, 503,
        "the call ran on a stuck replica's terms: {body}"
    );
    assert!(body.contains("header not found"), "{body}");
    // Caught up: one call is left of the reserve.
    fault.stuck_at.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(&agent).await.0, 200);
    let (status, body) = call(&agent).await;
    assert_eq!(status, 402, "{body}");
    assert!(body.contains("insufficient_reserve"), "{body}");
    agent.shutdown().await;
    assert_eq!(
        net.chain(0).earnings(net.provider_address()).await.unwrap(),
        reserve,
        "exactly the reserve was earned, nothing claimed beyond it"
    );

    // Restarted, the agent's books hold none of those charges: the head it reconciled its log at is the
    // oldest block it reads terms at, so the stuck replica still gets nothing.
    let agent = start().await;
    fault
        .stuck_at
        .store(landed - 1, std::sync::atomic::Ordering::SeqCst);
    fault
        .stuck_head
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = call(&agent).await;
    assert_eq!(
        status, 503,
        "after a restart, the call ran on terms without the landed charges: {body}"
    );
    assert!(body.contains("behind block"), "{body}");
    fault.stuck_at.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(&agent).await.0, 402);
    agent.shutdown().await;
}

/// What the RPC endpoint of [`faulty_rpc`] does wrong, switched on and off as a test goes.
#[derive(Debug, Default)]
struct RpcFault {
    /// Every call gets a 503, as from a node behind a load balancer that lost it.
    down: std::sync::atomic::AtomicBool,
    /// Not 0: a replica stuck at this block answers `eth_call`: it reads at it for `latest`, and has no
    /// state for a later block.
    stuck_at: std::sync::atomic::AtomicU64,
    /// The same replica answers `eth_blockNumber` too (else a node that is up to date does, as behind a
    /// load balancer).
    stuck_head: std::sync::atomic::AtomicBool,
}

/// An RPC endpoint in front of `upstream` with `fault`.
async fn faulty_rpc(upstream: String, fault: std::sync::Arc<RpcFault>) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    let http = khachapuri_tls::http();
    let forward = move |body: axum::body::Bytes| {
        let (http, upstream, fault) = (http.clone(), upstream.clone(), fault.clone());
        async move {
            if fault.down.load(SeqCst) {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new());
            }
            let mut call: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let stuck = fault.stuck_at.load(SeqCst);
            if stuck != 0 {
                let id = call["id"].clone();
                let answer = |result: serde_json::Value| {
                    let mut reply = serde_json::json!({ "jsonrpc": "2.0", "id": id });
                    reply
                        .as_object_mut()
                        .unwrap()
                        .extend(result.as_object().unwrap().clone());
                    (
                        axum::http::StatusCode::OK,
                        serde_json::to_vec(&reply).unwrap(),
                    )
                };
                assert!(
                    call.is_object(),
                    "a JSON-RPC batch, which this proxy does not fault: {call}"
                );
                match call["method"].as_str() {
                    Some("eth_blockNumber") if fault.stuck_head.load(SeqCst) => {
                        return answer(serde_json::json!({ "result": format!("{stuck:#x}") }));
                    }
                    Some("eth_call") => {
                        let params = call["params"].as_array_mut().unwrap();
                        let block = params.get(1).cloned().unwrap_or("latest".into());
                        let number = match block.as_str() {
                            Some("latest" | "pending" | "safe" | "finalized") => stuck,
                            Some("earliest") => 0,
                            Some(hex) => {
                                u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
                            }
                            None => panic!("a block this proxy does not fault: {block}"),
                        };
                        if number > stuck {
                            return answer(serde_json::json!({
                                "error": { "code": -32000, "message": "header not found" }
                            }));
                        }
                        params.truncate(1);
                        params.push(format!("{number:#x}").into());
                    }
                    _ => {}
                }
            }
            let res = http
                .post(&upstream)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&call).unwrap())
                .send()
                .await
                .unwrap();
            let status = axum::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
            (status, res.bytes().await.unwrap().to_vec())
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, axum::Router::new().fallback(forward)).into_future());
    format!("http://{addr}")
}

/// The same attack with the chain out of reach when the next call comes: the payer's terms were read (and
/// cached for 2 s), its batch was refused, and then the RPC node goes down. The read the failure calls for
/// fails, and the cached terms must stay dropped: neither that call nor the next one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_chain_read_after_a_failed_settlement_fails_no_call_runs_on_the_old_terms() {
    let fault = std::sync::Arc::new(RpcFault::default());
    let frozen = FrozenPayer::start(Some(fault.clone())).await;
    let log = std::fs::read_to_string(&frozen.wal).unwrap();
    assert!(
        log.contains("\"failed\""),
        "the batch landed before the freeze (a slow machine): nothing is stale, the test proves nothing\n{log}"
    );
    fault.down.store(true, std::sync::atomic::Ordering::SeqCst);
    for attempt in ["the read fails", "the old terms are not back"] {
        let res = frozen.call().await;
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_eq!(
            status, 503,
            "{attempt}: the call ran on the old terms: {body}"
        );
        // The ledger's read of the terms failed (not the revocation check's, which says otherwise).
        assert!(body.contains("chain unavailable:"), "{attempt}: {body}");
    }
    assert!(
        frozen.read_at.elapsed() < std::time::Duration::from_secs(2),
        "the cached terms expired before the last call: this test proves nothing on a machine this slow"
    );

    // Back up: the chain says what the cached terms did not.
    fault.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(frozen.call().await.status(), 402);
    frozen.earned_nothing().await;
}
