//! Reading and writing sysctls through `/proc/sys`.
//!
//! `/proc/sys/net/...` resolves against the network namespace of the thread
//! that opens the file, so these functions act on the calling thread's
//! namespace. To act on another namespace, call them inside
//! [`NetNs::run`](crate::NetNs::run).

use std::{fs::OpenOptions, io::Write, path::PathBuf};

use crate::error::{Error, Result};

/// Turns `net/ipv4/ip_forward` into `/proc/sys/net/ipv4/ip_forward`,
/// refusing anything that could escape `/proc/sys`.
fn proc_path(path: &str) -> Result<PathBuf> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        || path.bytes().any(|b| b == 0);
    if bad {
        return Err(Error::Invalid {
            what: "sysctl path",
            value: path.to_string(),
            reason: "must be a relative path like net/ipv4/ip_forward",
        });
    }
    Ok(PathBuf::from("/proc/sys").join(path))
}

fn sysctl_error(path: &str, source: std::io::Error) -> Error {
    Error::Sysctl { path: path.to_string(), source }
}

/// Writes `value` to the sysctl `path` (relative to `/proc/sys`, with `/`
/// separators, e.g. `net/ipv4/conf/cali1234/proxy_arp`).
pub fn set_sysctl(path: &str, value: &str) -> Result<()> {
    let full = proc_path(path)?;
    let mut file = OpenOptions::new().write(true).open(&full).map_err(|e| sysctl_error(path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| sysctl_error(path, e))
}

/// Reads the sysctl `path` (relative to `/proc/sys`), without the trailing
/// newline.
pub fn get_sysctl(path: &str) -> Result<String> {
    let full = proc_path(path)?;
    let value = std::fs::read_to_string(&full).map_err(|e| sysctl_error(path, e))?;
    Ok(value.trim_end().to_string())
}

/// Writes `value` unless the sysctl already holds it; returns the previous
/// value when it changed something (for undo).
pub fn ensure_sysctl(path: &str, value: &str) -> Result<Option<String>> {
    let old = get_sysctl(path)?;
    if old == value {
        return Ok(None);
    }
    set_sysctl(path, value)?;
    Ok(Some(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_proc_sys() {
        assert_eq!(proc_path("net/ipv4/ip_forward").unwrap(), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/./x", "net/x/"] {
            assert!(proc_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_existing_and_missing() {
        assert!(!get_sysctl("kernel/ostype").unwrap().ends_with('\n'));
        let err = get_sysctl("net/ipv4/conf/no-such-if0/forwarding").unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }
}
