//! cpu-heavy: sha256 of the body, then of that digest, `n` times in all (`n` from the query
//! string, e.g. `n=100000`; default 1, at most 100,000,000). Prints the hex digest.

use std::io::Read;

use sha2::{Digest, Sha256};

fn main() {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    let n: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 100_000_000);
    let mut body = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut body);
    let mut digest = Sha256::digest(&body);
    for _ in 1..n {
        digest = Sha256::digest(digest);
    }
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
}
