//! The database file on disk: its directory (0700) and its mode (0600), settled before SQLite
//! opens it, and the modes of its `-wal` and `-shm` companions.
//!
//! SQLite creates `-wal` and `-shm` with the mode of the database file, so new ones are 0600
//! as well; existing ones (left by an older version, or made by hand) are tightened here too.
//! Nothing is ever changed through a symbolic link: a path is looked at with `lstat`, and a
//! mode is only changed with `fchmod` on a descriptor opened with `O_NOFOLLOW` and checked to
//! be the regular file that was looked at.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The mode of the database file and of its `-wal` and `-shm` companions.
pub(super) const FILE_MODE: u32 = 0o600;
/// The mode of directories created to hold the database.
pub(super) const DIR_MODE: u32 = 0o700;

/// Make sure `path` is a regular file of mode 0600, creating it (and its parent directories,
/// mode 0700) when missing, and that an existing `-wal` or `-shm` is a regular file that only
/// its owner can read. Costs three `lstat`s when everything is already right.
pub(super) fn prepare(path: &Path) -> Result<(), Error> {
    let io_err = |source| Error::Io { path: path.to_owned(), source };
    match fs::symlink_metadata(path) {
        Ok(meta) => tighten(path, &meta).map_err(io_err)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(io_err(e)),
    }
    for suffix in ["-wal", "-shm"] {
        let companion = with_suffix(path, suffix);
        let err = |source| Error::Io { path: companion.clone(), source };
        match fs::symlink_metadata(&companion) {
            Ok(meta) => tighten(&companion, &meta).map_err(err)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// `path` followed by `suffix`, as SQLite names the WAL and the shared-memory file.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Refuse anything but a regular file (a symbolic link included: SQLite would write through
/// it), and take the group and other bits off one that has them; never loosen a mode.
fn tighten(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link"));
    }
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.mode() & 0o077 == 0 {
        return Ok(());
    }
    // The path may have been replaced since the lstat: change the file opened, and only when
    // it is the one looked at.
    let file = open_nofollow(path, false)?;
    let opened = file.metadata()?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "was replaced while opening"));
    }
    file.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// Open `path` without following a symbolic link (`ELOOP` when it is one). `O_NONBLOCK` keeps
/// a FIFO planted at the path from blocking the open.
fn open_nofollow(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn create(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|source| Error::CreateDir {
            path: path.to_owned(),
            dir: dir.to_owned(),
            source,
        })?;
    }
    let io_err = |source| Error::Io { path: path.to_owned(), source };
    // Not `create_new`: another process may be creating the same file right now.
    let file = open_nofollow(path, true).map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    // The umask may have removed bits SQLite needs (e.g. umask 0277): set the mode exactly.
    file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn companions_are_tightened_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        for suffix in ["-wal", "-shm"] {
            let companion = with_suffix(&db, suffix);
            fs::write(&companion, b"").unwrap();
            fs::set_permissions(&companion, Permissions::from_mode(0o644)).unwrap();
        }
        prepare(&db).unwrap();
        assert_eq!(mode(&with_suffix(&db, "-wal")), 0o600);
        assert_eq!(mode(&with_suffix(&db, "-shm")), 0o600);

        let target = dir.path().join("target");
        fs::write(&target, b"").unwrap();
        fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = prepare(&link).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(mode(&target), 0o644, "the link's target is left alone");

        fs::remove_file(with_suffix(&db, "-wal")).unwrap();
        std::os::unix::fs::symlink(&target, with_suffix(&db, "-wal")).unwrap();
        assert!(prepare(&db).is_err());
        assert_eq!(mode(&target), 0o644);
    }
}
