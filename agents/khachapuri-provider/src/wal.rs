//! The claims write-ahead log: JSON lines, appended before a program runs.
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

/// The log file.
#[derive(Debug)]
pub struct Wal {
    file: Mutex<File>,
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
            durability,
            dirty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            path: path.to_path_buf(),
        })
    }

    /// Appends `record`: in the page cache when this returns, on disk per the durability setting.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("WAL lock poisoned"))?;
        file.write_all(&line)?;
        match self.durability {
            Durability::Always => file.sync_data(),
            Durability::Interval => {
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
        }
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
