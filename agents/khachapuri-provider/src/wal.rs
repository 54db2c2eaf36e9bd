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
    /// The next sequence number, written when the log is compacted.
    Next {
        /// The first id not used yet.
        id: u64,
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
    durability: Durability,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    path: PathBuf,
}

impl Wal {
    /// Opens (or creates) the log at `path`, replays it, and compacts it to the claims still open.
    /// Returns the log, the open claims (to settle again) and the next sequence number.
    pub fn open(path: &Path, durability: Durability) -> std::io::Result<(Self, Vec<OpenClaim>, u64)> {
        let mut claims: BTreeMap<u64, OpenClaim> = BTreeMap::new();
        let mut next = 1;
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                // A torn last line (the agent died mid-write) was never acknowledged: skip it.
                let Ok(record) = serde_json::from_str::<Record>(&line) else { continue };
                match record {
                    Record::Claim { id, payer, price } => {
                        next = next.max(id + 1);
                        claims.insert(id, OpenClaim { id, payer, price: Usdc::from_units(price) });
                    }
                    Record::Landed { ids, .. } | Record::Failed { ids, .. } => {
                        ids.iter().for_each(|id| {
                            claims.remove(id);
                        });
                    }
                    Record::Next { id } => next = next.max(id),
                }
            }
        }
        let open: Vec<OpenClaim> = claims.into_values().collect();

        // Compact: a fresh file with the next id and the open claims, swapped in atomically.
        let tmp = path.with_extension("wal.tmp");
        {
            let mut f = File::create(&tmp)?;
            let mut lines = vec![Record::Next { id: next }];
            lines.extend(open.iter().map(|c| Record::Claim { id: c.id, payer: c.payer, price: c.price.units() }));
            for r in &lines {
                writeln!(f, "{}", serde_json::to_string(r).map_err(std::io::Error::other)?)?;
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        let wal = Self {
            file: Mutex::new(file),
            durability,
            dirty: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            path: path.to_path_buf(),
        };
        Ok((wal, open, next))
    }

    /// Appends `record`: in the page cache when this returns, on disk per the durability setting.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().map_err(|_| std::io::Error::other("WAL lock poisoned"))?;
        file.write_all(&line)?;
        match self.durability {
            Durability::Always => file.sync_data(),
            Durability::Interval => {
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
        }
    }

    /// Flushes to disk if anything was appended since the last flush.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let file = self.file.lock().map_err(|_| std::io::Error::other("WAL lock poisoned"))?;
            file.sync_data()?;
        }
        Ok(())
    }

    /// Spawns the background flusher of [`Durability::Interval`].
    pub fn spawn_flusher(self: &Arc<Self>, every: Duration) {
        if self.durability != Durability::Interval {
            return;
        }
        let wal = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(wal) = wal.upgrade() else { return };
                if let Err(err) = wal.sync() {
                    tracing::error!(path = %wal.path.display(), %err, "WAL fsync failed");
                }
            }
        });
    }
}
