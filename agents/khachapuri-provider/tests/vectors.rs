//! The protocol's test vectors (test/vectors/protocol.json, quoted in docs/PROTOCOL.md §12): fixed inputs,
//! and the exact bytes this implementation makes of them. A client in another language checks itself
//! against the same file. Every value is recomputed here and compared; a mismatch fails `make test`.
//!
//! `KHACHAPURI_BLESS_VECTORS=1 cargo test --test vectors` rewrites the file from this code (do that only for
//! a deliberate format change, and say so in the protocol document). The envelope vector cannot be
//! recomputed (RSA-OAEP and the AES nonce are random): it is made once, then only opened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use alloy::primitives::{Address, U256, address, b256, hex, keccak256};
use alloy::signers::{SignerSync, local::PrivateKeySigner};
use alloy::sol_types::{SolStruct, SolValue};
use khachapuri_protocol::logs::{LogsAccess, SignedLogsAccess};
use khachapuri_protocol::receipt::{
    Receipt, ReceiptGroup, ReceiptSigner, SignedReceipt, request_digest, response_digest,
};
use khachapuri_protocol::{PayerToken, SignedPayerToken, SpecTerms, eip712};
use khachapuri_spec::{Limits, ProviderKey, Spec};
use serde_json::{Value, json};

/// anvil's well-known development keys 1, 2 and 3 (never hold value anywhere but a local chain).
const PAYER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PROVIDER_KEY: &str = "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const OWNER_KEY: &str = "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const CHAIN_ID: u64 = 31337;
const ESCROW: Address = address!("0x0165878A594ca255338adfa4d48449f69242Eb8F");
const SPEC_CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
const PROGRAM_CID: &str = "bafkreidvbhs33ighmljlvr7zbv2ywwzcmp5adtf4kqvlly67cy56bdtmve";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/vectors/protocol.json")
}

fn key(hex_key: &str) -> PrivateKeySigner {
    hex_key.parse().unwrap()
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode_prefixed(bytes)
}

/// Everything that can be recomputed from the fixed inputs.
async fn compute() -> Value {
    let domain = eip712::domain(CHAIN_ID, ESCROW);
    let (payer, provider, owner) = (key(PAYER_KEY), key(PROVIDER_KEY), key(OWNER_KEY));

    // kp2: a payer's consent for one provider and spec, naming the payer.
    let token = PayerToken {
        provider: provider.address(),
        spec: SPEC_CID.into(),
        maxPrice: U256::from(20_000),
        expiry: 2_000_000_000,
        session: b256!("0x1111111111111111111111111111111111111111111111111111111111111111"),
    };
    let token_hash = token.eip712_signing_hash(&domain);
    let signed = token.clone().sign(&payer, &domain).await.unwrap();

    // kr1: the provider's receipt of one paid response, signed alone (as before groups).
    let (method, path_and_query, body) = (
        "POST",
        format!("/{SPEC_CID}/greet?lang=ka"),
        b"hi".as_slice(),
    );
    let (status, answer) = (200u16, b"Gaumarjos, hi!\n".as_slice());
    let receipt = Receipt {
        provider: provider.address(),
        payer: payer.address(),
        spec: SPEC_CID.into(),
        price: U256::from(10_000),
        sequence: 7,
        requestDigest: request_digest(method, &path_and_query, body),
        responseDigest: response_digest(status, answer),
    };
    let receipt_hash = receipt.eip712_signing_hash(&domain);
    let signed_receipt = SignedReceipt {
        signature: provider
            .sign_hash_sync(&receipt_hash)
            .unwrap()
            .as_bytes()
            .to_vec()
            .into(),
        receipt: receipt.clone(),
        proof: None,
    };

    // kr2: that receipt and the next two claims' (same call), signed together by one signature over
    // their root.
    let group = ReceiptSigner::new(&provider, domain.clone()).sign_group(
        (7..10)
            .map(|sequence| Receipt {
                sequence,
                ..receipt.clone()
            })
            .collect(),
    );
    let root = khachapuri_protocol::merkle::tree(
        &group
            .iter()
            .map(|g| g.receipt.eip712_hash_struct())
            .collect::<Vec<_>>(),
    )
    .0;
    let group_hash = ReceiptGroup { root }.eip712_signing_hash(&domain);

    // A spec signed by its owner.
    let mut spec = Spec {
        version: khachapuri_spec::SPEC_VERSION,
        program: PROGRAM_CID.into(),
        entry: "hello.wasm".into(),
        env: [("GREETING".to_owned(), "Gaumarjos".to_owned())].into(),
        owner: owner.address(),
        provider: Some("alice".into()),
        max_price: U256::from(20_000),
        limits: Limits::default(),
        terms: "".into(),
        chain_id: CHAIN_ID,
        escrow: ESCROW,
        program_key: None,
        spend_cap: Some(khachapuri_spec::SpendCap {
            amount: U256::from(2_500_000),
            period_seconds: 86_400,
        }),
        signature: Default::default(),
    };
    spec.sign(&owner).await.unwrap();
    let terms = spec.signed_terms();

    // kl1: the spec owner's grant to read its logs at the provider.
    let access = LogsAccess {
        provider: provider.address(),
        spec: SPEC_CID.into(),
        expiry: 2_000_000_000,
    };
    let access_hash = access.eip712_signing_hash(&domain);
    let grant = SignedLogsAccess::sign(
        &owner,
        &domain,
        access.provider,
        &access.spec,
        access.expiry,
    )
    .await
    .unwrap();

    json!({
        "comment": "Khachapuri protocol test vectors: docs/PROTOCOL.md §12. Keys are anvil's public development keys.",
        "domain": {
            "name": eip712::DOMAIN_NAME,
            "version": eip712::DOMAIN_VERSION,
            "chainId": CHAIN_ID,
            "verifyingContract": ESCROW.to_string(),
            "separator": h(domain.separator()),
        },
        "records": {"tunnelMarker": khachapuri_protocol::TUNNEL_MARKER},
        "typeHashes": {
            "PayerToken": h(keccak256(PayerToken::eip712_encode_type().as_bytes())),
            "SpecTerms": h(keccak256(SpecTerms::eip712_encode_type().as_bytes())),
            "Receipt": h(keccak256(Receipt::eip712_encode_type().as_bytes())),
            "ReceiptGroup": h(keccak256(ReceiptGroup::eip712_encode_type().as_bytes())),
            "LogsAccess": h(keccak256(LogsAccess::eip712_encode_type().as_bytes())),
        },
        "payerToken": {
            "signerKey": h(payer.to_bytes()),
            "payer": payer.address().to_string(),
            "provider": token.provider.to_string(),
            "spec": token.spec,
            "maxPrice": token.maxPrice.to_string(),
            "expiry": token.expiry,
            "session": h(token.session),
            "signingHash": h(token_hash),
            "signature": h(signed.signature.as_bytes()),
            "encoded": signed.encode(),
        },
        "receipt": {
            "signerKey": h(provider.to_bytes()),
            "request": {"method": method, "pathAndQuery": path_and_query, "body": "hi"},
            "requestDigest": h(signed_receipt.receipt.requestDigest),
            "requestDigestPreimage": h((method.to_owned(), path_and_query.clone(), keccak256(body)).abi_encode_params()),
            "response": {"status": status, "body": "Gaumarjos, hi!\n"},
            "responseDigest": h(signed_receipt.receipt.responseDigest),
            "provider": provider.address().to_string(),
            "payer": payer.address().to_string(),
            "spec": SPEC_CID,
            "price": "10000",
            "sequence": 7,
            "signingHash": h(receipt_hash),
            "signature": h(&signed_receipt.signature),
            "encoded": signed_receipt.encode(),
        },
        "receiptGroup": {
            "comment": "the receipt above with sequences 7, 8 and 9, signed as one group (kr2.)",
            "root": h(root),
            "signingHash": h(group_hash),
            "signature": h(&group[0].signature),
            "receipts": group.iter().map(|g| json!({
                "sequence": g.receipt.sequence,
                "leaf": h(g.receipt.eip712_hash_struct()),
                "proof": g.proof.as_deref().unwrap_or_default().iter().map(h).collect::<Vec<_>>(),
                "encoded": g.encode(),
            })).collect::<Vec<_>>(),
        },
        "spec": {
            "signerKey": h(owner.to_bytes()),
            "json": String::from_utf8(spec.to_json()).unwrap(),
            "envDigest": h(terms.envDigest),
            "termsDigest": h(terms.termsDigest),
            "signingHash": h(terms.eip712_signing_hash(&eip712::domain(CHAIN_ID, ESCROW))),
            "signature": h(&spec.signature),
        },
        "logsAccess": {
            "signerKey": h(owner.to_bytes()),
            "owner": owner.address().to_string(),
            "provider": access.provider.to_string(),
            "spec": access.spec,
            "expiry": access.expiry,
            "signingHash": h(access_hash),
            "signature": h(grant.signature.as_bytes()),
            "encoded": grant.encode(),
        },
    })
}

/// The sealed envelope: made once with a fresh key; afterwards only opened.
fn envelope(previous: Option<&Value>) -> Value {
    if let Some(v) = previous {
        return v.clone();
    }
    let key = ProviderKey::generate().unwrap();
    let plaintext = "{\"a sealed\":\"spec\"}";
    let sealed = khachapuri_spec::seal(key.public_key_der(), plaintext.as_bytes()).unwrap();
    json!({
        "privateKeyPem": key.to_pem().unwrap(),
        "publicKeyDer": h(key.public_key_der()),
        "keyId": h(key.id()),
        "plaintext": plaintext,
        "sealed": h(sealed),
    })
}

/// An envelope sealed to two recipients (version 2): made once with two fresh keys; afterwards only opened.
fn envelope_to_two(previous: Option<&Value>) -> Value {
    if let Some(v) = previous {
        return v.clone();
    }
    let keys = [
        ProviderKey::generate().unwrap(),
        ProviderKey::generate().unwrap(),
    ];
    let plaintext = "{\"a sealed\":\"spec for two\"}";
    let sealed = khachapuri_spec::seal_to(
        &[keys[0].public_key_der(), keys[1].public_key_der()],
        plaintext.as_bytes(),
    )
    .unwrap();
    json!({
        "recipients": keys.iter().map(|k| json!({
            "privateKeyPem": k.to_pem().unwrap(),
            "publicKeyDer": h(k.public_key_der()),
            "keyId": h(k.id()),
        })).collect::<Vec<_>>(),
        "plaintext": plaintext,
        "sealed": h(sealed),
    })
}

/// A private program sealed in 1 KiB chunks (three: 1024, 1024 and 452 bytes): made once (the nonce prefix is
/// random); afterwards only opened.
fn private_program(previous: Option<&Value>) -> Value {
    if let Some(v) = previous {
        return v.clone();
    }
    let key = khachapuri_spec::ProgramKey::from_bytes([7; 32]);
    let plaintext = "khachapuri ".repeat(227) + "!!!";
    let sealed = khachapuri_spec::seal_program_in_chunks(&key, plaintext.as_bytes(), 10).unwrap();
    json!({
        "key": h([7u8; 32]),
        "chunkLog2": 10,
        "plaintext": plaintext,
        "sealed": h(sealed),
    })
}

#[tokio::test]
async fn this_implementation_makes_exactly_the_protocols_vectors() {
    let file: Option<Value> = std::fs::read(path())
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    let mut computed = compute().await;
    computed["envelope"] = envelope(file.as_ref().and_then(|f| f.get("envelope")));
    computed["privateProgram"] =
        private_program(file.as_ref().and_then(|f| f.get("privateProgram")));
    computed["envelopeToTwo"] = envelope_to_two(file.as_ref().and_then(|f| f.get("envelopeToTwo")));
    if std::env::var_os("KHACHAPURI_BLESS_VECTORS").is_some() {
        std::fs::create_dir_all(path().parent().unwrap()).unwrap();
        std::fs::write(
            path(),
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
        return;
    }
    let file =
        file.expect("test/vectors/protocol.json is missing: KHACHAPURI_BLESS_VECTORS=1 makes it");
    for section in [
        "domain",
        "records",
        "typeHashes",
        "payerToken",
        "receipt",
        "receiptGroup",
        "spec",
        "logsAccess",
        "envelope",
        "privateProgram",
        "envelopeToTwo",
    ] {
        assert_eq!(
            computed[section], file[section],
            "vector `{section}` differs from test/vectors/protocol.json"
        );
    }
}

/// The other direction, as a client would: decode and verify what the file holds.
#[tokio::test]
async fn the_vectors_decode_and_verify() {
    if std::env::var_os("KHACHAPURI_BLESS_VECTORS").is_some() {
        return; // the other test is rewriting the file
    }
    let v: Value = serde_json::from_slice(&std::fs::read(path()).unwrap()).unwrap();
    let domain = eip712::domain(CHAIN_ID, ESCROW);
    let addr = |s: &Value| s.as_str().unwrap().parse::<Address>().unwrap();

    let token = SignedPayerToken::decode(v["payerToken"]["encoded"].as_str().unwrap()).unwrap();
    assert_eq!(
        token.recover(&domain).unwrap(),
        addr(&v["payerToken"]["payer"])
    );
    assert_eq!(token.token.spec, v["payerToken"]["spec"].as_str().unwrap());
    assert_eq!(
        token.payer,
        Some(addr(&v["payerToken"]["payer"])),
        "kp2 names its payer"
    );
    let raw = hex::decode(base64_url(
        v["payerToken"]["encoded"]
            .as_str()
            .unwrap()
            .strip_prefix("kp2.")
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(
        raw.len(),
        20 + 20 + 32 + 8 + 32 + 65 + SPEC_CID.len(),
        "the kp2 layout's length"
    );

    let receipt = SignedReceipt::decode(v["receipt"]["encoded"].as_str().unwrap()).unwrap();
    assert_eq!(
        receipt.signer(&domain),
        Some(addr(&v["receipt"]["provider"]))
    );
    assert_eq!(receipt.receipt.sequence, 7);
    assert_eq!(receipt.proof, None, "kr1 is signed alone");
    let group = &v["receiptGroup"];
    for (i, r) in group["receipts"].as_array().unwrap().iter().enumerate() {
        let signed = SignedReceipt::decode(r["encoded"].as_str().unwrap()).unwrap();
        assert_eq!(
            signed.signer(&domain),
            Some(addr(&v["receipt"]["provider"]))
        );
        assert_eq!(signed.receipt.sequence, 7 + i as u64);
        assert_eq!(
            h(signed.signing_hash(&domain)),
            group["signingHash"].as_str().unwrap()
        );
        let proof = signed.proof.unwrap();
        let leaf = signed.receipt.eip712_hash_struct();
        assert_eq!(h(leaf), r["leaf"].as_str().unwrap());
        assert_eq!(
            h(khachapuri_protocol::merkle::process_proof(leaf, &proof)),
            group["root"].as_str().unwrap()
        );
    }
    // The request digest's preimage is Solidity's abi.encode(method, pathAndQuery, keccak256(body)): a head
    // of three words (the two strings' offsets, 0x60 and 0xa0, then the body's hash), then the strings.
    let preimage = hex::decode(v["receipt"]["requestDigestPreimage"].as_str().unwrap()).unwrap();
    assert_eq!(
        &preimage[..32],
        U256::from(0x60).to_be_bytes::<32>().as_slice()
    );
    assert_eq!(
        h(keccak256(&preimage)),
        v["receipt"]["requestDigest"].as_str().unwrap()
    );

    let spec = Spec::from_json(v["spec"]["json"].as_str().unwrap().as_bytes()).unwrap();
    assert!(spec.verify_signature(), "the owner's signature verifies");
    assert_eq!(spec.owner, key(OWNER_KEY).address());

    let grant = SignedLogsAccess::decode(v["logsAccess"]["encoded"].as_str().unwrap()).unwrap();
    let expiry = v["logsAccess"]["expiry"].as_u64().unwrap();
    assert_eq!(grant.expiry, expiry);
    assert_eq!(
        grant.verify(
            &domain,
            addr(&v["logsAccess"]["provider"]),
            SPEC_CID,
            addr(&v["logsAccess"]["owner"]),
            expiry - 60,
        ),
        Ok(()),
        "the owner's grant verifies a minute before it expires"
    );
    let raw = hex::decode(base64_url(
        v["logsAccess"]["encoded"]
            .as_str()
            .unwrap()
            .strip_prefix("kl1.")
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(raw.len(), 8 + 65, "the kl1 layout: expiry ‖ signature");

    let e = &v["envelope"];
    let key = ProviderKey::from_pem(e["privateKeyPem"].as_str().unwrap()).unwrap();
    let sealed = hex::decode(e["sealed"].as_str().unwrap()).unwrap();
    assert_eq!(
        khachapuri_spec::open(std::slice::from_ref(&key), &sealed).unwrap(),
        e["plaintext"].as_str().unwrap().as_bytes()
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(
        khachapuri_spec::open(&[key], &tampered).is_err(),
        "a flipped bit is refused"
    );

    let two = &v["envelopeToTwo"];
    let sealed = hex::decode(two["sealed"].as_str().unwrap()).unwrap();
    assert_eq!(
        &sealed[..7],
        b"KPSE\x02\x01\x02",
        "version 2, two recipients"
    );
    let header = khachapuri_spec::envelope::header(&sealed).unwrap();
    for (i, r) in two["recipients"].as_array().unwrap().iter().enumerate() {
        let der = hex::decode(r["publicKeyDer"].as_str().unwrap()).unwrap();
        assert_eq!(
            h(khachapuri_spec::key_id(&der)),
            r["keyId"],
            "the key id is SHA-256 of the SPKI DER"
        );
        assert_eq!(
            h(header.recipients[i].key_id),
            r["keyId"],
            "listed in order"
        );
        let key = ProviderKey::from_pem(r["privateKeyPem"].as_str().unwrap()).unwrap();
        assert_eq!(key.public_key_der(), &der[..]);
        assert_eq!(
            khachapuri_spec::open(&[key], &sealed).unwrap(),
            two["plaintext"].as_str().unwrap().as_bytes(),
            "each recipient opens it"
        );
    }

    let p = &v["privateProgram"];
    let key: [u8; 32] = hex::decode(p["key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = khachapuri_spec::ProgramKey::from_bytes(key);
    let sealed = hex::decode(p["sealed"].as_str().unwrap()).unwrap();
    let plaintext = p["plaintext"].as_str().unwrap().as_bytes();
    assert_eq!(
        &sealed[..7],
        b"KPPE\x01\x01\x0a",
        "magic, version, algorithm, 2^10 chunks"
    );
    assert_eq!(
        sealed.len(),
        14 + plaintext.len() + 3 * 16,
        "three chunks, a tag each"
    );
    assert_eq!(
        khachapuri_spec::open_program(&key, &sealed, 1 << 20).unwrap(),
        plaintext
    );
    let cut = &sealed[..14 + 2 * (1024 + 16)];
    assert!(
        khachapuri_spec::open_program(&key, cut, 1 << 20).is_err(),
        "two whole chunks are not the program"
    );
}

/// base64url (no padding) to hex, without another dependency: via the receipt's own decoder would hide a
/// layout bug, so this is done by hand.
fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    hex::encode(out)
}
