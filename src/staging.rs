//! Local staging directories that never leak.
//!
//! Every process stages its files (segments being written, downloads, key runs, SST files) in a
//! directory of its own, `{staging_dir}/minion-staging/{pid}-{random}/`, holding an exclusive
//! `flock` on the `owner.lock` file inside for as long as it lives. A process that ends normally
//! removes its directory; one that is killed leaves it behind, with its lock released by the
//! kernel. A starting worker calls [`sweep`]: every directory whose lock it can take belongs to a
//! process that is gone and is removed; a locked one belongs to a live process and is left alone.
//! This works across containers sharing one volume (a pod's `emptyDir` survives container
//! restarts) because the lock lives in the shared filesystem, not in a pid that may be reused.
//!
//! A directory is created under a `.new-` name and renamed into place only once its lock is
//! held, so a sweeper never mistakes a directory being born for one whose owner died.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fs2::FileExt;

const ROOT: &str = "minion-staging";
const LOCK: &str = "owner.lock";
const NEW_PREFIX: &str = ".new-";
/// A `.new-` directory older than this was abandoned between creation and rename.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// This process's staging directory; removed on drop.
#[derive(Debug)]
pub struct ProcessStaging {
    dir: PathBuf,
    _lock: File,
}

impl ProcessStaging {
    /// Creates and locks this process's directory under `base`.
    pub fn create(base: &Path) -> anyhow::Result<ProcessStaging> {
        let root = base.join(ROOT);
        let fix = "set staging_dir in minion.toml, --staging-dir or MINION_STAGING_DIR to a writable directory";
        fs::create_dir_all(&root).with_context(|| {
            format!(
                "cannot create the staging directory {}; {fix}",
                root.display()
            )
        })?;
        let name = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let nascent = root.join(format!("{NEW_PREFIX}{name}"));
        fs::create_dir(&nascent)
            .with_context(|| format!("cannot create {}; {fix}", nascent.display()))?;
        let lock = File::create(nascent.join(LOCK))
            .with_context(|| format!("cannot create the lock file in {}", nascent.display()))?;
        lock.try_lock_exclusive()
            .with_context(|| format!("cannot lock {}", nascent.join(LOCK).display()))?;
        let dir = root.join(name);
        fs::rename(&nascent, &dir)
            .with_context(|| format!("cannot rename {} into place", nascent.display()))?;
        Ok(ProcessStaging { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ProcessStaging {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), error = %err, "cannot remove the staging directory");
        }
    }
}

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Directories of processes that are gone, now removed.
    pub removed: Vec<PathBuf>,
    /// Directories of live processes, left alone.
    pub live: usize,
}

/// Removes the staging directories under `base` whose owner is gone.
pub fn sweep(base: &Path) -> anyhow::Result<Swept> {
    let root = base.join(ROOT);
    let mut swept = Swept::default();
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", root.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() || !owner_gone(&path) {
            swept.live += 1;
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => swept.removed.push(path),
            // Another sweeper got there first.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", path.display()))
            }
        }
    }
    Ok(swept)
}

/// Whether the process that owned `dir` is gone: its lock can be taken (and is held only for
/// the moment of this look), or a directory being born was abandoned long ago.
fn owner_gone(dir: &Path) -> bool {
    let nascent = dir
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(NEW_PREFIX));
    if nascent {
        return fs::metadata(dir)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > ABANDONED_AFTER);
    }
    match File::open(dir.join(LOCK)) {
        Ok(lock) => lock.try_lock_exclusive().is_ok(),
        // No lock file in a renamed directory cannot happen by our hand; leave it.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_directories_of_gone_owners() {
        let base = tempfile::tempdir().unwrap();
        let live = ProcessStaging::create(base.path()).unwrap();
        std::fs::write(live.path().join("work.parquet"), b"x").unwrap();
        // A dead owner: a directory whose lock nobody holds.
        let dead = base.path().join(ROOT).join("1-dead");
        std::fs::create_dir_all(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        std::fs::write(dead.join("left.run"), b"y").unwrap();
        // One being born right now.
        let nascent = base.path().join(ROOT).join(".new-2-born");
        std::fs::create_dir_all(&nascent).unwrap();

        let swept = sweep(base.path()).unwrap();
        assert_eq!(swept.removed, vec![dead.clone()]);
        assert_eq!(swept.live, 2);
        assert!(!dead.exists());
        assert!(live.path().join("work.parquet").exists());
        assert!(nascent.exists());

        let path = live.path().to_path_buf();
        drop(live);
        assert!(
            !path.exists(),
            "a process removes its own directory when it ends"
        );
    }
}
