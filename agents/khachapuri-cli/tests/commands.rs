//! The everyday commands, through the real binary, against a `khachapuri dev` network: a new provider
//! behind NAT (`provider init --tunnel`, `provider up` through the dev gateway's tunnel), a cargo project
//! deployed to it, `call` paying with a fresh token (also over HTTPS through a TLS terminator trusted via
//! `KHACHAPURI_CA_CERT`), trial credits for a user with no deposit, a deposit
//! with a permit, the withdrawal steps, earnings after a graceful stop, and the bad inputs of each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, khachapuri, khachapuri_env, ok, repo, start_dev};
use khachapuri_chain::testing::anvil_signer;

/// Anvil's account 5: the new provider's payee (dev uses 0, 1 and 2).
const PROVIDER: u32 = 5;
/// Anvil's account 6: a user with no deposit, living on trial credits.
const TRIAL_USER: u32 = 6;

fn key(index: u32) -> String {
    format!("0x{}", hex::encode(anvil_signer(index).to_bytes()))
}

/// A running `khachapuri provider up` and its stdout, stopped with SIGINT (or killed on drop).
struct Up(Child, BufReader<ChildStdout>);

impl Up {
    fn stop(mut self) -> String {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "provider up exited with {status}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "provider up did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.1, &mut rest).unwrap();
        rest
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunneled_provider_is_set_up_deployed_to_called_and_paid() {
    let (dev, info) = start_dev();
    let dir = dev.dir.path();
    let gateway = info["gateway"].as_str().unwrap().to_owned();
    let ipfs = info["ipfs"].as_str().unwrap().to_owned();
    let provider_key = key(PROVIDER);
    let as_provider = [("KHACHAPURI_PRIVATE_KEY", provider_key.as_str())];
    let tunnel = format!("{}/_tunnel", gateway.replacen("http://", "ws://", 1));

    // provider init: bad inputs first, each saying what to do.
    let err = fails(khachapuri_env(
        dir,
        &[
            "provider",
            "init",
            "--label",
            "Bad_Label",
            "--tunnel",
            &tunnel,
        ],
        &as_provider,
    ));
    assert!(
        err.contains("--label") && err.contains("lower-case"),
        "{err}"
    );
    let err = fails(khachapuri_env(
        dir,
        &["provider", "init", "--label", "alice"],
        &as_provider,
    ));
    assert!(
        err.contains("--url") && err.contains("--tunnel"),
        "one of them is required: {err}"
    );
    let garbage = dir.join("not-a-key.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = fails(khachapuri_env(
        dir,
        &[
            "provider",
            "init",
            "--label",
            "alice",
            "--tunnel",
            &tunnel,
            "--rsa-key",
            garbage.to_str().unwrap(),
        ],
        &as_provider,
    ));
    assert!(
        err.contains("wrong key file") && err.contains("not-a-key.pem"),
        "{err}"
    );
    let err = fails(khachapuri_env(
        dir,
        &["provider", "init", "--label", "dev", "--tunnel", &tunnel],
        &as_provider,
    ));
    assert!(
        err.contains("label `dev` is registered to") && err.contains("choose another --label"),
        "{err}"
    );

    // provider init: key, resolver, commit-reveal, config.
    let out = ok(khachapuri_env(
        dir,
        &[
            "provider", "init", "--label", "alice", "--tunnel", &tunnel, "--price", "0.02",
            "--json",
        ],
        &as_provider,
    ));
    let init: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(init["label"], "alice");
    assert_eq!(init["server"], "tunnel:");
    assert_eq!(
        init["payee"].as_str().unwrap().to_lowercase(),
        format!("{:#x}", anvil_signer(PROVIDER).address())
    );
    let config = std::fs::read_to_string(dir.join(".khachapuri/provider/provider.toml")).unwrap();
    assert!(
        config.contains("label = \"alice\"") && config.contains(&tunnel),
        "{config}"
    );
    let pem = dir.join(".khachapuri/provider/rsa.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Running it again changes nothing on chain and keeps the key.
    let before = std::fs::read(&pem).unwrap();
    ok(khachapuri_env(
        dir,
        &[
            "provider", "init", "--label", "alice", "--tunnel", &tunnel, "--price", "0.02",
        ],
        &as_provider,
    ));
    assert_eq!(std::fs::read(&pem).unwrap(), before);

    // provider up with another RSA key than the resolver's: refused, naming the file.
    let other = tempfile::tempdir().unwrap();
    let err = fails(khachapuri_env(
        dir,
        &[
            "provider",
            "up",
            "--data-dir",
            other.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &as_provider,
    ));
    assert!(
        err.contains("another RSA key") && err.contains("rsa.pem"),
        "{err}"
    );
    let err = fails(khachapuri_env(dir, &["provider", "up"], &[]));
    assert!(err.contains("KHACHAPURI_PRIVATE_KEY"), "{err}");

    // init wrote where to fetch from: in a dev directory, the dev network's IPFS node; the `provider up`
    // below needs no --ipfs.
    let config = std::fs::read_to_string(dir.join(".khachapuri/provider/provider.toml")).unwrap();
    assert!(config.contains(&format!("gateway={ipfs}")), "{config}");

    // provider up: the agent, reachable only through the gateway's tunnel.
    // Sizes and durations read as `deploy` reads them; the key may come as a flag.
    let mut child = Command::new(env!("CARGO_BIN_EXE_khachapuri"))
        .args(["provider", "up", "--listen", "127.0.0.1:0"])
        .args(["--max-timeout", "6s", "--max-memory", "96MiB"])
        .args(["--private-key", &provider_key])
        .current_dir(dir)
        .env_remove("KHACHAPURI_PRIVATE_KEY")
        .env_remove("KHACHAPURI_RPC_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("provider agent listening on http://127.0.0.1:"),
        "{line}"
    );
    let up = Up(child, stdout);

    // deploy a cargo project (built for wasm32-wasip1), with an env var and limits.
    let hello = repo().join("examples/hello");
    let err = fails(khachapuri(
        dir,
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--provider",
            "alice",
            "--memory",
            "lots",
        ],
    ));
    assert!(err.contains("--memory `lots`"), "{err}");
    let err = fails(khachapuri(
        dir,
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--provider",
            "alice",
            "--timeout",
            "7s",
        ],
    ));
    assert!(
        err.contains("7000 ms of time; this provider offers at most 6000 ms")
            && err.contains("lower --timeout"),
        "{err}"
    );
    let err = fails(khachapuri(
        dir,
        &["deploy", "Cargo.toml", "--provider", "alice"],
    ));
    assert!(err.contains("cannot read Cargo.toml"), "{err}");
    let out = ok(khachapuri(
        dir,
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--provider",
            "alice",
            "--env",
            "GREETING=Gaumarjos",
            "--memory",
            "32MiB",
            "--timeout",
            "2s",
            "--price",
            "0.03",
            "--json",
        ],
    ));
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(deployed["entry"], "hello.wasm");
    assert_eq!(deployed["limits"]["memoryBytes"], 32 << 20);
    assert_eq!(deployed["limits"]["timeoutMs"], 2000);
    let url = deployed["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{gateway}/alice/")), "{url}");

    // The dev test account reserves for alice, then `call` pays with a token made for this call. The
    // gateway's directory learns of alice and her tunnel within a poll or two: retry briefly.
    ok(khachapuri(
        dir,
        &[
            "escrow",
            "reserve",
            "--provider",
            "alice",
            "--price",
            "0.05",
            "--amount",
            "1",
        ],
    ));
    let start = Instant::now();
    let answer = loop {
        let out = khachapuri(dir, &["call", &url, "-d", "caller"]);
        if out.status.success() {
            break out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        String::from_utf8_lossy(&answer.stdout),
        "Gaumarjos, caller!\n"
    );
    let summary = String::from_utf8_lossy(&answer.stderr).to_lowercase();
    assert!(
        summary.contains("http 200")
            && summary.contains("0.02 usdc charged to 0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"),
        "the provider's price, paid by the token's signer: {summary}"
    );
    let out = ok(khachapuri(
        dir,
        &["call", &url, "-d", "json", "-H", "x-test: 1", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["price"], "0.02 USDC");
    assert!(v["receipt"].as_str().is_some_and(|r| !r.is_empty()));
    // x402 through the tunnel: PAYMENT-SIGNATURE in, PAYMENT-RESPONSE out.
    let out = ok(khachapuri(
        dir,
        &["call", &url, "-d", "x402", "--x402", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["x402"]["success"].as_bool()),
        (Some(200), Some(true)),
        "{v}"
    );
    // Over HTTPS, through a TLS terminator in front of the gateway: trusted only when
    // KHACHAPURI_CA_CERT names its certificate.
    let backend = gateway.trim_start_matches("http://").parse().unwrap();
    let front = khachapuri_tls::testing::TlsFront::start(backend)
        .await
        .unwrap();
    let ca = dir.join("tls-front.pem");
    std::fs::write(&ca, &front.cert_pem).unwrap();
    let https = url.replace(&gateway, &format!("https://localhost:{}", front.port));
    let out = ok(khachapuri_env(
        dir,
        &["call", &https, "-d", "tls"],
        &[("KHACHAPURI_CA_CERT", ca.to_str().unwrap())],
    ));
    assert_eq!(out, "Gaumarjos, tls!\n");
    let err = fails(khachapuri(dir, &["call", &https, "-d", "x"]));
    assert!(
        err.contains("certificate"),
        "an unknown CA is refused: {err}"
    );
    let out = khachapuri(
        dir,
        &["call", &url, "--max-price", "0.01", "-d", "x", "--json"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = fails(out);
    assert!(
        err.contains("HTTP 402") && err.contains("raise this call's --max-price"),
        "a token capped below the price, and this command's fix: {err}"
    );
    // --json answers scripts on failure too: status, headers and the error body.
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], 402);
    assert_eq!(v["headers"]["content-type"], "application/json");
    assert!(
        v["body"].as_str().unwrap().contains("price_above_token"),
        "{v}"
    );
    // -i: the status line and the headers first, like curl.
    let out = ok(khachapuri(dir, &["call", &url, "-d", "head", "-i"]));
    assert!(out.starts_with("HTTP/1.1 200 OK\n"), "{out}");
    assert!(out.contains("x-khachapuri-price: 0.02 USDC\n"), "{out}");
    assert!(out.ends_with("\n\nGaumarjos, head!\n"), "{out}");
    let err = fails(khachapuri(
        dir,
        &["call", &format!("{gateway}/alice/nothing"), "-d", "x"],
    ));
    assert!(err.contains("names no spec CID"), "{err}");
    let err = fails(khachapuri(dir, &["call", &url, "-H", "no colon"]));
    assert!(err.contains("Name: value"), "{err}");

    // Trial credits: alice grants a user with no deposit and no approval; their calls are free to them.
    let user = anvil_signer(TRIAL_USER).address().to_string();
    let err = fails(khachapuri_env(
        dir,
        &["provider", "credits", "grant", &user, "lots"],
        &as_provider,
    ));
    assert!(err.contains("amount `lots`"), "{err}");
    let out = ok(khachapuri_env(
        dir,
        &["provider", "credits", "grant", &user, "0.10", "--json"],
        &as_provider,
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credits"], "0.10 USDC");
    let user_key = key(TRIAL_USER);
    let answer = ok(khachapuri_env(
        dir,
        &["call", &url, "-d", "trial"],
        &[("KHACHAPURI_PRIVATE_KEY", &user_key)],
    ));
    assert_eq!(answer, "Gaumarjos, trial!\n");
    let out = ok(khachapuri_env(
        dir,
        &["escrow", "balance", "--provider", "alice", "--json"],
        &[("KHACHAPURI_PRIVATE_KEY", &user_key)],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["free"], "0.00 USDC", "a trial user needs no deposit");

    // A deposit with a permit: one transaction, no token approval.
    let before: serde_json::Value =
        serde_json::from_str(&ok(khachapuri(dir, &["escrow", "balance", "--json"]))).unwrap();
    let out = ok(khachapuri(
        dir,
        &["escrow", "deposit", "5", "--permit", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["permit"], true);
    let after: serde_json::Value =
        serde_json::from_str(&ok(khachapuri(dir, &["escrow", "balance", "--json"]))).unwrap();
    let usdc = |v: &serde_json::Value| -> f64 {
        v.as_str()
            .unwrap()
            .trim_end_matches(" USDC")
            .parse()
            .unwrap()
    };
    assert!((usdc(&before["wallet"]) - usdc(&after["wallet"]) - 5.0).abs() < 1e-9);

    // Reserve back: a release waits for the delay (the dev network's is 300 s), a second one replaces the
    // first and says so, a cancel says what it dropped; the free balance leaves in one step.
    let err = fails(khachapuri(dir, &["escrow", "withdraw", "1000000"]));
    assert!(err.contains("less than 1000000.00 USDC"), "{err}");
    let out = ok(khachapuri(
        dir,
        &["escrow", "release", "--provider", "alice", "0.5"],
    ));
    assert!(
        out.contains("0.50 USDC of the reserve with `alice` goes back to the free balance at 20")
            && out.contains("may still charge it"),
        "{out}"
    );
    let out = ok(khachapuri(
        dir,
        &["escrow", "release", "--provider", "alice", "0.25"],
    ));
    assert!(
        out.contains("replaces the pending release of 0.50 USDC"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dir,
        &["escrow", "balance", "--provider", "alice", "--json"],
    )))
    .unwrap();
    assert_eq!(v["provider"]["release"]["amount"], "0.25 USDC", "{v}");
    assert_eq!(v["releasing"], "0.25 USDC", "{v}");
    let out = ok(khachapuri(
        dir,
        &["escrow", "cancel", "--provider", "alice"],
    ));
    assert!(out.contains("dropped the release of 0.25 USDC"), "{out}");
    let err = fails(khachapuri(
        dir,
        &["escrow", "cancel", "--provider", "alice"],
    ));
    assert!(err.contains("nothing to cancel"), "{err}");
    let out = ok(khachapuri(dir, &["escrow", "withdraw", "1.5"]));
    assert!(out.contains("withdrew 1.50 USDC from the escrow"), "{out}");
    let later: serde_json::Value =
        serde_json::from_str(&ok(khachapuri(dir, &["escrow", "balance", "--json"]))).unwrap();
    assert!(
        (usdc(&after["free"]) - usdc(&later["free"]) - 1.5).abs() < 1e-9,
        "{later}"
    );
    assert!(
        later["providers"].as_array().is_some_and(|p| p.len() == 3),
        "dev, tun and alice: {later}"
    );
    // Without a flag the token's permit is used (it has one); --approve sends the approval instead.
    let v: serde_json::Value =
        serde_json::from_str(&ok(khachapuri(dir, &["escrow", "deposit", "1", "--json"]))).unwrap();
    assert_eq!(v["permit"], true, "permit where the token has it");
    let v: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dir,
        &["escrow", "deposit", "1", "--approve", "--json"],
    )))
    .unwrap();
    assert_eq!(v["permit"], false);
    // A deposit for an account the token's issuer froze is refused before anything is sent.
    let frozen = anvil_signer(9).address();
    let admin = khachapuri_chain::Chain::connect(
        info["rpcUrl"].as_str().unwrap(),
        Some(anvil_signer(0)),
        &dir.join("deployments"),
    )
    .await
    .unwrap();
    admin.freeze_test_account(frozen, true).await.unwrap();
    let err = fails(khachapuri(
        dir,
        &["escrow", "deposit", "1", "--to", &frozen.to_string()],
    ));
    assert!(
        err.contains(&format!("{frozen} is frozen by the token's issuer")),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dir,
        &[
            "escrow",
            "balance",
            "--address",
            &frozen.to_string(),
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(v["frozen"], true);

    // A graceful stop settles alice's claims; her earnings: 4 paid calls at 0.02 (the 402 cost nothing, the
    // trial call earns nothing), which she withdraws.
    // The failover a newcomer tries (README): one function deployed to `dev` and alice, called without
    // naming either; alice stops; the calls go on being answered.
    let out = ok(khachapuri(
        dir,
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--provider",
            "dev",
            "--provider",
            "alice",
            "--env",
            "GREETING=Both",
            "--json",
        ],
    ));
    let both: serde_json::Value = serde_json::from_str(&out).unwrap();
    let routed = both["routedUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        routed,
        format!("{gateway}/{}", both["cid"].as_str().unwrap())
    );
    let routed_call = |body: &'static str| {
        let routed = routed.clone();
        async move {
            let res = khachapuri_tls::http()
                .post(&routed)
                .body(body)
                .send()
                .await
                .unwrap();
            let provider = res.headers()["x-khachapuri-provider"]
                .to_str()
                .unwrap()
                .to_owned();
            (res.status().as_u16(), provider, res.text().await.unwrap())
        }
    };
    // The cheaper runner first: `dev` at 0.01 USDC, alice at 0.02.
    assert_eq!(
        routed_call("both").await,
        (200, "dev".to_owned(), "Both, both!\n".to_owned())
    );
    // `call` pays for a URL naming no provider with a token for any provider, for this spec only.
    assert_eq!(
        ok(khachapuri(dir, &["call", &routed, "-d", "token"])),
        "Both, token!\n"
    );

    let rest = up.stop();
    assert!(rest.contains("through the gateway tunnel"), "{rest}");
    for _ in 0..3 {
        assert_eq!(
            routed_call("after").await.0,
            200,
            "alice stopped, dev answers"
        );
    }
    let out = ok(khachapuri_env(
        dir,
        &["provider", "earnings", "--json"],
        &as_provider,
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["earnings"], "0.08 USDC", "{out}");
    let err = fails(khachapuri_env(
        dir,
        &["provider", "earnings", "--withdraw", "1"],
        &as_provider,
    ));
    assert!(err.contains("withdraw at most"), "{err}");
    let out = ok(khachapuri_env(
        dir,
        &["provider", "earnings", "--withdraw", "all"],
        &as_provider,
    ));
    assert!(out.contains("withdrew 0.08 USDC of earnings"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&ok(khachapuri_env(
        dir,
        &["escrow", "balance", "--provider", "alice", "--json"],
        &[("KHACHAPURI_PRIVATE_KEY", &user_key)],
    )))
    .unwrap();
    assert_eq!(
        v["provider"]["credits"], "0.08 USDC",
        "the trial call spent 0.02 of credits"
    );

    // A keystore that is not one.
    let err = fails(khachapuri_env(
        dir,
        &["escrow", "balance", "--keystore", garbage.to_str().unwrap()],
        &[("KHACHAPURI_KEYSTORE_PASSWORD", "x")],
    ));
    assert!(err.contains("right key file"), "{err}");
    drop(dev);
}
