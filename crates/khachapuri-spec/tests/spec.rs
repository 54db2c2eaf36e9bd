//! Spec JSON: parsing, version refusal, structural checks, digests.

use khachapuri_spec::{SPEC_VERSION, Spec, SpecError};

fn json(version: u32) -> String {
    format!(
        r#"{{"version":{version},"program":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","entry":"hello.wasm",
        "env":{{"B":"2","A":"1"}},"owner":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","provider":"alice",
        "maxPrice":"10000","limits":{{"memoryBytes":1048576,"timeoutMs":1000,"outputBytes":65536}},
        "terms":"be nice","chainId":31337,"escrow":"0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"}}"#
    )
}

#[test]
fn parses_and_round_trips() {
    let spec = Spec::from_json(json(SPEC_VERSION).as_bytes()).expect("parse");
    assert_eq!(spec.provider.as_deref(), Some("alice"));
    assert_eq!(spec.max_price.to::<u64>(), 10_000);
    let again = Spec::from_json(&spec.to_json()).expect("reparse");
    assert_eq!(again, spec);
}

#[test]
fn a_spend_cap_is_optional_and_checked() {
    let capped = json(1).replace(
        r#""terms""#,
        r#""spendCap":{"amount":"5000000","periodSeconds":86400},"terms""#,
    );
    let spec = Spec::from_json(capped.as_bytes()).expect("parse");
    let cap = spec.spend_cap.expect("a cap");
    assert_eq!(cap.amount.to::<u64>(), 5_000_000);
    assert_eq!(cap.window(86_400 * 3 + 7), (3, 86_400 * 4));
    assert_eq!(Spec::from_json(&spec.to_json()).expect("reparse"), spec);
    let uncapped = Spec::from_json(json(1).as_bytes()).expect("parse");
    assert!(
        !String::from_utf8_lossy(&uncapped.to_json()).contains("spendCap"),
        "no cap, no field"
    );
    for bad in [
        r#""spendCap":{"amount":"0","periodSeconds":86400},"#,
        r#""spendCap":{"amount":"5","periodSeconds":0},"#,
    ] {
        let text = json(1).replace(r#""terms""#, &format!(r#"{bad}"terms""#));
        assert!(
            matches!(
                Spec::from_json(text.as_bytes()),
                Err(SpecError::Invalid {
                    field: "spendCap",
                    ..
                })
            ),
            "{bad}"
        );
    }
    let text = json(1).replace(
        r#""terms""#,
        r#""spendCap":{"amount":5,"periodSeconds":60},"terms""#,
    );
    assert!(matches!(
        Spec::from_json(text.as_bytes()),
        Err(SpecError::Malformed(_))
    ));
}

#[test]
fn env_digest_is_order_independent_and_covers_values() {
    let a = Spec::from_json(json(1).as_bytes()).expect("parse");
    let b = Spec::from_json(
        json(1)
            .replace(r#""B":"2","A":"1""#, r#""A":"1","B":"2""#)
            .as_bytes(),
    )
    .expect("parse");
    assert_eq!(a.env_digest(), b.env_digest());
    let c = Spec::from_json(json(1).replace(r#""A":"1""#, r#""A":"x""#).as_bytes()).expect("parse");
    assert_ne!(a.env_digest(), c.env_digest());
    assert_ne!(
        a.terms_digest(),
        Spec {
            terms: "be mean".into(),
            ..a.clone()
        }
        .terms_digest()
    );
}

#[test]
fn refuses_unknown_versions_and_fields() {
    assert_eq!(
        Spec::from_json(json(2).as_bytes()),
        Err(SpecError::UnsupportedVersion(2))
    );
    let extra = json(1).replace(r#""terms""#, r#""surprise":1,"terms""#);
    assert!(matches!(
        Spec::from_json(extra.as_bytes()),
        Err(SpecError::Malformed(_))
    ));
    assert!(matches!(
        Spec::from_json(b"not json"),
        Err(SpecError::Malformed(_))
    ));
}

#[test]
fn refuses_invalid_fields() {
    for (from, to, field) in [
        (r#""provider":"alice""#, r#""provider":"Alice""#, "provider"),
        (
            r#""provider":"alice""#,
            r#""provider":"alice,bob,""#,
            "provider",
        ),
        (
            r#""provider":"alice""#,
            r#""provider":"alice,alice""#,
            "provider",
        ),
        (
            r#""provider":"alice""#,
            r#""provider":"alice, bob""#,
            "provider",
        ),
        (r#""provider":"alice""#, r#""provider":"""#, "provider"),
        (r#""maxPrice":"10000""#, r#""maxPrice":"0""#, "maxPrice"),
        (
            r#""entry":"hello.wasm""#,
            r#""entry":"../etc/passwd""#,
            "entry",
        ),
        (r#""timeoutMs":1000"#, r#""timeoutMs":0"#, "limits"),
        (r#""B":"2""#, r#""B=C":"2""#, "env"),
        (
            r#""owner":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8""#,
            r#""owner":"0x0000000000000000000000000000000000000000""#,
            "owner",
        ),
    ] {
        let bad = json(1).replace(from, to);
        assert_ne!(bad, json(1), "replacement {from} did not apply");
        match Spec::from_json(bad.as_bytes()) {
            Err(SpecError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    let price = json(1).replace(r#""maxPrice":"10000""#, r#""maxPrice":"0.01""#);
    assert!(matches!(
        Spec::from_json(price.as_bytes()),
        Err(SpecError::Malformed(_))
    ));
}

#[tokio::test]
async fn signature_covers_every_term() {
    use alloy::signers::local::PrivateKeySigner;
    let owner = PrivateKeySigner::random();
    let mut spec = Spec::from_json(json(1).as_bytes()).expect("parse");
    spec.owner = owner.address();
    assert!(!spec.verify_signature(), "an unsigned spec verified");
    spec.sign(&owner).await.expect("sign");
    assert!(spec.verify_signature());
    let reparsed = Spec::from_json(&spec.to_json()).expect("reparse");
    assert!(
        reparsed.verify_signature(),
        "the signature did not survive JSON"
    );

    type Tamper = Box<dyn Fn(&mut Spec)>;
    let tampered: Vec<Tamper> = vec![
        Box::new(|s| s.program.push('x')),
        Box::new(|s| s.entry = "other.wasm".into()),
        Box::new(|s| {
            s.env.insert("A".into(), "changed".into());
        }),
        Box::new(|s| s.provider = Some("bob".into())),
        Box::new(|s| s.provider = None),
        Box::new(|s| s.max_price += alloy::primitives::U256::from(1)),
        Box::new(|s| s.limits.timeout_ms += 1),
        Box::new(|s| s.terms.push('!')),
        Box::new(|s| s.chain_id += 1),
        Box::new(|s| s.escrow = alloy::primitives::Address::repeat_byte(9)),
        Box::new(|s| {
            s.spend_cap = Some(khachapuri_spec::SpendCap {
                amount: alloy::primitives::U256::from(1_000_000),
                period_seconds: 86_400,
            })
        }),
    ];
    for (i, tamper) in tampered.iter().enumerate() {
        let mut bad = spec.clone();
        tamper(&mut bad);
        assert!(
            !bad.verify_signature(),
            "tampering #{i} kept the signature valid"
        );
    }
    let stranger = PrivateKeySigner::random();
    assert!(
        spec.clone().sign(&stranger).await.is_err(),
        "signed with a key that is not the owner's"
    );
}

#[test]
fn a_spec_names_one_provider_or_several() {
    let one = Spec::from_json(json(1).as_bytes()).expect("one provider");
    assert_eq!(one.providers().collect::<Vec<_>>(), ["alice"]);
    assert!(one.is_for("alice") && !one.is_for("bob") && !one.is_for("ali"));
    let two = json(1).replace(r#""provider":"alice""#, r#""provider":"alice,bob""#);
    let two = Spec::from_json(two.as_bytes()).expect("two providers");
    assert_eq!(two.providers().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(two.is_for("alice") && two.is_for("bob") && !two.is_for("alice,bob"));
    let labels: Vec<String> = (0..17).map(|i| format!("p{i}")).collect();
    let many = json(1).replace(
        r#""provider":"alice""#,
        &format!(r#""provider":"{}""#, labels.join(",")),
    );
    assert!(matches!(
        Spec::from_json(many.as_bytes()),
        Err(SpecError::Invalid {
            field: "provider",
            ..
        })
    ));
    let open = json(1).replace(r#""provider":"alice""#, r#""provider":null"#);
    let open = Spec::from_json(open.as_bytes()).expect("an open spec");
    assert_eq!(open.providers().count(), 0);
    assert!(!open.is_for("alice"));
}
