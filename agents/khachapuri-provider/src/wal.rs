//! The claims write-ahead log: JSON lines, appended before a program runs.
//!
//! Appends are group-committed: records that arrive while a write is in progress go out together in the
//! next single `write(2)` (and, with [`Durability::Always`], under one `fsync`), written by the first of
//! their appenders to find the file free. An idle agent's claim is written at once.
//!
//! `write(2)` puts a record in the kernel's page cache at once, so a claim survives the agent being
//! killed (SIGKILL, panic, OOM) the moment `append` returns. Surviving the machine itself needs `fsync`,
//! which costs milliseconds: [`Durability::Always`] pays it on every claim, [`Durability::Interval`]
//! (the default) every few milliseconds in the background. Losing a claim can only cost the provider a
//! request's price; no durability setting can make a payer pay twice.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use khachapuri_chain::{Address, B256, Usdc};
use serde::{Deserialize, Serialize};

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Record {
    /// A claim, written before the program runs.
    Claim {
        /// Sequence number (also the receipt's).
        id: u64,
        /// Who pays.
        payer: Address,
        /// Price in USDC base units.
        price: u128,
    },
    /// Claims settled on chain by `tx`.
    Landed {
        /// The claims.
        ids: Vec<u64>,
        /// The settlement transaction.
        tx: B256,
    },
    /// Claims that cannot be settled (the payer's terms or funds refused them).
    Failed {
        /// The claims.
        ids: Vec<u64>,
        /// Why.
        reason: String,
    },
    /// An x402 payment, written before its transfer is sent. It is settled (or refused) before the program
    /// runs, so a replay has nothing to do with it but keep its sequence number used.
    X402 {
        /// Sequence number (also the receipt's).
        id: u64,
        /// Who pays.
        payer: Address,
        /// What the authorization moves, in USDC base units.
        price: u128,
        /// The authorization's nonce: with `payer`, what `authorizationState` and the token's
        /// `AuthorizationUsed` event tell about it afterwards.
        nonce: B256,
    },
    /// Written when the log is compacted: the next sequence number, and the first block whose
    /// settlements the log may not know about (every earlier one was reconciled with the chain).
    Next {
        /// The first id not used yet.
        id: u64,
        /// The first block not reconciled.
        #[serde(default)]
        from_block: u64,
    },
}

/// When claims reach the disk itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fsync` every few milliseconds in the background (claims survive a killed agent at once).
    #[default]
    Interval,
    /// `fsync` before every program runs.
    Always,
}

/// What replaying the log found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Claims without an outcome, in id order.
    pub open: Vec<OpenClaim>,
    /// Per payer, what the log saw land since `from_block` (base units).
    pub landed: BTreeMap<Address, u128>,
    /// The first block whose settlements may be missing from the log.
    pub from_block: u64,
    /// The next sequence number.
    pub next_id: u64,
}

/// A claim that the log holds without an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenClaim {
    /// Its sequence number.
    pub id: u64,
    /// Who pays.
    pub payer: Address,
    /// The price.
    pub price: Usdc,
}

/// Claims waiting to be written together.
#[derive(Debug, Default)]
struct Group {
    /// Their lines.
    lines: Vec<u8>,
    /// How many appenders wait for them.
    members: usize,
    /// The number of the group they will be written in.
    number: u64,
    /// An appender is writing a group now.
    writing: bool,
    /// The last group written, whatever its outcome.
    written: u64,
    /// Groups whose write failed: why (their claims were refused), and how many of their appenders have
    /// yet to read it; the last one removes it.
    failed: BTreeMap<u64, (String, usize)>,
}

/// The log file.
#[derive(Debug)]
pub struct Wal {
    file: Mutex<File>,
    /// Lines waiting for the next write, and who writes.
    group: Mutex<Group>,
    /// Signalled when a group's write ends.
    wrote: std::sync::Condvar,
    /// A failed write could not be taken back: every claim is refused from then on.
    broken: std::sync::atomic::AtomicBool,
    /// The same file through another descriptor: `fsync` without holding the appenders' lock.
    sync_file: File,
    durability: Durability,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    path: PathBuf,
}

impl Wal {
    /// Replays the log at `path` (missing: empty) without changing it.
    pub fn replay(path: &Path) -> std::io::Result<Replay> {
        let mut claims: BTreeMap<u64, OpenClaim> = BTreeMap::new();
        let mut replay = Replay {
            next_id: 1,
            ..Replay::default()
        };
        if !path.exists() {
            return Ok(replay);
        }
        for line in BufReader::new(File::open(path)?).lines() {
            let line = line?;
            // A torn last line (the agent died mid-write) was never acknowledged: skip it.
            let Ok(record) = serde_json::from_str::<Record>(&line) else {
                continue;
            };
            match record {
                Record::Claim { id, payer, price } => {
                    replay.next_id = replay.next_id.max(id + 1);
                    claims.insert(
                        id,
                        OpenClaim {
                            id,
                            payer,
                            price: Usdc::from_units(price),
                        },
                    );
                }
                Record::Landed { ids, .. } => {
                    for id in ids {
                        if let Some(c) = claims.remove(&id) {
                            *replay.landed.entry(c.payer).or_default() += c.price.units();
                        }
                    }
                }
                Record::Failed { ids, .. } => {
                    for id in ids {
                        claims.remove(&id);
                    }
                }
                Record::X402 { id, .. } => {
                    replay.next_id = replay.next_id.max(id + 1);
                }
                Record::Next { id, from_block } => {
                    replay.next_id = replay.next_id.max(id);
                    replay.from_block = from_block;
                }
            }
        }
        replay.open = claims.into_values().collect();
        Ok(replay)
    }

    /// Rewrites the log at `path` to `open` claims only (after reconciliation up to `from_block - 1`), and
    /// opens it for appending.
    pub fn create(
        path: &Path,
        durability: Durability,
        open: &[OpenClaim],
        next_id: u64,
        from_block: u64,
    ) -> std::io::Result<Self> {
        let tmp = path.with_extension("wal.tmp");
        {
            let mut f = File::create(&tmp)?;
            let mut lines = vec![Record::Next {
                id: next_id,
                from_block,
            }];
            lines.extend(open.iter().map(|c| Record::Claim {
                id: c.id,
                payer: c.payer,
                price: c.price.units(),
            }));
            for r in &lines {
                writeln!(
                    f,
                    "{}",
                    serde_json::to_string(r).map_err(std::io::Error::other)?
                )?;
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            sync_file: file.try_clone()?,
            file: Mutex::new(file),
            group: Mutex::new(Group {
                number: 1,
                ..Group::default()
            }),
            wrote: std::sync::Condvar::new(),
            broken: std::sync::atomic::AtomicBool::new(false),
            durability,
            dirty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            path: path.to_path_buf(),
        })
    }

    /// Appends `record` with whatever else is being appended now (one write for the group): in the page
    /// cache when this returns, on disk per the durability setting. It blocks while another appender writes
    /// (a `write(2)` into the page cache, or an `fsync` with [`Durability::Always`]), as a lock would, and
    /// cannot be cancelled half way: a claim is logged and counted, or neither.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut group = self.lock_group();
        group.lines.extend_from_slice(&line);
        group.members += 1;
        let number = group.number;
        loop {
            if group.written >= number {
                let Some((err, unread)) = group.failed.get_mut(&number) else {
                    return Ok(());
                };
                let err = std::io::Error::other(err.clone());
                *unread -= 1;
                if *unread == 0 {
                    group.failed.remove(&number);
                }
                return Err(err);
            }
            if group.writing {
                group = self.wrote.wait(group).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody writes and ours is not written: it is queued, and we write the group.
            group.writing = true;
            let (lines, writing) = (std::mem::take(&mut group.lines), group.number);
            let members = std::mem::take(&mut group.members);
            group.number += 1;
            drop(group);
            let outcome = self.write(&lines);
            group = self.lock_group();
            group.writing = false;
            group.written = writing;
            if let Err(err) = outcome {
                group.failed.insert(writing, (err.to_string(), members));
            }
            self.wrote.notify_all();
        }
    }

    /// Appends `records` in one write (the outcomes of a settled batch).
    pub fn append_all(&self, records: &[Record]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        self.write(&lines)
    }

    /// Writes `lines` whole, or takes back what part of them reached the file: the claims of a failed
    /// write are refused, and must not replay as open after a restart.
    fn write(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("WAL lock poisoned"))?;
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            return Err(std::io::Error::other(
                "the claims log could not take back a failed write: restart the agent (it replays the log)",
            ));
        }
        // Counted as it goes (no `stat` per write): on a failure, the file's end less what reached it.
        let mut done = 0;
        let written = loop {
            if done == lines.len() {
                break self.durable(&file);
            }
            match file.write(&lines[done..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => break Err(err),
            }
        };
        if written.is_err() {
            // Taken back for good (the flusher may have synced the part already), or the log takes no
            // more lines: the next one would join a torn one, and an acknowledged claim would be lost.
            let taken_back = file.metadata().and_then(|m| {
                file.set_len(m.len().saturating_sub(done as u64))?;
                file.sync_data()
            });
            if let Err(err) = taken_back {
                self.broken
                    .store(true, std::sync::atomic::Ordering::Release);
                tracing::error!(path = %self.path.display(), %err, "cannot take back a failed write: the claims log refuses every claim until the agent restarts");
            }
        }
        written
    }

    /// After a write: `fsync` now, or mark the log for the flusher.
    fn durable(&self, file: &File) -> std::io::Result<()> {
        match self.durability {
            Durability::Always => file.sync_data(),
            Durability::Interval => {
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
        }
    }

    fn lock_group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes to disk if anything was appended since the last flush. Appends go on meanwhile: the
    /// flush uses its own descriptor, not the appenders' lock.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.sync_file.sync_data()?;
        }
        Ok(())
    }

    /// Spawns the background flusher of [`Durability::Interval`]: a thread of its own, since `fsync`
    /// blocks for as long as the disk takes and must not stall the async workers serving requests.
    pub fn spawn_flusher(self: &Arc<Self>, every: Duration) {
        if self.durability != Durability::Interval {
            return;
        }
        let wal = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(wal) = wal.upgrade() else { return };
                    if let Err(err) = wal.sync() {
                        tracing::error!(path = %wal.path.display(), %err, "WAL fsync failed");
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(%err, "cannot start the WAL flusher; claims stay in the page cache until the OS writes them back");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Set in the child process of the test below: the directory of its log.
    const FULL_DISK_CHILD: &str = "KHACHAPURI_WAL_FULL_DISK_CHILD";
    /// The child's file size limit: the header and a few dozen claims.
    const FILE_LIMIT: u64 = 4096;

    /// A disk that fills up mid-write: the claim whose line did not fit is refused, and what part of it
    /// reached the file is taken back, so it never replays as open (an agent restarted on this log would
    /// settle a charge whose call it refused). The kernel refuses the write: the test runs itself again
    /// under `prlimit --fsize` (SIGXFSZ ignored), and the parent replays what the child left.
    #[test]
    fn a_write_the_disk_refuses_is_taken_back_and_its_claim_never_replays() {
        if let Some(dir) = std::env::var_os(FULL_DISK_CHILD) {
            return fill_the_disk(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let name = format!(
            "{}::a_write_the_disk_refuses_is_taken_back_and_its_claim_never_replays",
            module_path!().split_once("::").unwrap().1
        );
        let child = std::process::Command::new("bash")
            .args([
                "-c",
                r#"trap '' XFSZ; exec prlimit --fsize="$0" -- "$@""#,
                &FILE_LIMIT.to_string(),
            ])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(FULL_DISK_CHILD, dir.path())
            .output()
            .expect("bash and util-linux's prlimit");
        assert!(
            child.status.success(),
            "the child failed ({}):\n{}{}",
            child.status,
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );

        let path = dir.path().join("claims.wal");
        let text = std::fs::read_to_string(&path).unwrap();
        let tail = &text[text.len().saturating_sub(100)..];
        assert!(text.ends_with('\n'), "no torn line is left: …{tail:?}");
        let acknowledged: Vec<u64> = std::fs::read_to_string(dir.path().join("acknowledged"))
            .unwrap()
            .split_whitespace()
            .map(|id| id.parse().unwrap())
            .collect();
        assert!(acknowledged.len() > 10, "{acknowledged:?}");
        let replay = Wal::replay(&path).unwrap();
        let open: Vec<u64> = replay.open.iter().map(|c| c.id).collect();
        assert_eq!(open, acknowledged, "exactly the acknowledged claims replay");
        assert_eq!(
            text.lines().count(),
            1 + acknowledged.len(),
            "every line whole"
        );
    }

    /// The child: appends claims until the file limit refuses one, writes down the acknowledged ids.
    fn fill_the_disk(dir: &Path) {
        let wal = Wal::create(&dir.join("claims.wal"), Durability::Always, &[], 1, 0).unwrap();
        let mut acknowledged = Vec::new();
        // About 47 claims fit; a limit that is not enforced (some sandboxes) must not fill the disk.
        let refused = (1..=10_000).find_map(|id| {
            let claim = Record::Claim {
                id,
                payer: Address::repeat_byte(7),
                price: 10_000,
            };
            match wal.append(&claim) {
                Ok(()) => {
                    acknowledged.push(id.to_string());
                    None
                }
                Err(err) => Some(err),
            }
        });
        let refused = refused.expect("the file size limit was not enforced: no write was refused");
        assert!(
            refused.to_string().contains("too large"),
            "the kernel's EFBIG: {refused}"
        );
        // Taken back, not broken: the next claim is refused by the disk again, not by a closed log.
        let again = wal
            .append(&Record::Claim {
                id: u64::MAX,
                payer: Address::repeat_byte(7),
                price: 1,
            })
            .unwrap_err();
        assert!(!again.to_string().contains("restart"), "{again}");
        // Refused together (in groups of several appenders, as they come): each is told, once.
        let refused = std::thread::scope(|scope| {
            let appenders: Vec<_> = (0..8u64)
                .map(|i| {
                    let wal = &wal;
                    scope.spawn(move || {
                        wal.append(&Record::Claim {
                            id: u64::MAX - 1 - i,
                            payer: Address::repeat_byte(7),
                            price: 1,
                        })
                    })
                })
                .collect();
            appenders
                .into_iter()
                .filter_map(|a| a.join().unwrap().err())
                .count()
        });
        assert_eq!(refused, 8);
        // Every refused appender read its group's failure, so none is kept.
        assert!(
            wal.lock_group().failed.is_empty(),
            "failures read are forgotten"
        );
        std::fs::write(dir.join("acknowledged"), acknowledged.join(" ")).unwrap();
    }

    #[test]
    fn claims_appended_together_are_all_in_the_log_once_and_outcomes_close_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claims.wal");
        let wal = Arc::new(Wal::create(&path, Durability::Interval, &[], 1, 0).unwrap());
        let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (wal, ids) = (wal.clone(), ids.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let payer = Address::repeat_byte(t);
                        wal.append(&Record::Claim {
                            id,
                            payer,
                            price: 10,
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let replay = Wal::replay(&path).unwrap();
        assert_eq!(replay.open.len(), 4000);
        assert_eq!(replay.next_id, 4001);
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            lines.lines().count(),
            1 + 4000,
            "each claim once, whole, after the header"
        );

        // One write closes a batch's claims (landed) and another's (failed).
        wal.append_all(&[
            Record::Landed {
                ids: (1..=3000).collect(),
                tx: B256::repeat_byte(1),
            },
            Record::Failed {
                ids: (3001..=3999).collect(),
                reason: "refused".into(),
            },
        ])
        .unwrap();
        let replay = Wal::replay(&path).unwrap();
        assert_eq!(replay.open.len(), 1);
        assert_eq!(replay.open[0].id, 4000);
        assert_eq!(replay.landed.values().sum::<u128>(), 30_000);
    }
}
