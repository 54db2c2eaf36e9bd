//! Progress on stderr for every long wait (transactions, uploads, builds): a spinner or a byte bar on a
//! terminal; one `==>` line per step when stderr is a log or a pipe, so scripts and CI still see it.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner showing `what` and the time spent, until dropped or finished.
pub fn spinner(what: impl Into<String>) -> ProgressBar {
    let what = what.into();
    if !on_terminal() {
        eprintln!("==> {what}");
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(what);
    if let Ok(style) = ProgressStyle::with_template("{spinner:.cyan} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A byte bar for `total` bytes of `what` (an upload).
pub fn bytes(what: impl Into<String>, total: u64) -> ProgressBar {
    let what = what.into();
    if !on_terminal() {
        eprintln!("==> {what} ({})", indicatif::HumanBytes(total));
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(what);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Awaits `work` under a spinner saying `what` (a transaction, a registration, a download).
pub async fn wait<T>(what: impl Into<String>, work: impl Future<Output = T>) -> T {
    let bar = spinner(what);
    let out = work.await;
    bar.finish_and_clear();
    out
}
