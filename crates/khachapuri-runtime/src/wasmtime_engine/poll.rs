//! The clock a program sees, and WASI `poll_oneoff` that a deadline can interrupt.

use super::*;

/// The monotonic clock a program sees: nanoseconds since its run began.
pub(super) struct RunClock(pub(super) Instant);

impl HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Why `poll_oneoff` ended a run: it would have slept past the run's deadline.
#[derive(Debug, thiserror::Error)]
#[error("poll_oneoff would sleep past the deadline")]
pub(super) struct SleepPastDeadline;

/// WASI errno values [`poll_oneoff`] answers with.
pub(super) const ERRNO_BADF: i32 = 8;
pub(super) const ERRNO_FAULT: i32 = 21;
pub(super) const ERRNO_INVAL: i32 = 28;

/// What one `poll_oneoff` subscription waits for.
pub(super) enum Wait {
    /// A clock firing after this long.
    Clock(Duration),
    /// A stdio descriptor (always ready): event type 1 (read) or 2 (write).
    Fd(u8),
}

/// WASI `poll_oneoff`, in place of wasmtime-wasi's: that one sleeps in the host, where epoch
/// interruption cannot reach, and cannot be wrapped (a host function called from the host sees
/// no memory). The only descriptors are stdio in memory, always ready: fd 0 to read, 1 and 2 to
/// write. A poll on clocks alone sleeps until the first one fires, unless that comes after the
/// run's deadline: then the run traps at once with [`SleepPastDeadline`].
pub(super) async fn poll_oneoff(
    mut caller: Caller<'_, Host>,
    subs: i32,
    events: i32,
    n: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    // A `subscription` is 48 bytes: userdata u64, tag u8 at 8 (0 clock, 1 fd_read, 2 fd_write),
    // then a clock's id u32 at 16, timeout u64 at 24 and flags u16 at 40 (bit 0: absolute), or
    // an fd's number u32 at 16. An `event` is 32 bytes: userdata u64, errno u16 at 8, type u8 at
    // 10, nbytes u64 at 16, flags u16 at 24.
    const SUB: usize = 48;
    const EVENT: usize = 32;
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        wasmtime::bail!("poll_oneoff needs an exported memory");
    };
    let host = caller.data();
    let (started, remaining) = (
        host.started,
        host.deadline.saturating_sub(host.started.elapsed()),
    );
    let n = n as u32 as usize;
    if n == 0 {
        return Ok(ERRNO_INVAL);
    }
    let Some(bytes) = memory
        .data(&caller)
        .get(subs as u32 as usize..)
        .and_then(|m| m.get(..n * SUB))
    else {
        return Ok(ERRNO_FAULT);
    };
    let mut waits = Vec::with_capacity(n);
    for sub in bytes.chunks_exact(SUB) {
        let u32_at = |i: usize| u32::from_le_bytes([sub[i], sub[i + 1], sub[i + 2], sub[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        let wait = match (sub[8], u32_at(16)) {
            (0, clock @ (0 | 1)) => {
                let timeout = Duration::from_nanos(u64_at(24));
                let now = match (sub[40] & 1 != 0, clock) {
                    (false, _) => Duration::ZERO,
                    (true, 0) => SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                    (true, _) => started.elapsed(), // the monotonic clock of `RunClock`
                };
                Wait::Clock(timeout.saturating_sub(now))
            }
            (0, _) => return Ok(ERRNO_INVAL),
            (1, 0) | (2, 1 | 2) => Wait::Fd(sub[8]),
            (1 | 2, _) => return Ok(ERRNO_BADF),
            _ => return Ok(ERRNO_INVAL),
        };
        waits.push((u64_at(0), wait));
    }
    let sleep = if waits.iter().any(|(_, w)| matches!(w, Wait::Fd(_))) {
        Duration::ZERO
    } else {
        waits
            .iter()
            .filter_map(|(_, w)| {
                if let Wait::Clock(d) = w {
                    Some(*d)
                } else {
                    None
                }
            })
            .min()
            .unwrap_or_default()
    };
    if sleep > remaining {
        return Err(wasmtime::Error::new(SleepPastDeadline));
    }
    if !sleep.is_zero() {
        match tokio::runtime::Handle::try_current() {
            // On a tokio runtime (the agent), the task sleeps and the worker serves others meanwhile.
            Ok(_) => tokio::time::sleep(sleep).await,
            // Driven by `run_with` on a plain thread: that thread is the run's own.
            Err(_) => std::thread::sleep(sleep),
        }
    }

    let mut out = Vec::with_capacity(n * EVENT);
    for (userdata, wait) in &waits {
        let (kind, nbytes) = match wait {
            Wait::Clock(d) if *d <= sleep => (0, 0u64),
            Wait::Clock(_) => continue,
            Wait::Fd(kind) => (*kind, 1),
        };
        let mut event = [0u8; EVENT];
        event[..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = kind;
        event[16..24].copy_from_slice(&nbytes.to_le_bytes());
        out.extend_from_slice(&event);
    }
    let count = (out.len() / EVENT) as u32;
    let data = memory.data_mut(&mut caller);
    let (events, nevents) = (events as u32 as usize, nevents as u32 as usize);
    let fits = |at: usize, len: usize| at.checked_add(len).is_some_and(|end| end <= data.len());
    if !fits(events, out.len()) || !fits(nevents, 4) {
        return Ok(ERRNO_FAULT);
    }
    data[events..events + out.len()].copy_from_slice(&out);
    data[nevents..nevents + 4].copy_from_slice(&count.to_le_bytes());
    Ok(0)
}
