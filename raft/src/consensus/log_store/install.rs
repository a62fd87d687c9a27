//! Replacing the whole log with the one a snapshot ships, crash-safely.
//!
//! The snapshot's log files are first *staged* in `<log dir>/staged/` and made durable
//! (sealed segments and their `.idx` files hard-linked, the rest copied and fsynced, the
//! directory synced). Only after the state machine has durably decided the install (its
//! install journal, which names the staged files) are they *finished*: the old log files
//! removed, the staged ones renamed in, the directory synced, and the Raft purge point set
//! to the snapshot's. Finishing is idempotent, so a node that crashes part-way finishes on
//! its next start; an install never decided is discarded.
//!
//! Must never: remove a file of the old log before the new one is staged and the install
//! decided, or leave a mix of old and new segments.

use std::io;
use std::path::Path;

use raftmq_storage::DurableCell;
use raftmq_storage::vfs::{OpenMode, Vfs};

use crate::consensus::types::LogId;
use crate::error::{io_err, io_other};

/// The staging directory inside the log directory.
pub(super) const STAGED: &str = "staged";

/// The cell holding the Raft purge point (`LogId`), beside the CommitLog's own files.
pub(super) const PURGED_LOG_ID: &str = "purged_log_id";

/// Whether a file of the log directory belongs to the CommitLog (not to Raft's cells).
fn is_commit_log_file(name: &str) -> bool {
    name.ends_with(".log") || name.ends_with(".idx") || name == "purged" || name == "purged.tmp"
}

/// Stages the log directory `from` in `dir/staged/`, durably; returns the staged names.
pub(super) fn stage(fs: &dyn Vfs, dir: &Path, from: &Path) -> io::Result<Vec<String>> {
    let staged = dir.join(STAGED);
    discard(fs, dir)?;
    fs.create_dir_all(&staged)?;
    let mut names = fs.list_dir(from)?;
    names.sort();
    let newest = names.iter().filter(|n| n.ends_with(".log")).max().cloned();
    for name in &names {
        let (src, dst) = (from.join(name), staged.join(name));
        let sealed = (name.ends_with(".log") || name.ends_with(".idx"))
            && Some(name.trim_end_matches(".idx").trim_end_matches(".log"))
                != newest.as_deref().map(|n| n.trim_end_matches(".log"));
        if sealed {
            // Sealed segments and their indexes never change: share them.
            fs.hard_link(&src, &dst)?;
        } else {
            // The newest segment will be appended to: a copy of its own.
            copy_synced(fs, &src, &dst)?;
        }
    }
    fs.sync_dir(&staged)?;
    Ok(names)
}

fn copy_synced(fs: &dyn Vfs, src: &Path, dst: &Path) -> io::Result<()> {
    let input = fs.open(src, OpenMode::Existing)?;
    let output = fs.open(dst, OpenMode::CreateTruncate)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = input.read_full_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        output.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    output.sync_data()
}

/// Removes whatever is staged (an install that was never decided).
pub(super) fn discard(fs: &dyn Vfs, dir: &Path) -> io::Result<()> {
    let staged = dir.join(STAGED);
    let names = fs.list_dir(&staged).unwrap_or_default();
    for name in &names {
        fs.remove_file(&staged.join(name))?;
    }
    if !names.is_empty() {
        fs.sync_dir(&staged)?;
    }
    Ok(())
}

/// Finishes a decided install of the staged `names`: the old CommitLog files go, the
/// staged ones come in, and the Raft purge point becomes `purged`. Idempotent.
pub(super) fn finish(
    fs: &std::sync::Arc<dyn Vfs>,
    dir: &Path,
    names: &[String],
    purged: Option<LogId>,
) -> io::Result<()> {
    let staged = dir.join(STAGED);
    let waiting: Vec<&String> = names
        .iter()
        .filter(|n| fs.exists(&staged.join(n)))
        .collect();
    if waiting.len() == names.len() {
        // Nothing was moved yet, so everything here is the old log (perhaps partly removed
        // by an earlier attempt): remove it before moving anything in.
        for name in fs.list_dir(dir)? {
            if is_commit_log_file(&name) {
                fs.remove_file(&dir.join(&name))?;
            }
        }
        fs.sync_dir(dir)?;
    }
    for name in waiting {
        fs.rename(&staged.join(name), &dir.join(name))?;
    }
    fs.sync_dir(dir)?;
    fs.sync_dir(&staged)?;
    if let Some(p) = purged {
        let bytes = postcard::to_allocvec(&p).map_err(io_other)?;
        DurableCell::new(fs.clone(), dir, PURGED_LOG_ID)
            .store(&bytes)
            .map_err(io_err)?;
    }
    Ok(())
}
