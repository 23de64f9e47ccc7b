//! The MTU file: the MTU workloads should get, for calico-cni to read when its netconf has
//! none (Calico's `/var/lib/calico/mtu`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Write `mtu` to `path` unless it already holds it: a new file renamed over the old one,
/// so a reader sees the old number or the new one, never half a file. Returns true when it
/// wrote.
pub fn write_if_changed(path: &Path, mtu: u32) -> std::io::Result<bool> {
    let text = format!("{mtu}\n");
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mtu");
        assert!(write_if_changed(&path, 1450).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1450\n");
        assert!(!write_if_changed(&path, 1450).unwrap(), "unchanged: not written");
        assert!(write_if_changed(&path, 1500).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1500\n");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no temporary file left");
    }
}
