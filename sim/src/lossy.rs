//! A file system that can lose power: the real one (the node's files stay where snapshots,
//! RocksDB and install recovery expect them), with each file's synced extent tracked, so a
//! simulated power loss zeroes whatever was written after the file's last `sync_data`, as a
//! disk loses what sat in its cache. Each sync can be slowed down, which widens the window a
//! bug that acknowledges before syncing needs.
//!
//! A power loss zeroes the unsynced bytes, or (a few seeds) damages them as a disk may:
//! torn (each 512-byte sector of the unsynced part written or not, independently) or with
//! one byte flipped; synced bytes are never touched.
//!
//! Only data is modelled: directory operations (create, rename, remove, link) are taken as
//! durable when they return, which is stronger than a real disk and so hides no bug of ours
//! that loses data (it may hide one that forgets `sync_dir`).
//!
//! Must never: change what a running node reads or writes (it only records extents), or lose
//! a byte that was synced.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_storage::vfs::{FileRef, OpenMode, OsFs, Vfs, VfsFile};

#[derive(Debug, Default)]
struct Extent {
    /// End of the furthest write.
    written: u64,
    /// `written` when the last sync began.
    synced: u64,
}

type Shared = Arc<Mutex<Extent>>;

/// What each file had synced when the power went.
#[derive(Debug)]
pub struct PowerCut(HashMap<PathBuf, u64>);

fn lock(e: &Shared) -> std::sync::MutexGuard<'_, Extent> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a power loss damages the unsynced bytes instead of zeroing them all.
#[derive(Clone, Copy, Debug)]
pub enum Damage {
    /// Each 512-byte sector of the unsynced part reached the disk or not (zeroed), drawn
    /// from the seed.
    Torn(u64),
    /// The unsynced part reached the disk, with one byte flipped (drawn from the seed).
    Flipped(u64),
}

impl Damage {
    /// Damages `tail` (the unsynced bytes of the `nth` file); returns the bytes that
    /// differ from what was written.
    fn apply(self, tail: &mut [u8], nth: u64) -> u64 {
        use rand::{Rng, SeedableRng};
        match self {
            Damage::Torn(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ nth.wrapping_mul(0x9e37));
                let mut lost = 0;
                for sector in tail.chunks_mut(512) {
                    if rng.random_bool(0.5) {
                        lost += sector.len() as u64;
                        sector.fill(0);
                    }
                }
                lost
            }
            Damage::Flipped(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ nth.wrapping_mul(0x9e37));
                let at = rng.random_range(0..tail.len());
                tail[at] ^= 1 << rng.random_range(0..8);
                1
            }
        }
    }
}

/// The OS's file system with power-loss bookkeeping.
#[derive(Debug, Default)]
pub struct LossyFs {
    files: Mutex<HashMap<PathBuf, Shared>>,
    sync_delay: Duration,
}

impl LossyFs {
    /// Each `sync_data` takes at least `sync_delay` more.
    pub fn new(sync_delay: Duration) -> Arc<LossyFs> {
        Arc::new(LossyFs {
            files: Mutex::default(),
            sync_delay,
        })
    }

    /// The extra time each sync takes.
    pub fn sync_delay(&self) -> Duration {
        self.sync_delay
    }

    fn extent(&self, path: &Path) -> Shared {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// The moment the power goes: what each file has synced now is all it keeps.
    pub fn cut_power(&self) -> PowerCut {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        PowerCut(
            files
                .iter()
                .map(|(p, e)| (p.clone(), lock(e).synced))
                .collect(),
        )
    }

    /// Makes a power cut real once the node's writers have stopped: every byte written
    /// after what its file had synced at the cut becomes zero (a file the cut did not know
    /// loses all it holds), or with `damage`, is torn or has a byte flipped instead
    /// ([`Damage`]). Returns how many unsynced bytes did not survive as written.
    pub fn lose_power(&self, cut: &PowerCut, damage: Option<Damage>) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut lost = 0;
        // Files in a fixed order, so a damage seed damages the same way on every replay.
        let mut files: Vec<(&PathBuf, &Shared)> = files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (path, e)) in files.into_iter().enumerate() {
            let mut e = lock(e);
            let keep = cut.0.get(path).copied().unwrap_or(0).min(e.synced);
            if e.written > keep && path.exists() {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)?;
                let end = e.written.min(f.metadata()?.len());
                if end > keep {
                    let mut tail = vec![0u8; (end - keep) as usize];
                    f.read_exact_at(&mut tail, keep)?;
                    lost += match damage {
                        None => {
                            tail.fill(0);
                            end - keep
                        }
                        Some(d) => d.apply(&mut tail, i as u64),
                    };
                    f.write_all_at(&tail, keep)?;
                    f.sync_data()?;
                }
            }
            e.written = keep;
            e.synced = keep;
        }
        Ok(lost)
    }
}

#[derive(Debug)]
struct TrackedFile {
    inner: FileRef,
    extent: Shared,
    sync_delay: Duration,
}

impl VfsFile for TrackedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)?;
        let mut e = lock(&self.extent);
        e.written = e.written.max(pos + buf.len() as u64);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let upto = lock(&self.extent).written;
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        self.inner.sync_data()?;
        let mut e = lock(&self.extent);
        e.synced = e.synced.max(upto);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)?;
        let mut e = lock(&self.extent);
        e.written = e.written.min(len);
        e.synced = e.synced.min(len);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for LossyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsFs.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        OsFs.list_dir(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let inner = OsFs.open(path, mode)?;
        let extent = self.extent(path);
        if mode != OpenMode::Existing {
            *lock(&extent) = Extent::default();
        }
        Ok(Arc::new(TrackedFile {
            inner,
            extent,
            sync_delay: self.sync_delay,
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        OsFs.exists(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)?;
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFs.rename(from, to)?;
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match files.remove(from) {
            Some(e) => {
                files.insert(to.to_path_buf(), e);
            }
            None => {
                files.remove(to);
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsFs.sync_dir(dir)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFs.hard_link(from, to)?;
        let e = self.extent(from);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to.to_path_buf(), e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_zeroes_only_what_was_written_after_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LossyFs::new(Duration::ZERO);
        let path = dir.path().join("f");
        let f = fs.open(&path, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"-cache", 7).unwrap();
        let cut = fs.cut_power();
        // What a dying writer does after the cut does not survive it.
        f.sync_data().unwrap();
        assert_eq!(fs.lose_power(&cut, None).unwrap(), 6);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..7], b"durable");
        assert_eq!(&bytes[7..], &[0u8; 6]);
        // A renamed file keeps its extent.
        let g = fs
            .open(&dir.path().join("g.tmp"), OpenMode::CreateNew)
            .unwrap();
        g.write_all_at(b"x", 0).unwrap();
        fs.rename(&dir.path().join("g.tmp"), &dir.path().join("g"))
            .unwrap();
        let cut = fs.cut_power();
        assert_eq!(fs.lose_power(&cut, None).unwrap(), 1);
    }

    #[test]
    fn damage_touches_only_unsynced_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LossyFs::new(Duration::ZERO);
        let path = dir.path().join("f");
        let f = fs.open(&path, OpenMode::CreateNew).unwrap();
        f.write_all_at(&[7u8; 100], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[9u8; 2048], 100).unwrap();
        let cut = fs.cut_power();
        assert_eq!(fs.lose_power(&cut, Some(Damage::Flipped(3))).unwrap(), 1);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..100], &[7u8; 100]);
        assert_eq!(bytes[100..].iter().filter(|b| **b != 9).count(), 1);
        // Torn: whole sectors written or zeroed, the synced part untouched.
        f.write_all_at(&[5u8; 4096], 2148).unwrap();
        let cut = fs.cut_power();
        let lost = fs.lose_power(&cut, Some(Damage::Torn(11))).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..100], &[7u8; 100]);
        // Everything after the synced 100 bytes was unsynced at this cut (the first cut
        // left 100..2148 on disk, unsynced).
        let zeroed = bytes[100..].iter().filter(|b| **b == 0).count() as u64;
        assert_eq!(zeroed, lost);
        assert_eq!(lost % 512, 0);
    }
}
