//! The envelope against real RSA keys: round trips, and every kind of bad input fails closed.

use khachapuri_spec::{EnvelopeError, ProviderKey, envelope, is_envelope, open, seal};

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
    assert_eq!(envelope::header(&sealed).expect("header").key_id, key.id());
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
    future[4] = 2;
    assert!(matches!(
        open(&[key], &future),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
}

#[test]
fn seal_refuses_a_bad_public_key() {
    assert!(matches!(
        seal(b"not a key", b"x"),
        Err(EnvelopeError::Key(_))
    ));
}
