//! Plugin logging: stderr, plus a file when configured; never stdout, which carries the
//! plugin's one JSON reply.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global logger. `level` is Calico's `log_level`: `debug`, `info`,
/// `warning`/`warn`, `error` (also `trace`, and `fatal`/`panic` as `error`), case-insensitive,
/// default `info`; an unknown one logs a warning and uses `info`. `file` is Calico's
/// `log_file_path`: lines are appended to it (its directory is created) as well as written to
/// stderr. A file that cannot be opened does not fail the plugin: that is logged on stderr.
/// A second call keeps the first logger.
pub fn init(level: Option<&str>, file: Option<&Path>) {
    let (max_level, known) = match level {
        Some(raw) => parse_level(raw).map_or((Level::INFO, false), |l| (l, true)),
        None => (Level::INFO, true),
    };
    let (opened, open_error) = match file.map(open_log_file) {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(err)) => (None, Some(err)),
        None => (None, None),
    };
    let writer = match opened {
        Some(f) => BoxMakeWriter::new(std::io::stderr.and(Arc::new(f))),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // The etcd client's HTTP/2 stack logs every frame at debug: keep it to warnings, so
    // `log_level: debug` shows the plugin's own decisions.
    let quiet = Level::WARN.min(max_level);
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(max_level)
        .with_targets(["h2", "hyper", "hyper_util", "tower", "tonic", "rustls"].map(|t| (t, quiet)));
    let installed = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(writer))
        .with(filter)
        .try_init()
        .is_ok();
    if !installed {
        return;
    }
    if !known {
        tracing::warn!(log_level = level.unwrap_or_default(), "unknown log_level, using info");
    }
    if let (Some(path), Some(err)) = (file, open_error) {
        tracing::warn!(path = %path.display(), error = %err, "could not open log file; logging to stderr only");
    }
}

/// Calico's (logrus') level names, case-insensitive.
fn parse_level(raw: &str) -> Option<Level> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "trace" => Some(Level::TRACE),
        "debug" => Some(Level::DEBUG),
        "" | "info" => Some(Level::INFO),
        "warning" | "warn" => Some(Level::WARN),
        "error" | "fatal" | "panic" => Some(Level::ERROR),
        _ => None,
    }
}

/// Log lines name containers, pods and addresses: for root's eyes only.
const LOG_FILE_MODE: u32 = 0o600;
const LOG_DIR_MODE: u32 = 0o755;

/// The log file, created 0600 (its missing directories 0755) whatever the umask; an existing
/// file that others may read or write is tightened to 0600 (through the open file, never by
/// path).
fn open_log_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(LOG_DIR_MODE).create(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).mode(LOG_FILE_MODE).open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("DEBUG"), Some(Level::DEBUG));
        assert_eq!(parse_level("Info"), Some(Level::INFO));
        assert_eq!(parse_level("warning"), Some(Level::WARN));
        assert_eq!(parse_level("WARN"), Some(Level::WARN));
        assert_eq!(parse_level("error"), Some(Level::ERROR));
        assert_eq!(parse_level("verbose"), None);
    }

    /// The only test that installs the global logger.
    #[test]
    fn logs_to_file_and_survives_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cni.log");
        init(Some("debug"), Some(&path));
        tracing::debug!("hello from the test");
        tracing::trace!("below the level");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("hello from the test"), "{text}");
        assert!(!text.contains("below the level"), "{text}");
        // A second init is a no-op, even with an unopenable file.
        init(Some("error"), Some(Path::new("/proc/nonexistent/dir/x.log")));
        assert!(open_log_file(Path::new("/proc/nonexistent/dir/x.log")).is_err());
    }
}
