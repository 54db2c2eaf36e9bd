//! The epoch ticker, and the tier-up thread that compiles baseline programs again with Cranelift.

use super::*;

/// The thread ticking both engines' epochs; stopped when the engine is dropped.
pub(super) struct Ticker {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An optimizing compile owed to a program running on baseline code.
pub(super) struct Job {
    pub(super) id: String,
    pub(super) wasm: Vec<u8>,
    pub(super) program: std::sync::Weak<WasmtimeProgram>,
}

/// The background thread compiling baseline programs again with Cranelift, one at a time.
pub(super) struct TierUp {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    /// Jobs queued or running, and a condition signalled whenever it drops.
    pending: Arc<(Mutex<usize>, std::sync::Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl TierUp {
    pub(super) fn spawn(optimized: Arc<Tier>, disk: Option<Arc<DiskCache>>) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let pending = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let done = pending.clone();
        let thread = std::thread::Builder::new().name("wasmtime-tier-up".into()).spawn(move || {
            for job in rx {
                let program = job.program.upgrade();
                // Nobody runs it any more and nothing is cached on disk: the compile would be wasted.
                if program.is_some() || disk.is_some() {
                    match optimized.compile_optimized(&job.id, &job.wasm, disk.as_deref()) {
                        Ok(module) => {
                            if let Some(program) = program {
                                match optimized.instantiate_pre(&module) {
                                    Ok(pre) => *program.pre.write().unwrap_or_else(|e| e.into_inner()) = pre,
                                    Err(e) => tracing::warn!(id = job.id, error = %e, "optimized module failed to link"),
                                }
                            }
                        }
                        Err(e) => tracing::warn!(id = job.id, error = %e, "optimizing compile failed; the baseline code stays"),
                    }
                }
                let (count, signal) = &*done;
                *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                signal.notify_all();
            }
        })?;
        Ok(Self {
            jobs: Some(tx),
            pending,
            thread: Some(thread),
        })
    }

    pub(super) fn queue(&self, job: Job) {
        let Some(jobs) = &self.jobs else { return };
        *self.pending.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if jobs.send(job).is_err() {
            *self.pending.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        }
    }

    pub(super) fn wait(&self) {
        let (count, signal) = &*self.pending;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = signal.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for TierUp {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop after the job at hand
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
