//! `make bench`: per-call latency and calls/s of the hello example on each engine, warm (cached,
//! pre-instantiated) and cold (compile), loading from the disk cache, and memory per concurrent
//! instance. Prints the figures and writes them to `<workspace>/target/bench/runtime.json`.
//!
//! Needs the examples: `make examples`.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use khachapuri_runtime::{Limits, Origin, Request, Runtime, RuntimeConfig};

/// The engines compared: wasmtime (this crate's) and wasmer (khachapuri-runtime-wasmer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Wasmtime,
    Wasmer,
}
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> Vec<u8> {
    let path = root()
        .join("examples/target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run `make examples` first",
            path.display()
        )
    })
}

fn runtime(engine: EngineKind, cache_dir: Option<PathBuf>, memory_cache_entries: usize) -> Runtime {
    let config = RuntimeConfig {
        limits: Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        },
        cache_dir,
        memory_cache_entries,
        max_instances: 128,
        tiering: khachapuri_runtime::Tiering::Tiered,
        ..RuntimeConfig::default()
    };
    match engine {
        EngineKind::Wasmtime => Runtime::new(config),
        EngineKind::Wasmer => khachapuri_runtime_wasmer::runtime(&config),
    }
    .expect("runtime builds")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// p50, p99 (µs) and calls/s of `f` over `n` calls.
/// Like [`measure`], timing `f` only; `after` gets its result outside the timed part.
fn measure_then<T>(n: usize, mut f: impl FnMut(usize) -> T, mut after: impl FnMut(T)) -> Value {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let out = f(i);
        samples.push(t.elapsed());
        after(out);
    }
    samples.sort();
    json!({
        "n": n,
        "p50_us": micros(percentile(&samples, 50.0)),
        "p99_us": micros(percentile(&samples, 99.0)),
    })
}

fn measure(n: usize, mut f: impl FnMut(usize)) -> Value {
    let mut samples = Vec::with_capacity(n);
    let all = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed());
    }
    let total = all.elapsed();
    samples.sort();
    json!({
        "n": n,
        "p50_us": micros(percentile(&samples, 50.0)),
        "p99_us": micros(percentile(&samples, 99.0)),
        "calls_per_s": n as f64 / total.as_secs_f64(),
    })
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A program that holds its instance alive for `ms` (a WASI sleep) after touching 4 pages, with
/// the 17-page initial memory of a typical Rust module.
fn sleeper(ms: u64) -> Vec<u8> {
    let ns = ms * 1_000_000;
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 17)
            (func (export "_start")
                (i32.store (i32.const 65536) (i32.const 1))
                (i32.store (i32.const 131072) (i32.const 1))
                (i32.store (i32.const 196608) (i32.const 1))
                ;; subscription at 0: userdata, tag 0 (clock), id 1 (monotonic), timeout, precision, flags 0
                (i32.store8 (i32.const 8) (i32.const 0))
                (i32.store (i32.const 16) (i32.const 1))
                (i64.store (i32.const 24) (i64.const {ns}))
                (drop (call $poll (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 2048)))))"#
    ))
    .expect("valid WAT")
}

/// RSS growth per live instance, with `n` instances sleeping at once.
fn memory_per_instance(engine: EngineKind, n: usize) -> Value {
    let rt = Arc::new(runtime(engine, None, 16));
    let program = rt.load("sleeper", &sleeper(400), None).expect("loads");
    rt.run(&program, &Request::default()).expect("warm-up run");
    // Threads first, so their stacks are not counted as instance memory.
    let barrier = Arc::new(Barrier::new(n + 1));
    let go = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (rt, program, barrier, go) =
                (rt.clone(), program.clone(), barrier.clone(), go.clone());
            std::thread::spawn(move || {
                barrier.wait();
                go.wait();
                rt.run(&program, &Request::default()).expect("sleeper runs");
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(Duration::from_millis(50));
    let before = rss_bytes();
    go.wait();
    std::thread::sleep(Duration::from_millis(250));
    let during = rss_bytes();
    for t in threads {
        t.join().expect("thread");
    }
    let per = during.saturating_sub(before) as f64 / n as f64;
    json!({ "instances": n, "rss_delta_bytes": during.saturating_sub(before), "per_instance_kib": per / 1024.0,
            "method": "RSS delta of the process while N instances of a 17-page sleeper module are alive (threads spawned before the baseline)" })
}

fn bench_engine(engine: EngineKind, name: &str) -> Value {
    let hello = example("hello");
    let cold_module = example("json-transform");
    let req = Request {
        method: "POST".into(),
        body: b"bench".to_vec(),
        ..Request::default()
    };
    let (warm_n, cold_n) = match engine {
        EngineKind::Wasmtime => (5000, 20),
        EngineKind::Wasmer => (2000, 10),
    };

    let rt = runtime(engine, None, 0);
    let program = rt.load("hello", &hello, None).expect("loads");
    rt.wait_background(); // warm runs measure the optimized tier
    for _ in 0..200 {
        rt.run(&program, &req).expect("runs");
    }
    let warm = measure(warm_n, |_| {
        rt.run(&program, &req).expect("runs");
    });
    // memory_cache_entries = 0: every load compiles. A cold load is what a program's first request waits
    // for (wasmtime: the baseline tier); the optimizing tier-up then runs in the background and is waited
    // for after each timed sample, so that it does not slow the next one.
    let cold = measure_then(
        cold_n,
        |i| {
            rt.load(&format!("cold-{i}"), &cold_module, None)
                .expect("compiles")
        },
        |p| {
            assert_eq!(p.origin, Origin::Compiled);
            rt.wait_background();
        },
    );
    let tier_up = measure(cold_n, |i| {
        let _held = rt
            .load(&format!("tier-up-{i}"), &cold_module, None)
            .expect("compiles");
        rt.wait_background();
    });
    let cold_hello = measure_then(
        cold_n,
        |i| {
            rt.load(&format!("cold-hello-{i}"), &hello, None)
                .expect("compiles")
        },
        |_| {
            rt.wait_background();
        },
    );
    let mut out = json!({
        "engine": name,
        "warm_hello": warm,
        "cold_compile_json_transform": cold,
        "until_optimized_json_transform": tier_up,
        "cold_module_bytes": cold_module.len(),
        "cold_compile_hello": cold_hello,
        "hello_module_bytes": hello.len(),
        "memory_per_instance": memory_per_instance(engine, 32),
    });

    if engine == EngineKind::Wasmtime {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = runtime(engine, Some(dir.path().to_path_buf()), 0);
        writer.load("disk", &cold_module, None).expect("compiles");
        writer.wait_background(); // the optimized artifact is on disk
        let reader = runtime(engine, Some(dir.path().to_path_buf()), 0);
        out["disk_cache_load_json_transform"] = measure(200, |_| {
            let p = reader.load("disk", &cold_module, None).expect("loads");
            assert_eq!(p.origin, Origin::Disk);
        });
    }
    out
}

fn main() {
    let results = vec![
        bench_engine(EngineKind::Wasmtime, "wasmtime"),
        bench_engine(EngineKind::Wasmer, "wasmer"),
    ];

    for r in &results {
        let f = |path: &str| r.pointer(path).and_then(Value::as_f64).unwrap_or(f64::NAN);
        println!("== {}", r["engine"].as_str().unwrap_or("?"));
        println!(
            "  warm hello:      p50 {:8.1} µs  p99 {:8.1} µs  {:9.0} calls/s",
            f("/warm_hello/p50_us"),
            f("/warm_hello/p99_us"),
            f("/warm_hello/calls_per_s")
        );
        println!(
            "  cold compile:    p50 {:8.2} ms  p99 {:8.2} ms  (json-transform, {} bytes)",
            f("/cold_compile_json_transform/p50_us") / 1e3,
            f("/cold_compile_json_transform/p99_us") / 1e3,
            r["cold_module_bytes"]
        );
        println!(
            "  until optimized: p50 {:8.2} ms  p99 {:8.2} ms  (json-transform: cold load + background tier-up)",
            f("/until_optimized_json_transform/p50_us") / 1e3,
            f("/until_optimized_json_transform/p99_us") / 1e3,
        );
        println!(
            "  cold compile:    p50 {:8.2} ms  p99 {:8.2} ms  (hello, {} bytes)",
            f("/cold_compile_hello/p50_us") / 1e3,
            f("/cold_compile_hello/p99_us") / 1e3,
            r["hello_module_bytes"]
        );
        if r.get("disk_cache_load_json_transform").is_some() {
            println!(
                "  disk cache load: p50 {:8.2} ms  p99 {:8.2} ms",
                f("/disk_cache_load_json_transform/p50_us") / 1e3,
                f("/disk_cache_load_json_transform/p99_us") / 1e3
            );
        }
        println!(
            "  memory:          {:8.1} KiB RSS per live instance ({} instances)",
            f("/memory_per_instance/per_instance_kib"),
            r["memory_per_instance"]["instances"]
        );
    }
    let report = json!({
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "targets_wasmtime": { "warm_p50_us": 50, "cold_compile_100kb_ms": 50, "disk_cache_ms": 2 },
        "engines": results,
    });
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("runtime.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
        .expect("write report");
    println!("wrote {}", path.display());
}
