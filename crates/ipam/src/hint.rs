//! A host's note of the blocks it allocated from last, kept beside the host lock file.
//!
//! On etcd every read is a round trip. An ADD must learn the host's cursor (which block to
//! allocate from) before it can read that block, and a DEL must read the handle before its
//! block: three round trips each. The blocks named here are read ahead in the first round
//! trip ([`crate::Ipam::prefetch`]); when the guess is right (the steady state: the cursor
//! has not moved, the container got its address from it) the call takes two. The note is
//! only a guess: a missing, stale or unreadable one costs the saved round trip, never
//! correctness, since every write compares the revisions it read.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

/// The note of one host (node name), under one lock file path.
#[derive(Debug, Clone)]
pub struct BlockHint {
    path: PathBuf,
}

impl BlockHint {
    /// `<lock file>.<host>.blocks`, one CIDR per line.
    pub fn new(lock_path: &Path, host: &str) -> BlockHint {
        let mut name = lock_path.as_os_str().to_owned();
        name.push(format!(".{}.blocks", host.replace('/', "_")));
        BlockHint { path: name.into() }
    }

    /// The file the note lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blocks noted; none when there is no readable note (a symbolic link is not one).
    pub fn load(&self) -> Vec<IpNetwork> {
        let mut text = String::new();
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .and_then(|mut f| f.read_to_string(&mut text));
        match read {
            Ok(_) => text.lines().filter_map(|line| line.trim().parse().ok()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Notes `blocks`, unless they are the `noted` ones (what [`BlockHint::load`] gave).
    /// Best effort: the note is replaced atomically (a temporary file renamed over it), and
    /// a failure is only logged. The temporary file is new (`O_EXCL`, mode 0600) under a name
    /// nobody can guess ahead: whatever is planted in the directory is never followed.
    pub fn store(&self, noted: &[IpNetwork], blocks: &[IpNetwork]) {
        let mut current = noted.to_vec();
        let mut wanted = blocks.to_vec();
        current.sort();
        wanted.sort();
        wanted.dedup();
        if current == wanted {
            return;
        }
        let text: String = wanted.iter().map(|cidr| format!("{cidr}\n")).collect();
        let written = self.create_temp().and_then(|(tmp, mut file)| {
            let done = file.write_all(text.as_bytes()).and_then(|()| fs::rename(&tmp, &self.path));
            if done.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            done
        });
        if let Err(error) = written {
            tracing::debug!(path = %self.path.display(), %error, "could not note the blocks for the next call");
        }
    }

    /// A new file `<note>.<pid>.<random>`, created exclusively: an existing file or link of
    /// that name is an error (another name is tried), never opened.
    fn create_temp(&self) -> io::Result<(PathBuf, fs::File)> {
        let mut last = None;
        for _ in 0..4 {
            let mut tmp = self.path.as_os_str().to_owned();
            tmp.push(format!(".{}.{:016x}", std::process::id(), random()));
            let tmp = PathBuf::from(tmp);
            let created =
                OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
            match created {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
    }
}

/// 64 bits nobody can predict: the kernel's random source; the clock if that fails.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is a valid buffer of the length given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_garbage_is_no_hint() {
        let dir = std::env::temp_dir().join(format!("ipam-hint-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let hint = BlockHint::new(&dir.join("ipam.lock"), "node/1");
        assert_eq!(hint.path(), dir.join("ipam.lock.node_1.blocks"));
        assert!(hint.load().is_empty(), "no file, no hint");
        let blocks: Vec<IpNetwork> = vec!["10.0.0.64/26".parse().unwrap(), "fd00::/122".parse().unwrap()];
        hint.store(&[], &blocks);
        assert_eq!(hint.load(), blocks);
        let reversed: Vec<IpNetwork> = blocks.iter().rev().copied().collect();
        hint.store(&blocks, &reversed);
        assert_eq!(hint.load(), blocks, "the same blocks in another order: not rewritten");
        fs::write(hint.path(), "not a cidr\n10.0.1.0/26\n").unwrap();
        assert_eq!(hint.load(), vec!["10.0.1.0/26".parse::<IpNetwork>().unwrap()]);
        BlockHint::new(Path::new("/proc/no/such/dir/ipam.lock"), "n").store(&[], &blocks);
        // A note that is a link is no note, and storing replaces the link, not its target.
        let target = dir.join("target");
        fs::write(&target, "10.0.2.0/26\n").unwrap();
        fs::remove_file(hint.path()).unwrap();
        std::os::unix::fs::symlink(&target, hint.path()).unwrap();
        assert!(hint.load().is_empty(), "a link is not followed");
        hint.store(&[], &blocks);
        assert_eq!(fs::read_to_string(&target).unwrap(), "10.0.2.0/26\n");
        assert_eq!(hint.load(), blocks);
        let _ = fs::remove_dir_all(dir);
    }
}
