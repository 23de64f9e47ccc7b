//! Network namespace handles, and running code inside one without moving the
//! calling thread.
//!
//! [`NetNs::run`] starts a fresh OS thread, `setns(2)`s *that* thread into the
//! namespace, runs the closure and lets the thread exit. The caller's thread
//! never changes namespace, so there is nothing to switch back and no way to
//! leave a thread stranded in the wrong namespace (the failure Go's `ns.Do` has
//! to guard against). Threads started from inside the closure inherit the
//! namespace of the helper thread.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    sched::{setns, CloneFlags},
    sys::statfs::{fstatfs, NSFS_MAGIC},
};

use crate::error::{Error, Result};

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open handle on a network namespace.
///
/// Holding the handle keeps the namespace alive, even if its bind mount is
/// removed meanwhile.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens `path` (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`) and checks
    /// that it really is a network namespace.
    ///
    /// No kind of file can block or be disturbed by this: the path is first
    /// opened with `O_PATH` (which never blocks on a FIFO or opens a device),
    /// checked to be on nsfs, and only then reopened for `setns`.
    ///
    /// A missing path gives [`Error::NetNsOpen`] with `ENOENT`
    /// ([`Error::is_not_found`]); any other file, or another namespace type,
    /// gives [`Error::NotNetNs`].
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref().to_path_buf();
        let open_error = |source: io::Error| Error::NetNsOpen { path: path.clone(), source };
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOCTTY)
            .open(&path)
            .map_err(open_error)?;
        let statfs = fstatfs(&handle).map_err(|errno| open_error(io::Error::from(errno)))?;
        let fs_type = statfs.filesystem_type();
        // Namespace files live on nsfs since Linux 3.19 (procfs before that).
        if fs_type != NSFS_MAGIC {
            let what = match handle.metadata() {
                Ok(meta) => file_kind(meta.file_type()),
                Err(_) => format!("on a filesystem of type {:#x}", fs_type.0),
            };
            return Err(Error::NotNetNs { path, what });
        }
        // An nsfs file: reopening it through the O_PATH handle cannot block and
        // cannot land on another file if the path changed meanwhile.
        let file = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(open_error)?;
        drop(handle);
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which
        // `file` keeps open for the duration of the call.
        let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        // Kernels before 4.11 lack the ioctl (ENOTTY); setns() still checks later.
        if nstype >= 0 && nstype != libc::CLONE_NEWNET {
            return Err(Error::NotNetNs { path, what: format!("{} namespace", namespace_kind(nstype)) });
        }
        Ok(NetNs { file, path })
    }

    /// True when this is the network namespace of the calling thread, i.e.
    /// the plugin's own (same device and inode as `/proc/thread-self/ns/net`).
    pub fn is_current(&self) -> Result<bool> {
        let own = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(|source| Error::NetNsOpen { path: "/proc/thread-self/ns/net".into(), source })?;
        let this = self.file.metadata().map_err(|source| Error::NetNsOpen { path: self.path.clone(), source })?;
        Ok(own.dev() == this.dev() && own.ino() == this.ino())
    }

    /// The network namespace of the calling thread (not of the process: the
    /// two differ inside [`NetNs::run`]).
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: two handles with the same inode (on nsfs)
    /// refer to the same namespace.
    pub fn inode(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|meta| meta.ino())
            .map_err(|source| Error::NetNsOpen { path: self.path.clone(), source })
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and
    /// returns its result. The calling thread's namespace is untouched.
    ///
    /// Netlink sockets and `/proc/sys/net` files opened by `f` belong to this
    /// namespace, and keep belonging to it after being handed back.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|source| Error::NetNsEnter { path: self.path.clone(), source })?;
                    Ok(f())
                })
                .map_err(|source| Error::ThreadSpawn { path: self.path.clone(), source })?;
            handle.join().map_err(|_| Error::ThreadPanicked { path: self.path.clone() })?
        })
    }
}

/// What a file that is not a namespace is, for the error message.
fn file_kind(file_type: std::fs::FileType) -> String {
    let kind = if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a namespace file"
    };
    kind.to_string()
}

/// The kind of namespace `NS_GET_NSTYPE` reported.
fn namespace_kind(nstype: libc::c_int) -> String {
    match nstype {
        libc::CLONE_NEWNS => "a mount".into(),
        libc::CLONE_NEWUTS => "a UTS".into(),
        libc::CLONE_NEWIPC => "an IPC".into(),
        libc::CLONE_NEWPID => "a PID".into(),
        libc::CLONE_NEWUSER => "a user".into(),
        libc::CLONE_NEWCGROUP => "a cgroup".into(),
        libc::CLONE_NEWTIME => "a time".into(),
        other => format!("a type {other:#x}"),
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_is_rejected() {
        let err = NetNs::open("/proc/self/status").unwrap_err();
        assert!(matches!(err, Error::NotNetNs { .. }), "{err:?}");
    }

    #[test]
    fn missing_path_is_not_found() {
        let err = NetNs::open("/nonexistent/netns/x").unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[test]
    fn other_namespace_type_is_rejected() {
        let err = NetNs::open("/proc/self/ns/uts").unwrap_err();
        assert!(matches!(err, Error::NotNetNs { .. }), "{err:?}");
    }

    #[test]
    fn other_files_are_rejected_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, what) in
            [(fifo.as_path(), "a FIFO"), (dir.path(), "a directory"), (Path::new("/dev/null"), "a character device")]
        {
            match NetNs::open(path) {
                Err(Error::NotNetNs { what: found, .. }) => assert_eq!(found, what),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        match NetNs::open("/proc/self/ns/mnt") {
            Err(Error::NotNetNs { what, .. }) => assert_eq!(what, "a mount namespace"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn own_namespace_is_current() {
        assert!(NetNs::open("/proc/self/ns/net").unwrap().is_current().unwrap());
    }

    #[test]
    fn run_in_current_namespace_returns_value() {
        let ns = NetNs::current().unwrap();
        let before = ns.inode().unwrap();
        let inner = ns.run(|| NetNs::current().and_then(|n| n.inode())).unwrap();
        assert_eq!(inner.unwrap(), before);
    }
}
