//! A host-wide lock around allocation. The datastore is safe without it; the lock only
//! keeps processes on one host from racing each other into compare-and-swap retries.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

/// Held until dropped (the kernel releases a flock when its file closes, also on kill -9).
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Take the lock at `path`, waiting at most `timeout`. The file is created 0600 and its
    /// missing directories 0755 (a umask can only narrow these).
    pub fn acquire(path: &Path, timeout: Duration) -> Result<HostLock, Error> {
        let lock_err = |source| Error::Lock { path: path.to_path_buf(), source };
        let open = || OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path);
        // The directory is there on every call but the first: create it only then.
        let file = match (open(), path.parent()) {
            (Err(e), Some(dir)) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(lock_err)?;
                open()
            }
            (other, _) => other,
        }
        .map_err(lock_err)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(HostLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
            }
            if start.elapsed() >= timeout {
                return Err(Error::LockTimeout { path: PathBuf::from(path), waited_ms: start.elapsed().as_millis() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out() {
        let dir = std::env::temp_dir().join(format!("ipam-lock-{}", std::process::id()));
        let path = dir.join("ipam.lock");
        let held = HostLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let err = HostLock::acquire(&path, Duration::from_millis(20)).err().unwrap();
        assert!(matches!(err, Error::LockTimeout { .. }));
        drop(held);
        HostLock::acquire(&path, Duration::from_millis(20)).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
