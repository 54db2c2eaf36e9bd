//! Caches of compiled programs: a bounded in-memory LRU and an authenticated on-disk store.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::Result;

/// A bounded map that evicts the least recently used entry when full.
#[derive(Debug)]
pub struct MemoryCache<V> {
    capacity: usize,
    inner: Mutex<LruState<V>>,
}

#[derive(Debug)]
struct LruState<V> {
    clock: u64,
    entries: HashMap<String, (V, u64)>,
}

impl<V: Clone> MemoryCache<V> {
    /// A cache holding at most `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(LruState {
                clock: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// The value under `key`, marking it recently used.
    pub fn get(&self, key: &str) -> Option<V> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.clock += 1;
        let now = state.clock;
        state.entries.get_mut(key).map(|(v, used)| {
            *used = now;
            v.clone()
        })
    }

    /// Store `value` under `key`, evicting the least recently used entry if full.
    pub fn insert(&self, key: &str, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.clock += 1;
        let now = state.clock;
        if !state.entries.contains_key(key) && state.entries.len() >= self.capacity {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                state.entries.remove(&oldest);
            }
        }
        state.entries.insert(key.to_string(), (value, now));
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The file the first format kept its HMAC secret in, inside the cache; removed on open.
const OLD_SECRET_FILE: &str = "cache-secret";
const SECRET_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Compiled artifacts on disk, each encrypted and authenticated with AES-256-GCM under a per-cache key.
///
/// The key is a random 32-byte file created with mode 0600 on first use **beside** the cache directory
/// (`modules/` has `modules.key`), so a copy of the directory alone reveals nothing: a compiled private
/// program carries its code and data segments, and only ciphertext of it is on disk. Each artifact file
/// holds a random nonce and the ciphertext; the engine fingerprint and the key are associated data, so an
/// artifact written by another engine configuration, renamed, or altered by anyone without the key fails
/// and is never handed to a deserializer.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    cipher: Aes256Gcm,
    fingerprint: [u8; 32],
}

/// Where the key of the cache in `dir` lives: beside it, `{dir}.key`.
pub fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
}

impl DiskCache {
    /// Open (or create) the cache in `dir`, its key in [`key_path`]; `fingerprint` identifies the engine
    /// and its settings.
    pub fn open(dir: &Path, fingerprint: [u8; 32]) -> Result<Self> {
        if dir.file_name().is_none() {
            return Err(std::io::Error::other(format!(
                "module cache {}: name a directory of its own (its key goes beside it)",
                dir.display()
            ))
            .into());
        }
        fs::create_dir_all(dir)?;
        let _ = fs::remove_file(dir.join(OLD_SECRET_FILE));
        let secret = load_or_create_secret(&key_path(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher: Aes256Gcm::new(&secret.into()),
            fingerprint,
        })
    }

    /// The file an artifact for `key` lives in.
    pub fn path_for(&self, key: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        self.dir.join(format!("{name}.bin"))
    }

    fn aad(&self, key: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + 8 + key.len());
        aad.extend_from_slice(&self.fingerprint);
        aad.extend_from_slice(&(key.len() as u64).to_le_bytes());
        aad.extend_from_slice(key.as_bytes());
        aad
    }

    /// The artifact stored for `key`, only if it decrypts and authenticates; `None` if absent or not.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path_for(key);
        let data = fs::read(&path).ok()?;
        let (nonce, sealed) = data.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::<aes_gcm::aead::consts::U12>::try_from(nonce).ok()?;
        let aad = self.aad(key);
        match self.cipher.decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: &aad,
            },
        ) {
            Ok(artifact) => Some(artifact),
            Err(_) => {
                // Another key (a cache moved without it), another format, or tampering: it never will.
                tracing::warn!(key, "cached artifact failed authentication; removing it");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Store `artifact` for `key` (atomically: written aside, then renamed over).
    pub fn put(&self, key: &str, artifact: &[u8]) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(key);
        let sealed = self
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: artifact,
                    aad: &aad,
                },
            )
            .map_err(|_| std::io::Error::other("artifact too large to encrypt"))?;
        let path = self.path_for(key);
        let tmp = path.with_extension(format!("tmp{}", rand::thread_rng().next_u64()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&nonce)?;
        file.write_all(&sealed)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(())
    }
}

/// Read the cache key, creating it (mode 0600, atomically) if missing.
fn load_or_create_secret(path: &Path) -> Result<[u8; SECRET_LEN]> {
    if let Some(secret) = read_secret(path)? {
        return Ok(secret);
    }
    let mut secret = [0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let tmp = path.with_extension(format!("tmp{}", rand::thread_rng().next_u64()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    drop(file);
    // hard_link fails if another process won the race: then use theirs.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            read_secret(path)?.ok_or_else(|| std::io::Error::other("cache secret vanished").into())
        }
        Err(e) => Err(e.into()),
    }
}

fn read_secret(path: &Path) -> Result<Option<[u8; SECRET_LEN]>> {
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(std::io::Error::other(format!(
                    "cache secret {} is readable by others (mode {mode:o}); refusing it",
                    path.display()
                ))
                .into());
            }
            let secret = <[u8; SECRET_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
                std::io::Error::other(format!(
                    "cache secret {} has a wrong length",
                    path.display()
                ))
            })?;
            Ok(Some(secret))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used() {
        let c = MemoryCache::new(2);
        c.insert("a", 1);
        c.insert("b", 2);
        assert_eq!(c.get("a"), Some(1));
        c.insert("c", 3);
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("a"), Some(1));
        assert_eq!(c.get("c"), Some(3));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn disk_cache_encrypts_and_authenticates() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("modules");
        let cache = DiskCache::open(&dir, [1; 32]).expect("open");
        assert_eq!(key_path(&dir), root.path().join("modules.key"));
        let mode = fs::metadata(key_path(&dir))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let artifact = b"artifact holding MARKER-7f3a";
        cache.put("k", artifact).expect("put");
        assert_eq!(cache.get("k").as_deref(), Some(&artifact[..]));
        // Nothing in the directory reads as the artifact, and the key is not in it.
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let bytes = fs::read(entry.expect("entry").path()).expect("read");
            assert!(!bytes.windows(11).any(|w| w == b"MARKER-7f3a"));
        }
        // The directory without its key opens to nothing: a new key, and the old artifact fails.
        fs::remove_file(key_path(&dir)).expect("remove key");
        assert_eq!(DiskCache::open(&dir, [1; 32]).expect("open").get("k"), None);
        let cache = DiskCache::open(&dir, [1; 32]).expect("open");
        cache.put("k", artifact).expect("put");
        // Same dir, other fingerprint: not accepted, and removed (it never will be).
        let other = DiskCache::open(&dir, [2; 32]).expect("open");
        assert_eq!(other.get("k"), None);
        let path = cache.path_for("k");
        assert!(!path.exists());
        // Flip one byte of the artifact: not accepted.
        cache.put("k", artifact).expect("put");
        let mut data = fs::read(&path).expect("read");
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&path, data).expect("write");
        assert_eq!(cache.get("k"), None);
    }
}
