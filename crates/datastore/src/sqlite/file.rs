//! The database file on disk: its directory (0700) and its mode (0600), settled before SQLite
//! opens it. SQLite creates `-wal` and `-shm` with the mode of the database file, so they end
//! up 0600 as well.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// The mode of the database file and of its `-wal` and `-shm` companions.
pub(super) const FILE_MODE: u32 = 0o600;
/// The mode of directories created to hold the database.
pub(super) const DIR_MODE: u32 = 0o700;

/// Make sure `path` is a regular file of mode 0600, creating it (and its parent directories,
/// mode 0700) when missing. Costs one `stat` when the file already exists with the right mode.
pub(super) fn prepare(path: &Path) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            // Tighten a file that is readable by others; never loosen one.
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(path, Permissions::from_mode(FILE_MODE)).map_err(io_err)?;
            }
            Ok(())
        }
        Ok(_) => Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io_err(e)),
    }
}

fn create(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| Error::CreateDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
                source,
            })?;
    }
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    // Not `create_new`: another process may be creating the same file right now.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err)?;
    // The umask may have removed bits SQLite needs (e.g. umask 0277): set the mode exactly.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_err)
}
