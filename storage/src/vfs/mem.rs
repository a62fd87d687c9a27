//! An in-memory file system that remembers what was synced, for deterministic crash tests.
//!
//! Each file keeps its `current` bytes (what reads see) and its `durable` bytes (what
//! `sync_data` last made durable). [`MemFs::crash`] builds the file system a machine would
//! find after losing power: by default only durable bytes survive; [`Crash::Torn`] keeps a
//! random prefix of each unsynced tail (a torn write). [`MemFs::flip_bit`] corrupts a byte
//! that was already durable.
//!
//! Simplification, stated so tests do not over-trust it: creating, removing and renaming a
//! file are durable at once (the real code still calls `sync_dir`, which is a no-op here).
//!
//! Must never: be used outside tests and benchmarks' self-checks.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileRef, OpenMode, Vfs, VfsFile};

/// What survives a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The process died but the OS kept running: everything written survives.
    ProcessOnly,
    /// Power loss: only synced bytes survive.
    DropUnsynced,
    /// Power loss mid-write: synced bytes plus a seeded-random prefix of each unsynced tail.
    Torn {
        /// Chooses how much of each tail survives.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct FileBytes {
    current: Vec<u8>,
    durable: Vec<u8>,
}

type SharedFile = Arc<Mutex<FileBytes>>;

/// The in-memory file system. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    files: Arc<Mutex<BTreeMap<PathBuf, SharedFile>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not hide this test's own result.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file system as it would be found after a crash of the given kind. Handles opened
    /// on `self` do not see the new one, so a test cannot accidentally keep writing through a
    /// pre-crash handle.
    pub fn crash(&self, how: Crash) -> MemFs {
        let mut rng = SplitMix64(match how {
            Crash::Torn { seed } => seed,
            _ => 0,
        });
        let files = lock(&self.files);
        let mut out = BTreeMap::new();
        for (path, file) in files.iter() {
            let f = lock(file);
            let survived = match how {
                Crash::ProcessOnly => f.current.clone(),
                Crash::DropUnsynced => f.durable.clone(),
                Crash::Torn { .. } => {
                    if f.current.len() > f.durable.len() && f.current.starts_with(&f.durable) {
                        let extra = (f.current.len() - f.durable.len()) as u64;
                        let keep = f.durable.len() + rng.below(extra + 1) as usize;
                        f.current[..keep].to_vec()
                    } else {
                        f.durable.clone()
                    }
                }
            };
            let bytes = FileBytes {
                current: survived.clone(),
                durable: survived,
            };
            out.insert(path.clone(), Arc::new(Mutex::new(bytes)));
        }
        MemFs {
            files: Arc::new(Mutex::new(out)),
        }
    }

    /// Flips one bit of a file, in both its current and durable bytes (bit rot on disk).
    pub fn flip_bit(&self, path: &Path, byte: u64, bit: u8) -> io::Result<()> {
        let file = self.file(path)?;
        let mut guard = lock(&file);
        let f = &mut *guard;
        let byte = byte as usize;
        for bytes in [&mut f.current, &mut f.durable] {
            if let Some(b) = bytes.get_mut(byte) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.files).keys().cloned().collect()
    }

    /// Current length of a file.
    pub fn file_len(&self, path: &Path) -> io::Result<u64> {
        let file = self.file(path)?;
        let len = lock(&file).current.len() as u64;
        Ok(len)
    }

    /// How many bytes of a file are not yet durable (0 if its durable image diverged).
    pub fn unsynced_len(&self, path: &Path) -> io::Result<u64> {
        let file = self.file(path)?;
        let f = lock(&file);
        Ok(f.current.len().saturating_sub(f.durable.len()) as u64)
    }

    fn file(&self, path: &Path) -> io::Result<SharedFile> {
        lock(&self.files)
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }
}

impl Vfs for MemFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(lock(&self.files)
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let mut files = lock(&self.files);
        let file = match (files.get(path), mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (Some(f), OpenMode::Existing) => f.clone(),
            (Some(f), OpenMode::CreateTruncate) => {
                lock(f).current.clear();
                f.clone()
            }
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, _) => {
                let f = SharedFile::default();
                files.insert(path.to_path_buf(), f.clone());
                f
            }
        };
        Ok(Arc::new(MemFile(file)))
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.files).contains_key(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.files)
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = lock(&self.files);
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        // A rename is atomic and (here) durable: the renamed file's synced bytes are what a
        // crash would find, exactly as with `rename` after `fsync` on a real file system.
        files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = lock(&self.files);
        let f = files.get(from).cloned().ok_or_else(|| not_found(from))?;
        if files.contains_key(to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        files.insert(to.to_path_buf(), f);
        Ok(())
    }
}

#[derive(Debug)]
struct MemFile(SharedFile);

impl VfsFile for MemFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let f = lock(&self.0);
        let pos = pos as usize;
        if pos >= f.current.len() {
            return Ok(0);
        }
        let n = buf.len().min(f.current.len() - pos);
        buf[..n].copy_from_slice(&f.current[pos..pos + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut f = lock(&self.0);
        let pos = pos as usize;
        let end = pos + buf.len();
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[pos..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut f = lock(&self.0);
        f.durable = f.current.clone();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.0).current.resize(len as usize, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.0).current.len() as u64)
    }
}

/// A tiny deterministic generator, so the storage crate needs no `rand`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes() {
        let fs = MemFs::new();
        let p = Path::new("/d/f");
        let f = fs.open(p, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"def", 3).unwrap();
        let after = fs.crash(Crash::DropUnsynced);
        assert_eq!(after.file_len(p).unwrap(), 3);
        let kept = fs.crash(Crash::ProcessOnly);
        assert_eq!(kept.file_len(p).unwrap(), 6);
        for seed in 0..20 {
            let torn = fs.crash(Crash::Torn { seed });
            let len = torn.file_len(p).unwrap();
            assert!((3..=6).contains(&len), "torn length {len}");
        }
    }

    #[test]
    fn flip_bit_changes_durable_bytes() {
        let fs = MemFs::new();
        let p = Path::new("/d/f");
        let f = fs.open(p, OpenMode::CreateNew).unwrap();
        f.write_all_at(&[0u8; 4], 0).unwrap();
        f.sync_data().unwrap();
        fs.flip_bit(p, 2, 1).unwrap();
        let after = fs.crash(Crash::DropUnsynced);
        let g = after.open(p, OpenMode::Existing).unwrap();
        let mut buf = [0u8; 4];
        g.read_full_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0, 0, 2, 0]);
    }
}
