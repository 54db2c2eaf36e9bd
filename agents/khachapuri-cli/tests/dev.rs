//! Drives the real `khachapuri` binary: `khachapuri dev` in a temporary directory, every example function
//! called through the gateway with the URLs from `.khachapuri/dev.json`, then the CLI's `token` and
//! `escrow balance` (and their bad inputs) against that network, and Ctrl-C (SIGINT) stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{fails, get_json, khachapuri, khachapuri_env, ok, repo, start_dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_network_serves_every_example_and_stops_on_ctrl_c() {
    let (mut dev, info) = start_dev();

    // What dev.json promises.
    assert_eq!(info["chainId"], 31337);
    assert!(
        info["rpcUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(
        info["contracts"]["escrow"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(info["provider"]["label"], "dev");
    assert_eq!(info["provider"]["price"], "0.01 USDC");
    assert!(
        info["ipfs"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let account = &info["accounts"][0];
    assert_eq!(
        account["address"].as_str().unwrap().to_lowercase(),
        "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
    );
    assert!(dev.dir.path().join("deployments/31337.json").exists());
    let functions = info["functions"].as_array().unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hello",
            "echo",
            "json-transform",
            "cpu-heavy",
            "hello-any-provider"
        ]
    );

    let gateway = info["gateway"].as_str().unwrap();
    let http = khachapuri_tls::http();
    // hello sealed to both providers (`dev` at its URL, `tun` behind the tunnel), called without naming one.
    let routed = functions[4]["url"].as_str().unwrap();
    assert_eq!(
        routed,
        format!("{gateway}/{}", functions[4]["cid"].as_str().unwrap())
    );
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let res = http.post(routed).body("anyone").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let provider = res.headers()["x-khachapuri-provider"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(res.headers()["x-khachapuri-charged"], "yes");
        assert_eq!(
            res.text().await.unwrap(),
            "Hello from Khachapuri, anyone!\n"
        );
        answered_by.insert(provider);
    }
    assert_eq!(
        answered_by.into_iter().collect::<Vec<_>>(),
        ["dev", "tun"],
        "both providers take routed calls"
    );
    // A token for any provider pays for a routed call wherever it lands.
    let any = ok(khachapuri(
        dev.dir.path(),
        &["token", "--any-provider", "--json"],
    ));
    let any: serde_json::Value = serde_json::from_str(&any).unwrap();
    assert_eq!(any["payee"], "0x0000000000000000000000000000000000000000");
    for _ in 0..4 {
        let res = http
            .post(routed)
            .header("x-khachapuri-payer-token", any["token"].as_str().unwrap())
            .body("token")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["x-khachapuri-payer"]
                .to_str()
                .unwrap()
                .to_lowercase(),
            any["payer"].as_str().unwrap().to_lowercase()
        );
    }
    // `khachapuri providers` computes what the chain says itself, and shows what the gateway saw: both
    // providers, their price, and on-chain figures that agree with the gateway's own reading.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mine: serde_json::Value =
            serde_json::from_str(&ok(khachapuri(dev.dir.path(), &["providers", "--json"])))
                .unwrap();
        let theirs = get_json(&format!("{gateway}/_providers")).await;
        let row = |v: &serde_json::Value, label: &str| {
            v["providers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["label"] == label)
                .cloned()
                .unwrap_or_else(|| panic!("{label} missing: {v}"))
        };
        let (dev_row, tun_row) = (row(&mine, "dev"), row(&mine, "tun"));
        assert_eq!(dev_row["price"], "0.01 USDC", "{mine}");
        assert_eq!(tun_row["reachable"], true, "{mine}");
        let settled = |r: &serde_json::Value| r["record"]["settledRequests"].as_u64().unwrap();
        let agree = ["dev", "tun"]
            .iter()
            .all(|l| row(&mine, l)["record"] == row(&theirs, l)["record"]);
        if agree && settled(&dev_row) + settled(&tun_row) >= 28 {
            assert!(
                dev_row["reputation"]["total"].as_f64().unwrap() > 0.0,
                "{mine}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never agreed: {mine}\n{theirs}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = ok(khachapuri(dev.dir.path(), &["providers"]));
    assert!(
        text.starts_with("LABEL") && text.contains("\ntun "),
        "{text}"
    );

    // A provider goes away: `tun` runs in its own process; stopped, the routed function goes on answering.
    let tun = info["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "tun")
        .unwrap();
    assert_eq!(tun["url"], "tunnel:");
    let pid = tun["pid"]
        .as_u64()
        .expect("tun runs in its own process")
        .to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&format!("{gateway}/_health")).await["tunnels"] != 0 {
        assert!(
            Instant::now() < deadline,
            "tun's tunnel outlived its process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..6 {
        let res = http.post(routed).body("still").send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-khachapuri-provider"], "dev");
    }

    for f in &functions[..4] {
        let url = f["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{gateway}/dev/")),
            "{url} goes through the gateway"
        );
        let name = f["name"].as_str().unwrap();
        let res = match name {
            "hello" => http.post(url).body("tester").send().await.unwrap(),
            "echo" => http
                .post(format!("{url}/a/b?x=1"))
                .body("ping")
                .send()
                .await
                .unwrap(),
            "json-transform" => http
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"name":"khachapuri"}"#)
                .send()
                .await
                .unwrap(),
            _ => http
                .post(format!("{url}?n=1000"))
                .body("data")
                .send()
                .await
                .unwrap(),
        };
        let status = res.status().as_u16();
        // `khachapuri run` answers like the deployed function: same runtime, same curl interface.
        let wasm = repo().join(format!("examples/target/wasm32-wasip1/release/{name}.wasm"));
        let wasm = wasm.to_str().unwrap();
        let local = match name {
            "hello" => khachapuri(
                dev.dir.path(),
                &[
                    "run",
                    wasm,
                    "-d",
                    "tester",
                    "--env",
                    "GREETING=Hello from Khachapuri",
                    "--json",
                ],
            ),
            "echo" => khachapuri(
                dev.dir.path(),
                &["run", wasm, "-d", "ping", "--path", "/a/b?x=1", "--json"],
            ),
            "json-transform" => khachapuri(
                dev.dir.path(),
                &[
                    "run",
                    wasm,
                    "-H",
                    "content-type: application/json",
                    "-d",
                    r#"{"name":"khachapuri"}"#,
                    "--json",
                ],
            ),
            _ => khachapuri(
                dev.dir.path(),
                &["run", wasm, "-d", "data", "--path", "/?n=1000", "--json"],
            ),
        };
        let local: serde_json::Value = serde_json::from_str(&common::ok(local)).unwrap();
        assert_eq!(
            local["status"], status,
            "{name} runs here as it does deployed"
        );
        assert_eq!(
            local["contentType"].as_str(),
            res.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            "{name}"
        );
        let local_body = local["body"].as_str().unwrap().to_owned();
        assert_eq!(
            res.headers()
                .get("x-khachapuri-price")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("0.01 USDC".into()),
            "{name}"
        );
        let body = res.text().await.unwrap();
        if name == "echo" {
            // The gateway adds forwarding headers; the request itself is the same.
            let (here, there): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(&local_body).unwrap(),
                serde_json::from_str(&body).unwrap(),
            );
            for field in ["method", "path", "query", "body"] {
                assert_eq!(here[field], there[field], "echo's {field}");
            }
        } else {
            assert_eq!(local_body, body, "{name}");
        }
        match name {
            "hello" => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body, "Hello from Khachapuri, tester!\n");
            }
            "echo" => {
                assert_eq!(status, 201, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["body"], "ping");
                assert_eq!(v["method"], "POST");
                assert_eq!(v["query"], "x=1");
            }
            "json-transform" => {
                assert_eq!(status, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["data"]["name"], "KHACHAPURI");
            }
            _ => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body.trim().len(), 64, "a sha256 hex digest: {body}");
            }
        }
    }

    // The CLI against the running network (it finds it through .khachapuri/dev.json).
    let out = khachapuri(
        dev.dir.path(),
        &["escrow", "balance", "--provider", "dev", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wallet"], "900.00 USDC");
    assert_eq!(v["provider"]["pricePerRequest"], "0.05 USDC");
    // 25 reserved, less the calls to `dev` settled so far (cents).
    let reserve: f64 = v["provider"]["reserve"]
        .as_str()
        .unwrap()
        .trim_end_matches(" USDC")
        .parse()
        .unwrap();
    assert!((24.5..=25.0).contains(&reserve), "{v}");
    assert!(v["free"].as_str().unwrap().ends_with(" USDC"));
    // Text names providers by label, their address beside it.
    let text = ok(khachapuri(dev.dir.path(), &["escrow", "balance"]));
    assert!(text.contains("`dev` (0x"), "{text}");

    let out = khachapuri(
        dev.dir.path(),
        &["token", "--provider", "dev", "--max-price", "0.02"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("kp2."), "{token}");
    let hello = functions[0]["url"].as_str().unwrap();
    let res = http
        .post(hello)
        .header("x-khachapuri-payer-token", &token)
        .body("token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-khachapuri-payer"]
            .to_str()
            .unwrap()
            .to_lowercase(),
        "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
    );

    // logs: the owner (the test account deployed the examples) sees its runs; a stranger's key is refused.
    let hello_logs = ok(khachapuri(dev.dir.path(), &["logs", hello, "--json"]));
    let hello_logs: serde_json::Value = serde_json::from_str(&hello_logs).unwrap();
    let entries = hello_logs["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["status"] == 200 && e["method"] == "POST"),
        "{hello_logs}"
    );
    let text = ok(khachapuri(dev.dir.path(), &["logs", hello]));
    assert!(text.contains("POST / → 200"), "{text}");
    let stranger = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    let err = fails(khachapuri(
        dev.dir.path(),
        &["logs", hello, "--private-key", stranger],
    ));
    assert!(
        err.contains("HTTP 403") && err.contains("only the key that signed the deployment"),
        "{err}"
    );

    // Bad inputs say what to do.
    let out = khachapuri(dev.dir.path(), &["token", "--provider", "nobody"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provider `nobody` is not registered"), "{err}");
    let out = khachapuri(
        dev.dir.path(),
        &["token", "--provider", "dev", "--max-price", "ten"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-price `ten`"));
    let out = khachapuri(
        dev.dir.path(),
        &["escrow", "balance", "--rpc-url", "http://127.0.0.1:1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the chain at http://127.0.0.1:1")
            && err.contains("khachapuri dev"),
        "{err}"
    );

    // deploy: upload, sign, encrypt to `dev`, upload; the printed URL answers through the gateway.
    let wasm = repo().join("examples/target/wasm32-wasip1/release/hello.wasm");
    let out = khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--env",
            "GREETING=Hola",
            "--price",
            "0.02",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(url.starts_with(&format!("{gateway}/dev/bafk")), "{url}");
    let res = http.post(&url).body("deployer").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "Hola, deployer!\n");
    // revoke: the owner stops its URL for good; providers refuse it within the revocation TTL.
    let revoked_url = url.clone();
    let revoked = ok(khachapuri(dev.dir.path(), &["revoke", &url]));
    assert!(
        revoked.contains("revoked bafk") && revoked.contains("(terms 0x"),
        "{revoked}"
    );
    tokio::time::sleep(khachapuri_provider::REVOCATION_TTL).await;
    let res = http.post(&url).body("again").send().await.unwrap();
    assert_eq!(res.status(), 410);
    let err = fails(khachapuri(dev.dir.path(), &["revoke", &url]));
    assert!(err.contains("already revoked"), "{err}");
    let err = fails(khachapuri(dev.dir.path(), &["revoke", "not-a-cid"]));
    assert!(
        err.contains("neither a function URL nor a terms hash"),
        "{err}"
    );
    let out = khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--env",
            "GREETING",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--env `GREETING`: write KEY=VALUE"));
    // Every provider is resolved before anything is uploaded.
    for (second, refusal) in [
        ("dev", "--provider dev is given twice"),
        ("nobody", "provider `nobody` is not registered"),
    ] {
        let wasm = wasm.to_str().unwrap();
        let err = fails(khachapuri(
            dev.dir.path(),
            &["deploy", wasm, "--provider", "dev", "--provider", second],
        ));
        assert!(err.contains(refusal), "{err}");
        assert!(!err.contains("uploading"), "{err}");
    }
    // What the provider would refuse at every call is refused at deploy, from its offer.
    let offer = get_json(&format!("{gateway}/dev/_provider")).await;
    assert_eq!(
        (offer["label"].as_str(), offer["price"].as_str()),
        (Some("dev"), Some("10000"))
    );
    let err = fails(khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--price",
            "0.001",
        ],
    ));
    assert!(
        err.contains("`dev` charges 0.01 USDC per request, more than --price 0.001 USDC")
            && err.contains("pass --price 0.01 or more"),
        "{err}"
    );
    let err = fails(khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--memory",
            "4GiB",
        ],
    ));
    assert!(
        err.contains("of memory") && err.contains("lower --memory"),
        "{err}"
    );
    assert!(!err.contains("uploading"), "nothing was uploaded: {err}");
    let out = khachapuri(
        dev.dir.path(),
        &["deploy", wasm.to_str().unwrap(), "--provider", "nobody"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("provider `nobody` is not registered"));

    // --open: a plain spec any provider may run; it refuses secrets.
    let out = khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--open",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let res = http.post(&url).body("open").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "Hello, open!\n");
    let out = khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--open",
            "--env",
            "A=b",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot carry --env secrets"));

    // --spend-cap: what a leaked URL can cost the owner per period; `deployments` lists what this
    // directory deployed, with what the provider counted.
    let capped: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dev.dir.path(),
        &[
            "--json",
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--spend-cap",
            "0.02/day",
        ],
    )))
    .unwrap();
    assert_eq!(capped["spendCap"]["amount"], "20000", "{capped}");
    // A sealed deployment's program is on IPFS only as ciphertext; --public-program keeps it readable.
    let ipfs = info["ipfs"].as_str().unwrap();
    let block = |cid: &str| {
        let (http, url) = (http.clone(), format!("{ipfs}/ipfs/{cid}?format=raw"));
        async move { http.get(url).send().await.unwrap().bytes().await.unwrap() }
    };
    assert_eq!(capped["privateProgram"], true, "{capped}");
    let stored = block(capped["program"].as_str().unwrap()).await;
    assert!(
        stored.starts_with(b"KPPE"),
        "the program on IPFS is encrypted"
    );
    let public: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dev.dir.path(),
        &[
            "--json",
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--public-program",
        ],
    )))
    .unwrap();
    assert_eq!(public["privateProgram"], false, "{public}");
    let stored = block(public["program"].as_str().unwrap()).await;
    assert!(
        stored.starts_with(b"PK\x03\x04"),
        "--public-program uploads the zip"
    );
    let res = http
        .post(public["url"].as_str().unwrap())
        .body("p")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // call --x402: one call paid from the wallet with an EIP-3009 authorization, through the gateway.
    let paid: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dev.dir.path(),
        &[
            "--json",
            "call",
            public["url"].as_str().unwrap(),
            "--x402",
            "-d",
            "w",
        ],
    )))
    .unwrap();
    assert_eq!(paid["status"], 200, "{paid}");
    assert_eq!(paid["x402"]["success"], true, "{paid}");
    assert_eq!(paid["price"], "0.01 USDC", "{paid}");
    let err = fails(khachapuri(
        dev.dir.path(),
        &[
            "call",
            public["url"].as_str().unwrap(),
            "--x402",
            "--max-price",
            "0.001",
        ],
    ));
    assert!(err.contains("above --max-price"), "{err}");
    assert_eq!(capped["spendCap"]["periodSeconds"], 86_400, "{capped}");
    let capped_url = capped["url"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let res = http.post(&capped_url).body("c").send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = http.post(&capped_url).body("c").send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // `call` pays with the owner's own token here: still the owner's money, still capped.
    let err = fails(khachapuri(
        dev.dir.path(),
        &["call", &capped_url, "-d", "c"],
    ));
    assert!(
        err.contains("spend_cap_reached") || err.contains("caps its spending at 0.02 USDC"),
        "{err}"
    );
    let err = fails(khachapuri(
        dev.dir.path(),
        &[
            "deploy",
            wasm.to_str().unwrap(),
            "--provider",
            "dev",
            "--spend-cap",
            "5/fortnight",
        ],
    ));
    assert!(err.contains("--spend-cap `5/fortnight`"), "{err}");
    let listed = ok(khachapuri(dev.dir.path(), &["deployments"]));
    assert!(listed.contains(&capped_url), "{listed}");
    assert!(
        listed.contains("at most 0.02 USDC per day")
            && listed.contains("2 calls, 0.02 USDC charged to you")
            && listed.contains("0.02 USDC of the cap's 0.02 USDC spent this period"),
        "{listed}"
    );
    assert!(
        !listed.contains(&revoked_url),
        "the revoked one is left out: {listed}"
    );
    let all: serde_json::Value = serde_json::from_str(&ok(khachapuri(
        dev.dir.path(),
        &["--json", "deployments", "--all"],
    )))
    .unwrap();
    let all = all.as_array().unwrap();
    let revoked = all
        .iter()
        .find(|d| d["url"] == revoked_url.as_str())
        .unwrap();
    assert!(revoked["revokedAt"].as_u64().is_some(), "{revoked}");
    assert!(
        all.iter().filter(|d| d["entry"] == "hello.wasm").count() >= 3,
        "the examples, the deploys above: {all:?}"
    );
    // A stranger (another key) owns none of them.
    let stranger = khachapuri_env(
        dev.dir.path(),
        &["deployments"],
        &[(
            "KHACHAPURI_PRIVATE_KEY",
            "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
        )],
    );
    assert!(stranger.status.success());
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(err.contains("has no live deployments recorded"), "{err}");

    // escrow deposit + reserve move the numbers `escrow balance` shows.
    let reserve = |out: &std::process::Output| -> f64 {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["provider"]["reserve"]
            .as_str()
            .unwrap()
            .trim_end_matches(" USDC")
            .parse()
            .unwrap()
    };
    let before = reserve(&khachapuri(
        dev.dir.path(),
        &["escrow", "balance", "--provider", "dev", "--json"],
    ));
    let out = khachapuri(dev.dir.path(), &["escrow", "deposit", "2.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = khachapuri(
        dev.dir.path(),
        &[
            "escrow",
            "reserve",
            "--provider",
            "dev",
            "--price",
            "0.08",
            "--amount",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = khachapuri(
        dev.dir.path(),
        &["escrow", "reserve", "--provider", "dev", "--price", "0.03"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("takes effect at 20"),
        "a cut is delayed"
    );
    let out = khachapuri(
        dev.dir.path(),
        &["escrow", "balance", "--provider", "dev", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["wallet"], "897.49 USDC",
        "900 minted, 2.50 deposited above, 0.01 paid by x402 from the wallet"
    );
    assert_eq!(
        v["provider"]["pricePerRequest"], "0.08 USDC",
        "the raise holds until the cut's delay passes"
    );
    assert_eq!(v["provider"]["priceCut"]["price"], "0.03 USDC");
    // 2 more reserved (less any charge of the example calls above that lands meanwhile: cents).
    let added = reserve(&out) - before;
    assert!(
        added > 1.5 && added <= 2.0 + 1e-9,
        "2 more reserved, got {added}: {v}"
    );
    let out = khachapuri(dev.dir.path(), &["escrow", "deposit", "5000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has 897.49 USDC, 5000.00 USDC needed; get USDC into this wallet first"),
        "{stderr}"
    );

    // The dev chain's clock runs without transactions (a block a second): delays come due.
    let rpc = info["rpcUrl"].as_str().unwrap();
    let block_time = || async {
        let v: serde_json::Value = http
            .post(rpc)
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", false]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        u64::from_str_radix(
            v["result"]["timestamp"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap()
    };
    let before = block_time().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        block_time().await > before,
        "the dev chain mines on a clock"
    );

    // Provider commands here sign as the dev provider's payee, never as the test account (a payer).
    let out = khachapuri(dev.dir.path(), &["provider", "earnings", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["provider"].as_str().unwrap().to_lowercase(),
        info["provider"]["payee"].as_str().unwrap().to_lowercase()
    );
    let somewhere = "0x000000000000000000000000000000000000dEaD";
    let out = khachapuri(dev.dir.path(), &["provider", "earnings", "--to", somewhere]);
    assert!(!out.status.success(), "--to alone must not pass silently");
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --withdraw <amount|all>"));
    // A token that would be born expired is refused.
    let out = khachapuri(
        dev.dir.path(),
        &["token", "--provider", "dev", "--expires-in", "0"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least a second"));

    // A second `khachapuri dev` in the same directory refuses (its state would collide).
    let out = khachapuri(dev.dir.path(), &["dev", "--root", repo().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `khachapuri dev`"));

    // Ctrl-C: a clean stop, the provider settles what it claimed, dev.json is gone.
    let status = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "khachapuri dev did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "exit status {exit}");
    let mut stdout = String::new();
    use std::io::Read as _;
    dev.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout.contains("curl -d 'Khachapuri' http://127.0.0.1:"),
        "{stdout}"
    );
    // Ten paid calls at `dev` (two of them within the spending cap), 28 routed ones at `dev` or `tun`, and
    // 6 at `dev` once `tun` stopped: all settled (tun's when it stopped, the rest on Ctrl-C).
    let earned = |label: &str| -> f64 {
        let line = format!("provider `{label}` earned ");
        let at = stdout
            .find(&line)
            .unwrap_or_else(|| panic!("{label}: {stdout}"))
            + line.len();
        stdout[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let total = earned("dev") + earned("tun");
    assert!((total - 0.44).abs() < 1e-9, "{total}: {stdout}");
    assert!(earned("dev") >= 0.10, "{stdout}");
    assert!(!dev.dir.path().join(".khachapuri/dev.json").exists());
}

/// `khachapuri dev` killed with SIGKILL (no chance to clean up) leaves nothing behind: anvil, started in a
/// process group of its own, ends with it, and so do the in-process gateway, provider and IPFS node.
#[test]
fn a_sigkilled_dev_network_leaves_no_process_behind() {
    // Its own anvil port: the other test of this file holds 8545.
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_khachapuri"))
        .args(["dev", "--anvil-port", "0", "--root"])
        .arg(repo())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut dev = common::Dev { child, dir };
    let info = common::wait_for_dev_json(&mut dev);
    let ports: Vec<(String, u16)> = ["rpcUrl", "gateway", "ipfs"]
        .iter()
        .map(|key| {
            let url = info[*key].as_str().unwrap();
            let port = url
                .rsplit(':')
                .next()
                .unwrap()
                .trim_end_matches('/')
                .parse()
                .unwrap();
            (key.to_string(), port)
        })
        .collect();
    for (what, port) in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
            "{what} is up first"
        );
    }
    let tun = info["providers"][1]["pid"].as_u64().expect("tun's process");
    let proc = std::path::PathBuf::from(format!("/proc/{tun}"));
    assert!(proc.exists(), "tun's agent is up first");
    let status = Command::new("kill")
        .args(["-KILL", &dev.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    dev.child.wait().unwrap();
    let start = Instant::now();
    for (what, port) in &ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what} (port {port}) outlived a SIGKILLed `khachapuri dev`"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The provider that ran in its own process dies with it too.
    while proc.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tun's agent outlived `khachapuri dev`"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
