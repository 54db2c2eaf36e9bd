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
        .balance(Address::ZERO)
        .await
        .err()
        .ok_or("read from a closed port")?;
    assert!(read.is_unavailable(), "{read:?}");
    let write = down
        .approve(net.address(2), Usdc::from_whole(1), Usdc::from_whole(1))
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
        .balance(Address::ZERO)
        .await
        .err()
        .ok_or("read from a silent server")?;
    assert!(timeout.is_unavailable(), "{timeout:?}");

    // The same call against the live node is a revert, not unavailability.
    let live = net
        .chain(1)
        .request_withdrawal(Usdc::from_whole(1))
        .await
        .err()
        .ok_or("withdrew nothing")?;
    assert!(matches!(live, ChainError::Reverted { .. }));
    Ok(())
}
