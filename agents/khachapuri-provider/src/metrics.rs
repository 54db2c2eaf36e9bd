//! Prometheus metrics in the text exposition format, without a metrics framework: a few counters and one
//! histogram are all the agent needs.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds of the run-time histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    claims: AtomicU64,
    runs: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts a response by status.
    pub fn request(&self, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// Counts a refused request by reason code.
    pub fn refusal(&self, code: &'static str) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Counts a claim.
    pub fn claim(&self) {
        self.claims.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a program's run time.
    pub fn run(&self, took: Duration) {
        let h = &self.runs;
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The text exposition; `outstanding` comes from the ledger, and `(receipts, signatures)` from the
    /// receipt signer (their ratio is the mean group a signature covers).
    pub fn render(&self, outstanding: usize, (receipts, signatures): (u64, u64)) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP khachapuri_requests_total Requests answered, by HTTP status."
        );
        let _ = writeln!(out, "# TYPE khachapuri_requests_total counter");
        for (status, n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "khachapuri_requests_total{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP khachapuri_refusals_total Requests refused, by reason."
        );
        let _ = writeln!(out, "# TYPE khachapuri_refusals_total counter");
        for (code, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "khachapuri_refusals_total{{reason=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP khachapuri_claims_total Payments claimed before running."
        );
        let _ = writeln!(out, "# TYPE khachapuri_claims_total counter");
        let _ = writeln!(
            out,
            "khachapuri_claims_total {}",
            self.claims.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP khachapuri_claims_outstanding Claims not yet settled on chain."
        );
        let _ = writeln!(out, "# TYPE khachapuri_claims_outstanding gauge");
        let _ = writeln!(out, "khachapuri_claims_outstanding {outstanding}");
        let _ = writeln!(
            out,
            "# HELP khachapuri_receipts_total Receipts signed (one per charged answer)."
        );
        let _ = writeln!(out, "# TYPE khachapuri_receipts_total counter");
        let _ = writeln!(out, "khachapuri_receipts_total {receipts}");
        let _ = writeln!(
            out,
            "# HELP khachapuri_receipt_signatures_total Signatures made for them (one per group)."
        );
        let _ = writeln!(out, "# TYPE khachapuri_receipt_signatures_total counter");
        let _ = writeln!(out, "khachapuri_receipt_signatures_total {signatures}");
        let _ = writeln!(out, "# HELP khachapuri_run_seconds Program run time.");
        let _ = writeln!(out, "# TYPE khachapuri_run_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.runs.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "khachapuri_run_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.runs.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "khachapuri_run_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.runs.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "khachapuri_run_seconds_sum {sum}");
        let _ = writeln!(out, "khachapuri_run_seconds_count {count}");
        out
    }
}
