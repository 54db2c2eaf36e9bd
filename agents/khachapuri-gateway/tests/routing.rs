//! Calls that name no provider (`{gateway}/{cid}`), routed among three real agents on one anvil (one behind
//! the tunnel): only runners of a spec get it, a payer's provider without terms is never picked, a provider
//! that stops mid-run is skipped without a failed or double-charged call, and one whose price rises above
//! a spec's maximum stops being picked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use khachapuri_chain::{Server, Usdc};
use khachapuri_gateway::{
    GatewayConfig, RoutingConfig,
    chain_directory::{ChainDirectory, ChainDirectoryConfig},
};
use khachapuri_ipfs::Source;
use khachapuri_protocol::http::{CHARGED_HEADER, PAYER_HEADER, PROVIDER_HEADER};
use khachapuri_provider::{SettlementMode, testing::*};

/// Another payer, with terms at bob only.
const STRANGER: u32 = 5;

/// Points `label`'s resolver (owned by anvil account `index`) at `server`.
async fn point(net: &Net, label: &str, index: u32, server: Server) {
    let chain = net.chain(index);
    let resolver = chain.resolve_label(label).await.unwrap().resolver;
    chain.set_server(resolver, &server).await.unwrap();
}

struct Reply {
    status: u16,
    provider: String,
    charged: String,
    payer: String,
    body: String,
}

async fn call(gateway: &str, cid: &str, token: Option<&str>) -> Reply {
    let mut request = khachapuri_tls::http()
        .post(format!("http://{gateway}/{cid}"))
        .body("router");
    if let Some(token) = token {
        request = request.header("x-khachapuri-payer-token", token);
    }
    let res = request.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    Reply {
        status: res.status().as_u16(),
        provider: header(PROVIDER_HEADER),
        charged: header(CHARGED_HEADER),
        payer: header(PAYER_HEADER),
        body: res.text().await.unwrap(),
    }
}

/// Waits until the gateway's table shows `want` reachable providers.
async fn until_reachable(gateway: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let table: serde_json::Value = khachapuri_tls::http()
            .get(format!("http://{gateway}/_providers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut reachable: Vec<String> = table["providers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["reachable"] == true)
            .map(|p| p["label"].as_str().unwrap().to_owned())
            .collect();
        reachable.sort();
        if reachable == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reachable {reachable:?}, want {want:?}: {table}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_calls_go_to_runners_the_payer_reserved_with_and_survive_a_provider_that_stops() {
    let net = Net::start().await;
    let bob = net.register_other("bob", 3).await;
    let carol = net.register_other("carol", 4).await;
    let gateway = khachapuri_gateway::spawn(
        "127.0.0.1:0".parse().unwrap(),
        GatewayConfig {
            routing: Some(RoutingConfig {
                ipfs: vec![Source::Local(net.store.clone())],
                refresh: Duration::from_millis(300),
                terms: Some(Arc::new(net.chain(0))),
                ..RoutingConfig::default()
            }),
            ..GatewayConfig::default()
        },
        ChainDirectory::start(
            net.chain(0),
            ChainDirectoryConfig {
                poll_interval: Duration::from_millis(200),
                ..ChainDirectoryConfig::default()
            },
        ),
    )
    .await
    .unwrap();
    let gw = gateway.addr.to_string();

    // alice and bob serve at their URLs; carol behind the tunnel.
    let alice_agent = net.agent(SettlementMode::Batch).await;
    point(
        &net,
        LABEL,
        PROVIDER,
        Server::Url(format!("http://{}", alice_agent.addr)),
    )
    .await;
    let bob_agent = net.start_other(&bob, |_| {}).await;
    point(
        &net,
        "bob",
        3,
        Server::Url(format!("http://{}", bob_agent.addr)),
    )
    .await;
    point(&net, "carol", 4, Server::Tunnel).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tunnel = format!("ws://{gw}/_tunnel");
    let carol_agent = net.start_other(&carol, |c| c.tunnel = Some(tunnel)).await;
    carol_agent
        .tunnel
        .as_ref()
        .unwrap()
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();

    // The owner has terms with all three (enough for every call at each); the stranger with bob only.
    let owner = net.chain(OWNER);
    net.fund(OWNER, Usdc::from_whole(9), PRICE, Usdc::from_whole(3))
        .await;
    for index in [3, 4] {
        owner
            .reserve(net.devnet.address(index), PRICE, Usdc::from_whole(3))
            .await
            .unwrap();
    }
    net.devnet
        .fund(STRANGER, Usdc::from_whole(1))
        .await
        .unwrap();
    let stranger = net.chain(STRANGER);
    stranger
        .deposit(net.devnet.address(STRANGER), Usdc::from_whole(1))
        .await
        .unwrap();
    stranger
        .reserve(net.devnet.address(3), PRICE, Usdc::from_whole(1))
        .await
        .unwrap();

    // One spec sealed to alice and bob; one open spec any of them runs.
    let mut sealed = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Sealed")],
            OWNER,
        )
        .await;
    sealed.provider = Some("alice,bob".into());
    sealed.sign(&signer(OWNER)).await.unwrap();
    let sealed = net.publish_to(&sealed, &[&net.key, &bob.key]);
    let mut open = net
        .spec(
            &example("hello"),
            "hello.wasm",
            &[("GREETING", "Open")],
            OWNER,
        )
        .await;
    open.provider = None;
    open.sign(&signer(OWNER)).await.unwrap();
    let open = net.publish_open(&open);
    until_reachable(&gw, &["alice", "bob", "carol"]).await;

    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    let mut paid = 0u32;
    // The sealed spec reaches only its recipients, and both of them.
    for _ in 0..40 {
        let r = call(&gw, &sealed, None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "Sealed, router!\n"));
        assert_eq!(r.charged, "yes");
        assert!(
            ["alice", "bob"].contains(&r.provider.as_str()),
            "{}",
            r.provider
        );
        *served.entry(format!("sealed@{}", r.provider)).or_default() += 1;
        paid += 1;
    }
    assert!(
        served.contains_key("sealed@alice") && served.contains_key("sealed@bob"),
        "{served:?}"
    );
    // The open spec may go anywhere; the load spreads.
    for _ in 0..30 {
        let r = call(&gw, &open, None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "Open, router!\n"));
        *served.entry(format!("open@{}", r.provider)).or_default() += 1;
        paid += 1;
    }
    let open_runners = served.keys().filter(|k| k.starts_with("open@")).count();
    assert!(open_runners >= 2, "{served:?}");

    // A token for any provider, by a payer with terms at bob only: every call goes to bob.
    let d = &net.devnet.deployment;
    let token = khachapuri_chain::PayerToken {
        provider: khachapuri_protocol::eip712::ANY_PROVIDER,
        spec: String::new(),
        maxPrice: PRICE.to_u256(),
        expiry: khachapuri_protocol::unix_now() + 300,
        session: Default::default(),
    }
    .sign(
        &signer(STRANGER),
        &khachapuri_chain::eip712::domain(d.chain_id, d.escrow),
    )
    .await
    .unwrap()
    .encode();
    for _ in 0..10 {
        let r = call(&gw, &open, Some(&token)).await;
        assert_eq!((r.status, r.provider.as_str()), (200, "bob"), "{}", r.body);
        assert_eq!(
            r.payer.to_lowercase(),
            net.devnet.address(STRANGER).to_string().to_lowercase()
        );
        paid += 1;
    }

    // A payer with terms nowhere is refused by the gateway, before any provider sees the call.
    let nobody = khachapuri_chain::PayerToken {
        provider: khachapuri_protocol::eip712::ANY_PROVIDER,
        spec: String::new(),
        maxPrice: PRICE.to_u256(),
        expiry: khachapuri_protocol::unix_now() + 300,
        session: Default::default(),
    }
    .sign(
        &signer(6),
        &khachapuri_chain::eip712::domain(d.chain_id, d.escrow),
    )
    .await
    .unwrap()
    .encode();
    let r = call(&gw, &open, Some(&nobody)).await;
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["error"]),
        (402, &"not_approved".into()),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("khachapuri escrow reserve --provider"),
        "{body}"
    );

    // bob stops while a client keeps calling: every call is answered, by alice once bob is gone.
    let caller = {
        let gw = gw.clone();
        let sealed = sealed.clone();
        tokio::spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..30 {
                replies.push(call(&gw, &sealed, None).await);
            }
            replies
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    bob_agent.shutdown().await;
    for r in caller.await.unwrap() {
        assert_eq!(r.status, 200, "{}: {}", r.provider, r.body);
        paid += 1;
    }
    for _ in 0..10 {
        let r = call(&gw, &sealed, None).await;
        assert_eq!((r.status, r.provider.as_str()), (200, "alice"));
        paid += 1;
    }
    // Its only reserved provider gone, the stranger's call is refused before any charge, and says why.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = call(&gw, &open, Some(&token)).await;
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["error"]),
        (402, &"not_approved".into()),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("not available now: bob"), "{body}");

    // bob comes back asking more than the specs' maximum (0.05 USDC), which the owner's terms would allow:
    // neither spec goes to it.
    owner
        .reserve(net.devnet.address(3), Usdc::from_whole(1), Usdc::ZERO)
        .await
        .unwrap();
    let bob_agent = net
        .start_other(&bob, |c| c.price = Usdc::from_units(60_000))
        .await;
    point(
        &net,
        "bob",
        3,
        Server::Url(format!("http://{}", bob_agent.addr)),
    )
    .await;
    until_reachable(&gw, &["alice", "bob", "carol"]).await;
    for cid in [&sealed, &open] {
        for _ in 0..10 {
            let r = call(&gw, cid, None).await;
            let table = khachapuri_tls::http()
                .get(format!("http://{gw}/_providers"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{} {table}", r.body);
            assert_ne!(r.provider, "bob");
            paid += 1;
        }
    }

    // Every answered call was charged once: the earnings add up to the calls times the price.
    alice_agent.shutdown().await;
    bob_agent.shutdown().await;
    carol_agent.shutdown().await;
    let c = net.chain(0);
    let mut earned = 0;
    for index in [PROVIDER, 3, 4] {
        earned += c.earnings(net.devnet.address(index)).await.unwrap().units();
    }
    assert_eq!(earned, u128::from(paid) * PRICE.units(), "{served:?}");
    gateway.shutdown().await;
}
