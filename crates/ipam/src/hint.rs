//! A host's note of the blocks it allocated from last, kept beside the host lock file.
//!
//! On etcd every read is a round trip. An ADD must learn the host's cursor (which block to
//! allocate from) before it can read that block, and a DEL must read the handle before its
//! block: three round trips each. The blocks named here are read ahead in the first round
//! trip ([`crate::Ipam::prefetch`]); when the guess is right (the steady state: the cursor
//! has not moved, the container got its address from it) the call takes two. The note is
//! only a guess: a missing, stale or unreadable one costs the saved round trip, never
//! correctness, since every write compares the revisions it read.

use std::fs;
use std::io::Write;
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

    /// The blocks noted; none when there is no readable note.
    pub fn load(&self) -> Vec<IpNetwork> {
        fs::read_to_string(&self.path)
            .map(|text| {
                text.lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Notes `blocks`, unless they are the `noted` ones (what [`BlockHint::load`] gave).
    /// Best effort: the note is replaced atomically (a temporary file renamed over it), and
    /// a failure is only logged.
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
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(path = %self.path.display(), %error, "could not note the blocks for the next call");
        }
    }
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
        let blocks: Vec<IpNetwork> = vec![
            "10.0.0.64/26".parse().unwrap(),
            "fd00::/122".parse().unwrap(),
        ];
        hint.store(&[], &blocks);
        assert_eq!(hint.load(), blocks);
        let reversed: Vec<IpNetwork> = blocks.iter().rev().copied().collect();
        hint.store(&blocks, &reversed);
        assert_eq!(
            hint.load(),
            blocks,
            "the same blocks in another order: not rewritten"
        );
        fs::write(hint.path(), "not a cidr\n10.0.1.0/26\n").unwrap();
        assert_eq!(
            hint.load(),
            vec!["10.0.1.0/26".parse::<IpNetwork>().unwrap()]
        );
        BlockHint::new(Path::new("/proc/no/such/dir/ipam.lock"), "n").store(&[], &blocks);
        let _ = fs::remove_dir_all(dir);
    }
}
