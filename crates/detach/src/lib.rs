//! Running the tail of a plugin's work in a detached process, so that the runtime, which
//! waits for the plugin to exit and for EOF on its stdout, does not wait for it.
//!
//! Used for work whose outcome the plugin's answer no longer depends on: the kernel's RCU
//! barrier after a veth is unregistered (`dataplane`).
//!
//! The child is a fork without exec, so it suits raw system calls, not libraries with
//! process-wide state: a SQLite checkpoint tried this way found SQLite's per-file state
//! (inherited from the parent) pointing at descriptors the child had closed, and SQLite
//! cannot be told apart from its parent's locks. The embedded store checkpoints in place.

use std::io;
use std::os::fd::RawFd;

/// Runs `work` in a grandchild process with every file descriptor closed except `keep`,
/// and returns once the intermediate child has exited, so nothing is left for anyone to
/// reap: the grandchild is adopted by init or the nearest subreaper.
///
/// The grandchild is a fork of a process that may have other threads: keep `work` to
/// async-signal-safe system calls on memory prepared before the call (no allocation, no
/// locks). It ends with `_exit`, never returning or unwinding into the caller's code.
pub fn spawn(keep: &[RawFd], work: impl FnOnce()) -> io::Result<()> {
    // SAFETY: see the contract above; the children run only `work`, `close_range`, `fork`
    // and `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe {
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            close_all_but(keep);
            // A panic must not unwind into the parent's frames, copied into this process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            libc::_exit(0)
        },
        child => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            while unsafe { libc::waitpid(child, &mut status, 0) } == -1 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// Closes every descriptor except those in `keep`. Async-signal-safe: no allocation.
fn close_all_but(keep: &[RawFd]) {
    let mut next: u32 = 0;
    loop {
        // The lowest kept descriptor at or above `next`.
        let stop = keep.iter().filter(|&&fd| fd >= 0 && fd as u32 >= next).map(|&fd| fd as u32).min();
        let last = match stop {
            Some(fd) if fd == next => {
                next = fd + 1;
                continue;
            }
            Some(fd) => fd - 1,
            None => u32::MAX,
        };
        // SAFETY: close_range only closes descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, next, last, 0) };
        match stop {
            Some(fd) => next = fd + 1,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// The grandchild writes to a kept descriptor; a descriptor not kept is closed in it, so
    /// the reader of that pipe sees EOF as soon as this process closes its own end.
    #[test]
    fn work_runs_detached_with_only_the_kept_descriptors() {
        let (mut kept_r, kept_w) = pipe();
        let (mut other_r, other_w) = pipe();
        let (kw, ow) = (kept_w.as_raw_fd(), other_w.as_raw_fd());
        spawn(&[kw], move || unsafe {
            let open = libc::fcntl(ow, libc::F_GETFD) != -1;
            let msg: &[u8] = if open { b"other open" } else { b"ok" };
            libc::write(kw, msg.as_ptr().cast(), msg.len());
        })
        .unwrap();
        drop(kept_w);
        drop(other_w);
        let mut got = String::new();
        kept_r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "ok");
        let mut rest = Vec::new();
        assert_eq!(other_r.read_to_end(&mut rest).unwrap(), 0, "EOF: no copy of the write end left");
    }

    #[test]
    fn close_ranges_skip_kept_descriptors() {
        // Runs in a fork: closing descriptors of the test process would break the harness.
        let (mut r, w) = pipe();
        let wfd = w.as_raw_fd();
        spawn(&[0, wfd, wfd + 5], move || unsafe {
            let ok = libc::fcntl(0, libc::F_GETFD) != -1 && libc::fcntl(1, libc::F_GETFD) == -1;
            libc::write(wfd, if ok { b"y".as_ptr() } else { b"n".as_ptr() }.cast(), 1);
        })
        .unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "y");
    }
}
