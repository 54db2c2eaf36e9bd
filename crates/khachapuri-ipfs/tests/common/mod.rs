//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// The workspace root (where `node_modules` lives after `npm ci`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Deterministic pseudo-random bytes (xorshift64*), the same for a seed on every machine.
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `node tests/js/<script> args…` from the repo root and returns stdout; panics with
/// stderr (and a hint about `npm ci`) on failure.
pub fn node(script: &str, args: &[String]) -> String {
    let root = repo_root();
    assert!(
        root.join("node_modules/ipfs-unixfs-importer").is_dir(),
        "node_modules missing under {}: run `npm ci` (make test does)",
        root.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/js")
        .join(script);
    let out = Command::new("node")
        .arg(&script)
        .args(args)
        .current_dir(&root)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
