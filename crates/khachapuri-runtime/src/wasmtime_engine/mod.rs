//! The default engine: wasmtime with the pooling allocator, a pre-instantiated linker, epoch
//! interruption for the deadline, a resource limiter for memory and bounded stdio pipes.
//!
//! Two tiers: a program compiled cold is first compiled by Winch, wasmtime's baseline compiler (about
//! four times faster to compile than Cranelift, slower code), so that its first request does not wait
//! for the optimizing compiler. A background thread then compiles it with Cranelift, writes that
//! artifact to the disk cache, and swaps it in; runs already going finish on the baseline code. A
//! module Winch cannot compile (a proposal it lacks) is compiled by Cranelift at once.
//!
//! Runs are futures (wasmtime's async support: the program runs on a fiber of its own): an async
//! caller runs them on its own task, with no hand-off to a blocking thread, and every epoch tick
//! (2 ms) the program yields to the executor, so a long run never holds a worker for longer than a
//! tick. The synchronous [`Loaded::run_with`] drives the same future to completion on the caller's
//! thread.
//!
//! Epoch interruption stops wasm code only, not a host call: wasmtime-wasi's `poll_oneoff`
//! sleeps in the host, so it is replaced by [`poll_oneoff`], which ends the run as a timeout
//! at once when a poll on clocks alone would wake up after the deadline.

use std::hash::Hasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolConcurrencyLimitError, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, WasiCtxBuilder};

use crate::cache::DiskCache;
use crate::cgi::{self, Request, RunOutput, Stats};
use crate::error::{Error, Result};
use crate::{Engine, Limits, Loaded, Origin, RunFailure, RunLimits, Tiering};

mod pipe;
mod poll;
mod tier_up;

use pipe::BoundedPipe;
use poll::{RunClock, SleepPastDeadline, poll_oneoff};
use tier_up::{Job, Ticker, TierUp};

/// How often the ticker thread advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Dirty bytes of each pooled memory slot kept resident between runs and reset with memset instead of
/// madvise. With `PAGEMAP_SCAN` (Linux 6.7+) wasmtime finds the pages a run dirtied anywhere in the
/// slot (a Rust program's stack sits at the top of its first MiB), resets up to this many bytes of them
/// and decommits the rest: at most 64 MiB resident for the 64-slot default pool.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// Bytes reset with memset between runs when the kernel cannot report dirty pages.
const KEEP_RESIDENT_FALLBACK: usize = 64 << 10;
/// Most table elements a program may grow a table to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// The WASI preview 1 import module.
const WASI: &str = "wasi_snapshot_preview1";

/// wasmtime behind the [`Engine`] trait.
pub struct WasmtimeEngine {
    /// Cranelift: every program in the end, and the disk cache's artifacts.
    optimized: Arc<Tier>,
    /// Winch: a cold program's first runs, until the optimized code is ready (absent with
    /// [`Tiering::Optimized`]).
    baseline: Option<Tier>,
    tiering: Tiering,
    limits: Limits,
    disk: Option<Arc<DiskCache>>,
    tier_up: TierUp,
    _ticker: Ticker,
}

/// One compiler's engine (with its own instance pool) and linker.
struct Tier {
    engine: wasmtime::Engine,
    linker: Linker<Host>,
}

impl Tier {
    fn new(strategy: wasmtime::Strategy, limits: &Limits, max_instances: u32) -> Result<Self> {
        let engine_err = |e: wasmtime::Error| Error::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(max_instances)
            .total_stacks(max_instances)
            .total_memories(max_instances)
            .total_tables(max_instances)
            .total_component_instances(0)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(limits.memory_bytes)
            .table_keep_resident(KEEP_RESIDENT_FALLBACK / 16);
        // Reset a slot's pages with memset rather than madvise: madvise on every run costs a TLB
        // shootdown across cores and page faults on the next run (the top of the agent's profile).
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
        } else {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_FALLBACK);
        }
        let mut config = Config::new();
        config
            .strategy(strategy)
            .epoch_interruption(true)
            // Copy data segments in at instantiation instead of mapping them copy-on-write: a CoW
            // fault on a page the program writes flushes the TLB of every core running the agent,
            // and a few KiB of memcpy is cheaper than that on every run.
            .memory_init_cow(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if strategy == wasmtime::Strategy::Cranelift {
            config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        }
        let engine = wasmtime::Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(engine_err)?;
        linker
            .allow_shadowing(true)
            .func_wrap_async(
                WASI,
                "poll_oneoff",
                |caller, (subs, events, n, nevents): (i32, i32, i32, i32)| {
                    Box::new(poll_oneoff(caller, subs, events, n, nevents))
                },
            )
            .map_err(engine_err)?;
        linker.allow_shadowing(false);
        Ok(Self { engine, linker })
    }

    /// Pre-links `module`, which must export a `_start` taking and returning nothing.
    fn instantiate_pre(&self, module: &Module) -> Result<InstancePre<Host>> {
        let start = module.get_export("_start").and_then(|e| e.func().cloned());
        match start {
            Some(ty) if ty.params().len() == 0 && ty.results().len() == 0 => {}
            _ => return Err(Error::MissingStart),
        }
        self.linker
            .instantiate_pre(module)
            .map_err(|e| Error::Link(format!("{e:#}")))
    }

    /// Compiles `wasm` with Cranelift and stores the artifact in `disk`.
    fn compile_optimized(&self, id: &str, wasm: &[u8], disk: Option<&DiskCache>) -> Result<Module> {
        let module =
            Module::new(&self.engine, wasm).map_err(|e| Error::Compile(format!("{e:#}")))?;
        if let Some(disk) = disk {
            match module.serialize() {
                Ok(artifact) => {
                    if let Err(e) = disk.put(id, &artifact) {
                        tracing::warn!(id, error = %e, "cannot write the compiled artifact");
                    }
                }
                Err(e) => tracing::warn!(id, error = %e, "cannot serialize the compiled module"),
            }
        }
        Ok(module)
    }
}

impl WasmtimeEngine {
    /// An engine enforcing `limits`, with at most `max_instances` concurrent runs per tier, caching
    /// compiled artifacts in `cache_dir` when given.
    pub fn new(
        limits: Limits,
        max_instances: u32,
        cache_dir: Option<&std::path::Path>,
        tiering: Tiering,
    ) -> Result<Self> {
        let optimized = Arc::new(Tier::new(
            wasmtime::Strategy::Cranelift,
            &limits,
            max_instances,
        )?);
        let baseline = match tiering {
            Tiering::Optimized => None,
            Tiering::Tiered | Tiering::Baseline => Some(Tier::new(
                wasmtime::Strategy::Winch,
                &limits,
                max_instances,
            )?),
        };
        let disk = match cache_dir {
            Some(dir) => Some(Arc::new(DiskCache::open(
                dir,
                fingerprint(&optimized.engine),
            )?)),
            None => None,
        };

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engines: Vec<wasmtime::Engine> = std::iter::once(&*optimized)
                .chain(&baseline)
                .map(|t| t.engine.clone())
                .collect();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasmtime-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engines.iter().for_each(wasmtime::Engine::increment_epoch);
                    }
                })?
        };
        let tier_up = TierUp::spawn(optimized.clone(), disk.clone())?;
        Ok(Self {
            optimized,
            baseline,
            tiering,
            limits,
            disk,
            tier_up,
            _ticker: Ticker {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// The optimized module from the disk cache, when a verified artifact is there.
    fn disk_module(&self, id: &str) -> Option<Module> {
        let artifact = self.disk.as_ref()?.get(id)?;
        match deserialize(&self.optimized.engine, &artifact) {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(id, error = %e, "verified artifact failed to load; recompiling");
                None
            }
        }
    }

    fn program(&self, pre: InstancePre<Host>, id: &str) -> Arc<WasmtimeProgram> {
        let name = id.rsplit(['/', '#']).next().unwrap_or(id).to_string();
        Arc::new(WasmtimeProgram {
            pre: std::sync::RwLock::new(pre),
            limits: self.limits,
            name,
        })
    }
}

/// Load a module artifact that this runtime itself serialized.
#[allow(unsafe_code)]
fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `artifact` comes only from `DiskCache::get`, which returns bytes only after they decrypted
    // and authenticated (AES-256-GCM under this cache's private key, bound to this engine's fingerprint and
    // the artifact's key): they are exactly what `Module::serialize` produced for this configuration.
    unsafe { Module::deserialize(engine, artifact) }
}

/// A digest of everything that makes an artifact loadable by `engine`.
fn fingerprint(engine: &wasmtime::Engine) -> [u8; 32] {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    h.write(b"wasmtime\0");
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().into()
}

impl Engine for WasmtimeEngine {
    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn load(&self, id: &str, wasm: &[u8]) -> Result<(Arc<dyn Loaded>, Origin)> {
        if let Some(module) = self.disk_module(id) {
            let pre = self.optimized.instantiate_pre(&module)?;
            return Ok((self.program(pre, id), Origin::Disk));
        }
        let baseline = match &self.baseline {
            Some(tier) => Module::new(&tier.engine, wasm).map(|module| (tier, module)),
            None => Err(wasmtime::format_err!("no baseline tier")),
        };
        match baseline {
            Ok((tier, module)) => {
                let program = self.program(tier.instantiate_pre(&module)?, id);
                if self.tiering == Tiering::Tiered {
                    self.tier_up.queue(Job {
                        id: id.to_owned(),
                        wasm: wasm.to_vec(),
                        program: Arc::downgrade(&program),
                    });
                }
                Ok((program, Origin::Compiled))
            }
            Err(e) => {
                tracing::debug!(id, error = %e, "the baseline compiler refused the module; optimizing now");
                let module = self
                    .optimized
                    .compile_optimized(id, wasm, self.disk.as_deref())?;
                Ok((
                    self.program(self.optimized.instantiate_pre(&module)?, id),
                    Origin::Compiled,
                ))
            }
        }
    }

    /// Blocks until every queued optimizing compile has finished.
    fn wait_background(&self) {
        self.tier_up.wait();
    }
}

/// A compiled, pre-linked program, ready to instantiate per call: baseline code first, optimized code
/// once the tier-up thread swaps it in.
struct WasmtimeProgram {
    pre: std::sync::RwLock<InstancePre<Host>>,
    limits: Limits,
    name: String,
}

/// Per-run store data.
struct Host {
    wasi: WasiP1Ctx,
    limiter: Limiter,
    /// When the run began: the origin of the program's monotonic clock too.
    started: Instant,
    deadline: Duration,
}

/// Caps memory and table growth, and remembers whether the cap was hit.
struct Limiter {
    max_memory: usize,
    peak: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.max_memory
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "table limit of {MAX_TABLE_ELEMENTS} elements reached"
            ));
        }
        Ok(true)
    }
}

impl Loaded for WasmtimeProgram {
    fn run(&self, req: &Request) -> Result<RunOutput, RunFailure> {
        self.run_with(req, &self.limits.run_limits())
    }

    fn run_with(&self, req: &Request, limits: &RunLimits) -> Result<RunOutput, RunFailure> {
        futures::executor::block_on(self.run_future(req, limits))
    }

    fn run_async(self: Arc<Self>, req: Request, limits: RunLimits) -> crate::RunFuture {
        Box::pin(async move { self.run_future(&req, &limits).await })
    }
}

impl WasmtimeProgram {
    async fn run_future(&self, req: &Request, limits: &RunLimits) -> Result<RunOutput, RunFailure> {
        let limits = &limits.clamped_to(&self.limits);
        let env = cgi::environment(req)?;
        let started = Instant::now();
        let stdout = BoundedPipe::new(limits.output_bytes, true);
        let stderr = BoundedPipe::new(self.limits.stderr_bytes, false);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(Bytes::copy_from_slice(&req.body)))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .monotonic_clock(RunClock(started))
            .envs(&env)
            .args(&[&self.name])
            .build_p1();
        let pre = self.pre.read().unwrap_or_else(|e| e.into_inner()).clone();
        let engine = pre.module().engine();
        let limiter = Limiter {
            max_memory: limits.memory_bytes,
            peak: 0,
            hit: false,
        };
        let mut store = Store::new(
            engine,
            Host {
                wasi,
                limiter,
                started,
                deadline: limits.deadline,
            },
        );
        store.limiter(|h| &mut h.limiter);
        // Every tick: past the deadline, stop; otherwise let the executor run others, then go on.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            let host = store.data();
            Ok(match host.started.elapsed() >= host.deadline {
                true => UpdateDeadline::Interrupt,
                false => UpdateDeadline::Yield(1),
            })
        });

        let result = match pre.instantiate_async(&mut store).await {
            Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(start) => match start.call_async(&mut store, ()).await {
                    Ok(()) => Ok(()),
                    Err(e)
                        if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                            .is_some_and(|x| x.0 == 0) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify_run(e, &store, &stdout, limits)),
                },
                Err(_) => Err(Error::MissingStart),
            },
            Err(e) => Err(classify_instantiate(e, &store, limits)),
        };
        let stats = Stats {
            duration: started.elapsed(),
            peak_memory: store.data().limiter.peak,
        };
        drop(store);
        let stderr = stderr.take();
        match result {
            Ok(()) => {}
            Err(e) => {
                tracing::info!(program = %self.name, error = %e, stderr = %String::from_utf8_lossy(&stderr), "run failed");
                return Err(RunFailure { error: e, stderr });
            }
        }
        Ok(RunOutput {
            response: cgi::parse_output(stdout.take()),
            stderr,
            stats,
        })
    }
}

/// Map the error `_start` ended with; `Ok` for `proc_exit(0)` is handled by the caller.
fn classify_run(
    e: wasmtime::Error,
    store: &Store<Host>,
    stdout: &BoundedPipe,
    limits: &RunLimits,
) -> Error {
    if stdout.overflowed() {
        return Error::OutputLimit {
            limit: limits.output_bytes,
        };
    }
    if store.data().limiter.hit {
        return Error::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Error::Exit(exit.0);
    }
    if e.downcast_ref::<SleepPastDeadline>().is_some() {
        return Error::Timeout(limits.deadline);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Error::Timeout(limits.deadline),
        Some(trap) => Error::Trap(trap.to_string()),
        None => Error::Trap(format!("{e:#}")),
    }
}

fn classify_instantiate(e: wasmtime::Error, store: &Store<Host>, limits: &RunLimits) -> Error {
    if store.data().limiter.hit {
        Error::MemoryLimit {
            limit: limits.memory_bytes,
        }
    } else if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        Error::Busy(e.to_string())
    } else {
        Error::Link(format!("{e:#}"))
    }
}
