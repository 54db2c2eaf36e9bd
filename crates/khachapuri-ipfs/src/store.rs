//! The embedded node's persistent blockstore: one file per block, named by its CID.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cid::Cid;

use crate::importer::{BlockSink, Imported, import_bytes, import_reader};

/// A blockstore on disk: `<root>/blocks/<last two CID chars>/<CID>`.
///
/// Writes go to `<root>/tmp` and are renamed into place, so a reader never sees half a block.
/// Blocks are trusted as written (the store only receives blocks that were hashed or verified);
/// readers that need proof use the fetcher, which verifies every block again.
#[derive(Debug, Clone)]
pub struct FsBlockstore {
    root: PathBuf,
}

impl FsBlockstore {
    /// Opens (creating if needed) a blockstore rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join("blocks"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(FsBlockstore { root })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, cid: &Cid) -> PathBuf {
        let name = cid.to_string();
        let shard = &name[name.len().saturating_sub(2)..];
        self.root.join("blocks").join(shard).join(name)
    }

    /// Whether the block is present.
    pub fn has(&self, cid: &Cid) -> bool {
        self.path_of(cid).is_file()
    }

    /// Stores a block (no-op if present). The caller vouches that `data` hashes to `cid`.
    pub fn put_block(&self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        let path = self.path_of(cid);
        if path.is_file() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        tmp.write_all(data)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Reads a block, or `None` if absent.
    pub fn get_block(&self, cid: &Cid) -> std::io::Result<Option<Bytes>> {
        self.get_block_limited(cid, u64::MAX)
            .map(|r| r.map(|(b, _)| b))
    }

    /// Reads a block only if it is at most `limit` bytes; `Some((bytes, false))` when it is,
    /// `Some((empty, true))` when it is larger (nothing past the size is read).
    pub fn get_block_limited(
        &self,
        cid: &Cid,
        limit: u64,
    ) -> std::io::Result<Option<(Bytes, bool)>> {
        let mut file = match std::fs::File::open(self.path_of(cid)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len > limit {
            return Ok(Some((Bytes::new(), true)));
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        Ok(Some((Bytes::from(buf), false)))
    }

    /// Imports a file's bytes (Kubo layout) and stores every block.
    pub fn put(&self, data: &[u8]) -> std::io::Result<Imported> {
        import_bytes(data, &mut self.sink())
    }

    /// Imports everything `reader` yields and stores every block.
    pub fn put_reader(&self, reader: impl Read) -> std::io::Result<Imported> {
        import_reader(reader, &mut self.sink())
    }

    /// A [`BlockSink`] writing into this store, for streaming imports.
    pub fn sink(&self) -> StoreSink<'_> {
        StoreSink(self)
    }
}

/// A [`BlockSink`] that writes into an [`FsBlockstore`].
#[derive(Debug)]
pub struct StoreSink<'a>(&'a FsBlockstore);

impl BlockSink for StoreSink<'_> {
    fn put_block(&mut self, cid: &Cid, data: Bytes) -> std::io::Result<()> {
        self.0.put_block(cid, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![3u8; 600_000];
        let imported = FsBlockstore::open(dir.path())
            .expect("open")
            .put(&data)
            .expect("put");
        let reopened = FsBlockstore::open(dir.path()).expect("reopen");
        let root = reopened
            .get_block(&imported.cid)
            .expect("read")
            .expect("present");
        assert_eq!(
            crate::block::cid_of(crate::block::DAG_PB, &root),
            imported.cid
        );
        assert_eq!(
            reopened.get_block_limited(&imported.cid, 3).expect("read"),
            Some((Bytes::new(), true))
        );
        let missing = crate::block::cid_of(crate::block::RAW, b"nope");
        assert_eq!(reopened.get_block(&missing).expect("read"), None);
        let tmp_left = std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count();
        assert_eq!(tmp_left, 0, "no temp files left behind");
    }
}
