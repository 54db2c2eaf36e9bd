//! The local loop, with no chain and no IPFS: `khachapuri new` writes a function, `khachapuri run` builds
//! it for wasm32-wasip1 and runs it through the provider's runtime; a panic shows its message and the
//! provider's answer; bad input says what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fails, khachapuri, ok};

#[test]
fn new_writes_a_function_that_run_answers_like_a_provider() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    let made = ok(khachapuri(here, &["new", "greeter"]));
    assert!(made.contains("khachapuri run greeter -d Ada"), "{made}");
    assert!(here.join("greeter/Cargo.toml").exists() && here.join("greeter/src/main.rs").exists());

    let out = khachapuri(here, &["run", "greeter", "-d", "Ada"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(ok(out), "Hello, Ada!\n");
    assert!(
        stderr.contains("POST \"\": greeting Ada"),
        "the program's stderr shows: {stderr}"
    );

    let head = ok(khachapuri(
        here,
        &[
            "run",
            "greeter",
            "-i",
            "--env",
            "GREETING=Hola",
            "-X",
            "put",
            "--path",
            "/x?y=1",
            "-d",
            "Bo",
        ],
    ));
    assert!(head.starts_with("HTTP/1.1 200 OK\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8\n"),
        "{head}"
    );
    assert!(head.ends_with("\n\nHola, Bo!\n"), "{head}");

    let json = ok(khachapuri(here, &["run", "greeter", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["status"], 200);
    assert_eq!(json["body"], "Hello, world!\n");
    assert!(json["stderr"].as_str().unwrap().contains("GET"), "{json}");

    // A panic: the caller's answer a provider would give, and the message the owner needs.
    ok(khachapuri(here, &["new", "panicky"]));
    std::fs::write(
        here.join("panicky/src/main.rs"),
        "fn main() { panic!(\"the answer is not 41\"); }\n",
    )
    .unwrap();
    let err = fails(khachapuri(here, &["run", "panicky"]));
    assert!(
        err.contains("the answer is not 41"),
        "the panic message shows: {err}"
    );
    assert!(
        err.contains("HTTP 500 Internal Server Error: program trapped"),
        "{err}"
    );

    // Bad input.
    let err = fails(khachapuri(here, &["new", "greeter"]));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(khachapuri(here, &["new", "9lives"]));
    assert!(err.contains("starts with a letter"), "{err}");
    let err = fails(khachapuri(here, &["run", "nothing-here.wasm"]));
    assert!(err.contains("cannot read nothing-here.wasm"), "{err}");
    let err = fails(khachapuri(here, &["run", "greeter", "--path", "x"]));
    assert!(err.contains("start it with /"), "{err}");
    let err = fails(khachapuri(here, &["run", "greeter", "-H", "nocolon"]));
    assert!(err.contains("write `Name: value`"), "{err}");
}
