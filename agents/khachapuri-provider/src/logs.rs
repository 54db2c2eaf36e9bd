//! What the agent keeps of each spec's recent runs for its owner (`khachapuri logs`): status, the
//! failure reason and the program's stderr. Bounded: [`ENTRIES_PER_SPEC`] runs per spec,
//! [`STDERR_PER_ENTRY`] bytes of stderr per run, [`SPECS`] specs (the one whose last run is oldest
//! goes first). Memory only: a restart forgets it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use khachapuri_protocol::Usdc;
use khachapuri_protocol::logs::{LogEntry, Logs, Totals};

/// Runs kept per spec.
pub(crate) const ENTRIES_PER_SPEC: usize = 64;
/// stderr bytes kept per run (the start of it: a panic's message comes first).
pub(crate) const STDERR_PER_ENTRY: usize = 4 << 10;
/// Specs kept.
pub(crate) const SPECS: usize = 256;
/// Bytes kept of a run's path and of its failure message.
const TEXT_PER_FIELD: usize = 512;

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the cut with `mark`.
fn cut(text: &mut String, max: usize, mark: &str) {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str(mark);
    }
}

/// The logs of every spec this agent ran lately.
pub(crate) struct SpecLogs {
    inner: Mutex<Inner>,
}

impl Default for SpecLogs {
    fn default() -> Self {
        let micros = khachapuri_protocol::unix_millis().saturating_mul(1000);
        Self {
            inner: Mutex::new(Inner {
                seq: micros,
                specs: HashMap::new(),
            }),
        }
    }
}

struct Inner {
    /// The last sequence number handed out: it starts at the agent's start time in microseconds, so that
    /// after a restart the numbers still only grow and a reader's `?after=` cursor stays meaningful.
    seq: u64,
    specs: HashMap<String, SpecRuns>,
}

/// One spec's kept runs and its counts.
struct SpecRuns {
    entries: VecDeque<LogEntry>,
    totals: Totals,
}

impl SpecLogs {
    /// Keeps one run of `spec`, which charged its owner `owner_charged`; its `seq` is assigned here.
    pub(crate) fn record(&self, spec: &str, mut entry: LogEntry, owner_charged: Usdc) {
        cut(&mut entry.stderr, STDERR_PER_ENTRY, "\n[stderr cut here]");
        cut(&mut entry.path, TEXT_PER_FIELD, "…");
        if let Some(message) = &mut entry.message {
            cut(message, TEXT_PER_FIELD, "…");
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.seq += 1;
        entry.seq = inner.seq;
        if !inner.specs.contains_key(spec) && inner.specs.len() >= SPECS {
            let oldest = inner
                .specs
                .iter()
                .min_by_key(|(_, runs)| runs.entries.back().map_or(0, |e| e.seq))
                .map(|(cid, _)| cid.clone());
            if let Some(oldest) = oldest {
                inner.specs.remove(&oldest);
            }
        }
        let runs = inner
            .specs
            .entry(spec.to_owned())
            .or_insert_with(|| SpecRuns {
                entries: VecDeque::new(),
                totals: Totals {
                    since_ms: entry.time_ms,
                    ..Totals::default()
                },
            });
        runs.totals.calls += 1;
        runs.totals.owner_charged = runs.totals.owner_charged.saturating_add(owner_charged);
        if runs.entries.len() == ENTRIES_PER_SPEC {
            runs.entries.pop_front();
        }
        runs.entries.push_back(entry);
    }

    /// `spec`'s runs after sequence number `after`, oldest first; `terms_hash` is the spec's.
    pub(crate) fn read(
        &self,
        spec: &str,
        terms_hash: khachapuri_protocol::B256,
        after: u64,
    ) -> Logs {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let runs = inner.specs.get(spec);
        let entries: Vec<LogEntry> = runs
            .map(|runs| {
                let newer = runs.entries.iter().filter(|e| e.seq > after);
                newer.cloned().collect()
            })
            .unwrap_or_default();
        let next = entries.last().map_or(after, |e| e.seq);
        Logs {
            spec: spec.to_owned(),
            terms_hash,
            entries,
            next,
            totals: runs.map(|r| r.totals.clone()),
            cap_spent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use khachapuri_protocol::B256;

    fn entry(stderr: &str) -> LogEntry {
        LogEntry {
            seq: 0,
            time_ms: 0,
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            error: None,
            message: None,
            stderr: stderr.into(),
            duration_ms: 1,
            payer: khachapuri_protocol::Address::ZERO,
        }
    }

    #[test]
    fn keeps_the_latest_runs_of_the_latest_specs_within_bounds() {
        let logs = SpecLogs::default();
        for i in 0..ENTRIES_PER_SPEC + 5 {
            logs.record("a", entry(&i.to_string()), Usdc::from_units(10));
        }
        let a = logs.read("a", B256::ZERO, 0);
        assert_eq!(a.entries.len(), ENTRIES_PER_SPEC);
        assert_eq!(a.entries[0].stderr, "5", "the oldest went first");
        let totals = a.totals.clone().expect("counted");
        assert_eq!(
            (totals.calls, totals.owner_charged),
            (
                (ENTRIES_PER_SPEC + 5) as u64,
                Usdc::from_units(10 * (ENTRIES_PER_SPEC as u128 + 5))
            ),
            "the totals count every run, also those no longer kept"
        );
        assert_eq!(a.next - a.entries[0].seq, (ENTRIES_PER_SPEC - 1) as u64);
        assert!(logs.read("a", B256::ZERO, a.next).entries.is_empty());
        assert_eq!(
            logs.read("a", B256::ZERO, a.next).next,
            a.next,
            "nothing newer: same cursor"
        );
        assert_eq!(logs.read("a", B256::ZERO, a.next - 1).entries.len(), 1);

        let mut long = entry(&"é".repeat(STDERR_PER_ENTRY));
        long.path = "/p".repeat(1000);
        logs.record("b", long, Usdc::ZERO);
        let b = logs.read("b", B256::ZERO, 0);
        assert!(b.entries[0].stderr.ends_with("[stderr cut here]"));
        assert!(b.entries[0].stderr.len() < STDERR_PER_ENTRY + 32);
        assert!(b.entries[0].path.len() <= TEXT_PER_FIELD + "…".len());

        // A spec past the bound evicts the one whose last run is oldest: "a" (b ran after it).
        for i in 0..SPECS - 1 {
            logs.record(&format!("s{i}"), entry(""), Usdc::ZERO);
        }
        assert!(logs.read("a", B256::ZERO, 0).entries.is_empty());
        assert_eq!(logs.read("b", B256::ZERO, 0).entries.len(), 1);
    }
}
