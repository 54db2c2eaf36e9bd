//! How every Khachapuri binary starts and stops processes:
//!
//! - [`shutdown_signal`]: Ctrl-C or SIGTERM, what each binary waits for before a graceful stop (a service
//!   manager and `docker stop` send SIGTERM);
//! - [`die_with_parent`]: child processes (anvil for `khachapuri dev` and for tests) that cannot outlive the
//!   process that started them, whatever ends it: a clean exit, a panic or a SIGKILL;
//! - [`terminate`]: stops a child as an operator would (SIGTERM), and for good when it does not listen.

use std::{
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// Sends `child` SIGTERM (a graceful stop: an agent settles its claims) and waits for it; SIGKILL after
/// `grace`. A child that already exited is only reaped.
pub fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a pid this process spawned and has not reaped, so it names that child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()
}

/// Makes the child that `command` spawns receive SIGKILL when the thread that spawned it ends (Linux
/// `PR_SET_PDEATHSIG`; elsewhere this does nothing). Spawn from a thread that lives as long as the child
/// should: the main thread, or a test's own thread, not a pool thread that may retire.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the child between fork and exec, allocates nothing and calls only
        // prctl(2) and getppid(2), which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would ever send the signal.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::other(
                        "the parent exited before the child started",
                    ));
                }
                Ok(())
            });
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = ctrl_c.await;
}
