//! Bounded in-memory stdout and stderr.

use super::*;

/// An in-memory stdout/stderr with a byte cap. Past the cap it either traps the program (for
/// stdout: a truncated response is never returned) or drops the rest silently (for stderr).
#[derive(Clone)]
pub(super) struct BoundedPipe {
    out: cgi::BoundedBuffer,
    trap_on_overflow: bool,
}

impl BoundedPipe {
    pub(super) fn new(cap: usize, trap_on_overflow: bool) -> Self {
        Self {
            out: cgi::BoundedBuffer::new(cap),
            trap_on_overflow,
        }
    }

    pub(super) fn overflowed(&self) -> bool {
        self.out.overflowed()
    }

    pub(super) fn take(&self) -> Vec<u8> {
        self.out.take()
    }

    /// Append what fits; `false` if some bytes did not fit.
    pub(super) fn append(&self, bytes: &[u8]) -> bool {
        self.out.append(bytes)
    }

    pub(super) fn overflow_error(&self) -> StreamError {
        StreamError::Trap(wasmtime::format_err!(
            "output limit of {} bytes reached",
            self.out.cap()
        ))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.append(&bytes) && self.trap_on_overflow {
            return Err(self.overflow_error());
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // When full, still grant a byte: the write that follows overflows (and traps, for stdout).
        // Failing here instead would fail the readiness check that follows every full write.
        Ok(
            (self.out.cap() - self.out.len()).max(if self.trap_on_overflow {
                1
            } else {
                64 * 1024
            }),
        )
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for BoundedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.append(buf) && self.trap_on_overflow {
            return Poll::Ready(Err(std::io::Error::other("output limit reached")));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for BoundedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}
