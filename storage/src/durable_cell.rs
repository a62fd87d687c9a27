//! A small value kept durably in its own file: Raft's vote, the CommitLog's purge point.
//!
//! `store` writes `NAME.tmp`, fsyncs it, renames it over `NAME` and fsyncs the directory, so
//! a crash leaves either the old value or the new one, never a mix. The file is framed as
//! `RMQC | len u32 | crc32c u32 | payload` so a damaged file is reported, not believed.
//!
//! Must never: be used for anything large or hot (one store costs two fsyncs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoContext, Result, StorageError};
use crate::vfs::{OpenMode, Vfs};

const MAGIC: &[u8; 4] = b"RMQC";
const HEADER_LEN: usize = 12;

/// A named, atomically replaced, durable byte string.
#[derive(Debug, Clone)]
pub struct DurableCell {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl DurableCell {
    /// The cell stored as `dir/name` (the directory must exist).
    pub fn new(fs: Arc<dyn Vfs>, dir: &Path, name: &str) -> Self {
        DurableCell {
            fs,
            dir: dir.to_path_buf(),
            path: dir.join(name),
            tmp: dir.join(format!("{name}.tmp")),
        }
    }

    /// The stored value, or `None` if nothing was ever stored.
    pub fn load(&self) -> Result<Option<Vec<u8>>> {
        if !self.fs.exists(&self.path) {
            return Ok(None);
        }
        let file = self
            .fs
            .open(&self.path, OpenMode::Existing)
            .at(&self.path)?;
        let len = file.len().at(&self.path)? as usize;
        let mut buf = vec![0u8; len];
        let n = file.read_full_at(&mut buf, 0).at(&self.path)?;
        buf.truncate(n);
        let corrupted = |reason: &str| StorageError::Corrupted {
            path: self.path.clone(),
            position: 0,
            reason: reason.to_owned(),
        };
        if buf.len() < HEADER_LEN || &buf[..4] != MAGIC {
            return Err(corrupted("bad header"));
        }
        let body_len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if buf.len() != HEADER_LEN + body_len {
            return Err(corrupted("length does not match the file"));
        }
        let body = buf.split_off(HEADER_LEN);
        if crc32c::crc32c(&body) != crc {
            return Err(corrupted("checksum mismatch"));
        }
        Ok(Some(body))
    }

    /// Replaces the value durably.
    pub fn store(&self, value: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(HEADER_LEN + value.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(value).to_le_bytes());
        buf.extend_from_slice(value);
        let tmp = self
            .fs
            .open(&self.tmp, OpenMode::CreateTruncate)
            .at(&self.tmp)?;
        tmp.write_all_at(&buf, 0).at(&self.tmp)?;
        tmp.sync_data().at(&self.tmp)?;
        self.fs.rename(&self.tmp, &self.path).at(&self.path)?;
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        Ok(())
    }
}

impl DurableCell {
    /// Removes the value durably (a later `load` finds nothing).
    pub fn clear(&self) -> Result<()> {
        if self.fs.exists(&self.path) {
            self.fs.remove_file(&self.path).at(&self.path)?;
            self.fs.sync_dir(&self.dir).at(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{Crash, MemFs};

    #[test]
    fn store_survives_power_loss_and_damage_is_reported() {
        let fs = MemFs::new();
        let dir = Path::new("/data");
        let cell = DurableCell::new(Arc::new(fs.clone()), dir, "vote");
        assert_eq!(cell.load().unwrap(), None);
        cell.store(b"term=3").unwrap();
        cell.store(b"term=4").unwrap();
        let after = fs.crash(Crash::DropUnsynced);
        let cell2 = DurableCell::new(Arc::new(after.clone()), dir, "vote");
        assert_eq!(cell2.load().unwrap().as_deref(), Some(&b"term=4"[..]));
        cell2.clear().unwrap();
        assert_eq!(cell2.load().unwrap(), None);
        assert_eq!(
            DurableCell::new(Arc::new(after.crash(Crash::DropUnsynced)), dir, "vote")
                .load()
                .unwrap(),
            None,
            "the removal is durable"
        );
        cell2.store(b"term=5").unwrap();
        after.flip_bit(&dir.join("vote"), 13, 0).unwrap();
        assert!(matches!(cell2.load(), Err(StorageError::Corrupted { .. })));
    }
}
