//! The second engine: wasmer (cranelift) + wasmer-wasix, as a [`khachapuri_runtime::Engine`] for
//! [`khachapuri_runtime::Runtime::with_engine`]. A crate of its own so that only what tests it compiles
//! wasmer: no binary of the workspace links it.
//!
//! Where it differs from the wasmtime engine:
//! - deadline: a watchdog thread per run calls wasmer's host interrupter (signal based,
//!   feature `experimental-host-interrupt`) instead of epoch interruption, and sends the WASI
//!   process SIGKILL, which wakes a program sleeping in `poll_oneoff`;
//! - memory: tunables clamp each memory's maximum to the run's limit (the store of each run has
//!   its own tunables), so `memory.grow` past it returns
//!   -1 instead of trapping; a run that then traps with its memory within 1 MiB of the cap is
//!   reported as [`Error::MemoryLimit`] (a trap after one huge failed grow stays a trap), a run
//!   that copes with the failure goes on;
//! - no pooling allocator, no pre-instantiation (wasmer-wasix builds its environment per run);
//! - no disk cache: modules are cached in memory only.

use std::io;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmer::sys::vm::{VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, NativeEngineExt, Tunables};
use wasmer::{MemoryError, MemoryStyle, MemoryType, Module, Pages, Store, TableStyle, TableType};
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::{self, StaticFile, VirtualFile};
use wasmer_wasix::wasmer_wasix_types::wasi::Signal;
use wasmer_wasix::{PluggableRuntime, UnsupportedVirtualNetworking, WasiEnv, WasiError};

use khachapuri_runtime::cgi::{self, Request, RunOutput, Stats};
use khachapuri_runtime::{
    Engine, Error, Limits, Loaded, Origin, Result, RunFailure, RunLimits, Runtime, RuntimeConfig,
};

/// A trap with memory this close to the cap counts as hitting the memory limit (wasmer's
/// `memory.grow` fails with -1 rather than telling us).
const NEAR_CAP: usize = 1 << 20;

/// wasmer behind the [`Engine`] trait.
pub struct WasmerEngine {
    engine: wasmer::Engine,
    runtime: Arc<PluggableRuntime>,
    tokio: Arc<tokio::runtime::Runtime>,
    limits: Limits,
}

impl WasmerEngine {
    /// An engine enforcing `limits`. A `cache_dir` is accepted for symmetry but not used.
    pub fn new(limits: Limits, _cache_dir: Option<&std::path::Path>) -> Result<Self> {
        let mut engine: wasmer::Engine =
            wasmer::sys::EngineBuilder::new(wasmer::sys::Cranelift::default())
                .engine()
                .into();
        engine.set_tunables(CappedTunables::new(limits.memory_bytes));
        let tokio = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?,
        );
        // PluggableRuntime::new builds host networking (replaced just below) inside tokio.
        let _inside = tokio.enter();
        let mut runtime =
            PluggableRuntime::new(Arc::new(TokioTaskManager::new(tokio.handle().clone())));
        runtime.set_networking_implementation(UnsupportedVirtualNetworking::default());
        runtime.set_engine(engine.clone());
        Ok(Self {
            engine,
            runtime: Arc::new(runtime),
            tokio,
            limits,
        })
    }
}

impl Engine for WasmerEngine {
    fn name(&self) -> &'static str {
        "wasmer"
    }

    fn load(&self, id: &str, wasm: &[u8]) -> Result<(Arc<dyn Loaded>, Origin)> {
        let module = Module::new(&self.engine, wasm).map_err(|e| Error::Compile(e.to_string()))?;
        let has_start = module.exports().functions().any(|f| {
            f.name() == "_start" && f.ty().params().is_empty() && f.ty().results().is_empty()
        });
        if !has_start {
            return Err(Error::MissingStart);
        }
        for import in module.imports() {
            if !import.module().starts_with("wasi") {
                return Err(Error::Link(format!(
                    "unknown import `{}::{}`",
                    import.module(),
                    import.name()
                )));
            }
        }
        let name = id.rsplit(['/', '#']).next().unwrap_or(id).to_string();
        let program = WasmerProgram {
            module,
            engine: self.engine.clone(),
            runtime: self.runtime.clone(),
            tokio: self.tokio.clone(),
            limits: self.limits,
            name,
        };
        Ok((Arc::new(program), Origin::Compiled))
    }
}

struct WasmerProgram {
    module: Module,
    engine: wasmer::Engine,
    runtime: Arc<PluggableRuntime>,
    tokio: Arc<tokio::runtime::Runtime>,
    limits: Limits,
    name: String,
}

impl Loaded for WasmerProgram {
    fn run(&self, req: &Request) -> Result<RunOutput, RunFailure> {
        self.run_with(req, &self.limits.run_limits())
    }

    fn run_with(&self, req: &Request, limits: &RunLimits) -> Result<RunOutput, RunFailure> {
        let limits = &limits.clamped_to(&self.limits);
        let env = cgi::environment(req)?;
        let _tokio = self.tokio.enter();
        let stdout = BoundedFile::new(limits.output_bytes, true);
        let stderr = BoundedFile::new(self.limits.stderr_bytes, false);
        // Tunables belong to the engine handle, and a clone shares everything else (compiled
        // code included): this run's store caps memory at this run's limit.
        let mut engine = self.engine.clone();
        if limits.memory_bytes < self.limits.memory_bytes {
            engine.set_tunables(CappedTunables::new(limits.memory_bytes));
        }
        let mut store = Store::new(engine);
        let started = Instant::now();
        let built = WasiEnv::builder(self.name.clone())
            .envs(env)
            .stdin(Box::new(StaticFile::new(req.body.clone())))
            .stdout(Box::new(stdout.clone()))
            .stderr(Box::new(stderr.clone()))
            .runtime(self.runtime.clone())
            .instantiate(self.module.clone(), &mut store);
        let (instance, wasi) = match built {
            Ok(pair) => pair,
            Err(e) => return Err(Error::Link(e.to_string()).into()),
        };
        let start = instance
            .exports
            .get_function("_start")
            .map_err(|_| Error::MissingStart)?;

        // Watchdog: at the deadline, interrupt the store (retrying, as wasmer asks embedders to)
        // and kill the WASI process, which wakes it from a sleep in a host call.
        let interrupter = store.interrupter();
        let process = wasi.data(&store).process.clone();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let deadline = limits.deadline;
        let watchdog = {
            let timed_out = timed_out.clone();
            std::thread::spawn(move || {
                let mut wait = deadline;
                while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(wait) {
                    timed_out.store(true, Ordering::Relaxed);
                    interrupter.interrupt();
                    process.signal_process(Signal::Sigkill);
                    wait = Duration::from_millis(10);
                }
            })
        };
        let result = start.call(&mut store, &[]);
        let _ = done_tx.send(());
        let _ = watchdog.join();

        let memory_bytes = instance
            .exports
            .get_memory("memory")
            .map(|m| m.view(&store).data_size() as usize)
            .unwrap_or(0);
        let exit = match &result {
            Err(e) => e.downcast_ref::<WasiError>().and_then(|w| match w {
                WasiError::Exit(code) => Some(code.raw()),
                _ => None,
            }),
            Ok(_) => None,
        };
        wasi.on_exit(&mut store, None);
        let stats = Stats {
            duration: started.elapsed(),
            peak_memory: memory_bytes,
        };
        let stderr = stderr.take();
        let outcome = match (result, exit) {
            (Ok(_), _) | (Err(_), Some(0)) => Ok(()),
            _ if stdout.overflowed() => Err(Error::OutputLimit {
                limit: limits.output_bytes,
            }),
            _ if timed_out.load(Ordering::Relaxed) => Err(Error::Timeout(limits.deadline)),
            (Err(_), Some(code)) => Err(Error::Exit(code)),
            (Err(_), None) if memory_bytes + NEAR_CAP > limits.memory_bytes => {
                Err(Error::MemoryLimit {
                    limit: limits.memory_bytes,
                })
            }
            (Err(e), None) => Err(Error::Trap(e.message())),
        };
        if let Err(e) = outcome {
            tracing::info!(program = %self.name, error = %e, stderr = %String::from_utf8_lossy(&stderr), "run failed");
            return Err(RunFailure { error: e, stderr });
        }
        Ok(RunOutput {
            response: cgi::parse_output(stdout.take()),
            stderr,
            stats,
        })
    }
}

/// Tunables that cap every memory's maximum at the limit.
struct CappedTunables {
    base: BaseTunables,
    max_pages: Pages,
}

impl CappedTunables {
    fn new(memory_bytes: usize) -> Self {
        let pages = u32::try_from(memory_bytes / wasmer::WASM_PAGE_SIZE).unwrap_or(u32::MAX);
        Self {
            base: BaseTunables::new(),
            max_pages: Pages(pages),
        }
    }

    fn cap(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.max_pages {
            return Err(MemoryError::MinimumMemoryTooLarge {
                min_requested: ty.minimum,
                max_allowed: self.max_pages,
            });
        }
        let maximum = Some(ty.maximum.map_or(self.max_pages, |m| m.min(self.max_pages)));
        Ok(MemoryType { maximum, ..*ty })
    }
}

#[allow(unsafe_code)]
impl Tunables for CappedTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.cap(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.cap(ty)?;
        // SAFETY: forwarded unchanged from our caller, who upholds the trait's contract.
        unsafe {
            self.base
                .create_vm_memory(&ty, style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: forwarded unchanged from our caller, who upholds the trait's contract.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}

/// In-memory stdout/stderr with a byte cap; past it, writes fail (stdout) or are dropped
/// (stderr).
#[derive(Debug, Clone)]
struct BoundedFile {
    out: cgi::BoundedBuffer,
    fail_on_overflow: bool,
}

impl BoundedFile {
    fn new(cap: usize, fail_on_overflow: bool) -> Self {
        Self {
            out: cgi::BoundedBuffer::new(cap),
            fail_on_overflow,
        }
    }

    fn overflowed(&self) -> bool {
        self.out.overflowed()
    }

    fn take(&self) -> Vec<u8> {
        self.out.take()
    }

    fn append(&self, bytes: &[u8]) -> io::Result<usize> {
        if !self.out.append(bytes) && self.fail_on_overflow {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "output limit reached",
            ));
        }
        Ok(bytes.len())
    }
}

impl tokio::io::AsyncWrite for BoundedFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.append(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncRead for BoundedFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for BoundedFile {
    fn start_seek(self: Pin<&mut Self>, _position: io::SeekFrom) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "stdout is not seekable",
        ))
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(0))
    }
}

impl VirtualFile for BoundedFile {
    fn last_accessed(&self) -> u64 {
        0
    }
    fn last_modified(&self) -> u64 {
        0
    }
    fn created_time(&self) -> u64 {
        0
    }
    fn size(&self) -> u64 {
        0
    }
    fn set_len(&mut self, _new_size: u64) -> virtual_fs::Result<()> {
        Err(virtual_fs::FsError::PermissionDenied)
    }
    fn unlink(&mut self) -> virtual_fs::Result<()> {
        Ok(())
    }
    fn poll_read_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_write_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(64 * 1024))
    }
}

/// A [`Runtime`] on wasmer, with `config`'s limits and memory cache.
pub fn runtime(config: &RuntimeConfig) -> Result<Runtime> {
    let engine = WasmerEngine::new(config.limits, config.cache_dir.as_deref())?;
    Ok(Runtime::with_engine(Box::new(engine), config))
}
