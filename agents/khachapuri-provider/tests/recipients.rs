//! Deployments for several runners (docs/PROTOCOL.md §4, §5): a spec sealed to two providers runs at
//! both, under the same owner-signed terms, and at no one else; an open spec runs only where its operator
//! allows open specs. Real agents on one anvil, called over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use khachapuri_chain::Usdc;
use khachapuri_provider::testing::*;
use khachapuri_provider::{OpenSpecs, PAYER_HEADER, PRICE_HEADER, SettlementMode};

const BOB: u32 = 4;
const CAROL: u32 = 5;

async fn call(
    agent: &khachapuri_provider::RunningAgent,
    cid: &str,
    body: &str,
) -> (u16, String, Option<String>) {
    let res = khachapuri_tls::http()
        .post(format!("http://{}/{cid}", agent.addr))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let price = res
        .headers()
        .get(PRICE_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, res.text().await.unwrap(), price)
}

/// The owner deposits, and reserves ten calls' worth with alice and with each of `others` (anvil accounts).
async fn owner_pays_at(net: &Net, others: &[u32]) {
    let reserve = Usdc::from_units(10 * PRICE.units());
    net.fund(OWNER, Usdc::from_whole(1), PRICE, reserve).await;
    for &other in others {
        net.chain(OWNER)
            .reserve(net.devnet.address(other), PRICE, reserve)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_sealed_to_two_providers_runs_at_both_and_nowhere_else() {
    let net = Net::start().await;
    let bob = net.register_other("bob", BOB).await;
    let carol = net.register_other("carol", CAROL).await;

    // The owner signs one set of terms naming alice and bob; one envelope carries the content key to both.
    let mut spec = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Hola")],
            OWNER,
        )
        .await;
    spec.provider = Some(format!("{LABEL},bob"));
    spec.sign(&signer(OWNER)).await.unwrap();
    let cid = net.publish_to(&spec, &[&net.key, &bob.key]);

    // The owner pays at both: a reserve with each provider.
    owner_pays_at(&net, &[BOB, CAROL]).await;

    let alice_agent = net.agent(SettlementMode::Batch).await;
    let bob_agent = net.start_other(&bob, |_| {}).await;
    let carol_agent = net.start_other(&carol, |_| {}).await;

    let (status, body, price) = call(&alice_agent, &cid, "alice").await;
    assert_eq!((status, body.as_str()), (200, "Hola, alice!\n"));
    assert_eq!(price.as_deref(), Some("0.01 USDC"));
    let (status, body, _) = call(&bob_agent, &cid, "bob").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Hola, bob!\n"),
        "bob opens the same envelope"
    );

    // Carol holds no key the envelope names: refused before any claim.
    let (status, body, price) = call(&carol_agent, &cid, "carol").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("sealed to another RSA key"), "{body}");
    assert!(price.is_none(), "nothing charged");

    // Sealed to carol too, but the signed terms name only alice and bob: carol refuses to run it.
    let cid_all = net.publish_to(&spec, &[&net.key, &bob.key, &carol.key]);
    let (status, body, price) = call(&carol_agent, &cid_all, "carol").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("not_for_this_provider") && body.contains("providers `alice`, `bob`"),
        "{body}"
    );
    assert!(price.is_none());

    // Terms that name carol alone, sealed to alice: alice refuses it (it is not hers), with no charge.
    let mut other = spec.clone();
    other.provider = Some("carol".into());
    other.sign(&signer(OWNER)).await.unwrap();
    let cid_carol = net.publish_to(&other, &[&net.key]);
    let (status, body, _) = call(&alice_agent, &cid_carol, "alice").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("meant for provider `carol`"), "{body}");

    // Each provider charged the owner for its one call, and only that: settle, then read the earnings.
    alice_agent.shutdown().await;
    bob_agent.shutdown().await;
    carol_agent.shutdown().await;
    let chain = net.chain(0);
    assert_eq!(chain.earnings(net.provider_address()).await.unwrap(), PRICE);
    assert_eq!(
        chain.earnings(net.devnet.address(BOB)).await.unwrap(),
        PRICE
    );
    assert_eq!(
        chain.earnings(net.devnet.address(CAROL)).await.unwrap(),
        Usdc::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_spec_runs_only_where_its_operator_allows_open_specs() {
    let net = Net::start().await;
    let bob = net.register_other("bob", BOB).await;
    let mut spec = net.spec(&example("hello"), "hello.wasm", &[], OWNER).await;
    spec.provider = None;
    spec.sign(&signer(OWNER)).await.unwrap();
    let cid = net.publish_open(&spec);
    owner_pays_at(&net, &[BOB]).await;

    let alice_agent = net.agent(SettlementMode::Batch).await; // open specs: run (the default)
    let bob_agent = net
        .start_other(&bob, |c| c.open_specs = OpenSpecs::Refuse)
        .await;

    let (status, body, _) = call(&alice_agent, &cid, "open").await;
    assert_eq!((status, body.as_str()), (200, "Hello, open!\n"));
    let res = khachapuri_tls::http()
        .post(format!("http://{}/{cid}", bob_agent.addr))
        .body("open")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(PAYER_HEADER).is_none());
    let error: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error["error"], "open_specs_refused");
    assert!(
        error["hint"].as_str().unwrap().contains("--provider bob"),
        "{error}"
    );
    alice_agent.shutdown().await;
    bob_agent.shutdown().await;
}
