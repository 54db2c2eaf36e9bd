//! Connecting (deployment file, env key, keystore), labels, the EIP-712 domain on chain, RPC-down detection.

use std::time::Duration;

use khachapuri_bindings::Escrow;
use khachapuri_chain::testing::{Devnet, anvil_signer};
use khachapuri_chain::{
    Address, Bytes, Chain, ChainError, ConnectOptions, PayerToken, RegistrationStep, Server,
    SignedPayerToken, SignerSource, Usdc,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::test]
async fn connects_with_env_key_and_deployment_file() -> Result {
    let net = Devnet::start().await?;
    let dir = tempfile::tempdir()?;
    net.deployment.write(dir.path())?;
    // `set_var` is unsafe in edition 2024 (and unsafe code is denied): the key is parsed the way
    // `SignerSource::Env` parses the variable's value.
    let key = anvil_signer(4).to_bytes().to_string();
    let signer = khachapuri_chain::parse_private_key(&key)?;
    let chain = Chain::connect(&net.anvil.url(), Some(signer), dir.path()).await?;
    assert_eq!(chain.deployment(), &net.deployment);
    assert_eq!(chain.address()?, net.address(4));
    // A missing variable is a clear signer error, not a panic.
    let var = "KHACHAPURI_CHAIN_TEST_UNSET_KEY";
    let missing = SignerSource::Env(var.into())
        .load()
        .err()
        .ok_or("loaded a key from nowhere")?;
    assert!(missing.to_string().contains(var), "{missing}");
    assert!(khachapuri_chain::parse_private_key("0xnothex").is_err());
    Ok(())
}

#[tokio::test]
async fn keystore_signer_decrypts_with_its_password() -> Result {
    let dir = tempfile::tempdir()?;
    let key = anvil_signer(6);
    khachapuri_chain::PrivateKeySigner::encrypt_keystore(
        dir.path(),
        &mut rand::thread_rng(),
        key.to_bytes(),
        "correct horse",
        Some("provider.json"),
    )?;
    let path = dir.path().join("provider.json");
    let loaded = SignerSource::Keystore {
        path: path.clone(),
        password: "correct horse".into(),
    }
    .load()?;
    assert_eq!(loaded.address(), key.address());
    let wrong = SignerSource::Keystore {
        path,
        password: "wrong".into(),
    }
    .load();
    assert!(matches!(wrong, Err(ChainError::Signer(_))));
    Ok(())
}

#[tokio::test]
async fn the_eip712_domain_is_the_escrows() -> Result {
    let net = Devnet::start().await?;
    let chain = net.chain(1);
    let onchain = Escrow::new(net.deployment.escrow, chain.provider())
        .eip712Domain()
        .call()
        .await?;
    let ours = chain.domain();
    assert_eq!(ours.name.as_deref(), Some(onchain.name.as_str()));
    assert_eq!(ours.version.as_deref(), Some(onchain.version.as_str()));
    assert_eq!(ours.chain_id, Some(onchain.chainId));
    assert_eq!(ours.verifying_contract, Some(onchain.verifyingContract));
    assert_eq!(onchain.name, "Khachapuri");

    // A payer token signed against it recovers the payer from its Bearer form.
    let token = PayerToken {
        provider: net.address(2),
        spec: String::new(),
        maxPrice: Usdc::from_units(100_000).to_u256(),
        expiry: chain.block_timestamp().await? + 60,
        session: Default::default(),
    };
    let signed = token.sign(&anvil_signer(1), &ours).await?;
    let back = SignedPayerToken::decode(&format!("Bearer {}", signed.encode()))?;
    let now = chain.block_timestamp().await?;
    assert_eq!(
        back.verify(&ours, net.address(2), "bafyany", Usdc::from_units(1), now)?,
        net.address(1)
    );
    Ok(())
}

#[tokio::test]
async fn registers_and_resolves_labels() -> Result {
    let net = Devnet::start().await?;
    let alice = net.chain(3);
    let key = Bytes::from(vec![0x30, 0x82, 1, 2, 3]);
    let url = Server::Url("https://alice.example:8443".into());
    let resolver = alice
        .deploy_resolver(net.address(7), &url, key.clone())
        .await?;

    let mut steps = Vec::new();
    alice
        .register_label("alice", resolver, |s| steps.push(s))
        .await?;
    assert!(matches!(
        steps.first(),
        Some(RegistrationStep::Committed { .. })
    ));
    assert_eq!(steps.last(), Some(&RegistrationStep::Registered));

    let record = net.chain(9).resolve_label("alice").await?;
    assert_eq!(record.resolver, resolver);
    assert_eq!(record.payee, net.address(7));
    assert_eq!(record.server, url);
    assert_eq!(record.rsa_public_key_der, key);
    assert_eq!(record.key_version, 1);
    assert_eq!(alice.label_owner("alice").await?, net.address(3));

    // A tunnel provider.
    let bob = net.chain(4);
    let r2 = bob
        .deploy_resolver(net.address(4), &Server::Tunnel, key.clone())
        .await?;
    bob.register_label("bob-2", r2, |_| {}).await?;
    assert_eq!(alice.resolve_label("bob-2").await?.server, Server::Tunnel);

    // Taken, unknown, invalid.
    let taken = bob
        .register_label("alice", r2, |_| {})
        .await
        .err()
        .ok_or("registered a taken label")?;
    assert!(taken.to_string().contains("already registered"), "{taken}");
    assert!(
        matches!(alice.resolve_label("carol").await, Err(ChainError::UnknownLabel(l)) if l == "carol")
    );
    assert!(matches!(
        alice.resolve_label("Carol").await,
        Err(ChainError::InvalidLabel { .. })
    ));
    assert!(matches!(
        alice.resolve_label("-x").await,
        Err(ChainError::InvalidLabel { .. })
    ));
    Ok(())
}

/// `register_provider`: the commitment names the resolver's predicted address, the resolver is deployed
/// while it ages. Then the label is sold: taking it drops the seller's resolver, and the buyer sets one.
#[tokio::test]
async fn registers_a_provider_in_one_wait_and_a_sale_drops_the_sellers_resolver() -> Result {
    use khachapuri_bindings::Registry;
    let net = Devnet::start().await?;
    let (alice, bob) = (net.chain(3), net.chain(4));
    let key = Bytes::from(vec![0x30, 0x82, 1, 2, 3]);

    let mut steps = Vec::new();
    let (resolver, _) = alice
        .register_provider("alice", net.address(7), &Server::Tunnel, key.clone(), |s| {
            steps.push(s)
        })
        .await?;
    assert!(matches!(
        steps.first(),
        Some(RegistrationStep::Committed { .. })
    ));
    assert_eq!(
        steps.get(1),
        Some(&RegistrationStep::ResolverDeployed { resolver })
    );
    assert_eq!(steps.last(), Some(&RegistrationStep::Registered));
    let record = net.chain(9).resolve_label("alice").await?;
    assert_eq!(
        (record.resolver, record.payee, record.server),
        (resolver, net.address(7), Server::Tunnel)
    );

    // Reserved and punycode labels are refused before anything is sent.
    for label in ["www", "xn--80ak6aa92e"] {
        let err = alice
            .register_provider(label, net.address(7), &Server::Tunnel, key.clone(), |_| {})
            .await
            .err()
            .ok_or("registered a refused label")?;
        assert!(matches!(err, ChainError::InvalidLabel { .. }), "{err}");
    }

    // alice offers the label to bob; bob takes it. alice's resolver no longer answers for it.
    let node = khachapuri_chain::label_node("alice");
    let registry = Registry::new(net.deployment.registry, alice.provider());
    let sent = registry.transfer(node, net.address(4)).send().await?;
    alice.wait_receipt(*sent.tx_hash()).await?;
    assert_eq!(
        alice.label_owner("alice").await?,
        net.address(3),
        "still alice's"
    );
    let registry = Registry::new(net.deployment.registry, bob.provider());
    let sent = registry.acceptTransfer(node).send().await?;
    assert!(bob.wait_receipt(*sent.tx_hash()).await?.status());
    assert_eq!(bob.label_owner("alice").await?, net.address(4));
    assert!(matches!(
        bob.resolve_label("alice").await,
        Err(ChainError::UnknownLabel(_))
    ));
    // alice can still write to her resolver, to no effect on the label.
    alice
        .set_server(resolver, &Server::Url("https://evil.example".into()))
        .await?;

    let bobs = bob
        .deploy_resolver(
            net.address(4),
            &Server::Url("https://bob.example".into()),
            key,
        )
        .await?;
    bob.set_label_resolver("alice", bobs).await?;
    let record = net.chain(9).resolve_label("alice").await?;
    assert_eq!(record.resolver, bobs);
    assert_eq!(record.server, Server::Url("https://bob.example".into()));
    Ok(())
}

/// A label registered with a predicted resolver that was never deployed reads as unknown, not as an error.
#[tokio::test]
async fn a_resolver_not_yet_deployed_is_an_unknown_label() -> Result {
    let net = Devnet::start().await?;
    let carol = net.chain(5);
    let predicted = carol
        .predict_resolver(net.address(5), khachapuri_chain::B256::repeat_byte(7))
        .await?;
    carol.register_label("carol", predicted, |_| {}).await?;
    assert!(matches!(
        net.chain(9).resolve_label("carol").await,
        Err(ChainError::UnknownLabel(l)) if l == "carol"
    ));
    let deployed = carol
        .deploy_resolver_with_salt(
            khachapuri_chain::B256::repeat_byte(7),
            net.address(5),
            &Server::Tunnel,
            Bytes::from_static(&[0x30]),
        )
        .await?;
    assert_eq!(deployed, predicted);
    assert_eq!(
        net.chain(9).resolve_label("carol").await?.resolver,
        predicted
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_rpc_is_unavailable_not_a_revert() -> Result {
    let net = Devnet::start().await?;
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let options = ConnectOptions {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let down = Chain::new(
        &format!("http://127.0.0.1:{port}"),
        Some(anvil_signer(1)),
        net.deployment.clone(),
        options,
    )?;
    let read = down
        .free_balance(Address::ZERO)
        .await
        .err()
        .ok_or("read from a closed port")?;
    assert!(read.is_unavailable(), "{read:?}");
    let write = down
        .reserve(net.address(2), Usdc::from_whole(1), Usdc::from_whole(1))
        .await
        .err()
        .ok_or("wrote")?;
    assert!(write.is_unavailable(), "{write:?}");
    assert!(
        Chain::connect(
            &format!("http://127.0.0.1:{port}"),
            None,
            std::path::Path::new(".")
        )
        .await
        .is_err_and(|e| e.is_unavailable())
    );

    // A silent server (accepts, never answers) times out: unavailable too.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", silent.local_addr()?);
    let options = ConnectOptions {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let hung = Chain::new(&url, None, net.deployment.clone(), options)?;
    let timeout = hung
        .free_balance(Address::ZERO)
        .await
        .err()
        .ok_or("read from a silent server")?;
    assert!(timeout.is_unavailable(), "{timeout:?}");

    // The same call against the live node is a revert, not unavailability.
    let live = net
        .chain(1)
        .withdraw(net.address(1), Usdc::from_whole(1))
        .await
        .err()
        .ok_or("withdrew nothing")?;
    assert!(matches!(live, ChainError::Reverted { .. }));
    assert_eq!(
        live.to_string(),
        "insufficient free balance: 0.00 USDC free in the escrow, 1.00 USDC requested"
    );
    Ok(())
}
