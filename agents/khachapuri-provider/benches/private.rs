//! `make bench`: what a private program costs (issue 18). The first call of a program the agent has never
//! seen, private against the same program public (fetch, decrypt, compile, run, in a fresh spec each time
//! so every call is cold), and the decryption throughput of the chunked format against one-shot
//! AES-256-GCM over the same bytes on the same machine. Figures go to target/bench/private.json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use khachapuri_chain::Usdc;
use khachapuri_provider::SettlementMode;
use khachapuri_provider::testing::*;
use khachapuri_spec::{ProgramKey, open_program, seal_program};

const RUNS: usize = 7;
const THROUGHPUT_BYTES: usize = 64 << 20;

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// Best of three (the least disturbed run on a shared 2-core machine).
fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..3).map(|_| f()).min().unwrap_or_default()
}

fn mib_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / time.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Decryption throughput: the chunked format against AES-GCM's own, one message of the same size.
    let data: Vec<u8> = (0..THROUGHPUT_BYTES)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let key = ProgramKey::generate();
    let sealed = seal_program(&key, &data).unwrap();
    let chunked = best(|| {
        let t = Instant::now();
        std::hint::black_box(open_program(&key, &sealed, usize::MAX).unwrap());
        t.elapsed()
    });
    let cipher = aes_gcm::Aes256Gcm::new(&[9u8; 32].into());
    let nonce = [3u8; 12].into();
    let one_shot = cipher.encrypt(&nonce, data.as_slice()).unwrap();
    let raw = best(|| {
        let t = Instant::now();
        std::hint::black_box(cipher.decrypt(&nonce, one_shot.as_slice()).unwrap());
        t.elapsed()
    });
    let (chunked_mib, raw_mib) = (
        mib_per_s(THROUGHPUT_BYTES, chunked),
        mib_per_s(THROUGHPUT_BYTES, raw),
    );

    // Opening the very program the calls below use: what a private first call adds by itself.
    let program = example("json-transform");
    let sealed_program = seal_program(&key, &program).unwrap();
    let open_ms = best(|| {
        let t = Instant::now();
        std::hint::black_box(open_program(&key, &sealed_program, usize::MAX).unwrap());
        t.elapsed()
    })
    .as_secs_f64()
        * 1e3;

    let (public_ms, private_ms, program_bytes) = runtime.block_on(cold_calls());
    let (public, private) = (median(public_ms), median(private_ms));
    println!(
        "private program decryption: {chunked_mib:.0} MiB/s; one-shot AES-256-GCM: {raw_mib:.0} MiB/s ({:.2}x)",
        chunked_mib / raw_mib
    );
    println!(
        "first call of json-transform ({program_bytes} bytes), median of {RUNS}: public {public:.2} ms, \
         private {private:.2} ms ({:+.2} ms); opening it alone takes {open_ms:.3} ms",
        private - public
    );
    let json = serde_json::json!({
        "decrypt_mib_per_s": chunked_mib,
        "aes_gcm_one_shot_mib_per_s": raw_mib,
        "decrypt_over_aes_gcm": chunked_mib / raw_mib,
        "program_bytes": program_bytes,
        "cold_first_call_public_ms": public,
        "cold_first_call_private_ms": private,
        "private_adds_ms": private - public,
        "open_program_ms": open_ms,
        "runs": RUNS,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("private.json"),
        serde_json::to_string_pretty(&json).unwrap() + "\n",
    )
    .unwrap();
}

/// First-call latencies (ms) of json-transform, public then private, each under a spec the agent never saw
/// and a module key it never compiled.
async fn cold_calls() -> (Vec<f64>, Vec<f64>, usize) {
    let net = Net::start().await;
    net.fund(OWNER, Usdc::from_whole(10), PRICE, Usdc::from_whole(10))
        .await;
    let agent = net.agent(SettlementMode::Batch).await;
    let program = example("json-transform");
    let http = khachapuri_tls::http();
    let first_call = |cid: String| {
        let http = http.clone();
        let url = format!("http://{}/{cid}", agent.addr);
        async move {
            let t = Instant::now();
            let res = http
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"name":"khachapuri"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
            t.elapsed().as_secs_f64() * 1e3
        }
    };
    let (mut public, mut private) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        // Another entry name is another module key: a cold compile of the same bytes.
        let public_spec = net
            .spec(&program, &format!("public-{i}.wasm"), &[], OWNER)
            .await;
        let key = ProgramKey::generate();
        let sealed = seal_program(&key, &program).unwrap();
        let mut private_spec = net
            .spec(&sealed, &format!("private-{i}.wasm"), &[], OWNER)
            .await;
        private_spec.program_key = Some(key);
        let (public_cid, private_cid) = (net.publish(&public_spec), net.publish(&private_spec));
        // Alternate which goes first: the one after shares the machine with the other's background
        // optimizing compile.
        if i % 2 == 0 {
            public.push(first_call(public_cid).await);
            private.push(first_call(private_cid).await);
        } else {
            private.push(first_call(private_cid).await);
            public.push(first_call(public_cid).await);
        }
    }
    agent.shutdown().await;
    (public, private, program.len())
}
