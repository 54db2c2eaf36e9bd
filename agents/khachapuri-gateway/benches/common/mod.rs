//! wrk, run and read: what every bench of this crate measures HTTP with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// The agents' allocator (see their `main.rs`), so that what is measured here is what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::Command;

/// How long each wrk run lasts.
pub const DURATION: &str = "8s";
/// wrk's connections.
pub const CONNECTIONS: &str = "16";

/// One wrk run's figures.
#[derive(Debug, serde::Serialize)]
pub struct Figures {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// How many of the machine's cores were busy during the run, on average (from /proc/stat: everyone's
    /// time, the server's, wrk's and the kernel's; not time a hypervisor stole). NaN without /proc/stat.
    pub busy_cores: f64,
    /// The machine's CPU time per request, in µs: what a request cost, whether or not the run kept every
    /// core busy.
    pub cpu_us_per_request: f64,
}

impl Figures {
    /// The median of each figure over `runs` (an odd number of runs of one thing).
    pub fn median(runs: Vec<Figures>) -> Figures {
        let median = |field: fn(&Figures) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(field).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Figures {
            requests_per_second: median(|f| f.requests_per_second),
            p50_ms: median(|f| f.p50_ms),
            p99_ms: median(|f| f.p99_ms),
            busy_cores: median(|f| f.busy_cores),
            cpu_us_per_request: median(|f| f.cpu_us_per_request),
        }
    }
}

/// Writes a bench's figures to `target/bench/{name}.json`.
pub fn write_figures(name: &str, figures: &serde_json::Value) {
    let dir = khachapuri_provider::testing::workspace().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(figures).unwrap(),
    )
    .unwrap();
}

/// Panics with what to do when wrk is missing.
pub fn which_wrk() {
    if Command::new("wrk").arg("--version").output().is_err() {
        panic!("wrk is not installed: `make bench` installs it (apt-get install wrk)");
    }
}

/// Runs wrk against `url` and parses its summary.
pub fn wrk(url: &str, script: &std::path::Path) -> Figures {
    wrk_with(url, script, "2", CONNECTIONS)
}

/// Runs wrk against `url` for `duration` (wrk's syntax: `4s`), as [`wrk`] does otherwise.
pub fn wrk_for(url: &str, script: &std::path::Path, duration: &str) -> Figures {
    run_wrk(url, script, "2", CONNECTIONS, duration)
}

/// Runs wrk with `threads` threads and `connections` connections.
pub fn wrk_with(url: &str, script: &std::path::Path, threads: &str, connections: &str) -> Figures {
    run_wrk(url, script, threads, connections, DURATION)
}

fn run_wrk(
    url: &str,
    script: &std::path::Path,
    threads: &str,
    connections: &str,
    duration: &str,
) -> Figures {
    let before = CpuTimes::read();
    let out = Command::new("wrk")
        .args([
            "-t",
            threads,
            "-c",
            connections,
            "-d",
            duration,
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let busy_cores = match (before, CpuTimes::read()) {
        (Some(before), Some(after)) => after.busy_cores_since(&before),
        _ => f64::NAN,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed requests:\n{text}"
    );
    let field = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
        let value = line.split_whitespace().nth(1).unwrap();
        parse_duration_ms(value).unwrap_or_else(|| value.parse().unwrap())
    };
    Figures {
        requests_per_second: field("Requests/sec:"),
        p50_ms: field("50%"),
        p99_ms: field("99%"),
        busy_cores,
        cpu_us_per_request: busy_cores * 1e6 / field("Requests/sec:"),
    }
}

/// The machine's CPU time so far (the first line of /proc/stat), in clock ticks; `None` where there is no
/// /proc/stat (macOS). Inside a container it is the host's: other tenants' load counts.
struct CpuTimes {
    busy: u64,
    total: u64,
    cores: usize,
}

impl CpuTimes {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user already); steal is
        // the hypervisor's, not this machine's work
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        let idle = tick(3) + tick(4) + tick(7);
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
            cores,
        })
    }

    fn busy_cores_since(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        self.cores as f64 * self.busy.saturating_sub(before.busy) as f64 / total
    }
}

/// `123.45us` / `1.20ms` / `2.00s` → milliseconds.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}
