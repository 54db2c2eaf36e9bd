//! Key storage on real files: mode 0600, no overwrite, refusal of readable keys.

use std::os::unix::fs::PermissionsExt;

use khachapuri_spec::{KeyError, ProviderKey, key_id};

#[test]
fn save_load_round_trip_with_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("provider.pem");
    let key = ProviderKey::load_or_generate(&path).expect("generate");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let again = ProviderKey::load_or_generate(&path).expect("load");
    assert_eq!(again.public_key_der(), key.public_key_der());
    assert_eq!(again.id(), &key_id(key.public_key_der()));
    assert!(
        matches!(key.save(&path), Err(KeyError::Io { .. })),
        "overwrote an existing key"
    );
}

#[test]
fn readable_key_is_refused_with_a_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("provider.pem");
    ProviderKey::generate()
        .expect("gen")
        .save(&path)
        .expect("save");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = ProviderKey::load(&path).expect_err("loaded a world-readable key");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn garbage_is_not_a_key() {
    assert!(matches!(
        ProviderKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        Err(KeyError::Encoding(_))
    ));
}
