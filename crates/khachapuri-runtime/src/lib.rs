//! The Khachapuri sandbox: runs untrusted WebAssembly (WASI preview 1) programs through the
//! curl interface, CGI/WAGI style.
//!
//! A request's body is the program's stdin; its method, path, query and headers are in the
//! environment (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`, `HTTP_*`) next to
//! the spec's env; stdout is the response, optionally led by CGI headers (`Status:`,
//! `Content-Type:`, ...) and a blank line; stderr is for the provider's log only. There is no
//! filesystem and no network. Memory, wall-clock time (sleeps included) and output are capped
//! ([`Limits`]; a run may be given lower limits with [`Runtime::run_with`]), and every failure
//! is an [`Error`] with the HTTP status to answer ([`Error::http_status`]).
//!
//! ```no_run
//! use khachapuri_runtime::{Request, Runtime, RuntimeConfig};
//! # fn main() -> Result<(), khachapuri_runtime::Error> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let wasm = std::fs::read("hello.wasm")?;
//! let program = runtime.load("bafy...cid", &wasm, None)?;
//! let out = runtime.run(&program, &Request { method: "POST".into(), body: b"world".to_vec(), ..Request::default() })?;
//! println!("{} {:?}", out.response.status, out.response.body);
//! # Ok(()) }
//! ```
//!
//! Two engines implement [`Engine`]: wasmtime (this crate's, what the agents run) and wasmer +
//! wasmer-wasix (the crate khachapuri-runtime-wasmer, which the conformance tests and the runtime bench
//! use through [`Runtime::with_engine`]; no binary links it, so `make dev` never compiles wasmer).

pub mod cache;
pub mod cgi;
mod error;
pub mod package;
mod wasmtime_engine;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cgi::{Request, Response, RunOutput, Stats};
pub use error::{Error, Result};
pub use package::PackageLimits;
pub use wasmtime_engine::WasmtimeEngine;

/// Caps applied to every program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory a program may have, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time a run may take, instantiation included.
    pub deadline: Duration,
    /// Most bytes a program may write to stdout (headers included).
    pub output_bytes: usize,
    /// Most stderr bytes kept for the log (the rest is dropped, not an error).
    pub stderr_bytes: usize,
    /// Module and zip size caps.
    pub package: PackageLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            deadline: Duration::from_secs(10),
            output_bytes: 16 << 20,
            stderr_bytes: 64 << 10,
            package: PackageLimits::default(),
        }
    }
}

impl Limits {
    /// The per-run part of these caps: what [`Runtime::run`] runs under.
    pub fn run_limits(&self) -> RunLimits {
        RunLimits {
            memory_bytes: self.memory_bytes,
            deadline: self.deadline,
            output_bytes: self.output_bytes,
        }
    }
}

/// Limits of one run, e.g. a deployment owner's. They may be lower than the runtime's caps
/// ([`Limits`]), never higher: each is clamped to its cap ([`RunLimits::clamped_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Largest linear memory the program may have, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time the run may take, instantiation included.
    pub deadline: Duration,
    /// Most bytes the program may write to stdout (headers included).
    pub output_bytes: usize,
}

impl RunLimits {
    /// These limits, each lowered to its cap in `caps` where it is above it.
    pub fn clamped_to(&self, caps: &Limits) -> RunLimits {
        RunLimits {
            memory_bytes: self.memory_bytes.min(caps.memory_bytes),
            deadline: self.deadline.min(caps.deadline),
            output_bytes: self.output_bytes.min(caps.output_bytes),
        }
    }
}

/// Which engine runs programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// wasmtime (the default, and the only engine built in: wasmer is khachapuri-runtime-wasmer's, given
    /// to [`Runtime::with_engine`]).
    #[default]
    Wasmtime,
}

/// How to build a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The engine.
    pub engine: EngineKind,
    /// Caps for every program.
    pub limits: Limits,
    /// Directory of the on-disk cache of compiled modules; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most compiled programs kept in memory.
    pub memory_cache_entries: usize,
    /// Most programs running at once (slots of wasmtime's pooling allocator).
    pub max_instances: u32,
    /// wasmtime's compilers for programs compiled cold.
    pub tiering: Tiering,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::default(),
            limits: Limits::default(),
            cache_dir: None,
            memory_cache_entries: 256,
            max_instances: 64,
            tiering: Tiering::default(),
        }
    }
}

/// Which wasmtime compiler a program compiled cold gets (see the `wasmtime_engine` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiering {
    /// Winch at once (fast to compile), then Cranelift in the background, swapped in when ready.
    #[default]
    Tiered,
    /// Winch only (Cranelift for a module Winch refuses): fastest first request, slower code; tests of
    /// that tier use it.
    Baseline,
    /// Cranelift only: the first request waits for the optimizing compiler.
    Optimized,
}

/// Where a loaded program came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from the module bytes just now.
    Compiled,
    /// Deserialized from a verified artifact of the disk cache.
    Disk,
    /// Already in the in-memory cache.
    Memory,
}

/// A WebAssembly engine: compiles (or fetches from its disk cache) and prepares programs.
pub trait Engine: Send + Sync {
    /// Short name, e.g. `"wasmtime"`.
    fn name(&self) -> &'static str;
    /// Prepare the module `wasm` of program `id` for running; `id` keys the disk cache.
    fn load(&self, id: &str, wasm: &[u8]) -> Result<(Arc<dyn Loaded>, Origin)>;
    /// Blocks until background work on loaded programs (wasmtime's optimizing tier-up) is done.
    fn wait_background(&self) {}
}

/// A program ready to run, any number of times and from any number of threads at once.
pub trait Loaded: Send + Sync + 'static {
    /// Run the program once on `request` under the engine's caps, blocking the calling thread
    /// until it ends.
    fn run(&self, request: &Request) -> Result<RunOutput, RunFailure>;
    /// Like [`Loaded::run`], under `limits` clamped to the engine's caps.
    fn run_with(&self, request: &Request, limits: &RunLimits) -> Result<RunOutput, RunFailure>;
    /// [`Loaded::run_with`] as a future, for a caller on a tokio runtime. By default the run goes to
    /// the blocking pool; an engine that can suspend a run (wasmtime) runs it on the caller's task.
    fn run_async(self: Arc<Self>, request: Request, limits: RunLimits) -> RunFuture {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.run_with(&request, &limits))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::Engine(format!("the run's thread failed: {e}")).into())
                })
        })
    }
}

/// A run in progress, as [`Loaded::run_async`] returns it.
pub type RunFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunOutput, RunFailure>> + Send>>;

/// A run that failed: why, and what the program wrote to stderr before it did. The stderr is for
/// the program's owner (the provider keeps it for `khachapuri logs`), never for the caller.
#[derive(Debug)]
pub struct RunFailure {
    /// Why the run failed (and the HTTP status to answer, [`Error::http_status`]).
    pub error: Error,
    /// stderr up to the failure (truncated at the cap); empty when the program never started.
    pub stderr: Vec<u8>,
}

impl From<Error> for RunFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            stderr: Vec::new(),
        }
    }
}

impl From<RunFailure> for Error {
    fn from(failure: RunFailure) -> Self {
        failure.error
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// A loaded program, as handed out by [`Runtime::load`].
#[derive(Clone)]
pub struct Program {
    loaded: Arc<dyn Loaded>,
    /// Where it came from this time.
    pub origin: Origin,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// Run the program once on `request` (same as [`Runtime::run`]).
    pub fn run(&self, request: &Request) -> Result<RunOutput> {
        Ok(self.loaded.run(request)?)
    }

    /// Run the program once on `request` under `limits`, clamped to the runtime's caps (same
    /// as [`Runtime::run_with`]).
    pub fn run_with(&self, request: &Request, limits: &RunLimits) -> Result<RunOutput> {
        Ok(self.loaded.run_with(request, limits)?)
    }

    /// [`Program::run_with`] for async callers (on a tokio runtime): with wasmtime the run happens on
    /// the calling task, yielding to the executor every epoch tick; other engines run it on the
    /// blocking pool. A failure keeps the program's stderr ([`RunFailure`]).
    pub async fn run_async(
        &self,
        request: Request,
        limits: RunLimits,
    ) -> Result<RunOutput, RunFailure> {
        self.loaded.clone().run_async(request, limits).await
    }
}

/// The runtime a provider holds: one engine, its caches and limits.
pub struct Runtime {
    engine: Box<dyn Engine>,
    memory: cache::MemoryCache<Arc<dyn Loaded>>,
    limits: Limits,
}

impl Runtime {
    /// Build the engine named in `config`.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let dir = config.cache_dir.as_deref();
        let engine: Box<dyn Engine> = match config.engine {
            EngineKind::Wasmtime => Box::new(WasmtimeEngine::new(
                config.limits,
                config.max_instances,
                dir,
                config.tiering,
            )?),
        };
        Ok(Self::with_engine(engine, &config))
    }

    /// A runtime over another `engine` (wasmer's, from khachapuri-runtime-wasmer), with `config`'s
    /// limits and memory cache (its `engine`, `max_instances` and `tiering` are wasmtime's settings).
    pub fn with_engine(engine: Box<dyn Engine>, config: &RuntimeConfig) -> Self {
        Self {
            engine,
            memory: cache::MemoryCache::new(config.memory_cache_entries),
            limits: config.limits,
        }
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// The limits every program runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Load program `cid` from its bytes (a bare module, or a zip whose entry module is `entry`
    /// or its only `*.wasm`), using the memory cache, then the disk cache, then compiling.
    pub fn load(&self, cid: &str, program: &[u8], entry: Option<&str>) -> Result<Program> {
        let key = cache_key(cid, entry);
        if let Some(program) = self.cached(cid, entry) {
            return Ok(program);
        }
        let wasm = package::extract_module(program, entry, &self.limits.package)?;
        let (loaded, origin) = self.engine.load(&key, &wasm)?;
        self.memory.insert(&key, loaded.clone());
        Ok(Program { loaded, origin })
    }

    /// Blocks until background work on loaded programs is done: with wasmtime, until every program
    /// compiled cold runs optimized code and its artifact is in the disk cache.
    pub fn wait_background(&self) {
        self.engine.wait_background();
    }

    /// Program `cid` if it is in the memory cache (no bytes needed then).
    pub fn cached(&self, cid: &str, entry: Option<&str>) -> Option<Program> {
        self.memory
            .get(&cache_key(cid, entry))
            .map(|loaded| Program {
                loaded,
                origin: Origin::Memory,
            })
    }

    /// Run `program` once on `request`, under the runtime's caps.
    pub fn run(&self, program: &Program, request: &Request) -> Result<RunOutput> {
        program.run(request)
    }

    /// Run `program` once on `request` under `limits` (e.g. the deployment owner's), each
    /// clamped to the runtime's cap: a run never gets more than [`Runtime::limits`].
    pub fn run_with(
        &self,
        program: &Program,
        request: &Request,
        limits: &RunLimits,
    ) -> Result<RunOutput> {
        program.run_with(request, limits)
    }
}

fn cache_key(cid: &str, entry: Option<&str>) -> String {
    match entry {
        Some(entry) => format!("{cid}#{entry}"),
        None => cid.to_string(),
    }
}
