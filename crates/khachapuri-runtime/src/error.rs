//! The one error type of the runtime, with the HTTP status a provider answers for each case.

use std::time::Duration;

/// Everything that can go wrong while loading or running a program.
///
/// Each variant maps to an HTTP status with [`Error::http_status`]: 4xx when the program or the
/// request is at fault before anything ran, 5xx when the program failed while running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program bytes are neither a WebAssembly core module nor a zip holding one.
    #[error("not a WebAssembly module or a zip: {0}")]
    NotWasm(String),
    /// A module (bare or unzipped) is larger than the configured maximum.
    #[error("module is {size} bytes, more than the maximum of {max}")]
    ModuleTooLarge {
        /// Size seen (or claimed by the zip directory), in bytes.
        size: u64,
        /// Configured maximum, in bytes.
        max: u64,
    },
    /// A zip claims, or actually decompresses to, more than the maximum unzipped size.
    #[error("zip unpacks to more than the maximum of {max} bytes")]
    UnzippedTooLarge {
        /// Configured maximum, in bytes.
        max: u64,
    },
    /// The zip is malformed, or its entry module is missing or ambiguous.
    #[error("bad program package: {0}")]
    BadPackage(String),
    /// The module does not validate or compile.
    #[error("module does not compile: {0}")]
    Compile(String),
    /// The module has no `_start` function taking and returning nothing.
    #[error("module has no `_start` function (a WASI command is required)")]
    MissingStart,
    /// The module imports something the sandbox does not provide (only WASI preview 1 is).
    #[error("module cannot be linked: {0}")]
    Link(String),
    /// The request cannot be handed to a program (e.g. an env var name with `=` or a NUL).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The program ran past its wall-clock deadline and was interrupted.
    #[error("program ran past its deadline of {0:?}")]
    Timeout(Duration),
    /// The program tried to grow memory (or a table) past the cap.
    #[error("program exceeded the memory limit of {limit} bytes")]
    MemoryLimit {
        /// Configured cap, in bytes.
        limit: usize,
    },
    /// The program wrote more to stdout than the cap.
    #[error("program wrote more than the output limit of {limit} bytes")]
    OutputLimit {
        /// Configured cap, in bytes.
        limit: usize,
    },
    /// The program trapped (unreachable, out-of-bounds access, stack overflow, a Rust panic...).
    #[error("program trapped: {0}")]
    Trap(String),
    /// The program called `proc_exit` with a nonzero status.
    #[error("program exited with status {0}")]
    Exit(i32),
    /// No instance slot is free (too many concurrent runs for the pooling allocator).
    #[error("no free instance slot: {0}")]
    Busy(String),
    /// The on-disk cache or another local resource failed.
    #[error("runtime I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else the engine reported.
    #[error("engine error: {0}")]
    Engine(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status a provider answers with for this error.
    ///
    /// | error | status |
    /// | --- | --- |
    /// | not wasm, bad package, compile, missing `_start`, link | 422 Unprocessable Content |
    /// | module or unzipped size over the cap | 413 Content Too Large |
    /// | bad request | 400 Bad Request |
    /// | trap, nonzero exit, memory limit | 500 Internal Server Error |
    /// | output limit | 502 Bad Gateway |
    /// | busy | 503 Service Unavailable |
    /// | timeout | 504 Gateway Timeout |
    /// | I/O, engine | 500 Internal Server Error |
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotWasm(_)
            | Error::BadPackage(_)
            | Error::Compile(_)
            | Error::MissingStart
            | Error::Link(_) => 422,
            Error::ModuleTooLarge { .. } | Error::UnzippedTooLarge { .. } => 413,
            Error::BadRequest(_) => 400,
            Error::Trap(_) | Error::Exit(_) | Error::MemoryLimit { .. } => 500,
            Error::OutputLimit { .. } => 502,
            Error::Busy(_) => 503,
            Error::Timeout(_) => 504,
            Error::Io(_) | Error::Engine(_) => 500,
        }
    }

    /// True when the fault lies with the program or the request (a 4xx), not with a run.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.http_status())
    }
}
