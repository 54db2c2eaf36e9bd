//! The runtime end to end: the example functions through the curl interface, the hostile-program
//! suite, program packaging, the disk cache, and the conformance suite that runs the same programs on
//! both engines (wasmer from khachapuri-runtime-wasmer) and compares their outputs.
//!
//! The examples must be built first: `make examples` (or `make test`, which does it).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use khachapuri_runtime::{
    Error, Limits, Origin, PackageLimits, Request, Response, RunLimits, Runtime, RuntimeConfig,
    Tiering,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// helpers

fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "example module {} is missing ({e}): run `make examples` first",
            path.display()
        )
    })
}

/// The two engines the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Wasmtime,
    Wasmer,
}

fn engines() -> Vec<EngineKind> {
    vec![EngineKind::Wasmtime, EngineKind::Wasmer]
}

/// A runtime on `engine` with `config`.
fn on(engine: EngineKind, config: RuntimeConfig) -> Result<Runtime, Error> {
    match engine {
        EngineKind::Wasmtime => Runtime::new(config),
        EngineKind::Wasmer => khachapuri_runtime_wasmer::runtime(&config),
    }
}

fn test_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        deadline: Duration::from_millis(500),
        output_bytes: 1 << 20,
        stderr_bytes: 4 << 10,
        package: PackageLimits {
            max_module_bytes: 4 << 20,
            max_unzipped_bytes: 8 << 20,
        },
    }
}

fn runtime(engine: EngineKind) -> Runtime {
    on(
        engine,
        RuntimeConfig {
            limits: test_limits(),
            max_instances: 8,
            ..RuntimeConfig::default()
        },
    )
    .expect("runtime builds")
}

fn request(method: &str, path: &str, query: &str, body: &[u8]) -> Request {
    Request {
        method: method.into(),
        path_info: path.into(),
        query_string: query.into(),
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Trace-Id".into(), "abc".into()),
        ],
        body: body.to_vec(),
        env: vec![("GREETING".into(), "Gamarjoba".into())],
    }
}

fn run(rt: &Runtime, id: &str, wasm: &[u8], req: &Request) -> Result<Response, Error> {
    let program = rt.load(id, wasm, None)?;
    rt.run(&program, req).map(|out| out.response)
}

fn run_wat(rt: &Runtime, id: &str, wat: &str) -> Result<Response, Error> {
    let wasm = wat::parse_str(wat).expect("valid WAT");
    run(rt, id, &wasm, &request("GET", "/", "", b""))
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

// ---------------------------------------------------------------------------------------------
// the examples through the curl interface

#[test]
fn hello_greets_with_env_and_stdin() {
    let rt = runtime(EngineKind::Wasmtime);
    let r = run(
        &rt,
        "hello",
        &example("hello"),
        &request("POST", "/", "", b"Tbilisi"),
    )
    .expect("runs");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Gamarjoba, Tbilisi!\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));

    let plain = Request {
        env: vec![],
        ..request("GET", "/", "", b"")
    };
    let r = run(&rt, "hello", &example("hello"), &plain).expect("runs");
    assert_eq!(r.body, b"Hello, world!\n");
}

#[test]
fn echo_reflects_the_request_with_cgi_headers() {
    let rt = runtime(EngineKind::Wasmtime);
    let r = run(
        &rt,
        "echo",
        &example("echo"),
        &request("POST", "/items/7", "a=1&b=2", b"{\"x\":1}"),
    )
    .expect("runs");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-echo"), Some("1"));
    let v = json(&r);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/items/7");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["content_type"], "application/json");
    assert_eq!(v["headers"]["x-trace-id"], "abc");
    assert_eq!(v["body"], "{\"x\":1}");
    assert_eq!(v["args"], serde_json::json!(["echo"]));

    let r = run(&rt, "echo", &example("echo"), &request("GET", "/", "", b"")).expect("runs");
    assert_eq!(r.status, 200);
}

#[test]
fn json_transform_uppercases_and_rejects_bad_json() {
    let rt = runtime(EngineKind::Wasmtime);
    let wasm = example("json-transform");
    let r = run(
        &rt,
        "jt",
        &wasm,
        &request(
            "POST",
            "/",
            "",
            br#"{"name":"khachapuri","tags":["cheese",1]}"#,
        ),
    )
    .expect("runs");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = json(&r);
    assert_eq!(v["transformed"], true);
    assert_eq!(v["strings"], 2);
    assert_eq!(v["data"]["name"], "KHACHAPURI");
    assert_eq!(v["data"]["tags"], serde_json::json!(["CHEESE", 1]));

    let r = run(&rt, "jt", &wasm, &request("POST", "/", "", b"{not json")).expect("runs");
    assert_eq!(r.status, 400);
    assert!(
        json(&r)["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid JSON"))
    );
}

#[test]
fn cpu_heavy_iterates_sha256() {
    let rt = runtime(EngineKind::Wasmtime);
    let r = run(
        &rt,
        "cpu",
        &example("cpu-heavy"),
        &request("POST", "/", "n=1000", b"abc"),
    )
    .expect("runs");
    let mut digest = Sha256::digest(b"abc");
    for _ in 1..1000 {
        digest = Sha256::digest(digest);
    }
    assert_eq!(String::from_utf8_lossy(&r.body).trim(), hex::encode(digest));
}

#[test]
fn stderr_goes_to_the_log_not_the_response() {
    let rt = runtime(EngineKind::Wasmtime);
    let wasm = wat::parse_str(wasi_write_module(2, "oops", false)).expect("WAT");
    let program = rt.load("stderr", &wasm, None).expect("loads");
    let out = rt
        .run(&program, &request("GET", "/", "", b""))
        .expect("runs");
    assert_eq!(out.stderr, b"oops");
    assert!(out.response.body.is_empty());
}

/// What a program wrote before it trapped (a Rust panic's message) stays with the failure, for its
/// owner's logs, on every engine. (Not a tokio test: wasmer's runtime holds a tokio runtime of its own,
/// which must not be dropped inside another's async context.)
#[test]
fn a_failed_run_keeps_its_stderr() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let wat = wasi_write_module(2, "panicked at src/main.rs: boom", false)
        .replace("(i32.const 8)))", "(i32.const 8))) unreachable");
    for kind in engines() {
        let rt = runtime(kind);
        let program = rt
            .load("panics", &wat::parse_str(&wat).expect("WAT"), None)
            .expect("loads");
        let failure = tokio
            .block_on(program.run_async(request("GET", "/", "", b""), rt.limits().run_limits()))
            .expect_err("traps");
        assert!(
            matches!(failure.error, Error::Trap(_)),
            "{kind:?}: {failure:?}"
        );
        assert_eq!(failure.stderr, b"panicked at src/main.rs: boom", "{kind:?}");
    }
}

#[test]
fn concurrent_runs_share_one_program() {
    let rt = std::sync::Arc::new(runtime(EngineKind::Wasmtime));
    let program = rt.load("hello", &example("hello"), None).expect("loads");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (rt, program) = (rt.clone(), program.clone());
            std::thread::spawn(move || {
                let body = format!("t{i}");
                let out = rt
                    .run(&program, &request("POST", "/", "", body.as_bytes()))
                    .expect("runs");
                assert_eq!(out.response.body, format!("Gamarjoba, t{i}!\n").as_bytes());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

// ---------------------------------------------------------------------------------------------
// hostile programs, on every engine

/// A module that writes `text` to `fd` once, or forever (then traps when a write fails).
fn wasi_write_module(fd: u32, text: &str, forever: bool) -> String {
    let len = text.len();
    let body = if forever {
        format!(
            "(loop (br_if 0 (i32.eqz (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8))))) unreachable"
        )
    } else {
        format!(
            "(drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))"
        )
    };
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 0) "\10\00\00\00")
            (data (i32.const 4) "\{lo:02x}\{hi:02x}\00\00")
            (data (i32.const 16) "{text}")
            (func (export "_start") {body}))"#,
        lo = len & 0xff,
        hi = (len >> 8) & 0xff,
    )
}

/// Answers `clean` when its memory is as a fresh instance has it (zeros, and its data segment), else
/// `dirty`; then writes over all of it, in the first 64 KiB, around 1 MiB, at 3 MiB and in grown pages.
const RESIDUE_WAT: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 64)
    (data (i32.const 0) "\10\00\00\00\05\00\00\00")
    (data (i32.const 16) "clean")
    (func (export "_start")
        (drop (memory.grow (i32.const 16)))
        (if (i32.or
                (i32.or (i32.or (i32.load (i32.const 40000)) (i32.load (i32.const 1048000)))
                        (i32.or (i32.load (i32.const 3000000)) (i32.load (i32.const 4500000))))
                (i32.ne (i32.load (i32.const 16)) (i32.const 0x61656c63)))
            (then (i32.store (i32.const 16) (i32.const 0x74726964)) (i32.store8 (i32.const 20) (i32.const 0x79))))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (i32.const 40000) (i32.const -1))
        (i32.store (i32.const 1048000) (i32.const -1))
        (i32.store (i32.const 3000000) (i32.const -1))
        (i32.store (i32.const 4500000) (i32.const -1))
        (i32.store (i32.const 16) (i32.const -1))))"#;

#[test]
fn a_run_never_sees_the_memory_of_an_earlier_run() {
    let wasm = wat::parse_str(RESIDUE_WAT).expect("WAT");
    for engine in engines() {
        let rt = runtime(engine);
        let program = rt.load("residue", &wasm, None).expect("loads");
        for i in 0..20 {
            let out = rt
                .run(&program, &request("GET", "/", "", b""))
                .expect("runs");
            assert_eq!(
                String::from_utf8_lossy(&out.response.body),
                "clean",
                "{engine:?}, run {i}"
            );
        }
    }
}

fn tiered_runtime(tiering: Tiering) -> Runtime {
    Runtime::new(RuntimeConfig {
        limits: test_limits(),
        max_instances: 8,
        tiering,
        ..RuntimeConfig::default()
    })
    .expect("runtime builds")
}

/// The baseline tier (Winch) holds every limit the optimized one does: a tier-up race in the other
/// tests could otherwise hide a gap.
#[test]
fn the_baseline_tier_enforces_every_limit() {
    let rt = tiered_runtime(Tiering::Baseline);
    let r = run_wat(
        &rt,
        "loop",
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
    );
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    let bomb = r#"(module (memory (export "memory") 1)
        (func (export "_start") (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"#;
    let r = run_wat(&rt, "bomb", bomb);
    assert!(matches!(r, Err(Error::MemoryLimit { .. })), "{r:?}");
    let r = run_wat(
        &rt,
        "trap",
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    );
    assert!(matches!(r, Err(Error::Trap(_))), "{r:?}");
    let r = run_wat(&rt, "flood", &wasi_write_module(1, &"x".repeat(4000), true));
    assert!(matches!(r, Err(Error::OutputLimit { .. })), "{r:?}");
    let out = run(
        &rt,
        "hello",
        &example("hello"),
        &request("POST", "/", "", b"winch"),
    )
    .expect("runs");
    assert_eq!(out.body, b"Gamarjoba, winch!\n");
    rt.wait_background();
    assert_eq!(
        rt.cached("hello", None).expect("cached").origin,
        Origin::Memory
    );
}

/// A program compiled cold answers the same on the baseline code and, after the tier-up, on the
/// optimized code; `Tiering::Optimized` compiles with Cranelift only.
#[test]
fn tier_up_keeps_the_answers() {
    for tiering in [Tiering::Tiered, Tiering::Optimized] {
        let rt = tiered_runtime(tiering);
        let program = rt
            .load("json", &example("json-transform"), None)
            .expect("loads");
        let req = request("POST", "/", "", br#"{"name":"tier"}"#);
        let before = rt.run(&program, &req).expect("runs").response;
        rt.wait_background();
        let after = rt.run(&program, &req).expect("runs").response;
        assert_eq!(before.body, after.body, "{tiering:?}");
        assert!(
            String::from_utf8_lossy(&after.body).contains("TIER"),
            "{tiering:?}"
        );
    }
}

#[test]
fn infinite_loop_times_out() {
    for engine in engines() {
        let rt = runtime(engine);
        let started = Instant::now();
        let r = run_wat(
            &rt,
            "loop",
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
        );
        assert!(matches!(r, Err(Error::Timeout(_))), "{engine:?}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{engine:?}: took {:?}",
            started.elapsed()
        );
        assert_eq!(r.expect_err("timeout").http_status(), 504);
    }
}

/// On one executor thread: a program looping until its deadline and another sleeping in
/// `poll_oneoff` never stop a hello run from finishing at once, because runs yield to the executor
/// every epoch tick and sleeps are the task's, not the thread's.
#[tokio::test(flavor = "current_thread")]
async fn async_runs_share_one_thread_and_keep_every_limit() {
    let rt = runtime(EngineKind::Wasmtime);
    let limits = rt.limits().run_limits();
    let looping = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
    )
    .expect("WAT");
    let looping = rt.load("loop", &looping, None).expect("loads");
    let sleeper = wat::parse_str(sleeper_wat(1, 0, 200_000_000, false)).expect("WAT");
    let sleeper = rt.load("sleeper", &sleeper, None).expect("loads");
    let hello = rt.load("hello", &example("hello"), None).expect("loads");

    let started = Instant::now();
    let (spin, sleep, greeting) = tokio::join!(
        looping.run_async(request("GET", "/", "", b""), limits),
        sleeper.run_async(request("GET", "/", "", b""), limits),
        async {
            tokio::task::yield_now().await; // the other two are running by now
            let out = hello
                .run_async(request("POST", "/", "", b"async"), limits)
                .await;
            (out, started.elapsed())
        },
    );
    let (out, hello_done) = greeting;
    assert_eq!(
        out.expect("hello runs").response.body,
        b"Gamarjoba, async!\n"
    );
    assert!(
        hello_done < Duration::from_millis(150),
        "hello waited {hello_done:?} behind the others"
    );
    let spin = spin.map_err(Error::from);
    assert!(matches!(spin, Err(Error::Timeout(_))), "{spin:?}");
    assert!(
        sleep.is_ok(),
        "a 200 ms sleep within the 500 ms deadline: {sleep:?}"
    );
    let all = started.elapsed();
    assert!(
        all >= Duration::from_millis(500) && all < Duration::from_secs(2),
        "{all:?}"
    );
}

/// A module that polls one clock subscription (clock `id`, `flags`, `timeout` ns) once, or
/// forever.
fn sleeper_wat(id: u32, flags: u32, timeout: u64, forever: bool) -> String {
    let poll = "(drop (call $poll (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 2048)))";
    let body = if forever {
        format!("(loop {poll} (br 0))")
    } else {
        poll.to_string()
    };
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                ;; subscription at 0: userdata 0, tag 0 (clock), then id, timeout, precision, flags
                (i32.store (i32.const 16) (i32.const {id}))
                (i64.store (i32.const 24) (i64.const {timeout}))
                (i32.store16 (i32.const 40) (i32.const {flags}))
                {body}))"#
    )
}

#[test]
fn sleeping_past_the_deadline_times_out() {
    const HOUR_NS: u64 = 3600 * 1_000_000_000;
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let cases = [
        ("monotonic, relative", sleeper_wat(1, 0, HOUR_NS, false)),
        ("realtime, relative", sleeper_wat(0, 0, HOUR_NS, false)),
        ("monotonic, absolute", sleeper_wat(1, 1, HOUR_NS, false)),
        (
            "realtime, absolute",
            sleeper_wat(0, 1, unix_ns + HOUR_NS, false),
        ),
        ("100 ms naps forever", sleeper_wat(1, 0, 100_000_000, true)),
    ];
    let deadline = test_limits().deadline;
    for engine in engines() {
        let rt = runtime(engine);
        for (what, wat) in &cases {
            let started = Instant::now();
            let r = run_wat(&rt, "sleeper", wat);
            let took = started.elapsed();
            assert!(
                matches!(r, Err(Error::Timeout(d)) if d == deadline),
                "{engine:?}, {what}: {r:?}"
            );
            assert!(
                took < deadline + Duration::from_millis(400),
                "{engine:?}, {what}: took {took:?}"
            );
        }
    }
}

/// A module that polls a 50 ms monotonic clock (userdata 7), and, with `fd_write_too`, stdout
/// for writing (userdata 8); it traps unless the poll reports exactly the expected event: the
/// clock's, or stdout's at once.
fn checked_poll_wat(fd_write_too: bool) -> String {
    let (n, userdata, kind) = if fd_write_too { (2, 8, 2) } else { (1, 7, 0) };
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (i64.store (i32.const 0) (i64.const 7))
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const 50000000))
                (i64.store (i32.const 48) (i64.const 8))
                (i32.store8 (i32.const 56) (i32.const 2))
                (i32.store (i32.const 64) (i32.const 1))
                (if (call $poll (i32.const 0) (i32.const 1024) (i32.const {n}) (i32.const 2048)) (then unreachable))
                (if (i32.ne (i32.load (i32.const 2048)) (i32.const 1)) (then unreachable))
                (if (i64.ne (i64.load (i32.const 1024)) (i64.const {userdata})) (then unreachable))
                (if (i32.load16_u (i32.const 1032)) (then unreachable))
                (if (i32.ne (i32.load8_u (i32.const 1034)) (i32.const {kind})) (then unreachable))))"#
    )
}

#[test]
fn polls_within_the_deadline_run() {
    for engine in engines() {
        let rt = runtime(engine);
        let started = Instant::now();
        let r = run_wat(&rt, "nap", &checked_poll_wat(false));
        assert!(r.is_ok(), "{engine:?}: {r:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{engine:?}: did not sleep"
        );

        // A ready descriptor ends the poll at once, with its event only.
        let started = Instant::now();
        let r = run_wat(&rt, "nap-or-write", &checked_poll_wat(true));
        assert!(r.is_ok(), "{engine:?}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "{engine:?}: slept {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let bomb = r#"(module (memory (export "memory") 1)
        (func (export "_start")
            (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable))"#;
    for engine in engines() {
        let r = run_wat(&runtime(engine), "bomb", bomb);
        assert!(
            matches!(r, Err(Error::MemoryLimit { .. })),
            "{engine:?}: {r:?}"
        );
    }
    // A module whose initial memory is already over the cap (32 MiB = 512 pages).
    let r = run_wat(
        &runtime(EngineKind::Wasmtime),
        "big",
        r#"(module (memory (export "memory") 1024) (func (export "_start")))"#,
    );
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn huge_output_hits_the_output_limit() {
    let text = "x".repeat(4000);
    let wat = wasi_write_module(1, &text, true);
    for engine in engines() {
        let r = run_wat(&runtime(engine), "flood", &wat);
        assert!(
            matches!(r, Err(Error::OutputLimit { .. })),
            "{engine:?}: {r:?}"
        );
    }
}

#[test]
fn trap_is_reported() {
    for engine in engines() {
        let r = run_wat(
            &runtime(engine),
            "trap",
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        );
        assert!(matches!(r, Err(Error::Trap(_))), "{engine:?}: {r:?}");
        assert_eq!(r.expect_err("trap").http_status(), 500);
        let r = run_wat(
            &runtime(engine),
            "recurse",
            r#"(module (memory (export "memory") 1) (func $f (export "_start") (call $f)))"#,
        );
        assert!(matches!(r, Err(Error::Trap(_))), "{engine:?}: {r:?}");
    }
}

#[test]
fn missing_start_and_bad_imports_are_refused() {
    for engine in engines() {
        let rt = runtime(engine);
        let r = run_wat(&rt, "nostart", r#"(module (func (export "main")))"#);
        assert!(matches!(r, Err(Error::MissingStart)), "{engine:?}: {r:?}");
        let r = run_wat(
            &rt,
            "badimport",
            r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#,
        );
        assert!(matches!(r, Err(Error::Link(_))), "{engine:?}: {r:?}");
        assert!(r.expect_err("link").is_client_error());
    }
}

#[test]
fn proc_exit_status_is_reported() {
    let exit = |code: i32| {
        format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call $exit (i32.const {code}))))"#
        )
    };
    for engine in engines() {
        let rt = runtime(engine);
        let r = run_wat(&rt, "exit3", &exit(3));
        assert!(matches!(r, Err(Error::Exit(3))), "{engine:?}: {r:?}");
        let r = run_wat(&rt, "exit0", &exit(0));
        assert!(
            matches!(r, Ok(ref resp) if resp.status == 200),
            "{engine:?}: {r:?}"
        );
    }
}

#[test]
fn not_wasm_is_refused() {
    let rt = runtime(EngineKind::Wasmtime);
    for bytes in [&b"#!/bin/sh\nrm -rf /"[..], b"", b"\0asm\x0d\0\x01\0"] {
        let r = run(&rt, "junk", bytes, &Request::default());
        assert!(matches!(r, Err(Error::NotWasm(_))), "{bytes:?}: {r:?}");
        assert_eq!(r.expect_err("refused").http_status(), 422);
    }
    // Right header, garbage after it.
    let r = run(&rt, "junk2", b"\0asm\x01\0\0\0garbage", &Request::default());
    assert!(matches!(r, Err(Error::Compile(_))), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// packaging

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            zip.start_file(*name, opts).expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish");
    }
    out.into_inner()
}

#[test]
fn zip_program_runs_its_entry() {
    let rt = runtime(EngineKind::Wasmtime);
    let zip = zip_of(&[
        ("README.md", b"hi"),
        ("bin/hello.wasm", &example("hello")),
        ("bin/echo.wasm", &example("echo")),
    ]);
    let program = rt
        .load("zipped", &zip, Some("bin/hello.wasm"))
        .expect("loads");
    let out = rt
        .run(&program, &request("POST", "/", "", b"zip"))
        .expect("runs");
    assert_eq!(out.response.body, b"Gamarjoba, zip!\n");

    let r = rt.load("zipped", &zip, None);
    assert!(
        matches!(r, Err(Error::BadPackage(_))),
        "two modules, no entry named: {r:?}"
    );
    let r = rt.load("zipped", &zip, Some("bin/missing.wasm"));
    assert!(matches!(r, Err(Error::BadPackage(_))), "{r:?}");
    let r = rt.load("zipped", &zip, Some("README.md"));
    assert!(matches!(r, Err(Error::NotWasm(_))), "{r:?}");
}

#[test]
fn zip_module_packages_what_extract_module_reads() {
    let limits = PackageLimits::default();
    let hello = example("hello");
    let zip = khachapuri_runtime::package::zip_module("hello.wasm", &hello, &limits).expect("zips");
    assert!(
        zip.starts_with(b"PK\x03\x04") && zip.len() < hello.len(),
        "a deflated zip"
    );
    let back = khachapuri_runtime::package::extract_module(&zip, Some("hello.wasm"), &limits)
        .expect("reads");
    assert_eq!(back, hello);
    let rt = runtime(EngineKind::Wasmtime);
    let program = rt
        .load("packaged", &zip, Some("hello.wasm"))
        .expect("loads");
    assert_eq!(
        rt.run(&program, &request("POST", "/", "", b"zip"))
            .expect("runs")
            .response
            .body,
        b"Gamarjoba, zip!\n"
    );
    let r = khachapuri_runtime::package::zip_module("x.wasm", b"not wasm", &limits);
    assert!(matches!(r, Err(Error::NotWasm(_))), "{r:?}");
}

#[test]
fn zip_bomb_is_refused() {
    let rt = runtime(EngineKind::Wasmtime);
    let zeros = vec![0u8; 64 << 20]; // 64 MiB of zeros deflate to ~64 KiB
    // Honest headers: refused from the central directory.
    let honest = zip_of(&[("main.wasm", &zeros)]);
    assert!(honest.len() < 1 << 20);
    let r = rt.load("bomb", &honest, None);
    assert!(
        matches!(
            r,
            Err(Error::UnzippedTooLarge { .. } | Error::ModuleTooLarge { .. })
        ),
        "{r:?}"
    );

    // Lying headers: claim 1 KiB; refused while decompressing.
    let mut lying = honest.clone();
    patch_sizes(&mut lying, 1024);
    let r = rt.load("bomb2", &lying, None);
    assert!(
        matches!(
            r,
            Err(Error::UnzippedTooLarge { .. } | Error::ModuleTooLarge { .. })
        ),
        "{r:?}"
    );
    assert_eq!(r.expect_err("refused").http_status(), 413);

    // Many entries adding up past the cap, none over the module cap.
    let chunk = vec![0u8; 3 << 20];
    let many = zip_of(&[
        ("main.wasm", &example("hello")),
        ("a", &chunk),
        ("b", &chunk),
        ("c", &chunk),
    ]);
    let r = rt.load("bomb3", &many, None);
    assert!(matches!(r, Err(Error::UnzippedTooLarge { .. })), "{r:?}");
}

/// Overwrite the uncompressed size in every local and central header with `size`.
fn patch_sizes(zip: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 4 <= zip.len() {
        match &zip[i..i + 4] {
            b"PK\x03\x04" => zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            b"PK\x01\x02" => zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
        i += 1;
    }
}

#[test]
fn oversized_module_is_refused() {
    let rt = runtime(EngineKind::Wasmtime);
    let mut big = b"\0asm\x01\0\0\0".to_vec();
    big.resize(5 << 20, 0);
    let r = rt.load("big", &big, None);
    assert!(matches!(r, Err(Error::ModuleTooLarge { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// caches

fn cached_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        limits: test_limits(),
        cache_dir: Some(dir.to_path_buf()),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .expect("runtime builds")
}

#[test]
fn memory_cache_serves_second_load() {
    let rt = runtime(EngineKind::Wasmtime);
    assert_eq!(
        rt.load("hello", &example("hello"), None)
            .expect("loads")
            .origin,
        Origin::Compiled
    );
    assert_eq!(
        rt.load("hello", &example("hello"), None)
            .expect("loads")
            .origin,
        Origin::Memory
    );
    assert!(rt.cached("hello", None).is_some());
    assert!(rt.cached("other", None).is_none());
}

#[test]
fn disk_cache_is_shared_and_authenticated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = example("hello");
    let req = request("POST", "/", "", b"disk");

    let first = cached_runtime(dir.path());
    assert_eq!(
        first.load("hello", &hello, None).expect("loads").origin,
        Origin::Compiled
    );
    assert_eq!(
        first
            .load("echo", &example("echo"), None)
            .expect("loads")
            .origin,
        Origin::Compiled
    );
    first.wait_background();
    drop(first);

    // A second runtime on the same directory loads from disk, and the program works.
    let second = cached_runtime(dir.path());
    let program = second.load("hello", &hello, None).expect("loads");
    assert_eq!(program.origin, Origin::Disk);
    assert_eq!(
        second.run(&program, &req).expect("runs").response.body,
        b"Gamarjoba, disk!\n"
    );
    drop(second);

    // Tamper with the artifact: it is not deserialized but recompiled, and overwritten.
    let artifacts: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    assert_eq!(artifacts.len(), 2);
    let hello_artifact = cache_file_for(dir.path(), "hello");
    let mut data = std::fs::read(&hello_artifact).expect("artifact");
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&hello_artifact, &data).expect("tamper");
    let third = cached_runtime(dir.path());
    let program = third.load("hello", &hello, None).expect("loads");
    assert_eq!(program.origin, Origin::Compiled);
    assert_eq!(
        third.run(&program, &req).expect("runs").response.body,
        b"Gamarjoba, disk!\n"
    );
    third.wait_background(); // the optimizing tier writes the artifact
    assert_ne!(
        std::fs::read(&hello_artifact).expect("artifact"),
        data,
        "artifact rewritten"
    );
    drop(third);
    assert_eq!(
        cached_runtime(dir.path())
            .load("hello", &hello, None)
            .expect("loads")
            .origin,
        Origin::Disk
    );

    // Another program's genuine artifact moved under hello's name is not accepted either.
    std::fs::copy(cache_file_for(dir.path(), "echo"), &hello_artifact).expect("swap");
    let fourth = cached_runtime(dir.path());
    let program = fourth.load("hello", &hello, None).expect("loads");
    assert_eq!(program.origin, Origin::Compiled);
    assert_eq!(
        fourth.run(&program, &req).expect("runs").response.body,
        b"Gamarjoba, disk!\n"
    );
}

fn cache_file_for(dir: &std::path::Path, key: &str) -> PathBuf {
    dir.join(format!(
        "{}.bin",
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
}

// ---------------------------------------------------------------------------------------------
// conformance: the same programs on both engines give the same outputs

#[test]
fn engines_agree_on_the_examples() {
    let wasmtime = runtime(EngineKind::Wasmtime);
    let wasmer = runtime(EngineKind::Wasmer);
    let cases: Vec<(&str, Request)> = vec![
        ("hello", request("POST", "/", "", b"both")),
        (
            "hello",
            Request {
                env: vec![],
                ..request("GET", "/", "", b"")
            },
        ),
        ("echo", request("POST", "/items/7", "a=1&b=2", b"{\"x\":1}")),
        ("echo", request("GET", "/", "", b"")),
        (
            "json-transform",
            request("POST", "/", "", br#"{"a":["b",{"c":"d"}],"n":1.5}"#),
        ),
        ("json-transform", request("POST", "/", "", b"][")),
        ("cpu-heavy", request("POST", "/", "n=5000", b"conformance")),
    ];
    for (name, req) in cases {
        let wasm = example(name);
        let a = run(&wasmtime, name, &wasm, &req).expect("wasmtime runs");
        let b = run(&wasmer, name, &wasm, &req).expect("wasmer runs");
        assert_eq!(a, b, "{name}: engines disagree on {req:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// per-run limits: lower than the caps, they hold; higher, the caps do

fn run_wat_with(rt: &Runtime, id: &str, wat: &str, limits: &RunLimits) -> Result<Response, Error> {
    let program = rt.load(id, &wat::parse_str(wat).expect("valid WAT"), None)?;
    rt.run_with(&program, &request("GET", "/", "", b""), limits)
        .map(|out| out.response)
}

const BOMB: &str = r#"(module (memory (export "memory") 1)
    (func (export "_start")
        (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))"#;
const LOOP: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;

#[test]
fn run_limits_below_the_caps_hold() {
    let caps = test_limits();
    let low = RunLimits {
        memory_bytes: 4 << 20,
        deadline: Duration::from_millis(100),
        output_bytes: 10_000,
    };
    let flood = wasi_write_module(1, &"x".repeat(4000), true);
    for engine in engines() {
        let rt = runtime(engine);
        let r = run_wat_with(&rt, "bomb", BOMB, &low);
        assert!(
            matches!(r, Err(Error::MemoryLimit { limit }) if limit == low.memory_bytes),
            "{engine:?}: {r:?}"
        );

        let started = Instant::now();
        let r = run_wat_with(&rt, "loop", LOOP, &low);
        assert!(
            matches!(r, Err(Error::Timeout(d)) if d == low.deadline),
            "{engine:?}: {r:?}"
        );
        assert!(
            started.elapsed() < caps.deadline,
            "{engine:?}: took {:?}",
            started.elapsed()
        );

        let r = run_wat_with(&rt, "flood", &flood, &low);
        assert!(
            matches!(r, Err(Error::OutputLimit { limit }) if limit == low.output_bytes),
            "{engine:?}: {r:?}"
        );

        let started = Instant::now();
        let r = run_wat_with(&rt, "sleeper", &sleeper_wat(1, 0, 300_000_000, false), &low);
        assert!(
            matches!(r, Err(Error::Timeout(d)) if d == low.deadline),
            "{engine:?}: {r:?}"
        );
        assert!(
            started.elapsed() < caps.deadline,
            "{engine:?}: took {:?}",
            started.elapsed()
        );

        // A program within the lower limits runs as usual, and the caps are back for `run`.
        let program = rt.load("hello", &example("hello"), None).expect("loads");
        let out = rt
            .run_with(&program, &request("POST", "/", "", b"low"), &low)
            .expect("runs");
        assert_eq!(out.response.body, b"Gamarjoba, low!\n");
        let r = run_wat(&rt, "bomb", BOMB);
        assert!(
            matches!(r, Err(Error::MemoryLimit { limit }) if limit == caps.memory_bytes),
            "{engine:?}: {r:?}"
        );
    }
}

#[test]
fn run_limits_above_the_caps_are_clamped() {
    let caps = test_limits();
    let high = RunLimits {
        memory_bytes: 1 << 30,
        deadline: Duration::from_secs(3600),
        output_bytes: 1 << 30,
    };
    assert_eq!(high.clamped_to(&caps), caps.run_limits());
    for engine in engines() {
        let rt = runtime(engine);
        let r = run_wat_with(&rt, "bomb", BOMB, &high);
        assert!(
            matches!(r, Err(Error::MemoryLimit { limit }) if limit == caps.memory_bytes),
            "{engine:?}: {r:?}"
        );
        let started = Instant::now();
        let r = run_wat_with(&rt, "loop", LOOP, &high);
        assert!(
            matches!(r, Err(Error::Timeout(d)) if d == caps.deadline),
            "{engine:?}: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{engine:?}: took {:?}",
            started.elapsed()
        );
    }
}
