//! An in-memory file system that remembers what was synced, for deterministic crash tests.
//!
//! Each file keeps its `current` bytes (what reads see) and its `durable` bytes (what
//! `sync_data` last made durable). [`MemFs::crash`] builds the file system a machine would
//! find after losing power: by default only durable bytes survive; [`Crash::Torn`] keeps a
//! random prefix of each unsynced tail (a torn write). [`MemFs::flip_bit`] corrupts a byte
//! that was already durable.
//!
//! Names are durable as on a POSIX file system: creating, removing, renaming and linking a
//! file change only the directory as the running system sees it; a crash finds each
//! directory as its last [`Vfs::sync_dir`] left it (a file whose data was synced but whose
//! directory entry was not is gone, a removed file whose removal was not synced is back).
//! Directories themselves are implicit and always exist.
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

type Names = BTreeMap<PathBuf, SharedFile>;

/// The directory entries as the running system sees them, and as the last directory syncs
/// left them on disk.
#[derive(Debug, Default)]
struct Namespace {
    current: Names,
    durable: Names,
}

/// The in-memory file system. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    files: Arc<Mutex<Namespace>>,
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
        let ns = lock(&self.files);
        let names = match how {
            Crash::ProcessOnly => &ns.current,
            Crash::DropUnsynced | Crash::Torn { .. } => &ns.durable,
        };
        // Hard links share one file before the crash and must share one after it.
        let mut copies: Vec<(SharedFile, SharedFile)> = Vec::new();
        let mut out = BTreeMap::new();
        for (path, file) in names.iter() {
            if let Some((_, copy)) = copies.iter().find(|(orig, _)| Arc::ptr_eq(orig, file)) {
                out.insert(path.clone(), copy.clone());
                continue;
            }
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
            let copy: SharedFile = Arc::new(Mutex::new(bytes));
            copies.push((file.clone(), copy.clone()));
            out.insert(path.clone(), copy);
        }
        MemFs {
            files: Arc::new(Mutex::new(Namespace {
                current: out.clone(),
                durable: out,
            })),
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
        lock(&self.files).current.keys().cloned().collect()
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
            .current
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
            .current
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let mut ns = lock(&self.files);
        let files = &mut ns.current;
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
        lock(&self.files).current.contains_key(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.files)
            .current
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = lock(&self.files);
        let f = ns.current.remove(from).ok_or_else(|| not_found(from))?;
        // Atomic for the running system; durable once both directories are synced.
        ns.current.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut ns = lock(&self.files);
        let ns = &mut *ns;
        ns.durable.retain(|p, _| p.parent() != Some(dir));
        for (p, f) in &ns.current {
            if p.parent() == Some(dir) {
                ns.durable.insert(p.clone(), f.clone());
            }
        }
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = lock(&self.files);
        let files = &mut ns.current;
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
        fs.sync_dir(Path::new("/d")).unwrap();
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
    fn names_are_durable_only_after_their_directory_is_synced() {
        let fs = MemFs::new();
        let d = Path::new("/d");
        let (a, b) = (Path::new("/d/a"), Path::new("/d/b"));
        let f = fs.open(a, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        f.sync_data().unwrap();
        assert!(
            !fs.crash(Crash::DropUnsynced).exists(a),
            "a new file's entry is not durable before its directory is synced"
        );
        fs.sync_dir(d).unwrap();
        assert!(fs.crash(Crash::DropUnsynced).exists(a));
        fs.rename(a, b).unwrap();
        let after = fs.crash(Crash::DropUnsynced);
        assert!(
            after.exists(a) && !after.exists(b),
            "an unsynced rename is undone"
        );
        assert!(fs.crash(Crash::ProcessOnly).exists(b));
        fs.sync_dir(d).unwrap();
        let after = fs.crash(Crash::DropUnsynced);
        assert!(!after.exists(a) && after.exists(b));
        fs.remove_file(b).unwrap();
        assert!(
            fs.crash(Crash::DropUnsynced).exists(b),
            "an unsynced remove is undone"
        );
    }

    #[test]
    fn flip_bit_changes_durable_bytes() {
        let fs = MemFs::new();
        let p = Path::new("/d/f");
        let f = fs.open(p, OpenMode::CreateNew).unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
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
