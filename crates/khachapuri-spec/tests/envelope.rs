//! The envelope against real RSA keys: round trips, and every kind of bad input fails closed.

use khachapuri_spec::{EnvelopeError, ProviderKey, envelope, is_envelope, open, seal, seal_to};

fn keys() -> (ProviderKey, ProviderKey) {
    (
        ProviderKey::generate().expect("keygen"),
        ProviderKey::generate().expect("keygen"),
    )
}

#[test]
fn round_trip_and_header_fields() {
    let (key, _) = keys();
    let plain = br#"{"version":1,"env":{"API_KEY":"s3cret"}}"#;
    let sealed = seal(key.public_key_der(), plain).expect("seal");
    assert!(is_envelope(&sealed));
    assert!(
        !sealed.windows(6).any(|w| w == b"s3cret"),
        "plaintext leaked into the envelope"
    );
    let header = envelope::header(&sealed).expect("header");
    assert_eq!(header.recipients.len(), 1);
    assert_eq!(header.recipients[0].key_id, key.id());
    assert_eq!(sealed[4], 1, "one recipient: version 1, as before");
    assert_eq!(
        open(std::slice::from_ref(&key), &sealed).expect("open"),
        plain
    );
    // Sealing twice gives different bytes (fresh content key and nonce).
    assert_ne!(seal(key.public_key_der(), plain).expect("seal"), sealed);
}

#[test]
fn large_payload_round_trips() {
    let (key, _) = keys();
    let plain = vec![7u8; 1 << 20];
    let sealed = seal(key.public_key_der(), &plain).expect("seal");
    assert_eq!(open(&[key], &sealed).expect("open"), plain);
}

#[test]
fn rotation_opens_with_the_matching_key() {
    let (old, new) = keys();
    let sealed = seal(old.public_key_der(), b"spec").expect("seal");
    assert_eq!(open(&[new.clone(), old], &sealed).expect("open"), b"spec");
    let err = open(&[new], &sealed).expect_err("another key");
    assert!(matches!(err, EnvelopeError::AnotherKey { .. }), "{err}");
    assert!(err.to_string().contains("rotated"), "{err}");
}

#[test]
fn every_tampered_byte_fails_the_same_way() {
    let (key, _) = keys();
    let sealed = seal(key.public_key_der(), b"the spec").expect("seal");
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = open(std::slice::from_ref(&key), &bad).expect_err("tampered byte accepted");
        match i {
            0..=3 => assert!(matches!(err, EnvelopeError::NotEnvelope), "byte {i}: {err}"),
            4 => assert!(
                matches!(err, EnvelopeError::UnsupportedVersion(_)),
                "byte {i}: {err}"
            ),
            5 => assert!(
                matches!(err, EnvelopeError::UnsupportedAlgorithm(_)),
                "byte {i}: {err}"
            ),
            6..=37 => assert!(
                matches!(err, EnvelopeError::AnotherKey { .. }),
                "byte {i}: {err}"
            ),
            _ => assert!(
                matches!(err, EnvelopeError::Undecryptable),
                "byte {i}: {err}"
            ),
        }
    }
}

#[test]
fn truncations_and_garbage_fail_closed() {
    let (key, _) = keys();
    let sealed = seal(key.public_key_der(), b"the spec").expect("seal");
    for len in [5, 6, 20, 40, 41, 300, sealed.len() - 1] {
        assert!(
            open(std::slice::from_ref(&key), &sealed[..len]).is_err(),
            "truncated to {len} accepted"
        );
    }
    assert!(matches!(
        open(std::slice::from_ref(&key), b"{\"version\":1}"),
        Err(EnvelopeError::NotEnvelope)
    ));
    let mut future = sealed.clone();
    future[4] = 3;
    assert!(matches!(
        open(std::slice::from_ref(&key), &future),
        Err(EnvelopeError::UnsupportedVersion(3))
    ));
    // A version-1 envelope relabelled as version 2 reads its key id as a count: it fails closed.
    let mut relabelled = sealed.clone();
    relabelled[4] = 2;
    assert!(open(&[key], &relabelled).is_err());
}

#[test]
fn seal_refuses_a_bad_public_key() {
    assert!(matches!(
        seal(b"not a key", b"x"),
        Err(EnvelopeError::Key(_))
    ));
}

/// Three fresh keys: `alice` and `bob` are recipients, `carol` is not.
fn three() -> [ProviderKey; 3] {
    [(); 3].map(|()| ProviderKey::generate().expect("keygen"))
}

#[test]
fn every_recipient_opens_a_spec_sealed_to_several_and_no_one_else_does() {
    let [alice, bob, carol] = three();
    let plain = br#"{"env":{"API_KEY":"s3cret"}}"#;
    let sealed = seal_to(&[alice.public_key_der(), bob.public_key_der()], plain).expect("seal");
    assert_eq!(
        &sealed[..7],
        b"KPSE\x02\x01\x02",
        "version 2, two recipients"
    );
    let header = envelope::header(&sealed).expect("header");
    let ids: Vec<_> = header.recipients.iter().map(|r| *r.key_id).collect();
    assert_eq!(ids, [*alice.id(), *bob.id()]);
    assert_eq!(
        open(std::slice::from_ref(&alice), &sealed).expect("alice"),
        plain
    );
    assert_eq!(
        open(std::slice::from_ref(&bob), &sealed).expect("bob"),
        plain
    );
    let err = open(std::slice::from_ref(&carol), &sealed).expect_err("carol is no recipient");
    assert!(matches!(err, EnvelopeError::AnotherKey { .. }), "{err}");
    let hex = |id: &[u8; 32]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(
        err.to_string().contains(&hex(alice.id())) && err.to_string().contains(&hex(bob.id())),
        "{err}"
    );
}

#[test]
fn a_recipient_list_cannot_be_changed_without_the_open_failing() {
    let [alice, bob, carol] = three();
    let sealed = seal_to(
        &[
            alice.public_key_der(),
            bob.public_key_der(),
            carol.public_key_der(),
        ],
        b"spec",
    )
    .expect("seal");
    // Where the first `n` recipient entries of a version-2 envelope end (id, length, wrapped key each).
    let entry = |env: &[u8], n: usize| {
        (0..n).fold(7, |at, _| {
            at + 34 + usize::from(u16::from_be_bytes([env[at + 32], env[at + 33]]))
        })
    };
    // Every header byte is authenticated: flip each one, and the others' opens fail.
    let header_len = sealed.len() - (b"spec".len() + 16);
    for i in 4..header_len {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            open(std::slice::from_ref(&bob), &bad).is_err(),
            "header byte {i} changed, still opens"
        );
    }
    // Carol dropped (count 3 → 2, her entry cut out): a well-formed version 2 that alice and bob still
    // parse, and that no longer authenticates.
    let mut dropped = sealed[..entry(&sealed, 2)].to_vec();
    dropped[6] = 2;
    dropped.extend_from_slice(&sealed[entry(&sealed, 3)..]);
    assert_eq!(
        envelope::header(&dropped).expect("parses").recipients.len(),
        2
    );
    for key in [&alice, &bob] {
        let err = open(std::slice::from_ref(key), &dropped).expect_err("a recipient dropped");
        assert!(matches!(err, EnvelopeError::Undecryptable), "{err}");
    }
    // An entry from another envelope spliced in (dave's wrapped key for another content key): dave is
    // refused, and so is everyone else.
    let dave = ProviderKey::generate().expect("keygen");
    let other = seal_to(&[dave.public_key_der(), alice.public_key_der()], b"spec").expect("seal");
    let mut added = sealed[..entry(&sealed, 3)].to_vec();
    added[6] = 4;
    added.extend_from_slice(&other[7..entry(&other, 1)]);
    added.extend_from_slice(&sealed[entry(&sealed, 3)..]);
    for key in [&dave, &alice] {
        let err = open(std::slice::from_ref(key), &added).expect_err("a recipient spliced in");
        assert!(matches!(err, EnvelopeError::Undecryptable), "{err}");
    }
}

#[test]
fn a_version_2_envelope_cut_anywhere_fails_closed() {
    let [alice, bob, _] = three();
    let sealed =
        seal_to(&[alice.public_key_der(), bob.public_key_der()], b"the spec").expect("seal");
    for len in 0..sealed.len() {
        let err = open(std::slice::from_ref(&bob), &sealed[..len]).expect_err("cut short");
        assert!(
            matches!(
                err,
                EnvelopeError::NotEnvelope
                    | EnvelopeError::Undecryptable
                    | EnvelopeError::AnotherKey { .. }
            ),
            "cut to {len}: {err}"
        );
    }
}

#[test]
fn sealing_refuses_no_recipient_too_many_or_one_twice() {
    let [alice, bob, _] = three();
    assert!(matches!(seal_to(&[], b"x"), Err(EnvelopeError::Seal(_))));
    let twice = seal_to(
        &[
            alice.public_key_der(),
            bob.public_key_der(),
            alice.public_key_der(),
        ],
        b"x",
    );
    assert!(
        matches!(twice, Err(EnvelopeError::Seal(ref m)) if m.contains("twice")),
        "{twice:?}"
    );
    let many = vec![alice.public_key_der(); envelope::MAX_RECIPIENTS + 1];
    assert!(
        matches!(seal_to(&many, b"x"), Err(EnvelopeError::Seal(ref m)) if m.contains("1 to 16 recipients, not 17"))
    );
}
